"""Batched image augmentation on the training device: random crop with padding, horizontal flip, normalise.

All of it is tensor code over the whole batch (no per-sample Python), drawing from a passed generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by ``padding`` and crop back to the original size at a random offset per sample."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device, non_blocking=True)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows, cols]


def random_flip(x: Tensor, generator: torch.Generator, p: float = 0.5) -> Tensor:
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _broadcast_stats(x: Tensor, mean, std) -> tuple[Tensor, Tensor]:
    """Per-channel ``mean`` and ``std`` shaped to broadcast over ``x`` ``(B, C, ...)``, on its device and dtype."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (torch.as_tensor(mean, device=x.device, dtype=x.dtype).reshape(shape),
            torch.as_tensor(std, device=x.device, dtype=x.dtype).reshape(shape))


def normalize(x: Tensor, mean, std) -> Tensor:
    """``(x - mean) / std`` per channel."""
    mean, std = _broadcast_stats(x, mean, std)
    return (x - mean) / std


def denormalize(x: Tensor, mean, std) -> Tensor:
    """``x * std + mean`` per channel (undoes :func:`normalize`)."""
    mean, std = _broadcast_stats(x, mean, std)
    return x * std + mean


def to_float(x: Tensor) -> Tensor:
    """uint8 images -> float in [0, 1]."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class BatchAugment:
    """uint8 batch -> augmented, normalised float batch.

    Args:
        mean, std: per-channel normalisation.
        crop_padding: pixels of zero padding for the random crop (0 = off).
        flip: random horizontal flip with probability 1/2.
    """

    def __init__(self, mean, std, crop_padding: int = 0, flip: bool = False):
        self.mean, self.std, self.crop_padding, self.flip = tuple(mean), tuple(std), int(crop_padding), bool(flip)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None, train: bool = True) -> Tensor:
        x = to_float(x)
        if train and generator is not None:
            x = random_crop(x, self.crop_padding, generator)
            if self.flip:
                x = random_flip(x, generator)
        return normalize(x, self.mean, self.std)

    def denormalize(self, x: Tensor) -> Tensor:
        return denormalize(x, self.mean, self.std)
