"""The training engine (:mod:`.engine`), its variants for text (:mod:`.text`) and for a user's own model and data
(:mod:`.custom`), the evaluation it runs, and running configurations (:mod:`.runs`)."""
from ..config import TrainConfig
from .custom import CustomTrainer
from .engine import RunLocked, Trainer, run_unless_locked
from .evaluation import evaluate
from .runs import make_trainer, train, train_missing, trainer_class
from .text import TextTrainer

__all__ = ["CustomTrainer", "RunLocked", "TextTrainer", "TrainConfig", "Trainer", "evaluate", "make_trainer",
           "run_unless_locked", "train", "train_missing", "trainer_class"]
