"""Co-Mixup (Kim, Choo, Jeong, Song. *Co-Mixup: Saliency Guided Joint Mixup with Supermodular Diversity.* ICLR 2021).

Each output of a partition of ``m`` inputs (``m_part`` 20) is a labelling of an ``n x n`` block grid (``block_num`` 4)
by the inputs, chosen jointly for all ``m`` outputs by the paper's objective, for one partition:

    sum_j [ -<s_j, z_j> ]  (saliency kept, block saliency normalised to sum one)  - eta log p(input)  (Dirichlet prior)
    + beta sum_{neighbour blocks} [labels differ]                                   (smoothness, Potts)
    + gamma sum_{j != j'} <c_j, A c_j'>  over input counts c_j of each output, above a threshold tau (diversity)

with ``A = (1 - omega) I + omega A_dist`` (compatibility: distance between the inputs' saliency peaks). Solver of the
authors' code (snu-mllab/Co-Mixup, ``match.py``): random initial labels, then ``m_niter`` (4) rounds over the
outputs; each output is re-labelled with the others fixed, the supermodular term replaced by its modular bound
``2 gamma [A c_others > tau] A c_others`` per input (hard threshold), by a multi-label graph cut (alpha-beta swap
moves from an all-zero labelling, as pyGCO's ``cut_grid_graph``; :func:`mixlab.ot.graphcut.solve_swap`). From the
second round an output that used 2 inputs may also use their half-half mix (one extra label), one that used 3 or
more its top three inputs' three half-half mixes (cost: mean of the two, minus 5e-4; label cost 1/4 to each
component, 1 otherwise). After the second-to-last round, outputs with identical input sets get a cost ``gamma`` on
one of their inputs each (``set_resolve``). Stop early when the objective changes by less than 1e-6 (relative).
Mixed image: ``x~ = sum_j M_j x_j`` (block masks upsampled); label by mask area ``y~ = sum_j mean(M_j) y_j``.

Defaults (README's CIFAR command): block_num 4, m_part 20, beta 0.32, gamma 1.0, tau (thres) 0.83, eta 0.05,
Dirichlet alpha 2.0, omega 0.001, m_niter 4, set_resolve, and the clean-input loss with clean_lam 1: the saliency
forward runs in train mode and its loss is kept. The authors add ``2 clean_lam / C`` times its cross-entropy to a
BCE loss averaged over the ``C`` classes (about ``CE / C``), so here ``loss = CE(mixed) + 2 clean_lam CE(clean)``.

Simplifications, said plainly: costs are scaled by 1e5 and rounded to integers (pyGCO converts float costs to
integers too, with its own scale); among equal input counts the top three are the lowest indices (``topk`` leaves
ties unspecified); partitions of equal size are solved together (their outputs in lock step, each partition
stopping on its own test) and a smaller last partition on its own; the compatibility window is ``min(8, H, W)``
pixels (8 in the code, made for 32 px), and an all-zero distance matrix leaves ``A = (1 - omega) I``.

What stays sequential: the outputs of a partition (each solve depends on the others: the algorithm's block
coordinate descent) and the swap moves inside each cut (on the CPU, as pyGCO); partitions run together.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ot import graphcut
from .base import Method, MixInfo, check_alpha, sample_dirichlet, soft_cross_entropy
from .masks import check_images
from .saliency import input_saliency, picture_model

SCALE = 1e5  # float costs -> integers for the graph cut
PAIR_HALF = 0.25  # label cost between a half-half label and either of its two inputs
SOFT = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)  # top-3 pairs


def compatibility(saliency: Tensor, window: int = 8) -> Tensor:
    """``A_dist`` (B, B): l1 distance between the inputs' most salient ``window x window`` windows (top-left
    corners of the best window of the saliency averaged with stride 1, as the code's ``distance(.., 'l1')``)."""
    _, h, w = saliency.shape
    k = max(1, min(window, h, w))
    pooled = F.avg_pool2d(saliency[:, None].float(), k, stride=1)[:, 0]
    idx = pooled.flatten(1).argmax(1)
    pos = torch.stack([idx // pooled.shape[-1], idx % pooled.shape[-1]], 1).float()
    return (pos[:, None, :] - pos[None, :, :]).abs().sum(-1)


def objective(cost: Tensor, onehot: Tensor, beta: float, gamma: float) -> Tensor:
    """The code's ``obj_fn`` per partition ``(P,)``: unary + beta/2 squared label differences + gamma
    ``sum_{j != j'} <c_j, c_j'>``; ``cost`` (P, m_in, n, n), ``onehot`` (P, m_out, n, n, m_in)."""
    unary = (cost.permute(0, 2, 3, 1)[:, None] * onehot).sum((1, 2, 3, 4))
    smooth = ((onehot[:, :, :-1] - onehot[:, :, 1:]) ** 2).sum((1, 2, 3, 4)) + \
        ((onehot[:, :, :, :-1] - onehot[:, :, :, 1:]) ** 2).sum((1, 2, 3, 4))
    counts = onehot.sum((2, 3))  # (P, m_out, m_in)
    diversity = counts.sum(1).pow(2).sum(1) - counts.pow(2).sum((1, 2))
    return unary + beta / 2 * smooth + gamma * diversity


def resolve_sets(onehot: Tensor) -> Tensor:
    """The code's ``resolve_label``: for outputs ``i < i'`` using the same set of (two or more) inputs, a cost of 1
    on the first input for ``i`` and on the second for ``i'``. Returns (P, m_out, m_in)."""
    used = onehot.sum((2, 3)) > 0  # (P, m_out, m_in)
    p, m, m_in = used.shape
    same = (used[:, :, None, :] == used[:, None, :, :]).all(-1).triu(1)  # (P, i, i')
    order = torch.where(used, torch.arange(m_in, device=used.device), m_in).sort(-1).values  # used inputs first
    first, second = order[..., 0], order[..., 1]  # (P, m_out); m_in where missing
    several = used.sum(-1) > 1
    hit_first = (same & several[:, :, None]).any(2)  # output i has a later twin
    hit_second = (same & several[:, :, None]).any(1)  # output i' has an earlier twin
    add = torch.zeros(p, m, m_in + 1, dtype=torch.float64, device=used.device)
    add.scatter_(2, torch.where(hit_first, first, m_in)[..., None], 1.0)
    add.scatter_(2, torch.where(hit_second, second, m_in)[..., None], 1.0)
    return add[..., :m_in]


class CoMixup(Method):
    """Co-Mixup: each output mixes blocks of several inputs of its partition, chosen jointly for all outputs.

    Args:
        alpha: Dirichlet concentration of the input prior (2.0). block_num: blocks per side (4; -1: drawn from
            2, 4, 8, 16 per batch among the divisors of the image side). m_part: partition size (20).
        beta: smoothness (0.32). gamma: diversity (1.0). thres: tau, the share of the grid above which an input's
            use by the other outputs is penalised (0.83). thres_type: "hard" (code's default) or "soft".
        eta: prior weight (0.05). omega: compatibility weight (0.001). niter: rounds over the outputs (4).
        set_resolve: separate outputs with identical input sets (True). clean_lam: weight of the clean-input loss
            (1.0; the loss adds ``2 clean_lam CE(clean)``, see the module docstring; 0: eval-mode saliency only).
    Use: ``training_loss(model, x, y)`` (one extra forward-backward for the saliency), or ``mixer(x, y, saliency)``.
    """

    name = "comixup"

    def __init__(self, alpha: float = 2.0, block_num: int = 4, m_part: int = 20, beta: float = 0.32,
                 gamma: float = 1.0, thres: float = 0.83, thres_type: str = "hard", eta: float = 0.05,
                 omega: float = 0.001, niter: int = 4, set_resolve: bool = True, clean_lam: float = 1.0,
                 num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        if int(block_num) != -1 and int(block_num) < 1:
            raise ValueError(f"block_num must be >= 1 blocks per side, or -1 to draw 2, 4, 8 or 16; got {block_num}")
        if int(m_part) < 1 or int(niter) < 1:
            raise ValueError(f"m_part and niter must be >= 1, got {m_part} and {niter}")
        if thres_type not in ("hard", "soft"):
            raise ValueError(f"thres_type must be 'hard' or 'soft', got {thres_type!r}")
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("omega", omega),
                            ("clean_lam", clean_lam), ("thres", thres)):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not isinstance(set_resolve, bool):
            raise TypeError(f"set_resolve must be true or false, got {set_resolve!r}")
        self.block_num, self.m_part, self.niter = int(block_num), int(m_part), int(niter)
        self.beta, self.gamma, self.thres, self.thres_type = float(beta), float(gamma), float(thres), thres_type
        self.eta, self.omega, self.set_resolve, self.clean_lam = float(eta), float(omega), set_resolve, float(clean_lam)
        self.last_masks: Tensor | None = None  # (B, B) area of each input in each output
        self.last_labels: Tensor | None = None  # (B, n, n, B) block weights of each input in each output

    # ------------------------------------------------------------------------------------------ labelling
    def blocks(self, height: int, width: int) -> int:
        if self.block_num != -1:
            if height % self.block_num or width % self.block_num:
                raise ValueError(f"block_num={self.block_num} does not divide the {height}x{width} image")
            return self.block_num
        choices = [n for n in (2, 4, 8, 16) if height % n == 0 and width % n == 0]
        if not choices:
            raise ValueError(f"no block count of 2, 4, 8, 16 divides the {height}x{width} image; set block_num")
        return choices[int(torch.randint(len(choices), (1,), generator=self.generator))]

    def solve_output(self, cp: Tensor, count: Tensor, extend: bool) -> Tensor:
        """One output of every partition: block weights ``(P, n, n, m)`` minimising ``cp`` (P, m, n, n) plus the Potts
        smoothness; with ``extend``, also the half-half labels of the inputs it used before (``count`` (P, m))."""
        p, m, n, _ = cp.shape
        used = (count > 0).sum(1) if extend else torch.zeros(p, dtype=torch.long)
        top = torch.sort(count, dim=1, descending=True, stable=True).indices[:, :3]  # lowest index on ties
        top = torch.sort(top, dim=1).values
        share = torch.zeros(p, 3, m, dtype=torch.float64)  # input weights of the (up to) three extra labels
        if m >= 3:
            share = torch.where((used >= 3)[:, None, None], SOFT @ F.one_hot(top, m).double(), share)
        share[:, 0] = torch.where((used == 2)[:, None], 0.5 * (count > 0).double(), share[:, 0])
        valid = torch.arange(3) < torch.where(used >= 3, 3, torch.where(used == 2, 1, 0))[:, None]  # (P, 3)
        n_labels = m + 3
        unary = torch.empty(p, n, n, n_labels, dtype=torch.float64)
        unary[..., :m] = cp.permute(0, 2, 3, 1)
        unary[..., m:] = torch.einsum("pem,pmhw->phwe", share, cp) - 5e-4
        big = unary[..., :m].abs().amax((1, 2, 3)) * n * n * 4 + 1.0  # an unused extra label is never worth it
        unary[..., m:] = torch.where(valid[:, None, None, :], unary[..., m:], big[:, None, None, None])
        vl = torch.full((p, n_labels, n_labels), 4, dtype=torch.long)  # Potts x4, so that the 1/4 costs are 1
        vl[:, m:, :m] = torch.where(share > 0, round(4 * PAIR_HALF), 4)
        vl[:, :m, m:] = vl[:, m:, :m].transpose(1, 2)
        vl.diagonal(dim1=1, dim2=2).zero_()
        w = round(SCALE * self.beta / (n * n) / 4)  # beta / n^2 per edge, label costs x4
        labels = graphcut.solve_swap((unary * SCALE).round().long(), vl, torch.full((p, n - 1, n), w),
                                     torch.full((p, n, n - 1), w), torch.zeros(p, n, n, dtype=torch.long))
        plain = F.one_hot(labels.clamp_max(m - 1), m).double() * (labels < m)[..., None]
        extra = share.gather(1, (labels - m).clamp(0, 2).reshape(p, -1, 1).expand(-1, -1, m)).reshape(p, n, n, m)
        return plain + extra * (labels >= m)[..., None]

    def labellings(self, cost: Tensor, a: Tensor) -> Tensor:
        """The solver of ``match.py`` (``get_onehot_matrix``) for ``P`` partitions of ``m`` inputs at once.

        ``cost`` (P, m, n, n): minus the normalised block saliency; ``a`` (P, m, m) compatibility. Returns the
        block weights ``(P, m_out, n, n, m_in)`` (each block's weights sum to one)."""
        p, m, n, _ = cost.shape
        size = n * n
        thres, beta, gamma, eta = self.thres * size, self.beta / size, self.gamma / size, self.eta / size
        prior = sample_dirichlet(torch.full((p, m), self.alpha), self.generator).double()
        cost = cost.double() - eta * torch.log(prior + 1e-8)[..., None, None]
        init = torch.randint(m, (p, m, n, n), generator=self.generator)
        onehot = F.one_hot(init, m).double()
        penalty = onehot.sum((1, 2, 3))  # (P, m_in): use of each input by all outputs
        loss_prev = objective(cost, onehot, beta, gamma)
        active = torch.ones(p, dtype=torch.bool)
        add_cost = None
        for it in range(self.niter):
            for i in range(m):
                count = onehot[:, i].sum((1, 2))
                others = penalty - count
                ap = (a.double() @ others[..., None])[..., 0]
                over = ap > thres
                modular = 2 * gamma * over * (ap if self.thres_type == "hard" else ap - thres)
                cp = cost + modular[..., None, None]
                if add_cost is not None:
                    cp = cp + gamma * add_cost[:, i, :, None, None]
                new = self.solve_output(cp, count, it > 0)
                onehot[:, i] = torch.where(active[:, None, None, None], new, onehot[:, i])
                penalty = others + onehot[:, i].sum((1, 2))
            if it == self.niter - 2 and self.set_resolve:
                add_cost = resolve_sets(onehot)
            loss = objective(cost, onehot, beta, gamma)
            active &= (loss_prev - loss).abs() / loss.abs() >= 1e-6
            loss_prev = loss
            if not bool(active.any()):
                break
        return onehot

    # ------------------------------------------------------------------------------------------ mixing
    def mix_with_saliency(self, x: Tensor, t: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """Mix images ``x`` (B, C, H, W) and targets ``t`` (B, C) given saliency ``(B, H, W)``: output ``i`` of
        partition ``k`` mixes the inputs of that partition."""
        check_images(self.name, x)
        b, _, h, w = x.shape
        if tuple(saliency.shape) != (b, h, w):
            raise ValueError(f"saliency must be (B, H, W) = {(b, h, w)}, got {tuple(saliency.shape)}")
        n = self.blocks(h, w)
        sal = saliency.detach().float().cpu()
        pooled = F.avg_pool2d(sal[:, None], (h // n, w // n))[:, 0]
        total = pooled.flatten(1).sum(1)[:, None, None]
        cost = -torch.where(total > 0, pooled / total.clamp_min(1e-30), torch.full_like(pooled, 1.0 / (n * n)))
        a_dist = compatibility(sal)
        weights = torch.zeros(b, n, n, b, dtype=torch.float64)  # output, block, input (block diagonal)
        starts = list(range(0, b, self.m_part))
        for size in sorted({min(self.m_part, b - s) for s in starts}, reverse=True):
            group = [s for s in starts if min(self.m_part, b - s) == size]
            idx = torch.tensor(group)[:, None] + torch.arange(size)  # (P, m)
            part = a_dist[idx[:, :, None], idx[:, None, :]]
            total_d = part.sum((1, 2), keepdim=True)
            part = torch.where(total_d > 0, part / total_d.clamp_min(1e-30) * size, torch.zeros_like(part))
            a = (1 - self.omega) * torch.eye(size) + self.omega * part
            onehot = self.labellings(cost[idx], a)  # (P, m, n, n, m)
            for k, s in enumerate(group):
                weights[s:s + size, :, :, s:s + size] = onehot[k]
        area = weights.mean((1, 2))  # (B out, B in), rows sum to one
        self.last_labels, self.last_masks = weights, area
        dev = x.device
        masks = F.interpolate(weights.permute(0, 3, 1, 2).to(dev, x.dtype), size=(h, w), mode="nearest")  # (B, B, H, W)
        x_mix = torch.einsum("ojhw,jchw->ochw", masks, x)
        t_mix = area.to(dev, t.dtype) @ t
        self.last = MixInfo(area.diagonal().clone(), area.argmax(1))
        return x_mix, t_mix

    def forward(self, x: Tensor, y: Tensor, saliency: Tensor) -> tuple[Tensor, Tensor]:
        """``x_mix, y_mix = mixer(x, y, saliency)``: integer labels or soft targets ``y``; new tensors."""
        return self.mix_with_saliency(x, self.targets(x, y), saliency)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        keep = self.clean_lam > 0
        saliency, clean = input_saliency(model, x, targets, loss_fn, eval_mode=not keep, keep_loss=keep)
        x_mix, t_mix = self.mix_with_saliency(x, targets, saliency)
        loss = loss_fn(model(x_mix), t_mix)
        return loss + 2 * self.clean_lam * clean if keep else loss

    # ------------------------------------------------------------------------------------------ picture
    def show(self, x01: Tensor, targets: Tensor, classes, path, context):
        """Rows: the mixed output, the input each block comes from (colour), and the inputs it uses most."""
        from ..viz import image_table, label_text

        model = picture_model(x01, targets, context, seed=int(torch.randint(2 ** 31, (1,), generator=self.generator)))
        saliency, _ = input_saliency(model, x01, targets, soft_cross_entropy, eval_mode=True)
        with torch.no_grad():
            x_mix, t_mix = self.mix_with_saliency(x01, targets, saliency)
        rows = min(6, x01.shape[0])
        area = self.last_masks[:rows]
        top = area.argsort(1, descending=True)[:, :3]
        n = self.last_labels.shape[1]
        source = self.last_labels[:rows].argmax(-1).float()  # (rows, n, n): input index per block
        uniq = torch.unique(source, return_inverse=True)[1].float()
        source_map = F.interpolate((uniq / max(1.0, float(uniq.max())))[:, None], size=x01.shape[-2:],
                                   mode="nearest")[:, 0]
        cols = [("mixed", x_mix[:rows].clamp(0, 1)), (f"source per block ({n}x{n})", source_map)]
        for j in range(3):
            cols.append((f"input {j + 1} (by area)", x01[top[:, j]]))
        labels = [f"{label_text(t_mix[i], classes, 3)}" for i in range(rows)]
        return image_table(cols, path, row_labels=labels, title=f"comixup (m_part={self.m_part}, block_num={n}; "
                                                                 f"saliency of a briefly fitted cnn11)")

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, block_num={self.block_num}, m_part={self.m_part}, beta={self.beta}, "
                f"gamma={self.gamma}, thres={self.thres}, eta={self.eta}, omega={self.omega}, niter={self.niter}, "
                f"clean_lam={self.clean_lam}")
