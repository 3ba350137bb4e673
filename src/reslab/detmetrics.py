"""Detection metrics: COCO's average precision and recall, computed by pycocotools itself.

Ground truth and detections are handed to pycocotools' ``COCO`` and ``COCOeval`` in memory (no
temporary JSON files; their progress prints silenced), so the figures are COCO's protocol exactly:
AP averaged over IoU thresholds 0.50:0.05:0.95 by 101-point interpolated precision, AP50, AP75, AP
by object size (small < 32², medium < 96², large), and the average recall at 1, 10 and 100
detections an image.

Conventions (torchvision's detection contract):

- a target is ``{"boxes": (N, 4) x1, y1, x2, y2 in pixels, "labels": (N,) in 1..K-1, "masks":
  (N, H, W) 0/1, "image_id": ()}``; a prediction is ``{"boxes", "scores", "labels", "masks":
  (N, 1, H, W) probabilities}`` as a torchvision detector returns it in eval mode;
- boxes go to COCO as x, y, w, h; masks as run-length encodings (``pycocotools.mask.encode``),
  predicted masks thresholded at 0.5 as torchvision's reference evaluation does;
- the area that sorts objects into small/medium/large is the box area for box AP and the mask area
  for mask AP (COCO's own annotations give the mask area), every object ``iscrowd`` 0.

:class:`CocoAccumulator` takes one image at a time and keeps only run-length encodings, so a whole
split's masks are never held at once; :func:`coco_evaluate` is the one-call form.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["coco_evaluate", "CocoAccumulator", "COCO_METRICS", "IOU_TYPES"]

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""The names of ``COCOeval.stats``' twelve figures, in its order."""

IOU_TYPES = ("bbox", "segm")

MASK_THRESHOLD = 0.5
"""A predicted mask pixel belongs to the object when its probability is over this (torchvision's reference)."""


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    b = boxes.astype(np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1).tolist()


def _rles(masks: Any, n: int, what: str) -> list[dict[str, Any]]:
    """Run-length encodings of ``n`` masks, (N, H, W) or (N, 1, H, W): 0/1 or bool, or
    probabilities (floats, thresholded at :data:`MASK_THRESHOLD`)."""
    from pycocotools import mask as mask_util

    m = masks.detach().cpu() if isinstance(masks, torch.Tensor) else torch.as_tensor(np.asarray(masks))
    if m.dim() == 4:
        if m.shape[1] != 1:
            raise ValueError(f"{what} masks must be (N, 1, H, W) or (N, H, W), got {tuple(m.shape)}")
        m = m[:, 0]
    if m.dim() != 3 or m.shape[0] != n:
        raise ValueError(f"{what} masks must be ({n}, H, W) or ({n}, 1, H, W), one an object, got {tuple(m.shape)}")
    binary = m > MASK_THRESHOLD if m.is_floating_point() else m != 0
    if n == 0:
        return []
    arr = np.asfortranarray(binary.permute(1, 2, 0).numpy().astype(np.uint8))
    return list(mask_util.encode(arr))


