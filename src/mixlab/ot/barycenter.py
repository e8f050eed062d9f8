"""Convolutional Wasserstein barycenters of images, batched and in the log domain.

Solomon, de Goes, Peyre, Cuturi, Butscher, Nguyen, Du, Guibas. Convolutional Wasserstein Distances: Efficient
Optimal Transportation on Geometric Domains. SIGGRAPH 2015 (Algorithm 2), after Benamou et al. 2015.

Each image ``a_k`` is a histogram on an ``H x W`` grid with coordinates ``linspace(0, 1)`` per axis, as in POT.
The Gibbs kernel ``K = exp(-|p - q|^2 / reg)`` is separable, ``K = K_H (x) K_W``, so applying it is two small
matrix products instead of one ``(HW)^2`` one. With potentials ``F_k, G_k`` (log scalings ``u_k, v_k``) the
iteration is (POT's ``sinkhorn_log`` order)::

    F_k = log a_k - log K(exp G_k)            # u_k = a_k / K v_k
    L_k = log K(exp F_k)                      # log K u_k
    log b = sum_k w_k L_k                     # geometric mean of the K u_k
    G_k = log b - L_k                         # v_k = b / K u_k

Log-domain kernel application ("stabilised convolution"): ``log K(exp X) = m + log K(exp(X - m))`` with ``m`` the
maximum of ``X`` over each image. Every entry of ``K`` is at least ``exp(-2 / reg)`` (squared distances on the
unit square are at most 2), so the sum never underflows while ``2 / reg`` stays inside the exponent range of
the compute dtype; ``auto`` picks float32 when that holds, float64 when it holds there (reg > ~0.003), a
per-axis shift (reg > ~0.0015) and an exact ``logsumexp`` below that. Results are exact in every case; only
the cost differs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

#: largest ``-log`` of a kernel entry a dtype represents with full precision (log of its smallest normal, with margin)
_EXP_RANGE = {torch.float32: 80.0, torch.float64: 700.0}


def _axis_cost(n: int, reg: float, device, dtype) -> Tensor:
    """``-(t_i - t_j)^2 / reg`` on ``t = linspace(0, 1, n)`` (POT's grid)."""
    t = torch.linspace(0, 1, n, device=device, dtype=dtype)
    return -((t[:, None] - t[None, :]) ** 2) / reg


class _LogKernel:
    """``X -> log K(exp X)`` over the last two axes, for the separable Gibbs kernel of an ``H x W`` grid."""

    def __init__(self, h: int, w: int, reg: float, device, dtype, mode: str = "auto"):
        span = (1.0 if h > 1 else 0.0) + (1.0 if w > 1 else 0.0)
        if mode == "auto":
            if dtype == torch.float32 and span / reg < _EXP_RANGE[torch.float32]:
                mode = "image"
            elif span / reg < _EXP_RANGE[torch.float64]:
                mode, dtype = "image", torch.float64
            elif 1.0 / reg < _EXP_RANGE[torch.float64]:
                mode, dtype = "axis", torch.float64
            else:
                mode = "exact"
        if mode not in ("image", "axis", "exact"):
            raise ValueError(f"kernel mode must be auto, image, axis or exact; got {mode!r}")
        self.mode, self.dtype = mode, dtype
        self.m_h = _axis_cost(h, reg, device, dtype)
        self.m_w = _axis_cost(w, reg, device, dtype)
        self.k_h, self.k_w = self.m_h.exp(), self.m_w.exp()

    @staticmethod
    def _finite_max(x: Tensor, dims) -> Tensor:
        m = x.amax(dim=dims, keepdim=True)
        return torch.where(torch.isfinite(m), m, torch.zeros_like(m))

    def __call__(self, x: Tensor) -> Tensor:
        if self.mode == "image":  # one shift per image: one exp and one log
            m = self._finite_max(x, (-2, -1))
            s = torch.matmul(torch.matmul(self.k_h, torch.exp(x - m)), self.k_w)  # K_H e K_W^T (symmetric)
            return torch.log(s) + m
        if self.mode == "axis":  # one shift per row / column
            m = self._finite_max(x, (-2,))
            x = torch.log(torch.matmul(self.k_h, torch.exp(x - m))) + m
            m = self._finite_max(x, (-1,))
            return torch.log(torch.matmul(torch.exp(x - m), self.k_w)) + m
        x = torch.logsumexp(self.m_h[:, :, None] + x[..., None, :, :], dim=-2)
        return torch.logsumexp(x[..., :, None, :] + self.m_w, dim=-1)

    def conv(self, x: Tensor) -> Tensor:
        return torch.matmul(torch.matmul(self.k_h, x), self.k_w)

    def log_k_u(self, g: Tensor, a: Tensor, log_a: Tensor) -> Tensor:
        """``log K u`` with ``u = a / K exp(g)``: half a Sinkhorn step from the potential ``g``.

        In ``image`` mode this stays in the scaled domain with one shift per image (one exp, one log):
        ``u = (a / S) e^(-m)`` with ``S = K exp(g - m)``, then ``log K u = log K(q / max q) + log max q - m``.
        """
        if self.mode != "image":
            return self(log_a - self(g))
        m = self._finite_max(g, (-2, -1))
        q = a / self.conv(torch.exp(g - m))
        mq = q.amax(dim=(-2, -1), keepdim=True)
        return torch.log(self.conv(q / mq)) + (torch.log(mq) - m)


def blur(images: Tensor, reg: float, kernel: str = "auto") -> Tensor:
    """The entropic blur of unit-mass images ``(..., H, W)``: ``K (a / K 1)``.

    This is the barycenter of an image with itself (any weights), and the barycenter with weights ``(1, 0)``:
    the closed form the tests check :func:`convolutional_barycenter` against.
    """
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    lk = _LogKernel(images.shape[-2], images.shape[-1], reg, images.device, dtype, kernel)
    log_a = torch.log(images.to(lk.dtype))
    return torch.exp(lk(log_a - lk(torch.zeros_like(log_a)))).to(images.dtype)


def convolutional_barycenter(images: Tensor, weights: Tensor, reg: float, max_iter: int = 1000, tol: float = 1e-4,
                             check_every: int = 10, kernel: str = "auto", relax: float = 1.5, log: bool = False):
    """Entropic Wasserstein barycenters of ``B`` groups of ``k`` images, all groups solved at once.

    Args:
        images: ``(B, k, H, W)`` non-negative, each image of unit mass (see OptTransMix for turning pictures
            into histograms).
        weights: ``(B, k)`` barycentric weights, non-negative, rows summing to one (``(k,)`` is broadcast).
        reg: entropic regularisation, as in POT: kernel ``exp(-d^2 / reg)`` on a ``[0, 1]`` grid per axis.
        max_iter: iteration budget.
        tol: per-group stopping threshold on POT's criterion ``sum_pixels std_k(v_k * K u_k)`` (the spread of
            the k plans' barycenter-side marginals). A group that meets it stops updating (its result is what
            it would be if solved alone) and leaves the batch, so the cost follows the iterations each group
            needs; the loop ends when all have.
        check_every: iterations between convergence checks; each check is one host sync (none in between).
        kernel: ``auto`` (default), ``image``, ``axis`` or ``exact``: how the log-domain kernel is applied (see
            the module docstring); all give the same result up to rounding.
        relax: over-relaxation ``omega`` of the ``v`` update, ``G_k <- G_k + omega (G_k^new - G_k)``, i.e.
            ``v_k <- v_k^(1 - omega) (b / K u_k)^omega`` (Thibault, Chizat, Dossal, Papadakis 2017, "Overrelaxed
            Sinkhorn-Knopp algorithm"). Same fixed point; ``1`` is the plain algorithm (POT's). The default 1.5
            needed 1.3x to 1.5x fewer iterations than 1 on MNIST digits for reg 0.002 to 0.03 (k = 2 and 3) and
            was never slower; 1.8 to 1.9 save more at small reg (1.8x at 0.004) but oscillate at reg >= 0.01.
        log: also return ``{"niter": (B,) iterations used per group, "err": (B,) last criterion}``.
    Returns:
        ``(B, H, W)`` barycenters of unit mass, in the input dtype (computed in float32 for half precision, and
        in float64 where ``reg`` is too small for float32).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, k, H, W); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point histograms, got {images.dtype}")
    if not reg > 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if not 0 < relax < 2:
        raise ValueError(f"relax (over-relaxation) must be in (0, 2), got {relax}")
    b, k, h, w = images.shape
    weights = torch.as_tensor(weights, device=images.device)
    if weights.dim() == 1:
        weights = weights.expand(b, -1)
    if weights.shape != (b, k):
        raise ValueError(f"weights must be ({b}, {k}) or ({k},) for images of shape {tuple(images.shape)}; "
                         f"got {tuple(weights.shape)}")
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    lk = _LogKernel(h, w, reg, images.device, dtype, kernel)
    a = images.to(lk.dtype)
    if bool((a < 0).any()):
        raise ValueError("images must be non-negative histograms")
    weights = weights.to(lk.dtype)
    log_a = torch.log(a)  # -inf on empty pixels: exact, the kernel keeps every potential finite
    wk = weights[:, :, None, None]
    g = torch.zeros_like(log_a)
    log_bar = torch.zeros(b, h, w, device=a.device, dtype=lk.dtype)
    niter = torch.full((b,), max_iter, device=a.device)
    err = torch.zeros(b, device=a.device, dtype=lk.dtype)
    active = torch.arange(b, device=a.device)  # groups still iterating; converged ones leave the batch
    for it in range(max_iter):
        log_ku = lk.log_k_u(g, a, log_a)       # u_k = a_k / K v_k, then K u_k
        new_bar = (wk * log_ku).sum(1)         # b = prod_k (K u_k)^w_k
        g_next = new_bar[:, None] - log_ku     # v_k = b / K u_k
        if relax != 1.0:
            g_next = torch.lerp(g, g_next, relax)
        if (it + 1) % check_every == 0 or it + 1 == max_iter:
            # POT's criterion, on the plans before this update: the marginals v_k K u_k should all agree
            marg = torch.exp(g + log_ku)
            e = ((marg - marg.mean(1, keepdim=True)) ** 2).mean(1).sqrt().sum((-2, -1))
            stop = (e < tol) | (it + 1 == max_iter)
            gone = active[stop]  # the one host sync per check
            log_bar[gone] = new_bar[stop]
            niter[gone] = it + 1
            err[gone] = e[stop]
            keep = ~stop
            if gone.numel() == active.numel():
                break
            if gone.numel():
                active, a, log_a, wk, g_next = active[keep], a[keep], log_a[keep], wk[keep], g_next[keep]
        g = g_next
    out = torch.exp(log_bar).to(images.dtype)
    if log:
        return out, {"niter": niter, "err": err}
    return out
