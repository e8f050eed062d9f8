"""Users' own data: an image folder and a saved HF dataset from the CLI, a torch Dataset / DataLoader from Python."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import mixlab
from mixlab.cli import main
from mixlab.data import is_text_dataset, load_dataset, split_dataset_spec
from mixlab.data.files import DatasetFileError
from mixlab.train import TrainConfig
from mixlab.train.custom import CustomTrainer

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 230)]


def pictures(n_per_class=10, size=16, seed=0, grey=False):
    """PIL images whose class is their colour (plus noise), and their labels."""
    from PIL import Image

    g = np.random.default_rng(seed)
    images, labels = [], []
    for c, colour in enumerate(COLOURS):
        for _ in range(n_per_class):
            a = np.clip(np.array(colour)[None, None] + g.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(a)
            images.append(im.convert("L") if grey else im)
            labels.append(c)
    return images, labels


def write_folder(root, layout="flat", **kw):
    images, labels = pictures(**kw)
    names = ["red", "green", "blue"]
    for i, (im, c) in enumerate(zip(images, labels)):
        split = "" if layout == "flat" else ("test/" if i % 5 == 0 else "train/")
        folder = root / split / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        im.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def run_json(args, capsys):
    assert main(args + ["--json", "--no-progress", "--threads", "1"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_training_run_from_an_image_folder(tmp_path, capsys):
    folder = write_folder(tmp_path / "pets")
    train = load_dataset(f"imagefolder:{folder}", "train")
    test = load_dataset("imagefolder", "test", path=str(folder))
    assert train.classes == ["blue", "green", "red"] and train.x.dtype == torch.uint8
    assert train.x.shape[1:] == (3, 16, 16) and len(train) == 24 and len(test) == 6  # 0.2 per class held out
    assert torch.bincount(test.y).tolist() == [2, 2, 2]
    red = train.classes.index("red")
    assert float(train.x[train.y == red][:, 0].float().mean()) > 150  # pixels in the right channel order
    out = run_json(["train", "--dataset", f"imagefolder:{folder}", "--model", "cnn11", "--model-arg", "width=0.25",
                    "--method", "cutmix", "--epochs", "2", "--batch-size", "8", "--out", str(tmp_path / "o")], capsys)
    assert out["dataset"] == "imagefolder" and out["train_size"] == 24 and "held out" in out["test_set"]
    assert out["run_id"].startswith("cutmix-imagefolder-cnn11")
    config = TrainConfig(dataset=f"imagefolder:{folder}")
    assert config.dataset == "imagefolder" and config.data_kwargs == {"path": str(folder.resolve())}


def test_image_folder_with_train_and_test_folders_sizes_and_grey(tmp_path):
    folder = write_folder(tmp_path / "split", layout="split", grey=True)
    train, test = (load_dataset("imagefolder", s, path=str(folder)) for s in ("train", "test"))
    assert train.x.shape[1] == 1 and len(train) == 24 and len(test) == 6 and "test" in test.note
    assert test.mean == train.mean  # normalised with the training images' statistics
    odd = write_folder(tmp_path / "odd")
    from PIL import Image

    Image.new("RGB", (20, 12)).save(odd / "red" / "big.png")
    with pytest.raises(DatasetFileError, match="size=N"):
        load_dataset("imagefolder", "train", path=str(odd))
    assert load_dataset("imagefolder", "train", path=str(odd), size=8).x.shape[-2:] == (8, 8)
    with pytest.raises(DatasetFileError, match="does not exist"):
        load_dataset("imagefolder:/no/such/folder")
    with pytest.raises(DatasetFileError, match="max_memory_mb"):
        load_dataset("imagefolder", "train", path=str(folder), max_memory_mb=0.001)


def hf_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    images, labels = pictures()
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["r", "g", "b"])})
    ds = datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)
    return ds.train_test_split(test_size=0.2, seed=0, stratify_by_column="label")


def test_training_run_from_a_saved_hf_dataset(tmp_path, capsys):
    splits = hf_images(tmp_path)
    splits.save_to_disk(str(tmp_path / "hfimg"))
    train = load_dataset(f"hf:{tmp_path / 'hfimg'}", "train")
    assert train.classes == ["r", "g", "b"] and len(train) == 24 and train.x.shape[1:] == (3, 16, 16)
    assert not is_text_dataset(f"hf:{tmp_path / 'hfimg'}")
    out = run_json(["train", "--dataset", f"hf:{tmp_path / 'hfimg'}", "--model", "preactresnet18", "--model-arg",
                    "width=4", "--method", "manifold", "--epochs", "1", "--batch-size", "8",
                    "--out", str(tmp_path / "o")], capsys)
    assert out["dataset"] == "hf" and out["train_size"] == 24 and out["test_set"].endswith("its test split")
    # parquet files (split by file name) read the same rows
    splits["train"].to_parquet(str(tmp_path / "pq" / "train.parquet"))
    splits["test"].to_parquet(str(tmp_path / "pq" / "test.parquet"))
    from_parquet = load_dataset("hf", "train", path=str(tmp_path / "pq"))
    assert torch.equal(from_parquet.x, train.x) and torch.equal(from_parquet.y, train.y)


def test_a_saved_hf_text_dataset_trains_with_the_text_engine(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    words = [["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]]
    g = np.random.default_rng(0)
    text = [" ".join(g.choice(words[i % 2], 5)) for i in range(40)]
    ds = datasets.Dataset.from_dict({"sentence": text, "label": [["neg", "pos"][1 - i % 2] for i in range(40)]})
    ds.save_to_disk(str(tmp_path / "hftext"))
    spec = f"hf:{tmp_path / 'hftext'}"
    assert is_text_dataset(spec)
    train = load_dataset(spec, "train")
    assert train.classes == ["neg", "pos"] and len(train) == 32 and isinstance(train.text[0], str)
    out = run_json(["train", "--dataset", spec, "--model", "kim-cnn", "--model-arg", "embed_dim=16",
                    "--model-arg", "num_filters=4", "--method", "amp+sentmixup", "--max-steps", "2",
                    "--batch-size", "8", "--out", str(tmp_path / "o")], capsys)
    assert out["dataset"] == "hf" and out["train_size"] == 32


class PetImages(Dataset):
    """A user's map-style dataset: float tensors, already normalised (as a torchvision transform gives them)."""

    classes = ["red", "green", "blue"]

    def __init__(self, seed):
        images, self.labels = pictures(seed=seed)
        self.x = [torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 127.5 - 1 for im in images]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], self.labels[i]


