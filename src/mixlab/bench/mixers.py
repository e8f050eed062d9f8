"""Seconds to produce one mixed batch, for every registered method, in one run (``mixlab bench-mixers``).

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

import statistics

from .timing import median_seconds, timed

#: (numerator, denominator, the paper's seconds for each, source): printed when both methods are timed
PAPER_RATIOS = (("transformmix", "puzzlemix", 0.045, 0.163,
                 "TransformMix paper, Table 5: a batch of 128 mixed images on an RTX 3090"),)


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


def time_mixers(names, shapes, batch_size: int, model_name: str, model_kwargs: dict, repeats: int, device,
                skipped: dict):
    """Time every method of ``names`` (ERM and Mixup first: the ratios' baselines) on random batches of each
    ``(channels, size)`` of ``shapes``; yields each row, with its ratios, as soon as it is timed. Methods that
    cannot run on images go to ``skipped`` (name -> reason)."""
    import torch

    from ..registry import METHODS, MODELS

    names = list(dict.fromkeys(["erm", "mixup"] + list(names)))
    gen = torch.Generator().manual_seed(0)
    for channels, size in shapes:
        x = torch.rand(batch_size, channels, size, size, generator=gen).to(device)
        y = torch.randint(0, 10, (batch_size,), generator=gen).to(device)
        t = torch.nn.functional.one_hot(y, 10).float()
        model = MODELS.create(model_name, num_classes=10, in_channels=channels, image_size=size, **model_kwargs)
        model = model.to(device).eval()
        erm = METHODS.create("erm", num_classes=10).to(device)
        base = {}
        for name in names:
            try:
                new_rows = time_method(name, model, x, t, erm, repeats, device)
            except Exception as error:  # e.g. a text method on images: say why, go on
                skipped[name] = f"{type(error).__name__}: {error}".splitlines()[0][:160]
                continue
            for r in new_rows:
                base.setdefault(r["method"], r)
                r.update(shape=f"{channels}x{size}x{size}", batch=batch_size)
                if "mix_s" in r and "mixup" in base:
                    r["mix_vs_mixup"] = r["mix_s"] / max(base["mixup"]["mix_s"], 1e-9)
                if "loss_forward_s" in r and "erm" in base:
                    r["loss_vs_erm"] = r["loss_forward_s"] / max(base["erm"]["loss_forward_s"], 1e-9)
                yield r
