"""COCO AP through pycocotools (reslab.detmetrics), checked on cases whose figures are derived by hand
from COCO's protocol: greedy matching by score, 101-point interpolated precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reslab.detmetrics import COCO_METRICS, CocoAccumulator, coco_evaluate

pytest.importorskip("pycocotools")

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def interpolated_ap(hits: list[bool], n_gt: int) -> float:
    """COCO's AP of one ranked list of detections (True: matched a ground truth): the precision
    envelope (the best precision at any recall at least r) read at recall 0, 0.01, ..., 1 (0 past
    the last recall reached), averaged."""
    tp = np.cumsum(hits)
    fp = np.cumsum(np.logical_not(hits))
    recall, precision = tp / n_gt, tp / (tp + fp)
    total = 0.0
    for r in RECALL_POINTS:
        reached = precision[recall >= r - 1e-12]
        total += reached.max() if reached.size else 0.0
    return total / len(RECALL_POINTS)


def box_target(boxes, labels, image_id=0, size=(64, 64), masks=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.tensor(labels, dtype=torch.int64), "image_id": torch.tensor(image_id)}
    if masks is not None:
        t["masks"] = masks
    return t


def filled(boxes, size=(64, 64)):
    m = torch.zeros(len(boxes), *size, dtype=torch.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        m[i, y1:y2, x1:x2] = 1
    return m


def test_ground_truth_as_predictions_is_perfect():
    boxes = [[2, 3, 40, 50], [20, 10, 63, 60]]
    masks = filled(boxes)
    targets = [box_target(boxes, [1, 2], masks=masks), box_target([[5, 5, 40, 40]], [1], image_id=7,
                                                                   masks=filled([[5, 5, 40, 40]]))]
    preds = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
              "masks": t["masks"][:, None].float()} for t in targets]
    res = coco_evaluate(preds, targets, num_classes=3, iou_types=("bbox", "segm"), classes=["bg", "a", "b"])
    for kind in ("bbox", "segm"):
        m = res[kind]
        assert set(m) == {*COCO_METRICS, "per_class"}
        assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AR100"] == pytest.approx(1.0)
        assert m["per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
        assert m["APs"] is None and m["APl"] is None  # every object medium (32² to 96² pixels)


def test_hand_computed_ap():
    # two 10x10 ground-truth boxes; detections by score: IoU 0.81 with A, a miss, IoU 0.64 with B
    targets = [box_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    preds = [{"boxes": torch.tensor([[0., 0., 9., 9.], [50., 50., 60., 60.], [20., 20., 28., 28.]]),
              "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    m = coco_evaluate(preds, targets, num_classes=2)["bbox"]
    ious = [0.81, 0.64]
    ap = {}
    for t in np.linspace(0.5, 0.95, 10):
        ap[round(t, 2)] = interpolated_ap([ious[0] >= t, False, ious[1] >= t], 2)
    assert ap[0.5] == pytest.approx((51 + 50 * 2 / 3) / 101)  # the envelope: 1 up to recall 0.5, then 2/3
    assert ap[0.75] == pytest.approx(51 / 101)  # recall stops at 0.5
    assert m["AP50"] == pytest.approx(ap[0.5], rel=1e-9)
    assert m["AP75"] == pytest.approx(ap[0.75], rel=1e-9)
    assert m["AP"] == pytest.approx(np.mean(list(ap.values())), rel=1e-9)
    assert m["APs"] == pytest.approx(m["AP"]) and m["APm"] is None and m["APl"] is None  # all boxes small
    # recall: both found at IoU <= 0.60 (3 thresholds), A alone up to 0.80 (4 more); the top detection only: A
    assert m["AR100"] == pytest.approx((3 * 1.0 + 4 * 0.5) / 10)
    assert m["AR1"] == pytest.approx(7 * 0.5 / 10)
    assert m["per_class"] == {"1": pytest.approx(m["AP"])}


def test_masks_wrong_boxes_right():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 40]]
    target = box_target(boxes, [1, 1], masks=filled(boxes))
    wrong = filled([[0, 0, 4, 10], [20, 20, 28, 40]]).float()[:, None]  # 40% of each box: mask IoU 0.4
    pred = {"boxes": target["boxes"].clone(), "labels": target["labels"], "scores": torch.tensor([0.9, 0.6]),
            "masks": wrong * 0.9 + 0.05}  # probabilities: 0.95 inside, 0.05 outside
    res = coco_evaluate([pred], [target], num_classes=2, iou_types=("bbox", "segm"))
    assert res["bbox"]["AP"] == pytest.approx(1.0)
    assert res["segm"]["AP"] == pytest.approx(0.0) and res["segm"]["AP50"] == pytest.approx(0.0)


def test_object_size_by_box_area_for_boxes_and_mask_area_for_masks():
    # a 40x40 box (1600 pixels: medium) around a 5-pixel frame (700 pixels: small), found exactly
    box = [[10, 10, 50, 50]]
    frame = filled(box)
    frame[0, 15:45, 15:45] = 0
    target = box_target(box, [1], masks=frame)
    pred = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(1),
            "masks": frame[:, None].float()}
    res = coco_evaluate([pred], [target], num_classes=2, iou_types=("bbox", "segm"))
    assert res["bbox"]["APm"] == pytest.approx(1.0) and res["bbox"]["APs"] is None
    assert res["segm"]["APs"] == pytest.approx(1.0) and res["segm"]["APm"] is None


def test_per_class_ap_and_empty_predictions():
    targets = [box_target([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])]
    preds = [{"boxes": torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]]), "scores": torch.tensor([0.9, 0.8]),
              "labels": torch.tensor([1, 1])}]  # the second object found but called the wrong class
    m = coco_evaluate(preds, targets, num_classes=3, classes=["background", "cat", "dog"])["bbox"]
    assert m["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(0.0)}
    assert m["AP"] == pytest.approx(0.5)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 1, 64, 64)}
    target = box_target([[0, 0, 10, 10]], [1], masks=filled([[0, 0, 10, 10]]))
    res = coco_evaluate([empty], [target], num_classes=2, iou_types=("bbox", "segm"))
    for kind in ("bbox", "segm"):
        assert res[kind]["AP"] == 0.0 and res[kind]["AR100"] == 0.0
    nothing = coco_evaluate([empty], [box_target([], [])], num_classes=2)["bbox"]
    assert nothing["AP"] is None and nothing["per_class"] == {"1": None}


def test_accumulator_checks_input():
    acc = CocoAccumulator(num_classes=2)
    t = box_target([[0, 0, 10, 10]], [1])
    with pytest.raises(ValueError, match="labels must be in 1..1"):
        acc.add({"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([2])}, t)
    acc = CocoAccumulator(num_classes=2)
    p = {"boxes": t["boxes"], "scores": torch.ones(1), "labels": t["labels"]}
    acc.add(p, t)
    with pytest.raises(ValueError, match="image_id 0 given twice"):
        acc.add(p, t)
    with pytest.raises(ValueError, match="mask AP needs masks"):
        CocoAccumulator(num_classes=2, iou_types=("segm",)).add(p, t)
    with pytest.raises(ValueError, match="iou_types"):
        CocoAccumulator(num_classes=2, iou_types=("keypoints",))
