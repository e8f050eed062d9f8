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
2011), mixing parameter 1.5: same fixed point; on 128 pairs of MNIST digits at ``reg = 0.004`` and POT's
tolerance, 21 iterations per pair on average, against 151 for POT's plain iteration and 102 for the
over-relaxed one (``anderson=0, relax=1.5``).

Log-domain kernel application ("stabilised convolution"): ``log K(exp X) = m + log K(exp(X - m))`` with ``m`` the
maximum of ``X`` over each image. Every entry of ``K`` is at least ``exp(-2 / reg)`` (squared distances on the
unit square are at most 2), so the sum never underflows while ``2 / reg`` stays inside the exponent range of
the compute dtype; ``auto`` picks float32 when that holds, float64 when it holds there (reg > ~0.003), a
per-axis shift (reg > ~0.0015) and an exact ``logsumexp`` below that. That is the *exact* kernel.

Work saved without changing the result: only the first ``k - 1`` potentials are iterated (the last follows from
the others), ``u_k = a_k / K v_k`` is computed only in a box around each image's support (with the matching rows
and columns of the kernel: 20 x 20 of 28 x 28 for MNIST digits), the iteration needs ``k - 1`` logs per pixel
(of ratios ``K u_j / K u_k``) and POT's criterion none.

Mixed precision (``precision="mixed"``, default): where the exact kernel needs float64, the iterations run in
float32 with floors near float32's smallest normal number instead (sums that underflow are clamped, not lost to
``-inf``), until the criterion is met or stops improving; then the exact kernel iterates on from the float32
potentials until the criterion holds there, usually after one iteration. Every returned barycenter therefore
meets ``tol`` in exact arithmetic (unless ``max_iter`` runs out: see ``log``); float32 only supplies the
starting point, at about a third of the cost of a float64 iteration on a CPU.

On a CPU the float32 iterations run, where a C compiler is at hand, in a compiled kernel that does the same
iteration one group at a time in cache (:mod:`mixlab.ot.native`, ``backend``): about twice as fast as the
PyTorch iteration, which streams the whole batch through memory some 75 times per iteration.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from . import native

#: largest ``-log`` of a kernel entry a dtype represents with full precision (log of its smallest normal, with margin)
_EXP_RANGE = {torch.float32: 80.0, torch.float64: 700.0}
_LOG2E = 1.4426950408889634
_FLOAT32_TOL = 1e-6  # the tightest tolerance float32 iterations aim for (mixed precision)


def _axis_cost(n: int, reg: float, device, dtype) -> Tensor:
    """``-(t_i - t_j)^2 / reg`` on ``t = linspace(0, 1, n)`` (POT's grid)."""
    t = torch.linspace(0, 1, n, device=device, dtype=torch.float64)
    return (-((t[:, None] - t[None, :]) ** 2) / reg).to(dtype)


def _boxes(a: Tensor) -> tuple[Tensor, Tensor, int, int]:
    """Per image of ``(B, k, H, W)`` (non-negative), the top-left corner ``(B, k)`` of a box of common size
    ``hb x wb`` (the largest bounding box of the non-zero pixels over all images) holding all its mass."""
    h, w = a.shape[-2:]
    corner, size = [], []
    for mass, n in ((torch.matmul(a, a.new_ones(w)), h), (torch.matmul(a.new_ones(h), a), w)):  # rows, columns
        i = torch.arange(n, device=a.device)
        lo = torch.where(mass > 0, i, n).amin(-1)
        hi = torch.where(mass > 0, i, -1).amax(-1)
        corner.append(lo)
        size.append((hi - lo + 1).amax().clamp_min(1))
    hb, wb = (int(x) for x in torch.stack(size).tolist())  # one host sync
    return corner[0].clamp(max=h - hb), corner[1].clamp(max=w - wb), hb, wb


