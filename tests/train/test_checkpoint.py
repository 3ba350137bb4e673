"""Checkpoints survive kills at any instant; one writer per run; nothing of the user's is lost."""

import multiprocessing as mp
import os
import random
import signal
import stat
import time

import pytest
import torch
from torch import nn

from reslab import rundir
from reslab.cli import main
from reslab.errors import ReslabError
from reslab.io import atomic_write_text
from reslab.train.checkpoint import load_checkpoint, save_checkpoint

FAST = ["--data", "embedded", "--iterations", "2", "--batch-size", "32", "--set", "val_size=100",
        "--no-progress", "--set", "tensorboard=false"]


def _state(step):
    return {"optimizer": {}, "schedule": {}, "scaler": {}, "rng": {}, "epoch": 0, "batch": step, "step": step}


def _save_forever(run_dir, kill_at=None, saved_once=None):
    """Save checkpoints of steps 1, 2, ... whose weights all equal the step; with ``kill_at`` =
    (n, "before" | "after"), SIGKILL this process at the n-th file rename."""
    torch.set_num_threads(1)
    if kill_at is not None:
        real, calls = os.replace, [0]

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == kill_at[0] and kill_at[1] == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
            if calls[0] == kill_at[0] and kill_at[1] == "after":
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
    model = nn.Linear(8, 8)
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        save_checkpoint(run_dir, "last", model, _state(step))
        if saved_once is not None and step == 1:
            saved_once.set()


def _check_resumable(run_dir):
    """Every kill leaves no checkpoint yet, or a whole one: weights of the step the state names."""
    if not rundir.state_file(run_dir).is_file():
        return None
    assert rundir.prepare(run_dir, resume=True)  # also clears the killed save's temporary files
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    model = nn.Linear(8, 8)
    state = load_checkpoint(run_dir, model, repair=True)
    assert all(torch.all(p == state["step"]) for p in model.parameters()), state["step"]
    # the convenience copy for eval/predict is repaired to the same step
    again = nn.Linear(8, 8)
    from reslab.predict import load_run_weights

    load_run_weights(run_dir, "last", again)
    assert all(torch.all(p == state["step"]) for p in again.parameters())
    return state["step"]


def _run_dir(tmp_path, name):
    d = tmp_path / name
    (d / "checkpoints").mkdir(parents=True)
    (d / "config.yaml").write_text("model: resnet20\n")
    return d


def test_sigkill_at_random_instants_of_a_save_loop_always_leaves_a_resumable_checkpoint(tmp_path):
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    kills, resumable = 0, 0
    for i in range(40):
        run_dir = _run_dir(tmp_path, f"r{i}")
        saved_once = ctx.Event()
        proc = ctx.Process(target=_save_forever, args=(run_dir, None, saved_once))
        proc.start()
        # killed at a random instant after the first commit, however slow the machine is today
        assert saved_once.wait(120)
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        kills += 1
        resumable += _check_resumable(run_dir) is not None
    assert kills == 40 and resumable == 40


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigkill_before_and_after_every_rename_of_a_save(tmp_path, when):
    # A save of a resumable checkpoint renames two files (the state commit, then the weights
    # copy); the first save's renames are 1 and 2, the second's 3 and 4.
    ctx = mp.get_context("fork")
    steps = []
    for n in range(1, 6):
        run_dir = _run_dir(tmp_path, f"{when}{n}")
        proc = ctx.Process(target=_save_forever, args=(run_dir, (n, when)))
        proc.start()
        proc.join(timeout=60)
        assert proc.exitcode == -signal.SIGKILL
        steps.append(_check_resumable(run_dir))
    # the state rename is the commit: before it the previous checkpoint stands, after it the new one
    want = {"before": [None, 1, 1, 2, 2], "after": [1, 1, 2, 2, 3]}[when]
    assert steps == want


def test_a_second_writer_is_refused_with_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    held = rundir.lock(out)
    try:
        assert main(["train", "resnet20", *FAST, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"in use by another reslab process (pid {os.getpid()})" in err and len(err.strip().splitlines()) == 1
        with pytest.raises(ReslabError, match="in use by another reslab process"):
            rundir.lock(out)
    finally:
        held.release()
    assert main(["train", "resnet20", *FAST, "--out", str(out)]) == 0  # released: the run proceeds
    held = rundir.lock(out)
    try:  # a resume of a run that is being written is refused too
        assert main(["train", "--resume", str(out), "--iterations", "3", "--no-progress"]) == 2
        assert "in use by another reslab process" in capsys.readouterr().err
    finally:
        held.release()


def test_out_that_holds_other_files_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    assert main(["train", "resnet20", *FAST, "--out", str(out)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["report.md"] and (out / "report.md").read_text() == "my notes"
    (out / "keep.txt").write_text("keep")
    assert main(["train", "resnet20", *FAST, "--out", str(out), "--force"]) == 0
    assert (out / "keep.txt").read_text() == "keep" and rundir.run_status(out) == "finished"


def test_failed_start_leaves_nothing_and_a_run_without_checkpoint_starts_again(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", "resnet20", *FAST, "--set", "val_size=99999", "--out", str(out)]) == 2
    capsys.readouterr()
    assert not out.exists()
    # a run whose loss is NaN in its first steps saved no checkpoint: it can be started again
    from reslab.config import make_config
    from reslab.train import TrainingDiverged, fit

    def poison(step, model):  # the weights become NaN after the first step
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    cfg = make_config(model="resnet20", data="embedded", iterations=2, batch_size=32, val_size=100, progress=False,
                      tensorboard=False)
    with pytest.raises(TrainingDiverged, match="No checkpoint had been saved yet"):
        fit(cfg, out, on_step=poison)
    assert rundir.run_status(out) == "nan" and not rundir.state_file(out).exists()
    assert main(["train", "resnet20", *FAST, "--out", str(out)]) == 0
    assert rundir.run_status(out) == "finished"


def test_atomic_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
