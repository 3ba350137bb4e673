"""Datasets by name: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and the embedded set.

``load_dataset(name)`` returns a :class:`DatasetSplits`: train / val / test splits of uint8
images, in memory (:class:`TensorImages`) when they are small and share one size, streamed from
disk (:class:`FileImages`) otherwise. The validation split is held out of the *training* set,
stratified by class and seeded, so model selection never sees the test set (the ResNet paper
trains CIFAR-10 on 45k and validates on 5k, Sec. 4.2).

Files are looked up in this order: the ``data_dir`` argument, ``$RESLAB_DATA``, the user cache
(``$RESLAB_CACHE`` or ``~/.cache/reslab``), well-known system locations, then downloaded into the
cache with checksum verification.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gzip
import hashlib
import io
import logging
import math
import numbers
import os
import pickle
import re
import shutil
import tarfile
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import ReslabError
from ..io import atomic_path
from . import download as dl

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "TensorImages", "FileImages", "DatasetSplits", "load_dataset", "dataset_names", "canonical_data_name",
    "IMAGE_EXTENSIONS",
    "stratified_split", "read_idx", "parse_idx", "write_idx", "EMBEDDED_DIR",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)
"""File extensions (lower case) that count as images in an image folder."""

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

CLASSES: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    # Zalando's README, label 0..9
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
CLASSES["embedded"] = CLASSES["fashion_mnist"]

DEFAULT_VAL_SIZE: dict[str, int | float] = {"cifar10": 5000, "cifar100": 5000, "mnist": 5000, "fashion_mnist": 5000}
DEFAULT_VAL_FRACTION = 0.1

MAX_IN_MEMORY_BYTES = 8 << 30
"""An image folder larger than this once decoded is streamed unless ``stream=False``."""

_ALIASES = {
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100",
    "mnist": "mnist", "fashion_mnist": "fashion_mnist", "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist", "embedded": "embedded",
}
_SUBDIRS = {  # where a dataset may sit inside a data directory (ours, then torchvision's layout)
    "cifar10": ("", "cifar10"), "cifar100": ("", "cifar100"),
    "mnist": ("", "mnist", "MNIST/raw"),
    "fashion_mnist": ("", "fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
}
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_CACHE_FORMAT = 1
_decodes = 0  # images decoded from files since import; tests read it to prove a cache hit


def dataset_names() -> list[str]:
    """The dataset names :func:`load_dataset` accepts (``imagefolder:`` takes a path)."""
    return ["cifar10", "cifar100", "mnist", "fashion_mnist", "embedded", "imagefolder:PATH"]


def canonical_data_name(name: str) -> str:
    """``name`` as a run records it: an image folder by absolute path, so the run does not depend on
    the directory reslab was started from; every other name unchanged."""
    if name.lower().startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        return "imagefolder:" + str(Path(path).expanduser().absolute()) if path else name
    return name


# ---------------------------------------------------------------------------------------------
# The split containers


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
        from PIL import Image

        path = self.samples[i][0]
        try:
            with Image.open(path) as im:
                img = im.convert("L" if self.channels == 1 else "RGB")
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise ReslabError(f"cannot decode image {path} ({e}); replace or delete the file") from None
        if self.image_size is not None:
            img = _pil_resize_center_crop(img, self.image_size)
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
        image_size: (H, W) of in-memory splits; None when streamed.
        train: The training set less the validation split.
        val: Held out of the training set (stratified, seeded); may be empty.
        test: The official test set, or None where the source has none.
        info: ``root`` (where the files are), ``source`` (``data_dir``, ``cache``, ``system``,
            ``download``, ``package``, or ``folder`` / ``archive`` for image folders),
            ``skipped`` (bad files left out), ``counts`` (images per split), ``val_from``
            (``train``, ``val folder`` or ``none``); image folders add ``decoded`` (images
            decoded by this call: 0 on a cache hit) and ``cache_file``.
    """

    name: str
    classes: list[str]
    channels: int
    image_size: tuple[int, int] | None
    train: TensorImages | FileImages
    val: TensorImages | FileImages
    test: TensorImages | FileImages | None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        test = len(self.test) if self.test is not None else None
        return (f"DatasetSplits({self.name!r}, {len(self.classes)} classes, channels={self.channels}, "
                f"image_size={self.image_size}, train={len(self.train)}, val={len(self.val)}, test={test})")


# ---------------------------------------------------------------------------------------------
# Validation split


