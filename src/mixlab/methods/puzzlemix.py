"""PuzzleMix (Kim, Choo, Song. *Puzzle Mix: Exploiting Saliency and Local Statistics for Optimal Mixup.* ICML 2020).

One training step, per batch (the authors' code, snu-mllab/PuzzleMix, ``main.py`` and ``mixup.py``):

1. **Saliency**: one extra forward-backward in eval mode; ``s = sqrt(mean_c (d CE / d x)^2)`` (B, H, W).
2. **Draws**: ``lam ~ Beta(alpha, alpha)`` (alpha 1), a partner permutation, and ``n x n`` blocks with ``n`` drawn
   uniformly from ``block_nums`` = 2, 4, 8, 16 (``2^U{1..4}``) among those that divide the image side.
3. **Mask labelling** (the paper's mask objective, discrete mask values ``m in {0, 1/2, 1}`` for ``n_labels`` 3):
   per block ``p`` the unary term ``m_p s'_p + (1 - m_p) s_p`` of the saliency each image loses (block saliency
   normalised to sum one per image, ``s`` own, ``s'`` partner), the label prior ``-eta log p(m | lam) / n^2`` with
   ``p`` binomial (``lam^2, 2 lam (1 - lam), (1 - lam)^2``), and the smoothness ``(beta / (16 n) + psi_pq)
   (m_p - m_q)^2`` between neighbouring blocks, where ``psi`` (gamma times the mean absolute pixel difference across
   the block border, in [0, 1] pixel units, for each choice of source image on either side) is the data
   local-smoothness term, split into unary parts and an edge weight as in the code. Scaled by
   ``1000 n^2 (n_labels - 1)^2`` and truncated to integers (pyGCO's int32 input), then minimised **exactly**
   (:func:`mixlab.ot.graphcut.solve_convex`; the authors run pyGCO's alpha-beta swap, a local minimum of the same
   energy). Edge weights are clamped at 0, which only gamma > 1 can reach (the energy would not be submodular).
4. **Transport** (the saliency-discounted transport, ``t_eps`` 0.8): on a grid of ``t_size``-pixel cells (4 px,
   README's CIFAR command), each image's blocks move to where its mask shows them, by the code's iterative
   assignment: cost ``t_eps C_ij - s_i z_j`` (``C`` squared grid distance / (grid - 1)^2, ``z``: the mask is
   non-zero), each row takes its cheapest column, each contested column goes to its cheapest row, losers pay +1;
   ``grid`` rounds; the winners' plan moves the cells (a cell no row won is left empty, i.e. zero, as in the code).
5. **Mix**: ``x~ = M * T(x) + (1 - M) * T'(x[perm])``; the label weight is the mask's area per sample,
   ``y~ = r y + (1 - r) y[perm]``, ``r = mean(M)``.

Defaults (README's CIFAR-100 command): alpha 1, beta 1.2, gamma 0.5, eta 0.2, neigh_size 4, n_labels 3, transport
with t_size 4 and t_eps 0.8. Not included: the adversarial variant (``adv_p``) and ``clean_lam`` (0 in the
README's commands). Generalised beyond 32 px: block counts that do not divide the image side are skipped (28 px
MNIST: 2 and 4), and the neighbourhood and transport cell sizes are the largest divisors of the block size not
above ``neigh_size`` / ``t_size`` (identical at 32 px); a transport grid finer than 16 x 16 falls back to the
block grid (the code's largest cost matrix is 16 x 16).

What stays per sample on the CPU: the graph cuts (one exact minimum cut per sample, all samples in one call of
the compiled kernel); everything else is batched tensor work on the input's device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.augment import denormalize
from ..ot import graphcut
from .base import Method, MixInfo, check_alpha, interpolate, sample_beta, soft_cross_entropy
from .masks import check_images
from .saliency import block_saliency, input_saliency, largest_divisor, picture_model

MAX_TRANSPORT_GRID = 16


def _pixels(x: Tensor, mean, std) -> Tensor:
    """Inputs back in [0, 1] pixel units for the smoothness term (``x * std + mean``; identity when not given)."""
    return x if mean is None else denormalize(x, mean, std)


def border_penalty(a: Tensor, b: Tensor, cells: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Mean absolute difference across block borders between ``a`` above / left and ``b`` below / right.

    ``a``, ``b``: pooled images (B, C, h', w') with ``cells`` = pooled cells per block (rows, columns).
    Returns vertical-border terms (B, n-1, n) and horizontal-border terms (B, n, n-1) (code: ``neigh_penalty``).
    """
    kh, kw = cells
    pv = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, kh - 1::kh, :].abs().mean(1)
    ph = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, kw - 1::kw].abs().mean(1)
    return F.avg_pool2d(pv, (1, kw)), F.avg_pool2d(ph, (kh, 1))


