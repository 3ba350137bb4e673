"""Inference runtimes beside eager PyTorch: ONNX export of a module, ONNX Runtime and OpenVINO
sessions wrapped as modules, int8 quantisation.

The ONNX file comes from ``torch.onnx.export(..., dynamo=True)`` (torch.export, translated by
onnxscript): the TorchScript-based exporter is deprecated since PyTorch 2.9 and cannot export
AlexNet's adaptive pooling; the dynamo exporter exports every registered classifier. A runtime
module's ``forward`` takes a float32 NCHW tensor and returns the logits as a tensor, so the code that
evaluates and predicts with the eager model runs it unchanged.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ReslabError
from .io import atomic_path
from .models.base import AuxOutput

__all__ = ["LogitsOnly", "RUNTIMES", "DEFAULT_OPSET", "INSTALL", "export_onnx", "load_runtime", "require_runtime",
           "quantize_onnx_int8", "read_onnx_metadata", "RuntimeModule"]

RUNTIMES = ("onnxruntime", "openvino")
"""The runtimes :func:`load_runtime` knows, by the name of their Python package."""

DEFAULT_OPSET = 20
"""ONNX opset of exported files: torch 2.14's default, read by ONNX Runtime >= 1.16 and OpenVINO >= 2024.0."""

INSTALL = "pip install 'reslab[export]'"

_INPUT, _OUTPUT = "input", "logits"


def require_runtime(name: str) -> Any:
    """The Python module of runtime ``name`` (or of ``onnx``/``onnxscript``), imported; a one-line
    :class:`ReslabError` naming the pip command when it is not installed."""
    known = (*RUNTIMES, "onnx", "onnxscript")
    if name not in known:
        raise ReslabError(f"unknown runtime {name!r}; choose one of torch, {', '.join(RUNTIMES)}")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ReslabError(f"{name} is not installed; install the export extras: {INSTALL}") from None


