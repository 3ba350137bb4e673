"""What every training experiment shares: its nets as data, one run directory per (net, seed),
reuse of finished runs, ``experiment.json``, results gathered from the runs, and the report.

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
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..errors import ReslabError
from ..io import atomic_write_text
from .budgets import Budget, get_budget, prepare_data

__all__ = ["Net", "ExperimentDef", "Finding", "Stat", "RunResult", "NetResult", "Summary", "run_training_experiment",
           "render_training_experiment", "read_experiment", "md_table", "fmt_stat"]

# Config keys that do not change what a run computes: a finished run is reused whatever they are.
_IGNORED_KEYS = frozenset({"device", "data_dir", "progress", "tensorboard", "num_workers", "name"})


@dataclass(frozen=True)
class Net:
    """One network of an experiment, trained once per seed.

    Args:
        name: the row name and run-directory stem, e.g. ``plain56`` or ``resnet20-B``.
        model: the registry name.
        group: the panel / family it belongs to, e.g. ``plain`` or ``option B``.
        depth: weighted layers, as the paper counts them.
        model_args: ``create_model`` overrides, e.g. ``{"shortcut": "B"}``.
    """

    name: str
    model: str
    group: str
    depth: int
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finding:
    """A qualitative claim of the paper and whether our runs show it (None: not testable here)."""

    claim: str
    held: bool | None
    detail: str

    def markdown(self) -> str:
        verdict = {True: "**yes**", False: "**no**", None: "**not tested**"}[self.held]
        return f"- {self.claim}: {verdict} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "held": self.held, "detail": self.detail}


@dataclass
class Stat:
    """Mean and sample std over seeds (std is None for one seed)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat":
        xs = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return cls(None, None, 0)
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def fmt_stat(s: Stat, spec: str = ".2f") -> str:
    """``8.12`` for one seed, ``8.12 ± 0.31`` for several, an em dash for none."""
    if s.mean is None:
        return "—"
    return format(s.mean, spec) + (f" ± {format(s.std, spec)}" if s.std is not None else "")


