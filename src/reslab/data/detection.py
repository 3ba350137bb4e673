"""Detection datasets: images with boxes, labels and (optionally) instance masks.

Two datasets, each split into :class:`DetectionImages` whose targets follow torchvision's
detection contract (``boxes`` x1, y1, x2, y2 in pixels, ``labels`` 1..K-1 with 0 the background,
``masks`` one 0/1 plane an instance), classes ``["background", *object classes]``:

``pennfudan`` / ``pennfudan:PATH`` with ``task="detect"``
    The Penn-Fudan pedestrians (:mod:`.segmentation` reads and downloads them): one target a
    person, from the instance ids of the authors' ``PedMasks`` (1..N, one a person): its mask, and
    its box from the mask's pixel edges (x1 = first column, x2 = last column + 1, rows alike);
    label 1, classes ``["background", "person"]``. The same fixed 20% test set as segmentation;
    the validation images (10% of the rest by default) drawn with ``seed``.
``coco:PATH``
    Your own data in COCO's instances format. PATH is one JSON file (``{"images", "annotations",
    "categories"}``), or a folder holding ``train.json`` and optionally ``val.json`` and
    ``test.json``. An image's ``file_name`` is found relative to its JSON's folder, or in the
    ``images/`` folder beside the JSON. Boxes are COCO's ``[x, y, width, height]`` turned into
    corners; ``segmentation`` polygons and RLEs become masks (pycocotools); where any annotation
    has none, the dataset is boxes only (``has_masks`` False). Classes are ``["background",
    *category names in id order]``, labels 1..K-1 in that order. Crowd annotations
    (``iscrowd: 1``) are left out, and counted in ``info["crowd_left_out"]``. Without a
    ``test.json``, a fixed 20% of the training images (seed 0, whatever seed a run uses) is the
    test set; without a ``val.json``, the validation images (10% by default) are drawn with
    ``seed`` from the rest.

``image_size`` resizes every image's shorter side to it (bilinear, antialiased), its masks by the
nearest pixel; Penn-Fudan's boxes are then recomputed from the resized masks, COCO's scaled.
Training batches with flips and scale jitter that move boxes and masks with the image:
:class:`DetLoader`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ReslabError
from .decode import decode_file, decoding_pool
from .loader import _Batches, _mix, sample_generator
from .probe import BadImage, not_regular
from .registry import LoadOptions, register_dataset, register_task
from .segmentation import (
    PENNFUDAN_CLASSES,
    PENNFUDAN_TEST_FRACTION,
    PENNFUDAN_TEST_SEED,
    _absolute,
    _draw,
    _rgb,
    pennfudan_source,
    pennfudan_test_draw,
    read_pennfudan,
    resize_pair,
)
from .splits import DatasetSplits, val_count

__all__ = ["DetectionImages", "DetLoader", "COCO_TEST_FRACTION", "COCO_TEST_SEED", "boxes_from_masks",
           "load_pennfudan_detection", "load_coco", "detection_stats"]

log = logging.getLogger(__name__)

COCO_TEST_FRACTION = 0.2
"""The share of a ``coco:PATH`` dataset's training images held out as the test set where it has no ``test.json``."""

COCO_TEST_SEED = 0
"""The seed of that test draw: fixed, so the test set is the same whatever ``seed`` a run uses."""

_BOX_SLACK = 1.0
"""Pixels a COCO box may reach beyond its image (rounding in tools that write them) before it is
refused; what lies beyond is clipped."""


