"""Segmentation through the one training loop and the CLI: train, eval, predict, resume, --init-from,
and the mistakes a user makes (a classifier on masks, a classification protocol on a segmentation run).

The data are real: tiles cut from the ISBI 2012 slices in ../shared/data (CI has them beside the
checkout), written in the challenge's layout in a temporary folder; the nets are small U-Nets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reslab import rundir
from reslab.cli import main
from reslab.config import make_config, resolve_config
from reslab.errors import ReslabError
from reslab.models import create_model
from reslab.models.base import AuxOutput
from reslab.predict import load_run
from reslab.segmetrics import seg_loss
from reslab.tiling import predict_tiled
from reslab.train.init import init_weights
from reslab.train.segment import SegmentTask

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012"
SIDE = 48
ARGS = ["--arch", "widths=8,16", "--batch-size", "2", "--crop-size", "32", "--no-progress", "--device", "cpu",
        "--set", "tensorboard=false"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def isbi_tiles(tmp_path_factory) -> Path:
    """12 slices of 48x48 cut from the real ISBI 2012 slices: 4 train, 3 val, 5 test."""
    root = tmp_path_factory.mktemp("isbi")
    for kind in ("image", "label"):
        (root / "train" / kind).mkdir(parents=True)
        for n in range(12):
            img = Image.open(ISBI / "train" / kind / f"{n}.png")
            img.crop((100, 200, 100 + SIDE, 200 + SIDE)).save(root / "train" / kind / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def seg_run(isbi_tiles, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "unet"
    code = main(["train", "unet_same", "--data", f"isbi2012:{isbi_tiles}", "--epochs", "2", "--out", str(run),
                 "--border-weight", "10", "--seg-loss", "ce+dice", *ARGS])
    assert code == 0
    return run


def _records(run: Path, event: str) -> list[dict]:
    return [r for r in rundir.read_metrics(run) if r.get("event") == event]


def test_a_segmentation_run_records_pixel_error_rand_error_and_iou_from_one_confusion_matrix(seg_run):
    test = _records(seg_run, "test")[-1]
    saved = json.loads((seg_run / "eval-test-tiled.json").read_text())
    cm = np.array(saved["confusion"])
    assert cm.sum() == 5 * SIDE * SIDE  # the 5 held-out slices, every pixel once
    assert test["pixel_err"] == pytest.approx(100.0 * (1 - np.trace(cm) / cm.sum()), abs=1e-9)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    assert [test["iou"][c] for c in ("membrane", "cell")] == pytest.approx(iou.tolist(), abs=1e-6)
    assert 0.0 <= test["rand_err"] <= 1.0
    start = _records(seg_run, "start")[0]
    assert (start["task"], start["tile"], start["train"], start["val"], start["test"]) == ("segment", 32, 4, 3, 5)
    epochs = _records(seg_run, "epoch")
    assert len(epochs) == 2 and all("val_rand_err" in e and "val_miou" in e for e in epochs)
    report = (seg_run / "report.md").read_text()
    assert "Rand err" in report and "plots/segmentation-test.png" in report and "Our split differs" in report
    assert (seg_run / "plots" / "segmentation-test.png").is_file()
    assert "plots/segmentation-val.png" in report  # the validation images drawn too, by the selected checkpoint
    val = json.loads((seg_run / "eval-val-tiled.json").read_text())
    assert val["n"] == 3 and val["checkpoint"] == test["checkpoint"]
    # the best checkpoint evaluated on validation again gives the error it was selected by
    assert test["checkpoint"] == "best"
    assert val["pixel_err"] == pytest.approx(_records(seg_run, "end")[-1]["best_val_err"], abs=1e-9)


def test_eval_cli_reproduces_the_runs_test_record(seg_run, capsys):
    before = _records(seg_run, "test")[-1]
    assert main(["eval", str(seg_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"pixel error {before['pixel_err']:.2f}%" in out and "Rand error" in out
    again = json.loads((seg_run / "eval-test-tiled.json").read_text())
    assert again["pixel_err"] == before["pixel_err"] and again["checkpoint"] == before["checkpoint"]


def test_predict_writes_masks_equal_to_the_tiled_argmax_for_an_image_of_another_size(seg_run, isbi_tiles, tmp_path):
    big = tmp_path / "slice.png"
    Image.open(ISBI / "train" / "image" / "29.png").crop((0, 0, 70, 53)).save(big)
    assert main(["predict", str(seg_run), str(big), "--out", str(tmp_path / "masks"), "--device", "cpu"]) == 0
    mask = np.asarray(Image.open(tmp_path / "masks" / "slice_mask.png"))
    assert mask.shape == (53, 70) and set(np.unique(mask)) <= {0, 255}
    run = load_run(seg_run)
    x = torch.from_numpy(np.asarray(Image.open(big).convert("L")).copy())[None]
    logits = predict_tiled(run.model, run.normalizer(x[None])[0], tile=32, num_classes=2)
    assert np.array_equal(mask, logits.argmax(0).numpy().astype(np.uint8) * 255)
    overlay = Image.open(tmp_path / "masks" / "slice_overlay.png")
    assert overlay.size == (70, 53) and overlay.mode == "RGB"


def test_resume_continues_a_segmentation_run_exactly(isbi_tiles, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # a constant lr: a 1-epoch run extended to 2 has the 2-epoch run's schedule
    data = ["--data", f"isbi2012:{isbi_tiles}", "--elastic-sigma", "10", "--schedule", "constant"]
    assert main(["train", "unet_same", *data, "--epochs", "2", "--out", str(straight), *ARGS]) == 0
    assert main(["train", "unet_same", *data, "--epochs", "1", "--out", str(split), *ARGS]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--no-progress"]) == 0
    a = load_run(straight, "last").model.state_dict()
    b = load_run(split, "last").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(straight, "epoch")[-1]["train_err"] == _records(split, "epoch")[-1]["train_err"]


def test_the_default_recipe_of_a_segmentation_model_is_segment_not_auto():
    cfg = resolve_config("unet_resnet18", data="isbi2012:x", default_recipe="segment")
    assert cfg.recipe == "segment" and cfg.optimizer == "adamw" and cfg.normalize == "per_channel"
    assert cfg.elastic_sigma == 10.0 and cfg.auto == {}


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "resnet20", "--data", "isbi2012:{root}"], "is a classifier but isbi2012"),
    (["train", "unet_same", "--data", "embedded"], "is a segmentation network but embedded"),
    (["train", "unet", "--data", "isbi2012:{root}", "--crop-size", "100"], "188"),
    (["train", "unet_same", "--data", "isbi2012:{root}", "--normalize", "per_pixel_mean"], "per_channel"),
])
def test_a_model_and_data_of_different_tasks_stop_with_one_line(argv, message, isbi_tiles, tmp_path, capsys):
    argv = [a.replace("{root}", str(isbi_tiles)) for a in argv]
    assert main([*argv, "--out", str(tmp_path / "r"), "--epochs", "1", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab: error:") and message in err and "\n" not in err


def test_commands_refuse_the_other_tasks_options(seg_run, capsys):
    classify_run = Path(__file__).resolve().parents[1] / "fixtures" / "run_v0"
    for argv, message in (
        (["eval", str(seg_run), "--protocol", "10crop"], "classification test protocol"),
        (["predict", str(seg_run), "x.png", "--topk", "3"], "--topk applies to classification runs"),
        (["predict", str(classify_run), "x.png", "--out", "masks"], "is a classification run"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_init_from_loads_torchvision_resnet18_weights_into_the_unet_encoder(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = create_model("unet_resnet18", in_chans=3, num_classes=2)
    init_weights(model, str(path))
    own = model.state_dict()
    conv = next(k for k in own if k.endswith("stem.conv.weight"))
    assert torch.equal(own[conv], tv.conv1.weight.detach())
    last = next(k for k in own if k.endswith("stages.3.1.conv2.weight"))
    assert torch.equal(own[last], tv.layer4[1].conv2.weight.detach())


def test_init_from_refuses_a_segmentation_run_for_a_classifier(seg_run):
    model = create_model("resnet20", num_classes=10)
    with pytest.raises(ReslabError, match="segmentation run"):
        init_weights(model, str(seg_run))


def test_hourglass_intermediate_supervision_adds_every_stacks_loss():
    task = SegmentTask(make_config(model="unet_same", seg_loss="ce", crop_size=32), create_model("unet_same"))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)
    target = torch.randint(0, 2, (2, 8, 8), generator=g)
    loss, main_out = task.loss(AuxOutput(b, (a,), (1.0,)), target)
    assert main_out is b
    assert torch.allclose(loss, F.cross_entropy(a, target) + F.cross_entropy(b, target), atol=1e-6)
    assert torch.allclose(task.loss(b, target)[0], seg_loss(b, target, "ce"))
