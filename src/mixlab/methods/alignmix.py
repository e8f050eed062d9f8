"""AlignMixup (Venkataramanan, Kijak, Amsaleg, Avrithis. CVPR 2022).

Per batch, with probability ``p_input`` (1/2) plain input mixup, otherwise *aligned* mixup of the last feature
maps ``A, A'`` (``c x r``, ``r = h w`` positions; ``A' = A[perm]``):

* cost ``M_ij = |a_i - a'_j|^2`` (not normalised), plan ``P* = argmin_{P in U_r} <P, M> - eps H(P)`` by
  log-domain Sinkhorn (eps 0.1, at most 100 iterations, stop when the batch-mean change of the dual is below
  0.1, as the authors' code), computed without gradient; assignment ``R = r P*`` (rows sum to one);
* with probability 1/2 ``A~ = A' R^T`` and ``mix = lam A + (1 - lam) A~`` (``A`` keeps its geometry, takes
  ``A'``'s appearance), else ``A~' = A R`` and ``mix = lam A~' + (1 - lam) A'``;
* targets ``lam y + (1 - lam) y[perm]`` in both cases; ``lam ~ Beta(2, 2)`` once per batch.

Choices the paper leaves open (authors' code): the aligned direction is drawn per batch; the input-mixup
branch uses the same ``lam`` and ``perm`` draw; "last feature map" is the output of the model's last stage
(for PreActResNet-18 after the final BN-ReLU). The convergence check runs every ``check_every`` iterations
(the authors check every iteration; checking less often can only run a few more iterations).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..ot import sinkhorn
from .base import Method, MixInfo, check_alpha, interpolate, sample_beta, soft_cross_entropy


def align(a: Tensor, a2: Tensor, eps: float = 0.1, max_iter: int = 100, tol: float = 0.1, check_every: int = 10):
    """Assignment matrices ``R = r P*`` (B, r, r) between feature maps ``a, a2`` (B, C, h, w); no gradient."""
    with torch.no_grad():
        x = a.detach().flatten(2).transpose(1, 2).float()
        y = a2.detach().flatten(2).transpose(1, 2).float()
        plan = sinkhorn(x, y, eps, max_iter=max_iter, tol=tol, check_every=check_every)
    return plan * x.shape[1]


class AlignMixup(Method):
    """AlignMixup: input mixup or aligned feature mixup at the last feature map, one of the two per batch.

    Args:
        alpha: Beta concentration for ``lam`` (2.0).
        p_input: probability of the input-mixup branch (0.5).
        eps, max_iter, tol, check_every: Sinkhorn settings (0.1, 100, 0.1, 10).
    Works on every :class:`mixlab.models.StagedNet`.
    """

    name = "alignmix"
    needs_stages = True

    def __init__(self, alpha: float = 2.0, p_input: float = 0.5, eps: float = 0.1, max_iter: int = 100,
                 tol: float = 0.1, check_every: int = 10, num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        if not 0.0 <= p_input <= 1.0:
            raise ValueError(f"p_input must be a probability in [0, 1], got {p_input}")
        self.p_input, self.eps, self.max_iter, self.tol, self.check_every = p_input, eps, max_iter, tol, check_every
        self.last_plan: Tensor | None = None
        self.last_direction: int | None = None

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor, bool, int]:
        """``(lam, perm, input_branch, direction)`` drawn on CPU."""
        lam = sample_beta(self.alpha, self.generator)
        perm = torch.randperm(batch_size, generator=self.generator)
        coins = torch.rand(2, generator=self.generator)
        return lam, perm, bool(coins[0] < self.p_input), int(coins[1] < 0.5)

    def aligned_mix(self, a: Tensor, perm: Tensor, lam: Tensor, direction: int) -> Tensor:
        """Mix feature maps ``a`` (B, C, h, w) with ``a[perm]`` after alignment (direction 1: ``A~ = A' R^T``)."""
        a2 = a[perm]
        r = align(a, a2, self.eps, self.max_iter, self.tol, self.check_every).to(a.dtype)
        self.last_plan = r.detach()
        pa, pa2 = a.flatten(2).transpose(1, 2), a2.flatten(2).transpose(1, 2)  # (B, r, C) points
        if direction == 1:
            mixed = interpolate(pa, torch.bmm(r, pa2), lam)  # column i of A~ = sum_j R_ij a'_j
        else:
            mixed = interpolate(torch.bmm(r.transpose(1, 2), pa), pa2, lam)  # column j of A~' = sum_i a_i R_ij
        return mixed.transpose(1, 2).reshape(a.shape)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        lam, perm, input_branch, direction = self.sample(x.shape[0])
        self.last = MixInfo(lam, perm)
        self.last_direction = None if input_branch else direction
        perm_d = perm.to(x.device, non_blocking=True)
        t_mix = interpolate(targets, targets[perm_d], lam)
        if input_branch:
            return loss_fn(model(interpolate(x, x[perm_d], lam)), t_mix)
        fmap = model.forward_features(x)
        mixed = self.aligned_mix(fmap, perm_d, lam.to(fmap.device), direction)
        return loss_fn(model.head(model.pool(mixed)), t_mix)

    def show(self, x01, targets, classes, path, context):
        """Transport plan between two images' last-feature-map positions (a random-init model unless
        ``context['model']`` is given): the images with lines to each position's best match, and ``R``."""
        from ..viz import alignment_figure

        model = context.get("model")
        if model is None:  # untrained: batch statistics in BN give features of a usable scale
            model = _default_model(x01, len(classes), self.generator).train()
        else:
            model.eval()
        with torch.no_grad():
            fmap = model.forward_features(x01)
        r = align(fmap[:1], fmap[1:2], self.eps, self.max_iter, self.tol, self.check_every)[0]
        return alignment_figure(x01[0], x01[1], r, fmap.shape[-2:], path,
                                title=f"AlignMixup: R = r P* between feature positions (eps={self.eps})")


def _default_model(x: Tensor, num_classes: int, generator: torch.Generator):
    from ..models import MODELS

    with torch.random.fork_rng():  # seed the picture's untrained network without touching the caller's RNG
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=generator)))
        return MODELS.create("preactresnet18", num_classes=num_classes, in_channels=x.shape[1], width=16)
