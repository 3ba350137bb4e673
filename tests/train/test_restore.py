"""Super-resolution through the one training loop and the CLI: train, eval (beside bicubic), predict
(any size, tiled), the report, and the mistakes a user makes (an image smaller than a patch, a scale
the model was not built for, data of another task, options of another task), each one line and
exit code 2. Narrow nets, a few steps, 40x36 synthetic photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab import rundir
from reslab.cli import main
from reslab.data import load_dataset
from reslab.predict import load_run
from reslab.superres import evaluate_sr_run, super_resolve
from tests.data.test_sr import _photo, write_photos

COMMON = ["--batch-size", "2", "--no-progress", "--device", "cpu", "--set", "tensorboard=false", "--iterations", "3"]
EDSR = ["edsr_baseline_x2", "--arch", "blocks=1", "--arch", "width=8", "--crop-size", "16"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def sr_run(photos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "edsr"
    torch.set_num_threads(1)
    assert main(["train", *EDSR, "--data", f"sr:{photos}", "--out", str(run), *COMMON]) == 0
    return run


def test_training_writes_psnr_beside_bicubic_and_the_crop_figure(sr_run):
    run = rundir.read_run(sr_run)
    assert run.config["recipe"] == "sr" and run.config["normalize"] == "none" and run.config["sr_loss"] == "auto"
    test = run.tests[-1]
    assert test["scale"] == 2 and test["n"] == 2 and test["protocol"] == "tiled"
    assert 5 < test["bicubic"]["psnr"] < 60 and test["gain_db"] == pytest.approx(test["psnr"] - test["bicubic"]["psnr"])
    assert run.epochs[-1]["val_err"] > 0 and "val_psnr" in run.epochs[-1] and "train_err" in run.epochs[-1]
    assert run.end["best_val_err"] == pytest.approx(min(e["val_err"] for e in run.epochs))
    saved = json.loads((sr_run / "eval-test-tiled.json").read_text())
    assert saved["psnr"] == pytest.approx(test["psnr"]) and len(saved["images"]) == 2
    assert (sr_run / "plots" / "sr-test.png").is_file() and (sr_run / "plots" / "sr-val.png").is_file()
    report = (sr_run / "report.md").read_text()
    assert "bicubic PSNR (dB)" in report and "plots/sr-test.png" in report


def test_eval_cli_prints_psnr_and_ssim_beside_bicubic(sr_run, photos, capsys):
    assert main(["eval", str(sr_run), "--device", "cpu", "--amp", "fp32"]) == 0
    out = capsys.readouterr().out
    test = rundir.read_run(sr_run).tests[-1]
    assert f"PSNR {test['psnr']:.2f} dB" in out and "bicubic" in out and "Y channel, 2-pixel border shaved" in out
    # other photos (here: the same folder given again) through --data
    ev = evaluate_sr_run(sr_run, data=f"sr:{photos}", write=False)
    assert ev.result.psnr == pytest.approx(test["psnr"], abs=1e-9)


def test_predict_upscales_any_size_into_the_named_file(sr_run, tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(_photo(9, 57, 83)).save(small)
    big = tmp_path / "out" / "big.png"
    assert main(["predict", str(sr_run), str(small), "--out", str(big), "--device", "cpu", "--amp", "fp32"]) == 0
    assert "(83x57)" in capsys.readouterr().out
    written = np.asarray(Image.open(big))
    assert written.shape == (114, 166, 3)
    run = load_run(sr_run, "best")
    lr = torch.from_numpy(_photo(9, 57, 83)).permute(2, 0, 1).contiguous()
    assert np.array_equal(written, super_resolve(run.model, lr, 2).permute(1, 2, 0).numpy())
    # several images: a folder of NAME_x2.png
    assert main(["predict", str(sr_run), str(small), str(big), "--out", str(tmp_path / "many"), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["big_x2.png", "small_x2.png"]


def test_vdsr_trains_at_any_scale(photos, tmp_path, capsys):
    run = tmp_path / "vdsr"
    assert main(["train", "vdsr", "--scale", "3", "--arch", "depth=3", "--arch", "width=8", "--crop-size", "18",
                 "--data", f"sr:{photos}", "--out", str(run), *COMMON]) == 0
    test = rundir.read_run(run).tests[-1]
    assert test["scale"] == 3 and test["overlap"] == 3  # 3 convs of 1 HR px, then bicubic: ceil(2.5 + 2.5 / 3) - 1
    small = tmp_path / "s.png"
    Image.fromarray(_photo(1, 20, 30)).save(small)
    assert main(["predict", str(run), str(small), "--out", str(tmp_path / "b.png"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "b.png").size == (90, 60)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["train", *EDSR, "--scale", "3"], "is built for x2; --scale 3 is a scale the model was not built for"),
    (["train", "edsr_baseline_x2", "--arch", "blocks=1", "--arch", "width=8", "--crop-size", "48"],
     "is 36x40, smaller than the 48-pixel training patch (crop_size); remove it, or train on smaller patches "
     "(--crop-size 36)"),
    (["train", "resnet20"], "is super-resolution data (photos, no labels); train a super-resolution network"),
    (["train", *EDSR, "--normalize", "per_channel"], "use --normalize none, as recipe sr does"),
])
def test_bad_training_input_is_one_line(argv, message, photos, tmp_path, capsys):
    assert main([*argv, "--data", f"sr:{photos}", "--out", str(tmp_path / "r"), *COMMON]) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_an_sr_model_on_other_data_is_one_line(tmp_path, capsys):
    assert main(["train", *EDSR, "--data", "embedded", "--out", str(tmp_path / "r"), *COMMON]) == 2
    assert "is a super-resolution network but embedded is not super-resolution data" in _one_line(capsys)


def test_eval_and_predict_refuse_what_does_not_apply(sr_run, tmp_path, capsys):
    for argv, message in [
        (["eval", str(sr_run), "--protocol", "10crop"], "--protocol 10crop applies to classification runs"),
        (["eval", str(sr_run), "--data", "embedded"], "embedded is not super-resolution data"),
        (["predict", str(sr_run), str(sr_run / "config.yaml")], "cannot decode image"),
        (["predict", str(sr_run), str(sr_run / "plots" / "sr-test.png"), "--topk", "3"], "--topk applies to"),
        (["predict", str(sr_run), str(sr_run / "plots" / "sr-test.png"), "--out", str(tmp_path / "x.txt")],
         "write the upscaled image as one of .png"),
    ]:
        assert main([*argv, "--device", "cpu"]) == 2, argv
        assert message in _one_line(capsys)
    assert not (tmp_path / "x.txt").exists()


def test_an_image_too_small_to_measure_is_named(sr_run, tmp_path, capsys):
    folder = write_photos(tmp_path / "tiny", n=5, size=(14, 60), masks=False)
    assert main(["eval", str(sr_run), "--data", f"sr:{folder}", "--device", "cpu"]) == 2
    assert "is 60x14: too small to measure at x2 (PSNR and SSIM need at least 16 pixels a side)" in _one_line(capsys)


def test_restore_data_loads_with_the_runs_split(sr_run, photos):
    data = load_dataset(f"sr:{photos}")
    assert rundir.read_run(sr_run).tests[-1]["n"] == len(data.test)


def test_resume_continues_exactly(photos, tmp_path):
    base = ["--data", f"sr:{photos}", "--batch-size", "2", "--no-progress", "--device", "cpu", "--set", "tensorboard=false"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *EDSR, *base, "--out", str(a), "--iterations", "2"]) == 0
    assert main(["train", "--resume", str(a), *base[2:], "--iterations", "4"]) == 0
    assert main(["train", *EDSR, *base, "--out", str(b), "--iterations", "4"]) == 0
    resumed, straight = load_run(a, "last").model.state_dict(), load_run(b, "last").model.state_dict()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    assert rundir.read_run(a).end["step"] == 4
