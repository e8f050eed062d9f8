"""Arguments shared by several sub-commands."""
from __future__ import annotations

import argparse
import json
import os


def add_common(p: argparse.ArgumentParser, out_default: str = "mixlab-out", training: bool = False) -> None:
    """``--data-dir --out --device --threads --debug``; ``training``: the command trains runs, whose CPU threads
    are part of their identity (one per run by default, see ``mixlab.train.engine.default_threads``)."""
    p.add_argument("--data-dir", default=None, help="data root (default: $MIXLAB_DATA, else ~/.cache/mixlab)")
    p.add_argument("--out", default=out_default, help=f"output folder with results.db and runs/ (default {out_default})")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="training device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help=(
        "CPU threads (torch intra-op) of each run; part of the run's identity, as they change its numbers "
        "(default: 1, or every core for models that declare parallel_cpu, e.g. ResNets)") if training else
        "CPU threads for torch (default: torch's choice)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")


def parse_kv(pairs: list[str] | None) -> dict:
    """``["alpha=0.2", "plus=true"]`` -> ``{"alpha": 0.2, "plus": True}`` (values parsed as JSON when possible)."""
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def apply_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def print_json(obj) -> None:
    print(json.dumps(obj, default=str, sort_keys=False))


def is_tty() -> bool:
    return os.isatty(2)
