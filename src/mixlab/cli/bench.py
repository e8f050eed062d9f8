"""``mixlab bench``: a protocol for several methods and seeds; resumable (finished runs are skipped)."""
from __future__ import annotations

import time

from .common import add_common, add_jobs, apply_threads, parse_kv, positive_int, print_json
from .train import EXIT_DIVERGED


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a named protocol for several methods and trials, print the comparison")
    p.add_argument("--protocol", required=False, default=None, help="protocol name (--list to see them)")
    p.add_argument("--list", action="store_true", help="list the protocols and exit")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: the protocol's)")
    p.add_argument("--trials", type=positive_int, default=None, help="seeds 0..T-1 (default: the protocol's)")
    p.add_argument("--epochs", type=positive_int, default=None, help="override the protocol's epochs")
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE",
                   help="option for every listed method, on top of the protocol's (repeatable)")
    p.add_argument("--holdout-per-class", type=positive_int, default=None, metavar="N",
                   help="report error on N images per class of the training split left out of training (a "
                        "validation set), not on the test set")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--no-progress", action="store_true")
    add_jobs(p)
    add_common(p, training=True)
    p.set_defaults(func=run)


def format_table(rows: list[dict], baseline: str | None = "erm") -> str:
    from ..results.store import format_mean_std

    base = next((r for r in rows if r["method"] == baseline), None)
    lines = [f"{'method':<22}{'error % (mean +- std)':>24}{'trials':>8}{'vs ' + (baseline or ''):>10}{'s/trial':>9}"]
    for r in rows:
        delta = f"{r['mean_error'] - base['mean_error']:+.2f}" if base else ""
        lines.append(f"{r['method']:<22}{format_mean_std(r['mean_error'], r['std_error'], r['trials'], 24)}"
                     f"{r['trials']:>8}{delta:>10}{r['train_seconds']:>9.1f}"
                     + (f"  options: {r['options']}" if r.get("options") else ""))
    return "\n".join(lines)


#: settings shown in the bench header (TrainConfig fields), in this order
HEADER_FIELDS = ("dataset", "model", "model_kwargs", "subset_per_class", "epochs", "batch_size", "optimizer", "lr",
                 "schedule", "milestones", "max_steps", "test_limit", "holdout_per_class", "method_kwargs")


def format_settings(protocol, config, trials: int, overrides: dict) -> str:
    """The settings the runs use (as trained, not as the protocol's description says); ``(protocol: X)`` marks
    a setting overridden on the command line."""
    identity = config.identity()
    parts = []
    for name in HEADER_FIELDS:
        value = getattr(config, name)
        if value in (None, {}, ()) and name not in overrides:
            continue
        text = f"{name} {value}"
        if name in overrides and name != "method_kwargs" and protocol.config.get(name) != value:
            text += f" (protocol: {protocol.config.get(name)})"
        parts.append(text)
    parts.append(f"trials {trials}" + (f" (protocol: {protocol.trials})" if trials != protocol.trials else ""))
    threads = identity.get("threads")
    parts.append(f"device {identity['device']}" + (f", {threads} CPU thread{'s' * (threads != 1)} per run"
                                                   if threads else ""))
    return "settings: " + ", ".join(parts)


def run_protocol(protocol, methods, trials, out, data_dir=None, device="cpu", progress=None, overrides=None,
                 log=print, jobs: int = 1, executor: str = "local", address: str | None = None) -> list[dict]:
    """Train every (method, seed) of a protocol not yet in the store; return the summary rows and the runs that
    diverged (listed apart, never averaged; the other runs go on).

    ``overrides`` replace protocol fields; its ``method_kwargs`` are added to every method's options. ``jobs``:
    runs trained at once, ``executor`` / ``address``: where (:func:`mixlab.train.train_missing`)."""
    from ..checks import positive_int
    from ..results import ResultsStore, describe_diverged, diverged_runs, summarize
    from ..results.store import combine_folds
    from ..train import train_missing

    positive_int("trials", trials)
    # every config first: a bad option of any method is refused before anything is trained
    trials_configs = [protocol.train_configs(method, seed, device=device, **(overrides or {}))
                      for method in methods for seed in range(trials)]  # per (method, seed): one config per fold

    def label(config, i, n):
        fold = config.data_kwargs.get("fold") if protocol.cv_folds else None
        return f"  {config.method} seed {config.seed}" + (f" fold {fold}" if fold is not None else "")

    run_ids, locked = train_missing([c for trial in trials_configs for c in trial], out, data_dir, progress, log,
                                    label=label, say_done=True, jobs=jobs, executor=executor, address=address)
    store = ResultsStore(out)
    ids = iter(run_ids)
    trials_done = []  # per (method, seed): its run ids (one per fold on a cross-validated protocol)
    for trial in trials_configs:
        trial_ids = [next(ids) for _ in trial]
        if not locked & set(trial_ids):  # a run another bench on the same --out is training now: not yet
            trials_done.append(trial_ids)
    diverged = diverged_runs([store.get_run(r) for ids in trials_done for r in ids])
    for d in diverged:
        log(f"  {describe_diverged(d)}: left out of the table")
    bad = {d["run_id"] for d in diverged}  # a trial with a diverged fold has no number
    runs = [combine_folds([store.get_run(r) for r in ids]) for ids in trials_done if not bad & set(ids)]
    rows = summarize(runs, keys=("method",))
    for key, _ in EXTRA_METRICS:  # e.g. text protocols: dev-selected and best-step errors, from the metrics JSON
        extra = {r["method"]: r for r in summarize([{**r["metrics"], "method": r["method"]} for r in runs],
                                                   keys=("method",), metric=key)}
        for row in rows:
            if row["method"] in extra:
                row[key] = {k: extra[row["method"]][k] for k in ("mean_error", "std_error", "errors")}
    return rows, diverged


