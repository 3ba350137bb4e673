"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2013) as data: one
:class:`AlexNetSpec`, one :class:`AlexNet` module, named networks one line each.

The stem is conv1 with its pooling, then one stage per further pooled group of convolutions; the
head is the papers' stack of fully connected layers (``head.mlp.fc6``, ``fc7``) followed by the
classifier ``head.fc``. ``alexnet_tv`` loads torchvision state dicts with
:func:`reslab.load_torchvision_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..errors import ReslabError
from .base import Backbone, FeatureInfo, Spec, SpecBuilder, is_int, positive_ints
from .layers import LocalResponseNorm, fc_head, init_relu_net
from .registry import register_model
from .weights import register_torchvision_converter, sequential_from_torchvision

__all__ = ["AlexNetSpec", "AlexNet", "ALEXNET", "ALEXNET_TV", "ZFNET"]

KRIZHEVSKY2012 = "Krizhevsky et al. 2012, ImageNet Classification with Deep Convolutional Neural Networks"
ZEILER2013 = "Zeiler & Fergus 2013, Visualizing and Understanding Convolutional Networks"
TORCHVISION = "torchvision's single-tower AlexNet (Krizhevsky 2014, One weird trick for parallelizing CNNs)"


@dataclass(frozen=True)
class AlexNetSpec(Spec):
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
        self._tuples("widths", "kernel_sizes", "strides", "paddings", "groups", "pool_after", "lrn_after", "hidden")
        n = len(self.widths)
        per_layer = ("kernel_sizes", "strides", "paddings", "groups")
        self._check(
            self._positive_ints("widths"),
            *((len(getattr(self, f)) == n, f"{f} {getattr(self, f)} must have one entry per conv layer ({n})") for f in per_layer),
            (positive_ints(self.kernel_sizes) and positive_ints(self.strides) and positive_ints(self.groups),
             "kernel_sizes, strides and groups must be positive integers"),
            (all(is_int(p) and p >= 0 for p in self.paddings), f"paddings must be non-negative integers, got {self.paddings}"),
            (list(self.pool_after) == sorted(set(self.pool_after)) and all(is_int(i) and 0 <= i < n for i in self.pool_after)
             and len(self.pool_after) > 0 and self.pool_after[-1] == n - 1,
             f"pool_after must be increasing conv indices ending with the last one ({n - 1}), got {self.pool_after}"),
            (all(is_int(i) and 0 <= i < n for i in self.lrn_after), f"lrn_after must be conv indices below {n}, got {self.lrn_after}"),
            self._one_of("lrn_position", ("before_pool", "after_pool")),
            (is_int(self.lrn_size) and self.lrn_size >= 1 and self.lrn_size % 2 == 1, f"lrn_size must be a positive odd integer, got {self.lrn_size!r}"),
            self._positive_int("pool_size"),
            self._positive_ints("hidden", empty=True),
            self._rate("drop_rate"),
        )


class AlexNet(Backbone):
    """AlexNet (Krizhevsky et al. 2012) and its relatives from an :class:`AlexNetSpec`.

    The stem is conv1 with its pooling, then one stage per further pooled group of convolutions
    (AlexNet: conv2; conv3-conv5). Modules carry the paper's names: ``stem.conv1``,
    ``stages.0.lrn2``, ``stages.1.pool5``, ``head.mlp.fc6``. ``zfnet`` uses the same
    :class:`LocalResponseNorm` with AlexNet's constants for Zeiler & Fergus's "contrast
    normalisation across feature maps", after the pooling as in their Fig. 3. Weights are
    initialised as torchvision initialises VGG (Kaiming normal convolutions, N(0, 0.01) linear
    layers).

    The options are those of every :class:`~reslab.models.base.Backbone`; with ``num_classes=0``
    the model returns fc7's output.
    """

    def __init__(self, spec: AlexNetSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__(spec, num_classes, in_chans)
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
        self.head, self.num_features = fc_head(
            in_chs, features_only=features_only, pool_size=spec.pool_size, hidden=spec.hidden, num_classes=num_classes,
            drop_rate=spec.drop_rate, dropout_before_fc=spec.dropout_before_fc)
        init_relu_net(self)
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

# torchvision's AlexNet is ``features`` and ``classifier`` Sequentials whose weighted layers come
# in the same order as ours.
register_torchvision_converter(AlexNet)(sequential_from_torchvision)
