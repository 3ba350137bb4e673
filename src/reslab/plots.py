"""Every matplotlib figure reslab draws, from run directories or from numbers already gathered.

The error curves follow Figure 6 of the ResNet paper (He et al., 2015): one colour per run,
training error as a thin dashed line, validation (or test) error as a bold solid line. The
experiment figures put our final errors beside the paper's against depth (Table 6) and draw the
layer responses of Figure 7.

Figures are bare :class:`~matplotlib.figure.Figure` objects on an Agg canvas: importing reslab
chooses no matplotlib backend and nothing here touches pyplot's global state. PNGs are written
atomically and drawn deterministically, so redrawing gives byte-identical files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union, cast

from .errors import ReslabError
from .io import atomic_path
from .rundir import Run, read_run

if TYPE_CHECKING:  # matplotlib is imported inside the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "new_figure", "save_png", "colours", "plot_error_curves", "plot_side_by_side", "plot_confusion_matrix",
    "plot_error_vs_depth", "plot_responses", "plot_lr_find", "plot_segmentation", "class_colours",
]

PathLike = Union[str, "os.PathLike[str]"]
DPI = 100


# -- shared helpers -------------------------------------------------------------------------------
def new_figure(figsize: tuple[float, float]) -> Figure:
    """A bare Figure on an Agg canvas: no pyplot state, no GUI backend, nothing chosen at import."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: PathLike | None) -> None:
    """Lay ``fig`` out tightly and write it to ``path`` as PNG, atomically; None writes nothing."""
    if path is None:
        return
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` distinct colours: tab10 for up to 10, tab20 beyond (repeating past 20)."""
    from matplotlib import colormaps

    # tab10 and tab20 are ListedColormaps of RGB triples, but matplotlib types colormaps[...] as a Colormap (no .colors)
    palette = list(colormaps["tab10"].colors if n <= 10 else colormaps["tab20"].colors)  # type: ignore[attr-defined]
    return [palette[i % len(palette)] for i in range(n)]


def class_colours(k: int) -> list[tuple[float, float, float]]:
    """The colours of ``k`` segmentation classes: black for class 0 (background), then :func:`colours`."""
    return [(0.0, 0.0, 0.0), *colours(max(k, 2) - 1)][:max(k, 2)]


def _num(v: Any) -> float | int | None:
    """``v`` if it is a real number (bools are not), else None."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _as_run(run: Run | PathLike) -> Run:
    return run if isinstance(run, Run) else read_run(run)


# -- Figure 6: error curves -----------------------------------------------------------------------
def _series(records: Iterable[Mapping], xkey: str, ykey: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        x, y = _num(r.get(xkey)), _num(r.get(ykey))
        if x is not None and y is not None:
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _bold_series(run: Run, x: str) -> tuple[str, list[float], list[float]]:
    """("val", xs, ys) of the validation error; ("test", ...) of the final test error(s) without one."""
    vx, vy = _series(run.epochs, x, "val_err")
    if vx:
        return "val", vx, vy
    last_epoch = _num(run.epochs[-1]["epoch"]) if run.epochs else None
    for t in run.tests:
        at = _num(t.get("step")) if x == "step" else last_epoch
        if t.get("split", "test") == "test" and at is not None and _num(t.get("top1_err")) is not None:
            vx.append(float(at))
            vy.append(float(t["top1_err"]))
    return "test", vx, vy


def _draw_curves(ax: Axes, runs: Sequence[Run], x: str, *, palette: Sequence[Any] | None = None,
                 legend: Sequence[str] | None = None) -> None:
    """Draw ``runs`` into ``ax``: one colour per run (``palette``, default distinct colours), a
    legend entry per distinct (``legend`` label, colour), default the run names."""
    from matplotlib.lines import Line2D

    palette = list(palette) if palette is not None else colours(len(runs))
    names = list(legend) if legend is not None else [run.name for run in runs]
    entries: dict[tuple[str, Any], bool] = {}  # (label, colour) -> drawn; insertion order is legend order
    for run, colour, name in zip(runs, palette, names):
        # Training error: the per-step running error if logged, else one point per epoch.
        tx, ty = _series(run.steps, x, "err")
        if not tx:
            tx, ty = _series(run.epochs, x, "train_err")
        kind, vx, vy = _bold_series(run, x)
        if tx:
            ax.plot(tx, ty, linestyle="--", linewidth=0.8, color=colour, label=f"{run.name} train", gid="train")
        if vx:
            ax.plot(vx, vy, linestyle="-", linewidth=2.2, color=colour, label=f"{run.name} {kind}",
                    gid=kind, marker="o" if len(vx) == 1 else None)
        key = (name, tuple(colour) if isinstance(colour, (list, tuple)) else colour)
        entries[key] = entries.get(key, False) or bool(tx or vx)
    handles, labels = [], []
    for (name, colour), drawn in entries.items():
        handles.append(Line2D([], [], color=colour, linewidth=2.2, alpha=None if drawn else 0.3))
        labels.append(name if drawn else f"{name} (no metrics yet)")
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
        fig = new_figure((6.4, 4.4))
        ax = fig.add_subplot()
    else:
        fig = cast("Figure", ax.figure)  # a SubFigure only for an axes inside one, which save_png cannot save
    _draw_curves(ax, loaded, x)
    _set_error_ylim([ax], ylim)
    if title:
        ax.set_title(title)
    save_png(fig, path)
    return fig


def plot_side_by_side(
    groups: Mapping[str, Sequence[Run | PathLike]],
    path: PathLike | None,
    *,
    x: str = "step",
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
    overlay: bool = False,
) -> Figure:
    """One panel of error curves per group with a shared y axis, as Figure 6 left/right.

    With ``overlay``, a first panel draws every group together, one colour per group (the same
    colour in the group's own panel), so plain and residual curves can be read against each other
    at a glance; the per-group panels follow, side by side.

    Args:
        groups: panel title -> runs or run directories, e.g. ``{"plain": [...], "ResNet": [...]}``.
        path: PNG to write (atomically); None draws without saving.
        x: "step" (iterations) or "epoch".
        title: figure title; None for none.
        ylim: shared y-axis limits in percent; default from 0 to just above the highest error.
        overlay: add the panel with all groups overlaid, first.

    Returns:
        The matplotlib Figure: with ``overlay`` the overlaid panel, then one axes per group in the
        order given; without, one axes per group.
    """
    _check_x(x)
    if not groups:
        raise ReslabError("plot_side_by_side needs at least one group of runs")
    loaded = {str(name): [_as_run(r) for r in runs] for name, runs in groups.items()}
    panels = len(loaded) + (1 if overlay else 0)
    fig = new_figure((5.2 * panels, 4.4))
    axes = list(fig.subplots(1, panels, sharey=True, squeeze=False)[0])
    if overlay:
        group_colour = dict(zip(loaded, colours(len(loaded))))
        runs = [r for members in loaded.values() for r in members]
        palette = [group_colour[name] for name, members in loaded.items() for _ in members]
        legend = [name if len(members) > 1 else r.name for name, members in loaded.items() for r in members]
        _draw_curves(axes[0], runs, x, palette=palette, legend=legend)
        axes[0].set_title(" vs ".join(loaded) + " (overlaid)")
        for ax, (name, members) in zip(axes[1:], loaded.items()):
            _draw_curves(ax, members, x, palette=[group_colour[name]] * len(members))
            ax.set_title(name)
    else:
        for ax, (name, members) in zip(axes, loaded.items()):
            _draw_curves(ax, members, x)
            ax.set_title(name)
    for ax in axes[1:]:
        ax.set_ylabel("")
    _set_error_ylim(axes, ylim)
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return fig


# -- confusion matrix -----------------------------------------------------------------------------
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
    fig = new_figure((side + 1.2, side))
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
    save_png(fig, path)
    return fig


# -- experiment figures ---------------------------------------------------------------------------
def plot_error_vs_depth(lines: Sequence[dict], path: PathLike | None, *, title: str,
                        paper: Mapping[str, Mapping[int, float]] | None = None) -> Figure:
    """Final error against depth (log scale), ours beside the paper's (Table 6).

    Args:
        lines: one line each, a dict with ``label``, ``depths``, ``means``, ``stds`` (None where
            unknown; error bars where a std is known) and optionally ``dashed`` and ``colour``.
        path: PNG to write (atomically); None draws without saving.
        title: axes title.
        paper: legend label -> {depth: error %}, drawn as grey crosses on a dotted line.

    Returns:
        The matplotlib Figure.
    """
    fig = new_figure((6.4, 4.4))
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
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")
    save_png(fig, path)
    return fig


def plot_responses(series: Sequence[tuple[str, Sequence[float], Any, bool]], path: PathLike | None, *,
                   title: str) -> Figure:
    """Figure 7's two panels: std per 3x3 layer in layer order (top) and sorted by magnitude (bottom).

    Args:
        series: (label, stds, colour, dashed) per net; plain nets are drawn dashed as in the paper.
        path: PNG to write (atomically); None draws without saving.
        title: title of the top panel.

    Returns:
        The matplotlib Figure.
    """
    fig = new_figure((7.2, 7.0))
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
        if series:
            ax.legend(fontsize="small")
    top.set_title(title, fontsize="medium")
    save_png(fig, path)
    return fig


def plot_lr_find(lrs: list[float], losses: list[float], smoothed: list[float], chosen: float, lr_min_loss: float,
                 path: PathLike | None) -> Figure:
    """The learning-rate range test (recipe auto): training loss against the lr (log scale), the lr
    of the lowest smoothed loss and the chosen peak lr marked."""
    fig = new_figure((6, 4))
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color="0.75", lw=1, label="loss")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed loss")
    ax.axvline(lr_min_loss, color="C3", ls=":", label=f"lowest smoothed loss (lr {lr_min_loss:.3g})")
    ax.axvline(chosen, color="C2", ls="--", label=f"chosen peak lr {chosen:.3g}")
    ax.set_xscale("log")
    if smoothed:
        lo = min(smoothed)
        ax.set_ylim(lo - 0.1 * abs(lo), max(smoothed[0], lo) * 1.5 + 0.1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test (Smith 2017)")
    ax.legend(fontsize=8)
    save_png(fig, path)
    return fig


def plot_segmentation(rows: Sequence[tuple[Any, Any, Any, str]], classes: Sequence[str], path: PathLike | None, *,
                      title: str | None = None) -> Figure:
    """Segmentation results, one row per image: image | ground truth | prediction | errors.

    Args:
        rows: ``(image, truth, prediction, caption)``: the image as a uint8 (C, H, W) tensor or
            array (1 or 3 channels), the two label maps (H, W) of class indices, a caption.
        classes: the class names (the legend of the label colours).
        path: PNG to write (atomically); None draws without saving.
        title: a figure title.

    The error panel draws the image in grey with wrongly labelled pixels in red.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if not rows:
        raise ReslabError("no images to draw")
    k = max(len(classes), 2)
    cmap = ListedColormap(class_colours(k))
    fig = new_figure((9.0, 2.35 * len(rows) + (0.6 if title else 0.3)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, (image, truth, pred, caption) in enumerate(rows):
        img = np.asarray(image.cpu() if hasattr(image, "cpu") else image).astype(np.float64) / 255.0
        img = img.transpose(1, 2, 0) if img.shape[0] == 3 else np.repeat(img[0][..., None], 3, axis=2)
        t = np.asarray(truth.cpu() if hasattr(truth, "cpu") else truth)
        p = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred)
        grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2) * 0.7
        wrong = t != p
        grey[wrong] = (0.9, 0.1, 0.1)
        panels = [(img, None, caption), (t, cmap, "ground truth"), (p, cmap, "prediction"),
                  (grey, None, f"errors: {100.0 * wrong.mean():.2f}% of pixels")]
        for ax, (data, cm, label) in zip(axes[r], panels):
            ax.imshow(data, cmap=cm, vmin=0, vmax=k - 1, interpolation="nearest")
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=cmap(i), label=str(c)) for i, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return fig
