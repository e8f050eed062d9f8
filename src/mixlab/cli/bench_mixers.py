"""``mixlab bench-mixers``: seconds to produce one mixed batch for every registered method
(:mod:`mixlab.bench.mixers` holds the benchmark and what it reports; this module parses and prints)."""
from __future__ import annotations

import argparse

from .common import add_common, apply_threads, parse_kv, positive_int, print_json


def shapes(text: str) -> list[tuple[int, int]]:
    """``"1x28,3x32"`` -> ``[(1, 28), (3, 32)]`` (channels, size; both integers >= 1)."""
    out = []
    for item in text.split(","):
        try:
            channels, size = (positive_int(v) for v in item.strip().lower().split("x"))
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"each shape is CxS, channels and size integers >= 1, e.g. 3x32; "
                                             f"got {item!r}") from None
        out.append((channels, size))
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("bench-mixers", help="time producing a mixed batch (default 128 at 32x32) for every method")
    p.add_argument("--methods", default="all", help="comma-separated, or 'all' (default: every registered method)")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--shapes", default="3x32", type=shapes, help="CxS image shapes, comma-separated (default 3x32)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed repeats after one warm-up (median reported)")
    p.add_argument("--model", default="cnn11", help="the network methods need (saliency, TransformMix's teacher)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option (default width=0.5)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_common(p)
    p.set_defaults(func=run)


def format_row(r: dict) -> str:
    mix = (f"{r['mix_s']:.4f}" + ("*" if r["mix_kind"] == "loss fwd - ERM's" else " ")) if "mix_s" in r else "- "
    ratio = f"{r['mix_vs_mixup']:.1f}" if "mix_vs_mixup" in r else "-"
    loss = f"{r['loss_forward_s']:.4f}" if "loss_forward_s" in r else "-"
    vs_erm = f"{r['loss_vs_erm']:.2f}" if "loss_vs_erm" in r else "-"
    return f"{r['shape']:<10}{r['method']:<19}{mix:>13}{ratio:>9}{loss:>12}{vs_erm:>8}"


def run(args) -> int:
    from ..bench.mixers import PAPER_RATIOS, paper_ratios, time_mixers
    from ..registry import METHODS
    from ..train.engine import resolve_device

    apply_threads(args)
    device = resolve_device(args.device)
    names = METHODS.names() if args.methods.strip() == "all" else [m.strip() for m in args.methods.split(",")
                                                                     if m.strip()]
    wanted = []
    for name in names:
        if name in METHODS:
            wanted.append(METHODS.canonical(name))
        else:
            print(f"skipping {name}: not a registered method here (see mixlab methods)")
    model_kwargs = parse_kv(args.model_arg) or {"width": 0.5}
    print(f"device {device}; batch {args.batch_size}; model {args.model} {model_kwargs}; median of {args.repeats}")
    print(f"{'shape':<10}{'method':<19}{'mix s/batch':>13}{'x mixup':>9}{'loss fwd s':>12}{'x erm':>8}", flush=True)
    rows, skipped = [], {}
    for r in time_mixers(wanted, args.shapes, args.batch_size, args.model, model_kwargs, args.repeats, device,
                         skipped):  # erm and mixup first; each row printed with its ratios as soon as it is timed
        print(format_row(r), flush=True)
        rows.append(r)
    print("mix: mix(x, t) (TransformMix: teacher CAMs + module); * = loss forward minus ERM's (mixing inside the "
          "loss: saliency forward-backward + mask for PuzzleMix / Co-Mixup; feature mixing)")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    ratios = paper_ratios(rows)
    for r in ratios:
        ours = "not measurable (below timing noise)" if r["ours"] is None else f"{r['ours']:.2f}"
        print(f"{r['ratio']} ({r['shape']}): ours {ours} ({r['ours_s'][0]:.4f} s / {r['ours_s'][1]:.4f} s "
              f"on {device}), paper {r['paper_s'][0]} / {r['paper_s'][1]} = {r['paper']:.2f} ({r['source']})")
    timed_names = {r["method"] for r in rows}
    for a, b, pa, pb, source in PAPER_RATIOS:
        missing = [n for n in (a, b) if n not in timed_names]
        if missing and (a in timed_names or b in timed_names):
            print(f"{a} / {b}: not compared ({', '.join(missing)} not timed here); paper {pa} / {pb} = "
                  f"{pa / pb:.2f} ({source})")
    if args.json:
        print_json({"device": str(device), "rows": rows, "skipped": skipped, "paper_ratios": ratios})
    return 0
