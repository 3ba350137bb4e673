"""Semantic segmentation as a :class:`~reslab.train.task.Task`: per-pixel cross-entropy (optionally
weighted by the U-Net paper's border-weight map), soft Dice or their sum, with intermediate
supervision for stacked hourglasses; pixel error for model selection; whole images evaluated by
overlap-tile inference (:mod:`reslab.dense`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..data import DatasetSplits
from ..data.segmentation import MaskImages
from ..dense import evaluate_dense, evaluate_dense_run, legal_tile
from ..models.base import AuxOutput
from ..segmetrics import seg_loss
from .task import EvalContext, call_net

__all__ = ["SegmentTask"]


class SegmentTask:
    name = "segment"
    selection_metric = "val_err"
    forward = staticmethod(call_net)

    def __init__(self, cfg: RunConfig, model: nn.Module) -> None:
        self.kind = cfg.seg_loss
        self.tile = legal_tile(model, cfg.crop_size)

    def loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(output, AuxOutput):  # stacked hourglass: the loss on every stack's output (Newell et al.)
            extra = sum(w * seg_loss(a, target, self.kind) for a, w in zip(output.aux_logits, output.aux_weights))
            return seg_loss(output.logits, target, self.kind) + extra, output.logits
        return seg_loss(output, target, self.kind), output

    @staticmethod
    def _labels(target: torch.Tensor) -> torch.Tensor:
        # (B, H, W) class indices, or (B, 2, H, W) floats: the indices and the border-weight map
        return target[:, 0].long() if target.is_floating_point() else target

    def batch_stats(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = self._labels(target)
        return {"correct": (prediction.detach().argmax(1) == labels).sum(),
                "pixels": torch.tensor(labels.numel(), device=labels.device)}

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        n, pixels = max(stats["n"], 1), max(stats.get("pixels", 0), 1)
        return {"train_loss": stats["loss"] / n, "train_err": 100.0 * (1 - stats["correct"] / pixels)}

    def running_error(self, stats: dict[str, Any]) -> float | None:
        return 100.0 * (1 - float(stats["correct"]) / max(stats.get("pixels", 0), 1))

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        assert isinstance(splits.val, MaskImages)
        # every rank evaluates the (small) validation split whole: the same figures everywhere
        res, _ = evaluate_dense(model, splits.val, normalizer=normalizer, num_classes=len(splits.classes),
                                tile=self.tile, device=ev.device, amp_dtype=ev.amp_dtype, loss=self.kind)
        record = {"val_loss": res.loss, "val_err": res.pixel_err, "val_miou": res.to_dict(splits.classes)["miou"]}
        if res.rand_err is not None:
            record["val_rand_err"] = res.rand_err
        return record

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        run = evaluate_dense_run(run_dir, split="test", checkpoint=checkpoint, splits=splits, device=ev.device,
                                 amp_dtype=ev.amp_dtype, write=ev.ctx.is_main)
        if ev.ctx.is_main and splits.val is not None and len(splits.val):
            # the validation images drawn beside the test images (eval-val-tiled.json, plots/segmentation-val.png)
            evaluate_dense_run(run_dir, split="val", checkpoint=checkpoint, splits=splits, device=ev.device,
                               amp_dtype=ev.amp_dtype)
        d = run.to_dict()
        d.pop("confusion")
        return {"event": "test", **d}

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        rand = f"  Rand error {record['rand_err']:.4f}" if record.get("rand_err") is not None else ""
        miou = f"  mean IoU {record['miou']:.4f}" if record.get("miou") is not None else ""
        return (f"test (tiled, {record['checkpoint']} checkpoint, {record['n']} images): pixel error "
                f"{record['pixel_err']:.2f}%{rand}{miou}")
