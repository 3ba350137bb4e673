"""RunConfig: every setting of a training run, from a YAML recipe plus command-line overrides.

The resolved config is saved as ``config.yaml`` in the run directory; ``reslab train --config
runs/x/config.yaml`` reruns it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ReslabError

__all__ = ["RunConfig", "load_recipe", "list_recipes", "make_config"]


@dataclass
class RunConfig:
    """One training run. Recipes (``src/reslab/recipes/*.yaml``) set a subset of these fields.

    Lengths: ``iterations`` (if set) wins over ``epochs``; ``milestones`` are in the unit named
    by ``milestone_unit``. Learning rates are for the global batch ``batch_size``.
    """

    model: str = "resnet20"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "cifar10"
    data_dir: str | None = None
    val_size: int | float | None = None
    skip_bad: bool = False
    image_size: int | None = None
    recipe: str | None = None
    name: str | None = None
    # optimisation
    epochs: int = 10
    iterations: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: Literal["step", "cosine", "onecycle", "constant", "plateau"] = "step"
    milestones: list[int] = field(default_factory=list)
    milestone_unit: Literal["iter", "epoch"] = "epoch"
    gamma: float = 0.1
    plateau_patience: int = 5
    warmup_lr: float | None = None
    warmup_iters: int = 0
    warmup_until_err: float | None = None
    warmup_models: list[str] = field(default_factory=list)
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    # data pipeline
    augment: Literal["pad_crop_flip", "crop_flip", "flip", "scale_crop_flip", "none"] = "pad_crop_flip"
    pad: int = 4
    normalize: Literal["per_pixel_mean", "per_channel", "none"] = "per_pixel_mean"
    scale_range: list[int] = field(default_factory=lambda: [256, 480])
    crop_size: int = 224
    color_jitter: float = 0.0
    lighting: float = 0.0
    test_protocol: Literal["center", "10crop", "multiscale"] = "center"
    test_scales: list[float] = field(default_factory=list)
    num_workers: int = 2
    # run
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    scale_lr: bool = False
    log_every: int = 50
    eval_every: int = 1
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> "RunConfig":
        """Raise ReslabError for nonsense values (negative lr, zero batch, ...)."""
        checks = [
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (isinstance(self.batch_size, int) and self.batch_size > 0, f"batch_size must be a positive integer, got {self.batch_size}"),
            (isinstance(self.epochs, int) and self.epochs > 0, f"epochs must be a positive integer, got {self.epochs}"),
            (self.iterations is None or (isinstance(self.iterations, int) and self.iterations > 0),
             f"iterations must be a positive integer, got {self.iterations}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (self.pad >= 0, f"pad must be >= 0, got {self.pad}"),
            (self.log_every > 0 and self.eval_every > 0, "log_every and eval_every must be positive"),
            (self.warmup_lr is None or self.warmup_lr > 0, f"warmup_lr must be > 0, got {self.warmup_lr}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ReslabError(message)
        choices = {f.name: f.type for f in dataclasses.fields(self)}
        for key in ("schedule", "milestone_unit", "augment", "normalize", "test_protocol"):
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
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ReslabError(f"recipe {name_or_path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ReslabError(f"recipe {name_or_path} must be a mapping of settings")
    check_keys(data, f"recipe {name_or_path}")
    return data


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
    base = base or {}
    check_keys(base, "the config file")
    if recipe:
        values = {**base, **load_recipe(recipe), "recipe": recipe}
    else:
        values = {**(load_recipe(base["recipe"]) if base.get("recipe") else {}), **base}
    given = {k: v for k, v in overrides.items() if v is not None}
    check_keys(given, "the overrides")
    values.update(given)
    try:
        cfg = RunConfig(**values)
    except TypeError as e:
        raise ReslabError(f"bad config: {e}") from None
    for key in ("milestones", "scale_range", "test_scales", "warmup_models"):
        setattr(cfg, key, list(getattr(cfg, key) or []))
    _check_types(cfg)
    return cfg.validate()


def _check_types(cfg: RunConfig) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = getattr(RunConfig(), f.name)
        if value is None or default is None:
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ReslabError(f"{f.name} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ReslabError(f"{f.name} must be a number, got {value!r}")
            if isinstance(default, float):
                setattr(cfg, f.name, float(value))
