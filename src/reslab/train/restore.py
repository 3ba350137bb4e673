"""Super-resolution as a :class:`~reslab.train.task.Task`: an L1 or L2 loss on [0, 1] pixels (the
paper's choice per model unless ``sr_loss`` says otherwise), whole validation images measured by
PSNR and SSIM on Y beside bicubic upscaling (:mod:`reslab.superres`), and the test split likewise
once, with the checkpoint chosen on validation.

Model selection uses ``val_err``: the root-mean-square error of Y over every validation pixel (the
``scale``-pixel border shaved), in % of 255. Lower is better, and ``20 log10(100 / val_err)`` is the
PSNR of the validation pixels pooled. The training error ``train_err`` is the same measure on the
training patches (not rounded to 8 bits).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig
from ..data import DatasetSplits
from ..data.sr import SRImages
from ..srmetrics import y_squared_error
from ..superres import evaluate_sr, evaluate_sr_run, run_scale, sr_loss, sr_loss_kind
from .task import EvalContext, call_net

__all__ = ["RestoreTask"]


class RestoreTask:
    name = "restore"
    selection_metric = "val_err"
    forward = staticmethod(call_net)

    def __init__(self, cfg: RunConfig, model: nn.Module) -> None:
        self.scale = run_scale(model, cfg.scale)
        self.kind = sr_loss_kind(cfg.sr_loss, model)

    def loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sr_loss(output, target, self.kind), output

    def batch_stats(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        border = self.scale if min(target.shape[-2:]) > 2 * self.scale else 0
        sq, count = y_squared_error(prediction, target, border)
        return {"y_sq": sq.double(), "y_pixels": torch.tensor(count, device=target.device)}

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        n = max(stats["n"], 1)
        return {"train_loss": stats["loss"] / n, "train_err": self.running_error(stats) or 0.0}

    def running_error(self, stats: dict[str, Any]) -> float | None:
        pixels = float(stats.get("y_pixels", 0))
        return 100.0 * math.sqrt(float(stats.get("y_sq", 0.0)) / pixels) / 255.0 if pixels else None

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        assert isinstance(splits.val, SRImages)
        # every rank evaluates the (small) validation split whole: the same figures everywhere
        res, _ = evaluate_sr(model, splits.val, scale=self.scale, device=ev.device, amp_dtype=ev.amp_dtype,
                             loss=self.kind)
        return {"val_loss": res.loss, "val_err": res.err, "val_psnr": res.psnr, "val_ssim": res.ssim,
                "val_bicubic_psnr": res.bicubic_psnr}

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        run = evaluate_sr_run(run_dir, split="test", checkpoint=checkpoint, splits=splits, device=ev.device,
                              amp_dtype=ev.amp_dtype, write=ev.ctx.is_main)
        if ev.ctx.is_main and splits.val is not None and len(splits.val):
            # the validation images drawn beside the test images (eval-val-tiled.json, plots/sr-val.png)
            evaluate_sr_run(run_dir, split="val", checkpoint=checkpoint, splits=splits, device=ev.device,
                            amp_dtype=ev.amp_dtype)
        d = run.to_dict()
        d.pop("images")
        return {"event": "test", **d}

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        b = record["bicubic"]
        return (f"test (tiled, x{record['scale']}, {record['checkpoint']} checkpoint, {record['n']} images; Y, "
                f"{record['scale']}-pixel border shaved): PSNR {record['psnr']:.2f} dB  SSIM {record['ssim']:.4f}  "
                f"(bicubic {b['psnr']:.2f} dB, {b['ssim']:.4f}: {record['psnr'] - b['psnr']:+.2f} dB)")