@dataclass(eq=False)
class DetectionImages:
    """A detection split held in memory; the images may differ in size.

    Args:
        images: uint8 tensors (3, H, W).
        targets: One dict an image: ``boxes`` float32 (N, 4) as x1, y1, x2, y2 in pixels (pixel
            edges: x2 > x1, y2 > y1), ``labels`` int64 (N,) in 1..K-1 (0 is the background),
            ``masks`` uint8 (N, H, W) of 0/1 (only when ``has_masks``), ``image_id`` int64 () the
            image's index in the full dataset.
        names: The file stem of each image, for messages and figures.
        has_masks: Whether every target carries ``masks``.
    """

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    names: list[str]
    has_masks: bool

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.targets) == len(self.names):
            raise ReslabError(f"DetectionImages needs one target and one name an image: got {len(self.images)} "
                              f"images, {len(self.targets)} targets, {len(self.names)} names")
        for x, t, name in zip(self.images, self.targets, self.names):
            if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
                raise ReslabError(f"image {name} must be a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
            boxes, labels = t.get("boxes"), t.get("labels")
            if boxes is None or labels is None or "image_id" not in t:
                raise ReslabError(f"the target of image {name} needs boxes, labels and image_id, got {sorted(t)}")
            if boxes.dtype != torch.float32 or boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ReslabError(f"boxes of image {name} must be float32 (N, 4), got {boxes.dtype} "
                                  f"{tuple(boxes.shape)}")
            if labels.dtype != torch.int64 or labels.shape != (boxes.shape[0],):
                raise ReslabError(f"labels of image {name} must be int64 ({boxes.shape[0]},), got {labels.dtype} "
                                  f"{tuple(labels.shape)}")
            if self.has_masks:
                masks = t.get("masks")
                if masks is None or masks.dtype != torch.uint8 or tuple(masks.shape) != (boxes.shape[0],
                                                                                          *x.shape[1:]):
                    got = "none" if masks is None else f"{masks.dtype} {tuple(masks.shape)}"
                    raise ReslabError(f"masks of image {name} must be uint8 ({boxes.shape[0]}, {x.shape[1]}, "
                                      f"{x.shape[2]}), got {got}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        sizes = sorted(set(self.sizes))
        shown = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes"
        if not sizes:
            return f"DetectionImages(0 images{', masks' if self.has_masks else ''})"
        return (f"DetectionImages({len(self)} images, {shown}, {self.num_instances} instances"
                f"{', masks' if self.has_masks else ''})")

    @property
    def channels(self) -> int:
        """The images' channel count: 3."""
        return 3

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image."""
        return [(int(x.shape[1]), int(x.shape[2])) for x in self.images]

    @property
    def num_instances(self) -> int:
        """The objects (boxes) over all images."""
        return sum(int(t["boxes"].shape[0]) for t in self.targets)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> DetectionImages:
        """The images at ``indices``, in that order (the tensors are shared, not copied; ``image_id``
        keeps each image's index in the full dataset)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return DetectionImages([self.images[i] for i in idx], [self.targets[i] for i in idx],
                               [self.names[i] for i in idx], self.has_masks)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """float32 (N, 4): the box of each 0/1 mask of ``masks`` (N, H, W) at pixel edges: x1 = the
    first column that holds the object, x2 = its last column + 1, rows alike (torchvision's
    ``masks_to_boxes`` gives the last column itself). An empty mask gives (0, 0, 0, 0)."""
    n, h, w = masks.shape
    if masks.device.type == "cpu":  # numpy: 1.5 ms for 3 masks of 400x500, torch's any/argmax 24 ms (busy 2 cores)
        m = masks.numpy().astype(bool, copy=False)
        cols, rows = m.any(axis=1), m.any(axis=2)
        boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)],
                         axis=1).astype(np.float32) * cols.any(1, keepdims=True)
        return torch.from_numpy(boxes.reshape(n, 4))
    return _boxes_on_device(masks)


def _boxes_on_device(masks: torch.Tensor) -> torch.Tensor:
    """:func:`boxes_from_masks` by torch ops, where the masks are (on a GPU)."""
    h, w = masks.shape[1:]
    on_cols, on_rows = masks.bool().any(1), masks.bool().any(2)
    edges = torch.stack([on_cols.int().argmax(1), on_rows.int().argmax(1), w - on_cols.flip(1).int().argmax(1),
                         h - on_rows.flip(1).int().argmax(1)], dim=1).float()
    return edges * on_cols.any(1, keepdim=True)


