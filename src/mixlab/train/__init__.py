from .engine import TrainConfig, Trainer, evaluate, train

__all__ = ["TrainConfig", "Trainer", "evaluate", "train"]
