"""``mixlab bench-mixers``: seconds to produce one mixed batch, for every registered method, in one run.

By default every method in the registry (so a newly registered one is timed without touching this file) on a
batch of 128 images of 3x32x32 (``--shapes``), with ``--model`` (cnn11 at width 0.5) as the network each needs.
Per method:

- ``mix s/batch``: the time to produce the mixed batch, network passes included. Input-space mixers: their
  ``mix(x, t)``; TransformMix's includes the teacher's CAMs (the timing model is the teacher) and its frozen mixing
  module (untrained weights: time does not depend on them), AutoMix's its U-Net. Methods that mix inside their
  training loss (PuzzleMix and Co-Mixup, whose saliency costs one extra forward-backward; feature-space methods):
  their loss forward minus ERM's loss forward, paired and alternated so load hits both alike (marked ``*``).
- ``loss fwd s``: the forward of the training loss (mixing + model, autograd on as in training), with its ratio
  to ERM's.

Ratios are to Mixup (mixing) and ERM (loss forward) measured in the same run. Where a paper states a timing ratio
between two methods (:data:`PAPER_RATIOS`), it is printed beside ours as soon as both methods are registered and
timed: TransformMix / PuzzleMix against the TransformMix paper's 0.045 s / 0.163 s (Table 5: batch of 128, RTX
3090). Methods that cannot run on images (the text methods) are listed as skipped, with the reason.
"""
from __future__ import annotations

import argparse
import statistics

from ..bench.timing import median_seconds, timed
from .common import add_common, apply_threads, parse_kv, positive_int, print_json

#: (numerator, denominator, the paper's seconds for each, source): printed when both methods are timed
PAPER_RATIOS = (("transformmix", "puzzlemix", 0.045, 0.163,
                 "TransformMix paper, Table 5: a batch of 128 mixed images on an RTX 3090"),)


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


def prepare(method, model, channels: int, size: int):
    """Give learned mixers the untrained networks they would get from ``setup`` (timing only)."""
    if method.name == "transformmix":
        from ..methods.transformmix import MixingModule

        method.attach(model, MixingModule(k=method.k, image_size=size).to(next(model.parameters()).device))
    elif method.name == "automix-zhu" and method.generator_net is None:
        method.build(channels).to(next(model.parameters()).device)
    return method


def paired_excess(fn, baseline, repeats: int, device) -> float:
    """Median over alternated runs of ``time(fn) - time(baseline)`` (after one warm-up of each)."""
    fn(), baseline()
    return statistics.median(timed(fn, device) - timed(baseline, device) for _ in range(repeats))


def module_time(method, x, t, repeats: int, device) -> float:
    """Seconds of TransformMix's mixing module alone (teacher CAMs computed beforehand)."""
    import torch

    lam, index, z = method.sample(x.shape[0], x.device)
    cams = method.cams(x, t)[index].transpose(0, 1)
    images = x[index].transpose(0, 1)
    with torch.no_grad():
        return median_seconds(lambda: method.module(images, cams, lam, z), repeats, device)


def time_method(name, model, x, t, erm, repeats: int, device) -> list[dict]:
    """The rows of one method (TransformMix adds its module alone); raises if it cannot run on images."""
    import torch

    from ..methods.base import InputMixer
    from ..registry import METHODS

    channels, size = x.shape[1], x.shape[-1]
    method = prepare(METHODS.create(name, num_classes=t.shape[1], seed=0).to(device), model, channels, size)
    row = {"method": name}
    loss = lambda: method.training_loss(model, x, t)  # noqa: E731  (with autograd on, as in training: AMP needs it)
    row["loss_forward_s"] = median_seconds(loss, repeats, device)
    if isinstance(method, InputMixer):
        with torch.no_grad():
            row["mix_s"], row["mix_kind"] = median_seconds(lambda: method.mix(x, t), repeats, device), "mix()"
    elif erm is not None:
        row["mix_s"] = paired_excess(loss, lambda: erm.training_loss(model, x, t), repeats, device)
        row["mix_kind"] = "loss fwd - ERM's"
    rows = [row]
    if name == "transformmix":  # the mixing module alone, CAMs precomputed
        rows.append({"method": "  module only", "mix_s": module_time(method, x, t, repeats, device),
                     "mix_kind": "module"})
    return rows


