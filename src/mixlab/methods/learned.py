"""Pieces shared by the learned mixers (AutoMix of Zhu et al. 2020, TransformMix): pixel space.

Learned mixers see images in ``[0, 1]`` pixel space (their generators end in a sigmoid or a convex combination,
and spatial warps pad with black), while the engine hands normalised batches to ``training_loss``. A method
that knows the normalisation (``set_normalization(mean, std)``, called by ``setup(context)``) converts in and
out; without it, inputs are taken to be in ``[0, 1]`` already (the standalone ``mixer(x, y)`` use).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..data.augment import denormalize, normalize
from .base import InputMixer

class PixelSpaceMixer(InputMixer):
    """An :class:`InputMixer` whose networks work on ``[0, 1]`` images; converts from / to the engine's
    normalised inputs when ``mean`` / ``std`` are known."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def set_normalization(self, mean, std) -> None:
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def to_pixels(self, x: Tensor) -> Tensor:
        return x if self.mean is None else denormalize(x, self.mean, self.std)

    def from_pixels(self, x: Tensor) -> Tensor:
        return x if self.mean is None else normalize(x, self.mean, self.std)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
