"""`reslab demo`, the main job: offline, plain vs residual overlaid and side by side."""

import json
import re
from urllib.parse import unquote

from reslab.cli import main
from reslab.demo import _mean_spread
from reslab.plots import plot_side_by_side
from reslab.report import render_comparison


def _links(md):
    """Markdown link targets, images excluded."""
    return [unquote(t) for t in re.findall(r"(?<!!)\[[^\]]*\]\(([^)]+)\)", md)]


def test_demo_trains_both_nets_offline_links_their_reports_and_reuses_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "no-data-here"))  # nothing but the package's data
    out = tmp_path / "demo"
    args = ["demo", "--depth", "20", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "plain20" in printed and "resnet20" in printed and "report:" in printed
    assert "reproduces these numbers exactly" in printed and "--seeds 3" in printed
    runs = {name: out / f"{name}-seed0" for name in ("plain20", "resnet20")}
    for d in runs.values():
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["event"] == "end" and lines[-1]["status"] == "finished"
        test = [r for r in lines if r["event"] == "test"]
        train_err = [r for r in lines if r["event"] == "epoch"][-1]["train_err"]
        row = next(line for line in printed.splitlines() if line.startswith(d.name.split("-")[0]))
        assert f"{train_err:.2f}" in row and f"{test[-1]['top1_err']:.2f}" in row  # the table prints the metrics

    report = (out / "report.md").read_text()
    assert "plain20" in report and "resnet20" in report and (out / "plots" / "compare.png").is_file()
    # the top-level report links each run's report and confusion matrix, by paths that resolve
    links = _links(report)
    for d in runs.values():
        for f in ("report.md", "report.html", "plots/confusion.png"):
            assert f"{d.name}/{f}" in links
    assert links and all((out / link).is_file() for link in links)
    assert "## Per-run reports" in report and 'href="plain20-seed0/report.html"' in (out / "report.html").read_text()

    # the figure: both nets overlaid, then side by side, drawing what the runs logged
    fig = plot_side_by_side({"plain": [runs["plain20"]], "ResNet": [runs["resnet20"]]}, None, overlay=True)
    overlay = fig.axes[0]
    val = {l.get_label(): list(l.get_ydata()) for l in overlay.get_lines() if l.get_gid() == "val"}
    for d in runs.values():
        logged = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        assert val[f"{d.name} val"] == [r["val_err"] for r in logged if r["event"] == "epoch"]

    mtime = (runs["resnet20"] / "metrics.jsonl").stat().st_mtime
    assert main(args) == 0  # reuses both runs
    assert (runs["resnet20"] / "metrics.jsonl").stat().st_mtime == mtime
    capsys.readouterr()
    # a run trained with other settings is never silently reused as this one
    assert main(["demo", "--depth", "20", "--epochs", "2", "--out", str(out), "--device", "cpu"]) == 2
    assert "holds a run with other settings: epochs 1 (wanted 2)" in capsys.readouterr().err


def test_demo_refuses_bad_depth_and_seeds(tmp_path, capsys):
    assert main(["demo", "--depth", "21", "--out", str(tmp_path / "d")]) == 2
    assert "--depth must be one of" in capsys.readouterr().err
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_spread_over_seeds_is_mean_and_sample_std():
    assert _mean_spread([12.0]) == "12.00"
    assert _mean_spread([10.0, 12.0, 14.0]) == "12.00 ± 2.00"


def test_comparison_links_runs_with_paths_relative_to_the_report(tmp_path):
    run = tmp_path / "runs" / "my run"
    (run / "plots").mkdir(parents=True)
    (run / "config.yaml").write_text("name: my run\nmodel: resnet20\n")
    (run / "metrics.jsonl").write_text(json.dumps({"event": "epoch", "epoch": 1, "step": 10, "train_err": 50.0}) + "\n")
    for f in ("report.md", "plots/confusion.png", "plots/confusion-test-10crop.png"):
        (run / f).write_text("x")
    bare = tmp_path / "runs" / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text("")
    out = tmp_path / "reports" / "cmp"
    md = render_comparison([run, bare], out, title="t", link_runs=True).read_text()
    links = _links(md)
    assert links == ["../../runs/my run/report.md", "../../runs/my run/plots/confusion-test-10crop.png",
                     "../../runs/my run/plots/confusion.png"]
    assert all((out / link).is_file() for link in links)
    assert "- bare: no report rendered yet" in md
    assert "Per-run reports" not in render_comparison([run], tmp_path / "plain", title="t").read_text()

