"""reslab.detect: COCO evaluation of a detector over DetectionImages, the figures, and predict on image
files (a run trained on resized images: boxes mapped back to the original pixels)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from reslab.data.detection import DetectionImages
from reslab.detect import (
    DetResult,
    draw_detections,
    evaluate_detection,
    plot_detections,
)
from reslab.errors import ReslabError

pytest.importorskip("pycocotools")


class TinyBackbone(nn.Sequential):
    """Two stride-2 convolutions, 8 channels: one feature map at stride 4 (what RPN and RoIAlign need)."""

    out_channels = 8

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())

    def forward(self, x):  # type: ignore[override]
        return OrderedDict([("0", super().forward(x))])


def tiny_maskrcnn() -> nn.Module:
    """A real torchvision Mask R-CNN, small everywhere: 64-pixel inputs, 8-channel features, 32-wide heads."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    model = MaskRCNN(
        TinyBackbone(), num_classes=None, min_size=64, max_size=128,
        rpn_anchor_generator=AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),)),
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=30,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2), box_head=TwoMLPHead(8 * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, 2), box_score_thresh=0.0, box_detections_per_img=10,
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2), mask_head=MaskRCNNHeads(8, (16,), 1),
        mask_predictor=MaskRCNNPredictor(16, 16, 2))
    model.has_masks = True  # the Detector contract (reslab.models.detection)
    model.num_classes = 2
    return model.eval()


def synthetic(n: int = 3, seed: int = 0) -> DetectionImages:
    """``n`` noisy images (sizes differ) with one or two bright rectangles each: boxes, labels, masks."""
    g = torch.Generator().manual_seed(seed)
    images, targets, names = [], [], []
    for i in range(n):
        h, w = (64, 80) if i % 2 == 0 else (72, 64)
        x = torch.randint(0, 60, (3, h, w), generator=g, dtype=torch.uint8)
        boxes = [[4 + i, 6, 30 + i, 40]] + ([[40, 20, 60, 60]] if i != 1 else [])
        masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            x[:, y1:y2, x1:x2] = 200
            masks[k, y1:y2, x1:x2] = 1
        images.append(x)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.ones(len(boxes), dtype=torch.int64), "masks": masks,
                        "image_id": torch.tensor(10 + i)})
        names.append(f"img{i}")
    return DetectionImages(images, targets, names, has_masks=True)


class Oracle(nn.Module):
    """A "detector" that answers each batch with the ground truth of the next images (the plumbing's
    reference: AP must come out 1)."""

    has_masks = True
    num_classes = 2

    def __init__(self, data: DetectionImages) -> None:
        super().__init__()
        self.queue = list(data.targets)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, images, targets=None):
        out = []
        for x in images:
            assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
            self.seen.append(tuple(x.shape))
            t = self.queue.pop(0)
            n = len(t["boxes"])
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.linspace(0.9, 0.8, n),
                        "masks": t["masks"][:, None].float()})
        return out


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_maskrcnn()


@pytest.fixture(scope="module")
def data() -> DetectionImages:
    return synthetic()


def test_evaluate_detection_reads_the_ground_truth_back_as_perfect(data):
    oracle = Oracle(data)
    res, rows = evaluate_detection(oracle, data, batch_size=2, keep=2)
    assert oracle.seen == [(3, *s) for s in data.sizes]  # every image whole, as loaded, once
    assert res.n == 3 and res.box_ap == pytest.approx(1.0) and res.mask_ap == pytest.approx(1.0)
    assert res.bbox["AP50"] == pytest.approx(1.0) and res.segm["AR100"] == pytest.approx(1.0)
    assert [r[3] for r in rows] == ["img0", "img1"] and rows[0][2]["masks"].dtype == torch.uint8
    d = res.to_dict(["background", "person"])
    assert d["bbox"]["per_class"] == {"person": pytest.approx(1.0)} and d["err"] == pytest.approx(0.0)
    json.dumps(d)


def test_evaluate_detection_real_maskrcnn(model, data, tmp_path):
    res, rows = evaluate_detection(model, data, batch_size=2, keep=2)
    assert isinstance(res, DetResult) and res.n == 3 and res.seconds_per_image > 0
    for metrics in (res.bbox, res.segm):
        assert metrics is not None
        for key in ("AP", "AP50", "AP75", "AR100"):
            assert metrics[key] is not None and 0.0 <= metrics[key] <= 1.0 and math.isfinite(metrics[key])
    assert len(rows) == 2 and all(r[2]["scores"].min() >= 0.5 for r in rows if len(r[2]["scores"]))
    assert not model.training
    # boxes only when the data has no masks
    boxes_only = DetectionImages(data.images, [{k: v for k, v in t.items() if k != "masks"} for t in data.targets],
                                 data.names, has_masks=False)
    res2, _ = evaluate_detection(model, boxes_only, batch_size=3)
    assert res2.segm is None and res2.bbox == res.bbox  # batched 3 vs 2: the same detections
    path = tmp_path / "plots" / "detection-test.png"
    fig = plot_detections(rows, ["background", "person"], path, title="tiny")
    assert path.is_file() and len(fig.axes) == 4
    assert [p.name for p in path.parent.iterdir()] == ["detection-test.png"]  # written atomically, nothing left


