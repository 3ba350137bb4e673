"""The dataset registry: the only list of dataset names, and :func:`load_dataset`.

A dataset is registered with :func:`register_dataset` beside its loader (``cifar.py``,
``idx.py``, ``imagefolder.py``); the package's ``__init__`` imports those modules, which fixes
the order names are listed in. A loader is called as ``loader(arg, options)``: ``arg`` is the
path of a ``NAME:PATH`` dataset (``""`` for the others) and ``options`` a :class:`LoadOptions`.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ReslabError
from .splits import DEFAULT_VAL_FRACTION, DatasetSplits, report_classes, val_count

__all__ = ["TASKS", "LoadOptions", "DatasetEntry", "register_dataset", "register_task", "list_datasets", "dataset_names", "get_dataset_entry",
           "canonical_data_name", "load_dataset"]


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_dataset` asks of a loader; ``val_size`` is resolved (never None)."""

    data_dir: str | os.PathLike | None
    val_size: int | float
    seed: int
    download: bool
    skip_bad: bool
    image_size: int | None
    stream: bool | None
    task: str | None = None
    """The task the splits are loaded for (one of the entry's :attr:`DatasetEntry.tasks`)."""


Loader = Callable[[str, LoadOptions], DatasetSplits]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        name: Canonical name (lower case).
        loader: ``loader(arg, options) -> DatasetSplits``.
        description: One line, for listings.
        aliases: Other names accepted for it (matched case-insensitively, like ``name``).
        default_val_size: Validation images held out of the training set unless ``val_size`` is given.
        takes_path: Named ``NAME:PATH`` (``imagefolder:/data/pets``).
        streams: Accepts ``stream=True`` (otherwise it is always held in memory).
        task: What the dataset's targets are: ``"classify"`` (one label an image, :class:`TensorImages`
            or :class:`FileImages` splits) or ``"segment"`` (a class an image pixel,
            :class:`~reslab.data.segmentation.MaskImages` splits) or ``"restore"`` (photos that are their own
            targets, :class:`~reslab.data.sr.SRImages` splits) or ``"detect"`` (boxes, labels and
            instance masks, :class:`~reslab.data.detection.DetectionImages` splits): the task it is
            loaded for unless :func:`load_dataset` is told another of :attr:`tasks`.
        optional_path: Named both ``NAME`` (found in the data directories or downloaded) and
            ``NAME:PATH`` (``pennfudan:/data/PennFudanPed.zip``); listed as ``NAME``.
        other_tasks: The other tasks the dataset serves, each by its own loader (:func:`register_task`):
            ``pennfudan`` is segmentation by default and detection on request.
    """

    name: str
    loader: Loader
    description: str
    aliases: tuple[str, ...] = ()
    default_val_size: int | float = DEFAULT_VAL_FRACTION
    takes_path: bool = False
    streams: bool = False
    task: str = "classify"
    optional_path: bool = False
    other_tasks: tuple[tuple[str, Loader], ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task the dataset serves, its default (:attr:`task`) first."""
        return (self.task, *(t for t, _ in self.other_tasks))

    def loader_for(self, task: str | None = None) -> Loader:
        """The loader of ``task`` (None: the default task).

        Raises:
            ReslabError: The dataset does not serve ``task`` (the message names the tasks it serves).
        """
        if task is None or task == self.task:
            return self.loader
        for t, loader in self.other_tasks:
            if t == task:
                return loader
        serving = [e.usage for e in _REGISTRY.values() if task in e.tasks]
        hint = f"; datasets for {task}: {', '.join(serving)}" if serving else ""
        raise ReslabError(f"dataset {self.name} serves {' and '.join(self.tasks)}, not {task}{hint}")

    @property
    def usage(self) -> str:
        """How the dataset is named: ``name``, or ``name:PATH`` where it takes a path."""
        return f"{self.name}:PATH" if self.takes_path else self.name


TASKS = ("classify", "segment", "restore", "detect")
"""The tasks a dataset may serve (:attr:`DatasetEntry.task`)."""

_REGISTRY: dict[str, DatasetEntry] = {}
_LOOKUP: dict[str, DatasetEntry] = {}  # lower-case name or alias -> entry


