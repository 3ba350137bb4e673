"""Datasets: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and a small embedded set; for
segmentation ISBI 2012, Penn-Fudan and folders of images with masks; for detection Penn-Fudan
(``task="detect"``) and COCO-format JSON.

``load_dataset(name)`` is the entry point (:mod:`reslab.data.registry`); ``list_datasets()``
names what it loads. Each dataset registers itself beside its loader: ``cifar.py``, ``idx.py``
(MNIST, Fashion-MNIST, embedded), ``imagefolder.py``, ``segmentation.py``, ``detection.py``; ``splits.py``
holds the split containers (``segmentation.MaskImages`` for masks, ``detection.DetectionImages`` for boxes).
"""

from . import cifar, idx, imagefolder, segmentation, sr  # noqa: F401  (registers the datasets, listed in this order)

# isort: split
from . import detection  # noqa: F401  (registers coco, and pennfudan for detection, after the others)
from .detection import DetectionImages, DetLoader
from .download import cache_dir
from .idx import read_idx, write_idx
from .imagefolder import IMAGE_EXTENSIONS
from .loader import SegLoader
from .registry import (
    TASKS,
    DatasetEntry,
    LoadOptions,
    canonical_data_name,
    dataset_names,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    register_dataset,
    register_task,
)
from .segmentation import MaskImages, read_mask, stack_for_normalizer
from .splits import DatasetSplits, FileImages, TensorImages, stratified_split

__all__ = [
    "IMAGE_EXTENSIONS", "DatasetSplits", "FileImages", "TensorImages", "cache_dir", "canonical_data_name",
    "dataset_names", "load_dataset",
    "read_idx", "stratified_split", "write_idx",
    "DatasetEntry", "LoadOptions", "get_dataset_entry", "list_datasets", "register_dataset",
    "TASKS", "MaskImages", "SegLoader", "read_mask", "stack_for_normalizer", "DetectionImages", "DetLoader",
    "register_task",
]
