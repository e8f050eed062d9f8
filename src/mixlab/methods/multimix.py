"""MultiMix and Dense MultiMix (Venkataramanan, Kijak, Amsaleg, Avrithis. NeurIPS 2023).

MultiMix interpolates at the embedding (after pooling, before the classifier). From the ``b`` embeddings
``Z`` (``d x b``) and targets ``Y`` (``c x b``) of a batch it draws ``n`` weight vectors
``lambda_k ~ Dir(alpha)`` over all ``m = b`` examples, ``Lambda = (lambda_1 ... lambda_n)`` (``b x n``), and
trains on ``Z~ = Z Lambda`` (eq. 3) with targets ``Y~ = Y Lambda`` (eq. 4).

Dense MultiMix keeps the ``r`` positions of the last feature map: per position ``j`` it draws ``Lambda^j``,
re-weights by the attention ``a^j`` of the examples, ``M^j = diag(a^j) Lambda^j`` (eq. 5), normalises each
column to sum one, ``M^j <- M^j diag(1^T M^j)^-1`` (eq. 6), mixes ``Z~^j = Z^j M^j`` (eq. 7) and
``Y~^j = Y M^j`` (eq. 8), and gives every position of every mixed example its own loss.

Choices the paper leaves open (ours, stated here):

* ``mix_at="embedding"``: after ``model.pool`` (for cnn11, whose ``pool`` is flatten + two hidden FC layers,
  that is the 256-d input of the last linear layer; ``"feature-map"`` mixes before the FC layers instead);
* loss = ``clean_weight`` x loss on the ``b`` clean examples + mean loss over the ``n`` mixed ones
  (``clean_weight=1``; 0 trains on mixed examples only), or with ``mean_loss=True`` that sum divided by
  ``1 + clean_weight``, which keeps ERM's gradient scale (the sum doubles it, as a doubled learning rate
  would); ``alpha = 1``, ``n = 1000``, ``m = b`` (each tuple may instead take a random subset of ``m``
  examples of the batch);
* where what follows the mixing point is affine (a linear head: after ``pool`` for ``mix_at="embedding"``, after
  GAP for ``"feature-map"`` on GAP + linear models), the batch's logits are mixed with ``Lambda`` instead of
  classifying ``n`` mixed embeddings: the same thing, since ``Lambda``'s columns sum to one, at a fraction of the
  cost for large ``n`` (the loss equal up to float rounding);
* attention ``a_i`` = CAM of example ``i`` for its own class (argmax of its target), ReLU'd and normalised to
  sum one over positions, detached (a weighting, not a learnt path); a position where every example has zero
  attention falls back to ``Lambda^j``;
* models with a GAP + linear head use the per-position classifier. Mixing logits with the column-stochastic
  ``M^j`` equals classifying the mixed features (the head is affine), so the mixing is done on logits;
* models without one (``gap_linear_head = False``, e.g. cnn11, whose head is flatten + FC layers): the dense
  mixed feature maps (each position mixed with its own ``M^j``) go through the model's own head as a whole,
  and the target is the mean of the position targets ``mean_j Y~^j``. Cross-entropy is linear in the target,
  so this is the per-position loss with one shared prediction per mixed map. Attention comes from Grad-CAM.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed import gather_global
from .base import Method, check_alpha, soft_cross_entropy


def dirichlet_weights(alpha: float, m: int, n: int, generator: torch.Generator, batch: tuple[int, ...] = (),
                      support: int | None = None) -> Tensor:
    """``(*batch, m, n)`` matrices whose columns are drawn from the symmetric ``Dir(alpha)`` on ``m`` points.

    ``support``: each column interpolates a random subset of that many of the ``m`` points (``Dir(alpha)`` on
    the subset, zero elsewhere; the same subset for a column across ``batch``, e.g. across the positions of
    Dense MultiMix): the paper's tuple length, from 2 (pairs) to ``m`` (the whole batch, default).
    """
    g = torch._standard_gamma(torch.full((*batch, n, m), float(alpha)), generator=generator)
    if support is not None and support < m:
        keys = torch.rand(n, m, generator=generator)
        g = g * (keys >= keys.topk(support, dim=-1).values[..., -1:])  # the `support` largest keys per column
    return (g / g.sum(-1, keepdim=True)).transpose(-2, -1)


class MultiMix(Method):
    """MultiMix: ``n`` Dirichlet-weighted mixtures of the whole batch's embeddings per step.

    Args:
        n: mixed embeddings per batch (1000).
        alpha: Dirichlet concentration (1.0).
        m: examples per interpolation tuple (default ``None``: the whole batch, ``m = b``; 2 gives pairs).
        clean_weight: weight of the clean-example loss (1.0; see the module docstring).
        mean_loss: divide the summed loss by ``1 + clean_weight`` (default False: the sum).
        mix_at: ``"embedding"`` (the paper: the pooled embedding ``model.pool(...)`` right before ``model.head``)
            or ``"feature-map"``: the last feature map, before ``model.pool``. The two are the same for a GAP
            pooling (linear); they differ for models whose ``pool`` holds hidden layers (cnn11's FC layers), where
            ``"feature-map"`` interpolates before those layers, as when they are counted as the classifier.
        global_batch: under torchrun, interpolate over the *global* batch: embeddings and targets of every rank
            are gathered (:func:`mixlab.distributed.gather_global`), each rank draws its own ``n`` mixtures
            over all ``m = world x b`` examples, and gradients flow back to each rank's own examples. A no-op in
            one process.
    """

    name = "multimix"
    needs_stages = True
    revision = 1  # 1: with an affine classifier after the mixing point, logits are mixed (same loss up to rounding)

    def __init__(self, n: int = 1000, alpha: float = 1.0, clean_weight: float = 1.0, mix_at: str = "embedding",
                 m: int | None = None, global_batch: bool = False, mean_loss: bool = False, num_classes=None,
                 seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        if m is not None and int(m) < 2:
            raise ValueError(f"m (examples per interpolation) must be >= 2 or None (the whole batch), got {m}")
        self.m = None if m is None else int(m)
        if mix_at not in ("embedding", "feature-map"):
            raise ValueError(f"mix_at must be 'embedding' or 'feature-map', got {mix_at!r}")
        self.mix_at = mix_at
        if int(n) < 1:
            raise ValueError(f"n (mixed examples per batch) must be >= 1, got {n}")
        self.n, self.alpha, self.clean_weight = int(n), check_alpha(alpha), float(clean_weight)
        self.global_batch = bool(global_batch)
        self.mean_loss = bool(mean_loss)
        self.last_weights: Tensor | None = None

    def weights(self, b: int, device, batch: tuple[int, ...] = ()) -> Tensor:
        lam = dirichlet_weights(self.alpha, b, self.n, self.generator, batch, support=self.m)
        self.last_weights = lam
        return lam.to(device, non_blocking=True)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        fmap = self.mix_at == "feature-map"
        z_local = model.forward_features(x) if fmap else model.embed(x)  # (b, d) or (b, d, h, w)
        z, t = self.gathered(z_local, targets)
        lam = self.weights(z.shape[0], z.device).to(z.dtype)  # Lambda (m, n)
        t_mix = lam.t() @ t.to(z.dtype)  # eq. 4
        classify = (lambda f: model.head(model.pool(f))) if fmap else model.head
        if self.affine_classifier(model):  # classify(Z Lambda) = classify(Z) Lambda: mix the m logits, not n maps
            logits = classify(z)
            loss = loss_fn(lam.t() @ logits.to(lam.dtype), t_mix)  # eq. 3 through the classifier
            clean = logits if z is z_local else classify(z_local)
        else:
            z_mix = (lam.t() @ z.flatten(1)).reshape(-1, *z.shape[1:])  # eq. 3, as rows: (n, d)
            loss = loss_fn(classify(z_mix), t_mix)
            clean = classify(z_local) if self.clean_weight else None
        if self.clean_weight:
            loss = loss + self.clean_weight * loss_fn(clean, targets)
        return self.combine(loss)

    def affine_classifier(self, model) -> bool:
        """Whether what follows the mixing point is affine (a linear head, after GAP for ``mix_at="feature-map"``),
        so that classifying the ``n`` mixtures equals mixing the batch's logits with the same weights (columns of
        ``Lambda`` sum to one): the same loss up to rounding, for a fraction of the cost at large ``n``."""
        if not isinstance(getattr(model, "head", None), torch.nn.Linear):
            return False
        return self.mix_at == "embedding" or bool(getattr(model, "gap_linear_head", False))

    def gathered(self, z: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """With ``global_batch``, ``z`` and ``targets`` of every rank, beyond the mini-batch (``world x b`` rows,
        gradients routed back to each rank's own rows); else as given."""
        if not self.global_batch:
            return z, targets
        return gather_global(z), gather_global(targets)

    def combine(self, loss: Tensor) -> Tensor:
        """The summed mixed + clean loss, or its weighted mean (``mean_loss``)."""
        return loss / (1.0 + self.clean_weight) if self.mean_loss else loss

    def show(self, x01, targets, classes, path, context):
        """The weights ``Lambda`` of the first mixed examples and their mixed targets."""
        from ..viz import weights_figure

        lam = dirichlet_weights(self.alpha, x01.shape[0], self.n, self.generator, support=self.m)
        return weights_figure(lam, lam.t() @ targets.float(), classes, path,
                              title=f"{self.name}: Dir({self.alpha}) weights over the batch, n={self.n}")


class DenseMultiMix(MultiMix):
    """Dense MultiMix: per-position Dirichlet weights re-weighted by CAM attention, per-position loss.

    Args: as :class:`MultiMix` (``global_batch``: feature maps and targets of every rank are gathered; the
    attention, ``M^j`` and the mixed positions span the global batch). See the module docstring for the attention
    and non-GAP heads.
    """

    name = "dense-multimix"
    revision = 0  # unchanged by MultiMix's revision 1 (its own mixing already works on logits where it can)

    def attention(self, model, fmap: Tensor, targets: Tensor) -> Tensor:
        """``(b, r)`` non-negative attention, each row summing to one (zero rows stay zero); no gradient."""
        cam = F.relu(model.cam(fmap.detach(), targets.argmax(1))).flatten(1).detach()
        return cam / cam.sum(1, keepdim=True).clamp_min(torch.finfo(cam.dtype).tiny)

    def dense_weights(self, att: Tensor, lam: Tensor) -> Tensor:
        """``M^j`` (r, b, n) from attention ``a`` (b, r) and ``Lambda^j`` (r, b, n), eqs. 5 and 6."""
        m = att.t()[:, :, None] * lam  # diag(a^j) Lambda^j
        col = m.sum(1, keepdim=True)
        return torch.where(col > 0, m / col.clamp_min(torch.finfo(m.dtype).tiny), lam)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        fmap_local = model.forward_features(x)  # (b, d, h, w)
        fmap, t_all = self.gathered(fmap_local, targets)  # global_batch: (world x b, d, h, w)
        b, r = fmap.shape[0], fmap.shape[2] * fmap.shape[3]
        t = t_all.to(fmap.dtype)
        m = self.dense_weights(self.attention(model, fmap, t_all),
                               self.weights(b, fmap.device, (r,)).to(fmap.dtype))  # (r, b, n)
        t_mix = torch.einsum("jik,ic->kjc", m, t)  # eq. 8: (n, r, c)
        if model.gap_linear_head:
            pos = model.position_logits(fmap)  # (b, r, c): the head at each position
            logits = torch.einsum("jik,ijc->kjc", m, pos)  # = head(Z^j M^j), eq. 7, since columns sum to one
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), t_mix.reshape(-1, t_mix.shape[-1]))
        else:
            z = fmap.flatten(2)  # (b, d, r)
            z_mix = torch.einsum("jik,idj->kdj", m, z).reshape(-1, *fmap.shape[1:])  # eq. 7 per position
            loss = loss_fn(model.head(model.pool(z_mix)), t_mix.mean(1))
        if self.clean_weight:
            loss = loss + self.clean_weight * loss_fn(model.head(model.pool(fmap_local)), targets)
        return self.combine(loss)