def _val_count(val_size: int | float, n: int, *, what: str) -> int:
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
    n_val = _val_count(val_size, n, what="the dataset")
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


def _split_train(full: TensorImages | FileImages, val_size: int | float, seed: int, what: str):
    n_val = _val_count(val_size, len(full), what=what)
    if n_val == 0:
        return full, full.subset([])
    train_idx, val_idx = stratified_split(full.labels, n_val, seed=seed)
    return full.subset(train_idx), full.subset(val_idx)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST, embedded)

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def parse_idx(data: bytes, *, name: str = "IDX data") -> torch.Tensor:
    """Decode an IDX file's bytes (LeCun's format: magic ``00 00 type ndim``, big-endian dims).

    Args:
        data: The uncompressed file contents.
        name: What to call it in errors (the file name).

    Raises:
        ReslabError: Bad magic, unknown type, or a size that does not match the header.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ReslabError(f"{name} is not an IDX file (bad magic number {data[:4].hex() or 'empty'}); "
                          "replace it with the official file")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ReslabError(f"{name} is truncated inside its IDX header; replace it with the official file")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise ReslabError(f"{name} {problem}: its IDX header promises {'x'.join(map(str, dims))} {dtype.name} values "
                          f"({expected} bytes) but it has {len(data)} bytes; replace it with the official file")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ReslabError(f"{path} is a truncated or corrupt gzip file ({e}); replace it with the official file") from None
    except OSError as e:
        raise ReslabError(f"cannot read {path} ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file, gzipped (by content, whatever its name) or not."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def write_idx(path: str | os.PathLike, array: torch.Tensor | np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzipped if ``path`` ends in ``.gz``; atomically, byte-reproducibly.

    Args:
        path: Destination.
        array: uint8, int8, int16, int32, float32 or float64 values of any shape.
    """
    array = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    codes = {dt.kind + str(dt.itemsize): code for code, dt in _IDX_DTYPES.items()}
    key = array.dtype.kind + str(array.dtype.itemsize)
    if key not in codes or array.ndim == 0:
        raise ReslabError(f"IDX cannot store a {array.ndim}-d {array.dtype} array")
    code = codes[key]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            with open(tmp, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as gz:
                gz.write(data)
        else:
            tmp.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Where files are


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """(directory, source) pairs in lookup order; each is searched with the dataset's subdirs."""
    dirs: list[tuple[Path, str]] = []
    for value, source, what in ((data_dir, "data_dir", "data_dir"),
                                (os.environ.get("RESLAB_DATA") or None, "data_dir", "$RESLAB_DATA")):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ReslabError(f"data directory {path} ({what}) does not exist; create it and put the dataset "
                              "files there, or point --data-dir / $RESLAB_DATA at the directory that has them")
        dirs.append((path, source))
    dirs.append((dl.cache_dir() / name, "cache"))
    dirs += [(Path(p), "system") for p in dl.SYSTEM_DIRS.get(name, ())]
    return dirs


def _search(name: str, data_dir) -> Iterator[tuple[Path, str]]:
    for directory, source in _candidate_dirs(name, data_dir):
        subdirs = ("",) if source == "cache" else _SUBDIRS.get(name, ("",))
        for sub in subdirs:
            base = directory / sub if sub else directory
            if base.is_dir():
                yield base, source


def _not_found(name: str, wanted: str, data_dir) -> ReslabError:
    places = ", ".join(str(d) for d, _ in _candidate_dirs(name, data_dir))
    return ReslabError(f"{name} not found: looked for {wanted} in {places}; put the files in one of those "
                       f"directories (--data-dir / $RESLAB_DATA) or allow downloading (download=True)")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (the python-pickle release)


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
    for base, source in _search(name, data_dir):
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
        raise _not_found(name, f"{resource.filename} or {layout.folder}/", data_dir)
    archive = dl.fetch(resource, dl.cache_dir() / name)
    return dl.extract_archive(archive, extracted, subdir=layout.folder, remove_on_error=True), "download"


def _load_cifar(name: str, data_dir, download: bool) -> tuple[TensorImages, TensorImages, list[str], dict]:
    layout = _CIFAR[name]
    folder, source = _locate_cifar(name, data_dir, download)
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
    return train, test, classes, {"root": str(folder), "source": source}


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (gzip IDX)


def _locate_idx(name: str, data_dir, download: bool) -> tuple[dict[str, Path], str]:
    resources = dl.RESOURCES[name]
    for base, source in _search(name, data_dir):
        found = {}
        for res in resources:
            for candidate in (base / res.filename, base / res.filename.removesuffix(".gz")):
                if candidate.is_file():
                    found[res.filename] = candidate
                    break
        if len(found) == len(resources):
            return found, source
    if not download:
        raise _not_found(name, ", ".join(r.filename for r in resources), data_dir)
    directory = dl.cache_dir() / name
    return {r.filename: dl.fetch(r, directory) for r in resources}, "download"


def _read_checked_idx(path: Path, resource: dl.Resource) -> torch.Tensor:
    data = _read_bytes(path)
    if resource.content_md5 is not None:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != resource.content_md5:
            raise dl.ChecksumError(
                f"{path} is not the official {resource.filename.removesuffix('.gz')} (md5 {got} after gunzip, "
                f"expected {resource.content_md5}); delete it and download the official file")
    return parse_idx(data, name=str(path))


def _idx_split(images: torch.Tensor, labels: torch.Tensor, where: str, num_classes: int) -> TensorImages:
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ReslabError(f"{where}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not pair up")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ReslabError(f"{where}: labels outside 0..{num_classes - 1}")
    return TensorImages(images.to(torch.uint8).unsqueeze(1).contiguous(), labels)


def _load_idx_dataset(name: str, data_dir, download: bool):
    files, source = _locate_idx(name, data_dir, download)
    res = {r.filename: r for r in dl.RESOURCES[name]}
    t = {key: _read_checked_idx(path, res[key]) for key, path in files.items()}
    root = files["train-images-idx3-ubyte.gz"].parent
    n = len(CLASSES[name])
    train = _idx_split(t["train-images-idx3-ubyte.gz"], t["train-labels-idx1-ubyte.gz"], str(root), n)
    test = _idx_split(t["t10k-images-idx3-ubyte.gz"], t["t10k-labels-idx1-ubyte.gz"], str(root), n)
    return train, test, list(CLASSES[name]), {"root": str(root), "source": source}


def _load_embedded():
    split = {}
    for prefix in ("train", "t10k"):
        images = read_idx(EMBEDDED_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(EMBEDDED_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        split[prefix] = _idx_split(images, labels, str(EMBEDDED_DIR), 10)
    return split["train"], split["t10k"], list(CLASSES["embedded"]), {"root": str(EMBEDDED_DIR), "source": "package"}


# ---------------------------------------------------------------------------------------------
# Image folders


def _resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if min(x.shape[-2:]) != size:
        x = F.resize(x, [size], antialias=True)
    return F.center_crop(x, [size, size])


def _pil_resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    if scale != 1:
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    # Decoding 32x32 JPEGs with torch's intra-op pool on 2 busy cores ran 3x slower than with
    # one thread per decoding worker (1.1 s vs 3.4 s for 5000 images).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # entered once here, not in the worker threads
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                    category=DeprecationWarning)
            yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def _torchvision_decoder():
    # torchvision's libjpeg-turbo/libpng decoders: 3x faster than PIL on 32x32 JPEGs (50 vs 145 us
    # an image) and bit-identical to PIL on the 10,000 CIFAR-10 JPEGs compared. Deprecated since
    # torchvision 0.29 in favour of TorchCodec; PIL takes over where they are gone.
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return functools.partial(decode_image, mode=ImageReadMode.UNCHANGED)


class _BadImage(Exception):
    pass


_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _decode_bytes(data: bytes) -> torch.Tensor:
    """(C, H, W) uint8 with C 1 (grayscale) or 3; the same pixels PIL gives for the file."""
    palette_png = data.startswith(_PNG) and len(data) > 25 and data[25] == 3  # IHDR colour type 3
    decode = _torchvision_decoder()
    if decode is not None and (data.startswith(_JPEG) or (data.startswith(_PNG) and not palette_png)):
        try:
            x = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError as e:
            raise _BadImage(str(e).strip().splitlines()[-1]) from None
        if x.dtype == torch.uint8 and x.dim() == 3:
            if x.shape[0] in (1, 3):
                return x
            if data.startswith(_PNG) and x.shape[0] in (2, 4):  # drop alpha, as PIL's convert does
                return x[: x.shape[0] - 1].contiguous()
        # palette and 16-bit PNGs: PIL's conversions are the reference
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            img = im.convert("L" if im.mode in _GRAY_MODES else "RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise _BadImage(str(e) or type(e).__name__) from None
    array = np.asarray(img)
    return torch.from_numpy(array.copy()).reshape(img.height, img.width, -1).permute(2, 0, 1).contiguous()


def _decode_file(path: str) -> torch.Tensor:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise _BadImage(e.strerror or str(e)) from None
    return _decode_bytes(data)


def _probe_mode(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode
    except Exception as e:
        raise _BadImage(str(e) or type(e).__name__) from None


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass
class _Layout:
    prefix: str  # folders above the dataset's root inside the listing ("" or "cifar10/")
    classes: list[str]
    splits: dict[str, list[tuple[int, int]]]  # "train"/"val"/"test" -> (index into the listing, label)


def _layout(rels: list[str], where: str) -> _Layout:
    """Classes and splits of a listing of image paths ('/'-separated, relative to the root).

    ``<class>/<image>`` is one training set; ``train/<class>/<image>`` with optional ``val/`` and
    ``test/`` gives splits. A single folder wrapping the whole tree (an archive of
    ``cifar10/train/...``) is looked through. Images in subfolders of a class folder belong to it.
    """
    parts = [r.split("/") for r in rels]
    depth = 0
    while (parts and len({p[depth] for p in parts}) == 1 and parts[0][depth] not in ("train", "val", "test")
           and all(len(p) >= depth + 3 for p in parts)):
        depth += 1
    tops = {p[depth] for p in parts if len(p) >= depth + 3}
    split_mode = "train" in tops
    if not split_mode and tops & {"val", "test"}:
        raise ReslabError(f"{where} has {'/ and '.join(sorted(tops & {'val', 'test'}))}/ but no train/; add "
                          f"train/<class>/ folders or lay it out as <class>/<image>")
    found: dict[str, dict[str, list[int]]] = {}
    loose = 0
    for i, p in enumerate(parts):
        if split_mode and len(p) >= depth + 3 and p[depth] in ("train", "val", "test"):
            found.setdefault(p[depth], {}).setdefault(p[depth + 1], []).append(i)
        elif not split_mode and len(p) >= depth + 2:
            found.setdefault("train", {}).setdefault(p[depth], []).append(i)
        else:
            loose += 1
    if "train" not in found:
        inside = f" (it has {loose} images outside class folders: move them into one folder per class)" if loose else ""
        raise ReslabError(f"{where} has no class folders{inside}; an image folder is laid out as "
                          f"<class>/<image> or train/<class>/<image> (with test/, val/)")
    if loose:
        log.warning("%s: ignoring %d images outside the class folders", where, loose)
    classes = sorted(found["train"])
    index = {c: k for k, c in enumerate(classes)}
    splits = {}
    for split in ("train", "val", "test"):
        if split not in found:
            continue
        if unknown := sorted(set(found[split]) - set(index)):
            raise ReslabError(f"{where}: {split}/ has class folders {unknown} that train/ lacks; give train/ "
                              "the same class folders")
        splits[split] = [(i, index[c]) for c in sorted(found[split], key=index.get)
                         for i in sorted(found[split][c], key=rels.__getitem__)]
    prefix = "/".join(parts[0][:depth]) + "/" if depth else ""
    return _Layout(prefix, classes, splits)


def _list_folder(root: Path) -> tuple[list[str], list[tuple[int, int]]]:
    """Image paths under ``root`` (relative, '/'-separated, sorted) and their (size, mtime_ns)."""
    rels, stats = [], []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir if rel_dir else root), key=lambda e: e.name)
        except OSError as e:
            raise ReslabError(f"cannot list {root / rel_dir} ({e.strerror or e})") from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append(rel)
            elif _is_image_name(entry.name):
                st = entry.stat()
                rels.append(rel)
                stats.append((st.st_size, st.st_mtime_ns))
    order = sorted(range(len(rels)), key=rels.__getitem__)
    return [rels[i] for i in order], [stats[i] for i in order]


@dataclass
class _Decoded:
    images: torch.Tensor  # all splits one after the other, bad files left out
    labels: torch.Tensor
    sizes: dict[str, int]  # images per split
    skipped: list[list[str]]  # [name, reason]
    classes: list[str]


class _Gather:
    """Takes decoded images in any order: one size for all (else stream or fail), the memory bound,
    bad files (skip or fail), colour wins over grayscale. ``add`` returns False to give up."""

    def __init__(self, where: str, skip_bad: bool, may_stream: bool, expected: int | None) -> None:
        self.where, self.skip_bad, self.may_stream, self.expected = where, skip_bad, may_stream, expected
        self.images: dict[int, torch.Tensor] = {}
        self.skipped: dict[int, list[str]] = {}
        self.first: tuple[str, tuple[int, int]] | None = None
        self.nbytes = 0
        self.color = False

    def add(self, i: int, name: str, x: torch.Tensor | None, why: str) -> bool:
        if x is None:
            if not self.skip_bad:
                raise ReslabError(f"cannot decode image {name} ({why}); delete or replace it, or pass "
                                  "skip_bad=True (--skip-bad) to leave bad files out")
            log.warning("skipping undecodable image %s (%s)", name, why)
            self.skipped[i] = [name, why]
            return True
        hw = (x.shape[1], x.shape[2])
        if self.first is None:
            self.first = (name, hw)
        elif hw != self.first[1]:
            if self.may_stream:
                log.info("images differ in size (%s, %s): streaming them from disk", self.first[0], name)
                return False
            raise ReslabError(
                f"images in {self.where} differ in size ({self.first[0]} is {_hw(self.first[1])}, {name} is "
                f"{_hw(hw)}); pass image_size to resize them, or stream them (stream=True)")
        self.nbytes += 3 * hw[0] * hw[1]
        if self.may_stream and max(self.nbytes, 3 * hw[0] * hw[1] * (self.expected or 0)) > MAX_IN_MEMORY_BYTES:
            log.info("%s would take over %d bytes in memory: streaming it from disk", self.where, MAX_IN_MEMORY_BYTES)
            return False
        self.color |= x.shape[0] == 3
        self.images[i] = x
        return True

    def result(self, layout: _Layout) -> _Decoded:
        if not self.images:
            raise ReslabError(f"no image in {self.where} could be decoded; check the files")
        channels = 3 if self.color else 1
        order = [(i, y) for split in layout.splits.values() for i, y in split if i in self.images]
        h, w = self.first[1]
        images = torch.empty((len(order), channels, h, w), dtype=torch.uint8)
        for k, (i, _) in enumerate(order):
            images[k] = self.images[i]  # broadcasts a grayscale image to all three channels
        sizes = {split: sum(1 for i, _ in items if i in self.images) for split, items in layout.splits.items()}
        skipped = [self.skipped[i] for split in layout.splits.values() for i, _ in split if i in self.skipped]
        labels = torch.tensor([y for _, y in order], dtype=torch.long)
        return _Decoded(images, labels, sizes, skipped, list(layout.classes))


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


_CHUNK = 512


def _decode_folder(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool,
                   may_stream: bool) -> _Decoded | None:
    global _decodes
    wanted = [i for split in layout.splits.values() for i, _ in split]
    gather = _Gather(str(root), skip_bad, may_stream, expected=len(wanted))

    def work(chunk: list[int]) -> list[tuple[int, torch.Tensor | None, str]]:
        out = []
        for i in chunk:
            try:
                x = _decode_file(str(root / rels[i]))
                out.append((i, _resize_center_crop(x, image_size) if image_size else x, ""))
            except _BadImage as e:
                out.append((i, None, str(e)))
        return out

    chunks = [wanted[a:a + _CHUNK] for a in range(0, len(wanted), _CHUNK)]
    # Two threads: the decoders release the GIL (decoding in memory: 49 vs 72 us an image). With
    # the file reads and another job on the second core, the 60k CIFAR-10 JPEGs took 10.4 s vs
    # 10.1 s with one thread here: no loss, and a gain where a core is free.
    with _decoding(), ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        for results in pool.map(work, chunks):
            _decodes += len(results)
            for i, x, why in results:
                if not gather.add(i, str(root / rels[i]), x, why):
                    pool.shutdown(wait=True, cancel_futures=True)
                    return None
    return gather.result(layout)


def _archive_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the image files in a tar or zip archive, in archive order."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and _is_image_name(info.filename.rsplit("/", 1)[-1]):
                    yield info.filename.strip("/"), zf.read(info)
        return
    with tarfile.open(archive, "r|*") as tf:  # one sequential pass, no seeking
        for member in tf:
            if member.isfile() and _is_image_name(member.name.rsplit("/", 1)[-1]):
                yield member.name.removeprefix("./").strip("/"), tf.extractfile(member).read()


def _decode_archive(archive: Path, image_size: int | None, skip_bad: bool, may_stream: bool) -> _Decoded | None:
    """Decode an archived image folder straight from the archive: no files written."""
    global _decodes
    gather = _Gather(str(archive), skip_bad, may_stream, expected=None)
    rels: list[str] = []

    def work(chunk: list[tuple[int, bytes]]) -> list[tuple[int, torch.Tensor | None, str]]:
        out = []
        for i, data in chunk:
            try:
                x = _decode_bytes(data)
                out.append((i, _resize_center_crop(x, image_size) if image_size else x, ""))
            except _BadImage as e:
                out.append((i, None, str(e)))
        return out

    def drain(futures: list, keep: int) -> bool:
        global _decodes
        while len(futures) > keep:
            results = futures.pop(0).result()
            _decodes += len(results)
            for i, x, why in results:
                if not gather.add(i, f"{archive}:{rels[i]}", x, why):
                    return False
        return True

    with _decoding(), ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        futures: list = []
        chunk: list[tuple[int, bytes]] = []
        try:
            for name, data in _archive_members(archive):
                chunk.append((len(rels), data))
                rels.append(name)
                if len(chunk) == _CHUNK:
                    futures.append(pool.submit(work, chunk))
                    chunk = []
                    if not drain(futures, keep=4):  # checks sizes early; bounds memory held in bytes
                        pool.shutdown(wait=True, cancel_futures=True)
                        return None
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            pool.shutdown(wait=True, cancel_futures=True)
            raise dl.ArchiveError(f"archive {archive} is truncated or corrupt ({e}); replace it with a "
                                  "complete copy") from None
        if chunk:
            futures.append(pool.submit(work, chunk))
        if not drain(futures, keep=0):
            return None
    if not rels:
        raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in archive {archive}; expected "
                          "<class>/<image> or train/<class>/<image> members")
    return gather.result(_layout(rels, str(archive)))


def _stream_splits(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool
                   ) -> tuple[dict[str, FileImages], int, list[str]]:
    # Channels: 3 unless every image is grayscale; the probe reads headers only and stops at the
    # first colour image, unless skip_bad asks for every header to be checked. Files whose header
    # is fine but whose data is not are found when loaded.
    skipped, bad = [], set()
    channels = 1
    for i in (i for split in layout.splits.values() for i, _ in split):
        try:
            mode = _probe_mode(str(root / rels[i]))
        except _BadImage as e:
            if not skip_bad:
                raise ReslabError(f"cannot open image {root / rels[i]} ({e}); delete or replace it, or pass "
                                  "skip_bad=True (--skip-bad) to leave bad files out") from None
            skipped.append(str(root / rels[i]))
            bad.add(i)
            continue
        if mode not in _GRAY_MODES:
            channels = 3
            if not skip_bad:
                break
    splits = {name: FileImages([(str(root / rels[i]), y) for i, y in items if i not in bad], channels, image_size)
              for name, items in layout.splits.items()}
    return splits, channels, skipped


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "root"


def _tensor_cache(kind: str, source: Path, image_size: int | None, state: str) -> Path:
    where = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    state = hashlib.sha256(state.encode()).hexdigest()[:16]
    return (dl.cache_dir() / "imagefolder" / "tensors"
            / f"{_slug(source.name)}-{kind}-{where}-{image_size or 'native'}-{state}.pt")


def _read_cache(path: Path, skip_bad: bool) -> _Decoded | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != _CACHE_FORMAT:
            raise ValueError("old cache format")
        decoded = _Decoded(payload["images"], payload["labels"], dict(payload["sizes"]), list(payload["skipped"]),
                           list(payload["classes"]))
        if decoded.images.dtype != torch.uint8 or decoded.images.shape[0] != sum(decoded.sizes.values()):
            raise ValueError("inconsistent contents")
    except Exception as e:  # an unreadable cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        path.unlink(missing_ok=True)
        return None
    if decoded.skipped and not skip_bad:
        name, why = decoded.skipped[0]
        raise ReslabError(f"cannot decode image {name} ({why}); delete or replace it, or pass skip_bad=True "
                          "(--skip-bad) to leave bad files out")
    return decoded


def _write_cache(path: Path, decoded: _Decoded) -> None:
    payload = {"format": _CACHE_FORMAT, "images": decoded.images, "labels": decoded.labels, "sizes": decoded.sizes,
               "skipped": decoded.skipped, "classes": decoded.classes}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as e:  # a read-only cache costs speed, not correctness
        log.warning("could not write the decoded-image cache %s (%s)", path, e)
        return
    stem = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{stem}-*.pt"):  # an older state of the same folder, same size
        if old != path:
            old.unlink(missing_ok=True)


def _extract_for_streaming(archive: Path) -> Path:
    st = archive.stat()
    where = hashlib.sha256(str(archive).encode()).hexdigest()[:10]
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar\.bz2|\.tbz2|\.tar\.xz|\.txz|\.tar|\.zip)$", "", archive.name, flags=re.I)
    stem = f"{_slug(stem)}-{where}"
    extracted = dl.cache_dir() / "imagefolder" / "extracted"
    target = extracted / f"{stem}-{st.st_size:x}-{st.st_mtime_ns:x}"
    if not target.is_dir():
        dl.extract_archive(archive, target)
        for old in extracted.glob(f"{stem}-*"):  # extractions of an older state of the same archive
            if old != target and old.is_dir() and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return target


