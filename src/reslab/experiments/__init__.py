"""The ResNet paper's experiments, one command each: ``reslab reproduce EXPERIMENT``.

- ``degradation``: plain vs residual nets of growing depth (Sec. 4.2, Figure 6).
- ``shortcuts``: shortcut options A, B, C (Sec. 3.3 / 4.1, Table 3) on CIFAR-scale ResNets.
- ``depth``: ResNet-20 ... 1202, errors and parameters (Table 6).
- ``responses``: std of each 3x3 layer's response of trained nets (Figure 7).

Each writes an experiment directory (``experiment.json``, one run directory per trained net under
``runs/``, ``results.json``, ``report.md`` / ``report.html``, ``plots/``) that sets our numbers
beside the paper's and says in words whether each of the paper's findings held. ``--budget``
scales the training so an experiment keeps its shape on a CPU; rerunning reuses finished runs and
resumes unfinished ones.

Python::

    from reslab.experiments import reproduce
    reproduce("degradation", budget="cpu-5min", data="embedded", out="runs/degradation")
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ReslabError
from . import degradation, depth, shortcuts
from .budgets import BUDGETS, Budget, get_budget
from .runner import ExperimentDef, read_experiment, render_training_experiment, run_training_experiment

__all__ = ["EXPERIMENTS", "BUDGETS", "Budget", "ExperimentDef", "add_reproduce_args", "run_reproduce",
           "resolve_budget", "render_experiment", "reproduce", "get_budget"]

EXPERIMENTS: dict[str, ExperimentDef] = {e.name: e for e in (degradation.EXPERIMENT, shortcuts.EXPERIMENT,
                                                             depth.EXPERIMENT)}
NAMES = (*EXPERIMENTS, "responses")
DEFAULT_BUDGET = "auto"
CPU_BUDGET = "cpu-30min"


def _check_name(experiment: str) -> None:
    if experiment not in NAMES:
        import difflib

        close = difflib.get_close_matches(str(experiment), NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ReslabError(f"unknown experiment {experiment!r}{hint}; choose one of {', '.join(NAMES)}")


def reproduce(experiment: str, paths: Sequence[str | Path] = (), *, out: str | Path | None = None,
              budget: str = DEFAULT_BUDGET, data: str = "cifar10", data_dir: str | None = None, seeds: int = 1,
              depths: str | Sequence[int] | None = None, device: str = "auto", images: int = 500,
              checkpoint: str = "best", threads: int | None = None, dry_run: bool = False,
              command: str | None = None) -> Path:
    """Run one of the paper's experiments and write its report.

    Args:
        experiment: ``degradation``, ``shortcuts``, ``depth`` or ``responses``.
        paths: ``responses`` only: run or experiment directories to measure.
        out: the experiment directory (default ``runs/<experiment>-<budget>``, ``runs/responses``).
        budget: ``full`` (the paper's schedule), ``cpu-90min``, ``cpu-30min``, ``cpu-5min``, ``tiny``, or
            ``auto`` (the default): the budget already recorded in ``out`` when it holds this
            experiment, else ``full`` on a GPU and ``cpu-30min`` on a CPU.
        data: ``cifar10`` (default), ``imagefolder:PATH`` or ``embedded``.
        data_dir: where to look for the dataset's files first.
        seeds: runs per net; the tables then give mean ± std.
        depths: e.g. ``"20,32,56"``; default: the experiment's depths for the budget.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        images: ``responses`` only: test images measured.
        checkpoint: ``responses`` only: ``best`` or ``last`` weights.
        threads: CPU threads for torch while this runs (default: torch's, all cores). On a CPU
            shared with other jobs 1 thread can be several times faster than 2, whose threads
            wait on each other whenever one is descheduled.
        dry_run: print the runs that would be trained and stop.
        command: the command line recorded in ``experiment.json``.

    Returns:
        The path of the report (the experiment directory with ``dry_run``).
    """
    _check_name(experiment)
    if threads is None:
        return _reproduce(experiment, paths, out=out, budget=budget, data=data, data_dir=data_dir, seeds=seeds,
                          depths=depths, device=device, images=images, checkpoint=checkpoint, dry_run=dry_run,
                          command=command)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ReslabError(f"--threads must be a positive integer, got {threads!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _reproduce(experiment, paths, out=out, budget=budget, data=data, data_dir=data_dir, seeds=seeds,
                          depths=depths, device=device, images=images, checkpoint=checkpoint, dry_run=dry_run,
                          command=command)
    finally:
        torch.set_num_threads(before)


def _reproduce(experiment: str, paths: Sequence[str | Path], *, out, budget, data, data_dir, seeds, depths, device,
               images, checkpoint, dry_run, command) -> Path:
    if experiment == "responses":
        from .responses import run_responses

        if checkpoint not in ("best", "last"):
            raise ReslabError(f"--checkpoint must be best or last, got {checkpoint!r}")
        return run_responses(paths, out=out or "runs/responses", images=images, checkpoint=checkpoint,
                             device=device, command=command)
    if paths:
        raise ReslabError(f"{experiment} takes no directories (got {' '.join(map(str, paths))}); "
                          "only 'responses' measures existing runs. Use --out for the experiment directory")
    budget = resolve_budget(experiment, budget, device, out)
    return run_training_experiment(EXPERIMENTS[experiment], out=out or f"runs/{experiment}-{budget}", budget=budget,
                                   data=data, data_dir=data_dir, seeds=seeds, depths=depths, device=device,
                                   dry_run=dry_run, command=command)


def resolve_budget(experiment: str, budget: str, device: str, out: str | Path | None) -> str:
    """``auto``: the budget ``out`` was started with, else ``full`` on a GPU and ``cpu-30min`` on a CPU."""
    if budget != "auto":
        get_budget(budget)
        return budget
    if out is not None and (Path(out) / "experiment.json").is_file():
        old = read_experiment(Path(out))
        if old.get("experiment") == experiment and old.get("budget") in BUDGETS:
            print(f"budget {old['budget']} (auto: the budget {out} was started with)", flush=True)
            return str(old["budget"])
    from ..train.distributed import resolve_device

    chosen = "full" if resolve_device(device).type == "cuda" else CPU_BUDGET
    why = "a GPU: the paper's schedule" if chosen == "full" else "no GPU; --budget full for the paper's schedule"
    print(f"budget {chosen} (auto: {why})", flush=True)
    return chosen


def render_experiment(exp_dir: str | Path) -> Path:
    """Re-render an experiment directory's ``results.json``, plots and report from its runs."""
    exp_dir = Path(exp_dir)
    meta = read_experiment(exp_dir)
    name = meta.get("experiment")
    if name == "responses":
        from .responses import render_responses

        return render_responses(exp_dir)
    if name not in EXPERIMENTS:
        raise ReslabError(f"{exp_dir / 'experiment.json'} names an unknown experiment {name!r}")
    return render_training_experiment(exp_dir, EXPERIMENTS[name])


def add_reproduce_args(parser: argparse.ArgumentParser) -> None:
    """Declare ``reslab reproduce``'s arguments on ``parser``."""
    parser.add_argument("experiment", help=f"one of {', '.join(NAMES)}")
    parser.add_argument("paths", nargs="*", help="responses: run directories or experiment directories to measure")
    parser.add_argument("--data", default="cifar10",
                        help="dataset: cifar10 (default), imagefolder:PATH (a folder or .tar.gz of one), embedded")
    parser.add_argument("--data-dir", default=None, help="where to look for the dataset's files first")
    parser.add_argument("--out", default=None,
                        help="experiment directory (default runs/EXPERIMENT-BUDGET; runs/responses)")
    parser.add_argument("--budget", default=DEFAULT_BUDGET,
                        help=f"training budget, one of {', '.join(BUDGETS)}, auto (default: full on a GPU, {CPU_BUDGET} on a "
                             "CPU, or the budget --out was started with): full is the paper's 64k-iteration schedule, "
                             "the cpu-* presets shorten it for a CPU, tiny takes seconds (tests); the report states the "
                             "preset's settings")
    parser.add_argument("--seeds", type=int, default=1, help="runs per net; tables give mean ± std (default 1)")
    parser.add_argument("--depths", default=None, help="comma-separated depths, e.g. 20,32,44,56,110,1202")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--images", type=int, default=500, help="responses: test images measured (default 500)")
    parser.add_argument("--checkpoint", default="best", help="responses: best or last weights (default best)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: all cores; on a busy shared CPU 1 can be much faster)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs that would be trained, train nothing")


def run_reproduce(args: argparse.Namespace) -> int:
    """``reslab reproduce``: one call into :func:`reproduce`; prints where the report is."""
    command = "reslab reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 \
        and sys.argv[1] == "reproduce" else None
    report = reproduce(args.experiment, args.paths, out=args.out, budget=args.budget, data=args.data,
                       data_dir=args.data_dir, seeds=args.seeds, depths=args.depths, device=args.device,
                       images=args.images, checkpoint=args.checkpoint, threads=args.threads, dry_run=args.dry_run,
                       command=command)
    if not args.dry_run:
        print(f"report: {report}")
        _print_findings(Path(report).parent)
    return 0


def _print_findings(exp_dir: Path) -> None:
    import json

    try:
        results = json.loads((exp_dir / "results.json").read_text())
    except (OSError, ValueError):
        return
    for f in results.get("findings", []):
        verdict = {True: "yes", False: "no", None: "not tested"}[f.get("held")]
        print(f"  {f['claim']}: {verdict} ({f['detail']})")
