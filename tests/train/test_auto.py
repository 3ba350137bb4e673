"""Recipe auto: the settings chosen from the data, the range test, the flip pilot, the CLI."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
import yaml
from PIL import Image

from reslab.cli import main
from reslab.config import AUTO_KEYS, auto_pending, make_config, resolve_config
from reslab.data import DatasetSplits, TensorImages
from reslab.train import logging
from reslab.train.auto import LR_FIND, adopt_auto, flip_pilot, lr_range_test, resolve_auto


def test_no_recipe_named_means_auto_and_what_the_user_gave_is_kept():
    cfg = resolve_config("resnet20", data="embedded", epochs=3, lr=0.05)
    assert cfg.recipe == "auto" and auto_pending(cfg)
    assert cfg.auto == {"epochs": "given", "lr": "given"}
    assert (cfg.schedule, cfg.nesterov, cfg.weight_decay, cfg.label_smoothing) == ("onecycle", True, 5e-4, 0.1)
    assert (cfg.epochs, cfg.lr) == (3, 0.05)
    # --iterations sets the length: epochs are not chosen either
    assert "epochs" in resolve_config("resnet20", iterations=7).auto
    # a named recipe is that recipe; --recipe auto is auto too
    assert resolve_config("resnet20", recipe="short_cpu").recipe == "short_cpu"
    assert resolve_config("resnet20", recipe="auto", batch_size=32).auto == {"batch_size": "given"}
    # a complete saved config (an earlier run's) reruns as it is, not re-chosen
    full = make_config(model="resnet20").to_dict()
    assert resolve_config(config=full).recipe is None
    # a chosen auto config stays chosen
    done = dict(resolve_config("resnet20").to_dict(), auto={k: "why" for k in AUTO_KEYS})
    assert not auto_pending(resolve_config(config=done))


def _bars(n: int, seed: int, side: int = 16, vertical: bool = True) -> TensorImages:
    """Class = where a bright bar is: left/right half (``vertical``: a mirror swaps the class) or
    top/bottom half (a mirror keeps it)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 80, (n, 1, side, side), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        lo = c * side // 2 + side // 8
        if vertical:
            images[i, :, :, lo:lo + side // 4] += 150
        else:
            images[i, :, lo:lo + side // 4, :] += 150
    return TensorImages(images, labels)


def _splits(vertical: bool, n: int = 256) -> DatasetSplits:
    return DatasetSplits("toy", ["a", "b"], 1, (16, 16), _bars(n, 0, vertical=vertical), _bars(64, 1, vertical=vertical),
                         _bars(64, 2, vertical=vertical))


def test_rules_for_batch_epochs_pad_and_normalisation():
    cfg = resolve_config("resnet20", data="embedded", lr=0.1, augment="pad_crop_flip")
    out = resolve_auto(cfg, _splits(True, n=256), torch.device("cpu"), log=lambda _: None)
    assert out.batch_size == 32  # under 2,000 images
    assert out.epochs == min(max(math.ceil(2500 / (256 // 32)), 10), 100) == 100
    assert out.pad == 2  # 16 / 8
    assert out.normalize == "per_channel"  # a mean image needs 10,000+ images
    assert (out.lr, out.augment) == (0.1, "pad_crop_flip")  # given: kept
    assert set(out.auto) == set(AUTO_KEYS) and out.auto["lr"] == "given"
    assert "256 training images" in out.auto["batch_size"] and "an eighth" in out.auto["pad"]
    assert not auto_pending(out)
    assert resolve_auto(out, _splits(True), torch.device("cpu")) is out  # nothing left to choose


def test_range_test_is_geometric_and_picks_the_lr_of_the_lowest_smoothed_loss(tmp_path):
    cfg = make_config(model="resnet20", batch_size=32, pad=2, normalize="per_channel", recipe="auto")
    (tmp_path / "plots").mkdir()
    found = lr_range_test(cfg, _splits(True), torch.device("cpu"), tmp_path, steps=30)
    lrs, losses = found["lrs"], found["losses"]
    assert lrs[0] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx((10 / 1e-5) ** (1 / 29))
    # the smoothed loss: a bias-corrected exponential average (beta 0.9) of the recorded losses
    avg, smoothed = 0.0, []
    for i, v in enumerate(losses):
        avg = 0.9 * avg + 0.1 * v
        smoothed.append(avg / (1 - 0.9 ** (i + 1)))
    assert smoothed == pytest.approx(found["smoothed"], rel=1e-12)
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    assert found["lr"] == float(f"{min(lrs[best], 1.0):.3g}")
    assert (tmp_path / "plots" / "lr_find.png").stat().st_size > 0
    # cached in the run directory: the saved record is what a second call returns...
    record = json.loads((tmp_path / LR_FIND).read_text())
    record["lr"] = 0.0123
    (tmp_path / LR_FIND).write_text(json.dumps(record))
    assert lr_range_test(cfg, _splits(True), torch.device("cpu"), tmp_path, steps=30)["lr"] == 0.0123
    # ...unless a setting it depends on changed
    other = make_config(model="resnet20", batch_size=16, pad=2, normalize="per_channel", recipe="auto")
    assert lr_range_test(other, _splits(True), torch.device("cpu"), tmp_path, steps=30)["lr"] != 0.0123


@pytest.mark.parametrize("vertical, augment", [(True, "pad_crop"), (False, "pad_crop_flip")])
def test_flip_pilot_leaves_mirrors_out_only_where_a_mirror_changes_the_class(vertical, augment):
    cfg = make_config(model="resnet20", batch_size=32, pad=2, normalize="per_channel", lr=0.05, recipe="auto")
    pilot = flip_pilot(cfg, _splits(vertical), torch.device("cpu"), steps=60)
    assert pilot["err"] < 10  # the pilot learned the task
    assert pilot["augment"] == augment, pilot["reason"]
    if vertical:
        assert pilot["err_flipped"] > 90  # a mirror moves the bar to the other class's half
    assert pilot["err_grey"] is None  # grayscale data: no colour evidence


def test_adopt_auto_takes_the_saved_runs_choices_for_a_resume():
    saved = make_config(model="resnet20", recipe="auto", batch_size=32, epochs=50, lr=0.3, pad=2, augment="pad_crop",
                        normalize="per_channel", auto={k: "why" for k in AUTO_KEYS})
    wanted = resolve_config("resnet20", epochs=60)
    out = adopt_auto(saved, wanted)
    assert (out.batch_size, out.epochs, out.lr, out.augment) == (32, 60, 0.3, "pad_crop")
    assert not auto_pending(out)


def test_cli_train_without_a_recipe_chooses_from_the_data_and_saves_the_reasons(tmp_path, monkeypatch):
    for split, n in (("train", 24), ("test", 6)):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), tuple(max(0, v - 3 * i) for v in colour)).save(
                    tmp_path / "imgs" / split / name / f"{i}.png")
    log = io.StringIO()
    monkeypatch.setattr(logging, "log_stream", log)
    out = tmp_path / "run"
    assert main(["train", "resnet20", "--data", f"imagefolder:{tmp_path / 'imgs'}", "--epochs", "2", "--no-progress",
                 "--out", str(out), "--set", "tensorboard=false"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["recipe"] == "auto" and set(cfg["auto"]) == set(AUTO_KEYS)
    assert cfg["auto"]["epochs"] == "given" and cfg["epochs"] == 2
    assert cfg["batch_size"] == 32 and cfg["pad"] == 2
    assert "range test" in cfg["auto"]["lr"] and cfg["lr"] == json.loads((out / LR_FIND).read_text())["lr"]
    assert "pilot" in cfg["auto"]["augment"] and "grey images" in cfg["auto"]["augment"]
    assert (out / "plots" / "lr_find.png").is_file()
    text = log.getvalue()
    for key in AUTO_KEYS:
        assert f"recipe auto: {key} = " in text
    report = (out / "report.md").read_text()
    assert "## Recipe auto" in report and "![Learning-rate range test](plots/lr_find.png)" in report
    assert f"| `lr` | `{cfg['lr']}` |" in report and "| `epochs` | `2` | given |" in report
    # the run resumes with its own choices (nothing re-chosen, nothing refused)
    assert main(["train", "--resume", str(out), "--epochs", "3", "--no-progress"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == cfg["lr"]