def _load_imagefolder(path_text: str, *, val_size, seed: int, skip_bad: bool, image_size: int | None,
                      stream: bool | None) -> DatasetSplits:
    if not path_text:
        raise ReslabError("imagefolder needs a path: imagefolder:/path/to/folder (or an archive of it)")
    src = Path(path_text).expanduser().absolute()
    if not src.exists():
        raise ReslabError(f"image folder {src} does not exist; check the path after 'imagefolder:'")
    is_archive = src.is_file()
    if is_archive and not dl.is_archive(src):
        raise ReslabError(f"{src} is neither a folder nor a .tar.gz/.tgz/.tar/.zip archive of one")
    src = src.resolve()
    if not is_archive and not any(True for _ in os.scandir(src)):
        raise ReslabError(f"image folder {src} is empty; expected {src}/<class>/<image> or "
                          f"{src}/train/<class>/<image> (and test/, val/)")
    info: dict[str, Any] = {"root": str(src), "source": "archive" if is_archive else "folder", "skipped": [],
                            "decoded": 0, "cache_file": None}
    decoded: _Decoded | None = None
    listing = None
    if stream is not True:
        before = _decodes
        if is_archive:
            st = src.stat()
            cache = _tensor_cache("tar", src, image_size, f"{_CACHE_FORMAT}\n{st.st_size}\n{st.st_mtime_ns}")
            decoded = _read_cache(cache, skip_bad) if cache.is_file() else None
            if decoded is None:
                decoded = _decode_archive(src, image_size, skip_bad, may_stream=stream is None)
                if decoded is not None:
                    _write_cache(cache, decoded)
        else:
            rels, stats = _list_folder(src)
            if not rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  f"{src}/<class>/<image> or {src}/train/<class>/<image>")
            layout = _layout(rels, str(src))
            listing = (src, rels, layout)
            state = f"{_CACHE_FORMAT}\n" + "".join(f"{r}\t{n}\t{t}\n" for r, (n, t) in zip(rels, stats))
            cache = _tensor_cache("dir", src, image_size, state)
            decoded = _read_cache(cache, skip_bad) if cache.is_file() else None
            if decoded is None:
                decoded = _decode_folder(src, rels, layout, image_size, skip_bad, may_stream=stream is None)
                if decoded is not None:
                    _write_cache(cache, decoded)
        info["decoded"] = _decodes - before
        if decoded is not None:
            info["cache_file"] = str(cache)

    if decoded is not None:
        classes, channels, size = decoded.classes, decoded.images.shape[1], tuple(decoded.images.shape[2:])
        info["skipped"] = [name for name, _ in decoded.skipped]
        splits: dict[str, TensorImages | FileImages] = {}
        start = 0
        for split_name, n in decoded.sizes.items():
            splits[split_name] = TensorImages(decoded.images[start:start + n], decoded.labels[start:start + n])
            start += n
    else:
        if listing is None:
            root = _extract_for_streaming(src) if is_archive else src
            rels, _ = _list_folder(root)
            if not rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  "<class>/<image> or train/<class>/<image>")
            listing = (root, rels, _layout(rels, str(src)))
        root, rels, layout = listing
        splits, channels, info["skipped"] = _stream_splits(root, rels, layout, image_size, skip_bad)
        classes, size = layout.classes, None
        info["root"] = str(root / layout.prefix) if layout.prefix else str(root)

    name = f"imagefolder:{src}"
    if "val" in splits:
        train, val = splits["train"], splits["val"]
        info["val_from"] = "val folder"
    else:
        train, val = _split_train(splits["train"], DEFAULT_VAL_FRACTION if val_size is None else val_size, seed, name)
        info["val_from"] = "train" if len(val) else "none"
    test = splits.get("test")
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    return DatasetSplits(name, list(classes), int(channels), size, train, val, test, info)


