"""Batched entropic optimal transport between point clouds, in the log domain (Sinkhorn-Knopp).

Cuturi. Sinkhorn Distances: Lightspeed Computation of Optimal Transport. NeurIPS 2013. Log-domain updates
(Peyre and Cuturi, Computational Optimal Transport, Remark 4.23) so that small ``eps`` never underflows::

    f_i = eps log a_i - eps logsumexp_j((g_j - C_ij) / eps)
    g_j = eps log b_j - eps logsumexp_i((f_i - C_ij) / eps)
    P_ij = exp((f_i + g_j - C_ij) / eps)

After each iteration the column marginals of ``P`` are exact; the row marginals converge.

Speed (CPU): each half-step does the same floating-point operations as ``torch.logsumexp`` (so the same results,
bit for bit), in place in one work buffer, except that exponents below the smallest normal number's logarithm
(-87 in float32) are raised to it before ``exp``: ``exp`` of such arguments takes a slow path on x86 CPUs, and at
``eps = 0.1`` on feature maps almost every argument is there. Plan entries below that number come out as 0.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``C_ij = |x_i - y_j|^2`` for batches ``(B, r, C)`` and ``(B, s, C)`` -> ``(B, r, s)`` (not normalised)."""
    c = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2 * torch.matmul(x, y.transpose(1, 2))
    return c.clamp_min(0)


def sinkhorn(x: Tensor, y: Tensor, eps: float, max_iter: int = 100, tol: float = 1e-6, check_every: int = 10,
             cost: Tensor | None = None, log: bool = False):
    """Entropic transport plans between point clouds with uniform marginals, for a whole batch at once.

    Args:
        x: ``(B, r, C)`` source points; y: ``(B, s, C)`` target points.
        eps: entropic regularisation (in cost units; the cost is the squared Euclidean distance).
        max_iter: iteration budget.
        tol: stop when the batch mean of ``sum_i |f_i - f_i'|`` between consecutive iterations is below ``tol``
            (the criterion of the AlignMixup code); ``0`` runs the whole budget.
        check_every: iterations between checks; each check is one host sync (none in between).
        cost: optional precomputed cost ``(B, r, s)`` (then ``x`` and ``y`` only give the sizes).
        log: also return ``{"f", "g", "niter"}``.
    The cost must be finite (it is for finite points).
    Returns:
        plans ``P`` of shape ``(B, r, s)``, rows summing to ``1/r`` and columns to ``1/s``, in the input dtype
        (computed in float32 for half precision). No gradient flows into them unless the inputs require grad.
    """
    if x.dim() != 3 or y.dim() != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must be point clouds (B, r, C) and (B, s, C); got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    out_dtype = x.dtype
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    c = squared_distances(x.to(dtype), y.to(dtype)) if cost is None else cost.to(dtype)
    b, r, s = c.shape
    log_a, log_b = -math.log(r), -math.log(s)
    floor = exp_floor(dtype)
    # in place into one work buffer unless autograd has to see the steps
    inplace = not (torch.is_grad_enabled() and c.requires_grad)
    work = torch.empty_like(c) if inplace else None
    f = torch.zeros(b, r, device=c.device, dtype=dtype)
    g = torch.zeros(b, s, device=c.device, dtype=dtype)
    niter = max_iter
    for it in range(max_iter):
        f_prev = f
        f = _dual(g[:, None, :], c, eps, log_a, 2, floor, work)
        g = _dual(f[:, :, None], c, eps, log_b, 1, floor, work)
        if tol > 0 and (it + 1) % check_every == 0 and float((f - f_prev).detach().abs().sum(-1).mean()) < tol:
            niter = it + 1
            break
    z = (f[:, :, None] + g[:, None, :] - c) / eps
    plan = torch.where(z < floor, 0.0, torch.exp(z.clamp_min(floor))).to(out_dtype)  # below normal numbers: 0
    if log:
        return plan, {"f": f, "g": g, "niter": niter}
    return plan


def exp_floor(dtype: torch.dtype) -> float:
    """The most negative exponent whose ``exp`` is still a normal number of ``dtype`` (-87 in float32)."""
    return float(math.ceil(math.log(torch.finfo(dtype).tiny)))


def _dual(h: Tensor, c: Tensor, eps: float, log_m: float, dim: int, floor: float, work: Tensor | None) -> Tensor:
    """One half-step, ``eps (log_m - logsumexp((h - c) / eps, dim))``, with the same operations (so the same
    rounding) as ``torch.logsumexp``, except that exponents below ``floor`` are raised to it: their terms are below
    the smallest normal number, so the sum (which holds a term ``exp(0) = 1``) is the same bit for bit, but
    ``exp`` of such arguments takes a slow path on CPUs. ``work``: a buffer of
    ``c``'s shape to compute in place (None: out of place, for autograd)."""
    if work is None:
        z = (h - c) / eps
        m = z.amax(dim, keepdim=True)
        lse = (z - m).clamp_min(floor).exp().sum(dim).log() + m.squeeze(dim)
        return eps * (log_m - lse)
    z = torch.sub(h, c, out=work).div_(eps)
    m = z.amax(dim, keepdim=True)
    lse = z.sub_(m).clamp_min_(floor).exp_().sum(dim).log_().add_(m.squeeze(dim))
    return torch.rsub(lse, log_m).mul_(eps)
