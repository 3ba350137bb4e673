"""A trained run's model, read back from its run directory (config, chosen weights,
preprocessing), and ``predict`` for image files."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
from safetensors import safe_open
from torch import nn

from . import rundir
from .config import RunConfig, make_config
from .data import DatasetSplits, load_dataset
from .data.decode import open_image
from .data.transforms import Normalizer, ResizeCenterCrop, resize_short_side_ratio
from .errors import ReslabError
from .models import create_model, get_model_entry
from .models.registry import TASK_NOUNS
from .models.weights import load_state_dict_checked, read_safetensors
from .precision import resolve_precision
from .runtimes import RUNTIMES, export_onnx, load_runtime, require_runtime

__all__ = ["LoadedRun", "load_run", "load_run_weights", "load_weights_file", "check_weights", "predict", "Prediction",
           "image_path", "run_split", "RunEvaluation", "with_runtime",
           "check_runtime"]


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
    runtime: str = "torch"

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of what :meth:`preprocess` gives, the input the network sees."""
        h, w = self.image_size if self.image_size is not None else (self.crop_size, self.crop_size)
        return self.channels, h, w

    def preprocess(self, img) -> torch.Tensor:
        """A PIL image -> the uint8 (C, H, W) tensor the network was trained on."""
        img = img.convert("L" if self.channels == 1 else "RGB")
        if self.image_size is not None:
            h, w = self.image_size
            t = ResizeCenterCrop(min(h, w), None)(img)
            top, left = (t.shape[1] - h) // 2, (t.shape[2] - w) // 2
            return t[:, top:top + h, left:left + w]
        return ResizeCenterCrop(resize_short_side_ratio(self.crop_size), self.crop_size)(img)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
             runtime: str = "torch") -> LoadedRun:
    """The model of a run directory with its ``best`` (default; ``last`` when there is none yet) or
    ``last`` weights, or a ``.safetensors`` path given as ``checkpoint``; run by ``runtime``
    (``torch``, or one of :data:`reslab.runtimes.RUNTIMES` on the CPU: see :func:`with_runtime`)."""
    check_runtime(runtime, device)
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
    run = LoadedRun(run_dir, cfg, model, normalizer, classes, channels, tuple(size) if size else None,
                    int(meta.get("crop_size", 224)), used)
    return with_runtime(run, runtime)


def check_runtime(runtime: str, device: str | torch.device = "cpu") -> None:
    """Refuse an unknown runtime, one that is not installed (naming the pip command), or a runtime
    other than ``torch`` on another device than the CPU."""
    if runtime not in ("torch", *RUNTIMES):
        raise ReslabError(f"unknown runtime {runtime!r}; choose one of torch, {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return
    for pkg in (runtime, "onnx", "onnxscript"):
        require_runtime(pkg)
    if torch.device(device).type != "cpu":
        raise ReslabError(f"--runtime {runtime} runs on the CPU; drop --device {device} or use --runtime torch")


def with_runtime(run: LoadedRun, runtime: str, *, threads: int | None = None) -> LoadedRun:
    """``run`` with its model run by ``runtime`` (``torch``: unchanged): the model is exported to a
    temporary ONNX file (nothing is written into the run directory), loaded by the runtime, and the
    file removed. The runtime module is called like the eager model (float32 NCHW in, logits out) at
    the run's input size. Classification runs only."""
    check_runtime(runtime)
    if runtime == "torch" or run.runtime == runtime:
        return run
    if (task := getattr(get_model_entry(run.config.model), "task", "classify")) != "classify":
        raise ReslabError(f"{run.run_dir} is a {TASK_NOUNS[task]} run; --runtime {runtime} runs classification runs: "
                          "use --runtime torch")
    with tempfile.TemporaryDirectory(prefix="reslab-runtime-") as tmp:
        path = export_onnx(run.model, Path(tmp) / "model.onnx", input_shape=(1, *run.input_size))
        module = load_runtime(runtime, path, threads=threads)
    return dataclasses.replace(run, model=module, runtime=runtime)


class _Figures(Protocol):
    def to_dict(self, classes: list[str]) -> dict[str, Any]: ...


R = TypeVar("R", bound=_Figures)


@dataclass
class RunEvaluation(Generic[R]):
    """What an evaluation of a run measured (``result``: a classification ``EvalResult`` or a
    segmentation ``DenseResult``), and where it wrote it."""

    result: R
    split: str
    checkpoint: str
    classes: list[str]
    json_path: Path | None
    plot_path: Path | None
    runtime: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        ran = {"runtime": self.runtime} if self.runtime != "torch" else {}
        return {"split": self.split, "checkpoint": self.checkpoint, **ran, **self.result.to_dict(self.classes)}


def run_split(run: LoadedRun, split: str, *, data: str | None = None, data_dir: str | None = None,
              splits: DatasetSplits | None = None) -> tuple[str, Any]:
    """(the dataset's name, its ``split``) for evaluating ``run``: the run's own data (or ``data``,
    whose class names must be the run's), loaded as the run loaded it unless ``splits`` is given."""
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    cfg = run.config
    data_name = data or cfg.data
    if splits is None:
        splits = load_dataset(data_name, data_dir=data_dir or cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                              skip_bad=cfg.skip_bad, image_size=cfg.image_size,
                              task=getattr(get_model_entry(cfg.model), "task", "classify"))
    if list(splits.classes) != list(run.classes):
        more = "..." if len(run.classes) > 5 else ""
        raise ReslabError(f"{data_name} has classes {', '.join(map(str, splits.classes[:5]))}{more} but the run was "
                          f"trained on {', '.join(map(str, run.classes[:5]))}{more}; give the data it was trained on")
    images = splits.test if split == "test" else splits.val
    if images is None or len(images) == 0:
        raise ReslabError(f"{data_name} has no {split} split to evaluate")
    return data_name, images


def image_path(p: str | Path) -> Path:
    """An image file named by a user, checked before it is opened: not a URL, not a folder, present.
    (A regular file, its size checked from the header before decoding: :mod:`reslab.data.decode`.)"""
    if "://" in str(p):
        raise ReslabError(f"{p}: URLs are not fetched; download the image and give its path")
    path = Path(p)
    if path.is_dir():
        raise ReslabError(f"{path} is a folder; give image files, e.g. {path}/*.png")
    if not path.exists() and not path.is_symlink():
        raise ReslabError(f"image not found: {path}")
    return path


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]


@torch.no_grad()
def predict(run: LoadedRun, paths: Sequence[str | Path], topk: int = 5, *, amp: str = "fp32") -> list[Prediction]:
    """Top-k classes with probabilities for each image file (any format PIL reads).

    ``amp``: the precision of the eager model (``auto``: bf16 autocast on CPUs with native bf16 and
    on GPUs, see :func:`reslab.precision.resolve_precision`); a runtime module computes in its own.
    """
    param = next(run.model.parameters(), None)  # a runtime module (see with_runtime) has none: CPU
    device = param.device if param is not None else torch.device("cpu")
    precision = resolve_precision(amp if param is not None else "fp32", device)
    norm = run.normalizer.to(device)
    out = []
    for p in map(image_path, paths):
        x = run.preprocess(open_image(str(p), "L" if run.channels == 1 else "RGB"))
        with torch.inference_mode(), precision.autocast(device):
            logits = run.model(norm(x[None].to(device)))
        probs = torch.softmax(logits.float(), dim=1)[0]
        k = min(topk, len(run.classes))
        vals, idx = probs.topk(k)
        out.append(Prediction(str(p), [(run.classes[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]))
    return out