@dataclass
class RunResult:
    """One run's figures, read from its ``metrics.jsonl``."""

    name: str
    net: str
    seed: int
    path: str
    status: str
    params: int | None
    train_err: float | None  # the last epoch's training error (running error over that epoch)
    val_err: float | None  # the best validation error (model selection)
    final_val_err: float | None  # the last epoch's validation error
    test_err: float | None  # top-1 test error of the selected checkpoint
    epochs: int
    steps: int
    wall_time: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class NetResult:
    net: Net
    runs: list[RunResult]

    def stat(self, key: str) -> Stat:
        return Stat.of([getattr(r, key) for r in self.runs if r.status == "finished"])

    @property
    def params(self) -> int | None:
        return next((r.params for r in self.runs if r.params is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.net.name, "model": self.net.model, "model_args": dict(self.net.model_args),
                "group": self.net.group, "depth": self.net.depth, "params": self.params,
                **{k: self.stat(k).to_dict() for k in ("train_err", "val_err", "final_val_err", "test_err")},
                "runs": [r.to_dict() for r in self.runs]}


@dataclass
class Summary:
    """An experiment's nets with their results, and what ``experiment.json`` says."""

    exp_dir: Path
    meta: dict[str, Any]
    nets: list[NetResult]

    def by_name(self) -> dict[str, NetResult]:
        return {n.net.name: n for n in self.nets}

    def seed0_runs(self, nets: Sequence[NetResult]) -> list[Path]:
        """Each net's first run: the curves drawn in the figures (one per net keeps them legible)."""
        return [self.exp_dir / n.runs[0].path for n in nets if n.runs]


@dataclass
class Analysis:
    """What an experiment adds to the common report."""

    findings: list[Finding]
    table: str  # markdown: our numbers beside the paper's, placed before the findings
    groups: dict[str, list[Path]]  # figure panels
    sections: list[tuple[str, str]]  # (heading, markdown) after the figure
    paper: dict[str, Any]  # the paper's numbers used, for results.json
    verdict: str = ""  # a paragraph after the findings: what the findings add up to


@dataclass(frozen=True)
class ExperimentDef:
    """A training experiment as data.

    Args:
        name: the ``reslab reproduce`` name.
        title: the report heading.
        source: where in the paper it comes from.
        about: one paragraph for the report's introduction.
        valid_depths: the depths ``--depths`` may name.
        default_depths: the depths run when ``--depths`` is not given, per budget.
        nets: the nets for a list of depths.
        analyse: findings, figure panels and extra sections from the results.
    """

    name: str
    title: str
    source: str
    about: str
    valid_depths: tuple[int, ...]
    default_depths: Callable[[Budget], tuple[int, ...]]
    nets: Callable[[Sequence[int]], list[Net]]
    analyse: Callable[[Summary], Analysis]


# -- input checks -------------------------------------------------------------------------------------
def parse_depths(text: str | Sequence[int] | None, exp: ExperimentDef, budget: Budget) -> tuple[int, ...]:
    """``"20,32,56"`` -> (20, 32, 56), checked against the experiment's depths."""
    if text is None:
        return exp.default_depths(budget)
    valid = ", ".join(map(str, exp.valid_depths))
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    try:
        depths = [int(p) for p in items if p]
    except ValueError:
        raise ReslabError(f"--depths must be comma-separated integers such as 20,32,56; got {text!r}") from None
    if not depths:
        raise ReslabError(f"--depths is empty; give some of {valid}")
    bad = [d for d in depths if d not in exp.valid_depths]
    if bad:
        raise ReslabError(f"{exp.name} has no depth {', '.join(map(str, bad))}; --depths must be some of {valid}")
    if len(set(depths)) != len(depths):
        raise ReslabError(f"--depths names a depth twice: {text!r}")
    return tuple(sorted(depths))


def check_seeds(seeds: Any) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ReslabError(f"--seeds must be a positive integer (seeds per net), got {seeds!r}")
    return seeds


# -- experiment.json ----------------------------------------------------------------------------------

def read_experiment(exp_dir: Path) -> dict[str, Any]:
    path = Path(exp_dir) / "experiment.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReslabError(f"{exp_dir} is not an experiment directory (no experiment.json); give the --out of "
                          "'reslab reproduce'") from None
    except json.JSONDecodeError as e:
        raise ReslabError(f"{path} is not valid JSON ({e.msg}); restore it or rerun the experiment into a new --out") from None
    if not isinstance(meta, dict) or "experiment" not in meta:
        raise ReslabError(f"{path} does not describe an experiment (no 'experiment' key)")
    return meta


