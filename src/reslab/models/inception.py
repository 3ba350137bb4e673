"""The Inception family as data: GoogLeNet (Inception v1), BN-Inception and Inception-v3.

One generic :class:`InceptionModule` runs any list of parallel branches; each network is its
paper's table turned into a :class:`InceptionLayout` (stem layers, one tuple of layers per grid
size, auxiliary heads) by its spec, and one :class:`InceptionNet` builds any layout. The specs'
fields are the ``create_model`` options, with the papers' values as defaults; torchvision's
deviations are one option away, so its state dicts load with identical outputs.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Sequence, Union

import torch
from torch import nn

from ..errors import ReslabError
from .base import AuxOutput, Backbone, ClassifierHead, FeatureInfo, SpecBuilder
from .registry import register_model
from .weights import StateDict, register_torchvision_converter, rename_keys

__all__ = [
    "Conv", "Pool", "LRN", "Split", "Block", "AuxHeadSpec", "InceptionLayout",
    "GoogLeNetSpec", "BNInceptionSpec", "InceptionV3Spec", "GOOGLENET_TORCHVISION",
    "ConvUnit", "SplitUnit", "InceptionModule", "AuxHead", "InceptionNet", "GoogLeNet", "BNInception", "InceptionV3",
]

SZEGEDY2014 = "Szegedy et al. 2014, Going Deeper with Convolutions"
IOFFE2015 = "Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift"
SZEGEDY2015 = "Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision"


# ---------------------------------------------------------------------------------------------
# Layer descriptions: what the papers' tables say, as frozen data.

@dataclass(frozen=True)
class Conv:
    """A convolution followed by batch norm (when the network has it) and ReLU.

    Args:
        out: output channels.
        kernel: ``k`` or ``(kh, kw)`` (Inception-v3's factorised 1x7 / 7x1 convolutions).
        stride: the stride.
        padding: ``None`` pads ``kernel // 2`` per side ("same" at stride 1); 0 is "valid".
    """

    out: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] | None = None


@dataclass(frozen=True)
class Pool:
    """A max or average pooling layer (average pooling counts the zero padding, as Caffe and TF)."""

    kind: Literal["max", "avg"]
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    ceil_mode: bool = False


@dataclass(frozen=True)
class LRN:
    """Local response normalisation (Krizhevsky et al. 2012), GoogLeNet's stem before batch norm."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75


@dataclass(frozen=True)
class Split:
    """Parallel convolutions on one input, concatenated: the 1x3 / 3x1 pair at the end of an
    Inception-v3 Figure 7 branch."""

    convs: tuple[Conv, ...]


Branch = tuple[Union[Conv, Pool, Split], ...]


@dataclass(frozen=True)
class Block:
    """An Inception module: parallel branches whose outputs are concatenated along channels.

    A branch that is only a pooling layer passes its input through ("max pool + pass through",
    BN-Inception's grid reductions).
    """

    branches: tuple[Branch, ...]


Layer = tuple[str, Union[Conv, Pool, LRN, Block]]


@dataclass(frozen=True)
class AuxHeadSpec:
    """An auxiliary classifier on an intermediate feature map (used in training only).

    Args:
        after: the layer whose output it reads.
        pool: average pooling ``(kernel, stride)`` before the convolutions; ``None`` pools
            adaptively to ``grid`` x ``grid`` instead (torchvision's GoogLeNet).
        convs: the convolutions.
        grid: their output is adaptively pooled to ``grid`` x ``grid`` and flattened (a no-op at
            the network's native input size).
        hidden: a fully connected ReLU layer of this width before the classifier (0: none).
        drop_rate: dropout after the hidden layer.
    """

    after: str
    pool: tuple[int, int] | None
    convs: tuple[Conv, ...]
    grid: int
    hidden: int = 0
    drop_rate: float = 0.0


@dataclass(frozen=True)
class InceptionLayout:
    """A whole network: ``stem``, then one tuple of named layers per grid size, each starting
    with its grid reduction; the classifier follows global average pooling."""

    stem: tuple[Layer, ...]
    stages: tuple[tuple[Layer, ...], ...]
    aux_heads: tuple[AuxHeadSpec, ...]
    aux_weight: float
    batch_norm: bool
    bn_eps: float
    drop_rate: float


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise ReslabError(message)


def _common_checks(spec) -> list[tuple[bool, str]]:
    return [
        (isinstance(spec.bn_eps, (int, float)) and spec.bn_eps > 0, f"bn_eps must be > 0, got {spec.bn_eps!r}"),
        (isinstance(spec.drop_rate, (int, float)) and 0.0 <= spec.drop_rate < 1.0,
         f"drop_rate must be in [0, 1), got {spec.drop_rate!r}"),
    ]


def _aux_checks(spec) -> list[tuple[bool, str]]:
    return [
        (isinstance(spec.aux_logits, bool), f"aux_logits must be True or False, got {spec.aux_logits!r}"),
        (isinstance(spec.aux_weight, (int, float)) and spec.aux_weight >= 0,
         f"aux_weight must be >= 0, got {spec.aux_weight!r}"),
    ]


# ---------------------------------------------------------------------------------------------
# GoogLeNet (Szegedy et al. 2014)

# Table 1, one row per module: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
GOOGLENET_TABLE1: tuple[tuple[tuple[str, tuple[int, ...]], ...], ...] = (
    (("inception3a", (64, 96, 128, 16, 32, 32)),
     ("inception3b", (128, 128, 192, 32, 96, 64))),
    (("inception4a", (192, 96, 208, 16, 48, 64)),
     ("inception4b", (160, 112, 224, 24, 64, 64)),
     ("inception4c", (128, 128, 256, 24, 64, 64)),
     ("inception4d", (112, 144, 288, 32, 64, 64)),
     ("inception4e", (256, 160, 320, 32, 128, 128))),
    (("inception5a", (256, 160, 320, 32, 128, 128)),
     ("inception5b", (384, 192, 384, 48, 128, 128))),
)

#: The options that make ``googlenet`` torchvision's ``googlenet`` (whose weights then load with
#: identical outputs): batch norm (eps 1e-3) after every convolution, 3x3 kernels in the "5x5"
#: branch (pytorch/vision#906), a 2x2 fourth max-pool, adaptive pooling in the auxiliary heads,
#: and dropout 0.2.
GOOGLENET_TORCHVISION: dict[str, object] = {
    "batch_norm": True, "bn_eps": 1e-3, "kernel_5x5": 3, "pool4_kernel": 2, "aux_pool": "adaptive", "drop_rate": 0.2,
}


@dataclass(frozen=True)
class GoogLeNetSpec:
    """GoogLeNet's options; the defaults are the 2014 paper's (Table 1, Figure 3, Section 5).

    Args:
        batch_norm: batch norm after every convolution (not in the paper; torchvision's and most
            retrained GoogLeNets have it). Without it the stem keeps the paper's two local
            response normalisations and every convolution has a bias.
        bn_eps: the batch norm epsilon.
        kernel_5x5: kernel of the "#5x5" convolutions (paper 5; torchvision 3).
        pool4_kernel: kernel of the stride-2 max-pool before inception (5a) (paper 3; torchvision 2).
        aux_pool: ``"5x5/3"`` (the paper's 5x5 average pool with stride 3) or ``"adaptive"`` (to 4x4).
        aux_logits: build the two auxiliary classifiers on (4a) and (4d).
        aux_weight: their loss weight (paper 0.3).
        drop_rate: dropout before the classifier (paper 0.4; torchvision 0.2).
        aux_drop_rate: dropout after the auxiliary heads' hidden layer (paper 0.7).
    """

    batch_norm: bool = False
    bn_eps: float = 1e-3
    kernel_5x5: int = 5
    pool4_kernel: int = 3
    aux_pool: Literal["5x5/3", "adaptive"] = "5x5/3"
    aux_logits: bool = True
    aux_weight: float = 0.3
    drop_rate: float = 0.4
    aux_drop_rate: float = 0.7

    def __post_init__(self) -> None:
        _check(_common_checks(self) + _aux_checks(self) + [
            (isinstance(self.batch_norm, bool), f"batch_norm must be True or False, got {self.batch_norm!r}"),
            (self.kernel_5x5 in (3, 5), f"kernel_5x5 must be 5 (paper) or 3 (torchvision), got {self.kernel_5x5!r}"),
            (self.pool4_kernel in (2, 3), f"pool4_kernel must be 3 (paper) or 2 (torchvision), got {self.pool4_kernel!r}"),
            (self.aux_pool in ("5x5/3", "adaptive"), f"aux_pool must be '5x5/3' or 'adaptive', got {self.aux_pool!r}"),
            (isinstance(self.aux_drop_rate, (int, float)) and 0.0 <= self.aux_drop_rate < 1.0,
             f"aux_drop_rate must be in [0, 1), got {self.aux_drop_rate!r}"),
        ])

    def block(self, c1: int, c3r: int, c3: int, c5r: int, c5: int, proj: int) -> Block:
        """One row of Table 1 as an Inception module (Figure 2b)."""
        return Block((
            (Conv(c1),),
            (Conv(c3r), Conv(c3, 3)),
            (Conv(c5r), Conv(c5, self.kernel_5x5)),
            (Pool("max", 3, 1, 1, ceil_mode=True), Conv(proj)),
        ))

    def layout(self) -> InceptionLayout:
        lrn = not self.batch_norm  # batch norm replaced LRN (Ioffe & Szegedy 2015, Sec. 4.2.1)
        stem: list[Layer] = [("conv1", Conv(64, 7, 2)), ("pool1", Pool("max", 3, 2, ceil_mode=True))]
        stem += [("norm1", LRN())] if lrn else []
        stem += [("conv2_reduce", Conv(64)), ("conv2", Conv(192, 3))]
        stem += [("norm2", LRN())] if lrn else []
        pools = (Pool("max", 3, 2, ceil_mode=True), Pool("max", 3, 2, ceil_mode=True),
                 Pool("max", self.pool4_kernel, 2, ceil_mode=True))
        stages = tuple(
            ((f"pool{i + 2}", pool),) + tuple((name, self.block(*row)) for name, row in rows)
            for i, (pool, rows) in enumerate(zip(pools, GOOGLENET_TABLE1))
        )
        aux = tuple(
            AuxHeadSpec(after=after, pool=(5, 3) if self.aux_pool == "5x5/3" else None, convs=(Conv(128),),
                        grid=4, hidden=1024, drop_rate=self.aux_drop_rate)
            for after in ("inception4a", "inception4d")
        ) if self.aux_logits else ()
        return InceptionLayout(tuple(stem), stages, aux, self.aux_weight, self.batch_norm, self.bn_eps, self.drop_rate)


# ---------------------------------------------------------------------------------------------
# BN-Inception (Ioffe & Szegedy 2015, Figure 5 and its table)

# One row per module: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, proj
# (proj 0: "pass through"), stride. The table's output-size column says 576 for (4c)/(4d) and
# 1024 for (4e), which its own filter counts contradict (608, 608, 1056); we follow the counts.
BN_INCEPTION_TABLE: tuple[tuple[tuple[str, tuple], ...], ...] = (
    (("inception3a", (64, 64, 64, 64, 96, "avg", 32, 1)),
     ("inception3b", (64, 64, 96, 64, 96, "avg", 64, 1))),
    (("inception3c", (0, 128, 160, 64, 96, "max", 0, 2)),
     ("inception4a", (224, 64, 96, 96, 128, "avg", 128, 1)),
     ("inception4b", (192, 96, 128, 96, 128, "avg", 128, 1)),
     ("inception4c", (160, 128, 160, 128, 160, "avg", 128, 1)),
     ("inception4d", (96, 128, 192, 160, 192, "avg", 128, 1))),
    (("inception4e", (0, 128, 192, 192, 256, "max", 0, 2)),
     ("inception5a", (352, 192, 320, 160, 224, "avg", 128, 1)),
     ("inception5b", (352, 192, 320, 192, 224, "max", 128, 1))),
)


@dataclass(frozen=True)
class BNInceptionSpec:
    """BN-Inception's options: batch norm after every convolution, each 5x5 convolution of
    GoogLeNet replaced by two 3x3 ("double #3x3"), a third 28x28 module, stride-2 modules (3c)
    and (4e) in place of the max-pools between stages, and no dropout (Sec. 4.2.1).

    Args:
        bn_eps: the batch norm epsilon.
        drop_rate: dropout before the classifier.
    """

    bn_eps: float = 1e-5
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        _check(_common_checks(self))

    @staticmethod
    def block(c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int, stride: int) -> Block:
        """One row of the table as an Inception module; a stride-2 row reduces the grid."""
        pool_layer = Pool(pool, 3, 1, 1) if stride == 1 else Pool(pool, 3, stride, ceil_mode=True)
        return Block(
            (((Conv(c1),),) if c1 else ())
            + ((Conv(c3r), Conv(c3, 3, stride)),
               (Conv(d3r), Conv(d3, 3), Conv(d3, 3, stride)),
               (pool_layer, Conv(proj)) if proj else (pool_layer,))
        )

    def layout(self) -> InceptionLayout:
        stem: tuple[Layer, ...] = (
            ("conv1", Conv(64, 7, 2)), ("pool1", Pool("max", 3, 2, ceil_mode=True)),
            ("conv2_reduce", Conv(64)), ("conv2", Conv(192, 3)),
        )
        stages = tuple(tuple((name, self.block(*row)) for name, row in rows) for rows in BN_INCEPTION_TABLE)
        stages = (((("pool2", Pool("max", 3, 2, ceil_mode=True)),) + stages[0]),) + stages[1:]
        return InceptionLayout(stem, stages, (), 0.0, True, self.bn_eps, self.drop_rate)


# ---------------------------------------------------------------------------------------------
# Inception-v3 (Szegedy et al. 2015)

def _v3_figure5(pool_proj: int) -> Block:
    # The released model (TF-slim, torchvision) keeps one 5x5 branch beside the double 3x3.
    return Block(((Conv(64),), (Conv(48), Conv(64, 5)), (Conv(64), Conv(96, 3), Conv(96, 3)),
                  (Pool("avg", 3, 1, 1), Conv(pool_proj))))


def _v3_figure6(c7: int) -> Block:
    """n x n convolutions factorised into 1 x n and n x 1, n = 7, on the 17x17 grid."""
    return Block(((Conv(192),),
                  (Conv(c7), Conv(c7, (1, 7)), Conv(192, (7, 1))),
                  (Conv(c7), Conv(c7, (7, 1)), Conv(c7, (1, 7)), Conv(c7, (7, 1)), Conv(192, (1, 7))),
                  (Pool("avg", 3, 1, 1), Conv(192))))


def _v3_figure7() -> Block:
    """Expanded filter banks on the 8x8 grid: the last 3x3 of a branch split into 1x3 and 3x1."""
    pair = Split((Conv(384, (1, 3)), Conv(384, (3, 1))))
    return Block(((Conv(320),), (Conv(384), pair), (Conv(448), Conv(384, 3), pair),
                  (Pool("avg", 3, 1, 1), Conv(192))))


def _v3_figure10(branches: tuple[Branch, ...]) -> Block:
    """Efficient grid-size reduction: stride-2 convolution branches beside a stride-2 max-pool."""
    return Block(branches + ((Pool("max", 3, 2),),))


@dataclass(frozen=True)
class InceptionV3Spec:
    """Inception-v3's options. The layout is the released model's (TF-slim, torchvision), which
    differs from the paper's Table 1 in the stem (1x1-80 and 3x3-192 convolutions, then a max-pool)
    and keeps a 5x5 branch in the 35x35 modules; 299x299 input, 2048 features.

    Args:
        bn_eps: the batch norm epsilon (TF's 1e-3).
        aux_logits: build the auxiliary classifier on the last 17x17 module.
        aux_weight: its loss weight: 0.4, as torchvision's training reference uses (the paper
            says it acts as a regulariser but gives no weight).
        drop_rate: dropout before the classifier (torchvision's 0.5; TF-slim drops 0.2).
    """

    bn_eps: float = 1e-3
    aux_logits: bool = True
    aux_weight: float = 0.4
    drop_rate: float = 0.5

    def __post_init__(self) -> None:
        _check(_common_checks(self) + _aux_checks(self))

    def layout(self) -> InceptionLayout:
        stem: tuple[Layer, ...] = (
            ("conv1a", Conv(32, 3, 2, 0)), ("conv2a", Conv(32, 3, 1, 0)), ("conv2b", Conv(64, 3)),
            ("pool1", Pool("max", 3, 2)), ("conv3b", Conv(80)), ("conv4a", Conv(192, 3, 1, 0)),
        )
        stages: tuple[tuple[Layer, ...], ...] = (
            (("pool2", Pool("max", 3, 2)),
             ("mixed_5b", _v3_figure5(32)), ("mixed_5c", _v3_figure5(64)), ("mixed_5d", _v3_figure5(64))),
            (("mixed_6a", _v3_figure10(((Conv(384, 3, 2, 0),), (Conv(64), Conv(96, 3), Conv(96, 3, 2, 0))))),
             ("mixed_6b", _v3_figure6(128)), ("mixed_6c", _v3_figure6(160)),
             ("mixed_6d", _v3_figure6(160)), ("mixed_6e", _v3_figure6(192))),
            (("mixed_7a", _v3_figure10(((Conv(192), Conv(320, 3, 2, 0)),
                                        (Conv(192), Conv(192, (1, 7)), Conv(192, (7, 1)), Conv(192, 3, 2, 0))))),
             ("mixed_7b", _v3_figure7()), ("mixed_7c", _v3_figure7())),
        )
        aux = (AuxHeadSpec(after="mixed_6e", pool=(5, 3), convs=(Conv(128), Conv(768, 5, 1, 0)), grid=1),) \
            if self.aux_logits else ()
        return InceptionLayout(stem, stages, aux, self.aux_weight, True, self.bn_eps, self.drop_rate)


# ---------------------------------------------------------------------------------------------
# Modules

class ConvUnit(nn.Sequential):
    """Convolution, batch norm (optional) and ReLU; without batch norm the convolution has a bias."""

    def __init__(self, in_chs: int, conv: Conv, batch_norm: bool, bn_eps: float) -> None:
        super().__init__()
        kernel = conv.kernel if isinstance(conv.kernel, tuple) else (conv.kernel, conv.kernel)
        padding = tuple(k // 2 for k in kernel) if conv.padding is None else conv.padding
        self.add_module("conv", nn.Conv2d(in_chs, conv.out, kernel, conv.stride, padding, bias=not batch_norm))
        if batch_norm:
            self.add_module("bn", nn.BatchNorm2d(conv.out, eps=bn_eps))
        self.add_module("act", nn.ReLU(inplace=True))


class SplitUnit(nn.Module):
    """Runs its convolutions on the same input and concatenates their outputs."""

    def __init__(self, in_chs: int, split: Split, batch_norm: bool, bn_eps: float) -> None:
        super().__init__()
        self.parts = nn.ModuleList(ConvUnit(in_chs, c, batch_norm, bn_eps) for c in split.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], 1)


def _build_layer(layer, in_chs: int, batch_norm: bool, bn_eps: float) -> tuple[nn.Module, int, int]:
    """(module, output channels, stride) of one layer description."""
    if isinstance(layer, Conv):
        return ConvUnit(in_chs, layer, batch_norm, bn_eps), layer.out, layer.stride
    if isinstance(layer, Split):
        strides = {c.stride for c in layer.convs}
        if strides != {1}:
            raise ValueError(f"split convolutions must have stride 1, got {sorted(strides)}")
        return SplitUnit(in_chs, layer, batch_norm, bn_eps), sum(c.out for c in layer.convs), 1
    if isinstance(layer, Pool):
        cls = nn.MaxPool2d if layer.kind == "max" else nn.AvgPool2d
        return cls(layer.kernel, layer.stride, layer.padding, ceil_mode=layer.ceil_mode), in_chs, layer.stride
    if isinstance(layer, LRN):
        return nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, k=1.0), in_chs, 1
    if isinstance(layer, Block):
        module = InceptionModule(in_chs, layer, batch_norm=batch_norm, bn_eps=bn_eps)
        return module, module.out_chs, module.stride
    raise TypeError(f"unknown layer description {layer!r}")


