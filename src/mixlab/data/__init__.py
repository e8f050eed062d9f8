"""Datasets read from a data root (see :mod:`mixlab.data.files`). One registry line per dataset."""
from pathlib import Path

from ..registry import DATASETS
from .files import DatasetFileError, data_root
from .images import ImageData

D = "mixlab.data.images:"
DATASETS.register("mnist", D + "load_mnist", "MNIST (LeCun et al. 1998)")
DATASETS.register("fashion-mnist", D + "load_fashion_mnist", "Fashion-MNIST (Xiao et al. 2017)",
                  aliases=("fmnist", "f-mnist"))
DATASETS.register("kmnist", D + "load_kmnist", "Kuzushiji-MNIST, test split (Clanuwat et al. 2018)")
DATASETS.register("cifar10", D + "load_cifar10", "CIFAR-10 (binary or python batches)", aliases=("cifar-10",))
DATASETS.register("cifar100", D + "load_cifar100", "CIFAR-100 (python files)", aliases=("cifar-100",))
DATASETS.register("digits", D + "load_digits", "scikit-learn 8x8 digits (ships with scikit-learn)")
T = "mixlab.data.text:"
DATASETS.register("trec", T + "load_trec", "TREC questions, 6 coarse classes (fine labels kept)")
DATASETS.register("sst1", T + "load_sst1", "Stanford Sentiment Treebank, 5 classes", aliases=("sst-1",))
DATASETS.register("sst2", T + "load_sst2", "Stanford Sentiment Treebank, binary", aliases=("sst-2",))
DATASETS.register("subj", T + "load_subj", "SUBJ subjectivity (10-fold CV)")
DATASETS.register("mr", T + "load_mr", "MR movie reviews (10-fold CV)")
DATASETS.register("cr", T + "load_cr", "CR customer reviews (10-fold CV)")
DATASETS.register("mpqa", T + "load_mpqa", "MPQA opinion polarity (10-fold CV)")
#: datasets of images (B, C, H, W): the engine trains them in channels-last memory format by default
IMAGE_DATASETS = frozenset({"mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "digits", "imagefolder"})
#: datasets trained by mixlab.train.text.TextTrainer
TEXT_DATASETS = frozenset({"trec", "sst1", "sst2", "subj", "mr", "cr", "mpqa"})
DATASETS.register("miml", "mixlab.data.miml:load_miml", "MIML scenes, 2,000 bags of 9 x 15 features, 5 labels (multi-label)")
L = "mixlab.data.local:"
DATASETS.register("imagefolder", L + "load_image_folder", "your images, one folder per class: imagefolder:PATH")
DATASETS.register("hf", L + "load_hf", "a HuggingFace datasets dataset saved to disk or as parquet: hf:PATH (extra hf)")
#: datasets named with a path, ``KIND:PATH`` (the path becomes the dataset option ``path``)
PATH_DATASETS = ("imagefolder", "hf")


def split_dataset_spec(name: str) -> tuple[str, dict]:
    """``"imagefolder:PATH"`` -> ``("imagefolder", {"path": "PATH"})`` (absolute when ``PATH`` exists from the working
    directory, so a run's identity does not depend on it; else as given, for the loader to find under the data
    root); any other name -> ``(name, {})``."""
    kind, sep, path = str(name).partition(":")
    if sep and kind.lower() in PATH_DATASETS:
        p = Path(path).expanduser()
        return kind.lower(), {"path": str(p.resolve()) if p.exists() else path}
    return name, {}


def is_text_dataset(name: str, data_kwargs: dict | None = None, root=None) -> bool:
    """Whether a dataset holds sentences (trained by :mod:`mixlab.train.text`) rather than images."""
    name, opts = split_dataset_spec(name)
    key = DATASETS.canonical(name)
    if key == "hf":
        from .local import hf_is_text

        return hf_is_text(root=root, **{**opts, **(data_kwargs or {})})
    return key in TEXT_DATASETS


def load_dataset(name: str, split: str = "train", root=None, download: bool = True, **options):
    """Load a dataset split: a registered name (see each loader for its files and notes) or ``KIND:PATH``
    (``imagefolder:PATH``, ``hf:PATH``); ``options`` go to the loader."""
    name, opts = split_dataset_spec(name)
    return DATASETS.get(name)(split=split, root=root, download=download, **opts, **options)


__all__ = ["DATASETS", "IMAGE_DATASETS", "PATH_DATASETS", "TEXT_DATASETS", "DatasetFileError", "ImageData", "data_root",
           "is_text_dataset", "load_dataset", "split_dataset_spec"]
