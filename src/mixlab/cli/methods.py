"""``mixlab methods``: the registered methods, models and datasets."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("methods", help="list registered methods (and models, datasets)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..registry import DATASETS, METHODS, MODELS

    for title, reg in (("methods", METHODS), ("models", MODELS), ("datasets", DATASETS)):
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<22} {reg.help(name)}")
    return 0
