"""fit(): exact resume, interrupts, NaN stops, model selection on validation, bad input."""

import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from reslab.config import make_config
from reslab.errors import ReslabError
from reslab.report import render_run_report
from reslab.train.loop import TrainingDiverged, TrainingInterrupted, fit


def _cfg(**kw):
    base = dict(model="resnet20", data="embedded", batch_size=32, lr=0.05, schedule="step", milestones=[1],
                deterministic=True, progress=False, tensorboard=False, pad=2)
    base.update(kw)
    return make_config(**base)


def _weights(run_dir, tag="last"):
    return load_file(str(run_dir / "checkpoints" / f"{tag}.safetensors"))


def _events(run_dir, kind):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["event"] == kind]


def test_two_epochs_equal_one_plus_one_with_resume(tmp_path, tiny):
    fit(_cfg(epochs=2), tmp_path / "whole", data=tiny)
    fit(_cfg(epochs=1), tmp_path / "split", data=tiny)
    fit(_cfg(epochs=2), tmp_path / "split", data=tiny, resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    assert [e["epoch"] for e in _events(tmp_path / "split", "epoch")] == [1, 2]


def test_sigterm_mid_epoch_saves_and_resume_is_exact(tmp_path, tiny):
    fit(_cfg(epochs=2), tmp_path / "whole", data=tiny)

    def kill_at_step_7(step, _model):
        if step == 7:  # mid-epoch 2 (5 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="step 7"):
        fit(_cfg(epochs=2), tmp_path / "cut", data=tiny, on_step=kill_at_step_7)
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.state.pt", weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 7)
    assert _events(tmp_path / "cut", "end")[-1]["status"] == "interrupted"
    fit(_cfg(epochs=2), tmp_path / "cut", data=tiny, resume=True)
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, tiny):
    def poison(step, model):
        if step == 7:
            with torch.no_grad():
                model.head.fc.weight.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"at step 8; .*last good checkpoint \(step 5\)"):
        fit(_cfg(epochs=2), tmp_path / "nan", data=tiny, on_step=poison)
    kept = _weights(tmp_path / "nan")
    assert all(torch.isfinite(t.float()).all() for t in kept.values())
    assert _events(tmp_path / "nan", "end")[-1]["status"] == "nan"


def test_model_selection_uses_validation_and_test_is_evaluated_once(tmp_path, tiny):
    res = fit(_cfg(epochs=2), tmp_path / "r", data=tiny)
    epochs = _events(tmp_path / "r", "epoch")
    best = min(epochs, key=lambda e: e["val_err"])
    assert res.best_epoch == best["epoch"] and res.best_val_err == best["val_err"]
    tests = _events(tmp_path / "r", "test")
    assert len(tests) == 1 and tests[0]["checkpoint"] == "best"
    run = tmp_path / "r"
    for f in ("config.yaml", "env.json", "metrics.jsonl", "plots/confusion.png", "eval-test-center.json",
              "checkpoints/best.safetensors", "checkpoints/last.safetensors", "preprocess.safetensors"):
        assert (run / f).is_file(), f
    # fit writes no report (it does not import the report module); callers render it afterwards
    assert not (run / "report.md").exists()
    render_run_report(run)
    for f in ("report.md", "report.html", "plots/curves.png"):
        assert (run / f).is_file(), f
    # the final test's evaluation file agrees with the test record in metrics.jsonl
    ev = json.loads((run / "eval-test-center.json").read_text())
    assert ev["top1_err"] == tests[0]["top1_err"] and ev["checkpoint"] == "best" and ev["n"] == len(tiny.test)
    assert sum(map(sum, ev["confusion"])) == len(tiny.test)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == "resnet20" and cfg["lr"] == 0.05
    assert json.loads((run / "env.json").read_text())["params"] > 0


def test_bad_run_directories(tmp_path, tiny):
    fit(_cfg(epochs=1), tmp_path / "r", data=tiny)
    with pytest.raises(ReslabError, match="already holds a run"):
        fit(_cfg(epochs=1), tmp_path / "r", data=tiny)
    with pytest.raises(ReslabError, match="is not a run directory"):
        fit(_cfg(epochs=1), tmp_path / "empty", data=tiny, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReslabError, match="cannot write to output directory"):
        fit(_cfg(epochs=1), tmp_path / "file" / "run", data=tiny)
    with pytest.raises(ReslabError, match="holds a resnet20 run, not resnet32"):
        fit(_cfg(epochs=2, model="resnet32"), tmp_path / "r", data=tiny, resume=True)


def test_fast_path_flags_train(tmp_path, tiny):
    cfg = _cfg(epochs=1, channels_last=True, grad_clip=1.0, nesterov=True, label_smoothing=0.1, schedule="cosine")
    res = fit(cfg, tmp_path / "cl", data=tiny)
    assert res.status == "finished" and res.steps == len(tiny.train) // 32
    assert all(torch.isfinite(t.float()).all() for t in _weights(tmp_path / "cl").values())
