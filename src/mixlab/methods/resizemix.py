"""ResizeMix (Qin et al. 2020): the whole partner image, shrunk, pasted as a patch; label by the patch's area."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import InputMixer
from .masks import MaskMixer, boxes_mask

_MODES = ("nearest", "bilinear", "bicubic", "area", "nearest-exact")


class ResizeMix(MaskMixer):
    """ResizeMix: shrink the partner by a scale ``tau ~ U(low, high)`` and paste it at a random place.

    The patch is ``int(tau H) x int(tau W)`` pixels and lies wholly inside the image (a centre drawn uniformly per
    sample, the box then shifted inside, as the authors' ``getbox_new``); the label weight of the batch's own image
    is the area left, ``1 - patch area / (H W)`` (the patch holds the partner's whole content: the paper's "true
    labels"). One ``tau`` per batch and one position per sample, as the authors' code.

    Args:
        scale: ``(low, high)`` of the uniform scale ``tau``: (0.1, 0.8), the authors' configs
            (``resizemix=dict(alpha=0.1, beta=0.8)`` in JayQine/ResizeMix ``configs/*.py``).
        mode: ``torch.nn.functional.interpolate`` mode of the shrinking: ``"nearest"``, as the authors' code
            (``F.interpolate(input, scale_factor=rate)``, whose default mode is nearest), or e.g. ``"bilinear"``.
    Qin, Fang, Zhang, Liu, Wang, Wang. ResizeMix: Mixing Data with Preserved Object Information and True Labels.
    arXiv:2012.11101, 2020.
    """

    name = "resizemix"

    def __init__(self, scale: tuple[float, float] = (0.1, 0.8), mode: str = "nearest", num_classes=None, seed=0,
                 check_inputs=True):
        super().__init__(False, num_classes, seed, check_inputs)
        try:
            low, high = (float(v) for v in scale)
        except (TypeError, ValueError):
            raise ValueError(f"scale must be two numbers (low, high), e.g. [0.1, 0.8]; got {scale!r}") from None
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1 (fractions of the image side); got {scale!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")
        self.scale, self.mode = (low, high), mode

    def masks(self, x: Tensor, index: Tensor):
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        low, high = self.scale
        tau = low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))
        h, w = int(height * tau), int(width * tau)  # the size F.interpolate(scale_factor=tau) gives
        cy = torch.randint(height, (batch,), generator=self.generator)
        cx = torch.randint(width, (batch,), generator=self.generator)
        y0 = (cy - h // 2).clamp(0, height - h).to(x.device, non_blocking=True)  # centred on (cy, cx), kept inside
        x0 = (cx - w // 2).clamp(0, width - w).to(x.device, non_blocking=True)
        mask = boxes_mask(y0, y0 + h, x0, x0 + w, height, width, x.dtype)
        if h == 0 or w == 0:  # an empty patch: nothing of the partner is shown
            return mask, x
        small = F.interpolate(x[index], size=(h, w), mode=self.mode)
        # a canvas whose box holds each shrunk partner (outside the box: clamped copies, never taken by the mask)
        rows = (torch.arange(height, device=x.device)[None, :] - y0[:, None]).clamp(0, h - 1)  # (B, H)
        cols = (torch.arange(width, device=x.device)[None, :] - x0[:, None]).clamp(0, w - 1)  # (B, W)
        b = torch.arange(batch, device=x.device)[:, None, None]
        return mask, small[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{InputMixer.extra_repr(self)}, scale={self.scale}, mode={self.mode!r}"
