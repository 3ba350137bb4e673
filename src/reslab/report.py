"""Reports rendered from run directories alone: markdown written here, HTML by markdown-it-py.

A run directory (``runs/<name>/``, see :mod:`reslab.rundir`) holds ``config.yaml``, ``env.json``
and ``metrics.jsonl``; :func:`render_run_report` reads them and writes the error curves, a
markdown report and the same report as a standalone HTML page next to them.
:func:`render_comparison` puts several runs in one table and one figure. The figures come from
:mod:`reslab.plots`.

Every file is written atomically and rendering is deterministic, so re-rendering a report gives
byte-identical files. Text taken from runs (names, config values) is escaped for markdown, and the
HTML renderer passes no raw HTML through.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from ._table import format_duration
from .errors import ReslabError
from .io import atomic_write_text
from .plots import plot_confusion_matrix, plot_error_curves, plot_side_by_side
from .rundir import PLOTS, REPORT_HTML, REPORT_MD, Run, read_metrics, read_run

__all__ = [
    "Run", "read_run", "read_metrics", "plot_error_curves", "plot_side_by_side",
    "plot_confusion_matrix", "render_run_report", "render_comparison", "markdown_to_html",
]

PathLike = Union[str, "os.PathLike[str]"]
_DASH = "—"  # table cell for a value the run did not log


def _as_run(run: Run | PathLike) -> Run:
    return run if isinstance(run, Run) else read_run(run)


def _write_report(out: Path, md: str) -> Path:
    """``out/report.md`` and ``out/report.html`` from ``md``, atomically; returns the markdown's path."""
    report = out / REPORT_MD
    atomic_write_text(report, md)
    atomic_write_text(out / REPORT_HTML, markdown_to_html(md))
    return report


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
    curves = run.path / PLOTS / "curves.png"
    plot_error_curves([run], curves, title=f"{run.name}: training (dashed) and validation (bold) error")
    # confusion.png comes from training; confusion-<split>-<protocol>.png from `reslab eval`
    confusion = sorted(p.name for p in (run.path / PLOTS).glob("confusion*.png"))
    md = _run_markdown(run, confusion=confusion)
    return _write_report(run.path, md)


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
        ("wall time", _DASH if wall is None else _wall_time(wall) + ("" if run.end is not None else " so far")),
        ("device", _code(env.get("device"))),
    ]
    if run.params() is not None:
        overview.append(("parameters", f"{run.params():,}"))
    style_run = bool(cfg.get("style"))  # a style-transfer run: losses, not error rates
    if best_err is not None and style_run:
        at = f" at epoch {best_epoch}" if best_epoch is not None else ""
        overview.append(("best val loss", f"{_fmt(best_err, '.6g')}{at}"))
    elif best_err is not None:
        at = f" at epoch {best_epoch}" if best_epoch is not None else ""
        overview.append(("best val error", f"{_fmt(best_err, '.2f')} %{at}"))
    else:
        overview.append(("best val error", "no validation error logged"))
    for extra in ("torch", "python", "git_commit"):
        if env.get(extra) is not None:
            overview.append((extra.replace("_", " "), _code(env[extra])))

    out = [f"# Run {_md_text(run.name)}", ""]
    out += [f"- **{k}**: {v}" for k, v in overview]
    out += ["", "## Test losses" if style_run else "## Test error", ""]
    if style_run:
        out += _style_md(run)
    elif run.tests and "psnr" in run.tests[-1]:
        out += _restore_md(run)
    elif run.tests and "pixel_err" in run.tests[-1]:
        out += _segmentation_md(run)
    elif run.tests and "bbox" in run.tests[-1]:
        out += _detection_md(run)
    elif run.tests:
        rows = [[_md_text(t.get("split", "test")), _md_text(t.get("protocol", "center")),
                 _md_text(t.get("checkpoint") or _DASH), _fmt(t.get("top1_err"), ".2f"),
                 _fmt(t.get("top5_err"), ".2f"), _fmt(t.get("loss"), ".4f")] for t in run.tests]
        out += _md_table(["split", "protocol", "checkpoint", "top-1 err (%)", "top-5 err (%)", "loss"], rows, "lllrrr")
    else:
        out.append("No test evaluation logged yet.")
    out += _baselines_md(run)
    out += _auto_md(run)
    if not style_run and not (run.tests and "bbox" in run.tests[-1]):  # style and detection runs log no error rate
        out += ["", "## Error curves", "", f"![Training and validation error]({PLOTS}/curves.png)", "",
                "Thin dashed line: training error; bold line: validation error "
                "(the test error where the run has no validation split)."]
    if confusion:
        out += ["", "## Confusion matrix"]
        for name in confusion:
            out += ["", f"![Confusion matrix {name[:-4]}]({PLOTS}/{name})", "", f"[{name} (full size)]({PLOTS}/{name})"]
    out += ["", "## Per epoch", ""]
    if style_run and run.epochs:
        keys = [("epoch", "d"), ("lr", ".4g"), ("train_loss", ".6g"), ("val_loss", ".6g"), ("val_content_loss", ".6g"),
                ("val_style_loss", ".6g"), ("val_tv_loss", ".6g")]
        rows = [[_fmt(e.get(k), spec) for k, spec in keys] for e in run.epochs]
        out += _md_table(["epoch", "lr", "train loss", "val loss", "val content", "val style", "val tv"], rows, "rrrrrrr")
        return "\n".join(out) + "\n"
    if run.epochs and any("val_box_ap" in e for e in run.epochs):  # detection: losses and AP, no error rate
        keys = [("epoch", "d"), ("lr", ".4g"), ("train_loss", ".4f")]
        keys += [(k, ".4f") for k in run.epochs[-1] if k.startswith("train_loss_")]
        rows = [[_fmt(e.get(k), spec) for k, spec in keys] + [_fmt(_pct(e.get("val_box_ap")), ".1f"),
                                                              _fmt(_pct(e.get("val_mask_ap")), ".1f")] for e in run.epochs]
        headers = [k.replace("train_loss_", "").replace("_", " ") for k, _ in keys] + ["val box AP", "val mask AP"]
        out += _md_table(headers, rows, "r" * len(headers))
        return "\n".join(out) + "\n"
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


