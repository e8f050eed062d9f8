"""A user's own data from disk, next to the registered datasets: an image folder and a HuggingFace ``datasets``
dataset (saved with ``save_to_disk`` or as parquet files).

Named ``imagefolder:PATH`` and ``hf:PATH`` (``--dataset imagefolder:PATH`` on the command line); dataset options
(``--data-arg KEY=VALUE``) as below. Both are decoded once into memory (the engine's fast path: uint8 images
``(N, C, H, W)`` on the training device, augmented in batches there); a folder too large for ``max_memory_mb`` is
refused with a pointer to the streaming path (a ``torch`` ``Dataset`` / ``DataLoader`` from Python).

**Image folder** (torchvision's ``ImageFolder`` layout): one sub-folder per class, images inside (PNG, JPEG, BMP,
GIF, WebP; read with Pillow, which matplotlib brings). Either ``PATH/train/<class>/`` with ``PATH/test/<class>/``
(or ``val/``), or ``PATH/<class>/`` alone, of which a seeded, stratified ``test_fraction`` is held out as the
test split. Classes are the sorted folder names. Grey images stay one channel unless any image has colour.

**HF dataset**: ``load_from_disk`` folders (a ``DatasetDict`` with ``train`` and ``test`` / ``validation``, or one
``Dataset``, split as above) or parquet files (split by the file names). Columns are found by their features
(``Image``, ``ClassLabel``, a string column) or given as ``image_column`` / ``text_column`` / ``label_column``.
A text column makes it a text dataset (:mod:`mixlab.data.text`, trained by the text engine). Needs the optional
extra ``pip install mixlab[hf]``.

Options: ``size`` (resize every image to ``size x size``; needed when sizes differ), ``test_fraction`` (0.2) and
``split_seed`` (0) for the held-out split, ``max_memory_mb`` (4096).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .files import DatasetFileError, data_root
from .images import ImageData
from .subsets import ratio_subset_indices

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
TEST_NAMES = ("test", "val", "valid", "validation")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


# --------------------------------------------------------------------------------------------- shared
def resolve(path, root, kind: str) -> Path:
    """``path`` as given (absolute or from the working directory), else under the data root."""
    if not path:
        raise DatasetFileError(f"{kind} needs a path: --dataset {kind}:PATH (or the dataset option path=PATH)")
    p = Path(path).expanduser()
    if not p.exists() and not p.is_absolute() and (data_root(root) / p).exists():
        p = data_root(root) / p
    if not p.exists():
        raise DatasetFileError(f"{kind}: {path} does not exist")
    return p.resolve()


def images_to_uint8(images, size: int | None, max_memory_mb: float, what: str) -> Tensor:
    """PIL images (or paths) -> uint8 ``(N, C, H, W)``; one channel if every image is grey, else RGB.

    Images are opened lazily (a first pass reads only headers), so memory holds the result and one image."""
    from PIL import Image

    def opened(item):
        return Image.open(item) if isinstance(item, (str, Path)) else item

    images = list(images)
    if not images:
        raise DatasetFileError(f"{what}: no images found")
    modes, sizes = set(), set()
    for item in images:
        im = opened(item)
        modes.add(im.mode)
        sizes.add(im.size)
    grey = modes <= set(GREY_MODES)
    if size is None and len(sizes) > 1:
        some = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
        raise DatasetFileError(f"{what}: images differ in size ({some}, ...); pass the dataset option size=N "
                               f"(--data-arg size=32) to resize every image to N x N")
    w, h = (size, size) if size is not None else next(iter(sizes))
    channels = 1 if grey else 3
    mb = len(images) * channels * h * w / 2 ** 20
    if mb > max_memory_mb:
        raise DatasetFileError(f"{what}: {len(images)} images of {channels}x{h}x{w} need {mb:.0f} MB in memory, over "
                               f"max_memory_mb={max_memory_mb:g}; raise it (--data-arg max_memory_mb=...), or train "
                               f"from Python on a torch Dataset / DataLoader, which streams")
    out = torch.empty(len(images), channels, h, w, dtype=torch.uint8)
    for i, item in enumerate(images):
        im = opened(item).convert("L" if grey else "RGB")
        if im.size != (w, h):
            im = im.resize((w, h), Image.BILINEAR)
        a = torch.from_numpy(np.asarray(im).copy())
        out[i] = a[None] if grey else a.permute(2, 0, 1)
    return out


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (the normalisation of the training split)."""
    xf = x.float().div_(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return tuple(xf.mean(1).tolist()), tuple(xf.std(1).clamp_min(1e-6).tolist())


def held_out(labels: Tensor, split: str, fraction: float, seed: int, num_classes: int) -> Tensor:
    """Indices of the ``split`` part when a seeded, stratified ``fraction`` of each class is the test split."""
    if not 0 < fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {fraction}")
    test = torch.zeros(len(labels), dtype=torch.bool)
    test[ratio_subset_indices(labels, fraction, seed, num_classes)] = True
    return torch.nonzero(test if split == "test" else ~test).flatten()


def _check_split(kind: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{kind} has splits 'train' and 'test', got {split!r}")


# ----------------------------------------------------------------------------------------- image folder
def scan_classes(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], Tensor, list[str]]:
    """Image files under ``folder/<class>/`` (sorted), their labels and the classes (sorted folder names)."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
    elif set(found) - set(classes):
        raise DatasetFileError(f"{folder} has classes {sorted(set(found) - set(classes))} that the training "
                               f"folder has not")
    if not classes:
        raise DatasetFileError(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    paths, labels = [], []
    for c, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [c] * len(files)
    return paths, torch.tensor(labels, dtype=torch.long), classes


@lru_cache(maxsize=4)
def _read_folder(folder: str, classes: tuple[str, ...] | None, size: int | None, max_memory_mb: float):
    paths, labels, names = scan_classes(Path(folder), list(classes) if classes else None)
    return images_to_uint8(paths, size, max_memory_mb, folder), labels, names


def load_image_folder(split: str = "train", root=None, download: bool = True, path: str | None = None,
                      size: int | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                      max_memory_mb: float = 4096) -> ImageData:
    """Images in class sub-folders (see the module docstring); normalised with the training split's statistics."""
    _check_split("imagefolder", split)
    folder = resolve(path, root, "imagefolder")
    size = None if size is None else int(size)
    subdirs = {d.name.lower(): d for d in folder.iterdir() if d.is_dir()}
    if "train" in subdirs:
        x_train, y_train, classes = _read_folder(str(subdirs["train"]), None, size, max_memory_mb)
        if split == "train":
            x, y, note = x_train, y_train, f"{folder.name}/train: {len(y_train)} images"
        else:
            test_dir = next((subdirs[n] for n in TEST_NAMES if n in subdirs), None)
            if test_dir is None:
                raise DatasetFileError(f"{folder} has train/ but no test/ or val/ folder beside it")
            x, y, _ = _read_folder(str(test_dir), tuple(classes), size, max_memory_mb)
            note = f"{folder.name}/{test_dir.name}: {len(y)} images"
    else:
        x_all, y_all, classes = _read_folder(str(folder), None, size, max_memory_mb)
        train_idx = held_out(y_all, "train", test_fraction, split_seed, len(classes))
        x_train = x_all[train_idx]
        idx = train_idx if split == "train" else held_out(y_all, "test", test_fraction, split_seed, len(classes))
        x, y = x_all[idx], y_all[idx]
        note = (f"{folder.name}: {len(y)} of {len(y_all)} images, the {'rest' if split == 'train' else 'seeded'} "
                f"{'after' if split == 'train' else ''} {test_fraction:g} per class held out for test (seed {split_seed})")
    mean, std = channel_stats(x_train)
    return ImageData("imagefolder", split, x, y, classes, mean, std, note, {"path": str(folder)})


# ------------------------------------------------------------------------------------------ HF datasets
def open_hf(path: Path):
    """A ``DatasetDict`` or ``Dataset`` from a ``save_to_disk`` folder or parquet files (split by file name)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("hf:PATH datasets need the HuggingFace datasets package: pip install 'mixlab[hf]'") from None
    if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
        return datasets.load_from_disk(str(path))
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if not files or any(f.suffix != ".parquet" for f in files):
        raise DatasetFileError(f"hf: {path} is neither a save_to_disk folder nor parquet files")
    groups: dict[str, list[str]] = {}
    for f in files:
        name = f.stem.lower()
        split = next((s for s in ("train", *TEST_NAMES) if s in name), "train")
        groups.setdefault("test" if split in TEST_NAMES else split, []).append(str(f))
    return datasets.DatasetDict({k: datasets.Dataset.from_parquet(v, keep_in_memory=True) for k, v in groups.items()})


@lru_cache(maxsize=2)
def _open_hf_cached(path: str):
    return open_hf(Path(path))


def hf_columns(ds, image_column=None, text_column=None, label_column=None) -> tuple[str | None, str | None, str]:
    """``(image column, text column, label column)`` of a ``datasets.Dataset`` (given, or found by feature type)."""
    import datasets

    feats = ds.features
    for given in (image_column, text_column, label_column):
        if given is not None and given not in feats:
            raise DatasetFileError(f"hf: no column {given!r}; columns: {list(feats)}")
    label = label_column or next((k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)), None) or next(
        (k for k in ("label", "labels", "target", "y") if k in feats), None)
    if label is None:
        raise DatasetFileError(f"hf: no label column found among {list(feats)}; pass label_column=NAME")
    image = image_column or next((k for k, f in feats.items() if isinstance(f, datasets.Image)), None) or next(
        (k for k in ("image", "img") if k in feats), None)
    text = None
    if image is None:
        text = text_column or next((k for k in ("text", "sentence", "content") if k in feats), None) or next(
            (k for k, f in feats.items() if getattr(f, "dtype", None) == "string" and k != label), None)
    if image is None and text is None:
        raise DatasetFileError(f"hf: no image or text column among {list(feats)}; pass image_column= or text_column=")
    return image, text, label


def _parts(d):
    """``{"train": ..., "test": ... or None, "dev": ... or None}`` of a Dataset / DatasetDict."""
    import datasets

    if isinstance(d, datasets.Dataset):
        d = datasets.DatasetDict({"train": d})
    if "train" not in d:
        raise DatasetFileError(f"hf: the dataset has splits {list(d)} but no 'train'")
    test = next((s for s in TEST_NAMES if s in d), None)
    dev = "validation" if test == "test" and "validation" in d else None
    return {"train": d["train"], "test": d[test] if test else None, "dev": d[dev] if dev else None}


def _classes(ds, label: str) -> list[str]:
    import datasets

    feat = ds.features[label]
    if isinstance(feat, datasets.ClassLabel):
        return list(feat.names)
    return [str(v) for v in sorted(set(ds[label]))]


def _label_ids(ds, label: str, classes: list[str]) -> Tensor:
    import datasets

    if isinstance(ds.features[label], datasets.ClassLabel):
        return torch.tensor(ds[label], dtype=torch.long)
    index = {c: i for i, c in enumerate(classes)}
    values = [str(v) for v in ds[label]]
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise DatasetFileError(f"hf: labels {unknown[:5]} are not in the training split's classes")
    return torch.tensor([index[v] for v in values], dtype=torch.long)


def _rows(d, split: str, label: str, classes: list[str], test_fraction: float, split_seed: int):
    """``(rows, how)``: the dataset's own ``split``, or a held-out part of its training split."""
    parts = _parts(d)
    if split == "dev":
        if parts["dev"] is None:
            raise ValueError("hf: no dev split (pass dev_fraction=0.1 for a dev hold-out)")
        return parts["dev"], "its validation split"
    if parts["test"] is not None:
        return parts[split], f"its {split} split"
    labels = _label_ids(parts["train"], label, classes)
    idx = held_out(labels, split, test_fraction, split_seed, len(classes))
    return parts["train"].select(idx.tolist()), (f"{'the rest after' if split == 'train' else 'a seeded'} "
                                                 f"{test_fraction:g} per class held out for test (seed {split_seed})")


@lru_cache(maxsize=4)
def _hf_images(folder: str, split: str, image: str, label: str, size, test_fraction, split_seed, max_memory_mb):
    d = _open_hf_cached(folder)
    classes = _classes(_parts(d)["train"], label)
    rows, how = _rows(d, split, label, classes, test_fraction, split_seed)
    x = images_to_uint8((r[image] for r in rows.select_columns([image])), size, max_memory_mb, folder)
    return x, _label_ids(rows, label, classes), classes, how


def hf_is_text(path=None, root=None, image_column=None, text_column=None, label_column=None, **unused) -> bool:
    """Whether ``hf:PATH`` holds text (trained by the text engine) rather than images."""
    d = _open_hf_cached(str(resolve(path, root, "hf")))
    return hf_columns(_parts(d)["train"], image_column, text_column, label_column)[0] is None


def load_hf(split: str = "train", root=None, download: bool = True, path: str | None = None,
            image_column: str | None = None, text_column: str | None = None, label_column: str | None = None,
            size: int | None = None, test_fraction: float = 0.2, split_seed: int = 0, max_memory_mb: float = 4096,
            dev_fraction: float = 0.0, ratio: float | None = None, subset_seed: int = 0):
    """A local HF dataset (see the module docstring): :class:`ImageData`, or ``TextData`` for a text column.

    ``dev_fraction``, ``ratio``, ``subset_seed``: the text datasets' options (:mod:`mixlab.data.text`)."""
    folder = str(resolve(path, root, "hf"))
    d = _open_hf_cached(folder)
    train = _parts(d)["train"]
    image, text, label = hf_columns(train, image_column, text_column, label_column)
    name = Path(folder).name
    if image is not None:
        _check_split("hf", split)
        size = None if size is None else int(size)
        key = (folder, image, label, size, test_fraction, split_seed, max_memory_mb)
        x, y, classes, how = _hf_images(key[0], split, *key[1:])
        x_train = x if split == "train" else _hf_images(key[0], "train", *key[1:])[0]
        mean, std = channel_stats(x_train)
        return ImageData("hf", split, x, y, classes, mean, std, f"{name}: {len(y)} images, {how}", {"path": folder})
    from .text import TextData, _finish

    if split not in ("train", "test", "dev"):
        raise ValueError(f"hf has splits 'train', 'test' and 'dev', got {split!r}")
    own_dev = _parts(d)["dev"] is not None
    if split == "dev" and not own_dev and not dev_fraction:
        raise ValueError("hf: no dev split (pass dev_fraction=0.1 for a dev hold-out)")
    classes = _classes(train, label)
    rows, how = _rows(d, "train" if split == "dev" and not own_dev else split, label, classes, test_fraction,
                      split_seed)
    data = TextData("hf", split, [str(v) for v in rows[text]], _label_ids(rows, label, classes), classes,
                    f"{name}: {len(rows)} rows, {how}", {"path": folder})
    return _finish(data, split, own_dev, dev_fraction, ratio, subset_seed, split_seed)
