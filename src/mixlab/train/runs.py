"""Running configurations: the trainer for a config, one run, and a sweep that trains only what is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from torch import nn

from ..config import TrainConfig
from ..data import is_text_dataset
from ..results import ResultsStore
from .custom import CustomTrainer
from .engine import Trainer, run_unless_locked
from .text import TextTrainer


def trainer_class(config: TrainConfig, data_dir: str | None = None) -> type[Trainer]:
    """The engine class for a configuration of registered data (the one place that picks it by dataset kind)."""
    return TextTrainer if is_text_dataset(config.dataset, config.data_kwargs, data_dir) else Trainer


def make_trainer(config: TrainConfig, model: nn.Module | None = None, train=None, test=None, **kwargs) -> Trainer:
    """The trainer for a configuration (:func:`trainer_class`; ``kwargs`` go to its constructor).

    ``model``, ``train``, ``test``: a user's own ``nn.Module`` and data (a ``torch.utils.data.Dataset`` or
    ``DataLoader``) instead of registered names (:class:`mixlab.train.custom.CustomTrainer`)."""
    if model is not None or train is not None:
        return CustomTrainer(config, model=model, train=train, test=test, **kwargs)
    return trainer_class(config, kwargs.get("data_dir"))(config, **kwargs)


def train(config: TrainConfig, **kwargs) -> dict:
    """Train ``config`` (see :class:`Trainer` for keyword arguments) and return its result."""
    resume = kwargs.pop("resume", False)
    return make_trainer(config, **kwargs).run(resume=resume)


def train_missing(configs: Iterable[TrainConfig], out: str | Path, data_dir: str | None = None,
                  progress: bool | None = None, log: Callable[[str], None] = print,
                  label: Callable[[TrainConfig, int, int], str] | None = None,
                  say_done: bool = False) -> tuple[list[str], set[str]]:
    """Train, one after another, every config whose run is not in ``<out>/results.db`` yet (resuming from its
    checkpoint); the rest is left as stored. ``label(config, i, n)`` names the ``i``-th of ``n`` runs to train in
    the log lines (default: protocol, method and seed); ``say_done`` logs the runs found already too.

    Returns ``(run_ids, locked)``: the run id of every config, in order (as its trainer names it: under torchrun
    it records the world size), and those skipped because another process is training them right now (a second
    sweep on the same ``out``): they are missing still.
    """
    store = ResultsStore(out)
    trainers = [make_trainer(c, out=out, data_dir=data_dir, progress=progress) for c in configs]
    todo = [t for t in trainers if not store.has_run(t.run_id)]
    label = label or (lambda c, i, n: f"  [{i}/{n}] {c.protocol} {c.method} seed {c.seed}")
    if say_done:
        for t in trainers:
            if t not in todo:
                log(f"{label(t.config, 0, len(todo))}: done already ({t.run_id})")
    locked = set()
    for i, trainer in enumerate(todo, 1):
        text = label(trainer.config, i, len(todo))
        result = run_unless_locked(trainer, log, text)
        if result is None:
            locked.add(trainer.run_id)
            continue
        log(f"{text}: " + (f"DIVERGED at epoch {result['diverged_epoch']}, step {result['diverged_step']} "
                           f"(no test error)" if result["status"] == "diverged"
                           else f"test error {result['test_error']:.2f}%") + f" ({result['train_seconds']:.1f} s)")
    return [t.run_id for t in trainers], locked
