"""Multi-label evaluation: sigmoid scores per label, mean average precision (the AutoMix paper's MIML metric)."""
from __future__ import annotations

from pathlib import Path

import torch

from .common import predict
from .metrics import average_precision, mean_average_precision


@torch.no_grad()
def evaluate_multilabel(model, x, targets, augment, batch_size: int = 1000) -> dict:
    """Test metrics of a multi-label model (sigmoid head): ``test_map`` (percent), ``test_error = 100 - mAP``,
    mean sigmoid cross-entropy ``test_loss`` and the per-label APs."""
    logits = predict(model, x, lambda xb: augment(xb, train=False), batch_size)
    scores = torch.sigmoid(logits)
    t = targets.float()
    m = 100 * mean_average_precision(scores, t)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none").sum(1).mean()
    return {"test_error": 100 - m, "test_top5_error": None, "test_map": m, "test_loss": float(bce),
            "test_size": x.shape[0],
            "test_ap_per_label": [100 * average_precision(scores[:, c], t[:, c] >= 0.5) for c in range(t.shape[1])]}


def run_multilabel(trainer, out_dir: Path) -> dict:
    """mAP and per-label AP of a run trained on multi-hot targets (e.g. ``miml``)."""
    if not trainer.multilabel:
        raise ValueError(f"run on {trainer.config.dataset} is single-label; multilabel needs multi-hot targets "
                         f"(e.g. --dataset miml)")
    m = evaluate_multilabel(trainer.model, trainer.x_test, trainer.y_test, trainer.augment)
    return {"map": m["test_map"], "ap_per_label": dict(zip(trainer.test_data.classes, m["test_ap_per_label"])),
            "test_size": m["test_size"], "test_set": trainer.test_data.note}
