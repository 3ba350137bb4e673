"""Figures of final errors against depth (ours beside the paper's), drawn on a bare Agg figure."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..io import atomic_path


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_error_vs_depth(lines: Sequence[dict], path: Path, *, title: str,
                        paper: Mapping[str, Mapping[int, float]] | None = None) -> None:
    """One line per entry of ``lines`` (``label``, ``depths``, ``means``, ``stds``, ``dashed``,
    ``colour``); error bars where a std is known; the paper's points as grey crosses."""
    fig = _figure((6.4, 4.4))
    ax = fig.add_subplot()
    for line in lines:
        if not line["depths"]:
            continue
        style = "--" if line.get("dashed") else "-"
        width = 0.9 if line.get("dashed") else 2.0
        stds = [s if s is not None else 0.0 for s in line["stds"]]
        ax.errorbar(line["depths"], line["means"], yerr=stds if any(stds) else None, linestyle=style, linewidth=width,
                    marker="o", markersize=4, capsize=3, color=line.get("colour"), label=line["label"])
    for label, points in (paper or {}).items():
        if points:
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], linestyle=":", marker="x", color="0.45", label=label)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("error (%)")
    ax.set_xscale("log")
    depths = sorted({d for line in lines for d in line["depths"]} | {d for p in (paper or {}).values() for d in p})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.grid(True, linewidth=0.4, alpha=0.5)
    ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")
    save(fig, path)


def plot_responses(series: Sequence[tuple[str, Sequence[float], str | None, bool]], path: Path, *, title: str) -> None:
    """Figure 7's two panels: std per 3x3 layer in layer order (top) and sorted by magnitude (bottom).

    ``series`` holds (label, stds, colour, dashed) per net; plain nets are drawn dashed as in the paper.
    """
    fig = _figure((7.2, 7.0))
    top, bottom = fig.subplots(2, 1)
    for label, stds, colour, dashed in series:
        xs = list(range(1, len(stds) + 1))
        style = "--" if dashed else "-"
        top.plot(xs, list(stds), linestyle=style, linewidth=1.2, color=colour, label=label)
        bottom.plot(xs, sorted(stds, reverse=True), linestyle=style, linewidth=1.2, color=colour, label=label)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(True, linewidth=0.4, alpha=0.5)
        ax.legend(fontsize="small")
    top.set_title(title, fontsize="medium")
    save(fig, path)
