"""Helpers shared by the model tests."""

import torch
from torch import nn


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Random BN running statistics and affine parameters, so a weight mapping that confused two
    BN layers would show in the outputs (defaults 0/1 would hide it)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.25)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
