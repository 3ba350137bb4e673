"""Gradient flow: the norm of every weighted layer's weight gradient for one batch of real images.

A training step's view: batch norm uses the batch's statistics (training mode), the loss is the
mean cross-entropy on the images' labels, and the gradient is that of the layer's weight tensor
(its Frobenius norm). The network is left exactly as it was (running statistics restored, no
``.grad`` written). Deep plain nets' early layers get ever smaller gradients as depth grows,
while a residual net's shortcuts carry the gradient to its first layers unchanged in size.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from .structure import restored_bn, weighted_layers

__all__ = ["layer_gradient_norms"]


def layer_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[str, float]]:
    """``(layer name, ||dL/dW||)`` for every conv and fully-connected layer, in the order they run.

    Args:
        model: any classifier.
        x: a batch of normalised images (N, C, H, W), N >= 2 (batch norm needs two).
        y: their labels (N,).

    Returns:
        The Frobenius norm of each layer's weight gradient of the mean cross-entropy, computed with
        batch statistics (training mode); buffers and mode are restored afterwards.
    """
    if x.dim() != 4 or len(x) < 2 or y.shape != (len(x),):
        raise ReslabError(f"need a batch of at least 2 images (N, C, H, W) and N labels, got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}")
    layers = weighted_layers(model, x)
    weights = [cast(torch.Tensor, m.weight) for _, m in layers]
    with restored_bn(model), torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [(name, float(g.double().norm()) if g is not None else 0.0) for (name, _), g in zip(layers, grads)]
