"""Convolutional Wasserstein barycenters of images, batched and in the log domain.

Solomon, de Goes, Peyre, Cuturi, Butscher, Nguyen, Du, Guibas. Convolutional Wasserstein Distances: Efficient
Optimal Transportation on Geometric Domains. SIGGRAPH 2015 (Algorithm 2), after Benamou et al. 2015.

Each image ``a_k`` is a histogram on an ``H x W`` grid with coordinates ``linspace(0, 1)`` per axis, as in POT.
The Gibbs kernel ``K = exp(-|p - q|^2 / reg)`` is separable, ``K = K_H (x) K_W``, so applying it is two small
matrix products instead of one ``(HW)^2`` one. With potentials ``F_k, G_k`` (log scalings ``u_k, v_k``) one
iteration ``G -> T(G)`` is (POT's order)::

    F_k = log a_k - log K(exp G_k)            # u_k = a_k / K v_k
    L_k = log K(exp F_k)                      # log K u_k
    log b = sum_k w_k L_k                     # geometric mean of the K u_k
    T(G)_k = log b - L_k                      # v_k = b / K u_k

Acceleration: Anderson mixing of the last ``m`` iterates of the fixed-point map ``G -> T(G)`` (Walker and Ni
2011): same fixed point; on 128 pairs of MNIST digits at
``reg = 0.004`` and POT's tolerance, 22 iterations per pair on average, against 151 for POT's plain iteration and
102 for the over-relaxed one (``anderson=0, relax=1.5``).

Log-domain kernel application ("stabilised convolution"): ``log K(exp X) = m + log K(exp(X - m))`` with ``m`` the
maximum of ``X`` over each image. Every entry of ``K`` is at least ``exp(-2 / reg)`` (squared distances on the
unit square are at most 2), so the sum never underflows while ``2 / reg`` stays inside the exponent range of
the compute dtype; ``auto`` picks float32 when that holds, float64 when it holds there (reg > ~0.003), a
per-axis shift (reg > ~0.0015) and an exact ``logsumexp`` below that. That is the *exact* kernel.

Mixed precision (``precision="mixed"``, default): where the exact kernel needs float64, the iterations run in
float32 with floors at float32's smallest normal number instead (sums that underflow are clamped, not lost to
``-inf``), until the criterion is met or stops improving; then the exact kernel iterates on from the float32
potentials until the criterion holds there, usually after one iteration. Every returned barycenter therefore
meets ``tol`` in exact arithmetic (unless ``max_iter`` runs out: see ``log``); float32 only supplies the
starting point, at about a third of the cost of a float64 iteration on a CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: largest ``-log`` of a kernel entry a dtype represents with full precision (log of its smallest normal, with margin)
_EXP_RANGE = {torch.float32: 80.0, torch.float64: 700.0}


def _axis_cost(n: int, reg: float, device, dtype) -> Tensor:
    """``-(t_i - t_j)^2 / reg`` on ``t = linspace(0, 1, n)`` (POT's grid)."""
    t = torch.linspace(0, 1, n, device=device, dtype=torch.float64)
    return (-((t[:, None] - t[None, :]) ** 2) / reg).to(dtype)


class _LogKernel:
    """``X -> log K(exp X)`` over the last two axes, for the separable Gibbs kernel of an ``H x W`` grid.

    ``floor=True`` (float32 warm-up iterations only) clamps kernel sums at the dtype's smallest normal number:
    sums that underflow give a large negative log instead of ``-inf``; the result is then approximate.
    """

    def __init__(self, h: int, w: int, reg: float, device, dtype, mode: str = "auto", floor: bool = False):
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
        self.mode, self.dtype, self.floor = mode, dtype, floor
        self.tiny = torch.finfo(dtype).tiny if floor else 0.0
        self.m_h = _axis_cost(h, reg, device, dtype)
        self.m_w = _axis_cost(w, reg, device, dtype)
        self.k_h, self.k_w = self.m_h.exp(), self.m_w.exp()

    @staticmethod
    def _finite_max(x: Tensor, dims) -> Tensor:
        m = x.amax(dim=dims, keepdim=True)
        return torch.where(torch.isfinite(m), m, torch.zeros_like(m))

    def conv(self, x: Tensor) -> Tensor:
        """``K_H x K_W^T`` for ``(..., H, W)``; the second product is one flat matrix product."""
        y = torch.matmul(self.k_h, x)
        y = torch.matmul(y.reshape(-1, y.shape[-1]), self.k_w).reshape(y.shape)
        return y.clamp_min_(self.tiny) if self.floor else y

    def __call__(self, x: Tensor) -> Tensor:
        if self.mode == "image":  # one shift per image: one exp and one log
            m = self._finite_max(x, (-2, -1))
            return torch.log(self.conv(torch.exp(x - m))) + m
        if self.mode == "axis":  # one shift per row / column
            m = self._finite_max(x, (-2,))
            x = torch.log(torch.matmul(self.k_h, torch.exp(x - m))) + m
            m = self._finite_max(x, (-1,))
            return torch.log(torch.matmul(torch.exp(x - m), self.k_w)) + m
        x = torch.logsumexp(self.m_h[:, :, None] + x[..., None, :, :], dim=-2)
        return torch.logsumexp(x[..., :, None, :] + self.m_w, dim=-1)

    def log_k_u(self, g: Tensor, a: Tensor, log_a: Tensor) -> Tensor:
        """``log K u`` with ``u = a / K exp(g)``: half a Sinkhorn step from the potential ``g``.

        In ``image`` mode this stays in the scaled domain with one shift per image (one exp, one log):
        ``u = (a / S) e^(-m)`` with ``S = K exp(g - m)``, then ``log K u = log K(q / max q) + log max q - m``.
        """
        if self.mode != "image":
            return self(log_a - self(g))
        m = self._finite_max(g, (-2, -1))
        q = self.conv(torch.sub(g, m).exp_()).reciprocal_().mul_(a)
        mq = q.amax(dim=(-2, -1), keepdim=True)
        return self.conv(q.div_(mq)).log_().add_(torch.log(mq).sub_(m))


def blur(images: Tensor, reg: float, kernel: str = "auto") -> Tensor:
    """The entropic blur of unit-mass images ``(..., H, W)``: ``K (a / K 1)``.

    This is the barycenter of an image with itself (any weights), and the barycenter with weights ``(1, 0)``:
    the closed form the tests check :func:`convolutional_barycenter` against.
    """
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    lk = _LogKernel(images.shape[-2], images.shape[-1], reg, images.device, dtype, kernel)
    log_a = torch.log(images.to(lk.dtype))
    return torch.exp(lk(log_a - lk(torch.zeros_like(log_a)))).to(images.dtype)


class _Anderson:
    """Anderson mixing (type II) of a batch of fixed-point iterations ``x -> x + f(x)``, one history per group.

    Walker and Ni, Anderson acceleration for fixed-point iterations, SIAM J. Numer. Anal. 2011. Keeps the last
    ``m`` differences of residuals ``dF`` and of iterates ``dX`` (stored as ``dX + relax dF``) and returns
    ``x + relax f - (dX + relax dF) gamma`` with ``gamma = argmin |f - dF gamma|^2`` (ridge 1e-10 relative,
    solved in float64; a failed solve falls back to the plain step). The Gram matrix of ``dF`` gains one row
    per step, so a step reads the history twice.
    """

    def __init__(self, m: int, relax: float):
        self.m, self.relax, self.steps = m, relax, 0
        self.f_prev = self.x_prev = None

    def subset(self, keep: Tensor) -> None:
        if self.f_prev is not None:
            self.f_prev, self.x_prev = self.f_prev[keep], self.x_prev[keep]
            self.df, self.u, self.gram, self.c = self.df[keep], self.u[keep], self.gram[keep], self.c[keep]

    def __call__(self, x: Tensor, f: Tensor) -> Tensor:
        """``x, f``: ``(B, n)`` iterates and residuals ``T(x) - x``; returns the next iterate ``(B, n)``."""
        if self.f_prev is None:
            b, n = x.shape
            self.df = x.new_zeros(b, self.m, n)
            self.u = x.new_zeros(b, self.m, n)
            self.gram = torch.zeros(b, self.m, self.m, device=x.device, dtype=torch.float64)
            self.c = torch.zeros(b, self.m, device=x.device, dtype=torch.float64)
            self.f_prev, self.x_prev = f, x
            return x + self.relax * f
        s = self.steps % self.m
        self.steps += 1
        df = self.df[:, s]
        torch.sub(f, self.f_prev, out=df)                              # newest residual difference
        torch.sub(x, self.x_prev, out=self.u[:, s]).add_(df, alpha=self.relax)
        self.f_prev, self.x_prev = f, x
        row = torch.bmm(df[:, None, :], self.df.transpose(1, 2))[:, 0].double()  # dF_j . df
        self.gram[:, s, :] = row
        self.gram[:, :, s] = row
        self.c += row                                       # dF_j . f = dF_j . f_prev + dF_j . df
        self.c[:, s] = torch.linalg.vecdot(df, f).double()
        j = min(self.steps, self.m)
        gram, c, u = self.gram[:, :j, :j], self.c[:, :j], self.u[:, :j]
        ridge = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)
        gamma, info = torch.linalg.solve_ex(gram + torch.diag_embed(ridge[:, None].expand(-1, j)), c)
        gamma = torch.where(torch.isfinite(gamma).all(1, keepdim=True) & (info == 0)[:, None], gamma,
                            torch.zeros_like(gamma))
        out = torch.add(x, f, alpha=self.relax)[:, None, :]
        return torch.baddbmm(out, gamma.to(x.dtype)[:, None, :], u, alpha=-1)[:, 0]


