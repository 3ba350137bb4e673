"""fit(): the one training loop, for every task.

Epochs over a loader whose batches are pure functions of (seed, epoch, batch), SGD with the
configured schedule, validation on the held-out split for model selection (the test set is
evaluated once, at the end, with the selected checkpoint), atomic checkpoints with exact resume,
a clean stop on Ctrl-C / SIGTERM (checkpoint first) and on a NaN/Inf loss (last good checkpoint
kept). Under torchrun it runs as one rank of DistributedDataParallel. What differs between tasks
(loss, statistics, evaluation) comes from a :class:`~reslab.train.task.Task`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import rundir
from .._table import format_duration
from ..config import RunConfig, auto_pending, check_resume, make_config
from ..data import DatasetSplits, canonical_data_name, get_dataset_entry, load_dataset
from ..data.detection import DetectionImages
from ..data.segmentation import MaskImages
from ..data.sr import SRImages
from ..errors import ReslabError
from ..io import atomic_write_text
from ..models import check_model_size, create_model, get_model_entry
from ..precision import resolve_precision
from .auto import adopt_auto, resolve_auto
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .classify import ClassifyTask
from .detect import DetectTask
from .distributed import DistContext, init_distributed, resolve_device
from .init import init_weights
from .logging import MetricsWriter, Progress, env_info
from .pipeline import build_pipeline, make_optimizer, save_preprocess, seed_everything, wrap_model
from .restore import RestoreTask
from .schedule import LRSchedule
from .segment import SegmentTask
from .stats import all_reduce_stats, empty_stats, merge_stats
from .stopping import StopFlag, TrainingDiverged, TrainingInterrupted, check_finite, should_stop, stop_signals
from .stylize import StyleTask, absolute_style_paths, check_style_config
from .task import Task

__all__ = ["fit", "FitResult", "TrainingDiverged", "TrainingInterrupted", "task_for"]


@dataclass
class FitResult:
    run_dir: Path
    status: str
    steps: int
    epochs: int
    best_epoch: int | None
    best_val_err: float | None
    test: dict[str, Any] | None
    wall_time: float
    selection_metric: str = "val_err"

    def summary(self) -> str:
        """One line: steps, time, best validation error, test error."""
        best = (f"best val err {self.best_val_err:.2f}% (epoch {self.best_epoch})" if self.best_val_err is not None
                else "no validation split")
        if self.best_val_err is not None and self.selection_metric != "val_err":  # a loss, not an error in percent
            best = f"best {self.selection_metric.replace('_', ' ')} {self.best_val_err:.6g} (epoch {self.best_epoch})"
        test = ""
        if self.test and "top1_err" in self.test:
            test = f", test err {self.test['top1_err']:.2f}% ({self.test['protocol']})"
        elif self.test and "psnr" in self.test:  # super-resolution
            test = f", test PSNR {self.test['psnr']:.2f} dB (bicubic {self.test['bicubic']['psnr']:.2f} dB)"
        elif self.test and "bbox" in self.test:  # detection
            test = f", test box AP {100 * (self.test['bbox']['AP'] or 0):.1f}"
            if self.test.get("segm"):
                test += f", mask AP {100 * (self.test['segm']['AP'] or 0):.1f}"
        elif self.test and "pixel_err" not in self.test and "loss" in self.test:
            test = f", test loss {self.test['loss']:.6g} ({self.test['protocol']})"
        elif self.test:
            test = f", test pixel err {self.test['pixel_err']:.2f}% ({self.test['protocol']})"
        return f"{self.run_dir}: {self.steps} steps in {self.wall_time:.0f}s, {best}{test}"


def task_for(cfg: RunConfig, model: nn.Module | None = None) -> Task:
    """The task a config trains: its model's (``segment`` for unet*, hourglass*; ``stylize`` for style_johnson;
    ``classify`` otherwise)."""
    if getattr(get_model_entry(cfg.model), "task", "classify") == "stylize":
        return StyleTask(cfg, model)
    if getattr(get_model_entry(cfg.model), "task", "classify") == "segment":
        if model is None:
            model = create_model(cfg.model, **cfg.model_args)
        return SegmentTask(cfg, model)
    if getattr(get_model_entry(cfg.model), "task", "classify") == "restore":  # vdsr, edsr_baseline_x*, srresnet_x4
        return RestoreTask(cfg, model if model is not None else create_model(cfg.model, **cfg.model_args))
    if getattr(get_model_entry(cfg.model), "task", "classify") == "detect":  # fasterrcnn_*, maskrcnn_*, retinanet_*
        return DetectTask(cfg, model if model is not None else create_model(cfg.model, **cfg.model_args))
    return ClassifyTask(cfg)


def check_task(cfg: RunConfig, splits: DatasetSplits) -> None:
    """A classifier on masks, or a segmentation network on labelled images, stops with what to train instead."""
    model_task = getattr(get_model_entry(cfg.model), "task", "classify")
    data_task = "segment" if isinstance(splits.train, MaskImages) else "classify"
    if isinstance(splits.train, SRImages):
        data_task = "restore"
    if isinstance(splits.train, DetectionImages):
        data_task = "detect"
    if model_task != data_task and "detect" in (model_task, data_task):
        raise ReslabError(f"{cfg.model} is a detector but {cfg.data} has no boxes; give it images with boxes "
                          "(pennfudan:PATH or coco:PATH)" if model_task == "detect" else
                          f"{cfg.data} is detection data (boxes and instance masks); train a detector on it, e.g. "
                          "maskrcnn_resnet18_fpn or fasterrcnn_resnet50_fpn ('reslab models *rcnn*')")
    if model_task == "stylize" and data_task in ("classify", "restore"):  # content images: labels ignored, or photos
        check_style_config(cfg, splits)
        return
    if model_task != data_task and "restore" in (model_task, data_task):
        raise ReslabError(f"{cfg.model} is a super-resolution network but {cfg.data} is not super-resolution data; give "
                          "it photos: sr:PATH (a folder or archive of images)" if model_task == "restore" else
                          f"{cfg.data} is super-resolution data (photos, no labels); train a super-resolution network "
                          "on it: vdsr, edsr_baseline_x2, edsr_baseline_x3, edsr_baseline_x4 or srresnet_x4")
    if model_task == data_task:
        return
    if model_task == "stylize":
        raise ReslabError(f"{cfg.model} learns from content images, not {cfg.data}: give a folder of photos (sr:PATH) or "
                          "a classification dataset (imagefolder:PATH, labels ignored)")
    if model_task == "segment":
        raise ReslabError(f"{cfg.model} is a segmentation network but {cfg.data} is a classification dataset; give it "
                          "images with masks (isbi2012:PATH, pennfudan:PATH or segfolder:PATH), or train a classifier")
    boxes = (f", or a detector for its boxes, e.g. maskrcnn_{cfg.model}_fpn"
             if "detect" in get_dataset_entry(cfg.data).tasks else "")
    raise ReslabError(f"{cfg.model} is a classifier but {cfg.data} is a segmentation dataset (images with masks); "
                      f"train a segmentation network on it, e.g. unet_{cfg.model} or unet ('reslab models unet*'){boxes}")


def fit(config: RunConfig, out: str | os.PathLike | None = None, *, resume: bool = False,
        data: DatasetSplits | None = None, on_step: Callable[[int, nn.Module], None] | None = None,
        force: bool = False) -> FitResult:
    """Train ``config.model`` on ``config.data`` and write a run directory.

    Args:
        config: the resolved run configuration (see :func:`reslab.config.resolve_config`).
        out: the run directory (default ``runs/<model>-<data>-<time>``).
        resume: continue the run in ``out`` exactly where its last checkpoint left it. ``config``
            may differ from the saved one only in :data:`reslab.config.RESUME_MAY_CHANGE`.
        data: already-loaded :class:`~reslab.data.DatasetSplits` (skips ``load_dataset``).
        on_step: called as ``on_step(step, model)`` after every optimizer step (hooks, probes).
        force: write into an existing ``out`` that holds other files (never into another run).

    The run directory is locked for the duration (one writer per run: a second ``fit`` into it
    raises a ReslabError at once). A run that never saved a checkpoint is started again.

    Returns:
        A :class:`FitResult`. Raises :class:`TrainingInterrupted` after saving on Ctrl-C/SIGTERM
        and :class:`TrainingDiverged` on a NaN/Inf loss.
    """
    s = _setup(config, out, resume, data, force)
    status = "finished"
    try:
        with stop_signals() as stop:
            for epoch in range(s.start_epoch, s.epochs):
                record = _train_epoch(s, epoch, stop, on_step)
                _validate(s, epoch, record)
                _end_epoch(s, epoch, record)
                if s.step >= s.total_steps:
                    break
    except TrainingInterrupted:
        status = "interrupted"
        raise
    except TrainingDiverged:
        status = "nan"
        raise
    finally:
        s.progress.close()
        if status != "finished":
            _log_end(s, status)
            if s.lock is not None:
                s.lock.release()
    try:
        test = _test(s)
        wall = _log_end(s, status)
    finally:
        if s.lock is not None:
            s.lock.release()
    return FitResult(s.run_dir, status, s.step, s.epochs, s.best_epoch, s.best_err, test, wall, s.task.selection_metric)


# ---------------------------------------------------------------------------------------------
@dataclass
class _Session:
    """Everything one call of fit() carries between its phases."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    ctx: DistContext
    amp_dtype: torch.dtype | None
    task: Task
    splits: DatasetSplits
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    train_loader: Any
    normalizer: Any
    steps_per_epoch: int
    total_steps: int
    epochs: int
    metrics: MetricsWriter
    progress: Progress
    t_start: float
    lock: rundir.RunLock | None = None
    ema: AveragedModel | None = None  # the weights' moving average: what is validated, saved and tested
    step: int = 0
    start_epoch: int = 0
    start_batch: int = 0
    best_err: float | None = None
    best_epoch: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    last_saved_step: int | None = None
    resume_at: tuple[int, int] = (0, 0)
    t_epoch: float = 0.0
    imgs_epoch: int = 0

    def state(self, epoch: int, batch: int) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "epoch": epoch, "batch": batch,
                "step": self.step, "best_val_err": self.best_err, "best_epoch": self.best_epoch,
                "epoch_acc": dict(self.stats), "config": self.cfg.to_dict(), "world_size": self.ctx.world_size}


