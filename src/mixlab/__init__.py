"""mixlab: sample-mixing data augmentation (the mixup family) for PyTorch.

>>> import mixlab
>>> mixer = mixlab.create("mixup", alpha=1.0, num_classes=10)
>>> x_mix, y_mix = mixer(x, y)          # input-space mixers
>>> loss = method.training_loss(model, x, targets)   # any method, on a staged model
>>> net = mixlab.stage(my_model)        # a user's own nn.Module with the staged interface
"""
from __future__ import annotations

from ._version import __version__

from .registry import DATASETS, METHODS, MODELS
from . import methods as _methods  # noqa: F401  (registers methods)
from . import models as _models  # noqa: F401  (registers models)
from . import data as _data  # noqa: F401  (registers datasets)
from .methods.base import Method, InputMixer, MixCollate, soft_cross_entropy, multilabel_bce
from .models.adapter import StagedAdapter, stage


def create(name: str, **kwargs):
    """Build a registered method, e.g. ``mixlab.create("cutmix", alpha=1.0, num_classes=10)``."""
    return METHODS.create(name, **kwargs)


def list_methods() -> list[str]:
    """Names of every registered method."""
    return METHODS.names()


def create_model(name: str, **kwargs):
    """Build a registered staged model, e.g. ``mixlab.create_model("preactresnet18", num_classes=10)``."""
    return MODELS.create(name, **kwargs)


def fit(model, train, test=None, method: str = "mixup", **kwargs) -> dict:
    """Train a user's ``model`` on a ``torch`` Dataset / DataLoader with a mixlab method through the engine
    (:func:`mixlab.train.custom.fit`: ``epochs=``, ``lr=``, ``batch_size=``, ``out=``, ...); returns the result."""
    from .train.custom import fit as _fit

    return _fit(model, train, test, method=method, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = ["create", "list_methods", "create_model", "stage", "fit", "StagedAdapter", "list_models", "list_datasets",
           "Method", "InputMixer", "MixCollate", "soft_cross_entropy", "multilabel_bce", "METHODS", "MODELS", "DATASETS", "__version__"]
