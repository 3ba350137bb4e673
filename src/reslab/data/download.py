"""Downloads with checksums, and offline errors that say which file goes where.

Nothing here leaves a half-written file behind: a download streams into a temporary file beside
its target and is renamed only once its md5 matches; an archive is unpacked into a temporary
directory beside its target and renamed only once every member is out (:mod:`.archive`). A failure
removes the temporary, and a bad download, so the next attempt starts clean.

Archives are read as hostile input (:func:`~.archive.archive_members`): every member's declared
size is checked against the bounds of :mod:`.limits` before it is read, skipped or extracted;
links, devices and names that climb out of the archive are refused as unsafe.

The official URLs and checksums live in :data:`RESOURCES`, a plain table: a mirror (or a test's
local server) is used by replacing a dataset's entry there. Where a dataset's files are looked
for is :mod:`.locate`'s; its names, and :mod:`.archive`'s, are importable from here too.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReslabError
from ..io import atomic_path
from .archive import (
    READ_ERRORS,
    ArchiveError,
    ArchiveLimitError,
    UnsafeArchiveError,
    archive_members,
    extract_archive,
    is_archive,
)
from .locate import SUBDIRS, SYSTEM_DIRS, cache_dir, candidate_dirs, not_found, search

__all__ = [
    "Resource", "RESOURCES", "SYSTEM_DIRS", "TIMEOUT_S", "ChecksumError", "ArchiveError", "UnsafeArchiveError",
    "ArchiveLimitError", "OfflineError", "READ_ERRORS", "cache_dir", "md5_file", "download_url", "fetch",
    "archive_members", "extract_archive", "is_archive",
    "SUBDIRS", "candidate_dirs", "search", "not_found",
]

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
"""Seconds a download waits for the server to connect or send the next bytes."""


class ChecksumError(ReslabError):
    """A file whose md5 is not the published one."""


class OfflineError(ReslabError):
    """A download that could not reach any of its URLs."""

    def __init__(self, message: str, attempts: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.attempts = attempts  # (url, reason) pairs


@dataclass(frozen=True)
class Resource:
    """One file of a dataset as published.

    Args:
        filename: The file's name, as published and as stored on disk.
        md5: md5 of the file as downloaded; None skips the check.
        urls: Where to download it, tried in order (mirrors).
        content_md5: md5 of the file after gunzip, for ``.gz`` files. It identifies the data
            whatever the compression: Debian's ``dataset-fashion-mnist`` ships the official
            files recompressed, so their ``md5`` differs while this one matches.
    """

    filename: str
    md5: str | None
    urls: tuple[str, ...]
    content_md5: str | None = None


def _idx_set(bases: tuple[str, ...], md5s: dict[str, tuple[str, str]]) -> tuple[Resource, ...]:
    return tuple(Resource(name, gz, tuple(b + name for b in bases), raw) for name, (gz, raw) in md5s.items())


# The archive md5s are the ones the Toronto page and torchvision publish; the IDX md5s are
# torchvision's resource lists (as downloaded) and the uncompressed files' md5s, the latter checked
# against Debian's installed Fashion-MNIST files (which match all four).
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "cifar10": (Resource("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),),
    "cifar100": (Resource("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                          ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",)),),
    "mnist": _idx_set(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        },
    ),
    "fashion_mnist": _idx_set(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        },
    ),
    # No md5 is published for the authors' zip (none in torchvision, its tutorial or elsewhere);
    # segmentation.py verifies a download by its structure (170 images, 170 masks) instead.
    "pennfudan": (Resource("PennFudanPed.zip", None, ("https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip",)),),
}


def md5_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _where_to_put(directory: Path) -> str:
    return f"put it in {directory} (or in a directory given with --data-dir or $RESLAB_DATA)"


def _offline_message(dest: Path, attempts: tuple[tuple[str, str], ...]) -> str:
    tried = " or ".join(f"{url} ({reason})" for url, reason in attempts)
    return f"could not download {dest.name} from {tried}; fetch it by hand and {_where_to_put(dest.parent)}"


def download_url(url: str, dest: str | os.PathLike, *, md5: str | None = None,
                 timeout: float | None = None) -> Path:
    """Download ``url`` to ``dest``, verifying ``md5``; ``dest`` appears only if it is complete.

    Args:
        url: The URL to fetch.
        dest: Where the file goes; its directory is created.
        md5: Expected md5 of the file; a mismatch removes the download and raises ChecksumError.
        timeout: Seconds to wait for the server (default :data:`TIMEOUT_S`).

    Raises:
        OfflineError: The server could not be reached or the transfer broke off.
        ChecksumError: The downloaded bytes are not the published file.
    """
    dest = Path(dest)
    timeout = TIMEOUT_S if timeout is None else timeout
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                if expected is not None and received != int(expected):
                    raise http.client.IncompleteRead(b"", int(expected) - received)
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(e, http.client.IncompleteRead):
                reason = f"the transfer broke off with {e.expected} bytes missing"
            raise OfflineError(_offline_message(dest, ((url, str(reason)),)), ((url, str(reason)),)) from None
        got = digest.hexdigest()
        if md5 is not None and got != md5:
            raise ChecksumError(
                f"checksum mismatch for {dest.name} downloaded from {url}: md5 {got}, expected {md5}; "
                f"the bad download was removed: try again, or fetch it by hand and {_where_to_put(dest.parent)}"
            )
    return dest


def fetch(resource: Resource, directory: str | os.PathLike) -> Path:
    """The verified file ``directory/resource.filename``, downloaded from its URLs if missing.

    A file already there whose md5 is wrong (say, from an older mirror) is downloaded again.
    Each URL is tried in order; the first that yields the right bytes wins.

    Raises:
        OfflineError: No URL could be reached (the message names the URL, the file and
            the directory to put it in).
        ChecksumError: Every reachable URL gave a file with the wrong md5.
    """
    directory = Path(directory)
    dest = directory / resource.filename
    if dest.is_file():
        if resource.md5 is None or md5_file(dest) == resource.md5:
            return dest
        log.warning("%s has the wrong md5; downloading it again", dest)
        dest.unlink()
    if not resource.urls:
        raise OfflineError(f"{resource.filename} has no download URL; fetch it by hand and {_where_to_put(directory)}")
    errors: list[ReslabError] = []
    for url in resource.urls:
        try:
            return download_url(url, dest, md5=resource.md5)
        except (OfflineError, ChecksumError) as e:
            log.info("%s", e)
            errors.append(e)
    # A checksum mismatch says more than a dead mirror does.
    if mismatch := next((e for e in errors if isinstance(e, ChecksumError)), None):
        raise mismatch
    attempts = tuple(a for e in errors if isinstance(e, OfflineError) for a in e.attempts)  # all are, by now
    raise OfflineError(_offline_message(dest, attempts), attempts)