def register_dataset(name: str, *, description: str, aliases: tuple[str, ...] = (),
                     default_val_size: int | float = DEFAULT_VAL_FRACTION, takes_path: bool = False,
                     streams: bool = False, task: str = "classify",
                     optional_path: bool = False) -> Callable[[Loader], Loader]:
    """Register the decorated ``loader(arg, options)`` as dataset ``name`` (see :class:`DatasetEntry`).

    Raises:
        ValueError: The name or an alias is taken, the description is not one line, or the task
            is not one of :data:`TASKS`.
    """
    if task not in TASKS:
        raise ValueError(f"dataset {name!r}: task must be one of {', '.join(TASKS)}, got {task!r}")
    if takes_path and optional_path:
        raise ValueError(f"dataset {name!r}: takes_path (a path is required) and optional_path exclude each other")

    def add(loader: Loader) -> Loader:
        keys = [name.lower(), *(a.lower() for a in aliases)]
        if taken := [k for k in keys if k in _LOOKUP]:
            raise ValueError(f"dataset name {taken[0]!r} is already registered")
        if not description.strip() or "\n" in description:
            raise ValueError(f"dataset {name!r} needs a one-line description")
        entry = DatasetEntry(name.lower(), loader, description, tuple(a.lower() for a in aliases), default_val_size,
                             takes_path, streams, task, optional_path)
        _REGISTRY[entry.name] = entry
        _LOOKUP.update(dict.fromkeys(keys, entry))
        return loader

    return add


