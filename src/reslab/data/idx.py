"""The IDX format (LeCun's MNIST files) and the datasets stored in it: MNIST, Fashion-MNIST and
the embedded set (a real subset of Fashion-MNIST shipped in the package, so examples run offline)."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ReslabError
from ..io import atomic_path
from . import download as dl
from . import limits
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, TensorImages, in_memory_splits

__all__ = ["parse_idx", "read_idx", "write_idx", "read_checked_idx", "CLASSES", "EMBEDDED_DIR"]

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"

CLASSES: dict[str, list[str]] = {
    "mnist": [str(d) for d in range(10)],
    # Zalando's README, label 0..9
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
CLASSES["embedded"] = CLASSES["fashion_mnist"]

_IDX_DTYPES: dict[int, np.dtype] = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
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
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if not gzipped:
                return f.read()
            limit = limits.max_member_bytes()  # a gzip bomb stops here, not in memory
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                data = gz.read(limit + 1)
        if len(data) > limit:
            raise ReslabError(f"{path} decompresses to over {limits.human_bytes(limit)}, more than an IDX file of "
                              f"reslab's datasets; replace it with the official file (or, if it is genuine, raise "
                              f"${limits.MEMBER_ENV})")
        return data
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ReslabError(f"{path} is a truncated or corrupt gzip file ({e}); replace it with the official file") from None
    except OSError as e:
        raise ReslabError(f"cannot read {path} ({e.strerror or e})") from None


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an IDX file, gzipped (by content, whatever its name) or not."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def read_checked_idx(path: Path, resource: dl.Resource) -> torch.Tensor:
    """Read an IDX file that must be the official ``resource`` (its md5 after gunzip)."""
    data = _read_bytes(path)
    if resource.content_md5 is not None:
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if got != resource.content_md5:
            raise dl.ChecksumError(
                f"{path} is not the official {resource.filename.removesuffix('.gz')} (md5 {got} after gunzip, "
                f"expected {resource.content_md5}); delete it and download the official file")
    return parse_idx(data, name=str(path))


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
# MNIST / Fashion-MNIST (gzip IDX) and the embedded set


def _locate_idx(name: str, data_dir, download: bool) -> tuple[dict[str, Path], str]:
    resources = dl.RESOURCES[name]
    for base, source in dl.search(name, data_dir):
        found = {}
        for res in resources:
            for candidate in (base / res.filename, base / res.filename.removesuffix(".gz")):
                if candidate.is_file():
                    found[res.filename] = candidate
                    break
        if len(found) == len(resources):
            return found, source
    if not download:
        raise dl.not_found(name, ", ".join(r.filename for r in resources), data_dir)
    directory = dl.cache_dir() / name
    return {r.filename: dl.fetch(r, directory) for r in resources}, "download"


def _idx_split(images: torch.Tensor, labels: torch.Tensor, where: str, num_classes: int) -> TensorImages:
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ReslabError(f"{where}: images {tuple(images.shape)} and labels {tuple(labels.shape)} do not pair up")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ReslabError(f"{where}: labels outside 0..{num_classes - 1}")
    return TensorImages(images.to(torch.uint8).unsqueeze(1).contiguous(), labels)


def _load_idx_dataset(name: str, options: LoadOptions) -> DatasetSplits:
    files, source = _locate_idx(name, options.data_dir, options.download)
    res = {r.filename: r for r in dl.RESOURCES[name]}
    t = {key: read_checked_idx(path, res[key]) for key, path in files.items()}
    root = files["train-images-idx3-ubyte.gz"].parent
    n = len(CLASSES[name])
    train = _idx_split(t["train-images-idx3-ubyte.gz"], t["train-labels-idx1-ubyte.gz"], str(root), n)
    test = _idx_split(t["t10k-images-idx3-ubyte.gz"], t["t10k-labels-idx1-ubyte.gz"], str(root), n)
    return in_memory_splits(name, train, test, list(CLASSES[name]), {"root": str(root), "source": source}, options)


@register_dataset("mnist", default_val_size=5000,
                  description="MNIST: 28x28 grayscale handwritten digits, 60k train / 10k test (downloaded)")
def load_mnist(path: str, options: LoadOptions) -> DatasetSplits:
    return _load_idx_dataset("mnist", options)


@register_dataset("fashion_mnist", aliases=("fashion-mnist", "fashionmnist"), default_val_size=5000,
                  description="Fashion-MNIST: 28x28 grayscale clothing, 10 classes, 60k train / 10k test "
                              "(system files or downloaded)")
def load_fashion_mnist(path: str, options: LoadOptions) -> DatasetSplits:
    return _load_idx_dataset("fashion_mnist", options)


@register_dataset("embedded", description="a real 5000 + 1500 image subset of Fashion-MNIST shipped in the package "
                                          "(offline)")
def load_embedded(path: str, options: LoadOptions) -> DatasetSplits:
    split = {}
    for prefix in ("train", "t10k"):
        images = read_idx(EMBEDDED_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(EMBEDDED_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        split[prefix] = _idx_split(images, labels, str(EMBEDDED_DIR), 10)
    return in_memory_splits("embedded", split["train"], split["t10k"], list(CLASSES["embedded"]),
                            {"root": str(EMBEDDED_DIR), "source": "package"}, options)