def test_python_dataset_in_memory_and_dataloader_streamed(tmp_path):
    from user_models import ViT

    torch.manual_seed(0)
    model = ViT(num_classes=3, image_size=16)
    before = model.head.weight.detach().clone()
    result = mixlab.fit(model, PetImages(0), PetImages(1), method="alignmix", method_kwargs={"max_iter": 10},
                        epochs=2, batch_size=10, lr=0.01, out=str(tmp_path), progress=False)
    assert result["model"] == "ViT" and result["dataset"] == "PetImages" and result["train_size"] == 30
    assert "in memory" in result["test_set"] and not torch.equal(model.head.weight, before)  # trained in place
    # the same data as DataLoaders: streamed, batches as the loader makes them
    x = torch.stack(PetImages(0).x)
    y = torch.tensor(PetImages(0).labels)
    config = TrainConfig(method="manifold", epochs=1, batch_size=10, lr=0.01)
    trainer = CustomTrainer(config, model=ViT(num_classes=3, image_size=16),
                            train=DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True),
                            test=DataLoader(TensorDataset(x, y), batch_size=7), num_classes=3, out=tmp_path,
                            progress=False)
    out = trainer.run()
    assert trainer.streaming and out["test_size"] == 30 and "streamed" in out["test_set"]
    assert out["run_id"] != result["run_id"]
    # not images (feature vectors): streamed through a seeded loader of batch_size, any input mixer
    features = TensorDataset(torch.randn(40, 6), torch.arange(40) % 3)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    r = mixlab.fit(mlp, features, features, method="mixup", num_classes=3, epochs=2, batch_size=8,
                   out=str(tmp_path), progress=False)
    assert r["train_size"] == 40 and r["test_size"] == 40 and "streamed" in r["test_set"]
    with pytest.raises(ValueError, match="num_classes"):
        CustomTrainer(config, model=ViT(), train=DataLoader(TensorDataset(x, y)), test=DataLoader(
            TensorDataset(x, y)), out=tmp_path).run()
    with pytest.raises(ValueError, match="test data"):
        CustomTrainer(config, model=ViT(), train=PetImages(0), out=tmp_path)


def test_dataset_specs():
    assert split_dataset_spec("mnist") == ("mnist", {})
    assert split_dataset_spec("hf:some/where") == ("hf", {"path": "some/where"})
