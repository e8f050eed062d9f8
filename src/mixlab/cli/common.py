"""Arguments shared by several sub-commands."""
from __future__ import annotations

import argparse
import json
import os

from ..checks import describe, in_range


def number(lo: float | None = None, hi: float | None = None, integer: bool = False, lo_open: bool = False,
           hi_open: bool = False):
    """An argparse ``type`` that parses a number and refuses it, naming the allowed range, when out of range
    (checks shared with the Python API: :mod:`mixlab.checks`)."""
    allowed = describe(lo, hi, integer, lo_open, hi_open)

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}") from None
        if not in_range(value, lo, hi, integer, lo_open, hi_open):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        return value

    parse.__name__ = parse.allowed = allowed  # argparse names the type by it in its own messages
    return parse


positive_int = number(1, integer=True)
nonneg_int = number(0, integer=True)
positive_float = number(0, lo_open=True)
nonneg_float = number(0)


def int_list(lo: int = 0):
    """``"50,75"`` -> ``(50, 75)``, every item an integer >= ``lo``."""
    item = number(lo, integer=True)

    def parse(text: str) -> tuple[int, ...]:
        return tuple(item(v) for v in text.split(",") if v.strip())

    parse.__name__ = f"comma-separated integers >= {lo}"
    return parse


def add_common(p: argparse.ArgumentParser, out_default: str = "mixlab-out", training: bool = False) -> None:
    """``--data-dir --out --device --threads --debug``; ``training``: the command trains runs, whose CPU threads
    are part of their identity (one per run by default, see ``mixlab.config.default_threads``)."""
    p.add_argument("--data-dir", default=None, help="data root (default: $MIXLAB_DATA, else ~/.cache/mixlab)")
    p.add_argument("--out", default=out_default, help=f"output folder with results.db and runs/ (default {out_default})")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="training device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help=(
        "CPU threads (torch intra-op) of each run; part of the run's identity, as they change its numbers "
        "(default: 1, or every core for models that declare parallel_cpu, e.g. ResNets)") if training else
        "CPU threads for torch (default: torch's choice)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")


def add_jobs(p: argparse.ArgumentParser) -> None:
    """``--jobs N`` (runs trained at once in worker processes) and ``--executor`` / ``--ray-address`` (Ray tasks),
    for the commands that train sweeps."""
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help=(
        "runs trained at once, each in its own process (on a GPU they share it): same run ids, store and numbers "
        "as one after another; a run's CPU threads are fitted so that N x threads fits the cores unless --threads "
        "is given (default: 1)"))
    p.add_argument("--executor", choices=["local", "ray"], default="local", help=(
        "local: this machine's processes (--jobs); ray: every run a task on a Ray cluster (--ray-address, else "
        "$RAY_ADDRESS, else a local Ray instance), results and checkpoints back into --out; needs pip install "
        "'mixlab[ray]'"))
    p.add_argument("--ray-address", default=None, help="the Ray cluster to join (default $RAY_ADDRESS)")


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
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)


def print_json(obj) -> None:
    print(json.dumps(obj, default=str, sort_keys=False))


def is_tty() -> bool:
    return os.isatty(2)
