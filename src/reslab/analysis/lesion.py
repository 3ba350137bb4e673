"""Lesion studies (Veit et al. 2016, Sec. 4, Figs. 3 and 5): the test error of a trained net after
deleting residual blocks at test time.

Deleting a block zeroes its residual branch so only the shortcut remains (``y = x`` for an
identity shortcut, the block's ``y = relu(x)`` after a post-activation addition, whose input is
already non-negative). A residual net is an ensemble of paths, so deleting one block removes
half of them and the error rises smoothly; in a plain net, whose only path runs through every
block, deleting a block cuts the chain and the net falls to chance.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ReslabError
from .structure import require_blocks, zero_branches

__all__ = ["error_rate", "lesion_errors", "random_lesion_errors"]


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 250) -> float:
    """Top-1 error (%) of ``model`` in evaluation mode on normalised images ``x`` with labels ``y``."""
    was_training = model.training
    model.eval()
    try:
        wrong = sum(int((model(x[s:s + chunk]).argmax(1) != y[s:s + chunk]).sum()) for s in range(0, len(x), chunk))
    finally:
        model.train(was_training)
    return 100.0 * wrong / len(x)


def lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, deleted: Sequence[Sequence[int]]) -> list[float]:
    """The test error (%) with each set of blocks deleted (block indices in run order; an empty set
    deletes nothing)."""
    blocks = [b for _, b in require_blocks(model, type(model).__name__, shortcuts=False)]
    out = []
    for idx in deleted:
        bad = [i for i in idx if not 0 <= i < len(blocks)]
        if bad:
            raise ReslabError(f"block indices must be in 0..{len(blocks) - 1}, got {bad}")
        with zero_branches([blocks[i] for i in idx]):
            out.append(error_rate(model, x, y))
    return out


def random_lesion_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int], *,
                         samples: int = 5, seed: int = 0) -> dict[int, list[float]]:
    """For each ``k``, the test errors (%) after deleting ``samples`` random sets of ``k`` blocks."""
    n = len(require_blocks(model, type(model).__name__, shortcuts=False))
    rng = random.Random(seed)
    sets = {k: [rng.sample(range(n), k) for _ in range(samples)] for k in ks if 0 <= k <= n}
    return {k: lesion_errors(model, x, y, s) for k, s in sets.items()}
