"""``mixlab bench-ot``: the OT solvers against POT and the authors' Sinkhorn, and the OT methods' step time
(:mod:`mixlab.bench.ot` holds the benchmarks; this module parses and prints)."""
from __future__ import annotations

from .common import add_common, apply_threads, nonneg_int, number, positive_float, positive_int, print_json


def add_parser(sub) -> None:
    p = sub.add_parser("bench-ot", help="benchmark the OT solvers against POT and the methods' step-time overhead")
    p.add_argument("--pairs", type=positive_int, default=128)
    p.add_argument("--reg", type=positive_float, default=0.004)
    p.add_argument("--tol", type=positive_float, default=1e-4, help="our solver's tolerance (POT's criterion)")
    p.add_argument("--relax", type=number(0, 2, lo_open=True, hi_open=True), default=1.5, help="our solver's mixing / over-relaxation parameter")
    p.add_argument("--anderson", type=nonneg_int, default=5, help="our solver's Anderson history (0: none)")
    p.add_argument("--precision", choices=["mixed", "exact"], default="mixed",
                   help="our solver: float32 iterations finished in exact arithmetic, or exact throughout")
    p.add_argument("--backend", choices=["auto", "native", "torch"], default="auto",
                   help="where our float32 iterations run on a CPU: the compiled kernel (auto: when available) or "
                        "PyTorch; with the compiled kernel the PyTorch iteration is timed too")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs of our solver (median)")
    p.add_argument("--steps", type=nonneg_int, default=3, help="timed training steps per method (0: skip part 2)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--skip-barycenter", action="store_true")
    p.add_argument("--sinkhorn-sizes", default="16,64",
                   help="feature-map positions r for the Sinkhorn comparison (comma-separated; empty: skip it)")
    p.add_argument("--sinkhorn-batch", type=positive_int, default=128)
    p.add_argument("--sinkhorn-channels", type=positive_int, default=512)
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.ot import SINKHORN_GOAL, barycenter_bench, sinkhorn_bench, step_bench
    from ..machine import machine

    apply_threads(args)
    m = machine()
    out = {"machine": m}
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads"
          + (f", GPU {m['gpu']}" if m["gpu"] and args.device != "cpu" else ""))
    if not args.skip_barycenter:
        r = barycenter_bench(args.pairs, args.reg, args.tol, args.data_dir, args.device, args.relax, args.anderson,
                             args.precision, args.repeats, args.backend)
        out["barycenter"] = r
        print(f"barycenters of {r['pairs']} pairs of 28x28 digits, reg={r['reg']}:")
        where = {"native": "float32 iterations in the compiled kernel", "torch": "PyTorch iterations"}[r["backend"]]
        print(f"  ours (batched, log domain, tol {r['tol']}, Anderson m={r['anderson']}, relax {r['relax']}, "
              f"{r['precision']} precision, {where}): {r['ours_seconds']:.3f} s, median of {r['repeats']} "
              f"({r['iterations_mean']:.1f} iterations per pair on average, {r['iterations_exact_mean']:.1f} of them "
              f"in exact arithmetic, {r['iterations_max']} max; "
              f"{r['ours_us_per_pair_iteration']:.1f} us per pair-iteration)")
        print(f"  POT convolutional_barycenter2d looped (default stopThr): {r['pot_seconds']:.3f} s, median of "
              f"{r['repeats']} runs interleaved with ours ({r['pot_iterations_mean']:.0f} iterations per pair; "
              f"{r['pot_us_per_iteration']:.1f} us per iteration)")
        per = r["speedup_per_repeat"]
        print(f"  speed ratio POT / ours: {r['speedup']:.1f}x, ratio of the medians (per run: {min(per):.1f}x to "
              f"{max(per):.1f}x)  (goal >= 50x)")
        print(f"  L1 to POT at stopThr 1e-7: max {r['l1_max']:.2e}, mean {r['l1_mean']:.2e}  (limit 1e-3); "
              f"POT's timed results: max {r['pot_l1_max']:.2e}, mean {r['pot_l1_mean']:.2e}")
        if "torch_backend_seconds" in r:
            print(f"  ours with the PyTorch iteration (--backend torch), same runs: {r['torch_backend_seconds']:.3f} s, "
                  f"{r['torch_backend_speedup']:.1f}x POT ({r['torch_backend_iterations_mean']:.1f} iterations per "
                  f"pair; L1 max {r['torch_backend_l1_max']:.2e})")
    if args.steps > 0:
        s = step_bench(args.steps, args.batch_size, args.device)
        out["step_time"] = s
        print(f"step time, PreActResNet-18, batch {s['batch_size']}, median of {s['steps']} steps:")
        for k, v in s["seconds"].items():
            ratio = "" if k == "erm" else f"  {s['ratio_vs_erm'][k]:.2f}x ERM"
            print(f"  {k:<20}{v:8.3f} s{ratio}")
        print("  limits: alignmix (expected over its two branches) <= 1.2x, multimix <= 1.3x")
    sizes = [int(v) for v in args.sinkhorn_sizes.split(",") if v.strip()]
    if sizes:
        r = sinkhorn_bench(sizes, args.sinkhorn_batch, args.sinkhorn_channels, repeats=args.repeats,
                           device=args.device)
        out["sinkhorn"] = r
        print(f"AlignMixup's Sinkhorn vs the authors' algorithm: batch {r['batch']}, {r['channels']} channels, eps "
              f"{r['eps']}, {r['iterations']} iterations, paired ratios of {args.repeats} alternating runs:")
        for size, v in r["sizes"].items():
            flag = "ok" if v["speedup"] >= SINKHORN_GOAL else "under"
            print(f"  r = {size:<4} ours {1000 * v['ours_seconds']:8.1f} ms, authors' {1000 * v['authors_seconds']:8.1f} "
                  f"ms: {v['speedup']:.2f}x ({v['speedup_min']:.2f}-{v['speedup_max']:.2f}; goal >= "
                  f"{SINKHORN_GOAL:g}x {flag}); max |plan difference| {v['max_abs_plan_diff']:.1e}")
    if args.json:
        print_json(out)
    return 0