def _write_experiment(exp_dir: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(exp_dir / "experiment.json", json.dumps(meta, indent=2) + "\n")


def _run_name(net: Net, seed: int) -> str:
    return f"{net.name}-seed{seed}"


def _config_for(net: Net, seed: int, budget: Budget, data: str, data_dir: str | None, device: str):
    from ..train.config import make_config

    return make_config(recipe=budget.recipe, model=net.model, model_args=dict(net.model_args), data=data,
                       data_dir=data_dir, seed=seed, device=device, name=_run_name(net, seed),
                       val_size=budget.val_size, **budget.overrides)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    # Through YAML both ways, so tuples and lists compare equal.
    flat = yaml.safe_load(yaml.safe_dump(cfg))
    return {k: v for k, v in flat.items() if k not in _IGNORED_KEYS}


def _check_same_config(run_dir: Path, cfg) -> None:
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = yaml.safe_load(saved_file.read_text()) or {}
    except yaml.YAMLError:
        raise ReslabError(f"{saved_file} is not valid YAML; delete {run_dir} to retrain that net") from None
    want, have = _comparable(cfg.to_dict()), _comparable(saved)
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        k = diff[0]
        raise ReslabError(f"{run_dir} was trained with {k}={have.get(k)!r}, this experiment asks for {want.get(k)!r}; "
                          "rerun with the same --budget and --data, or choose another --out")


def _status(run_dir: Path) -> str | None:
    from ..demo import run_status

    return run_status(run_dir)


def _train_or_reuse(cfg, run_dir: Path, data_fn: Callable[[], Any]) -> str:
    """Train ``cfg`` into ``run_dir``: "reused" when finished (or diverged) before, "resumed" from its
    last checkpoint when unfinished, "trained" from scratch otherwise (the same rules as
    :func:`reslab.demo.train_or_reuse`, with the experiment's pre-cut data)."""
    import shutil

    from ..train.loop import TrainingDiverged, fit

    status = _status(run_dir)
    if status in ("finished", "nan"):
        return "reused"
    resume = (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.state.pt").is_file()
    if not resume and run_dir.exists():
        # Stopped before its first checkpoint: nothing in it is worth keeping.
        shutil.rmtree(run_dir)
    try:
        fit(cfg, run_dir, resume=resume, data=data_fn())
    except TrainingDiverged as e:
        # A diverging net is a result (the report shows it), not a reason to stop the others.
        print(f"{run_dir.name}: {e}", file=sys.stderr, flush=True)
    return "resumed" if resume else "trained"


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
    from ..data import canonical_data_name

    data = canonical_data_name(data.strip())
    exp_dir = Path(out)
    nets = exp.nets(depth_list)
    plan = [(net, seed) for seed in range(n_seeds) for net in nets]
    configs = {(net.name, seed): _config_for(net, seed, b, data, data_dir, device) for net, seed in plan}

    old = read_experiment(exp_dir) if (exp_dir / "experiment.json").is_file() else None
    if old is not None:
        for key, want in (("experiment", exp.name), ("budget", b.name), ("data", data)):
            if old.get(key) != want:
                raise ReslabError(f"{exp_dir} holds a {old.get('experiment')} experiment with budget {old.get('budget')} "
                                  f"on {old.get('data')}; this asks for {key} {want}: choose another --out")
    elif exp_dir.exists() and any(exp_dir.iterdir()) and not dry_run:
        raise ReslabError(f"{exp_dir} exists and is not an experiment directory; choose an empty or new --out")
    for net, seed in plan:
        _check_same_config(exp_dir / "runs" / _run_name(net, seed), configs[(net.name, seed)])

    runs = [{"name": _run_name(net, seed), "net": net.name, "model": net.model, "model_args": dict(net.model_args),
             "group": net.group, "depth": net.depth, "seed": seed, "path": f"runs/{_run_name(net, seed)}"}
            for net, seed in plan]
    print(f"{exp.name}: {len(nets)} nets x {n_seeds} seed(s) = {len(plan)} runs, budget {b.name} ({b.summary}), "
          f"data {data} -> {exp_dir}", flush=True)
    if dry_run:
        for r in runs:
            state = _status(exp_dir / r["path"]) or ("unfinished" if (exp_dir / r["path"]).exists() else "new")
            print(f"  {r['name']:24s} {r['model']} {r['model_args'] or ''} [{state}]")
        return exp_dir

    meta = dict(old or {})
    meta.update({"experiment": exp.name, "title": exp.title, "source": exp.source, "budget": b.name,
                 "budget_settings": b.settings(), "data": data, "data_dir": data_dir, "seeds": n_seeds,
                 "depths": list(depth_list), "device": device, "runs": runs,
                 "command": command or _default_command(exp.name, b.name, data, n_seeds, depth_list, exp_dir)})
    meta.setdefault("created", _now())
    meta.setdefault("sessions", [])
    from .. import __version__

    meta["reslab"] = __version__
    import torch

    session = {"started": _now(), "wall_time": None, "threads": torch.get_num_threads(), "trained": [], "resumed": [],
               "reused": []}
    meta["sessions"].append(session)
    exp_dir.mkdir(parents=True, exist_ok=True)
    _write_experiment(exp_dir, meta)

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
        for i, (net, seed) in enumerate(plan, 1):
            run_dir = exp_dir / "runs" / _run_name(net, seed)
            before = _status(run_dir)
            if before not in ("finished", "nan"):
                print(f"[{i}/{len(plan)}] {'resuming' if run_dir.exists() else 'training'} {run_dir.name} "
                      f"({net.model}{' ' + str(net.model_args) if net.model_args else ''})", flush=True)
            what = _train_or_reuse(configs[(net.name, seed)], run_dir, data_fn)
            session[what].append(run_dir.name)
    finally:
        session["wall_time"] = round(time.time() - t0, 3)
        _write_experiment(exp_dir, meta)
    return render_training_experiment(exp_dir)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _default_command(name: str, budget: str, data: str, seeds: int, depths: Sequence[int], out: Path) -> str:
    args = ["reslab", "reproduce", name, "--budget", budget, "--data", data, "--seeds", str(seeds),
            "--depths", ",".join(map(str, depths)), "--out", str(out)]
    return shlex.join(args)


# -- reading results back -----------------------------------------------------------------------------
def read_run_result(exp_dir: Path, entry: dict[str, Any]) -> RunResult:
    from ..report import read_run

    path = exp_dir / entry["path"]
    base = dict(name=entry["name"], net=entry["net"], seed=int(entry["seed"]), path=entry["path"])
    if not (path / "metrics.jsonl").is_file():
        return RunResult(**base, status="not started", params=None, train_err=None, val_err=None,
                         final_val_err=None, test_err=None, epochs=0, steps=0, wall_time=None)
    run = read_run(path)
    start = next((r for r in _records(path) if r.get("event") == "start"), {})
    last = run.epochs[-1] if run.epochs else {}
    _, best = run.best_val()
    tests = run.test_errors()
    return RunResult(
        **base, status=run.status(), params=start.get("params", run.params()),
        train_err=last.get("train_err"), val_err=best, final_val_err=last.get("val_err"),
        test_err=tests.get("center", next(iter(tests.values()), None)),
        epochs=int(last.get("epoch", 0)), steps=int(last.get("step", 0)), wall_time=run.wall_time())


def _records(run_dir: Path) -> list[dict[str, Any]]:
    from ..report import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def collect(exp_dir: Path, meta: dict[str, Any]) -> Summary:
    by_net: dict[str, NetResult] = {}
    for entry in meta.get("runs", []):
        name = entry["net"]
        if name not in by_net:
            by_net[name] = NetResult(Net(name, entry["model"], entry["group"], int(entry["depth"]),
                                         dict(entry.get("model_args") or {})), [])
        by_net[name].runs.append(read_run_result(exp_dir, entry))
    for n in by_net.values():
        n.runs.sort(key=lambda r: r.seed)
    return Summary(exp_dir, meta, list(by_net.values()))


# -- report -------------------------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in (headers, rule, *rows)]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{seconds:.1f} s"


def wall_times(summary: Summary) -> tuple[float, float]:
    """(elapsed wall time of the reproduce commands, training time summed over the runs)."""
    elapsed = sum(float(s.get("wall_time") or 0) for s in summary.meta.get("sessions", []))
    training = sum(r.wall_time or 0 for n in summary.nets for r in n.runs)
    return elapsed, training


def _budget_markdown(meta: dict[str, Any]) -> str:
    s = meta.get("budget_settings") or {}
    counts = meta.get("data_counts") or {}
    lines = [f"- **preset** `{meta.get('budget')}`: {s.get('summary', '')}",
             f"- **recipe** `{s.get('recipe')}` with overrides: "
             + (", ".join(f"`{k}={v}`" for k, v in (s.get("overrides") or {}).items()) or "none"),
             f"- **images**: {counts.get('train', '—')} train / {counts.get('val', '—')} validation / "
             f"{counts.get('test', '—')} test (budget: train {s.get('train_size') or 'all'}, val {s.get('val_size')}, "
             f"test {s.get('test_size') or 'all'}; fixed class-stratified subsets, the same for every net and seed)",
             f"- **data** `{meta.get('data')}`", f"- **seeds** {meta.get('seeds')} per net",
             f"- **depths** {', '.join(map(str, meta.get('depths', [])))}"]
    return "\n".join(lines)


def render_training_experiment(exp_dir: str | Path, exp: ExperimentDef | None = None) -> Path:
    """(Re)write ``results.json``, the plots and ``report.md`` / ``report.html`` from the runs."""
    from ..report import render_comparison
    from . import EXPERIMENTS

    exp_dir = Path(exp_dir)
    meta = read_experiment(exp_dir)
    exp = exp or EXPERIMENTS[meta["experiment"]]
    summary = collect(exp_dir, meta)
    analysis = exp.analyse(summary)
    elapsed, training = wall_times(summary)
    runs = [r for n in summary.nets for r in n.runs]
    finished = sum(r.status == "finished" for r in runs)

    results = {
        "experiment": exp.name, "title": exp.title, "source": exp.source, "budget": meta.get("budget"),
        "budget_settings": meta.get("budget_settings"), "data": meta.get("data"), "data_counts": meta.get("data_counts"),
        "seeds": meta.get("seeds"), "depths": meta.get("depths"),
        "wall_time": {"elapsed": round(elapsed, 3), "training_sum": round(training, 3)},
        "runs_finished": finished, "runs_planned": len(runs),
        "nets": [n.to_dict() for n in summary.nets],
        "findings": [f.to_dict() for f in analysis.findings], "verdict": analysis.verdict, "paper": analysis.paper,
    }
    atomic_write_text(exp_dir / "results.json", json.dumps(results, indent=2) + "\n")

    sessions = meta.get("sessions", [])
    intro = [f"Reproduces {exp.source}. {exp.about}", "",
             f"**Budget** `{meta.get('budget')}`, **data** `{meta.get('data')}` "
             f"({(meta.get('data_counts') or {}).get('train', '—')} training images), "
             f"**seeds** {meta.get('seeds')} per net, **runs** {finished} of {len(runs)} finished. "
             f"**Wall time** {_duration(elapsed)} over {len(sessions)} invocation(s) of `reslab reproduce` "
             f"(training alone, summed over runs: {_duration(training)}).", "",
             "## Ours beside the paper", "", analysis.table, "",
             "## Findings", "", "Each claim of the paper, and whether these runs show it:", "",
             *[f.markdown() for f in analysis.findings]]
    if analysis.verdict:
        intro += ["", f"**Verdict**: {analysis.verdict}"]
    if finished < len(runs):
        intro += ["", f"**Unfinished**: {len(runs) - finished} run(s) are not finished; the numbers are partial. "
                      "Run the same command again to continue."]
    sections = list(analysis.sections)
    sections.append(("Budget and data", _budget_markdown(meta)))
    sections.append(("How this was run", "\n".join([
        f"```\n{meta.get('command', '')}\n```", "",
        "Rerunning the command reuses finished runs and resumes unfinished ones. `experiment.json` lists the "
        "runs; each run directory under `runs/` is an ordinary reslab run (config, metrics, checkpoints, report). "
        "`reslab report` on this directory re-renders this report from them.",
        "", f"reslab {meta.get('reslab', '')}, created {meta.get('created', '')}."])))
    all_runs = [exp_dir / r.path for r in runs if (exp_dir / r.path / "metrics.jsonl").is_file()]
    groups = {k: [p for p in v if (p / "metrics.jsonl").is_file()] for k, v in analysis.groups.items()}
    groups = {k: v for k, v in groups.items() if v}
    if not all_runs:
        md = "\n".join([f"# {exp.title}", "", *intro, "", "No run has started yet."]) + "\n"
        from ..report import markdown_to_html

        atomic_write_text(exp_dir / "report.md", md)
        atomic_write_text(exp_dir / "report.html", markdown_to_html(md))
        return exp_dir / "report.md"
    return render_comparison(all_runs, exp_dir, title=exp.title, groups=groups or None, intro="\n".join(intro),
                             extra_sections=sections)
