"""Reading an experiment's runs back, and its report: ``results.json``, plots, ``report.md`` /
``report.html``, all re-rendered from the run directories alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import rundir
from .._table import format_duration
from ..io import atomic_write_text
from ..report import markdown_to_html, render_comparison
from .base import ExperimentDef, Net, NetResult, RunResult, Summary, read_experiment

__all__ = ["read_run_result", "collect", "wall_times", "render_training_experiment"]


def read_run_result(exp_dir: Path, entry: dict[str, Any]) -> RunResult:
    path = exp_dir / entry["path"]
    base = dict(name=entry["name"], net=entry["net"], seed=int(entry["seed"]), path=entry["path"])
    if not (path / rundir.METRICS).is_file():
        return RunResult(**base, status="not started", params=None, train_err=None, val_err=None,
                         final_val_err=None, test_err=None, epochs=0, steps=0, wall_time=None)
    run = rundir.read_run(path)
    start = run.start or {}
    last = run.epochs[-1] if run.epochs else {}
    _, best = run.best_val()
    tests = run.test_errors()
    return RunResult(
        **base, status=run.status(), params=start.get("params", run.params()),
        train_err=last.get("train_err"), val_err=best, final_val_err=last.get("val_err"),
        test_err=tests.get("center", next(iter(tests.values()), None)),
        epochs=int(last.get("epoch", 0)), steps=int(last.get("step", 0)), wall_time=run.wall_time())


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


def render_training_experiment(exp_dir: str | Path, exp: ExperimentDef) -> Path:
    """(Re)write ``results.json``, the plots and ``report.md`` / ``report.html`` from the runs."""
    exp_dir = Path(exp_dir)
    meta = read_experiment(exp_dir)
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
             f"**Wall time** {format_duration(elapsed)} over {len(sessions)} invocation(s) of `reslab reproduce` "
             f"(training alone, summed over runs: {format_duration(training)}).", "",
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
    all_runs = [exp_dir / r.path for r in runs if (exp_dir / r.path / rundir.METRICS).is_file()]
    groups = {k: [p for p in v if (p / rundir.METRICS).is_file()] for k, v in analysis.groups.items()}
    groups = {k: v for k, v in groups.items() if v}
    if not all_runs:
        md = "\n".join([f"# {exp.title}", "", *intro, "", "No run has started yet."]) + "\n"
        atomic_write_text(exp_dir / "report.md", md)
        atomic_write_text(exp_dir / "report.html", markdown_to_html(md))
        return exp_dir / "report.md"
    return render_comparison(all_runs, exp_dir, title=exp.title, groups=groups or None, intro="\n".join(intro),
                             extra_sections=sections)
