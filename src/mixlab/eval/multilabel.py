"""Multi-label evaluation: sigmoid scores per label, mean average precision (the AutoMix paper's MIML metric)."""
from __future__ import annotations

from pathlib import Path

from ..train.evaluation import evaluate_multilabel


def run_multilabel(trainer, out_dir: Path) -> dict:
    """mAP and per-label AP of a run trained on multi-hot targets (e.g. ``miml``)."""
    if not trainer.multilabel:
        raise ValueError(f"run on {trainer.config.dataset} is single-label; multilabel needs multi-hot targets "
                         f"(e.g. --dataset miml)")
    m = evaluate_multilabel(trainer.model, trainer.x_test, trainer.y_test, trainer.augment)
    return {"map": m["test_map"], "ap_per_label": dict(zip(trainer.test_data.classes, m["test_ap_per_label"])),
            "test_size": m["test_size"], "test_set": trainer.test_data.note}
