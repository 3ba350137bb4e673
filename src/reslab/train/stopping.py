"""How a training run stops early: Ctrl-C / SIGTERM (checkpoint first, every rank at the same
step) and a NaN/Inf loss (the last good checkpoint kept)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from ..errors import ReslabError
from .distributed import DistContext

__all__ = ["TrainingDiverged", "TrainingInterrupted", "StopFlag", "stop_signals", "should_stop", "check_finite"]


class TrainingDiverged(ReslabError):
    """The loss became NaN or Inf."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was saved; ``reslab train --resume`` continues."""


class StopFlag:
    signal: int | None = None


class stop_signals:
    """Ctrl-C / SIGTERM set a flag that the loop checks after each step (saving before it stops)."""

    def __enter__(self) -> StopFlag:
        self.flag = StopFlag()
        self.old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not in the main thread
                pass
        return self.flag

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.flag.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def should_stop(ctx: DistContext, device: torch.device, stop: StopFlag) -> bool:
    """Whether to stop after this step; under DDP every rank stops at the same step, or none does."""
    if ctx.enabled:
        flag = torch.tensor([1 if stop.signal is not None else 0], device=device)
        torch.distributed.all_reduce(flag)
        if int(flag) and stop.signal is None:
            stop.signal = signal.SIGTERM
    return stop.signal is not None


def check_finite(window: list[torch.Tensor], window_start: int, ctx: DistContext, run_dir: Path,
                 last_saved_step: int | None) -> None:
    """Raise TrainingDiverged naming the first step whose loss was NaN/Inf (on any rank)."""
    losses = torch.stack(window)
    finite = torch.isfinite(losses)
    any_bad = ~finite.all()
    if ctx.enabled:  # a NaN on one rank stops every rank at the same check
        any_bad = any_bad.to(torch.int32).reshape(1)
        torch.distributed.all_reduce(any_bad)
    if not bool(any_bad):
        return
    local = (~finite).nonzero()
    bad = window_start + (int(local[0]) if len(local) else len(window) - 1) + 1
    kept = (f"The last good checkpoint (step {last_saved_step}) is kept in {run_dir / rundir.CHECKPOINTS}. "
            if last_saved_step is not None else "No checkpoint had been saved yet. ")
    raise TrainingDiverged(f"loss became {float(losses[~finite][0]) if len(local) else 'nan'} at step {bad}; "
                           f"training stopped. {kept}Lower --lr or set --grad-clip.")
