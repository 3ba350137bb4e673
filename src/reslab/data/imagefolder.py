"""Image folders: ``<class>/<image>`` or ``train/<class>/<image>`` (with ``val/``, ``test/``),
or a .tar.gz/.tgz/.tar/.zip archive of one.

Held in memory when the images share one size and fit (:data:`MAX_IN_MEMORY_BYTES`): decoded once
by a small thread pool (a folder file by file, an archive straight from the archive) and cached
as a uint8 tensor file keyed by the path and the names, sizes and mtimes of the files (an
archive: its size and mtime). Otherwise streamed from disk (:class:`FileImages`), an archive
extracted into the cache first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from ..errors import ReslabError
from ..io import atomic_path
from . import download as dl
from .decode import (
    GRAY_MODES,
    BadImage,
    DecodedImages,
    Gather,
    bad_image_error,
    decode_bytes,
    decode_chunk,
    decode_file,
    decoded_count,
    decoding_pool,
    probe_mode,
)
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, FileImages, TensorImages, split_train
from .transforms import resize_center_crop

__all__ = ["IMAGE_EXTENSIONS", "MAX_IN_MEMORY_BYTES", "load_imagefolder"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)
"""File extensions (lower case) that count as images in an image folder."""

MAX_IN_MEMORY_BYTES = 8 << 30
"""An image folder larger than this once decoded is streamed unless ``stream=False``."""

_CACHE_FORMAT = 1
_CHUNK = 512  # images a decoding thread takes at a time


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------------------------
# Listing and layout


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
    splits: dict[str, list[tuple[int, int]]] = {}
    for split in ("train", "val", "test"):
        if split not in found:
            continue
        if unknown := sorted(set(found[split]) - set(index)):
            raise ReslabError(f"{where}: {split}/ has class folders {unknown} that train/ lacks; give train/ "
                              "the same class folders")
        splits[split] = [(i, index[c]) for c in sorted(found[split], key=index.__getitem__)
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


# ---------------------------------------------------------------------------------------------
# Decoding into one tensor


def _resizer(image_size: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return partial(resize_center_crop, size=image_size) if image_size else None


def _decode_folder(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool,
                   may_stream: bool) -> DecodedImages | None:
    wanted = [(i, str(root / rels[i])) for split in layout.splits.values() for i, _ in split]
    gather = Gather(str(root), skip_bad, may_stream, expected=len(wanted), max_bytes=MAX_IN_MEMORY_BYTES)
    chunks = [wanted[a:a + _CHUNK] for a in range(0, len(wanted), _CHUNK)]
    with decoding_pool() as pool:
        for results in pool.map(partial(decode_chunk, decode=decode_file, resize=_resizer(image_size)), chunks):
            if not gather.take(results, lambda i: str(root / rels[i])):
                pool.shutdown(wait=True, cancel_futures=True)
                return None
    return gather.result(layout.splits, layout.classes)


def _decode_archive(archive: Path, image_size: int | None, skip_bad: bool, may_stream: bool) -> DecodedImages | None:
    """Decode an archived image folder straight from the archive: no files written."""
    gather = Gather(str(archive), skip_bad, may_stream, expected=None, max_bytes=MAX_IN_MEMORY_BYTES)
    rels: list[str] = []
    work = partial(decode_chunk, decode=decode_bytes, resize=_resizer(image_size))

    def drain(futures: list, keep: int) -> bool:
        while len(futures) > keep:
            if not gather.take(futures.pop(0).result(), lambda i: f"{archive}:{rels[i]}"):
                return False
        return True

    with decoding_pool() as pool:
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
    layout = _layout(rels, str(archive))
    return gather.result(layout.splits, layout.classes)


# ---------------------------------------------------------------------------------------------
# The decoded-tensor cache


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40] or "root"


def _tensor_cache(kind: str, source: Path, image_size: int | None, state: str) -> Path:
    where = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    state = hashlib.sha256(state.encode()).hexdigest()[:16]
    return (dl.cache_dir() / "imagefolder" / "tensors"
            / f"{_slug(source.name)}-{kind}-{where}-{image_size or 'native'}-{state}.pt")


def _read_cache(path: Path, skip_bad: bool) -> DecodedImages | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != _CACHE_FORMAT:
            raise ValueError("old cache format")
        decoded = DecodedImages(payload["images"], payload["labels"], dict(payload["sizes"]), list(payload["skipped"]),
                           list(payload["classes"]))
        if decoded.images.dtype != torch.uint8 or decoded.images.shape[0] != sum(decoded.sizes.values()):
            raise ValueError("inconsistent contents")
    except Exception as e:  # an unreadable cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        path.unlink(missing_ok=True)
        return None
    if decoded.skipped and not skip_bad:
        raise bad_image_error(*decoded.skipped[0])
    return decoded


def _write_cache(path: Path, decoded: DecodedImages) -> None:
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


def _cached(cache: Path, skip_bad: bool, decode: Callable[[], DecodedImages | None]) -> DecodedImages | None:
    """The cached tensors, or ``decode()``'s, written to the cache (None: they are to be streamed)."""
    decoded = _read_cache(cache, skip_bad) if cache.is_file() else None
    if decoded is None:
        decoded = decode()
        if decoded is not None:
            _write_cache(cache, decoded)
    return decoded


