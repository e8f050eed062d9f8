"""``mixlab eval KIND --run ID``: evaluate a trained run; the metrics go to ``<out>/results.db`` (evals table)."""
from __future__ import annotations

from .common import add_common, apply_threads, parse_kv, print_json


def add_parser(sub) -> None:
    from ..eval.common import EVALS

    p = sub.add_parser("eval", help="evaluate a trained run (" + ", ".join(EVALS) + ")")
    p.add_argument("kind", choices=list(EVALS), help="which evaluation")
    p.add_argument("--run", required=True, action="append", metavar="ID",
                   help="run id in <out>/runs/ (repeatable; 'all' = every finished run in the store)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="evaluation option, e.g. n_bins=10, levels=[0,0.1,0.2], ood_sets=mnist,kmnist, limit=1000")
    p.add_argument("--force", action="store_true", help="recompute even if the store has this evaluation")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object per run")
    add_common(p)
    p.set_defaults(func=run)


SUMMARY_KEYS = ("top1_error", "top5_error", "ece", "map", "auc_a", "auc_b", "peak_a", "peak_b", "mean_auroc",
                "mean_aupr_in", "mean_aupr_out", "alignment", "uniformity")


def summary(metrics: dict) -> str:
    parts = [f"{k} {metrics[k]:.3f}" for k in SUMMARY_KEYS if isinstance(metrics.get(k), (int, float))]
    if "accuracy" in metrics and "levels" in metrics:
        parts.append("accuracy by noise % " + ", ".join(f"{l:g}:{a:.1f}" for l, a in
                                                         zip(metrics["levels"], metrics["accuracy"])))
    if "sets" in metrics:
        parts += [f"{name}: AUROC {r['auroc']:.1f} AUPR-In {r['aupr_in']:.1f} AUPR-Out {r['aupr_out']:.1f}"
                  for name, r in metrics["sets"].items()]
    from ..eval.amp import SETTINGS

    for label, _, _ in SETTINGS:
        if label in metrics:
            m = metrics[label]
            parts.append(f"{label}: |lam'-lam| {m['lambda_step']:.2e}, median |L'-L| {m['median_loss_gap']:.2e}, "
                         f"second pass kept {100 * m['second_pass_kept']:.1f}% (of the samples whose loss moved: "
                         f"{100 * m['kept_among_moved']:.1f}%)")
    gap = metrics.get("all", {})
    if "generator_vs_barycenter" in gap:
        parts.append("L1 per pixel over every pair and ratio: " + ", ".join(
            f"{k.replace('_', ' ')} {v['mean']:.4f} +- {v['std']:.4f}" for k, v in gap.items()
            if not k.startswith("eq9")))
        parts.append("Eq. 9 (lam |x1 - x^| + (1 - lam) |x2 - x^|) of " + ", ".join(
            f"{k.removeprefix('eq9_')} {v['mean']:.4f}" for k, v in gap.items() if k.startswith("eq9")))
    if "figure" in metrics:
        parts.append(f"figure {metrics['figure']}")
    return "; ".join(parts)


def run(args) -> int:
    from ..eval import run_eval
    from ..results import ResultsStore

    apply_threads(args)
    run_ids = []
    for r in args.run:
        run_ids += [row["run_id"] for row in ResultsStore(args.out).runs()] if r == "all" else [r]
    options = parse_kv(args.option)
    for run_id in run_ids:
        metrics = run_eval(args.out, run_id, args.kind, data_dir=args.data_dir, device=args.device,
                           force=args.force, **options)
        print(f"{args.kind} {run_id}: {summary(metrics)}")
        if args.json:
            print_json(metrics)
    return 0
