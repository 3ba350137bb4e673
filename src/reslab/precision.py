"""Which floating-point precision to compute in: bf16 autocast on CPUs with native bf16, fp32
otherwise; bf16 (fp16 where bf16 is missing) on GPUs.

CPUs of one kind differ: with AMX, bf16 matmuls ran 5x faster than fp32 in one process (1,155 vs
210 GFLOP/s); without AVX512-BF16 or AMX they ran 500x slower (0.3 GFLOP/s). So ``auto`` never
assumes: it reads the CPU's capability and, where that is not decisive, measures.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import ReslabError

__all__ = ["PRECISIONS", "Precision", "resolve_precision", "cpu_bf16", "CpuBf16", "matmul_gflops"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
Name = Literal["auto", "bf16", "fp16", "fp32"]

# bf16 must beat fp32 by this factor in the start-up matmul before auto picks it on a CPU without AMX
_MIN_SPEEDUP = 1.5


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bf16 natively and fast, and why we think so."""

    native: bool
    reason: str


@dataclass(frozen=True)
class Precision:
    """The autocast dtype (None: plain fp32) and a one-line reason for the log and env.json."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self, device: torch.device) -> torch.autocast:
        """The autocast context for ``device`` (disabled for fp32)."""
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)


def matmul_gflops(dtype: torch.dtype, n: int = 512, seconds: float = 0.02) -> float:
    """Achieved GFLOP/s of an ``n`` x ``n`` matmul in ``dtype`` on this CPU, timed for about ``seconds``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # first call: kernel selection, packing
    reps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or reps < 2:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / elapsed / 1e9


def _flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    return bool(probe()) if callable(probe) else False


def cpu_bf16() -> CpuBf16:
    """Native bf16 on this CPU: AMX tiles say yes; AVX512-BF16 alone says yes only when a start-up
    matmul measures bf16 at least 1.5x fp32; neither says no (emulated bf16 is far slower). The
    probe is cached for the process; ``RESLAB_CPU_BF16=0`` or ``1`` overrides it (read each call)."""
    forced = os.environ.get("RESLAB_CPU_BF16")
    if forced in ("0", "1"):  # the test suite pins fp32 so exact comparisons hold on any CPU
        return CpuBf16(forced == "1", f"RESLAB_CPU_BF16={forced}")
    return _probe_cpu_bf16()


@functools.lru_cache(maxsize=1)
def _probe_cpu_bf16() -> CpuBf16:
    if _flag("_is_amx_tile_supported"):
        return CpuBf16(True, "the CPU has AMX (native bf16 matmul)")
    if not _flag("_is_avx512_bf16_supported"):
        return CpuBf16(False, "the CPU has neither AMX nor AVX512-BF16 (bf16 would be emulated, slower than fp32)")
    with torch.no_grad():
        fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    fast = bf16 >= _MIN_SPEEDUP * fp32
    return CpuBf16(fast, f"the CPU has AVX512-BF16; bf16 matmul measured {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s"
                         + ("" if fast else f", under {_MIN_SPEEDUP}x, so fp32"))


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """The precision ``amp`` (auto, bf16, fp16 or fp32) means on ``device``.

    ``auto``: bf16 on GPUs that have it (fp16 otherwise) and on CPUs with native bf16
    (:func:`cpu_bf16`), fp32 elsewhere. ``bf16``/``fp16`` force that autocast dtype (fp16 on a CPU
    is refused: PyTorch's CPU fp16 kernels are slow and it has no benefit there); ``fp32`` turns
    autocast off.
    """
    if amp not in PRECISIONS:
        raise ReslabError(f"amp must be one of {', '.join(PRECISIONS)}; got {amp!r}")
    if amp == "fp32":
        return Precision(None, "fp32 (amp fp32)")
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return Precision(torch.float16, "fp16 autocast" + (" (the GPU lacks bf16)" if amp == "auto" else ""))
        return Precision(torch.bfloat16, "bf16 autocast on the GPU")
    if amp == "fp16":
        raise ReslabError(f"amp fp16 is for GPUs; on {device.type} use amp auto, bf16 or fp32")
    if amp == "bf16":
        return Precision(torch.bfloat16, "bf16 autocast (amp bf16)")
    if device.type != "cpu":
        return Precision(None, f"fp32 (no autocast policy for {device.type})")
    cpu = cpu_bf16()
    return Precision(torch.bfloat16 if cpu.native else None,
                     ("bf16 autocast: " if cpu.native else "fp32: ") + cpu.reason)
