"""FMix (Harris et al. 2020): binary masks from thresholded low-frequency Fourier noise."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import check_alpha, sample_beta
from .masks import MaskMixer


def fourier_noise(count: int, height: int, width: int, decay_power: float, generator: torch.Generator,
                  device=None) -> Tensor:
    """``count`` real low-frequency images ``(count, H, W)``: complex Gaussian spectra scaled by ``1 / f^delta``.

    Harris et al. Sec. 3: ``Z = F^-1(g(f) * (a + i b))``, ``a, b ~ N(0, 1)``, ``g(f) = 1 / max(f, 1 / max(H, W))^delta``
    over the frequency magnitudes ``f`` of the real FFT grid (the authors' ``get_spectrum``). Coefficients are drawn
    on CPU from ``generator``; the inverse FFT runs on ``device``.
    """
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fy ** 2 + fx ** 2).clamp_min(1.0 / max(height, width))
    coeff = torch.randn(count, height, width // 2 + 1, 2, generator=generator)
    spectrum = torch.view_as_complex(coeff) * (freq ** -float(decay_power)).float()
    return torch.fft.irfft2(spectrum.to(device, non_blocking=True), s=(height, width))


def top_fraction_mask(noise: Tensor, counts: Tensor) -> Tensor:
    """``(B, H, W)`` -> binary ``(B, 1, H, W)`` with exactly ``counts[b]`` ones, at the largest values of
    ``noise[b]`` (the authors' ``binarise_mask`` with ``max_soft = 0``)."""
    flat = noise.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return (ranks < counts.to(flat.device, non_blocking=True)[:, None]).reshape(noise.shape)[:, None]


class FMix(MaskMixer):
    """FMix: keep the batch's own pixels where low-frequency Fourier noise is among its top ``lam`` fraction.

    ``lam ~ Beta(alpha, alpha)``; a grey-scale noise image with power decaying as ``1 / f^delta`` is drawn
    (:func:`fourier_noise`) and its ``ceil(lam N)`` or ``floor(lam N)`` largest pixels (each with probability 1/2,
    as the authors' ``binarise_mask``; ``N = H W``) form the mask ``M`` of the batch's own image; the rest shows the
    partner. The label weight is the mask's mean (exactly the kept fraction; the authors' loss uses the drawn
    ``lam``, within ``1 / N`` of it).

    Args:
        alpha: Beta concentration: 1.0 (ecs-vlc/FMix ``trainer.py``: ``--alpha`` default 1, also ``FMixBase``'s).
        decay_power: ``delta``: 3.0 (same ``trainer.py``: ``--f-decay`` default 3.0; the runs use ``max_soft=0``).
        per_sample: one mask (and ``lam``) per sample; default ``False``: one mask for the batch, as the authors'
            ``sample_and_apply``.
    Soft masks (the authors' ``max_soft > 0``) are not implemented: masks are binary (``max_soft = 0``, their
    default). Harris, Marcu, Painter, Niranjan, Prügel-Bennett, Hare. FMix: Enhancing Mixed Sample Data
    Augmentation. arXiv:2002.12047, 2020.
    """

    name = "fmix"

    def __init__(self, alpha: float = 1.0, decay_power: float = 3.0, per_sample: bool = False, num_classes=None,
                 seed=0, check_inputs=True):
        super().__init__(per_sample, num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        self.decay_power = float(decay_power)
        if not self.decay_power > 0:
            raise ValueError(f"decay_power must be > 0 (larger: smoother masks); got {decay_power}")

    def masks(self, x: Tensor, index: Tensor):
        n, (height, width) = self.draws(x.shape[0]), x.shape[-2:]
        lam = sample_beta(self.alpha, self.generator, (n,)).double()
        up = torch.rand(n, generator=self.generator) < 0.5  # the authors' random ceil / floor of lam * N
        counts = torch.where(up, torch.ceil(lam * height * width), torch.floor(lam * height * width)).long()
        noise = fourier_noise(n, height, width, self.decay_power, self.generator, x.device)
        return top_fraction_mask(noise, counts).to(x.dtype), x[index]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, decay_power={self.decay_power}"
