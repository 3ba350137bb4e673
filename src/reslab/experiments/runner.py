"""Running a training experiment: one run directory per (net, seed), finished runs reused and
unfinished ones resumed (the rules of :func:`reslab.train.train_or_reuse`), ``experiment.json``.

An experiment directory looks like::

    EXP/experiment.json      what was asked: experiment, budget, data, seeds, depths, the runs
    EXP/runs/<net>-seed<k>/  one ordinary run directory per trained net (reslab report works on it)
    EXP/results.json         numbers read back from the runs, aggregated per net, the paper's beside
    EXP/report.md, .html     tables, figures and the findings in words
    EXP/plots/*.png

Everything but the run directories is re-rendered from them by :func:`render_training_experiment`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import rundir
from .._version import __version__
from ..config import RUNTIME_KEYS, RunConfig, make_config
from ..data import DatasetSplits, canonical_data_name
from ..errors import ReslabError
from ..io import atomic_write_text
from ..report import render_run_report
from ..train import TrainingDiverged, train_or_reuse
from .base import ExperimentDef, Net, check_seeds, now_iso, parse_depths, portable_command, read_experiment
from .budgets import Budget, get_budget, prepare_data
from .results import render_training_experiment

__all__ = ["run_training_experiment"]


def _write_experiment(exp_dir: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(exp_dir / "experiment.json", json.dumps(meta, indent=2) + "\n")


def _run_name(net: Net, seed: int) -> str:
    return f"{net.name}-seed{seed}"


def _config_for(net: Net, seed: int, budget: Budget, data: str, data_dir: str | None, device: str) -> RunConfig:
    return make_config(recipe=budget.recipe, model=net.model, model_args=dict(net.model_args), data=data,
                       data_dir=data_dir, seed=seed, device=device, name=_run_name(net, seed),
                       val_size=budget.val_size, **budget.overrides)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    # Through YAML both ways, so tuples and lists compare equal.
    flat = yaml.safe_load(yaml.safe_dump(cfg))
    return {k: v for k, v in flat.items() if k not in RUNTIME_KEYS}


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    if not (run_dir / rundir.CONFIG).is_file():
        return
    want, have = _comparable(cfg.to_dict()), _comparable(make_config(rundir.read_config(run_dir)).to_dict())
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        k = diff[0]
        raise ReslabError(f"{run_dir} was trained with {k}={have.get(k)!r}, this experiment asks for {want.get(k)!r}; "
                          "rerun with the same --budget and --data, or choose another --out")


def _train_or_reuse(cfg: RunConfig, run_dir: Path, data: DatasetSplits | None) -> str:
    """"reused", "resumed" or "trained"; a diverging net is a result (the report shows it), not a
    reason to stop the others."""
    try:
        what = train_or_reuse(cfg, run_dir, data=data)
    except TrainingDiverged as e:
        print(f"{run_dir.name}: {e}", file=sys.stderr, flush=True)
        what = "resumed" if rundir.state_file(run_dir).is_file() else "trained"
    if what != "reused":
        render_run_report(run_dir)
    return what


def portable_data_name(name: str, exp_dir: Path) -> str:
    """``name`` as an experiment records it: an image folder inside the experiment directory relative
    to it, any other name as given (never resolved to this machine's absolute path)."""
    canonical = canonical_data_name(name)
    prefix, colon, path = canonical.partition(":")
    if colon and canonical != name:
        try:
            return f"{prefix}:{Path(path).relative_to(exp_dir.absolute())}"
        except ValueError:
            return name
    return name


def _data_from(recorded: str, exp_dir: Path) -> str:
    """The canonical name of a dataset recorded by :func:`portable_data_name`."""
    prefix, colon, path = recorded.partition(":")
    if colon and path and not Path(path).expanduser().is_absolute() and (exp_dir / path).exists():
        return canonical_data_name(f"{prefix}:{exp_dir / path}")
    return canonical_data_name(recorded)


# -- running ------------------------------------------------------------------------------------------
def run_training_experiment(exp: ExperimentDef, *, out: str | Path, budget: str = "cpu-30min", data: str = "cifar10",
                            data_dir: str | None = None, seeds: int = 1, depths: str | Sequence[int] | None = None,
                            device: str = "auto", dry_run: bool = False, command: str | None = None) -> Path:
    """Train every (net, seed) of ``exp`` that is not finished yet, then write the report.

    Args:
        exp: the experiment.
        out: the experiment directory (created; an earlier run of the same experiment there is
            continued: finished runs are reused, unfinished ones resumed).
        budget: a preset name from :data:`reslab.experiments.budgets.BUDGETS`.
        data: a dataset name for :func:`reslab.data.load_dataset`.
        data_dir: where to look for the dataset's files first.
        seeds: runs per net (seeds 0 .. seeds-1); the tables give mean ± std.
        depths: the depths to run, e.g. ``"20,32,56"`` (default: the experiment's for the budget).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        dry_run: print the plan and return without training.
        command: the command line recorded in ``experiment.json``.

    Returns:
        The path of ``report.md`` (of the experiment directory when ``dry_run``).
    """
    b = get_budget(budget)
    depth_list = parse_depths(depths, exp, b)
    n_seeds = check_seeds(seeds)
    if not isinstance(data, str) or not data.strip():
        raise ReslabError("--data must name a dataset, e.g. cifar10, embedded or imagefolder:PATH")
    exp_dir = Path(out)
    shown = portable_data_name(data.strip(), exp_dir)  # what experiment.json and the report say
    data = canonical_data_name(data.strip())  # what the runs load: an image folder by absolute path
    nets = exp.nets(depth_list)
    plan = [(net, seed) for seed in range(n_seeds) for net in nets]
    configs = {(net.name, seed): _config_for(net, seed, b, data, data_dir, device) for net, seed in plan}

    old = read_experiment(exp_dir) if (exp_dir / "experiment.json").is_file() else None
    if old is not None:
        for key, want in (("experiment", exp.name), ("budget", b.name), ("data", data)):
            have = old.get(key)
            if key == "data" and isinstance(have, str) and want in (have, _data_from(have, exp_dir)):
                continue
            if have != want:
                raise ReslabError(f"{exp_dir} holds a {old.get('experiment')} experiment with budget {old.get('budget')} "
                                  f"on {old.get('data')}; this asks for {key} {want}: choose another --out")
    elif exp_dir.exists() and any(p.name != rundir.LOCK for p in exp_dir.iterdir()) and not dry_run:
        raise ReslabError(f"{exp_dir} exists and is not an experiment directory; choose an empty or new --out")
    for net, seed in plan:
        _check_same_config(exp_dir / "runs" / _run_name(net, seed), configs[(net.name, seed)])

    runs = [{"name": _run_name(net, seed), "net": net.name, "model": net.model, "model_args": dict(net.model_args),
             "group": net.group, "depth": net.depth, "seed": seed, "path": f"runs/{_run_name(net, seed)}"}
            for net, seed in plan]
    print(f"{exp.name}: {len(nets)} nets x {n_seeds} seed(s) = {len(plan)} runs, budget {b.name} ({b.summary}), "
          f"data {shown} -> {exp_dir}", flush=True)
    if dry_run:
        for r in runs:
            state = rundir.run_status(exp_dir / r["path"]) or ("unfinished" if (exp_dir / r["path"]).exists() else "new")
            print(f"  {r['name']:24s} {r['model']} {r['model_args'] or ''} [{state}]")
        return exp_dir

    meta = dict(old or {})
    meta.update({"experiment": exp.name, "title": exp.title, "source": exp.source, "budget": b.name,
                 "budget_settings": b.settings(), "data": shown, "seeds": n_seeds,
                 "data_dir": os.path.relpath(data_dir) if data_dir and os.path.isabs(data_dir) else data_dir,
                 "depths": list(depth_list), "device": device, "runs": runs,
                 "command": portable_command(command or _default_command(exp.name, b.name, shown, n_seeds, depth_list,
                                                                          exp_dir))})
    meta.setdefault("created", now_iso())
    meta.setdefault("sessions", [])
    meta["reslab"] = __version__
    session: dict[str, Any] = {"started": now_iso(), "wall_time": None, "threads": torch.get_num_threads(),
                               "trained": [], "resumed": [], "reused": []}
    meta["sessions"].append(session)
    exp_lock = rundir.lock(exp_dir)  # one reproduce per experiment directory at a time

    cache: dict[str, Any] = {}

    def data_fn():
        if "splits" not in cache:
            t = time.time()
            cache["splits"] = prepare_data(data, data_dir, b)
            meta["data_counts"] = cache["splits"].info["counts"]
            meta["data_counts_available"] = cache["splits"].info.get("counts_available")
            meta["data_load_time"] = round(time.time() - t, 3)
            print(f"data: {cache['splits']!r} (cut to the budget) in {time.time() - t:.0f}s", flush=True)
        return cache["splits"]

    t0 = time.time()
    try:
        _write_experiment(exp_dir, meta)
        for i, (net, seed) in enumerate(plan, 1):
            run_dir = exp_dir / "runs" / _run_name(net, seed)
            if rundir.reuse_decision(run_dir) != "reuse":
                print(f"[{i}/{len(plan)}] {'resuming' if run_dir.exists() else 'training'} {run_dir.name} "
                      f"({net.model}{' ' + str(net.model_args) if net.model_args else ''})", flush=True)
            what = _train_or_reuse(configs[(net.name, seed)], run_dir,
                                   None if rundir.reuse_decision(run_dir) == "reuse" else data_fn())
            session[what].append(run_dir.name)
    finally:
        session["wall_time"] = round(time.time() - t0, 3)
        _write_experiment(exp_dir, meta)
        exp_lock.release()
    return render_training_experiment(exp_dir, exp)


def _default_command(name: str, budget: str, data: str, seeds: int, depths: Sequence[int], out: Path) -> str:
    args = ["reslab", "reproduce", name, "--budget", budget, "--data", data, "--seeds", str(seeds),
            "--depths", ",".join(map(str, depths)), "--out", str(out)]
    return shlex.join(args)


