"""Single-label evaluations: top-1 / top-5 error, and calibration (ECE with a reliability diagram)."""
from __future__ import annotations

from pathlib import Path

import torch

from .common import predict, test_transform
from ..metrics import expected_calibration_error, reliability_diagram, topk_error


def _single_label(trainer, kind: str) -> None:
    if trainer.multilabel:
        raise ValueError(f"{kind} is a single-label evaluation; run {trainer.config.dataset} is multi-label "
                         f"(use: mixlab eval multilabel)")


def run_accuracy(trainer, out_dir: Path) -> dict:
    """Top-1 and top-5 error (percent; top-5 is None with 5 classes or fewer) on the run's test set."""
    _single_label(trainer, "accuracy")
    logits = predict(trainer.model, trainer.x_test, test_transform(trainer))
    return {**topk_error(logits, trainer.y_test), "test_size": len(trainer.y_test),
            "test_set": trainer.test_data.note}


def run_calibration(trainer, out_dir: Path, n_bins: int = 15) -> dict:
    """Expected calibration error (percent, ``n_bins`` equal-width bins of max-softmax confidence) and a
    reliability diagram ``calibration.png``."""
    _single_label(trainer, "calibration")
    logits = predict(trainer.model, trainer.x_test, test_transform(trainer))
    probs = torch.softmax(logits, 1)
    png = reliability_diagram(probs, trainer.y_test, Path(out_dir) / "calibration.png", n_bins,
                              title=f"{trainer.config.method} on {trainer.config.dataset} (seed {trainer.config.seed})")
    return {"ece": 100 * expected_calibration_error(probs, trainer.y_test, n_bins), "n_bins": n_bins,
            **topk_error(logits, trainer.y_test), "mean_confidence": 100 * float(probs.max(1).values.mean()),
            "figure": str(png)}
