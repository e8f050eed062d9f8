"""The engine on a user's own model and data, from Python.

>>> result = mixlab.fit(my_model, train_dataset, test_dataset, method="alignmix", epochs=30, lr=0.1)

* **Data**: a map-style ``torch.utils.data.Dataset`` of ``(x, y)`` pairs, or a ``DataLoader``. Images
  (``(C, H, W)`` tensors, uint8 or float, or PIL images) that fit in ``max_memory_mb`` are read once into memory
  and take the engine's fast path (device-resident, batched augmentation: ``crop_padding``, ``flip``, subsets,
  hold-outs as for the registered datasets); uint8 images are normalised with the training set's statistics, float
  images are used as given (already transformed). Anything else, and every ``DataLoader``, is streamed: batches as
  the loader makes them (a ``Dataset`` gets a seeded, shuffled loader of ``batch_size``, ``num_workers``), moved to
  the device, no augmentation by the engine. Labels: integers (``dataset.classes`` names the classes, else
  ``num_classes`` or the labels seen).
* **Model**: any ``nn.Module``; a method that mixes inside the network gets it through :func:`mixlab.stage`.
  The model is trained in place (checkpoints hold ``model.state_dict()``).

Runs are stored as every run: the run id adds a fingerprint of the model (class, parameter shapes) and the data
(class, size, a sample of its content), and ``config.model`` / ``config.dataset`` become the class names unless
set to a name of your own.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..config import TrainConfig
from ..data.images import ImageData
from ..data.local import channel_stats, images_to_uint8
from ..methods.base import as_targets, soft_cross_entropy
from ..models.adapter import stage
from ..registry import DATASETS, METHODS, MODELS
from .engine import Trainer
from .evaluation import evaluate


class _AsGiven:
    """The streaming path's "augmentation": batches as the user's loader made them (float, on their device)."""

    mean = std = None

    def __call__(self, x: Tensor, generator=None, train: bool = True) -> Tensor:
        return x.float() if not x.is_floating_point() and x.dtype == torch.uint8 else x


def _fingerprint(*parts) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:8]


def model_fingerprint(model: nn.Module) -> str:
    return _fingerprint(type(model).__qualname__, [(n, tuple(p.shape)) for n, p in model.named_parameters()])


def _is_image(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image) or (isinstance(x, Tensor) and x.dim() == 3)


def dataset_in_memory(ds: Dataset, max_memory_mb: float) -> ImageData | None:
    """A map-style dataset of image pairs as :class:`ImageData` when it fits in ``max_memory_mb``, else None."""
    n = len(ds)
    x0, _ = ds[0][:2]
    if not _is_image(x0):
        return None
    if isinstance(x0, Tensor) and n * x0.numel() * x0.element_size() / 2 ** 20 > max_memory_mb:
        return None
    items = [ds[i] for i in range(n)]  # reading the data once (the training loop never loops over samples)
    y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    if isinstance(x0, Tensor):
        x = torch.stack([it[0] for it in items])
    else:  # PIL images
        try:
            x = images_to_uint8([it[0] for it in items], None, max_memory_mb, type(ds).__name__)
        except ValueError:  # sizes differ, or too large: stream it
            return None
    classes = [str(c) for c in getattr(ds, "classes", [])] or [str(c) for c in range(int(y.max()) + 1)]
    if x.dtype == torch.uint8:
        mean, std = channel_stats(x)
    elif x.is_floating_point():  # already transformed: used as given
        mean, std = (0.0,) * x.shape[1], (1.0,) * x.shape[1]
    else:
        return None
    return ImageData(type(ds).__name__, "", x, y, classes, mean, std, f"{type(ds).__name__}: {n} examples in memory")


class CustomTrainer(Trainer):
    """:class:`~mixlab.train.engine.Trainer` on a user's ``model`` and ``train`` / ``test`` data (see the module
    docstring). Without ``test``, pass ``holdout_per_class`` (in-memory data) to score on held-out training
    examples. Other arguments as :class:`Trainer`; ``num_workers`` for streamed datasets."""

    def __init__(self, config: TrainConfig, model: nn.Module | None = None, train=None, test=None,
                 num_classes: int | None = None, max_memory_mb: float = 4096, num_workers: int = 0, **kwargs):
        if train is not None and test is None and not config.holdout_per_class:
            raise ValueError("give test data (a Dataset or DataLoader) or holdout_per_class=N to score the run")
        self.user_model, self.user_train, self.user_test = model, train, test
        self.user_classes, self.max_memory_mb, self.num_workers = num_classes, max_memory_mb, num_workers
        self.streaming = False
        labels = {}
        if model is not None and config.model in MODELS:
            labels["model"] = type(model).__name__
        if train is not None and config.dataset in DATASETS:
            labels["dataset"] = _name(train)
        config = dataclasses.replace(config, **labels)
        super().__init__(config, **kwargs)
        parts = []
        if model is not None:
            parts.append(model_fingerprint(model))
        if train is not None:
            parts.append(self._data_fingerprint(train, test))
        self.run_id = f"{self.run_id}-{_fingerprint(*parts)}"
        self.run_dir = self.out / "runs" / self.run_id

    def check_names(self, config: TrainConfig) -> None:
        METHODS.canonical(config.method)
        if self.user_train is None:
            DATASETS.canonical(config.dataset)
        if self.user_model is None:
            MODELS.canonical(config.model)

    @staticmethod
    def _data_fingerprint(*sources) -> str:
        parts = []
        for src in sources:
            ds = getattr(src, "dataset", src)
            if ds is None:
                continue
            n = len(ds) if hasattr(ds, "__len__") else -1
            sample = [ds[i] for i in range(0, n, max(1, n // 8))][:8] if n > 0 and hasattr(ds, "__getitem__") else []
            digest = hashlib.sha1()
            for item in sample:
                for v in item[:2]:
                    digest.update(v.detach().cpu().contiguous().numpy().tobytes() if isinstance(v, Tensor)
                                  else repr(v).encode())
            parts.append((type(ds).__qualname__, n, digest.hexdigest()[:8]))
        return _fingerprint(*parts)

    # ---------------------------------------------------------------------------------------------- data
    def load_data(self) -> None:
        if self.user_train is None:
            return super().load_data()
        if self.world_size > 1:
            raise RuntimeError("training on a user's Dataset / DataLoader under torchrun is not supported yet; "
                               "run in one process")
        train = test = None
        if isinstance(self.user_train, Dataset) and (self.user_test is None or isinstance(self.user_test, Dataset)):
            train = dataset_in_memory(self.user_train, self.max_memory_mb)
            test = dataset_in_memory(self.user_test, self.max_memory_mb) if self.user_test is not None else None
        self.streaming = train is None or (self.user_test is not None and test is None)
        if not self.streaming:
            return self._in_memory(train, test)
        c = self.config
        if c.subset_per_class or c.holdout_per_class or c.train_classes or c.test_limit:
            raise ValueError("subset_per_class, holdout_per_class, train_classes and test_limit need data in memory "
                             "(image pairs under max_memory_mb); select the examples in your Dataset instead")
        self.train_data = None
        self.test_data = _Described(f"{_name(self.user_test)}, streamed")
        self.x_train = self.x_test = self.t_train = None
        self.num_classes = self._num_classes()
        self.multilabel = False
        self.augment = _AsGiven()
        self.loss_fn = soft_cross_entropy

    def _in_memory(self, train: ImageData, test: ImageData | None) -> None:
        """The engine's own data path on in-memory data (subsets, hold-outs, augmentation)."""
        test = test if test is not None else train  # only scored through holdout_per_class (checked above)
        if self.user_classes:
            train.classes = test.classes = [str(c) for c in range(self.user_classes)]
        test.mean, test.std = train.mean, train.std
        self._splits = (train, test)
        super().load_data()

    def load_splits(self):
        return self._splits if self.user_train is not None else super().load_splits()

    def _num_classes(self) -> int:
        ds = getattr(self.user_train, "dataset", self.user_train)
        if self.user_classes:
            return int(self.user_classes)
        if getattr(ds, "classes", None):
            return len(ds.classes)
        targets = getattr(ds, "targets", None)
        if targets is not None:
            return int(torch.as_tensor(targets).max()) + 1
        raise ValueError("streamed data: pass num_classes=N (or give the dataset a 'classes' attribute)")

    def train_size(self) -> int:
        if self.streaming:
            return len(getattr(self.user_train, "dataset", self.user_train))
        return super().train_size()

    def build_model(self) -> nn.Module:
        if self.user_model is None:
            return super().build_model()
        c = self.config
        needs_stages = METHODS.create(c.method, num_classes=self.num_classes, **c.method_kwargs).needs_stages
        return (stage(self.user_model) if needs_stages else self.user_model).to(self.device)

    # ------------------------------------------------------------------------------------------ training
    def loader(self, source, generator: torch.Generator | None, shuffle: bool) -> DataLoader:
        if isinstance(source, DataLoader):
            return source
        return DataLoader(source, batch_size=self.config.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda")

    def train_epoch(self, epoch: int) -> Tensor:
        if not self.streaming:
            return super().train_epoch(epoch)
        dev = self.device
        data_gen = self.begin_epoch(epoch)
        self.model.train()
        self.method.train()
        for batch in self.loader(self.user_train, data_gen, shuffle=True):
            x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
            if x.shape[0] < 2:  # a final batch of one cannot be mixed
                continue
            loss = self.step_loss(self.augment(x), as_targets(y, self.num_classes, torch.float32, False))
            self.optimizer_step(loss)
            self.record_loss(loss)
        return self.epoch_loss()

    def evaluate(self) -> dict:
        if not self.streaming:
            return super().evaluate()
        n, sums = 0, {"test_error": 0.0, "test_top5_error": 0.0, "test_loss": 0.0}
        top5 = True
        for batch in self.loader(self.user_test, None, shuffle=False):
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            r = evaluate(self.model, x, y, self.augment, batch_size=len(y))
            top5 = top5 and r["test_top5_error"] is not None
            for k in sums:
                sums[k] += (r[k] or 0.0) * len(y)
            n += len(y)
        self.test_data.note = f"{_name(self.user_test)}: {n} examples, streamed"
        out = {k: v / max(n, 1) for k, v in sums.items()}
        return {**out, "test_top5_error": out["test_top5_error"] if top5 else None, "test_size": n}


class _Described:
    """What the result's ``test_set`` says about streamed test data."""

    def __init__(self, note: str):
        self.note = note


def _name(source) -> str:
    """The class name of a Dataset, or of a DataLoader's dataset."""
    return type(getattr(source, "dataset", source)).__name__


def fit(model: nn.Module, train, test=None, method: str = "mixup", out: str = "mixlab-out",
        method_kwargs: dict | None = None, num_classes: int | None = None, num_workers: int = 0,
        max_memory_mb: float = 4096, resume: bool = False, progress: bool | None = None, **config) -> dict:
    """Train ``model`` on ``train`` with a mixlab ``method`` through the engine; returns the run's result.

    ``config``: :class:`TrainConfig` fields (``epochs``, ``lr``, ``batch_size``, ``seed``, ``device``,
    ``crop_padding``, ``flip``, ...). Results and checkpoints go to ``out`` (``results.db``, ``runs/``)."""
    cfg = TrainConfig(method=method, method_kwargs=dict(method_kwargs or {}), **config)
    trainer = CustomTrainer(cfg, model=model, train=train, test=test, num_classes=num_classes,
                            num_workers=num_workers, max_memory_mb=max_memory_mb, out=out, progress=progress)
    return trainer.run(resume=resume)