def register_task(name: str, task: str) -> Callable[[Loader], Loader]:
    """Register the decorated ``loader(arg, options)`` as how dataset ``name`` (registered already,
    with :func:`register_dataset`) serves ``task`` besides its default task.

    Raises:
        ValueError: Unknown dataset or task, or the dataset serves ``task`` already.
    """
    if task not in TASKS:
        raise ValueError(f"dataset {name!r}: task must be one of {', '.join(TASKS)}, got {task!r}")

    def add(loader: Loader) -> Loader:
        entry = _REGISTRY.get(name.lower())
        if entry is None:
            raise ValueError(f"dataset {name!r} is not registered; register it before adding a task")
        if task in entry.tasks:
            raise ValueError(f"dataset {name!r} already serves {task}")
        new = replace(entry, other_tasks=(*entry.other_tasks, (task, loader)))
        _REGISTRY[entry.name] = new
        _LOOKUP.update({k: new for k, e in _LOOKUP.items() if e is entry})
        return loader

    return add


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered datasets whose name or usage (``imagefolder:PATH``) matches the shell-style
    ``pattern``, as usages, in registration order."""
    return [e.usage for e in _REGISTRY.values()
            if fnmatch.fnmatchcase(e.name, pattern) or fnmatch.fnmatchcase(e.usage, pattern)]


def dataset_names() -> list[str]:
    """The dataset names :func:`load_dataset` accepts (``imagefolder:`` takes a path)."""
    return list_datasets()


def _path_entry(prefix: str) -> DatasetEntry | None:
    entry = _LOOKUP.get(prefix.lower())
    return entry if entry is not None and (entry.takes_path or entry.optional_path) else None


def _resolve(name: str) -> tuple[DatasetEntry, str]:
    """(entry, path) for ``name``; an unknown name raises with a close match suggested."""
    if not isinstance(name, str) or not name.strip():
        raise ReslabError(f"dataset name must be a non-empty string; choose one of {', '.join(dataset_names())}")
    text = name.strip()
    prefix, colon, path = text.partition(":")
    if colon and (entry := _path_entry(prefix)) is not None:
        return entry, path
    entry = _LOOKUP.get(text.lower())
    if entry is None or entry.takes_path:  # a NAME:PATH dataset named without its path is unknown too
        spellings = [k + (":" if e.takes_path else "") for k, e in _LOOKUP.items()]
        close = difflib.get_close_matches(text.lower(), spellings, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ReslabError(f"unknown dataset {name!r}{hint}; choose one of {', '.join(dataset_names())}")
    return entry, ""


def get_dataset_entry(name: str) -> DatasetEntry:
    """The entry of a dataset name as :func:`load_dataset` takes it (an alias, ``imagefolder:PATH``).

    Raises:
        ReslabError: Unknown name (close matches suggested, the registered names listed).
    """
    return _resolve(name)[0]


def canonical_data_name(name: str) -> str:
    """``name`` as a run records it: a ``NAME:PATH`` dataset (an image folder, ``pennfudan:PATH``) by
    absolute path, so the run does not depend on the directory reslab was started from; every other
    name unchanged."""
    prefix, colon, path = name.partition(":")
    entry = _path_entry(prefix) if colon else None
    if entry is None or not path:
        return name
    return f"{entry.name}:{Path(path).expanduser().absolute()}"


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, val_size: int | float | None = None,
                 seed: int = 0, download: bool = True, skip_bad: bool = False, image_size: int | None = None,
                 stream: bool | None = None, task: str | None = None) -> DatasetSplits:
    """Load a dataset by name into train / val / test splits.

    Args:
        name: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``embedded``,
            ``imagefolder:PATH`` (a class-per-folder tree, optionally with ``train/``, ``val/``,
            ``test/``, or a .tar.gz/.tgz/.tar/.zip archive of one; or a folder whose
            ``labels.json`` maps image paths to class names), or ``csv:FILE`` (lines of
            ``path,label[,split]``, :mod:`reslab.data.labels`); segmentation datasets
            ``isbi2012:PATH``, ``pennfudan`` (or ``pennfudan:PATH``) and ``segfolder:PATH``
            (:mod:`reslab.data.segmentation`: splits of :class:`MaskImages`); detection datasets
            ``pennfudan`` with ``task="detect"`` (one box and mask a person) and ``coco:PATH`` (a
            COCO-format instances JSON, or a folder of ``train.json`` with optional ``val.json`` and
            ``test.json``; :mod:`reslab.data.detection`: splits of ``DetectionImages``); aliases such as ``cifar-10``
            and ``Fashion-MNIST`` too (:func:`list_datasets`). An image folder held in
            memory is decoded once and cached as a uint8 tensor file, keyed by its path and the
            names, sizes and mtimes of its files (an archive: its path, size and mtime); an
            archive is decoded straight from the archive, and its images extracted into the
            cache only when they are streamed. Hostile files are bounded (:mod:`reslab.data.limits`:
            member and archive sizes, image pixels, checked from headers; regular files only).
        data_dir: Directory searched first for the dataset's files.
        val_size: Validation images held out of the training set: a count or a fraction.
            Default 5000 for CIFAR and (Fashion-)MNIST, 10% otherwise; an image folder's own
            ``val/`` is used instead when present.
        seed: Seed of the stratified validation draw.
        download: Download missing files (into the cache) instead of failing.
        skip_bad: Leave out undecodable images of an image folder (listed in ``info["skipped"]``)
            instead of failing.
        image_size: Resize the shorter side to this and centre-crop a square (segmentation datasets:
            resize only, masks by nearest neighbour).
        stream: Image folders only: True streams from disk (:class:`FileImages`), False insists
            on memory; None decides by size and whether the images share one size.
        task: The task to load the dataset for, where it serves more than one
            (:attr:`DatasetEntry.tasks`): ``load_dataset("pennfudan", task="detect")``. None, or a
            task the dataset does not serve, loads it for its default task (``fit`` passes its
            model's task and then says what is wrong with data of another kind;
            :meth:`DatasetEntry.loader_for` is the strict lookup).

    Returns:
        The splits; ``info`` tells where the files came from (``root``, ``source``); ``stats``
        what a run reports: training images per class, their imbalance (warned of over
        :data:`~reslab.data.splits.IMBALANCE_RATIO` to 1), grayscale images converted to RGB.

    Raises:
        ReslabError: Unknown name, missing or bad files, failed download; the message says what
            to do.
    """
    entry, path = _resolve(name)
    if task is not None and not isinstance(task, str):
        raise ReslabError(f"task must be a task name such as 'detect', got {task!r}")
    task = task if task in entry.tasks else entry.task
    loader = entry.loader_for(task)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ReslabError(f"image_size must be a positive integer, got {image_size!r}")
    if val_size is not None:
        val_count(val_size, 1 << 62, what=name)  # type and range, before any slow work
    if stream and not entry.streams:
        streaming = " and ".join(e.name for e in _REGISTRY.values() if e.streams)
        raise ReslabError(f"stream=True applies to {streaming} datasets; {entry.name} is always held in memory")
    options = LoadOptions(data_dir, entry.default_val_size if val_size is None else val_size, seed, download,
                          skip_bad, image_size, stream, task)
    data = loader(path, options)
    if task == "classify":
        report_classes(data)  # a segmentation loader fills its own stats (pixels per class)
    return data
