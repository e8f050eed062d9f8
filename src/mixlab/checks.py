"""Range checks for numeric settings, shared by the Python API (``TrainConfig``, methods) and the CLI's argparse
types (``mixlab.cli.common``), so every entry point refuses the same values with the same words.

A value out of range is refused with the allowed range in the message; nothing is silently replaced by a default
(``0`` never means "the default": where ``None`` means "not set", say so with ``none=...``).
"""
from __future__ import annotations

import math
import numbers


def describe(lo: float | None = None, hi: float | None = None, integer: bool = False, lo_open: bool = False,
             hi_open: bool = False) -> str:
    """``"an integer >= 1"``, ``"a number > 0"``, ``"a number in [0, 1)"``."""
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{kind} {'<' if hi_open else '<='} {hi:g}"
    return kind if integer else "a finite number"


def in_range(value, lo: float | None = None, hi: float | None = None, integer: bool = False, lo_open: bool = False,
             hi_open: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if integer and not isinstance(value, numbers.Integral):
        return False
    if not math.isfinite(value):
        return False
    if lo is not None and (value <= lo if lo_open else value < lo):
        return False
    if hi is not None and (value >= hi if hi_open else value > hi):
        return False
    return True


def check(name: str, value, lo: float | None = None, hi: float | None = None, integer: bool = False,
          lo_open: bool = False, hi_open: bool = False, none: str | None = None):
    """Return ``value`` if it is in range, else raise ``ValueError`` naming ``name`` and the allowed range.

    ``none``: ``None`` is allowed and means this (e.g. ``"the whole training set"``)."""
    if value is None and none is not None:
        return value
    if not in_range(value, lo, hi, integer, lo_open, hi_open):
        allowed = describe(lo, hi, integer, lo_open, hi_open) + (f", or None ({none})" if none else "")
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return value


def positive_int(name: str, value, none: str | None = None):
    return check(name, value, 1, integer=True, none=none)


def nonneg_int(name: str, value, none: str | None = None):
    return check(name, value, 0, integer=True, none=none)


def positive_float(name: str, value, none: str | None = None):
    return check(name, value, 0, lo_open=True, none=none)


def nonneg_float(name: str, value, none: str | None = None):
    return check(name, value, 0, none=none)
