"""The training engine: device-resident data, batched augmentation, any method, checkpoints and resume.

Determinism: every random stream (shuffling, augmentation, the method's generator, torch's global RNG for
dropout) is re-derived from ``(seed, epoch)`` at the start of each epoch, so resuming from the checkpoint of
epoch ``e`` replays epochs ``e+1..`` exactly as an uninterrupted run would.

Run identity (:meth:`TrainConfig.identity`, hashed into the run id) covers everything known to change a run's
numbers: the configuration, the device kind, for a CPU run the instruction set torch's kernels use and the
threads (float sums are split and vectorised differently), the precision flags, and the code
(:data:`mixlab.config.ENGINE_REVISION` and the method's ``revision``). See docs/architecture.md, "Run identity".
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data import load_dataset
from ..data.augment import BatchAugment
from ..data.subsets import per_class_indices
from ..locks import RunLocked, run_lock
from ..methods.base import Method, SetupContext, as_targets, multilabel_bce, parameter_groups, soft_cross_entropy
from ..registry import DATASETS, METHODS, MODELS
from ..search import EngineProvider
from ..seeding import derive_seed
from .evaluation import evaluate, evaluate_multilabel
from .. import distributed as ddp


def compile_model(model: nn.Module, **kwargs) -> nn.Module:
    """``torch.compile`` a model in place, one child at a time (every stage of a StagedNet, its head, ...).

    Compiling the children rather than ``model.forward`` keeps the staged interface fast too: methods that run
    ``forward_features`` / ``pool`` / ``head`` piece by piece still call compiled modules. State-dict keys
    are unchanged. ``kwargs`` go to :meth:`torch.nn.Module.compile` (e.g. ``backend``, ``mode``).
    """
    parts: list[nn.Module] = []
    for child in model.children():
        parts.extend(child.values() if isinstance(child, nn.ModuleDict)
                     else child if isinstance(child, nn.ModuleList) else [child])
    for m in parts or [model]:
        m.compile(**kwargs)
    return model


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for a 0-based epoch."""
    if config.schedule == "multistep":
        return config.gamma ** sum(epoch >= m for m in config.milestones)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / max(1, config.epochs)))
    if config.schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {config.schedule!r}; use multistep, cosine or constant")


def split_holdout(full, per_class: int, taken: Tensor | None = None, seed: int = 0):
    """``(holdout, rest)``: ``per_class`` images of every class of ``full`` (a training split), none of them among
    the rows ``taken`` (the training subset, if any), and the other rows of ``full``. Drawn with one fixed
    ``seed``, so all trials share the holdout except where a trial's training subset claimed one of its rows."""
    try:
        pick = per_class_indices(full.y, per_class, seed=derive_seed(seed, "holdout"), num_classes=full.num_classes,
                                 exclude=taken)
    except ValueError as err:
        raise ValueError(f"holdout_per_class={per_class}: too few images left outside the training subset "
                         f"({err})") from None
    holdout = full.subset(pick, f"validation: {per_class} per class of {full.note}, disjoint from the training "
                                f"images (test set not used)")
    keep = torch.ones(len(full.y), dtype=torch.bool)
    keep[pick] = False
    return holdout, full.subset(keep.nonzero().flatten(), f"{full.note} less {len(pick)} validation images")