def _iterate(lk: _LogKernel, a: Tensor, w: Tensor, g: Tensor, tol: float, max_iter: int, check_every: int,
             anderson: int, relax: float, first_check: int, patience: int = 0):
    """Iterate ``G -> T(G)`` for every group until POT's criterion is below ``tol`` (or ``max_iter``).

    Returns ``(log_bar, g, niter, err)`` per group, each at the iteration where the group stopped. Groups that
    stop keep being carried (their later values are ignored) until a quarter of the batch has stopped; then
    the batch is compacted, so the cost follows the iterations each group needs.
    """
    b, k, h, wd = a.shape
    dev, dt = a.device, lk.dtype
    a, g = a.to(dt), g.to(dt, copy=True)
    log_a = torch.log(a)  # -inf on empty pixels: exact, the kernel keeps every potential finite
    w = w.to(dt)
    w = w / w.sum(1, keepdim=True)  # exactly one in the compute dtype: the identity below relies on it
    wk = w[:, None, :]  # (B, 1, k)
    # sum_k w_k T(G)_k = 0 for any G (weights summing to one), so from G = 0 on, the last image's potential is
    # -sum_{j<k} (w_j / w_k) G_j: Anderson mixes the first k - 1 images only (weights sorted, largest last)
    ratio = (w[:, :-1] / w[:, -1:])[:, :, None, None]
    out_bar = torch.zeros(b, h, wd, device=dev, dtype=dt)
    out_g = torch.zeros_like(g)
    niter = torch.full((b,), max_iter, device=dev)
    err = torch.zeros(b, device=dev, dtype=dt)
    idx = torch.arange(b, device=dev)             # original index of each carried group
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    acc = _Anderson(anderson, relax) if anderson > 0 and k > 1 else None
    best = torch.full((b,), float("inf"), device=dev, dtype=dt)  # stall detection (patience > 0)
    stalled = torch.zeros(b, dtype=torch.long, device=dev)
    for it in range(max_iter):
        log_ku = lk.log_k_u(g, a, log_a)                              # u_k = a_k / K v_k, then log K u_k
        bar = torch.bmm(wk, log_ku.reshape(-1, k, h * wd)).reshape(-1, h, wd)  # log b = sum_k w_k log K u_k
        r = log_ku.sub_(bar[:, None]).neg_().sub_(g)                  # residual T(G) - G = log b - log K u - G
        if (it + 1 >= first_check and (it + 1 - first_check) % check_every == 0) or it + 1 == max_iter:
            # POT's criterion on the plans before this update: the marginals v_k K u_k = b exp(-r_k) should agree
            marg = torch.sub(bar[:, None], r).exp_()
            e = marg.sub_(marg.mean(1, keepdim=True)).square_().mean(1).sqrt_().sum((-2, -1))
            stop = (e < tol) | (it + 1 == max_iter)
            if patience:  # no new best (by 1 %) for `patience` checks: hand over
                better = e < 0.99 * best
                best = torch.where(better, e, best)
                stalled = torch.where(better, 0, stalled + 1)
                stop |= stalled >= patience
            stop &= ~done
            new = idx[stop]                                           # the one host sync per check
            if new.numel():
                out_bar[new], out_g[new], err[new] = bar[stop], g[stop], e[stop]
                niter[new] = it + 1
                done = done | stop
                n_done = int(done.sum())
                if n_done == done.numel():
                    break
                if 4 * n_done >= done.numel():
                    keep = ~done
                    idx, done, a, log_a, wk, ratio = idx[keep], done[keep], a[keep], log_a[keep], wk[keep], ratio[keep]
                    g, r, best, stalled = g[keep], r[keep], best[keep], stalled[keep]
                    if acc is not None:
                        acc.subset(keep)
        if acc is None:
            g = g.add_(r, alpha=relax)
        else:
            n = g.shape[0]
            head = acc(g[:, :-1].reshape(n, -1), r[:, :-1].reshape(n, -1)).reshape(n, k - 1, h, wd)
            g = torch.cat([head, (ratio * head).sum(1, keepdim=True).neg_()], 1)
    return out_bar, out_g, niter, err