ISBI_PAPER = {"rand_err": 0.0382, "warping_err": 0.000353}
"""The U-Net paper's results on the ISBI 2012 EM segmentation challenge test set (Ronneberger et al.
2015, Table 1): Rand error and warping error."""


def _segmentation_md(run: Run) -> list[str]:
    """A segmentation run's test figures, per class, beside the U-Net paper's on ISBI 2012."""
    t = run.tests[-1]
    rows = [[_md_text(t.get("split", "test")), _md_text(t.get("checkpoint") or _DASH), str(t.get("n", _DASH)),
             _fmt(t.get("pixel_err"), ".2f"), _fmt(t.get("rand_err"), ".4f"), _fmt(t.get("miou"), ".4f"),
             _fmt(t.get("loss"), ".4f")]]
    out = _md_table(["split", "checkpoint", "images", "pixel err (%)", "Rand err", "mean IoU", "loss"], rows, "llrrrrr")
    iou, dice = t.get("iou") or {}, t.get("dice") or {}
    if isinstance(iou, Mapping) and iou:
        out += ["", *_md_table(["class", "IoU", "Dice"],
                               [[_md_text(c), _fmt(iou.get(c), ".4f"), _fmt(dice.get(c), ".4f")] for c in iou], "lrr")]
    out += ["", f"Whole images by overlap-tile inference ({t.get('tile', _DASH)}-pixel tiles). The Rand error is the "
            "ISBI 2012 challenge's foreground-restricted one (1 - the adapted Rand F-score over the pixels whose true "
            "label is the foreground; objects are the 4-connected components of the foreground class, predicted "
            "background pixels count as unassigned), averaged over the images."]
    if str(run.config.get("data", "")).startswith("isbi2012"):
        out += ["", "The U-Net paper on the ISBI 2012 challenge's own test set (Ronneberger et al. 2015, Table 1): "
                f"Rand error {ISBI_PAPER['rand_err']}, warping error {ISBI_PAPER['warping_err']} (reslab does not "
                "compute the warping error). **Our split differs**: the challenge's test labels are not public, so "
                "these figures are on held-out slices of its 30 training slices, by a model trained on fewer slices "
                "for far less time; they are not comparable one to one."]
    for name in sorted(p.name for p in (run.path / PLOTS).glob("segmentation*.png")):
        out += ["", f"![Segmentation {name[:-4]}]({PLOTS}/{name})", "",
                "Each row: image | ground truth | prediction | errors (red)."]
    return out


