"""The shipped recipes say what their sources say, value by value.

Each expected value below is written from the source the recipe names, not from the YAML:
He et al. 2015 (arXiv:1512.03385) Sec. 4.2 for ``paper_cifar10``, Sec. 3.4 for ``paper_imagenet``,
and the README's recipe table for ``short_cpu``. A recipe's settings must equal its expected dict
exactly, so a changed, added or dropped value fails; a new recipe fails
``test_the_shipped_recipes_are_exactly_the_documented_ones`` until it gets a test here.
"""

import re
from pathlib import Path

import pytest

from reslab.config import RunConfig, list_recipes, load_recipe, make_config

README = Path(__file__).resolve().parents[1] / "README.md"

# He et al. 2015, Sec. 4.2 (CIFAR-10), quoted:
#   "We use a weight decay of 0.0001 and momentum of 0.9 ... These models are trained with a
#   mini-batch size of 128 ... We start with a learning rate of 0.1, divide it by 10 at 32k and 48k
#   iterations, and terminate training at 64k iterations, which is determined on a 45k/5k train/val
#   split. We follow the simple data augmentation in [24] for training: 4 pixels are padded on each
#   side, and a 32x32 crop is randomly sampled from the padded image or its horizontal flip. For
#   testing, we only evaluate the single view of the original 32x32 image."
#   "The network inputs are 32x32 images, with the per-pixel mean subtracted."
#   (ResNet-110) "we use 0.01 to warm up the training until the training error is below 80% (about
#   400 iterations), and then go back to 0.1."
PAPER_CIFAR10 = {
    "data": "cifar10",
    "val_size": 5000,                  # the 45k/5k train/val split
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "schedule": "step",
    "iterations": 64000,               # terminate at 64k iterations
    "milestones": [32000, 48000],      # divide by 10 at 32k and 48k ...
    "milestone_unit": "iter",          # ... iterations
    "gamma": 0.1,                      # divide by 10
    "augment": "pad_crop_flip",        # padded image or its horizontal flip, random 32x32 crop
    "pad": 4,                          # 4 pixels on each side
    "normalize": "per_pixel_mean",
    "test_protocol": "center",         # the single view of the original image
    "warmup_lr": 0.01,                 # ResNet-110: 0.01 ...
    "warmup_until_err": 80.0,          # ... until the training error is below 80% ...
    "warmup_iters": 400,               # ... (about 400 iterations)
    "warmup_min_depth": 110,           # 110 layers (and deeper)
}

# He et al. 2015, Sec. 3.4 (ImageNet), quoted:
#   "The image is resized with its shorter side randomly sampled in [256, 480] for scale
#   augmentation. A 224x224 crop is randomly sampled from an image or its horizontal flip, with the
#   per-pixel mean subtracted. The standard color augmentation in [21] is used. ... We use SGD with
#   a mini-batch size of 256. The learning rate starts from 0.1 and is divided by 10 when the error
#   plateaus, and the models are trained for up to 60x10^4 iterations. We use a weight decay of
#   0.0001 and a momentum of 0.9. ... In testing, for comparison studies we adopt the standard
#   10-crop testing. For best results, we ... average the scores at multiple scales (images are
#   resized such that the shorter side is in {224, 256, 384, 480, 640})."
#   [21] (Krizhevsky et al. 2012) draws the PCA colour noise "from a Gaussian with mean zero and
#   standard deviation 0.1".
PAPER_IMAGENET = {
    "batch_size": 256,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "schedule": "plateau",             # divided by 10 when the error plateaus
    "gamma": 0.1,
    "epochs": 120,                     # 60x10^4 iterations x 256 images / 1.28M images = 120 epochs
    "augment": "scale_crop_flip",
    "scale_range": [256, 480],
    "crop_size": 224,
    "lighting": 0.1,                   # [21]'s colour augmentation, std 0.1
    "normalize": "per_pixel_mean",
    "test_protocol": "10crop",         # the standard 10-crop testing
    "test_scales": [224, 256, 384, 480, 640],
    # Not in the paper, which names no patience and no loader; the project's choices:
    "plateau_patience": 5,
    "num_workers": 8,
}

# The README's recipe table, row short_cpu: "one-cycle lr 0.2, Nesterov, label smoothing 0.1, wd
# 5e-4, 15 epochs: the demo's recipe"; the recipe's own header adds "Same augmentation and
# normalisation as the paper's CIFAR recipe" (and keeps the paper's batch and momentum).
SHORT_CPU = {
    "epochs": 15,
    "lr": 0.2,
    "nesterov": True,
    "weight_decay": 0.0005,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    # as paper_cifar10:
    "batch_size": 128,
    "momentum": 0.9,
    "augment": "pad_crop_flip",
    "pad": 4,
    "normalize": "per_pixel_mean",
    "test_protocol": "center",
}

