"""Weights on disk in safetensors, and import of torchvision state dicts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, cast

import torch
from torch import nn

from .. import rundir
from ..errors import ReslabError
from ..io import atomic_path

__all__ = ["save_weights", "load_weights", "load_state_dict_checked", "load_torchvision_state_dict",
           "convert_torchvision_state_dict",
           "register_torchvision_converter", "torchvision_to_reslab_key", "read_safetensors",
           "rename_keys", "sequential_from_torchvision", "WeightsSource", "read_weights"]


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors, atomically.

    The model's registry name (``model_name``) is stored in the metadata, so loading into another
    architecture can be reported by name.
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", **({"model_name": cast(str, model.model_name)} if hasattr(model, "model_name") else {})}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a missing or corrupt file raises ReslabError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers / truncation
        raise ReslabError(f"{path} is not a readable safetensors file ({e}); re-save or re-download it") from None
    return tensors, meta


def load_state_dict_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one clear line when the weights are for another model."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        name = getattr(model, "model_name", type(model).__name__)
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise ReslabError(f"weights from {source} do not fit {name}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a safetensors file written by :func:`save_weights` into ``model`` (strictly)."""
    tensors, meta = read_safetensors(path)
    source = f"{path}" + (f" (model {meta['model_name']})" if "model_name" in meta else "")
    load_state_dict_checked(model, tensors, source)
    return model


