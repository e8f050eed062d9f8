"""Open-set recognition by a confidence threshold (AutoMix paper, section 3, Fig. 5).

A classifier trained on ``n`` seen classes meets test images of all classes. A test image whose top softmax
probability is below the threshold is called "unknown". Two accuracies as the threshold grows:

* setting (a): ``n`` seen classes + 1 "unknown" class; a seen image is right when accepted with its class, an
  unseen image when rejected;
* setting (b): known vs unknown (binary); a seen image is right when accepted (whatever the class).

The paper gives neither the threshold grid nor which classes are seen for MNIST / F-MNIST: we sweep
``0, 0.01, ..., 1`` and take the first half of the classes as seen (its CIFAR-10 panel is "seen 5, unseen 5").
Area under each curve is the trapezoid rule over the threshold axis ``[0, 1]``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .common import predict, test_transform


def openset_curves(probs: Tensor, labels: Tensor, seen_classes, thresholds: Tensor | None = None) -> dict:
    """Accuracy against threshold in settings (a) and (b).

    Args:
        probs: ``(N, n)`` softmax over the ``n`` seen classes (column ``j`` is class ``seen_classes[j]``).
        labels: ``(N,)`` original class ids of the test images (seen and unseen).
        seen_classes: the ``n`` original ids the model was trained on, in its output order.
        thresholds: ``(T,)`` increasing thresholds (default ``linspace(0, 1, 101)``).
    Returns: ``thresholds``, ``acc_a``, ``acc_b`` (percent, lists of T), ``known_acc_a`` (seen images accepted
    with the right class), ``unknown_acc`` (unseen images rejected), ``auc_a``, ``auc_b`` (percent x threshold
    units; 100 = perfect at every threshold) and the peaks.
    """
    thresholds = torch.linspace(0, 1, 101) if thresholds is None else thresholds.double()
    seen = torch.as_tensor(list(seen_classes))
    n = len(seen)
    if probs.shape[1] != n:
        raise ValueError(f"probs have {probs.shape[1]} columns but {n} seen classes were given")
    lookup = torch.full((int(max(int(labels.max()), int(seen.max()))) + 1,), -1, dtype=torch.long)
    lookup[seen] = torch.arange(n)
    truth = lookup[labels.long()]  # -1: unseen
    is_seen = truth >= 0
    if not bool(is_seen.any()) or bool(is_seen.all()):
        raise ValueError("the test set needs both seen and unseen classes for an open-set evaluation")
    conf, pred = probs.double().max(1)
    accept = conf[None, :] >= thresholds.double()[:, None]  # (T, N)
    right_class = (pred == truth) & is_seen
    correct_a = torch.where(is_seen[None, :], accept & right_class[None, :], ~accept)
    correct_b = torch.where(is_seen[None, :], accept, ~accept)
    acc_a = 100 * correct_a.double().mean(1)
    acc_b = 100 * correct_b.double().mean(1)
    known_a = 100 * correct_a[:, is_seen].double().mean(1)
    unknown = 100 * correct_a[:, ~is_seen].double().mean(1)
    t = thresholds.double()
    area = lambda y: float(torch.trapezoid(y, t) / (t[-1] - t[0]))  # noqa: E731
    return {"thresholds": t.tolist(), "acc_a": acc_a.tolist(), "acc_b": acc_b.tolist(),
            "known_acc_a": known_a.tolist(), "unknown_acc": unknown.tolist(),
            "auc_a": area(acc_a), "auc_b": area(acc_b), "peak_a": float(acc_a.max()), "peak_b": float(acc_b.max()),
            "seen_classes": seen.tolist(), "n_seen_images": int(is_seen.sum()), "n_unseen_images": int((~is_seen).sum())}


def plot_openset(curves: dict[str, dict], path, title: str = "") -> Path:
    """Two panels, settings (a) and (b): one line per name in ``curves`` (each an :func:`openset_curves` dict)."""
    from ..viz import two_panel_plot

    panels = [({f"{name} (AUC {c['auc_' + s]:.1f})": (c["thresholds"], c["acc_" + s]) for name, c in curves.items()},
               "accuracy %", head) for s, head in (("a", "(a) n seen + 1 unknown"), ("b", "(b) known vs unknown"))]
    return two_panel_plot(panels, path, "confidence threshold", title)


def run_openset(trainer, out_dir: Path, steps: int = 101) -> dict:
    """Open-set curves of a run trained with ``train_classes``, on the full test set (all classes)."""
    from ..data import load_dataset

    c = trainer.config
    if c.train_classes is None:
        raise ValueError("openset needs a run trained on a subset of classes (TrainConfig.train_classes, e.g. the "
                         "automix-mnist-openset-quick protocol)")
    test = load_dataset(c.dataset, "test", trainer.data_dir)
    if c.test_limit:
        test = test.subset(torch.arange(min(c.test_limit, len(test))))
    x = test.x.to(trainer.device)
    probs = torch.softmax(predict(trainer.model, x, test_transform(trainer)), 1).cpu()
    curves = openset_curves(probs, test.y, c.train_classes, torch.linspace(0, 1, steps))
    png = plot_openset({c.method: curves}, Path(out_dir) / "openset.png",
                       f"open set: {c.method} on {c.dataset}, seen {list(c.train_classes)}")
    return {**curves, "test_set": test.note, "figure": str(png)}
