"""The classic plain CNNs before residual learning: LeNet-5, AlexNet, ZFNet and VGG.

Three generic modules over three specs; named networks are one line each. Every network is
``stem -> stages -> head``, where a stage ends in its pooling layer and the head is the papers'
stack of fully connected layers (``head.mlp.fc6``, ``fc7``, ...) followed by the classifier
``head.fc``. The torchvision variants (``alexnet_tv``, ``vgg*``) load torchvision state dicts
with :func:`reslab.load_torchvision_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from .base import Backbone, FeatureInfo, SpecBuilder
from .registry import register_model
from .weights import register_torchvision_converter

__all__ = [
    "LocalResponseNorm", "ScaledTanh", "Subsampling", "PartialConv2d", "FCHead",
    "LeNetSpec", "LeNet5", "AlexNetSpec", "AlexNet", "VGGSpec", "VGG", "LENET5_C3_TABLE", "VGG_CONFIGS",
]

LECUN1998 = "LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition"
KRIZHEVSKY2012 = "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks"
ZEILER2013 = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"
SIMONYAN2014 = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"
TORCHVISION = "torchvision's single-tower AlexNet (Krizhevsky 2014, One weird trick for parallelizing CNNs)"


# ---------------------------------------------------------------------------------------------
# Layers the papers define.

class LocalResponseNorm(nn.Module):
    """Local response normalisation as Krizhevsky et al. 2012 (Sec. 3.3) define it:

    ``b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta``, the sum clipped to the
    existing channels. ``torch.nn.LocalResponseNorm`` divides ``alpha`` by ``n``; here ``alpha``
    multiplies the plain sum, so the paper's constants are used as printed.

    Args:
        size: ``n``, the number of adjacent channels summed (odd, centred on channel ``i``).
        alpha: the paper's ``alpha`` (1e-4).
        beta: the paper's ``beta`` (0.75).
        k: the paper's ``k`` (2).
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ReslabError(f"LRN size must be a positive odd integer (a window centred on each channel), got {size!r}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.size, alpha=self.alpha * self.size, beta=self.beta, k=self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class ScaledTanh(nn.Module):
    """LeCun et al. 1998 Appendix A: ``f(a) = A tanh(S a)`` with ``A = 1.7159``, ``S = 2/3``,
    chosen so that ``f(1) = 1`` and ``f(-1) = -1``."""

    def __init__(self, amplitude: float = 1.7159, slope: float = 2.0 / 3.0) -> None:
        super().__init__()
        self.amplitude, self.slope = amplitude, slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.tanh(self.slope * x)


class Subsampling(nn.Module):
    """LeNet-5's S-layers: each unit sums a non-overlapping 2x2 window of its map, multiplies it by
    the map's trainable coefficient and adds the map's trainable bias (2 parameters per map).

    The coefficient starts at ``1/4``, so the layer starts as average pooling.
    """

    def __init__(self, channels: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.full((channels,), 1.0 / kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(channels))

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = F.avg_pool2d(x, self.kernel_size) * self.kernel_size**2
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


# LeNet-5 Table I: the input maps of S2 that each of C3's 16 maps sees. Maps 0-5 take three
# contiguous maps, 6-11 four contiguous, 12-14 four non-contiguous, 15 all six.
LENET5_C3_TABLE: tuple[tuple[int, ...], ...] = (
    *(tuple(sorted((j + d) % 6 for d in range(3))) for j in range(6)),
    *(tuple(sorted((j + d) % 6 for d in range(4))) for j in range(6)),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class PartialConv2d(nn.Module):
    """A convolution in which output map ``j`` sees only the input maps ``table[j]``.

    ``weight`` holds one kernel per connection of the table, so the trainable parameters are
    exactly the table's (LeNet-5's C3: 60 kernels of 5x5 plus 16 biases = 1,516). The forward
    pass scatters them into a dense kernel with zeros elsewhere: on CPU that ran 14x (1 thread)
    and 3.7x (2 threads) faster than one grouped convolution per fan-in (forward + backward of
    LeNet-5's C3, batch 32), at the price of multiply-adds counted for every input-output pair
    (C3: 240,000 instead of the table's 150,000).

    Args:
        in_chs: number of input maps.
        table: for each output map, the indices of the input maps it is connected to.
        kernel_size: square kernel size.
    """

    def __init__(self, in_chs: int, table: Sequence[Sequence[int]], kernel_size: int) -> None:
        super().__init__()
        table = tuple(tuple(int(i) for i in row) for row in table)
        bad = [row for row in table if not row or len(set(row)) != len(row) or not all(0 <= i < in_chs for i in row)]
        if bad:
            raise ReslabError(f"connection table rows must be non-empty, distinct indices below {in_chs}; got {bad[0]}")
        self.in_chs, self.out_chs, self.kernel_size, self.table = in_chs, len(table), kernel_size, table
        # A tuple, not a buffer: it survives meta-device construction and is not a state-dict entry.
        self.index = tuple(j * in_chs + i for j, row in enumerate(table) for i in row)
        self.weight = nn.Parameter(torch.empty(len(self.index), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_chs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with each output map's own fan-in, as ``nn.Conv2d``."""
        k2 = self.kernel_size**2
        weight_bound = torch.tensor([(len(row) * k2) ** -0.5 for row in self.table for _ in row])
        bias_bound = torch.tensor([(len(row) * k2) ** -0.5 for row in self.table])
        with torch.no_grad():
            self.weight.uniform_(-1.0, 1.0).mul_(weight_bound.to(self.weight.device).view(-1, 1, 1))
            self.bias.uniform_(-1.0, 1.0).mul_(bias_bound.to(self.bias.device))

    def dense_weight(self) -> torch.Tensor:
        """The ``(out, in, k, k)`` kernel with zeros where the table has no connection."""
        k = self.kernel_size
        index = torch.as_tensor(self.index, device=self.weight.device)
        dense = self.weight.new_zeros(self.out_chs * self.in_chs, k, k).index_copy(0, index, self.weight)
        return dense.view(self.out_chs, self.in_chs, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, kernel_size={self.kernel_size}, connections={len(self.index)}"


class FCHead(nn.Module):
    """The papers' classifier: adaptive average pooling to ``pool_size``, flatten, fully connected
    hidden layers (``mlp.fc6``, ``mlp.fc7``, ..., named as in the original Caffe models), then the
    classifier ``fc``.

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


def _fc_head(features_only: bool, in_chs: int, **kwargs: Any) -> nn.Module:
    # A backbone (U-Net encoder, detector) never uses the ~100M parameters of these heads.
    return nn.Identity() if features_only else FCHead(in_chs, **kwargs)


def _check_common(num_classes: int, in_chans: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ReslabError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ReslabError(f"in_chans must be a positive integer, got {in_chans!r}")


def _check(checks: Sequence[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ReslabError(message)


def _positive_ints(values: Sequence[int]) -> bool:
    return len(values) > 0 and all(isinstance(v, int) and v >= 1 for v in values)


def _init_relu_net(model: nn.Module) -> None:
    # torchvision's VGG scheme. The papers' N(0, 0.01) convolutions train deep plain stacks badly:
    # Simonyan & Zisserman had to initialise their deeper nets from the trained 11-layer one.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# LeNet-5

_LENET_ACTS = {"scaled_tanh": ScaledTanh, "tanh": nn.Tanh, "relu": lambda: nn.ReLU(inplace=True)}


@dataclass(frozen=True)
class LeNetSpec:
    """LeNet-5 (LeCun et al. 1998, Sec. II.B) and its common modern variant.

    The paper's network is ``c3_table=True, pool="subsample", act="scaled_tanh"``; the variant
    most code calls LeNet-5 is ``c3_table=False, pool="max", act="relu"``.

    Args:
        widths: maps of C1, C3 and C5 (6, 16, 120).
        hidden: units of F6 (84).
        kernel_size: side of the C-layer kernels (5, no padding).
        c3_table: connect C3 to S2 by the paper's Table I (60 of the 96 map pairs); ``False``
            connects every pair.
        pool: ``"subsample"``: the paper's S-layers (2x2 sum times a trainable coefficient plus a
            trainable bias per map, then the activation); ``"max"`` or ``"avg"``: plain 2x2
            pooling with no parameters.
        act: ``"scaled_tanh"`` (1.7159 tanh(2a/3), the paper's), ``"tanh"`` or ``"relu"``.
    """

    widths: tuple[int, int, int] = (6, 16, 120)
    hidden: int = 84
    kernel_size: int = 5
    c3_table: bool = True
    pool: Literal["subsample", "max", "avg"] = "subsample"
    act: Literal["scaled_tanh", "tanh", "relu"] = "scaled_tanh"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        _check([
            (len(self.widths) == 3 and _positive_ints(self.widths), f"widths must be 3 positive integers (C1, C3, C5), got {self.widths}"),
            (isinstance(self.hidden, int) and self.hidden >= 1, f"hidden must be a positive integer, got {self.hidden!r}"),
            (isinstance(self.kernel_size, int) and self.kernel_size >= 1, f"kernel_size must be a positive integer, got {self.kernel_size!r}"),
            (self.pool in ("subsample", "max", "avg"), f"pool must be 'subsample', 'max' or 'avg', got {self.pool!r}"),
            (self.act in _LENET_ACTS, f"act must be one of {', '.join(map(repr, _LENET_ACTS))}, got {self.act!r}"),
            (not self.c3_table or self.widths[:2] == (6, 16),
             f"the Table I connections of C3 need widths (6, 16, ...), got {self.widths}; pass c3_table=False for other widths"),
        ])


class LeNet5(Backbone):
    """LeNet-5: C1 - S2 - C3 - S4 - C5 - F6 - output, on 32x32 single-channel images.

    The paper's output layer is 10 Euclidean RBF units over F6 (Sec. II.B, Eq. 7), trained with
    its own MAP criterion; here it is a linear classifier (``head.fc``), so LeNet-5 trains with
    cross-entropy like every other model. Every other layer is the paper's, F6 is
    ``head.mlp.fc6``. The head's global average pooling is the identity on a 32x32 input (C5 is
    1x1) and lets larger inputs through. Weights use PyTorch's default fan-in scaled uniform
    initialisation rather than the paper's ``U(-2.4/F, 2.4/F)``.

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: ``forward`` returns F6).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature maps of ``feature_info`` instead of logits.
        out_indices: which of those maps (default: all).
    """

    def __init__(self, spec: LeNetSpec, *, num_classes: int = 10, in_chans: int = 1,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_common(num_classes, in_chans)
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        act = _LENET_ACTS[spec.act]
        c1, c3, c5 = spec.widths
        k = spec.kernel_size

        def pool(name: str, chs: int) -> OrderedDict[str, nn.Module]:
            if spec.pool == "subsample":  # the paper squashes the S-layers' output too
                return OrderedDict([(name, Subsampling(chs)), (f"act{name[1:]}", act())])
            return OrderedDict([(name, nn.MaxPool2d(2) if spec.pool == "max" else nn.AvgPool2d(2))])

        conv3 = PartialConv2d(c1, LENET5_C3_TABLE, k) if spec.c3_table else nn.Conv2d(c1, c3, k)
        self.stem = nn.Sequential(OrderedDict([("c1", nn.Conv2d(in_chans, c1, k)), ("act1", act()), *pool("s2", c1).items()]))
        self.stages = nn.Sequential(
            nn.Sequential(OrderedDict([("c3", conv3), ("act3", act()), *pool("s4", c3).items()])),
            nn.Sequential(OrderedDict([("c5", nn.Conv2d(c3, c5, k)), ("act5", act())])),
        )
        self.final = nn.Identity()
        self.feature_info = [FeatureInfo(c1, 2, "stem"), FeatureInfo(c3, 4, "stages.0"), FeatureInfo(c5, 4, "stages.1")]
        self.head = FCHead(c5, pool_size=1, hidden=(spec.hidden,), num_classes=num_classes, act=act)
        self.num_features = spec.hidden
        self._finish_init(features_only, out_indices)


register_model(SpecBuilder(LeNet5, LeNetSpec(), num_classes=10), name="lenet5", family="lenet",
               paper=LECUN1998, input_size=(1, 32, 32))


# ---------------------------------------------------------------------------------------------
# AlexNet and ZFNet

@dataclass(frozen=True)
class AlexNetSpec:
    """An AlexNet-style network: convolutions with ReLU, LRN and overlapping max-pooling at given
    layers, then fully connected layers with dropout. Per-layer fields are tuples indexed by
    conv layer (conv1 first); a stage ends at each pooled layer.

    Args:
        widths: output channels of each convolution.
        kernel_sizes: kernel side of each convolution.
        strides: stride of each convolution.
        paddings: zero padding of each convolution.
        groups: groups of each convolution; AlexNet's two-GPU split is ``groups=2`` on the
            layers whose kernels see only their own GPU's maps (conv2, conv4, conv5).
        pool_after: conv layers (0-based) followed by 3x3 stride-2 max-pooling; the last layer
            must be one of them.
        lrn_after: conv layers (0-based) followed by local response normalisation.
        lrn_position: ``"before_pool"`` (AlexNet: ReLU, LRN, pool) or ``"after_pool"`` (ZFNet:
            ReLU, pool, normalise).
        lrn_size: ``n`` of :class:`LocalResponseNorm`.
        lrn_alpha: ``alpha`` of :class:`LocalResponseNorm` (multiplies the plain sum).
        lrn_beta: ``beta`` of :class:`LocalResponseNorm`.
        lrn_k: ``k`` of :class:`LocalResponseNorm`.
        pool_ceil: round pooled sizes up (Caffe's convention; gives ZFNet's 55 and 13).
        pool_size: side of the map fed to the first fully connected layer (adaptive average
            pooling, the identity at the native input size).
        hidden: widths of the hidden fully connected layers.
        drop_rate: dropout on the hidden fully connected layers.
        dropout_before_fc: dropout on each hidden layer's input, as torchvision orders it, rather
            than on its output as the paper does.
    """

    widths: tuple[int, ...] = (96, 256, 384, 384, 256)
    kernel_sizes: tuple[int, ...] = (11, 5, 3, 3, 3)
    strides: tuple[int, ...] = (4, 1, 1, 1, 1)
    paddings: tuple[int, ...] = (0, 2, 1, 1, 1)
    groups: tuple[int, ...] = (1, 2, 1, 2, 2)
    pool_after: tuple[int, ...] = (0, 1, 4)
    lrn_after: tuple[int, ...] = (0, 1)
    lrn_position: Literal["before_pool", "after_pool"] = "before_pool"
    lrn_size: int = 5
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    pool_ceil: bool = False
    pool_size: int = 6
    hidden: tuple[int, ...] = (4096, 4096)
    drop_rate: float = 0.5
    dropout_before_fc: bool = False

    def __post_init__(self) -> None:
        names = ("widths", "kernel_sizes", "strides", "paddings", "groups", "pool_after", "lrn_after", "hidden")
        for name in names:
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n = len(self.widths)
        per_layer = ("kernel_sizes", "strides", "paddings", "groups")
        _check([
            (_positive_ints(self.widths), f"widths must be positive integers, got {self.widths}"),
            *((len(getattr(self, f)) == n, f"{f} {getattr(self, f)} must have one entry per conv layer ({n})") for f in per_layer),
            (_positive_ints(self.kernel_sizes) and _positive_ints(self.strides) and _positive_ints(self.groups),
             "kernel_sizes, strides and groups must be positive integers"),
            (all(isinstance(p, int) and p >= 0 for p in self.paddings), f"paddings must be non-negative integers, got {self.paddings}"),
            (list(self.pool_after) == sorted(set(self.pool_after)) and all(isinstance(i, int) and 0 <= i < n for i in self.pool_after)
             and len(self.pool_after) > 0 and self.pool_after[-1] == n - 1,
             f"pool_after must be increasing conv indices ending with the last one ({n - 1}), got {self.pool_after}"),
            (all(isinstance(i, int) and 0 <= i < n for i in self.lrn_after), f"lrn_after must be conv indices below {n}, got {self.lrn_after}"),
            (self.lrn_position in ("before_pool", "after_pool"), f"lrn_position must be 'before_pool' or 'after_pool', got {self.lrn_position!r}"),
            (isinstance(self.lrn_size, int) and self.lrn_size >= 1 and self.lrn_size % 2 == 1, f"lrn_size must be a positive odd integer, got {self.lrn_size!r}"),
            (isinstance(self.pool_size, int) and self.pool_size >= 1, f"pool_size must be a positive integer, got {self.pool_size!r}"),
            (_positive_ints(self.hidden) or self.hidden == (), f"hidden must be positive integers, got {self.hidden}"),
            (0.0 <= self.drop_rate < 1.0, f"drop_rate must be in [0, 1), got {self.drop_rate}"),
        ])


class AlexNet(Backbone):
    """AlexNet (Krizhevsky et al. 2012) and its relatives from an :class:`AlexNetSpec`.

    The stem is conv1 with its pooling, then one stage per further pooled group of convolutions
    (AlexNet: conv2; conv3-conv5). Modules carry the paper's names: ``stem.conv1``,
    ``stages.0.lrn2``, ``stages.1.pool5``, ``head.mlp.fc6``. ``zfnet`` uses the same
    :class:`LocalResponseNorm` with AlexNet's constants for Zeiler & Fergus's "contrast
    normalisation across feature maps", after the pooling as in their Fig. 3. Weights are
    initialised as torchvision initialises VGG (Kaiming normal convolutions, N(0, 0.01) linear
    layers).

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: ``forward`` returns the last hidden layer).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature maps of ``feature_info`` instead of logits.
        out_indices: which of those maps (default: all).
    """

    def __init__(self, spec: AlexNetSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_common(num_classes, in_chans)
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        groups: list[nn.Sequential] = []
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.feature_info = []
        in_chs, reduction = in_chans, 1
        for i, out in enumerate(spec.widths):
            g, n = spec.groups[i], i + 1
            if in_chs % g or out % g:
                raise ReslabError(f"conv{n} has groups={g}, which must divide its {in_chs} input and {out} output channels")
            layers[f"conv{n}"] = nn.Conv2d(in_chs, out, spec.kernel_sizes[i], spec.strides[i], spec.paddings[i], groups=g)
            layers[f"act{n}"] = nn.ReLU(inplace=True)
            reduction *= spec.strides[i]
            lrn = LocalResponseNorm(spec.lrn_size, spec.lrn_alpha, spec.lrn_beta, spec.lrn_k) if i in spec.lrn_after else None
            if lrn is not None and (spec.lrn_position == "before_pool" or i not in spec.pool_after):
                layers[f"lrn{n}"] = lrn
                lrn = None
            if i in spec.pool_after:
                layers[f"pool{n}"] = nn.MaxPool2d(3, stride=2, ceil_mode=spec.pool_ceil)
                reduction *= 2
                if lrn is not None:
                    layers[f"lrn{n}"] = lrn
                groups.append(nn.Sequential(layers))
                name = "stem" if len(groups) == 1 else f"stages.{len(groups) - 2}"
                self.feature_info.append(FeatureInfo(out, reduction, name))
                layers = OrderedDict()
            in_chs = out
        self.stem = groups[0]
        self.stages = nn.Sequential(*groups[1:])
        self.final = nn.Identity()
        self.head = _fc_head(features_only, in_chs, pool_size=spec.pool_size, hidden=spec.hidden, num_classes=num_classes,
                             drop_rate=spec.drop_rate, dropout_before_fc=spec.dropout_before_fc)
        self.num_features = spec.hidden[-1] if spec.hidden else in_chs * spec.pool_size**2
        _init_relu_net(self)
        self._finish_init(features_only, out_indices)


ALEXNET = AlexNetSpec()
# One tower of 64-192-384-256-256, no LRN, dropout before each hidden layer: torchvision's model.
ALEXNET_TV = AlexNetSpec(widths=(64, 192, 384, 256, 256), paddings=(2, 2, 1, 1, 1), groups=(1, 1, 1, 1, 1),
                         lrn_after=(), dropout_before_fc=True)
# Zeiler & Fergus Fig. 3: 7x7/2 and 5x5/2 first layers on one GPU (dense layers 3-5). Padding 1 on
# conv1 and ceil-mode pooling give the figure's 110, 55, 26, 13 and 6. Their "contrast
# normalisation across feature maps" after layers 1 and 2 is AlexNet's LRN with AlexNet's constants,
# applied after the pooling as in the figure; the filter-norm clipping of their training is not part
# of the architecture.
ZFNET = AlexNetSpec(kernel_sizes=(7, 5, 3, 3, 3), strides=(2, 2, 1, 1, 1), paddings=(1, 0, 1, 1, 1),
                    groups=(1, 1, 1, 1, 1), lrn_position="after_pool", pool_ceil=True)

register_model(SpecBuilder(AlexNet, ALEXNET, num_classes=1000), name="alexnet", family="alexnet",
               paper=KRIZHEVSKY2012, input_size=(3, 227, 227))
register_model(SpecBuilder(AlexNet, ALEXNET_TV, num_classes=1000), name="alexnet_tv", family="alexnet",
               paper=TORCHVISION, input_size=(3, 224, 224))
register_model(SpecBuilder(AlexNet, ZFNET, num_classes=1000), name="zfnet", family="alexnet",
               paper=ZEILER2013, input_size=(3, 224, 224))


# ---------------------------------------------------------------------------------------------
# VGG

# Simonyan & Zisserman Table 1: 3x3 convolutions per block in configurations A, B, D and E.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {"A": (1, 1, 2, 2, 2), "B": (2, 2, 2, 2, 2), "D": (2, 2, 3, 3, 3), "E": (2, 2, 4, 4, 4)}


@dataclass(frozen=True)
class VGGSpec:
    """A VGG network: blocks of 3x3 convolutions (stride 1, padding 1), each block ending in 2x2
    max-pooling, then three fully connected layers.

    Args:
        layers: 3x3 convolutions in each block (Table 1; see :data:`VGG_CONFIGS`).
        widths: channels of each block.
        batch_norm: batch normalisation after each convolution (not in the paper; torchvision's
            ``vgg*_bn``).
        hidden: widths of the hidden fully connected layers.
        drop_rate: dropout after the hidden fully connected layers (the paper's 0.5).
        pool_size: side of the map fed to the first fully connected layer (adaptive average
            pooling as in torchvision, the identity at 224x224).
    """

    layers: tuple[int, ...] = VGG_CONFIGS["D"]
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    batch_norm: bool = False
    hidden: tuple[int, ...] = (4096, 4096)
    drop_rate: float = 0.5
    pool_size: int = 7

    def __post_init__(self) -> None:
        for name in ("layers", "widths", "hidden"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _check([
            (_positive_ints(self.layers), f"layers must be positive integers, got {self.layers}"),
            (_positive_ints(self.widths), f"widths must be positive integers, got {self.widths}"),
            (len(self.layers) == len(self.widths), f"layers {self.layers} and widths {self.widths} must have equal length"),
            (_positive_ints(self.hidden) or self.hidden == (), f"hidden must be positive integers, got {self.hidden}"),
            (0.0 <= self.drop_rate < 1.0, f"drop_rate must be in [0, 1), got {self.drop_rate}"),
            (isinstance(self.pool_size, int) and self.pool_size >= 1, f"pool_size must be a positive integer, got {self.pool_size!r}"),
        ])

    @property
    def depth(self) -> int:
        """Weight layers as the paper counts them: convolutions plus fully connected layers."""
        return sum(self.layers) + len(self.hidden) + 1


class VGG(Backbone):
    """VGG (Simonyan & Zisserman 2014) from a :class:`VGGSpec`.

    The stages are the five conv blocks, each ending in its max-pooling (``stages.i.conv1``,
    ``bn1``, ``act1``, ..., ``pool``). VGG has no stem: the stem is the identity and its
    ``feature_info`` entry is the input image. Weights are initialised as torchvision does.

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: ``forward`` returns the last hidden layer).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature maps of ``feature_info`` instead of logits.
        out_indices: which of those maps (default: all).
    """

    def __init__(self, spec: VGGSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        _check_common(num_classes, in_chans)
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        self.stem = nn.Identity()
        self.feature_info = [FeatureInfo(in_chans, 1, "stem")]
        stages = []
        in_chs = in_chans
        for i, (n, width) in enumerate(zip(spec.layers, spec.widths)):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(1, n + 1):
                layers[f"conv{j}"] = nn.Conv2d(in_chs, width, 3, padding=1)
                if spec.batch_norm:
                    layers[f"bn{j}"] = nn.BatchNorm2d(width)
                layers[f"act{j}"] = nn.ReLU(inplace=True)
                in_chs = width
            layers["pool"] = nn.MaxPool2d(2, stride=2)
            stages.append(nn.Sequential(layers))
            self.feature_info.append(FeatureInfo(width, 2 ** (i + 1), f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Identity()
        self.head = _fc_head(features_only, in_chs, pool_size=spec.pool_size, hidden=spec.hidden,
                             num_classes=num_classes, drop_rate=spec.drop_rate)
        self.num_features = spec.hidden[-1] if spec.hidden else in_chs * spec.pool_size**2
        _init_relu_net(self)
        self._finish_init(features_only, out_indices)


for _depth, _config in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    for _bn in (False, True):
        register_model(SpecBuilder(VGG, VGGSpec(layers=VGG_CONFIGS[_config], batch_norm=_bn), num_classes=1000),
                       name=f"vgg{_depth}{'_bn' if _bn else ''}", family="vgg", paper=SIMONYAN2014,
                       input_size=(3, 224, 224))


# ---------------------------------------------------------------------------------------------
# torchvision state dicts: both torchvision models are ``features`` (a Sequential of conv, BN,
# ReLU, pooling) and ``classifier`` (linear, ReLU, dropout); their layers with weights appear in
# the same order as ours, so the keys are renamed by position.

def _tv_layers(state_dict: Mapping[str, torch.Tensor], prefix: str) -> list[list[tuple[str, str]]]:
    """``(torchvision key, attribute)`` pairs of each layer of ``prefix`` (a Sequential), in order."""
    layers: dict[int, list[tuple[str, str]]] = {}
    for key in state_dict:
        head, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if head == prefix and index.isdigit() and name:
            layers.setdefault(int(index), []).append((key, name))
    return [layers[i] for i in sorted(layers)]


def _own_layers(model: nn.Module, roots: Sequence[str]) -> list[str]:
    return [name for name, m in model.named_modules()
            if name.split(".")[0] in roots and next(m.parameters(recurse=False), None) is not None]


@register_torchvision_converter(AlexNet)
@register_torchvision_converter(VGG)
def _from_tv(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's ``features.N.*`` and ``classifier.N.*`` keys to this model's layers.

    Keys with no counterpart keep their torchvision name, so the strict load names them.
    """
    out = dict(state_dict)
    for tv_prefix, roots in (("features", ("stem", "stages")), ("classifier", ("head",))):
        for tv_layer, own in zip(_tv_layers(state_dict, tv_prefix), _own_layers(model, roots)):
            for key, name in tv_layer:
                out[f"{own}.{name}"] = out.pop(key)
    return out
