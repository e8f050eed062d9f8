"""The ``mixlab`` command. Each sub-command lives in its own module with ``add_parser(subparsers)``."""
from __future__ import annotations

import argparse
import importlib
import sys

#: one line per sub-command module
COMMANDS = (
    "mixlab.cli.train",
    "mixlab.cli.bench",
    "mixlab.cli.report",
    "mixlab.cli.show",
    "mixlab.cli.methods",
    "mixlab.cli.data",
    "mixlab.cli.perf",
    "mixlab.cli.opttrans",
    "mixlab.cli.bench_ot",
    "mixlab.cli.transformmix",
    "mixlab.cli.bench_mixers",
    "mixlab.cli.eval",
    "mixlab.cli.reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixlab", description="Sample-mixing data augmentation: train, compare, "
                                     "reproduce.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def _shutdown_distributed(ok: bool) -> None:
    """Leave the torchrun process group cleanly (gloo can abort at interpreter exit otherwise). After a run that
    ended normally, wait for every rank first: a rank that tears its connections down while a peer is still
    leaving can make that peer abort ("terminate called without an active exception"; seen once in CI)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    if not sys.stdout.isatty() and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # a log file / CI sees each line as it is printed
    parser = build_parser()
    args = parser.parse_args(argv)
    ok = False
    try:
        code = _run(args)
        ok = True
        return code
    finally:
        _shutdown_distributed(ok)


def _run(args) -> int:
    try:
        return args.func(args) or 0
    except (KeyError, ValueError, TypeError, RuntimeError, FileNotFoundError) as error:
        if getattr(args, "debug", False):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"mixlab {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
