"""Image files probed before they are decoded: regular files only, sizes from the header.

Hostile files are bounded: only regular files are opened (a FIFO would block forever, a device
never end), none larger than ``$RESLAB_MAX_MEMBER_BYTES``, and an image's width and height are
read from its header and checked against ``$RESLAB_MAX_IMAGE_PIXELS`` before any decoder
allocates its pixels (:mod:`.limits`). A file that fails raises :class:`BadImage`.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from typing import IO, TYPE_CHECKING

from . import limits

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["BadImage", "JPEG_MAGIC", "PNG_MAGIC", "not_regular", "stat_problem", "open_regular", "image_size_of",
           "check_pixels", "pil_open", "probe_mode"]

JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
"""The first bytes of a JPEG and of a PNG file."""


class BadImage(Exception):
    """A file that is unreadable, truncated or not an image; the message says why."""


def not_regular(mode: int) -> str:
    """What a non-regular file is, for messages: ``a FIFO``, ``a device``, ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def stat_problem(path: str, e: OSError) -> str:
    """Why ``os.stat(path)`` failed, for messages: a symbolic link loop, a dangling link, ..."""
    if e.errno == errno.ELOOP:
        return "a symbolic link loop"
    if e.errno == errno.ENOENT and os.path.islink(path):
        try:
            return f"a dangling symbolic link to {os.readlink(path)!r}"
        except OSError:
            return "a dangling symbolic link"
    return e.strerror or str(e)


def open_regular(path: str) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (symbolic links followed) no larger
    than ``$RESLAB_MAX_MEMBER_BYTES``; anything else raises :class:`BadImage` without being opened
    (a FIFO would block, a device never end)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise BadImage(stat_problem(path, e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(f"not a regular file but {not_regular(st.st_mode)}")
    limit = limits.max_member_bytes()
    if st.st_size > limit:
        raise BadImage(f"the file is {limits.human_bytes(st.st_size)}, over the {limits.human_bytes(limit)} limit per "
                       f"image file; raise ${limits.MEMBER_ENV} if it is genuine")
    try:  # O_NONBLOCK: should it have been swapped for a FIFO since, opening it does not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BadImage(stat_problem(path, e)) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
        f.close()
        raise BadImage("the file changed while it was opened; try again")
    return f


def _jpeg_size(f: IO[bytes]) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header (SOFn), reading only the segment headers before
    it; None where the markers do not lead to one (the decoder then judges the file)."""
    f.seek(2)
    while True:
        b = f.read(1)
        if b != b"\xff":
            return None
        while b == b"\xff":  # fill bytes
            b = f.read(1)
        if not b:
            return None
        m = b[0]
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # standalone markers
            continue
        if m in (0xD9, 0xDA):  # end of image, start of scan: no frame header before them
            return None
        head = f.read(2)
        if len(head) < 2:
            return None
        n = int.from_bytes(head, "big")
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            sof = f.read(5)
            return (int.from_bytes(sof[3:5], "big"), int.from_bytes(sof[1:3], "big")) if len(sof) == 5 else None
        if n < 2:
            return None
        f.seek(n - 2, io.SEEK_CUR)


def image_size_of(head: bytes, f: IO[bytes] | None = None) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG from its header (``head``: its first bytes; ``f``: the
    whole file, for a JPEG's segments), None for other formats or a header that does not parse."""
    if head.startswith(PNG_MAGIC):
        if len(head) >= 24 and head[8:16] == b"\x00\x00\x00\rIHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return None
    if head.startswith(JPEG_MAGIC):
        return _jpeg_size(f if f is not None else io.BytesIO(head))
    return None


def check_pixels(size: tuple[int, int]) -> None:
    """BadImage if an image of ``size`` (width, height) is over ``$RESLAB_MAX_IMAGE_PIXELS``."""
    w, h = size
    limit = limits.max_image_pixels()
    if w * h > limit:
        raise BadImage(f"{w}x{h} is {w * h:,} pixels, over the {limit:,}-pixel limit that guards against "
                       f"decompression bombs; raise ${limits.PIXELS_ENV} if the image is genuine")


def _sync_pil_limit(limit: int) -> None:
    # PIL refuses (in Image.open) images over twice Image.MAX_IMAGE_PIXELS: let a raised reslab limit
    # through. It never lowers PIL's own bound; reslab's check applies either way.
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
        Image.MAX_IMAGE_PIXELS = limit


def pil_open(source: IO[bytes]) -> Image.Image:
    """``Image.open`` (header only) with the pixel bound checked; BadImage if it fails."""
    from PIL import Image

    if (size := image_size_of(source.read(32), source)) is not None:
        check_pixels(size)  # PIL's own bomb error would not say the size
    source.seek(0)
    _sync_pil_limit(limits.max_image_pixels())
    try:
        im = Image.open(source)
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise BadImage(f"{pixels}, over the {limits.max_image_pixels():,}-pixel limit that guards against "
                       f"decompression bombs; raise ${limits.PIXELS_ENV} if the image is genuine") from None
    except Image.UnidentifiedImageError:  # its message names the file object, not the file
        raise BadImage("not an image format PIL can read") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
        raise BadImage(str(e) or type(e).__name__) from None
    try:
        check_pixels(im.size)
    except BadImage:
        im.close()
        raise
    return im


def probe_mode(path: str) -> str:
    """The PIL mode of a regular image file, from its header alone (dimensions checked too)."""
    with open_regular(path) as f, pil_open(f) as im:
        return im.mode