def _resize_image(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF  # heavy: imported when first needed

    return TF.resize(image, size, antialias=True)


def _shorter_side(hw: tuple[int, int], size: int) -> list[int]:
    """(H, W) with the shorter side ``size``, torchvision's rounding (``resize(x, [size])``)."""
    h, w = hw
    if h <= w:
        return [size, int(size * w / h)]
    return [int(size * h / w), size]


# ---------------------------------------------------------------------------------------------
# Splits and what is reported about them


def _split_val(full: DetectionImages, val_size: int | float, seed: int, what: str
               ) -> tuple[DetectionImages, DetectionImages]:
    """(train, val): ``val_size`` whole images of ``full`` drawn, seeded (segmentation's draw)."""
    n_val = val_count(val_size, len(full), what=what)
    rest, drawn = _draw(len(full), n_val, seed)
    return full.subset(rest), full.subset(drawn)


def detection_stats(data: DatasetSplits) -> dict[str, Any]:
    """What a run reports about a detection dataset (kept in ``data.stats``): ``images`` and
    ``instances`` of each split, ``instances_per_image`` (their mean), ``train_per_class`` (training
    instances of each class, the background's 0), ``imbalance`` (the largest class's instances over
    the smallest's, None where a class has none), ``grayscale`` and ``notes``."""
    splits = {"train": data.train, "val": data.val, "test": data.test}
    images = {k: len(v) if v is not None else 0 for k, v in splits.items()}
    instances = {k: v.num_instances if isinstance(v, DetectionImages) else 0 for k, v in splits.items()}
    counts = torch.zeros(len(data.classes), dtype=torch.long)
    if isinstance(data.train, DetectionImages):
        for t in data.train.targets:
            counts += torch.bincount(t["labels"], minlength=len(data.classes))[:len(data.classes)]
    objects = counts[1:]
    imbalance = round(float(objects.max()) / float(objects.min()), 3) if len(objects) and bool(objects.min() > 0) \
        else None
    return {"images": images, "instances": instances,
            "instances_per_image": {k: round(instances[k] / images[k], 3) if images[k] else 0.0 for k in splits},
            "train_per_class": counts.tolist(), "imbalance": imbalance, "grayscale": data.stats.get("grayscale", 0),
            "notes": list(data.stats.get("notes", []))}


def _dataset(name: str, classes: list[str], train: DetectionImages, val: DetectionImages,
             test: DetectionImages | None, info: dict[str, Any], notes: list[str]) -> DatasetSplits:
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    info.setdefault("skipped", [])
    sizes = {s for split in (train, val, test) if split is not None for s in split.sizes}
    data = DatasetSplits(name, list(classes), 3, next(iter(sizes)) if len(sizes) == 1 else None, train, val, test,
                         info)
    data.stats = {"notes": notes}
    data.stats = detection_stats(data)
    empty = [classes[k] for k, c in enumerate(data.stats["train_per_class"]) if k and c == 0]
    if len(train) and empty:
        note = (f"class{'es' * (len(empty) > 1)} {', '.join(map(repr, empty[:5]))}{' ...' * (len(empty) > 5)} "
                f"ha{'ve' if len(empty) > 1 else 's'} no training instances; add images that show "
                f"{'them' if len(empty) > 1 else 'it'} or a smaller val_size")
        log.warning("%s: %s", name, note)
        data.stats["notes"].append(note)
    return data


# ---------------------------------------------------------------------------------------------
# Penn-Fudan


def _instances(ids: torch.Tensor, image_id: int) -> dict[str, torch.Tensor]:
    """The target of one Penn-Fudan mask of instance ids (0 background, 1..N the people)."""
    arr = ids.numpy()
    values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    values = values[values > 0]
    masks = torch.from_numpy((arr[None] == values[:, None, None].astype(np.uint8)).astype(np.uint8))
    return {"boxes": boxes_from_masks(masks), "labels": torch.ones(len(values), dtype=torch.int64),
            "masks": masks, "image_id": torch.tensor(image_id, dtype=torch.int64)}


@register_task("pennfudan", "detect")
def load_pennfudan_detection(path: str, options: LoadOptions) -> DatasetSplits:
    """Penn-Fudan for detection: one box, mask and label (1, person) a pedestrian (module docstring)."""
    src, source, name = pennfudan_source(path, options)
    full = read_pennfudan(src, instances=True)
    images, targets = [], []
    for i, (x, ids) in enumerate(zip(full.images, full.masks)):
        if options.image_size is not None:
            x, ids = resize_pair(x, ids, options.image_size)  # nearest: the instance ids stay ids
        images.append(x)
        targets.append(_instances(ids, i))
    dets = DetectionImages(images, targets, list(full.names), has_masks=True)
    rest, test = pennfudan_test_draw(len(dets), src)
    train, val = _split_val(dets.subset(rest), options.val_size, options.seed, name)
    info = {"root": str(src), "source": source, "val_from": "train" if len(val) else "none",
            "test_from": f"a fixed {PENNFUDAN_TEST_FRACTION:.0%} of the images (seed {PENNFUDAN_TEST_SEED})"}
    return _dataset(name, PENNFUDAN_CLASSES, train, val, dets.subset(test), info, [])


# ---------------------------------------------------------------------------------------------
# COCO-format JSON


_COCO_LAYOUT = ("a COCO instances JSON ({\"images\": [...], \"annotations\": [...], \"categories\": [...]}) or a "
                "folder holding train.json (and optionally val.json, test.json)")


def _read_json(path: Path) -> Any:
    try:
        st = path.stat()
    except OSError as e:
        raise ReslabError(f"cannot read {path} ({e.strerror or e}); coco:PATH names {_COCO_LAYOUT}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ReslabError(f"{path} is {not_regular(st.st_mode)}, not a JSON file; coco:PATH names {_COCO_LAYOUT}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ReslabError(f"{path} is not valid JSON ({e}); coco:PATH names {_COCO_LAYOUT}") from None


def _int_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_coco(doc: Any, path: Path) -> None:
    """Refuse a JSON that is not COCO's instances format, naming the first thing amiss."""
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                   "categories")):
        what = f"an object with keys {sorted(doc)[:6]}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise ReslabError(f"{path} is not COCO instances format: it is {what}, without the lists \"images\", "
                          "\"annotations\" and \"categories\"; export your labels as COCO instances JSON")
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not _int_id(c.get("id")) or not isinstance(c.get("name"), str):
            raise ReslabError(f"{path}: categories[{i}] is not a COCO category (an object with an integer \"id\" and "
                              f"a \"name\"): {str(c)[:80]}")
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or not _int_id(im.get("id")) or not isinstance(im.get("file_name"), str):
            raise ReslabError(f"{path}: images[{i}] is not a COCO image entry (an object with an integer \"id\" and a "
                              f"\"file_name\"): {str(im)[:80]}")
    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict) or not all(_int_id(a.get(k)) for k in ("image_id", "category_id")) \
                or not isinstance(a.get("bbox"), list) or len(a["bbox"]) != 4 \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in a["bbox"]):
            raise ReslabError(f"{path}: annotations[{i}] is not a COCO annotation (an object with integer \"image_id\" "
                              f"and \"category_id\" and a \"bbox\" of 4 numbers): {str(a)[:80]}")