def convolutional_barycenter(images: Tensor, weights: Tensor, reg: float, max_iter: int = 1000, tol: float = 1e-4,
                             check_every: int = 2, kernel: str = "auto", anderson: int = 5, relax: float = 1.0,
                             precision: str = "mixed", log: bool = False):
    """Entropic Wasserstein barycenters of ``B`` groups of ``k`` images, all groups solved at once.

    Args:
        images: ``(B, k, H, W)`` non-negative, each image of unit mass (see OptTransMix for turning pictures
            into histograms).
        weights: ``(B, k)`` barycentric weights, non-negative (``(k,)`` is broadcast); rows are normalised to
            sum to one.
        reg: entropic regularisation, as in POT: kernel ``exp(-d^2 / reg)`` on a ``[0, 1]`` grid per axis.
        max_iter: iteration budget (per phase, see ``precision``).
        tol: per-group stopping threshold on POT's criterion ``sum_pixels std_k(v_k * K u_k)`` (the spread of
            the k plans' barycenter-side marginals). A group that meets it stops (its result is what it would be
            if solved alone) and later leaves the batch, so the cost follows the iterations each group needs.
        check_every: iterations between convergence checks; each check is one host sync (none in between).
        kernel: ``auto`` (default), ``image``, ``axis`` or ``exact``: how the exact log-domain kernel is applied
            (see the module docstring); all give the same result up to rounding.
        anderson: history length ``m`` of Anderson mixing (default 5; ``0``: the plain, over-relaxed iteration).
        relax: mixing parameter: the step ``x + relax * (T(x) - x)``. Without Anderson this is the
            over-relaxation ``omega`` of Thibault, Chizat, Dossal, Papadakis 2017 (``1``: POT's iteration).
            Same fixed point whatever the value.
        precision: ``mixed`` (default): where the exact kernel needs float64, iterate in float32 until ``tol``
            (or until the float32 criterion stalls for 5 checks), then finish with the exact kernel, which must
            meet ``tol`` itself (module docstring); ``exact``: every iteration with the exact kernel.
        log: also return ``{"niter": (B,) iterations, "niter_exact": (B,) of them with the exact kernel,
            "err": (B,) last criterion}``.
    Returns:
        ``(B, H, W)`` barycenters of unit mass, in the input dtype (computed in float32 for half precision, and
        finished in float64 where ``reg`` is too small for float32).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, k, H, W); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point histograms, got {images.dtype}")
    if not reg > 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if not 0 < relax < 2:
        raise ValueError(f"relax must be in (0, 2), got {relax}")
    if precision not in ("mixed", "exact"):
        raise ValueError(f"precision must be 'mixed' or 'exact', got {precision!r}")
    b, k, h, w = images.shape
    weights = torch.as_tensor(weights, device=images.device)
    if weights.dim() == 1:
        weights = weights.expand(b, -1)
    if weights.shape != (b, k):
        raise ValueError(f"weights must be ({b}, {k}) or ({k},) for images of shape {tuple(images.shape)}; "
                         f"got {tuple(weights.shape)}")
    if bool((weights < 0).any() | (weights.sum(1) <= 0).any()):
        raise ValueError("weights must be non-negative with a positive sum per row")
    if bool((images < 0).any()):
        raise ValueError("images must be non-negative histograms")
    # largest weight last (see _iterate, which also normalises the rows); the barycenter does not depend on the order
    order = weights.argsort(1)
    weights = weights.gather(1, order)
    images = images.gather(1, order[:, :, None, None].expand_as(images))
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    exact = _LogKernel(h, w, reg, images.device, dtype, kernel)
    g = torch.zeros(b, k, h, w, device=images.device, dtype=exact.dtype)
    n_fast = torch.zeros(b, dtype=torch.long, device=images.device)
    if precision == "mixed" and exact.dtype != torch.float32:
        fast = _LogKernel(h, w, reg, images.device, torch.float32, "image", floor=True)
        _, g, n_fast, _ = _iterate(fast, images, weights, g, tol, max_iter, check_every, anderson, relax,
                                   first_check=check_every, patience=5)
        first = 1  # the float32 potentials may already meet tol exactly: check at once
    else:
        first = check_every
    log_bar, _, n_exact, err = _iterate(exact, images, weights, g, tol, max_iter, check_every, anderson, relax,
                                        first_check=first)
    out = torch.exp(log_bar).to(images.dtype)
    if log:
        return out, {"niter": n_fast + n_exact, "niter_exact": n_exact, "err": err}
    return out
