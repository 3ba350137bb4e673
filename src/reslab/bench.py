"""``reslab bench``: every inference path of a model or run timed in one process, against
torchvision's eager model of the same architecture.

Paths (each one a module taking the same float32 NCHW batch and returning logits):

- ``torchvision``: torchvision's eager model of the same name, NCHW fp32 (the baseline where one exists;
  otherwise ``eager`` is the baseline);
- ``eager``: reslab's model as trained, NCHW fp32; ``eager-cl``: the same in channels_last;
- ``folded``: :func:`reslab.inference.optimize_for_inference` in fp32 (conv+BN folded, the faster layout);
- ``folded-bf16``: the same under bf16 autocast, only on CPUs with native bf16 (:mod:`reslab.precision`);
- ``compile``: ``torch.compile`` of the folded model (opt-in: compiling takes minutes on a CPU);
- ``onnxruntime``, ``openvino``: the ONNX export in those runtimes (fp32);
- ``onnxruntime-int8``: static int8 (ONNX Runtime, calibrated on training images for a run).

Figures per path and batch: images/s at the median latency, p50/p95 latency, achieved GFLOP/s
(2 x multiply-adds / latency) and its share of the fp32 matmul peak measured in the same process;
for a run, top-1 error on its real test images, and every path's top-1 agreement with ``eager``.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import rundir
from ._table import format_table
from ._version import __version__
from .errors import ReslabError
from .export import calibration_images, parity_images
from .inference import Folding, InferenceModel, optimize_for_inference
from .io import atomic_write_text
from .models import create_model, get_model_entry, model_info
from .precision import Precision, cpu_bf16, matmul_gflops
from .predict import load_run
from .runtimes import export_onnx, load_runtime, quantize_onnx_int8

__all__ = ["PATHS", "DEFAULT_PATHS", "bench", "BenchReport", "BenchRow", "write_report"]

PATHS = ("torchvision", "eager", "eager-cl", "folded", "folded-bf16", "compile", "onnxruntime", "openvino",
         "onnxruntime-int8")
DEFAULT_PATHS = tuple(p for p in PATHS if p != "compile")


@dataclass
class BenchRow:
    """One path at one batch size."""

    path: str
    batch: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    gflops: float
    peak_share: float
    speedup: float = 1.0  # images/s over the baseline path's at the same batch
    reps: int = 0


@dataclass
class BenchReport:
    """What :func:`bench` measured."""

    target: str
    model: str
    input_size: tuple[int, int, int]
    macs: int
    baseline: str
    threads: int
    cpu: str
    fp32_peak_gflops: float
    bf16_peak_gflops: float | None
    bf16_reason: str
    rows: list[BenchRow] = field(default_factory=list)
    accuracy: dict[str, dict[str, float | None]] = field(default_factory=dict)  # path -> top1_err, agree
    accuracy_images: int = 0
    accuracy_source: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reslab"], d["torch"] = __version__, torch.__version__
        return d

    def best(self, batch: int, exclude: Sequence[str] = ("torchvision",)) -> BenchRow:
        """The fastest path at ``batch`` (by default among reslab's own)."""
        rows = [r for r in self.rows if r.batch == batch and r.path not in exclude]
        return max(rows, key=lambda r: r.images_per_s)

    def table(self) -> str:
        """The rows as a text table, with each path's accuracy where measured."""
        head = ["path", "batch", "images/s", "p50 ms", "p95 ms", "GFLOP/s", "% fp32 peak", f"vs {self.baseline}"]
        if self.accuracy:
            head += ["top-1 err %" if any(a.get("top1_err") is not None for a in self.accuracy.values()) else "",
                     "agree %"]
        body = []
        for r in self.rows:
            row: list[str] = [r.path, str(r.batch), f"{r.images_per_s:,.1f}", f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.gflops:.1f}",
                   f"{100 * r.peak_share:.0f}", f"{r.speedup:.2f}x"]
            if self.accuracy:
                a = self.accuracy.get(r.path, {})
                err, agree = a.get("top1_err"), a.get("agree")
                row += ["-" if err is None else f"{err:.2f}", "-" if agree is None else f"{agree:.1f}"]
            body.append(row)
        return format_table([h for h in head if h], [[c for c, h in zip(row, head) if h] for row in body],
                            align="lrrrrrrrrr")

    def findings(self) -> list[str]:
        """One sentence per batch size: the fastest reslab path against the baseline."""
        lines = []
        for batch in sorted({r.batch for r in self.rows}):
            best = self.best(batch)
            base = next(r for r in self.rows if r.batch == batch and r.path == self.baseline)
            lines.append(f"batch {batch}: {best.path} {best.images_per_s:,.1f} images/s, {best.speedup:.2f}x "
                         f"{self.baseline} ({base.images_per_s:,.1f}); p50 latency {best.p50_ms:.2f} vs {base.p50_ms:.2f} ms")
        return lines


