"""`reslab demo`: the main job. Offline, minutes on a laptop CPU: a plain net and its residual twin
of the same depth trained with the short CPU recipe on the embedded Fashion-MNIST subset, and a
report that draws their curves overlaid and side by side (the shape of the paper's Figure 6).

Reproducibility: every batch, its augmentation and the initial weights are pure functions of the
seed, and CPU training in fp32 runs the same kernels in the same order given the same thread
count, so rerunning the demo on one machine reproduces its numbers bit for bit (measured: equal
losses at every step and equal weights). Another CPU or thread count sums in another order (one
vs two threads part at the second step); the rounding differences grow over training, and over
a few epochs they can move the final errors by several points. The summary says so, and
``seeds > 1`` prints the spread over seeds (mean ± standard deviation).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import rundir
from ._table import format_table
from .config import RunConfig, make_config
from .errors import ReslabError
from .models import list_models
from .report import render_comparison, render_run_report
from .train import train_or_reuse

__all__ = ["run_demo", "DemoResult", "DEFAULT_DEPTH", "DEFAULT_EPOCHS"]

# Chosen by measurement on the embedded data (2-core CPU, seed 0, README's demo section): depth 20
# barely separates the two nets in 8 epochs (training error 21.5 vs 17.1 %) and depth 32 not at all
# in 6 (26.0 vs 25.3 %); depth 56 in 4 epochs leaves both at 48-68 %, which one ahead depending on
# the thread count. Depth 44 in 5 epochs, about the time of 56 in 4, shows the plain net's higher
# training error (39.0 vs 27.6 %).
DEFAULT_DEPTH = 44
DEFAULT_EPOCHS = 5
_SAME_RUN = ("model", "data", "recipe", "epochs", "seed")  # what a reused run directory must match


@dataclass
class DemoResult:
    """What :func:`run_demo` made: ``runs`` maps "plain" / "ResNet" to their run directories (one per seed)."""

    out: Path
    runs: dict[str, list[Path]]
    report: Path
    wall_time: float
    summary: str
    errors: dict[str, dict[str, list[float]]]  # group -> {"train_err", "val_err", "test_err"} -> one per seed


def run_demo(out: str | Path = "runs/demo", *, depth: int = DEFAULT_DEPTH, epochs: int = DEFAULT_EPOCHS,
             seeds: int = 1, data: str = "embedded", device: str = "auto", recipe: str = "short_cpu") -> DemoResult:
    """Train plain{depth} and resnet{depth} and write ``out/report.md`` comparing them.

    Each run goes to ``out/<model>-seed<k>``; a finished one with the same settings is reused, so
    rerunning the command only re-renders the report.

    Args:
        out: the demo's directory.
        depth: a CIFAR-style depth 6n+2 that has both a plain and a residual registration.
        epochs: epochs per network (the short CPU recipe's one-cycle schedule adapts to it).
        seeds: train each net with seeds 0 .. seeds-1 and report mean ± standard deviation.
        data: the dataset (default the embedded subset, shipped with reslab).
        device: "auto", "cpu", "cuda" or "cuda:N".
        recipe: the training recipe.
    """
    names = {"plain": f"plain{depth}", "ResNet": f"resnet{depth}"}
    missing = [n for n in names.values() if n not in list_models()]
    if missing:
        raise ReslabError(f"no {' or '.join(missing)}: --depth must be one of 20, 32, 44, 56, 110")
    if seeds < 1:
        raise ReslabError(f"--seeds must be at least 1, got {seeds}")
    out = Path(out)
    t0 = time.time()
    runs: dict[str, list[Path]] = {group: [] for group in names}
    for seed in range(seeds):
        for group, model in names.items():
            run_dir = out / f"{model}-seed{seed}"
            cfg = make_config(recipe=recipe, model=model, data=data, epochs=epochs, device=device, seed=seed,
                              name=run_dir.name, log_every=5)
            _check_same_settings(run_dir, cfg)
            print(f"training {model} (seed {seed}) on {data} ({epochs} epochs) -> {run_dir}", flush=True)
            if train_or_reuse(cfg, run_dir) != "reused" or not (run_dir / rundir.REPORT_MD).is_file():
                render_run_report(run_dir)
            runs[group].append(run_dir)
    wall = time.time() - t0

    errors = {group: _errors(dirs) for group, dirs in runs.items()}
    rows = [[names[g], *(_mean_spread(errors[g][k]) for k in ("train_err", "val_err", "test_err")),
             f"{statistics.fmean(_wall(d) for d in runs[g]):.0f}s"] for g in names]
    spread = " (mean ± std over seeds)" if seeds > 1 else ""
    table = format_table([f"model{spread}", "train err %", "val err %", "test err %", "time"], rows)
    plain_tr, res_tr = (statistics.fmean(errors[g]["train_err"]) for g in names)
    verdict = (f"The residual net ends with {'lower' if res_tr < plain_tr else 'higher'} training error than its plain "
               f"twin ({res_tr:.2f}% vs {plain_tr:.2f}%)" + (f", averaged over {seeds} seeds." if seeds > 1 else "."))
    threads = torch.get_num_threads()
    on_cpu = all(_device(d) == "cpu" for g in names for d in runs[g])
    where = (f"on {threads} CPU thread{'s' if threads != 1 else ''}: rerunning on this machine reproduces these numbers "
             "exactly" if on_cpu else "on a GPU, where cuDNN chooses kernels by timing: reruns differ slightly")
    note = (f"Seed{'s' if seeds > 1 else ''} {', '.join(map(str, range(seeds)))} {where}. Another CPU, GPU or "
            "thread count rounds differently, and over a run this short that can move the final errors by several "
            "points" + (" (the spread above)." if seeds > 1 else " (--seeds 3 prints the spread over seeds)."))
    intro = (f"Plain and residual networks of depth {depth} (He et al. 2015, Sec. 4.2 architecture), trained for "
             f"{epochs} epochs each with the `{recipe}` recipe on `{data}`. Left: both overlaid (one colour per "
             f"net); right: side by side. Thin dashed lines: training error, bold lines: validation error (as in "
             f"the paper's Figure 6).\n\n{verdict}\n\n{note}")
    all_runs = [d for g in names for d in runs[g]]
    report = render_comparison(all_runs, out, title=f"reslab demo: plain-{depth} vs ResNet-{depth}",
                               groups={"plain": runs["plain"], "ResNet": runs["ResNet"]}, intro=intro,
                               overlay=True, link_runs=True)
    summary = f"{table}\n{verdict}\n{note}\nreport: {report}  (wall time {wall:.0f}s)"
    return DemoResult(out, runs, Path(report), wall, summary, errors)


def _check_same_settings(run_dir: Path, cfg: RunConfig) -> None:
    """Refuse to reuse (or resume) a run directory that was trained with other settings."""
    if not (run_dir / rundir.CONFIG).is_file():
        return
    saved = rundir.read_config(run_dir)
    wanted = cfg.to_dict()
    differ = [f"{k} {saved.get(k)!r} (wanted {wanted[k]!r})" for k in _SAME_RUN if saved.get(k) != wanted[k]]
    if differ:
        raise ReslabError(f"{run_dir} holds a run with other settings: {', '.join(differ)}; "
                          "choose another --out or delete that directory")


def _errors(run_dirs: Sequence[Path]) -> dict[str, list[float]]:
    nan = float("nan")
    out: dict[str, list[float]] = {"train_err": [], "val_err": [], "test_err": []}
    for d in run_dirs:
        ep, test = rundir.last_record(d, "epoch"), rundir.last_record(d, "test")
        out["train_err"].append(float(ep.get("train_err", nan)))
        out["val_err"].append(float(ep.get("val_err", nan)))
        out["test_err"].append(float(test.get("top1_err", nan)))
    return out


def _device(run_dir: Path) -> str:
    env = rundir.read_run(run_dir).env
    return str(env.get("device", "cpu")).split(":")[0]


def _wall(run_dir: Path) -> float:
    return float(rundir.last_record(run_dir, "end").get("wall_time", 0.0))


def _mean_spread(values: Sequence[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {statistics.stdev(values):.2f}"
