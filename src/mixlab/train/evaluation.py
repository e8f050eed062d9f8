"""The engine's evaluation of a trained model on tensors: top-1 / top-5 error, multi-label mAP, batched logits.

Used by the engine at the end of a run (and every ``eval_every`` epochs) and by :mod:`mixlab.eval`'s run-level
evaluations; the metrics themselves are in :mod:`mixlab.metrics`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..metrics import average_precision, mean_average_precision, topk_correct


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, transform: Callable[[Tensor], Tensor], batch_size: int = 1000,
            embed: bool = False) -> Tensor:
    """Logits (or with ``embed=True`` the embeddings ``model.embed``) of ``transform(x[i:i+bs])``, in eval mode."""
    model.eval()
    fn = model.embed if embed else model
    outs = [fn(transform(x[i:i + batch_size])).float() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, augment: Callable[..., Tensor], batch_size: int = 1000) -> dict:
    """Top-1 / top-5 error (percent) and mean CE of ``model`` on uint8 images ``x`` with labels ``y``."""
    model.eval()
    n, num_classes = x.shape[0], None
    correct = torch.zeros(2, dtype=torch.long, device=x.device)  # top-1, top-5
    total_loss = torch.zeros((), device=x.device)
    for i in range(0, n, batch_size):
        logits = model(augment(x[i:i + batch_size], train=False)).float()
        yb = y[i:i + batch_size]
        num_classes = logits.shape[1]
        correct += topk_correct(logits, yb, (1, 5))
        total_loss += nn.functional.cross_entropy(logits, yb, reduction="sum")
    (correct1, correct5), loss = correct.tolist(), float(total_loss)
    return {"test_error": 100.0 * (1 - correct1 / n),
            "test_top5_error": 100.0 * (1 - correct5 / n) if num_classes and num_classes > 5 else None,
            "test_loss": loss / n, "test_size": n}


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