def _cut_to_boxes(a: Tensor, boxes) -> tuple[Tensor, Tensor, Tensor]:
    """Images ``(B, k, H, W)`` cut to their boxes (from :func:`_boxes`): ``(B, k, hb, wb)``, with the grid's row
    ``(B, k, hb)`` and column ``(B, k, wb)`` indices of each box."""
    b, k, h, w = a.shape
    r0, c0, hb, wb = boxes
    rows = r0[..., None] + torch.arange(hb, device=a.device)
    cols = c0[..., None] + torch.arange(wb, device=a.device)
    image = torch.arange(b * k, device=a.device).view(b, k, 1, 1)
    return a.take((image * h + rows[..., None]) * w + cols[..., None, :]), rows, cols


def _unit_rows(w: Tensor, dtype) -> Tensor:
    """Weights ``(B, k)`` in ``dtype``, each row summing to one in that dtype (the iteration relies on it)."""
    w = w.to(dtype)
    return w / w.sum(1, keepdim=True)


class _LogKernel:
    """``X -> log K(exp X)`` over the last two axes, for the separable Gibbs kernel of an ``H x W`` grid.

    ``floor=True`` (float32 warm-up iterations only) clamps kernel sums at a floor (the dtype's smallest normal
    number, or more so that ratios of two sums stay finite): sums that underflow give a large negative log
    instead of ``-inf``; the result is then approximate.
    """

    def __init__(self, h: int, w: int, reg: float, device, dtype, mode: str = "auto", floor: bool = False):
        span = (1.0 if h > 1 else 0.0) + (1.0 if w > 1 else 0.0)
        # the largest kernel sum of an image with entries <= 1: ratios of sums, and u v K, stay below it / min K
        log_s_max = float(_axis_cost(h, reg, "cpu", torch.float64).exp().sum(1).max().log()
                          + _axis_cost(w, reg, "cpu", torch.float64).exp().sum(1).max().log())

        def fits(dt):  # kernel entries normal, and no overflow in the scaled domain
            return span / reg < _EXP_RANGE[dt] and span / reg + log_s_max < math.log(torch.finfo(dt).max) - 1

        if mode == "auto":
            if dtype == torch.float32 and fits(torch.float32):
                mode = "image"
            elif fits(torch.float64):
                mode, dtype = "image", torch.float64
            elif 1.0 / reg < _EXP_RANGE[torch.float64]:
                mode, dtype = "axis", torch.float64
            else:
                mode = "exact"
        if mode not in ("image", "axis", "exact"):
            raise ValueError(f"kernel mode must be auto, image, axis or exact; got {mode!r}")
        self.mode, self.dtype, self.floor = mode, dtype, floor
        info = torch.finfo(dtype)
        self.floor_at = max(info.tiny, math.exp(log_s_max + 1 - math.log(info.max))) if floor else 0.0
        self.m_h = _axis_cost(h, reg, device, dtype)
        self.m_w = _axis_cost(w, reg, device, dtype)
        self.k_h, self.k_w = self.m_h.exp(), self.m_w.exp()

    @staticmethod
    def _finite_max(x: Tensor, dims) -> Tensor:
        m = x.amax(dim=dims, keepdim=True)
        return torch.where(torch.isfinite(m), m, torch.zeros_like(m))

    def _floor(self, y: Tensor) -> Tensor:
        return y.clamp_min_(self.floor_at) if self.floor else y

    def conv(self, x: Tensor) -> Tensor:
        """``K_H x K_W^T`` for ``(..., H, W)``; the second product is one flat matrix product."""
        y = torch.matmul(self.k_h, x)
        return self._floor(torch.matmul(y.reshape(-1, y.shape[-1]), self.k_w).reshape(y.shape))

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

    def prepare(self, a: Tensor, boxes=None) -> tuple[Tensor, ...]:
        """What :meth:`sinkhorn_half_step` needs of the images ``(B, k, H, W)``: tensors indexed by group.

        ``image`` mode: ``u = a / K v`` vanishes outside each image's support, so ``K v`` is needed, and ``u``
        is non-zero, only inside a box around it; with ``boxes`` (from :func:`_boxes`) each image is cut to its
        box with the matching rows and columns of the kernel, which saves a third of the products on MNIST
        digits (20 x 20 boxes on a 28 x 28 grid). Other modes: ``(a, log a)``.
        """
        if self.mode != "image":
            return a, torch.log(a)  # -inf on empty pixels: exact, the kernel keeps every potential finite
        b, k, h, w = a.shape
        if boxes is None or boxes[2] * boxes[3] > 0.8 * h * w:  # nothing to gain: one shared kernel, no copies
            return (a,)
        a_box, rows, cols = _cut_to_boxes(a, boxes)
        hb, wb = a_box.shape[-2:]
        k_rows = self.k_h.index_select(0, rows.flatten()).view(b, k, hb, h)
        k_cols = self.k_w.index_select(0, cols.flatten()).view(b, k, wb, w)
        return a_box, k_rows, k_cols

    def _apply_boxed(self, x: Tensor, k_rows: Tensor, k_cols: Tensor, to_box: bool) -> Tensor:
        """Per image, ``K`` from the grid to the box (``to_box``: ``k_rows x k_cols^T``, ``x`` ``(B, k, H, W)``) or
        from the box to the grid (``k_rows^T x k_cols``, ``x`` ``(B, k, hb, wb)``); transposes are views."""
        b, k = x.shape[:2]
        k_rows, k_cols = k_rows.view(b * k, *k_rows.shape[2:]), k_cols.view(b * k, *k_cols.shape[2:])
        left, right = (k_rows, k_cols.transpose(1, 2)) if to_box else (k_rows.transpose(1, 2), k_cols)
        y = torch.bmm(torch.bmm(left, x.reshape(b * k, *x.shape[2:])), right)
        return self._floor(y.view(b, k, *y.shape[1:]))

    def sinkhorn_half_step(self, head: Tensor, last: Tensor, prep: tuple[Tensor, ...], marginals: bool):
        """From potentials ``G = (head, last)`` (``v = exp G``): ``u = a / K v``, then ``L = log K u``, in the form
        the iteration uses.

        Args: ``head`` ``(B, k - 1, H, W)`` and ``last`` ``(B, 1, H, W)``, the potentials; ``prep`` from
        :meth:`prepare`; ``marginals``: also return ``v K u``.
        Returns ``(D, log_ku_last, marg)``: ``D = L_j - L_k`` for ``j < k`` ``(B, k - 1, H, W)``; a function of a
        group selection giving ``L_k`` ``(n, H, W)``; and, if ``marginals``, ``v K u`` ``(B, k, H, W)`` (else None).

        In ``image`` mode this stays in the scaled domain with one shift per image: ``e = exp(G - m)``,
        ``q = a / K e = u e^m`` (inside the box), ``s = K(q / max q)``, so ``L = log s + log max q - m``. Only
        ``k - 1`` logs (of ``s_j / s_k``) per pixel, and ``v K u = e s max q`` without one.
        """
        if self.mode != "image":
            a, log_a = prep
            g = torch.cat([head, last], 1)
            lku = self(log_a - self(g))
            marg = torch.add(g, lku).exp_() if marginals else None
            return lku[:, :-1] - lku[:, -1:], lambda sel: lku[sel, -1], marg
        b, k1, h, w = head.shape
        m = torch.cat([head.amax((-2, -1), keepdim=True), last.amax((-2, -1), keepdim=True)], 1)  # finite
        e = head.new_empty(b, k1 + 1, h, w)
        torch.sub(head, m[:, :-1], out=e[:, :-1])
        torch.sub(last, m[:, -1:], out=e[:, -1:])
        e.mul_(_LOG2E).exp2_()                                        # exp(G - m), as exp2: cheaper on CPUs
        if len(prep) == 1:
            a = prep[0]
            q = torch.div(a, self.conv(e))                            # u e^m
            mq = q.amax(dim=(-2, -1), keepdim=True)
            s = self.conv(q.div_(mq))
        else:
            a, k_rows, k_cols = prep
            q = torch.div(a, self._apply_boxed(e, k_rows, k_cols, to_box=True))   # u e^m, inside the box
            mq = q.amax(dim=(-2, -1), keepdim=True)
            s = self._apply_boxed(q.div_(mq), k_rows, k_cols, to_box=False)
        c = torch.log(mq).sub_(m)                                     # L = log s + c
        d = torch.div(s[:, :-1], s[:, -1:]).log_().add_(c[:, :-1] - c[:, -1:])
        marg = e.mul_(s).mul_(mq) if marginals else None
        return d, lambda sel: torch.log(s[sel, -1]).add_(c[sel, -1]), marg


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
    ``m`` differences of residuals ``dF`` and of mixed iterates ``y = x + relax f`` (``dY = dX + relax dF``) and
    returns ``y - dY gamma`` with ``gamma = argmin |f - dF gamma|^2`` (ridge 1e-10 relative, solved in float64;
    a solve that fails (non-finite) falls back to the plain step). The Gram matrix of ``dF`` gains one row per
    step, so a step reads the history twice.
    """

    def __init__(self, m: int, relax: float):
        self.m, self.relax, self.steps = m, relax, 0
        self.f_prev = self.y_prev = None

    def subset(self, keep: Tensor) -> None:
        if self.f_prev is not None:
            self.f_prev, self.y_prev = self.f_prev[keep], self.y_prev[keep]
            self.df, self.dy, self.gram, self.c = self.df[keep], self.dy[keep], self.gram[keep], self.c[keep]

    def __call__(self, x: Tensor, f: Tensor) -> Tensor:
        """``x, f``: ``(B, n)`` iterates and residuals ``T(x) - x``; returns the next iterate ``(B, n)``."""
        y = torch.add(x, f, alpha=self.relax)
        if self.f_prev is None:
            b, n = x.shape
            self.df = x.new_zeros(b, self.m, n)
            self.dy = x.new_zeros(b, self.m, n)
            self.gram = torch.zeros(b, self.m, self.m, device=x.device, dtype=torch.float64)
            self.c = torch.zeros(b, self.m, device=x.device, dtype=torch.float64)
            self.eye = torch.eye(self.m, device=x.device, dtype=torch.float64)
            self.f_prev, self.y_prev = f, y
            return y
        s = self.steps % self.m
        self.steps += 1
        df = torch.sub(f, self.f_prev, out=self.df[:, s])              # newest residual difference
        torch.sub(y, self.y_prev, out=self.dy[:, s])
        self.f_prev, self.y_prev = f, y
        row = torch.bmm(df[:, None, :], self.df.transpose(1, 2))[:, 0].double()  # dF_j . df
        self.gram[:, s, :] = row
        self.gram[:, :, s] = row
        self.c += row                                       # dF_j . f = dF_j . f_prev + dF_j . df
        self.c[:, s] = torch.linalg.vecdot(df, f).double()
        j = min(self.steps, self.m)
        gram, c, dy = self.gram[:, :j, :j], self.c[:, :j], self.dy[:, :j]
        ridge = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-300)[:, None, None]
        gamma = torch.linalg.solve_ex(torch.addcmul(gram, ridge, self.eye[:j, :j], value=1e-10), c)[0]
        gamma = torch.nan_to_num_(gamma, 0.0, 0.0, 0.0)  # a failed solve (all dF zero): the plain step
        gamma = gamma.to(x.dtype).contiguous()  # solve_ex returns it column-major: bmm would loop over the batch
        return torch.sub(y, torch.bmm(gamma[:, None, :], dy)[:, 0])  # y is kept as y_prev


def _iterate(lk: _LogKernel, a: Tensor, w: Tensor, g: Tensor, tol: float, max_iter: int, check_every: int,
             anderson: int, relax: float, first_check: int, patience: int = 0, boxes=None, want_bar: bool = True,
             want_g: bool = True):
    """Iterate ``G -> T(G)`` for every group until POT's criterion is below ``tol`` (or ``max_iter``).

    Returns ``(log_bar, g, niter, err)`` per group, each at the iteration where the group stopped (``log_bar``
    and ``g`` are None unless ``want_bar``, ``want_g``). Groups that stop keep being carried (their later values
    are ignored) until a quarter of the batch has stopped; then the batch is compacted, so the cost follows the
    iterations each group needs.

    Only the first ``k - 1`` potentials are iterated: ``sum_k w_k T(G)_k = 0`` for any ``G`` (weights summing
    to one), so from ``G = 0`` on the last is ``-sum_{j<k} (w_j / w_k) G_j`` (weights sorted, largest last), and
    ``T(G)_j - G_j = sum_{i<k} w_i D_i - D_j - G_j`` with ``D_j = L_j - L_k`` (``L = log K u``).
    """
    b, k, h, wd = a.shape
    dev, dt = a.device, lk.dtype
    prep = lk.prepare(a.to(dt), boxes)
    w = _unit_rows(w, dt)
    w_head, w_last = w[:, :-1, None, None], w[:, -1:, None, None]
    ratio = w_head / w_last

    def last_of(head, ratio):  # G_k = -sum_j (w_j / w_k) G_j
        if k == 2:
            return torch.mul(head, ratio).neg_()
        return (head * ratio).sum(1, keepdim=True).neg_()

    head = g[:, :-1].to(dt, memory_format=torch.contiguous_format, copy=True)
    out_bar = torch.zeros(b, h, wd, device=dev, dtype=dt) if want_bar else None
    out_g = torch.zeros(b, k, h, wd, device=dev, dtype=dt) if want_g else None
    niter = torch.full((b,), max_iter, device=dev)
    err = torch.zeros(b, device=dev, dtype=dt)
    idx = torch.arange(b, device=dev)             # original index of each carried group
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    n_done = 0                                    # of the carried groups
    acc = _Anderson(anderson, relax) if anderson > 0 and k > 1 else None
    best = torch.full((b,), float("inf"), device=dev, dtype=dt)  # stall detection (patience > 0)
    stalled = torch.zeros(b, dtype=torch.long, device=dev)
    for it in range(max_iter):
        check = (it + 1 >= first_check and (it + 1 - first_check) % check_every == 0) or it + 1 == max_iter
        last = last_of(head, ratio)
        d, log_ku_last, marg = lk.sinkhorn_half_step(head, last, prep, check)
        if check:
            # POT's criterion on the plans before this update: the marginals v_k K u_k should agree
            if k == 2:  # the population std of two numbers is half their distance
                e = torch.sub(marg[:, 0], marg[:, 1]).abs_().sum((-2, -1)).mul_(0.5)
            else:
                e = marg.sub_(marg.mean(1, keepdim=True)).square_().mean(1).sqrt_().sum((-2, -1))
            stop = (e < tol) | (it + 1 == max_iter)
            if patience:  # no new best (by 1 %) for `patience` checks: hand over
                better = e < 0.99 * best
                best = torch.where(better, e, best)
                stalled = torch.where(better, 0, stalled + 1)
                stop |= stalled >= patience
            stop &= ~done
            pos = stop.nonzero()[:, 0]                                # the one host sync per check
            if pos.numel():
                new = idx[pos]
                if out_bar is not None:  # log b = L_k + sum_j w_j D_j
                    out_bar[new] = log_ku_last(pos).add_((w_head[pos] * d[pos]).sum(1))
                if out_g is not None:
                    out_g[new] = torch.cat([head[pos], last[pos]], 1)
                err[new] = e[pos]
                niter[new] = it + 1
                done[pos] = True
                n_done += pos.numel()
                if n_done == done.numel():
                    break
                if 4 * n_done >= done.numel():
                    keep = (~done).nonzero()[:, 0]
                    idx, done, w_head, w_last, ratio = idx[keep], done[keep], w_head[keep], w_last[keep], ratio[keep]
                    n_done = 0
                    head, d, best, stalled = head[keep], d[keep], best[keep], stalled[keep]
                    prep = tuple(t[keep] for t in prep)
                    if acc is not None:
                        acc.subset(keep)
        if k == 1:
            continue  # one image: G = 0 is the fixed point
        if k == 2:  # T(G)_1 - G_1 = (w_1 - 1) D_1 - G_1 = -w_2 D_1 - G_1
            r = torch.mul(d, w_last).add_(head).neg_()
        else:
            r = torch.sub((w_head * d).sum(1, keepdim=True), d).sub_(head)
        if acc is None:
            head = head.add_(r, alpha=relax)
        else:
            n = head.shape[0]
            head = acc(head.view(n, -1), r.view(n, -1)).view(n, k - 1, h, wd)
    return out_bar, out_g, niter, err


def _use_native(backend: str, images: Tensor, k: int, anderson: int) -> bool:
    """Whether the float32 phase runs in the compiled kernel (see :mod:`mixlab.ot.native`)."""
    if backend == "torch":
        return False
    fits = images.device.type == "cpu" and 2 <= k <= native.MAX_K and anderson <= native.MAX_HISTORY
    if backend == "native":
        if not fits:
            raise ValueError(f"backend='native' runs on CPU tensors with 2 to {native.MAX_K} images per group and "
                             f"anderson <= {native.MAX_HISTORY}; got {images.device.type}, k = {k}, anderson = "
                             f"{anderson}")
        if not native.available():
            raise RuntimeError(f"backend='native': the compiled kernel is not available ({native.status()}); "
                               "use backend='auto' to fall back to the PyTorch iteration")
        return True
    return fits and native.available()


def convolutional_barycenter(images: Tensor, weights: Tensor, reg: float, max_iter: int = 1000, tol: float = 1e-4,
                             check_every: int = 2, kernel: str = "auto", anderson: int = 5, relax: float = 1.5,
                             precision: str = "mixed", backend: str = "auto", log: bool = False):
    """Entropic Wasserstein barycenters of ``B`` groups of ``k`` images, all groups solved at once.

    Args:
        images: ``(B, k, H, W)`` finite, non-negative histograms of positive mass; each is normalised to unit
            mass here (only its shape counts; see OptTransMix for turning pictures into histograms).
        weights: ``(B, k)`` barycentric weights, finite and non-negative (``(k,)`` is broadcast); rows are
            normalised to sum to one. NaN, inf, negative weights or an all-zero row raise ``ValueError``.
        reg: entropic regularisation, as in POT: kernel ``exp(-d^2 / reg)`` on a ``[0, 1]`` grid per axis.
        max_iter: iteration budget (per phase, see ``precision``).
        tol: per-group stopping threshold on POT's criterion ``sum_pixels std_k(v_k * K u_k)`` (the spread of
            the k plans' barycenter-side marginals). A group that meets it stops (its result is what it would be
            if solved alone) and later leaves the batch, so the cost follows the iterations each group needs.
        check_every: iterations between convergence checks; each check is one host sync (none in between).
            The compiled float32 kernel (``backend``) checks every iteration: there is no sync to save there.
        kernel: ``auto`` (default), ``image``, ``axis`` or ``exact``: how the exact log-domain kernel is applied
            (see the module docstring); all give the same result up to rounding.
        anderson: history length ``m`` of Anderson mixing (default 5; ``0``: the plain, over-relaxed iteration).
        relax: mixing parameter: the step ``x + relax * (T(x) - x)`` (default 1.5: 3 to 6 % fewer iterations
            than 1 with Anderson on MNIST and Fashion-MNIST training pairs, k = 2 and 3, reg 0.002 to 0.01).
            Without Anderson this is the over-relaxation ``omega`` of Thibault, Chizat, Dossal, Papadakis 2017
            (``anderson=0, relax=1``: POT's iteration). Same fixed point whatever the value.
        precision: ``mixed`` (default): where the exact kernel needs float64, iterate in float32 until ``tol``
            (or until the float32 criterion stalls for 5 checks), then finish with the exact kernel, which must
            meet ``tol`` itself (module docstring); ``exact``: every iteration with the exact kernel.
        backend: where the float32 iterations of ``precision="mixed"`` run on a CPU: ``auto`` (default) in the
            compiled kernel of :mod:`mixlab.ot.native` when it is available (about twice as fast: one group at a
            time in cache, a check every iteration), else in PyTorch; ``native`` or ``torch`` to insist. The
            exact iterations that finish the solve run in PyTorch either way; on a GPU everything does, and so
            does a solve without float32 phase (``precision="exact"``, or ``reg`` large enough for float32).
        log: also return ``{"niter": (B,) iterations, "niter_exact": (B,) of them with the exact kernel,
            "err": (B,) last criterion, "backend": "native" or "torch", where the float32 iterations ran}``.
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
    if backend not in ("auto", "native", "torch"):
        raise ValueError(f"backend must be 'auto', 'native' or 'torch', got {backend!r}")
    if not max_iter >= 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")
    b, k, h, w = images.shape
    weights = torch.as_tensor(weights, device=images.device)
    if weights.dim() == 1:
        weights = weights.expand(b, -1)
    if weights.shape != (b, k):
        raise ValueError(f"weights must be ({b}, {k}) or ({k},) for images of shape {tuple(images.shape)}; "
                         f"got {tuple(weights.shape)}")
    out_dtype = images.dtype
    mass = images.sum((-2, -1), keepdim=True, dtype=torch.float64 if out_dtype == torch.float64 else torch.float32)
    bad_weights, negative, not_finite, empty = torch.stack([  # one host sync for all the checks
        ~torch.isfinite(weights).all() | (weights < 0).any() | (weights.sum(1) <= 0).any(), (images < 0).any(),
        ~torch.isfinite(images).all(), (mass <= 0).any()]).tolist()
    if bad_weights:
        raise ValueError("weights must be finite and non-negative with a positive sum per row (no NaN or inf)")
    if not_finite:
        raise ValueError("images contain NaN or inf; they must be finite, non-negative histograms")
    if negative:
        raise ValueError("images must be non-negative histograms")
    if empty:
        raise ValueError("an image has no mass (all zero): every image must be a histogram of positive mass")
    # unit mass: the barycenter of the normalised histograms (documented above). Images whose mass is 1 up to the
    # rounding of their sum are left bit for bit as given, so callers that normalise (OptTransMix) get the same numbers
    off = (mass - 1).abs() > torch.finfo(mass.dtype).eps * h * w
    images = torch.where(off, images / mass, images)
    # largest weight last (see _iterate, which also normalises the rows); the barycenter does not depend on the order
    order = weights.argsort(1)
    weights = weights.gather(1, order)
    images = images.gather(1, order[:, :, None, None].expand_as(images))
    dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    exact = _LogKernel(h, w, reg, images.device, dtype, kernel)
    mixed = precision == "mixed" and exact.dtype != torch.float32
    boxes = _boxes(images) if mixed or exact.mode == "image" else None  # only the image mode uses them
    g = torch.zeros(b, k, h, w, device=images.device, dtype=exact.dtype)
    n_fast = torch.zeros(b, dtype=torch.long, device=images.device)
    if mixed:
        fast = _LogKernel(h, w, reg, images.device, torch.float32, "image", floor=True)
        # below ~1e-6 the float32 criterion is rounding noise: aim there, the exact kernel does the rest
        fast_tol = max(tol, _FLOAT32_TOL)
        ran_native = _use_native(backend, images, k, anderson)
        if ran_native:
            g, n_fast, _ = native.warm_start(_cut_to_boxes(images.float(), boxes)[0], boxes[0], boxes[1],
                                             _unit_rows(weights, torch.float32), fast.k_h, fast.k_w, fast.floor_at,
                                             fast_tol, max_iter, anderson, relax, patience=5 * check_every)
        else:
            _, g, n_fast, _ = _iterate(fast, images, weights, g, fast_tol, max_iter, check_every, anderson, relax,
                                       first_check=check_every, patience=5, boxes=boxes, want_bar=False)
        first = 1  # the float32 potentials may already meet tol exactly: check at once
    else:
        first, ran_native = check_every, False
    log_bar, _, n_exact, err = _iterate(exact, images, weights, g, tol, max_iter, check_every, anderson, relax,
                                        first_check=first, boxes=boxes, want_g=False)
    out = torch.exp(log_bar).to(out_dtype)
    if log:
        return out, {"niter": n_fast + n_exact, "niter_exact": n_exact, "err": err,
                     "backend": "native" if ran_native else "torch"}
    return out
