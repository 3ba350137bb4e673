"""Training: the one fit() loop, its task interface, checkpoints, schedules, and the rule for
training into a run directory that may already hold a run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from .. import rundir
from ..config import RunConfig, list_recipes, load_recipe, make_config, resolve_config
from ..data import DatasetSplits
from .loop import FitResult, TrainingDiverged, TrainingInterrupted, fit

__all__ = ["RunConfig", "list_recipes", "load_recipe", "make_config", "resolve_config", "fit", "FitResult",
           "TrainingDiverged", "TrainingInterrupted", "train_or_reuse"]


def train_or_reuse(cfg: RunConfig, run_dir: str | Path, *, data: DatasetSplits | None = None
                   ) -> Literal["reused", "resumed", "trained"]:
    """Train ``cfg`` into ``run_dir`` unless it is done: the rules of :func:`reslab.rundir.reuse_decision`.

    A finished (or diverged) run is reused as it is, an unfinished one with a checkpoint resumed,
    anything else (a run stopped before its first checkpoint) cleared and trained afresh.
    :class:`TrainingDiverged` propagates: callers decide whether a NaN stops them.
    """
    run_dir = Path(run_dir)
    decision = rundir.reuse_decision(run_dir)
    if decision == "reuse":
        return "reused"
    if decision == "fresh" and ((run_dir / rundir.CONFIG).is_file() or (run_dir / rundir.METRICS).is_file()):
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing in it is worth keeping
    fit(cfg, run_dir, resume=decision == "resume", data=data)
    return "resumed" if decision == "resume" else "trained"
