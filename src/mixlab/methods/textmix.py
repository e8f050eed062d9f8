"""WordMixup and SentMixup (Guo, Mao, Zhang 2019), the text mixers of the AMP paper.

Both mix hidden states of a staged text model (:mod:`mixlab.models.text`) with ``lam ~ Beta(alpha, alpha)``
and a random partner permutation: WordMixup the word-embedding output (after stage 0), SentMixup the sentence
vector (after the last stage, before the classifier). Equations (10)-(12) of the AMP paper:
``g~ = lam g(x_i) + (1 - lam) g(x_j)``, ``y~ = lam y_i + (1 - lam) y_j``.

Choices the papers leave open: one ``lam`` per sample by default (``per_sample=True``), as the AMP authors' code
draws it for its Word / Sent baselines, so that AMP and its plain mixer differ only in AMP's step; the loss is CE
against the mixed soft target (``loss="bce-softmax"``: the AMP code's BCE of softmax outputs, summed over classes).

Hooks for :class:`mixlab.methods.amp.AMP`: ``sample(B) -> (lam, perm)`` and
``mixed_forward(model, x, t, lam, perm, lam_target) -> (logits, t_mix)``, where ``lam`` may require grad.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, MixInfo, check_alpha, mix_at, sample_beta, soft_cross_entropy


def softmax_bce(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """The AMP code's loss: ``BCE(softmax(z), t)`` summed over classes, per sample (or its batch mean)."""
    p = torch.softmax(logits.float(), dim=-1)
    loss = F.binary_cross_entropy(p, targets.float().clamp(0, 1), reduction="none").sum(-1)
    return loss.mean() if reduction == "mean" else loss


LOSSES = {"ce": None, "bce-softmax": softmax_bce}


def pick_loss(name: str, default):
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {name!r}")
    return LOSSES[name] or default


class StageMixup(Method):
    """Mixup of a staged model's hidden state after ``stages[:stage]`` (``stage=None``: the last, before the head).

    Args:
        alpha: Beta concentration (1.0 in the AMP paper for every mixer).
        stage: where to mix; WordMixup uses 1, SentMixup ``None`` (= ``model.num_stages``).
        per_sample: one ``lam`` per sample (default) or one per batch.
        loss: ``"ce"`` (engine's soft CE) or ``"bce-softmax"`` (the AMP code).
    """

    name = "stagemixup"
    needs_stages = True

    def __init__(self, alpha: float = 1.0, stage: int | None = None, per_sample: bool = True, loss: str = "ce",
                 num_classes=None, seed=0, check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        self.stage = stage
        self.per_sample = per_sample
        self.loss = loss
        pick_loss(loss, None)

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """``(lam, perm)`` on CPU; ``lam`` is ``(B,)`` with ``per_sample``, else 0-d."""
        lam = sample_beta(self.alpha, self.generator, (batch_size,) if self.per_sample else ())
        return lam, torch.randperm(batch_size, generator=self.generator)

    def mix_stage(self, model) -> int:
        k = model.num_stages if self.stage is None else self.stage
        if not 0 < k <= model.num_stages:
            raise ValueError(f"{self.name}: stage {k} out of range for {type(model).__name__} "
                             f"(1..{model.num_stages}; stage 0 would mix token ids)")
        return k

    def site(self) -> str:
        """Where the mix happens, in words (``mixlab show`` on text)."""
        if self.stage is None:
            return "the sentence vector (the pooled output of the last stage, before the classifier)"
        if self.stage == 1:
            return "the word embeddings (the output of the embedding stage, position by position)"
        return f"the hidden state after stage {self.stage - 1} of the text model"

    def features(self, model, x: Tensor) -> Tensor:
        """The hidden state at the mixing point, ``stages[:k](x)`` (lambda-free: AMP computes it once)."""
        return model.forward_features(x, 0, self.mix_stage(model))

    def mixed_forward(self, model, x: Tensor, t: Tensor, lam: Tensor, perm: Tensor,
                      lam_target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run ``stages[:k]``, mix with ``lam``, run the rest and the head; targets mixed with ``lam_target``."""
        return mix_at(model, self.features(model, x), self.mix_stage(model), t, lam, perm, lam_target)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        lam, perm = self.sample(x.shape[0])
        self.last = MixInfo(lam, perm)
        logits, t_mix = self.mixed_forward(model, x, targets, lam, perm)
        return pick_loss(self.loss, loss_fn)(logits, t_mix)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, stage={self.stage}, per_sample={self.per_sample}, loss={self.loss!r}"


class WordMixup(StageMixup):
    """WordMixup: mix the word-embedding output (stage 1 of a text model), per position; padding included.

    Guo, Mao, Zhang. Augmenting Data with Mixup for Sentence Classification: An Empirical Study. arXiv 2019.
    """

    name = "wordmixup"

    def __init__(self, alpha: float = 1.0, per_sample: bool = True, loss: str = "ce", num_classes=None, seed=0,
                 check_inputs=True):
        super().__init__(alpha, 1, per_sample, loss, num_classes, seed, check_inputs)


class SentMixup(StageMixup):
    """SentMixup: mix the sentence vector (the output of the last stage, before the classifier).

    Guo, Mao, Zhang 2019 (senMixup); Verma et al. 2019 and Sun et al. 2020 mix the same layer.
    """

    name = "sentmixup"

    def __init__(self, alpha: float = 1.0, per_sample: bool = True, loss: str = "ce", num_classes=None, seed=0,
                 check_inputs=True):
        super().__init__(alpha, None, per_sample, loss, num_classes, seed, check_inputs)
