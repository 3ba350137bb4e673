"""`reslab demo`: the main job. Offline, minutes on a laptop CPU: a plain net and its residual twin
of the same depth trained with the short CPU recipe on the embedded Fashion-MNIST subset, and a
report that sets their curves side by side (the shape of the paper's Figure 6)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import rundir
from ._table import format_table
from .config import make_config
from .errors import ReslabError
from .models import list_models
from .report import render_comparison, render_run_report
from .train import train_or_reuse

__all__ = ["run_demo", "DemoResult"]


@dataclass
class DemoResult:
    out: Path
    runs: dict[str, Path]
    report: Path
    wall_time: float
    summary: str


def run_demo(out: str | Path = "runs/demo", *, depth: int = 20, epochs: int = 8, data: str = "embedded",
             device: str = "auto", recipe: str = "short_cpu") -> DemoResult:
    """Train plain{depth} and resnet{depth} and write ``out/report.md`` comparing them.

    Args:
        depth: a CIFAR-style depth 6n+2 that has both a plain and a residual registration.
        epochs: epochs per network (the short CPU recipe's one-cycle schedule adapts to it).
    """
    names = {"plain": f"plain{depth}", "ResNet": f"resnet{depth}"}
    missing = [n for n in names.values() if n not in list_models()]
    if missing:
        raise ReslabError(f"no {' or '.join(missing)}: --depth must be one of 20, 32, 44, 56, 110")
    out = Path(out)
    t0 = time.time()
    runs = {}
    for group, model in names.items():
        cfg = make_config(recipe=recipe, model=model, data=data, epochs=epochs, device=device, name=model, log_every=10)
        run_dir = out / model
        print(f"training {model} on {data} ({epochs} epochs) -> {run_dir}", flush=True)
        if train_or_reuse(cfg, run_dir) != "reused":
            render_run_report(run_dir)
        runs[group] = run_dir
    wall = time.time() - t0
    rows = []
    for run_dir in runs.values():
        ep, test, end = (rundir.last_record(run_dir, e) for e in ("epoch", "test", "end"))
        rows.append([run_dir.name, f"{ep.get('train_err', float('nan')):.2f}", f"{ep.get('val_err', float('nan')):.2f}",
                     f"{test.get('top1_err', float('nan')):.2f}", f"{end.get('wall_time', 0):.0f}s"])
    table = format_table(["model", "train err %", "val err %", "test err %", "time"], rows)
    plain_tr, res_tr = float(rows[0][1]), float(rows[1][1])
    verdict = (f"The residual net ends with {'lower' if res_tr < plain_tr else 'higher'} training error than its plain "
               f"twin ({res_tr:.2f}% vs {plain_tr:.2f}%).")
    intro = (f"Plain and residual networks of depth {depth} (He et al. 2015, Sec. 4.2 architecture), trained for "
             f"{epochs} epochs each with the `{recipe}` recipe on `{data}`; thin dashed lines: training error, "
             f"bold lines: validation error (as in the paper's Figure 6).\n\n{verdict}")
    report = render_comparison([runs["plain"], runs["ResNet"]], out, title=f"reslab demo: plain-{depth} vs ResNet-{depth}",
                               groups={"plain": [runs["plain"]], "ResNet": [runs["ResNet"]]}, intro=intro)
    summary = f"{table}\n{verdict}\nreport: {report}  (wall time {wall:.0f}s)"
    return DemoResult(out, runs, Path(report), wall, summary)