def _open_run_dir(cfg: RunConfig, out: str | os.PathLike | None, resume: bool, force: bool,
                  ctx: DistContext) -> tuple[Path, bool, rundir.RunLock | None]:
    """Lock the run directory (rank 0: one writer per run) and check it; returns (run dir, resume, lock)."""
    if resume and out is None:
        raise ReslabError("resume needs the run directory to continue")
    if out is None:
        stamp = ctx.broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
        out = Path("runs") / f"{cfg.model}-{cfg.data.split(':')[0]}-{stamp}"
    run_dir, lock = Path(out), None
    if ctx.is_main:
        lock = rundir.lock(run_dir)
        try:
            resume = rundir.prepare(run_dir, resume, force=force)
            if resume:
                saved = make_config(rundir.read_config(run_dir))
                check_resume(saved, adopt_auto(saved, cfg), run_dir)
        except BaseException:
            lock.release(cleanup=True)
            raise
    return run_dir, bool(ctx.broadcast_object(resume)), lock


def _setup(config: RunConfig, out: str | os.PathLike | None, resume: bool, data: DatasetSplits | None,
           force: bool) -> _Session:
    cfg = config.validate()
    t_start = time.time()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = init_distributed(device)
    # absolute image-folder paths: eval, predict and --resume then work from any directory
    cfg = dataclasses.replace(cfg, data=canonical_data_name(cfg.data))
    if getattr(get_model_entry(cfg.model), "task", "classify") == "stylize":
        cfg = absolute_style_paths(cfg)
    run_dir, resume, lock = _open_run_dir(cfg, out, resume, force, ctx)
    if resume and auto_pending(cfg):  # the saved run's choices, not new ones
        cfg = adopt_auto(make_config(rundir.read_config(run_dir)), cfg)
    ctx.barrier()
    try:
        return _build_session(cfg, run_dir, resume, data, device, ctx, lock, t_start)
    except BaseException:
        if lock is not None:
            lock.release(cleanup=True)
        raise


