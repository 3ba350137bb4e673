"""Image folders: ``<class>/<image>`` or ``train/<class>/<image>`` (with ``val/``, ``test/``),
or a .tar.gz/.tgz/.tar/.zip archive of one.

Held in memory when the images share one size and fit (:data:`MAX_IN_MEMORY_BYTES`): decoded once
by a small thread pool (a folder file by file, an archive straight from the archive) and cached
as a uint8 tensor file keyed by the path and the names, sizes and mtimes of the files (an
archive: its size and mtime). A few odd-sized images (:data:`~.decode.ODD_SIZE_SHARE`) are
resized to the size the others share, and reported. Otherwise streamed from disk
(:class:`FileImages`), an archive's images extracted into the cache first.

Hostile input is bounded (:mod:`.limits`): archive members are checked from their headers before
they are read or extracted, and only images are extracted; only regular files are opened; image
dimensions are checked from the header before decoding; folder symlink loops are not followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
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
    not_regular,
    probe_mode,
    report_resized,
    stat_problem,
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


def _is_image_path(path: str) -> bool:
    return _is_image_name(path.rsplit("/", 1)[-1])


# ---------------------------------------------------------------------------------------------
# Listing and layout


@dataclass
class _Layout:
    prefix: str  # folders above the dataset's root inside the listing ("" or "cifar10/")
    classes: list[str]
    splits: dict[str, list[tuple[int, int]]]  # "train"/"val"/"test" -> (index into the listing, label)


def _layout(rels: list[str], where: str, dirs: set[str] | frozenset[str] = frozenset()) -> _Layout:
    """Classes and splits of a listing of image paths ('/'-separated, relative to the root).

    ``<class>/<image>`` is one training set; ``train/<class>/<image>`` with optional ``val/`` and
    ``test/`` gives splits. A single folder wrapping the whole tree (an archive of
    ``cifar10/train/...``) is looked through. Images in subfolders of a class folder belong to it.
    Class folders among ``dirs`` (every folder of the tree) without images are reported; a tree
    with fewer than two classes is refused.
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
    empty = []  # class folders without images, as "cls" or "train/cls"
    for d in sorted(dirs):
        q = d.split("/")
        rest = q[depth:]
        if q[:depth] != parts[0][:depth]:
            continue
        if split_mode and len(rest) == 2 and rest[0] in ("train", "val", "test"):
            if rest[1] not in found.get(rest[0], {}):
                empty.append("/".join(rest))
        elif not split_mode and len(rest) == 1 and rest[0] not in found["train"]:
            empty.append(rest[0])
    if empty:
        log.warning("%s: ignoring empty class folder%s %s (no %s images in %s)", where, "s" * (len(empty) > 1),
                    ", ".join(f"{e}/" for e in empty), "/".join(IMAGE_EXTENSIONS), "them" if len(empty) > 1 else "it")
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
    if len(found["train"]) < 2:
        (only,) = found["train"]
        raise ReslabError(f"{where} has one class folder ({only}/); a classifier needs at least two: add a folder of "
                          "images for each class")
    prefix = "/".join(parts[0][:depth]) + "/" if depth else ""
    return _Layout(prefix, classes, splits)


@dataclass
class _Listing:
    rels: list[str]  # image paths, relative, '/'-separated, sorted
    stats: list[tuple[int, int]]  # their (size, mtime_ns)
    dirs: set[str]  # every folder, relative
    bad: dict[int, str]  # index into rels -> why it cannot be opened (dangling link, FIFO, ...)


def _list_folder(root: Path) -> _Listing:
    """The images under ``root``. Only their names and stats are read: an image path that is not a
    regular file (a FIFO, a device, a dangling or looping symbolic link) is listed as bad, never
    opened; a symbolic link back to a folder already listed is not followed again."""
    rels, stats, dirs, why = [], [], set(), {}
    seen = {(root.stat().st_dev, root.stat().st_ino)}  # folders listed, to list none twice
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
            try:
                folder = entry.stat() if entry.is_dir() else None
            except OSError:  # a symbolic link loop: no folder to list
                folder = None
            if folder is not None:
                key = (folder.st_dev, folder.st_ino)
                if key in seen:
                    log.warning("%s: not following %s again (a symbolic link to a folder already listed)", root, rel)
                    continue
                seen.add(key)
                dirs.add(rel)
                stack.append(rel)
            elif _is_image_name(entry.name):
                try:
                    st = entry.stat()
                    if not stat.S_ISREG(st.st_mode):
                        why[rel] = f"not a regular file but {not_regular(st.st_mode)}"
                except OSError as e:
                    st = entry.stat(follow_symlinks=False)
                    why[rel] = stat_problem(entry.path, e)
                rels.append(rel)
                stats.append((st.st_size, st.st_mtime_ns))
    order = sorted(range(len(rels)), key=rels.__getitem__)
    rels = [rels[i] for i in order]
    return _Listing(rels, [stats[i] for i in order], dirs, {k: why[r] for k, r in enumerate(rels) if r in why})