#: result keys summarised beside the final test error when runs report them (mixlab.train.text)
EXTRA_METRICS = (("dev_selected_test_error", "dev-selected"),
                 ("best_test_error_over_steps", "best step (selected on test)"))


def format_extra(rows: list[dict]) -> str:
    """Mean +- std of the extra metrics, one column each; empty when no run reports them."""
    present = [(k, label) for k, label in EXTRA_METRICS if any(k in r for r in rows)]
    if not present:
        return ""
    lines = [f"{'method':<22}" + "".join(f"{label:>32}" for _, label in present)]
    for r in rows:
        cells = [f"{r[k]['mean_error']:.2f} +- {r[k]['std_error']:.2f}" if k in r else "n/a" for k, _ in present]
        lines.append(f"{r['method']:<22}" + "".join(f"{c:>32}" for c in cells))
    return "\n".join(lines)


def run(args) -> int:
    from ..config import fit_to_jobs
    from ..protocols import PROTOCOLS, get_protocol
    from ..registry import METHODS
    from ..results import describe_diverged

    if args.list or not args.protocol:
        for name in sorted(PROTOCOLS):
            p = PROTOCOLS[name]
            print(f"{name:<28} {p.description}" + (f"  [scaled: {p.scaling}]" if p.scaling else ""))
        return 0 if args.list else 2
    apply_threads(args)
    protocol = get_protocol(args.protocol)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(protocol.methods)
    for m in methods:
        METHODS.canonical(m)
    trials = protocol.trials if args.trials is None else args.trials
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    if args.holdout_per_class is not None:
        overrides["holdout_per_class"] = args.holdout_per_class
    if args.method_arg:
        overrides["method_kwargs"] = parse_kv(args.method_arg)
    if args.threads:
        overrides["threads"] = args.threads
    print(f"protocol {protocol.name}: {protocol.description}")
    if protocol.scaling:
        print(f"scaled: {protocol.scaling}")
    first = fit_to_jobs(protocol.train_config(methods[0], 0, device=args.device, **overrides), args.jobs)
    print(format_settings(protocol, first, trials, overrides) + (f", {args.jobs} runs at once" if args.jobs > 1
                                                                  else ""))
    if protocol.cv_folds:
        print(f"{protocol.cv_folds}-fold cross-validation: each trial is the mean over its "
              f"{protocol.folds_per_trial or protocol.cv_folds} fold run(s) (trial s: folds {protocol.trial_folds(0)} "
              f"for s = 0, then the next)")
    t0 = time.perf_counter()
    rows, diverged = run_protocol(protocol, methods, trials, args.out, args.data_dir, args.device,
                                  False if args.no_progress else None, overrides, jobs=args.jobs,
                                  executor=args.executor, address=args.ray_address)
    wall = time.perf_counter() - t0
    if args.holdout_per_class:
        print(f"errors below are on the validation holdout ({args.holdout_per_class} per class of the training "
              f"split), not on the test set")
    print(format_table(rows))
    extra = format_extra(rows)
    if extra:
        print("final-step error above; error % of the same runs selected otherwise:")
        print(extra)
    print(f"wall time {wall:.1f} s; results in {args.out}/results.db")
    if diverged:
        print(f"{len(diverged)} run(s) diverged (non-finite training loss), not in the table above:")
        for d in diverged:
            print(f"  {describe_diverged(d)}")
    if args.json:
        print_json({"protocol": protocol.name, "trials": trials, "wall_seconds": wall,
                    "methods": {r["method"]: {k: r[k] for k in ("mean_error", "std_error", "errors", "trials",
                                                                "seeds", "options", *dict(EXTRA_METRICS)) if k in r}
                                for r in rows},
                    "diverged": diverged})
    return EXIT_DIVERGED if diverged else 0
