"""Image files to uint8 tensors: torchvision's decoders where they match PIL, PIL elsewhere.

Every decoder gives the pixels PIL gives: (C, H, W) uint8 with C 1 (grayscale) or 3 (colour,
alpha dropped). A file that cannot be decoded raises :class:`BadImage`; callers name it and
skip it or fail (:func:`bad_image_error`). Many images are decoded in chunks by a small thread
pool (:func:`decoding_pool`, :func:`decode_chunk`) and gathered into one tensor (:class:`Gather`).

Hostile files are bounded before they are decoded (:mod:`.probe`, whose names are importable
from here too): only regular files are opened, none larger than ``$RESLAB_MAX_MEMBER_BYTES``,
and an image's width and height are read from its header and checked against
``$RESLAB_MAX_IMAGE_PIXELS`` before any decoder allocates its pixels (:mod:`.limits`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ReslabError
from .probe import (
    PNG_MAGIC,
    BadImage,
    check_pixels,
    image_size_of,
    not_regular,
    open_regular,
    pil_open,
    probe_mode,
    stat_problem,
)

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GRAY_MODES", "BadImage", "bad_image_error", "decode_bytes", "decode_file", "probe_mode", "open_image",
           "open_regular", "not_regular", "stat_problem", "image_size_of", "decoding_pool", "decode_chunk", "Gather", "DecodedImages",
           "decoded_count", "ODD_SIZE_SHARE", "gray_note"]

log = logging.getLogger(__name__)

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""PIL modes decoded to one channel."""

_decodes = 0  # images decoded by Gather's chunks since import (decoded_count)


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
    """(C, H, W) uint8 with C 1 (grayscale) or 3; the same pixels PIL gives for the file.

    Raises:
        BadImage: Not an image, truncated, or over ``$RESLAB_MAX_IMAGE_PIXELS`` (judged from its header).
    """
    palette_png = data.startswith(PNG_MAGIC) and len(data) > 25 and data[25] == 3  # IHDR colour type 3
    decode = _torchvision_decoder()
    size = image_size_of(data)
    if size is not None:
        check_pixels(size)  # before torchvision, which checks nothing, allocates the pixels
        if decode is not None and not palette_png:
            try:
                x = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            except RuntimeError as e:
                raise BadImage(str(e).strip().splitlines()[-1]) from None
            if x.dtype == torch.uint8 and x.dim() == 3:
                if x.shape[0] in (1, 3):
                    return x
                if data.startswith(PNG_MAGIC) and x.shape[0] in (2, 4):  # drop alpha, as PIL's convert does
                    return x[: x.shape[0] - 1].contiguous()
            # palette and 16-bit PNGs: PIL's conversions are the reference
    with pil_open(io.BytesIO(data)) as im:
        try:
            img = im.convert("L" if im.mode in GRAY_MODES else "RGB")
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
            raise BadImage(str(e) or type(e).__name__) from None
    array = np.asarray(img)
    return torch.from_numpy(array.copy()).reshape(img.height, img.width, -1).permute(2, 0, 1).contiguous()


def decode_file(path: str) -> torch.Tensor:
    """:func:`decode_bytes` of a regular file (:func:`open_regular`)."""
    with open_regular(path) as f:
        head = f.read(32)
        if (size := image_size_of(head, f)) is not None:
            check_pixels(size)  # before reading the rest
        f.seek(0)
        try:
            data = f.read()
        except OSError as e:
            raise BadImage(e.strerror or str(e)) from None
    return decode_bytes(data)


def open_image(path: str, mode: str) -> Image.Image:
    """A regular image file decoded by PIL and converted to ``mode``.

    Raises:
        ReslabError: The file is not a regular file, is unreadable, truncated, not an image, or over
            ``$RESLAB_MAX_IMAGE_PIXELS`` (the message names it, and the variable).
    """
    try:
        with open_regular(path) as f, pil_open(f) as im:
            try:
                return im.convert(mode)
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
                raise BadImage(str(e) or type(e).__name__) from None
    except BadImage as e:
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
            # PIL warns of images over its own bound, which is reslab's (probe._sync_pil_limit): they are refused anyway
            warnings.filterwarnings("ignore", message="Image size .* could be decompression bomb")
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
    resized: list[str] = field(default_factory=list)  # odd-sized images resized to the others' size
    gray: int = 0  # grayscale images among them (converted to RGB where any image is colour)


ODD_SIZE_SHARE = 0.01
"""Images of a folder held in memory may differ from the size most of them share up to this share
(one in a hundred): those few are resized to it, and reported. Beyond it the folder is of mixed
sizes: streamed from disk (or refused where it must be held in memory)."""

