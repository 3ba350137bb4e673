"""Images named with their labels in a file: a CSV of ``path,label[,split]`` or a ``labels.json``.

Both give what a class-per-folder tree gives (:func:`~.listing.list_folder` and
:func:`~.listing.layout_of`): a :class:`~.listing.Listing` of image paths and a
:class:`~.listing.Layout` of (image, class index) pairs per split, so the images are decoded,
cached, resized, streamed and checked exactly as an image folder's are.

* ``csv:FILE.csv``: one image a line, ``path,label`` or ``path,label,split`` (``train``, ``val``
  or ``test``); an optional header line ``path,label[,split]``; paths relative to the CSV's
  folder (or absolute); blank lines ignored.
* ``imagefolder:DIR`` where ``DIR/labels.json`` exists: a JSON object mapping an image's path,
  relative to ``DIR``, to its class name (``{"img001.png": "cat"}``). Or one ``labels.json`` a
  split: ``DIR/train/labels.json`` with optional ``DIR/val/labels.json`` and
  ``DIR/test/labels.json``, each relative to its own folder.

Classes are the training labels sorted as strings, as torchvision's ``ImageFolder`` sorts its
folders. A split without a ``split`` column or ``train/labels.json`` is one training set, the
validation split held out of it as for any dataset. A missing image is an error naming the line
or key (``--skip-bad`` leaves it out instead); a file that is not a regular file is listed as bad,
never opened. The label file itself is read only if it is a regular file, within
``$RESLAB_MAX_MEMBER_BYTES``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import stat
from pathlib import Path

from ..errors import ReslabError
from .listing import Layout, Listing, list_folder
from .probe import BadImage, not_regular, open_regular, stat_problem

__all__ = ["SPLITS", "LABELS_JSON", "labels_json_files", "read_csv", "read_labels_json"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
"""The values of a CSV's ``split`` column (and the folders that may hold a ``labels.json`` each)."""

LABELS_JSON = "labels.json"
"""The file that labels the images of a folder."""

_HEADERS = (["path", "label"], ["path", "label", "split"])


class _Entry:
    __slots__ = ("path", "label", "split", "origin")

    def __init__(self, path: str, label: str, split: str, origin: str) -> None:
        self.path, self.label, self.split, self.origin = path, label, split, origin


def _read_text(path: Path) -> bytes:
    """The bytes of a label file: a regular file within ``$RESLAB_MAX_MEMBER_BYTES``, never a FIFO."""
    try:
        with open_regular(str(path)) as f:
            return f.read()
    except BadImage as e:
        raise ReslabError(f"cannot read {path} ({e})") from None
    except OSError as e:
        raise ReslabError(f"cannot read {path} ({e.strerror or e})") from None