def label_prior(lam: float, n_labels: int, eps: float = 1e-8) -> Tensor:
    """``-log p(label i)`` with mask value ``1 - i / (n_labels - 1)``: the binomial probability of keeping the own
    image in ``n_labels - 1 - i`` of ``n_labels - 1`` draws of weight ``lam`` (code: ``graphcut_multi``)."""
    k = n_labels - 1
    probs = [math.comb(k, i) * lam ** (k - i) * (1 - lam) ** i for i in range(n_labels)]
    return -torch.log(torch.tensor(probs, dtype=torch.float64) + eps)


def transport_plan(mask: Tensor, unary: Tensor, eps: float) -> Tensor:
    """The code's iterative block assignment (``mask_transport``): ``plan[b, i, j] = 1`` moves cell ``i`` to ``j``.

    ``mask`` (B, g, g) mask values (cells with ``mask > 0`` are shown), ``unary`` (B, g, g) normalised saliency.
    Cost ``eps C_ij - s_i z_j``; ``g`` rounds of: every row bids on its cheapest column; in each column the lowest
    value of ``plan * cost`` wins (first row on ties; rows that did not bid count as 0, so a column whose bids are
    all positive is won by nobody, as in the code); losers pay +1 on the column they bid on. Computed with index
    operations (one pass over the cost per round) instead of the code's dense one-hot products; same result.
    """
    b, g, _ = mask.shape
    n = g * g
    coords = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1).reshape(n, 2)
    dist = (coords[:, None, :] - coords[None, :, :]).pow(2).sum(-1).to(unary.device, unary.dtype) / max(g - 1, 1) ** 2
    z = (mask > 0).to(unary.dtype).reshape(b, 1, n)
    cost = eps * dist - unary.reshape(b, n, 1) * z
    rows = torch.arange(n, device=unary.device).expand(b, n)
    none = torch.full((b, n), n, device=unary.device, dtype=torch.long)
    for _ in range(g):
        bid, choice = cost.min(-1)  # (B, i): the column row i bids on (the first on ties), and its cost
        bidders = torch.zeros_like(bid).scatter_add_(-1, choice, torch.ones_like(bid))
        low = torch.full_like(bid, math.inf).scatter_reduce(-1, choice, bid, "amin")
        low = torch.where(bidders < n, low.clamp_max(0), low)  # rows that did not bid hold 0 in plan * cost
        first_bidder = none.scatter_reduce(-1, choice, torch.where(bid == low.gather(-1, choice), rows, none), "amin")
        # first row that did not bid on column j: row 0, unless row 0 bid on j (then the first row that bid elsewhere)
        other = torch.where(choice != choice[:, :1], rows, none).amin(-1, keepdim=True)
        first_idle = torch.zeros_like(none).scatter_(-1, choice[:, :1], other)
        winner = torch.where(low == 0, torch.minimum(first_bidder, first_idle), first_bidder)
        won = winner.gather(-1, choice) == rows
        cost.scatter_add_(-1, choice[..., None], (~won).to(cost.dtype)[..., None])
    return torch.zeros_like(cost).scatter_(-1, choice[..., None], won[..., None].to(cost.dtype))


