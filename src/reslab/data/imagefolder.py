"""Image folders: ``<class>/<image>`` or ``train/<class>/<image>`` (with ``val/``, ``test/``),
or a .tar.gz/.tgz/.tar/.zip archive of one; a folder with a ``labels.json``, and a CSV of
``path,label[,split]`` lines (``csv:FILE``), read by :mod:`.labels` into the same listing.

Held in memory when the images share one size and fit (:data:`MAX_IN_MEMORY_BYTES`): decoded once
by a small thread pool (a folder file by file, an archive straight from the archive) and cached
as a uint8 tensor file keyed by the path and the names, sizes and mtimes of the files (an
archive: its size and mtime; :mod:`.cache`). A few odd-sized images
(:data:`~.decode.ODD_SIZE_SHARE`) are resized to the size the others share, and reported.
Otherwise streamed from disk (:class:`FileImages`), an archive's images extracted into the cache
first. Listing the images and laying them out in classes and splits is :mod:`.listing`'s. A
mixture of grayscale and colour images is converted to RGB and reported (:func:`~.decode.gray_note`).

Hostile input is bounded (:mod:`.limits`): archive members are checked from their headers before
they are read or extracted, and only images are extracted; only regular files are opened; image
dimensions are checked from the header before decoding; folder symlink loops are not followed.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from ..errors import ReslabError
from .archive import READ_ERRORS, ArchiveError
from .archive import is_archive as is_archive_name
from .cache import archive_cache, cached, extracted_for_streaming, folder_cache
from .decode import (
    GRAY_MODES,
    DecodedImages,
    Gather,
    bad_image_error,
    decode_bytes,
    decode_chunk,
    decode_file,
    decoded_count,
    decoding_pool,
    gray_note,
)
from .labels import LABELS_JSON, labels_json_files, read_csv, read_labels_json
from .listing import IMAGE_EXTENSIONS, Layout, Listing, image_members, layout_of, list_folder
from .probe import BadImage, not_regular, probe_mode
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, FileImages, TensorImages, split_train
from .transforms import resize_center_crop

__all__ = ["IMAGE_EXTENSIONS", "MAX_IN_MEMORY_BYTES", "PROBE_ALL", "load_imagefolder", "load_csv", "load_listed"]

log = logging.getLogger(__name__)

MAX_IN_MEMORY_BYTES = 8 << 30
"""An image folder larger than this once decoded is streamed unless ``stream=False``."""

_CHUNK = 512  # images a decoding thread takes at a time


# ---------------------------------------------------------------------------------------------
# Decoding into one tensor


def _resizer(image_size: int | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return partial(resize_center_crop, size=image_size) if image_size else None


def _decode_folder(root: Path, rels: list[str], layout: Layout, image_size: int | None, skip_bad: bool,
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
            for name, data in image_members(archive, dirs):
                chunk.append((len(rels), data))
                rels.append(name)
                if len(chunk) == _CHUNK:
                    futures.append(pool.submit(work, chunk))
                    chunk = []
                    if not drain(futures, keep=4):  # checks sizes early; bounds memory held in bytes
                        pool.shutdown(wait=True, cancel_futures=True)
                        return None
        except ArchiveError:  # unsafe, or over a limit: refused from a header, before reading on
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except READ_ERRORS as e:
            pool.shutdown(wait=True, cancel_futures=True)
            raise ArchiveError(f"archive {archive} is truncated or corrupt ({e}); replace it with a "
                               "complete copy") from None
        if chunk:
            futures.append(pool.submit(work, chunk))
        if not drain(futures, keep=0):
            return None
    if not rels:
        raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in archive {archive}; expected "
                          "<class>/<image> or train/<class>/<image> members")
    layout = layout_of(rels, str(archive), dirs)
    return gather.result(layout.splits, layout.classes)


# ---------------------------------------------------------------------------------------------
# Streaming from disk


PROBE_ALL = 10_000
"""A streamed dataset of up to this many images has every image's header read, to count its
grayscale images (about 0.25 ms an image on a busy 2-core machine: 2.5 s for 10,000); a larger
one's headers are read only until the first colour image (its grayscale images are converted as
they are loaded all the same, uncounted)."""


def _stream_splits(root: Path, rels: list[str], layout: Layout, image_size: int | None, skip_bad: bool,
                   unopenable: dict[int, str]
                   ) -> tuple[dict[str, TensorImages | FileImages], int, list[str], int | None, str | None]:
    # Channels: 3 unless every image is grayscale, from headers alone. Every header is read (to count
    # the grayscale images, or to check every file with skip_bad) unless there are over PROBE_ALL
    # images: then reading stops at the first colour image. Files whose header is fine but whose
    # data is not are found when loaded. Paths the listing found not to be regular files are
    # refused (or skipped) first, never opened.
    skipped, bad = [], set()
    for i in sorted(i for split in layout.splits.values() for i, _ in split if i in unopenable):
        if not skip_bad:
            raise bad_image_error(str(root / rels[i]), unopenable[i], verb="open")
        log.warning("skipping image %s (%s)", root / rels[i], unopenable[i])
        skipped.append(str(root / rels[i]))
        bad.add(i)
    kept = [i for split in layout.splits.values() for i, _ in split if i not in bad]
    read_all = skip_bad or len(kept) <= PROBE_ALL
    channels, gray, example, complete = 1, 0, None, True
    for i in kept:
        try:
            mode = probe_mode(str(root / rels[i]))
        except BadImage as e:
            if not skip_bad:
                raise bad_image_error(str(root / rels[i]), str(e), verb="open") from None
            skipped.append(str(root / rels[i]))
            bad.add(i)
            continue
        if mode in GRAY_MODES:
            gray += 1
            example = example or str(root / rels[i])
        else:
            channels = 3
            if not read_all:
                complete = False
                break
    splits: dict[str, TensorImages | FileImages] = {
        name: FileImages([(str(root / rels[i]), y) for i, y in items if i not in bad], channels, image_size)
        for name, items in layout.splits.items()}
    return splits, channels, skipped, gray if complete else None, example


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
    if is_archive and not is_archive_name(src):
        hint = f" (for a CSV of path,label lines use csv:{src})" if src.suffix.lower() == ".csv" else ""
        raise ReslabError(f"{src} is neither a folder nor a .tar.gz/.tgz/.tar/.zip archive of one{hint}")
    src = src.resolve()
    if not is_archive and not any(True for _ in os.scandir(src)):
        raise ReslabError(f"image folder {src} is empty; expected {src}/<class>/<image> or "
                          f"{src}/train/<class>/<image> (and test/, val/)")
    return src, is_archive


def _splits_of(name: str, classes: list[str], channels: int, size: tuple[int, int] | None,
               splits: dict[str, TensorImages | FileImages], info: dict[str, Any], options: LoadOptions,
               gray: int | None, gray_example: str | None) -> DatasetSplits:
    """The dataset: the validation split from ``val/`` or held out of the training set, and the
    grayscale images converted to RGB reported (logged, and in ``stats``)."""
    if "val" in splits:
        train, val = splits["train"], splits["val"]
        info["val_from"] = "split column" if info["source"] == "csv" else "val folder"
    else:
        train, val = split_train(splits["train"], options.val_size, options.seed, name)
        info["val_from"] = "train" if len(val) else "none"
    test = splits.get("test")
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    data = DatasetSplits(name, list(classes), int(channels), size, train, val, test, info)
    data.stats["grayscale"] = gray if channels == 3 else 0
    if note := gray_note(gray, sum(len(s) for s in splits.values()), channels, gray_example):
        log.warning("%s: %s", info["root"], note)
        data.stats.setdefault("notes", []).append(note)
    return data


def _from_decoded(name: str, decoded: DecodedImages, info: dict[str, Any], options: LoadOptions) -> DatasetSplits:
    info["skipped"] = [name for name, _ in decoded.skipped]
    info["resized"] = list(decoded.resized)
    splits: dict[str, TensorImages | FileImages] = {}
    start = 0
    for split_name, n in decoded.sizes.items():
        splits[split_name] = TensorImages(decoded.images[start:start + n], decoded.labels[start:start + n])
        start += n
    size = cast("tuple[int, int]", tuple(decoded.images.shape[2:]))  # images are (N, C, H, W)
    return _splits_of(name, decoded.classes, decoded.images.shape[1], size, splits, info, options, decoded.gray, None)


def _streamed(name: str, root: Path, found: Listing, layout: Layout, info: dict[str, Any],
              options: LoadOptions) -> DatasetSplits:
    splits, channels, info["skipped"], gray, example = _stream_splits(root, found.rels, layout, options.image_size,
                                                                     options.skip_bad, found.bad)
    info["root"] = str(root / layout.prefix) if layout.prefix else str(root)
    return _splits_of(name, layout.classes, channels, None, splits, info, options, gray, example)


def _info(root: Path, source: str) -> dict[str, Any]:
    return {"root": str(root), "source": source, "skipped": [], "resized": [], "decoded": 0, "cache_file": None}


def load_listed(name: str, src: Path, root: Path, found: Listing, layout: Layout, options: LoadOptions, *,
                source: str, kind: str = "dir", labels_key: str = "") -> DatasetSplits:
    """The dataset of listed images (``root / found.rels[i]``) laid out in classes and splits: held in
    memory and cached (keyed by ``src``, the files' stats and ``labels_key``) or streamed from disk.
    Class-per-folder trees, CSVs and labels.json files all end here."""
    stream = options.stream
    info = _info(src, source)
    if stream is not True:
        before = decoded_count()
        cache = folder_cache(src, options.image_size, found.rels, found.stats, kind=kind, labels_key=labels_key)
        decoded = cached(cache, options.skip_bad, src, lambda: _decode_folder(
            root, found.rels, layout, options.image_size, options.skip_bad, stream is None))
        info["decoded"] = decoded_count() - before
        if decoded is not None:
            info["cache_file"] = str(cache)
            return _from_decoded(name, decoded, info, options)
    return _streamed(name, root, found, layout, info, options)


def _load_archive(src: Path, options: LoadOptions) -> DatasetSplits:
    name, info = f"imagefolder:{src}", _info(src, "archive")
    if options.stream is not True:
        before = decoded_count()
        cache = archive_cache(src, options.image_size)
        decoded = cached(cache, options.skip_bad, src, lambda: _decode_archive(
            src, options.image_size, options.skip_bad, options.stream is None))
        info["decoded"] = decoded_count() - before
        if decoded is not None:
            info["cache_file"] = str(cache)
            return _from_decoded(name, decoded, info, options)
    root = extracted_for_streaming(src)
    found = list_folder(root)
    if not found.rels:
        raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                          "<class>/<image> or train/<class>/<image>")
    return _streamed(name, root, found, layout_of(found.rels, str(src), found.dirs), info, options)


@register_dataset("imagefolder", takes_path=True, streams=True,
                  description="your images: PATH/<class>/<image> or PATH/train/<class>/<image> (with val/, test/), "
                              "or a .tar.gz/.tgz/.tar/.zip archive of one; or PATH/labels.json naming each "
                              "image's class")
def load_imagefolder(path: str, options: LoadOptions) -> DatasetSplits:
    src, is_archive = _source(path)
    if is_archive:
        return _load_archive(src, options)
    name = f"imagefolder:{src}"
    if (files := labels_json_files(src)) is not None:
        found, layout, key = read_labels_json(src, files, options.skip_bad)
        return load_listed(name, src, src, found, layout, options, source="labels.json", kind="labels",
                           labels_key=key)
    found = list_folder(src)
    if not found.rels:
        raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                          f"{src}/<class>/<image> or {src}/train/<class>/<image> (or a {LABELS_JSON} naming "
                          "each image's class)")
    return load_listed(name, src, src, found, layout_of(found.rels, str(src), found.dirs), options, source="folder")


def _csv_source(path_text: str) -> Path:
    if not path_text:
        raise ReslabError("csv needs a path: csv:/path/to/labels.csv (lines of path,label[,split])")
    src = Path(path_text).expanduser().absolute()
    if not os.path.lexists(src):
        raise ReslabError(f"CSV file {src} does not exist; check the path after 'csv:'")
    if src.is_dir():
        raise ReslabError(f"{src} is a folder; csv: names a CSV file of path,label lines (for a folder of "
                          f"class folders or with a {LABELS_JSON}, use imagefolder:{src})")
    return src.resolve()


@register_dataset("csv", takes_path=True, streams=True,
                  description="your images listed in a CSV file: path,label[,split] lines, paths relative to the CSV")
def load_csv(path: str, options: LoadOptions) -> DatasetSplits:
    src = _csv_source(path)
    found, layout, key = read_csv(src, options.skip_bad)
    return load_listed(f"csv:{src}", src, src.parent, found, layout, options, source="csv", kind="csv",
                       labels_key=key)
