"""Object detection and instance segmentation as a :class:`~reslab.train.task.Task`: torchvision's
detectors (Faster R-CNN, Mask R-CNN, RetinaNet over reslab backbones, :mod:`reslab.models.detection`)
compute their own losses from the targets, so the task sums the detector's loss dict and keeps each
component in the epoch statistics (``train_loss_classifier``, ``train_loss_box_reg``, ...).

Model selection uses ``val_err`` = 100 x (1 - box AP), COCO's AP averaged over IoU 0.50:0.95 on the
validation split (pycocotools, :mod:`reslab.detmetrics`): lower is better, like every other task's
``val_err``. The test split is evaluated once with the selected checkpoint: box AP, AP50, AP75 and,
for Mask R-CNN, the same for masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..data import DatasetSplits
from ..data.detection import DetectionImages
from ..detect import evaluate_detection, evaluate_detection_run
from .task import EvalContext

__all__ = ["DetectTask", "box_err"]


def box_err(metrics: dict[str, Any]) -> float:
    """100 x (1 - box AP at IoU 0.50:0.95): the selection error of a detector (lower is better)."""
    ap = metrics["bbox"]["AP"]
    return 100.0 * (1.0 - (ap if ap is not None and ap >= 0 else 0.0))


class DetectTask:
    name = "detect"
    selection_metric = "val_err"

    def __init__(self, cfg: RunConfig, model: nn.Module) -> None:
        self.masks = bool(getattr(model, "has_masks", False))

    @staticmethod
    def forward(net: nn.Module, x: Any, y: Any) -> Any:
        """A detector in training mode takes the targets and returns its losses."""
        return net(x, y)

    def loss(self, output: Any, target: Any) -> tuple[torch.Tensor, Any]:
        if not isinstance(output, dict):
            raise TypeError(f"a detector in training mode returns a dict of losses, got {type(output).__name__}")
        total = sum(output.values())
        assert isinstance(total, torch.Tensor)
        return total, {k: v.detach() for k, v in output.items()}

    def batch_stats(self, prediction: Any, target: Any) -> dict[str, torch.Tensor]:
        n = len(target)
        return {f"{k}": v.double() * n for k, v in prediction.items()}

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        n = max(stats["n"], 1)
        parts = {f"train_{k}": float(v) / n for k, v in stats.items() if k.startswith("loss_")}
        return {"train_loss": float(stats["loss"]) / n, **parts}

    def running_error(self, stats: dict[str, Any]) -> float | None:
        return None

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        assert isinstance(splits.val, DetectionImages)
        # every rank evaluates the (small) validation split whole: the same figures everywhere
        res, _ = evaluate_detection(model, splits.val, device=ev.device, amp_dtype=ev.amp_dtype)
        d = res.to_dict(list(splits.classes))
        record = {"val_err": box_err(d), "val_box_ap": d["bbox"]["AP"], "val_box_ap50": d["bbox"]["AP50"]}
        if d.get("segm"):
            record.update({"val_mask_ap": d["segm"]["AP"], "val_mask_ap50": d["segm"]["AP50"]})
        return record

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        run = evaluate_detection_run(run_dir, split="test", checkpoint=checkpoint, splits=splits, device=ev.device,
                                     amp_dtype=ev.amp_dtype, write=ev.ctx.is_main)
        if ev.ctx.is_main and splits.val is not None and len(splits.val):
            # the validation images drawn beside the test images (eval-val.json, plots/detection-val.png)
            evaluate_detection_run(run_dir, split="val", checkpoint=checkpoint, splits=splits, device=ev.device,
                                   amp_dtype=ev.amp_dtype)
        d = run.to_dict()
        return {"event": "test", "protocol": "whole images", **d}

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        def ap(kind: str) -> str:
            m = record.get(kind) or {}
            if not m:
                return ""
            name = "box" if kind == "bbox" else "mask"
            return f"  {name} AP {100 * (m['AP'] or 0):.1f} AP50 {100 * (m['AP50'] or 0):.1f} AP75 {100 * (m['AP75'] or 0):.1f}"
        return f"test ({record['checkpoint']} checkpoint, {record['n']} images):{ap('bbox')}{ap('segm')}"
