"""What a training run tells the user: ``metrics.jsonl`` (and TensorBoard), the progress bar,
and ``env.json``."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch

from .. import rundir
from .._version import __version__
from ..config import RunConfig
from ..precision import Precision
from .distributed import DistContext

__all__ = ["MetricsWriter", "Progress", "env_info", "log_stream"]

log = logging.getLogger(__name__)
log_stream: TextIO = sys.stderr


class MetricsWriter:
    """``metrics.jsonl`` (append, one JSON object per line, flushed) and TensorBoard when installed.
    Only rank 0 writes (``enabled``)."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.file = open(run_dir / rundir.METRICS, "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("reslab: note: tensorboard is not installed, so only metrics.jsonl is written "
                      "(pip install tensorboard, or --set tensorboard=false to silence this)", file=log_stream)
            else:
                self.tb = SummaryWriter(str(run_dir / rundir.TENSORBOARD))

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            prefix = record["event"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "event"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None


class Progress:
    """A progress bar with ETA and live loss/error (rich), refreshed at most twice a second so it
    costs nothing measurable; plain one-line epoch summaries when stderr is not a terminal."""

    def __init__(self, enabled: bool, total_steps: int) -> None:
        self.bar: Any = None
        self.last = 0.0
        if enabled and log_stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                                    console=Console(file=log_stream), auto_refresh=False, transient=False)
            self.task = self.bar.add_task("train", total=total_steps, stats="")
            self.bar.start()

    def update(self, step: int, description: str, stats: str, force: bool = False) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if force or now - self.last > 0.5:
            self.bar.update(self.task, completed=step, description=description, stats=stats)
            self.bar.refresh()
            self.last = now

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, highlight=False)
        else:
            print(line, file=log_stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(device: torch.device, cfg: RunConfig, ctx: DistContext, params: int,
             precision: Precision | None = None) -> dict[str, Any]:
    """What ``env.json`` records: versions, device, threads, processes, seed, git commit, and the
    precision ``amp`` resolved to here (with why)."""
    info = {
        "reslab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "world_size": ctx.world_size, "seed": cfg.seed,
        "deterministic": cfg.deterministic, "git_commit": _git_commit(), "params": params,
    }
    if precision is not None:
        info["precision"], info["precision_reason"] = precision.name, precision.reason
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
