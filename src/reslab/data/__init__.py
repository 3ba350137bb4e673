"""Datasets: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and a small embedded set.

``load_dataset(name)`` is the entry point (:mod:`reslab.data.registry`); ``list_datasets()``
names what it loads. Each dataset registers itself beside its loader: ``cifar.py``, ``idx.py``
(MNIST, Fashion-MNIST, embedded), ``imagefolder.py``; ``splits.py`` holds the split containers.
"""

from . import cifar, idx, imagefolder  # noqa: F401  (registers the datasets, listed in this order)
from .download import cache_dir
from .idx import read_idx, write_idx
from .imagefolder import IMAGE_EXTENSIONS
from .registry import (
    DatasetEntry,
    LoadOptions,
    canonical_data_name,
    dataset_names,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    register_dataset,
)
from .splits import DatasetSplits, FileImages, TensorImages, stratified_split

__all__ = [
    "IMAGE_EXTENSIONS", "DatasetSplits", "FileImages", "TensorImages", "cache_dir", "canonical_data_name",
    "dataset_names", "load_dataset",
    "read_idx", "stratified_split", "write_idx",
    "DatasetEntry", "LoadOptions", "get_dataset_entry", "list_datasets", "register_dataset",
]