def _pct(v: Any) -> float | None:
    return None if v is None else 100.0 * float(v)


def _detection_md(run: Run) -> list[str]:
    """A detection run's COCO figures (boxes, and masks for Mask R-CNN) and its prediction figures."""
    rows = []
    for t in run.tests:
        for kind, name in (("bbox", "boxes"), ("segm", "masks")):
            m = t.get(kind)
            if isinstance(m, Mapping) and m:
                rows.append([_md_text(t.get("split", "test")), _md_text(t.get("checkpoint") or _DASH),
                             str(t.get("n", _DASH)), name] + [_fmt(_pct(m.get(k)), ".1f")
                                                               for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")])
    out = _md_table(["split", "checkpoint", "images", "", "AP", "AP50", "AP75", "AP small", "AP medium", "AP large"],
                    rows, "llrlrrrrrr")
    out += ["", "COCO's protocol by pycocotools (AP averaged over IoU 0.50:0.95, and at 0.50 and 0.75; small, medium "
            "and large objects by area), in %. Model selection used the validation split's box AP (val err = 100 - "
            "box AP)."]
    for name in sorted(p.name for p in (run.path / PLOTS).glob("detection*.png")):
        out += ["", f"![Detection {name[:-4]}]({PLOTS}/{name})", "",
                "Each row: ground truth | predictions (score 0.5 or more)."]
    return out


def _restore_md(run: Run) -> list[str]:
    """A super-resolution run's PSNR and SSIM beside bicubic upscaling, and its crop figures."""
    rows = []
    for t in run.tests:
        b = t.get("bicubic") if isinstance(t.get("bicubic"), Mapping) else {}
        rows.append([_md_text(t.get("split", "test")), _md_text(t.get("checkpoint") or _DASH), str(t.get("n", _DASH)),
                     f"x{t.get('scale', _DASH)}", _fmt(b.get("psnr"), ".2f"), _fmt(t.get("psnr"), ".2f"),
                     _fmt(t.get("gain_db"), "+.2f"), _fmt(b.get("ssim"), ".4f"), _fmt(t.get("ssim"), ".4f")])
    out = _md_table(["split", "checkpoint", "images", "scale", "bicubic PSNR (dB)", "PSNR (dB)", "gain (dB)",
                     "bicubic SSIM", "SSIM"], rows, "llrrrrrrr")
    out += ["", "Whole images by tiled inference (exact at the seams); PSNR and SSIM on the Y channel (BT.601) with the "
            "scale's pixels shaved at each border, by scikit-image, means over the images; the LR images are the HR "
            "images downscaled by bicubic (antialiased) and rounded to 8 bits. The validation error is the RMS error "
            "of Y in % of 255 over the validation pixels."]
    for name in sorted(p.name for p in (run.path / PLOTS).glob("sr-*.png")):
        out += ["", f"![Super-resolution {name[:-4]}]({PLOTS}/{name})", "",
                "Each row: LR (its pixels drawn large) | bicubic | ours | HR, the same crop of each."]
    return out


def _style_md(run: Run) -> list[str]:
    """A style-transfer run's test losses (unweighted terms and the weighted total) and its figures."""
    out: list[str] = []
    if run.tests:
        rows = [[_md_text(t.get("split", "test")), _md_text(t.get("checkpoint") or _DASH), str(t.get("n", _DASH)),
                 _fmt(t.get("loss"), ".6g"), _fmt(t.get("content_loss"), ".6g"), _fmt(t.get("style_loss"), ".6g"),
                 _fmt(t.get("tv_loss"), ".6g")] for t in run.tests]
        out += _md_table(["split", "checkpoint", "images", "perceptual loss", "content", "style", "tv"], rows, "llrrrrr")
        w = run.tests[-1].get("weights") or {}
        out += ["", f"Perceptual loss = {_fmt(w.get('content'), 'g')} x content + {_fmt(w.get('style'), 'g')} x style + "
                f"{_fmt(w.get('tv'), 'g')} x tv, on centre crops of {run.config.get('crop_size')} pixels (Johnson et "
                "al. 2016: feature loss at the content layer, Gram-matrix loss over the style layers, total variation)."]
    else:
        out.append("No test evaluation logged yet.")
    for name in sorted(p.name for p in (run.path / PLOTS).glob("style-*.png")):
        out += ["", f"![Style transfer {name[:-4]}]({PLOTS}/{name})", "", "Each row: content | style | output."]
    return out


def _baselines_md(run: Run) -> list[str]:
    """The majority-class and linear-on-pixels baselines of the run's final test, and whether the
    network beat them."""
    test = next((t for t in reversed(run.tests) if t.get("baselines")), None)
    if test is None:
        return []
    base = test["baselines"]
    major, linear = base.get("majority", {}), base.get("linear", {})
    rows = [["this network", _fmt(test.get("top1_err"), ".2f"), _md_text(f"{test.get('protocol', 'center')} view")],
            ["linear classifier on pixels", _fmt(linear.get("test_err"), ".2f"),
             _md_text(f"{linear.get('features')} pixel features, weight decay {linear.get('weight_decay')} "
                      f"(chosen on validation), {linear.get('seconds')} s")],
            ["majority class", _fmt(major.get("test_err"), ".2f"), _md_text(f"always class {major.get('class')}")]]
    out = ["", "## Baselines", "", *_md_table(["on the same test split", "top-1 err (%)", "how"], rows, "lrl")]
    net, lin = _num(test.get("top1_err")), _num(linear.get("test_err"))
    if net is not None and lin is not None and not net < lin:
        out += ["", "**Warning**: the network does not beat a linear classifier on the pixels."]
    return out


def _auto_md(run: Run) -> list[str]:
    """Recipe auto's choices with their reasons, and its learning-rate range test."""
    cfg = run.config
    auto = cfg.get("auto") or {}
    if cfg.get("recipe") != "auto" or not isinstance(auto, Mapping) or not auto:
        return []
    rows = [[_code(k), _code(cfg.get(k)), _md_text(v)] for k, v in auto.items()]
    out = ["", "## Recipe auto", "", "Settings chosen from the data (\"given\": set by you):", "",
           *_md_table(["setting", "value", "why"], rows, "lll")]
    if (run.path / PLOTS / "lr_find.png").is_file():
        out += ["", f"![Learning-rate range test]({PLOTS}/lr_find.png)"]
    return out


def render_comparison(
    run_dirs: Sequence[Run | PathLike],
    out_dir: PathLike,
    *,
    title: str,
    groups: Mapping[str, Sequence[Run | PathLike]] | None = None,
    intro: str = "",
    extra_sections: Sequence[tuple[str, str]] = (),
    overlay: bool = False,
    link_runs: bool = False,
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
        overlay: with ``groups``, a first panel overlays every group (one colour per group) before
            the side-by-side panels.
        link_runs: add a section linking each run's own report (``report.md`` / ``report.html``)
            and confusion matrices (``plots/confusion*.png``), by paths relative to ``out_dir``.

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

    figure = out / PLOTS / "compare.png"
    if loaded_groups:
        plot_side_by_side(loaded_groups, figure, title=title, overlay=overlay)
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
            _DASH if wall is None else _wall_time(wall),
        ])

    md = [f"# {_md_text(title)}", ""]
    if intro.strip():
        md += [intro.strip(), ""]
    md += ["## Runs", ""]
    md += _md_table(headers, rows, "llrrl" + "r" * (len(headers) - 5))
    md += ["", "## Error curves", "", f"![Error curves of the runs compared]({PLOTS}/compare.png)", "",
           "Thin dashed lines: training error; bold lines: validation error "
           "(the test error where a run has no validation split)."]
    if link_runs:
        md += ["", "## Per-run reports", "", *_run_links(runs, out)]
    for heading, body in extra_sections:
        md += ["", f"## {heading}", "", body.strip()]
    text = "\n".join(md) + "\n"
    return _write_report(out, text)


def _run_links(runs: Sequence[Run], out: Path) -> list[str]:
    """One list item per run: links to its report and confusion matrices that exist, relative to ``out``."""
    items = []
    for r in runs:
        files = [r.path / REPORT_MD, r.path / REPORT_HTML, *sorted((r.path / PLOTS).glob("confusion*.png"))]
        links = [f"[{_md_text(f.name)}]({_rel_url(f, out)})" for f in files if f.is_file()]
        items.append(f"- {_md_text(r.name)}: " + (", ".join(links) if links else "no report rendered yet"))
    return items


def _rel_url(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` as a URL path (forward slashes, unsafe characters quoted)."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(path.resolve(), start.resolve())).as_posix())


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


def _wall_time(seconds: float) -> str:
    """``401.2`` -> "401.2 s (6 min 41 s)": the exact seconds first, so they can be read back."""
    text = f"{seconds:.1f} s"
    return text + f" ({format_duration(seconds)})" if round(seconds) >= 60 else text


# Markdown that would turn into markup: backslash, code, emphasis, links, HTML and entities;
# "_" only where it can open or close emphasis (not inside a word such as resnet_20), "#" only
# after a space (a heading's closing sequence). Table pipes are escaped by _md_table.
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|(?<!\S)#")


def _md_text(v: Any) -> str:
    """Plain text safe inside a markdown list item, heading or (through _md_table) table cell."""
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(str(v).splitlines()))


def _code(v: Any) -> str:
    """A code span: shown verbatim, on one line."""
    return _DASH if v is None else "`" + " ".join(str(v).splitlines()).replace("`", "") + "`"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A GFM pipe table; "|" in a cell is escaped, which the table parser undoes (in code spans too)."""
    rule = ["---:" if a == "r" else "---" for a in align]
    return ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in (headers, rule, *rows)]


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


def _markdown():
    from markdown_it import MarkdownIt

    # CommonMark plus GFM pipe tables; "html": False escapes any raw HTML in the text.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _plain_text(inline: Any) -> str:
    """The text of an inline token (a heading's), without its markup."""
    parts = [t.content for t in inline.children or [] if t.type in ("text", "code_inline")]
    return "".join(parts).strip()


def markdown_to_html(md: str, *, title: str | None = None) -> str:
    """A standalone HTML page (title, inline CSS) from CommonMark with GFM pipe tables.

    Rendered by markdown-it-py with raw HTML disabled, so any HTML in the text is shown escaped,
    never interpreted; links with unsafe schemes (``javascript:`` and the like) are not made.

    Args:
        md: the markdown.
        title: the page title; default the first heading's text.
    """
    parser = _markdown()
    tokens = parser.parse(md)
    if title is None:
        first = next((tokens[i + 1] for i, t in enumerate(tokens) if t.type == "heading_open"), None)
        title = (_plain_text(first) if first is not None else "") or "reslab report"
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