def _categories(doc: dict, path: Path) -> list[tuple[int, str]]:
    """(id, name) of the categories, by id; a repeated id is refused."""
    cats = sorted((c["id"], c["name"]) for c in doc["categories"])
    ids = [c for c, _ in cats]
    if dup := next((c for i, c in enumerate(ids) if c in ids[:i]), None):
        raise ReslabError(f"{path} lists category id {dup} twice; each category needs its own id")
    if not cats:
        raise ReslabError(f"{path} lists no categories; a COCO instances JSON names the object classes in "
                          "\"categories\"")
    return cats


def _image_path(folder: Path, file_name: str, image_id: int, path: Path) -> Path:
    rel = Path(file_name)
    if rel.is_absolute() or ".." in rel.parts or not file_name.strip():
        raise ReslabError(f"{path}: image id {image_id} has file_name {file_name!r}; file names are relative to "
                          f"{folder} (or {folder / 'images'}) and stay inside it")
    for base in (folder, folder / "images"):
        if os.path.lexists(base / rel):
            return base / rel
    raise ReslabError(f"{path}: the file of image id {image_id}, {file_name!r}, is missing: neither {folder / rel} "
                      f"nor {folder / 'images' / rel} exists; add the file or remove the entry")


def _coco_mask(segm: Any, h: int, w: int, where: str) -> torch.Tensor:
    """uint8 (H, W) 0/1 of a COCO ``segmentation``: polygons, or an RLE (compressed or not)."""
    from pycocotools import mask as mask_utils  # imported when first needed

    try:
        if isinstance(segm, list):
            if not segm or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
                raise ValueError("polygons must be lists of x, y pairs, at least 3 points each")
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
        elif isinstance(segm, dict) and isinstance(segm.get("size"), list) and "counts" in segm:
            if [int(v) for v in segm["size"]] != [h, w]:
                raise ValueError(f"its RLE is {segm['size'][1]}x{segm['size'][0]}, the image {w}x{h}")
            rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else dict(segm)
            if isinstance(rle.get("counts"), str):
                rle["counts"] = rle["counts"].encode("ascii")
        else:
            raise ValueError("it is neither a list of polygons nor an RLE {\"size\", \"counts\"}")
        return torch.from_numpy(np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8))
    except (ValueError, TypeError, KeyError, UnicodeEncodeError) as e:
        raise ReslabError(f"{where}: bad segmentation ({e}); fix or remove the annotation") from None


