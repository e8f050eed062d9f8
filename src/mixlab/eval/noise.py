"""Robustness to salt-and-pepper noise (AutoMix paper, Fig. 6): accuracy and relative drop as noise grows.

Noise level ``p``: a fraction ``p`` of pixel positions (all channels together) is set to black or white with
equal odds. The corrupted positions are nested across levels (one uniform draw per position, corrupted when it
falls below ``p``), so a higher level corrupts a superset of the pixels of a lower one. Noise is added to the
images in ``[0, 1]`` before normalisation. Levels default to 0, 5, ..., 30 % (the paper: "from 0 to 30").
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..metrics import topk_correct

DEFAULT_LEVELS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30)


def salt_and_pepper(x01: Tensor, level: float, generator: torch.Generator) -> Tensor:
    """Return a copy of float images ``(B, C, H, W)`` in ``[0, 1]`` with a fraction ``level`` of positions set to
    0 or 1. The draws depend only on the generator's state and the shape, not on ``level`` (nested masks)."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"noise level must lie in [0, 1], got {level}")
    b, _, h, w = x01.shape
    u = torch.rand(b, 1, h, w, generator=generator).to(x01.device)
    salt = (torch.rand(b, 1, h, w, generator=generator) < 0.5).to(x01.device)
    noisy = u < level
    return torch.where(noisy, salt.to(x01.dtype).expand_as(x01), x01)


@torch.no_grad()
def noise_curve(model, x_uint8: Tensor, labels: Tensor, augment, levels=DEFAULT_LEVELS, seed: int = 0,
                batch_size: int = 1000) -> dict:
    """Accuracy (percent) at each noise level and relative drop ``100 * (acc_0 - acc_p) / acc_0`` against the
    clean accuracy ``acc_0`` (level 0 is always evaluated, first)."""
    from ..data.augment import to_float

    levels = sorted(set([0.0, *map(float, levels)]))
    model.eval()
    correct = torch.zeros(len(levels), dtype=torch.float64)
    for i in range(0, x_uint8.shape[0], batch_size):
        x = to_float(x_uint8[i:i + batch_size])
        y = labels[i:i + batch_size]
        for j, p in enumerate(levels):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)  # same draws at every level: nested masks
            logits = model(augment(salt_and_pepper(x, p, g), train=False))
            correct[j] += float(topk_correct(logits, y, (1,))[0])
    acc = 100 * correct / x_uint8.shape[0]
    drop = 100 * (acc[0] - acc) / acc[0].clamp_min(1e-12)
    return {"levels": [100 * p for p in levels], "accuracy": acc.tolist(), "relative_drop": drop.tolist()}


def plot_noise(curves: dict[str, dict], path, title: str = "") -> Path:
    """Absolute accuracy (left) and relative drop (right) against noise level, one line per name."""
    from ..viz import two_panel_plot

    acc = {name: (c["levels"], c["accuracy"]) for name, c in curves.items()}
    drop = {name: (c["levels"], c["relative_drop"]) for name, c in curves.items()}
    return two_panel_plot([(acc, "accuracy % (higher is better)", ""), (drop, "relative drop % (lower is better)", "")],
                          path, "salt-and-pepper noise %", title, marker="o")


def run_noise(trainer, out_dir: Path, levels=DEFAULT_LEVELS, seed: int = 0) -> dict:
    """Noise curve of a single-label run on its test set, with ``noise.png``."""
    if trainer.multilabel or trainer.x_test.dtype != torch.uint8:
        raise ValueError("noise is defined for single-label image runs (uint8 images)")
    c = trainer.config
    curve = noise_curve(trainer.model, trainer.x_test, trainer.y_test, trainer.augment, levels, seed)
    png = plot_noise({c.method: curve}, Path(out_dir) / "noise.png", f"{c.method} on {c.dataset}")
    return {**curve, "seed": seed, "test_set": trainer.test_data.note, "figure": str(png)}
