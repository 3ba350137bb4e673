"""Bad input: one line, exit code 2, never a traceback, nothing already written changed.

A table of hostile files and values found by trying the tool as a hostile user, and a
property-based test over config values (hypothesis)."""

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from reslab.cli import main
from reslab.config import FIELDS, RunConfig, make_config
from reslab.errors import ReslabError

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture()
def run(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(FIXTURE, d)
    return d


def _weights(run, tmp_path, name, change):
    w = load_file(str(run / "checkpoints" / "best.safetensors"))
    save_file({k: change(v) for k, v in w.items()}, str(tmp_path / name))
    return str(tmp_path / name)


# (files to write under tmp_path, argv with {tmp} and {run}, what the one line must say)
CASES = [
    ({"c.yaml": b"model: [unclosed\n"}, ["train", "--config", "{tmp}/c.yaml"], "is not valid YAML"),
    ({"c.yaml": b"- a\n- b\n"}, ["train", "--config", "{tmp}/c.yaml"], "must hold a mapping"),
    ({"c.yaml": b'"a string"\n'}, ["train", "--config", "{tmp}/c.yaml"], "must hold a mapping"),
    ({"c.yaml": b"model: \xff\xfe\n"}, ["train", "--config", "{tmp}/c.yaml"], "is not UTF-8 text"),
    ({"c.yaml": b"model: !!python/object/apply:os.system [echo]\n"}, ["train", "--config", "{tmp}/c.yaml"],
     "uses a YAML tag that reslab does not load"),
    ({"run/config.yaml": b""}, ["eval", "{run}", "--device", "cpu"], "names no model or data"),
    ({"run/config.yaml": b"model: [x\n"}, ["eval", "{run}", "--device", "cpu"], "is not valid YAML"),
    ({"run/preprocess.safetensors": b"garbage"}, ["eval", "{run}", "--device", "cpu"], "preprocess.safetensors is damaged"),
    ({"run/checkpoints/best.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}"}, ["eval", "{run}", "--device", "cpu"],
     "best.safetensors"),
    ({}, ["train", "resnet20", "--set", "milestones=5"], "milestones must be a list of integers"),
    ({}, ["train", "resnet20", "--set", "milestones=[a,b]"], "milestones must be a list of integers"),
    ({}, ["train", "resnet20", "--set", "model_args=7"], "model_args must be a mapping"),
    ({}, ["train", "resnet20", "--set", "data=42"], "data must be a string"),
    ({}, ["train", "resnet20", "--lr", "1e308"], "lr must be > 0 (and below 1e4)"),
    ({}, ["train", "resnet20", "--lr", "inf"], "lr must be a finite number"),
    ({}, ["train", "resnet20", "--seed", "123456789012345678901"], "seed must be an integer in [0, 2**63)"),
    ({}, ["train", "resnet20", "--arch", "num_classes=5"], "num_classes and in_chans are set from the data"),
    ({}, ["train", "resnet20", "--set", "crop_size=0"], "crop_size must be a positive"),
    ({}, ["train", "resnet20", "--set", "warmup_iters=-1"], "warmup_iters must be >= 0"),
    ({}, ["train", "resnet20", "--set", "plateau_patience=-2"], "plateau_patience must be >= 0"),
    ({}, ["train", "resnet20", "--set", "color_jitter=-1"], "color_jitter and lighting must be >= 0"),
    ({}, ["train", "resnet20", "--set", "test_scales=[-1]"], "test_scales must be positive"),
    ({}, ["train", "resnet20", "--set", "scale_range=[0,0]"], "scale_range must be [low, high]"),
    ({}, ["train", "resnet20", "--val-size", "1e30"], "val_size"),
    ({}, ["info", "resnet20", "--input-size", "3x"], "--input-size must be"),
    ({}, ["info", "resnet20", "--num-classes", "1000000000"], "parameters (242.1 GiB in float32), over the limit"),
    ({}, ["info", "resnet20", "--arch", "layers=[100000,1,1]"], "asks for 100,002 blocks"),
    ({}, ["info", "resnet20", "--input-size", "0"], "--input-size must be positive"),
    ({}, ["eval", "{run}", "--batch-size", "0", "--device", "cpu"], "batch size must be at least 1"),
    ({}, ["predict", "{run}", "{tmp}", "--device", "cpu"], "is a folder"),
    ({}, ["predict", "{run}", "http://example.com/cat.png", "--device", "cpu"], "URLs are not fetched"),
]


@pytest.mark.parametrize("files,argv,needle", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, run, capsys, files, argv, needle):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    before = _snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path, run=run) for a in argv]
    if argv[0] == "train":
        argv += ["--print-config"] if "--config" not in argv else ["--print-config"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("change,needle", [
    (lambda v: v * float("nan") if v.is_floating_point() else v, "holds NaN or Inf values"),
    (lambda v: v.long(), "is int64, the model's is float32"),
])
def test_corrupt_weights_are_refused_by_eval_and_predict(tmp_path, run, capsys, change, needle):
    path = _weights(run, tmp_path, "w.safetensors", change)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28)).save(img)
    for argv in (["eval", str(run), "--checkpoint", path, "--device", "cpu"],
                 ["predict", str(run), str(img), "--checkpoint", path, "--device", "cpu"]):
        assert main(argv) == 2
        assert needle in capsys.readouterr().err


@pytest.mark.parametrize("edit,needle", [
    (lambda s: {**s, "epoch": -5}, "is damaged: epoch"),
    (lambda s: {"a": 1}, "is not a reslab training state"),
])
def test_damaged_training_state_is_refused_on_resume(run, capsys, edit, needle):
    path = run / "checkpoints" / "last.state.pt"
    torch.save(edit(torch.load(path, weights_only=True)), path)
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--iterations", "8", "--no-progress"]) == 2
    assert needle in capsys.readouterr().err
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if k.name != ".lock"} == before


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(run, monkeypatch, capsys):
    import errno
    import os

    from reslab.train import checkpoint

    real = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _snapshot(run / "checkpoints")
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ReslabError, match="No space left on device.*the previous one is intact"):
        checkpoint.save_checkpoint(run, "last", torch.nn.Linear(2, 2), {"step": 9})
    monkeypatch.setattr(os, "replace", real)
    assert _snapshot(run / "checkpoints") == before  # and no temporary file left behind


_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**25, max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 10**6), st.floats(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(FIELDS)), _values, max_size=4))
def test_any_config_values_give_a_config_or_one_reslab_error(values):
    try:
        cfg = make_config(**{"model": "resnet20", **values})
    except ReslabError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert isinstance(cfg, RunConfig) and cfg.validate() is cfg


def _alias_bomb():
    """A billion-laughs YAML: 9**12 'lol's by aliases, a few hundred bytes on disk."""
    doc = "model: resnet20\nmodel_args:\n  a0: &a0 [" + ",".join(["lol"] * 9) + "]\n"
    for i in range(1, 12):
        doc += f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return doc


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    proc = subprocess.run([sys.executable, "-m", "reslab", "train", "--config", str(path), "--print-config"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "model_args.a1 must be" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and len(proc.stderr) < 500  # a bounded repr


def test_messages_about_shared_nested_values_stay_short():
    level = ["lol"] * 9
    for _ in range(12):  # 9**13 items if expanded, built by reference like YAML aliases
        level = [level] * 9
    with pytest.raises(ReslabError) as e:
        make_config(model="resnet20", name=level)
    assert len(str(e.value)) < 300
