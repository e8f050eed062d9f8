"""``mixlab reproduce NAME [--quick] [--trials T]``: run a paper's table as far as this build and the data
allow, and write a Markdown report with the paper's numbers beside ours (resumable: finished runs are skipped)."""
from __future__ import annotations

import json
import shlex
import sys

from .common import add_common, add_jobs, apply_threads, positive_int
from .train import EXIT_DIVERGED


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="reproduce a paper's table: train what is missing, write a report")
    p.add_argument("name", nargs="?", default=None, help="reproduction name (--list to see them)")
    p.add_argument("--list", action="store_true", help="list the reproductions and exit")
    p.add_argument("--quick", action="store_true", help="the CPU-sized protocols (said in the report)")
    p.add_argument("--trials", type=positive_int, default=None, help="seeds 0..T-1 (default: each protocol's)")
    p.add_argument("--report-dir", default=None, help="where report.md, results.json and PNGs go "
                   "(default <out>/reports/NAME[-quick])")
    p.add_argument("--dry-run", action="store_true",
                   help="print every cell's resolution (protocol, method, options, run ids, available or why not) "
                        "without training or writing anything; exit 1 if a cell is unavailable without a "
                        "documented reason")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the runs already in --out (a cell counts the trials "
                        "whose runs are all there; the report says how many runs are missing)")
    p.add_argument("--columns", default=None, metavar="LABEL,...",
                   help="run only these columns (their labels, e.g. 'MNIST(sub)'); the others say so in the report")
    p.add_argument("--methods", default=None, metavar="METHOD,...",
                   help="run only the rows of these methods (registry names); the others say so in the report")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="shorten every protocol to this many epochs (a smoke test, said in the report; not the "
                        "papers' schedule)")
    p.add_argument("--no-progress", action="store_true")
    add_jobs(p)
    add_common(p, training=True)
    p.set_defaults(func=run)


#: path-valued flags and the placeholder a report shows for them (never a machine's path); ``--report-dir`` keeps
#: a relative value (e.g. ``docs/results/NAME``)
PLACEHOLDERS = {"--out": "OUT", "--data-dir": "DATA", "--report-dir": "REPORT_DIR"}


def shown_command(argv: list[str]) -> str:
    """``mixlab ARGS`` as a report shows it: ``--out OUT``, ``--data-dir DATA``, an absolute ``--report-dir`` as
    ``REPORT_DIR`` and any other absolute path as ``PATH``."""
    def shown(flag: str | None, value: str) -> str:
        absolute = value.startswith(("/", "~"))
        if flag is not None and (flag != "--report-dir" or absolute):
            return PLACEHOLDERS[flag]
        return "PATH" if absolute else shlex.quote(value)

    out, flag = [], None
    for arg in argv:
        name, eq, value = arg.partition("=")
        if flag is not None:
            out.append(shown(flag, arg))
            flag = None
        elif name in PLACEHOLDERS and eq:
            out.append(f"{name}={shown(name, value)}")
        else:
            flag = arg if arg in PLACEHOLDERS else None
            out.append(arg if flag else shown(None, arg))
    return "mixlab " + " ".join(out)


def selection(args):
    """The part of the reproduction the flags select (None: all of it)."""
    from ..reproduce import Selection

    def names(text):
        return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()

    part = Selection(names(args.columns), names(args.methods), args.epochs)
    return part if part != Selection() else None


def run(args) -> int:
    from ..reproduce import REPRODUCTIONS, dry_run, run_reproduction
    from ..results import describe_diverged

    if args.list or not args.name:
        for name, r in sorted(REPRODUCTIONS.items()):
            print(f"{name:<22} {r.title}")
        return 0 if args.list else 2
    if args.dry_run:
        counts = dry_run(args.name, out=args.out, quick=args.quick, trials=args.trials, data_dir=args.data_dir,
                         device=args.device, threads=args.threads, jobs=args.jobs, selection=selection(args))
        return 1 if counts["unexplained"] else 0
    apply_threads(args)
    command = shown_command(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    path = run_reproduction(args.name, out=args.out, quick=args.quick, trials=args.trials, data_dir=args.data_dir,
                            device=args.device, report_dir=args.report_dir,
                            progress=False if args.no_progress else None, command=command, threads=args.threads,
                            train=not args.report_only, jobs=args.jobs, selection=selection(args),
                            executor=args.executor, address=args.ray_address)
    print(f"report: {path}")
    diverged = json.loads((path.parent / "results.json").read_text()).get("diverged", [])
    if diverged:
        print(f"{len(diverged)} run(s) diverged (non-finite training loss; listed in the report, not averaged):")
        for d in diverged:
            print(f"  {describe_diverged(d)}")
        return EXIT_DIVERGED
    return 0
