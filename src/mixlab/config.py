"""What defines a training run: :class:`TrainConfig`, its identity and its run id (see docs/architecture.md,
"Run identity").

Beside the data and models: protocols, the engine and the evaluations all speak of runs through this one
dataclass, and none of them needs the engine to do so.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

import torch

from .checks import check, nonneg_float, nonneg_int, positive_float, positive_int
from .data import IMAGE_DATASETS, split_dataset_spec
from .registry import DATASETS, METHODS, MODELS


#: Bumped whenever the engine, a model, data loading or augmentation changes the numbers a configuration gives
#: (a method's own code has its ``revision``); part of every run's identity, so a store never reuses such runs.
#: 1: identity covers CPU threads, device kind and this revision (issue 16); earlier runs had none of them.
ENGINE_REVISION = 1


def device_kind(name: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a device name (``"auto"`` resolved on this machine, ``"cuda:1"`` -> ``"cuda"``)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


#: model attribute: the model's per-batch work is large enough on a CPU for more than one thread to pay
PARALLEL_CPU_ATTR = "parallel_cpu"


def default_threads(config: "TrainConfig") -> int:
    """CPU threads of a run that does not set ``threads``: one, unless the model declares ``parallel_cpu = True``
    (ResNets, MiniLM), then every CPU this process may use.

    Why one: the models of the CPU-sized protocols (cnn11 at width x0.25, Kim CNN, BagNet) do too little work per
    batch for a second thread to pay, and on a shared machine several threads per process wait on each other
    (``digits-quick`` trained about 9x faster with one thread per run on a loaded 2-core machine). One thread also
    gives the same run, and the same numbers, on machines with any number of cores.
    """
    model = MODELS.get(config.model, None)
    if getattr(model, PARALLEL_CPU_ATTR, False):
        return cpu_cores()
    return 1


def cpu_cores() -> int:
    """The CPUs this process may use (its affinity where the platform tells, else every CPU)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_job(jobs: int) -> int:
    """CPU threads for each of ``jobs`` runs trained at once, so that together they fit the cores (at least one)."""
    return max(1, cpu_cores() // jobs)


def fit_to_jobs(config: "TrainConfig", jobs: int) -> "TrainConfig":
    """``config`` to train beside ``jobs - 1`` others on this machine: a CPU run without ``threads`` whose default
    (:func:`default_threads`) would not fit gets :func:`threads_per_job`, written into the config. Its run id
    depends on the threads, as always, never on ``jobs`` itself: a run keeps its id (and its numbers) whenever its
    threads are the same, e.g. every one-thread run, and an explicit ``threads`` is never changed."""
    if jobs <= 1 or config.threads is not None or device_kind(config.device) != "cpu":
        return config
    fitted = min(default_threads(config), threads_per_job(jobs))
    return config if fitted == default_threads(config) else dataclasses.replace(config, threads=fitted)


@dataclass
class TrainConfig:
    """Everything that defines a run (and its run id)."""

    dataset: str = "digits"
    model: str = "cnn11"
    method: str = "erm"
    method_kwargs: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    subset_per_class: int | None = None
    test_limit: int | None = None  # evaluate on the first N test images (quick protocols only)
    #: evaluate on N images per class of the *training* split, disjoint from the training images, instead of the
    #: test set: a validation set for choosing hyper-parameters without looking at test images
    holdout_per_class: int | None = None
    epochs: int = 10
    batch_size: int = 50
    lr: float = 0.1
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: tuple[int, ...] = (50, 75)
    gamma: float = 0.1
    crop_padding: int = 0
    flip: bool = False
    seed: int = 0
    device: str = "cpu"
    protocol: str | None = None
    eval_every: int = 0  # evaluate every N epochs (0: only at the end)
    grad_clip: float | None = None  # clip the global gradient norm of all trained parameters (AMP authors: 10)
    #: NHWC memory format for the model and its training batches. None (default): set on construction, True for
    #: image datasets, where oneDNN's NHWC convolutions are faster (1.1-1.3x per step on the CPU measured,
    #: docs/notes/speed-speed.md); NHWC rounds differently from NCHW, so such runs have their own ids
    channels_last: bool | None = None
    # GPU path (off by default: the fp32 path is unchanged)
    bf16: bool = False  # bfloat16 autocast around forward passes (training and evaluation)
    compile: bool = False  # torch.compile every stage / child module of the model (in place)
    world_size: int = 1  # processes training together; set from torchrun's WORLD_SIZE by the Trainer
    #: torch intra-op threads of a CPU run (None: :func:`default_threads`); part of a CPU run's identity
    threads: int | None = None
    # text protocols (mixlab.train.text); left out of the identity while unset, so image run ids are unchanged
    max_steps: int | None = None  # stop after this many optimiser steps (epochs then only bound the loop)
    eval_steps: int = 0  # evaluate dev and test every N steps (dev-selected / best-step errors)
    data_kwargs: dict = field(default_factory=dict)  # loader options (fold, dev_fraction, ratio, ...)
    #: train (and test) on these classes only, relabelled 0..n-1 in this order (open-set protocols)
    train_classes: tuple[int, ...] | None = None

    def __post_init__(self):
        name, options = split_dataset_spec(self.dataset)  # "imagefolder:PATH" -> "imagefolder", path in data_kwargs
        if options:
            self.dataset, self.data_kwargs = name, {**self.data_kwargs, **options}
        if self.channels_last is None:  # the default, decided by the data: NHWC for images
            self.channels_last = self.dataset in DATASETS and DATASETS.canonical(self.dataset) in IMAGE_DATASETS
        # refuse out-of-range numbers, naming the field and the allowed range (``0`` never means "default")
        positive_int("subset_per_class", self.subset_per_class, none="the whole training set")
        positive_int("test_limit", self.test_limit, none="the whole test set")
        positive_int("holdout_per_class", self.holdout_per_class, none="evaluate on the test set")
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_float("lr", self.lr)
        check("momentum", self.momentum, 0, 1, hi_open=True)
        nonneg_float("weight_decay", self.weight_decay)
        for m in self.milestones:
            positive_int("each of milestones", m)
        positive_float("gamma", self.gamma)
        nonneg_int("crop_padding", self.crop_padding)
        nonneg_int("seed", self.seed)
        nonneg_int("eval_every", self.eval_every)
        positive_float("grad_clip", self.grad_clip, none="no clipping")
        positive_int("world_size", self.world_size)
        positive_int("max_steps", self.max_steps, none="epochs bound the run")
        nonneg_int("eval_steps", self.eval_steps)
        # options against the method's and model's signatures, before any data is loaded (unknown names: at setup)
        if self.method in METHODS:
            METHODS.check_options(self.method, self.method_kwargs)
        if self.model in MODELS:
            MODELS.check_options(self.model, self.model_kwargs)

    def identity(self) -> dict:
        """What makes the run's numbers: the fields (optional ones only when set), the device kind; for a CPU run
        the CPU's instruction set as torch dispatches on it (``cpu_capability``, e.g. ``AVX512``) and the threads
        (resolved by :func:`default_threads` when unset); ``engine_revision`` and the method's ``method_revision``
        (when not 0)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(d["milestones"])
        d["device"] = device_kind(self.device)
        if d["device"] == "cpu":  # the kernels torch picks for this CPU's instruction set, and how many threads
            d["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            d["threads"] = self.threads or default_threads(self)
        for name, default in _OPTIONAL_IDENTITY.items():  # optional fields appear only when set
            if d[name] == default:
                del d[name]
        if d.get("train_classes") is not None:
            d["train_classes"] = list(d["train_classes"])
        d["engine_revision"] = ENGINE_REVISION
        target = METHODS.get(self.method, None)
        revision = getattr(getattr(target, "func", target), "revision", 0)  # functools.partial entries too
        if revision:
            d["method_revision"] = revision
        return d

    @classmethod
    def from_identity(cls, d: dict) -> "TrainConfig":
        """The config of a stored run (``identity()`` or a checkpoint's ``config``); unknown keys are refused."""
        d = dict(d)
        for key in ("method_revision", "engine_revision", "cpu_capability"):  # of the code / machine, not fields
            d.pop(key, None)
        d.setdefault("channels_last", False)  # absent: False, and runs stored before the default came were NCHW
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"this build's TrainConfig has no fields {unknown}; the run was made by another build")
        d["milestones"] = tuple(d.get("milestones", ()))
        if d.get("train_classes") is not None:
            d["train_classes"] = tuple(d["train_classes"])
        return cls(**d)

    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return f"{self.method}-{self.dataset}-{self.model}-s{self.seed}-{hashlib.sha1(blob).hexdigest()[:10]}"


_OPTIONAL_IDENTITY = {"grad_clip": None, "channels_last": False, "bf16": False, "compile": False, "world_size": 1,
                      "max_steps": None, "eval_steps": 0, "data_kwargs": {}, "train_classes": None,
                      "holdout_per_class": None, "threads": None}
