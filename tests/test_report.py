"""Reports and plots rendered from run directories written in the training loop's real format."""

import html
import json
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from reslab._table import format_duration
from reslab.errors import ReslabError
from reslab.report import (
    markdown_to_html,
    plot_confusion_matrix,
    plot_error_curves,
    plot_side_by_side,
    read_metrics,
    read_run,
    render_comparison,
    render_run_report,
)


def epoch_line(e, *, val=True, scale=1.0, lr=0.1):
    r = {"event": "epoch", "epoch": e, "step": 100 * e, "time": 10.0 * e, "lr": lr,
         "train_loss": round(2.0 * scale / e, 4), "train_err": round(60.0 * scale / e, 2), "images_per_s": 1000.0}
    if val:
        r.update(val_loss=round(2.2 * scale / e, 4), val_err=round(66.0 * scale / e, 2), val_top5_err=round(5.0 / e, 2))
    return r


def step_lines(e, scale=1.0):
    return [{"event": "step", "step": 100 * (e - 1) + s, "epoch": (100 * (e - 1) + s) / 100, "time": e + s / 100,
             "lr": 0.1, "loss": 2.0 * scale / e, "err": 70.0 * scale / e + s / 25} for s in (25, 50, 75, 100)]


def make_run(root, name, *, lines, config=None, truncated_tail=None):
    d = root / name
    (d / "plots").mkdir(parents=True)
    cfg = {"model": "resnet20", "data": "cifar10", "recipe": "paper_cifar10", "epochs": 4, "batch_size": 128,
           "lr": 0.1, "seed": 0, "name": name, **(config or {})}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "env.json").write_text(json.dumps({"torch": torch.__version__, "device": "cpu", "python": "3.11.2",
                                            "git_commit": "abc1234"}))
    text = "".join(json.dumps(line) + "\n" for line in lines)
    if truncated_tail is not None:
        text += truncated_tail
    (d / "metrics.jsonl").write_text(text)
    return d


def finished_lines(*, val=True, scale=1.0, epochs=4):
    lines = []
    for e in range(1, epochs + 1):
        lines += step_lines(e, scale)
        lines.append(epoch_line(e, val=val, scale=scale))
    lines.append({"event": "test", "split": "test", "protocol": "center", "step": 100 * epochs, "loss": 0.41,
                  "top1_err": round(13.2 * scale, 2), "top5_err": 0.9, "checkpoint": "best"})
    lines.append({"event": "test", "split": "test", "protocol": "10crop", "step": 100 * epochs, "loss": 0.39,
                  "top1_err": round(12.4 * scale, 2), "top5_err": 0.8, "checkpoint": "best"})
    best = min((epoch_line(e, scale=scale) for e in range(1, epochs + 1)), key=lambda r: r["val_err"])
    lines.append({"event": "end", "status": "finished", "best_epoch": best["epoch"] if val else None,
                  "best_val_err": best["val_err"] if val else None, "wall_time": 401.2, "step": 100 * epochs})
    return lines


def md_table(md, first_header):
    """Rows (as lists of cell strings) of the markdown table whose header starts with ``first_header``."""
    lines = md.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for l in lines[start + 2:]:
        if not l.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in l.strip("|").split("|")))))
    return rows


