"""Shared building blocks: convolutions, the paper's shortcut options A / B / C, the ResNet-style
stem, the attention blocks a ResNet can carry (squeeze-and-excitation, non-local, global context),
and the classic CNNs' local response normalisation and fully connected heads."""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError

__all__ = [
    "conv3x3", "conv1x1", "make_act", "ZeroPadShortcut", "ProjectionShortcut", "make_stem", "make_shortcut",
    "SqueezeExcitation", "NonLocal", "GlobalContext", "NONLOCAL_MODES",
    "LocalResponseNorm", "FCHead", "fc_head", "init_relu_net",
]

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[..., nn.Module]


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)


@functools.cache
def _takes_inplace(act_layer: ActLayer) -> bool:
    try:
        return "inplace" in inspect.signature(act_layer).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a readable signature
        return False


def make_act(act_layer: ActLayer) -> nn.Module:
    """``act_layer(inplace=True)`` where it takes ``inplace`` (``nn.ReLU``, ``nn.SiLU``), else
    ``act_layer()`` (``nn.GELU``)."""
    return act_layer(inplace=True) if _takes_inplace(act_layer) else act_layer()


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
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra > 0 else x


class ProjectionShortcut(nn.Sequential):
    """Options B/C: a strided 1x1 convolution ``W_s`` (Eq. 2), followed by BN (``norm_layer``) in
    post-activation nets. Pre-activation nets project the already normalised input, so they pass
    ``norm_layer=None`` and no BN follows."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, norm_layer: NormLayer | None = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = conv1x1(in_chs, out_chs, stride)
        if norm_layer is not None:
            self.bn = norm_layer(out_chs)


def make_stem(kind: str, in_chs: int, out_chs: int, cifar_norm: bool = True, *,
              norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU) -> tuple[nn.Sequential, int]:
    """The stem of a ResNet-style net and its reduction (output stride).

    ``imagenet``: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (reduction 4), as in He et al. 2015 and
    DenseNet. ``cifar``: one 3x3 conv (reduction 1), followed by BN and ReLU when ``cifar_norm``
    (a pre-activation net or a DenseNet normalises inside its first unit instead). The modules are
    named ``conv``, ``bn``, ``act``, ``pool``.
    """
    stem = nn.Sequential()
    if kind == "imagenet":
        stem.add_module("conv", nn.Conv2d(in_chs, out_chs, 7, stride=2, padding=3, bias=False))
        stem.add_module("bn", norm_layer(out_chs))
        stem.add_module("act", make_act(act_layer))
        stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
        return stem, 4
    stem.add_module("conv", conv3x3(in_chs, out_chs))
    if cifar_norm:
        stem.add_module("bn", norm_layer(out_chs))
        stem.add_module("act", make_act(act_layer))
    return stem, 1


def make_shortcut(option: str, in_chs: int, out_chs: int, stride: int,
                  norm_layer: NormLayer | None = nn.BatchNorm2d) -> nn.Module:
    """The shortcut for one block: identity, zero-pad (A) or projection (B where needed, C always)."""
    changes = in_chs != out_chs or stride != 1
    if option == "C" or (option == "B" and changes):
        return ProjectionShortcut(in_chs, out_chs, stride, norm_layer)
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

    # torch.jit.script compiles only the branches of the mode's own layers (gaussian has no theta/phi)
    __constants__ = ["_embed", "_concat", "_dot"]

    def __init__(self, channels: int, *, mode: str = "embedded_gaussian", subsample: bool = True) -> None:
        super().__init__()
        if mode not in NONLOCAL_MODES:
            raise ValueError(f"mode must be one of {NONLOCAL_MODES}, got {mode!r}")
        self.mode = mode
        self._embed, self._concat, self._dot = mode != "gaussian", mode == "concatenation", mode == "dot_product"
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
        if self._embed:
            theta, phi = self.theta(x).flatten(2), self.pool(self.phi(x)).flatten(2)
        else:
            theta, phi = x.flatten(2), self.pool(x).flatten(2)
        if self._concat:
            # w_f^T [theta_i, phi_j] = w_theta^T theta_i + w_phi^T phi_j, so no N x N' x 2C' tensor.
            w_theta, w_phi = self.w_f[: self.inner], self.w_f[self.inner :]
            s = torch.einsum("c,bci->bi", w_theta, theta)
            t = torch.einsum("c,bcj->bj", w_phi, phi)
            logits = s[:, :, None] + t[:, None, :]
            return torch.relu(logits) / phi.shape[-1]
        logits = theta.transpose(1, 2) @ phi
        if self._dot:
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
        nn.init.zeros_(cast(torch.Tensor, self.conv_mask.bias))  # a Conv2d built with its default bias=True
        self.transform.conv1.reset_parameters()
        self.transform.norm.reset_parameters()
        # A zero last conv makes the block the identity at insertion (Sec. 4.1).
        nn.init.zeros_(cast(torch.Tensor, self.transform.conv2.weight))
        nn.init.zeros_(cast(torch.Tensor, self.transform.conv2.bias))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global context vector per sample, shape (N, C, 1, 1)."""
        weights = self.conv_mask(x).flatten(2).softmax(dim=-1)  # N, 1, HW
        return (x.flatten(2) @ weights.transpose(1, 2)).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.transform(self.context(x))


