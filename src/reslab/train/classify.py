"""Image classification as a :class:`~reslab.train.task.Task`: cross-entropy (with label
smoothing and auxiliary heads), top-1 error for model selection, the paper's test protocols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..data import DatasetSplits
from ..evaluate import evaluate, evaluate_run
from ..models.base import AuxOutput
from .baselines import baselines
from .task import EvalContext, call_net

__all__ = ["ClassifyTask"]


class ClassifyTask:
    name = "classify"
    selection_metric = "val_err"
    forward = staticmethod(call_net)

    def __init__(self, cfg: RunConfig) -> None:
        self.label_smoothing = cfg.label_smoothing

    def loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # target: class indices, or (N, classes) probabilities from mixup / CutMix (smoothed the same way)
        ce = lambda logits: F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)  # noqa: E731
        if isinstance(output, AuxOutput):  # GoogLeNet / Inception-v3: weighted auxiliary losses
            extra = sum(w * ce(a) for a, w in zip(output.aux_logits, output.aux_weights))
            return ce(output.logits) + extra, output.logits
        return ce(output), output

    def batch_stats(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        if target.ndim == 2:  # mixup / CutMix: counted against the larger share of each mixed label
            target = target.argmax(1)
        return {"correct": (prediction.detach().argmax(1) == target).sum()}

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        n = max(stats["n"], 1)
        return {"train_loss": stats["loss"] / n, "train_err": 100.0 * (1 - stats["correct"] / n)}

    def running_error(self, stats: dict[str, Any]) -> float | None:
        return 100.0 * (1 - float(stats["correct"]) / max(stats["n"], 1))

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        cfg = ev.cfg
        res = evaluate(model, splits.val, normalizer=normalizer, num_classes=len(splits.classes), protocol="center",
                       batch_size=max(cfg.batch_size, 256), device=ev.device, pad=cfg.pad, crop_size=cfg.crop_size,
                       scales=cfg.test_scales or None, channels_last=cfg.channels_last, amp_dtype=ev.amp_dtype,
                       num_workers=cfg.num_workers, rank=ev.ctx.rank, world_size=ev.ctx.world_size)
        return {"val_loss": res.loss, "val_err": res.top1_err, "val_top5_err": res.top5_err}

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        run = evaluate_run(run_dir, split="test", protocol=ev.cfg.test_protocol, checkpoint=checkpoint, splits=splits,
                           device=ev.device, amp_dtype=ev.amp_dtype, rank=ev.ctx.rank, world_size=ev.ctx.world_size,
                           plot_name="confusion.png")
        res = run.result
        record = {"event": "test", "split": "test", "protocol": res.protocol, "loss": res.loss,
                  "top1_err": res.top1_err, "top5_err": res.top5_err, "checkpoint": run.checkpoint}
        if ev.ctx.is_main:  # did the CNN earn its keep? (train/baselines.py)
            record["baselines"] = base = baselines(splits, ev.cfg.seed)
            if base and not res.top1_err < base["linear"]["test_err"]:
                record["notes"] = [f"warning: the network's test error {res.top1_err:.2f}% does not beat a linear "
                                   f"classifier on the pixels ({base['linear']['test_err']:.2f}%): train longer, "
                                   "check the lr (recipe auto) or the data"]
        return record

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        return (f"test ({record['protocol']}, {record['checkpoint']} checkpoint): "
                f"top-1 err {record['top1_err']:.2f}%  top-5 err {record['top5_err']:.2f}%")
