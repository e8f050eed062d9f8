"""Alignment and uniformity of embeddings (Wang and Isola 2020), as reported in the MultiMix paper.

Embeddings are the model's ``embed`` output (before the classifier), l2-normalised. Positive pairs are two
random augmentations of the same test image, drawn with the run's own training augmentation (random crop and
flip); a run trained without random augmentation gets a 2-pixel random crop so that the two views differ.
Uniformity is taken over all pairs of the first view.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checks import positive_int
from ..data.augment import BatchAugment
from .common import predict
from ..metrics import alignment, uniformity


def run_align_uniform(trainer, out_dir: Path, limit: int = 2000, seed: int = 0) -> dict:
    """Alignment (``alpha = 2``) and uniformity (``t = 2``) on the first ``limit`` test images."""
    model = trainer.model
    if not hasattr(model, "embed"):
        raise TypeError(f"{trainer.config.model} has no embed(); align-uniform needs a staged model")
    aug = trainer.augment
    padding = aug.crop_padding if (aug.crop_padding or aug.flip) else 2
    views = BatchAugment(aug.mean, aug.std, padding, aug.flip)
    positive_int("limit", limit)
    x = trainer.x_test[:limit]
    g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    z1 = predict(model, x, lambda xb: views(xb, g1), embed=True)
    z2 = predict(model, x, lambda xb: views(xb, g2), embed=True)
    return {"alignment": alignment(z1, z2), "uniformity": uniformity(z1), "n": x.shape[0],
            "positives": f"two random augmentations (crop padding {padding}, flip {aug.flip})"}
