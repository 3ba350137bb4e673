"""Export a trained run to a portable file (ONNX, TorchScript, torch.export) with its
preprocessing as metadata, parity-checked against eager PyTorch."""

from __future__ import annotations

__all__: list[str] = []
