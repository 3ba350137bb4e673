"""Plots and reports rendered from run directories alone.

A run directory (``runs/<name>/``) holds ``config.yaml``, ``env.json`` and ``metrics.jsonl``;
everything here reads those files and writes PNG, markdown and HTML next to them. The curves
follow Figure 6 of the ResNet paper (He et al., 2015): one colour per run, training error as a
thin dashed line, validation (or test) error as a bold solid line.

Every file is written atomically and rendering is deterministic, so re-rendering a report gives
byte-identical files.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

import yaml

from .errors import ReslabError
from .io import atomic_path, atomic_write_text
from .rundir import Run, read_metrics, read_run

if TYPE_CHECKING:  # matplotlib is imported inside the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Run", "read_run", "read_metrics", "plot_error_curves", "plot_side_by_side",
    "plot_confusion_matrix", "render_run_report", "render_comparison", "markdown_to_html",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
_DPI = 100
_DASH = "—"  # table cell for a value the run did not log


def _as_run(run: Run | PathLike) -> Run:
    return run if isinstance(run, Run) else read_run(run)


# -- plots ----------------------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float]) -> Figure:
    # A bare Figure on an Agg canvas: no pyplot state, no GUI backend, nothing chosen at import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Figure, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)


def _colours(n: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    colours = list(colormaps["tab10"].colors if n <= 10 else colormaps["tab20"].colors)
    return [colours[i % len(colours)] for i in range(n)]


def _series(records: Iterable[Mapping], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        x, y = _num(r.get(xkey)), _num(r.get(ykey))
        if x is not None and y is not None:
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _draw_curves(ax: Axes, runs: Sequence[Run], x: str) -> None:
    from matplotlib.lines import Line2D

    handles, labels = [], []
    for run, colour in zip(runs, _colours(len(runs))):
        # Training error: the per-step running error if logged, else one point per epoch.
        tx, ty = _series(run.steps, x, "err")
        if not tx:
            tx, ty = _series(run.epochs, x, "train_err")
        vx, vy = _series(run.epochs, x, "val_err")
        kind = "val"
        if not vx:  # no validation split: show the final test error(s) instead
            kind = "test"
            last = {"step": _num((run.end or {}).get("step")), "epoch": _num(run.epochs[-1]["epoch"]) if run.epochs else None}
            for t in run.tests:
                at = _num(t.get("step")) if x == "step" else last["epoch"]
                if t.get("split", "test") == "test" and at is not None and _num(t.get("top1_err")) is not None:
                    vx.append(float(at))
                    vy.append(float(t["top1_err"]))
        if tx:
            ax.plot(tx, ty, linestyle="--", linewidth=0.8, color=colour, label=f"{run.name} train", gid="train")
        if vx:
            ax.plot(vx, vy, linestyle="-", linewidth=2.2, color=colour, label=f"{run.name} {kind}",
                              gid=kind, marker="o" if len(vx) == 1 else None)
        if tx or vx:
            handles.append(Line2D([], [], color=colour, linewidth=2.2))
            labels.append(run.name)
        else:
            handles.append(Line2D([], [], color=colour, linewidth=2.2, alpha=0.3))
            labels.append(f"{run.name} (no metrics yet)")
    ax.set_xlabel("iterations" if x == "step" else "epochs")
    ax.set_ylabel("error (%)")
    ax.grid(True, linewidth=0.4, alpha=0.5)
    if handles:
        handles += [Line2D([], [], color="0.4", linestyle="--", linewidth=0.8),
                    Line2D([], [], color="0.4", linestyle="-", linewidth=2.2)]
        labels += ["training error", "validation / test error"]
        ax.legend(handles, labels, fontsize="small", loc="upper right", frameon=True)
    if not ax.get_lines():
        ax.text(0.5, 0.5, "no metrics logged yet", ha="center", va="center", transform=ax.transAxes, color="0.4")


def _set_error_ylim(axes: Sequence[Axes], ylim: tuple[float, float] | None) -> None:
    if ylim is not None:
        axes[0].set_ylim(*ylim)
        return
    import numpy as np

    ys = [np.asarray(line.get_ydata(), dtype=float) for a in axes for line in a.get_lines()]
    finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
    top = float(finite.max()) if finite.size else 0.0
    axes[0].set_ylim(0.0, min(100.0, top * 1.05) if top > 0 else 100.0)


def _check_x(x: str) -> None:
    if x not in ("step", "epoch"):
        raise ReslabError(f"x must be 'step' or 'epoch', got {x!r}")


def plot_error_curves(
    runs: Sequence[Run | PathLike] | Run | PathLike,
    path: PathLike | None,
    *,
    x: str = "step",
    title: str | None = "Training (dashed) and validation (bold) error",
    ylim: tuple[float, float] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Error curves of one or more runs in the style of the ResNet paper's Figure 6.

    Each run gets one colour; its training error is a thin dashed line and its validation error a
    bold solid line (its test error when the run has no validation split). The lines carry
    ``gid`` "train", "val" or "test".

    Args:
        runs: runs or run directories.
        path: PNG to write (atomically); None draws without saving.
        x: "step" (iterations, as in the paper) or "epoch".
        title: axes title; None for none.
        ylim: y-axis limits in percent; default from 0 to just above the highest error.
        ax: draw into this axes instead of a new figure.

    Returns:
        The matplotlib Figure drawn on.
    """
    _check_x(x)
    if isinstance(runs, (Run, str, os.PathLike)):
        runs = [runs]
    loaded = [_as_run(r) for r in runs]
    if ax is None:
        fig = _new_figure((6.4, 4.4))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    _draw_curves(ax, loaded, x)
    _set_error_ylim([ax], ylim)
    if title:
        ax.set_title(title)
    if path is not None:
        fig.tight_layout()
        _save_png(fig, path)
    return fig