def test_draw_detections():
    image = torch.zeros(3, 120, 150, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 90.0], [75.0, 30.0, 135.0, 105.0]])
    masks = torch.zeros(2, 1, 120, 150)
    masks[0, 0, 40:60, 20:40] = 0.9
    drawn = draw_detections(image, boxes, torch.tensor([1, 1]), torch.tensor([0.9, 0.3]), masks,
                            ["background", "person"])
    assert drawn.shape == image.shape and drawn.dtype == torch.uint8
    assert drawn[:, 50, 30].sum() > 0 and drawn[:, 70, 30].sum() == 0  # the kept detection's mask is tinted
    assert drawn[:, 60:110, 90:140].sum() == 0  # the 0.3 one is not drawn (its lower part: clear of any label)
    assert drawn[:, 40:80, 10].sum() > 0 and drawn[:, 89, 20:50].sum() > 0  # the 0.9 one's outline is
    nothing = draw_detections(image, boxes, torch.tensor([1, 1]), torch.tensor([0.1, 0.2]))
    assert torch.equal(nothing, image)
    with pytest.raises(ReslabError, match="no images"):
        plot_detections([], ["background", "person"], None)


def write_png(path: Path, size_hw: tuple[int, int], seed: int) -> torch.Tensor:
    h, w = size_hw
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    arr[h // 5:h // 2, w // 8:w // 2] = 220
    Image.fromarray(arr).save(path)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def loaded_run(model: nn.Module, tmp_path: Path, image_size: int | None, name: str = "maskrcnn_resnet18_fpn"):
    """A LoadedRun of a detection run (its config: the registry's name and the data's image_size),
    its model the tiny Mask R-CNN."""
    from reslab.config import make_config
    from reslab.predict import LoadedRun

    cfg = make_config({"model": name, "data": "pennfudan", "image_size": image_size})
    return LoadedRun(tmp_path / "run", cfg, model, None, ["background", "person"], 3, None,  # type: ignore[arg-type]
                     image_size or 64, "best")


def test_predict_maps_detections_back_through_the_resize(model, tmp_path):
    from torchvision.transforms.v2 import functional as TF

    from reslab.detect import predict_detections

    images = {"wide": write_png(tmp_path / "wide.png", (80, 120), 1), "tall": write_png(tmp_path / "tall.png", (100, 70), 2)}
    paths = [tmp_path / "wide.png", tmp_path / "tall.png"]
    run = loaded_run(model, tmp_path, image_size=48)
    preds = predict_detections(run, paths, tmp_path / "out", score_threshold=0.0)
    assert [p.out_path.name for p in preds] == ["wide_det.png", "tall_det.png"]
    for pred, image in zip(preds, images.values()):
        h, w = image.shape[1:]
        with Image.open(pred.out_path) as drawn:
            assert drawn.size == (w, h) and drawn.mode == "RGB"
        # by hand: the shorter side resized to 48 as the data loader resizes, the boxes scaled back
        x = TF.resize(image, [48], antialias=True)
        assert min(x.shape[1:]) == 48
        with torch.no_grad():
            ref = model([x.float() / 255])[0]
        scale = torch.tensor([w / x.shape[2], h / x.shape[1]] * 2)
        boxes = torch.tensor([d["box"] for d in pred.detections])
        assert len(boxes) == len(ref["boxes"]) > 0
        torch.testing.assert_close(boxes, ref["boxes"] * scale, rtol=1e-5, atol=1e-4)
        assert [d["score"] for d in pred.detections] == pytest.approx(ref["scores"].tolist(), rel=1e-6)
        assert {d["label"] for d in pred.detections} <= {"person"}
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        # the drawing: the original image, the masks' probabilities resized to it and thresholded
        masks = torch.nn.functional.interpolate(ref["masks"], size=(h, w), mode="bilinear", align_corners=False)
        by_hand = draw_detections(image, ref["boxes"] * scale, ref["labels"], ref["scores"], masks,
                                  ["background", "person"], 0.0)
        with Image.open(pred.out_path) as drawn:
            assert np.array_equal(np.asarray(drawn), by_hand.permute(1, 2, 0).numpy())


def test_predict_draws_on_the_original_and_refuses_bad_input(model, tmp_path):
    from reslab.detect import predict_detections

    image = write_png(tmp_path / "a.png", (64, 80), 3)
    run = loaded_run(model, tmp_path, image_size=None)
    (pred,) = predict_detections(run, [tmp_path / "a.png"], tmp_path / "out", score_threshold=1.0)
    assert pred.detections == []  # nothing scores 1: the image comes back untouched, at its own size
    assert np.array_equal(np.asarray(Image.open(pred.out_path)), image.permute(1, 2, 0).numpy())
    (tmp_path / "b").mkdir()
    write_png(tmp_path / "b" / "a.jpg", (64, 64), 4)
    with pytest.raises(ReslabError, match="two images are named 'a'"):
        predict_detections(run, [tmp_path / "a.png", tmp_path / "b" / "a.jpg"], tmp_path / "out")
    with pytest.raises(ReslabError, match="is a classification run, not a detection run"):
        predict_detections(loaded_run(model, tmp_path, None, name="resnet20"), [tmp_path / "a.png"], tmp_path / "o")
    with pytest.raises(ReslabError, match="is a file"):
        predict_detections(run, [tmp_path / "a.png"], tmp_path / "a.png")


def test_evaluate_detection_run_refuses_other_runs(tmp_path):
    from reslab.detect import evaluate_detection_run

    run_dir = tmp_path / "cls"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("model: resnet20\ndata: cifar10\n")
    with pytest.raises(ReslabError, match="is a classification run, not a detection run"):
        evaluate_detection_run(run_dir)
    with pytest.raises(ReslabError, match="not a run directory"):
        evaluate_detection_run(tmp_path / "nothing")
    with pytest.raises(ReslabError, match="split must be test or val"):
        evaluate_detection_run(run_dir, split="train")
