"""An epoch's running statistics: sums kept in the training state, so a run resumed mid-epoch
(with any number of processes) reports the same epoch figures."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["empty_stats", "merge_stats", "all_reduce_stats"]


def empty_stats() -> dict[str, Any]:
    # "correct" is classification's statistic; the key names are those of earlier checkpoints.
    return {"loss": 0.0, "correct": 0, "n": 0}


def merge_stats(stats: dict[str, Any], sums: dict[str, torch.Tensor], seen: int) -> dict[str, Any]:
    """``stats`` plus one stretch of batches' summed tensors and its image count."""
    out = dict(stats)
    for k, v in sums.items():
        out[k] = out.get(k, 0) + (float(v) if v.is_floating_point() else int(v))
    out["n"] = out.get("n", 0) + seen
    return out


def all_reduce_stats(stats: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The statistics summed over every rank."""
    keys = sorted(stats)
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: (float(v) if isinstance(stats[k], float) else int(v)) for k, v in zip(keys, t.tolist())}