def _read_coco(doc: dict, path: Path, classes_of: dict[int, int], first_id: int, image_size: int | None
               ) -> tuple[DetectionImages, int, bool]:
    """(images, crowd annotations left out, whether every annotation had a mask) of one JSON file's
    document ``doc`` (checked by :func:`_check_coco`), image_id numbered from ``first_id``."""
    folder = path.parent
    entries = doc["images"]
    by_id: dict[int, int] = {}
    for k, im in enumerate(entries):
        if im["id"] in by_id:
            raise ReslabError(f"{path} lists image id {im['id']} twice; each image entry needs its own id")
        by_id[im["id"]] = k
    names: list[str] = [im["file_name"] for im in entries]
    files = [_image_path(folder, im["file_name"], im["id"], path) for im in entries]
    per_image: list[list[dict]] = [[] for _ in entries]
    crowd = 0
    for i, a in enumerate(doc["annotations"]):
        what = f"{path}: annotation {a.get('id', f'#{i}')}"
        if a["image_id"] not in by_id:
            raise ReslabError(f"{what} refers to image id {a['image_id']}, which no entry of \"images\" has; fix the "
                              "annotation or add the image")
        if a["category_id"] not in classes_of:
            raise ReslabError(f"{what} (image {names[by_id[a['image_id']]]}) has category_id {a['category_id']}, which "
                              f"\"categories\" does not list ({', '.join(map(str, sorted(classes_of)))}); fix it or "
                              "add the category")
        if a.get("iscrowd", 0):
            crowd += 1
            continue
        per_image[by_id[a["image_id"]]].append(a)
    has_masks = all(a.get("segmentation") for anns in per_image for a in anns)

    def decode(k: int) -> torch.Tensor:
        try:
            return _rgb(decode_file(str(files[k])))
        except BadImage as e:
            raise ReslabError(f"cannot decode image {files[k]} (image id {entries[k]['id']} of {path}: {e}); replace "
                              "the file or remove its entry") from None

    with decoding_pool() as pool:
        images = list(pool.map(decode, range(len(entries))))
    targets = []
    with warnings.catch_warnings():  # pycocotools 2.0 under numpy 2 warns of np.array(copy=False) on each decode
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
        for k, (x, anns) in enumerate(zip(images, per_image)):
            targets.append(_coco_target(path, files[k], entries[k], x, anns, classes_of, first_id + k, has_masks))
    if image_size is not None:
        for k, (x, t) in enumerate(zip(images, targets)):
            if min(x.shape[1:]) != image_size:
                images[k], targets[k] = _resize_target(x, t, _shorter_side((int(x.shape[1]), int(x.shape[2])),
                                                                           image_size))
    return DetectionImages(images, targets, [Path(n).stem for n in names], has_masks), crowd, has_masks


