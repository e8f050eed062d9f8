"""AutoMix (Zhu) generator against OptTransMix's barycenters (``mixlab eval generator-vs-barycenter``).

The AutoMix paper says its generator learns barycenter-like mixes (section 2.3, Fig. 6). This evaluation takes a
trained ``automix-zhu`` run, draws pairs of test images, and for each pair and ratio ``lam`` sets the generator's
output ``G(x1, x2, lam)`` beside the entropic Wasserstein barycenter of OptTransMix (the same ``lam`` on ``x1``,
its default ``reg``) and beside Mixup's ``lam x1 + (1 - lam) x2``. Distances are per-pixel mean ``|a - b|`` in
``[0, 1]`` pixel space (the ``|.|_1`` of Eq. 9), one per pair. Beside them, the value of Eq. 9 itself,
``lam |x1 - x^|_1 + (1 - lam) |x2 - x^|_1``, for each candidate ``x^`` (the generator's output, the barycenter, Mixup's
image, and the heavier input alone): the reconstruction term the generator is trained to lower.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def l1_per_pair(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel mean absolute difference of each pair: ``(B, ...) -> (B,)``."""
    return (a - b).abs().flatten(1).mean(1)


def run_generator_vs_barycenter(trainer, out_dir: Path, pairs: int = 64, lams: tuple = (0.2, 0.35, 0.5, 0.65, 0.8),
                                reg: float | None = None, shown: int = 4, seed: int = 0) -> dict:
    """L1 distances, per ratio, between the run's generator output, OptTransMix's barycenter and Mixup for
    ``pairs`` random test pairs (seeded); a picture of ``shown`` pairs at every ratio.

    Returns, per ``lam``: mean and std over pairs of ``generator_vs_barycenter``, ``mixup_vs_barycenter``,
    ``generator_vs_mixup`` and of Eq. 9 for ``eq9_generator``, ``eq9_barycenter``, ``eq9_mixup``, ``eq9_heavier``;
    and the same over every ratio under ``"all"``.
    """
    from ..methods.automix_zhu import AutoMixZhu, reconstruction_per_sample
    from ..methods.base import interpolate
    from ..methods.opttransmix import OptTransMix
    from ..viz import image_table

    config = trainer.config
    if config.method != "automix-zhu":
        raise ValueError(f"generator-vs-barycenter needs an automix-zhu run; {config.method!r} has no generator")
    checkpoint = Path(out_dir).parent / "checkpoint.pt"
    options = {k: v for k, v in config.method_kwargs.items() if k in ("widths", "se_reduction", "output")}
    automix = AutoMixZhu(**options, checkpoint=str(checkpoint)).eval()
    x = trainer.x_test
    if x.dtype == torch.uint8:
        x = x.float() / 255
    elif x.dim() != 4 or x.min() < 0 or x.max() > 1:
        raise ValueError("generator-vs-barycenter needs images (uint8, or floats in [0, 1]) of shape (N, C, H, W)")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(x.shape[0], generator=g)[:2 * pairs]
    if pick.numel() < 2:
        raise ValueError("generator-vs-barycenter needs at least two test images")
    n = pick.numel() // 2
    x1, x2 = x[pick[:n]].cpu(), x[pick[n:2 * n]].cpu()
    barycenter = OptTransMix(**({} if reg is None else {"reg": reg}))
    keys = ("generator_vs_barycenter", "mixup_vs_barycenter", "generator_vs_mixup", "eq9_generator",
            "eq9_barycenter", "eq9_mixup", "eq9_heavier")
    out = {"pairs": n, "reg": barycenter.reg, "lams": [float(v) for v in lams]}
    stacked, images = {k: [] for k in keys}, []
    with torch.no_grad():
        for v in lams:
            lam = torch.full((n,), float(v))
            gen = automix.generator_net(x1, x2, lam, automix.generator)
            bar = barycenter.barycenters(x1, x2, lam).clamp(0, 1)
            mix = interpolate(x1, x2, lam)
            heavier = torch.where(lam[:, None, None, None] >= 0.5, x1, x2)
            d = dict(zip(keys, (l1_per_pair(gen, bar), l1_per_pair(mix, bar), l1_per_pair(gen, mix),
                                *(reconstruction_per_sample(x1, x2, c, lam) for c in (gen, bar, mix, heavier)))))
            out[f"lam={v:g}"] = {k: {"mean": float(t.mean()), "std": float(t.std()) if n > 1 else 0.0}
                                 for k, t in d.items()}
            for k in keys:
                stacked[k].append(d[k])
            images.append(torch.stack([mix, gen, bar], 1))  # (n, 3, C, H, W)
    out["all"] = {k: {"mean": float(torch.cat(t).mean()), "std": float(torch.cat(t).std())} for k, t in stacked.items()}
    # the picture: three rows per shown pair (Mixup, generator, barycenter), one column per ratio
    k = min(shown, n)
    rows = [f"{i}: {what}" for i in range(k) for what in ("mixup", "automix G", "barycenter")]
    repeat = lambda t: t[:k].repeat_interleave(3, 0)  # noqa: E731
    columns = [("x1", repeat(x1)), ("x2", repeat(x2))]
    columns += [(f"lam={v:g}", im[:k].flatten(0, 1)) for v, im in zip(lams, images)]
    figure = Path(out_dir) / "generator-vs-barycenter.png"
    image_table(columns, figure, row_labels=rows,
                title=f"{config.method} generator vs OptTransMix barycenter (reg {barycenter.reg:g}), lam on x1")
    out["figure"] = str(figure)
    return out
