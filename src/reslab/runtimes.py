"""Inference runtimes beside eager PyTorch: ONNX export of a module, ONNX Runtime and OpenVINO
sessions wrapped as modules, int8 quantisation."""

from __future__ import annotations

__all__: list[str] = []
