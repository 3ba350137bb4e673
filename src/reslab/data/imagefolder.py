"""Image folders: ``<class>/<image>`` or ``train/<class>/<image>`` (with ``val/``, ``test/``),
or a .tar.gz/.tgz/.tar/.zip archive of one.

Held in memory when the images share one size and fit (:data:`MAX_IN_MEMORY_BYTES`): decoded once
by a small thread pool (a folder file by file, an archive straight from the archive) and cached
as a uint8 tensor file keyed by the path and the names, sizes and mtimes of the files (an
archive: its size and mtime; :mod:`.cache`). A few odd-sized images
(:data:`~.decode.ODD_SIZE_SHARE`) are resized to the size the others share, and reported.
Otherwise streamed from disk (:class:`FileImages`), an archive's images extracted into the cache
first. Listing the images and laying them out in classes and splits is :mod:`.listing`'s.

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
)
from .listing import IMAGE_EXTENSIONS, Layout, image_members, layout_of, list_folder
from .probe import BadImage, not_regular, probe_mode
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, FileImages, TensorImages, split_train
from .transforms import resize_center_crop

__all__ = ["IMAGE_EXTENSIONS", "MAX_IN_MEMORY_BYTES", "load_imagefolder"]

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


def _stream_splits(root: Path, rels: list[str], layout: Layout, image_size: int | None, skip_bad: bool,
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
    if is_archive and not is_archive_name(src):
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
            cache = archive_cache(src, image_size)
            decoded = cached(cache, skip_bad, src, lambda: _decode_archive(src, image_size, skip_bad, stream is None))
        else:
            found = list_folder(src)
            rels = found.rels
            if not rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  f"{src}/<class>/<image> or {src}/train/<class>/<image>")
            layout = layout_of(rels, str(src), found.dirs)
            listing = (src, found, layout)
            cache = folder_cache(src, image_size, rels, found.stats)
            decoded = cached(cache, skip_bad, src,
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
            root = extracted_for_streaming(src) if is_archive else src
            found = list_folder(root)
            if not found.rels:
                raise ReslabError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {src}; expected "
                                  "<class>/<image> or train/<class>/<image>")
            listing = (root, found, layout_of(found.rels, str(src), found.dirs))
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
