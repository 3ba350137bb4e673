"""Layer responses: the standard deviation of each 3x3 layer's output (He et al. 2015, Fig. 7).

The paper's "response" of a 3x3 layer is its output after batch normalisation and before any
other nonlinearity (the ReLU, or the addition with the shortcut). Figure 7 plots the std of
these responses on CIFAR-10 in layer order and sorted by magnitude: residual functions respond
more weakly than their plain counterparts, and more weakly the deeper the net.

The layers are found by following the data, not the module names: a forward hook on every 3x3
``Conv2d`` notes its output tensor, and a hook on every batch-norm layer checks whether its input
*is* that tensor. So the same code serves post-activation ResNets, their plain twins and any other
conv-BN network; a 3x3 conv whose output goes elsewhere first (pre-activation units) is measured
on its own output.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

from ..errors import ReslabError

__all__ = ["layer_responses"]


def _is_3x3(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3)


class _Moments:
    """Running count, sum and sum of squares in float64, so batches combine exactly."""

    __slots__ = ("n", "s", "ss")

    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, t: torch.Tensor) -> None:
        t = t.detach().double()
        self.n += t.numel()
        self.s += float(t.sum())
        self.ss += float((t * t).sum())

    def std(self) -> float:
        if self.n < 2:
            return float("nan")
        var = (self.ss - self.s * self.s / self.n) / (self.n - 1)  # unbiased, as torch.std
        return max(var, 0.0) ** 0.5


@torch.no_grad()
def layer_responses(model: nn.Module, x: torch.Tensor, *, batch_size: int | None = None,
                    eval_mode: bool = True) -> list[tuple[str, float]]:
    """The std of every 3x3 layer's response, in the order the layers run.

    Args:
        model: any network with 3x3 convolutions, e.g. ``create_model("resnet56")``.
        x: a batch of already-normalised inputs (N, C, H, W).
        batch_size: run ``x`` through in chunks of this many images; the std is still taken over
            all N images at once (default: one chunk).
        eval_mode: measure with batch norm's running statistics (a trained net at test time,
            as in the paper); the model's training flag is restored afterwards.

    Returns:
        ``(conv module name, std)`` per 3x3 conv. The std is over every element of the layer's
        response (all images, channels and positions), unbiased. The conv's own output is used
        where no batch norm takes it directly.

    Raises:
        ReslabError: the model has no 3x3 convolution, or ``x`` is not a 4-d batch.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or len(x) == 0:
        raise ReslabError(f"x must be a non-empty (N, C, H, W) batch, got {getattr(x, 'shape', type(x).__name__)}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ReslabError(f"batch_size must be a positive integer, got {batch_size!r}")
    convs = [(name, m) for name, m in model.named_modules() if _is_3x3(m)]
    if not convs:
        raise ReslabError(f"{type(model).__name__} has no 3x3 convolution to measure")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    order: list[str] = []  # conv names in the order they ran
    by_bn: dict[str, _Moments] = {}  # a conv whose output a BN took: measured there
    pending: dict[int, tuple[str, weakref.ref, int]] = {}
    own: dict[str, _Moments] = {}  # conv outputs of this chunk, until we know no BN takes them

    def conv_hook(name: str) -> Callable:
        def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            if name not in order:
                order.append(name)
            # A weak reference: an output that no BN takes is freed as usual, and a later tensor
            # that reuses its id() cannot be mistaken for it.
            # and its version: a tensor changed in place since (a pre-activation block adds the
            # shortcut into its last conv's output) is no longer that conv's output
            pending[id(out)] = (name, weakref.ref(out), out._version)
            own[name] = _Moments()
            own[name].add(out)

        return hook

    def bn_hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        entry = pending.pop(id(inp[0]), None)
        if entry is not None and entry[1]() is inp[0] and entry[2] == inp[0]._version:
            name = entry[0]
            own.pop(name, None)
            by_bn.setdefault(name, _Moments()).add(out)

    handles = [m.register_forward_hook(conv_hook(name)) for name, m in convs]
    handles += [m.register_forward_hook(bn_hook) for m in norms]
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        step = batch_size or len(x)
        totals: dict[str, _Moments] = {}
        for start in range(0, len(x), step):
            own.clear()
            pending.clear()
            model(x[start:start + step])
            for name in list(own):  # ran, but no BN took the output: the conv's own output
                _merge(totals.setdefault(name, _Moments()), own[name])
            for name, m in by_bn.items():
                _merge(totals.setdefault(name, _Moments()), m)
            by_bn.clear()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [(name, totals[name].std()) for name in order if name in totals]


def _merge(into: _Moments, other: _Moments) -> None:
    into.n += other.n
    into.s += other.s
    into.ss += other.ss
