"""Recipes and config resolution."""

import pytest

import reslab
from reslab.config import list_recipes, load_recipe, make_config
from reslab.errors import ReslabError
from reslab.train.schedule import LRSchedule


def test_paper_cifar10_recipe_is_the_papers():
    cfg = make_config(recipe="paper_cifar10", model="resnet56")
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert cfg.iterations == 64000 and cfg.milestones == [32000, 48000] and cfg.milestone_unit == "iter"
    assert cfg.augment == "pad_crop_flip" and cfg.pad == 4 and cfg.normalize == "per_pixel_mean"
    assert cfg.val_size == 5000


def test_paper_schedule_divides_by_ten_at_32k_and_48k():
    cfg = make_config(recipe="paper_cifar10", model="resnet56")
    s = LRSchedule(cfg, steps_per_epoch=351, total_steps=64000, base_lr=cfg.lr, model_depth=56)
    assert [s.lr(i) for i in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_resnet110_warms_up_at_001_until_error_below_80():
    cfg = make_config(recipe="paper_cifar10", model="resnet110")
    depth = reslab.create_model("resnet110").spec.depth
    assert depth == 110
    s = LRSchedule(cfg, 351, 64000, cfg.lr, model_depth=depth)
    assert s.lr(0) == pytest.approx(0.01)
    s.observe_train_error(100, 85.0)
    assert s.lr(100) == pytest.approx(0.01)
    s.observe_train_error(150, 79.0)
    assert s.lr(151) == pytest.approx(0.1)
    other = LRSchedule(make_config(recipe="paper_cifar10", model="resnet56"), 351, 64000, 0.1,
                       model_depth=reslab.create_model("resnet56").spec.depth)
    assert other.lr(0) == pytest.approx(0.1)
    # keyed on the depth, not on names: the plain twin and pre-activation nets of 110+ layers warm up too
    for name in ("plain110", "preact_resnet164"):
        deep = LRSchedule(make_config(recipe="paper_cifar10", model=name), 351, 64000, 0.1,
                          model_depth=reslab.create_model(name).spec.depth)
        assert deep.lr(0) == pytest.approx(0.01), name
    # a model without a depth (not a ResNet spec) does not warm up under a depth rule
    assert LRSchedule(cfg, 351, 64000, 0.1, model_depth=None).lr(0) == pytest.approx(0.1)


def test_configs_saved_with_warmup_models_still_resolve():
    saved = make_config(recipe="paper_cifar10", model="resnet110").to_dict()
    del saved["warmup_min_depth"]
    saved["warmup_models"] = ["resnet110", "plain110"]
    assert make_config(saved).warmup_min_depth == 110
    saved["warmup_models"] = []
    assert make_config(saved).warmup_min_depth is None


def test_plateau_divides_after_patience():
    cfg = make_config(recipe="paper_imagenet", model="resnet50", plateau_patience=2)
    s = LRSchedule(cfg, 100, 1000, 0.1)
    for err in (50, 40, 41, 40.5, 40.2):
        s.observe_val_error(err)
    assert s.lr(0) == pytest.approx(0.01)


def test_onecycle_and_cosine_shapes():
    for kind in ("onecycle", "cosine"):
        cfg = make_config(model="resnet20", schedule=kind, lr=0.2)
        s = LRSchedule(cfg, 10, 1000, 0.2)
        lrs = [s.lr(i) for i in range(0, 1001, 50)]
        assert max(lrs) == pytest.approx(0.2, rel=0.02) and lrs[-1] < 0.001


def test_overrides_beat_the_recipe_and_none_is_ignored():
    cfg = make_config(recipe="short_cpu", model="resnet20", lr=0.05, epochs=None)
    assert cfg.lr == 0.05 and cfg.epochs == load_recipe("short_cpu")["epochs"]


def test_shipped_recipes():
    assert {"paper_cifar10", "paper_imagenet", "short_cpu"} <= set(list_recipes())


@pytest.mark.parametrize("over,needle", [
    ({"lr": -0.1}, "lr must be > 0"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"schedule": "zigzag"}, "schedule must be one of"),
    ({"momentum": 1.5}, "momentum"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"lrr": 0.1}, "lrr (did you mean lr?)"),
])
def test_nonsense_hyperparameters_are_rejected(over, needle):
    with pytest.raises(ReslabError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        make_config(model="resnet20", **over)


def test_unknown_recipe_keys_and_names(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("lr: 0.1\nbatchsize: 64\n")
    with pytest.raises(ReslabError, match="unknown keys in recipe .*batchsize \\(did you mean batch_size\\?\\)"):
        make_config(recipe=str(bad), model="resnet20")
    with pytest.raises(ReslabError, match="unknown recipe 'paper_cifar11'"):
        make_config(recipe="paper_cifar11", model="resnet20")


def test_a_saved_config_resolves_to_itself_even_where_it_left_its_recipe():
    cfg = make_config(recipe="short_cpu", model="resnet20", epochs=8, batch_size=32, lr=0.05)
    saved = cfg.to_dict()
    assert make_config(saved) == cfg  # what --resume and --config runs/x/config.yaml rebuild
    assert make_config(saved, epochs=12).epochs == 12 and make_config(saved, epochs=12).batch_size == 32


def test_a_partial_config_sits_on_its_recipe_and_an_explicit_recipe_replaces_it():
    recipe = load_recipe("short_cpu")
    partial = make_config({"recipe": "short_cpu", "model": "resnet20", "epochs": 3})
    assert partial.epochs == 3 and partial.lr == recipe["lr"] and partial.schedule == recipe["schedule"]
    switched = make_config({"recipe": "short_cpu", "model": "resnet20", "lr": 0.01}, recipe="paper_cifar10")
    assert switched.recipe == "paper_cifar10" and switched.lr == 0.1 and switched.iterations == 64000
