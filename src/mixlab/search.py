"""Pre-trained parts that methods ask for in ``setup``: teachers and searched modules (the engine's side).

A method never drives the engine. When it needs a trained network before the task run starts, it asks its
:class:`~mixlab.methods.base.SetupContext`, and the provider here answers:

* ``teacher(epochs)``: an ERM classifier of the same data, model and schedule as the task run (``epochs``
  overrides its length), trained as the run ``erm`` would be in the same output folder, so a benchmark's ERM
  baseline of the same seed doubles as the teacher (whichever comes first trains it). Returned as a
  *teacher record* (:func:`teacher_record`), a plain dict a method rebuilds the network from.
* ``search(method, module, checkpoint)``: a method's search stage (TransformMix's, Alg. 1): ``module``'s
  parameters trained by SGD on the method's ``search_loss`` over the training set with the task's augmentation,
  resumable through ``checkpoint`` (:func:`search_module`).
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .locks import RunLocked
from .seeding import derive_seed


def teacher_config(config: TrainConfig, epochs: int | None = None) -> TrainConfig:
    """The ERM run of the same data, model and schedule (``epochs`` overrides its length)."""
    return dataclasses.replace(config, method="erm", method_kwargs={},
                               epochs=config.epochs if epochs is None else int(epochs))


def teacher_record(trainer) -> dict:
    """What rebuilds a trained teacher: its model name, options, data identity, normalisation and weights."""
    c = trainer.config
    return {"model": c.model, "model_kwargs": dict(c.model_kwargs), "dataset": c.dataset,
            "subset_per_class": c.subset_per_class, "seed": c.seed, "epochs": c.epochs,
            "num_classes": trainer.num_classes, "in_channels": int(trainer.x_train.shape[1]),
            "image_size": int(trainer.x_train.shape[-1]), "mean": list(trainer.augment.mean),
            "std": list(trainer.augment.std), "state_dict": trainer.model.state_dict()}


def search_module(method, module: nn.Module, x_uint8, targets, augment, seed: int = 0,
                  checkpoint: Path | None = None, progress: bool | None = None) -> list[float]:
    """A method's search stage: train ``module`` on ``method.search_loss`` (TransformMix, Alg. 1, SEARCH).

    ``x_uint8`` / ``targets`` are the training images and ``(N, C)`` targets, ``augment`` the task's
    :class:`~mixlab.data.augment.BatchAugment`. The method provides ``search`` (a dict with ``epochs``, ``lr``,
    ``momentum``, ``weight_decay``, ``batch_size``), ``begin_search(module, x_uint8, targets, augment, seed)``
    (called once before the first step, e.g. to attach the module unfrozen and fit a temperature),
    ``search_loss(x, t)`` (the loss of one batch of model inputs and targets), ``end_search(module)`` and
    ``reseed``. SGD with momentum; every epoch re-derives the method's and the data's random streams from
    ``seed``, so a resumed search (``checkpoint``) replays the epochs an uninterrupted one would. Returns the
    mean loss of every epoch.
    """
    from tqdm.auto import tqdm

    settings = method.search
    method.begin_search(module, x_uint8, targets, augment, seed)
    opt = torch.optim.SGD(module.parameters(), lr=settings["lr"], momentum=settings["momentum"],
                          weight_decay=settings["weight_decay"])
    start, losses = 0, []
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=x_uint8.device, weights_only=False)
        module.load_state_dict(state["module"])
        opt.load_state_dict(state["optimizer"])
        start, losses = state["epoch"] + 1, state["losses"]
    n, bs = x_uint8.shape[0], settings["batch_size"]
    bar = tqdm(range(start, settings["epochs"]), initial=start, total=settings["epochs"],
               desc=f"{method.name} search", disable=None if progress is None else not progress, leave=False)
    for epoch in bar:
        method.reseed(derive_seed(seed, epoch, "search-method"))
        gen = torch.Generator().manual_seed(derive_seed(seed, epoch, "search-data"))
        order = torch.randperm(n, generator=gen).to(x_uint8.device)
        total = torch.zeros((), device=x_uint8.device)
        steps = 0
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            if idx.numel() < 2:
                continue
            loss = method.search_loss(augment(x_uint8[idx], gen), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        losses.append(float(total) / max(steps, 1))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"module": module.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                        "losses": losses}, checkpoint)
    bar.close()
    method.end_search(module)
    return losses


def run_waiting(trainer, poll_s: float = 2.0) -> dict:
    """``trainer.run(resume=True)``, waiting while another process trains the same run (e.g. the sweep's own
    ``erm`` run of this seed, trained beside this one by ``--jobs``): then it resumes from that run's last
    checkpoint, which is its end."""
    said = False
    while True:
        try:
            return trainer.run(resume=True)
        except RunLocked as error:
            if not said:
                print(f"waiting: {error}", file=sys.stderr, flush=True)
                said = True
            time.sleep(poll_s)


class EngineProvider:
    """What the engine gives methods' ``setup`` (:class:`~mixlab.methods.base.SetupContext` ``provider``):
    teachers trained as runs of the same engine, and search stages on the run's training data."""

    def __init__(self, trainer):
        self.trainer = trainer

    def teacher_identity(self, epochs: int | None = None) -> dict:
        """The identity of the teacher run (part of cache keys of what is built from the teacher)."""
        return teacher_config(self.trainer.config, epochs).identity()

    def teacher(self, epochs: int | None = None) -> dict:
        """Train (or reuse) the teacher run and return its record (:func:`teacher_record`, plus ``test_error``)."""
        t = self.trainer
        config = teacher_config(t.config, epochs)
        teacher = type(t)(config, out=t.out, data_dir=t.data_dir, progress=t.progress, store=False)
        result = run_waiting(teacher)
        print(f"{t.config.method}: teacher {config.model} on {config.dataset}: test error "
              f"{result['test_error']:.2f}%", file=sys.stderr)
        record = teacher_record(teacher)
        record["test_error"] = result["test_error"]
        return record

    def search(self, context, method, module: nn.Module, checkpoint: Path | None = None) -> list[float]:
        return search_module(method, module, context.x, context.targets, context.augment, context.seed,
                             checkpoint, context.progress)
