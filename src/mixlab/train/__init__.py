from .engine import RunLocked, TrainConfig, Trainer, evaluate, make_trainer, run_unless_locked, train

__all__ = ["RunLocked", "TrainConfig", "Trainer", "evaluate", "make_trainer", "run_unless_locked", "train"]
