"""What image folders keep in the cache: their decoded tensors, and archives extracted for streaming.

A folder's decoded images are one uint8 tensor file keyed by the path and the names, sizes and
mtimes of the files (an archive: its size and mtime): a change gives a new file, which replaces the
older state's. An unreadable cache file is rebuilt, never trusted; a read-only cache costs speed,
not correctness. An archive streamed from disk has its images extracted into the cache first.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch

from ..io import atomic_path
from .archive import extract_archive
from .decode import DecodedImages, bad_image_error, report_resized
from .listing import is_image_path
from .locate import cache_dir

__all__ = ["CACHE_FORMAT", "archive_cache", "folder_cache", "cached", "extracted_for_streaming"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the count of grayscale images
"""The version of the decoded-tensor cache files; another is rebuilt."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "root"


def _tensor_cache(kind: str, source: Path, image_size: int | None, state: str) -> Path:
    where = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    state = hashlib.sha256(state.encode()).hexdigest()[:16]
    return (cache_dir() / "imagefolder" / "tensors"
            / f"{_slug(source.name)}-{kind}-{where}-{image_size or 'native'}-{state}.pt")


def archive_cache(archive: Path, image_size: int | None) -> Path:
    """The cache file of an archive's decoded images, keyed by its size and mtime."""
    st = archive.stat()
    return _tensor_cache("tar", archive, image_size, f"{CACHE_FORMAT}\n{st.st_size}\n{st.st_mtime_ns}")


def folder_cache(root: Path, image_size: int | None, rels: list[str], stats: list[tuple[int, int]], *,
                 kind: str = "dir", labels_key: str = "") -> Path:
    """The cache file of a folder's decoded images, keyed by the names, sizes and mtimes of its images
    (and ``labels_key``, a digest of the file that labels them, for a CSV or a labels.json)."""
    state = f"{CACHE_FORMAT}\n{labels_key}\n" + "".join(f"{r}\t{n}\t{t}\n" for r, (n, t) in zip(rels, stats))
    return _tensor_cache(kind, root, image_size, state)


def _read_cache(path: Path, skip_bad: bool, source: Path) -> DecodedImages | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != CACHE_FORMAT:
            raise ValueError("old cache format")
        decoded = DecodedImages(payload["images"], payload["labels"], dict(payload["sizes"]), list(payload["skipped"]),
                                list(payload["classes"]), list(payload.get("resized", [])), int(payload["gray"]))
        if decoded.images.dtype != torch.uint8 or decoded.images.shape[0] != sum(decoded.sizes.values()):
            raise ValueError("inconsistent contents")
    except Exception as e:  # an unreadable cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        path.unlink(missing_ok=True)
        return None
    if decoded.skipped and not skip_bad:
        raise bad_image_error(*decoded.skipped[0])
    if decoded.resized:
        report_resized(str(source), decoded.resized, decoded.images.shape[0],
                       cast("tuple[int, int]", tuple(decoded.images.shape[2:])))
    return decoded


def _write_cache(path: Path, decoded: DecodedImages) -> None:
    payload = {"format": CACHE_FORMAT, "images": decoded.images, "labels": decoded.labels, "sizes": decoded.sizes,
               "skipped": decoded.skipped, "classes": decoded.classes, "resized": decoded.resized, "gray": decoded.gray}
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


def cached(cache: Path, skip_bad: bool, source: Path, decode: Callable[[], DecodedImages | None]
           ) -> DecodedImages | None:
    """The cached tensors, or ``decode()``'s, written to the cache (None: they are to be streamed)."""
    decoded = _read_cache(cache, skip_bad, source) if cache.is_file() else None
    if decoded is None:
        decoded = decode()
        if decoded is not None:
            _write_cache(cache, decoded)
    return decoded


def extracted_for_streaming(archive: Path) -> Path:
    """The folder in the cache that holds ``archive``'s images (extracted now if it is not there yet)."""
    st = archive.stat()
    where = hashlib.sha256(str(archive).encode()).hexdigest()[:10]
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar\.bz2|\.tbz2|\.tar\.xz|\.txz|\.tar|\.zip)$", "", archive.name, flags=re.I)
    stem = f"{_slug(stem)}-{where}"
    extracted = cache_dir() / "imagefolder" / "extracted"
    target = extracted / f"{stem}-{st.st_size:x}-{st.st_mtime_ns:x}"
    if not target.is_dir():
        extract_archive(archive, target, select=is_image_path)  # images only: nothing else is read
        for old in extracted.glob(f"{stem}-*"):  # extractions of an older state of the same archive
            if old != target and old.is_dir() and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return target