class CocoAccumulator:
    """COCO evaluation fed one image at a time.

    Args:
        num_classes: K, the background included (labels run 1..K-1).
        iou_types: ``bbox`` (boxes) and/or ``segm`` (masks).
        classes: the K class names (index 0 the background), naming the per-class APs; default
            their label numbers.
    """

    def __init__(self, *, num_classes: int, iou_types: Sequence[str] = ("bbox",),
                 classes: Sequence[str] | None = None) -> None:
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad or not iou_types:
            raise ValueError(f"iou_types must be some of {IOU_TYPES}, got {tuple(iou_types)}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background too: at least 2, got {num_classes}")
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"{len(classes)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.iou_types = tuple(dict.fromkeys(iou_types))
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.images: list[dict[str, Any]] = []
        self.gt: dict[str, list[dict[str, Any]]] = {t: [] for t in self.iou_types}
        self.dt: dict[str, list[dict[str, Any]]] = {t: [] for t in self.iou_types}
        self._ids: set[int] = set()

    def _labels(self, labels: Any, n: int, what: str) -> list[int]:
        lab = _numpy(labels).astype(np.int64).reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"{what}: {lab.shape[0]} labels for {n} boxes")
        if lab.size and (lab.min() < 1 or lab.max() >= self.num_classes):
            raise ValueError(f"{what}: labels must be in 1..{self.num_classes - 1} (0 is the background), got "
                             f"{sorted(set(lab.tolist()))}")
        return lab.tolist()

    def add(self, prediction: Mapping[str, Any], target: Mapping[str, Any], *,
            size: tuple[int, int] | None = None) -> None:
        """Add one image: its ``prediction`` and ``target`` (module docstring); ``size`` (H, W) of the
        image (default: from the target's masks)."""
        image_id = int(target["image_id"]) if "image_id" in target else len(self.images)
        if image_id in self._ids:
            raise ValueError(f"image_id {image_id} given twice; every image needs its own")
        self._ids.add(image_id)
        where = f"image {image_id}"
        if size is None and target.get("masks") is not None:
            size = tuple(target["masks"].shape[-2:])  # type: ignore[assignment]
        entry: dict[str, Any] = {"id": image_id}
        if size is not None:
            entry.update(height=int(size[0]), width=int(size[1]))
        self.images.append(entry)

        gt_boxes = _numpy(target["boxes"]).reshape(-1, 4)
        n = gt_boxes.shape[0]
        gt_labels = self._labels(target["labels"], n, f"{where} ground truth")
        boxes = _numpy(prediction["boxes"]).reshape(-1, 4)
        m = boxes.shape[0]
        labels = self._labels(prediction["labels"], m, f"{where} predictions")
        scores = _numpy(prediction["scores"]).astype(np.float64).reshape(-1).tolist()
        if len(scores) != m:
            raise ValueError(f"{where} predictions: {len(scores)} scores for {m} boxes")
        gt_xywh, dt_xywh = _xywh(gt_boxes), _xywh(boxes)
        if "bbox" in self.gt:
            self.gt["bbox"] += [{"image_id": image_id, "bbox": b, "category_id": c, "area": b[2] * b[3],
                                 "iscrowd": 0} for b, c in zip(gt_xywh, gt_labels)]
            self.dt["bbox"] += [{"image_id": image_id, "bbox": b, "category_id": c, "score": s}
                                for b, c, s in zip(dt_xywh, labels, scores)]
        if "segm" in self.gt:
            from pycocotools import mask as mask_util

            if target.get("masks") is None or prediction.get("masks") is None:
                raise ValueError(f"{where}: mask AP needs masks in both the target and the prediction")
            gt_rles = _rles(target["masks"], n, f"{where} ground-truth")
            dt_rles = _rles(prediction["masks"], m, f"{where} predicted")
            self.gt["segm"] += [{"image_id": image_id, "segmentation": r, "bbox": b, "category_id": c,
                                 "area": float(mask_util.area(r)), "iscrowd": 0}
                                for r, b, c in zip(gt_rles, gt_xywh, gt_labels)]
            # no "bbox": loadRes would then take the box area for the mask's
            self.dt["segm"] += [{"image_id": image_id, "segmentation": r, "category_id": c, "score": s}
                                for r, c, s in zip(dt_rles, labels, scores)]

    def _evaluate(self, iou_type: str) -> dict[str, Any]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        categories = [{"id": i, "name": self.classes[i]} for i in range(1, self.num_classes)]
        gt = COCO()
        gt.dataset = {"images": list(self.images), "categories": categories,
                      "annotations": [dict(a, id=i + 1) for i, a in enumerate(self.gt[iou_type])]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            if self.dt[iou_type]:
                dt = gt.loadRes([dict(a) for a in self.dt[iou_type]])
            else:  # loadRes cannot take an empty list
                dt = COCO()
                dt.dataset = {"images": list(self.images), "categories": categories, "annotations": []}
                dt.createIndex()
            ev = COCOeval(gt, dt, iouType=iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out: dict[str, Any] = {k: (None if v < 0 else float(v)) for k, v in zip(COCO_METRICS, ev.stats)}
        precision = ev.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max detections)
        per_class: dict[str, float | None] = {}
        for k, cat in enumerate(ev.params.catIds):
            p = precision[:, :, k, 0, -1]  # every area, 100 detections: AP as summarize() averages it
            per_class[self.classes[cat]] = float(p[p > -1].mean()) if (p > -1).any() else None
        out["per_class"] = per_class
        return out

    def summarize(self) -> dict[str, dict[str, Any]]:
        """COCO's figures for every IoU type: ``{"bbox": {"AP": ..., ..., "ARl": ..., "per_class":
        {name: AP}}, "segm": {...}}``, fractions in [0, 1]; None where COCO has nothing to measure
        (no object of that size or class)."""
        return {t: self._evaluate(t) for t in self.iou_types}


def coco_evaluate(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], *,
                  num_classes: int, iou_types: Sequence[str] = ("bbox",),
                  classes: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """COCO AP and AR of ``predictions`` against ``targets`` (one of each an image, in the same order).

    Args:
        predictions: what a torchvision detector returns in eval mode, one dict an image.
        targets: the ground truth, one dict an image (``image_id`` default: the image's position).
        num_classes: K, the background included.
        iou_types: ``bbox`` and/or ``segm``.
        classes: the K class names, naming the per-class APs.

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
        "ARm", "ARl": float in [0, 1] or None, "per_class": {class name: AP or None}}}``.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets; give one of each an image")
    acc = CocoAccumulator(num_classes=num_classes, iou_types=iou_types, classes=classes)
    for i, (p, t) in enumerate(zip(predictions, targets)):
        acc.add(p, t if "image_id" in t else {**t, "image_id": i})
    return acc.summarize()