def plot_side_by_side(
    groups: Mapping[str, Sequence[Run | PathLike]],
    path: PathLike | None,
    *,
    x: str = "step",
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """One panel of error curves per group with a shared y axis, as Figure 6 left/right.

    Args:
        groups: panel title -> runs or run directories, e.g. ``{"plain": [...], "ResNet": [...]}``.
        path: PNG to write (atomically); None draws without saving.
        x: "step" (iterations) or "epoch".
        title: figure title; None for none.
        ylim: shared y-axis limits in percent; default from 0 to just above the highest error.

    Returns:
        The matplotlib Figure, with one axes per group in the order given.
    """
    _check_x(x)
    if not groups:
        raise ReslabError("plot_side_by_side needs at least one group of runs")
    fig = _new_figure((5.2 * len(groups), 4.4))
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (name, runs) in zip(axes, groups.items()):
        _draw_curves(ax, [_as_run(r) for r in runs], x)
        ax.set_title(str(name))
    for ax in axes[1:]:
        ax.set_ylabel("")
    _set_error_ylim(list(axes), ylim)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.tight_layout()
        _save_png(fig, path)
    return fig


def plot_confusion_matrix(
    matrix: Any,
    classes: Sequence[str] | None,
    path: PathLike | None,
    *,
    normalize: bool = True,
    title: str | None = None,
) -> Figure:
    """A K x K confusion matrix as a heat map, rows = true class, columns = predicted class.

    Args:
        matrix: counts as a torch tensor, numpy array or nested lists.
        classes: K class names; None numbers them.
        path: PNG to write (atomically); None draws without saving.
        normalize: show each row as percent of that true class (rows that sum to 0 stay 0).
        title: figure title; default says what the cells mean.

    Returns:
        The matplotlib Figure.
    """
    import numpy as np

    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ReslabError(f"confusion matrix must be square K x K, got shape {tuple(m.shape)}")
    k = m.shape[0]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ReslabError(f"{len(names)} class names given for a {k} x {k} confusion matrix")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(100.0 * m, totals, out=np.zeros_like(m), where=totals > 0)

    side = min(14.0, max(4.5, 0.55 * k + 2.0))
    fig = _new_figure((side + 1.2, side))
    ax = fig.add_subplot()
    vmax = 100.0 if normalize else max(float(m.max()), 1.0)
    image = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of true class" if normalize else "count")
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:  # beyond that the numbers no longer fit in the cells
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                ax.text(j, i, f"{v:.0f}" if normalize or float(v).is_integer() else f"{v:.1f}",
                        ha="center", va="center", fontsize=8, color="white" if v > 0.5 * vmax else "black")
    ax.set_title(title or ("Confusion matrix (rows: true class, % per row)" if normalize else "Confusion matrix (counts)"))
    if path is not None:
        fig.tight_layout()
        _save_png(fig, path)
    return fig


# -- reports --------------------------------------------------------------------------------------
def render_run_report(run_dir: PathLike) -> Path:
    """Write ``plots/curves.png``, ``report.md`` and ``report.html`` into a run directory.

    The report gives the model, data, recipe, epochs, wall time, device, best validation error and
    its epoch, the final test error per protocol, a per-epoch table and the error curves; it links
    ``plots/confusion*.png`` when they exist. An unfinished run renders what it has so far.

    Args:
        run_dir: the run directory.

    Returns:
        The path of ``report.md``.
    """
    run = read_run(run_dir)
    curves = run.path / "plots" / "curves.png"
    plot_error_curves([run], curves, title=f"{run.name}: training (dashed) and validation (bold) error")
    # confusion.png comes from training; confusion-<split>-<protocol>.png from `reslab eval`
    confusion = sorted(p.name for p in (run.path / "plots").glob("confusion*.png"))
    md = _run_markdown(run, confusion=confusion)
    report = run.path / "report.md"
    atomic_write_text(report, md)
    atomic_write_text(run.path / "report.html", markdown_to_html(md))
    return report


def _run_markdown(run: Run, *, confusion: Sequence[str]) -> str:
    cfg, env = run.config, run.env
    best_epoch, best_err = run.best_val()
    wall = run.wall_time()
    planned = _int_or_none(cfg.get("epochs"))
    done = int(run.epochs[-1]["epoch"]) if run.epochs else 0

    overview = [
        ("model", _code(cfg.get("model"))),
        ("data", _code(cfg.get("data"))),
        ("recipe", _code(cfg.get("recipe"))),
        ("epochs", f"{done} of {planned}" if planned is not None else str(done)),
        ("status", run.status()),
        ("wall time", _DASH if wall is None else _duration(wall) + ("" if run.end is not None else " so far")),
        ("device", _code(env.get("device"))),
    ]
    if run.params() is not None:
        overview.append(("parameters", f"{run.params():,}"))
    if best_err is not None:
        at = f" at epoch {best_epoch}" if best_epoch is not None else ""
        overview.append(("best val error", f"{_fmt(best_err, '.2f')} %{at}"))
    else:
        overview.append(("best val error", "no validation error logged"))
    for extra in ("torch", "python", "git_commit"):
        if env.get(extra) is not None:
            overview.append((extra.replace("_", " "), _code(env[extra])))

    out = [f"# Run {_md_text(run.name)}", ""]
    out += [f"- **{k}**: {v}" for k, v in overview]
    out += ["", "## Test error", ""]
    if run.tests:
        rows = [[_md_text(t.get("split", "test")), _md_text(t.get("protocol", "center")),
                 _md_text(t.get("checkpoint") or _DASH), _fmt(t.get("top1_err"), ".2f"),
                 _fmt(t.get("top5_err"), ".2f"), _fmt(t.get("loss"), ".4f")] for t in run.tests]
        out += _md_table(["split", "protocol", "checkpoint", "top-1 err (%)", "top-5 err (%)", "loss"], rows, "lllrrr")
    else:
        out.append("No test evaluation logged yet.")
    out += ["", "## Error curves", "", "![Training and validation error](plots/curves.png)", "",
            "Thin dashed line: training error; bold line: validation error "
            "(the test error where the run has no validation split)."]
    if confusion:
        out += ["", "## Confusion matrix"]
        for name in confusion:
            out += ["", f"![Confusion matrix {name[:-4]}](plots/{name})", "", f"[{name} (full size)](plots/{name})"]
    out += ["", "## Per epoch", ""]
    if not run.epochs:
        out.append("No epoch finished yet.")
    else:
        headers = ["epoch", "lr", "train loss", "train err (%)"]
        keys = [("epoch", "d"), ("lr", ".4g"), ("train_loss", ".4f"), ("train_err", ".2f")]
        if run.has_val:
            headers += ["val loss", "val err (%)"]
            keys += [("val_loss", ".4f"), ("val_err", ".2f")]
        rows = [[_fmt(e.get(k), spec) for k, spec in keys] for e in run.epochs]
        out += _md_table(headers, rows, "r" * len(headers))
        if not run.has_val:
            out += ["", "No validation split in this run: it logged no validation error."]
    return "\n".join(out) + "\n"


def render_comparison(
    run_dirs: Sequence[Run | PathLike],
    out_dir: PathLike,
    *,
    title: str,
    groups: Mapping[str, Sequence[Run | PathLike]] | None = None,
    intro: str = "",
    extra_sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Compare runs: ``out_dir/report.md``, ``report.html`` and ``plots/compare.png``.

    The report has one table row per run (name, model, parameters, epochs, status, best val error,
    test error per protocol, wall time), the figure, and the intro and extra sections.

    Args:
        run_dirs: the runs for the table, in row order. Runs that appear only in ``groups`` are
            appended.
        out_dir: where the report goes (created if needed).
        title: the report's heading and the figure's title.
        groups: panel name -> runs; given, the figure has one panel per group side by side
            (Figure 6 left/right), else one panel with every run.
        intro: markdown placed under the heading.
        extra_sections: (heading, markdown) pairs appended in order.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    by_path: dict[Path, Run] = {}

    def load(r: Run | PathLike) -> Run:
        key = (r.path if isinstance(r, Run) else Path(r)).resolve()
        if key not in by_path:
            by_path[key] = _as_run(r)
        return by_path[key]

    runs = [load(r) for r in run_dirs]
    loaded_groups = {name: [load(r) for r in members] for name, members in (groups or {}).items()}
    for members in loaded_groups.values():
        runs += [r for r in members if all(r is not s for s in runs)]
    if not runs:
        raise ReslabError("render_comparison needs at least one run directory")

    figure = out / "plots" / "compare.png"
    if loaded_groups:
        plot_side_by_side(loaded_groups, figure, title=title)
    else:
        plot_error_curves(runs, figure, title=title)

    protocols: list[str] = []
    for r in runs:
        protocols += [p for p in r.test_errors() if p not in protocols]
    headers = ["run", "model", "params", "epochs", "status", "best val err (%)", "best epoch"]
    headers += [f"test err {p} (%)" for p in protocols] + ["wall time"]
    rows = []
    for r in runs:
        epoch, err = r.best_val()
        params = r.params()
        done = int(r.epochs[-1]["epoch"]) if r.epochs else 0
        planned = _int_or_none(r.config.get("epochs"))
        tests = r.test_errors()
        wall = r.wall_time()
        rows.append([
            _md_text(r.name), _code(r.config.get("model")), f"{params / 1e6:.2f}M" if params is not None else _DASH,
            f"{done}/{planned}" if planned is not None else str(done), r.status(),
            _fmt(err, ".2f"), _fmt(epoch, "d"), *[_fmt(tests.get(p), ".2f") for p in protocols],
            _duration(wall) if wall is not None else _DASH,
        ])

    md = [f"# {_md_text(title)}", ""]
    if intro.strip():
        md += [intro.strip(), ""]
    md += ["## Runs", ""]
    md += _md_table(headers, rows, "llrrl" + "r" * (len(headers) - 5))
    md += ["", "## Error curves", "", "![Error curves of the runs compared](plots/compare.png)", "",
           "Thin dashed lines: training error; bold lines: validation error "
           "(the test error where a run has no validation split)."]
    for heading, body in extra_sections:
        md += ["", f"## {heading}", "", body.strip()]
    text = "\n".join(md) + "\n"
    report = out / "report.md"
    atomic_write_text(report, text)
    atomic_write_text(out / "report.html", markdown_to_html(text))
    return report


# -- formatting helpers -------------------------------------------------------------------------
def _num(v: Any) -> float | int | None:
    """``v`` if it is a real number (bools are not), else None."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int_or_none(v: Any) -> int | None:
    return int(v) if _num(v) is not None and not math.isnan(v) else None


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return _DASH
    if _num(v) is None:
        return _md_text(v)
    if spec == "d":
        return str(int(v)) if float(v).is_integer() else f"{v:g}"
    return format(v, spec)


def _duration(seconds: float) -> str:
    """``401.2`` -> "401.2 s (6 min 41 s)"; the exact seconds first so they can be read back."""
    text = f"{seconds:.1f} s"
    s = int(round(seconds))
    if s >= 3600:
        text += f" ({s // 3600} h {s % 3600 // 60:02d} min)"
    elif s >= 60:
        text += f" ({s // 60} min {s % 60:02d} s)"
    return text


def _md_text(v: Any) -> str:
    """Plain text safe inside a markdown table cell or heading."""
    return re.sub(r"([\\`*|\[\]])", r"\\\1", str(v)).replace("\n", " ")


def _code(v: Any) -> str:
    return _DASH if v is None else f"`{str(v).replace('`', '')}`"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(row) + " |" for row in (headers, rule, *rows)]


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# -- markdown -> HTML -----------------------------------------------------------------------------
_CSS = """\
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; }
main { max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.2; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; } th { background: #f4f4f4; }
tr:nth-child(even) td { background: #fafafa; }
code { font: 0.9em ui-monospace, monospace; background: #f2f2f2; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; } pre code { background: none; padding: 0; }
img { max-width: 100%; height: auto; }
"""

_INLINE = re.compile(
    r"`([^`]+)`"                        # 1: code span
    r"|!\[([^\]]*)\]\(([^)\s]+)\)"      # 2, 3: image
    r"|\[([^\]]+)\]\(([^)\s]+)\)"       # 4, 5: link
    r"|\*\*(.+?)\*\*"                   # 6: bold
    r"|\\([\\`*_\[\]()#|!.+-])"         # 7: backslash escape
)
_BLOCK_START = re.compile(r"(#{1,6})\s|```|\s*[-*]\s|\|")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, alt, src, label, href, bold, escaped = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif src is not None:
            out.append(f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">')
        elif href is not None:
            out.append(f'<a href="{html.escape(href)}">{_inline(label)}</a>')
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        else:
            out.append(html.escape(escaped))
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def _table_html(lines: list[str]) -> str:
    head, rule, body = _cells(lines[0]), _cells(lines[1]), [_cells(l) for l in lines[2:]]
    aligns = []
    for r in rule:
        left, right = r.startswith(":"), r.endswith(":")
        aligns.append("center" if left and right else "right" if right else "left" if left else "")

    def row(cells: list[str], tag: str) -> str:
        cells = (cells + [""] * len(head))[: len(head)]
        parts = []
        for c, a in zip(cells, aligns):
            style = f' style="text-align:{a}"' if a else ""
            parts.append(f"<{tag}{style}>{_inline(c)}</{tag}>")
        return "<tr>" + "".join(parts) + "</tr>"

    rows = "\n".join(row(c, "td") for c in body)
    return f"<table>\n<thead>\n{row(head, 'th')}\n</thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def markdown_to_html(md: str, *, title: str | None = None) -> str:
    """A standalone HTML page from the markdown subset this module writes.

    Handles ATX headings, paragraphs, pipe tables (with ``---:`` alignment), images, links,
    bullet lists, code spans, fenced code blocks and ``**bold**``; everything else is escaped
    text.

    Args:
        md: the markdown.
        title: the page title; default the first heading's text.
    """
    lines = md.splitlines()
    blocks: list[str] = []
    first_heading = None
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.lstrip().startswith("```"):
            j = i + 1
            while j < n and not lines[j].lstrip().startswith("```"):
                j += 1
            blocks.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1:j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line):
            level = len(m.group(1))
            if first_heading is None:
                first_heading = m.group(2)
            blocks.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < n and _TABLE_RULE.match(lines[i + 1]):
            j = i + 2
            while j < n and lines[j].lstrip().startswith("|"):
                j += 1
            blocks.append(_table_html(lines[i:j]))
            i = j
        elif re.match(r"\s*[-*]\s+", line):
            items: list[str] = []
            while i < n and lines[i].strip():
                if m := re.match(r"\s*[-*]\s+(.*)", lines[i]):
                    items.append(m.group(1))
                elif lines[i].startswith((" ", "\t")) and items:  # continuation of the item above
                    items[-1] += " " + lines[i].strip()
                else:
                    break
                i += 1
            blocks.append("<ul>\n" + "\n".join(f"<li>{_inline(t)}</li>" for t in items) + "\n</ul>")
        else:
            para = [line.strip()]
            i += 1
            while i < n and lines[i].strip() and not _BLOCK_START.match(lines[i]):
                para.append(lines[i].strip())
                i += 1
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")

    if title is None:
        plain = re.sub(r"\\(.)", r"\1", first_heading) if first_heading else "reslab report"
        title = plain.replace("`", "").replace("**", "")
    body = "\n".join(blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
