"""CutMix (Yun et al. 2019): paste a box of the partner image; ``lam`` corrected to the kept area."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import InputMixer, MixInfo, check_alpha, sample_beta
from .mixup import Mixup


def rand_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box of area about ``(1 - lam) H W`` with a uniform centre, clipped to the image: ``(y0, y1, x0, x1)``."""
    cut = math.sqrt(1.0 - lam)
    h, w = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - h // 2, 0), min(cy + h // 2, height)
    x0, x1 = max(cx - w // 2, 0), min(cx + w // 2, width)
    return y0, y1, x0, x1


def box_mask(height: int, width: int, box: tuple[int, int, int, int], device, dtype) -> Tensor:
    """``(H, W)`` mask: 1 outside the box (keep ``x``), 0 inside (take the partner)."""
    y0, y1, x0, x1 = box
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
    return (~inside).to(dtype)


class CutMix(InputMixer):
    """CutMix with the area-corrected ``lam = 1 - box_area / (H W)`` (one box per batch).

    Args:
        alpha: Beta concentration of the initial ``lam`` (default 1.0, as in the paper).
        prob, label_smoothing, off_epoch: see :class:`~mixlab.methods.base.InputMixer`.
    Yun et al. CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features. ICCV 2019.
    """

    name = "cutmix"

    def __init__(self, alpha: float = 1.0, num_classes=None, seed=0, check_inputs=True, **options):
        super().__init__(num_classes, seed, check_inputs, **options)
        self.alpha = check_alpha(alpha)

    def mix(self, x: Tensor, t: Tensor):
        if x.dim() < 3:
            raise ValueError(f"cutmix needs images (B, [C,] H, W); got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        lam0 = float(sample_beta(self.alpha, self.generator))
        perm = torch.randperm(x.shape[0], generator=self.generator)
        box = rand_box(height, width, lam0, self.generator)
        area = (box[1] - box[0]) * (box[3] - box[2])
        lam = torch.tensor(1.0 - area / (height * width))
        self.last = MixInfo(lam, perm)
        perm_d = perm.to(x.device, non_blocking=True)
        keep = box_mask(height, width, box, x.device, x.dtype)
        x_mix = x[perm_d] + keep * (x - x[perm_d])
        t_mix = t[perm_d] + lam.to(t) * (t - t[perm_d])
        return x_mix, t_mix


class MixupCutmix(InputMixer):
    """Mixup or CutMix, chosen per batch: CutMix with probability ``switch_prob``, else Mixup (timm's ``Mixup``
    with both ``mixup_alpha`` and ``cutmix_alpha`` set, batch mode).

    Args:
        mixup_alpha: Beta concentration of Mixup (0.8); cutmix_alpha: of CutMix (1.0); switch_prob: 0.5.
            The defaults are DeiT's ImageNet recipe (Touvron et al. 2021), which also uses label smoothing 0.1
            (``label_smoothing=0.1`` here; off by default as for every mixer).
        prob, label_smoothing, off_epoch: see :class:`~mixlab.methods.base.InputMixer`.
    ``last_kind`` says which mixer the last batch used. Both share this method's generator.
    """

    name = "mixup-cutmix"

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 num_classes=None, seed=0, check_inputs=True, **options):
        super().__init__(num_classes, seed, check_inputs, **options)
        if not 0.0 <= float(switch_prob) <= 1.0:
            raise ValueError(f"switch_prob (the probability of CutMix) must lie in [0, 1], got {switch_prob}")
        self.switch_prob = float(switch_prob)
        self.mixup = Mixup(mixup_alpha, num_classes=num_classes, seed=seed, check_inputs=check_inputs)
        self.cutmix = CutMix(cutmix_alpha, num_classes=num_classes, seed=seed, check_inputs=check_inputs)
        self.mixup.generator = self.cutmix.generator = self.generator  # one stream: the engine reseeds this one
        self.last_kind: str | None = None

    def mix(self, x: Tensor, t: Tensor):
        use_cutmix = bool(torch.rand((), generator=self.generator) < self.switch_prob)
        inner = self.cutmix if use_cutmix else self.mixup
        out = inner.mix(x, t)
        self.last, self.last_kind = inner.last, inner.name
        return out

    def extra_repr(self) -> str:
        return f"mixup_alpha={self.mixup.alpha}, cutmix_alpha={self.cutmix.alpha}, switch_prob={self.switch_prob}"
