"""Layer responses of trained nets (He et al. 2015, Sec. 4.2, Figure 7).

The std of every 3x3 layer's response (after BN, before the ReLU / addition) on a fixed batch of
test images, for trained plain and residual nets: in layer order (top panel) and sorted by
magnitude (bottom). The paper's reading: residual functions are closer to zero than their plain
counterparts' layers, and the deeper the ResNet, the smaller its responses.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import rundir
from .._table import format_duration
from .._version import __version__
from ..analysis import layer_responses
from ..data import load_dataset, stratified_split
from ..data.transforms import ResizeCenterCrop, resize_short_side_ratio
from ..errors import ReslabError
from ..io import atomic_write_text
from ..plots import plot_responses
from ..predict import load_run
from ..report import markdown_to_html
from ..train.distributed import resolve_device
from . import paper
from .base import Finding, md_table, now_iso, portable_command, read_experiment

TITLE = "Layer responses of plain and residual nets (He et al. 2015, Figure 7)"
SOURCE = "He et al. 2015, Sec. 4.2 and Figure 7 (CIFAR-10)"


def _source_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories named directly, or the runs of experiment directories (their first seed)."""
    if not paths:
        raise ReslabError("responses needs trained runs: give run directories or an experiment directory, e.g. "
                          "reslab reproduce responses runs/degradation-cpu-30min")
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "experiment.json").is_file():
            meta = read_experiment(p)
            if meta.get("experiment") == "responses":
                raise ReslabError(f"{p} is a responses experiment; give the runs or the training experiment it measured")
            entries = meta.get("runs") or []
            first = min((int(e.get("seed", 0)) for e in entries), default=0)
            found = [p / e["path"] for e in entries if int(e.get("seed", 0)) == first and rundir.is_run_dir(p / e["path"])]
            if not found:
                raise ReslabError(f"experiment {p} has no trained run yet; run it first")
            runs += found
        elif rundir.is_run_dir(p):
            runs.append(p)
        else:
            raise ReslabError(f"{p} is neither a run directory (config.yaml and checkpoints/) nor an experiment "
                              "directory (experiment.json)")
    seen: set[Path] = set()
    unique = []
    for r in runs:
        if r.resolve() not in seen:
            seen.add(r.resolve())
            unique.append(r)
    return unique


def _relative(path: Path, exp_dir: Path) -> str:
    """``path`` relative to the experiment directory (forward slashes), so the record does not name
    this machine's directories and survives moving both together."""
    return Path(os.path.relpath(path.absolute(), exp_dir.absolute())).as_posix()


def _test_batch(cfg, images: int, cache: dict):

    key = (cfg.data, cfg.data_dir)
    if key not in cache:
        splits = load_dataset(cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=0)
        split = splits.test if splits.test is not None and len(splits.test) else splits.val
        if split is None or len(split) == 0:
            raise ReslabError(f"dataset {cfg.data} has no test or validation images to measure responses on")
        cache[key] = split
    split = cache[key]
    if images < len(split):
        split = split.subset(stratified_split(split.labels, images, seed=0)[1])
    if not hasattr(split, "images"):  # streamed from files: decode this batch

        crop = ResizeCenterCrop(resize_short_side_ratio(cfg.crop_size), cfg.crop_size)
        return torch.stack([crop(split.load(i)) for i in range(len(split))])
    return split.images


def _describe(model, cfg) -> tuple[bool | None, int | None]:
    spec = getattr(model, "spec", None)
    if spec is None:
        return None, None
    return bool(getattr(spec, "residual", True)), getattr(spec, "depth", None)


