"""`reslab train / eval / predict / report` end to end on the embedded data, as a user runs them."""

import json

import pytest
import torch
from PIL import Image

from reslab.cli import main
from reslab.config import load_recipe
from reslab.precision import resolve_precision

FAST = ["--data", "embedded", "--iterations", "6", "--batch-size", "32", "--set", "val_size=200",
        "--no-progress", "--set", "tensorboard=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r20"
    assert main(["train", "resnet20", "--recipe", "short_cpu", "--out", str(out), *FAST]) == 0
    return out


def test_train_writes_a_run_directory(run, capsys):
    for f in ("config.yaml", "env.json", "metrics.jsonl", "report.md", "checkpoints/last.safetensors",
              "checkpoints/best.safetensors"):
        assert (run / f).is_file()
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "end" and "test" in events


def test_eval_protocols(run, capsys):
    for protocol in ("center", "10crop", "multiscale"):
        assert main(["eval", str(run), "--protocol", protocol, "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        # --amp auto: bf16 autocast on CPUs with native bf16, fp32 elsewhere; the line says which
        precision = resolve_precision("auto", torch.device("cpu")).name
        assert f"test ({protocol}, best checkpoint, {precision}, 1500 images)" in out and "Ankle boot" in out
        report = json.loads((run / f"eval-test-{protocol}.json").read_text())
        assert report["n"] == 1500 and 0 <= report["top1_err"] <= 100 and len(report["per_class_acc"]) == 10
        assert (run / "plots" / f"confusion-test-{protocol}.png").is_file()


def test_predict_prints_top5_for_any_pil_format(run, tmp_path, capsys):
    from reslab.data import load_dataset

    img = load_dataset("embedded").test.images[0, 0].numpy()
    Image.fromarray(img).resize((56, 56)).convert("RGB").save(tmp_path / "shoe.jpg")
    Image.fromarray(img).save(tmp_path / "shoe.bmp")
    assert main(["predict", str(run), str(tmp_path / "shoe.jpg"), str(tmp_path / "shoe.bmp"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("shoe.jpg") and len(lines) == 12
    probs = [float(line.split("%")[0]) for line in lines[1:6]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01


def test_resume_continues_from_the_saved_step(run, capsys):
    import yaml

    before = yaml.safe_load((run / "config.yaml").read_text())
    assert before["batch_size"] == 32 and before["batch_size"] != load_recipe("short_cpu")["batch_size"]
    assert main(["train", "resnet20", "--resume", str(run), "--iterations", "9", "--no-progress"]) == 0
    after = yaml.safe_load((run / "config.yaml").read_text())
    assert after == {**before, "iterations": 9}  # the run's own settings, not its recipe's, carry on
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in steps if e["event"] == "epoch"]
    assert epochs[-1]["step"] == 9
    assert "9 steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "resnet20", "--lr", "-1"], "lr must be > 0"),
    (["train", "resnet20", "--batch-size", "0"], "batch_size must be a positive integer"),
    (["train", "resnt20"], "unknown model 'resnt20'"),
    (["train", "resnet20", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["train", "resnet20", "--set", "colour=1"], "unknown keys in the overrides: colour"),
    (["train", "resnet20", "--resume", "/nonexistent/run"], "is not a run directory"),
    (["train", "resnet20", "--data", "imagefolder:/nonexistent/images", "--no-progress"], "/nonexistent/images"),
    (["eval", "/nonexistent/run"], "is not a run directory"),
    (["predict", "/nonexistent/run", "x.png"], "is not a run directory"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_resume_refuses_another_model_and_changed_settings(run, capsys):
    assert main(["train", "resnet56", "--resume", str(run)]) == 2
    assert "holds a resnet20 run, not resnet56" in capsys.readouterr().err
    assert main(["train", "resnet20", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "cannot change lr when resuming" in capsys.readouterr().err


def test_predict_bad_image_is_named(run, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert main(["predict", str(run), str(bad), "--device", "cpu"]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_report_rerenders(run, capsys):
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").is_file()


def _folder(root, classes, n=12):
    import numpy as np

    for split in ("train", "test"):
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for j in range(n):
                rng = np.random.default_rng(k * 100 + j)
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / cls / f"{j}.png")


def test_image_folder_run_is_evaluated_from_any_directory(tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    _folder(tmp_path / "imgs", ["ant", "bee"])
    _folder(tmp_path / "other", ["cat", "dog"])
    monkeypatch.chdir(tmp_path)
    assert main(["train", "resnet20", "--data", "imagefolder:imgs", "--iterations", "2", "--batch-size", "8",
                 "--set", "val_size=4", "--no-progress", "--set", "tensorboard=false", "--out", "run"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"] == f"imagefolder:{tmp_path / 'imgs'}"
    monkeypatch.chdir(tmp_path / "imgs")
    assert main(["eval", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert "24 images" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "run"), "--data", f"imagefolder:{tmp_path / 'other'}", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "the run was trained on ant, bee" in err and len(err.strip().splitlines()) == 1


@pytest.fixture()
def offline(tmp_path, monkeypatch):
    """No dataset anywhere: empty cache and home, and CIFAR-10's download URL refuses connections."""
    import socket

    from reslab.data import download as dl

    for var in ("RESLAB_CACHE", "HOME"):
        (tmp_path / var).mkdir()
        monkeypatch.setenv(var, str(tmp_path / var))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dl.Resource(
        "cifar-10-python.tar.gz", "0" * 32, (f"http://127.0.0.1:{port}/cifar-10-python.tar.gz",)),))
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("argv", [
    ["train", "resnt20"],
    ["train", "resnet20", "--recipe", "nope"],
    ["train", "resnet20", "--lr", "-1"],
    ["train", "resnet20", "--batch-size", "0"],
    ["train", "resnet20", "--set", "colour=1"],
    ["train", "resnet20", "--data", "cifar10", "--data-dir", "{empty}"],
    ["train", "resnet20", "--data", "imagefolder:/nonexistent/images"],
], ids=["unknown-model", "bad-recipe", "negative-lr", "zero-batch", "unknown-key", "cifar10-offline",
        "missing-image-folder"])
def test_bad_train_input_writes_nothing(argv, offline, capsys):
    out = offline / "o"
    argv = [a.replace("{empty}", str(offline / "empty")) for a in argv]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("reslab: error: ") and "Traceback" not in err
    assert not out.exists(), f"left behind: {sorted(str(p.relative_to(out)) for p in out.rglob('*'))}"
    assert not [p for p in offline.rglob("*") if p.is_file()], "a file was written somewhere"
