"""CIFAR-10 and CIFAR-100, from the python-pickle release (read with an unpickler that only
builds numpy arrays, so a tampered batch cannot run code)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReslabError
from . import download as dl
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, TensorImages, in_memory_splits

__all__ = ["load_cifar10", "load_cifar100"]


@dataclass(frozen=True)
class _CifarLayout:
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


_CIFAR = {
    "cifar10": _CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                            "batches.meta", "labels", "label_names"),
    "cifar100": _CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"),
}


class _CifarUnpickler(pickle.Unpickler):
    # The batches are pickles; allow only what they contain (numpy arrays), so a tampered file
    # cannot run code.
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.endswith("multiarray"):
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, on numpy 1 and 2
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ReslabError(f"{path} is not a readable CIFAR batch ({e}); delete it so it is extracted "
                          "or downloaded anew") from None
    if not isinstance(obj, dict):
        raise ReslabError(f"{path} is not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_images(folder: Path, files: tuple[str, ...], label_key: str) -> TensorImages:
    images, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            y = np.asarray(batch[label_key], dtype=np.int64)
        except KeyError as e:
            raise ReslabError(f"{folder / name} has no {e} entry; it is not an official CIFAR batch") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != y.shape[0]:
            raise ReslabError(f"{folder / name} holds data {data.shape} with {y.shape[0]} labels, not N x 3072; "
                              "it is not an official CIFAR batch")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return TensorImages(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def _locate_cifar(name: str, data_dir, download: bool) -> tuple[Path, str]:
    layout, (resource,) = _CIFAR[name], dl.RESOURCES[name]
    needed = layout.train + layout.test + (layout.meta,)
    extracted = dl.cache_dir() / name / layout.folder
    for base, source in dl.search(name, data_dir):
        folder = base / layout.folder
        if all((folder / f).is_file() for f in needed):
            return folder, source
        archive = base / resource.filename
        if archive.is_file():
            if extracted.is_dir():  # extracted from this archive (or its twin) before
                return extracted, "cache"
            if resource.md5 is not None and (got := dl.md5_file(archive)) != resource.md5:
                mine = source == "cache"
                if mine:
                    archive.unlink()
                raise dl.ChecksumError(
                    f"checksum mismatch for {archive}: md5 {got}, expected {resource.md5}; "
                    + ("it was removed, run again to download it anew" if mine else
                       "replace it with the official file"))
            return dl.extract_archive(archive, extracted, subdir=layout.folder, remove_on_error=source == "cache"), source
    if not download:
        raise dl.not_found(name, f"{resource.filename} or {layout.folder}/", data_dir)
    archive = dl.fetch(resource, dl.cache_dir() / name)
    return dl.extract_archive(archive, extracted, subdir=layout.folder, remove_on_error=True), "download"


def _load_cifar(name: str, options: LoadOptions) -> DatasetSplits:
    layout = _CIFAR[name]
    folder, source = _locate_cifar(name, options.data_dir, options.download)
    for f in layout.train + layout.test + (layout.meta,):
        if not (folder / f).is_file():
            raise ReslabError(f"{folder} lacks {f}; delete the folder so it is extracted or downloaded anew")
    meta = _unpickle(folder / layout.meta)
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(layout.names_key, [])]
    train = _cifar_images(folder, layout.train, layout.label_key)
    test = _cifar_images(folder, layout.test, layout.label_key)
    for split, what in ((train, "training"), (test, "test")):
        if len(split) and int(split.labels.max()) >= len(classes):
            raise ReslabError(f"{folder}: a {what} label exceeds the {len(classes)} class names in {layout.meta}")
    return in_memory_splits(name, train, test, classes, {"root": str(folder), "source": source}, options)


@register_dataset("cifar10", aliases=("cifar-10",), default_val_size=5000,
                  description="CIFAR-10: 32x32 colour images, 10 classes, 50k train / 10k test (downloaded)")
def load_cifar10(path: str, options: LoadOptions) -> DatasetSplits:
    return _load_cifar("cifar10", options)


@register_dataset("cifar100", aliases=("cifar-100",), default_val_size=5000,
                  description="CIFAR-100: 32x32 colour images, 100 fine classes, 50k train / 10k test (downloaded)")
def load_cifar100(path: str, options: LoadOptions) -> DatasetSplits:
    return _load_cifar("cifar100", options)
