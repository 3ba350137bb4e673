"""What an analysis measures: a model name (the network at initialisation, seeded) or a run directory
(its trained weights), with a fixed, class-stratified batch of real test images."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import rundir
from ..data import load_dataset, stratified_split
from ..data.transforms import Normalizer, ResizeCenterCrop, resize_short_side_ratio
from ..errors import ReslabError
from ..models import create_model, get_model_entry
from ..predict import LoadedRun, load_run

__all__ = ["Target", "resolve_target", "resolve_targets", "Batch", "image_batch", "init_model", "trained_model",
           "target_batch"]


@dataclass(frozen=True)
class Target:
    """A model name or a run directory, as the user named it.

    ``label`` names it in tables and plots (the model name, or the run directory's name); ``key`` is
    unique within an analysis directory (``model:NAME`` or ``run:PATH``).
    """

    label: str
    key: str
    model: str | None = None
    run_dir: Path | None = None

    @property
    def is_run(self) -> bool:
        return self.run_dir is not None


def resolve_target(text: str | os.PathLike) -> Target:
    """A run directory (``config.yaml`` and ``checkpoints/``) or a registered classifier's name.

    Raises:
        ReslabError: an existing path that is not a run, a missing path, an unknown model name (with
            close matches), or a model that is not a classifier.
    """
    s = str(text)
    path = Path(s)
    if path.exists() or os.sep in s or "/" in s:
        if not path.exists():
            raise ReslabError(f"{s} not found; give a run directory written by 'reslab train' or a model name such as resnet56")
        if not rundir.is_run_dir(path):
            raise ReslabError(f"{s} is not a run directory (no config.yaml and checkpoints/); give a directory written by "
                              "'reslab train' or a model name such as resnet56")
        # keyed by the path relative to the working directory: analysis.json names no machine directory
        return Target(path.absolute().name, f"run:{Path(os.path.relpath(path.absolute())).as_posix()}", run_dir=path)
    entry = get_model_entry(s)  # unknown names: one line with close matches
    if entry.task != "classify":
        raise ReslabError(f"{s} is a {entry.task} model; analyses measure classifiers such as resnet56")
    return Target(s, f"model:{s}", model=s)


def resolve_targets(texts: list[str], *, at_least: int = 1) -> list[Target]:
    """Every target resolved (all checked before anything runs), duplicates named once."""
    if len(texts) < at_least:
        raise ReslabError(f"give at least {at_least} model name(s) or run directories, e.g. plain56 resnet56")
    out: list[Target] = []
    for t in texts:
        target = resolve_target(t)
        if all(o.key != target.key for o in out):
            out.append(target)
    return out


@functools.lru_cache(maxsize=2)
def _splits(data: str, data_dir: str | None):
    """A dataset loaded once per process (the targets of one analysis share it)."""
    return load_dataset(data, data_dir=data_dir, seed=0)


@dataclass
class Batch:
    """Normalised images on the device, their labels, and what they came from."""

    x: torch.Tensor
    y: torch.Tensor
    raw: torch.Tensor  # uint8 (N, C, H, W)
    classes: list[str]
    data: str
    normalizer: Normalizer
    extra: dict = field(default_factory=dict)


def image_batch(data: str, n: int, *, data_dir: str | None = None, seed: int = 0,
               channels: int | None = None, crop_size: int = 224) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` class-stratified test images (uint8) of dataset ``data`` and their labels (the validation
    split where there is no test split). Streamed datasets are decoded at ``crop_size``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ReslabError(f"--images must be an integer >= 2, got {n!r}")
    splits = _splits(data, data_dir)
    split = splits.test if splits.test is not None and len(splits.test) else splits.val
    if split is None or len(split) == 0:
        raise ReslabError(f"dataset {data} has no test or validation images to measure on")
    if n < len(split):
        split = split.subset(stratified_split(split.labels, n, seed=seed)[1])
    if hasattr(split, "images"):
        images = split.images
    else:  # streamed from files: decode this batch
        crop = ResizeCenterCrop(resize_short_side_ratio(crop_size), crop_size)
        images = torch.stack([crop(split.load(i)) for i in range(len(split))])
    if channels is not None and images.shape[1] != channels:
        raise ReslabError(f"dataset {data} has {images.shape[1]}-channel images but the run was trained on "
                          f"{channels}-channel ones")
    return images, split.labels.clone(), list(splits.classes)


def init_model(target: Target, *, seed: int, num_classes: int | None = None, in_chans: int | None = None,
               run: LoadedRun | None = None) -> nn.Module:
    """The target's network at initialisation, seeded: a model name, or a run's architecture."""
    torch.manual_seed(seed)
    if run is not None:
        return create_model(run.config.model, num_classes=len(run.classes), in_chans=run.channels,
                            **run.config.model_args)
    assert target.model is not None
    return create_model(target.model, num_classes=num_classes, in_chans=in_chans)


def trained_model(target: Target, checkpoint: str, device: torch.device) -> LoadedRun:
    """A run target's trained network (``best`` or ``last`` weights) and what it was trained on."""
    if target.run_dir is None:
        raise ReslabError(f"{target.label} is a model name: this analysis needs trained weights, so give a run "
                          "directory written by 'reslab train'")
    return load_run(target.run_dir, checkpoint, device)


def target_batch(target: Target, *, data: str, data_dir: str | None, images: int, seed: int,
                 device: torch.device, run: LoadedRun | None = None) -> Batch:
    """The images a target is measured on: a run's own test data and normalisation, or for a model name
    ``data`` normalised per channel with the batch's own statistics."""
    if run is not None:
        cfg = run.config
        raw, y, classes = image_batch(cfg.data, images, data_dir=cfg.data_dir, seed=seed, channels=run.channels,
                                     crop_size=run.crop_size)
        norm = run.normalizer
    else:
        raw, y, classes = image_batch(data, images, data_dir=data_dir, seed=seed)
        norm = Normalizer.fit("per_channel", raw)
    with torch.no_grad():
        x = norm.to(device)(raw.to(device))
    return Batch(x, y.to(device), raw, classes, run.config.data if run is not None else data, norm)
