"""Downloads with checksums, atomic extraction, and offline errors that say which file goes where.

Nothing here leaves a half-written file behind: a download streams into a temporary file beside
its target and is renamed only once its md5 matches; an archive is unpacked into a temporary
directory beside its target and renamed only once every member is out. A failure removes the
temporary, and a bad download, so the next attempt starts clean.

Archives are read as hostile input (:func:`archive_members`): every member's declared size is
checked against the bounds of :mod:`.limits` before it is read, skipped or extracted; links,
devices and names that climb out of the archive are refused as unsafe.

The official URLs and checksums live in :data:`RESOURCES`, a plain table: a mirror (or a test's
local server) is used by replacing a dataset's entry there.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ReslabError
from ..io import atomic_path
from . import limits

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


class ArchiveError(ReslabError):
    """An archive that cannot be used: truncated or corrupt, or one of the two below."""


class UnsafeArchiveError(ArchiveError):
    """An archive with a member that is a link, a device, or a name that climbs out ('..', absolute)."""


class ArchiveLimitError(ArchiveError):
    """An archive whose member or total expansion is over a bound of :mod:`.limits`."""


READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error,
                                                lzma.LZMAError, OSError)
"""What reading a truncated or corrupt archive raises (besides :class:`ArchiveError`)."""


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
}

SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    # Debian/Ubuntu: apt-get install dataset-fashion-mnist
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
"""Well-known system locations searched after the user's directories and the cache."""

