"""Inference preparation: conv+BN folding and the other rewrites that keep a model's outputs.

:func:`optimize_for_inference` is the one entry point: it folds every batch norm that directly
follows a convolution into that convolution's weights (found by running the model once, not by
per-model code), picks the memory layout that measures faster on this machine, chooses the
precision (bf16 autocast only on CPUs with native bf16, see :mod:`reslab.precision`), and returns
a module that runs under ``torch.inference_mode``. It checks its own result: the prepared model's
fp32 logits must match the original's to floating-point reordering, or it refuses.

ReLU fusion: PyTorch's eager CPU kernels have no fused conv+ReLU, so here it is left to the
runtimes that do fuse (ONNX Runtime and OpenVINO fuse conv+BN+ReLU at load; ``torch.compile``'s
inductor fuses pointwise ops); ``reslab bench`` measures each of them beside the eager paths.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .errors import ReslabError
from .precision import Precision, resolve_precision

__all__ = ["fold_batchnorm", "optimize_for_inference", "InferenceModel", "Folding", "example_input"]

# Functions that read a tensor's metadata, not its values: calling them is not a use of the values.
_METADATA = frozenset({"dim", "size", "numel", "__get__", "is_contiguous", "stride", "ndimension", "element_size",
                       "is_floating_point", "__len__", "data_ptr", "is_complex", "get_device", "__format__"})


@dataclass
class Folding:
    """What :func:`fold_batchnorm` did: the (conv, bn) module names folded, and the batch norms it
    left (with why)."""

    folded: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


class _CountUses(TorchFunctionMode):
    """Counts the torch functions that read the values of the tensors in ``watched`` (by id; the
    caller keeps them alive, so no other tensor can take their ids meanwhile)."""

    def __init__(self, watched: dict[int, Any]) -> None:
        super().__init__()
        self.watched = watched
        self.uses: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in _METADATA:
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor) and id(t) in self.watched:
                    self.uses[id(t)] = self.uses.get(id(t), 0) + 1
        return func(*args, **kwargs)


def _trace_pairs(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Run ``model`` once and return the (conv, bn) pairs where the batch norm reads the
    convolution's output and nothing else reads it, each module running once; plus the batch
    norms that do not qualify, with the reason."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[str, torch.Tensor]] = {}  # id -> (conv name, output): keeps ids alive
    calls: dict[str, int] = {}
    bn_inputs: dict[str, torch.Tensor] = {}  # kept alive too, so an id is never reused by a later tensor
    hooks = []

    def conv_hook(m: nn.Module, _inp: Any, out: Any) -> None:
        calls[names[m]] = calls.get(names[m], 0) + 1
        if isinstance(out, torch.Tensor):
            outputs[id(out)] = (names[m], out)

    def bn_pre_hook(m: nn.Module, inp: Any) -> None:
        calls[names[m]] = calls.get(names[m], 0) + 1
        if inp and isinstance(inp[0], torch.Tensor):
            bn_inputs[names[m]] = inp[0]

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_pre_hook(bn_pre_hook))
    counter = _CountUses(outputs)
    try:
        with torch.no_grad(), counter:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    pairs, kept = [], {}
    for bn_name, inp in bn_inputs.items():
        bn = model.get_submodule(bn_name)
        src = id(inp)
        conv_name = outputs[src][0] if src in outputs and outputs[src][1] is inp else None
        if conv_name is None:
            kept[bn_name] = "its input is not a convolution's output"
        elif calls.get(bn_name, 0) != 1 or calls.get(conv_name, 0) != 1:
            kept[bn_name] = "the module runs more than once per forward (shared)"
        elif counter.uses.get(src, 0) != 1:
            kept[bn_name] = f"{conv_name}'s output is also used elsewhere"
        elif bn.running_mean is None or bn.running_var is None:
            kept[bn_name] = "it has no running statistics"
        else:
            pairs.append((conv_name, bn_name))
    for n, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d) and n not in bn_inputs:
            kept[n] = "it did not run"
    return pairs, kept


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Scale ``conv``'s output channels by bn's gamma/sqrt(var+eps) and give it bn's shift as bias
    (computed in float64, stored in the conv's dtype)."""
    assert bn.running_mean is not None and bn.running_var is not None
    var, mean = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    w = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(((b - mean) * scale + beta).to(conv.weight.dtype), requires_grad=False)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, *, inplace: bool = False) -> tuple[nn.Module, Folding]:
    """A copy of ``model`` (eval mode; ``model`` itself with ``inplace``) with each batch norm that
    directly follows a convolution folded into it and replaced by ``nn.Identity``; ``example`` is
    one input the model takes.

    A pair is folded only when, in one forward pass over ``example``, the batch norm's input is the
    convolution's output tensor, no other op reads that tensor, and both modules run once: so the
    pre-activation nets (BN before conv) and DenseNet's concatenations keep their batch norms.
    """
    folded = (model if inplace else copy.deepcopy(model)).eval()
    pairs, kept = _trace_pairs(folded, example)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        _fold(conv, bn)
        _set_submodule(folded, bn_name, nn.Identity())
    return folded, Folding(pairs, kept)


