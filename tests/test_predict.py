"""reslab.predict: reading a run back (which weights, which preprocessing) and predict() on image
files, against answers assembled here from the run's files with safetensors, PIL and torch."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from reslab.errors import ReslabError
from reslab.models import create_model
from reslab.predict import check_weights, load_run, load_run_weights, load_weights_file, predict

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"
CLASSES = json.loads((FIXTURE / "classes.json").read_text())


def _rewrite(path, change_tensors=None, change_meta=None):
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    tensors = load_file(path)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    save_file(tensors, path, metadata=meta)


@pytest.fixture()
def run(tmp_path):
    """The fixture run (resnet20, Fashion-MNIST 28x28), its 'last' weights differing from 'best'."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)

    def negate_head(t):
        t["head.fc.weight"] = -t["head.fc.weight"]
    _rewrite(run / "checkpoints" / "last.safetensors", negate_head)
    return run


def _network(path):
    model = create_model("resnet20", num_classes=10, in_chans=1)
    model.load_state_dict(load_file(path))
    return model.eval()


def _mean_std(run):
    with safe_open(str(run / "preprocess.safetensors"), framework="pt") as f:
        return f.get_tensor("mean").double(), f.get_tensor("std").double()


def _probs(weights, run, pixels):
    """Softmax of the network with ``weights`` on a uint8 (1, H, W) image: (x/255 - mean) / std,
    the 28x28 per-pixel mean resized bilinearly when the image has another size."""
    mean, std = _mean_std(run)
    x = pixels.double()[None] / 255
    if x.shape[-2:] != mean.shape[-2:]:
        mean = F.interpolate(mean[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    with torch.no_grad():
        return _network(weights)(((x - mean) / std).float()).double().softmax(1)[0]


def _image(tmp_path, w, h, seed=0, mode="L", name="img.png"):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w) if mode == "L" else (h, w, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(arr).save(path)
    return path


def _pixels(img):
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())[None]


# -- which weights --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", ["best", "last"])
def test_load_run_loads_the_named_checkpoint_in_eval_mode(run, tmp_path, tag):
    loaded = load_run(run, tag)
    assert loaded.checkpoint == tag and not loaded.model.training
    want = load_file(run / "checkpoints" / f"{tag}.safetensors")
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_load_run_default_is_best_and_falls_back_to_last_when_there_is_no_best(run):
    assert load_run(run).checkpoint == "best"
    (run / "checkpoints" / "best.safetensors").unlink()
    loaded = load_run(run)
    assert loaded.checkpoint == "last"
    assert torch.equal(loaded.model.state_dict()["head.fc.weight"],
                       load_file(run / "checkpoints" / "last.safetensors")["head.fc.weight"])
    with pytest.raises(ReslabError, match=r"the run has no 'best' checkpoint yet"):
        load_run_weights(run, "best", create_model("resnet20", num_classes=10, in_chans=1))


def test_load_run_takes_a_safetensors_path(run, tmp_path):
    other = tmp_path / "other.safetensors"

    def scale_head(t):
        t["head.fc.bias"] = t["head.fc.bias"] + 1.5
    shutil.copy(run / "checkpoints" / "best.safetensors", other)
    _rewrite(other, scale_head)
    loaded = load_run(run, str(other))
    assert loaded.checkpoint == str(other)
    assert torch.equal(loaded.model.state_dict()["head.fc.bias"], load_file(other)["head.fc.bias"])


def test_load_run_reads_the_runs_classes_channels_size_and_normaliser(run):
    loaded = load_run(run)
    mean, std = _mean_std(run)
    assert loaded.classes == CLASSES and loaded.channels == 1 and loaded.image_size == (28, 28)
    assert loaded.crop_size == 224 and loaded.run_dir == run and loaded.config.model == "resnet20"
    assert loaded.normalizer.kind == "per_pixel_mean"
    assert torch.equal(loaded.normalizer.mean.double(), mean) and torch.equal(loaded.normalizer.std.double(), std)


def test_load_run_refuses_what_is_not_a_run(run, tmp_path):
    with pytest.raises(ReslabError, match="is not a run directory"):
        load_run(tmp_path)
    with pytest.raises(ReslabError, match=r"--checkpoint must be best, last or a \.safetensors path, got 'newest'"):
        load_run(run, "newest")
    (run / "config.yaml").write_text("model: resnet20\n")
    with pytest.raises(ReslabError, match=r"config.yaml names no data: it is empty or damaged"):
        load_run(run)
    (run / "config.yaml").write_text("epochs: 3\n")
    with pytest.raises(ReslabError, match=r"names no model or data"):
        load_run(run)


def test_load_run_names_a_missing_or_damaged_preprocess_file(run):
    pre = run / "preprocess.safetensors"
    data = pre.read_bytes()
    pre.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReslabError, match=r"preprocess.safetensors is damaged \(\w+\); restore it"):
        load_run(run)
    pre.write_bytes(data)
    _rewrite(pre, change_meta=lambda m: m.pop("classes"))
    with pytest.raises(ReslabError, match=r"is damaged \(KeyError\)"):
        load_run(run)
    pre.unlink()
    with pytest.raises(ReslabError, match=r"preprocess.safetensors is missing; the run did not get past its setup"):
        load_run(run)