# ---------------------------------------------------------------------------------------------
# Streaming from disk


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


def _stream_splits(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool
                   ) -> tuple[dict[str, TensorImages | FileImages], int, list[str]]:
    # Channels: 3 unless every image is grayscale; the probe reads headers only and stops at the
    # first colour image, unless skip_bad asks for every header to be checked. Files whose header
    # is fine but whose data is not are found when loaded.
    skipped, bad = [], set()
    channels = 1
    for i in (i for split in layout.splits.values() for i, _ in split):
        try:
            mode = probe_mode(str(root / rels[i]))
        except BadImage as e:
            if not skip_bad:
                raise bad_image_error(str(root / rels[i]), str(e), verb="open") from None
            skipped.append(str(root / rels[i]))
            bad.add(i)
            continue
        if mode not in GRAY_MODES:
            channels = 3
            if not skip_bad:
                break
    splits: dict[str, TensorImages | FileImages] = {
        name: FileImages([(str(root / rels[i]), y) for i, y in items if i not in bad], channels, image_size)
        for name, items in layout.splits.items()}
    return splits, channels, skipped


# ---------------------------------------------------------------------------------------------
# The dataset


def _source(path_text: str) -> tuple[Path, bool]:
    """The absolute, resolved folder or archive named after ``imagefolder:``, and whether it is an archive."""
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
    return src, is_archive


@register_dataset("imagefolder", takes_path=True, streams=True,
                  description="your images: PATH/<class>/<image> or PATH/train/<class>/<image> (with val/, test/), "
                              "or a .tar.gz/.tgz/.tar/.zip archive of one")
def load_imagefolder(path: str, options: LoadOptions) -> DatasetSplits:
    src, is_archive = _source(path)
    image_size, skip_bad, stream = options.image_size, options.skip_bad, options.stream
    info: dict[str, Any] = {"root": str(src), "source": "archive" if is_archive else "folder", "skipped": [],
                            "decoded": 0, "cache_file": None}
    decoded: DecodedImages | None = None
    listing = None
    if stream is not True:
        before = decoded_count()
        if is_archive:
            st = src.stat()
            cache = _tensor_cache("tar", src, image_size, f"{_CACHE_FORMAT}\n{st.st_size}\n{st.st_mtime_ns}")
            decoded = _cached(cache, skip_bad, lambda: _decode_archive(src, image_size, skip_bad, stream is None))
        else:
            rels, stats = _list_folder(src)
            if not rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  f"{src}/<class>/<image> or {src}/train/<class>/<image>")
            layout = _layout(rels, str(src))
            listing = (src, rels, layout)
            state = f"{_CACHE_FORMAT}\n" + "".join(f"{r}\t{n}\t{t}\n" for r, (n, t) in zip(rels, stats))
            cache = _tensor_cache("dir", src, image_size, state)
            decoded = _cached(cache, skip_bad,
                              lambda: _decode_folder(src, rels, layout, image_size, skip_bad, stream is None))
        info["decoded"] = decoded_count() - before
        if decoded is not None:
            info["cache_file"] = str(cache)

    if decoded is not None:
        classes, channels = decoded.classes, decoded.images.shape[1]
        size = cast("tuple[int, int]", tuple(decoded.images.shape[2:]))  # images are (N, C, H, W)
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
        train, val = split_train(splits["train"], options.val_size, options.seed, name)
        info["val_from"] = "train" if len(val) else "none"
    test = splits.get("test")
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    return DatasetSplits(name, list(classes), int(channels), size, train, val, test, info)
