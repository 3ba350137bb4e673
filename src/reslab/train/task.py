"""The Task interface: what ``fit`` needs to know about a kind of problem.

``fit`` is one loop for every task. A task supplies the loss, the running statistics the loop
accumulates over an epoch, validation for model selection and the final test; segmentation,
detection and restoration become new implementations of this interface, never branches in
``fit``. Classification (:class:`reslab.train.classify.ClassifyTask`) was the first; semantic
segmentation (:class:`reslab.train.segment.SegmentTask`) the second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..config import RunConfig
from ..data import DatasetSplits
from .distributed import DistContext

__all__ = ["Task", "EvalContext", "call_net"]


class EvalContext(Protocol):
    """What evaluation needs from the running fit: where, in what precision, on which rank."""

    cfg: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    ctx: DistContext


def call_net(net: nn.Module, x: Any, y: Any) -> Any:
    """The network's output for a batch: ``net(x)`` (what most tasks' ``forward`` is)."""
    return net(x)


class Task(Protocol):
    """One kind of problem, as the training loop sees it.

    Epoch statistics are a dict of running sums (``{"loss": ..., "n": ..., ...}``) kept in the
    training state, so a run resumed mid-epoch reports the same epoch figures.
    """

    name: str
    selection_metric: str
    """The validation record key that chooses the best checkpoint (lower is better)."""

    def forward(self, net: nn.Module, x: Any, y: Any) -> Any:
        """The training-mode output for a batch: ``net(x)`` (:func:`call_net`), or ``net(x, y)`` for a
        detector, which computes its losses from the targets."""
        ...

    def loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, the main prediction for the running statistics)."""
        ...

    def batch_stats(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sums over one batch to add to the epoch statistics (beyond ``loss`` and ``n``)."""
        ...

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        """Epoch record fields from the summed statistics, e.g. ``train_loss``, ``train_err``."""
        ...

    def running_error(self, stats: dict[str, Any]) -> float | None:
        """A training error in percent for schedules that watch it (the paper's ResNet-110 warm-up)."""
        ...

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        """Validation record fields, e.g. ``val_loss``, ``val_err``; must include ``selection_metric``."""
        ...

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        """Evaluate ``checkpoint`` on the test split once; returns the ``test`` record for metrics.jsonl."""
        ...

    def summary(self, record: dict[str, Any]) -> str:
        """One line for the terminal from the ``test`` record."""
        ...