# -- refusing weights that would compute nonsense --------------------------------------------------------------
def test_check_weights_refuses_another_dtype_and_non_finite_values():
    model = create_model("resnet20", num_classes=10, in_chans=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    check_weights(model, state, "w.safetensors")  # the model's own weights pass
    as_int = {**state, "head.fc.weight": state["head.fc.weight"].long()}
    with pytest.raises(ReslabError, match=r"^w.safetensors: head.fc.weight is int64, the model's is float32; these are not"):
        check_weights(model, as_int, "w.safetensors")
    as_half = {**state, "head.fc.bias": state["head.fc.bias"].half()}
    with pytest.raises(ReslabError, match=r"head.fc.bias is float16, the model's is float32"):
        check_weights(model, as_half, "w.safetensors")
    counter = next(k for k in state if k.endswith("num_batches_tracked"))
    check_weights(model, {**state, counter: state[counter].int()}, "w")  # integer counters: another int type is harmless
    for bad in (float("nan"), float("inf"), -float("inf")):
        w = state["head.fc.weight"].clone()
        w[3, 5] = bad
        with pytest.raises(ReslabError, match=r"^w: head.fc.weight holds NaN or Inf values; the weights are corrupt"):
            check_weights(model, {**state, "head.fc.weight": w}, "w")
    check_weights(model, {"not.a.parameter": torch.zeros(2, dtype=torch.float64)}, "w")  # left to the strict load


def test_load_weights_file_returns_the_metadata_and_names_the_model_in_errors(run, tmp_path):
    model = create_model("resnet20", num_classes=10, in_chans=1)
    meta = load_weights_file(model, run / "checkpoints" / "best.safetensors")
    assert meta["model_name"] == "resnet20" and meta["step"] == "6"
    bad = tmp_path / "bad.safetensors"
    shutil.copy(run / "checkpoints" / "best.safetensors", bad)

    def nan(t):
        t["head.fc.bias"] = torch.full_like(t["head.fc.bias"], float("nan"))
    _rewrite(bad, nan)
    with pytest.raises(ReslabError, match=r"bad.safetensors \(model resnet20\): head.fc.bias holds NaN"):
        load_weights_file(model, bad)
    _rewrite(bad, change_meta=lambda m: m.pop("model_name"))
    with pytest.raises(ReslabError, match=r"bad.safetensors: head.fc.bias holds NaN"):
        load_weights_file(model, bad)


# -- preprocessing and predict -------------------------------------------------------------------------------------------
def test_preprocess_of_a_run_with_a_fixed_size_resizes_the_shorter_side_then_centre_crops():
    loaded = load_run(FIXTURE)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))  # RGB, h 40 < w 50
    got = loaded.preprocess(img)
    gray = img.convert("L").resize((35, 28), Image.BILINEAR)  # shorter side 28, 50 * 28/40 = 35
    want = _pixels(gray)[:, :, 3:31]  # centre 28 columns of 35: (35 - 28) // 2 = 3
    assert got.dtype == torch.uint8 and torch.equal(got, want)
    portrait = Image.fromarray(np.random.default_rng(2).integers(0, 256, (56, 28), dtype=np.uint8))
    assert torch.equal(loaded.preprocess(portrait), _pixels(portrait)[:, 14:42])  # already 28 wide: only cropped


def test_preprocess_of_a_run_without_a_fixed_size_uses_the_test_resize_and_crop(run):
    def streamed(meta):
        meta["image_size"], meta["crop_size"] = "null", "21"
    _rewrite(run / "preprocess.safetensors", change_meta=streamed)
    loaded = load_run(run)
    assert loaded.image_size is None and loaded.crop_size == 21
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 45), dtype=np.uint8))
    # resize for a 21 crop: floor(21 * 256 / 224) = 24; 45 * 24/30 = 36; centre crop 21
    resized = img.resize((36, 24), Image.BILINEAR)
    want = _pixels(resized)[:, 1:22, 7:28]  # top (24 - 21) // 2 = 1, left (36 - 21) // 2 = 7
    assert torch.equal(loaded.preprocess(img), want)


def test_a_run_without_a_crop_size_in_its_preprocess_file_defaults_to_224(run):
    _rewrite(run / "preprocess.safetensors", change_meta=lambda m: m.pop("crop_size"))
    assert load_run(run).crop_size == 224