def run_responses(paths: Sequence[str | Path], *, out: str | Path = "runs/responses", images: int = 500,
                  checkpoint: str = "best", device: str = "cpu", command: str | None = None) -> Path:
    """Measure the response std of every 3x3 layer of each run and write the Figure 7 report.

    Args:
        paths: run directories and/or experiment directories (their first seed's runs).
        out: the output directory (``experiment.json``, ``results.json``, ``plots/``, report).
        images: test images measured (a fixed class-stratified subset).
        checkpoint: ``best`` or ``last`` weights of each run.
        device: where the forward passes run.
        command: the command line recorded in ``experiment.json``.

    Returns:
        The path of ``report.md``.
    """

    if isinstance(images, bool) or not isinstance(images, int) or images < 2:
        raise ReslabError(f"--images must be an integer >= 2, got {images!r}")
    sources = _source_runs(paths)
    out = Path(out)
    t0 = time.time()

    dev = resolve_device(device, 0)
    cache: dict = {}
    measured = []
    for run_dir in sources:
        loaded = load_run(run_dir, checkpoint, dev)
        x = _test_batch(loaded.config, images, cache)
        with torch.no_grad():
            batch = loaded.normalizer.to(dev)(x.to(dev))
        stds = layer_responses(loaded.model, batch, batch_size=250)
        residual, depth = _describe(loaded.model, loaded.config)
        values = [s for _, s in stds]
        measured.append({"run": _relative(run_dir, out), "name": run_dir.name, "model": loaded.config.model,
                         "residual": residual, "depth": depth, "checkpoint": loaded.checkpoint, "images": len(x),
                         "layers": [n for n, _ in stds], "stds": values,
                         "mean_std": statistics.fmean(values), "median_std": statistics.median(values)})
        print(f"{run_dir}: {len(values)} 3x3 layers, mean std {statistics.fmean(values):.3f}", flush=True)

    meta = {"experiment": "responses", "title": TITLE, "source": SOURCE, "sources": [_relative(s, out) for s in sources],
            "images": images, "checkpoint": checkpoint, "device": device, "reslab": __version__,
            "command": portable_command(command or shlex.join(["reslab", "reproduce", "responses", *map(str, paths)])),
            "created": now_iso(), "sessions": [{"started": now_iso(), "wall_time": round(time.time() - t0, 3)}]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(out / "measurements.json", json.dumps(measured, indent=2) + "\n")
    return render_responses(out)


def _label(m: dict[str, Any]) -> str:
    kind = {True: "ResNet", False: "plain", None: m["model"]}[m["residual"]]
    return f"{kind}-{m['depth']}" if m["depth"] is not None and m["residual"] is not None else m["name"]


def _findings(measured: list[dict[str, Any]]) -> list[Finding]:
    plain = {m["depth"]: m for m in measured if m["residual"] is False}
    res = {m["depth"]: m for m in measured if m["residual"] is True}
    findings = []
    both = sorted(set(plain) & set(res))
    if both:
        findings.append(Finding("ResNets respond more weakly than their plain counterparts (mean std over 3x3 layers; "
                                "paper: yes)", all(res[d]["mean_std"] < plain[d]["mean_std"] for d in both),
                                ", ".join(f"{d} layers: ResNet {res[d]['mean_std']:.3f} vs plain {plain[d]['mean_std']:.3f}"
                                          for d in both)))
    else:
        findings.append(Finding("ResNets respond more weakly than their plain counterparts", None,
                                "needs a plain and a residual net of the same depth"))
    depths = sorted(res)
    if len(depths) >= 2:
        means = [res[d]["mean_std"] for d in depths]
        findings.append(Finding("the deeper the ResNet, the smaller its responses (paper: yes)",
                                all(b < a for a, b in zip(means, means[1:])),
                                ", ".join(f"ResNet-{d}: {m:.3f}" for d, m in zip(depths, means))))
    else:
        findings.append(Finding("the deeper the ResNet, the smaller its responses", None, "needs two ResNet depths"))
    return findings


def render_responses(exp_dir: str | Path) -> Path:
    """(Re)write the responses report from ``measurements.json``."""

    exp_dir = Path(exp_dir)
    meta = read_experiment(exp_dir)
    try:
        measured = json.loads((exp_dir / "measurements.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise ReslabError(f"{exp_dir / 'measurements.json'} is missing or unreadable; rerun reslab reproduce responses") from None
    order = sorted(measured, key=lambda m: (m["residual"] is not False, m["depth"] or 0, m["name"]))
    from matplotlib import colormaps

    depths = sorted({m["depth"] or 0 for m in order})
    # tab10 is a ListedColormap, but matplotlib types colormaps[...] as a Colormap, which has no .colors
    palette = colormaps["tab10"].colors  # type: ignore[attr-defined]
    colour = {d: palette[i % len(palette)] for i, d in enumerate(depths)}
    plot_responses([(_label(m), m["stds"], colour[m["depth"] or 0], m["residual"] is False) for m in order],
                   exp_dir / "plots" / "responses.png", title="Std of 3x3 layer responses (Figure 7)")
    findings = _findings(order)
    rows = [[_label(m), f"`{m['model']}`", m["name"], len(m["stds"]), f"{m['mean_std']:.3f}", f"{m['median_std']:.3f}",
             f"{max(m['stds']):.3f}", m["checkpoint"]] for m in order]
    table = md_table(["net", "model", "run", "3x3 layers", "mean std", "median std", "max std", "weights"], rows,
                     "lllrrrrl")
    wall = sum(float(s.get("wall_time") or 0) for s in meta.get("sessions", []))
    md = "\n".join([
        f"# {TITLE}", "",
        f"Reproduces {SOURCE}: the standard deviation of each 3x3 layer's response (its output after BN, before "
        "the ReLU or the addition with the shortcut) on a fixed class-stratified batch of "
        f"{meta.get('images')} test images, with the trained nets in eval mode. The stem's 3x3 conv counts as layer 1. "
        f"Wall time {format_duration(wall)}.", "",
        "## Findings", "", f"The paper: {paper.FIG7}. Here:", "", *[f.markdown() for f in findings], "",
        "## Nets measured", "", table, "",
        "## Figure 7", "", "![Std of layer responses](plots/responses.png)", "",
        "Top: in layer order; bottom: sorted by magnitude. Dashed: plain nets; solid: ResNets.", "",
        "## How this was run", "", f"```\n{meta.get('command', '')}\n```", "",
        "Runs measured: " + ", ".join(f"`{s}`" for s in meta.get("sources", [])) + ".",
    ]) + "\n"
    results = {"experiment": "responses", "title": TITLE, "source": SOURCE, "images": meta.get("images"),
               "nets": [{k: m[k] for k in ("name", "run", "model", "residual", "depth", "checkpoint", "mean_std",
                                           "median_std", "layers", "stds")} for m in order],
               "findings": [f.to_dict() for f in findings], "paper": {"fig7": paper.FIG7}}
    atomic_write_text(exp_dir / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(exp_dir / "report.md", md)
    atomic_write_text(exp_dir / "report.html", markdown_to_html(md))
    return exp_dir / "report.md"
