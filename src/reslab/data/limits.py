"""Bounds on what hostile input may cost: archive members, archive expansion, image dimensions.

Every bound is checked from a header (a tar or zip member's declared size, an image's declared
width and height) before anything is decompressed or decoded, and each can be raised with an
environment variable, read when a dataset is loaded (a byte count takes a K, M, G or T suffix,
binary: ``RESLAB_MAX_MEMBER_BYTES=1G``):

========================== ======================================================= ==================
variable                   bounds                                                   default
========================== ======================================================= ==================
``RESLAB_MAX_MEMBER_BYTES`` one archive member read or extracted, one image file      256 MiB
``RESLAB_MAX_ARCHIVE_BYTES`` all an archive expands to (members read, skipped or      32 x the archive's
                           extracted)                                               size, at least 4 GiB
``RESLAB_MAX_IMAGE_PIXELS`` width x height of one image                              89,478,485
========================== ======================================================= ==================

The pixel default is PIL's own ``Image.MAX_IMAGE_PIXELS`` (a 3-channel image of that size is
256 MiB decoded); reslab enforces it on every decoder, PIL's and torchvision's alike, where PIL
only warns below twice that and torchvision checks nothing. The largest official file reslab
extracts (CIFAR-100's ``train`` batch) is 155 MB, under the member default.
"""

from __future__ import annotations

import os
import re

from ..errors import ReslabError

__all__ = ["MAX_MEMBER_BYTES", "MAX_ARCHIVE_BYTES", "ARCHIVE_RATIO", "MAX_IMAGE_PIXELS", "MEMBER_ENV", "ARCHIVE_ENV",
           "PIXELS_ENV", "max_member_bytes", "max_archive_bytes", "max_image_pixels", "human_bytes"]

MAX_MEMBER_BYTES = 256 << 20
"""Default bound on one archive member (read or extracted) or one image file, in bytes."""

MAX_ARCHIVE_BYTES = 4 << 30
"""Default bound on an archive's total expansion, in bytes, for archives under 128 MiB ..."""

ARCHIVE_RATIO = 32
"""... and beyond that, this many times the archive's own size (a tar of JPEGs or PNGs expands about 1x)."""

MAX_IMAGE_PIXELS = 89_478_485
"""Default bound on an image's width x height (PIL's ``Image.MAX_IMAGE_PIXELS``)."""

MEMBER_ENV, ARCHIVE_ENV, PIXELS_ENV = "RESLAB_MAX_MEMBER_BYTES", "RESLAB_MAX_ARCHIVE_BYTES", "RESLAB_MAX_IMAGE_PIXELS"

_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def human_bytes(n: int) -> str:
    """``268435456`` -> ``256 MiB``; ``3221225472`` -> ``3 GiB``; small counts in bytes."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _env_count(name: str, default: int, *, units: bool) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    match = re.fullmatch(r"([0-9][0-9_]*)\s*(?:([kmgt])(?:i?b)?|b)?" if units else r"([0-9][0-9_]*)()", text, re.I)
    value = int(match.group(1)) << (10 * _UNITS[(match.group(2) or "").lower()]) if match else 0
    if value <= 0:
        example = "1G" if units else str(4 * default)
        raise ReslabError(f"${name}={text!r} is not a positive {'byte count' if units else 'whole number'}; set it "
                          f"to e.g. {example}, or unset it for the default {default:,}")
    return value


def max_member_bytes() -> int:
    """The bound on one archive member or image file (``$RESLAB_MAX_MEMBER_BYTES``, default 256 MiB)."""
    return _env_count(MEMBER_ENV, MAX_MEMBER_BYTES, units=True)


def max_archive_bytes(archive_size: int) -> int:
    """The bound on what an archive of ``archive_size`` bytes may expand to: ``$RESLAB_MAX_ARCHIVE_BYTES``,
    or by default 32 times its size, at least 4 GiB."""
    return _env_count(ARCHIVE_ENV, max(MAX_ARCHIVE_BYTES, ARCHIVE_RATIO * archive_size), units=True)


def max_image_pixels() -> int:
    """The bound on an image's width x height (``$RESLAB_MAX_IMAGE_PIXELS``, default 89,478,485)."""
    return _env_count(PIXELS_ENV, MAX_IMAGE_PIXELS, units=False)