def test_predict_gives_the_top_classes_with_their_softmax_probabilities(run, tmp_path):
    paths = [_image(tmp_path, 28, 28, seed=s, name=f"{s}.png") for s in range(3)]
    loaded = load_run(run, "last")
    preds = predict(loaded, paths, topk=4)
    assert [p.path for p in preds] == [str(p) for p in paths]
    for path, pred in zip(paths, preds):
        with Image.open(path) as img:
            probs = _probs(run / "checkpoints" / "last.safetensors", run, _pixels(img))
        vals, idx = probs.topk(4)
        assert [c for c, _ in pred.top] == [CLASSES[i] for i in idx.tolist()]
        assert [p for _, p in pred.top] == pytest.approx(vals.tolist(), rel=1e-5)


def test_predict_caps_k_at_the_number_of_classes_and_default_is_five(run, tmp_path):
    path = _image(tmp_path, 28, 28)
    loaded = load_run(run)
    (all_classes,) = predict(loaded, [path], topk=25)
    assert sorted(c for c, _ in all_classes.top) == sorted(CLASSES)
    assert math.fsum(p for _, p in all_classes.top) == pytest.approx(1.0, abs=1e-6)
    assert [p for _, p in all_classes.top] == sorted((p for _, p in all_classes.top), reverse=True)
    (default,) = predict(loaded, [path])
    assert [c for c, _ in default.top] == [c for c, _ in all_classes.top[:5]]
    assert [p for _, p in default.top] == pytest.approx([p for _, p in all_classes.top[:5]])


def test_predict_on_an_image_of_another_size(run, tmp_path):
    path = _image(tmp_path, 42, 30, seed=4)  # resized to 39 x 28, centre-cropped to 28 x 28
    loaded = load_run(run)
    (pred,) = predict(loaded, [path], topk=3)
    with Image.open(path) as img:
        pixels = _pixels(img.resize((39, 28), Image.BILINEAR))[:, :, 5:33]
    probs = _probs(run / "checkpoints" / "best.safetensors", run, pixels)
    vals, idx = probs.topk(3)
    assert [c for c, _ in pred.top] == [CLASSES[i] for i in idx.tolist()]
    assert [p for _, p in pred.top] == pytest.approx(vals.tolist(), rel=1e-5)


def test_predict_refuses_urls_folders_missing_and_unreadable_files(run, tmp_path):
    loaded = load_run(run)
    with pytest.raises(ReslabError, match=r"^https://x/cat.png: URLs are not fetched; download the image"):
        predict(loaded, ["https://x/cat.png"])
    with pytest.raises(ReslabError, match=r"is a folder; give image files, e.g. .*/\*\.png$"):
        predict(loaded, [tmp_path])
    with pytest.raises(ReslabError, match=r"^image not found: .*nothing.png$"):
        predict(loaded, [tmp_path / "nothing.png"])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ReslabError, match=r"^cannot decode image .*junk.png \(.+\); replace or delete the file$"):
        predict(loaded, [junk])
    truncated = _image(tmp_path, 28, 28, name="cut.png")
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ReslabError, match=r"^cannot decode image .*cut.png \(.+\)"):
        predict(loaded, [truncated])


@pytest.fixture()
def rgb_run(tmp_path):
    """A 3-channel run written here: the fixture's config, a seeded resnet20 for RGB input, a
    per-pixel mean of 28x28 RGB images."""
    run = tmp_path / "rgb"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE / "config.yaml", run / "config.yaml")
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=3)
    with torch.no_grad():
        model.head.fc.weight.mul_(30)  # spread the probabilities: the top-k order is then clear
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run / "checkpoints" / "best.safetensors",
              metadata={"format": "pt", "model_name": "resnet20"})
    mean = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(1))
    save_file({"mean": mean, "std": torch.full((1, 1, 1), 0.3)}, run / "preprocess.safetensors",
              metadata={"kind": "per_pixel_mean", "classes": json.dumps(CLASSES), "channels": "3",
                        "image_size": "[28, 28]", "crop_size": "224"})
    return run


def test_predict_on_a_colour_run_converts_images_to_rgb(rgb_run, tmp_path):
    loaded = load_run(rgb_run)
    assert loaded.channels == 3
    colour = _image(tmp_path, 28, 28, seed=5, mode="RGB", name="c.png")
    gray = _image(tmp_path, 28, 28, seed=6, name="g.png")  # a gray file: replicated to three channels
    preds = predict(loaded, [colour, gray], topk=3)
    model = create_model("resnet20", num_classes=10, in_chans=3)
    model.load_state_dict(load_file(rgb_run / "checkpoints" / "best.safetensors"))
    model.eval()
    mean = load_file(rgb_run / "preprocess.safetensors")["mean"].double()
    for path, pred in zip((colour, gray), preds):
        with Image.open(path) as img:
            rgb = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(loaded.preprocess(Image.open(path)), rgb)
        with torch.no_grad():
            probs = model(((rgb.double()[None] / 255 - mean) / 0.3).float()).double().softmax(1)[0]
        vals, idx = probs.topk(3)
        assert [c for c, _ in pred.top] == [CLASSES[i] for i in idx.tolist()]
        assert [p for _, p in pred.top] == pytest.approx(vals.tolist(), rel=1e-3)  # the scaled head amplifies float32 rounding