_EARLY_ODD_CHECK = 200  # an archive (its image count unknown) may give up early after this many images


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _fit(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``x`` resized (bilinear, antialiased) to cover ``hw``, keeping its aspect, then centre-cropped to it."""
    from torchvision.transforms.v2 import functional as TF  # heavy: imported when first needed

    h, w = x.shape[-2:]
    scale = max(hw[0] / h, hw[1] / w)
    size = [max(hw[0], round(h * scale)), max(hw[1], round(w * scale))]
    return TF.center_crop(TF.resize(x, size, antialias=True), list(hw))


class Gather:
    """Takes decoded images in any order: bad files (skip or fail), colour wins over grayscale, the
    memory bound ``max_bytes``, and one size for all: a few odd-sized images (:data:`ODD_SIZE_SHARE`)
    are resized to the size the others share, more mean streaming (or failing where it is not
    allowed). ``take`` returns False to give up (stream instead), as :meth:`result` returns None."""

    def __init__(self, where: str, skip_bad: bool, may_stream: bool, expected: int | None, max_bytes: int) -> None:
        self.where, self.skip_bad, self.may_stream, self.expected = where, skip_bad, may_stream, expected
        self.max_bytes = max_bytes
        self.images: dict[int, torch.Tensor] = {}
        self.names: dict[int, str] = {}
        self.skipped: dict[int, list[str]] = {}
        self.counts: Counter[tuple[int, int]] = Counter()
        self.example: dict[tuple[int, int], str] = {}  # the first image of each size
        self.common: tuple[int, int] = (0, 0)  # the size most images have so far
        self.nbytes = 0
        self.color = False

    def _odd(self) -> int:
        return len(self.images) - self.counts[self.common]

    def _allowed(self, n: int) -> int:
        return int(n * ODD_SIZE_SHARE)

    def _mixed(self) -> ReslabError:
        """The error for images of mixed sizes that must be held in memory."""
        (a, _), (b, _) = self.counts.most_common(2)
        return ReslabError(
            f"images in {self.where} differ in size ({self.example[a]} is {_hw(a)}, {self.example[b]} is {_hw(b)}; "
            f"{self._odd()} of {len(self.images)} are not {_hw(self.common)}); pass image_size to resize them, or "
            "stream them (stream=True)")

    def _give_up(self) -> bool:
        """False; a mixed-size folder that must be held in memory raises instead."""
        if not self.may_stream:
            raise self._mixed()
        (a, _), (b, _) = self.counts.most_common(2)
        log.info("images differ in size (%s, %s): streaming them from disk", self.example[a], self.example[b])
        return False

    def add(self, i: int, name: str, x: torch.Tensor | None, why: str) -> bool:
        if x is None:
            if not self.skip_bad:
                raise bad_image_error(name, why)
            log.warning("skipping undecodable image %s (%s)", name, why)
            self.skipped[i] = [name, why]
            return True
        hw = (x.shape[1], x.shape[2])
        self.counts[hw] += 1
        self.example.setdefault(hw, name)
        if self.counts[hw] > self.counts[self.common]:
            self.common = hw
        self.images[i], self.names[i] = x, name
        self.nbytes += 3 * hw[0] * hw[1]
        self.color |= x.shape[0] == 3
        if len(self.counts) > 1:
            # A folder's image count is known: past its share of odd sizes it is of mixed sizes. An
            # archive's is not: judged by the images so far, once there are enough of them.
            n = self.expected if self.expected is not None else len(self.images)
            if (self.expected is not None or n >= _EARLY_ODD_CHECK) and self._odd() > self._allowed(n):
                return self._give_up()
        projected = 3 * self.common[0] * self.common[1] * (self.expected or 0)
        if self.may_stream and max(self.nbytes, projected) > self.max_bytes:
            log.info("%s would take over %d bytes in memory: streaming it from disk", self.where, self.max_bytes)
            return False
        return True

    def take(self, results: list[tuple[int, torch.Tensor | None, str]], name_of: Callable[[int], str]) -> bool:
        """:meth:`add` a chunk from :func:`decode_chunk` (counted as decoded); False to give up."""
        global _decodes
        _decodes += len(results)
        return all(self.add(i, name_of(i), x, why) for i, x, why in results)

    def result(self, splits: dict[str, list[tuple[int, int]]], classes: list[str]) -> DecodedImages | None:
        """The images in the order of ``splits`` ("train"/"val"/"test" -> (index, label) pairs); None:
        they differ in size too much to be held in memory (stream them)."""
        if not self.images:
            raise ReslabError(f"no image in {self.where} could be decoded; check the files")
        if self._odd() > self._allowed(len(self.images)):
            self._give_up()  # raises where streaming is not allowed
            return None
        channels = 3 if self.color else 1
        order = [(i, y) for split in splits.values() for i, y in split if i in self.images]
        h, w = self.common
        images = torch.empty((len(order), channels, h, w), dtype=torch.uint8)
        resized = []
        gray = 0
        for k, (i, _) in enumerate(order):
            x = self.images[i]
            gray += x.shape[0] == 1
            if x.shape[1:] != (h, w):
                x = _fit(x, (h, w))
                resized.append(self.names[i])
            images[k] = x  # broadcasts a grayscale image to all three channels: PIL's convert("RGB")
        if resized:
            report_resized(self.where, resized, len(order), (h, w))
        sizes = {split: sum(1 for i, _ in items if i in self.images) for split, items in splits.items()}
        skipped = [self.skipped[i] for split in splits.values() for i, _ in split if i in self.skipped]
        labels = torch.tensor([y for _, y in order], dtype=torch.long)
        return DecodedImages(images, labels, sizes, skipped, list(classes), resized, gray)


def report_resized(where: str, resized: list[str], total: int, hw: tuple[int, int]) -> None:
    """The one-line warning for odd-sized images resized to the size the others share."""
    log.warning("%s: %d of %d images are not %s like the rest (e.g. %s); resized them to %s (pass image_size to "
                "choose the size)", where, len(resized), total, _hw(hw), resized[0], _hw(hw))


def gray_note(gray: int | None, total: int, channels: int, example: str | None = None) -> str | None:
    """The line that reports grayscale images converted to RGB (None where nothing was converted):
    ``gray`` of ``total`` images, or an unknown number (None) of which ``example`` is one."""
    if channels != 3 or gray == 0:
        return None
    if gray is None:
        return (f"grayscale and colour images are mixed (e.g. {example} is grayscale); grayscale images are converted "
                "to RGB as they are loaded")
    return f"{gray:,} of {total:,} images are grayscale; converted to RGB"
