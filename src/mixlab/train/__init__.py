from .engine import TrainConfig, Trainer, evaluate, make_trainer, train

__all__ = ["TrainConfig", "Trainer", "evaluate", "make_trainer", "train"]
