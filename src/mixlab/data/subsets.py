"""Seeded per-class subsets (the AutoMix paper's "sub" protocols: e.g. 50 images per class)."""
from __future__ import annotations

import torch
from torch import Tensor


def ranks_within_class(labels: Tensor, order: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Group the rows ``order`` by class, keeping their order within a class: returns ``(grouped, rank, counts)``,
    where ``grouped`` is ``order`` stably sorted by label, ``rank[j]`` the position of ``grouped[j]`` among the
    rows of its class (0, 1, ...), and ``counts`` the rows per class. Vectorised."""
    counts = torch.bincount(labels[order], minlength=num_classes)
    grouped = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    return grouped, torch.arange(len(grouped)) - starts[labels[grouped]], counts


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
    grouped, rank, counts = ranks_within_class(labels, order, num_classes)
    if int(counts.min()) < per_class:
        short = [c for c in range(num_classes) if counts[c] < per_class]
        raise ValueError(f"classes {short} have fewer than {per_class} examples (counts {counts.tolist()})")
    return torch.sort(grouped[rank < per_class]).values


def ratio_subset_indices(labels: Tensor, ratio: float, seed: int, num_classes: int | None = None) -> Tensor:
    """Sorted indices of ``max(1, floor(ratio * n_c))`` random examples of every class present (AMP Table 3)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    labels = labels.cpu().long()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(seed)))
    grouped, rank, counts = ranks_within_class(labels, order, num_classes)
    keep = torch.clamp((counts.double() * ratio + 1e-9).floor().long(), min=1) * (counts > 0)
    return torch.sort(grouped[rank < keep[labels[grouped]]]).values
