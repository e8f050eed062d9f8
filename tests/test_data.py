"""Datasets: readers, checksums, subsets, augmentation."""
import gzip
import hashlib
import shutil

import pytest
import torch

from mixlab.data import DatasetFileError, load_dataset
from mixlab.data.augment import BatchAugment, random_crop, random_flip
from mixlab.data.files import FileSpec, fetch
from mixlab.data.subsets import per_class_indices


def test_digits_split_is_fixed_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) == 1297 and len(test) == 500
    assert train.x.dtype == torch.uint8 and train.x.shape[1:] == (1, 8, 8)
    assert torch.bincount(test.y).min() >= 48  # stratified: class 8 has 174 of 1,797
    flat = lambda d: {bytes(r) for r in d.x.flatten(1).numpy()}
    assert len(flat(train) & flat(test)) < 10  # (a few duplicate images exist in the raw data)
    assert torch.equal(load_dataset("digits", "test").x, test.x)


def test_mnist_family(data_root):
    for name, n_train in (("mnist", 60000), ("fashion-mnist", 60000)):
        tr, te = load_dataset(name, "train", data_root), load_dataset(name, "test", data_root)
        assert tr.x.shape == (n_train, 1, 28, 28) and te.x.shape == (10000, 1, 28, 28)
        assert tr.num_classes == 10 and int(te.y.max()) == 9
    km = load_dataset("kmnist", "test", data_root)
    assert km.x.shape == (10000, 1, 28, 28) and torch.bincount(km.y).tolist() == [1000] * 10
    with pytest.raises(ValueError, match="only the 'test' split"):
        load_dataset("kmnist", "train", data_root)


def test_mnist_known_counts(data_root):
    te = load_dataset("mnist", "test", data_root)
    assert torch.bincount(te.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_loads_what_exists(data_root):
    tr = load_dataset("cifar10", "train", data_root)
    te = load_dataset("cifar10", "test", data_root)
    assert tr.x.shape[1:] == (3, 32, 32) and len(tr) % 10000 == 0
    assert "training batches" in tr.note
    assert len(te) in (1000, 10000) and te.note
    mean = tr.x.float().div(255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.01)


def test_checksum_failure_names_file_and_expected_md5(tmp_path, data_root):
    folder = tmp_path / "mnist"
    folder.mkdir()
    src = data_root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(src.read_bytes())
    raw[-1] ^= 0xFF
    (folder / src.name).write_bytes(bytes(raw))
    shutil.copy(data_root / "mnist" / "t10k-images-idx3-ubyte.gz", folder)
    with pytest.raises(DatasetFileError, match=r"t10k-labels-idx1-ubyte.gz is corrupt.*expected ec29112dd5afa0611ce80d1b7f02629c"):
        load_dataset("mnist", "test", tmp_path, download=False)


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetFileError, match=r"missing \(expected md5 9fb629c4.*put the files there"):
        load_dataset("mnist", "test", tmp_path, download=False)


def test_mistyped_data_dir_creates_nothing_and_says_what_is_missing(tmp_path, monkeypatch):
    """A mistyped --data-dir used to leave an empty <dir>/mnist/ behind when the download failed."""
    import mixlab.data.files as files

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(files.urllib.request, "urlopen", offline)
    typo = tmp_path / "shraed" / "data"
    with pytest.raises(DatasetFileError) as error:
        load_dataset("mnist", "train", typo)
    assert not (tmp_path / "shraed").exists()
    message = str(error.value)
    assert f"The data root {typo} (from --data-dir) does not exist: a mistyped path?" in message
    assert ("Missing: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz; expected layout: <data root>/mnist/{train-images-idx3-ubyte.gz") in message
    assert "Fix: point --data-dir (or $MIXLAB_DATA) at the folder that holds mnist/" in message
    assert "download from https://" in message and "failed (offline)" in message


def test_download_writes_only_a_verified_file(tmp_path, monkeypatch):
    import io

    import mixlab.data.files as files

    payload = b"mixlab test payload"
    monkeypatch.setattr(files.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    good = FileSpec("x.bin", hashlib.md5(payload).hexdigest(), "http://example.invalid/x.bin")
    assert fetch("demo", good, tmp_path / "root").read_bytes() == payload
    bad = FileSpec("y.bin", "0" * 32, "http://example.invalid/y.bin")
    with pytest.raises(DatasetFileError, match="the downloaded file has md5 .*, expected 0{32}"):
        fetch("other", bad, tmp_path / "root")
    assert not (tmp_path / "root" / "other").exists()


def test_offline_download_failure_is_clear(tmp_path):
    spec = FileSpec("x.bin", "0" * 32, "http://127.0.0.1:9/x.bin")
    with pytest.raises(DatasetFileError, match="download from http://127.0.0.1:9/x.bin failed"):
        fetch("demo", spec, tmp_path)


def test_truncated_idx_detected(tmp_path):
    from mixlab.data.images import read_idx

    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write((2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(DatasetFileError, match="truncated"):
        read_idx(path)


def test_per_class_subset_seeded_and_balanced():
    y = torch.arange(1000) % 10
    a = per_class_indices(y, 7, seed=3)
    assert torch.bincount(y[a]).tolist() == [7] * 10
    assert torch.equal(a, per_class_indices(y, 7, seed=3))
    assert not torch.equal(a, per_class_indices(y, 7, seed=4))
    with pytest.raises(ValueError, match="fewer than 200"):
        per_class_indices(y, 200, seed=0)


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):  # every output is some 6x6 window of the padded image
        windows = padded[b, 0].unfold(0, 6, 1).unfold(1, 6, 1).reshape(-1, 6, 6)
        assert any(torch.equal(w, out[b, 0]) for w in windows)


def test_flip_and_normalise():
    x = torch.rand(64, 3, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    aug = BatchAugment((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    u8 = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(aug(u8, train=False), torch.full((2, 3, 4, 4), 2.0))
    assert torch.allclose(aug.denormalize(aug(u8, train=False)), torch.ones(2, 3, 4, 4))
