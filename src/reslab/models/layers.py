"""Shared building blocks: convolutions, the paper's shortcut options A / B / C, and the
attention blocks a ResNet can carry (squeeze-and-excitation, non-local, global context)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv3x3", "conv1x1", "ZeroPadShortcut", "ProjectionShortcut", "make_shortcut",
    "SqueezeExcitation", "NonLocal", "GlobalContext", "NONLOCAL_MODES",
]


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


def make_stem(kind: str, in_chs: int, out_chs: int, cifar_norm: bool = True) -> tuple[nn.Sequential, int]:
    """The stem of a ResNet-style net and its reduction (output stride).

    ``imagenet``: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (reduction 4), as in He et al. 2015 and
    DenseNet. ``cifar``: one 3x3 conv (reduction 1), followed by BN and ReLU when ``cifar_norm``
    (a pre-activation net or a DenseNet normalises inside its first unit instead). The modules are
    named ``conv``, ``bn``, ``act``, ``pool``.
    """
    stem = nn.Sequential()
    if kind == "imagenet":
        stem.add_module("conv", nn.Conv2d(in_chs, out_chs, 7, stride=2, padding=3, bias=False))
        stem.add_module("bn", nn.BatchNorm2d(out_chs))
        stem.add_module("act", nn.ReLU(inplace=True))
        stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
        return stem, 4
    stem.add_module("conv", conv3x3(in_chs, out_chs))
    if cifar_norm:
        stem.add_module("bn", nn.BatchNorm2d(out_chs))
        stem.add_module("act", nn.ReLU(inplace=True))
    return stem, 1


def make_shortcut(option: str, in_chs: int, out_chs: int, stride: int, norm: bool = True) -> nn.Module:
    """The shortcut for one block: identity, zero-pad (A) or projection (B where needed, C always)."""
    changes = in_chs != out_chs or stride != 1
    if option == "C" or (option == "B" and changes):
        return ProjectionShortcut(in_chs, out_chs, stride, norm=norm)
    if option == "A" and changes:
        return ZeroPadShortcut(in_chs, out_chs, stride)
    return nn.Identity()


# ---------------------------------------------------------------------------------------------
# Attention blocks that a ResNet spec can place in its residual branches or between blocks.

NONLOCAL_MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018, Fig. 3): global average pool, FC ``C -> C/r``,
    ReLU, FC ``C/r -> C``, sigmoid, and a channel-wise rescaling of the input.

    The FCs are 1x1 convs on the pooled map and keep their biases, as in SENet's released
    models (SE-ResNet-50 then has the paper's 28.09M parameters).

    Args:
        channels: channels of the feature map to recalibrate.
        reduction: the reduction ratio ``r``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class NonLocal(nn.Module):
    """Non-local block (Wang et al. 2018, Eq. 1, 6 and Fig. 2): ``z_i = W_z y_i + x_i`` with
    ``y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j)``.

    ``theta``, ``phi`` and ``g`` are 1x1 convs to half the channels; ``W_z`` is a 1x1 conv back
    to ``channels`` followed by BN whose weight starts at zero, so a freshly inserted block is
    the identity (Sec. 3.3). The pairwise function ``f`` and normaliser ``C(x)`` follow Sec. 3.2:

    * ``"embedded_gaussian"``: ``f = exp(theta_i^T phi_j)``, ``C = sum_j f`` (a softmax);
    * ``"gaussian"``: ``f = exp(x_i^T x_j)`` on the input itself (no theta/phi), ``C = sum_j f``;
    * ``"dot_product"``: ``f = theta_i^T phi_j``, ``C = N`` (positions of ``phi``);
    * ``"concatenation"``: ``f = ReLU(w_f^T [theta_i, phi_j])``, ``C = N``.

    The 1x1 convs have no bias, as the paper's linear embeddings ``W x``.

    Args:
        channels: input (and output) channels.
        mode: the pairwise function, one of ``NONLOCAL_MODES``.
        subsample: max-pool (2x2, stride 2) after ``phi`` and ``g`` (Sec. 3.3), which cuts the
            pairwise computation by 4.
    """

    def __init__(self, channels: int, *, mode: str = "embedded_gaussian", subsample: bool = True) -> None:
        super().__init__()
        if mode not in NONLOCAL_MODES:
            raise ValueError(f"mode must be one of {NONLOCAL_MODES}, got {mode!r}")
        self.mode = mode
        self.inner = max(1, channels // 2)
        if mode != "gaussian":
            self.theta = conv1x1(channels, self.inner)
            self.phi = conv1x1(channels, self.inner)
        self.g = conv1x1(channels, self.inner)
        if mode == "concatenation":
            self.w_f = nn.Parameter(torch.empty(2 * self.inner))
        # ceil_mode keeps odd and 1x1 maps valid (14x14 -> 7x7 as in the paper, 7x7 -> 4x4).
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True) if subsample else nn.Identity()
        self.w_z = conv1x1(self.inner, channels)
        self.bn = nn.BatchNorm2d(channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Gaussian std 0.01 for the embeddings, as the authors' released code; zero BN gamma makes
        # the block start as the identity (Sec. 3.3).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
        if self.mode == "concatenation":
            nn.init.normal_(self.w_f, std=0.01)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def pairwise(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised pairwise weights ``f(x_i, x_j) / C(x)``, shape (N, HW, HW')."""
        if self.mode == "gaussian":
            theta, phi = x.flatten(2), self.pool(x).flatten(2)
        else:
            theta, phi = self.theta(x).flatten(2), self.pool(self.phi(x)).flatten(2)
        if self.mode == "concatenation":
            # w_f^T [theta_i, phi_j] = w_theta^T theta_i + w_phi^T phi_j, so no N x N' x 2C' tensor.
            w_theta, w_phi = self.w_f[: self.inner], self.w_f[self.inner :]
            s = torch.einsum("c,bci->bi", w_theta, theta)
            t = torch.einsum("c,bcj->bj", w_phi, phi)
            logits = s[:, :, None] + t[:, None, :]
            return torch.relu(logits) / phi.shape[-1]
        logits = theta.transpose(1, 2) @ phi
        if self.mode == "dot_product":
            return logits / phi.shape[-1]
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g = self.pool(self.g(x)).flatten(2).transpose(1, 2)
        y = (self.pairwise(x) @ g).transpose(1, 2).reshape(n, self.inner, h, w)
        return x + self.bn(self.w_z(y))


