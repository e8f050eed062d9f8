"""``mixlab perf``: every method's training step against ERM on this device, the speed goals of issue 20, the
engine against a plain loop, the adapter's overhead, a sweep's runs per hour with and without ``--jobs``
(:mod:`mixlab.bench.perf` and :mod:`mixlab.bench.sweep` hold the benchmarks; this module parses and prints)."""
from __future__ import annotations

import tempfile

from .common import add_common, apply_threads, nonneg_int, parse_kv, positive_int, print_json
from .train import GPU_FLAGS, add_gpu_flags


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="time every method's training step against ERM on this device")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    p.add_argument("--protocol", default=None, help="take dataset, model and batch size from a protocol")
    p.add_argument("--dataset", default=None, help="default digits (needs no download)")
    p.add_argument("--model", default=None, help="default cnn11")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option (repeatable)")
    p.add_argument("--method-arg", action="append", metavar="METHOD:KEY=VALUE",
                   help="option for one method, e.g. multimix:n=1000 (repeatable)")
    p.add_argument("--subset-per-class", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 64, or the protocol's")
    p.add_argument("--repeats", type=positive_int, default=15, help="timed steps per method (median)")
    p.add_argument("--warmup", type=nonneg_int, default=3, help="untimed steps first")
    add_gpu_flags(p)
    p.add_argument("--no-ot", action="store_true", help="skip the OT solver comparison")
    from ..bench.perf import GOAL_METHODS

    p.add_argument("--goals", action="store_true",
                   help="only the speed goals of issue 20: " + ", ".join(GOAL_METHODS) + " (MultiMix at n = 5000), "
                        "the engine against a plain loop, Sinkhorn against the authors' algorithm")
    p.add_argument("--engine-vs-loop", "--engine-vs-dataloader", dest="engine_vs_loop", action="store_true",
                   help="also compare the engine's epochs (ERM) with a plain batched PyTorch loop on the same "
                        "device-resident data and augmentation")
    p.add_argument("--epochs-timed", type=positive_int, default=3, help="epochs per loop for --engine-vs-loop")
    p.add_argument("--adapter", action="store_true",
                   help="instead: each method's step on the model wrapped by mixlab.stage (its stages named as mixing "
                        "points, as a user's own model would be) against the same staged model (goal <= 1.02x); "
                        "default methods: those that run the stages, and erm")
    from ..bench.sweep import SWEEP_GOAL, SWEEP_METHODS, SWEEP_PROTOCOL, SWEEP_TRIALS

    p.add_argument("--sweep", action="store_true",
                   help=f"instead: runs per hour of a sweep trained one after another and --jobs at a time, in this "
                        f"run, into temporary stores (default: {SWEEP_PROTOCOL} x {','.join(SWEEP_METHODS)} x "
                        f"{SWEEP_TRIALS} seeds, --jobs 2; goal >= {SWEEP_GOAL:g}x); --protocol, --methods, "
                        f"--trials, --epochs shrink it")
    p.add_argument("--trials", type=positive_int, default=SWEEP_TRIALS, help="--sweep: seeds 0..T-1")
    p.add_argument("--epochs", type=positive_int, default=None, help="--sweep: override the protocol's epochs")
    p.add_argument("--jobs", type=positive_int, default=2, help="--sweep: runs at once in the parallel sweep")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_common(p)
    p.set_defaults(func=run)


def run_sweep(args) -> int:
    from ..bench.sweep import SWEEP_METHODS, SWEEP_PROTOCOL, sweep_throughput

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(SWEEP_METHODS)
    r = sweep_throughput(args.protocol or SWEEP_PROTOCOL, methods, args.trials, args.jobs, args.epochs,
                         args.data_dir, args.device, args.threads)
    print(f"sweep {r['protocol']} x {', '.join(r['methods'])} x {r['trials']} seed(s), {r['epochs']} epoch(s), "
          f"device {r['device']}" + (f", {r['threads_per_run']} thread(s) per run" if r["threads_per_run"] else "")
          + f"; {r['machine']['cores']} cores ({r['machine']['cpu']})")
    for key, name in (("sequential", "one after another"), ("parallel", f"{r['parallel']['jobs']} at a time")):
        m = r[key]
        cpu = f", {m['cpu_seconds']:.1f} CPU s" if m["cpu_seconds"] is not None else ""
        print(f"  {name:<18} {m['runs']} runs in {m['wall_seconds']:.1f} s{cpu}: {m['runs_per_hour']:.0f} runs/hour "
              f"(load average {m['load_before']} before, {m['load_after']} after)")
    goal = r["goal"]
    print(f"  --jobs {r['parallel']['jobs']} / sequential: {r['speedup']:.2f}x runs per hour"
          + (f", goal >= {goal:g}: {'ok' if r['speedup'] >= goal else 'under'}" if goal else
             " (not issue 20's sweep: no goal)")
          + f"; same test errors in both: {'yes' if r['same_numbers'] else 'NO'}")
    if args.json:
        print_json(r)
    return 0 if r["same_numbers"] else 1


def base_fields(args) -> dict:
    from ..bench.perf import default_fields

    given = {name: getattr(args, name) for name in ("dataset", "model", "subset_per_class", "batch_size", *GPU_FLAGS)}
    # --threads goes into the trainers' configs: their setup sets a run's threads (every core for a ResNet by
    # default), which would otherwise change the thread count in the middle of a one-thread measurement
    given["threads"] = getattr(args, "threads", None)
    return dict(default_fields(args.protocol, model_kwargs=parse_kv(args.model_arg), **given), device=args.device)


def method_kwargs(pairs) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in pairs or []:
        method, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            raise ValueError(f"--method-arg wants METHOD:KEY=VALUE, got {item!r}")
        out.setdefault(method, {}).update(parse_kv([kv]))
    return out


def goal_cell(name: str, r: dict) -> tuple[str, str]:
    """The goal column (``<=2.10/mixup``: relative to mixup's step; ``/sample``: per sample) and the measured one."""
    from ..bench.perf import goal_for

    goal = goal_for(name)
    if goal is None or r.get(goal[1]) is None:
        return "-", "-"
    target, measure = goal
    basis = {"base_ratio": f"/{r.get('base')}", "per_sample_ratio": "/sample"}.get(measure, "")
    value = r[measure]
    return f"<={target:.2f}{basis}", f"{value:.3f} {'ok' if value <= target else 'over'}"


def format_table(rows: dict) -> str:
    lines = [f"{'method':<18}{'step ms':>9}{'ERM ms':>9}{'x ERM':>8}{'goal':>16}{'measured':>12}{'mix ms':>9}"
             f"{'mix/ERM':>9}{'memory MB':>11}{'x ERM':>7}"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"{name:<18}  skipped: {r['error']}")
            continue
        goal, measured = goal_cell(name, r)
        mem_ratio = f"{r['memory_ratio']:.2f}" if r["memory_ratio"] else "-"
        mix = f"{r['mix_ms']:.2f}" + ("" if r["mix_kind"] == "mix()" else "*")
        lines.append(f"{name:<18}{r['step_ms']:>9.2f}{r['erm_step_ms']:>9.2f}{r['step_ratio']:>8.3f}{goal:>16}"
                     f"{measured:>12}{mix:>9}{100 * r['mix_share']:>8.1f}%{r['memory_mb']:>11.1f}{mem_ratio:>7}")
    return "\n".join(lines)


def goal_lines(rows: dict, engine: dict | None, sinkhorn: dict | None) -> list[str]:
    """The speed goals of issue 20 measured in this run: paired ratios, median (range over the repeats)."""
    from ..bench.ot import SINKHORN_GOAL
    from ..bench.perf import ENGINE_GOAL, goal_for, plain_input_mixer

    def verdict(value, target, upper=True):
        return "ok" if (value <= target if upper else value >= target) else ("over" if upper else "under")

    lines = []
    if engine:
        lo, hi = engine["engine_speedup_range"]
        nlo, nhi = engine["engine_nchw_speedup_range"]
        lines.append(f"engine / plain batched loop (samples per second): {engine['engine_speedup']:.2f}x ({lo:.2f}-"
                     f"{hi:.2f}), goal > {ENGINE_GOAL:g}: {'ok' if engine['engine_speedup'] > ENGINE_GOAL else 'under'}"
                     f" [engine with NCHW forced: {engine['engine_nchw_speedup']:.2f}x ({nlo:.2f}-{nhi:.2f})]")
    for name, r in rows.items():
        goal = goal_for(name)
        if goal is None or "error" in r or plain_input_mixer(name):
            continue
        target, measure = goal
        lo, hi = r[measure + "_range"]
        options = ", ".join(f"{k}={v}" for k, v in r.get("options", {}).items())
        what = {"base_ratio": f"step / {r.get('base')} step", "per_sample_ratio": "step per sample / ERM's",
                "step_ratio": "step / ERM step"}[measure]
        lines.append(f"{name}{f' ({options})' if options else ''} {what}: {r[measure]:.2f}x ({lo:.2f}-{hi:.2f}), "
                     f"goal <= {target:g}: {verdict(r[measure], target)}")
    for size, v in (sinkhorn or {}).get("sizes", {}).items():
        lines.append(f"Sinkhorn, r = {size} (batch {sinkhorn['batch']}, {sinkhorn['channels']} channels, eps "
                     f"{sinkhorn['eps']}, {sinkhorn['iterations']} iterations), authors' time / ours: "
                     f"{v['speedup']:.2f}x ({v['speedup_min']:.2f}-{v['speedup_max']:.2f}), goal >= {SINKHORN_GOAL:g}: "
                     f"{verdict(v['speedup'], SINKHORN_GOAL, upper=False)}")
    return lines


def run_adapter(args, builder, fields, names, kwargs, device) -> int:
    import torch

    from ..bench.perf import adapter_comparison, dispatch_comparison

    print(f"device {device}; {fields['model']} {fields['model_kwargs'] or ''} on {fields['dataset']}, batch "
          f"{fields['batch_size']}; median of {args.repeats} paired steps after {args.warmup} warm-up: the model "
          f"through mixlab.stage (named points) vs the staged model")
    print(f"{'method':<18}{'staged ms':>11}{'adapter ms':>12}{'ratio':>8}{'(range)':>13}{'target':>11}", flush=True)

    def line(name, r):  # each row as soon as it is measured (a long run on a loaded machine shows progress)
        if "error" in r:
            print(f"{name:<18}  skipped: {r['error']}", flush=True)
            return
        flag = "ok" if r["ratio"] <= r["target"] else "over"
        lo, hi = r["ratio_range"]
        print(f"{name:<18}{r['staged_step_ms']:>11.2f}{r['adapter_step_ms']:>12.2f}{r['ratio']:>8.3f}"
              f"  ({lo:.2f}-{hi:.2f}){r['target']:>7.2f} {flag}", flush=True)

    rows = adapter_comparison(builder, names, kwargs, fields["batch_size"], args.repeats, args.warmup, line)
    dispatch = dispatch_comparison()
    print(f"dispatch alone (one staged pass of a width-4 PreActResNet-18 on one 8x8 image): staged "
          f"{dispatch['staged_us']:.0f} us, adapter {dispatch['adapter_us']:.0f} us, paired difference "
          f"{dispatch['difference_us']:+.0f} us per pass", flush=True)
    if args.json:
        print_json({"device": str(device), "torch": torch.__version__, "dataset": fields["dataset"],
                    "model": fields["model"], "model_kwargs": fields["model_kwargs"],
                    "batch_size": fields["batch_size"], "repeats": args.repeats, "warmup": args.warmup,
                    "adapter": rows, "dispatch": dispatch})
    return 0


def run(args) -> int:
    import torch

    from ..bench.ot import sinkhorn_bench
    from ..bench.perf import GOAL_METHODS, Bench, Builder, engine_vs_loop, method_rows, ot_comparison, stage_methods
    from ..registry import METHODS
    from ..train.engine import resolve_device

    if args.sweep:
        return run_sweep(args)
    apply_threads(args)
    if args.adapter and not (args.model or args.protocol):
        args.model = "preactresnet18"  # (cnn11's pool checks the map size in Python, which torch.fx cannot trace)
    fields = base_fields(args)
    kwargs = method_kwargs(args.method_arg)
    if args.goals:
        names = list(GOAL_METHODS)
        kwargs = {name: {**GOAL_METHODS[name], **kwargs.get(name, {})} for name in names}
    else:
        default = stage_methods() if args.adapter else METHODS.names()
        names = [m.strip() for m in args.methods.split(",")] if args.methods else default
    names = [METHODS.canonical(m) for m in names]
    device = resolve_device(args.device)
    out = tempfile.mkdtemp(prefix="mixlab-perf-")
    builder = Builder(fields, out, args.data_dir)
    if args.adapter:
        return run_adapter(args, builder, fields, names, kwargs, device)
    erm = Bench(builder.trainer("erm"), fields["batch_size"])
    flags = [f for f in GPU_FLAGS if (erm.trainer.config.channels_last if f == "channels_last" else fields.get(f))]
    print(f"device {device}; {fields['model']} {fields['model_kwargs'] or ''} on {fields['dataset']}, batch "
          f"{fields['batch_size']}; flags: {', '.join(flags) or 'none (fp32, NCHW)'}; median of {args.repeats} steps after {args.warmup} warm-up, method and ERM (and the method's own "
          f"baseline) alternating")
    rows = method_rows(builder, erm, names, kwargs, args.repeats, args.warmup, device)
    print(format_table(rows))
    print("step = training_loss + backward + optimiser step; x ERM = median of paired step-time ratios; goal: "
          "upper bound on the step-time ratio to ERM, or to the named method's step (/mixup), or per example trained "
          "on (/sample); mix/ERM = mixing time / ERM step; * = forward time minus ERM forward (the method does not "
          "mix in input space); memory: " + ("peak allocated during a step beyond resident memory"
                                              if device.type == "cuda" else
                                              "tensors autograd keeps for backward (activation memory)"))
    report = {"device": str(device), "torch": torch.__version__, **{k: fields.get(k) for k in (
        "dataset", "model", "model_kwargs", "batch_size", *GPU_FLAGS)},
              "channels_last": erm.trainer.config.channels_last, "repeats": args.repeats,
              "warmup": args.warmup, "methods": rows}
    del erm
    sinkhorn = None
    if not args.no_ot:
        report["ot"] = ot_comparison(device)
        if "skipped" in report["ot"]:
            print(f"OT solvers: skipped ({report['ot']['skipped']})")
        for solver, r in report["ot"].items():
            if solver == "skipped":
                continue
            if isinstance(r, dict) and "speedup" in r:
                diff = {k: v for k, v in r.items() if "diff" in k}
                print(f"OT {solver}: mixlab {r['mixlab_ms']:.1f} ms, reference loop "
                      f"{r.get('per_sample_loop_ms', r.get('pot_loop_ms')):.1f} ms ({r['speedup']:.1f}x); {diff}")
            else:
                print(f"OT {solver}: skipped ({r.get('skipped')})")
        sinkhorn = report["sinkhorn_vs_authors"] = sinkhorn_bench(device=device)
    engine = None
    if args.engine_vs_loop or args.goals:
        engine = report["engine_vs_loop"] = engine_vs_loop(builder, args.epochs_timed)
        print(f"engine vs a plain batched loop ({engine['train_size']} images, batch {engine['batch_size']}, crop "
              f"{engine['crop_padding']}, flip {engine['flip']}, data on the device, {engine['epochs']} epochs each, "
              f"alternating): engine {engine['engine_samples_per_second']:.0f} samples/s "
              f"({'channels-last' if engine['engine_channels_last'] else 'NCHW'}), loop "
              f"{engine['loop_samples_per_second']:.0f} samples/s (NCHW)")
    lines = goal_lines(rows, engine, sinkhorn)
    if lines:
        print("speed goals (issue 20), paired ratios in this run, median (range):")
        print("\n".join("  " + line for line in lines))
    if args.json:
        print_json(report)
    return 0
