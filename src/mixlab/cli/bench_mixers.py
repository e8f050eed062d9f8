"""``mixlab bench-mixers``: seconds to mix one batch, for any registered methods, in one run.

For input-space mixers (``mix(x, t)``) the time of one mix under ``no_grad``, with the ratio to Mixup measured in
the same run; for every method also the forward of its training loss (mixing + model) with the ratio to ERM's.
Methods that are not registered are skipped with a message (e.g. ``alignmix`` before it is merged).
Learned mixers run with untrained weights (time does not depend on them): TransformMix's time includes the
teacher's CAMs (the teacher is the timing model) and its mixing module; AutoMix's is the U-Net generator.
The TransformMix paper reports 0.045 s per batch of 128 on an RTX 3090 (its Table 5).
"""
from __future__ import annotations

import argparse
import time

from .common import add_common, apply_threads, parse_kv, positive_int, print_json

DEFAULT_METHODS = "mixup,automix-zhu,transformmix,alignmix"


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
    p = sub.add_parser("bench-mixers", help="time mixing a batch (e.g. 128 images) for several methods")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--shapes", default="1x28,3x32", type=shapes, help="CxS image shapes, comma-separated (default 1x28,3x32)")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed repeats after one warm-up (median reported)")
    p.add_argument("--model", default="cnn11", help="model for the loss forward and TransformMix's teacher")
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


def timed(fn, repeats: int, device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up (synchronising CUDA)."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def module_time(method, x, t, repeats: int, device) -> float:
    """Seconds of TransformMix's mixing module alone (teacher CAMs computed beforehand)."""
    import torch

    lam, index, z = method.sample(x.shape[0], x.device)
    cams = method.cams(x, t)[index].transpose(0, 1)
    images = x[index].transpose(0, 1)
    with torch.no_grad():
        return timed(lambda: method.module(images, cams, lam, z), repeats, device)


def run(args) -> int:
    import torch

    from ..methods.base import InputMixer
    from ..registry import METHODS, MODELS
    from ..train.engine import resolve_device

    apply_threads(args)
    device = resolve_device(args.device)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    wanted = []
    for name in names:
        if name in METHODS:
            wanted.append(name)
        else:
            print(f"skipping {name}: not a registered method here (see mixlab methods)")
    model_kwargs = parse_kv(args.model_arg) or {"width": 0.5}
    gen = torch.Generator().manual_seed(0)
    rows = []
    for channels, size in args.shapes:
        x = torch.rand(args.batch_size, channels, size, size, generator=gen).to(device)
        y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
        t = torch.nn.functional.one_hot(y, 10).float()
        model = MODELS.create(args.model, num_classes=10, in_channels=channels, image_size=size, **model_kwargs)
        model = model.to(device).eval()
        base = {}
        for name in ["erm", "mixup"] + [n for n in wanted if n not in ("erm", "mixup")]:
            method = prepare(METHODS.create(name, num_classes=10, seed=0).to(device), model, channels, size)
            row = {"method": name, "shape": f"{channels}x{size}x{size}", "batch": args.batch_size}
            with torch.no_grad():
                if isinstance(method, InputMixer):
                    row["mix_s"] = timed(lambda: method.mix(x, t), args.repeats, device)
                row["loss_forward_s"] = timed(lambda: method.training_loss(model, x, t), args.repeats, device)
            base.setdefault(name, row)
            rows.append(row)
            if name == "transformmix":  # the mixing module alone, CAMs precomputed
                rows.append({"method": "  module only", "shape": row["shape"], "batch": args.batch_size,
                             "mix_s": module_time(method, x, t, args.repeats, device)})
        for row in rows:
            if row["shape"] == f"{channels}x{size}x{size}":
                if "mix_s" in row:
                    row["mix_vs_mixup"] = row["mix_s"] / max(base["mixup"]["mix_s"], 1e-9)
                if "loss_forward_s" in row:
                    row["loss_vs_erm"] = row["loss_forward_s"] / max(base["erm"]["loss_forward_s"], 1e-9)
    print(f"device {device}; batch {args.batch_size}; model {args.model} {model_kwargs}; median of {args.repeats}")
    print(f"{'shape':<10}{'method':<16}{'mix s/batch':>13}{'x mixup':>9}{'loss fwd s':>12}{'x erm':>8}")
    for r in rows:
        mix = f"{r['mix_s']:.4f}" if "mix_s" in r else "-"
        ratio = f"{r['mix_vs_mixup']:.1f}" if "mix_vs_mixup" in r else "-"
        loss = f"{r['loss_forward_s']:.4f}" if "loss_forward_s" in r else "-"
        vs_erm = f"{r['loss_vs_erm']:.2f}" if "loss_vs_erm" in r else "-"
        print(f"{r['shape']:<10}{r['method']:<16}{mix:>13}{ratio:>9}{loss:>12}{vs_erm:>8}")
    if args.json:
        print_json({"device": str(device), "rows": rows})
    return 0
