"""The contract every mixing method in mixlab follows.

Lambda convention (all methods): ``lam`` weighs the batch as given and ``1 - lam`` its partner ``x[index]``;
mixed targets are ``lam * t + (1 - lam) * t[index]``. ``lam`` is a 0-d tensor (one value per batch) or a
``(B,)`` tensor (one per sample); both broadcast through :func:`interpolate`.

Two kinds of method share one base class, :class:`Method` (an ``nn.Module``, so extra networks and RNG state
travel with ``state_dict``):

* :class:`InputMixer`: ``x_mix, y_mix = mixer(x, y)``. ``x`` is ``(B, ...)`` float, ``y`` integer labels
  ``(B,)`` (needs ``num_classes``) or soft / multi-hot targets ``(B, C)``. Returns new tensors; the inputs are
  never modified. Parameters are drawn from the mixer's own ``torch.Generator`` (CPU), never global RNG.
* Feature-space and learned methods override :meth:`Method.training_loss`, which gets the staged model
  (:class:`mixlab.models.StagedNet`) and may run its stages one by one.

The engine only ever calls ``method.training_loss(model, x, targets, loss_fn)``, and once, before training, the
optional ``method.setup(context)`` with a :class:`SetupContext` (data, model, device, seed, cache folder, and
teachers or search stages on request): methods never see the engine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate, get_worker_info

from ..seeding import derive_seed  # noqa: F401  (methods seed their streams with it)

LossFn = Callable[..., Tensor]


# ----------------------------------------------------------------------------------------------- helpers
def soft_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets ``(B, C)``: ``-sum_c t_c log softmax(z)_c``."""
    loss = -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)
    return loss.mean() if reduction == "mean" else loss


def multilabel_bce(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Sigmoid cross-entropy summed over labels (one-vs-rest), for multi-hot or mixed multi-hot targets."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none").sum(-1)
    return loss.mean() if reduction == "mean" else loss


