"""AMP, the Adversarial Mixing Policy (Liu et al. 2021), as a wrapper around any mixer whose lambda enters
differentiably: WordMixup, SentMixup, image Mixup, Manifold Mixup (registry ``amp+X``).

"min-max-rand", one training step (SPEC; the authors' code PAI-SmallIsAllYourNeed/Mixup-AMP):

1. Rand: draw per-sample ``lam ~ Beta(alpha, alpha)`` and partners, exactly as the inner mixer (Eq. 10-12).
2. Max: forward with ``lam`` on the input side (requiring grad) and the label side ``y~ = lam y_i + (1 - lam)
   y_j`` with ``lam`` detached; per-sample losses ``L``; ``grad = dmean(L)/dlam`` (Eq. 16; the gradient of the
   batch mean, as the code does); ``lam' = lam + epsilon * grad`` (Eq. 15; plain ascent, no sign, no clipping:
   the code neither clips the gradient nor keeps ``lam'`` in [0, 1]).
3. Re-mix the input side only with ``lam'`` and the same partners; the label side keeps ``lam`` (Eq. 20).
4. Min: per sample keep the larger of the two losses, ``mask = L' > L`` (Eq. 19, 21), and minimise the batch
   mean. Gradients reach the encoder through both forward passes: through the first for samples whose first
   loss is kept, through the second for the others.

Options:

* ``shared_dropout`` (new; off by default, as the code): both forward passes draw the same dropout masks above the
  mixing point (the dropout RNG of the batch's device is saved before the first pass and restored before the
  second), so that ``L' - L`` is the effect of ``lam' - lam`` alone. Without it the two passes draw independent
  masks (Kim CNN: dropout 0.5 before the classifier), and since ``lam' - lam = epsilon * dmean(L)/dlam`` is about
  1e-5 at epsilon 0.002 (the gradient of the batch *mean*, so 1/B of a sample's own), the dropout noise dwarfs the
  lambda step: MinOp then keeps, per sample, the worse of two dropout draws (about half the samples), not the
  adversarial lambda. What the paper's effect rests on is therefore (a) the step being large enough for the loss to
  move with lambda, and (b) with dropout after the mixing point, MinOp's selection among dropout draws, which is a
  different regulariser; ``shared_dropout=True`` removes (b). ``mixlab eval amp-step --run ID`` measures both
  settings on a trained run.
* ``min_op`` (default True): Table 4's ablation. ``min_op=False`` is the "+MaxOp" row: train on ``L'`` (Eq. 20)
  for every sample, without MinOp's comparison with ``L`` (Eq. 19, 21); "+RandOp" is the plain mixer.
* ``reweight`` (the code's undocumented extra, off by default): weight each sample by
``1 + (d - m) / s`` where ``d = L' - L`` exceeds ``m``; ``m``, ``s`` are the mean and std of the positive gaps
over the last ``moving_avg`` batches (kept as running sums, so no host sync; not in checkpoints).

Cost: the hidden state below the mixing point is computed once and shared by both passes (the code recomputes
it; identical unless dropout sits below the mixing point); above it AMP runs two forwards, one backward to
lambda and two backwards: about 2x a plain mixup step for WordMixup and input Mixup, close to 1x for SentMixup.

Liu, Mao, Huang, Gao, Li. Adversarial Mixing Policy for Relaxing Locally Linear Constraints in Mixup.
Findings of EMNLP 2021.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import torch
from torch import Tensor

from .base import InputMixer, Method, MixInfo, mix_at, sample_beta, soft_cross_entropy
from .mixup import ManifoldMixup
from .textmix import StageMixup, pick_loss


class AMP(Method):
    """Adversarial Mixing Policy around an inner mixer (see the module docstring).

    Args:
        inner: the mixer to wrap: a registry name (``"wordmixup"``, ``"sentmixup"``, ``"mixup"``,
            ``"manifold"``) or a method instance with AMP hooks.
        epsilon: step size on lambda (0.002 in every experiment of the paper).
        per_sample: draw one lambda per sample (the paper; a 0-d draw of the inner mixer is replaced).
        shared_dropout: run both passes with the same dropout masks (see the module docstring; off: the code).
        min_op: keep the larger of ``L``, ``L'`` per sample (AMP); False: always ``L'`` (Table 4's "+MaxOp").
        reweight: the code's moving-average re-weighting of samples with positive loss gaps.
        moving_avg: batches in that moving average (5 in the code).
        loss: ``"ce"`` (soft CE, the engine's loss) or ``"bce-softmax"`` (the code's BCE of softmax outputs).
        **inner_kwargs: options of the inner mixer (e.g. ``alpha``).
    """

    def __init__(self, inner: str | Method = "mixup", epsilon: float = 0.002, per_sample: bool = True,
                 reweight: bool = False, moving_avg: int = 5, loss: str = "ce", shared_dropout: bool = False,
                 min_op: bool = True, num_classes=None, seed=0, check_inputs=True, **inner_kwargs):
        super().__init__(num_classes, seed, check_inputs)
        if isinstance(inner, str):
            from ..registry import METHODS

            inner = METHODS.create(inner, num_classes=num_classes, seed=seed, check_inputs=check_inputs,
                                   **inner_kwargs)
        elif inner_kwargs:
            raise TypeError(f"options {sorted(inner_kwargs)} go to the inner mixer; pass it by name to use them")
        input_hooks = (isinstance(inner, InputMixer) and hasattr(inner, "sample")
                       and hasattr(inner, "mix_with"))  # Mixup.mix_with(x, t, lam, perm, lam_target)
        if not isinstance(inner, (StageMixup, ManifoldMixup)) and not input_hooks:
            raise TypeError(f"AMP needs a mixer whose lambda enters differentiably (wordmixup, sentmixup, mixup, "
                            f"manifold); {type(inner).__name__} has no sample()/mix_with() or mixed_forward() hooks")
        if isinstance(inner, InputMixer) and (inner.prob < 1 or inner.label_smoothing or inner.off_epoch is not None):
            raise ValueError("AMP draws the inner mixer's lambda itself: its prob, label_smoothing and off_epoch "
                             "would not apply; leave them unset")
        if not float(epsilon) >= 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        if int(moving_avg) < 1:
            raise ValueError(f"moving_avg must be >= 1, got {moving_avg}")
        self.inner = inner
        self.inner.generator = self.generator  # one random stream: the engine reseeds the wrapper
        self.name = f"amp+{inner.name}"
        self.needs_stages = inner.needs_stages
        self.epsilon = float(epsilon)
        self.per_sample = per_sample
        self.reweight = reweight
        self.moving_avg = int(moving_avg)
        self.loss = loss
        pick_loss(loss, None)
        self.shared_dropout = bool(shared_dropout)
        self.min_op = bool(min_op)
        self._gaps: deque = deque(maxlen=self.moving_avg)  # (sum, sum of squares, count) of positive gaps
        self.last_step: dict | None = None

    # ------------------------------------------------------------------------------ the inner mixer's hooks
    def draw(self, model, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Callable[[Tensor], tuple[Tensor, Tensor]]]:
        """Rand: ``(lam (B,), perm, forward)``; ``forward(lam_input) -> (logits, t_mix)`` keeps the label side at
        the drawn ``lam`` and the same partners (and, for Manifold Mixup, the same layer)."""
        inner, B = self.inner, x.shape[0]
        if isinstance(inner, ManifoldMixup):
            layers = inner.layers if inner.layers is not None else model.mix_stages
            k, lam, perm = inner.sample(B, layers)
        else:
            lam, perm = inner.sample(B)
        if self.per_sample and lam.dim() == 0:
            lam = sample_beta(inner.alpha, self.generator, (B,))
        lam = lam.to(x.device, non_blocking=True)

        if isinstance(inner, (ManifoldMixup, StageMixup)):  # the state below the mixing point is computed once
            if isinstance(inner, StageMixup):
                k = inner.mix_stage(model)
            h = model.forward_features(x, 0, k)

            def forward(lam_in):
                return mix_at(model, h, k, t, lam_in, perm, lam_target=lam)
        else:  # input-space mixer with mix_with(x, t, lam, perm, lam_target)
            if not isinstance(inner, InputMixer) or not x.is_floating_point():
                raise TypeError(f"{inner.name} mixes inputs; {'token ids' if not x.is_floating_point() else 'x'} "
                                f"cannot be mixed: on text use amp+wordmixup or amp+sentmixup")

            def forward(lam_in):
                x_mix, t_mix = inner.mix_with(x, t, lam_in, perm, lam_target=lam)
                return model(x_mix), t_mix
        return lam, perm, forward

    # ------------------------------------------------------------------------------------------ the step
    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        loss_fn = pick_loss(self.loss, loss_fn)
        lam, perm, forward = self.draw(model, x, targets)
        # Max: gradient of the batch-mean loss w.r.t. the input side's lambda (Eq. 16)
        lam_in = lam.clone().requires_grad_(True)
        rng = DropoutRNG(x.device) if self.shared_dropout else None
        logits, t_mix = forward(lam_in)
        loss_pre = loss_fn(logits, t_mix, reduction="none")  # L, per sample
        (grad,) = torch.autograd.grad(loss_pre.mean(), lam_in, retain_graph=self.min_op)
        lam_adv = (lam + self.epsilon * grad).detach()  # Eq. 15
        if rng is not None:
            rng.restore()  # the second pass draws the first pass's dropout masks
        logits_adv, _ = forward(lam_adv)  # Eq. 20: input side re-mixed, label side unchanged
        loss_cur = loss_fn(logits_adv, t_mix, reduction="none")  # L'
        gap = (loss_cur - loss_pre).detach()
        if self.min_op:  # Min: per sample the larger loss (Eq. 19, 21)
            mask = (gap > 0).to(loss_cur.dtype)
            loss = loss_cur * mask + loss_pre * (1 - mask)
        else:  # Table 4's "+MaxOp": the re-mixed sample's loss only
            mask = torch.ones_like(loss_cur)
            loss = loss_cur
        if self.reweight:
            loss = loss * self.weights(gap)
        self.last = MixInfo(lam.detach(), perm)  # stays on the device: no host sync per step
        self.last_step = {"lam": lam.detach(), "grad": grad.detach(), "lam_adv": lam_adv, "loss_pre": loss_pre.detach(),
                          "loss_cur": loss_cur.detach(), "mask": mask}
        return loss.mean()

    def weights(self, gap: Tensor) -> Tensor:
        """The code's re-weighting: ``1 + (gap - m) / s`` where ``gap > m`` (``m``, ``s``: mean / std of the
        positive gaps of the last ``moving_avg`` batches, this one included); 1 elsewhere or while undefined."""
        pos = (gap > 0).to(gap.dtype)
        self._gaps.append(torch.stack([(gap * pos).sum(), (gap * gap * pos).sum(), pos.sum()]))
        total, total_sq, n = torch.stack(tuple(self._gaps)).sum(0)
        m = total / n
        s = ((total_sq - n * m * m).clamp_min(0) / (n - 1)).sqrt()  # unbiased, as torch.std
        z = torch.nan_to_num((gap - m) / s, nan=0.0, posinf=0.0, neginf=0.0)
        return (1 + z * (gap > m).to(gap.dtype)).detach()

    def extra_repr(self) -> str:
        return (f"epsilon={self.epsilon}, per_sample={self.per_sample}, reweight={self.reweight}, loss={self.loss!r}, "
                f"shared_dropout={self.shared_dropout}, min_op={self.min_op}")


class DropoutRNG:
    """The default RNG state that dropout on ``device`` draws from, saved at construction; ``restore()`` puts it
    back, so that the next forward pass draws the same dropout masks (CPU, CUDA, or any device module with
    ``get_rng_state`` / ``set_rng_state``)."""

    def __init__(self, device: torch.device):
        device = torch.device(device)
        if device.type == "cpu":
            self._set = torch.set_rng_state
            self.state = torch.get_rng_state()
        elif device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            self._set = lambda s: torch.cuda.set_rng_state(s, index)
            self.state = torch.cuda.get_rng_state(index)
        else:
            module = torch.get_device_module(device.type)
            self._set = module.set_rng_state
            self.state = module.get_rng_state()

    def restore(self) -> None:
        self._set(self.state)


def amp_wordmixup(**kwargs) -> AMP:
    """AMP on WordMixup (Word(our) in the paper's tables)."""
    return AMP("wordmixup", **kwargs)


def amp_sentmixup(**kwargs) -> AMP:
    """AMP on SentMixup (Sent(our))."""
    return AMP("sentmixup", **kwargs)


def amp_mixup(**kwargs) -> AMP:
    """AMP on image (input) Mixup; new: the paper only tried text."""
    return AMP("mixup", **kwargs)


def amp_manifold(**kwargs) -> AMP:
    """AMP on Manifold Mixup (the layer drawn once per batch, kept for the second pass); new."""
    return AMP("manifold", **kwargs)


def _options_of(inner: str) -> Callable[[], dict | None]:
    """AMP's own options plus those of the inner mixer, which its ``**kwargs`` are passed on to."""
    def forwards_options():
        from ..registry import METHODS, signature_options

        inner_options = METHODS.options(inner)
        own = signature_options(AMP, skip=("inner",), own_only=True)
        if inner_options is None:
            return None
        batch_options = InputMixer.forwards_options()  # prob, label_smoothing, off_epoch: AMP draws lambda itself
        return {**{k: v for k, v in inner_options.items() if k not in batch_options}, **own}

    return forwards_options


for _factory, _inner in ((amp_wordmixup, "wordmixup"), (amp_sentmixup, "sentmixup"), (amp_mixup, "mixup"),
                         (amp_manifold, "manifold")):
    _factory.forwards_options = _options_of(_inner)