class InferenceModel(nn.Module):
    """A prepared model: inputs in its memory layout, its precision, ``torch.inference_mode``,
    float32 outputs."""

    def __init__(self, model: nn.Module, *, channels_last: bool, precision: Precision, folding: Folding) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.precision = precision
        self.folding = folding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.precision.autocast(x.device):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = self.model(x)
        return out.float()

    def describe(self) -> str:
        """One line: what was prepared."""
        return (f"{len(self.folding.folded)} batch norms folded ({len(self.folding.kept)} kept), "
                f"{'channels_last' if self.channels_last else 'NCHW'}, {self.precision.name}")


def _time(model: nn.Module, x: torch.Tensor, reps: int) -> float:
    """The fastest of ``reps`` timed calls, after one warm-up call."""
    model(x)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t0)
    return best


def _to_layout(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def example_input(model: nn.Module, batch: int = 1, input_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """A random input of ``input_size`` (default: the registry's size for a reslab model, else
    3x224x224) on the model's device."""
    if input_size is None:
        from .models import get_model_entry

        name = getattr(model, "model_name", None)
        input_size = get_model_entry(name).input_size if name else (3, 224, 224)
    device = next(model.parameters()).device
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0)).to(device)


def optimize_for_inference(model: nn.Module, example: torch.Tensor | None = None, *, fold: bool = True,
                           channels_last: bool | str = "auto", amp: str = "auto", rtol: float = 1e-4) -> InferenceModel:
    """``model`` prepared for inference on its device (the original is not changed).

    Args:
        model: a classifier (any module taking one image batch).
        example: an input batch the model takes, used to find the conv+BN pairs, check the folded
            logits and time the layouts (default: :func:`example_input` at batch 8).
        fold: fold batch norms into the convolutions before them (:func:`fold_batchnorm`).
        channels_last: True, False, or ``"auto"``: time both layouts on ``example`` and keep the faster.
        amp: precision, as ``RunConfig.amp``: ``auto`` is bf16 autocast on CPUs with native bf16 and
            on GPUs, fp32 elsewhere; ``bf16``, ``fp16`` (GPU) or ``fp32`` force one.
        rtol: the folded model's fp32 logits must equal the original's within ``rtol`` of the
            largest logit magnitude (folding reorders float32 arithmetic, nothing more).

    Raises:
        ReslabError: when folding changed the logits beyond ``rtol`` (a pattern the tracing did not
            see, e.g. a convolution output read through a view).
    """
    if example is None:
        example = example_input(model, batch=8)
    model = model.eval()
    with torch.inference_mode():
        reference = model(example).float()
    folding = Folding()
    prepared = copy.deepcopy(model)
    if fold:
        prepared, folding = fold_batchnorm(model, example)
        with torch.inference_mode():
            got = prepared(example).float()
        scale = reference.abs().max().clamp_min(1e-6)
        err = float((got - reference).abs().max() / scale)
        if not err <= rtol:
            raise ReslabError(f"folding the batch norms changed the logits by {err:.2e} of their scale (over {rtol}); "
                              "prepare this model with fold=False")
    precision = resolve_precision(amp, example.device)
    if channels_last == "auto":  # time both layouts in the chosen precision, keep the faster
        times = {}
        for layout in (False, True):
            times[layout] = _time(InferenceModel(_to_layout(prepared, layout), channels_last=layout,
                                                 precision=precision, folding=folding), example, reps=3)
        channels_last = times[True] < times[False]
    _to_layout(prepared, bool(channels_last))
    return InferenceModel(prepared, channels_last=bool(channels_last), precision=precision, folding=folding)
