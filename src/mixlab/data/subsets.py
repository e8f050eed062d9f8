"""Seeded per-class subsets (the AutoMix paper's "sub" protocols: e.g. 50 images per class)."""
from __future__ import annotations

import torch
from torch import Tensor


def per_class_indices(labels: Tensor, per_class: int, seed: int, num_classes: int | None = None,
                      exclude: Tensor | None = None) -> Tensor:
    """Indices of ``per_class`` examples of every class, drawn with ``seed`` (sorted). Vectorised, no loops.

    ``exclude``: indices that may not be drawn. The rows are visited in the same seeded order with or without
    them, so two calls that exclude different rows still draw mostly the same ones.
    Raises if a class has fewer than ``per_class`` drawable examples.
    """
    labels = labels.cpu().long()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(labels), generator=g)
    if exclude is not None:
        free = torch.ones(len(labels), dtype=torch.bool)
        free[exclude.cpu()] = False
        order = order[free[order]]
    counts = torch.bincount(labels[order], minlength=num_classes)
    if int(counts.min()) < per_class:
        short = [c for c in range(num_classes) if counts[c] < per_class]
        raise ValueError(f"classes {short} have fewer than {per_class} examples (counts {counts.tolist()})")
    order = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order)) - starts[labels[order]]
    return torch.sort(order[rank < per_class]).values


def ratio_subset_indices(labels: Tensor, ratio: float, seed: int, num_classes: int | None = None) -> Tensor:
    """Sorted indices of ``max(1, floor(ratio * n_c))`` random examples of every class present (AMP Table 3)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    labels = labels.cpu().long()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(labels, minlength=num_classes)
    keep = torch.clamp((counts.double() * ratio + 1e-9).floor().long(), min=1) * (counts > 0)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed)))
    order = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[order]]
    return torch.sort(order[rank < keep[labels[order]]]).values