def _coco_target(path: Path, file: Path, entry: dict, x: torch.Tensor, anns: list[dict], classes_of: dict[int, int],
                 image_id: int, has_masks: bool) -> dict[str, torch.Tensor]:
    """The target of one image of a COCO JSON (``path``), its annotations checked against the image."""
    h, w = int(x.shape[1]), int(x.shape[2])
    declared = (entry.get("height"), entry.get("width"))
    if None not in declared and tuple(declared) != (h, w):
        raise ReslabError(f"{path}: image {file} is {w}x{h} but its entry says {declared[1]}x{declared[0]}; fix "
                          "the entry's width and height (the annotations are in its pixels)")
    boxes, masks = [], []
    for a in anns:
        bx, by, bw, bh = (float(v) for v in a["bbox"])
        what = f"{path}: annotation {a.get('id', '?')} of image {file.name}"
        if bw <= 0 or bh <= 0:
            raise ReslabError(f"{what} has a box of zero area ({bw:g} x {bh:g} px); fix or remove the annotation")
        x1, y1, x2, y2 = bx, by, bx + bw, by + bh
        if x1 < -_BOX_SLACK or y1 < -_BOX_SLACK or x2 > w + _BOX_SLACK or y2 > h + _BOX_SLACK:
            raise ReslabError(f"{what} has a box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) outside the {w}x{h} image; fix or "
                              "remove the annotation")
        x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h))
        if x2 <= x1 or y2 <= y1:
            raise ReslabError(f"{what} has a box of zero area inside the {w}x{h} image; fix or remove the annotation")
        boxes.append([x1, y1, x2, y2])
        if has_masks:
            masks.append(_coco_mask(a["segmentation"], h, w, what))
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor([classes_of[a["category_id"]] for a in anns], dtype=torch.int64),
              "image_id": torch.tensor(image_id, dtype=torch.int64)}
    if has_masks:
        target["masks"] = torch.stack(masks) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
    return target


def _resize_target(image: torch.Tensor, target: dict[str, torch.Tensor], size: list[int]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``image`` resized to ``size`` (H, W) (bilinear, antialiased), its masks by the nearest pixel
    centre, its boxes scaled."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    hw = (int(image.shape[1]), int(image.shape[2]))
    out = dict(target)
    out["boxes"] = TF.resize(tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=hw), size
                             ).as_subclass(torch.Tensor)
    if "masks" in target:
        out["masks"] = TF.resize(tv_tensors.Mask(target["masks"]), size, interpolation=InterpolationMode.NEAREST_EXACT
                                 ).as_subclass(torch.Tensor)
    return _resize_image(image, size), out


@register_dataset("coco", takes_path=True, task="detect",
                  description="your detection data: a COCO instances JSON (images beside it or in images/), or a "
                              "folder of train.json (optional val.json, test.json)")