# fast_cpu's header: short_cpu's one-cycle lr, Nesterov momentum, label smoothing 0.1, wd 5e-4, the paper's
# augmentation and normalisation, for 10 epochs at batch 64 and peak lr 0.1, tested by the 10-crop protocol.
FAST_CPU = {**SHORT_CPU, "epochs": 10, "batch_size": 64, "lr": 0.1, "test_protocol": "10crop"}

# auto's header: "one-cycle learning rate (Smith & Topin 2019) with Nesterov momentum 0.9, weight
# decay 5e-4, label smoothing 0.1, centre-crop test"; the rest is chosen from the data
# (reslab.train.auto, tests/train/test_auto.py).
AUTO = {"momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "schedule": "onecycle", "label_smoothing": 0.1,
        "test_protocol": "center"}

# segment's header: "AdamW at 1e-3 with a cosine decay, small batches of random tiles, flips, 90-degree
# rotations and the U-Net paper's elastic deformation (sigma 10 px on a coarse 3x3 grid), per-pixel
# cross-entropy"; per-channel normalisation (images of many sizes), 256-pixel tiles, 40 epochs.
SEGMENT = {"epochs": 40, "batch_size": 4, "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.0001,
           "schedule": "cosine", "augment": "flip", "normalize": "per_channel", "crop_size": 256,
           "elastic_sigma": 10.0, "seg_loss": "ce"}

# style's header: Johnson, Alahi & Fei-Fei 2016, Sec. 4.1, quoted: "We resize each of the 80k training images to
# 256 x 256 and train our networks with a batch size of 4 for 40,000 iterations ... We use Adam with a learning rate
# of 1 x 10^-3 ... We do not use weight decay or dropout". Images in [0, 1] (no normalisation), the centre square;
# 16 validation images (ours).
STYLE = {"iterations": 40000, "batch_size": 4, "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.0,
         "schedule": "constant", "augment": "none", "normalize": "none", "crop_size": 256, "val_size": 16}

# sr's header: EDSR's training setup (Lim et al. 2017, Sec. 4.2): Adam at 1e-4 (AdamW without weight decay), batches
# of 16 random 96x96 HR patches (48x48 LR at x2), flips and 90-degree rotations, [0, 1] pixels; constant rate (the
# paper halves it every 200k updates); the paper's loss per model (sr_loss auto).
SR = {"epochs": 20, "batch_size": 16, "optimizer": "adamw", "lr": 0.0001, "weight_decay": 0.0, "schedule": "constant",
      "augment": "flip", "normalize": "none", "crop_size": 96, "sr_loss": "auto"}

# detect's header: torchvision's detection reference trains with SGD 0.02 for 16 images (0.00125 an image,
# momentum 0.9, wd 1e-4); ours is twice that rate for a short CPU budget, with a warm-up, images at a shorter
# side of 320 and scale jitter, the whole backbone and its batch norm trained (a random or small-data backbone).
DETECT = {"epochs": 12, "batch_size": 4, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
          "schedule": "cosine", "warmup_lr": 0.001, "warmup_iters": 50, "grad_clip": 10.0, "augment": "scale_crop_flip",
          "scale_range": [256, 384], "image_size": 320, "normalize": "none",
          "model_args": {"min_size": None, "trainable_stages": 5, "frozen_bn": False}}

EXPECTED = {"paper_cifar10": PAPER_CIFAR10, "paper_imagenet": PAPER_IMAGENET, "short_cpu": SHORT_CPU,
            "fast_cpu": FAST_CPU, "auto": AUTO, "segment": SEGMENT, "style": STYLE, "sr": SR, "detect": DETECT}


def test_the_shipped_recipes_are_exactly_the_documented_ones():
    assert list_recipes() == sorted(EXPECTED), "a new or removed recipe needs its test in tests/test_recipes.py"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_sets_exactly_the_values_of_its_source(name):
    got = load_recipe(name)
    want = EXPECTED[name]
    assert sorted(got) == sorted(want), f"{name} sets other keys than its source gives"
    for key, value in want.items():
        assert got[key] == value and type(got[key]) is type(value), f"{name}: {key} = {got[key]!r}, source says {value!r}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_resolves_to_a_config_with_those_values(name):
    cfg = make_config(recipe=name, model="resnet20")
    assert cfg.recipe == name
    for key, value in EXPECTED[name].items():
        assert getattr(cfg, key) == value, key
    # what the recipe leaves unset keeps the RunConfig default
    default = RunConfig()
    for key in set(vars(default)) - set(EXPECTED[name]) - {"model", "recipe"}:
        assert getattr(cfg, key) == getattr(default, key), key


def test_the_demo_trains_with_short_cpu():
    import inspect

    from reslab.demo import run_demo

    assert inspect.signature(run_demo).parameters["recipe"].default == "short_cpu"


