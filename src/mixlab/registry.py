"""Name -> factory registries for methods, models and datasets.

Entries are registered as ``"module:attribute"`` strings and imported on first use, so listing names never
imports heavy optional code. A new method is one file plus one ``METHODS.register(...)`` line in
``mixlab/methods/__init__.py``.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import numbers
from typing import Any, Callable


#: annotation names an option's value is checked against (anything else, e.g. ``Method``, is not checked)
_TYPES = {"int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,), "str": (str,), "None": (type(None),),
          "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}


def signature_options(target: Callable, skip: tuple[str, ...] = (), own_only: bool = False) -> dict | None:
    """The keyword options ``target`` accepts, from its signature: ``{name: inspect.Parameter}``.

    A ``**kwargs`` makes the set open-ended (``None``) unless ``target.forwards_options()`` returns the options
    they are passed on to (``own_only``: ignore the ``**kwargs``)."""
    params, var_kw = {}, False
    for p in inspect.signature(target).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip:
            params[p.name] = p
    if var_kw and not own_only:
        forwards = getattr(target, "forwards_options", None)
        more = forwards() if forwards is not None else None
        if more is None:
            return None
        params = {**params, **{k: p for k, p in more.items() if k not in params}}  # own options first
    return params


def type_name(p: inspect.Parameter) -> str:
    ann = p.annotation
    if ann is inspect.Parameter.empty:
        return "any" if p.default is inspect.Parameter.empty else type(p.default).__name__
    return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def value_fits(value: Any, p: inspect.Parameter) -> bool | None:
    """Whether ``value`` fits the parameter's annotation; ``None`` when the annotation is not a simple one."""
    if p.annotation is inspect.Parameter.empty:
        return None
    allowed: tuple = ()
    for part in type_name(p).split("|"):
        kinds = _TYPES.get(part.strip().split("[")[0])
        if kinds is None:
            return None
        allowed += kinds
    if isinstance(value, bool) and bool not in allowed:  # True is an int to Python, not to a user
        return False
    return isinstance(value, allowed)


def describe_options(label: str, params: dict | None) -> str:
    """``"options of method 'mixup': alpha: float = 1.0, per_sample: bool = False"``, or that any is taken."""
    if params is None:
        return f"{label} takes any option (it ignores or forwards them)"
    items = [f"{k}: {type_name(p)}" + ("" if p.default is inspect.Parameter.empty else f" = {p.default!r}")
             for k, p in params.items()]
    return f"options of {label}: " + (", ".join(items) if items else "none")


def check_options(label: str, params: dict | None, options: dict) -> None:
    """Raise ``TypeError`` naming the key when ``options`` has a key not in ``params`` (``None``: any key) or a
    value whose type does not fit its annotation; the message lists the allowed options with types, defaults."""
    if params is None:
        return
    unknown = [k for k in options if k not in params]
    if unknown:
        close = [difflib.get_close_matches(k, list(params), n=1) for k in unknown]
        hint = "".join(f" (did you mean {c[0]}?)" for c in close if c)
        raise TypeError(f"{label} has no option {', '.join(repr(k) for k in unknown)}{hint}; "
                        f"{describe_options(label, params)}")
    for key, value in options.items():
        if value_fits(value, params[key]) is False:
            raise TypeError(f"option {key} of {label} must be {type_name(params[key])}, got {value!r} "
                            f"({type(value).__name__}); {describe_options(label, params)}")


class Registry:
    """A case-insensitive map from names to lazily imported factories.

    ``internal``: arguments the framework passes to every factory (e.g. ``num_classes``), not user options."""

    def __init__(self, kind: str, internal: tuple[str, ...] = ()):
        self.kind = kind
        self.internal = tuple(internal)
        self._targets: dict[str, str | Callable] = {}
        self._aliases: dict[str, str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, target: str | Callable, help: str = "", aliases: tuple[str, ...] = ()) -> None:
        key = name.lower()
        if key in self._targets or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._targets[key] = target
        self._help[key] = help
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def names(self) -> list[str]:
        return sorted(self._targets)

    def help(self, name: str) -> str:
        return self._help[self.canonical(name)]

    def canonical(self, name: str) -> str:
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._targets:
            close = difflib.get_close_matches(key, self.names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}")
        return key

    def __contains__(self, name: str) -> bool:
        key = str(name).lower()
        return self._aliases.get(key, key) in self._targets

    def get(self, name: str, default: Any = KeyError) -> Callable:
        """The registered target; unknown names raise a KeyError listing the choices unless ``default`` is given."""
        if default is not KeyError and name not in self:
            return default
        key = self.canonical(name)
        target = self._targets[key]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._targets[key] = target
        return target

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; unknown options or values of the wrong type raise a ``TypeError``
        that lists the accepted options with their types and defaults."""
        self.check_options(name, {k: v for k, v in kwargs.items() if k not in self.internal})
        return self.get(name)(**kwargs)

    def options(self, name: str) -> dict[str, inspect.Parameter] | None:
        """The user options of ``name`` (from its signature, without ``internal``); ``None``: open-ended."""
        params = signature_options(self.get(name))
        return None if params is None else {k: p for k, p in params.items() if k not in self.internal}

    def describe_options(self, name: str) -> str:
        """``"options of method 'mixup': alpha: float = 1.0, per_sample: bool = False"``."""
        return describe_options(f"{self.kind} {self.canonical(name)!r}", self.options(name))

    def check_options(self, name: str, options: dict) -> None:
        """Raise ``TypeError`` naming the key when ``options`` has a key ``name`` does not take, one the framework
        sets itself (``internal``), or a value whose type does not fit; the message lists the allowed options."""
        label = f"{self.kind} {self.canonical(name)!r}"
        internal = [k for k in options if k in self.internal]
        if internal:
            raise TypeError(f"{', '.join(internal)} of {label} is set by mixlab, not as an option; "
                            f"{describe_options(label, self.options(name))}")
        check_options(label, self.options(name), options)

    # read-only mapping view: registry[name], iteration over names, items()
    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._targets)

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self.get(name)) for name in self.names()]

    def __setitem__(self, name: str, target: Any) -> None:  # replace or add (e.g. a test's temporary entry)
        key = str(name).lower()
        self._targets[key] = target
        self._help.setdefault(key, "")

    def __delitem__(self, name: str) -> None:
        key = self.canonical(name)
        del self._targets[key], self._help[key]

    def values(self) -> list[Any]:
        return [self.get(name) for name in self.names()]


METHODS = Registry("method", internal=("num_classes", "seed", "check_inputs"))
MODELS = Registry("model", internal=("num_classes", "in_channels", "image_size", "vocab_size"))
DATASETS = Registry("dataset")