def _build_session(cfg: RunConfig, run_dir: Path, resume: bool, data: DatasetSplits | None, device: torch.device,
                   ctx: DistContext, lock: rundir.RunLock | None, t_start: float) -> _Session:
    seed_everything(cfg.seed, cfg.deterministic)

    if cfg.batch_size % ctx.world_size:
        raise ReslabError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly over "
                          f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    splits = data if data is not None else load_dataset(
        cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed, skip_bad=cfg.skip_bad,
        image_size=cfg.image_size, task=getattr(get_model_entry(cfg.model), "task", "classify"))
    if len(splits.train) == 0:
        raise ReslabError(f"dataset {cfg.data} has no training images")
    check_task(cfg, splits)
    if auto_pending(cfg) and isinstance(splits.train, MaskImages):
        raise ReslabError("recipe auto chooses classification settings; train a segmentation network with recipe "
                          "segment (the default when no recipe is named: --recipe segment)")
    if auto_pending(cfg) and isinstance(splits.train, DetectionImages):
        raise ReslabError("recipe auto chooses classification settings; train a detector with recipe detect "
                          "(the default when no recipe is named: --recipe detect)")
    if auto_pending(cfg) and isinstance(splits.train, SRImages):
        raise ReslabError("recipe auto chooses classification settings; train a super-resolution network with recipe sr "
                          "(the default when no recipe is named: --recipe sr)")
    if auto_pending(cfg):  # recipe auto: settings chosen from the data (rank 0's choice for every rank)
        if ctx.is_main:
            rundir.make_dirs(run_dir)
        cfg = ctx.broadcast_object(resolve_auto(cfg, splits, device, run_dir if ctx.is_main else None,
                                                log=Progress(False, 0).print if ctx.is_main else lambda _: None))
    check_model_size(cfg.model, num_classes=len(splits.classes), in_chans=splits.channels, **cfg.model_args)
    model = create_model(cfg.model, num_classes=len(splits.classes), in_chans=splits.channels, **cfg.model_args)
    if cfg.init_from and not resume:
        loaded = init_weights(model, cfg.init_from)
        if ctx.is_main:
            Progress(False, 0).print(f"init from {loaded}")
    params = sum(p.numel() for p in model.parameters())
    task = task_for(cfg, model)
    tile = getattr(task, "tile", None)
    if tile is not None and tile != cfg.crop_size and ctx.is_main:
        Progress(False, 0).print(f"note: {cfg.model} does not take {cfg.crop_size}-pixel inputs (crop_size); it trains "
                                 f"and predicts on {tile}-pixel tiles, the largest it takes below that")
    train_loader, normalizer = build_pipeline(cfg, splits, device, ctx, model=model)
    depth = getattr(getattr(model, "spec", None), "depth", None)  # ResNetSpec.depth, for depth-keyed warm-up
    model, net = wrap_model(model, cfg, device, ctx)

    base_lr = cfg.lr * (cfg.batch_size / 256 if cfg.scale_lr else 1.0)
    optimizer = make_optimizer(cfg, model, base_lr)
    # EMA of the unwrapped model's parameters and BN buffers, updated after every optimizer step
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay is not None else None)
    precision = resolve_precision(cfg.amp, device)
    amp_dtype = precision.dtype
    if ctx.is_main:
        Progress(False, 0).print(f"precision: {precision.reason}")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ReslabError(f"batch_size {cfg.batch_size} is larger than the training split ({len(splits.train)} images)")
    total_steps = cfg.iterations or cfg.epochs * steps_per_epoch
    schedule = LRSchedule(cfg, steps_per_epoch, total_steps, base_lr, model_depth=depth)

    if ctx.is_main:
        rundir.make_dirs(run_dir)
    s = _Session(cfg, run_dir, device, ctx, amp_dtype, task, splits, model, net, optimizer, scaler, schedule,
                 train_loader, normalizer, steps_per_epoch, total_steps, math.ceil(total_steps / steps_per_epoch),
                 MetricsWriter(run_dir, ctx.is_main, cfg.tensorboard), Progress(cfg.progress and ctx.is_main, total_steps),
                 t_start, lock=lock, ema=ema, stats=empty_stats())
    if resume:
        state = load_checkpoint(run_dir, model, "last", repair=ctx.is_main, ema=ema)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        s.start_epoch, s.start_batch, s.step = state["epoch"], state["batch"], state["step"]
        s.best_err, s.best_epoch = state.get("best_val_err"), state.get("best_epoch")
        if ctx.is_main:  # the saved statistics are global: counted once, on rank 0
            s.stats = dict(state.get("epoch_acc", s.stats))
        s.last_saved_step = s.step
        # a run saved with N processes resumes with M: batches are global, so nothing else changes
    if ctx.is_main:
        atomic_write_text(run_dir / rundir.CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_text(run_dir / rundir.ENV, json.dumps(env_info(device, cfg, ctx, params, precision), indent=2))
        save_preprocess(run_dir, normalizer, splits, cfg)
        atomic_write_text(run_dir / rundir.CLASSES, json.dumps(list(splits.classes)))
        save_inputs = getattr(s.task, "save_inputs", None)  # files a task reads besides the data (a style image)
        if save_inputs is not None:
            save_inputs(run_dir)
        if not resume:
            s.metrics.write({"event": "start", "model": cfg.model, "data": cfg.data, "params": params,
                             "train": len(splits.train), "val": len(splits.val) if splits.val is not None else 0,
                             "test": len(splits.test) if splits.test is not None else 0,
                             "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                             "world_size": ctx.world_size, "data_stats": splits.stats,
                             **({"task": s.task.name, "tile": tile} if tile is not None else {})})
    s.progress.update(s.step, f"epoch {s.start_epoch + 1}/{s.epochs}", "", force=True)
    s.t_epoch = time.time()
    return s


def _batches(s: _Session, epoch: int) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
    s.train_loader.set_epoch(epoch)
    first = s.start_batch if epoch == s.start_epoch else 0
    return enumerate(s.train_loader.iterate(first), start=first)


def _train_epoch(s: _Session, epoch: int, stop: StopFlag, on_step: Callable[[int, nn.Module], None] | None) -> dict:
    cfg, ctx, device = s.cfg, s.ctx, s.device
    s.net.train()
    if epoch != s.start_epoch:
        s.stats = empty_stats()
    sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=device, dtype=torch.float64)}
    seen = 0
    window: list[torch.Tensor] = []
    window_start = s.step
    check_every = 1 if device.type == "cpu" else cfg.log_every
    s.resume_at = (epoch + 1, 0)  # where a later --resume continues from
    for b, (x, y) in _batches(s, epoch):
        if s.step >= s.total_steps:
            s.resume_at = (epoch, b)  # the budget ended mid-epoch: a longer run continues here
            break
        lr = s.schedule.lr(s.step)
        for g in s.optimizer.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=s.amp_dtype, enabled=s.amp_dtype is not None):
            loss, pred = s.task.loss(s.task.forward(s.net, x, y), y)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            s.scaler.unscale_(s.optimizer)
            nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        if s.ema is not None:
            s.ema.update_parameters(s.model)
        s.step += 1
        if on_step is not None:
            on_step(s.step, s.model)
        loss_d = loss.detach()
        sums["loss"] += loss_d.double() * len(y)
        for k, v in s.task.batch_stats(pred, y).items():
            sums[k] = sums[k] + v if k in sums else v
        seen += len(y)
        s.imgs_epoch += len(y) * ctx.world_size
        window.append(loss_d)
        if len(window) >= check_every:
            check_finite(window, window_start, ctx, s.run_dir, s.last_saved_step)
            window, window_start = [], s.step
        log_now = s.step % cfg.log_every == 0 and ctx.is_main
        if s.schedule.state["warmup"] or log_now:
            so_far = merge_stats(empty_stats(), sums, seen)  # this session's part of the epoch
            if s.schedule.state["warmup"]:
                s.schedule.observe_train_error(s.step, s.task.running_error(so_far) or 0.0)
        if log_now:
            m = s.task.train_metrics(so_far)
            s.metrics.write({"event": "step", "step": s.step, "epoch": round(epoch + (b + 1) / s.steps_per_epoch, 4),
                             "time": round(time.time() - s.t_start, 3), "lr": lr, "loss": m["train_loss"],
                             "err": m.get("train_err"),
                             **{k[len("train_"):]: v for k, v in m.items() if k not in ("train_loss", "train_err")}})
        if ctx.is_main and s.progress.bar is not None:
            s.progress.update(s.step, f"epoch {epoch + 1}/{s.epochs}", f"loss {float(loss_d):.3f}  lr {lr:.4g}")
        if should_stop(ctx, device, stop):
            s.stats = merge_stats(s.stats, sums, seen)
            if ctx.enabled:  # the saved statistics are the epoch's over every rank (a resume may use any number)
                s.stats = all_reduce_stats(s.stats, device)
            if ctx.is_main:
                save_checkpoint(s.run_dir, "last", s.model, s.state(epoch, b + 1), ema=s.ema)
            s.last_saved_step = s.step
            raise TrainingInterrupted(f"interrupted at step {s.step}; checkpoint saved. "
                                      f"Continue with: reslab train --resume {s.run_dir}")
    s.stats = merge_stats(s.stats, sums, seen)
    totals = all_reduce_stats(s.stats, device) if ctx.enabled else s.stats
    elapsed = time.time() - s.t_epoch
    return {"event": "epoch", "epoch": epoch + 1, "step": s.step, "time": round(time.time() - s.t_start, 3),
            "lr": s.schedule.lr(max(s.step - 1, 0)), **s.task.train_metrics(totals),
            "images_per_s": round(s.imgs_epoch / max(elapsed, 1e-9), 2)}


