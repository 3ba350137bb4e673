"""A trained run's model, read back from its run directory (config, chosen weights,
preprocessing), and ``predict`` for image files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from . import rundir
from .config import RunConfig, make_config
from .data.decode import open_image
from .data.transforms import Normalizer, ResizeCenterCrop, resize_short_side_ratio
from .errors import ReslabError
from .models import create_model
from .models.weights import load_state_dict_checked, read_safetensors

__all__ = ["LoadedRun", "load_run", "load_run_weights", "load_weights_file", "check_weights", "predict", "Prediction"]


def check_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights that would load silently but compute nonsense: another dtype than the model's
    (int64 weights are cast to float by ``load_state_dict``) or NaN/Inf values."""
    own = model.state_dict()
    for k, v in tensors.items():
        if k in own and v.dtype != own[k].dtype and (v.is_floating_point() or own[k].is_floating_point()):
            raise ReslabError(f"{source}: {k} is {str(v.dtype).replace('torch.', '')}, the model's is "
                              f"{str(own[k].dtype).replace('torch.', '')}; these are not this model's weights")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ReslabError(f"{source}: {k} holds NaN or Inf values; the weights are corrupt "
                              "(a diverged run's weights, or a damaged file)")


def load_weights_file(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a safetensors file into ``model`` after :func:`check_weights`; returns its metadata."""
    tensors, meta = read_safetensors(path)
    source = f"{path}" + (f" (model {meta['model_name']})" if "model_name" in meta else "")
    check_weights(model, tensors, source)
    load_state_dict_checked(model, tensors, source)
    return meta


def load_run_weights(run_dir: str | Path, tag: str, model: nn.Module) -> dict[str, str]:
    """Load ``checkpoints/{tag}.safetensors`` into ``model``; returns its metadata."""
    path = rundir.weights_file(run_dir, tag)
    if not path.is_file():
        raise ReslabError(f"{path} not found: the run has no '{tag}' checkpoint yet")
    return load_weights_file(model, path)


def _read_preprocess(run_dir: Path) -> tuple[Normalizer, dict[str, str]]:
    pre = run_dir / rundir.PREPROCESS
    if not pre.is_file():
        raise ReslabError(f"{pre} is missing; the run did not get past its setup")
    try:
        with safe_open(str(pre), framework="pt") as f:
            meta = dict(f.metadata() or {})
            normalizer = Normalizer(meta["kind"], f.get_tensor("mean"), f.get_tensor("std"))
        json.loads(meta["classes"]), int(meta["channels"]), json.loads(meta["image_size"])
    except Exception as e:  # safetensors' own errors, missing keys, bad JSON
        raise ReslabError(f"{pre} is damaged ({type(e).__name__}); restore it from a copy of the run") from None
    return normalizer, meta


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model: nn.Module
    normalizer: Normalizer
    classes: list[str]
    channels: int
    image_size: tuple[int, int] | None
    crop_size: int
    checkpoint: str

    def preprocess(self, img) -> torch.Tensor:
        """A PIL image -> the uint8 (C, H, W) tensor the network was trained on."""
        img = img.convert("L" if self.channels == 1 else "RGB")
        if self.image_size is not None:
            h, w = self.image_size
            t = ResizeCenterCrop(min(h, w), None)(img)
            top, left = (t.shape[1] - h) // 2, (t.shape[2] - w) // 2
            return t[:, top:top + h, left:left + w]
        return ResizeCenterCrop(resize_short_side_ratio(self.crop_size), self.crop_size)(img)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """The model of a run directory with its ``best`` (default; ``last`` when there is none yet) or
    ``last`` weights, or a ``.safetensors`` path given as ``checkpoint``."""
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise ReslabError(f"{run_dir} is not a run directory (no config.yaml and checkpoints/); give a directory written by 'reslab train'")
    saved = rundir.read_config(run_dir)
    missing = [k for k in ("model", "data") if not saved.get(k)]
    if missing:
        raise ReslabError(f"{run_dir / rundir.CONFIG} names no {' or '.join(missing)}: it is empty or damaged; "
                          "restore it from a copy of the run")
    cfg = make_config(saved)
    normalizer, meta = _read_preprocess(run_dir)
    classes = json.loads(meta["classes"])
    channels = int(meta["channels"])
    size = json.loads(meta["image_size"])
    model = create_model(cfg.model, num_classes=len(classes), in_chans=channels, **cfg.model_args)
    if checkpoint.endswith(".safetensors"):
        load_weights_file(model, checkpoint)
        used = checkpoint
    else:
        if checkpoint not in ("best", "last"):
            raise ReslabError(f"--checkpoint must be best, last or a .safetensors path, got {checkpoint!r}")
        used = checkpoint
        if checkpoint == "best" and not rundir.weights_file(run_dir, "best").is_file():
            used = "last"
        load_run_weights(run_dir, used, model)
    model.to(device).eval()
    return LoadedRun(run_dir, cfg, model, normalizer, classes, channels, tuple(size) if size else None,
                     int(meta.get("crop_size", 224)), used)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]


@torch.no_grad()
def predict(run: LoadedRun, paths: Sequence[str | Path], topk: int = 5) -> list[Prediction]:
    """Top-k classes with probabilities for each image file (any format PIL reads)."""
    device = next(run.model.parameters()).device
    norm = run.normalizer.to(device)
    out = []
    for p in paths:
        if "://" in str(p):
            raise ReslabError(f"{p}: URLs are not fetched; download the image and give its path")
        p = Path(p)
        if p.is_dir():
            raise ReslabError(f"{p} is a folder; give image files, e.g. {p}/*.png")
        if not p.exists() and not p.is_symlink():
            raise ReslabError(f"image not found: {p}")
        # a regular file, its size checked from the header before decoding (reslab.data.decode)
        x = run.preprocess(open_image(str(p), "L" if run.channels == 1 else "RGB"))
        probs = torch.softmax(run.model(norm(x[None].to(device))).float(), dim=1)[0]
        k = min(topk, len(run.classes))
        vals, idx = probs.topk(k)
        out.append(Prediction(str(p), [(run.classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]))
    return out