# ---------------------------------------------------------------------------------------------
# The entry point


def _resize_all(split: TensorImages, size: int) -> TensorImages:
    parts = [_resize_center_crop(split.images[i:i + 1024], size) for i in range(0, len(split), 1024)]
    images = torch.cat(parts) if parts else torch.empty((0, split.images.shape[1], size, size), dtype=torch.uint8)
    return TensorImages(images, split.labels)


def _canonical(name: str) -> tuple[str, str]:
    if not isinstance(name, str) or not name.strip():
        raise ReslabError(f"dataset name must be a non-empty string; choose one of {', '.join(dataset_names())}")
    text = name.strip()
    if text.lower().startswith("imagefolder:"):
        return "imagefolder", text.split(":", 1)[1]
    key = _ALIASES.get(text.lower())
    if key is None:
        close = difflib.get_close_matches(text.lower(), list(_ALIASES) + ["imagefolder:"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ReslabError(f"unknown dataset {name!r}{hint}; choose one of {', '.join(dataset_names())}")
    return key, ""


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None, val_size: int | float | None = None,
                 seed: int = 0, download: bool = True, skip_bad: bool = False, image_size: int | None = None,
                 stream: bool | None = None) -> DatasetSplits:
    """Load a dataset by name into train / val / test splits.

    Args:
        name: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``, ``embedded``, or
            ``imagefolder:PATH`` (a class-per-folder tree, optionally with ``train/``, ``val/``,
            ``test/``, or a .tar.gz/.tgz/.tar/.zip archive of one). An image folder held in
            memory is decoded once and cached as a uint8 tensor file, keyed by its path and the
            names, sizes and mtimes of its files (an archive: its path, size and mtime); an
            archive is decoded straight from the archive, and extracted into the cache only
            when its images are streamed.
        data_dir: Directory searched first for the dataset's files.
        val_size: Validation images held out of the training set: a count or a fraction.
            Default 5000 for CIFAR and (Fashion-)MNIST, 10% otherwise; an image folder's own
            ``val/`` is used instead when present.
        seed: Seed of the stratified validation draw.
        download: Download missing files (into the cache) instead of failing.
        skip_bad: Leave out undecodable images of an image folder (listed in ``info["skipped"]``)
            instead of failing.
        image_size: Resize the shorter side to this and centre-crop a square.
        stream: Image folders only: True streams from disk (:class:`FileImages`), False insists
            on memory; None decides by size and whether the images share one size.

    Returns:
        The splits; ``info`` tells where the files came from (``root``, ``source``).

    Raises:
        ReslabError: Unknown name, missing or bad files, failed download; the message says what
            to do.
    """
    kind, arg = _canonical(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ReslabError(f"image_size must be a positive integer, got {image_size!r}")
    if val_size is not None:
        _val_count(val_size, 1 << 62, what=name)  # type and range, before any slow work
    if kind == "imagefolder":
        return _load_imagefolder(arg, val_size=val_size, seed=seed, skip_bad=skip_bad, image_size=image_size,
                                 stream=stream)
    if stream:
        raise ReslabError(f"stream=True applies to imagefolder datasets; {kind} is always held in memory")
    if kind in _CIFAR:
        train_full, test, classes, info = _load_cifar(kind, data_dir, download)
    elif kind == "embedded":
        train_full, test, classes, info = _load_embedded()
    else:
        train_full, test, classes, info = _load_idx_dataset(kind, data_dir, download)
    if image_size is not None:
        train_full, test = _resize_all(train_full, image_size), _resize_all(test, image_size)
    default = DEFAULT_VAL_SIZE.get(kind, DEFAULT_VAL_FRACTION)
    train, val = _split_train(train_full, default if val_size is None else val_size, seed, kind)
    info.update(skipped=[], val_from="train" if len(val) else "none",
                counts={"train": len(train), "val": len(val), "test": len(test)})
    return DatasetSplits(kind, classes, train.images.shape[1], tuple(train.images.shape[2:]), train, val, test, info)
