from .engine import RunLocked, TrainConfig, Trainer, evaluate, make_trainer, train

__all__ = ["RunLocked", "TrainConfig", "Trainer", "evaluate", "make_trainer", "train"]