class GlobalContext(nn.Module):
    """Global context block (Cao et al. 2019, Fig. 4d).

    Context modelling: a 1x1 conv ``W_k`` to one map, softmax over positions, and the weighted
    sum of the input (one context vector shared by all positions). Transform: a bottleneck
    1x1 conv ``C -> C/r``, LayerNorm over ``[C/r, 1, 1]``, ReLU, 1x1 conv ``C/r -> C`` whose
    weights start at zero. Fusion: the transformed context is added to every position. The
    convs keep their biases, as in the authors' released code.

    Args:
        channels: input (and output) channels.
        reduction: the bottleneck ratio ``r``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential()
        self.transform.add_module("conv1", nn.Conv2d(channels, hidden, 1))
        self.transform.add_module("norm", nn.LayerNorm([hidden, 1, 1]))
        self.transform.add_module("act", nn.ReLU(inplace=True))
        self.transform.add_module("conv2", nn.Conv2d(hidden, channels, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        self.transform.conv1.reset_parameters()
        self.transform.norm.reset_parameters()
        # A zero last conv makes the block the identity at insertion (Sec. 4.1).
        nn.init.zeros_(self.transform.conv2.weight)
        nn.init.zeros_(self.transform.conv2.bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global context vector per sample, shape (N, C, 1, 1)."""
        weights = self.conv_mask(x).flatten(2).softmax(dim=-1)  # N, 1, HW
        return (x.flatten(2) @ weights.transpose(1, 2)).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.transform(self.context(x))
