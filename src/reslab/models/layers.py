"""Shared building blocks: convolutions and the paper's shortcut options A / B / C."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv3x3", "conv1x1", "ZeroPadShortcut", "ProjectionShortcut", "make_shortcut"]


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A (He et al. 2015, Sec. 3.3): identity with stride-s subsampling and extra zero
    channels for increasing dimensions. Parameter-free."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"option A cannot reduce channels ({in_chs} -> {out_chs})")
        self.extra = out_chs - in_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class ProjectionShortcut(nn.Sequential):
    """Options B/C: a strided 1x1 convolution ``W_s`` (Eq. 2), followed by BN in post-activation
    nets. Pre-activation nets project the already normalised input, so no BN follows."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = conv1x1(in_chs, out_chs, stride)
        if norm:
            self.bn = nn.BatchNorm2d(out_chs)


def make_shortcut(option: str, in_chs: int, out_chs: int, stride: int, norm: bool = True) -> nn.Module:
    """The shortcut for one block: identity, zero-pad (A) or projection (B where needed, C always)."""
    changes = in_chs != out_chs or stride != 1
    if option == "C" or (option == "B" and changes):
        return ProjectionShortcut(in_chs, out_chs, stride, norm=norm)
    if option == "A" and changes:
        return ZeroPadShortcut(in_chs, out_chs, stride)
    return nn.Identity()
