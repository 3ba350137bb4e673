"""The experiment figures of reslab.plots (the Figure 6 curves and confusion matrix: test_report.py)."""

import subprocess
import sys

from PIL import Image

from reslab.plots import colours, plot_error_vs_depth, plot_responses


def test_error_vs_depth_draws_ours_with_error_bars_beside_the_papers_points(tmp_path):
    lines = [{"label": "train", "depths": [20, 56], "means": [30.0, 25.0], "stds": [None, None], "dashed": True,
              "colour": "tab:blue"},
             {"label": "test", "depths": [20, 56], "means": [40.0, 35.0], "stds": [1.0, 0.5], "colour": "tab:blue"},
             {"label": "empty", "depths": [], "means": [], "stds": []}]
    path = tmp_path / "error_vs_depth.png"
    fig = plot_error_vs_depth(lines, path, title="depth", paper={"paper": {20: 8.75, 110: 6.43}})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["20", "56", "110"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["paper", "train", "test"]
    paper = next(l for l in ax.get_lines() if l.get_label() == "paper")
    assert list(paper.get_xdata()) == [20, 110] and list(paper.get_ydata()) == [8.75, 6.43]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (640, 440)
    assert not list(tmp_path.glob("*.tmp"))


def test_responses_has_layer_order_on_top_and_sorted_below(tmp_path):
    fig = plot_responses([("plain-20", [1.0, 3.0, 2.0], "tab:red", True), ("resnet-20", [0.5, 0.2, 0.9], None, False)],
                         tmp_path / "responses.png", title="Figure 7")
    top, bottom = fig.axes
    plain_top = next(l for l in top.get_lines() if l.get_label() == "plain-20")
    plain_bottom = next(l for l in bottom.get_lines() if l.get_label() == "plain-20")
    assert list(plain_top.get_ydata()) == [1.0, 3.0, 2.0] and list(plain_bottom.get_ydata()) == [3.0, 2.0, 1.0]
    assert plain_top.get_linestyle() == "--"
    assert (tmp_path / "responses.png").is_file()
    assert plot_responses([], None, title="none").axes  # nothing to draw still draws, without saving


def test_colours_are_distinct_up_to_twenty():
    assert len(set(colours(10))) == 10 and len(set(colours(20))) == 20 and colours(21)[20] == colours(21)[0]


def test_plots_import_no_backend_and_draw_without_pyplot():
    code = (
        "import sys, reslab.plots as p\n"
        "before = 'matplotlib' in sys.modules\n"
        "p.plot_error_vs_depth([{'label': 'a', 'depths': [20], 'means': [1.0], 'stds': [None]}], None, title='t')\n"
        "print(before, 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
