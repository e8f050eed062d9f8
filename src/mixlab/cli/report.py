"""``mixlab report``: mean +- std over seeds, per protocol / dataset / model / method."""
from __future__ import annotations

from .common import print_json


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="summarise the results store")
    p.add_argument("--out", default="mixlab-out", help="output folder holding results.db")
    p.add_argument("--protocol", default=None)
    p.add_argument("--dataset", default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--curves", default=None, metavar="PNG",
                   help="also plot the dev-error learning curves of the selected text runs (one panel per dataset) "
                        "and print where each levelled off")
    p.add_argument("--paired", default=None, metavar="BASE",
                   help="instead of the table: each row minus the BASE method's row of the same protocol, seed by "
                        "seed (mean +- std of the differences over the seeds both have); BASE: a method, or "
                        "'METHOD (OPTIONS)' as the table shows them, e.g. 'amp+sentmixup (shared_dropout=true)'")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..results import ResultsStore, describe_diverged, diverged_runs, summarize
    from ..results.store import format_mean_std

    if not (Path(args.out) / "results.db").exists():
        raise FileNotFoundError(f"no results.db in {args.out}; run mixlab train or bench with --out {args.out}")
    where = {k: v for k, v in (("protocol", args.protocol), ("dataset", args.dataset)) if v}
    runs = ResultsStore(args.out).runs(**where)
    rows, diverged = summarize(runs), diverged_runs(runs)
    if args.curves:
        plot_curves(runs, args.curves)
    if args.paired:
        return print_paired(rows, args.paired, args.json)
    if args.json:  # one entry per configuration (status "ok"), then one per diverged run (status "diverged")
        print_json([{"status": "ok", **r} for r in rows] + diverged)
        return 0
    header = (f"{'protocol':<26}{'dataset':<15}{'model':<16}{'method':<20}{'evaluated on':<24}"
              f"{'error % (mean +- std)':>24}{'n':>4}")
    print(header)
    for r in rows:
        print(f"{str(r['protocol']):<26}{r['dataset']:<15}{r['model']:<16}{r['method']:<20}{r['evaluated_on']:<24}"
              f"{format_mean_std(r['mean_error'], r['std_error'], r['trials'], 24)}{r['trials']:>4}"
              + (f"   options: {r['options']}" if r["options"] else "")
              + (f"   [{r['variant']}]" if r["variant"] else ""))
    if diverged:
        print(f"\ndiverged (non-finite training loss; no error, not averaged above): {len(diverged)} run(s)")
        for d in diverged:
            print(f"  {d['protocol']} {d['dataset']} {d['model']}: {describe_diverged(d)}")
    return 0


def print_paired(rows: list[dict], base: str, as_json: bool) -> int:
    from ..results.store import format_mean_std, paired_differences

    diffs = paired_differences(rows, base)
    if as_json:
        print_json(diffs)
        return 0
    print(f"{'protocol':<26}{'method':<20}{'options':<24}{'base':<26}{'error - base (mean +- std)':>28}{'n':>4}"
          "   per seed")
    for d in diffs:
        print(f"{str(d['protocol']):<26}{d['method']:<20}{d['options'] or '-':<24}{d['base']:<26}"
              f"{format_mean_std(d['mean_diff'], d['std_diff'], len(d['diffs']), 28, sign=True)}{len(d['diffs']):>4}   "
              + ", ".join(f"s{s}: {v:+.2f}" for s, v in sorted(zip(d["paired_seeds"], d["diffs"]))))
    return 0


def plot_curves(runs: list[dict], path: str) -> None:
    from ..results.store import levelled_off, step_curves
    from ..viz import two_panel_plot

    curves = step_curves(runs)
    if not curves:
        raise ValueError("no selected run has periodic dev evaluations (text runs with --eval-steps and a dev split)")
    for dataset, series in curves.items():
        for label, (steps, values) in series.items():
            at = levelled_off(steps, values)
            print(f"{dataset:<10}{label:<28} dev error {values[-1]:6.2f}% at step {steps[-1]}; levelled off at step "
                  f"{at} (where the 5-evaluation moving average first comes within 1 point of its lowest)")
    panels = [(series, "dev error %", dataset) for dataset, series in curves.items()]
    print(f"curves: {two_panel_plot(panels, path, 'step', 'dev error during training')}")