class _Tables(HTMLParser):
    """The <table>s of an HTML page: per table its rows, per row (tag, text-align, text) per cell."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("th", "td"):
            self.cell = [tag, (dict(attrs).get("style") or "").replace("text-align:", "") or None, ""]

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.tables[-1][-1].append(tuple(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[2] += data


def html_table(page, first_header):
    """Rows (header -> (text-align, text)) of the HTML table whose first header is ``first_header``."""
    parser = _Tables()
    parser.feed(page)
    table = next(t for t in parser.tables if t[0][0] == ("th", t[0][0][1], first_header))
    header = [text for _, _, text in table[0]]
    assert all(tag == "th" for tag, _, _ in table[0]) and all(tag == "td" for row in table[1:] for tag, _, _ in row)
    return [dict(zip(header, ((align, text) for _, align, text in row))) for row in table[1:]]


def assert_png(path, min_side=300):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min(im.size) >= min_side
        pixels = np.asarray(im.convert("RGB"))
    # a blank canvas has one colour; drawn curves, text and antialiasing give hundreds
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


# -- reading --------------------------------------------------------------------------------------
def test_resumed_epoch_later_line_wins_and_truncated_line_is_skipped(tmp_path):
    lines = [epoch_line(1), epoch_line(2), epoch_line(3)]
    resumed = {**epoch_line(2), "train_err": 41.0, "val_err": 39.5, "lr": 0.01}  # rerun of epoch 2 after resume
    lines += [resumed, epoch_line(3, scale=0.9)]
    d = make_run(tmp_path, "r", lines=lines, truncated_tail='{"event": "epoch", "epoch": 4, "train_lo')

    assert len(read_metrics(d / "metrics.jsonl")) == 5
    run = read_run(d)
    assert [e["epoch"] for e in run.epochs] == [1, 2, 3]
    assert run.epochs[1]["val_err"] == 39.5 and run.epochs[2] == epoch_line(3, scale=0.9)
    assert run.end is None and run.status() == "unfinished"

    md = render_run_report(d).read_text()
    rows = md_table(md, "epoch")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["val err (%)"] == "39.50" and rows[1]["train err (%)"] == "41.00" and rows[1]["lr"] == "0.01"
    assert "**status**: unfinished" in md and "so far" in md


def test_not_a_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(ReslabError, match="not a run directory"):
        read_run(tmp_path)
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ReslabError, match="config.yaml is not valid YAML"):
        read_run(tmp_path)


# -- the run report -------------------------------------------------------------------------------
def test_run_report_numbers_equal_the_metrics(tmp_path):
    lines = finished_lines()
    d = make_run(tmp_path, "resnet20-cifar", lines=lines)
    report = render_run_report(d)
    assert report == d / "report.md"
    md = report.read_text()

    epochs = [l for l in lines if l["event"] == "epoch"]
    rows = md_table(md, "epoch")
    assert len(rows) == len(epochs)
    for row, e in zip(rows, epochs):
        assert int(row["epoch"]) == e["epoch"]
        assert float(row["lr"]) == e["lr"]
        assert float(row["train loss"]) == pytest.approx(e["train_loss"], abs=5e-5)
        assert float(row["train err (%)"]) == pytest.approx(e["train_err"], abs=5e-3)
        assert float(row["val loss"]) == pytest.approx(e["val_loss"], abs=5e-5)
        assert float(row["val err (%)"]) == pytest.approx(e["val_err"], abs=5e-3)

    tests = {r["protocol"]: r for r in md_table(md, "split")}
    assert set(tests) == {"center", "10crop"}
    assert float(tests["center"]["top-1 err (%)"]) == 13.2 and float(tests["10crop"]["top-1 err (%)"]) == 12.4
    assert float(tests["center"]["top-5 err (%)"]) == 0.9 and tests["center"]["checkpoint"] == "best"

    end = lines[-1]
    assert f"**best val error**: {end['best_val_err']:.2f} % at epoch {end['best_epoch']}" in md
    assert "**wall time**: 401.2 s (6 min 41 s)" in md
    for key, value in (("model", "`resnet20`"), ("data", "`cifar10`"), ("recipe", "`paper_cifar10`"),
                       ("device", "`cpu`"), ("epochs", "4 of 4"), ("status", "finished")):
        assert f"**{key}**: {value}" in md
    assert "# Run resnet20-cifar" in md
    assert "![Training and validation error](plots/curves.png)" in md
    assert "confusion" not in md  # no confusion.png in this run
    assert_png(d / "plots" / "curves.png")

    page = (d / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert '<img src="plots/curves.png"' in page
    html_rows = html_table(page, "epoch")
    assert len(html_rows) == len(epochs)
    for row, e in zip(html_rows, epochs):  # every per-epoch row made it into the HTML table, right-aligned
        cells = [str(e["epoch"]), f"{e['lr']:.4g}", f"{e['train_loss']:.4f}", f"{e['train_err']:.2f}",
                 f"{e['val_loss']:.4f}", f"{e['val_err']:.2f}"]
        assert list(row.values()) == [("right", c) for c in cells]
    tests_html = [(r["protocol"][1], r["top-1 err (%)"]) for r in html_table(page, "split")]
    assert tests_html == [("center", ("right", "13.20")), ("10crop", ("right", "12.40"))]
    assert "<li><strong>model</strong>: <code>resnet20</code></li>" in page
    assert not list(d.rglob("*.tmp"))  # atomic writes leave no temporaries behind


def test_best_val_is_computed_from_epochs_while_unfinished(tmp_path):
    lines = [epoch_line(1), {**epoch_line(2), "val_err": 20.0}, {**epoch_line(3), "val_err": 25.0}]
    md = render_run_report(make_run(tmp_path, "r", lines=lines)).read_text()
    assert "**best val error**: 20.00 % at epoch 2" in md
    assert "No test evaluation logged yet." in md


def test_run_without_val_renders_and_says_so(tmp_path):
    d = make_run(tmp_path, "noval", lines=finished_lines(val=False))
    md = render_run_report(d).read_text()
    assert "No validation split in this run" in md
    assert "**best val error**: no validation error logged" in md
    assert list(md_table(md, "epoch")[0]) == ["epoch", "lr", "train loss", "train err (%)"]
    assert_png(d / "plots" / "curves.png")

    # the bold line is the test error, not a validation curve that does not exist
    ax = plot_error_curves([d], None).axes[0]
    assert {l.get_gid() for l in ax.get_lines()} == {"train", "test"}
    test_line = next(l for l in ax.get_lines() if l.get_gid() == "test")
    assert sorted(test_line.get_ydata()) == [12.4, 13.2] and set(test_line.get_xdata()) == {400.0}


@pytest.mark.parametrize("lines", [[], step_lines(1)], ids=["no-metrics", "steps-only"])
def test_run_without_epochs_renders_and_says_so(tmp_path, lines):
    d = make_run(tmp_path, "fresh", lines=lines)
    md = render_run_report(d).read_text()
    assert "No epoch finished yet." in md and "No test evaluation logged yet." in md
    assert "**epochs**: 0 of 4" in md and "**status**: unfinished" in md
    assert_png(d / "plots" / "curves.png")
    assert "<img src=\"plots/curves.png\"" in (d / "report.html").read_text()


def test_confusion_png_is_embedded_when_present(tmp_path):
    d = make_run(tmp_path, "r", lines=finished_lines())
    counts = torch.tensor([[8, 2, 0], [1, 6, 3], [0, 0, 0]])
    fig = plot_confusion_matrix(counts, ["cat", "dog", "ship"], d / "plots" / "confusion.png")
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[80, 20, 0], [10, 60, 30], [0, 0, 0]])  # % per true-class row
    assert_png(d / "plots" / "confusion.png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cat", "dog", "ship"]

    raw = plot_confusion_matrix(counts.numpy(), None, None, normalize=False)
    np.testing.assert_array_equal(np.asarray(raw.axes[0].images[0].get_array()), counts.numpy())

    plot_confusion_matrix(counts, ["cat", "dog", "ship"], d / "plots" / "confusion-test-10crop.png")
    render_run_report(d)
    md, page = (d / "report.md").read_text(), (d / "report.html").read_text()
    assert "![Confusion matrix confusion](plots/confusion.png)" in md
    for name in ("confusion.png", "confusion-test-10crop.png"):
        assert f'<img src="plots/{name}"' in page and f'<a href="plots/{name}">' in page


@pytest.mark.parametrize("matrix,classes", [(np.zeros((2, 3)), ["a", "b"]), (np.eye(3), ["a", "b"])])
def test_confusion_matrix_rejects_bad_input(matrix, classes):
    with pytest.raises(ReslabError):
        plot_confusion_matrix(matrix, classes, None)


def test_rendering_twice_gives_identical_files(tmp_path):
    d = make_run(tmp_path, "r", lines=finished_lines())
    files = ["report.md", "report.html", "plots/curves.png"]
    render_run_report(d)
    first = {f: (d / f).read_bytes() for f in files}
    render_run_report(d)
    assert {f: (d / f).read_bytes() for f in files} == first

    out = tmp_path / "cmp"
    render_comparison([d], out, title="t")
    cmp_files = ["report.md", "report.html", "plots/compare.png"]
    first = {f: (out / f).read_bytes() for f in cmp_files}
    render_comparison([d], out, title="t")
    assert {f: (out / f).read_bytes() for f in cmp_files} == first


# -- plots ----------------------------------------------------------------------------------------
def test_figure6_style_thin_dashed_train_and_bold_solid_val(tmp_path):
    a = make_run(tmp_path, "plain-20", lines=finished_lines())
    b = make_run(tmp_path, "plain-56", lines=finished_lines(scale=1.3))
    fig = plot_error_curves([a, b], tmp_path / "curves.png", title="Figure 6 left")
    ax = fig.axes[0]
    assert_png(tmp_path / "curves.png")

    colours = []
    for run_dir in (a, b):
        run = read_run(run_dir)
        train = [l for l in ax.get_lines() if l.get_label() == f"{run.name} train"]
        val = [l for l in ax.get_lines() if l.get_label() == f"{run.name} val"]
        assert len(train) == 1 and len(val) == 1
        train, val = train[0], val[0]
        assert train.get_gid() == "train" and val.get_gid() == "val"
        assert train.get_linestyle() == "--" and val.get_linestyle() == "-"
        assert train.get_linewidth() < 1.0 < 2.0 <= val.get_linewidth()
        assert train.get_color() == val.get_color()
        colours.append(val.get_color())
        # the lines plot the logged numbers against iterations
        assert list(val.get_xdata()) == [e["step"] for e in run.epochs]
        assert list(val.get_ydata()) == [e["val_err"] for e in run.epochs]
        assert list(train.get_xdata()) == [s["step"] for s in run.steps]
        assert list(train.get_ydata()) == [s["err"] for s in run.steps]
    assert colours[0] != colours[1]

    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["plain-20", "plain-56"]
    assert ax.get_ylabel() == "error (%)" and ax.get_xlabel() == "iterations"
    assert ax.get_ylim()[0] == 0.0

    by_epoch = plot_error_curves([a], None, x="epoch").axes[0]
    val = next(l for l in by_epoch.get_lines() if l.get_gid() == "val")
    assert list(val.get_xdata()) == [1, 2, 3, 4] and by_epoch.get_xlabel() == "epochs"
    with pytest.raises(ReslabError, match="x must be"):
        plot_error_curves([a], None, x="iters")


def test_side_by_side_has_one_axes_per_group_with_shared_y(tmp_path):
    runs = {n: make_run(tmp_path, n, lines=finished_lines(scale=s))
            for n, s in (("plain20", 1.0), ("plain56", 1.3), ("resnet20", 0.9), ("resnet56", 0.7))}
    fig = plot_side_by_side({"plain": [runs["plain20"], runs["plain56"]],
                             "ResNet": [runs["resnet20"], runs["resnet56"]]}, tmp_path / "fig6.png", title="Figure 6")
    assert len(fig.axes) == 2
    plain, resnet = fig.axes
    assert plain.get_title() == "plain" and resnet.get_title() == "ResNet"
    assert plain.get_ylim() == resnet.get_ylim()
    assert plain.get_shared_y_axes().joined(plain, resnet)
    top = max(max(l.get_ydata()) for ax in fig.axes for l in ax.get_lines())
    assert plain.get_ylim()[1] >= top
    assert {l.get_label() for l in resnet.get_lines()} == {"resnet20 train", "resnet20 val", "resnet56 train", "resnet56 val"}
    assert_png(tmp_path / "fig6.png")
    with Image.open(tmp_path / "fig6.png") as im:
        assert im.size[0] > 1.8 * im.size[1]  # two panels side by side


def test_comparison_report_lists_every_run(tmp_path):
    names = {"plain20": 1.0, "plain56": 1.3, "resnet20": 0.9, "resnet56": 0.7}
    dirs = {n: make_run(tmp_path / "runs", n, lines=finished_lines(scale=s), config={"params": 272_474})
            for n, s in names.items()}
    unfinished = make_run(tmp_path / "runs", "resnet110", lines=[epoch_line(1)], config={"model": "resnet110"})
    out = tmp_path / "experiments" / "degradation"
    report = render_comparison(
        [dirs["plain20"], dirs["plain56"], dirs["resnet20"]], out, title="Figure 6: plain vs ResNet",
        groups={"plain": [dirs["plain20"], dirs["plain56"]], "ResNet": [dirs["resnet20"], dirs["resnet56"], unfinished]},
        intro="Deeper **plain** nets train worse.", extra_sections=[("Reading", "- bold: validation\n- `dashed`: train")],
    )
    assert report == out / "report.md"
    md = report.read_text()
    rows = {r["run"]: r for r in md_table(md, "run")}
    assert list(rows) == ["plain20", "plain56", "resnet20", "resnet56", "resnet110"]  # group-only runs appended
    for n, s in names.items():
        run = read_run(dirs[n])
        assert float(rows[n]["best val err (%)"]) == pytest.approx(run.end["best_val_err"], abs=5e-3)
        assert float(rows[n]["test err center (%)"]) == pytest.approx(13.2 * s, abs=5e-3)
        assert float(rows[n]["test err 10crop (%)"]) == pytest.approx(12.4 * s, abs=5e-3)
        assert rows[n]["params"] == "0.27M" and rows[n]["epochs"] == "4/4" and rows[n]["status"] == "finished"
        assert rows[n]["wall time"].startswith("401.2 s")
    assert rows["resnet110"]["status"] == "unfinished" and rows["resnet110"]["test err center (%)"] == "—"
    assert rows["resnet110"]["model"] == "`resnet110`" and rows["resnet110"]["params"] == "—"
    assert "Deeper **plain** nets train worse." in md and "## Reading" in md

    assert_png(out / "plots" / "compare.png")
    with Image.open(out / "plots" / "compare.png") as im:
        assert im.size[0] > 1.8 * im.size[1]
    page = (out / "report.html").read_text()
    assert '<img src="plots/compare.png"' in page and "<strong>plain</strong>" in page
    html_rows = html_table(page, "run")
    assert [r["run"][1] for r in html_rows] == [*names, "resnet110"]
    assert [r["model"][1] for r in html_rows] == ["resnet20"] * 4 + ["resnet110"]
    assert {r["best val err (%)"][0] for r in html_rows} == {"right"}
    assert "<title>Figure 6: plain vs ResNet</title>" in page
    assert "<li><code>dashed</code>: train</li>" in page

    single = render_comparison([dirs["plain20"]], tmp_path / "one", title="one")
    assert "plain20" in single.read_text() and (tmp_path / "one" / "plots" / "compare.png").exists()


# -- markdown -> HTML -----------------------------------------------------------------------------
def test_markdown_to_html_renders_what_reports_use():
    md = "\n".join([
        "# Title with `code` & <tag>",
        "",
        "A paragraph with **bold** text",
        "over two lines and a [link](a.html).",
        "",
        "| name | err (%) |",
        "| --- | ---: |",
        "| a\\|b | 1.50 |",
        "| `c\\|d` | 2.00 |",
        "",
        "- item one",
        "- item **two**",
        "",
        "![plot](plots/x.png)",
        "",
        "```",
        "x = 1 < 2",
        "```",
        "## Second",
    ])
    page = markdown_to_html(md)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<style>" in page and '<meta charset="utf-8">' in page
    assert "<title>Title with code &amp; &lt;tag&gt;</title>" in page
    assert "<h1>Title with <code>code</code> &amp; &lt;tag&gt;</h1>" in page
    assert "<p>A paragraph with <strong>bold</strong> text\nover two lines and a <a href=\"a.html\">link</a>.</p>" in page
    rows = html_table(page, "name")
    assert [list(r.values()) for r in rows] == [[(None, "a|b"), ("right", "1.50")], [(None, "c|d"), ("right", "2.00")]]
    assert "<td><code>c|d</code></td>" in page
    assert "<ul>\n<li>item one</li>\n<li>item <strong>two</strong></li>\n</ul>" in page
    assert '<img src="plots/x.png" alt="plot"' in page
    assert "<pre><code>x = 1 &lt; 2\n</code></pre>" in page
    assert "<h2>Second</h2>" in page
    assert "<tag>" not in page
    assert markdown_to_html("no heading").count("<title>reslab report</title>") == 1
    assert "<title>given</title>" in markdown_to_html("# heading", title="given")


def test_markdown_to_html_passes_no_raw_html_or_unsafe_links():
    page = markdown_to_html("# x\n\n<script>alert(1)</script>\n\n<b onclick=x>b</b> [a](javascript:alert(1)) "
                            "<javascript:alert(2)> <img src=x onerror=y>")
    assert "<script" not in page and "<b " not in page and "<img" not in page and 'href="javascript' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


HOSTILE = "<script>alert(1)</script> *x* _y_ a|b [l](javascript:z) &amp; `c` \\ snake_case #"


def test_untrusted_run_text_is_escaped_in_reports(tmp_path):
    d = make_run(tmp_path, "r", lines=finished_lines(), config={"name": HOSTILE, "model": "<b>m|x</b>"})
    page = render_run_report(d).with_name("report.html").read_text()
    assert "<script" not in page and "<b>" not in page and "<em>" not in page and "<a href" not in page
    assert f"<title>Run {html.escape(HOSTILE, quote=False)}</title>" in page
    assert f"<h1>Run {html.escape(HOSTILE, quote=False)}</h1>" in page
    assert "<li><strong>model</strong>: <code>&lt;b&gt;m|x&lt;/b&gt;</code></li>" in page
    assert "snake_case" in (d / "report.md").read_text()  # no needless escapes inside words

    out = tmp_path / "cmp"
    render_comparison([d], out, title=f"t {HOSTILE}")
    page = (out / "report.html").read_text()
    assert "<script" not in page and "<em>" not in page and 'href="javascript' not in page
    row = html_table(page, "run")[0]
    assert row["run"][1] == HOSTILE and row["model"][1] == "<b>m|x</b>"
    assert f"<h1>t {html.escape(HOSTILE, quote=False)}</h1>" in page


@pytest.mark.parametrize("seconds,text", [(None, "—"), (0.04, "0.0 s"), (12.34, "12.3 s"), (59.4, "59.4 s"),
                                          (59.6, "1 min 00 s"), (401.2, "6 min 41 s"), (3599.4, "59 min 59 s"),
                                          (3720.0, "1 h 02 min"), (90000.0, "25 h 00 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_import_chooses_no_backend_and_plots_avoid_pyplot(tmp_path):
    code = (
        "import sys, reslab.report as r\n"
        "before = 'matplotlib' in sys.modules\n"
        "r.plot_confusion_matrix([[1, 0], [0, 1]], ['a', 'b'], None)\n"
        "print(before, 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
