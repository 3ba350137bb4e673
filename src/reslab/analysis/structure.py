"""Where a network's weighted layers and residual blocks are, found from its modules, not its name.

- Weighted layers (convolutions and fully-connected layers) are listed in the order they *run*, by
  forward hooks on one forward pass, so any architecture works.
- A residual block is any module with a ``shortcut`` attribute (``None`` in a plain twin) and a
  ``last_branch_layer()`` method (the layer whose output is the residual branch's, before the
  addition): every block of :class:`reslab.models.resnet.ResNet`, post- or pre-activation, basic
  or bottleneck, with any shortcut option. The branch's output is taken after the block's
  attention, where it has one.
- :class:`BlockGates` reroutes gradients or deletes branches through forward hooks that return a
  tensor of the same value, so measurements need no copy of the network's code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import ReslabError

__all__ = ["weighted_layers", "residual_blocks", "branch_output", "has_shortcut", "require_blocks", "zero_branches",
           "GradGate", "gated_blocks", "bn_state", "restored_bn"]


def weighted_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every Conv2d and Linear layer in the order one forward pass of ``x`` runs them
    (a layer run twice is listed once, at its first use; layers that do not run are left out)."""
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def hook(name: str, m: nn.Module):
        def fn(*_: Any) -> None:
            if id(m) not in seen:
                seen.add(id(m))
                order.append((name, m))
        return fn

    handles = [m.register_forward_hook(hook(n, m)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, block)`` of every residual block (or its plain twin) in module order, which is the order
    the blocks run in a :class:`~reslab.models.resnet.ResNet`."""
    return [(n, m) for n, m in model.named_modules()
            if hasattr(m, "shortcut") and callable(getattr(m, "last_branch_layer", None))]


def has_shortcut(block: nn.Module) -> bool:
    """Whether the block adds a shortcut (False in a plain net's block)."""
    return getattr(block, "shortcut", None) is not None


def branch_output(block: nn.Module) -> nn.Module:
    """The module whose output is the residual branch ``F(x)`` just before the addition."""
    attn = getattr(block, "attn", None)
    return attn if isinstance(attn, nn.Module) else block.last_branch_layer()


def require_blocks(model: nn.Module, what: str, *, shortcuts: bool = True) -> list[tuple[str, nn.Module]]:
    """The model's residual blocks, or one line saying it has none (``shortcuts``: with a shortcut)."""
    blocks = residual_blocks(model)
    if not blocks:
        raise ReslabError(f"{what} has no residual blocks (no module with a shortcut and a residual branch); "
                          "give a ResNet-family model such as resnet56 or a run that trained one")
    if shortcuts and not any(has_shortcut(b) for _, b in blocks):
        raise ReslabError(f"{what} is a plain net: its blocks have no shortcut, so every path runs through every "
                          "block; give a residual net such as resnet110")
    return blocks


@contextmanager
def zero_branches(blocks: Sequence[nn.Module]) -> Iterator[None]:
    """Within the block, each listed block's residual branch outputs zeros: the block is deleted and only
    its shortcut remains (Veit et al. 2016's lesion); in a plain block nothing passes."""
    handles = [branch_output(b).register_forward_hook(lambda _m, _i, out: torch.zeros_like(out)) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Scale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``gate.value`` read at backward time."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, gate: GradGate) -> torch.Tensor:  # type: ignore[override]
        ctx.gate = gate
        return x.clone()  # a new tensor: the block may add into it in place

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        return grad * ctx.gate.value, None


class GradGate:
    """A gradient multiplier whose value may change between backward passes over one graph."""

    def __init__(self) -> None:
        self.value = 1.0


@contextmanager
def gated_blocks(blocks: Sequence[nn.Module]) -> Iterator[list[tuple[GradGate, GradGate]]]:
    """Within the block, the gradient through each block's residual branch and through its shortcut is
    multiplied by that block's ``(branch gate, shortcut gate)`` values, read at each backward pass;
    forward values are unchanged. Setting one gate of each block to 0 and the other to 1 keeps one path.
    """
    gates = [(GradGate(), GradGate()) for _ in blocks]
    handles = []
    for b, (g_branch, g_skip) in zip(blocks, gates):
        handles.append(branch_output(b).register_forward_hook(
            lambda _m, _i, out, g=g_branch: _Scale.apply(out, g)))
        if has_shortcut(b):
            handles.append(b.shortcut.register_forward_hook(lambda _m, _i, out, g=g_skip: _Scale.apply(out, g)))
    try:
        yield gates
    finally:
        for h in handles:
            h.remove()


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every batch-norm buffer (running statistics, counters)."""
    return {n: t.detach().clone() for n, t in model.named_buffers()}


@contextmanager
def restored_bn(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in training mode (batch statistics, as a training step sees it) and put its buffers
    and mode back afterwards, so a measurement leaves the network as it found it."""
    saved = bn_state(model)
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for n, t in model.named_buffers():
                t.copy_(saved[n])
