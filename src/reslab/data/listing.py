"""The images of an image folder, or of an archive of one, and their layout in classes and splits.

A folder is listed by names and stats alone: an image path that is not a regular file is listed as
bad, never opened, and a symbolic link back to a folder already listed is not followed again. An
archive's images are read from it with each member checked from its header first
(:func:`~.archive.archive_members`). The layout is ``<class>/<image>`` (one training set) or
``train/<class>/<image>`` with optional ``val/`` and ``test/``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReslabError
from .archive import archive_members
from .probe import not_regular, stat_problem

__all__ = ["IMAGE_EXTENSIONS", "is_image_name", "is_image_path", "Layout", "layout_of", "Listing", "list_folder",
           "image_members"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)
"""File extensions (lower case) that count as images in an image folder."""


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def is_image_path(path: str) -> bool:
    return is_image_name(path.rsplit("/", 1)[-1])


@dataclass
class Layout:
    prefix: str  # folders above the dataset's root inside the listing ("" or "cifar10/")
    classes: list[str]
    splits: dict[str, list[tuple[int, int]]]  # "train"/"val"/"test" -> (index into the listing, label)


def layout_of(rels: list[str], where: str, dirs: set[str] | frozenset[str] = frozenset()) -> Layout:
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
    return Layout(prefix, classes, splits)


@dataclass
class Listing:
    rels: list[str]  # image paths, relative, '/'-separated, sorted
    stats: list[tuple[int, int]]  # their (size, mtime_ns)
    dirs: set[str]  # every folder, relative
    bad: dict[int, str]  # index into rels -> why it cannot be opened (dangling link, FIFO, ...)


def list_folder(root: Path) -> Listing:
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
            elif is_image_name(entry.name):
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
    return Listing(rels, [stats[i] for i in order], dirs, {k: why[r] for k, r in enumerate(rels) if r in why})


def image_members(archive: Path, dirs: set[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the image files in a tar or zip archive, in archive order, each checked from
    its header before it is read (:func:`~.archive.archive_members`); the archive's folders
    (including those of its other files, never read) are added to ``dirs``."""
    for name, is_dir, data in archive_members(archive, select=is_image_path):
        if is_dir:
            dirs.add(name)
        elif data is None:
            if "/" in name:
                dirs.add(name.rsplit("/", 1)[0])
        else:
            yield name, data.read()

