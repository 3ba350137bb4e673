"""Fast style transfer as a :class:`~reslab.train.task.Task` (Johnson, Alahi & Fei-Fei 2016): a
transformation network (``style_johnson``) trained on content images (any classification dataset,
labels ignored, or ``sr:PATH``, a folder or archive of photos) with the perceptual loss of
:mod:`reslab.style` to one style image.

The training batches are content images in [0, 1], the network's input and the feature loss's target
at once (:class:`ContentLoader`): the shorter side resized to ``crop_size`` (the paper: 256) and the
centre square (``augment none``, recipe ``style``), or a random square and a random horizontal flip
(any other ``augment``; in-memory images of one size: the flip only). Validation: the total
perceptual loss on the held-out content images (lower is better: the selection metric ``val_loss``)
and the figure ``plots/style-val.png``; the test record: the content, style and TV losses on the
test images and ``plots/style-test.png``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import rundir
from ..config import RunConfig, auto_pending
from ..data import DatasetSplits, FileImages, TensorImages
from ..data.loader import FileLoader, TensorLoader, _Batches, epoch_permutation, sample_generator
from ..data.sr import SRImages
from ..data.transforms import Normalizer, ResizeCenterCrop, ScaleAugment, resize_center_crop
from ..errors import ReslabError
from ..predict import image_path
from ..style import (
    STYLE_ROWS,
    PerceptualLoss,
    evaluate_style,
    evaluate_style_run,
    load_loss_network,
    load_style_image,
    plot_style,
    record_style_inputs,
)
from .distributed import DistContext
from .task import EvalContext, call_net

__all__ = ["StyleTask", "ContentLoader", "PhotoLoader", "content_loader", "check_style_config", "absolute_style_paths"]


def check_style_config(cfg: RunConfig, splits: DatasetSplits | None = None) -> None:
    """What a style run needs, checked before anything is built: a style image, a loss network,
    images in [0, 1] (``normalize none``), colour data, settings not chosen by recipe ``auto``."""
    if not cfg.style:
        raise ReslabError(f"{cfg.model} learns one style: give the style image with --style FILE (any image PIL "
                          "reads, e.g. --style starry.jpg)")
    if not cfg.loss_net:
        raise ReslabError("style transfer needs a loss network: --loss-net vgg16-397923af.pth (torchvision's VGG-16 "
                          "weights, https://download.pytorch.org/models/vgg16-397923af.pth) or a classifier's run directory")
    if auto_pending(cfg):
        raise ReslabError("recipe auto chooses classification settings; train a style network with recipe style "
                          "(the default when no recipe is named: --recipe style)")
    if cfg.normalize != "none":
        raise ReslabError(f"{cfg.model} takes images in [0, 1]: use --normalize none (recipe style's), "
                          f"not {cfg.normalize}")
    if splits is not None and splits.channels != 3:
        raise ReslabError(f"{cfg.data} has {splits.channels}-channel images; style transfer takes colour images")
    try:  # a missing file, a folder, a URL: refused before the loss network loads
        image_path(cfg.style)
    except ReslabError as e:
        raise ReslabError(f"--style: {e}") from None


def absolute_style_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the style image and a loss network file or run as absolute paths, so eval and
    ``--resume`` find them from any directory."""
    def absolute(p: str | None) -> str | None:
        return str(Path(p).expanduser().absolute()) if p and "://" not in p else p
    return dataclasses.replace(cfg, style=absolute(cfg.style), loss_net=absolute(cfg.loss_net))


