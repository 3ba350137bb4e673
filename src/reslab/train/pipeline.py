"""From a config to what the loop steps through: seeding, the model on its device (channels-last,
sync-BN, DDP, compile), the precision, and the training batches (augmentation and normalisation
run batched on the training device; see :mod:`reslab.data.loader`)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import torch
from safetensors.torch import save_file
from torch import nn

from .. import rundir
from ..config import RunConfig
from ..data import DatasetSplits, FileImages
from ..data.detection import DetectionImages, DetLoader
from ..data.loader import FileLoader, SegLoader, TensorLoader
from ..data.regularize import BatchRegularizer, PolicyAugment
from ..data.segmentation import MaskImages, stack_for_normalizer
from ..data.sr import SRImages, SRLoader
from ..data.transforms import Normalizer, ResizeCenterCrop, ScaleAugment, resize_short_side_ratio
from ..dense import legal_tile
from ..errors import ReslabError
from ..io import atomic_path
from ..models import get_model_entry
from ..segmetrics import unet_weight_map
from ..superres import run_scale
from .distributed import DistContext, convert_sync_batchnorm
from .stylize import ContentLoader, content_loader

__all__ = ["seed_everything", "build_pipeline", "fit_normalizer", "save_preprocess", "wrap_model",
           "make_optimizer"]


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def fit_normalizer(cfg: RunConfig, splits: DatasetSplits) -> Normalizer:
    """The input normalisation, fitted on the training split (never validation or test)."""
    train = splits.train
    if isinstance(train, DetectionImages):  # [0, 1] pixels: torchvision's detectors normalise inside
        if cfg.normalize != "none":
            raise ReslabError(f"normalize {cfg.normalize}: detectors take [0, 1] pixels and normalise them inside "
                              "(ImageNet mean and std); use --normalize none, as recipe detect does")
        return Normalizer.fit("none", torch.zeros(0, splits.channels, 1, 1, dtype=torch.uint8))
    if isinstance(train, SRImages):  # [0, 1] pixels: the super-resolution networks shift their own mean
        if cfg.normalize != "none":
            raise ReslabError(f"normalize {cfg.normalize}: super-resolution networks take [0, 1] pixels (EDSR subtracts "
                              "its own mean); use --normalize none, as recipe sr does")
        return Normalizer.fit("none", torch.zeros(0, splits.channels, 1, 1, dtype=torch.uint8))
    if isinstance(train, MaskImages):  # images of many sizes: per-channel statistics only
        if cfg.normalize == "per_pixel_mean":
            raise ReslabError("normalize per_pixel_mean needs images of one size; segmentation uses per_channel "
                              "(--normalize per_channel, as recipe segment does) or none")
        return Normalizer.fit(cfg.normalize, stack_for_normalizer(train))
    if not isinstance(train, FileImages):
        return Normalizer.fit(cfg.normalize, train.images)
    # Per-pixel mean of centre crops of up to 2,000 training images (fixed sample).
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(train), generator=g)[:2000].tolist()
    crop = ResizeCenterCrop(resize_short_side_ratio(cfg.crop_size), cfg.crop_size)
    sample = torch.stack([crop(train.load(i)) for i in idx]) if idx else torch.zeros(0, splits.channels, 1, 1)
    return Normalizer.fit(cfg.normalize, sample)


class _LoaderArgs(TypedDict):
    """The keyword arguments that TensorLoader and FileLoader share."""

    normalizer: Normalizer
    device: torch.device
    seed: int
    channels_last: bool
    rank: int
    world_size: int
    balanced: bool


def build_pipeline(cfg: RunConfig, splits: DatasetSplits, device: torch.device, ctx: DistContext,
                   normalizer: Normalizer | None = None, model: nn.Module | None = None,
                   ) -> tuple[TensorLoader | FileLoader | SegLoader | ContentLoader | SRLoader | DetLoader, Normalizer]:
    """The training loader and the normaliser, from the dataset splits and the recipe (and, for
    segmentation, the model: the tile it takes and the margin its valid convolutions crop; for style
    transfer, content images in [0, 1]: :func:`reslab.train.stylize.content_loader`)."""
    train = splits.train
    if getattr(get_model_entry(cfg.model), "task", "classify") == "stylize":
        return content_loader(cfg, splits, device, ctx)
    if normalizer is None:
        normalizer = fit_normalizer(cfg, splits)
    if isinstance(train, MaskImages):
        return _segmentation_loader(cfg, train, device, ctx, normalizer, model), normalizer
    if isinstance(train, SRImages):
        return _restore_loader(cfg, train, device, ctx, model), normalizer
    if isinstance(train, DetectionImages):
        return _detection_loader(cfg, train, device, ctx), normalizer
    common = _LoaderArgs(normalizer=normalizer, device=device, seed=cfg.seed, channels_last=cfg.channels_last,
                         rank=ctx.rank, world_size=ctx.world_size, balanced=cfg.balanced)
    regularizer = BatchRegularizer.from_config(cfg, len(splits.classes))  # random erasing, mixup, CutMix
    if isinstance(train, FileImages):
        aug: Callable[..., torch.Tensor] = ScaleAugment(cfg.scale_range, cfg.crop_size) if cfg.augment == "scale_crop_flip" else \
            ResizeCenterCrop(resize_short_side_ratio(cfg.crop_size), cfg.crop_size)
        if cfg.auto_augment != "none" or cfg.color_jitter > 0:
            aug = PolicyAugment(aug, cfg.auto_augment, cfg.color_jitter)
        return FileLoader(train, cfg.batch_size, transform=aug, train=True, num_workers=cfg.num_workers,
                          lighting_std=cfg.lighting, regularizer=regularizer, **common), normalizer
    return TensorLoader(train.images, train.labels, cfg.batch_size, train=True, augment=cfg.augment,
                        pad=cfg.pad, lighting_std=cfg.lighting, policy=cfg.auto_augment, color_jitter=cfg.color_jitter,
                        regularizer=regularizer,
                        **common), normalizer


def _segmentation_loader(cfg: RunConfig, train: MaskImages, device: torch.device, ctx: DistContext,
                         normalizer: Normalizer, model: nn.Module | None) -> SegLoader:
    """Random tiles of the training images with their masks: flips and 90-degree rotations unless
    ``augment`` is ``none``, elastic deformation by ``elastic_sigma``, and the U-Net border weights
    (computed once per training image, before augmentation) when ``border_weight`` is set."""
    if model is None:
        raise ReslabError("a segmentation pipeline needs the model (its tile size and output margin)")
    tile = legal_tile(model, cfg.crop_size)
    margin = model.output_margin(tile, tile)[0] if hasattr(model, "output_margin") else 0
    weights = None
    if cfg.border_weight > 0:
        weights = [unet_weight_map(m, w0=cfg.border_weight, sigma=cfg.border_sigma) for m in train.masks]
    flips = cfg.augment != "none"
    return SegLoader(train, cfg.batch_size, crop_size=tile, margin=margin, normalizer=normalizer, device=device,
                     seed=cfg.seed, flips=flips, rot90=flips, elastic_sigma=cfg.elastic_sigma if flips else 0.0,
                     weights=weights, rank=ctx.rank, world_size=ctx.world_size, channels_last=cfg.channels_last)


def _restore_loader(cfg: RunConfig, train: SRImages, device: torch.device, ctx: DistContext,
                    model: nn.Module | None) -> SRLoader:
    """Random HR patches of ``crop_size`` pixels with their bicubic-downscaled LR patches (at the
    model's scale, :func:`reslab.superres.run_scale`), flips and quarter turns unless ``augment`` is
    ``none``; the LR patches upscaled by bicubic for a network that takes that (VDSR)."""
    if model is None:
        raise ReslabError("a super-resolution pipeline needs the model (its scale and input)")
    return SRLoader(train, cfg.batch_size, patch=cfg.crop_size, scale=run_scale(model, cfg.scale),
                    upscaled_input=bool(getattr(model, "upscaled_input", False)), device=device, seed=cfg.seed,
                    flips=cfg.augment != "none", rank=ctx.rank, world_size=ctx.world_size,
                    channels_last=cfg.channels_last)


def _detection_loader(cfg: RunConfig, train: DetectionImages, device: torch.device, ctx: DistContext) -> DetLoader:
    """Whole training images with their boxes (and instance masks): horizontal flips unless ``augment``
    is ``none``; with ``scale_crop_flip`` each image's shorter side is also drawn from ``scale_range``
    (scale jitter; boxes and masks move with the image)."""
    if cfg.augment not in ("none", "flip", "scale_crop_flip"):
        raise ReslabError(f"augment {cfg.augment}: detection takes none, flip or scale_crop_flip (flips, and scale "
                          "jitter of the shorter side over --scale-range); crops would cut boxes")
    scale_range = tuple(cfg.scale_range) if cfg.augment == "scale_crop_flip" else None
    return DetLoader(train, cfg.batch_size, device=device, seed=cfg.seed, flips=cfg.augment != "none",
                     scale_range=scale_range, rank=ctx.rank, world_size=ctx.world_size)


def make_optimizer(cfg: RunConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``model``'s parameters: SGD with momentum (Nesterov when asked) or
    AdamW, both with ``cfg.weight_decay``."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


def save_preprocess(run_dir: Path, normalizer: Normalizer, splits: DatasetSplits, cfg: RunConfig) -> None:
    """``preprocess.safetensors``: what eval, predict and export need to feed the model."""
    meta = {"kind": normalizer.kind, "channels": str(splits.channels),
            "image_size": json.dumps(list(splits.image_size) if splits.image_size else None),
            "crop_size": str(cfg.crop_size), "classes": json.dumps(list(splits.classes))}
    with atomic_path(run_dir / rundir.PREPROCESS) as tmp:
        save_file(normalizer.state_dict(), str(tmp), metadata=meta)


def wrap_model(model: nn.Module, cfg: RunConfig, device: torch.device, ctx: DistContext) -> tuple[nn.Module, nn.Module]:
    """(model, net): the model on its device (sync-BN converted when asked), and what the loop
    calls (the same model, or its DDP / compiled wrapper)."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.enabled and cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]
    return model, net
