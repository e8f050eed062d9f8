"""Name -> factory registries for methods, models and datasets.

Entries are registered as ``"module:attribute"`` strings and imported on first use, so listing names never
imports heavy optional code. A new method is one file plus one ``METHODS.register(...)`` line in
``mixlab/methods/__init__.py``.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable


class Registry:
    """A case-insensitive map from names to lazily imported factories."""

    def __init__(self, kind: str):
        self.kind = kind
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
        return self.get(name)(**kwargs)

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


METHODS = Registry("method")
MODELS = Registry("model")
DATASETS = Registry("dataset")
