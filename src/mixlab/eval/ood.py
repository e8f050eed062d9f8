"""Out-of-distribution detection from a classifier's maximum softmax probability (Hendrycks and Gimpel 2017),
as evaluated in the MultiMix paper: AUROC, AUPR-In and AUPR-Out between the in-distribution test set and each
out-of-distribution set. For the MNIST family the OOD sets are the other members (KMNIST test, Fashion-MNIST
test, MNIST test, whichever is not in-distribution); OOD images go through the in-distribution normalisation.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checks import positive_int
from .common import predict, test_transform
from ..metrics import ood_scores

#: default OOD sets per in-distribution dataset
OOD_SETS = {
    "mnist": ("kmnist", "fashion-mnist"),
    "fashion-mnist": ("mnist", "kmnist"),
    "kmnist": ("mnist", "fashion-mnist"),
    "digits": (),
}


def max_softmax(model, x, transform) -> torch.Tensor:
    return torch.softmax(predict(model, x, transform), 1).max(1).values


def run_ood(trainer, out_dir: Path, ood_sets: tuple[str, ...] | str | None = None, limit: int | None = None) -> dict:
    """AUROC / AUPR-In / AUPR-Out (percent) of the max-softmax score, per OOD set and averaged.

    Args:
        ood_sets: dataset names (comma-separated string accepted); default from ``OOD_SETS``.
        limit: use the first ``limit`` images of each OOD test set (default: all).
    """
    from ..data import DATASETS, load_dataset

    c = trainer.config
    positive_int("limit", limit, none="every image")
    if trainer.multilabel:
        raise ValueError("ood uses the max-softmax score of a single-label classifier")
    name = DATASETS.canonical(c.dataset)
    if isinstance(ood_sets, str):
        ood_sets = tuple(s.strip() for s in ood_sets.split(",") if s.strip())
    ood_sets = tuple(ood_sets) if ood_sets else OOD_SETS.get(name, ())
    if not ood_sets:
        raise ValueError(f"no default OOD sets for {name}; pass ood_sets (e.g. --ood-sets mnist,kmnist)")
    transform = test_transform(trainer)
    s_in = max_softmax(trainer.model, trainer.x_test, transform).cpu()
    results = {}
    for ood in ood_sets:
        data = load_dataset(ood, "test", trainer.data_dir)
        if limit is not None:
            data = data.subset(torch.arange(min(limit, len(data))))
        if data.image_shape != tuple(trainer.x_test.shape[1:]):
            raise ValueError(f"OOD set {ood} has images {data.image_shape}, the model takes "
                             f"{tuple(trainer.x_test.shape[1:])}")
        s_out = max_softmax(trainer.model, data.x.to(trainer.device), transform).cpu()
        results[DATASETS.canonical(ood)] = {**ood_scores(s_in, s_out), "n_ood": len(data)}
    mean = {k: sum(r[k] for r in results.values()) / len(results) for k in ("auroc", "aupr_in", "aupr_out")}
    return {"in_distribution": name, "n_in": len(s_in), "sets": results, **{f"mean_{k}": v for k, v in mean.items()},
            "score": "max softmax probability"}
