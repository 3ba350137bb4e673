"""A model's size, estimated before it is built: absurd options are refused in one line instead
of allocating gigabytes (or building a hundred thousand blocks) first."""

from __future__ import annotations

import os
from typing import Any

import torch

from ..errors import ReslabError
from .registry import create_model

__all__ = ["check_model_size", "MAX_PARAMS_ENV", "MAX_BLOCKS"]

MAX_PARAMS_ENV = "RESLAB_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 2_000_000_000  # 7.5 GiB of float32 weights, before gradients and optimizer state
MAX_BLOCKS = 10_000  # ResNet-1202 has 600 blocks; building 100,000 takes minutes even without memory


def _max_params() -> int:
    text = os.environ.get(MAX_PARAMS_ENV)
    if text is None:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(float(text))
    except ValueError:
        raise ReslabError(f"${MAX_PARAMS_ENV} must be a number of parameters, got {text!r}") from None
    return value


def check_model_size(name: str, **overrides: Any) -> int:
    """The parameter count of ``create_model(name, **overrides)``, measured on the meta device
    (no memory); a ReslabError when it exceeds ``$RESLAB_MAX_PARAMS`` (default 2e9) or when a
    list option asks for more than 10,000 blocks."""
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            if sum(value) > MAX_BLOCKS:
                raise ReslabError(f"{name}: {key}={list(value)} asks for {sum(value):,} blocks, over {MAX_BLOCKS:,}; "
                                  "give a smaller architecture")
    with torch.device("meta"):
        model = create_model(name, **overrides)
    params = sum(p.numel() for p in model.parameters())
    limit = _max_params()
    if params > limit:
        raise ReslabError(f"{name} with these options has {params:,} parameters ({params * 4 / 2**30:.1f} GiB in "
                          f"float32), over the limit of {limit:,}; choose smaller options (num_classes, widths, depth) "
                          f"or raise ${MAX_PARAMS_ENV}")
    return params
