"""RunConfig: every setting of a training run, from a YAML recipe plus command-line overrides.

The resolved config is saved as ``config.yaml`` in the run directory; ``reslab train --config
runs/x/config.yaml`` reruns it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union

import yaml

from . import rundir
from .errors import ReslabError

__all__ = ["RunConfig", "load_recipe", "list_recipes", "make_config", "resolve_config", "check_resume",
           "RUNTIME_KEYS", "RESUME_MAY_CHANGE", "AUTO_KEYS", "auto_pending"]


def _f(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None, flag: str | None = None,
       runtime: bool = False, cli: bool = True) -> Any:
    """A RunConfig field with the metadata the CLI and the resume rules read.

    ``help``: the flag's help text; ``flag``: its name when not ``--field-name``; ``runtime``: the
    value changes how a run executes, never its result (device, workers, progress...), so a resume
    may change it and the experiments ignore it when comparing configs; ``cli``: has a flag.
    """
    meta = {"help": help, "flag": flag, "runtime": runtime, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """One training run. Recipes (``src/reslab/recipes/*.yaml``) set a subset of these fields.

    Lengths: ``iterations`` (if set) wins over ``epochs``; ``milestones`` are in the unit named
    by ``milestone_unit``. Learning rates are for the global batch ``batch_size``.
    """

    model: str = _f("resnet20", "a registered architecture (see 'reslab models')", cli=False)
    model_args: dict[str, Any] = _f(help="architecture options (--arch KEY=VALUE)", factory=dict, cli=False)
    data: str = _f("cifar10", "a dataset: cifar10, cifar100, mnist, fashion_mnist, embedded, imagefolder:PATH or csv:FILE")
    data_dir: str | None = _f(None, "where dataset files are (or are downloaded to)", runtime=True)
    val_size: int | float | None = _f(None, "images (or a fraction below 1) held out of the training set for validation")
    skip_bad: bool = _f(False, "skip undecodable images in an image folder instead of stopping")
    image_size: int | None = _f(None, "resize image-folder images to this size")
    recipe: str | None = _f(None, "the recipe the run was resolved from", cli=False)
    auto: dict[str, Any] = _f(help="recipe auto: each setting it chose from the data, with the reason", factory=dict,
                              cli=False)
    name: str | None = _f(None, "a display name for reports", runtime=True)
    # optimisation
    epochs: int = _f(10, "epochs to train (ignored when --iterations is set)")
    iterations: int | None = _f(None, "optimizer steps to train (wins over --epochs)")
    batch_size: int = _f(128, "global mini-batch size (over all processes)")
    lr: float = _f(0.1, "peak learning rate for the global batch")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(1e-4, "L2 weight decay")
    schedule: Literal["step", "cosine", "onecycle", "constant", "plateau"] = _f("step", "learning-rate schedule")
    milestones: list[int] = _f(help="step schedule: multiply the lr by gamma at these points, e.g. 32000,48000",
                               factory=list)
    milestone_unit: Literal["iter", "epoch"] = _f("epoch", "unit of --milestones")
    gamma: float = _f(0.1, "lr factor at each milestone or plateau")
    plateau_patience: int = _f(5, "plateau schedule: epochs without a better validation error before the lr drops")
    warmup_lr: float | None = _f(None, "warm-up learning rate (paper Sec. 4.2: 0.01 for ResNet-110)")
    warmup_iters: int = _f(0, "end the warm-up after at most this many iterations (0: no cap)")
    warmup_until_err: float | None = _f(None, "end the warm-up once the training error (%%) is below this")
    warmup_min_depth: int | None = _f(None, "warm up only models at least this deep (the model's depth property); "
                                            "unset: every model")
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy")
    grad_clip: float | None = _f(None, "clip the gradient norm to this value")
    optimizer: Literal["sgd", "adamw"] = _f("sgd", "sgd: SGD with momentum (the paper); adamw: AdamW (decoupled weight decay)")
    ema_decay: float | None = _f(None, "keep an exponential moving average of the weights with this decay, e.g. 0.999; "
                                       "validation, test and the saved weights use the average")
    mixup: float = _f(0.0, "mixup alpha: mix pairs of training images and their labels (0: off; 0.2 is usual)")
    cutmix: float = _f(0.0, "CutMix alpha: paste a box of one training image into another (0: off; 1.0 is usual)")
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = _f(
        "none", "per-image augmentation policy from torchvision.transforms.v2")
    random_erasing: float = _f(0.0, "random erasing: probability that a training image gets a box erased (0: off)")
    # data pipeline
    augment: Literal["pad_crop_flip", "pad_crop", "crop_flip", "flip", "scale_crop_flip", "none"] = _f(
        "pad_crop_flip", "training augmentation (pad_crop: random crops, no mirror images)")
    pad: int = _f(4, "pad_crop_flip: zero padding before the random crop (pixels)")
    normalize: Literal["per_pixel_mean", "per_channel", "none"] = _f("per_pixel_mean", "input normalisation")
    scale_range: list[int] = _f(help="scale_crop_flip: shorter side sampled in this range (pixels)",
                                factory=lambda: [256, 480])
    crop_size: int = _f(224, "streamed image folders: the crop the network sees (pixels)")
    color_jitter: float = _f(0.0, "colour jitter: brightness, contrast and saturation each by up to this factor, "
                                  "per image (torchvision's v2.ColorJitter; 0: off)")
    lighting: float = _f(0.0, "PCA lighting noise std (AlexNet's colour augmentation; 0: off)")
    test_protocol: Literal["center", "10crop", "multiscale"] = _f("center", "test-time protocol for the final test")
    test_scales: list[float] = _f(help="multiscale protocol: scales (factors, or shorter sides for image folders)",
                                  factory=list)
    balanced: bool = _f(False, "draw training images with class-balanced probabilities (imbalanced data)")
    # segmentation (models of task segment: unet*, hourglass*)
    seg_loss: Literal["ce", "dice", "ce+dice"] = _f(
        "ce", "segmentation loss: per-pixel cross-entropy, soft Dice, or their sum")
    border_weight: float = _f(0.0, "segmentation: w0 of the U-Net paper's border-weight map, which weights the "
                                   "pixels between touching objects (the paper: 10; 0: off)")
    border_sigma: float = _f(5.0, "segmentation: sigma of the border-weight map in pixels (the paper: 5)")
    elastic_sigma: float = _f(0.0, "segmentation: elastic deformation, the std of random displacements on a coarse "
                                   "3x3 grid in pixels (the U-Net paper: 10; 0: off)")
    # style transfer (models of task stylize: style_johnson)
    style: str | None = _f(None, "style transfer: the style image (any image PIL reads); copied into the run directory")
    loss_net: str | None = _f(None, "style transfer: the loss network, torchvision's VGG-16 state dict "
                                    "(vgg16-397923af.pth) or a reslab classifier run directory")
    content_weight: float = _f(1e5, "style transfer: weight of the feature (content) loss at relu2_2")
    style_weight: float = _f(1e10, "style transfer: weight of the Gram-matrix style loss over relu1_2, relu2_2, "
                                   "relu3_3 and relu4_3")
    tv_weight: float = _f(1.0, "style transfer: weight of the total-variation regulariser (0: off)")
    # super-resolution (models of task restore: vdsr, edsr_baseline_x*, srresnet_x4)
    scale: int | None = _f(None, "super-resolution: the upscaling factor (vdsr takes any, default 2; edsr_baseline_xN "
                                 "and srresnet_x4 only their own N)")
    sr_loss: Literal["auto", "l1", "l2"] = _f("auto", "super-resolution loss on [0, 1] pixels: auto is the paper's (L1 for "
                                                      "EDSR, L2 for VDSR and SRResNet)")
    init_from: str | None = _f(None, "start the network (a U-Net's encoder) from these weights: a reslab run "
                                     "directory or a .safetensors / torchvision .pth state dict")
    num_workers: int = _f(2, "loader processes for streamed image folders", flag="--workers", runtime=True)
    # run
    seed: int = _f(0, "random seed (initialisation, split, batch order, augmentation)")
    deterministic: bool = _f(False, "deterministic kernels (slower)")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N", runtime=True)
    amp: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto", "precision: auto is bf16 autocast on GPUs and on CPUs with native bf16 (AMX), fp32 elsewhere; "
                "bf16 or fp16 (GPU) forces autocast; fp32 turns it off")
    channels_last: bool = _f(False, "channels-last memory format")
    compile: bool = _f(False, "torch.compile the model")
    sync_bn: bool = _f(False, "under torchrun: BN statistics over the global batch")
    scale_lr: bool = _f(False, "scale --lr by batch_size/256 (the linear scaling rule)")
    log_every: int = _f(50, "log the training loss every N steps", runtime=True)
    eval_every: int = _f(1, "validate every N epochs")
    progress: bool = _f(True, "progress bar on a terminal", runtime=True)
    tensorboard: bool = _f(True, "also write TensorBoard logs when tensorboard is installed", runtime=True)

    def validate(self) -> RunConfig:
        """Raise ReslabError for wrong types and nonsense values (negative lr, zero batch, ...)."""
        _check_types(self)
        finite = lambda v: v is None or math.isfinite(v)  # noqa: E731
        floats = ("lr", "momentum", "weight_decay", "gamma", "warmup_lr", "warmup_until_err", "label_smoothing",
                  "grad_clip", "color_jitter", "lighting", "ema_decay", "mixup", "cutmix", "random_erasing",
                  "border_weight", "border_sigma", "elastic_sigma", "content_weight", "style_weight", "tv_weight")
        for key in floats:
            if not finite(getattr(self, key)):
                raise ReslabError(f"{key} must be a finite number, got {getattr(self, key)}")
        checks = [
            (0 < self.lr < 1e4, f"lr must be > 0 (and below 1e4), got {self.lr}"),
            (self.batch_size > 0, f"batch_size must be a positive integer, got {self.batch_size}"),
            (self.epochs > 0, f"epochs must be a positive integer, got {self.epochs}"),
            (self.iterations is None or self.iterations > 0, f"iterations must be a positive integer, got {self.iterations}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"ema_decay must be in (0, 1), got {self.ema_decay}"),
            (self.mixup >= 0 and self.cutmix >= 0, f"mixup and cutmix must be >= 0, got {self.mixup} and {self.cutmix}"),
            (0 <= self.random_erasing <= 1, f"random_erasing must be a probability in [0, 1], got {self.random_erasing}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (self.pad >= 0, f"pad must be >= 0, got {self.pad}"),
            (self.border_weight >= 0 and self.border_sigma > 0 and self.elastic_sigma >= 0,
             f"border_weight and elastic_sigma must be >= 0 and border_sigma > 0, got {self.border_weight}, "
             f"{self.elastic_sigma} and {self.border_sigma}"),
            (self.content_weight >= 0 and self.style_weight >= 0 and self.tv_weight >= 0,
             f"content_weight, style_weight and tv_weight must be >= 0, got {self.content_weight}, "
             f"{self.style_weight} and {self.tv_weight}"),
            (self.crop_size > 0, f"crop_size must be a positive number of pixels, got {self.crop_size}"),
            (self.scale is None or 2 <= self.scale <= 8, f"scale must be an integer from 2 to 8, got {self.scale}"),
            (self.image_size is None or self.image_size > 0, f"image_size must be a positive number of pixels, got {self.image_size}"),
            (self.log_every > 0 and self.eval_every > 0, "log_every and eval_every must be positive"),
            (self.warmup_lr is None or self.warmup_lr > 0, f"warmup_lr must be > 0, got {self.warmup_lr}"),
            (self.warmup_iters >= 0, f"warmup_iters must be >= 0, got {self.warmup_iters}"),
            (self.warmup_min_depth is None or self.warmup_min_depth > 0, f"warmup_min_depth must be > 0, got {self.warmup_min_depth}"),
            (self.plateau_patience >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}"),
            (self.color_jitter >= 0 and self.lighting >= 0,
             f"color_jitter and lighting must be >= 0, got {self.color_jitter} and {self.lighting}"),
            (len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
             f"scale_range must be [low, high] shorter sides in pixels with 0 < low <= high, got {self.scale_range}"),
            (all(x > 0 and math.isfinite(x) for x in self.test_scales), f"test_scales must be positive, got {self.test_scales}"),
            (all(m >= 0 for m in self.milestones), f"milestones must be >= 0, got {self.milestones}"),
            (0 <= self.seed < 2**63, f"seed must be an integer in [0, 2**63), got {self.seed}"),
            (self.val_size is None or 0 <= self.val_size < 1 or (float(self.val_size).is_integer() and self.val_size < 2**31),
             f"val_size must be a fraction in [0, 1) or a count of images, e.g. 0.1 or 5000; got {self.val_size}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
            (not {"num_classes", "in_chans"} & set(self.model_args),
             "num_classes and in_chans are set from the data; remove them from model_args (--arch)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ReslabError(message)
        choices = {f.name: f.type for f in dataclasses.fields(self)}
        for key in ("schedule", "milestone_unit", "augment", "normalize", "test_protocol", "optimizer", "auto_augment",
                    "seg_loss", "amp", "sr_loss"):
            allowed = _literal_values(choices[key])
            if getattr(self, key) not in allowed:
                raise ReslabError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _literal_values(type_text: Any) -> tuple[str, ...]:
    text = str(type_text)
    inner = text[text.index("[") + 1: text.rindex("]")]
    return tuple(v.strip().strip("'\"") for v in inner.split(","))


FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
RUNTIME_KEYS = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata.get("runtime"))
"""Keys that change how a run executes, never its result."""
RESUME_MAY_CHANGE = RUNTIME_KEYS | {"epochs", "iterations"}
"""Keys a resumed run may change: a longer or shorter budget, and the runtime keys."""
# Keys of configs saved by earlier versions, and how they read now.
_LEGACY = {"warmup_models": lambda v: {"warmup_min_depth": 110 if v else None}}


AUTO_KEYS = ("batch_size", "epochs", "lr", "augment", "pad", "normalize")
"""The settings recipe ``auto`` chooses from the data (unless given): see :mod:`reslab.train.auto`."""
GIVEN = "given"
"""The reason recorded in ``RunConfig.auto`` for a setting the user gave."""


def auto_pending(cfg: RunConfig) -> bool:
    """True for a config of recipe ``auto`` whose data-dependent settings are not chosen yet."""
    return cfg.recipe == "auto" and any(k not in cfg.auto for k in AUTO_KEYS)


def list_recipes() -> list[str]:
    """Names of the recipes shipped in the package."""
    root = resources.files("reslab") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe's settings: a shipped name (``paper_cifar10``) or a path to a YAML file."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ReslabError(f"recipe file not found: {path}")
        text = path.read_text()
    else:
        res = resources.files("reslab") / "recipes" / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ReslabError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(list_recipes())} (or give a .yaml path)")
        text = res.read_text()
    try:
        data = _upgrade(yaml.safe_load(text) or {})
    except yaml.YAMLError as e:
        raise ReslabError(f"recipe {name_or_path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ReslabError(f"recipe {name_or_path} must be a mapping of settings")
    check_keys(data, f"recipe {name_or_path}")
    return data


def _upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier version, in today's keys (the paper recipe's list of model
    names that warm up, all 110 layers or deeper, became ``warmup_min_depth: 110``)."""
    for key, translate in _LEGACY.items():
        if key in values:
            for new, value in translate(values.pop(key)).items():
                values.setdefault(new, value)
    if isinstance(values.get("amp"), bool):  # amp was true/false before precision choices
        values["amp"] = "auto" if values["amp"] else "fp32"
    return values


def check_keys(data: dict[str, Any], where: str) -> None:
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        import difflib

        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u, FIELDS, n=1)) else u for u in unknown]
        raise ReslabError(f"unknown keys in {where}: {', '.join(hints)}")


def make_config(base: dict[str, Any] | None = None, recipe: str | None = None, **overrides: Any) -> RunConfig:
    """Resolve a config.

    ``base`` (e.g. a saved ``config.yaml``, or a partial YAML) sits on top of the recipe it names:
    defaults <- base's recipe <- ``base`` <- overrides, so a run's saved config resolves to itself
    (a resume or ``--config`` rerun keeps the epochs, lr, ... the run was started with, even where
    they differ from the recipe's). An explicit ``recipe`` replaces the base's values with the
    recipe's: defaults <- ``base`` <- ``recipe`` <- overrides. ``None`` overrides are ignored, so
    unset command-line flags leave the values below them.
    """
    base = _upgrade(dict(base or {}))
    check_keys(base, "the config file")
    for where, name in (("recipe", recipe), ("the config's recipe", base.get("recipe"))):
        if name is not None and not isinstance(name, str):
            raise ReslabError(f"{where} must name a recipe (a string), got {name!r}")
    if recipe:
        values = {**base, **load_recipe(recipe), "recipe": recipe}
    else:
        values = {**(load_recipe(base["recipe"]) if base.get("recipe") else {}), **base}
    given = _upgrade({k: v for k, v in overrides.items() if v is not None})
    check_keys(given, "the overrides")
    if isinstance(given.get("model_args"), dict) and isinstance(values.get("model_args"), dict):
        # a recipe's architecture options (recipe detect: min_size) stay unless --arch names them
        given["model_args"] = {**values["model_args"], **given["model_args"]}
    values.update(given)
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise ReslabError(f"bad config: {e}") from None
    return cfg.validate()


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _short(value: Any) -> str:
    """A bounded repr for messages: a YAML alias bomb must not be expanded to be printed."""
    return _REPR.repr(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_types(cfg: RunConfig) -> None:
    """Each field against its annotation (YAML and ``--set`` give any type): one line naming the
    field and the expected type; numbers are converted where the type allows (int -> float)."""
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints[f.name]
        options = [t for t in typing.get_args(hint) if t is not type(None)] if typing.get_origin(hint) in (Union, UnionType) else [hint]
        if value is None:
            if type(None) in typing.get_args(hint):
                continue
            raise ReslabError(f"{f.name} must be set, got null")
        kind = options[0]
        if typing.get_origin(kind) is typing.Literal:
            continue  # checked against its choices in validate()
        if kind is bool:
            if not isinstance(value, bool):
                raise ReslabError(f"{f.name} must be true or false, got {_short(value)}")
        elif kind is str:
            if not isinstance(value, str):
                raise ReslabError(f"{f.name} must be a string, got {_short(value)}")
        elif typing.get_origin(kind) is dict or kind is dict:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ReslabError(f"{f.name} must be a mapping of option names to values, got {_short(value)}")
            for k, v in value.items():  # plain values only: nested aliases could expand to billions of items
                flat = v if isinstance(v, (list, tuple)) else [v]
                if len(flat) > 1000 or not all(x is None or isinstance(x, (bool, int, float, str)) for x in flat):
                    raise ReslabError(f"{f.name}.{k} must be a number, a string or a short list of them, got {_short(v)}")
        elif typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list) or not all(_is_number(v) and (item is float or float(v).is_integer()) for v in value):
                raise ReslabError(f"{f.name} must be a list of {'numbers' if item is float else 'integers'}, e.g. [1, 2], got {_short(value)}")
            setattr(cfg, f.name, [item(v) for v in value])
        elif set(options) == {int, float}:
            if not _is_number(value):
                raise ReslabError(f"{f.name} must be a number, got {_short(value)}")
        elif kind is int:
            if not _is_number(value) or not float(value).is_integer():
                raise ReslabError(f"{f.name} must be an integer, got {_short(value)}")
            setattr(cfg, f.name, int(value))
        elif kind is float:
            if not _is_number(value):
                raise ReslabError(f"{f.name} must be a number, got {_short(value)}")
            setattr(cfg, f.name, float(value))


def resolve_config(model: str | None = None, *, recipe: str | None = None, config: str | Path | dict | None = None,
                   arch: dict[str, Any] | None = None, default_recipe: str = "auto", **overrides: Any) -> RunConfig:
    """The config of a new run: defaults <- ``config`` (a YAML file or dict, e.g. an earlier run's
    ``config.yaml``) <- ``recipe`` <- ``overrides``; ``arch`` adds architecture options to the
    config's ``model_args``. ``None`` values are ignored, so unset flags change nothing.

    Args:
        model: a registered model name (required unless ``config`` names one).
        recipe: a shipped recipe name or a YAML path.
        config: a full or partial config: a path to YAML, or a dict.
        arch: architecture overrides (``--arch KEY=VALUE``).
        default_recipe: the recipe of a run that names none: ``auto`` (settings chosen from the data,
            for classification) or another, e.g. ``segment`` for the dense-prediction models.
        overrides: any RunConfig field.
    """
    base = _read_config_file(config) if isinstance(config, (str, Path)) else dict(config or {})
    if model:
        overrides["model"] = model
    elif not base.get("model"):
        raise ReslabError("name a model to train, e.g. 'reslab train resnet20 --data cifar10' (or give --config)")
    if arch:
        overrides["model_args"] = {**(base.get("model_args") or {}), **arch}
    names_none = recipe is None and not base.get("recipe") and not set(AUTO_KEYS) <= set(base)
    if names_none and default_recipe != "auto":
        recipe = default_recipe
    if recipe == "auto" or (names_none and recipe is None):
        # no recipe named: the automatic one, which keeps what the user gave (flags, --config keys)
        given = {k for k, v in overrides.items() if v is not None} | set(base)
        if "iterations" in given:
            given.add("epochs")
        auto = dict(base.get("auto") or {})
        overrides["auto"] = {**auto, **{k: GIVEN for k in AUTO_KEYS if k in given and k not in auto}}
        recipe = "auto"
    return make_config(base, recipe=recipe, **overrides)


def _read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"config file not found: {path}")
    data = rundir.load_yaml_file(path)
    if data is not None and not isinstance(data, dict):
        raise ReslabError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data or {}


def check_resume(saved: RunConfig, wanted: RunConfig, where: str | os.PathLike[str] = "the run") -> None:
    """Refuse a resume that changes anything but :data:`RESUME_MAY_CHANGE` (it would not continue
    the same run); the message names the keys that differ."""
    if saved.model != wanted.model:
        raise ReslabError(f"{where} holds a {saved.model} run, not {wanted.model}")
    a, b = saved.to_dict(), wanted.to_dict()
    changed = sorted(k for k in a if k not in RESUME_MAY_CHANGE and a[k] != b.get(k))
    if changed:
        raise ReslabError(f"cannot change {', '.join(changed)} when resuming; only "
                          f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change")