class LogitsOnly(nn.Module):
    """The model's logits only (an Inception model in training mode also returns auxiliary ones)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.logits if isinstance(out, AuxOutput) else out


def export_onnx(model: nn.Module, path: str | Path, *, input_shape: tuple[int, int, int, int],
                opset: int = DEFAULT_OPSET, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` (in eval mode) to ``path`` as ONNX, atomically.

    Args:
        model: a classifier; its logits become the output ``logits``.
        input_shape: (N, C, H, W) of the example input. The batch axis is dynamic (any N runs);
            C, H and W are fixed. An example batch of 1 is traced as 2, so that it is not fixed to 1.
        opset: the ONNX opset (default :data:`DEFAULT_OPSET`; 18 or higher avoids a version conversion).
        metadata: written as the model's ``metadata_props``.

    Returns:
        ``path``.
    """
    for pkg in ("onnx", "onnxscript"):
        require_runtime(pkg)
    if len(input_shape) != 4 or any(int(s) < 1 for s in input_shape):
        raise ReslabError(f"input_shape must be (N, C, H, W) positive integers, got {tuple(input_shape)}")
    n, c, h, w = (int(s) for s in input_shape)
    param = next(iter(model.parameters()), None)
    x = torch.randn(max(n, 2), c, h, w, generator=torch.Generator().manual_seed(0))
    if param is not None:
        x = x.to(param.device)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(LogitsOnly(model), (x,), None, dynamo=True, opset_version=opset,
                                        input_names=[_INPUT], output_names=[_OUTPUT], optimize=True,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    except Exception as e:  # torch.export's and onnxscript's own errors, many kinds
        raise ReslabError(f"ONNX export of {type(model).__name__} at {c}x{h}x{w} failed: "
                          f"{type(e).__name__}: {_first_line(e)}") from None
    finally:
        model.train(was_training)
    assert program is not None  # dynamo=True always returns the program
    if metadata:
        program.model.metadata_props.update({str(k): str(v) for k, v in metadata.items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


class _quiet:
    """Raise these loggers to ERROR for the duration (the exporter logs each step at INFO/WARNING)."""

    def __init__(self, *names: str):
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels: list[int] = []

    def __enter__(self) -> None:
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    onnx = require_runtime("onnx")
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class RuntimeModule(nn.Module):
    """An ONNX file run by another runtime, called like the eager model: float32 NCHW in, logits out
    (on the input's device; the runtime itself runs on the CPU)."""

    runtime: str = ""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def run(self, x: Any) -> Any:  # numpy in, numpy out
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            out = self.run(arr)
        except Exception as e:  # the runtime's own errors: most often an input of another shape
            raise ReslabError(f"{self.runtime} could not run {self.path.name} on a {tuple(x.shape)} input "
                              f"({_first_line(e)}); the file takes (N, {', '.join(map(str, self.input_chw))})") from None
        return torch.from_numpy(out.copy()).to(x.device)

    @property
    def input_chw(self) -> tuple[int | str, ...]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{self.runtime}: {self.path}"


class _OnnxRuntime(RuntimeModule):
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int | None):
        super().__init__(path)
        ort = require_runtime("onnxruntime")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only (constant folding notes at load)
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @property
    def input_chw(self) -> tuple[int | str, ...]:
        return tuple(self.session.get_inputs()[0].shape[1:])

    def run(self, x: Any) -> Any:
        return self.session.run(None, {self.input_name: x})[0]


class _OpenVINO(RuntimeModule):
    runtime = "openvino"

    def __init__(self, path: Path, threads: int | None):
        super().__init__(path)
        ov = require_runtime("openvino")
        core = ov.Core()
        # f32: on CPUs with native bf16 OpenVINO would otherwise compute in bf16 (not the eager model's numbers)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.model = core.read_model(str(path))
        self.compiled = core.compile_model(self.model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    @property
    def input_chw(self) -> tuple[int | str, ...]:
        return tuple(str(d) for d in self.model.inputs[0].get_partial_shape())[1:]

    def run(self, x: Any) -> Any:
        return self.request.infer({0: x})[self.compiled.outputs[0]]


def load_runtime(name: str, onnx_path: str | Path, *, threads: int | None = None) -> nn.Module:
    """An ONNX file in runtime ``name`` (``onnxruntime`` or ``openvino``, on the CPU) as a module whose
    ``forward`` takes a float32 NCHW tensor and returns the logits as a tensor.

    Args:
        threads: intra-op threads (default: the runtime's, all cores).
    """
    if name not in RUNTIMES:
        raise ReslabError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    require_runtime(name)
    path = Path(onnx_path)
    if not path.is_file():
        raise ReslabError(f"{path} not found; write it with 'reslab export RUN --format onnx --out {path}'")
    try:
        module: RuntimeModule = _OnnxRuntime(path, threads) if name == "onnxruntime" else _OpenVINO(path, threads)
    except ReslabError:
        raise
    except Exception as e:
        raise ReslabError(f"{name} cannot load {path} ({type(e).__name__}: {_first_line(e)}); "
                          "is it an ONNX file written by 'reslab export'?") from None
    return module.eval()


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over a float tensor, in batches."""

    def __init__(self, name: str, x: torch.Tensor, batch: int = 32):
        self.batches: Iterator[dict[str, Any]] = iter(
            [{name: x[i:i + batch].detach().to("cpu", torch.float32).contiguous().numpy()}
             for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.batches, None)


def quantize_onnx_int8(onnx_path: str | Path, out_path: str | Path, calibration: torch.Tensor) -> Path:
    """Static int8 quantisation of an ONNX file with ONNX Runtime (``quantize_static``): QDQ format,
    per-channel signed int8 weights, unsigned int8 activations (x86's U8S8 scheme, which OpenVINO
    also compiles; OpenVINO 2026.4 refuses this graph with signed activations) with MinMax ranges
    calibrated on ``calibration`` (preprocessed float32 NCHW images, e.g. a few hundred training
    images). The input file's metadata is carried over; ``out_path`` is written atomically.
    """
    require_runtime("onnxruntime")
    onnx = require_runtime("onnx")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if calibration.ndim != 4 or len(calibration) == 0:
        raise ReslabError(f"int8 calibration needs a (N, C, H, W) batch of images, got shape {tuple(calibration.shape)}")
    src = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in src.metadata_props}
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, _quiet("onnxruntime", "root"):
        try:
            quantize_static(src, str(tmp), _Calibration(src.graph.input[0].name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        except Exception as e:
            raise ReslabError(f"int8 quantisation of {onnx_path} failed: {type(e).__name__}: {_first_line(e)}") from None
        q = onnx.load(str(tmp))
        del q.metadata_props[:]
        for k, v in {**meta, "quantization": "int8 static QDQ: per-channel int8 weights, uint8 activations (ONNX Runtime)"}.items():
            q.metadata_props.add(key=k, value=v)
        onnx.save(q, str(tmp))
    return out_path