def move_cells(x: Tensor, plan: Tensor, grid: int) -> Tensor:
    """Cells of ``x`` (B, C, H, W) on a ``grid x grid`` lattice moved by ``plan`` (B, n, n): cell ``j`` of the
    result is ``sum_i plan[i, j] cell_i`` (zero where no cell arrives)."""
    b, c, h, w = x.shape
    ch, cw = h // grid, w // grid
    cells = x.reshape(b, c, grid, ch, grid, cw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, grid * grid, ch, cw)
    moved = torch.einsum("bij,bcipq->bcjpq", plan.to(x.dtype), cells)
    return moved.reshape(b, c, grid, grid, ch, cw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


class PuzzleMix(Method):
    """PuzzleMix: saliency-guided graph-cut masks with block transport, labels by mask area (see module docstring).

    Args:
        alpha: Beta concentration of ``lam``, the prior's mixing weight (1.0).
        beta: label smoothness (1.2). gamma: data local smoothness (0.5). eta: prior weight (0.2).
        neigh_size: pixels pooled for the smoothness term (4). n_labels: mask values ``{0, 1/(n-1), ..., 1}`` (3).
        block_nums: candidate blocks per side (2, 4, 8, 16), one drawn per batch.
        transport: move salient cells (True). t_eps: transport cost weight (0.8). t_size: transport cell (4 px).
        mean, std: per-channel normalisation of the inputs, to measure the smoothness term in pixel units (set by
            the engine from the dataset; default: inputs already in [0, 1]).
    Use: ``training_loss(model, x, y)`` (the engine's path: one extra forward-backward for the saliency), or
    ``mixer(x, y, saliency)`` with a saliency map ``(B, H, W)`` of your own.
    """

    name = "puzzlemix"

    def __init__(self, alpha: float = 1.0, beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                 neigh_size: int = 4, n_labels: int = 3, block_nums: tuple[int, ...] = (2, 4, 8, 16),
                 transport: bool = True, t_eps: float = 0.8, t_size: int = 4, mean=None, std=None,
                 num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps)):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if int(n_labels) < 2:
            raise ValueError(f"n_labels must be >= 2 (mask values 0 .. 1), got {n_labels}")
        if int(neigh_size) < 1 or int(t_size) < 1:
            raise ValueError(f"neigh_size and t_size must be >= 1 pixel, got {neigh_size} and {t_size}")
        block_nums = (block_nums,) if isinstance(block_nums, int) else tuple(int(n) for n in block_nums)
        if not block_nums or min(block_nums) < 1:
            raise ValueError(f"block_nums must be block counts per side >= 1, got {block_nums}")
        if not isinstance(transport, bool):
            raise TypeError(f"transport must be true or false, got {transport!r}")
        self.beta, self.gamma, self.eta, self.t_eps = float(beta), float(gamma), float(eta), float(t_eps)
        self.neigh_size, self.n_labels, self.t_size = int(neigh_size), int(n_labels), int(t_size)
        self.block_nums, self.transport = block_nums, transport
        self.mean, self.std = mean, std
        self.last_mask: Tensor | None = None
        self.last_draw: tuple[float, int] | None = None  # (lam of the prior, blocks per side)

    def setup(self, context) -> None:
        """Take the dataset's normalisation from the set-up context (the smoothness term is measured in pixel
        units); :class:`~mixlab.methods.base.SetupContext`."""
        augment = context.augment
        if self.mean is None and augment is not None and getattr(augment, "mean", None) is not None:
            self.mean, self.std = tuple(augment.mean), tuple(augment.std)

    # ------------------------------------------------------------------------------------------ draws
    def sample(self, height: int, width: int, batch_size: int) -> tuple[Tensor, Tensor, int]:
        """``(lam, perm, n)``: the prior's weight (0-d), the partner permutation and the block count per side."""
        choices = [n for n in self.block_nums if height % n == 0 and width % n == 0]
        if not choices:
            raise ValueError(f"none of block_nums {self.block_nums} divides the {height}x{width} image; pass "
                             f"block_nums=... with divisors of the image side")
        lam = sample_beta(self.alpha, self.generator)
        n = choices[int(torch.randint(len(choices), (1,), generator=self.generator))]
        return lam, torch.randperm(batch_size, generator=self.generator), n

    # ------------------------------------------------------------------------------------------ mask
    def mask_costs(self, x: Tensor, saliency: Tensor, perm: Tensor, lam: float, n: int):
        """Integer energy of the mask labelling: unary ``(B, n, n, n_labels)`` (label ``i`` = mask value
        ``1 - i / (n_labels - 1)``) and edge weights ``wv`` (B, n-1, n), ``wh`` (B, n, n-1), as graphcut takes them.
        Also returns the normalised block saliency ``(B, n, n)``."""
        b, _, h, w = x.shape
        bh, bw = h // n, w // n
        s = block_saliency(saliency.float(), (n, n))  # own, sums to one per sample
        s2 = s[perm]
        nh, nw = largest_divisor(bh, self.neigh_size), largest_divisor(bw, self.neigh_size)
        pooled = F.avg_pool2d(_pixels(x.detach().float(), self.mean, self.std), (nh, nw))
        pooled2 = pooled[perm]
        cells = (bh // nh, bw // nw)
        beta = self.beta / n / 16  # the code's normalisation of beta
        # psi[a][c]: border cost with source a above / left and c below / right (0: partner, 1: own)
        pv, ph = {}, {}
        for a, top in ((0, pooled2), (1, pooled)):
            for c, bottom in ((0, pooled2), (1, pooled)):
                v, hz = border_penalty(top, bottom, cells)
                pv[a, c], ph[a, c] = beta * self.gamma * v, beta * self.gamma * hz
        cost_own, cost_partner = s2.clone(), s.clone()  # saliency lost by showing own / partner
        for psi, first, second in ((pv, (slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                                   (ph, (slice(None), slice(None), slice(None, -1)),
                                    (slice(None), slice(None), slice(1, None)))):
            cost_own[first] += (psi[1, 0] + psi[1, 1]) / 2  # as first node of the edge
            cost_partner[first] += (psi[0, 1] + psi[0, 0]) / 2
            cost_own[second] += (psi[0, 1] + psi[1, 1]) / 2  # as second node
            cost_partner[second] += (psi[1, 0] + psi[0, 0]) / 2
        wv = (pv[1, 0] + pv[0, 1] - pv[1, 1] - pv[0, 0]) / 2 + beta
        wh = (ph[1, 0] + ph[0, 1] - ph[1, 1] - ph[0, 0]) / 2 + beta
        k = self.n_labels - 1
        m = 1 - torch.arange(self.n_labels, device=x.device, dtype=torch.float64) / k  # mask value of label i
        prior = self.eta * label_prior(lam, self.n_labels).to(x.device) / (n * n)
        unary = m * cost_own[..., None].double() + (1 - m) * cost_partner[..., None].double() + prior
        large = 1000.0 * n * n  # the code's integer scale; the label costs (i - j)^2 / k^2 become (i - j)^2
        unary = (large * k * k * unary).long()
        wv, wh = ((large * t.double()).clamp_min(0).long() for t in (wv, wh))  # < 0 only if gamma > 1
        return unary, wv, wh, s

    def masks(self, x: Tensor, saliency: Tensor, perm: Tensor, lam: float, n: int) -> tuple[Tensor, Tensor]:
        """Optimal masks ``(B, n, n)`` (values in ``{0, 1/(n_labels-1), ..., 1}``, on ``x``'s device) and the
        normalised block saliency."""
        unary, wv, wh, s = self.mask_costs(x, saliency, perm, lam, n)
        labels = graphcut.solve_convex(unary.cpu(), wv.cpu(), wh.cpu()).to(x.device)
        return 1 - labels.to(x.dtype) / (self.n_labels - 1), s

    # ------------------------------------------------------------------------------------------ mixing
    def mix_with_saliency(self, x: Tensor, t: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """Mix images ``x`` (B, C, H, W) and soft targets ``t`` (B, C) given a saliency map ``(B, H, W)``."""
        check_images(self.name, x)
        b, _, h, w = x.shape
        if tuple(saliency.shape) != (b, h, w):
            raise ValueError(f"saliency must be (B, H, W) = {(b, h, w)}, got {tuple(saliency.shape)}")
        lam, perm, n = self.sample(h, w, b)
        self.last_draw = (float(lam), n)
        perm_d = perm.to(x.device, non_blocking=True)
        mask, s = self.masks(x, saliency.to(x.device), perm_d, float(lam), n)
        x1, x2 = x, x[perm_d]
        if self.transport:
            cell = largest_divisor(math.gcd(h // n, w // n), self.t_size)
            grid = min(h // cell, w // cell)
            if h != w or grid > MAX_TRANSPORT_GRID:
                cell, grid = h // n, n
            if grid != n:
                mask = F.interpolate(mask[:, None], size=(grid, grid), mode="nearest")[:, 0]
                s = block_saliency(saliency.to(x.device).float(), (grid, grid))
            if grid > 1:
                x1 = move_cells(x1, transport_plan(mask, s, self.t_eps), grid)
                x2 = move_cells(x2, transport_plan(1 - mask, s[perm_d], self.t_eps), grid)
        mask = F.interpolate(mask[:, None], size=(h, w), mode="nearest")
        ratio = mask.mean((1, 2, 3))
        self.last = MixInfo(ratio.detach(), perm)
        self.last_mask = mask.detach()
        return mask * x1 + (1 - mask) * x2, interpolate(t, t[perm_d], ratio.to(t.dtype))

    def forward(self, x: Tensor, y: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """``x_mix, y_mix = mixer(x, y, saliency)``: integer labels or soft targets ``y``; new tensors."""
        return self.mix_with_saliency(x, self.targets(x, y), saliency)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        saliency, _ = input_saliency(model, x, targets, loss_fn, eval_mode=True)
        x_mix, t_mix = self.mix_with_saliency(x, targets, saliency)
        return loss_fn(model(x_mix), t_mix)

    # ------------------------------------------------------------------------------------------ picture
    def show(self, x01: Tensor, targets: Tensor, classes, path, context):
        """Rows of (x, saliency, partner, its saliency, mask, mixed) with the mixed label; saliency from
        ``context['model']`` or a small cnn11 fitted for a few steps (:func:`picture_model`)."""
        from ..viz import image_table, label_text

        model = picture_model(x01, targets, context, seed=int(torch.randint(2 ** 31, (1,), generator=self.generator)))
        saliency, _ = input_saliency(model, x01, targets, soft_cross_entropy, eval_mode=True)
        with torch.no_grad():
            x_mix, t_mix = self.mix_with_saliency(x01, targets, saliency)
        perm = self.last.index
        shown = saliency / saliency.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        rows = min(6, x01.shape[0])
        cols = [("x", x01[:rows]), ("saliency x", shown[:rows]), ("partner", x01[perm][:rows]),
                ("saliency partner", shown[perm][:rows]), ("mask (x)", self.last_mask[:rows, 0]),
                ("mixed", x_mix[:rows].clamp(0, 1))]
        labels = [label_text(t_mix[i], classes) for i in range(rows)]
        lam, n = self.last_draw
        return image_table(cols, path, row_labels=labels, maps=("mask (x)",),
                           title=f"puzzlemix ({n}x{n} blocks, prior lam {lam:.2f}; saliency of a briefly fitted cnn11)")

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, eta={self.eta}, n_labels={self.n_labels}, "
                f"block_nums={self.block_nums}, transport={self.transport}, t_eps={self.t_eps}, t_size={self.t_size}")
