"""Image files to uint8 tensors: torchvision's decoders where they match PIL, PIL elsewhere.

Every decoder gives the pixels PIL gives: (C, H, W) uint8 with C 1 (grayscale) or 3 (colour,
alpha dropped). A file that cannot be decoded raises :class:`BadImage`; callers name it and
skip it or fail (:func:`bad_image_error`). Many images are decoded in chunks by a small thread
pool (:func:`decoding_pool`, :func:`decode_chunk`) and gathered into one tensor (:class:`Gather`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ReslabError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GRAY_MODES", "BadImage", "bad_image_error", "decode_bytes", "decode_file", "probe_mode", "open_image",
           "decoding_pool", "decode_chunk", "Gather", "DecodedImages", "decoded_count"]

log = logging.getLogger(__name__)

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes decoded to one channel."""

_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
_decodes = 0  # images decoded by Gather's chunks since import (decoded_count)


class BadImage(Exception):
    """A file that is unreadable, truncated or not an image; the message says why."""


def bad_image_error(name: str, why: str, verb: str = "decode") -> ReslabError:
    """The error for a bad image when bad files are not to be skipped."""
    return ReslabError(f"cannot {verb} image {name} ({why}); delete or replace it, or pass skip_bad=True "
                       "(--skip-bad) to leave bad files out")


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


def decode_bytes(data: bytes) -> torch.Tensor:
    """(C, H, W) uint8 with C 1 (grayscale) or 3; the same pixels PIL gives for the file."""
    palette_png = data.startswith(_PNG) and len(data) > 25 and data[25] == 3  # IHDR colour type 3
    decode = _torchvision_decoder()
    if decode is not None and (data.startswith(_JPEG) or (data.startswith(_PNG) and not palette_png)):
        try:
            x = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        except RuntimeError as e:
            raise BadImage(str(e).strip().splitlines()[-1]) from None
        if x.dtype == torch.uint8 and x.dim() == 3:
            if x.shape[0] in (1, 3):
                return x
            if data.startswith(_PNG) and x.shape[0] in (2, 4):  # drop alpha, as PIL's convert does
                return x[: x.shape[0] - 1].contiguous()
        # palette and 16-bit PNGs: PIL's conversions are the reference
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            img = im.convert("L" if im.mode in GRAY_MODES else "RGB")
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImage(str(e) or type(e).__name__) from None
    array = np.asarray(img)
    return torch.from_numpy(array.copy()).reshape(img.height, img.width, -1).permute(2, 0, 1).contiguous()


def decode_file(path: str) -> torch.Tensor:
    """:func:`decode_bytes` of a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImage(e.strerror or str(e)) from None
    return decode_bytes(data)


def probe_mode(path: str) -> str:
    """The PIL mode of an image file, from its header alone."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode
    except Exception as e:
        raise BadImage(str(e) or type(e).__name__) from None


def open_image(path: str, mode: str) -> Image.Image:
    """An image file decoded by PIL and converted to ``mode``.

    Raises:
        ReslabError: The file is unreadable, truncated or not an image (the message names it).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ReslabError(f"cannot decode image {path} ({e}); replace or delete the file") from None


# ---------------------------------------------------------------------------------------------
# Many images: decoded in chunks by a thread pool, gathered into one tensor


@contextlib.contextmanager
def decoding_pool() -> Iterator[ThreadPoolExecutor]:
    """A pool of decoding threads, each with one torch thread, torchvision's deprecation quiet."""
    # Decoding 32x32 JPEGs with torch's intra-op pool on 2 busy cores ran 3x slower than with
    # one thread per decoding worker (1.1 s vs 3.4 s for 5000 images).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # entered once here, not in the worker threads
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                    category=DeprecationWarning)
            # Two threads: the decoders release the GIL (decoding in memory: 49 vs 72 us an image).
            # With the file reads and another job on the second core, the 60k CIFAR-10 JPEGs took
            # 10.4 s vs 10.1 s with one thread here: no loss, and a gain where a core is free.
            with ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
                yield pool
    finally:
        torch.set_num_threads(before)


def decode_chunk(chunk: list[tuple[int, Any]], decode: Callable[[Any], torch.Tensor],
                 resize: Callable[[torch.Tensor], torch.Tensor] | None) -> list[tuple[int, torch.Tensor | None, str]]:
    """(index, image or None, why not) for each (index, source) of ``chunk``: ``decode(source)``,
    then ``resize`` if given."""
    out: list[tuple[int, torch.Tensor | None, str]] = []
    for i, source in chunk:
        try:
            x = decode(source)
            out.append((i, resize(x) if resize else x, ""))
        except BadImage as e:
            out.append((i, None, str(e)))
    return out


def decoded_count() -> int:
    """Images decoded through :meth:`Gather.take` since import (a difference proves a cache hit)."""
    return _decodes


@dataclass
class DecodedImages:
    images: torch.Tensor  # all splits one after the other, bad files left out
    labels: torch.Tensor
    sizes: dict[str, int]  # images per split
    skipped: list[list[str]]  # [name, reason]
    classes: list[str]


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


class Gather:
    """Takes decoded images in any order: one size for all (else stream or fail), the memory bound
    ``max_bytes``, bad files (skip or fail), colour wins over grayscale. ``add`` returns False to give up."""

    def __init__(self, where: str, skip_bad: bool, may_stream: bool, expected: int | None, max_bytes: int) -> None:
        self.where, self.skip_bad, self.may_stream, self.expected = where, skip_bad, may_stream, expected
        self.max_bytes = max_bytes
        self.images: dict[int, torch.Tensor] = {}
        self.skipped: dict[int, list[str]] = {}
        self.first: tuple[str, tuple[int, int]] | None = None
        self.nbytes = 0
        self.color = False

    def add(self, i: int, name: str, x: torch.Tensor | None, why: str) -> bool:
        if x is None:
            if not self.skip_bad:
                raise bad_image_error(name, why)
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
        if self.may_stream and max(self.nbytes, 3 * hw[0] * hw[1] * (self.expected or 0)) > self.max_bytes:
            log.info("%s would take over %d bytes in memory: streaming it from disk", self.where, self.max_bytes)
            return False
        self.color |= x.shape[0] == 3
        self.images[i] = x
        return True

    def take(self, results: list[tuple[int, torch.Tensor | None, str]], name_of: Callable[[int], str]) -> bool:
        """:meth:`add` a chunk from :func:`decode_chunk` (counted as decoded); False to give up."""
        global _decodes
        _decodes += len(results)
        return all(self.add(i, name_of(i), x, why) for i, x, why in results)

    def result(self, splits: dict[str, list[tuple[int, int]]], classes: list[str]) -> DecodedImages:
        """The images in the order of ``splits`` ("train"/"val"/"test" -> (index, label) pairs)."""
        if not self.images:
            raise ReslabError(f"no image in {self.where} could be decoded; check the files")
        channels = 3 if self.color else 1
        order = [(i, y) for split in splits.values() for i, y in split if i in self.images]
        h, w = self.first[1]
        images = torch.empty((len(order), channels, h, w), dtype=torch.uint8)
        for k, (i, _) in enumerate(order):
            images[k] = self.images[i]  # broadcasts a grayscale image to all three channels
        sizes = {split: sum(1 for i, _ in items if i in self.images) for split, items in splits.items()}
        skipped = [self.skipped[i] for split in splits.values() for i, _ in split if i in self.skipped]
        labels = torch.tensor([y for _, y in order], dtype=torch.long)
        return DecodedImages(images, labels, sizes, skipped, list(classes))
