"""Mixup (Zhang et al. 2018) and Manifold Mixup (Verma et al. 2019).

Both draw ``lam ~ Beta(alpha, alpha)`` once per batch and pair each sample with ``x[perm]`` for a random
permutation; Manifold Mixup mixes the hidden state after a randomly chosen stage of the model instead.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import InputMixer, Method, MixInfo, check_alpha, interpolate, mix_at, sample_beta, soft_cross_entropy


class Mixup(InputMixer):
    """Mixup: ``x~ = lam x + (1 - lam) x[perm]``, ``y~ = lam y + (1 - lam) y[perm]``, ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta concentration (default 1.0, Zhang et al. 2018 on CIFAR).
        per_sample: draw one ``lam`` per sample instead of one per batch.
        prob, label_smoothing, off_epoch: see :class:`~mixlab.methods.base.InputMixer`.
    Zhang, Cisse, Dauphin, Lopez-Paz. mixup: Beyond Empirical Risk Minimization. ICLR 2018.
    """

    name = "mixup"

    def __init__(self, alpha: float = 1.0, per_sample: bool = False, num_classes=None, seed=0, check_inputs=True,
                 **options):
        super().__init__(num_classes, seed, check_inputs, **options)
        self.alpha = check_alpha(alpha)
        self.per_sample = per_sample

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Draw ``(lam, perm)`` on CPU: ``lam`` is 0-d, or ``(B,)`` with ``per_sample``."""
        lam = sample_beta(self.alpha, self.generator, (batch_size,) if self.per_sample else ())
        return lam, torch.randperm(batch_size, generator=self.generator)

    def mix_with(self, x: Tensor, t: Tensor, lam: Tensor, perm: Tensor, lam_target: Tensor | None = None):
        """Mix with given parameters. ``lam`` may require grad (AMP); ``lam_target`` defaults to ``lam``.

        (Not ``apply``: that is :meth:`torch.nn.Module.apply`, which ``model.apply(init_fn)`` calls on every
        submodule, a mixer held by a model included.)"""
        perm = perm.to(x.device, non_blocking=True)
        lam_target = lam if lam_target is None else lam_target
        return interpolate(x, x[perm], lam), interpolate(t, t[perm], lam_target)

    def mix(self, x, t):
        lam, perm = self.sample(x.shape[0])
        self.last = MixInfo(lam, perm)
        return self.mix_with(x, t, lam, perm)


class ManifoldMixup(Method):
    """Manifold Mixup: mix the hidden state after a stage ``k`` drawn uniformly from ``layers``.

    ``k = 0`` is the input, ``k = 1`` the output of the first block group, and so on (SPEC: {0, 1, 2}).
    One ``lam ~ Beta(alpha, alpha)`` per batch; loss = CE against the mixed soft target.

    Args:
        alpha: Beta concentration (2.0 on CIFAR, 0.2 on Tiny-ImageNet in the paper).
        layers: candidate stages; default the model's ``mix_stages``.
    Verma et al. Manifold Mixup: Better Representations by Interpolating Hidden States. ICML 2019.
    """

    name = "manifold"
    needs_stages = True

    def __init__(self, alpha: float = 2.0, layers: tuple[int, ...] | None = None, num_classes=None, seed=0,
                 check_inputs=True):
        super().__init__(num_classes, seed, check_inputs)
        self.alpha = check_alpha(alpha)
        self.layers = tuple(layers) if layers is not None else None

    def sample(self, batch_size: int, layers: tuple[int, ...]) -> tuple[int, Tensor, Tensor]:
        k = layers[int(torch.randint(len(layers), (1,), generator=self.generator))]
        lam = sample_beta(self.alpha, self.generator)
        return k, lam, torch.randperm(batch_size, generator=self.generator)

    def mixed_forward(self, model, x: Tensor, t: Tensor, k: int, lam: Tensor, perm: Tensor,
                      lam_target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run stages ``[0, k)``, mix, run the rest; returns ``(logits, mixed targets)``."""
        return mix_at(model, model.forward_features(x, 0, k), k, t, lam, perm, lam_target)

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        targets = self.loss_targets(x, targets)
        layers = self.layers if self.layers is not None else model.mix_stages
        bad = [k for k in layers if not 0 <= k < model.num_stages]
        if bad:
            raise ValueError(f"manifold layers {bad} out of range: {type(model).__name__} has stages 0..{model.num_stages - 1}")
        k, lam, perm = self.sample(x.shape[0], layers)
        self.last = MixInfo(lam, perm)
        logits, t_mix = self.mixed_forward(model, x, targets, k, lam, perm)
        return loss_fn(logits, t_mix)