class StyleTask:
    name = "stylize"
    selection_metric = "val_loss"
    forward = staticmethod(call_net)

    def __init__(self, cfg: RunConfig, model: nn.Module | None = None) -> None:
        check_style_config(cfg)
        self.cfg = cfg
        self.style = load_style_image(str(cfg.style), cfg.crop_size)
        net = load_loss_network(str(cfg.loss_net))
        self.loss_fn = PerceptualLoss(net, self.style, cfg.content_weight, cfg.style_weight, cfg.tv_weight)
        self._last: torch.Tensor | None = None  # the last batch's (content, style, tv) for batch_stats

    def save_inputs(self, run_dir: Path) -> None:
        """Copy the style image into the run directory and record the loss network (path, sha256)."""
        record_style_inputs(run_dir, self.cfg, self.loss_fn.net)

    def _on(self, device: torch.device) -> PerceptualLoss:
        if self.loss_fn.net.mean.device != device:
            self.loss_fn.to(device)
        return self.loss_fn

    def loss(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = self._on(output.device)(output, target)
        self._last = torch.stack([losses.content, losses.style, losses.tv]).detach().double()
        return losses.total, output

    def batch_stats(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        last = self._last if self._last is not None else torch.zeros(3, dtype=torch.float64)
        n = len(target)
        return {"content_loss": last[0] * n, "style_loss": last[1] * n, "tv_loss": last[2] * n}

    def train_metrics(self, stats: dict[str, Any]) -> dict[str, float]:
        n = max(stats["n"], 1)
        return {"train_loss": stats["loss"] / n, **{f"train_{k}": float(stats.get(k, 0.0)) / n
                                                   for k in ("content_loss", "style_loss", "tv_loss")}}

    def running_error(self, stats: dict[str, Any]) -> float | None:
        return None

    def validate(self, model: nn.Module, splits: DatasetSplits, normalizer: Any, ev: EvalContext) -> dict[str, float]:
        # every rank evaluates the (small) validation split whole: the same figures everywhere
        res, rows = evaluate_style(model, splits.val, self._on(ev.device), crop=self.cfg.crop_size,
                                   batch_size=max(1, min(self.cfg.batch_size, 16)), device=ev.device,
                                   amp_dtype=ev.amp_dtype, keep=STYLE_ROWS)
        run_dir = getattr(ev, "run_dir", None)  # the training loop's session has one; other callers may not
        if ev.ctx.is_main and run_dir is not None:
            plot_style(rows, self.style, Path(run_dir) / rundir.PLOTS / "style-val.png",
                       title=f"{self.cfg.model}: validation images (the latest validation's weights)")
        return {"val_loss": res.loss, "val_content_loss": res.content_loss, "val_style_loss": res.style_loss,
                "val_tv_loss": res.tv_loss}

    def test(self, run_dir: Path, splits: DatasetSplits, checkpoint: str, ev: EvalContext) -> dict[str, Any]:
        run = evaluate_style_run(run_dir, split="test", checkpoint=checkpoint, splits=splits, device=ev.device,
                                 amp_dtype=ev.amp_dtype, loss=self._on(ev.device), write=ev.ctx.is_main,
                                 batch_size=max(1, min(self.cfg.batch_size, 16)))
        return {"event": "test", **run.to_dict(), "protocol": f"{run.result.crop}-pixel centre crops"}

    @staticmethod
    def summary(record: dict[str, Any]) -> str:
        w = record.get("weights") or {}
        return (f"test ({record['protocol']}, {record['checkpoint']} checkpoint, {record['n']} images): perceptual loss "
                f"{record['loss']:.6g} (content {record['content_loss']:.6g} x {w.get('content', 0):g}, style "
                f"{record['style_loss']:.6g} x {w.get('style', 0):g}, tv {record['tv_loss']:.6g} x {w.get('tv', 0):g})")


class ContentLoader:
    """Training batches for style transfer: ``(x, x)``, content images in [0, 1] as the network's
    input and the feature loss's target (the same tensor), from a split's loader."""

    def __init__(self, inner: TensorLoader | FileLoader | PhotoLoader, crop: int) -> None:
        self.inner, self.crop = inner, crop

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, _ in self.inner.iterate(start_batch):
            if x.dtype == torch.uint8:  # photos cut to squares: not normalised yet
                x = x.float() / 255
            if tuple(x.shape[-2:]) != (self.crop, self.crop):  # in-memory images of another size
                x = resize_center_crop(x, self.crop).clamp_(0, 1)
            yield x, x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(0)


class PhotoLoader(_Batches):
    """Training batches of photos of many sizes (``sr:PATH``'s whole images), as uint8 ``(n, 3, crop,
    crop)``: each photo's shorter side resized to ``crop`` (bilinear, antialiased), then the centre
    square, or (``random``) a random square and a random horizontal flip, drawn from the sample's own
    (seed, epoch, position) generator. Same contract as the other loaders: global batches, rank
    slices, an order that is a function of (seed, epoch)."""

    def __init__(self, photos: SRImages, batch_size: int, *, crop: int, random: bool, device: torch.device,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.photos, self.batch_size, self.crop, self.random = photos, batch_size, crop, random
        self.device, self.seed, self.rank, self.world_size = torch.device(device), seed, rank, world_size
        self.train, self.epoch = True, 0

    def _num_samples(self) -> int:
        return len(self.photos)

    def _square(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if not self.random:
            return resize_center_crop(img, self.crop)
        from torchvision.transforms.v2 import functional as TF

        img = TF.resize(img, [self.crop], antialias=True)
        h, w = img.shape[-2:]
        top = int(torch.randint(0, h - self.crop + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - self.crop + 1, (1,), generator=gen))
        img = img[:, top:top + self.crop, left:left + self.crop]
        return img.flip(-1) if bool(torch.rand(1, generator=gen) < 0.5) else img

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_permutation(len(self.photos), self.seed, self.epoch).tolist()
        for b in range(start_batch, len(self)):
            lo, hi = self._slice(b * self.batch_size, (b + 1) * self.batch_size)
            x = torch.stack([self._square(self.photos.images[order[p]], sample_generator(self.seed, self.epoch, p))
                             for p in range(lo, hi)])
            yield x.to(self.device), torch.zeros(hi - lo, dtype=torch.long, device=self.device)


def content_loader(cfg: RunConfig, splits: DatasetSplits, device: torch.device, ctx: DistContext) -> tuple[ContentLoader, Normalizer]:
    """The training loader of a style run and its normaliser (``none``: images in [0, 1])."""
    check_style_config(cfg, splits)
    train = splits.train
    normalizer = Normalizer("none", torch.zeros(splits.channels, 1, 1), torch.ones(splits.channels, 1, 1))
    common: dict[str, Any] = dict(normalizer=normalizer, device=device, seed=cfg.seed, channels_last=cfg.channels_last,
                                  rank=ctx.rank, world_size=ctx.world_size)
    if isinstance(train, SRImages):  # photos of many sizes: squares cut here, [0, 1] in ContentLoader
        photos = PhotoLoader(train, cfg.batch_size, crop=cfg.crop_size, random=cfg.augment != "none", device=device,
                             seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
        return ContentLoader(photos, cfg.crop_size), normalizer
    if isinstance(train, FileImages):
        aug = (ResizeCenterCrop(cfg.crop_size, cfg.crop_size) if cfg.augment == "none"
               else ScaleAugment([cfg.crop_size, cfg.crop_size], cfg.crop_size))
        inner: TensorLoader | FileLoader = FileLoader(train, cfg.batch_size, transform=aug, train=True,
                                                      num_workers=cfg.num_workers, **common)
    elif isinstance(train, TensorImages):
        inner = TensorLoader(train.images, train.labels, cfg.batch_size, train=True,
                             augment="none" if cfg.augment == "none" else "flip", **common)
    else:
        raise ReslabError(f"{cfg.data} holds no content images (images with masks?); give photos (sr:PATH) or a "
                          "classification dataset (imagefolder:PATH)")
    return ContentLoader(inner, cfg.crop_size), normalizer
