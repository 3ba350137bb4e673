"""The ResNet paper's experiments, one command each: ``reslab reproduce EXPERIMENT``.

- ``degradation``: plain vs residual nets of growing depth (Sec. 4.2, Figure 6).
- ``shortcuts``: shortcut options A, B, C (Sec. 3.3 / 4.1, Table 3) on CIFAR-scale ResNets.
- ``depth``: ResNet-20 ... 1202, errors and parameters (Table 6).
- ``responses``: std of each 3x3 layer's response of trained nets (Figure 7).
- ``wide-vs-deep``: WRN-16-8 against ResNet-110 (Zagoruyko & Komodakis 2016): error, parameters, time.

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

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ReslabError
from ..train.distributed import resolve_device
from . import degradation, depth, shortcuts, wide
from .base import ExperimentDef, read_experiment
from .budgets import BUDGETS, Budget, get_budget
from .responses import render_responses, run_responses
from .results import render_training_experiment
from .runner import run_training_experiment
from .transfer import DEFAULT_DETECTORS, TRANSFER_BUDGETS, render_transfer, run_transfer

__all__ = ["EXPERIMENTS", "NAMES", "BUDGETS", "Budget", "ExperimentDef", "DEFAULT_BUDGET", "CPU_BUDGET",
           "resolve_budget", "render_experiment", "reproduce", "get_budget", "findings_text"]

EXPERIMENTS: dict[str, ExperimentDef] = {e.name: e for e in (degradation.EXPERIMENT, shortcuts.EXPERIMENT,
                                                             depth.EXPERIMENT, wide.EXPERIMENT)}
NAMES = (*EXPERIMENTS, "responses", "transfer")
DEFAULT_BUDGET = "auto"
CPU_BUDGET = "cpu-30min"


def _check_name(experiment: str) -> None:
    if experiment not in NAMES:
        close = difflib.get_close_matches(str(experiment), NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ReslabError(f"unknown experiment {experiment!r}{hint}; choose one of {', '.join(NAMES)}")


def reproduce(experiment: str, paths: Sequence[str | Path] = (), *, out: str | Path | None = None,
              budget: str = DEFAULT_BUDGET, data: str = "cifar10", data_dir: str | None = None, seeds: int = 1,
              depths: str | Sequence[int] | None = None, device: str = "auto", images: int = 500,
              checkpoint: str = "best", threads: int | None = None, dry_run: bool = False,
              command: str | None = None, pretrain_data: str = "cifar10",
              detectors: str | Sequence[str] | None = None) -> Path:
    """Run one of the paper's experiments and write its report.

    Args:
        experiment: ``degradation``, ``shortcuts``, ``depth``, ``wide-vs-deep``, ``responses`` or ``transfer``.
        paths: ``responses``: run or experiment directories to measure; ``transfer``: at most one
            classifier run whose backbone the detectors start from (default: one trained here on
            ``pretrain_data``).
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
        pretrain_data: ``transfer``: the classification data its backbone pretrains on.
        detectors: ``transfer``: detector names (a list or ``"a,b"``; default
            :data:`~reslab.experiments.transfer.DEFAULT_DETECTORS`); ``data`` is then the detection data
            (default ``pennfudan``).

    Returns:
        The path of the report (the experiment directory with ``dry_run``).
    """
    _check_name(experiment)
    if experiment == "transfer":
        kw = dict(pretrain_data=pretrain_data, detectors=detectors)
    elif detectors is not None:
        raise ReslabError(f"--detectors applies to the transfer experiment, not {experiment}")
    else:
        kw = {}
    if threads is None:
        return _reproduce(experiment, paths, out=out, budget=budget, data=data, data_dir=data_dir, seeds=seeds,
                          depths=depths, device=device, images=images, checkpoint=checkpoint, dry_run=dry_run,
                          command=command, **kw)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ReslabError(f"--threads must be a positive integer, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _reproduce(experiment, paths, out=out, budget=budget, data=data, data_dir=data_dir, seeds=seeds,
                          depths=depths, device=device, images=images, checkpoint=checkpoint, dry_run=dry_run,
                          command=command, **kw)
    finally:
        torch.set_num_threads(before)


def _reproduce(experiment: str, paths: Sequence[str | Path], *, out, budget, data, data_dir, seeds, depths, device,
               images, checkpoint, dry_run, command, pretrain_data="cifar10", detectors=None) -> Path:
    if experiment == "transfer":
        return _transfer(paths, out=out, budget=budget, data=data, data_dir=data_dir, seeds=seeds, device=device,
                         dry_run=dry_run, command=command, pretrain_data=pretrain_data, detectors=detectors)
    if experiment == "responses":
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


def _transfer(paths: Sequence[str | Path], *, out, budget, data, data_dir, seeds, device, dry_run, command, pretrain_data,
              detectors) -> Path:
    if len(paths) > 1:
        raise ReslabError(f"transfer takes at most one classifier run (the pretrained backbone), got {len(paths)}")
    if seeds != 1:
        raise ReslabError("transfer trains one seed of each run; drop --seeds")
    if budget == "auto":
        budget = "full" if resolve_device(device).type == "cuda" else "cpu-60min"
        print(f"budget {budget} (auto: {'a GPU' if budget == 'full' else 'no GPU; --budget full for the long one'})",
              flush=True)
    elif budget not in TRANSFER_BUDGETS:
        raise ReslabError(f"unknown budget {budget!r} for transfer; choose one of {', '.join(TRANSFER_BUDGETS)}")
    names = tuple(d.strip() for d in detectors.split(",") if d.strip()) if isinstance(detectors, str) else \
        tuple(detectors or DEFAULT_DETECTORS)
    return run_transfer(out=out or f"runs/transfer-{budget}", data=data if data != "cifar10" else "pennfudan",
                        pretrained=paths[0] if paths else None, pretrain_data=pretrain_data, detectors=names,
                        budget=budget, data_dir=data_dir, device=device, dry_run=dry_run, command=command)


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
    chosen = "full" if resolve_device(device).type == "cuda" else CPU_BUDGET
    why = "a GPU: the paper's schedule" if chosen == "full" else "no GPU; --budget full for the paper's schedule"
    print(f"budget {chosen} (auto: {why})", flush=True)
    return chosen


def render_experiment(exp_dir: str | Path) -> Path:
    """Re-render an experiment directory's ``results.json``, plots and report from its runs."""
    exp_dir = Path(exp_dir)
    meta = read_experiment(exp_dir)
    name = meta.get("experiment")
    if name == "transfer":
        return render_transfer(exp_dir)
    if name == "responses":
        return render_responses(exp_dir)
    if name not in EXPERIMENTS:
        raise ReslabError(f"{exp_dir / 'experiment.json'} names an unknown experiment {name!r}")
    return render_training_experiment(exp_dir, EXPERIMENTS[name])


def findings_text(report: str | Path) -> str:
    """The findings of the experiment whose report is ``report``, one line each ("" when none)."""
    try:
        results = json.loads((Path(report).parent / "results.json").read_text())
    except (OSError, ValueError):
        return ""
    lines = []
    for f in results.get("findings", []):
        verdict = {True: "yes", False: "no", None: "not tested"}[f.get("held")]
        lines.append(f"  {f['claim']}: {verdict} ({f['detail']})")
    return "\n".join(lines)
