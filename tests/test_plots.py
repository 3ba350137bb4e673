"""The experiment figures of reslab.plots (the Figure 6 curves and confusion matrix: test_report.py)."""

import json
import subprocess
import sys

from PIL import Image

from reslab.plots import colours, plot_error_vs_depth, plot_responses, plot_side_by_side


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


def _run_dir(root, name, train, val):
    """A run directory with per-step running errors ``train`` (every 10 steps) and one ``val`` per epoch."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(f"name: {name}\nmodel: {name}\nepochs: {len(val)}\n")
    lines = [{"event": "step", "step": 10 * (i + 1), "err": e} for i, e in enumerate(train)]
    lines += [{"event": "epoch", "epoch": i + 1, "step": 20 * (i + 1), "train_err": train[2 * i + 1], "val_err": v}
              for i, v in enumerate(val)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return d


def test_side_by_side_with_overlay_draws_both_groups_in_one_panel_then_each_alone(tmp_path):
    plain = _run_dir(tmp_path, "plain56", [90.0, 80.0, 75.0, 70.0], [78.0, 69.0])
    resnet = _run_dir(tmp_path, "resnet56", [85.0, 60.0, 40.0, 30.0], [55.0, 32.0])
    path = tmp_path / "compare.png"
    fig = plot_side_by_side({"plain": [plain], "ResNet": [resnet]}, path, title="demo", overlay=True)
    overlay, left, right = fig.axes
    assert overlay.get_title() == "plain vs ResNet (overlaid)" and (left.get_title(), right.get_title()) == ("plain", "ResNet")
    assert overlay.get_shared_y_axes().joined(overlay, right) and overlay.get_ylim() == right.get_ylim()

    def lines(ax):
        return {l.get_label(): l for l in ax.get_lines()}

    drawn = lines(overlay)
    assert set(drawn) == {"plain56 train", "plain56 val", "resnet56 train", "resnet56 val"}
    # the plotted data are the logged metrics: running training error per step, validation error per epoch
    assert list(drawn["plain56 train"].get_xdata()) == [10, 20, 30, 40]
    assert list(drawn["plain56 train"].get_ydata()) == [90.0, 80.0, 75.0, 70.0]
    assert list(drawn["resnet56 val"].get_xdata()) == [20, 40] and list(drawn["resnet56 val"].get_ydata()) == [55.0, 32.0]
    # thin dashed training error, bold solid validation error; one colour per net, the same in its own panel
    assert drawn["plain56 train"].get_linestyle() == "--" and drawn["plain56 val"].get_linestyle() == "-"
    assert drawn["plain56 train"].get_linewidth() < 1.0 < 2.0 <= drawn["plain56 val"].get_linewidth()
    assert drawn["plain56 val"].get_color() == drawn["plain56 train"].get_color() != drawn["resnet56 val"].get_color()
    assert lines(left)["plain56 val"].get_color() == drawn["plain56 val"].get_color()
    assert lines(right)["resnet56 val"].get_color() == drawn["resnet56 val"].get_color()
    assert set(lines(right)) == {"resnet56 train", "resnet56 val"}
    assert [t.get_text() for t in overlay.get_legend().get_texts()][:2] == ["plain56", "resnet56"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 2.5 * im.size[1]  # three panels in a row

    # several runs per group (seeds): one legend entry for the group, in the group's colour
    seed1 = _run_dir(tmp_path, "plain56-seed1", [91.0, 82.0, 76.0, 72.0], [79.0, 70.0])
    fig = plot_side_by_side({"plain": [plain, seed1], "ResNet": [resnet]}, None, overlay=True)
    overlay = fig.axes[0]
    assert [t.get_text() for t in overlay.get_legend().get_texts()][:2] == ["plain", "resnet56"]
    assert lines(overlay)["plain56-seed1 val"].get_color() == lines(overlay)["plain56 val"].get_color()
    assert len(plot_side_by_side({"plain": [plain], "ResNet": [resnet]}, None).axes) == 2  # no overlay unless asked
