"""SaliencyMix (Uddin et al., ICLR 2021): a CutMix box of the partner, centred on the partner's most salient pixel.

The saliency map is the spectral residual of Hou & Zhang (2007), computed here in PyTorch (``torch.fft``) the way
OpenCV's ``StaticSaliencySpectralResidual`` does it, so it runs batched on CPU and GPU without OpenCV.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import check_alpha, sample_beta
from .masks import MaskMixer, boxes_mask, clipped_boxes

#: ITU-R 601 luma weights (R, G, B): OpenCV's grey conversion
_LUMA = (0.299, 0.587, 0.114)


def _blur(a: Tensor, kernel: Tensor) -> Tensor:
    """Separable filter of ``(B, h, w)`` maps with a 1-D ``kernel``, mirrored border (OpenCV's BORDER_REFLECT_101)."""
    k = kernel.numel()
    r, (h, w) = k // 2, a.shape[-2:]
    a = F.pad(a[:, None], (r, r, r, r), mode="reflect")[:, 0]
    a = sum(kernel[i] * a[:, :, i:i + w] for i in range(k))  # shifted sums: far faster than a thin conv2d on CPU
    return sum(kernel[i] * a[:, i:i + h] for i in range(k))


def spectral_residual_saliency(x: Tensor, work_size: int = 64) -> Tensor:
    """Spectral-residual saliency of images ``(B, C, H, W)`` -> ``(B, H, W)`` in [0, 1] (max 1 at the working size).

    Hou & Zhang, Saliency Detection: A Spectral Residual Approach, CVPR 2007, with OpenCV's choices
    (``StaticSaliencySpectralResidual``, opencv_contrib ``modules/saliency``): grey image resized to
    ``work_size`` x ``work_size`` (bilinear); log amplitude ``L(f)`` of its DFT; spectral residual
    ``R(f) = L(f) - h_3 * L(f)`` (3x3 mean filter, Hou & Zhang eq. 5); back-transform ``exp(R(f) + i P(f))`` with the
    phase ``P(f)`` (eq. 6); magnitude, 5x5 Gaussian (sigma 8), squared, scaled to max 1, resized back (bilinear).
    Three channels are read as RGB (luma weights); other channel counts are averaged.
    """
    height, width = x.shape[-2:]
    x = x.float()
    if x.shape[1] == 3:
        grey = torch.einsum("bchw,c->bhw", x, torch.tensor(_LUMA, device=x.device))
    else:
        grey = x.mean(1)
    small = F.interpolate(grey[:, None], size=(work_size, work_size), mode="bilinear", align_corners=False)[:, 0]
    spectrum = torch.fft.fft2(small)
    amplitude = spectrum.abs().clamp_min(1e-12)
    log_amplitude = torch.log(amplitude)
    residual = log_amplitude - _blur(log_amplitude, torch.full((3,), 1 / 3, device=x.device))  # eq. 5
    # eq. 6: exp(R + iP) = exp(R) * spectrum / |spectrum| (the phase kept without computing it)
    back = torch.fft.ifft2(spectrum * (torch.exp(residual) / amplitude)).abs()
    taps = torch.arange(5, device=x.device, dtype=torch.float32) - 2
    gauss = torch.exp(-taps ** 2 / (2 * 8.0 ** 2))
    saliency = _blur(back, gauss / gauss.sum()) ** 2
    saliency = saliency / saliency.amax((1, 2), keepdim=True).clamp_min(1e-30)
    return F.interpolate(saliency[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def saliency_peaks(x: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column ``(B,)`` of each image's most salient pixel (first one in row-major order on ties)."""
    flat = spectral_residual_saliency(x).flatten(1).argmax(1)
    width = x.shape[-1]
    return flat // width, flat % width


class SaliencyMix(MaskMixer):
    """SaliencyMix: paste the partner's most salient region, a box centred on its saliency peak.

    ``lam0 ~ Beta(alpha, alpha)`` sets the box size as in CutMix (``sqrt(1 - lam0)`` of each side); the box is centred
    on the peak of the partner's spectral-residual saliency map (:func:`spectral_residual_saliency`), clipped to
    the image; the label weight is the kept area (``lam`` recomputed from the box, as in the paper's Sec. 3).

    Args:
        alpha: Beta concentration of ``lam0``: 1.0 (the authors' ``command.sh``: ``--beta 1.0`` for every model).
        per_sample: one box per pair, each at its own partner's peak (default; the paper's Sec. 3 describes the
            source patch of each source image). ``False``: the authors' code (``saliencymix.py``, ``saliency_bbox``
            of ``images[rand_index[0]]``): one ``lam0`` and one box, at the peak of the first partner, for the batch.
    Note: the authors' public code (``SaliencyMix_CIFAR/saliencymix.py``) calls OpenCV's
    ``StaticSaliencyFineGrained`` (Montabone & Soto 2010), a centre-surround detector on 8-bit grey images; this
    class uses the spectral residual (issue 18's choice: model-free, FFT-based, batched on any device). Inputs:
    images ``(B, C, H, W)`` as they enter the network (the authors also pass normalised images).
    Uddin, Monira, Shin, Chung, Bae. SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
    Regularization. ICLR 2021.
    """

    name = "saliencymix"

    def __init__(self, alpha: float = 1.0, per_sample: bool = True, num_classes=None, seed=0, check_inputs=True):
        super().__init__(per_sample, num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)

    def masks(self, x: Tensor, index: Tensor):
        height, width = x.shape[-2:]
        n = self.draws(x.shape[0])
        lam0 = sample_beta(self.alpha, self.generator, (n,)).double()
        cut = torch.sqrt(1.0 - lam0)
        h = (height * cut).long().to(x.device, non_blocking=True)  # int(H * sqrt(1 - lam)) as in CutMix
        w = (width * cut).long().to(x.device, non_blocking=True)
        cy, cx = saliency_peaks(x[index[:n]])  # the partners' peaks (only the first partner's when per batch)
        box = clipped_boxes(cy, cx, h, w, height, width)
        return boxes_mask(*box, height, width, x.dtype), x[index]


__all__ = ["SaliencyMix", "spectral_residual_saliency", "saliency_peaks"]