def restrict_classes(data, classes: tuple[int, ...]):
    """The examples of ``classes`` only, labels relabelled ``0..n-1`` in the order given (open-set training)."""
    classes = tuple(int(c) for c in classes)
    if len(set(classes)) != len(classes) or not classes or min(classes) < 0 or max(classes) >= data.num_classes:
        raise ValueError(f"train_classes must be distinct class indices in [0, {data.num_classes - 1}], got {classes}")
    if data.y.dim() != 1:
        raise ValueError("train_classes needs single-label data (integer labels)")
    lookup = torch.full((data.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lookup[data.y] >= 0
    sub = data.subset(keep.nonzero().flatten(), f"classes {list(classes)} of {data.note}")
    sub.y = lookup[sub.y]
    sub.classes = [data.classes[c] for c in classes]
    return sub


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file that cannot be read (empty, truncated, or not a mixlab checkpoint)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot read the checkpoint {path}: {reason}. Delete or rename the file to train this "
                         f"run from the start (mixlab bench and reproduce move it aside to "
                         f"{Path(path).name}.corrupt and do so themselves)")


#: what every checkpoint written by :meth:`Trainer.save_checkpoint` holds
CHECKPOINT_KEYS = ("epoch", "config", "model", "method", "optimizer", "history", "train_seconds")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """A checkpoint's contents; :class:`CorruptCheckpoint` (naming the file) when it cannot be read."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CorruptCheckpoint(path, "the file is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001  (torch raises EOFError, RuntimeError, UnpicklingError, ...)
        raise CorruptCheckpoint(path, f"it is truncated or damaged ({type(error).__name__}: {error})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CorruptCheckpoint(path, f"it is not a mixlab checkpoint (no {', '.join(missing)})")
    return state


def run_unless_locked(trainer: "Trainer", log, label: str) -> dict | None:
    """``trainer.run(resume=True)`` for bench and reproduce, or None (with a line in ``log``) while another
    process trains the same run. An unreadable checkpoint is moved aside to ``<name>.corrupt`` (with a line in
    ``log``) and the run trained from the start, so one damaged file does not stop a sweep."""
    try:
        try:
            return trainer.run(resume=True)
        except CorruptCheckpoint as error:
            aside = error.path.with_name(error.path.name + ".corrupt")
            os.replace(error.path, aside)
            log(f"{label}: cannot read its checkpoint, {error.reason}; moved it aside to {aside}, training the "
                f"run from the start")
            return trainer.run(resume=True)
    except RunLocked as error:
        log(f"{label}: skipped, {error}; run this command again afterwards to include it")
        return None


def outcome(result: dict) -> str:
    """How a finished run ended, for the sweep's log line."""
    return (f"DIVERGED at epoch {result['diverged_epoch']}, step {result['diverged_step']} (no test error)"
            if result["status"] == "diverged" else f"test error {result['test_error']:.2f}%") + \
        f" ({result['train_seconds']:.1f} s)"


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class Trainer:
    """Train one configuration. ``Trainer(config, out="runs").run()`` returns the result dict.

    Args:
        config: the run.
        out: output folder (``<out>/runs/<run_id>/checkpoint.pt`` and ``<out>/results.db``).
        data_dir: data root (else ``$MIXLAB_DATA``); not part of the run's identity.
        progress: show a progress bar (None: only on a terminal, else a line now and then; ``"lines"``: such lines
            even on a terminal, as for runs trained side by side; False: neither).
        store: write the finished run to ``<out>/results.db``.
    """

    def __init__(self, config: TrainConfig, out: str | Path = "runs", data_dir: str | None = None,
                 progress: bool | str | None = None, store: bool = True):
        self.check_names(config)
        if config.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {config.epochs}")
        if config.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 to mix, got {config.batch_size}")
        world = ddp.env_world_size()
        if config.world_size == 1 and world > 1:  # launched by torchrun: the run id records the world size
            config = dataclasses.replace(config, world_size=world)
        if config.world_size != world:
            raise RuntimeError(f"the configuration is for {config.world_size} processes but {world} were launched; "
                               f"use torchrun --nproc-per-node {config.world_size}")
        self.config = config
        self.out = Path(out)
        self.data_dir = data_dir
        self.progress = progress
        self.store = store
        self.run_id = config.run_id()
        self.run_dir = self.out / "runs" / self.run_id
        self.device = ddp.init_distributed(resolve_device(config.device))
        self.rank, self.world_size = ddp.get_rank(), ddp.get_world_size()
        self.is_main = self.rank == 0

    def check_names(self, config: TrainConfig) -> None:
        """Clear errors for unknown dataset, model and method names (before anything is loaded)."""
        for registry, name in ((DATASETS, config.dataset), (MODELS, config.model), (METHODS, config.method)):
            registry.canonical(name)

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Set the run's CPU threads (part of its identity: they change its numbers), load data, build model,
        method and optimiser (hooks below may be overridden by subclasses). :meth:`run` restores the caller's
        thread count afterwards; code that calls ``setup`` itself keeps the run's."""
        c = self.config
        threads = c.identity().get("threads")
        if threads:
            torch.set_num_threads(threads)
        self.load_data()
        torch.manual_seed(derive_seed(c.seed, "init"))
        self.model = self.build_model()
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.method: Method = METHODS.create(c.method, num_classes=self.num_classes, seed=c.seed,
                                             check_inputs=False, **c.method_kwargs).to(self.device)
        if self.method.needs_stages and not hasattr(self.model, "forward_features"):
            raise TypeError(f"method {c.method} needs a staged model; {c.model} is not one")
        if hasattr(self.method, "setup"):
            self.method.setup(self.setup_context())
        params = parameter_groups(self.model, self.method, c.lr)
        self.trained_params = [p for group in params for p in group["params"] if p.requires_grad]
        if c.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                             nesterov=c.nesterov)
        elif c.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {c.optimizer!r}; use sgd or adam")
        if c.compile:
            compile_model(self.model)
        # under torchrun: DDP wraps model + method as one step, so methods keep the plain staged model
        self.ddp_step = None
        if self.world_size > 1:
            self.ddp_step = ddp.wrap_ddp(self.model, self.method, self.loss_fn, self.device)
        self.start_epoch = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0

    def setup_context(self) -> SetupContext:
        """What the method's ``setup`` gets (after ``load_data`` and ``build_model``): the training data, model,
        device and seed, ``out`` as the cache folder, and this engine as the provider of teachers and search
        stages (:class:`mixlab.search.EngineProvider`)."""
        c = self.config
        return SetupContext(data=self.train_data, x=self.x_train, targets=self.t_train, model=self.model,
                            device=self.device, seed=c.seed, cache_dir=self.out, augment=self.augment,
                            progress=False if self.progress == "lines" else self.progress,
                            channels_last=bool(c.channels_last), provider=EngineProvider(self),
                            data_id={"dataset": c.dataset, "subset_per_class": c.subset_per_class, "seed": c.seed})

    def total_epochs(self) -> int:
        """Epochs the run loops over (after ``setup``); subclasses that count steps override it."""
        return self.config.epochs

    def train_size(self) -> int:
        """Training examples (after subsets and hold-outs)."""
        return len(self.x_train)

    def samples_seen(self) -> int:
        """Training examples processed by a full run (for samples_per_second)."""
        return self.train_size() * self.total_epochs()

    def load_splits(self):
        """The training and test splits (:class:`~mixlab.data.ImageData`) before subsets and hold-outs."""
        c = self.config
        return (load_dataset(c.dataset, "train", self.data_dir, **c.data_kwargs),
                load_dataset(c.dataset, "test", self.data_dir, **c.data_kwargs))

    def load_data(self) -> None:
        """Set ``train_data``, ``test_data``, ``num_classes``, ``x_train``, ``t_train`` (targets), ``x_test``,
        ``y_test`` on the device, and ``loss_fn``."""
        c, dev = self.config, self.device
        train, test = self.load_splits()
        if c.train_classes is not None:
            train, test = restrict_classes(train, c.train_classes), restrict_classes(test, c.train_classes)
        full, idx = train, None
        if c.subset_per_class:
            idx = per_class_indices(train.y, c.subset_per_class, seed=c.seed, num_classes=train.num_classes)
            train = train.subset(idx, f"{c.subset_per_class} per class from {train.note}")
        if c.holdout_per_class:
            holdout, rest = split_holdout(full, c.holdout_per_class, taken=idx)
            train, test = (train if idx is not None else rest), holdout
        elif c.test_limit:
            test = test.subset(torch.arange(min(c.test_limit, len(test))),
                               f"first {min(c.test_limit, len(test))} of {test.note}")
        self.train_data, self.test_data = train, test
        self.num_classes = train.num_classes
        self.multilabel = train.y.dim() == 2
        self.x_train, self.y_train = train.x.to(dev), train.y.to(dev)
        self.t_train = as_targets(self.y_train, self.num_classes, torch.float32)  # checked once, here
        self.x_test, self.y_test = test.x.to(dev), test.y.to(dev)
        self.augment = BatchAugment(train.mean, train.std, c.crop_padding, c.flip)
        self.loss_fn = multilabel_bce if self.multilabel else soft_cross_entropy

    def build_model(self) -> nn.Module:
        c = self.config
        channels, size = self.train_data.x.shape[1], self.train_data.x.shape[-1]
        return MODELS.create(c.model, num_classes=self.num_classes, in_channels=channels, image_size=size,
                             **c.model_kwargs).to(self.device)

    def train_batch(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        """Model input for the training examples ``idx`` (augmented, normalised images)."""
        return self.augment(self.x_train[idx], generator)

    def evaluate(self) -> dict:
        """Test metrics; keys at least ``test_error`` and ``test_top5_error`` (percent or None).

        Multi-label data (2-D float ``y``): ``test_map`` (mean average precision, percent) and
        ``test_error = 100 - test_map``, so tables of errors stay comparable in direction."""
        if self.multilabel:
            return evaluate_multilabel(self.model, self.x_test, self.y_test, self.augment)
        return evaluate(self.model, self.x_test, self.y_test, self.augment)

    def autocast(self):
        """The forward-pass autocast context (bf16 when ``config.bf16``, else a no-op)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def optimizer_step(self, loss: Tensor) -> None:
        """Backward of ``loss`` and one optimiser step, clipping the gradient norm to ``grad_clip`` if set.

        The backward computes gradients for the trained parameters only: nothing for inputs that a method made
        require grad for its own use (AMP's lambda, hence the first layer's input gradient of its first pass).
        The parameters' gradients are the same, bit for bit."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=self.trained_params)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trained_params, self.config.grad_clip)  # no host sync
        self.optimizer.step()

    def step_loss(self, x: Tensor, targets: Tensor) -> Tensor:
        """The method's training loss on one batch (through DDP under torchrun)."""
        with self.autocast():
            if getattr(self, "ddp_step", None) is not None:
                return self.ddp_step(x, targets)
            return self.method.training_loss(self.model, x, targets, self.loss_fn)

    def evaluate_main(self) -> dict:
        """:meth:`evaluate` on rank 0 (all ranks hold the same parameters), its metrics on every rank."""
        metrics = None
        if self.is_main:
            with self.autocast():
                metrics = self.evaluate()
        return ddp.broadcast_object(metrics)

    # ----------------------------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def save_checkpoint(self, epoch: int) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_save({"epoch": epoch, "config": self.config.identity(), "model": self.model.state_dict(),
                     "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "history": self.history, "train_seconds": self.train_seconds}, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        ddp.barrier()  # rank 0 has finished writing
        found = self.checkpoint_path.exists()
        if ddp.broadcast_object(found) != found:
            raise RuntimeError(f"{self.checkpoint_path} is not visible to every process; use a shared folder")
        if not found:
            return False
        state = read_checkpoint(self.checkpoint_path, map_location=self.device)
        if state["config"] != self.config.identity():
            raise RuntimeError(f"{self.checkpoint_path} was written by another configuration; delete it to restart")
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history, self.train_seconds = state["history"], state["train_seconds"]
        self.start_epoch = state["epoch"] + 1
        return True

    # ---------------------------------------------------------------------------------------- training
    def begin_epoch(self, epoch: int) -> torch.Generator:
        """Set the epoch's learning rate and re-derive every random stream; returns the data generator."""
        c = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(c, epoch) * group.get("lr_scale", 1.0)
        rank = (self.rank,) if self.world_size > 1 else ()  # each process its own random streams
        torch.manual_seed(derive_seed(c.seed, epoch, "torch", *rank))
        self.method.reseed(derive_seed(c.seed, epoch, "method", *rank))
        self.step_losses: list[Tensor] = []
        self.method.set_epoch(epoch)
        return torch.Generator().manual_seed(derive_seed(c.seed, epoch, "data"))

    def record_loss(self, loss: Tensor) -> None:
        """Keep one step's loss (on the device: no host sync) for the epoch's mean and the divergence check."""
        self.step_losses.append(loss.detach())

    def epoch_loss(self) -> Tensor:
        """Mean of the epoch's step losses (a device tensor; NaN / inf if any step's loss was)."""
        total = torch.zeros((), device=self.device)
        for loss in self.step_losses:
            total += loss
        return total / max(len(self.step_losses), 1)

    def steps_before(self, epoch: int) -> int:
        """Optimiser steps of the epochs before ``epoch`` (0-based); every epoch has as many as this one."""
        return epoch * len(self.step_losses)

    def divergence(self, epoch: int) -> dict:
        """Where the loss first became non-finite in ``epoch`` (0-based), read once from its step losses."""
        losses = torch.stack(self.step_losses).float().cpu()
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        first = int(bad[0]) if len(bad) else len(losses)  # this rank stayed finite: another rank diverged
        if self.world_size > 1:
            first = int(ddp.all_reduce_min(torch.tensor(first, device=self.device)))
        first = min(first, len(losses) - 1)
        return {"status": "diverged", "diverged_epoch": epoch + 1,
                "diverged_step": self.steps_before(epoch) + first + 1, "diverged_loss": str(float(losses[first]))}

    def train_epoch(self, epoch: int) -> Tensor:
        c, dev = self.config, self.device
        data_gen = self.begin_epoch(epoch)
        n = self.x_train.shape[0]
        order = torch.randperm(n, generator=data_gen).to(dev)
        if self.world_size > 1:  # same permutation everywhere, each rank its shard (as DistributedSampler)
            order = ddp.shard_indices(order, self.rank, self.world_size)
            data_gen.manual_seed(derive_seed(c.seed, epoch, "data", self.rank))
        self.model.train()
        self.method.train()
        for start in range(0, order.numel(), c.batch_size):
            idx = order[start:start + c.batch_size]
            if idx.numel() < 2:  # a final batch of one cannot be mixed
                continue
            x = self.train_batch(idx, data_gen)
            if c.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            loss = self.step_loss(x, self.t_train[idx])
            self.optimizer_step(loss)
            self.record_loss(loss)
        return self.epoch_loss()

    #: without a terminal (CI, nohup, a log file), a progress line at most this often (seconds) while training
    progress_every_s = 30.0

    def run(self, resume: bool = False) -> dict:
        """Train (``resume``: from the last checkpoint, if any) and return the result; also stored in the results
        store. A run whose training loss becomes non-finite stops at the end of that epoch and is stored and
        returned with ``status: "diverged"``, ``diverged_epoch``, ``diverged_step`` and no test error."""
        before = torch.get_num_threads()  # setup() sets the run's threads; the caller gets its own back
        try:
            with run_lock(self.run_dir) if self.is_main else contextlib.nullcontext():
                return self._run(resume)
        finally:
            torch.set_num_threads(before)

    def _run(self, resume: bool) -> dict:
        from tqdm.auto import tqdm

        self.setup()
        c = self.config
        epochs = self.total_epochs()
        if resume and self.load_checkpoint() and self.is_main:
            print(f"resuming {self.run_id} after epoch {self.start_epoch} of {epochs}", file=sys.stderr)
        show_bar = sys.stderr.isatty() if self.progress is None else self.progress is True
        bar = tqdm(range(self.start_epoch, epochs), initial=self.start_epoch, total=epochs,
                   desc=f"{c.method} s{c.seed}", disable=not self.is_main or not show_bar,
                   leave=False, dynamic_ncols=True)
        # a line now and then instead of a bar: without a terminal, or when asked ("lines": runs trained side by side)
        lines = self.is_main and not show_bar and self.progress is not False
        last_line = time.perf_counter()
        diverged = None
        try:
            for epoch in bar:
                t0 = time.perf_counter()
                loss = self.train_epoch(epoch)
                ddp.broadcast_buffers(self.model)  # BN statistics as rank 0's: every rank holds the same state
                loss_value = float(ddp.all_reduce_mean(loss))  # one sync per epoch
                self.train_seconds += time.perf_counter() - t0
                if not math.isfinite(loss_value):  # NaN / inf at some step of this epoch: stop, record where
                    diverged = self.divergence(epoch)
                    break
                record = {"epoch": epoch + 1, "train_loss": loss_value, "lr": self.optimizer.param_groups[0]["lr"]}
                if c.eval_every and (epoch + 1) % c.eval_every == 0 and epoch + 1 < epochs:
                    record.update(self.evaluate_main())
                self.history.append(record)
                if self.is_main:
                    self.save_checkpoint(epoch)
                bar.set_postfix(loss=f"{loss_value:.3f}")
                if lines and time.perf_counter() - last_line >= self.progress_every_s and epoch + 1 < epochs:
                    print(f"  {c.method} s{c.seed}: epoch {epoch + 1} of {epochs}, train loss {loss_value:.3f}, "
                          f"{self.train_seconds:.0f} s", file=sys.stderr, flush=True)
                    last_line = time.perf_counter()
        except KeyboardInterrupt:
            if self.is_main:
                print(f"\ninterrupted; the last finished epoch is saved in {self.checkpoint_path}. "
                      f"Run the same command with --resume to continue.", file=sys.stderr)
            raise
        finally:
            bar.close()
        result = {"run_id": self.run_id, "method": c.method, "dataset": c.dataset, "model": c.model,
                  "seed": c.seed, "epochs": c.epochs, "protocol": c.protocol}
        if diverged:  # the weights are NaN / inf: nothing to evaluate, and no number to average
            result.update(diverged, test_error=None, test_top5_error=None)
            if self.is_main:
                print(f"{self.run_id} diverged: non-finite training loss at epoch {diverged['diverged_epoch']} of "
                      f"{epochs}, step {diverged['diverged_step']}; stored with status 'diverged', no test "
                      f"error (try a lower --lr or --grad-clip)", file=sys.stderr, flush=True)
        else:
            result.update(status="ok", **self.evaluate_main())
        samples = self.samples_seen()
        result.update({"train_seconds": self.train_seconds,
                       "samples_per_second": samples / self.train_seconds if self.train_seconds and not diverged
                       else None,
                       "train_size": self.train_size(), "test_set": self.test_data.note,
                       "device": str(self.device), "history": self.history})
        if self.world_size > 1:
            result["world_size"] = self.world_size
        if self.store and self.is_main:
            from ..results import ResultsStore

            ResultsStore(self.out).add_run(result, c.identity())
        return result