def check_alpha(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not alpha > 0:
        raise ValueError(f"{name} must be > 0 (the Beta/Dirichlet concentration), got {alpha}")
    return alpha


def check_batch(x: Tensor, y: Tensor, min_batch: int = 2, check_values: bool = True) -> None:
    """Raise a clear error for inputs no mixer can use."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"expected tensors x and y, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must be batched, shape (B, ...); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; convert images with x.float() / 255")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y disagree on the batch size: {x.shape[0]} vs {y.shape[0]}")
    if x.shape[0] < min_batch:
        raise ValueError(f"a batch of {x.shape[0]} is too small to mix: need at least {min_batch} samples")
    if check_values and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")


def as_targets(y: Tensor, num_classes: int | None, dtype: torch.dtype, check_values: bool = True) -> Tensor:
    """Integer labels ``(B,)`` -> one-hot ``(B, C)``; soft / multi-hot ``(B, C)`` passed through (as ``dtype``)."""
    if y.dim() == 1 and not y.is_floating_point():
        if num_classes is None:
            raise ValueError("integer labels need num_classes (pass num_classes=... to the mixer)")
        if check_values and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}; "
                f"got range [{int(y.min())}, {int(y.max())}]")
        return F.one_hot(y.long(), num_classes).to(dtype)
    if y.dim() == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"targets have {y.shape[1]} columns but num_classes={num_classes}")
        if check_values and bool((y < 0).any()):
            raise ValueError("soft / multi-hot targets must be non-negative")
        return y.to(dtype)
    raise ValueError(f"y must be integer labels (B,) or targets (B, C); got shape {tuple(y.shape)}, {y.dtype}")


def interpolate(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """``lam * a + (1 - lam) * b`` with ``lam`` 0-d or per sample ``(B,)``, broadcast over trailing dims."""
    lam = lam.to(device=a.device, dtype=a.dtype)
    if lam.dim() == 1:
        lam = lam.reshape(-1, *([1] * (a.dim() - 1)))
    return b + lam * (a - b)


def sample_beta(alpha: float, generator: torch.Generator, size: tuple[int, ...] = ()) -> Tensor:
    """Beta(alpha, alpha) draws on CPU from ``generator`` (via two Gamma draws; torch.distributions has no generator)."""
    g1 = torch._standard_gamma(torch.full(size or (1,), float(alpha)), generator=generator)
    g2 = torch._standard_gamma(torch.full(size or (1,), float(alpha)), generator=generator)
    lam = g1 / (g1 + g2)
    return lam.reshape(size)


def sample_dirichlet(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """Dirichlet draws on CPU: ``alpha`` has shape ``(..., k)``; rows of the result sum to one."""
    g = torch._standard_gamma(alpha.float().cpu(), generator=generator)
    return g / g.sum(-1, keepdim=True)


PAIR_MODES = ("random", "same", "different")


def choose_partners(t: Tensor, generator: torch.Generator, mode: str = "random") -> Tensor:
    """Partner index ``(B,)`` for each row of targets ``t`` (B, C).

    ``random``: a random permutation. ``same`` / ``different``: a random other sample whose target is equal /
    different (BC learning's pairs; AutoMix Table 6, "label conflict"); a row with no such sample gets any other
    sample. Vectorised: random scores over a (B, B) matrix, disallowed pairs masked, argmax per row.
    """
    if mode not in PAIR_MODES:
        raise ValueError(f"pair mode must be one of {PAIR_MODES}, got {mode!r}")
    b = t.shape[0]
    if mode == "random":
        return torch.randperm(b, generator=generator).to(t.device, non_blocking=True)
    scores = torch.rand(b, b, generator=generator).to(t.device, non_blocking=True)
    equal = (t[:, None, :] == t[None, :, :]).all(-1)
    allowed = equal if mode == "same" else ~equal
    others = ~torch.eye(b, dtype=torch.bool, device=t.device)
    allowed = allowed & others
    allowed = torch.where(allowed.any(1, keepdim=True), allowed, others)
    return torch.where(allowed, scores, scores.new_full((), -1.0)).argmax(1)


def mix_at(model, h: Tensor, k: int, t: Tensor, lam: Tensor, perm: Tensor,
           lam_target: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mix the hidden state ``h = stages[:k](x)`` with ``lam`` (may require grad), run ``stages[k:]``, pool and
    head; targets mixed with ``lam_target`` (default ``lam``), always detached. Returns ``(logits, t_mix)``."""
    perm = perm.to(h.device, non_blocking=True)
    h = interpolate(h, h[perm], lam.to(h.device))
    logits = model.head(model.pool(model.forward_features(h, k, None)))
    lam_target = (lam if lam_target is None else lam_target).detach().to(t.device)
    return logits, interpolate(t, t[perm], lam_target)


def parameter_groups(model: nn.Module, method: "Method", lr: float) -> list[dict]:
    """Optimiser parameter groups: the model's parameters and the method's trainable ones, in one group, or the
    method's in a second group at ``lr * method.lr_scale`` (key ``"lr_scale"`` kept for schedules) when the scale
    is not 1."""
    own = [p for p in method.parameters() if p.requires_grad]
    scale = float(method.lr_scale)
    if scale == 1.0 or not own:
        return [{"params": list(model.parameters()) + own}]
    return [{"params": list(model.parameters())}, {"params": own, "lr": lr * scale, "lr_scale": scale}]


# ----------------------------------------------------------------------------------------------- classes
@dataclass
class MixInfo:
    """What the last call mixed, for pictures and tests: weights and partner indices (on CPU, or on the input's
    device where computing them there avoids a host sync), and for mask-based mixers the per-pixel mask
    ``(B or 1, 1, H, W)`` (1 keeps the batch's own pixel, 0 takes the partner's) whose mean is ``lam``."""

    lam: Tensor
    index: Tensor
    mask: Tensor | None = None


class Method(nn.Module):
    """Base of every training-time method.

    Args:
        num_classes: number of classes when labels are integers.
        seed: seed of the method's own CPU generator (the engine reseeds it every epoch).
        check_inputs: validate values (label range, finiteness). The engine checks its data once and turns
            this off so the hot loop never waits on the device.
    """

    #: registry name; set by subclasses.
    name = "method"
    #: True if ``training_loss`` needs a :class:`mixlab.models.StagedNet` (feature-space methods).
    needs_stages = False
    #: True if the method cannot mix before ``setup(context)`` (or its own loading) gave it trained parts
    needs_setup = False
    #: bumped when a change of default changes what the method trains; part of the run id when > 0, so a
    #: results store never hands back a run made with the old defaults
    revision = 0
    #: the method's own trained parameters (e.g. AutoMix's generator) learn at ``lr_scale`` x the run's rate
    lr_scale = 1.0

    def __init__(self, num_classes: int | None = None, seed: int | None = 0, check_inputs: bool = True):
        super().__init__()
        self.num_classes = num_classes
        self.check_inputs = check_inputs
        self.seed = 0 if seed is None else int(seed)
        self.generator = torch.Generator()
        self.generator.manual_seed(self.seed)
        self.last: MixInfo | None = None
        self.epoch = 0
        self._worker: tuple[int, int] | None = None

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed) & ((1 << 63) - 1))

    def set_epoch(self, epoch: int) -> None:
        """The current (0-based) epoch, for options that change with it (``off_epoch``); the engine and the
        Lightning module call it, a plain loop calls it at the start of each epoch."""
        self.epoch = int(epoch)

    def follow_worker(self) -> None:
        """Inside a ``DataLoader`` worker, give this copy of the method its own random stream: reseeded from the
        method's ``seed``, the worker id and the loader's per-epoch worker seed (``torch.utils.data`` draws it from
        the loader's ``generator``, or torch's global RNG), so workers differ, epochs differ and a seeded run
        repeats. Without it, every worker would copy the parent's generator and draw the same lambdas.
        A no-op outside workers; called by :class:`InputMixer` on every batch (one cheap lookup)."""
        info = get_worker_info()
        if info is not None and self._worker != (info.id, info.seed):
            self._worker = (info.id, info.seed)
            self.reseed(derive_seed(self.seed, "worker", info.id, info.seed))

    # state_dict carries the generator so a checkpoint restores the exact random stream
    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state) -> None:
        if state and "generator" in state:
            self.generator.set_state(state["generator"])

    def targets(self, x: Tensor, y: Tensor, min_batch: int = 2) -> Tensor:
        check_batch(x, y, min_batch=min_batch, check_values=self.check_inputs)
        return as_targets(y, self.num_classes, x.dtype, check_values=self.check_inputs)

    def randperm(self, n: int, device: torch.device) -> Tensor:
        return torch.randperm(n, generator=self.generator).to(device, non_blocking=True)

    def loss_targets(self, x: Tensor, targets: Tensor) -> Tensor:
        """``targets`` of :meth:`training_loss` as ``(B, C)``: integer labels ``(B,)`` become one-hot (their range
        checked unless ``check_inputs=False``); ``(B, C)`` soft / multi-hot targets pass through after a shape check
        (no device sync: the engine's hot path)."""
        if not isinstance(targets, Tensor):
            raise TypeError(f"targets must be a tensor, got {type(targets).__name__}")
        if targets.dim() == 1 and not targets.is_floating_point() and targets.shape[0] == x.shape[0]:
            dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
            return as_targets(targets, self.num_classes, dtype, check_values=self.check_inputs)
        if targets.dim() != 2 or targets.shape[0] != x.shape[0] or (
                self.num_classes is not None and targets.shape[1] != self.num_classes):
            c = self.num_classes if self.num_classes is not None else "C"
            raise ValueError(f"training_loss takes integer labels ({x.shape[0]},) or soft targets ({x.shape[0]}, {c}) "
                             f"for x of shape {tuple(x.shape)}; got targets of shape {tuple(targets.shape)}")
        return targets

    def training_loss(self, model: nn.Module, x: Tensor, targets: Tensor, loss_fn: LossFn = soft_cross_entropy) -> Tensor:
        """Loss of one training step; ``targets``: integer labels ``(B,)`` or ``(B, C)`` soft / multi-hot (see
        :meth:`loss_targets`, which every implementation calls first)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class InputMixer(Method):
    """A method that mixes in input space: ``x_mix, y_mix = mixer(x, y)``.

    Options every input mixer that forwards ``**options`` here takes (timm's conveniences):
        prob: probability of mixing a batch (1.0); an unmixed batch is passed through (targets still smoothed).
        label_smoothing: ``t <- (1 - eps) t + eps / C`` on the (mixed) targets (0.0; Szegedy et al. 2016).
        off_epoch: no mixing from this 0-based epoch on (None: never off), as timm's ``mixup_off_epoch``;
            the epoch comes from :meth:`Method.set_epoch`.
    Safe in ``DataLoader`` workers and as a collate function (:class:`MixCollate`): each worker draws its own
    stream (:meth:`Method.follow_worker`).
    """

    def __init__(self, num_classes: int | None = None, seed: int | None = 0, check_inputs: bool = True,
                 prob: float = 1.0, label_smoothing: float = 0.0, off_epoch: int | None = None):
        super().__init__(num_classes, seed, check_inputs)
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob (the probability of mixing a batch) must lie in [0, 1], got {prob}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        if off_epoch is not None and int(off_epoch) < 0:
            raise ValueError(f"off_epoch must be >= 0 or None, got {off_epoch}")
        self.prob, self.label_smoothing = float(prob), float(label_smoothing)
        self.off_epoch = None if off_epoch is None else int(off_epoch)

    @staticmethod
    def forwards_options() -> dict:
        """The options a subclass's ``**options`` passes on here (for :func:`mixlab.registry.signature_options`)."""
        from ..registry import signature_options

        return signature_options(InputMixer.__init__, skip=("self", "num_classes", "seed", "check_inputs"),
                                 own_only=True)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.follow_worker()
        return self.mix_batch(x, self.targets(x, y))

    def mix(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mix images ``x`` and soft targets ``t`` (B, C); subclasses implement this."""
        raise NotImplementedError

    def mixing(self) -> bool:
        """Whether this batch is mixed: before ``off_epoch`` and with probability ``prob`` (no draw at 1)."""
        if self.off_epoch is not None and self.epoch >= self.off_epoch:
            return False
        return self.prob >= 1.0 or bool(torch.rand((), generator=self.generator) < self.prob)

    def mix_batch(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`mix` under the options ``prob``, ``off_epoch`` and ``label_smoothing``."""
        if self.mixing():
            x, t = self.mix(x, t)
        else:
            self.last = None
            x = x.clone()
        if self.label_smoothing:
            t = t * (1.0 - self.label_smoothing) + self.label_smoothing / t.shape[1]
        return x, t

    def training_loss(self, model, x, targets, loss_fn=soft_cross_entropy):
        x_mix, t_mix = self.mix_batch(x, self.loss_targets(x, targets))
        return loss_fn(model(x_mix), t_mix)


class MixCollate:
    """A ``DataLoader`` ``collate_fn`` that mixes each batch: ``collate(samples) -> mixer(x, y)``.

    ``DataLoader(data, batch_size=128, collate_fn=MixCollate(mixer), num_workers=4)`` yields ``(x_mix, y_mix)``
    with ``(B, C)`` soft targets; each worker mixes with its own random stream (see :meth:`Method.follow_worker`).
    ``base`` collates the samples first (default: ``torch.utils.data.default_collate``); ``x`` must be float.
    """

    def __init__(self, mixer: "InputMixer", base: Callable | None = None):
        if not isinstance(mixer, InputMixer):
            raise TypeError(f"MixCollate needs an input mixer (mixup, cutmix, ...); {type(mixer).__name__} mixes inside "
                            f"the model: call method.training_loss(model, x, y) in the loop instead")
        self.mixer, self.base = mixer, base or default_collate

    def __call__(self, samples):
        batch = self.base(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("MixCollate expects samples (x, y); got batches of type " + type(batch).__name__)
        x, y = batch[0], batch[1]
        return self.mixer(x, y)


def is_plain_input_mixer(method: Method) -> bool:
    """True for a stateless input-space mixer: ``mix(x, t)`` is all it does (the default training loss, no set-up
    hook). ``mixer(x, y)`` works on any float batch; tests check every one alike, benchmarks give them one budget."""
    return (isinstance(method, InputMixer) and type(method).training_loss is InputMixer.training_loss
            and not hasattr(method, "setup") and not method.needs_setup)


class ERM(InputMixer):
    """Empirical risk minimisation: no mixing (the baseline of every table)."""

    name = "erm"

    def __init__(self, num_classes=None, seed=0, check_inputs=True):  # no options (the registry says so)
        super().__init__(num_classes, seed, check_inputs)

    def forward(self, x, y):
        return x.clone(), self.targets(x, y, min_batch=1)

    def mix_batch(self, x, t):
        return x, t

    def mix(self, x, t):
        return x, t


# ----------------------------------------------------------------------------------------------- set-up
@dataclass
class SetupContext:
    """What a method's optional ``setup(context)`` gets, once, after the model is built and before training.

    The engine makes it (:meth:`mixlab.train.Trainer.setup_context`); a user's own loop may make one by hand.
    A method reads what it needs here and never sees the Trainer.

    Fields:
        data: the training split as loaded (``x``: uint8 images ``(N, C, H, W)`` on the CPU or token texts, ``y``,
            ``num_classes``, ``mean``, ``std``, ``note``).
        x: the training inputs on ``device`` (uint8 images, or padded token ids for text), ``(N, ...)``.
        targets: their ``(N, C)`` float targets on ``device``.
        model: the task model (a :class:`~mixlab.models.StagedNet` for the engine's models).
        device: where training runs.
        seed: the run's seed.
        cache_dir: a folder for what a method builds once and reuses across runs (caches, searched modules).
        augment: the task's :class:`~mixlab.data.augment.BatchAugment` (normalisation and training
            augmentation; ``None`` for text).
        progress: show progress bars (``None``: only on a terminal).
        data_id: what identifies the training data (``dataset``, ``subset_per_class``, ``seed``), for cache keys
            and to check that a saved teacher saw the same data.
        channels_last: the run keeps images in NHWC memory format (a method's own networks may follow it).
        provider: trained parts on request (the engine's: :class:`mixlab.search.EngineProvider`); see
            :meth:`teacher`, :meth:`teacher_identity` and :meth:`search`.
    """

    data: Any
    x: Tensor
    targets: Tensor
    model: nn.Module
    device: torch.device
    seed: int = 0
    cache_dir: Path = Path("mixlab-out")
    augment: Any = None
    progress: bool | None = None
    data_id: dict = field(default_factory=dict)
    channels_last: bool = False
    provider: Any = None

    @property
    def num_classes(self) -> int:
        return self.targets.shape[1]

    def _provider(self, what: str):
        if self.provider is None:
            raise RuntimeError(f"this set-up has no provider to {what}: train through the engine (mixlab train / "
                               f"Trainer), or give SetupContext a provider (mixlab.search.EngineProvider)")
        return self.provider

    def teacher(self, epochs: int | None = None) -> dict:
        """A pre-trained classifier of this data, model and schedule (``epochs`` overrides its length), trained
        or reused by the provider, as a record: ``model``, ``model_kwargs``, ``num_classes``, ``in_channels``,
        ``image_size``, ``mean``, ``std``, ``state_dict``, the data identity and ``test_error``."""
        return self._provider("train a teacher").teacher(epochs)

    def teacher_identity(self, epochs: int | None = None) -> dict:
        """The identity of the run :meth:`teacher` gives (for cache keys), without training it."""
        return self._provider("name a teacher").teacher_identity(epochs)

    def search(self, method: "Method", module: nn.Module, checkpoint: Path | None = None) -> list[float]:
        """Run ``method``'s search stage on this data: train ``module`` on ``method.search_loss``, resumable
        through ``checkpoint`` (:func:`mixlab.search.search_module`). Returns the epoch losses."""
        return self._provider("run a search stage").search(self, method, module, checkpoint)
