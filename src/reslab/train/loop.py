"""fit(): the one training loop.

Epochs over a loader whose batches are pure functions of (seed, epoch, batch), SGD with the
configured schedule, evaluation on the held-out validation split for model selection (the test
set is evaluated once, at the end, with the selected checkpoint), atomic checkpoints with exact
resume, a clean stop on Ctrl-C / SIGTERM (checkpoint first) and on a NaN/Inf loss (last good
checkpoint kept). Under torchrun it runs as one rank of DistributedDataParallel.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..errors import ReslabError
from ..io import atomic_write_text
from ..models import create_model
from ..models.base import AuxOutput
from .checkpoint import is_run_dir, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RunConfig
from .distributed import DistContext, convert_sync_batchnorm, init_distributed, resolve_device
from .schedule import LRSchedule

__all__ = ["fit", "FitResult", "TrainingDiverged", "TrainingInterrupted", "build_pipeline"]

log_stream = sys.stderr


class TrainingDiverged(ReslabError):
    """The loss became NaN or Inf."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was saved; ``reslab train --resume`` continues."""


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


# ---------------------------------------------------------------------------------------------
# setup helpers

def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _prepare_run_dir(out: Path, resume: bool) -> None:
    if resume:
        if not is_run_dir(out):
            raise ReslabError(f"{out} is not a run directory (no config.yaml and checkpoints/); give the --out of an earlier run")
        return
    if (out / "config.yaml").exists() or (out / "metrics.jsonl").exists():
        raise ReslabError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "plots").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ReslabError(f"cannot write to output directory {out}: {e.strerror}; choose a writable --out") from None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _env_info(device: torch.device, cfg: RunConfig, ctx: DistContext, params: int) -> dict[str, Any]:
    from .. import __version__

    info = {
        "reslab": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "world_size": ctx.world_size, "seed": cfg.seed,
        "deterministic": cfg.deterministic, "git_commit": _git_commit(), "params": params,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class _Metrics:
    """metrics.jsonl (append, one JSON object per line) and TensorBoard when installed."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            prefix = record["event"]
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "event"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


class _Progress:
    """A progress bar with ETA and live loss/error (rich), refreshed at most twice a second so it
    costs nothing measurable; plain one-line epoch summaries when stderr is not a terminal."""

    def __init__(self, enabled: bool, total_steps: int) -> None:
        self.bar = None
        self.last = 0.0
        if enabled and log_stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                                console=Console(file=log_stream), auto_refresh=False, transient=False)
            self.task = self.bar.add_task("train", total=total_steps, stats="")
            self.bar.start()

    def update(self, step: int, description: str, stats: str, force: bool = False) -> None:
        if self.bar is None:
            return
        now = time.monotonic()
        if force or now - self.last > 0.5:
            self.bar.update(self.task, completed=step, description=description, stats=stats)
            self.bar.refresh()
            self.last = now

    def print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, highlight=False)
        else:
            print(line, file=log_stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def build_pipeline(cfg: RunConfig, splits, device: torch.device, ctx: DistContext, normalizer=None):
    """Loaders for train/val and the normaliser, from the dataset splits and the recipe."""
    from ..data import FileImages
    from ..data.loader import FileLoader, TensorLoader
    from ..data.transforms import Normalizer, ResizeCenterCrop, ScaleAugment, resize_short_side_ratio

    train = splits.train
    if normalizer is None:
        if isinstance(train, FileImages):
            # Per-pixel mean of centre crops of up to 2,000 training images (fixed sample).
            g = torch.Generator().manual_seed(cfg.seed)
            idx = torch.randperm(len(train), generator=g)[:2000].tolist()
            crop = ResizeCenterCrop(resize_short_side_ratio(cfg.crop_size), cfg.crop_size)
            sample = torch.stack([crop(train.load(i)) for i in idx]) if idx else torch.zeros(0, splits.channels, 1, 1)
            normalizer = Normalizer.fit(cfg.normalize, sample)
        else:
            normalizer = Normalizer.fit(cfg.normalize, train.images)
    common = dict(normalizer=normalizer, device=device, seed=cfg.seed, channels_last=cfg.channels_last,
                  rank=ctx.rank, world_size=ctx.world_size)
    if isinstance(train, FileImages):
        aug = ScaleAugment(cfg.scale_range, cfg.crop_size) if cfg.augment == "scale_crop_flip" else \
            ResizeCenterCrop(resize_short_side_ratio(cfg.crop_size), cfg.crop_size)
        train_loader = FileLoader(train, cfg.batch_size, transform=aug, train=True, num_workers=cfg.num_workers,
                                  lighting_std=cfg.lighting, **common)
    else:
        train_loader = TensorLoader(train.images, train.labels, cfg.batch_size, train=True, augment=cfg.augment,
                                    pad=cfg.pad, lighting_std=cfg.lighting, **common)
    return train_loader, normalizer


def _save_preprocess(run_dir: Path, normalizer, splits, cfg: RunConfig) -> None:
    from safetensors.torch import save_file

    from ..io import atomic_path

    meta = {"kind": normalizer.kind, "channels": str(splits.channels),
            "image_size": json.dumps(list(splits.image_size) if splits.image_size else None),
            "crop_size": str(cfg.crop_size), "classes": json.dumps(list(splits.classes))}
    with atomic_path(run_dir / "preprocess.safetensors") as tmp:
        save_file(normalizer.state_dict(), str(tmp), metadata=meta)


def _loss_fn(cfg: RunConfig):
    def loss(out, y):
        if isinstance(out, AuxOutput):
            main = F.cross_entropy(out.logits, y, label_smoothing=cfg.label_smoothing)
            extra = sum(w * F.cross_entropy(a, y, label_smoothing=cfg.label_smoothing)
                        for a, w in zip(out.aux_logits, out.aux_weights))
            return main + extra, out.logits
        return F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing), out

    return loss


def _fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ---------------------------------------------------------------------------------------------

def fit(config: RunConfig, out: str | os.PathLike | None = None, *, resume: bool = False, data=None,
        on_step: Callable[[int, nn.Module], None] | None = None) -> FitResult:
    """Train ``config.model`` on ``config.data`` and write a run directory.

    Args:
        config: the resolved run configuration (see :func:`reslab.train.make_config`).
        out: the run directory (default ``runs/<model>-<data>-<time>``).
        resume: continue the run in ``out`` exactly where its last checkpoint left it.
        data: already-loaded :class:`~reslab.data.DatasetSplits` (skips ``load_dataset``).
        on_step: called as ``on_step(step, model)`` after every optimizer step (hooks, probes).

    Returns:
        A :class:`FitResult`. Raises :class:`TrainingInterrupted` after saving on Ctrl-C/SIGTERM
        and :class:`TrainingDiverged` on a NaN/Inf loss.
    """
    from ..data import canonical_data_name, load_dataset

    cfg = config.validate()
    t_start = time.time()
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = init_distributed(device)
    if not resume:  # eval, predict and --resume then work from any directory
        cfg = dataclasses.replace(cfg, data=canonical_data_name(cfg.data))
    if out is None:
        stamp = ctx.broadcast_object(time.strftime("%Y%m%d-%H%M%S"))
        out = Path("runs") / f"{cfg.model}-{cfg.data.split(':')[0]}-{stamp}"
    run_dir = Path(out)
    if ctx.is_main:
        _prepare_run_dir(run_dir, resume)
    ctx.barrier()
    _seed_everything(cfg.seed, cfg.deterministic)

    if cfg.batch_size % ctx.world_size:
        raise ReslabError(f"batch_size {cfg.batch_size} is the global batch and must divide evenly over "
                          f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    splits = data if data is not None else load_dataset(
        cfg.data, data_dir=cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed, skip_bad=cfg.skip_bad,
        image_size=cfg.image_size)
    if len(splits.train) == 0:
        raise ReslabError(f"dataset {cfg.data} has no training images")
    num_classes = len(splits.classes)
    model = create_model(cfg.model, num_classes=num_classes, in_chans=splits.channels, **cfg.model_args)
    params = sum(p.numel() for p in model.parameters())
    train_loader, normalizer = build_pipeline(cfg, splits, device, ctx)

    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if ctx.enabled and cfg.sync_bn:
        model = convert_sync_batchnorm(model, device)
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    base_lr = cfg.lr * (cfg.batch_size / 256 if cfg.scale_lr else 1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                                weight_decay=cfg.weight_decay)
    amp_dtype = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ReslabError(f"batch_size {cfg.batch_size} is larger than the training split ({len(splits.train)} images)")
    total_steps = cfg.iterations or cfg.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    schedule = LRSchedule(cfg, steps_per_epoch, total_steps, cfg.model, base_lr)

    start_epoch, start_batch, step = 0, 0, 0
    best_err, best_epoch = None, None
    acc = {"loss": 0.0, "correct": 0, "n": 0}
    if resume:
        state = load_checkpoint(run_dir, model, "last")
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        best_err, best_epoch = state.get("best_val_err"), state.get("best_epoch")
        acc = dict(state.get("epoch_acc", acc))
        # a run saved with N processes resumes with M: batches are global, so nothing else changes
    last_saved_step = step if resume else None

    metrics = _Metrics(run_dir, ctx.is_main, cfg.tensorboard)
    if ctx.is_main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_text(run_dir / "env.json", json.dumps(_env_info(device, cfg, ctx, params), indent=2))
        _save_preprocess(run_dir, normalizer, splits, cfg)
        atomic_write_text(run_dir / "classes.json", json.dumps(list(splits.classes)))
        if not resume:
            metrics.write({"event": "start", "model": cfg.model, "data": cfg.data, "params": params,
                           "train": len(splits.train), "val": len(splits.val) if splits.val is not None else 0,
                           "test": len(splits.test) if splits.test is not None else 0,
                           "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "world_size": ctx.world_size})

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not in the main thread
            pass

    def state_for(epoch: int, batch: int) -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                "rng": rng_state(), "epoch": epoch, "batch": batch, "step": step, "best_val_err": best_err,
                "best_epoch": best_epoch, "epoch_acc": dict(acc), "config": cfg.to_dict(), "world_size": ctx.world_size}

    loss_of = _loss_fn(cfg)
    progress = _Progress(cfg.progress and ctx.is_main, total_steps)
    progress.update(step, f"epoch {start_epoch + 1}/{epochs}", "", force=True)
    status = "finished"
    t_epoch = time.time()
    imgs_epoch = 0
    window: list[torch.Tensor] = []
    window_start = step
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else None
    check_every = 1 if device.type == "cpu" else cfg.log_every

    try:
        for epoch in range(start_epoch, epochs):
            train_loader.set_epoch(epoch)
            net.train()
            first = start_batch if epoch == start_epoch else 0
            if epoch != start_epoch:
                acc = {"loss": 0.0, "correct": 0, "n": 0}
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            seen = 0
            resume_at = (epoch + 1, 0)  # where a later --resume continues from
            for b, (x, y) in enumerate(train_loader.iterate(first), start=first):
                if step >= total_steps:
                    resume_at = (epoch, b)  # the budget ended mid-epoch: a longer run continues here
                    break
                lr = schedule.lr(step)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                if autocast is not None:
                    with autocast():
                        loss, logits = loss_of(net(x), y)
                else:
                    loss, logits = loss_of(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                if on_step is not None:
                    on_step(step, model)
                loss_d = loss.detach()
                loss_sum += loss_d.double() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                imgs_epoch += len(y) * ctx.world_size
                window.append(loss_d)
                if len(window) >= check_every:
                    losses = torch.stack(window)
                    finite = torch.isfinite(losses)
                    any_bad = ~finite.all()
                    if ctx.enabled:  # a NaN on one rank stops every rank at the same check
                        any_bad = any_bad.to(torch.int32).reshape(1)
                        torch.distributed.all_reduce(any_bad)
                    if bool(any_bad):
                        local = (~finite).nonzero()
                        bad = window_start + (int(local[0]) if len(local) else len(window) - 1) + 1
                        raise TrainingDiverged(
                            f"loss became {float(losses[~finite][0]) if len(local) else 'nan'} at step {bad}; training stopped. "
                            + (f"The last good checkpoint (step {last_saved_step}) is kept in {run_dir / 'checkpoints'}. "
                               if last_saved_step is not None else "No checkpoint had been saved yet. ")
                            + "Lower --lr or set --grad-clip.")
                    window, window_start = [], step
                if schedule.state["warmup"]:
                    schedule.observe_train_error(step, 100.0 * (1 - float(correct) / max(seen, 1)))
                if step % cfg.log_every == 0 and ctx.is_main:
                    ls, err = float(loss_sum) / max(seen, 1), 100.0 * (1 - float(correct) / max(seen, 1))
                    metrics.write({"event": "step", "step": step, "epoch": round(epoch + (b + 1) / steps_per_epoch, 4),
                                   "time": round(time.time() - t_start, 3), "lr": lr, "loss": ls, "err": err})
                if ctx.is_main and progress.bar is not None:
                    progress.update(step, f"epoch {epoch + 1}/{epochs}",
                                    f"loss {float(loss_d):.3f}  lr {lr:.4g}")
                if ctx.enabled:  # every rank stops at the same step, or none does
                    flag = torch.tensor([1 if stop["signal"] is not None else 0], device=device)
                    torch.distributed.all_reduce(flag)
                    if int(flag) and stop["signal"] is None:
                        stop["signal"] = signal.SIGTERM
                if stop["signal"] is not None:
                    acc = _merge(acc, loss_sum, correct, seen)
                    if ctx.is_main:
                        save_checkpoint(run_dir, "last", model, state_for(epoch, b + 1))
                    last_saved_step = step
                    raise TrainingInterrupted(f"interrupted at step {step}; checkpoint saved. Continue with: reslab train --resume {run_dir}")
            acc = _merge(acc, loss_sum, correct, seen)
            if ctx.enabled:
                acc = _all_reduce_acc(acc, device)
            train_loss = acc["loss"] / max(acc["n"], 1)
            train_err = 100.0 * (1 - acc["correct"] / max(acc["n"], 1))
            record = {"event": "epoch", "epoch": epoch + 1, "step": step, "time": round(time.time() - t_start, 3),
                      "lr": schedule.lr(max(step - 1, 0)), "train_loss": train_loss, "train_err": train_err}
            elapsed = time.time() - t_epoch
            record["images_per_s"] = round(imgs_epoch / max(elapsed, 1e-9), 2)
            last_epoch = epoch + 1 == epochs or step >= total_steps
            if splits.val is not None and len(splits.val) > 0 and ((epoch + 1) % cfg.eval_every == 0 or last_epoch):
                res = _evaluate_split(model, splits.val, normalizer, num_classes, cfg, device, amp_dtype, ctx)
                record.update(val_loss=res.loss, val_err=res.top1_err, val_top5_err=res.top5_err)
                schedule.observe_val_error(res.top1_err)
                if best_err is None or res.top1_err < best_err:
                    best_err, best_epoch = res.top1_err, epoch + 1
                    if ctx.is_main:
                        save_checkpoint(run_dir, "best", model, metadata={"step": step, "epoch": epoch + 1, "val_err": res.top1_err})
            acc = {"loss": 0.0, "correct": 0, "n": 0}
            if ctx.is_main:
                save_checkpoint(run_dir, "last", model, state_for(*resume_at))
            last_saved_step = step
            metrics.write(record)
            eta = (time.time() - t_start) / max(step, 1) * (total_steps - step) if step else 0
            val_txt = f"  val loss {record['val_loss']:.3f} err {record['val_err']:.2f}%" if "val_err" in record else ""
            if ctx.is_main:
                progress.print(f"epoch {epoch + 1}/{epochs}  train loss {train_loss:.3f} err {train_err:.2f}%{val_txt}"
                               f"  lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s  eta {_fmt_time(eta)}")
            t_epoch, imgs_epoch = time.time(), 0
            if step >= total_steps:
                break
    except TrainingInterrupted:
        status = "interrupted"
        raise
    except TrainingDiverged:
        status = "nan"
        raise
    finally:
        progress.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        if status != "finished":
            metrics.write({"event": "end", "status": status, "step": step, "wall_time": round(time.time() - t_start, 3),
                           "best_epoch": best_epoch, "best_val_err": best_err})
            metrics.close()

    # The test set is evaluated once, with the checkpoint chosen on validation (or the last one).
    test_record = None
    if splits.test is not None and len(splits.test) > 0:
        if best_epoch is not None:
            from .checkpoint import load_run_weights

            ctx.barrier()
            load_run_weights(run_dir, "best", model)
        res = _evaluate_split(model, splits.test, normalizer, num_classes, cfg, device, amp_dtype, ctx,
                              protocol=cfg.test_protocol)
        test_record = {"event": "test", "split": "test", "protocol": res.protocol, "step": step, "loss": res.loss,
                       "top1_err": res.top1_err, "top5_err": res.top5_err,
                       "checkpoint": "best" if best_epoch is not None else "last"}
        metrics.write(test_record)
        if ctx.is_main:
            progress.print(f"test ({res.protocol}, {test_record['checkpoint']} checkpoint): "
                           f"top-1 err {res.top1_err:.2f}%  top-5 err {res.top5_err:.2f}%")
            _write_confusion(run_dir, res, splits.classes)
    wall = time.time() - t_start
    metrics.write({"event": "end", "status": status, "step": step, "wall_time": round(wall, 3),
                   "best_epoch": best_epoch, "best_val_err": best_err})
    metrics.close()
    if ctx.is_main:
        _render_report(run_dir)
    return FitResult(run_dir, status, step, epochs, best_epoch, best_err, test_record, wall)


def _merge(acc: dict[str, Any], loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> dict[str, Any]:
    return {"loss": acc["loss"] + float(loss_sum), "correct": acc["correct"] + int(correct), "n": acc["n"] + seen}


def _all_reduce_acc(acc: dict[str, Any], device: torch.device) -> dict[str, Any]:
    import torch.distributed as dist

    t = torch.tensor([acc["loss"], acc["correct"], acc["n"]], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {"loss": float(t[0]), "correct": int(t[1]), "n": int(t[2])}


def _evaluate_split(model, split, normalizer, num_classes, cfg, device, amp_dtype, ctx, protocol="center"):
    from ..evaluate import evaluate

    return evaluate(model, split, normalizer=normalizer, num_classes=num_classes, protocol=protocol,
                    batch_size=max(cfg.batch_size, 256), device=device, pad=cfg.pad, crop_size=cfg.crop_size,
                    scales=cfg.test_scales or None, channels_last=cfg.channels_last, amp_dtype=amp_dtype,
                    num_workers=cfg.num_workers, rank=ctx.rank, world_size=ctx.world_size)


def _write_confusion(run_dir: Path, res, classes) -> None:
    try:
        from ..report import plot_confusion_matrix
    except ImportError:
        return
    plot_confusion_matrix(res.confusion, list(classes), run_dir / "plots" / "confusion.png")


def _render_report(run_dir: Path) -> None:
    try:
        from ..report import render_run_report
    except ImportError:
        return
    render_run_report(run_dir)
