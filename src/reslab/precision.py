"""Which floating-point precision to compute in: bf16 autocast on CPUs with native bf16, fp32
otherwise; bf16/fp16 on GPUs."""

from __future__ import annotations

__all__: list[str] = []
