"""Recipe ``auto``: the settings of a run chosen from its data, each with the reason.

Used when no recipe is named (``reslab train resnet20 --data imagefolder:DIR``). The fixed part is
``recipes/auto.yaml`` (one-cycle, Nesterov, weight decay 5e-4, label smoothing 0.1); this module
chooses the rest once the data is loaded, unless the user gave it (a flag, ``--set`` or a
``--config`` key):

- ``batch_size``: 128 from 20,000 training images, 64 from 2,000, else 32: small sets get more,
  smaller steps.
- ``epochs``: enough for about :data:`TARGET_STEPS` optimizer steps, between 10 and 100 epochs.
- ``pad``: an eighth of the image side (4 pixels at 32x32, the paper's CIFAR padding).
- ``normalize``: the per-pixel mean (the paper's CIFAR choice) for small in-memory images of a
  set large enough to estimate a mean image (10,000 images); per-channel otherwise.
- ``lr``: a learning-rate range test (Smith 2017, "Cyclical learning rates", Sec. 3.3): the lr
  grows geometrically from 1e-5 to 10 over :data:`RANGE_STEPS` steps of a fresh copy of the model;
  the one-cycle peak lr is the largest lr at which the loss still falls, read as the lr of the
  lowest smoothed loss (Smith 2018, "A disciplined approach to neural network
  hyper-parameters", Sec. 4.1: one-cycle's warm-up lets training reach the lr where the test's
  loss turns), at most 1. (fastai's lr_min/10 reading chose 0.0076 on a Fashion-MNIST folder where
  0.076 is right: too low for one-cycle training.) Cached in the run directory (``lr_find.json``),
  drawn in ``plots/lr_find.png``.
- ``augment``: mirror images or not, by a pilot: a fresh copy trained for a few hundred steps
  WITHOUT flips is evaluated on the validation split as it is and mirrored. On data whose meaning
  a mirror keeps (photos of objects) the two errors are close; on digits or text the mirrored
  error is far worse. Flips are used unless mirroring loses more than :data:`FLIP_LOSS_LIMIT` of
  what the pilot learned above chance. The pilot also reports what turning the validation images
  grey costs (the evidence that colour carries the class); recipe auto adds no colour changes.

The config saved in ``config.yaml`` holds the chosen values and, under ``auto``, the reasons, so
a resume or a ``--config`` rerun uses them as they are.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from .. import rundir
from ..config import AUTO_KEYS, RunConfig, auto_pending
from ..data import DatasetSplits, TensorImages
from ..data.loader import TensorLoader
from ..data.transforms import Normalizer
from ..evaluate import evaluate
from ..io import atomic_write_text
from ..models import create_model
from .classify import ClassifyTask
from .pipeline import make_optimizer
from .schedule import LRSchedule

__all__ = ["resolve_auto", "adopt_auto", "lr_range_test", "flip_pilot", "TARGET_STEPS", "RANGE_STEPS", "PILOT_STEPS",
           "FLIP_LOSS_LIMIT", "MIN_LEARNED", "LR_FIND"]

TARGET_STEPS = 2500
"""Optimizer steps recipe auto aims for (epochs are rounded up to whole epochs, 10 to 100)."""
RANGE_STEPS = 100
"""Steps of the learning-rate range test."""
PILOT_STEPS = 300
"""Steps of the flip pilot (at most; fewer on small sets, at least 2 epochs' worth when less)."""
FLIP_LOSS_LIMIT = 0.25
"""Mirror images are left out when mirroring the validation images costs more than this share of
the pilot's accuracy above chance."""
MIN_LEARNED = 10.0
"""Points of validation accuracy above chance the pilot must reach for its verdict to count."""
LR_FIND = "lr_find.json"
"""The range test's record in the run directory (also its cache)."""


def resolve_auto(cfg: RunConfig, splits: DatasetSplits, device: torch.device, run_dir: Path | None = None,
                 log: Callable[[str], None] = print) -> RunConfig:
    """``cfg`` with the settings of recipe ``auto`` chosen from ``splits`` (those the user did not
    give), and ``cfg.auto`` holding each setting's reason. A config that is not pending is
    returned unchanged."""
    if not auto_pending(cfg):
        return cfg
    reasons: dict[str, Any] = dict(cfg.auto)
    chosen: dict[str, Any] = {}
    n = len(splits.train)
    in_memory = isinstance(splits.train, TensorImages)
    side = min(splits.image_size) if splits.image_size else None

    def decide(key: str, value: Any, why: str) -> None:
        if key not in reasons:
            chosen[key], reasons[key] = value, why

    batch = 128 if n >= 20_000 else 64 if n >= 2_000 else 32
    decide("batch_size", batch, f"{n:,} training images: "
           + ("128 (the paper's CIFAR batch)" if batch == 128 else f"{batch}, smaller steps for a small set"))
    spe = max(n // chosen.get("batch_size", cfg.batch_size), 1)
    epochs = min(max(math.ceil(TARGET_STEPS / spe), 10), 100)
    decide("epochs", epochs, f"{spe} steps per epoch: {epochs} epochs give {epochs * spe:,} optimizer steps "
           f"(aim: about {TARGET_STEPS:,}, within 10-100 epochs)")
    if in_memory and side is not None:
        pad = max(1, round(side / 8))
        decide("pad", pad, f"an eighth of the {side}-pixel image side")
    else:
        decide("pad", cfg.pad, "not used: images are streamed from disk (scale augmentation)")
    per_pixel = in_memory and side is not None and side <= 64 and n >= 10_000
    decide("normalize", "per_pixel_mean" if per_pixel else "per_channel",
           "per-pixel mean: small aligned images and enough of them (the paper's CIFAR choice)" if per_pixel else
           f"per-channel: {'streamed images' if not in_memory else f'{n:,} images' + (f' of {side} pixels' if side else '')}"
           " (a mean image needs 10,000+ small images)")
    trial = dataclasses.replace(cfg, **chosen, auto=reasons)
    # the range test and the pilot take at most a tenth of the run's own steps each (a 6-step smoke
    # test is not delayed by hundreds), at least 20
    budget = trial.iterations or trial.epochs * max(n // trial.batch_size, 1)
    share = max(budget // 10, 20)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if "lr" not in reasons and not in_memory:
            chosen["lr"], reasons["lr"] = 0.1, "0.1 (the paper's): the range test runs on in-memory images only"
        if "lr" not in reasons:
            found = lr_range_test(trial, splits, device, run_dir, steps=min(RANGE_STEPS, share))
            chosen["lr"], reasons["lr"] = found["lr"], found["reason"]
            trial = dataclasses.replace(trial, lr=found["lr"])
        if "augment" not in reasons:
            if not in_memory or splits.val is None or len(splits.val) == 0:
                reasons["augment"] = f"{cfg.augment}: " + ("streamed images" if not in_memory else "no validation split for a pilot")
            else:
                pilot = flip_pilot(trial, splits, device, steps=min(PILOT_STEPS, share))
                chosen["augment"], reasons["augment"] = pilot["augment"], pilot["reason"]
    out = dataclasses.replace(cfg, **chosen, auto=reasons).validate()
    for key in AUTO_KEYS:
        log(f"recipe auto: {key} = {getattr(out, key)} ({reasons[key]})")
    return out


def adopt_auto(saved: RunConfig, cfg: RunConfig) -> RunConfig:
    """``cfg`` (recipe auto, not yet chosen) with the choices ``saved`` (the run being resumed)
    made, so a resume continues with the same settings."""
    if not auto_pending(cfg) or saved.recipe != "auto":
        return cfg
    keep = {k: getattr(saved, k) for k in AUTO_KEYS if cfg.auto.get(k) is None}
    return dataclasses.replace(cfg, **keep, auto={**saved.auto, **cfg.auto})


# -- the learning-rate range test --------------------------------------------------------------
def _fresh_model(cfg: RunConfig, splits: DatasetSplits, device: torch.device, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=len(splits.classes), in_chans=splits.channels, **cfg.model_args)
    return model.to(device)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lr: float,
          task: ClassifyTask) -> float:
    """One optimizer step at ``lr`` on the run's own loss (label smoothing, auxiliary heads); returns the loss."""
    for g in optimizer.param_groups:
        g["lr"] = lr
    loss = task.loss(model(x), y)[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _batches(cfg: RunConfig, splits: DatasetSplits, normalizer: Normalizer, device: torch.device, seed: int,
             augment: str):
    train = splits.train
    assert isinstance(train, TensorImages)
    loader = TensorLoader(train.images, train.labels, cfg.batch_size, normalizer=normalizer, device=device,
                          train=True, seed=seed, augment=augment, pad=cfg.pad)
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader.iterate(0)
        epoch += 1


def _cache_key(cfg: RunConfig, splits: DatasetSplits) -> dict[str, Any]:
    return {"model": cfg.model, "model_args": cfg.model_args, "data": cfg.data, "train": len(splits.train),
            "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "momentum": cfg.momentum,
            "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay, "normalize": cfg.normalize,
            "pad": cfg.pad, "label_smoothing": cfg.label_smoothing, "seed": cfg.seed, "steps": RANGE_STEPS}


def lr_range_test(cfg: RunConfig, splits: DatasetSplits, device: torch.device, run_dir: Path | None = None,
                  steps: int = RANGE_STEPS, lo: float = 1e-5, hi: float = 10.0) -> dict[str, Any]:
    """Smith's learning-rate range test on a fresh copy of ``cfg.model``.

    Returns ``{"lr": chosen peak lr, "reason": ..., "lrs": [...], "losses": [...], "smoothed": [...],
    "lr_min_loss": ...}``; written to ``run_dir/lr_find.json`` (and reused from there when the
    settings it depends on are the same) with the plot ``plots/lr_find.png``.
    """
    key = _cache_key(cfg, splits)
    path = run_dir / LR_FIND if run_dir is not None else None
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == json.loads(json.dumps(key)):
                return cached
        except (OSError, ValueError):
            pass
    model = _fresh_model(cfg, splits, device, cfg.seed + 1)
    train = splits.train
    if not isinstance(train, TensorImages):
        raise NotImplementedError("the range test runs on in-memory classification splits")
    normalizer = Normalizer.fit(cfg.normalize, train.images).to(device)
    optimizer = make_optimizer(cfg, model, lo)
    task = ClassifyTask(cfg)
    model.train()
    lrs, losses, smoothed = [], [], []
    avg, best, beta = 0.0, math.inf, 0.9
    for i, (x, y) in zip(range(steps), _batches(cfg, splits, normalizer, device, cfg.seed + 1, "pad_crop_flip")):
        lr = lo * (hi / lo) ** (i / max(steps - 1, 1))
        value = _step(model, optimizer, x, y, lr, task)
        if not math.isfinite(value):
            break
        avg = beta * avg + (1 - beta) * value
        s = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(s)
        best = min(best, s)
        if s > 4 * best and i > steps // 10:
            break
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__) if smoothed else 0
    lr_min = lrs[i_min] if lrs else 0.1
    chosen = float(f"{min(lr_min, 1.0):.3g}")
    reason = (f"range test ({len(lrs)} steps, lr {lo:g} to {hi:g}): lowest smoothed loss {smoothed[i_min]:.3f} "
              f"at lr {lr_min:.3g}: the one-cycle peak" if lrs else "range test diverged at once; lr 0.1")
    found = {"lr": chosen, "reason": reason, "lr_min_loss": lr_min, "lrs": lrs, "losses": losses,
             "smoothed": smoothed, "key": key}
    if path is not None:
        atomic_write_text(path, json.dumps(found, indent=1))
        _plot(found, run_dir / rundir.PLOTS / "lr_find.png")
    return found


def _plot(found: dict[str, Any], path: Path) -> None:
    from ..plots import plot_lr_find

    path.parent.mkdir(parents=True, exist_ok=True)
    plot_lr_find(found["lrs"], found["losses"], found["smoothed"], found["lr"], found["lr_min_loss"], path)


# -- the flip pilot ------------------------------------------------------------------------------
def flip_pilot(cfg: RunConfig, splits: DatasetSplits, device: torch.device, steps: int = PILOT_STEPS) -> dict[str, Any]:
    """Train a fresh copy without mirror images for a few hundred steps (one-cycle at ``cfg.lr``)
    and compare its validation error on the images as they are, mirrored, and grey.

    Returns ``{"augment": "pad_crop_flip" or "pad_crop", "reason": ..., "err": ..., "err_flipped": ...,
    "err_grey": ... or None, "steps": ...}``.
    """
    train, val = splits.train, splits.val
    assert isinstance(train, TensorImages) and isinstance(val, TensorImages)
    spe = max(len(train) // cfg.batch_size, 1)
    steps = min(steps, max(2 * spe, 20))
    model = _fresh_model(cfg, splits, device, cfg.seed + 2)
    normalizer = Normalizer.fit(cfg.normalize, train.images).to(device)
    optimizer = make_optimizer(cfg, model, cfg.lr)
    model.train()
    task = ClassifyTask(cfg)
    onecycle = LRSchedule(dataclasses.replace(cfg, schedule="onecycle", warmup_lr=None), steps, steps, cfg.lr)
    for i, (x, y) in zip(range(steps), _batches(cfg, splits, normalizer, device, cfg.seed + 2, "pad_crop")):
        _step(model, optimizer, x, y, onecycle.lr(i), task)

    def err(images: torch.Tensor) -> float:
        res = evaluate(model, TensorImages(images.contiguous(), val.labels), normalizer=normalizer,
                       num_classes=len(splits.classes), batch_size=256, device=device, pad=cfg.pad)
        return res.top1_err

    e, e_flip = err(val.images), err(val.images.flip(3))
    e_grey = None
    if splits.channels == 3:
        e_grey = err(TF.rgb_to_grayscale(val.images, num_output_channels=3))
    chance = 100.0 * (1 - 1 / len(splits.classes))
    learned = max(chance - e, 1e-9)
    lost = (e_flip - e) / learned
    use_flip = lost <= FLIP_LOSS_LIMIT or learned < MIN_LEARNED
    verdict = ("mirror images used (the pilot learned too little to tell)" if learned < MIN_LEARNED else
               "mirror images used" if use_flip else "no mirror images (mirroring changes the class)")
    reason = (f"pilot ({steps} steps without mirror images): validation error {e:.1f}% as is, {e_flip:.1f}% mirrored "
              f"(loses {100 * lost:.0f}% of the {learned:.1f} points learned above chance; limit "
              f"{100 * FLIP_LOSS_LIMIT:.0f}%): {verdict}")
    if e_grey is not None:
        reason += f"; grey images {e_grey:.1f}% (no colour augmentation)"
    return {"augment": "pad_crop_flip" if use_flip else "pad_crop", "reason": reason, "err": e,
            "err_flipped": e_flip, "err_grey": e_grey, "steps": steps}
