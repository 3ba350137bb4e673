"""Fast style transfer through the one training loop and the CLI: train, the run's records and
figures, eval, predict, exact resume, a classifier run as the loss network, and the mistakes a user
makes (no style image, an undecodable one, a loss network of another architecture...).

No ImageNet-trained VGG-16 exists here: the loss network is a randomly initialised torchvision
VGG-16 in torchvision's state-dict format (:func:`tests.test_style.write_vgg16`). With it, a few
optimizer steps must lower the perceptual loss and move the output's Gram matrices toward the style
image's. Content images are small synthetic colour images (smooth random blobs) in an image folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml
from PIL import Image

from reslab import rundir
from reslab.cli import main
from reslab.config import make_config
from reslab.data import FileImages, load_dataset
from reslab.models import create_model
from reslab.predict import load_run
from reslab.style import PerceptualLoss, file_sha256, load_loss_network, load_style_image
from reslab.train.distributed import DistContext
from reslab.train.stylize import PhotoLoader, content_loader
from tests.test_style import write_vgg16

CROP = 32
ARGS = ["--arch", "widths=8,16,32", "--arch", "blocks=1", "--crop-size", str(CROP), "--batch-size", "2",
        "--val-size", "2", "--workers", "0", "--device", "cpu", "--no-progress", "--set", "tensorboard=false"]
RUN_V0 = Path(__file__).resolve().parents[1] / "fixtures" / "run_v0"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(rng: np.random.Generator, side: int) -> Image.Image:
    """A smooth random colour image: a 4x4 grid of random colours, bicubic upsampled."""
    small = torch.from_numpy(rng.random((1, 3, 4, 4), dtype=np.float32))
    big = F.interpolate(small, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return Image.fromarray((big.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An image folder of 40x40 content images (8 train, 4 test, two 'classes'), a striped style
    image, the VGG-16 file."""
    root = tmp_path_factory.mktemp("style")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b"):
            (root / "photos" / split / cls).mkdir(parents=True)
            for i in range(n):
                _blobs(rng, 40).save(root / "photos" / split / cls / f"{i}.png")
    y, x = np.mgrid[0:48, 0:48]
    stripes = np.stack([(x + y) % 8 < 4, (x // 6) % 2 == 0, np.zeros_like(x, bool)], axis=2)
    Image.fromarray(stripes.astype(np.uint8) * 230).save(root / "stripes.png")
    return {"data": root / "photos", "style": root / "stripes.png", "vgg": write_vgg16(root / "vgg16.pth")}


def _train_args(files: dict[str, Path], *extra: str) -> list[str]:
    return ["train", "style_johnson", "--data", f"imagefolder:{files['data']}", "--style", str(files["style"]),
            "--loss-net", str(files["vgg"]), *ARGS, *extra]


@pytest.fixture(scope="module")
def style_run(files, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "style"
    assert main([*_train_args(files, "--iterations", "3"), "--out", str(run)]) == 0
    return run


def _records(run: Path, event: str) -> list[dict]:
    return [r for r in rundir.read_metrics(run) if r.get("event") == event]


def test_a_style_run_records_its_losses_inputs_and_figures(style_run, files):
    cfg = yaml.safe_load((style_run / "config.yaml").read_text())
    assert cfg["recipe"] == "style" and cfg["normalize"] == "none" and cfg["optimizer"] == "adamw"
    assert cfg["style"] == str(files["style"].absolute()) and cfg["loss_net"] == str(files["vgg"].absolute())
    start = _records(style_run, "start")[0]
    assert (start["train"], start["val"], start["test"], start["steps_per_epoch"]) == (6, 2, 4, 3)
    epoch = _records(style_run, "epoch")[-1]
    assert {"train_loss", "train_content_loss", "train_style_loss", "train_tv_loss", "val_loss", "val_content_loss",
            "val_style_loss", "val_tv_loss"} <= set(epoch) and "train_err" not in epoch
    test = _records(style_run, "test")[-1]
    assert test["n"] == 4 and test["checkpoint"] == "best" and test["protocol"] == f"{CROP}-pixel centre crops"
    w = test["weights"]
    assert test["loss"] == pytest.approx(w["content"] * test["content_loss"] + w["style"] * test["style_loss"]
                                         + w["tv"] * test["tv_loss"], rel=1e-6)
    end = _records(style_run, "end")[-1]
    assert end["best_val_err"] == pytest.approx(min(e["val_loss"] for e in _records(style_run, "epoch")))
    record = json.loads((style_run / "style.json").read_text())
    assert record["loss_net_sha256"] == file_sha256(files["vgg"]) and record["content_layer"] == "relu2_2"
    assert (style_run / record["style_copy"]).read_bytes() == files["style"].read_bytes()
    assert record["style_sha256"] == file_sha256(files["style"])
    report = (style_run / "report.md").read_text()
    assert "best val loss" in report and "perceptual loss" in report
    for name in ("style-test.png", "style-val.png"):
        assert (style_run / "plots" / name).is_file() and f"plots/{name}" in report


def test_eval_cli_reproduces_the_runs_test_record(style_run, capsys):
    before = _records(style_run, "test")[-1]
    assert main(["eval", str(style_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"perceptual loss {before['loss']:.6g}" in out and f"{before['n']} images" in out
    again = json.loads((style_run / "eval-test-style.json").read_text())
    for key in ("loss", "content_loss", "style_loss", "tv_loss"):
        assert again[key] == pytest.approx(before[key], rel=1e-6), key
    assert main(["eval", str(style_run), "--split", "val", "--device", "cpu"]) == 0
    assert json.loads((style_run / "eval-val-style.json").read_text())["n"] == 2


def test_predict_writes_the_networks_output_for_an_image_of_any_size(style_run, files, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    _blobs(np.random.default_rng(5), 64).resize((45, 37)).save(photo)
    assert main(["predict", str(style_run), str(photo), "--out", str(tmp_path / "stylised.png"), "--device", "cpu"]) == 0
    got = np.asarray(Image.open(tmp_path / "stylised.png"))
    assert got.shape == (37, 45, 3)
    run = load_run(style_run)
    x = torch.from_numpy(np.asarray(Image.open(photo).convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        want = (run.model(x)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    # several images: a folder of NAME_stylized.png
    other = tmp_path / "other.png"
    _blobs(np.random.default_rng(6), 24).save(other)
    assert main(["predict", str(style_run), str(photo), str(other), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"photo_stylized.png", "other_stylized.png"}
    capsys.readouterr()


def test_resume_continues_a_style_run_exactly(files, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*_train_args(files, "--iterations", "6"), "--out", str(straight)]) == 0
    assert main([*_train_args(files, "--iterations", "3"), "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--iterations", "6", "--no-progress"]) == 0
    a = load_run(straight, "last").model.state_dict()
    b = load_run(split, "last").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(straight, "epoch")[-1]["train_loss"] == _records(split, "epoch")[-1]["train_loss"]
    assert _records(straight, "epoch")[-1]["val_loss"] == _records(split, "epoch")[-1]["val_loss"]


def test_training_lowers_the_loss_and_moves_the_grams_toward_the_style(files):
    """The transformation net, a fixed batch of content images, the random-VGG loss network: a few
    Adam steps lower the total loss and the style term (the mean squared difference of the output's
    Gram matrices and the style image's). The weights make each term 1 at the start, so none
    dominates by the accident of a random network's scale."""
    torch.manual_seed(0)
    net = load_loss_network(str(files["vgg"]))
    style = load_style_image(files["style"], CROP)
    content = torch.stack([
        torch.from_numpy(np.array(Image.open(p).resize((CROP, CROP), Image.BILINEAR))).permute(2, 0, 1).float() / 255
        for p in sorted(files["data"].glob("train/*/*.png"))[:4]])
    model = create_model("style_johnson", widths=(8, 16, 32), blocks=1)
    with torch.no_grad():
        first = PerceptualLoss(net, style, 1.0, 1.0, 1.0)(model(content), content)
    loss = PerceptualLoss(net, style, 1 / first.content.item(), 1 / first.style.item(), 1 / first.tv.item())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # the paper's
    totals, styles = [], []
    for _ in range(15):
        out = loss(model(content), content)
        totals.append(out.total.item())
        styles.append(out.style.item())
        opt.zero_grad()
        out.total.backward()
        opt.step()
    assert totals[0] == pytest.approx(3.0, rel=1e-4)
    assert totals[-1] < 0.8 * totals[0], totals
    assert styles[-1] < 0.8 * styles[0], styles


def test_a_classifier_run_serves_as_the_loss_network(files, tmp_path):
    run = tmp_path / "by-resnet20"
    argv = _train_args(files, "--iterations", "2")
    argv[argv.index("--loss-net") + 1] = str(RUN_V0)
    assert main([*argv, "--out", str(run)]) == 0
    record = json.loads((run / "style.json").read_text())
    assert record["loss_net_kind"] == "RunFeatures" and record["content_layer"] == "stages.0"
    assert record["loss_net_sha256"] == file_sha256(RUN_V0 / "checkpoints" / "best.safetensors")
    assert _records(run, "test")[-1]["n"] == 4


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("other") / "squeezenet1_0.pth"
    torch.save(torchvision.models.squeezenet1_0().state_dict(), path)
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"--style": None}, "give the style image with --style FILE"),
    ({"--style": "{bad}"}, "--style: cannot decode image"),
    ({"--style": "{missing}"}, "--style: image not found"),
    ({"--loss-net": None}, "style transfer needs a loss network: --loss-net"),
    ({"--loss-net": "{squeezenet}"}, "is not a torchvision VGG-16 state dict"),
    ({"--data": "embedded"}, "1-channel images; style transfer takes colour images"),
    ({"--normalize": "per_channel"}, "takes images in [0, 1]"),
])
def test_bad_input_stops_with_one_line_and_writes_no_run(change, message, files, squeezenet, tmp_path, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all")
    subst = {"{bad}": str(tmp_path / "bad.jpg"), "{missing}": str(tmp_path / "none.png"), "{squeezenet}": str(squeezenet)}
    argv = _train_args(files, "--iterations", "1")
    for flag, value in change.items():
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
        if value is not None:
            argv += [flag, subst.get(value, value)]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_eval_and_predict_refuse_the_other_tasks_options(style_run, tmp_path, capsys):
    for argv, message in (
        (["eval", str(style_run), "--protocol", "10crop"], "--protocol 10crop applies to classification runs"),
        (["predict", str(style_run), "x.png", "--topk", "3"], "--topk applies to classification runs"),
        (["predict", str(style_run), "a.png", "b.png", "--out", str(tmp_path / "one.png")], "names one file"),
        (["eval", str(style_run), "--runtime", "onnxruntime"], "is a style-transfer run: drop --runtime"),
        (["predict", str(style_run), "x.png", "--runtime", "openvino"], "is a style-transfer run: drop --runtime"),
        (["export", str(style_run), "--format", "torchscript", "--out", str(tmp_path / "s.pt")],
         "is a style-transfer run; reslab export writes classification runs"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_a_folder_of_photos_of_many_sizes_is_content_too(files, tmp_path):
    """``sr:PATH``: any folder of photos, no class folders; squares cut from each photo (random ones
    with ``--augment flip``), the same for a given (seed, epoch) whatever the run."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate([(50, 40), (36, 64), (40, 40), (70, 45), (33, 52), (48, 60), (64, 38), (45, 45),
                                (39, 57), (52, 35)]):
        _blobs(rng, 64).resize((w, h)).save(photos / f"p{i}.png")
    run = tmp_path / "run"
    argv = _train_args(files, "--iterations", "2", "--augment", "flip")
    argv[argv.index("--data") + 1] = f"sr:{photos}"
    assert main([*argv, "--out", str(run)]) == 0
    start, test = _records(run, "start")[0], _records(run, "test")[-1]
    assert (start["train"], start["val"], start["test"]) == (6, 2, 2) and test["n"] == 2
    train = load_dataset(f"sr:{photos}", val_size=2).train
    a, b = (PhotoLoader(train, 3, crop=CROP, random=True, device=torch.device("cpu"), seed=1) for _ in range(2))
    b.set_epoch(0)
    xa, xb = next(a.iterate(1))[0], next(b.iterate(1))[0]
    assert xa.shape == (3, 3, CROP, CROP) and xa.dtype == torch.uint8 and torch.equal(xa, xb)
    a.set_epoch(1)
    assert not torch.equal(next(a.iterate(1))[0], xb)


def test_an_image_folder_of_many_sizes_is_streamed_and_cut_to_squares(files, tmp_path):
    folder = tmp_path / "mixed"
    rng = np.random.default_rng(8)
    for split, n in (("train", 4), ("test", 1)):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
            for i in range(n):
                _blobs(rng, 64).resize((int(rng.integers(33, 70)), int(rng.integers(33, 70)))).save(
                    folder / split / cls / f"{i}.png")
    splits = load_dataset(f"imagefolder:{folder}", val_size=2)
    assert isinstance(splits.train, FileImages)  # images of many sizes: streamed from disk
    cfg = make_config(model="style_johnson", recipe="style", crop_size=CROP, batch_size=2, num_workers=0,
                      style=str(files["style"]), loss_net=str(files["vgg"]))
    loader, normalizer = content_loader(cfg, splits, torch.device("cpu"), DistContext())
    x, y = next(loader.iterate(0))
    assert x is y and x.shape == (2, 3, CROP, CROP) and 0 <= x.min() and x.max() <= 1 and normalizer.kind == "none"
    run = tmp_path / "run"
    argv = _train_args(files, "--iterations", "1")
    argv[argv.index("--data") + 1] = f"imagefolder:{folder}"
    assert main([*argv, "--out", str(run)]) == 0 and _records(run, "test")[-1]["n"] == 2
