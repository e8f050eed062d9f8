"""The training engine (:mod:`.engine`), its variants for text (:mod:`.text`) and for a user's own model and data
(:mod:`.custom`), and the evaluation it runs."""
from torch import nn

from ..config import TrainConfig
from ..data import is_text_dataset
from .custom import CustomTrainer
from .engine import RunLocked, Trainer, run_unless_locked
from .evaluation import evaluate
from .text import TextTrainer


def make_trainer(config: TrainConfig, model: nn.Module | None = None, train=None, test=None, **kwargs) -> Trainer:
    """The trainer for a configuration (the one place that picks a Trainer subclass by dataset kind).

    ``model``, ``train``, ``test``: a user's own ``nn.Module`` and data (a ``torch.utils.data.Dataset`` or
    ``DataLoader``) instead of registered names (:class:`mixlab.train.custom.CustomTrainer`)."""
    if model is not None or train is not None:
        return CustomTrainer(config, model=model, train=train, test=test, **kwargs)
    if is_text_dataset(config.dataset, config.data_kwargs, kwargs.get("data_dir")):
        return TextTrainer(config, **kwargs)
    return Trainer(config, **kwargs)


def train(config: TrainConfig, **kwargs) -> dict:
    """Train ``config`` (see :class:`Trainer` for keyword arguments) and return its result."""
    resume = kwargs.pop("resume", False)
    return make_trainer(config, **kwargs).run(resume=resume)


__all__ = ["CustomTrainer", "RunLocked", "TextTrainer", "TrainConfig", "Trainer", "evaluate", "make_trainer",
           "run_unless_locked", "train"]
