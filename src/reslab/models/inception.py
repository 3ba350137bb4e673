"""The Inception family's machinery: layer descriptions, one generic module, one network.

One generic :class:`InceptionModule` runs any list of parallel branches; each network is its
paper's table turned into an :class:`InceptionLayout` (stem layers, one tuple of layers per grid
size, auxiliary heads) by its spec, and one :class:`InceptionNet` builds any layout. The networks
themselves are data over this module: GoogLeNet and BN-Inception in ``googlenet.py``,
Inception-v3 in ``inception_v3.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, cast

import torch
from torch import nn

from .base import AuxOutput, Backbone, ClassifierHead, Condition, FeatureInfo, Spec, is_number
from .layers import LocalResponseNorm
from .weights import StateDict

__all__ = [
    "Conv", "Pool", "LRN", "Split", "Block", "AuxHeadSpec", "InceptionLayout",
    "ConvUnit", "SplitUnit", "InceptionModule", "AuxHead", "InceptionNet", "InceptionSpec", "drop_absent_aux",
]


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
    """Local response normalisation (Krizhevsky et al. 2012), GoogLeNet's stem before batch norm,
    with ``alpha`` divided by ``size`` as in the released Caffe model."""

    size: int = 5
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0


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


class InceptionSpec(Spec):
    """Base of the Inception family's specs: the checks they share."""

    bn_eps: float  # a dataclass field of every subclass (not of this base, which is no dataclass)

    def _common_checks(self, aux: bool = False) -> list[Condition]:
        """``bn_eps`` and ``drop_rate``; with ``aux``, the auxiliary heads' ``aux_logits`` and ``aux_weight``."""
        checks = [
            (is_number(self.bn_eps) and self.bn_eps > 0, f"bn_eps must be > 0, got {self.bn_eps!r}"),
            self._rate("drop_rate"),
        ]
        if aux:
            # a field only of the specs with auxiliary heads (not of BNInceptionSpec), hence not declared here
            aux_weight = getattr(self, "aux_weight")  # noqa: B009
            checks += [
                self._flag("aux_logits"),
                (is_number(aux_weight) and aux_weight >= 0, f"aux_weight must be >= 0, got {aux_weight!r}"),
            ]
        return checks


# ---------------------------------------------------------------------------------------------
# Modules

class ConvUnit(nn.Sequential):
    """Convolution, batch norm (optional) and ReLU; without batch norm the convolution has a bias."""

    def __init__(self, in_chs: int, conv: Conv, batch_norm: bool, bn_eps: float) -> None:
        super().__init__()
        kernel = conv.kernel if isinstance(conv.kernel, tuple) else (conv.kernel, conv.kernel)
        padding = (kernel[0] // 2, kernel[1] // 2) if conv.padding is None else conv.padding
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
        return LocalResponseNorm(layer.size, layer.alpha, layer.beta, k=layer.k, alpha_over_size=True), in_chs, 1
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
            self.fc1: nn.Linear | None = nn.Linear(features, spec.hidden)
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

    The spec is one of the subclass's ``spec_type`` (``GoogLeNetSpec``, ``BNInceptionSpec``,
    ``InceptionV3Spec``); its ``layout()`` gives the network. The options are those of every
    :class:`~reslab.models.base.Backbone`; ``num_classes=0`` and ``features_only`` build no
    auxiliary heads, and the feature maps are the stem's and the last of each grid size.
    """

    # the spec class of a subclass; type[Any], as a plain `type` makes the isinstance() check below narrow spec to object
    spec_type: type[Any] = object

    def __init__(self, spec, *, num_classes: int = 1000, in_chans: int = 3, features_only: bool = False,
                 out_indices: Sequence[int] | None = None) -> None:
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"{type(self).__name__} is built from a {self.spec_type.__name__}, got {type(spec).__name__}")
        super().__init__(spec, num_classes, in_chans)
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
        where: dict[str, tuple[int, int]] = {}  # (stage, layer) of each named layer
        stages = []
        for i, layers in enumerate(layout.stages):
            stage = nn.Sequential()
            for j, (name, layer) in enumerate(layers):
                module, chs, stride = _build_layer(layer, chs, bn, eps)
                stage.add_module(name, module)
                reduction *= stride
                taps[name] = chs
                where[name] = (i, j)
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
        # where each auxiliary head reads: (stage, layer) indices, as torch.jit.script has no layer names
        self._aux_taps = [where[a.after] for a in layout.aux_heads] if use_aux else []
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

    def forward_features_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last feature map and the auxiliary heads' logits, in the order they are tapped."""
        aux: list[torch.Tensor] = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            for j, layer in enumerate(stage):  # type: ignore
                x = layer(x)
                for k, head in enumerate(self.aux_heads):
                    if self._aux_taps[k] == (i, j):
                        aux.append(head(x))
        return self.final(x), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | AuxOutput:
        # Backbone.forward's steps, spelled out: torch.jit.script does not compile super() calls
        if not torch.jit.is_scripting():
            self.check_input(x)
        if self.features_only:
            return self.forward_intermediates(x)
        if self.training and len(self.aux_heads) > 0:
            features, aux = self.forward_features_with_aux(x)
            weights: list[float] = []  # typed: TorchScript's empty lists hold tensors
            for w in self.aux_weights:
                weights.append(w)
            return AuxOutput(self.forward_head(features), aux, weights)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier and the auxiliary heads' classifiers (0: none, and no heads)."""
        super().reset_classifier(num_classes)
        if num_classes == 0:
            self.aux_heads = nn.ModuleList()
            self.aux_weights = ()
            self._aux_taps = []
        for h in self.aux_heads:
            h.fc = nn.Linear(cast(AuxHead, h).in_features, num_classes)


def drop_absent_aux(model: InceptionNet, state_dict: StateDict, prefixes: tuple[str, ...]) -> StateDict:
    """``state_dict`` without the keys under ``prefixes`` (the auxiliary heads) when ``model`` has
    none; torchvision's own pretrained loaders discard the auxiliary heads the same way."""
    if len(model.aux_heads):
        return state_dict
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}
