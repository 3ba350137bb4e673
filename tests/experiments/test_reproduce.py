"""reslab reproduce: the paper's experiments on the tiny budget and the embedded data.

Each test drives the subcommand the way the CLI does (its parser, then its handler, so errors
arrive as ReslabError rather than exit codes). One thread: on a shared 2-core machine two
threads can be an order of magnitude slower.
"""

import json
import shutil
import statistics

import pytest
import yaml

from reslab.cli import build_parser
from reslab.errors import ReslabError
from reslab.experiments import render_experiment

TINY = ["--budget", "tiny", "--data", "embedded", "--threads", "1"]


def reproduce(*argv):
    args = build_parser().parse_args(["reproduce", *(str(a) for a in argv)])
    return args._run(args)


def records(run_dir):
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]


def last(recs, event):
    return [r for r in recs if r["event"] == event][-1]


def snapshot(exp):
    """Bytes and mtimes of every run's metrics and checkpoints."""
    out = {}
    for f in sorted((exp / "runs").rglob("*")):
        if f.is_file() and (f.name == "metrics.jsonl" or f.parent.name == "checkpoints"):
            out[str(f.relative_to(exp))] = (f.read_bytes(), f.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def degradation(tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp") / "degradation"
    assert reproduce("degradation", *TINY, "--depths", "20,32", "--out", exp) == 0
    return exp


@pytest.fixture
def copy(degradation, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(degradation, dst)
    return dst


NETS = ["plain20", "plain32", "resnet20", "resnet32"]


def test_degradation_writes_the_experiment_directory(degradation):
    for name in ("report.md", "report.html", "results.json", "experiment.json", "plots/compare.png",
                 "plots/error_vs_depth.png"):
        assert (degradation / name).is_file(), name
    assert sorted(p.name for p in (degradation / "runs").iterdir()) == [f"{n}-seed0" for n in NETS]
    meta = json.loads((degradation / "experiment.json").read_text())
    assert (meta["experiment"], meta["budget"], meta["data"], meta["seeds"], meta["depths"]) == \
        ("degradation", "tiny", "embedded", 1, [20, 32])
    assert [r["path"] for r in meta["runs"]] == [f"runs/{n}-seed0" for n in NETS]
    assert meta["data_counts"] == {"train": 64, "val": 32, "test": 64}
    for n in NETS:
        run = degradation / "runs" / f"{n}-seed0"
        assert last(records(run), "end")["status"] == "finished"
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert (cfg["model"], cfg["epochs"], cfg["batch_size"], cfg["recipe"]) == (n, 1, 32, "short_cpu")
        assert last(records(run), "start")["train"] == 64
    report = (degradation / "report.md").read_text()
    assert "`tiny`" in report and "`embedded`" in report and "Wall time" in report
    assert "64 training images" in report  # the budget's settings are stated
    assert "plots/compare.png" in report and "plots/error_vs_depth.png" in report
    assert "<table>" in (degradation / "report.html").read_text()


def test_results_json_equals_the_runs_metrics(degradation):
    results = json.loads((degradation / "results.json").read_text())
    assert [n["name"] for n in results["nets"]] == NETS
    for net in results["nets"]:
        (run,) = net["runs"]
        recs = records(degradation / run["path"])
        epoch, test, end, start = last(recs, "epoch"), last(recs, "test"), last(recs, "end"), last(recs, "start")
        assert run["train_err"] == epoch["train_err"]
        assert run["final_val_err"] == epoch["val_err"]
        assert run["val_err"] == end["best_val_err"]
        assert run["test_err"] == test["top1_err"]
        assert run["params"] == start["params"] == net["params"]
        assert run["wall_time"] == end["wall_time"]
        assert net["test_err"] == {"mean": test["top1_err"], "std": None, "n": 1}
        assert net["train_err"]["mean"] == epoch["train_err"]


def test_paper_numbers_and_findings_beside_ours(degradation):
    results = json.loads((degradation / "results.json").read_text())
    assert results["paper"]["table6_test_err"] == {"20": 8.75, "32": 7.51}
    report = (degradation / "report.md").read_text()
    row = next(l for l in report.splitlines() if l.startswith("| `resnet32`"))
    assert row.rstrip(" |").endswith("7.51")
    assert next(l for l in report.splitlines() if l.startswith("| `resnet20`")).rstrip(" |").endswith("8.75")
    nets = {n["name"]: n for n in results["nets"]}
    train = {k: v["train_err"]["mean"] for k, v in nets.items()}
    test = {k: v["test_err"]["mean"] for k, v in nets.items()}
    findings = {f["claim"]: f["held"] for f in results["findings"]}
    assert findings["plain32 training error above plain20's (paper: yes)"] == (train["plain32"] > train["plain20"])
    assert findings["resnet32 training error below resnet20's (paper: yes)"] == (train["resnet32"] < train["resnet20"])
    assert findings["plain32 test error above plain20's (paper: yes)"] == (test["plain32"] > test["plain20"])
    for claim, held in findings.items():
        assert f"{claim}: **{'yes' if held else 'no'}**" in report
    both = findings["plain32 training error above plain20's (paper: yes)"] and \
        findings["resnet32 training error below resnet20's (paper: yes)"]
    assert results["verdict"].startswith("both halves of Figure 6 show") == both
    assert ("does not fully show" in results["verdict"]) == (not both)
    assert f"**Verdict**: {results['verdict']}" in report


def test_rerun_reuses_finished_runs(copy):
    before = snapshot(copy)
    assert reproduce("degradation", *TINY, "--depths", "20,32", "--out", copy) == 0
    assert snapshot(copy) == before  # nothing retrained, not one metrics line added
    session = json.loads((copy / "experiment.json").read_text())["sessions"][-1]
    assert session["trained"] == [] and session["resumed"] == [] and len(session["reused"]) == 4


def test_unfinished_run_resumes_alone_and_missing_run_is_retrained(copy):
    before = snapshot(copy)
    metrics = copy / "runs" / "resnet20-seed0" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["event"] == "end"
    metrics.write_text("".join(lines[:-1]))  # as if killed before the end line
    shutil.rmtree(copy / "runs" / "plain32-seed0")
    assert reproduce("degradation", *TINY, "--depths", "20,32", "--out", copy) == 0
    after = snapshot(copy)
    for key, value in before.items():
        if "resnet20-seed0" not in key and "plain32-seed0" not in key:
            assert after[key] == value, f"{key} changed"
    recs = records(copy / "runs" / "resnet20-seed0")
    assert [r["event"] for r in recs[len(lines) - 1:]] == ["test", "end"]  # resumed at its last state
    assert sum(r["event"] == "epoch" for r in recs) == 1 and last(recs, "end")["status"] == "finished"
    assert last(records(copy / "runs" / "plain32-seed0"), "end")["status"] == "finished"
    session = json.loads((copy / "experiment.json").read_text())["sessions"][-1]
    assert (session["resumed"], session["trained"]) == (["resnet20-seed0"], ["plain32-seed0"])


def test_render_experiment_rebuilds_the_report_from_the_runs(copy):
    report, results = (copy / "report.md").read_text(), (copy / "results.json").read_text()
    for name in ("report.md", "report.html", "results.json", "plots/compare.png"):
        (copy / name).unlink()
    assert render_experiment(copy) == copy / "report.md"
    assert (copy / "report.md").read_text() == report
    assert (copy / "results.json").read_text() == results
    assert (copy / "plots" / "compare.png").is_file() and (copy / "report.html").is_file()


def test_depth_with_two_seeds_gives_mean_and_std(tmp_path):
    exp = tmp_path / "depth"
    assert reproduce("depth", *TINY, "--depths", "20", "--seeds", "2", "--out", exp) == 0
    assert sorted(p.name for p in (exp / "runs").iterdir()) == ["resnet20-seed0", "resnet20-seed1"]
    (net,) = json.loads((exp / "results.json").read_text())["nets"]
    errs = [last(records(exp / "runs" / f"resnet20-seed{s}"), "test")["top1_err"] for s in (0, 1)]
    assert net["test_err"]["n"] == 2
    assert net["test_err"]["mean"] == pytest.approx(statistics.fmean(errs))
    assert net["test_err"]["std"] == pytest.approx(statistics.stdev(errs))
    report = (exp / "report.md").read_text()
    row = next(l for l in report.splitlines() if l.startswith("| `resnet20`"))
    assert f"{statistics.fmean(errs):.2f} ± {statistics.stdev(errs):.2f}" in row
    assert "0.27M" in row and "8.75" in row  # Table 6's parameters and error beside ours
    findings = {f["claim"]: f for f in json.loads((exp / "results.json").read_text())["findings"]}
    assert findings["parameter counts round to Table 6's"]["held"] is True


def test_shortcuts_options_a_b_c(tmp_path):
    exp = tmp_path / "shortcuts"
    assert reproduce("shortcuts", *TINY, "--depths", "20", "--out", exp) == 0
    results = json.loads((exp / "results.json").read_text())
    nets = {n["name"]: n for n in results["nets"]}
    assert list(nets) == ["resnet20-A", "resnet20-B", "resnet20-C"]
    for o in "ABC":
        cfg = yaml.safe_load((exp / "runs" / f"resnet20-{o}-seed0" / "config.yaml").read_text())
        assert cfg["model_args"] == {"shortcut": o}
    params = [nets[f"resnet20-{o}"]["params"] for o in "ABC"]
    assert params[0] < params[1] < params[2]
    findings = {f["claim"]: f["held"] for f in results["findings"]}
    errs = [nets[f"resnet20-{o}"]["test_err"]["mean"] for o in "ABC"]
    claim = next(c for c in findings if "A ≥ B ≥ C" in c)
    assert findings[claim] == (errs[0] >= errs[1] >= errs[2])
    report = (exp / "report.md").read_text()
    assert "25.03" in report and "24.52" in report and "24.19" in report


def test_responses_from_an_experiment_directory(degradation, tmp_path):
    out = tmp_path / "responses"
    assert reproduce("responses", degradation, "--images", "20", "--out", out, "--threads", "1") == 0
    results = json.loads((out / "results.json").read_text())
    got = {n["name"]: n for n in results["nets"]}
    assert set(got) == {f"{n}-seed0" for n in NETS}
    assert len(got["resnet20-seed0"]["stds"]) == 19 and len(got["plain32-seed0"]["stds"]) == 31
    assert got["plain20-seed0"]["residual"] is False and got["resnet32-seed0"]["residual"] is True
    assert (out / "plots" / "responses.png").is_file() and (out / "report.html").is_file()
    claims = {f["claim"] for f in results["findings"]}
    assert any("respond more weakly than their plain" in c for c in claims)
    assert render_experiment(out) == out / "report.md"


@pytest.mark.parametrize("argv, match", [
    (["figure9"], "unknown experiment"),
    (["degradation", "--budget", "huge"], "unknown budget"),
    (["degradation", "--depths", "20,abc"], "comma-separated integers"),
    (["degradation", "--depths", "21"], "no depth 21"),
    (["degradation", "--depths", "20,1202"], "no depth 1202"),
    (["depth", "--depths", ","], "empty"),
    (["depth", "--depths", "20,20"], "twice"),
    (["depth", "--seeds", "0"], "--seeds"),
    (["depth", "--threads", "0"], "--threads"),
    (["degradation", "some/dir"], "takes no directories"),
    (["responses"], "needs trained runs"),
])
def test_bad_input_is_a_reslab_error(argv, match, tmp_path):
    with pytest.raises(ReslabError, match=match):
        reproduce(*argv, "--out", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_responses_on_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReslabError, match="neither a run directory"):
        reproduce("responses", tmp_path / "empty", "--out", tmp_path / "out")


def test_out_holding_another_budget_is_refused(copy):
    with pytest.raises(ReslabError, match="choose another --out"):
        reproduce("degradation", "--budget", "cpu-5min", "--data", "embedded", "--out", copy)
    with pytest.raises(ReslabError, match="choose another --out"):
        reproduce("depth", *TINY, "--out", copy)


def test_auto_budget_continues_the_recorded_budget_else_picks_by_device(copy, capsys):
    from reslab.experiments import resolve_budget

    before = snapshot(copy)
    assert reproduce("degradation", "--data", "embedded", "--threads", "1", "--depths", "20,32", "--out", copy) == 0
    assert "budget tiny (auto" in capsys.readouterr().out
    assert snapshot(copy) == before  # every run reused, nothing retrained
    assert json.loads((copy / "experiment.json").read_text())["budget"] == "tiny"
    assert resolve_budget("degradation", "auto", "cpu", None) == "cpu-30min"
    assert resolve_budget("depth", "auto", "cpu", copy) == "cpu-30min"  # copy holds a degradation experiment
    assert resolve_budget("depth", "cpu-5min", "cpu", copy) == "cpu-5min"


def _image_folder(root, per_class):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for j in range(n):
                pixels = rng.integers(0, 128, (16, 16, 3), dtype=np.uint8) + 100 * k
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / cls / f"{j:03d}.png")


def test_experiment_files_name_no_absolute_path(tmp_path, monkeypatch):
    """experiment.json, results.json and the reports of a training and a responses experiment say
    the data as the user gave it and every other path relative, even with absolute arguments."""
    _image_folder(tmp_path / "mydata", {"train": 50, "test": 32})
    monkeypatch.chdir(tmp_path)
    exp, resp = tmp_path / "exp", tmp_path / "resp"
    from reslab.cli import main  # records the command line, as the console script does

    assert main(["reproduce", "degradation", "--budget", "tiny", "--data", "imagefolder:mydata", "--depths", "20",
                 "--threads", "1", "--out", str(exp), "--data-dir", str(tmp_path / "mydata")]) == 0
    assert main(["reproduce", "responses", str(exp), "--images", "10", "--out", str(resp), "--threads", "1"]) == 0
    render_experiment(exp)
    meta = json.loads((exp / "experiment.json").read_text())
    assert meta["data"] == "imagefolder:mydata" and json.loads((exp / "results.json").read_text())["data"] == meta["data"]
    assert "--out exp" in meta["command"] and "--data-dir mydata" in meta["command"]
    assert json.loads((resp / "experiment.json").read_text())["command"].startswith("reslab reproduce responses exp ")
    assert json.loads((resp / "experiment.json").read_text())["sources"] == ["../exp/runs/plain20-seed0",
                                                                            "../exp/runs/resnet20-seed0"]
    written = [f for d in (exp, resp) for f in d.rglob("*") if f.suffix in (".md", ".html", ".json")
               and "runs" not in f.relative_to(d).parts]
    assert {f.name for f in written} >= {"experiment.json", "results.json", "report.md", "report.html",
                                         "measurements.json"}
    for f in written:
        assert str(tmp_path) not in f.read_text(), f"{f.relative_to(tmp_path)} names an absolute path"
    # rerunning from the same place with the same (relative) data reuses the runs
    assert reproduce("degradation", "--budget", "tiny", "--data", "imagefolder:mydata", "--depths", "20",
                     "--threads", "1", "--out", "exp") == 0
