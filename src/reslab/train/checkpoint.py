"""Checkpoints: weights in safetensors, training state in a ``weights_only``-loadable file.

``checkpoints/last.safetensors`` + ``checkpoints/last.state.pt`` (optimizer, schedule, RNG
states, epoch/step, config) and ``checkpoints/best.safetensors``. Each file is written to a
temporary file, fsynced and renamed; the state file records the step its weights were saved at,
so a pair torn by a crash between the two renames is detected, not silently mixed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import rundir
from ..errors import ReslabError
from ..io import atomic_path
from ..models.weights import save_weights
from ..predict import load_run_weights

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write ``checkpoints/{tag}.safetensors`` and, given ``state``, ``{tag}.state.pt``."""
    step = int((state or metadata or {}).get("step", -1))
    meta = {"step": str(step), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_weights(model, rundir.weights_file(run_dir, tag), metadata=meta)
    if state is not None:
        with atomic_path(rundir.state_file(run_dir, tag)) as tmp:
            torch.save({**state, "weights_step": step}, tmp)


def load_checkpoint(run_dir: Path, model: nn.Module, tag: str = "last") -> dict[str, Any]:
    """Load the weights into ``model`` and return the training state (``weights_only=True``)."""
    state_path = rundir.state_file(run_dir, tag)
    if not state_path.is_file():
        raise ReslabError(f"{state_path} not found: {run_dir} has no resumable checkpoint")
    meta = load_run_weights(run_dir, tag, model)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ReslabError(f"{state_path} is unreadable ({type(e).__name__}); it may be truncated") from None
    if str(state.get("weights_step")) != meta.get("step"):
        raise ReslabError(
            f"{state_path} (step {state.get('weights_step')}) and its weights (step {meta.get('step')}) "
            "are from different saves; the run was killed mid-save: resume from a copy of an earlier checkpoint"
        )
    return state
