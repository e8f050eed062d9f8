"""Image datasets as tensors: MNIST, Fashion-MNIST, KMNIST (test), CIFAR-10/100, scikit-learn digits.

Every loader returns an :class:`ImageData` with uint8 images ``(N, C, H, W)`` and int64 labels; the engine
moves them to the training device once and augments whole batches there.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .files import LAYOUTS, DatasetFileError, FileSpec, data_root, fetch
from .subsets import ranks_within_class


@dataclass
class ImageData:
    name: str
    split: str
    x: Tensor  # uint8 (N, C, H, W)
    y: Tensor  # int64 (N,) or float multi-hot (N, C)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    note: str = ""  # e.g. which test set was used
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor, note: str = "") -> "ImageData":
        return ImageData(self.name, self.split, self.x[index], self.y[index], self.classes, self.mean, self.std,
                         note or self.note, dict(self.extra))


# ------------------------------------------------------------------------------------------- MNIST family
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
IDX_FILES = {
    "mnist": {
        "train": (FileSpec("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                  FileSpec("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
        "test": (FileSpec("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 FileSpec("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    },
    "fashion-mnist": {
        "train": (FileSpec("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                  FileSpec("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
        "test": (FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    },
}
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
KMNIST_FILES = (FileSpec("kmnist-test-imgs.npz", "dace6de62ca8b90843cc45366337d02e",
                         "http://codh.rois.ac.jp/kmnist/dataset/kmnist/kmnist-test-imgs.npz"),
                FileSpec("kmnist-test-labels.npz", "3ae489a79983d0fe386152684e3b5412",
                         "http://codh.rois.ac.jp/kmnist/dataset/kmnist/kmnist-test-labels.npz"))
KMNIST_CLASSES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
LAYOUTS.update({name: tuple(f.name for split in ("train", "test") for f in files[split])
                for name, files in IDX_FILES.items()})
LAYOUTS["kmnist"] = tuple(f.name for f in KMNIST_FILES)


def read_idx(path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise DatasetFileError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x})")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetFileError(f"{path} is truncated: {data.size} bytes of data for dims {dims}")
    return data.reshape(dims)


def _idx_dataset(name: str, classes: list[str], url: str):
    def load(split: str = "train", root=None, download: bool = True) -> ImageData:
        if split not in ("train", "test"):
            raise ValueError(f"{name} has splits 'train' and 'test', got {split!r}")
        img_spec, lab_spec = (FileSpec(s.name, s.md5, url + s.name) for s in IDX_FILES[name][split])
        x = read_idx(fetch(name, img_spec, root, download))
        y = read_idx(fetch(name, lab_spec, root, download))
        mean, std = (0.1307,), (0.3081,)
        if name == "fashion-mnist":
            mean, std = (0.2860,), (0.3530,)
        note = "official 60,000 training images" if split == "train" else "official 10,000 test images"
        return ImageData(name, split, torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)),
                         classes, mean, std, note)

    return load


load_mnist = _idx_dataset("mnist", MNIST_CLASSES, MNIST_URL)
load_fashion_mnist = _idx_dataset("fashion-mnist", FASHION_CLASSES, FASHION_URL)


def load_kmnist(split: str = "test", root=None, download: bool = True) -> ImageData:
    """Kuzushiji-MNIST; only the official 10,000 test images are supported (an OOD set for the MNIST family)."""
    if split != "test":
        raise ValueError("kmnist: only the 'test' split is supported (used as an out-of-distribution set)")
    x = np.load(fetch("kmnist", KMNIST_FILES[0], root, download))["arr_0"]
    y = np.load(fetch("kmnist", KMNIST_FILES[1], root, download))["arr_0"]
    return ImageData("kmnist", "test", torch.from_numpy(x.copy())[:, None], torch.from_numpy(y.astype(np.int64)),
                     KMNIST_CLASSES, (0.1918,), (0.3483,), "official 10,000 test images")


# ------------------------------------------------------------------------------------------------- CIFAR
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_BIN_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_BIN = {f"data_batch_{i}.bin": m for i, m in enumerate(
    ["5dd7e06a14cb22eb9f671a540d1b7c25", "5ea93a67294ea407fff1d09f752e9692", "942cd6a4bcdd0dd3c604fbe906cb4421",
     "ae636b3ba5c66a11e91e8cb52e771fcb", "53f37980c15c3d472c316c40844f3f0d"], start=1)}
CIFAR10_BIN_TEST = {"test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
                    "test_batch_first1000.bin": "371f65da31ad652f5e24b3699a3e6515"}
CIFAR10_PY = {f"data_batch_{i}": m for i, m in enumerate(
    ["c99cafc152244af753f735de768cd75f", "d4bba439e000b95fd0a9bffe97cbabec", "54ebc095f3ab1f0389bbae665268c751",
     "634d18415352ddfa80567beed471001a", "482c414d41f54cd18b22e5b47cb7c3cb"], start=1)}
CIFAR10_PY_TEST = {"test_batch": "40351d587109b95175f43aff81a1287e"}
CIFAR100_PY = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}
LAYOUTS["cifar10"] = (*CIFAR10_BIN, "test_batch.bin")  # or the python batches data_batch_1..5, test_batch
LAYOUTS["cifar100"] = tuple(CIFAR100_PY)
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


def read_cifar_bin(path, label_bytes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    rec = label_bytes + 3072
    if raw.size % rec:
        raise DatasetFileError(f"{path} is not a CIFAR binary batch ({raw.size} bytes is not a multiple of {rec})")
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_bytes - 1].astype(np.int64)


def read_cifar_pickle(path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(d[label_key], dtype=np.int64)


def load_cifar10(split: str = "train", root=None, download: bool = True) -> ImageData:
    """CIFAR-10 from the official binary (``*.bin``) or python (pickled) batches, whichever are present.

    Training: every batch found (``note`` says how many of 5). Test: ``test_batch.bin`` / ``test_batch``; if only
    ``test_batch_first1000.bin`` exists, the first 1,000 official test images (said in ``note``).
    """
    folder = data_root(root) / "cifar10"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    if split == "train":
        binary = [n for n in CIFAR10_BIN if (folder / n).exists()]
        python = [n for n in CIFAR10_PY if (folder / n).exists()]
        if binary:
            parts = [read_cifar_bin(fetch("cifar10", FileSpec(n, CIFAR10_BIN[n]), root, False)) for n in binary]
        elif python:
            parts = [read_cifar_pickle(fetch("cifar10", FileSpec(n, CIFAR10_PY[n]), root, False), "labels")
                     for n in python]
        else:
            names = list(CIFAR10_BIN)
            parts = [read_cifar_bin(fetch("cifar10", FileSpec(n, CIFAR10_BIN[n], CIFAR10_BIN_URL,
                                                               "cifar-10-batches-bin/" + n), root, download))
                     for n in names]
            binary = names
        used = binary or python
        note = f"{len(used)} of 5 official training batches ({', '.join(used)})"
    elif split == "test":
        if (folder / "test_batch.bin").exists() or not any((folder / n).exists() for n in
                                                          ["test_batch_first1000.bin", "test_batch"]):
            spec = FileSpec("test_batch.bin", CIFAR10_BIN_TEST["test_batch.bin"], CIFAR10_BIN_URL,
                            "cifar-10-batches-bin/test_batch.bin")
            parts, note = [read_cifar_bin(fetch("cifar10", spec, root, download))], "official 10,000 test images"
        elif (folder / "test_batch").exists():
            spec = FileSpec("test_batch", CIFAR10_PY_TEST["test_batch"])
            parts, note = [read_cifar_pickle(fetch("cifar10", spec, root, False), "labels")], \
                "official 10,000 test images"
        else:
            spec = FileSpec("test_batch_first1000.bin", CIFAR10_BIN_TEST["test_batch_first1000.bin"])
            parts = [read_cifar_bin(fetch("cifar10", spec, root, False))]
            note = "first 1,000 official test images (test_batch_first1000.bin), not the full test set"
    else:
        raise ValueError(f"cifar10 has splits 'train' and 'test', got {split!r}")
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return ImageData("cifar10", split, torch.from_numpy(x), torch.from_numpy(y), CIFAR10_CLASSES, mean, std, note)


def load_cifar100(split: str = "train", root=None, download: bool = True) -> ImageData:
    """CIFAR-100 (fine labels) from the official python files ``train`` / ``test`` in ``<root>/cifar100/``."""
    if split not in CIFAR100_PY:
        raise ValueError(f"cifar100 has splits 'train' and 'test', got {split!r}")
    spec = FileSpec(split, CIFAR100_PY[split], CIFAR100_URL, "cifar-100-python/" + split)
    path = fetch("cifar100", spec, root, download)
    x, y = read_cifar_pickle(path, "fine_labels")
    meta = data_root(root) / "cifar100" / "meta"
    classes = [str(i) for i in range(100)]
    if meta.exists():
        with open(meta, "rb") as f:
            classes = pickle.load(f, encoding="latin1")["fine_label_names"]
    note = "official 50,000 training images" if split == "train" else "official 10,000 test images"
    return ImageData("cifar100", split, torch.from_numpy(x), torch.from_numpy(y), classes,
                     (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), note)


# ------------------------------------------------------------------------------------------------ digits
def load_digits(split: str = "train", root=None, download: bool = True) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, ships with scikit-learn, no download).

    No official split: a fixed stratified split (seed 0), 1,297 train / 500 test. Pixels 0..16 scaled to 0..255.
    """
    from sklearn.datasets import load_digits as sk_digits

    if split not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test', got {split!r}")
    bunch = sk_digits()
    x = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    y = torch.from_numpy(bunch.target.astype(np.int64))
    g = torch.Generator().manual_seed(0)
    grouped, rank_grouped, counts = ranks_within_class(y, torch.randperm(len(y), generator=g), 10)
    rank = torch.empty_like(grouped)  # of each image within its class, in a random order
    rank[grouped] = rank_grouped
    n_test = (counts.double() * 500 / len(y)).round().long()
    n_test[0] += 500 - int(n_test.sum())
    is_test = rank < n_test[y]
    keep = is_test if split == "test" else ~is_test
    return ImageData("digits", split, x[keep], y[keep], [str(i) for i in range(10)], (0.3059,), (0.3767,),
                     f"scikit-learn digits, fixed stratified split (seed 0): {int(keep.sum())} {split} images")