def _eager(model: nn.Module, channels_last: bool = False) -> InferenceModel:
    """``model`` as it is (fp32, nothing folded) under ``inference_mode``, in the given layout."""
    return InferenceModel(model, channels_last=channels_last, precision=Precision(None, "fp32"), folding=Folding())


def _torchvision_twin(name: str, num_classes: int) -> nn.Module | None:
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return torchvision.models.get_model(name, **kwargs).eval()


def _time(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, seconds: float, min_reps: int = 3) -> list[float]:
    """Latencies (s) of ``fn(x)`` after two warm-up calls, until ``seconds`` have passed and at least
    ``min_reps`` calls ran."""
    fn(x)
    fn(x)
    lat: list[float] = []
    start = time.perf_counter()
    while len(lat) < min_reps or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn(x)
        lat.append(time.perf_counter() - t0)
    return lat


def _predictions(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 100) -> torch.Tensor:
    return torch.cat([fn(x[i:i + chunk]).argmax(1) for i in range(0, len(x), chunk)])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_paths(paths: Sequence[str] | None) -> list[str]:
    chosen = list(paths) if paths else list(DEFAULT_PATHS)
    unknown = [p for p in chosen if p not in PATHS]
    if unknown:
        raise ReslabError(f"unknown path {unknown[0]!r}; choose from {', '.join(PATHS)}")
    return chosen


