"""Classification metrics: top-k errors, confusion matrices, per-class accuracy."""

from __future__ import annotations

import torch

__all__ = ["topk_correct", "confusion_matrix", "per_class_accuracy"]


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose target is among the top-k scores, for each k (as 0-d tensors)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(target[:, None])
    return [hit[:, : min(k, maxk)].any(1).sum() for k in ks]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts; rows are true classes, columns predictions."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> torch.Tensor:
    """Accuracy (%) of each true class; NaN for classes with no samples."""
    totals = cm.sum(1).double()
    return torch.where(totals > 0, cm.diag().double() / totals.clamp_min(1) * 100, torch.full_like(totals, float("nan")))