# -- the README's recipe table -----------------------------------------------------------------------
def _readme_recipe_rows():
    text = README.read_text()
    head = text.index("| recipe | source | what |")
    rows = {}
    for line in text[head:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def test_readme_recipe_table_lists_exactly_the_shipped_recipes():
    assert sorted(_readme_recipe_rows()) == list_recipes()


def test_readme_recipe_sources_are_the_ones_tested_here():
    rows = _readme_recipe_rows()
    assert rows["paper_cifar10"][0] == "He et al. 2015, Sec. 4.2"
    assert rows["paper_imagenet"][0] == "He et al. 2015, Sec. 3.4"
    assert rows["short_cpu"][0] == "this project"
    assert rows["fast_cpu"][0] == "this project"
    assert rows["auto"][0] == "this project; Smith 2017 (lr range test)"


def test_readme_fast_cpu_row_is_the_recipe():
    what = _readme_recipe_rows()["fast_cpu"][1]
    r = load_recipe("fast_cpu")
    m = re.match(r"`short_cpu` at (\d+) epochs, batch (\d+) and peak lr ([\d.]+), tested by (\w+)", what)
    assert m and (int(m[1]), int(m[2]), float(m[3]), m[4]) == (r["epochs"], r["batch_size"], r["lr"], r["test_protocol"])
    differ = ("epochs", "batch_size", "lr", "test_protocol")
    assert {k: v for k, v in r.items() if k not in differ} == \
        {k: v for k, v in load_recipe("short_cpu").items() if k not in differ}


def test_readme_short_cpu_row_is_the_recipe():
    what = _readme_recipe_rows()["short_cpu"][1]
    r = load_recipe("short_cpu")
    assert what.startswith("one-cycle ") and r["schedule"] == "onecycle"
    assert float(re.search(r"\blr ([\d.]+)", what).group(1)) == r["lr"]
    assert "Nesterov" in what and r["nesterov"] is True
    assert float(re.search(r"label smoothing ([\d.]+)", what).group(1)) == r["label_smoothing"]
    assert float(re.search(r"\bwd ([\de.-]+)", what).group(1)) == r["weight_decay"]
    assert int(re.search(r"(\d+) epochs", what).group(1)) == r["epochs"]
    assert "the demo's recipe" in what


def test_readme_paper_cifar10_row_is_the_recipe():
    what = _readme_recipe_rows()["paper_cifar10"][1]
    r = load_recipe("paper_cifar10")
    assert int(re.search(r"batch (\d+)", what).group(1)) == r["batch_size"]
    assert float(re.search(r"SGD ([\d.]+)", what).group(1)) == r["momentum"]
    assert float(re.search(r"\bwd ([\de.-]+)", what).group(1)) == r["weight_decay"]
    lr, div, m1, m2 = re.search(r"\blr ([\d.]+) /(\d+) at (\d+)k and (\d+)k iterations", what).groups()
    assert (float(lr), 1 / float(div)) == (r["lr"], r["gamma"])
    assert [int(m1) * 1000, int(m2) * 1000] == r["milestones"] and r["milestone_unit"] == "iter"
    assert int(re.search(r"stop at (\d+)k", what).group(1)) * 1000 == r["iterations"]
    assert int(re.search(r"pad-(\d+) crop \+ flip", what).group(1)) == r["pad"] and r["augment"] == "pad_crop_flip"
    assert "per-pixel mean" in what and r["normalize"] == "per_pixel_mean"
    warm, err = re.search(r"lr ([\d.]+) warm-up until training error < (\d+)%", what).groups()
    assert (float(warm), float(err)) == (r["warmup_lr"], r["warmup_until_err"])
    assert int(re.search(r"`warmup_min_depth: (\d+)`", what).group(1)) == r["warmup_min_depth"]


def test_readme_paper_imagenet_row_is_the_recipe():
    what = _readme_recipe_rows()["paper_imagenet"][1]
    r = load_recipe("paper_imagenet")
    lo, hi = re.search(r"shorter side in \[(\d+), (\d+)\]", what).groups()
    assert [int(lo), int(hi)] == r["scale_range"] and r["augment"] == "scale_crop_flip"
    assert int(re.search(r"random (\d+) crop \+ flip", what).group(1)) == r["crop_size"]
    assert "per-pixel mean" in what and r["normalize"] == "per_pixel_mean"
    assert "PCA colour augmentation" in what and r["lighting"] > 0
    assert int(re.search(r"batch (\d+)", what).group(1)) == r["batch_size"]
    lr, div = re.search(r"\blr ([\d.]+) /(\d+) on plateau", what).groups()
    assert (float(lr), 1 / float(div)) == (r["lr"], r["gamma"]) and r["schedule"] == "plateau"
    assert "10-crop testing" in what and r["test_protocol"] == "10crop"