def paper_ratios(rows: list[dict]) -> list[dict]:
    """Our ratio beside the paper's for every :data:`PAPER_RATIOS` entry whose methods are both in ``rows``."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        mix = {r["method"]: r["mix_s"] for r in rows if r["shape"] == shape and "mix_s" in r}
        for a, b, pa, pb, source in PAPER_RATIOS:
            if a in mix and b in mix:
                # a paired excess at or below zero is timing noise (a batch too small to measure): no ratio
                ours = mix[a] / mix[b] if min(mix[a], mix[b]) > 0 else None
                out.append({"shape": shape, "ratio": f"{a} / {b}", "ours": ours,
                            "ours_s": (mix[a], mix[b]), "paper": pa / pb, "paper_s": (pa, pb), "source": source})
    return out


def format_row(r: dict) -> str:
    mix = (f"{r['mix_s']:.4f}" + ("*" if r["mix_kind"] == "loss fwd - ERM's" else " ")) if "mix_s" in r else "- "
    ratio = f"{r['mix_vs_mixup']:.1f}" if "mix_vs_mixup" in r else "-"
    loss = f"{r['loss_forward_s']:.4f}" if "loss_forward_s" in r else "-"
    vs_erm = f"{r['loss_vs_erm']:.2f}" if "loss_vs_erm" in r else "-"
    return f"{r['shape']:<10}{r['method']:<19}{mix:>13}{ratio:>9}{loss:>12}{vs_erm:>8}"


def run(args) -> int:
    import torch

    from ..registry import METHODS, MODELS
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
    wanted = list(dict.fromkeys(["erm", "mixup"] + wanted))  # the baselines of the ratios, timed first
    model_kwargs = parse_kv(args.model_arg) or {"width": 0.5}
    gen = torch.Generator().manual_seed(0)
    print(f"device {device}; batch {args.batch_size}; model {args.model} {model_kwargs}; median of {args.repeats}")
    print(f"{'shape':<10}{'method':<19}{'mix s/batch':>13}{'x mixup':>9}{'loss fwd s':>12}{'x erm':>8}", flush=True)
    rows, skipped = [], {}
    for channels, size in args.shapes:
        x = torch.rand(args.batch_size, channels, size, size, generator=gen).to(device)
        y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
        t = torch.nn.functional.one_hot(y, 10).float()
        model = MODELS.create(args.model, num_classes=10, in_channels=channels, image_size=size, **model_kwargs)
        model = model.to(device).eval()
        erm = METHODS.create("erm", num_classes=10).to(device)
        base = {}
        for name in wanted:  # erm and mixup first: each row is printed with its ratios as soon as it is timed
            try:
                new_rows = time_method(name, model, x, t, erm, args.repeats, device)
            except Exception as error:  # e.g. a text method on images: say why, go on
                skipped[name] = f"{type(error).__name__}: {error}".splitlines()[0][:160]
                continue
            for r in new_rows:
                base.setdefault(r["method"], r)
                r.update(shape=f"{channels}x{size}x{size}", batch=args.batch_size)
                if "mix_s" in r and "mixup" in base:
                    r["mix_vs_mixup"] = r["mix_s"] / max(base["mixup"]["mix_s"], 1e-9)
                if "loss_forward_s" in r and "erm" in base:
                    r["loss_vs_erm"] = r["loss_forward_s"] / max(base["erm"]["loss_forward_s"], 1e-9)
                print(format_row(r), flush=True)
            rows += new_rows
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
