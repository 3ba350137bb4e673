"""Skip or transform: the size of each residual branch's output relative to its block's input,
``||F(x)|| / ||x||``, per block and per image (the norms over each image's whole feature map).

A ratio near 0 means the block nearly passes its input on unchanged (the net "takes the
shortcut" there); a ratio near 1 or above, that the block transforms it. Blocks that are nearly
switched off on most images are the ones whose deletion should cost least (:mod:`.lesion`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import ReslabError
from .structure import branch_output, require_blocks

__all__ = ["block_ratios"]


@torch.no_grad()
def block_ratios(model: nn.Module, x: torch.Tensor, *, chunk: int = 100) -> tuple[list[str], torch.Tensor]:
    """``||F(x)|| / ||x||`` of every residual block for every image, in evaluation mode.

    Args:
        model: a net with residual blocks (a plain twin's blocks are measured too: their ``F`` is the
            whole block before its last activation).
        x: normalised images (N, C, H, W).
        chunk: images per forward pass.

    Returns:
        ``(block names, ratios)`` with ratios (N, blocks) in float64; ``x`` is the block's input, ``F(x)``
        its residual branch's output before the addition (after attention where there is one).
    """
    if x.dim() != 4 or len(x) == 0:
        raise ReslabError(f"x must be a non-empty (N, C, H, W) batch, got {tuple(x.shape)}")
    blocks = require_blocks(model, type(model).__name__, shortcuts=False)
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def pre(i: int) -> Callable:
        def fn(_m: nn.Module, inp: tuple) -> None:
            inputs[i] = inp[0].flatten(1).double().norm(dim=1)
        return fn

    def post(i: int) -> Callable:
        def fn(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
            outputs[i] = out.flatten(1).double().norm(dim=1)  # before the in-place addition
        return fn

    handles = []
    for i, (_, b) in enumerate(blocks):
        handles.append(b.register_forward_pre_hook(pre(i)))
        handles.append(branch_output(b).register_forward_hook(post(i)))
    was_training = model.training
    model.eval()
    rows = []
    try:
        for s in range(0, len(x), chunk):
            model(x[s:s + chunk])
            rows.append(torch.stack([outputs[i] / inputs[i].clamp_min(1e-300) for i in range(len(blocks))], 1))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return [n for n, _ in blocks], torch.cat(rows)
