"""rundir: the one module that knows a run directory's files, and its reuse rules; old runs stay readable."""

import json
import shutil
from pathlib import Path

import pytest

from reslab import rundir
from reslab.errors import ReslabError

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"  # made by the code before the renovation


@pytest.fixture()
def old_run(tmp_path):
    run = tmp_path / "run_v0"
    shutil.copytree(FIXTURE, run)
    return run


def test_fixture_run_reads_back(old_run):
    run = rundir.read_run(old_run)
    assert rundir.is_run_dir(old_run)
    assert run.config["model"] == "resnet20" and run.status() == "finished"
    lines = [json.loads(line) for line in (old_run / rundir.METRICS).read_text().splitlines()]
    assert [r["step"] for r in run.steps] == [r["step"] for r in lines if r["event"] == "step"] == [2, 4, 6]
    assert run.best_val() == (1, 90.0)
    test = [r for r in lines if r["event"] == "test"][0]
    assert run.test_errors() == {"center": test["top1_err"]}
    assert run.start["total_steps"] == 6 and run.wall_time() == lines[-1]["wall_time"]
    assert rundir.run_status(old_run) == "finished" and rundir.last_record(old_run, "test") == test


def test_reuse_rules(tmp_path, old_run):
    assert rundir.reuse_decision(old_run) == "reuse"
    # unfinished, with a resumable checkpoint: resume
    metrics = old_run / rundir.METRICS
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines() if '"end"' not in line))
    assert rundir.run_status(old_run) is None and rundir.reuse_decision(old_run) == "resume"
    # interrupted (an end record that is not "finished") still resumes; a NaN is a result, reused
    with metrics.open("a") as f:
        f.write(json.dumps({"event": "end", "status": "interrupted"}) + "\n")
    assert rundir.reuse_decision(old_run) == "resume"
    with metrics.open("a") as f:
        f.write(json.dumps({"event": "end", "status": "nan"}) + "\n")
    assert rundir.reuse_decision(old_run) == "reuse"
    # no checkpoint state: start afresh; nothing there: start afresh
    metrics.write_text("")
    rundir.state_file(old_run).unlink()
    assert rundir.reuse_decision(old_run) == "fresh"
    assert rundir.reuse_decision(tmp_path / "absent") == "fresh"


def test_file_names_are_the_layout(old_run):
    assert rundir.weights_file(old_run, "best") == old_run / "checkpoints" / "best.safetensors"
    assert rundir.state_file(old_run) == old_run / "checkpoints" / "last.state.pt"
    for name in (rundir.CONFIG, rundir.METRICS, rundir.ENV, rundir.CLASSES, rundir.PREPROCESS):
        assert (old_run / name).is_file(), name


def test_truncated_last_metrics_line_is_skipped_and_bad_files_are_user_errors(old_run):
    metrics = old_run / rundir.METRICS
    metrics.write_text(metrics.read_text() + '{"event": "step", "st')
    assert len(rundir.read_metrics(old_run)) == len(rundir.read_metrics(metrics)) == 7  # start, 3 steps, epoch, test, end
    (old_run / rundir.CONFIG).write_text("model: [unclosed")
    with pytest.raises(ReslabError, match="config.yaml is not valid YAML"):
        rundir.read_config(old_run)
    (old_run / rundir.CONFIG).write_text("- a list\n")
    with pytest.raises(ReslabError, match="must hold a mapping"):
        rundir.read_run(old_run)
    with pytest.raises(ReslabError, match="is not a run directory"):
        rundir.read_run(old_run / "checkpoints")
