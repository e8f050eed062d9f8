"""Pieces shared by the learned mixers (AutoMix of Zhu et al. 2020, TransformMix): pixel space, partner choice.

Learned mixers see images in ``[0, 1]`` pixel space (their generators end in a sigmoid or a convex combination,
and spatial warps pad with black), while the engine hands normalised batches to ``training_loss``. A method
that knows the normalisation (``set_normalization(mean, std)``, called by ``setup(context)``) converts in and
out; without it, inputs are taken to be in ``[0, 1]`` already (the standalone ``mixer(x, y)`` use).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import InputMixer

PAIR_MODES = ("random", "same", "different")


def choose_partners(t: Tensor, generator: torch.Generator, mode: str = "random") -> Tensor:
    """Partner index ``(B,)`` for each row of targets ``t`` (B, C).

    ``random``: a random permutation. ``same`` / ``different``: a random other sample whose target is equal /
    different (AutoMix Table 6, "label conflict"); a row with no such sample gets any other sample. Vectorised:
    random scores over a (B, B) matrix, disallowed pairs masked, argmax per row.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"pair mode must be one of {PAIR_MODES}, got {mode!r}")
    b = t.shape[0]
    if mode == "random":
        return torch.randperm(b, generator=generator).to(t.device, non_blocking=True)
    scores = torch.rand(b, b, generator=generator).to(t.device, non_blocking=True)
    equal = (t[:, None, :] == t[None, :, :]).all(-1)
    allowed = equal if mode == "same" else ~equal
    others = ~torch.eye(b, dtype=torch.bool, device=t.device)
    allowed = allowed & others
    allowed = torch.where(allowed.any(1, keepdim=True), allowed, others)
    return torch.where(allowed, scores, scores.new_full((), -1.0)).argmax(1)


class PixelSpaceMixer(InputMixer):
    """An :class:`InputMixer` whose networks work on ``[0, 1]`` images; converts from / to the engine's
    normalised inputs when ``mean`` / ``std`` are known."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def set_normalization(self, mean, std) -> None:
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype).reshape(shape)
        std = torch.as_tensor(self.std, device=x.device, dtype=x.dtype).reshape(shape)
        return mean, std

    def to_pixels(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x
        mean, std = self._stats(x)
        return x * std + mean

    def from_pixels(self, x: Tensor) -> Tensor:
        if self.mean is None:
            return x
        mean, std = self._stats(x)
        return (x - mean) / std


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
