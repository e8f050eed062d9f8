"""Between-Class learning (Tokozume, Ushiku, Harada. CVPR 2018).

Pairs each sample with a partner of a *different* class and mixes with ``r ~ U(0, 1)``; the target is the
ratio ``r, 1 - r`` (the paper trains with KL divergence to it, which has the same gradient as soft CE).
BC+ (the image variant) treats images as waveforms: each image has its mean removed and is weighted by its
standard deviation, ``p = 1 / (1 + sigma1 / sigma2 * (1 - r) / r)``,
``x~ = (p x1 + (1 - p) x2) / sqrt(p^2 + (1 - p)^2)``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import InputMixer, MixInfo, choose_partners, interpolate


class BetweenClass(InputMixer):
    """BC learning: different-class pairs, ``r ~ U(0, 1)`` per sample; ``plus=True`` for BC+.

    Args:
        plus: use the BC+ image mixing (mean removed, std-weighted) instead of plain interpolation.
    """

    name = "bc"

    def __init__(self, plus: bool = False, num_classes=None, seed=0, check_inputs=True, **options):
        super().__init__(num_classes, seed, check_inputs, **options)
        self.plus = plus

    def mix(self, x: Tensor, t: Tensor):
        index = choose_partners(t, self.generator, "different")
        r = torch.rand(x.shape[0], generator=self.generator)
        self.last = MixInfo(r, index)
        r_d = r.to(x.device, non_blocking=True)
        x2 = x[index]
        t_mix = interpolate(t, t[index], r_d)
        if not self.plus:
            return interpolate(x, x2, r_d), t_mix
        dims = tuple(range(1, x.dim()))
        mu1, mu2 = x.mean(dims, keepdim=True), x2.mean(dims, keepdim=True)
        s1 = x.std(dims, keepdim=True).clamp_min(1e-8)
        s2 = x2.std(dims, keepdim=True).clamp_min(1e-8)
        r_b = r_d.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        p = 1.0 / (1.0 + s1 / s2 * (1.0 - r_b) / r_b.clamp_min(1e-8))
        x_mix = (p * (x - mu1) + (1 - p) * (x2 - mu2)) / torch.sqrt(p ** 2 + (1 - p) ** 2)
        return x_mix, t_mix
