"""MIML scene data (Zhou and Zhang, NIPS 2006) in feature form: the AutoMix paper's multi-label dataset.

2,000 bags, each 9 instances x 15 features, 5 labels (desert, mountains, sea, sunset, trees), read from the MIML
library's ARFF conversion ``<root>/miml/miml_03_data.arff``. A bag is returned as a ``1 x 9 x 15`` float
"image" (instances as rows), so every input-space mixer and staged model applies unchanged; targets are
multi-hot ``(N, 5)`` floats, which the engine trains with sigmoid cross-entropy.

Split (the AutoMix paper's Table 3: "train:test = 1:1", 1,000 / 1,000): a fixed random permutation (seed 0) of
the bags, first half train, second half test. ``fold=k`` (0..9) instead gives 10-fold cross-validation (fold ``k``
is the test set, 200 bags). Features are standardised with the mean and std of the training part of the split
(per feature), so the returned ``mean``/``std`` are 0 / 1.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from .files import LAYOUTS, DatasetFileError, FileSpec, fetch
from .images import ImageData

MIML_FILE = FileSpec("miml_03_data.arff", "739130d2029efed7e2300dcc7bd2423d")
LAYOUTS["miml"] = (MIML_FILE.name,)
MIML_CLASSES = ["desert", "mountains", "sea", "sunset", "trees"]
_ROW = re.compile(r'^\s*(\d+)\s*,\s*"(.*)"\s*,\s*([01](?:\s*,\s*[01])*)\s*$')


def read_miml_arff(path) -> tuple[np.ndarray, np.ndarray]:
    """Bags ``(N, 9, 15)`` float32 and labels ``(N, 5)`` float32 from the MIML ARFF (relational bag attribute)."""
    bags, labels = [], []
    in_data = False
    with open(path, encoding="latin-1") as f:
        for line in f:
            if not in_data:
                in_data = line.strip().lower() == "@data"
                continue
            if not line.strip():
                continue
            m = _ROW.match(line)
            if not m:
                raise DatasetFileError(f"{path}: cannot parse data row starting {line[:60]!r}")
            rows = [r.split(",") for r in m.group(2).split("\\n") if r.strip()]
            bags.append(np.asarray(rows, dtype=np.float32))
            labels.append(np.asarray(m.group(3).split(","), dtype=np.float32))
    shapes = {b.shape for b in bags}
    if len(bags) != 2000 or shapes != {(9, 15)}:
        raise DatasetFileError(f"{path}: expected 2,000 bags of 9 x 15, got {len(bags)} bags of shapes {shapes}")
    return np.stack(bags), np.stack(labels)


def load_miml(split: str = "train", root=None, download: bool = False, fold: int | None = None) -> ImageData:
    if split not in ("train", "test"):
        raise ValueError(f"miml has splits 'train' and 'test', got {split!r}")
    x, y = read_miml_arff(fetch("miml", MIML_FILE, root, False))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    if fold is None:
        is_test = torch.zeros(len(x), dtype=torch.bool)
        is_test[order[len(x) // 2:]] = True
        how = "fixed 1:1 split (seed 0)"
    else:
        if not 0 <= fold < 10:
            raise ValueError(f"fold must be in 0..9, got {fold}")
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(x))
        is_test = rank % 10 == fold
        how = f"10-fold CV (seed 0), fold {fold}"
    x, y = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    mean = x[~is_test].mean((0, 1, 2), keepdim=True)
    std = x[~is_test].std((0, 1, 2), keepdim=True).clamp_min(1e-6)
    keep = is_test if split == "test" else ~is_test
    xs = ((x - mean) / std)[keep]
    return ImageData("miml", split, xs, y[keep], MIML_CLASSES, (0.0,), (1.0,),
                     f"MIML bags (9 x 15 features), {how}: {int(keep.sum())} {split} bags")