def _validate(s: _Session, epoch: int, record: dict[str, Any]) -> None:
    """Validation for model selection: every ``eval_every`` epochs and after the last; the best
    checkpoint is kept by the task's selection metric."""
    last_epoch = epoch + 1 == s.epochs or s.step >= s.total_steps
    val = s.splits.val
    if val is None or len(val) == 0 or not ((epoch + 1) % s.cfg.eval_every == 0 or last_epoch):
        return
    record.update(s.task.validate(s.model if s.ema is None else s.ema.module, s.splits, s.normalizer, s))
    err = record[s.task.selection_metric]
    s.schedule.observe_val_error(err)
    if s.best_err is None or err < s.best_err:
        s.best_err, s.best_epoch = err, epoch + 1
        if s.ctx.is_main:
            save_checkpoint(s.run_dir, "best", s.model, metadata={"step": s.step, "epoch": epoch + 1, "val_err": err},
                            ema=s.ema)


def _end_epoch(s: _Session, epoch: int, record: dict[str, Any]) -> None:
    s.stats = empty_stats()
    if s.ctx.is_main:
        save_checkpoint(s.run_dir, "last", s.model, s.state(*s.resume_at), ema=s.ema)
    s.last_saved_step = s.step
    s.metrics.write(record)
    eta = (time.time() - s.t_start) / max(s.step, 1) * (s.total_steps - s.step) if s.step else 0
    val_txt = (f"  val loss {record['val_loss']:.3f} err {record['val_err']:.2f}%" if "val_err" in record and
               "val_loss" in record else "")
    if "val_box_ap" in record:  # detection
        val_txt = f"  val box AP {100 * (record['val_box_ap'] or 0):.1f}"
        if "val_mask_ap" in record:
            val_txt += f" mask AP {100 * (record['val_mask_ap'] or 0):.1f}"
    if "val_err" not in record and "val_loss" in record:  # tasks without an error rate (style transfer)
        val_txt = f"  val loss {record['val_loss']:.6g}"
    if "val_psnr" in record:  # super-resolution
        val_txt += f" PSNR {record['val_psnr']:.2f} dB"
    err_txt = f" err {record['train_err']:.2f}%" if "train_err" in record else ""
    if s.ctx.is_main:
        s.progress.print(f"epoch {epoch + 1}/{s.epochs}  train loss {record['train_loss']:.3f}{err_txt}"
                         f"{val_txt}  lr {record['lr']:.4g}  "
                         f"{record['images_per_s']:.0f} img/s  eta {format_duration(eta)}")
    s.t_epoch, s.imgs_epoch = time.time(), 0


