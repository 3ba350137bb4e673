"""evaluate(): top-1/top-5 error, per-class accuracy and the confusion matrix under the paper's
test protocols: a single centre view, 10-crop (corners + centre, and flips), and fully
convolutional multi-scale (whole images at several scales, and flips; scores averaged).

Under torch.distributed each rank evaluates a disjoint contiguous shard, with no padding, and the
counts are summed: every sample is counted exactly once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import rundir
from .data import DatasetSplits, FileImages
from .data.transforms import Normalizer, ResizeCenterCrop, resize_short_side_ratio, scaled_views, ten_crop_views
from .dense import run_task
from .errors import ReslabError
from .io import atomic_write_text
from .metrics import confusion_matrix, per_class_accuracy, topk_correct
from .models.base import AuxOutput
from .plots import plot_confusion_matrix
from .predict import RunEvaluation, check_runtime, load_run, run_split, with_runtime

__all__ = ["EvalResult", "RunEvaluation", "evaluate", "evaluate_run", "PROTOCOLS"]

PROTOCOLS = ("center", "10crop", "multiscale")


@dataclass
class EvalResult:
    protocol: str
    n: int
    loss: float
    top1_err: float
    top5_err: float
    confusion: torch.Tensor = field(repr=False)

    @property
    def per_class_acc(self) -> list[float]:
        return per_class_accuracy(self.confusion).tolist()

    def to_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        acc = self.per_class_acc
        names = classes or [str(i) for i in range(len(acc))]
        return {
            "protocol": self.protocol, "n": self.n, "loss": self.loss, "top1_err": self.top1_err,
            "top5_err": self.top5_err,
            "per_class_acc": {c: (None if math.isnan(a) else round(a, 4)) for c, a in zip(names, acc)},
            "confusion": self.confusion.tolist(),
        }


def _shard(n: int, rank: int, world: int) -> tuple[int, int]:
    per = -(-n // world)
    lo = min(rank * per, n)
    return lo, min(lo + per, n)


def _scores(model: nn.Module, views: list[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """Mean softmax over views (one view: plain softmax)."""
    probs = None
    for v in views:
        if channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        out = model(v)
        if isinstance(out, AuxOutput):
            out = out.logits
        p = F.softmax(out.float(), dim=1)
        probs = p if probs is None else probs + p
    assert probs is not None  # every protocol gives at least one view
    return probs / len(views)


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, *, normalizer: Normalizer, num_classes: int,
             protocol: str = "center", batch_size: int = 256, device: torch.device | str = "cpu",
             pad: int = 4, crop_size: int = 224, scales: list[float] | None = None,
             channels_last: bool = False, amp_dtype: torch.dtype | None = None,
             num_workers: int = 2, rank: int = 0, world_size: int = 1) -> EvalResult:
    """Evaluate ``model`` on an in-memory (:class:`TensorImages`) or streamed (:class:`FileImages`) split.

    Args:
        protocol: ``center``, ``10crop`` or ``multiscale``.
        pad: in-memory images: 10-crop views are taken from the image zero-padded by ``pad``.
        crop_size: streamed images: the crop the network sees (the shorter side is resized to
            256/224 of it for ``center`` and ``10crop``).
        scales: ``multiscale``: factors of the image size (in-memory) or shorter sides in pixels
            (streamed). Defaults: (1, 1.25, 1.5) and the paper's {224, 256, 384, 480, 640}.
    """
    if protocol not in PROTOCOLS:
        raise ReslabError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    norm = normalizer.to(device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else _null()
    try:
        with autocast:
            for probs, y in _batches(model, data, norm, protocol, batch_size, device, pad, crop_size,
                                     scales, channels_last, num_workers, rank, world_size):
                loss_sum += F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum").double()
                top5 += topk_correct(probs, y, (5,))[0]
                cm += confusion_matrix(probs.argmax(1), y, num_classes)
    finally:
        model.train(was_training)
    if world_size > 1:
        for t in (cm, loss_sum, top5):
            dist.all_reduce(t)
    n = int(cm.sum())
    if n == 0:
        raise ReslabError("nothing to evaluate: the split is empty")
    correct = int(cm.diag().sum())
    return EvalResult(protocol, n, float(loss_sum) / n, 100.0 * (n - correct) / n,
                      100.0 * (n - int(top5)) / n, cm.cpu())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _batches(model, data, norm, protocol, batch_size, device, pad, crop_size, scales, channels_last,
             num_workers, rank, world_size):
    lo, hi = _shard(len(data), rank, world_size)
    if isinstance(data, FileImages):
        yield from _file_batches(model, data, norm, protocol, batch_size, device, crop_size, scales,
                                 channels_last, num_workers, lo, hi)
        return
    for start in range(lo, hi, batch_size):
        stop = min(start + batch_size, hi)
        x = norm(data.images[start:stop].to(device))
        y = data.labels[start:stop].to(device)
        if protocol == "center":
            views = [x]
        elif protocol == "10crop":
            views = ten_crop_views(F.pad(x, (pad, pad, pad, pad)), x.shape[-1]) if pad > 0 else [x, x.flip(3)]
        else:
            views = scaled_views(x, scales or [1.0, 1.25, 1.5])
        yield _scores(model, views, channels_last), y


def _file_batches(model, data, norm, protocol, batch_size, device, crop_size, scales, channels_last,
                  num_workers, lo, hi):
    resize = resize_short_side_ratio(crop_size)
    if protocol == "center":
        transforms = [ResizeCenterCrop(resize, crop_size)]
    elif protocol == "10crop":
        transforms = [ResizeCenterCrop(resize, None)]
    else:
        transforms = [ResizeCenterCrop(int(s), None) for s in (scales or [224, 256, 384, 480, 640])]

    class _Views(Dataset):
        def __len__(self):
            return hi - lo

        def __getitem__(self, i):
            img = data.load(lo + i)
            return [t(img) for t in transforms], data.samples[lo + i][1]

    per_image = protocol != "center"  # images of different shapes: one image (all views) per step
    loader = DataLoader(_Views(), batch_size=1 if per_image else batch_size, num_workers=num_workers,
                        collate_fn=_collate_views)
    for views, y in loader:
        y = y.to(device)
        if not per_image:
            x = norm(torch.stack([v[0] for v in views]).to(device))
            yield _scores(model, [x], channels_last), y
            continue
        imgs = [norm(v.to(device)[None]) for v in views[0]]
        if protocol == "10crop":
            vs = ten_crop_views(imgs[0], crop_size)
        else:
            vs = [u for img in imgs for u in (img, img.flip(3))]
        yield _scores(model, vs, channels_last), y


def _collate_views(items):
    return [i[0] for i in items], torch.tensor([i[1] for i in items])


def evaluate_run(run_dir: str | Path, *, split: str = "test", protocol: str | None = None, checkpoint: str = "best",
                 data: str | None = None, data_dir: str | None = None, splits: DatasetSplits | None = None,
                 device: torch.device | str = "cpu", batch_size: int | None = None,
                 amp_dtype: torch.dtype | None = None, rank: int = 0, world_size: int = 1,
                 plot_name: str | None = None, runtime: str = "torch") -> RunEvaluation[EvalResult]:
    """Evaluate a run's checkpoint on its own data (or ``data``), under the paper's test protocols.

    Rank 0 writes ``eval-{split}-{protocol}.json`` (errors, loss, per-class accuracy, confusion
    matrix) and ``plots/confusion-{split}-{protocol}.png`` into the run directory. ``fit`` uses
    this for its final test; ``reslab eval`` calls it directly.

    Args:
        run_dir: the run directory.
        split: ``test`` or ``val``.
        protocol: ``center``, ``10crop`` or ``multiscale`` (default: the run's ``test_protocol``).
        checkpoint: ``best`` (``last`` when the run has no best yet), ``last`` or a ``.safetensors`` path.
        data: a dataset name to evaluate on instead of the run's (class names must match).
        splits: already-loaded splits (skips loading; ``fit`` passes its own).
        plot_name: the confusion plot's file name in ``plots/`` (default ``confusion-{split}-{protocol}.png``).
        runtime: ``torch`` (eager), or ``onnxruntime`` / ``openvino`` on the CPU: the model exported to a
            temporary ONNX file (:func:`reslab.predict.with_runtime`); the files written get ``-{runtime}``
            before their extension, beside the eager model's.
    """
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    if batch_size is not None and batch_size < 1:
        raise ReslabError(f"batch size must be at least 1, got {batch_size}")
    if run_task(run_dir) == "segment":
        raise ReslabError(f"{run_dir} is a segmentation run; evaluate it with reslab.evaluate_dense_run ('reslab eval' "
                          "chooses by itself): pixel error, Rand error, IoU and Dice")
    if run_task(run_dir) == "restore":
        raise ReslabError(f"{run_dir} is a super-resolution run; evaluate it with reslab.superres.evaluate_sr_run ('reslab "
                          "eval' chooses by itself): PSNR and SSIM beside bicubic")
    check_runtime(runtime, device)
    run = load_run(run_dir, checkpoint, device)
    cfg = run.config
    _, images = run_split(run, split, data=data, data_dir=data_dir, splits=splits)
    protocol = protocol or cfg.test_protocol
    if runtime != "torch":
        if protocol == "multiscale":
            raise ReslabError(f"--runtime {runtime} runs the model at its exported input size; the multiscale protocol "
                              "needs other sizes: use --protocol center or 10crop, or --runtime torch")
        run = with_runtime(run, runtime)
    tag = "" if runtime == "torch" else f"-{runtime}"
    res = evaluate(run.model, images, normalizer=run.normalizer, num_classes=len(run.classes), protocol=protocol,
                   batch_size=batch_size or max(cfg.batch_size, 256), device=device, pad=cfg.pad,
                   crop_size=cfg.crop_size, scales=cfg.test_scales or None, channels_last=cfg.channels_last,
                   amp_dtype=amp_dtype, num_workers=cfg.num_workers, rank=rank, world_size=world_size)
    out = RunEvaluation(res, split, run.checkpoint, list(run.classes), None, None, runtime)
    if rank == 0:
        out.json_path = run.run_dir / f"eval-{split}-{res.protocol}{tag}.json"
        atomic_write_text(out.json_path, json.dumps(out.to_dict(), indent=2))
        out.plot_path = run.run_dir / rundir.PLOTS / (plot_name or f"confusion-{split}-{res.protocol}{tag}.png")
        plot_confusion_matrix(res.confusion, list(run.classes), out.plot_path)
    return out