def _decode_utf8(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ReslabError(f"{path} is not UTF-8 text (line {line}); save it as UTF-8") from None


def _normal(text: str) -> str:
    """A path as written in a label file, '/'-separated and normalised (``a/./b`` -> ``a/b``)."""
    return os.path.normpath(text.replace("\\", "/")).replace(os.sep, "/")


def _listed(entries: list[_Entry], root: Path, where: str, skip_bad: bool, key_text: str
            ) -> tuple[Listing, Layout, str]:
    """The listing and layout of labelled images (paths relative to ``root`` or absolute), and the
    text that keys their cache (the label file's contents)."""
    seen: dict[str, str] = {}
    rels: list[str] = []
    stats: list[tuple[int, int]] = []
    bad: dict[int, str] = {}
    labels: list[tuple[str, str]] = []  # (label, split) of each listed image
    missing: list[str] = []
    fulls: list[str] = []  # each image's absolute path, normalised: duplicates and order are judged by it
    for e in entries:
        rel = _normal(e.path)
        full = root / rel
        if (key := os.path.normpath(full)) in seen:
            raise ReslabError(f"{e.origin}: image {e.path} is listed twice (also {seen[key]}); keep one label per image")
        seen[key] = e.origin
        try:
            st = os.stat(full)
        except OSError as err:
            if os.path.lexists(full):  # a dangling link or a loop: bad, as in a folder
                st = os.lstat(full)
                bad[len(rels)] = stat_problem(str(full), err)
            elif skip_bad:
                missing.append(f"{full} ({e.origin})")
                continue
            else:
                rel_note = "" if os.path.isabs(e.path) else f", read relative to {root}"
                raise ReslabError(f"{e.origin}: image {e.path} does not exist ({full}{rel_note}); fix the "
                                  "path, or pass --skip-bad (skip_bad=True) to leave it out") from None
        else:
            if stat.S_ISDIR(st.st_mode):
                raise ReslabError(f"{e.origin}: {e.path} is a folder, not an image; name image files only")
            if not stat.S_ISREG(st.st_mode):
                bad[len(rels)] = f"not a regular file but {not_regular(st.st_mode)}"
        rels.append(rel)
        fulls.append(key)
        stats.append((st.st_size, st.st_mtime_ns))
        labels.append((e.label, e.split))
    if missing:
        log.warning("%s: leaving out %d missing image%s (e.g. %s)", where, len(missing), "s" * (len(missing) > 1),
                    missing[0])
    classes = sorted({label for label, split in labels if split == "train"})
    if not rels or not classes:
        raise ReslabError(f"{where} names no training images; label images of at least two classes")
    if len(classes) < 2:
        raise ReslabError(f"{where} has one class ({classes[0]}); a classifier needs at least two: label images of "
                          "each class")
    index = {c: k for k, c in enumerate(classes)}
    splits: dict[str, list[tuple[int, int]]] = {}
    for split in SPLITS:
        items = [i for i, (label, s) in enumerate(labels) if s == split]
        if not items:
            continue
        for i in items:
            if labels[i][0] not in index:
                origin = next(e.origin for e in entries if _normal(e.path) == rels[i])
                raise ReslabError(f"{origin}: class {labels[i][0]!r} of the {split} image {rels[i]} has no training "
                                  "images; label training images of it, or leave it out")
        # in class order, then by path: the order layout_of gives a class-per-folder tree
        splits[split] = sorted(((i, index[labels[i][0]]) for i in items), key=lambda p: (p[1], fulls[p[0]]))
    key = hashlib.sha256(key_text.encode()).hexdigest()
    return Listing(rels, stats, set(), bad), Layout("", classes, splits), key


# ---------------------------------------------------------------------------------------------
# CSV


def read_csv(path: Path, skip_bad: bool) -> tuple[Listing, Layout, str]:
    """The images a CSV of ``path,label[,split]`` lines names, relative to its folder."""
    text = _decode_utf8(_read_text(path), path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    entries: list[_Entry] = []
    columns = 0
    try:
        for row in reader:
            line = reader.line_num
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if not columns and [c.lower() for c in cells] in _HEADERS:
                columns = len(cells)
                continue
            if len(cells) not in (2, 3) or (columns and len(cells) != columns):
                want = "path,label,split" if columns == 3 else "path,label" if columns else "path,label[,split]"
                raise ReslabError(f"{path}, line {line}: expected {want}, got {len(cells)} field"
                                  f"{'s' * (len(cells) != 1)} ({','.join(row)[:80]!r})")
            columns = len(cells)
            if not cells[0] or not cells[1]:
                raise ReslabError(f"{path}, line {line}: the {'path' if not cells[0] else 'label'} is empty; "
                                  "each line is path,label[,split]")
            split = "train"
            if columns == 3:
                split = cells[2].lower()
                if split not in SPLITS:
                    raise ReslabError(f"{path}, line {line}: split {cells[2]!r} is not train, val or test")
            entries.append(_Entry(cells[0], cells[1], split, f"{path}, line {line}"))
    except csv.Error as e:
        raise ReslabError(f"{path}, line {reader.line_num}: not a valid CSV line ({e})") from None
    if not entries:
        raise ReslabError(f"{path} names no images; write one path,label line per image (an optional first line "
                          "path,label[,split] is a header)")
    return _listed(entries, path.parent, str(path), skip_bad, text)


# ---------------------------------------------------------------------------------------------
# labels.json


def labels_json_files(folder: Path) -> dict[str, Path] | None:
    """The ``labels.json`` files of an image folder: ``{"train": DIR/labels.json}``, or one a split
    folder (``train/``, ``val/``, ``test/``); None where it has none (a class-per-folder tree)."""
    top = folder / LABELS_JSON
    per_split = {s: folder / s / LABELS_JSON for s in SPLITS if os.path.lexists(folder / s / LABELS_JSON)}
    if os.path.lexists(top):
        if per_split:
            raise ReslabError(f"{folder} has both {LABELS_JSON} and {', '.join(str(p) for p in per_split.values())}; "
                              f"keep either the one {LABELS_JSON} or one in each split folder")
        return {"train": top}
    if not per_split:
        return None
    if "train" not in per_split:
        raise ReslabError(f"{folder} has {', '.join(str(p) for p in per_split.values())} but no "
                          f"train/{LABELS_JSON}; label the training images too")
    for s in SPLITS:
        if s not in per_split and (folder / s).is_dir():
            raise ReslabError(f"{folder}/{s}/ has no {LABELS_JSON} while train/ has one; add {s}/{LABELS_JSON} "
                              f"or move {s}/ away")
    return per_split


def _json_mapping(path: Path) -> dict:
    text = _decode_utf8(_read_text(path), path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReslabError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ReslabError(f"{path} must hold a JSON object mapping image paths to class names "
                          f"({{\"img001.png\": \"cat\"}}), not a {type(data).__name__ if data is not None else 'null'}")
    if not data:
        raise ReslabError(f"{path} is an empty mapping; map each image path to its class name")
    return data


def read_labels_json(folder: Path, files: dict[str, Path], skip_bad: bool) -> tuple[Listing, Layout, str]:
    """The images the ``labels.json`` files of ``folder`` (:func:`labels_json_files`) label."""
    entries: list[_Entry] = []
    key_text = []
    for split, path in files.items():
        base = path.parent.relative_to(folder).as_posix()
        data = _json_mapping(path)
        key_text.append(f"{split}\n{json.dumps(data, sort_keys=True)}\n")
        for name, label in data.items():
            origin = f"{path}, key {name!r}"
            if not isinstance(label, str) or not label.strip():
                shown = json.dumps(label)[:40]
                number = isinstance(label, int | float) and not isinstance(label, bool)
                raise ReslabError(f"{origin}: the label is {shown}; labels are class names, non-empty strings"
                                  + (f' (write "{shown}" for a class named by a number)' if number else ""))
            rel = _normal(name)
            if not name.strip() or os.path.isabs(name) or rel == ".." or rel.startswith("../") or rel == ".":
                raise ReslabError(f"{origin}: image paths in {LABELS_JSON} are relative to its folder "
                                  f"({path.parent}) and stay inside it")
            entries.append(_Entry(rel if base == "." else f"{base}/{rel}", label.strip(), split, origin))
    listing, layout, key = _listed(entries, folder, str(folder / LABELS_JSON) if len(files) == 1 else str(folder),
                                   skip_bad, "".join(key_text))
    labelled = set(listing.rels)
    unlabelled = [r for r in list_folder(folder).rels if r not in labelled]
    if unlabelled:
        log.warning("%s: ignoring %d image%s that %s no label (e.g. %s)", folder, len(unlabelled),
                    "s" * (len(unlabelled) > 1), "have" if len(unlabelled) > 1 else "has", unlabelled[0])
    return listing, layout, key
