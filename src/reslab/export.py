"""Export a trained run to a portable file (ONNX, TorchScript, torch.export) with its
preprocessing as metadata, parity-checked against eager PyTorch.

The file carries what a runtime user needs (input size, channels, class names, the normalisation's
mean and std, the resize and crop) inside it where the format allows (ONNX ``metadata_props``,
TorchScript's and torch.export's extra files ``reslab.json``) and in a JSON sidecar ``OUT.json``
beside it. Before anything is written, the exported model runs on real images of the run's own
test split, preprocessed as ``reslab eval`` does, beside the eager model: the largest logit
difference must stay within :data:`PARITY_RTOL` of the largest eager logit, or the export fails and
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .data import DatasetSplits, FileImages, load_dataset
from .data.transforms import resize_short_side_ratio
from .dense import run_task
from .errors import ReslabError
from .io import atomic_path
from .models.base import AuxOutput
from .models.registry import TASK_NOUNS
from .predict import LoadedRun, load_run, run_split
from .runtimes import DEFAULT_OPSET, LogitsOnly, export_onnx, load_runtime, quantize_onnx_int8, require_runtime

__all__ = ["FORMATS", "PARITY_RTOL", "DEFAULT_CHECK_IMAGES", "CALIBRATION_IMAGES", "ExportResult", "Parity",
           "export_run", "export_metadata", "read_exported", "parity_images", "calibration_images"]

FORMATS = ("onnx", "torchscript", "exported-program")

PARITY_RTOL = 1e-3
"""The export fails when max |exported - eager| over the parity images' logits exceeds this share of
max |eager logit|. Float32 reordering (other kernels, fused BN) moves trained nets' logits by about
1e-6 of their scale; an operator translated wrongly moves them by a whole share of it."""

DEFAULT_CHECK_IMAGES = 100
CALIBRATION_IMAGES = 256
"""int8: training images whose activation ranges set the quantisation (never test images)."""

EXTRA_FILE = "reslab.json"


@dataclass
class Parity:
    """The exported file against the eager model on the same preprocessed images."""

    images: int
    source: str
    runner: str
    max_abs_diff: float
    logit_scale: float
    bound: float
    top1_agree: int
    eager_acc: float | None = None  # percent, when the images have labels
    exported_acc: float | None = None

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.bound


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    checkpoint: str
    opset: int | None
    parity: Parity
    int8: Parity | None = None
    calibration_images: int = 0
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "format": self.format, "checkpoint": self.checkpoint, "opset": self.opset,
                "parity": asdict(self.parity), "int8": asdict(self.int8) if self.int8 else None,
                "calibration_images": self.calibration_images}

    def summary(self) -> str:
        """What was written and the parity numbers, a few lines for the CLI."""
        p = self.parity
        kind = {"onnx": f"ONNX opset {self.opset}", "torchscript": "TorchScript", "exported-program": "torch.export program"}
        mb = self.path.stat().st_size / 1e6 if self.path.is_file() else 0.0
        lines = [f"wrote {self.path} ({kind[self.format]}{', int8' if self.int8 else ''}, dynamic batch, {mb:.1f} MB, "
                 f"{self.checkpoint} checkpoint, {self.seconds:.1f} s) and {self.sidecar} (preprocessing, classes)",
                 f"parity on {p.images} {p.source} ({p.runner} vs eager PyTorch): max |logit diff| {p.max_abs_diff:.2e} "
                 f"(bound {p.bound:.2e} = {PARITY_RTOL:g} x max |logit| {p.logit_scale:.3g}); "
                 f"top-1 agrees on {p.top1_agree}/{p.images}"]
        if self.int8 is not None:
            q = self.int8
            acc = ""
            if q.eager_acc is not None and q.exported_acc is not None:
                acc = (f"; top-1 accuracy {q.eager_acc:.2f}% eager -> {q.exported_acc:.2f}% int8 "
                       f"({q.exported_acc - q.eager_acc:+.2f} points)")
            lines.append(f"int8 (calibrated on {self.calibration_images} training images): top-1 agrees with eager "
                         f"on {q.top1_agree}/{q.images}{acc}; max |logit diff| {q.max_abs_diff:.3g}")
        return "\n".join(lines)


def export_metadata(run: LoadedRun) -> dict[str, Any]:
    """What a runtime user needs to feed the exported model: the input, the preprocessing from an
    image file to that input (the steps of ``reslab predict``), the class names and the model."""
    c, h, w = run.input_size
    if run.image_size is not None:
        resize, crop = min(h, w), [h, w]
    else:
        resize, crop = resize_short_side_ratio(run.crop_size), [run.crop_size, run.crop_size]
    norm = run.normalizer
    return {
        "reslab": __version__,
        "model": run.config.model, "model_args": dict(run.config.model_args), "checkpoint": run.checkpoint,
        "input": {"name": "input", "shape": ["batch", c, h, w], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": ["batch", len(run.classes)], "meaning": "logits; softmax gives probabilities"},
        "classes": list(run.classes),
        "preprocess": {
            "mode": "L" if c == 1 else "RGB",
            "resize_shorter_side": resize, "interpolation": "bilinear", "center_crop": crop,
            "normalize": norm.kind,
            "formula": "x = (pixels / 255 - mean) / std, pixels uint8 (C, H, W); a (C, H, W) mean of another size "
                       "than the input is resized bilinearly to it",
            "mean_shape": list(norm.mean.shape), "mean": norm.mean.tolist(),
            "std_shape": list(norm.std.shape), "std": norm.std.tolist(),
        },
    }


def _flat_onnx_metadata(meta: dict[str, Any]) -> dict[str, str]:
    pre = meta["preprocess"]
    return {"reslab": json.dumps(meta), "classes": json.dumps(meta["classes"]), "input_size": json.dumps(meta["input"]["shape"][1:]),
            "normalize": pre["normalize"], "mean": json.dumps(pre["mean"]), "std": json.dumps(pre["std"]),
            "resize_shorter_side": str(pre["resize_shorter_side"]), "center_crop": json.dumps(pre["center_crop"]),
            "model": meta["model"]}


def read_exported(path: str | Path, format: str | None = None) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """(a callable giving logits for a float32 NCHW batch, the metadata written inside the file) for a
    file written by :func:`export_run`; ``format`` from the sidecar when not given."""
    path = Path(path)
    if format is None:
        side = path.with_name(path.name + ".json")
        format = json.loads(side.read_text())["format"] if side.is_file() else "onnx"
    if format == "onnx":
        from .runtimes import read_onnx_metadata

        return load_runtime("onnxruntime", path), json.loads(read_onnx_metadata(path).get("reslab", "{}"))
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if format == "torchscript":
            module: Any = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        elif format == "exported-program":
            module = torch.export.load(io.BytesIO(path.read_bytes()), extra_files=extra).module()
        else:
            raise ReslabError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    text = extra[EXTRA_FILE]
    return module, json.loads(text.decode() if isinstance(text, bytes) else text or "{}")


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _write_torchscript(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    try:
        with _quiet_warnings():
            scripted = torch.jit.script(model)
    except Exception as e:  # torch.jit's frontend errors, many kinds
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ReslabError(f"{type(model).__name__} does not compile with torch.jit.script ({first}); export it with "
                          "--format onnx or exported-program") from None
    with _quiet_warnings():
        torch.jit.save(scripted, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})


def _write_exported_program(model: nn.Module, path: Path, meta: dict[str, Any], input_size: tuple[int, int, int]) -> None:
    x = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        with _quiet_warnings():
            ep = torch.export.export(LogitsOnly(model), (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ReslabError(f"torch.export of {type(model).__name__} failed ({first}); export it with --format onnx") from None
    buf = io.BytesIO()  # a buffer: torch.export.save warns about a file name not ending in .pt2 (the temporary one)
    torch.export.save(ep, buf, extra_files={EXTRA_FILE: json.dumps(meta)})
    path.write_bytes(buf.getvalue())


@torch.no_grad()
def _logits(model: Callable[[torch.Tensor], Any], x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    outs = []
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])
        outs.append((out.logits if isinstance(out, AuxOutput) else out).float())
    return torch.cat(outs)


def _compare(eager: torch.Tensor, other: torch.Tensor, labels: torch.Tensor | None, source: str, runner: str) -> Parity:
    scale = float(eager.abs().max())
    diff = float((other - eager).abs().max())
    if not math.isfinite(diff):
        diff = math.inf
    agree = int((other.argmax(1) == eager.argmax(1)).sum())
    acc = lambda z: None if labels is None else 100.0 * float((z.argmax(1) == labels).float().mean())  # noqa: E731
    return Parity(len(eager), source, runner, diff, scale, PARITY_RTOL * max(scale, 1e-6), agree, acc(eager), acc(other))


def parity_images(run: LoadedRun, n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor | None, str, DatasetSplits | None]:
    """(float inputs preprocessed as ``reslab eval`` does, labels, a description, the splits) for up to
    ``n`` images of the run's test split spread over it; seeded random images when the run's data
    cannot be loaded here (said in the description)."""
    cfg = run.config
    try:
        splits = load_dataset(cfg.data, data_dir=data_dir or cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                              skip_bad=cfg.skip_bad, image_size=cfg.image_size)
        name, images = run_split(run, "test", splits=splits)
    except ReslabError as e:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, *run.input_size), generator=g, dtype=torch.uint8)
        return run.normalizer(x), None, f"random images (the run's data is not available here: {e})", None
    idx = torch.linspace(0, len(images) - 1, min(n, len(images))).round().long().unique().tolist()
    if isinstance(images, FileImages):
        x = torch.stack([run.preprocess(images.load(i)) for i in idx])
        y = torch.tensor([images.samples[i][1] for i in idx])
    else:
        x, y = images.images[idx], images.labels[idx]
    if tuple(x.shape[1:]) != run.input_size:
        raise ReslabError(f"{name} test images are {tuple(x.shape[1:])} but the run's input is {run.input_size}; "
                          "give the data it was trained on")
    return run.normalizer(x), y, f"test images of {name}", splits


def calibration_images(run: LoadedRun, splits: DatasetSplits | None, n: int) -> torch.Tensor:
    """Up to ``n`` of the run's training images (a seeded sample), preprocessed for the network:
    int8 activation ranges are calibrated on these, never on test images."""
    if splits is None or splits.train is None or len(splits.train) == 0:
        raise ReslabError(f"--int8 calibrates on the run's training images and measures the accuracy change on its test "
                          f"images; {run.config.data} is not available here: give --data-dir where it is")
    train = splits.train
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].tolist()
    if isinstance(train, FileImages):
        x = torch.stack([run.preprocess(train.load(i)) for i in idx])
    else:
        x = train.images[idx]
    return run.normalizer(x)


def export_run(run_dir: str | Path, *, format: str = "onnx", out: str | Path, checkpoint: str = "best",
               int8: bool = False, check_images: int = DEFAULT_CHECK_IMAGES, opset: int = DEFAULT_OPSET,
               data_dir: str | None = None) -> ExportResult:
    """Export a classification run's model to ``out`` and check it against the eager model.

    Args:
        format: ``onnx`` (dynamo exporter, dynamic batch; parity through ONNX Runtime), ``torchscript``
            (``torch.jit.script``) or ``exported-program`` (``torch.export`` with a dynamic batch).
        out: the file to write; its metadata also goes to ``OUT.json`` beside it.
        checkpoint: ``best`` (``last`` when there is none yet), ``last`` or a ``.safetensors`` path.
        int8: ONNX only: write the model quantised to int8 (ONNX Runtime static QDQ, per-channel
            weights, calibrated on :data:`CALIBRATION_IMAGES` training images); the float model is
            still parity-checked, and the int8 model's top-1 agreement and accuracy change on the
            parity images are reported (not bounded).
        check_images: test images for the parity check (spread over the test split). When the run's
            data cannot be loaded here, seeded random images in the input's range stand in (said in
            the result), and ``int8`` is refused.
        opset: ONNX opset.
        data_dir: where the run's dataset is (default: the run's).

    Raises:
        ReslabError: bad arguments, a run or checkpoint that cannot be loaded, an export that fails,
            or parity outside the bound; nothing is written then.
    """
    t0 = time.perf_counter()
    if format not in FORMATS:
        raise ReslabError(f"unsupported format {format!r}; choose one of {', '.join(FORMATS)}")
    if int8 and format != "onnx":
        raise ReslabError(f"--int8 quantises ONNX files (ONNX Runtime); --format {format} has no int8 export: "
                          "use --format onnx --int8")
    if check_images < 1:
        raise ReslabError(f"check_images must be at least 1, got {check_images}")
    out = Path(out)
    if out.is_dir() or (out.exists() and not out.is_file()):
        raise ReslabError(f"--out {out} is a folder or not a regular file; give a file name, e.g. {out / 'model.onnx'}")
    if format == "onnx":
        for pkg in ("onnx", "onnxscript", "onnxruntime"):
            require_runtime(pkg)
    if (task := run_task(run_dir)) != "classify":
        raise ReslabError(f"{run_dir} is a {TASK_NOUNS[task]} run; reslab export writes classification runs")
    run = load_run(run_dir, checkpoint, "cpu")
    meta = export_metadata(run)
    x, labels, source, splits = parity_images(run, check_images, data_dir)
    calib = calibration_images(run, splits, CALIBRATION_IMAGES) if int8 else None
    eager = _logits(run.model, x)
    sidecar = out.with_name(out.name + ".json")
    with tempfile.TemporaryDirectory(prefix="reslab-export-") as scratch, atomic_path(out) as tmp:
        if format == "onnx":
            fp32 = Path(scratch) / "model.onnx" if int8 else tmp
            export_onnx(run.model, fp32, input_shape=(2, *run.input_size), opset=opset, metadata=_flat_onnx_metadata(meta))
            parity = _compare(eager, _logits(load_runtime("onnxruntime", fp32), x), labels, source, "onnxruntime")
        elif format == "torchscript":
            _write_torchscript(run.model, tmp, meta)
            parity = _compare(eager, _logits(read_exported(tmp, format)[0], x), labels, source, "torch.jit.load")
        else:
            _write_exported_program(run.model, tmp, meta, run.input_size)
            parity = _compare(eager, _logits(read_exported(tmp, format)[0], x), labels, source, "torch.export.load")
        if not parity.ok:
            raise ReslabError(f"parity check failed: the exported model's logits differ from eager PyTorch's by up to "
                              f"{parity.max_abs_diff:.3g} on {parity.images} {source}, over the bound {parity.bound:.3g} "
                              f"({PARITY_RTOL:g} x max |logit| {parity.logit_scale:.3g}); nothing was written")
        quant = None
        if int8:
            assert calib is not None
            quantize_onnx_int8(fp32, tmp, calib)
            quant = _compare(eager, _logits(load_runtime("onnxruntime", tmp), x), labels, source, "onnxruntime int8")
        result = ExportResult(out, sidecar, format, run.checkpoint, opset if format == "onnx" else None, parity, quant,
                              len(calib) if calib is not None else 0, metadata=meta)
        with atomic_path(sidecar) as side_tmp:
            side_tmp.write_text(json.dumps({**meta, **result.to_dict(), "file": out.name}, indent=2))
    result.seconds = time.perf_counter() - t0
    return result
