"""Residual nets as ensembles of paths (Veit et al. 2016, "Residual networks behave like ensembles
of relatively shallow networks", Sec. 3 and Fig. 6).

Unrolled, a net of ``n`` residual blocks has ``2**n`` paths from input to output: each block is
either passed through its residual branch or skipped by its shortcut, so ``C(n, k)`` paths run
through exactly ``k`` branches (a binomial distribution of path lengths, mean ``n / 2``).

The gradient of one path length is measured as Veit et al. do: a batch runs forward through the
whole net; in the backward pass, ``k`` blocks chosen at random pass the gradient through their
branch only and the others through their shortcut only, so the gradient reaching the first
block's input is that of one path of length ``k``. Its norm, averaged over the samples, times
the number of such paths is the gradient that all paths of length ``k`` contribute (Fig. 6b):
most of it comes from paths far shorter than the net.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from .structure import gated_blocks, require_blocks

__all__ = ["path_length_distribution", "path_gradients", "path_gradient_vectors"]


def path_length_distribution(n: int) -> list[float]:
    """``P(k) = C(n, k) / 2**n`` for ``k = 0 .. n``: the share of the ``2**n`` paths through an
    ``n``-block residual net that run through exactly ``k`` residual branches (exact rationals
    rounded once to float)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ReslabError(f"the number of blocks must be a non-negative integer, got {n!r}")
    return [math.comb(n, k) / 2 ** n for k in range(n + 1)]


def path_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, samples: int = 20,
                   lengths: list[int] | None = None, seed: int = 0) -> dict[int, float]:
    """The mean norm of the loss gradient at the first block's input flowing through one path of each
    length ``k`` (Veit et al. Fig. 6a), over ``samples`` random choices of the ``k`` blocks.

    Args:
        model: a residual net (blocks with shortcuts; see :mod:`reslab.analysis.structure`), run in
            its current mode (evaluation mode: fixed batch-norm statistics, as Veit et al.).
        x, y: a batch of normalised images and their labels.
        samples: random block choices per length.
        lengths: the ``k`` measured (default every ``0 .. n``).
        seed: seed of the block choices.

    Returns:
        ``{k: mean gradient norm}``; the gradient is that of the batch's mean cross-entropy, its norm
        over the whole first-block input tensor.
    """
    blocks = [b for _, b in require_blocks(model, type(model).__name__)]
    n = len(blocks)
    if lengths is None:
        lengths = list(range(n + 1))
    bad = [k for k in lengths if not 0 <= k <= n]
    if bad:
        raise ReslabError(f"path lengths must be in 0..{n} for a net of {n} blocks, got {bad}")
    if samples < 1:
        raise ReslabError(f"samples must be at least 1, got {samples}")
    rng = random.Random(seed)
    subsets = [set(rng.sample(range(n), k)) for k in lengths for _ in range(samples)]
    norms = [float(g.double().norm()) for g in path_gradient_vectors(model, x, y, subsets)]
    return {k: sum(norms[i * samples:(i + 1) * samples]) / samples for i, k in enumerate(lengths)}


def path_gradient_vectors(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                          subsets: Iterable[set[int]]) -> Iterator[torch.Tensor]:
    """The loss gradient at the first block's input through one path per subset: the blocks whose
    indices are in the subset pass it through their residual branch, every other block through its
    shortcut. One forward pass (a generator: the hooks stay on the model until it is exhausted or
    closed); the sum over all ``2**n`` subsets is the whole gradient."""
    blocks = [b for _, b in require_blocks(model, type(model).__name__)]
    entry: dict[str, torch.Tensor] = {}

    def keep_input(_m: nn.Module, inp: tuple) -> tuple:
        t = inp[0].detach().requires_grad_(True)
        entry["x"] = t
        return (t,)

    handle = blocks[0].register_forward_pre_hook(keep_input)
    try:
        with gated_blocks(blocks) as gates, torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            for chosen in subsets:
                for i, (g_branch, g_skip) in enumerate(gates):
                    g_branch.value, g_skip.value = (1.0, 0.0) if i in chosen else (0.0, 1.0)
                (grad,) = torch.autograd.grad(loss, entry["x"], retain_graph=True)
                yield grad.detach()
    finally:
        handle.remove()