# ---------------------------------------------------------------------------------------------
# The classic CNNs' layers: local response normalisation and the fully connected heads.

class LocalResponseNorm(nn.Module):
    """Local response normalisation as Krizhevsky et al. 2012 (Sec. 3.3) define it:

    ``b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta``, the sum clipped to the
    existing channels. ``torch.nn.LocalResponseNorm`` (and Caffe) divide ``alpha`` by ``n``; here
    ``alpha`` multiplies the plain sum, so the paper's constants are used as printed, unless
    ``alpha_over_size`` asks for the Caffe convention (GoogLeNet's released model).

    Args:
        size: ``n``, the number of adjacent channels summed (odd, centred on channel ``i``).
        alpha: the paper's ``alpha`` (1e-4).
        beta: the paper's ``beta`` (0.75).
        k: the paper's ``k`` (2).
        alpha_over_size: divide ``alpha`` by ``n`` (``torch.nn.LocalResponseNorm``'s reading).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0, *,
                 alpha_over_size: bool = False) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ReslabError(f"LRN size must be a positive odd integer (a window centred on each channel), got {size!r}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.alpha_over_size = alpha_over_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha if self.alpha_over_size else self.alpha * self.size
        return F.local_response_norm(x, self.size, alpha=alpha, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        over = ", alpha_over_size=True" if self.alpha_over_size else ""
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}{over}"


class FCHead(nn.Module):
    """The classic CNNs' classifier: adaptive average pooling to ``pool_size``, flatten, fully
    connected hidden layers (``mlp.fc6``, ``mlp.fc7``, ..., named as in the original Caffe models),
    then the classifier ``fc``.

    Args:
        in_chs: channels of the last feature map.
        pool_size: side of the pooled map; at the native input size the map already has this
            size and the pooling is the identity.
        hidden: widths of the hidden fully connected layers.
        num_classes: classifier outputs (0: ``fc`` is the identity).
        act: activation module factory applied after each hidden layer.
        drop_rate: dropout probability on the hidden layers (0: none).
        dropout_before_fc: put dropout on each hidden layer's input (torchvision's AlexNet) instead
            of its output (the papers).
    """

    def __init__(self, in_chs: int, *, pool_size: int, hidden: Sequence[int], num_classes: int,
                 act: Callable[[], nn.Module] | None = None, drop_rate: float = 0.0,
                 dropout_before_fc: bool = False) -> None:
        super().__init__()
        act = act or (lambda: nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_chs * pool_size * pool_size
        for i, out in enumerate(hidden, start=6):
            if drop_rate > 0 and dropout_before_fc:
                layers[f"drop{i}"] = nn.Dropout(drop_rate)
            layers[f"fc{i}"] = nn.Linear(width, out)
            layers[f"act{i}"] = act()
            if drop_rate > 0 and not dropout_before_fc:
                layers[f"drop{i}"] = nn.Dropout(drop_rate)
            width = out
        self.mlp = nn.Sequential(layers)
        self.in_features = width
        self.fc: nn.Module = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.mlp(torch.flatten(self.pool(x), 1))
        return x if pre_logits else self.fc(x)


def fc_head_width(in_chs: int, pool_size: int, hidden: Sequence[int]) -> int:
    """Width of an :class:`FCHead`'s pre-logits features: its last hidden layer, or the flattened map."""
    return hidden[-1] if hidden else in_chs * pool_size * pool_size


def fc_head(in_chs: int, *, features_only: bool, **kwargs: Any) -> tuple[nn.Module, int]:
    """An :class:`FCHead` over ``in_chs`` channels and its pre-logits width (``num_features``).

    A backbone (``features_only``: U-Net encoder, detector) gets the identity instead: it never
    uses the ~100M parameters of AlexNet's or VGG's head.
    """
    width = fc_head_width(in_chs, kwargs["pool_size"], kwargs["hidden"])
    return (nn.Identity() if features_only else FCHead(in_chs, **kwargs)), width


def init_relu_net(model: nn.Module) -> None:
    """torchvision's VGG initialisation: Kaiming normal convolutions (fan-out), N(0, 0.01) linear
    layers, zero biases, BN at the identity."""
    # The papers' N(0, 0.01) convolutions train deep plain stacks badly: Simonyan & Zisserman had
    # to initialise their deeper nets from the trained 11-layer one.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(cast(torch.Tensor, m.bias))  # the VGG / AlexNet convolutions all have a bias
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
