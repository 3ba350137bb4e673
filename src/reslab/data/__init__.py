"""Datasets: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and a small embedded set.

``load_dataset(name)`` is the entry point; see :mod:`reslab.data.datasets`.
"""

from .datasets import (
    IMAGE_EXTENSIONS,
    DatasetSplits,
    FileImages,
    TensorImages,
    canonical_data_name,
    dataset_names,
    load_dataset,
    read_idx,
    stratified_split,
    write_idx,
)
from .download import cache_dir

__all__ = [
    "IMAGE_EXTENSIONS", "DatasetSplits", "FileImages", "TensorImages", "cache_dir", "canonical_data_name",
    "dataset_names", "load_dataset",
    "read_idx", "stratified_split", "write_idx",
]