def _archive_members(archive: Path, dirs: set[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the image files in a tar or zip archive, in archive order, each checked from
    its header before it is read (:func:`~.download.archive_members`); the archive's folders
    (including those of its other files, never read) are added to ``dirs``."""
    for name, is_dir, data in dl.archive_members(archive, select=_is_image_path):
        if is_dir:
            dirs.add(name)
        elif data is None:
            if "/" in name:
                dirs.add(name.rsplit("/", 1)[0])
        else:
            yield name, data.read()


# ---------------------------------------------------------------------------------------------
# Decoding into one tensor


def _resizer(image_size: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return partial(resize_center_crop, size=image_size) if image_size else None


def _decode_folder(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool,
                   may_stream: bool) -> DecodedImages | None:
    # decode_file opens regular files only (the listing's bad entries fail there, named)
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
    dirs: set[str] = set()
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
            for name, data in _archive_members(archive, dirs):
                chunk.append((len(rels), data))
                rels.append(name)
                if len(chunk) == _CHUNK:
                    futures.append(pool.submit(work, chunk))
                    chunk = []
                    if not drain(futures, keep=4):  # checks sizes early; bounds memory held in bytes
                        pool.shutdown(wait=True, cancel_futures=True)
                        return None
        except dl.ArchiveError:  # unsafe, or over a limit: refused from a header, before reading on
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except dl.READ_ERRORS as e:
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
    layout = _layout(rels, str(archive), dirs)
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


def _read_cache(path: Path, skip_bad: bool, source: Path) -> DecodedImages | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != _CACHE_FORMAT:
            raise ValueError("old cache format")
        decoded = DecodedImages(payload["images"], payload["labels"], dict(payload["sizes"]), list(payload["skipped"]),
                                list(payload["classes"]), list(payload.get("resized", [])))
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
    payload = {"format": _CACHE_FORMAT, "images": decoded.images, "labels": decoded.labels, "sizes": decoded.sizes,
               "skipped": decoded.skipped, "classes": decoded.classes, "resized": decoded.resized}
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


def _cached(cache: Path, skip_bad: bool, source: Path, decode: Callable[[], DecodedImages | None]
            ) -> DecodedImages | None:
    """The cached tensors, or ``decode()``'s, written to the cache (None: they are to be streamed)."""
    decoded = _read_cache(cache, skip_bad, source) if cache.is_file() else None
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
        dl.extract_archive(archive, target, select=_is_image_path)  # images only: nothing else is read
        for old in extracted.glob(f"{stem}-*"):  # extractions of an older state of the same archive
            if old != target and old.is_dir() and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)
    return target


def _stream_splits(root: Path, rels: list[str], layout: _Layout, image_size: int | None, skip_bad: bool,
                   unopenable: dict[int, str]) -> tuple[dict[str, TensorImages | FileImages], int, list[str]]:
    # Channels: 3 unless every image is grayscale; the probe reads headers only and stops at the
    # first colour image, unless skip_bad asks for every header to be checked. Files whose header
    # is fine but whose data is not are found when loaded. Paths the listing found not to be
    # regular files are refused (or skipped) first, never opened.
    skipped, bad = [], set()
    for i in sorted(i for split in layout.splits.values() for i, _ in split if i in unopenable):
        if not skip_bad:
            raise bad_image_error(str(root / rels[i]), unopenable[i], verb="open")
        log.warning("skipping image %s (%s)", root / rels[i], unopenable[i])
        skipped.append(str(root / rels[i]))
        bad.add(i)
    channels = 1
    for i in (i for split in layout.splits.values() for i, _ in split if i not in bad):
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
    st = src.stat()
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ReslabError(f"{src} is {not_regular(st.st_mode)}, neither a folder nor a .tar.gz/.tgz/.tar/.zip "
                          "archive of one; reslab opens only regular files")
    is_archive = stat.S_ISREG(st.st_mode)
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
                            "resized": [], "decoded": 0, "cache_file": None}
    decoded: DecodedImages | None = None
    listing = None
    if stream is not True:
        before = decoded_count()
        if is_archive:
            st = src.stat()
            cache = _tensor_cache("tar", src, image_size, f"{_CACHE_FORMAT}\n{st.st_size}\n{st.st_mtime_ns}")
            decoded = _cached(cache, skip_bad, src,
                              lambda: _decode_archive(src, image_size, skip_bad, stream is None))
        else:
            found = _list_folder(src)
            rels = found.rels
            if not rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  f"{src}/<class>/<image> or {src}/train/<class>/<image>")
            layout = _layout(rels, str(src), found.dirs)
            listing = (src, found, layout)
            state = f"{_CACHE_FORMAT}\n" + "".join(f"{r}\t{n}\t{t}\n" for r, (n, t) in zip(rels, found.stats))
            cache = _tensor_cache("dir", src, image_size, state)
            decoded = _cached(cache, skip_bad, src,
                              lambda: _decode_folder(src, rels, layout, image_size, skip_bad, stream is None))
        info["decoded"] = decoded_count() - before
        if decoded is not None:
            info["cache_file"] = str(cache)

    if decoded is not None:
        classes, channels = decoded.classes, decoded.images.shape[1]
        size = cast("tuple[int, int]", tuple(decoded.images.shape[2:]))  # images are (N, C, H, W)
        info["skipped"] = [name for name, _ in decoded.skipped]
        info["resized"] = list(decoded.resized)
        splits: dict[str, TensorImages | FileImages] = {}
        start = 0
        for split_name, n in decoded.sizes.items():
            splits[split_name] = TensorImages(decoded.images[start:start + n], decoded.labels[start:start + n])
            start += n
    else:
        if listing is None:
            root = _extract_for_streaming(src) if is_archive else src
            found = _list_folder(root)
            if not found.rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  "<class>/<image> or train/<class>/<image>")
            listing = (root, found, _layout(found.rels, str(src), found.dirs))
        root, found, layout = listing
        splits, channels, info["skipped"] = _stream_splits(root, found.rels, layout, image_size, skip_bad, found.bad)
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