def bench(target: str | Path, *, batches: Sequence[int] = (1, 16), paths: Sequence[str] | None = None,
          threads: int | None = None, seconds: float = 2.0, images: int = 1000, data_dir: str | None = None,
          device: str = "cpu", log: Callable[[str], None] | None = None) -> BenchReport:
    """Time every inference path of ``target`` (a registered model name, random weights, or a run
    directory, its trained weights and real test images) in this process.

    Args:
        batches: batch sizes to time each path at.
        paths: a subset of :data:`PATHS` (default: all but ``compile``).
        threads: torch, ONNX Runtime and OpenVINO intra-op threads (default: torch's, all cores).
        seconds: time each path and batch for at least this long (and at least 3 calls).
        images: a run's test images for top-1 error and agreement (a model name: that many random
            images for agreement only).
        device: only ``cpu`` (the runtimes here are CPU builds).
    """
    say = log or (lambda _: None)
    if device != "cpu":
        raise ReslabError(f"reslab bench times CPU inference; --device {device} is not supported (use cpu)")
    if not batches or any(b < 1 for b in batches):
        raise ReslabError(f"--batch must be positive integers, got {list(batches)}")
    chosen = _parse_paths(paths)
    if "eager" not in chosen and "torchvision" not in chosen:
        raise ReslabError("the baseline path eager is not among --paths; add it (or torchvision)")
    if threads is not None:
        if threads < 1:
            raise ReslabError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()

    labels: torch.Tensor | None = None
    calib: torch.Tensor | None = None
    if rundir.is_run_dir(target):
        run = load_run(target)
        model, name, input_size = run.model, run.config.model, run.input_size
        num_classes = len(run.classes)
        x_eval, labels, source, splits = parity_images(run, images, data_dir)
        try:
            calib = calibration_images(run, splits, 256)
        except ReslabError:
            calib = None
    else:
        name = str(target)
        get_model_entry(name)  # unknown names raise with close matches
        model = create_model(name).eval()
        c, h, w = get_model_entry(name).input_size
        input_size = (c, h, w)
        with torch.inference_mode():
            num_classes = model(torch.zeros(1, *input_size)).shape[1]
        g = torch.Generator().manual_seed(0)
        x_eval = torch.randn(min(images, 256), *input_size, generator=g)
        source = f"{len(x_eval)} random images (a model name has no test data: agreement only)"
    macs = model_info(model, input_size).macs
    say(f"{name}: input {'x'.join(map(str, input_size))}, {macs / 1e9:.3f} G multiply-adds per image, "
        f"{threads} threads")

    fp32_peak = matmul_gflops(torch.float32, n=1024, seconds=1.0)
    bf16 = cpu_bf16()
    bf16_peak = matmul_gflops(torch.bfloat16, n=1024, seconds=1.0) if bf16.native else None
    c, h, w = input_size
    report = BenchReport(str(target), name, (c, h, w), macs, "eager", threads, _cpu_name(), fp32_peak,
                         bf16_peak, bf16.reason)
    example = x_eval[:max(batches)] if len(x_eval) >= max(batches) else x_eval.repeat(
        -(-max(batches) // len(x_eval)), 1, 1, 1)[:max(batches)]

    modules: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    with tempfile.TemporaryDirectory(prefix="reslab-bench-") as tmp:
        onnx_path: Path | None = None
        for path in chosen:
            try:
                t0 = time.perf_counter()
                if path == "torchvision":
                    twin = _torchvision_twin(name, num_classes)
                    if twin is None:
                        report.skipped[path] = f"torchvision has no {name}"
                        continue
                    modules[path] = _eager(twin)
                    report.baseline = "torchvision"
                elif path == "eager":
                    modules[path] = _eager(model)
                elif path == "eager-cl":
                    modules[path] = _eager(copy.deepcopy(model).to(memory_format=torch.channels_last), True)
                elif path in ("folded", "folded-bf16", "compile"):
                    if path == "folded-bf16" and not bf16.native:
                        report.skipped[path] = f"no native bf16: {bf16.reason}"
                        continue
                    prepared = optimize_for_inference(model, example, amp="bf16" if path == "folded-bf16" else "fp32")
                    report.notes[path] = prepared.describe()
                    modules[path] = torch.compile(prepared) if path == "compile" else prepared  # type: ignore[assignment]
                else:
                    if onnx_path is None:
                        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=(1, *input_size))
                    if path == "onnxruntime-int8":
                        if calib is None:
                            calib = x_eval[:256]
                            report.notes[path] = "calibrated on the benchmark's random images"
                        q = quantize_onnx_int8(onnx_path, Path(tmp) / "int8.onnx", calib)
                        modules[path] = load_runtime("onnxruntime", q, threads=threads)
                    else:
                        modules[path] = load_runtime(path, onnx_path, threads=threads)
                say(f"  {path}: ready in {time.perf_counter() - t0:.1f} s")
            except ReslabError as e:
                report.skipped[path] = str(e)
        if report.baseline == "torchvision" and "torchvision" not in modules:
            report.baseline = "eager"
        if report.baseline not in modules:
            raise ReslabError(f"the baseline path {report.baseline} is not among --paths; add it "
                              f"({report.skipped.get('torchvision', '')})")

        for batch in batches:
            x = example[:batch].contiguous()
            for path, fn in modules.items():
                lat = _time(fn, x, seconds)
                p50 = statistics.median(lat)
                p95 = sorted(lat)[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
                gflops = 2 * macs * batch / p50 / 1e9
                report.rows.append(BenchRow(path, batch, batch / p50, 1e3 * p50, 1e3 * p95, gflops,
                                            gflops / fp32_peak, reps=len(lat)))
                say(f"  {path} batch {batch}: {batch / p50:,.1f} images/s")
            base = next(r for r in report.rows if r.batch == batch and r.path == report.baseline)
            for r in report.rows:
                if r.batch == batch:
                    r.speedup = r.images_per_s / base.images_per_s

        report.accuracy_images, report.accuracy_source = len(x_eval), source
        reference = _predictions(modules["eager"], x_eval) if "eager" in modules else None
        for path, fn in modules.items():
            if path == "torchvision":
                continue  # random weights of its own: nothing to compare
            pred = _predictions(fn, x_eval)
            report.accuracy[path] = {
                "top1_err": None if labels is None else 100.0 * int((pred != labels).sum()) / len(pred),
                "agree": None if reference is None else 100.0 * int((pred == reference).sum()) / len(pred),
            }
    return report


def write_report(report: BenchReport, path: str | Path) -> Path:
    """The report as JSON at ``path`` (written atomically), with the machine it ran on."""
    d = report.to_dict()
    d["cpu_count"], d["pid_threads_env"] = os.cpu_count(), os.environ.get("OMP_NUM_THREADS")
    atomic_write_text(Path(path), json.dumps(d, indent=2))
    return Path(path)
