"""A dataset's splits: the containers and the held-out validation split.

Small images live in memory (:class:`TensorImages`); large or mixed-size image folders are
streamed from disk (:class:`FileImages`). The validation split is held out of the *training*
set, stratified by class and seeded, so model selection never sees the test set (the ResNet paper
trains CIFAR-10 on 45k and validates on 5k, Sec. 4.2).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ReslabError
from .decode import open_image
from .transforms import pil_resize_center_crop, resize_center_crop

if TYPE_CHECKING:
    from PIL import Image

    from .detection import DetectionImages  # annotation only: detection imports this module
    from .registry import LoadOptions  # annotation only: registry imports this module
    from .segmentation import MaskImages  # annotation only: segmentation imports this module
    from .sr import SRImages  # annotation only: sr imports this module

log = logging.getLogger(__name__)

__all__ = ["TensorImages", "FileImages", "DatasetSplits", "DEFAULT_VAL_FRACTION", "IMBALANCE_RATIO", "stratified_split",
           "val_count", "split_train", "in_memory_splits", "report_classes"]

DEFAULT_VAL_FRACTION = 0.1
"""The validation share of a training set where a dataset names no count of its own."""

IMBALANCE_RATIO = 3.0
"""A training set whose largest class has over this many times the images of its smallest is
reported as imbalanced, with ``--balanced`` suggested. Three to one is where, in the usual
guidance, a plain classifier starts to favour the large classes visibly: a 2:1 split is
ordinary variation between real classes."""


@dataclass(eq=False)
class TensorImages:
    """A split held in memory.

    Args:
        images: uint8 tensor (N, C, H, W), contiguous.
        labels: int64 tensor (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ReslabError(f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ReslabError(f"labels must be an int64 tensor of shape ({self.images.shape[0]},), got "
                              f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if not self.images.is_contiguous():
            self.images = self.images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return f"TensorImages({len(self)} x {tuple(self.images.shape[1:])} uint8)"

    def subset(self, indices: torch.Tensor | Sequence[int]) -> TensorImages:
        """The images at ``indices``, in that order (copied)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return TensorImages(self.images[idx].contiguous(), self.labels[idx].clone())


@dataclass(eq=False)
class FileImages:
    """A split streamed from disk (large or mixed-size image folders).

    Args:
        samples: (path, label) pairs.
        channels: 1 decodes to PIL mode ``"L"``, 3 to ``"RGB"``.
        image_size: If set, :meth:`load` resizes the shorter side to it and centre-crops a square.
    """

    samples: list[tuple[str, int]]
    channels: int
    image_size: int | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"FileImages({len(self)} files, {self.channels} channel{'s' if self.channels > 1 else ''})"

    @property
    def labels(self) -> torch.Tensor:
        """int64 tensor (N,) of the samples' labels."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)

    def load(self, i: int) -> Image.Image:
        """Image ``i``, decoded and converted to ``"L"`` or ``"RGB"``.

        Raises:
            ReslabError: The file is unreadable, truncated or not an image (the message names it).
        """
        img = open_image(self.samples[i][0], "L" if self.channels == 1 else "RGB")
        if self.image_size is not None:
            img = pil_resize_center_crop(img, self.image_size, self.image_size)
        return img

    def subset(self, indices: torch.Tensor | Sequence[int]) -> FileImages:
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return FileImages([self.samples[i] for i in idx], self.channels, self.image_size)


@dataclass(eq=False)
class DatasetSplits:
    """A dataset's splits and what is known about it.

    Attributes:
        name: Canonical name (``"cifar10"``, ..., ``"imagefolder:/abs/path"``).
        classes: Class names, index = label.
        channels: 1 or 3.
        image_size: (H, W) of in-memory splits; None when streamed (or, for segmentation, when the
            images differ in size).
        train: The training set less the validation split (:class:`~reslab.data.segmentation.MaskImages`
            for a segmentation dataset, whose ``classes`` name the mask values;
            :class:`~reslab.data.detection.DetectionImages` for detection, ``classes[0]`` the background).
        val: Held out of the training set (stratified, seeded); may be empty.
        test: The official test set, or None where the source has none.
        info: ``root`` (where the files are), ``source`` (``data_dir``, ``cache``, ``system``,
            ``download``, ``package``, or ``folder`` / ``archive`` for image folders),
            ``skipped`` (bad files left out), ``counts`` (images per split), ``val_from``
            (``train``, ``val folder`` or ``none``); image folders add ``decoded`` (images
            decoded by this call: 0 on a cache hit), ``cache_file`` and ``resized`` (the few
            odd-sized images resized to the size the others share); ``source`` is ``csv`` or
            ``labels.json`` for images named in those (``val_from`` ``split column``: a CSV's).
        stats: What a run reports about the data (its ``start`` event in metrics.jsonl), filled by
            :func:`~reslab.data.load_dataset`: ``train_per_class`` (training images of each class),
            ``imbalance`` (the largest class over the smallest; None when a class has no training
            image), ``grayscale`` (grayscale images converted to RGB; None where not counted) and
            ``notes`` (the warnings logged about the data, one line each).
    """

    name: str
    classes: list[str]
    channels: int
    image_size: tuple[int, int] | None
    train: TensorImages | FileImages | MaskImages | SRImages | DetectionImages
    val: TensorImages | FileImages | MaskImages | SRImages | DetectionImages
    test: TensorImages | FileImages | MaskImages | SRImages | DetectionImages | None
    info: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        test = len(self.test) if self.test is not None else None
        return (f"DatasetSplits({self.name!r}, {len(self.classes)} classes, channels={self.channels}, "
                f"image_size={self.image_size}, train={len(self.train)}, val={len(self.val)}, test={test})")


# ---------------------------------------------------------------------------------------------
# The validation split


def val_count(val_size: int | float, n: int, *, what: str) -> int:
    """The number of validation images ``val_size`` (a count or a fraction) means for ``n`` training
    images of ``what``; a bad type or range raises with what to pass instead."""
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ReslabError(f"val_size must be an image count or a fraction in [0, 1), got {val_size!r}")
    if not isinstance(val_size, numbers.Integral):
        val_size = float(val_size)
        if not 0.0 <= val_size < 1.0:
            raise ReslabError(f"val_size={val_size} is not a fraction in [0, 1); pass e.g. 0.1 or an image count")
        return round(val_size * n)
    val_size = int(val_size)
    if val_size < 0:
        raise ReslabError(f"val_size={val_size} is negative; pass an image count >= 0 or a fraction")
    if val_size and val_size >= n:
        raise ReslabError(f"val_size={val_size} leaves nothing to train on: {what} has {n} training images; "
                          f"pass a smaller val_size (a count or a fraction)")
    return int(val_size)


def stratified_split(labels: torch.Tensor, val_size: int | float, *, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(len(labels))`` into train and val indices, stratified by class.

    Each class gives the validation split its share of ``val_size`` (largest remainders, ties to
    the lower class index), drawn at random with ``torch.Generator().manual_seed(seed)``; the
    result depends on nothing else.

    Args:
        labels: int64 tensor (N,) of class indices.
        val_size: Number of validation images, or a fraction of N.
        seed: Seed of the draw.

    Returns:
        (train_indices, val_indices), each sorted, disjoint, together ``range(N)``.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = labels.numel()
    n_val = val_count(val_size, n, what="the dataset")
    if n_val == 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
    exact = counts.double() * n_val / n
    quota = exact.floor().long()
    short = n_val - int(quota.sum())
    if short:
        order = torch.argsort(-(exact - quota), stable=True)
        order = order[quota[order] < counts[order]]
        quota[order[:short]] += 1
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).numpy()
    # numpy's stable sort: torch's takes ~0.5 s for 60k labels on a busy 2-core machine (thread contention).
    y = labels.numpy()
    by_class = perm[np.argsort(y[perm], kind="stable")]  # grouped by class, shuffled within
    cls = y[by_class]
    start = (torch.cumsum(counts, 0) - counts).numpy()
    is_val = np.arange(n) - start[cls] < quota.numpy()[cls]
    return torch.from_numpy(np.sort(by_class[~is_val])), torch.from_numpy(np.sort(by_class[is_val]))


def split_train(full: TensorImages | FileImages, val_size: int | float, seed: int, what: str):
    """(train, val): ``val_size`` images of ``full`` held out by :func:`stratified_split`."""
    n_val = val_count(val_size, len(full), what=what)
    if n_val == 0:
        return full, full.subset([])
    train_idx, val_idx = stratified_split(full.labels, n_val, seed=seed)
    return full.subset(train_idx), full.subset(val_idx)


# ---------------------------------------------------------------------------------------------
# A dataset held in memory (CIFAR, MNIST, ...): resized, validation held out


def _resize_all(split: TensorImages, size: int) -> TensorImages:
    parts = [resize_center_crop(split.images[i:i + 1024], size) for i in range(0, len(split), 1024)]
    images = torch.cat(parts) if parts else torch.empty((0, split.images.shape[1], size, size), dtype=torch.uint8)
    return TensorImages(images, split.labels)


def in_memory_splits(name: str, train_full: TensorImages, test: TensorImages, classes: list[str], info: dict,
                     options: LoadOptions) -> DatasetSplits:
    """The :class:`DatasetSplits` of an official train/test pair: both resized to ``options.image_size``
    (if set), ``options.val_size`` held out of the training set; ``info`` completed with counts."""
    if options.image_size is not None:
        train_full, test = _resize_all(train_full, options.image_size), _resize_all(test, options.image_size)
    train, val = split_train(train_full, options.val_size, options.seed, name)
    info.update(skipped=[], val_from="train" if len(val) else "none",
                counts={"train": len(train), "val": len(val), "test": len(test)})
    return DatasetSplits(name, classes, train.images.shape[1], tuple(train.images.shape[2:]), train, val, test, info)


# ---------------------------------------------------------------------------------------------
# What is reported about a dataset


def report_classes(data: DatasetSplits) -> None:
    """Count the training images of each class into ``data.stats`` and warn (one line, also kept in
    ``stats["notes"]``) when the largest class has over :data:`IMBALANCE_RATIO` times the images of
    the smallest, or a class has none."""
    counts = torch.bincount(data.train.labels, minlength=len(data.classes)).tolist()[:len(data.classes)]
    notes = list(data.stats.get("notes", []))
    stats = data.stats = {"train_per_class": counts, "imbalance": None, "grayscale": data.stats.get("grayscale", 0),
                          "notes": notes}
    if not counts:
        return
    big, small = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
    if counts[small] == 0:
        empty = [data.classes[k] for k, c in enumerate(counts) if c == 0]
        note = (f"class{'es' * (len(empty) > 1)} {', '.join(map(repr, empty[:5]))}{' ...' * (len(empty) > 5)} "
                f"ha{'ve' if len(empty) > 1 else 's'} no training images; add images or a smaller val_size")
    else:
        ratio = counts[big] / counts[small]
        stats["imbalance"] = round(ratio, 3)
        if ratio <= IMBALANCE_RATIO:
            return
        note = (f"imbalanced classes: the largest, {data.classes[big]!r} ({counts[big]:,} training images), is "
                f"{ratio:.1f}x the smallest, {data.classes[small]!r} ({counts[small]:,}); --balanced "
                "(balanced=True) draws training images class-balanced")
    log.warning("%s: %s", data.name, note)
    notes.append(note)
