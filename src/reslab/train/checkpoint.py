"""Checkpoints: weights in safetensors, training state in a ``weights_only``-loadable file.

A resumable checkpoint is ONE commit: ``checkpoints/last.state.pt`` holds the weights together
with the optimizer, schedule, RNG states, epoch/step and config, written to a temporary file,
fsynced and renamed over the previous one, so a kill at any instant leaves either the previous
checkpoint or the new one, never a mix. ``checkpoints/last.safetensors`` (for eval, predict,
export) is written after the commit; when a kill leaves it behind the state, the next resume
rewrites it. ``checkpoints/best.safetensors`` is one file, committed the same way.

With an EMA of the weights (``--ema-decay``), the safetensors files hold the average (what
validation, the test, eval and predict use) and the state holds both the training weights and the
average, in the same single commit.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import rundir
from ..errors import ReslabError
from ..io import atomic_path
from ..models.weights import load_state_dict_checked, read_safetensors, save_weights
from ..predict import check_weights, load_run_weights

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


def _cpu(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(run_dir: Path, tag: str, model: nn.Module, state: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None, ema: AveragedModel | None = None) -> None:
    """Commit ``{tag}.state.pt`` (weights + ``state``, and ``ema``'s state) when given a state, then
    write ``checkpoints/{tag}.safetensors``: ``ema``'s average when given, else ``model``'s weights."""
    step = int((state or metadata or {}).get("step", -1))
    meta = {"step": str(step), **{k: str(v) for k, v in (metadata or {}).items()}}
    try:
        if state is not None:
            extra = {"ema": _cpu(ema)} if ema is not None else {}
            with atomic_path(rundir.state_file(run_dir, tag)) as tmp:
                torch.save({**state, **extra, "weights_step": step, "model": _cpu(model)}, tmp)
        save_weights(model if ema is None else ema.module, rundir.weights_file(run_dir, tag), metadata=meta)
    except OSError as e:  # a full disk, a read-only folder: the previous checkpoint is untouched
        raise ReslabError(f"could not save the {tag} checkpoint in {run_dir / rundir.CHECKPOINTS} "
                          f"({e.strerror or e}); the previous one is intact: free space or fix permissions, "
                          f"then continue with --resume {run_dir}") from None


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ReslabError(f"{path} holds objects other than tensors and plain values (code, possibly); "
                          "it was refused unread: restore the run's own checkpoint") from None
    except Exception as e:
        raise ReslabError(f"{path} is unreadable ({type(e).__name__}); it may be truncated") from None
    if not isinstance(state, dict) or not _STATE_KEYS <= set(state):
        raise ReslabError(f"{path} is not a reslab training state (missing "
                          f"{', '.join(sorted(_STATE_KEYS - set(state) if isinstance(state, dict) else _STATE_KEYS))})")
    bad = [k for k in ("epoch", "batch", "step") if not isinstance(state[k], int) or isinstance(state[k], bool) or state[k] < 0]
    if bad or not all(isinstance(state[k], dict) for k in ("optimizer", "schedule", "scaler", "rng")):
        raise ReslabError(f"{path} is damaged: {', '.join(bad) or 'its optimizer/schedule/RNG state'} "
                          f"{'are' if len(bad) > 1 else 'is'} not what a training run saves; restore the run's own checkpoint")
    return state


_STATE_KEYS = frozenset({"optimizer", "schedule", "scaler", "rng", "epoch", "batch", "step"})


def load_checkpoint(run_dir: Path, model: nn.Module, tag: str = "last", *, repair: bool = False,
                    ema: AveragedModel | None = None) -> dict[str, Any]:
    """Load the weights into ``model`` (and the average into ``ema``) and return the training state
    (``weights_only=True``).

    ``repair``: rewrite ``{tag}.safetensors`` from the state when a kill left it behind (rank 0).
    """
    state_path = rundir.state_file(run_dir, tag)
    if not state_path.is_file():
        raise ReslabError(f"{state_path} not found: {run_dir} has no resumable checkpoint")
    state = _read_state(state_path)
    if ema is not None and "ema" not in state:
        raise ReslabError(f"{state_path} was saved without an EMA of the weights; resume it without --ema-decay")
    if "model" in state:  # one commit: the weights are in the state
        weights_in_state = state.pop("model")
        check_weights(model, weights_in_state, str(state_path))
        load_state_dict_checked(model, weights_in_state, str(state_path))
        if ema is not None:
            ema.load_state_dict(state.pop("ema"))
        weights = rundir.weights_file(run_dir, tag)
        if repair and _weights_step(weights) != str(state.get("weights_step")):
            save_weights(model if ema is None else ema.module, weights, metadata={"step": str(state.get("weights_step"))})
        return state
    # a checkpoint of an earlier version: weights and state in two files, checked against each other
    meta = load_run_weights(run_dir, tag, model)
    if str(state.get("weights_step")) != meta.get("step"):
        raise ReslabError(
            f"{state_path} (step {state.get('weights_step')}) and its weights (step {meta.get('step')}) "
            "are from different saves; the run was killed mid-save: resume from a copy of an earlier checkpoint"
        )
    return state


def _weights_step(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return read_safetensors(path)[1].get("step")
    except ReslabError:  # torn by a kill: rewrite it
        return None