SUBDIRS: dict[str, tuple[str, ...]] = {
    "cifar10": ("", "cifar10"), "cifar100": ("", "cifar100"),
    "mnist": ("", "mnist", "MNIST/raw"),
    "fashion_mnist": ("", "fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
}
"""Where a dataset may sit inside a data directory (ours, then torchvision's layout)."""


def cache_dir() -> Path:
    """The user cache: ``$RESLAB_CACHE`` or ``~/.cache/reslab``."""
    env = os.environ.get("RESLAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "reslab"


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


def is_archive(path: str | os.PathLike) -> bool:
    """True for the archive kinds :func:`extract_archive` unpacks, judged by the file name."""
    name = Path(path).name.lower()
    return name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip"))


# ---------------------------------------------------------------------------------------------
# Reading archives: sizes checked from the headers first, unsafe members refused


def _member_name(archive: Path, raw: str) -> str:
    """``raw`` as '/'-joined parts without '.' or empty ones ("" for the archive's root); a name that
    is absolute or has a '..' part is unsafe."""
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if raw.startswith(("/", "\\")) or ".." in parts:
        raise UnsafeArchiveError(
            f"archive {archive} has an unsafe member name {raw!r}: it leads outside the folder it would be "
            "extracted into; reslab refuses such archives: remove that member or repack the archive")
    return "/".join(parts)


def _unsafe_kind(archive: Path, name: str, kind: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"archive {archive} has an unsafe member {name!r}: {kind}; reslab reads only regular "
                              "files and folders from archives: replace it with the file itself or remove it")


def _over_member_limit(archive: Path, name: str, size: int, limit: int) -> ArchiveLimitError:
    return ArchiveLimitError(
        f"archive {archive}: member {name!r} is {limits.human_bytes(size)} uncompressed, over the "
        f"{limits.human_bytes(limit)} limit per member; if it is genuine, raise ${limits.MEMBER_ENV} "
        f"(e.g. {limits.MEMBER_ENV}=4G), otherwise remove it from the archive")


def _over_total_limit(archive: Path, limit: int) -> ArchiveLimitError:
    return ArchiveLimitError(
        f"archive {archive} expands to over {limits.human_bytes(limit)} (the limit for an archive of "
        f"{limits.human_bytes(archive.stat().st_size)}: {limits.ARCHIVE_RATIO}x its size, at least "
        f"{limits.human_bytes(limits.MAX_ARCHIVE_BYTES)}); if it is genuine, raise ${limits.ARCHIVE_ENV} "
        f"(e.g. {limits.ARCHIVE_ENV}=64G)")


class _CappedReader:
    """The decompressed tar stream, as tarfile reads it: no single read over ``cap`` bytes.

    tarfile reads a member's data in reads of at most its size (checked before) and a GNU
    long-name or pax header in one read of the size that header declares: a header claiming
    gigabytes is refused here instead of read into memory.
    """

    def __init__(self, f: Any, cap: int, archive: Path, limit: int) -> None:
        self.f, self.cap, self.archive, self.limit = f, cap, archive, limit

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0 or n > self.cap:
            raise ArchiveLimitError(
                f"archive {self.archive} has a header that declares {limits.human_bytes(n or 0)} of data, over "
                f"the {limits.human_bytes(self.limit)} limit per member; if it is genuine, raise "
                f"${limits.MEMBER_ENV}")
        return self.f.read(n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.f.seek(pos, whence)

    def tell(self) -> int:
        return self.f.tell()


def _open_tar(archive: Path, stack: contextlib.ExitStack, member_limit: int) -> tarfile.TarFile:
    # Decompressed by hand (by magic number, as tarfile's "r:*" does) so that tarfile reads through
    # _CappedReader; random access ("r:", not the stream mode "r|") so a skipped member of a plain
    # tar is seeked over, and a compressed one decompressed in bounded chunks and dropped.
    raw = stack.enter_context(open(archive, "rb"))
    magic = raw.read(6)
    raw.seek(0)
    f: Any = raw
    if magic.startswith(b"\x1f\x8b"):
        f = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    elif magic.startswith(b"BZh"):
        f = stack.enter_context(bz2.BZ2File(raw))
    elif magic.startswith(b"\xfd7zXZ\x00"):
        f = stack.enter_context(lzma.LZMAFile(raw))
    cap = member_limit + tarfile.BLOCKSIZE  # a member's data is read whole, its padding is not
    return stack.enter_context(tarfile.open(fileobj=_CappedReader(f, cap, archive, member_limit), mode="r:"))


def _tar_members(archive: Path, select: Callable[[str], bool], member_limit: int, total_limit: int
                 ) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    with contextlib.ExitStack() as stack:
        tf = _open_tar(archive, stack, member_limit)
        taken = 0
        while (member := tf.next()) is not None:
            tf.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header read: a million would pile up
            name = _member_name(archive, member.name)
            if member.issym() or member.islnk():
                kind = "a symbolic link" if member.issym() else "a hard link"
                raise _unsafe_kind(archive, member.name, f"{kind} to {member.linkname!r}")
            if member.ischr() or member.isblk() or member.isfifo():
                raise _unsafe_kind(archive, member.name, "a FIFO" if member.isfifo() else "a device file")
            if tf.offset > total_limit:  # where the next header is: passing this member expands that far
                raise _over_total_limit(archive, total_limit)
            if member.isdir():
                yield name, True, None
            elif not member.isfile():
                log.warning("skipping %s in %s: not a regular file or folder", member.name, archive)
            elif select(name):
                if member.size > member_limit:
                    raise _over_member_limit(archive, member.name, member.size, member_limit)
                taken += member.size
                if taken > total_limit:
                    raise _over_total_limit(archive, total_limit)
                yield name, False, tf.extractfile(member)
            else:
                yield name, False, None  # skipped: tarfile seeks over (or decompresses past) its data


def _zip_members(archive: Path, select: Callable[[str], bool], member_limit: int, total_limit: int
                 ) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    with zipfile.ZipFile(archive) as zf:
        taken = 0
        for info in zf.infolist():
            name = _member_name(archive, info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # unix permissions, if any
            if stat.S_ISLNK(mode):
                raise _unsafe_kind(archive, info.filename, "a symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _unsafe_kind(archive, info.filename, "a device file or FIFO")
            if info.is_dir():
                yield name, True, None
            elif select(name):
                # zipfile never returns more than file_size bytes (a longer stream fails its CRC check)
                if info.file_size > member_limit:
                    raise _over_member_limit(archive, info.filename, info.file_size, member_limit)
                taken += info.file_size
                if taken > total_limit:
                    raise _over_total_limit(archive, total_limit)
                with zf.open(info) as data:
                    yield name, False, data
            else:
                yield name, False, None  # skipped: never decompressed


def archive_members(archive: str | os.PathLike, select: Callable[[str], bool] = lambda name: True
                    ) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    """``(name, is_folder, data)`` for each member of a tar (plain, gz, bz2, xz) or zip archive, in
    archive order; ``data`` is a readable file of a regular file that ``select(name)`` wants (valid
    until the next member), None for folders and for files not selected, which are never extracted.

    ``name`` is '/'-separated without '.' parts (``""``: the root folder). Before a member is read or
    passed over its header is checked: a selected file may not exceed ``$RESLAB_MAX_MEMBER_BYTES``,
    and the archive may not expand beyond ``$RESLAB_MAX_ARCHIVE_BYTES`` (:mod:`.limits`).

    Raises:
        UnsafeArchiveError: A link, device or FIFO member, or a name that is absolute or has '..'.
        ArchiveLimitError: A member or the whole over its bound (the message names the variable).
        tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError (see
            :data:`READ_ERRORS`): truncated or corrupt; callers turn them into :class:`ArchiveError`.
    """
    archive = Path(archive)
    member_limit = limits.max_member_bytes()
    total_limit = limits.max_archive_bytes(archive.stat().st_size)
    if zipfile.is_zipfile(archive):
        yield from _zip_members(archive, select, member_limit, total_limit)
    else:
        yield from _tar_members(archive, select, member_limit, total_limit)


def _unpack(archive: Path, into: Path, select: Callable[[str], bool]) -> None:
    # Regular files and folders only, written by hand (members checked by archive_members). About
    # 2x faster than extractall(filter="data") on 60k small files, whose per-member metadata calls
    # dominate.
    def cannot_write(e: OSError) -> ReslabError:
        return ReslabError(f"cannot extract {archive} into {into.parent} ({e.strerror or e}); free space there or "
                           "point $RESLAB_CACHE at a disk that has it")

    made: set[Path] = {into}
    for name, is_dir, data in archive_members(archive, select):
        if not name or (data is None and not is_dir):
            continue
        target = into.joinpath(*name.split("/"))
        folder = target if is_dir else target.parent
        try:
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            out = open(target, "wb") if data is not None else None
        except OSError as e:
            raise cannot_write(e) from None
        if data is None or out is None:
            continue
        with out:
            while chunk := data.read(1 << 20):  # a read error is the archive's
                try:
                    out.write(chunk)
                except OSError as e:
                    raise cannot_write(e) from None


def extract_archive(archive: str | os.PathLike, target: str | os.PathLike, *, subdir: str | None = None,
                    remove_on_error: bool = False, select: Callable[[str], bool] | None = None) -> Path:
    """Unpack ``archive`` (tar, tar.gz/bz2/xz or zip) so that its contents are ``target``.

    The archive is unpacked into a temporary directory beside ``target`` that is renamed onto it
    only when complete, so ``target`` either does not exist or holds the whole archive. If
    ``target`` exists already it is returned as it is.

    Args:
        archive: The archive file.
        target: The directory that will hold the archive's members.
        subdir: Make ``target`` the archive's folder of this name instead (the CIFAR archives
            hold everything in one folder, ``cifar-10-batches-py/``).
        remove_on_error: Also delete ``archive`` when it turns out unreadable (for downloads
            of our own, never for a user's file).
        select: Extract only the regular files whose name (``dir/file``, as in the archive) it
            accepts; the others are passed over, never written. Default: all.

    Raises:
        ArchiveError: The archive is truncated or corrupt; :class:`UnsafeArchiveError`: it has a
            link, a device or a name climbing out; :class:`ArchiveLimitError`: a member or the
            whole is over its bound (:func:`archive_members`). Nothing is left behind.
    """
    archive, target = Path(archive), Path(target)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    log.info("extracting %s to %s", archive, target)
    try:
        try:
            _unpack(archive, tmp, select or (lambda name: True))
        except READ_ERRORS as e:
            if remove_on_error:
                with contextlib.suppress(OSError):
                    archive.unlink()
            removed = "; it was removed, run again to download it anew" if remove_on_error else (
                "; replace it with a complete copy")
            raise ArchiveError(f"archive {archive} is truncated or corrupt ({e}){removed}") from None
        unpacked = tmp / subdir if subdir else tmp
        if not unpacked.is_dir():
            raise ArchiveError(f"archive {archive} has no folder {subdir}/; it is not the expected archive")
        try:
            os.rename(unpacked, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process extracting the same
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Where a dataset's files are: data_dir, $RESLAB_DATA, the cache, system locations


def candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """(directory, source) pairs in lookup order; each is searched with the dataset's subdirs."""
    dirs: list[tuple[Path, str]] = []
    for value, source, what in ((data_dir, "data_dir", "data_dir"),
                                (os.environ.get("RESLAB_DATA") or None, "data_dir", "$RESLAB_DATA")):
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ReslabError(f"data directory {path} ({what}) does not exist; create it and put the dataset "
                              "files there, or point --data-dir / $RESLAB_DATA at the directory that has them")
        dirs.append((path, source))
    dirs.append((cache_dir() / name, "cache"))
    dirs += [(Path(p), "system") for p in SYSTEM_DIRS.get(name, ())]
    return dirs


def search(name: str, data_dir: str | os.PathLike | None) -> Iterator[tuple[Path, str]]:
    """The existing directories where ``name``'s files may be, with their source, in lookup order."""
    for directory, source in candidate_dirs(name, data_dir):
        subdirs = ("",) if source == "cache" else SUBDIRS.get(name, ("",))
        for sub in subdirs:
            base = directory / sub if sub else directory
            if base.is_dir():
                yield base, source


def not_found(name: str, wanted: str, data_dir: str | os.PathLike | None) -> ReslabError:
    """The offline error: which files (``wanted``) go where."""
    places = ", ".join(str(d) for d, _ in candidate_dirs(name, data_dir))
    return ReslabError(f"{name} not found: looked for {wanted} in {places}; put the files in one of those "
                       f"directories (--data-dir / $RESLAB_DATA) or allow downloading (download=True)")