def load_coco(path: str, options: LoadOptions) -> DatasetSplits:
    """``coco:PATH``: COCO-format instances JSON (module docstring)."""
    src = _absolute(path, "coco:PATH")
    if src.is_dir():
        src = src.resolve()
        files = {k: src / f"{k}.json" for k in ("train", "val", "test") if os.path.lexists(src / f"{k}.json")}
        if "train" not in files:
            raise ReslabError(f"{src} holds no train.json; coco:PATH names {_COCO_LAYOUT}")
    else:
        src = src.resolve()
        files = {"train": src}
    docs = {split: _coco_json(f) for split, f in files.items()}
    cats = _categories(docs["train"], files["train"])
    classes_of = {cid: k + 1 for k, (cid, _) in enumerate(cats)}
    for split in ("val", "test"):
        if split in files:
            other = _categories(docs[split], files[split])
            if other != cats:
                raise ReslabError(f"{files[split]} lists other categories than {files['train']}: {other[:4]} vs "
                                  f"{cats[:4]}; every split needs the same categories")
    name = f"coco:{src}"
    read, crowd, first = {}, 0, 0
    masked = True
    for split, f in files.items():
        read[split], n_crowd, has = _read_coco(docs[split], f, classes_of, first, options.image_size)
        first += len(read[split])
        crowd += n_crowd
        masked = masked and has
    if not masked:  # boxes only where any split lacks masks
        for split, d in read.items():
            read[split] = DetectionImages(d.images, [{k: v for k, v in t.items() if k != "masks"} for t in d.targets],
                                          d.names, False)
    if not len(read["train"]):
        raise ReslabError(f"{files['train']} lists no images; add images (and their annotations)")
    notes = []
    if "test" in files:
        rest, test, test_from = read["train"], read["test"], "test.json"
    else:
        n_test = round(COCO_TEST_FRACTION * len(read["train"]))
        if len(read["train"]) - n_test < 1:
            raise ReslabError(f"{files['train']} lists {len(read['train'])} image(s): too few to hold out a test set "
                              "and train on; add images or a test.json")
        rest_idx, test_idx = _draw(len(read["train"]), n_test, COCO_TEST_SEED)
        rest, test = read["train"].subset(rest_idx), read["train"].subset(test_idx)
        test_from = f"a fixed {COCO_TEST_FRACTION:.0%} of train.json's images (seed {COCO_TEST_SEED})"
    if "val" in files:
        train, val, val_from = rest, read["val"], "val.json"
    else:
        train, val = _split_val(rest, options.val_size, options.seed, name)
        val_from = "train" if len(val) else "none"
    if crowd:
        notes.append(f"{crowd:,} crowd annotation{'s' * (crowd > 1)} (iscrowd 1) left out")
    if not masked:
        notes.append("boxes only: some annotations have no segmentation, so no split has masks")
    info = {"root": str(src), "source": "folder" if src.is_dir() else "json", "val_from": val_from,
            "test_from": test_from, "files": {k: str(v) for k, v in files.items()}, "crowd_left_out": crowd,
            "has_masks": masked}
    return _dataset(name, ["background", *(n for _, n in cats)], train, val, test, info, notes)


def _coco_json(path: Path) -> dict:
    doc = _read_json(path)
    _check_coco(doc, path)
    return doc


# ---------------------------------------------------------------------------------------------
# Training batches


