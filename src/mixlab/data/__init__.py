"""Datasets read from a data root (see :mod:`mixlab.data.files`). One registry line per dataset."""
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
DATASETS.register("miml", "mixlab.data.miml:load_miml", "MIML scenes, 2,000 bags of 9 x 15 features, 5 labels (multi-label)")


def load_dataset(name: str, split: str = "train", root=None, download: bool = True):
    """Load a registered dataset split; see each loader for its files and notes."""
    return DATASETS.get(name)(split=split, root=root, download=download)


__all__ = ["DATASETS", "DatasetFileError", "ImageData", "data_root", "load_dataset"]
