"""The trainer for a configuration: the engine class its data need, or the engine for a user's own model and data
(the one place that picks it)."""
from __future__ import annotations

from torch import nn

from ..config import TrainConfig
from ..data import is_text_dataset
from .custom import CustomTrainer
from .engine import Trainer
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