def _test(s: _Session) -> dict[str, Any] | None:
    """The test set, evaluated once with the checkpoint chosen on validation (or the last one)."""
    test = s.splits.test
    if test is None or len(test) == 0:
        return None
    s.ctx.barrier()  # rank 0 has written the checkpoints
    checkpoint = "best" if s.best_epoch is not None else "last"
    rec = s.task.test(s.run_dir, s.splits, checkpoint, s)
    record = {"event": "test", "split": rec.pop("split"), "protocol": rec.pop("protocol"), "step": s.step, **rec}
    s.metrics.write(record)
    if s.ctx.is_main:
        s.progress.print(s.task.summary(record))
        base = record.get("baselines") or {}
        if base:
            s.progress.print(f"baselines on the same test split: majority class {base['majority']['test_err']:.2f}%, "
                             f"linear classifier on pixels {base['linear']['test_err']:.2f}% "
                             f"({base['linear']['seconds']:.0f}s)")
        for note in record.pop("notes", []):
            s.progress.print(note)
    return record


def _log_end(s: _Session, status: str) -> float:
    wall = time.time() - s.t_start
    s.metrics.write({"event": "end", "status": status, "step": s.step, "wall_time": round(wall, 3),
                     "best_epoch": s.best_epoch, "best_val_err": s.best_err})
    s.metrics.close()
    return wall