class DetLoader(_Batches):
    """Training batches of a detection split, augmented so that boxes and masks move with the image.

    Each epoch visits the split once in a seeded order (a pure function of (seed, epoch)). Each
    image is flipped horizontally with probability 1/2 (``flips``) and, with ``scale_range=(lo,
    hi)``, resized so that its shorter side is drawn uniformly from lo..hi (scale jitter): image
    bilinear and antialiased, masks by the nearest pixel centre, boxes scaled, all by
    torchvision.transforms.v2 on tv_tensors. The draws come from
    :func:`~reslab.data.loader.sample_generator` (seed, epoch, the image's position in the epoch),
    so a batch is a pure function of (seed, epoch, batch index): :meth:`iterate` from
    ``first_batch`` resumes exactly, and ``world_size`` ranks each take their slice of the same
    global batch.

    Yields ``(images, targets)``: ``images`` a list of float32 (3, H, W) in [0, 1] on ``device``
    (the detector normalises), ``targets`` a list of dicts on ``device`` (``boxes``, ``labels``,
    ``masks`` where the split has them, ``image_id``), torchvision's detection contract.

    Args:
        data: The training split.
        batch_size: The GLOBAL batch size; each of ``world_size`` ranks gets an equal slice. The
            last incomplete batch is dropped.
        device: Where batches go (a split of a few hundred images moves there once).
        seed: Seed of the order and the augmentation.
        flips: Flip images horizontally at random.
        scale_range: (lo, hi) of the shorter side in pixels; None keeps the split's sizes.
        rank, world_size: This process's place among data-parallel processes.
    """

    def __init__(self, data: DetectionImages, batch_size: int, *, device: torch.device | str = "cpu", seed: int = 0,
                 flips: bool = True, scale_range: Sequence[int] | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if len(data) == 0:
            raise ReslabError("the training split has no images")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ReslabError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > len(data):
            raise ReslabError(f"batch_size {batch_size} is larger than the {len(data)} training images; pass a "
                              "smaller batch_size")
        if batch_size < world_size:
            raise ReslabError(f"batch_size {batch_size} leaves some of the {world_size} processes no image; pass a "
                              f"batch_size of at least {world_size}")
        self.scale_range: tuple[int, int] | None = None
        if scale_range is not None:
            lo, hi = (*scale_range, 0, 0)[:2] if len(scale_range) == 2 else (0, 0)
            if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int) or not isinstance(hi, int) \
                    or not 1 <= lo <= hi:
                raise ReslabError(f"scale_range must be two whole numbers 1 <= lo <= hi (the shorter side in pixels), "
                                  f"got {scale_range!r}")
            self.scale_range = (lo, hi)
        self.device = torch.device(device)
        on_device = self.device.type != "cpu"
        self.images = [x.to(self.device) for x in data.images] if on_device else list(data.images)
        self.targets = [{k: v.to(self.device) for k, v in t.items()} for t in data.targets] if on_device \
            else list(data.targets)
        self.has_masks = data.has_masks
        self.batch_size, self.seed, self.flips = batch_size, seed, flips
        self.rank, self.world_size = rank, world_size
        self.train = True
        self.epoch = 0

    def _num_samples(self) -> int:
        return len(self.images)

    def order(self) -> torch.Tensor:
        """The images of the current epoch, in order: a seeded permutation of the split."""
        return torch.randperm(len(self.images), generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch, 11)))

    def sample(self, i: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image ``i`` and its target, flipped and rescaled by the draws of ``gen`` (CPU)."""
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x, t = self.images[i], self.targets[i]
        flip = bool(torch.rand((), generator=gen) < 0.5)  # drawn whether used or not: one stream a sample
        side = None
        if self.scale_range is not None:
            lo, hi = self.scale_range
            side = int(torch.randint(lo, hi + 1, (), generator=gen))
        hw = (int(x.shape[1]), int(x.shape[2]))
        boxes = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=hw)
        masks = tv_tensors.Mask(t["masks"]) if self.has_masks else None
        if self.flips and flip:
            x, boxes = TF.horizontal_flip(x), TF.horizontal_flip(boxes)
            masks = TF.horizontal_flip(masks) if masks is not None else None
        if side is not None and side != min(hw):
            size = _shorter_side(hw, side)
            x, boxes = _resize_image(x, size), TF.resize(boxes, size)
            if masks is not None:
                masks = TF.resize(masks, size, interpolation=InterpolationMode.NEAREST_EXACT)
        out = {"boxes": boxes.as_subclass(torch.Tensor), "labels": t["labels"], "image_id": t["image_id"]}
        if masks is not None:
            out["masks"] = masks.as_subclass(torch.Tensor)
        return TF.to_dtype(x, torch.float32, scale=True), out

    def iterate(self, first_batch: int = 0  # type: ignore[override]  # lists: the images differ in size
                ) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        """This rank's batches of the current epoch from ``first_batch`` on."""
        order = self.order().tolist()
        for b in range(first_batch, len(self)):
            lo, hi = self._slice(b * self.batch_size, (b + 1) * self.batch_size)
            samples = [self.sample(order[p], sample_generator(self.seed, self.epoch, p)) for p in range(lo, hi)]
            yield [s[0] for s in samples], [s[1] for s in samples]

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:  # type: ignore[override]
        return self.iterate(0)
