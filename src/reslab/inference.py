"""Inference preparation: conv+BN folding and the other rewrites that keep a model's outputs."""

from __future__ import annotations

__all__: list[str] = []