_TV_RULES = [
    (re.compile(r"^conv1\."), "stem.conv."),
    (re.compile(r"^bn1\."), "stem.bn."),
    (re.compile(r"^layer(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}."),
    (re.compile(r"\.downsample\.0\."), ".shortcut.conv."),
    (re.compile(r"\.downsample\.1\."), ".shortcut.bn."),
    (re.compile(r"^fc\."), "head.fc."),
]


RenameRules = list[tuple["re.Pattern[str]", object]]
StateDict = Mapping[str, torch.Tensor]


def rename_key(key: str, rules: RenameRules) -> str:
    """Apply each ``(pattern, replacement)`` rule to ``key`` in order (``re.sub`` semantics)."""
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def rename_keys(state_dict: StateDict, rules: RenameRules) -> dict[str, torch.Tensor]:
    """A state dict with every key renamed by :func:`rename_key`; the tensors are shared, not copied."""
    return {rename_key(k, rules): v for k, v in state_dict.items()}


def torchvision_to_reslab_key(key: str) -> str:
    """Rename one torchvision ResNet state-dict key to reslab's layout."""
    return rename_key(key, _TV_RULES)


def _tv_layers(state_dict: StateDict, prefix: str) -> list[list[tuple[str, str]]]:
    """``(torchvision key, attribute)`` pairs of each layer of ``prefix`` (a Sequential), in order."""
    layers: dict[int, list[tuple[str, str]]] = {}
    for key in state_dict:
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head == prefix and index.isdigit() and name:
            layers.setdefault(int(index), []).append((key, name))
    return [layers[i] for i in sorted(layers)]


def _own_layers(model: nn.Module, roots: Sequence[str]) -> list[str]:
    return [name for name, m in model.named_modules()
            if name.split(".")[0] in roots and next(m.parameters(recurse=False), None) is not None]


def sequential_from_torchvision(model: nn.Module, state_dict: StateDict) -> dict[str, torch.Tensor]:
    """Rename the keys of a torchvision model made of ``features`` (a Sequential of conv, BN, ReLU,
    pooling) and ``classifier`` (linear, ReLU, dropout), as AlexNet and VGG are, by position: the
    N-th layer with weights of ``features`` is the N-th of ``model``'s stem and stages, the N-th
    of ``classifier`` the N-th of its head.

    Keys with no counterpart keep their torchvision name, so the strict load names them.
    """
    out = dict(state_dict)
    for tv_prefix, roots in (("features", ("stem", "stages")), ("classifier", ("head",))):
        for tv_layer, own in zip(_tv_layers(state_dict, tv_prefix), _own_layers(model, roots)):
            for key, name in tv_layer:
                out[f"{own}.{name}"] = out.pop(key)
    return out


_TV_CONVERTERS: dict[type, Callable[[nn.Module, StateDict], dict[str, torch.Tensor]]] = {}


def register_torchvision_converter(cls: type):
    """Register ``fn(model, torchvision_state_dict) -> reslab_state_dict`` for models of ``cls``.

    Each family that torchvision also has (VGG, DenseNet, Inception, ...) registers one, next to
    its architecture; :func:`load_torchvision_state_dict` picks it by the model's type.
    """

    def add(fn: Callable[[nn.Module, StateDict], dict[str, torch.Tensor]]):
        _TV_CONVERTERS[cls] = fn
        return fn

    return add


def _check_tv_resnet_stride(model: nn.Module) -> None:
    """Refuse a bottleneck ResNet with the stride in the first 1x1: torchvision's weights (v1.5, stride
    in the 3x3) have the same shapes and would load silently, with different outputs."""
    spec = getattr(model, "spec", None)
    if getattr(spec, "block", None) == "bottleneck" and getattr(spec, "stride_in", "3x3") != "3x3":
        name = getattr(model, "model_name", type(model).__name__)
        raise ReslabError(
            f"this {name} downsamples in the first 1x1 conv of each bottleneck (stride_in='1x1', the paper's v1); "
            "torchvision's weights are for v1.5 (stride in the 3x3) and would load with different outputs: "
            f"build it with create_model('{name}', stride_in='3x3') (CLI: --arch stride_in=3x3) to load them"
        )


def load_torchvision_state_dict(model: nn.Module, state_dict: StateDict) -> nn.Module:
    """Load a torchvision state dict into the matching reslab model (strictly).

    torchvision's ResNets put the bottleneck stride in the 3x3 conv, so build the target with
    ``stride_in="3x3"`` (e.g. ``create_model("resnet50", stride_in="3x3")``) for equal outputs; a
    bottleneck ResNet with the paper's default ``stride_in="1x1"`` is refused with that advice.
    Every key must map: nothing is left over or missing.
    """
    load_state_dict_checked(model, convert_torchvision_state_dict(model, state_dict), "a torchvision state dict")
    return model


def convert_torchvision_state_dict(model: nn.Module, state_dict: StateDict) -> dict[str, torch.Tensor]:
    """``state_dict`` (torchvision's keys) renamed to ``model``'s keys, by the converter registered for
    ``model``'s family (ResNet's rules otherwise), without loading it. Keys with no counterpart keep
    a name that a strict load reports. Refuses a paper-v1 bottleneck ResNet as
    :func:`load_torchvision_state_dict` does."""
    convert = next((fn for cls, fn in _TV_CONVERTERS.items() if isinstance(model, cls)), None)
    if convert is None:
        _check_tv_resnet_stride(model)
        return rename_keys(state_dict, _TV_RULES)
    return convert(model, state_dict)


WeightsSource = Union[str, "os.PathLike[str]", Mapping[str, torch.Tensor]]
"""Trained weights as a user names them: a state dict, a run directory, a ``.safetensors`` or a ``.pth`` file."""


def read_weights(source: WeightsSource, *, what: str = "weights") -> tuple[dict[str, torch.Tensor], str, str | None]:
    """``(tensors, a label naming them, the registry name of the model they come from or None)`` for
    a state dict, a reslab run directory (its best checkpoint, else its last), a ``.safetensors``
    file or a PyTorch ``.pth`` / ``.pt`` state dict (torchvision's published weights). Messages name
    the source as ``what`` does (``--init-from runs/x: ...``)."""
    if isinstance(source, Mapping):
        return dict(source), "a state dict", None
    path = Path(source).expanduser()
    if rundir.is_run_dir(path):
        model = rundir.read_config(path).get("model")
        tag = "best" if rundir.weights_file(path, "best").is_file() else "last"
        tensors, _ = read_safetensors(rundir.weights_file(path, tag))
        return tensors, f"{source} ({model}, {tag} checkpoint)", str(model) if model else None
    if not path.exists():
        raise ReslabError(f"{what} {source}: no such run directory or weights file")
    if path.is_dir():
        raise ReslabError(f"{what} {source} is a folder but not a run directory; give a run written by "
                          "'reslab train' or a .safetensors / .pth file")
    if path.suffix == ".safetensors":
        tensors, meta = read_safetensors(path)
        return tensors, str(source), meta.get("model_name")
    if path.suffix in (".pth", ".pt", ".bin"):
        try:
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors, truncated zip archives, non-tensor payloads
            raise ReslabError(f"{what} {source} is not a readable PyTorch state dict ({type(e).__name__}); "
                              "give a .safetensors file or a state dict saved with torch.save") from None
        for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ReslabError(f"{what} {source} does not hold a state dict of tensors")
        return dict(obj), str(source), None
    raise ReslabError(f"{what} {source}: give a run directory, a .safetensors file or a .pth/.pt state dict")
