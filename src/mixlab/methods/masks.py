"""What the mask-based mixers (SaliencyMix, ResizeMix, FMix, GridMix) share.

Each of them builds a binary per-pixel mask ``M`` of shape ``(B, 1, H, W)`` (or ``(1, 1, H, W)``, one mask for the
whole batch) and the partner's content ``s`` (``x[index]``, or a resized copy for ResizeMix), then

    x~ = M * x + (1 - M) * s,        y~ = lam y + (1 - lam) y[index],   lam = mean(M) per sample,

so the label weight *is* the kept area, measured on the very mask that mixed the images. :class:`MaskMixer` does
the pairing, the mixing and the label; a method only implements :meth:`MaskMixer.masks`. The box helpers place
CutMix-style boxes for a whole batch at once (no loop over samples).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import InputMixer, MixInfo, interpolate


def boxes_mask(y0: Tensor, y1: Tensor, x0: Tensor, x1: Tensor, height: int, width: int, dtype) -> Tensor:
    """``(B, 1, H, W)`` mask: 0 inside each sample's box ``[y0, y1) x [x0, x1)`` (the partner), 1 outside.

    ``y0 ... x1`` are integer tensors ``(B,)`` on the device the mask should live on."""
    rows = torch.arange(height, device=y0.device)
    cols = torch.arange(width, device=y0.device)
    inside = (((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < x1[:, None]))[:, None, :])
    return (~inside).to(dtype)[:, None]


def clipped_boxes(cy: Tensor, cx: Tensor, h: Tensor, w: Tensor, height: int, width: int):
    """CutMix's box around centres ``(cy, cx)`` of nominal size ``(h, w)``, clipped to the image (so it shrinks at
    the border): ``y0 = clip(cy - h // 2)``, ``y1 = clip(cy + h // 2)`` as in Yun et al.'s code."""
    return ((cy - h // 2).clamp(0, height), (cy + h // 2).clamp(0, height),
            (cx - w // 2).clamp(0, width), (cx + w // 2).clamp(0, width))


def check_images(name: str, x: Tensor) -> None:
    """Clear errors for what no image mixer can use (shared with PuzzleMix and Co-Mixup)."""
    if x.dim() != 4:
        raise ValueError(f"{name} mixes images (B, C, H, W); got shape {tuple(x.shape)} "
                         f"(add a channel axis with x.unsqueeze(1) for (B, H, W) images)")
    if not x.is_floating_point():
        raise TypeError(f"{name} needs float images, got {x.dtype}; convert with x.float() / 255")


class MaskMixer(InputMixer):
    """Base of the mask-based mixers: pairs the batch with a random permutation, asks :meth:`masks` for the mask
    and the partner's content, mixes, and weights the targets by the mask's mean (per sample).

    Args:
        per_sample: one mask (and one ``lam``) per sample instead of one per batch.
    """

    def __init__(self, per_sample: bool = False, num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        if not isinstance(per_sample, bool):
            raise TypeError(f"per_sample must be true or false, got {per_sample!r}")
        self.per_sample = per_sample

    def draws(self, batch_size: int) -> int:
        """How many masks to draw: one per sample or one for the batch."""
        return batch_size if self.per_sample else 1

    def masks(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask (B or 1, 1, H, W) in {0, 1} of x's dtype on x's device, partner content (B, C, H, W))``."""
        raise NotImplementedError

    def mix(self, x: Tensor, t: Tensor):
        check_images(self.name, x)
        perm = torch.randperm(x.shape[0], generator=self.generator)
        index = perm.to(x.device, non_blocking=True)
        mask, source = self.masks(x, index)
        lam = mask.float().mean((1, 2, 3)).expand(x.shape[0])  # the kept area, per sample (on x's device)
        self.last = MixInfo(lam, perm, mask)
        return torch.where(mask.bool(), x, source), interpolate(t, t[index], lam)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, per_sample={self.per_sample}"