class InceptionModule(nn.Module):
    """The generic Inception module: every branch of a :class:`Block` on the same input, outputs
    concatenated along channels (Szegedy et al. 2014, Figure 2b, and all later variants).

    Args:
        in_chs: input channels.
        block: the branches.
        batch_norm: batch norm after each convolution.
        bn_eps: its epsilon.
    """

    def __init__(self, in_chs: int, block: Block, *, batch_norm: bool = True, bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.branches = nn.ModuleList()
        self.out_chs = 0
        strides = set()
        for branch in block.branches:
            layers, chs, stride = [], in_chs, 1
            for layer in branch:
                module, chs, s = _build_layer(layer, chs, batch_norm, bn_eps)
                layers.append(module)
                stride *= s
            self.branches.append(nn.Sequential(*layers))
            self.out_chs += chs
            strides.add(stride)
        if len(strides) != 1:
            raise ValueError(f"the branches of an Inception module must share one stride, got {sorted(strides)}")
        self.stride = strides.pop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class AuxHead(nn.Module):
    """An auxiliary classifier (GoogLeNet Sec. 5; Inception-v3 Sec. 4): pool, convolutions,
    flatten, an optional hidden ReLU layer with dropout, then the linear classifier ``fc``."""

    def __init__(self, in_chs: int, spec: AuxHeadSpec, num_classes: int, batch_norm: bool, bn_eps: float) -> None:
        super().__init__()
        self.after = spec.after
        self.pool = nn.AvgPool2d(*spec.pool) if spec.pool is not None else nn.AdaptiveAvgPool2d(spec.grid)
        convs, chs = [], in_chs
        for conv in spec.convs:
            convs.append(ConvUnit(chs, conv, batch_norm, bn_eps))
            chs = conv.out
        self.convs = nn.Sequential(*convs)
        self.grid = nn.AdaptiveAvgPool2d(spec.grid)
        features = chs * spec.grid * spec.grid
        if spec.hidden:
            self.fc1 = nn.Linear(features, spec.hidden)
            self.act = nn.ReLU(inplace=True)
            self.drop = nn.Dropout(spec.drop_rate)
            features = spec.hidden
        else:
            self.fc1 = None
        self.in_features = features
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.grid(self.convs(self.pool(x))), 1)
        if self.fc1 is not None:
            x = self.drop(self.act(self.fc1(x)))
        return self.fc(x)


