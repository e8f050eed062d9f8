"""GridMix (Baek, Bang, Shim 2021): grid-wise patch mixing, each cell from one image or the other."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import check_alpha, sample_beta
from .masks import MaskMixer


class GridMix(MaskMixer):
    """GridMix: split the image into ``n x n`` cells; each cell keeps the batch's own pixels with probability
    ``lam`` and shows the partner's otherwise; the label weight is the kept area.

    ``lam ~ Beta(alpha, alpha)``; ``n`` is drawn uniformly from ``grid`` (inclusive) once per batch. Cell borders
    are ``floor(i n / H)`` (cells differ by at most one pixel when ``n`` does not divide the side).

    Args:
        alpha: Beta concentration of ``lam``: 1.0 (CutMix's value; like ``grid``, not checked against the paper).
        grid: ``(n_min, n_max)``, the range of grid sizes ``n``: (2, 8). An assumption: neither the paper's text
            nor the authors' code could be read here, so this range is not checked against them (OpenMixup's
            ``gridmix`` is a different method, IlyaDobrynin/GridMixup's holes).
        per_sample: own ``lam`` and cell draws per sample; default ``False``: one mask for the batch, as CutMix.
    Left out: the paper's local context loss (a classifier of each cell's patch label on the last feature map,
    added to the global loss with the area label); this class gives the mixing and the area label only.
    Baek, Bang, Shim. GridMix: Strong regularization through local context mapping. Pattern Recognition, 2021.
    """

    name = "gridmix"

    def __init__(self, alpha: float = 1.0, grid: tuple[int, int] = (2, 8), per_sample: bool = False,
                 num_classes=None, seed=0, check_inputs=True):
        super().__init__(per_sample, num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        try:
            low, high = (int(v) for v in grid)
        except (TypeError, ValueError):
            raise ValueError(f"grid must be two integers (n_min, n_max), e.g. [2, 8]; got {grid!r}") from None
        if not 1 <= low <= high:
            raise ValueError(f"grid must satisfy 1 <= n_min <= n_max (cells per side); got {grid!r}")
        self.grid = (low, high)

    def masks(self, x: Tensor, index: Tensor):
        count, (height, width) = self.draws(x.shape[0]), x.shape[-2:]
        cells = int(torch.randint(self.grid[0], self.grid[1] + 1, (1,), generator=self.generator))
        lam = sample_beta(self.alpha, self.generator, (count,))
        keep = torch.rand(count, cells, cells, generator=self.generator) < lam[:, None, None]  # Bernoulli(lam)
        keep = keep.to(x.device, non_blocking=True)
        rows = torch.arange(height, device=x.device) * cells // height  # the cell of each pixel row / column
        cols = torch.arange(width, device=x.device) * cells // width
        return keep[:, rows][:, :, cols][:, None].to(x.dtype), x[index]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, grid={self.grid}"
