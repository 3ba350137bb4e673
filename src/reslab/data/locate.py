"""Where a dataset's files are: ``data_dir``, ``$RESLAB_DATA``, the cache, system locations.

Each place is searched with the dataset's subfolders (:data:`SUBDIRS`); when none has the files,
:func:`not_found` says which files go where.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ReslabError

__all__ = ["SYSTEM_DIRS", "SUBDIRS", "cache_dir", "candidate_dirs", "search", "not_found"]

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