class InceptionNet(Backbone):
    """A network of the Inception family built from its spec's :class:`InceptionLayout`.

    In training mode a model with auxiliary heads returns
    ``AuxOutput(logits, aux_logits, aux_weights)``; in eval mode, plain logits.

    Args:
        spec: the architecture (a :class:`GoogLeNetSpec`, :class:`BNInceptionSpec` or
            :class:`InceptionV3Spec`).
        num_classes: classifier outputs (0: no classifier and no auxiliary heads; ``forward``
            returns pooled features).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature maps of ``feature_info`` (the stem's,
            then the last of each grid size) instead of logits; no auxiliary heads are built.
        out_indices: which of those maps (default: all).
    """

    spec_type: type = object

    def __init__(self, spec, *, num_classes: int = 1000, in_chans: int = 3, features_only: bool = False,
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"{type(self).__name__} is built from a {self.spec_type.__name__}, got {type(spec).__name__}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ReslabError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
            raise ReslabError(f"in_chans must be a positive integer, got {in_chans!r}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        layout = spec.layout()
        bn, eps = layout.batch_norm, layout.bn_eps

        chs, reduction = in_chans, 1
        self.stem = nn.Sequential()
        for name, layer in layout.stem:
            module, chs, stride = _build_layer(layer, chs, bn, eps)
            self.stem.add_module(name, module)
            reduction *= stride
        self.feature_info = [FeatureInfo(chs, reduction, "stem")]
        taps: dict[str, int] = {}
        stages = []
        for i, layers in enumerate(layout.stages):
            stage = nn.Sequential()
            for name, layer in layers:
                module, chs, stride = _build_layer(layer, chs, bn, eps)
                stage.add_module(name, module)
                reduction *= stride
                taps[name] = chs
            stages.append(stage)
            self.feature_info.append(FeatureInfo(chs, reduction, f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Identity()
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, layout.drop_rate)

        use_aux = num_classes > 0 and not features_only
        self.aux_heads = nn.ModuleList(
            AuxHead(taps[a.after], a, num_classes, bn, eps) for a in layout.aux_heads
        ) if use_aux else nn.ModuleList()
        self.aux_weights = tuple(float(layout.aux_weight) for _ in self.aux_heads)
        self._init_weights()
        self._finish_init(features_only, out_indices)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015b: without batch norm, GoogLeNet's 22 layers need a ReLU-aware scale.
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The last feature map and the auxiliary heads' logits, in the order they are tapped."""
        heads = {h.after: h for h in self.aux_heads}
        aux = []
        x = self.stem(x)
        for stage in self.stages:
            for name, layer in stage.named_children():
                x = layer(x)
                if name in heads:
                    aux.append(heads[name](x))
        return self.final(x), tuple(aux)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | AuxOutput:
        if self.features_only or not (self.training and len(self.aux_heads)):
            return super().forward(x)
        self.check_input(x)
        features, aux = self.forward_features_with_aux(x)
        return AuxOutput(self.forward_head(features), aux, self.aux_weights)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier and the auxiliary heads' classifiers (0: none, and no heads)."""
        super().reset_classifier(num_classes)
        if num_classes == 0:
            self.aux_heads = nn.ModuleList()
            self.aux_weights = ()
        for h in self.aux_heads:
            h.fc = nn.Linear(h.in_features, num_classes)


class GoogLeNet(InceptionNet):
    """GoogLeNet (Inception v1), Szegedy et al. 2014, from a :class:`GoogLeNetSpec`."""

    spec_type = GoogLeNetSpec


class BNInception(InceptionNet):
    """BN-Inception (Inception v2 of the batch-norm paper), Ioffe & Szegedy 2015, from a
    :class:`BNInceptionSpec`."""

    spec_type = BNInceptionSpec


class InceptionV3(InceptionNet):
    """Inception-v3, Szegedy et al. 2015, from an :class:`InceptionV3Spec`."""

    spec_type = InceptionV3Spec


register_model(SpecBuilder(GoogLeNet, GoogLeNetSpec()), name="googlenet", family="inception",
               paper=SZEGEDY2014, input_size=(3, 224, 224))
register_model(SpecBuilder(BNInception, BNInceptionSpec()), name="bn_inception", family="inception",
               paper=IOFFE2015, input_size=(3, 224, 224))
register_model(SpecBuilder(InceptionV3, InceptionV3Spec()), name="inception_v3", family="inception",
               paper=SZEGEDY2015, input_size=(3, 299, 299))


# ---------------------------------------------------------------------------------------------
# torchvision state dicts


def _drop_aux_if_absent(model: InceptionNet, state_dict: StateDict, prefixes: tuple[str, ...]) -> StateDict:
    # torchvision's own pretrained loaders discard the auxiliary heads the same way.
    if len(model.aux_heads):
        return state_dict
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}


_GOOGLENET_STAGE = {"3": 0, "4": 1, "5": 2}
_GOOGLENET_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^conv1\."), "stem.conv1."),
    (re.compile(r"^conv2\."), "stem.conv2_reduce."),
    (re.compile(r"^conv3\."), "stem.conv2."),
    (re.compile(r"^inception(\d)([a-e])\."), lambda m: f"stages.{_GOOGLENET_STAGE[m[1]]}.inception{m[1]}{m[2]}."),
    (re.compile(r"\.branch1\."), ".branches.0.0."),
    (re.compile(r"\.branch([234])\.(\d)\."), lambda m: f".branches.{int(m[1]) - 1}.{m[2]}."),
    (re.compile(r"^aux([12])\.conv\."), lambda m: f"aux_heads.{int(m[1]) - 1}.convs.0."),
    (re.compile(r"^aux([12])\.fc1\."), lambda m: f"aux_heads.{int(m[1]) - 1}.fc1."),
    (re.compile(r"^aux([12])\.fc2\."), lambda m: f"aux_heads.{int(m[1]) - 1}.fc."),
    (re.compile(r"^fc\."), "head.fc."),
]


@register_torchvision_converter(GoogLeNet)
def _googlenet_from_tv(model: GoogLeNet, state_dict: StateDict) -> dict[str, torch.Tensor]:
    wrong = {k: getattr(model.spec, k) for k, v in GOOGLENET_TORCHVISION.items()
             if k != "drop_rate" and getattr(model.spec, k) != v}
    if wrong:
        options = ", ".join(f"{k}={v!r}" for k, v in GOOGLENET_TORCHVISION.items())
        raise ReslabError(
            f"torchvision's googlenet differs from this one in {', '.join(sorted(wrong))}: build it with "
            f"create_model('googlenet', {options}) to load its weights"
        )
    return rename_keys(_drop_aux_if_absent(model, state_dict, ("aux1.", "aux2.")), _GOOGLENET_RULES)


# torchvision's InceptionA..E branch attributes -> (branch, layer[, part]) of our modules.
_V3_UNITS = {
    "A": {"branch1x1": "0.0", "branch5x5_1": "1.0", "branch5x5_2": "1.1", "branch3x3dbl_1": "2.0",
          "branch3x3dbl_2": "2.1", "branch3x3dbl_3": "2.2", "branch_pool": "3.1"},
    "B": {"branch3x3": "0.0", "branch3x3dbl_1": "1.0", "branch3x3dbl_2": "1.1", "branch3x3dbl_3": "1.2"},
    "C": {"branch1x1": "0.0", "branch7x7_1": "1.0", "branch7x7_2": "1.1", "branch7x7_3": "1.2",
          **{f"branch7x7dbl_{i + 1}": f"2.{i}" for i in range(5)}, "branch_pool": "3.1"},
    "D": {"branch3x3_1": "0.0", "branch3x3_2": "0.1", **{f"branch7x7x3_{i + 1}": f"1.{i}" for i in range(4)}},
    "E": {"branch1x1": "0.0", "branch3x3_1": "1.0", "branch3x3_2a": "1.1.parts.0", "branch3x3_2b": "1.1.parts.1",
          "branch3x3dbl_1": "2.0", "branch3x3dbl_2": "2.1", "branch3x3dbl_3a": "2.2.parts.0",
          "branch3x3dbl_3b": "2.2.parts.1", "branch_pool": "3.1"},
}
_V3_MIXED = {"5b": "A", "5c": "A", "5d": "A", "6a": "B", "6b": "C", "6c": "C", "6d": "C", "6e": "C",
             "7a": "D", "7b": "E", "7c": "E"}
_V3_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^Conv2d_(\d[ab])_\dx\d\."), lambda m: f"stem.conv{m[1]}."),
    (re.compile(r"^Mixed_(\d)([a-e])\.(\w+)\."),
     lambda m: f"stages.{int(m[1]) - 5}.mixed_{m[1]}{m[2]}.branches.{_V3_UNITS[_V3_MIXED[m[1] + m[2]]][m[3]]}."),
    (re.compile(r"^AuxLogits\.conv([01])\."), lambda m: f"aux_heads.0.convs.{m[1]}."),
    (re.compile(r"^AuxLogits\.fc\."), "aux_heads.0.fc."),
    (re.compile(r"^fc\."), "head.fc."),
]


@register_torchvision_converter(InceptionV3)
def _inception_v3_from_tv(model: InceptionV3, state_dict: StateDict) -> dict[str, torch.Tensor]:
    if not math.isclose(model.spec.bn_eps, 1e-3):
        raise ReslabError(f"torchvision's inception_v3 uses bn_eps=0.001, this model {model.spec.bn_eps}: "
                          "build it with the default bn_eps to load its weights")
    return rename_keys(_drop_aux_if_absent(model, state_dict, ("AuxLogits.",)), _V3_RULES)
