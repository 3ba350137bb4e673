"""DenseNet as data: one :class:`DenseNetSpec`, one :class:`DenseNet` module, named variants one
line each (Huang et al. 2017, "Densely Connected Convolutional Networks").

Each layer of a dense block sees the concatenation of the block input and every earlier layer's
``k`` new feature maps (``k`` = growth rate). DenseNet-B puts a 1x1 bottleneck of ``bn_size * k``
channels before each 3x3 conv; DenseNet-C compresses the channels by ``compression`` (theta) in
each transition; DenseNet-BC does both.

Stages and ``feature_info``: stage ``i`` is ``transition i`` (for ``i >= 1``: BN-ReLU-1x1 conv,
2x2 average pooling) followed by ``dense block i+1``, so every stage output is a dense block's full
concatenation, at strides 4, 8, 16, 32 on ImageNet (1, 2, 4 on CIFAR), as timm exposes them.
``final`` is the last BN-ReLU before global pooling.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ReslabError
from .base import Backbone, ClassifierHead, FeatureInfo, Spec, SpecBuilder, is_number, positive_ints
from .layers import conv1x1, conv3x3, make_stem
from .registry import register_model
from .weights import register_torchvision_converter, rename_keys

__all__ = ["DenseNetSpec", "DenseNet", "DenseLayer", "DenseBlock", "Transition"]

HUANG2017 = "Huang et al. 2017, Densely Connected Convolutional Networks"


@dataclass(frozen=True)
class DenseNetSpec(Spec):
    """Everything that tells one DenseNet from another.

    Args:
        growth_rate: ``k``, the feature maps each dense layer adds.
        block_config: dense layers per dense block, e.g. ``(6, 12, 24, 16)`` for DenseNet-121.
        bottleneck: DenseNet-B layers (BN-ReLU-1x1 conv to ``bn_size * k``, then BN-ReLU-3x3 conv);
            ``False`` gives the basic layer (BN-ReLU-3x3 conv).
        compression: theta: each transition keeps ``floor(theta * m)`` of its ``m`` channels
            (0.5 for DenseNet-C/-BC, 1.0 for none).
        stem: ``"cifar"`` (one 3x3 conv) or ``"imagenet"`` (7x7/2 conv, BN-ReLU, 3x3/2 max-pool).
        init_features: channels of the stem conv; ``None`` takes the paper's choice: ``2k`` for
            DenseNet-BC and on ImageNet, 16 for the other CIFAR nets.
        bn_size: bottleneck width in multiples of ``k`` (the paper's 4k).
        drop_rate: dropout after every conv except the stem's (the paper's 0.2 on CIFAR without
            augmentation). torchvision drops only after the 3x3 conv; in eval mode both agree.
        memory_efficient: recompute each layer's concatenation and BN-ReLU-conv1 in the backward
            pass instead of storing them (Pleiss et al. 2017): memory linear in depth, not
            quadratic, for about one more forward pass of compute.
    """

    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    bottleneck: bool = True
    compression: float = 0.5
    stem: Literal["cifar", "imagenet"] = "imagenet"
    init_features: int | None = None
    bn_size: int = 4
    drop_rate: float = 0.0
    memory_efficient: bool = False

    def __post_init__(self) -> None:
        self._tuples("block_config")
        self._check(
            self._positive_int("growth_rate"),
            (positive_ints(self.block_config), f"block_config must be a non-empty tuple of positive integers, got {self.block_config!r}"),
            self._flag("bottleneck"),
            (is_number(self.compression) and 0.0 < self.compression <= 1.0, f"compression must be in (0, 1], got {self.compression!r}"),
            self._one_of("stem", ("cifar", "imagenet")),
            (self.init_features is None or self._positive_int("init_features")[0],
             f"init_features must be a positive integer or None, got {self.init_features!r}"),
            self._positive_int("bn_size"),
            self._rate("drop_rate"),
            self._flag("memory_efficient"),
        )
        chs = self.stem_channels
        for n in self.block_config[:-1]:
            chs = int(self.compression * (chs + n * self.growth_rate))
            if chs < 1:
                raise ReslabError(f"compression {self.compression} leaves a transition with no channels; raise it")

    @property
    def is_bc(self) -> bool:
        return self.bottleneck and self.compression < 1.0

    @property
    def stem_channels(self) -> int:
        if self.init_features is not None:
            return self.init_features
        return 2 * self.growth_rate if self.is_bc or self.stem == "imagenet" else 16

    @property
    def depth(self) -> int:
        """Weighted layers as the paper counts them: stem conv, dense-layer convs, transition
        convs and the classifier (DenseNet-121: 1 + 2 * 58 + 3 + 1)."""
        per_layer = 2 if self.bottleneck else 1
        return 1 + per_layer * sum(self.block_config) + len(self.block_config) - 1 + 1


def _dropout(p: float) -> nn.Module:
    return nn.Dropout(p) if p > 0 else nn.Identity()


class DenseLayer(nn.Module):
    """One composite function H_l: BN-ReLU-Conv (DenseNet-B: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv)
    on the concatenation of all earlier feature maps, returning ``growth_rate`` new ones."""

    __constants__ = ["bottleneck"]  # torch.jit.script compiles conv2 only where there is one

    def __init__(self, in_chs: int, spec: DenseNetSpec) -> None:
        super().__init__()
        k = spec.growth_rate
        self.memory_efficient = spec.memory_efficient
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        if spec.bottleneck:
            self.conv1 = conv1x1(in_chs, spec.bn_size * k)
            self.drop1 = _dropout(spec.drop_rate)
            self.bn2 = nn.BatchNorm2d(spec.bn_size * k)
            self.act2 = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(spec.bn_size * k, k)
            self.drop2 = _dropout(spec.drop_rate)
        else:
            self.conv1 = conv3x3(in_chs, k)
            self.drop1 = _dropout(spec.drop_rate)
        self.bottleneck = spec.bottleneck
        self._recomputing = False

    def _cat_bn_relu_conv1(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        if self._recomputing and self.bn1.training:
            # The first pass already updated the running statistics; updating them again while
            # recomputing would apply the momentum twice (torchvision's memory-efficient DenseNet
            # does). Momentum 0 leaves them as they are; the output uses the same batch statistics.
            bn = self.bn1
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, 0.0, bn.eps)
        else:
            x = self.bn1(x)
        return self.drop1(self.conv1(self.act1(x)))

    @contextlib.contextmanager
    def _recompute(self) -> Iterator[None]:
        self._recomputing = True
        try:
            yield
        finally:
            self._recomputing = False

    @torch.jit.unused
    def _checkpointed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``_cat_bn_relu_conv1`` recomputed in the backward pass instead of stored."""
        return checkpoint(lambda *fs: self._cat_bn_relu_conv1(list(fs)), *features, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), self._recompute()))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if torch.jit.is_scripting():  # TorchScript cannot checkpoint: memory_efficient makes no difference there
            out = self._cat_bn_relu_conv1(features)
        elif self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            out = self._checkpointed(features)
        else:
            out = self._cat_bn_relu_conv1(features)
        if self.bottleneck:
            out = self.drop2(self.conv2(self.act2(self.bn2(out))))
        return out


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; the output is the input concatenated with all their outputs."""

    def __init__(self, num_layers: int, in_chs: int, spec: DenseNetSpec) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_chs + i * spec.growth_rate, spec) for i in range(num_layers))
        self.out_chs = in_chs + num_layers * spec.growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Between dense blocks: BN-ReLU-1x1 conv (compressing to ``out_chs``), 2x2 average pooling."""

    def __init__(self, in_chs: int, out_chs: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chs)
        self.act = nn.ReLU(inplace=True)
        self.conv = conv1x1(in_chs, out_chs)
        self.drop = _dropout(drop_rate)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(Backbone):
    """A densely connected network built from a :class:`DenseNetSpec`.

    The options are those of every :class:`~reslab.models.base.Backbone`.
    """

    def __init__(self, spec: DenseNetSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__(spec, num_classes, in_chans)
        chs = spec.stem_channels

        # the first dense layer normalises its input, so the CIFAR stem is a bare conv
        self.stem, reduction = make_stem(spec.stem, in_chans, chs, cifar_norm=False)
        self.feature_info = [FeatureInfo(chs, reduction, "stem")]

        stages = []
        for i, num_layers in enumerate(spec.block_config):
            stage = nn.Sequential()
            if i > 0:
                out_chs = int(spec.compression * chs)
                stage.add_module("transition", Transition(chs, out_chs, spec.drop_rate))
                chs, reduction = out_chs, reduction * 2
            block = DenseBlock(num_layers, chs, spec)
            stage.add_module("block", block)
            chs = block.out_chs
            stages.append(stage)
            self.feature_info.append(FeatureInfo(chs, reduction, f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential()
        self.final.add_module("bn", nn.BatchNorm2d(chs))
        self.final.add_module("act", nn.ReLU(inplace=True))
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes)
        self._init_weights()
        self._finish_init(features_only, out_indices)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the authors' Torch code inherits fb.resnet.torch's MSR init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)


_TV_RULES = [
    # Old torchvision checkpoints name the dense-layer modules "norm.1", "conv.2", ...
    (re.compile(r"\.(norm|relu|conv)\.([12])\."), r".\1\2."),
    (re.compile(r"^features\.conv0\."), "stem.conv."),
    (re.compile(r"^features\.norm0\."), "stem.bn."),
    (re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.norm([12])\."),
     lambda m: f"stages.{int(m.group(1)) - 1}.block.layers.{int(m.group(2)) - 1}.bn{m.group(3)}."),
    (re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.conv([12])\."),
     lambda m: f"stages.{int(m.group(1)) - 1}.block.layers.{int(m.group(2)) - 1}.conv{m.group(3)}."),
    # torchvision's transition N follows dense block N; here it opens stage N (0-based).
    (re.compile(r"^features\.transition(\d+)\.norm\."), lambda m: f"stages.{int(m.group(1))}.transition.bn."),
    (re.compile(r"^features\.transition(\d+)\.conv\."), lambda m: f"stages.{int(m.group(1))}.transition.conv."),
    (re.compile(r"^features\.norm5\."), "final.bn."),
    (re.compile(r"^classifier\."), "head.fc."),
]


@register_torchvision_converter(DenseNet)
def _from_tv(model: DenseNet, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision DenseNet keys (``features.denseblock1.denselayer1.norm1.weight``, ...)."""
    return rename_keys(state_dict, _TV_RULES)


# ---------------------------------------------------------------------------------------------
# Named architectures: one line each over a spec.

def _cifar_bc(depth: int, k: int) -> DenseNetSpec:
    """Paper Sec. 3 (CIFAR): three dense blocks of (L-4)/6 bottleneck layers, 2k-channel stem."""
    return DenseNetSpec(growth_rate=k, block_config=((depth - 4) // 6,) * 3, stem="cifar")


def _register(name: str, spec: DenseNetSpec) -> None:
    cifar = spec.stem == "cifar"
    register_model(
        SpecBuilder(DenseNet, spec, num_classes=10 if cifar else 1000),
        name=name,
        family="densenet-cifar" if cifar else "densenet",
        paper=HUANG2017,
        input_size=(3, 32, 32) if cifar else (3, 224, 224),
    )


# Paper Table 1 (k = 32); DenseNet-161 (k = 48) is the authors' and torchvision's wider model.
_register("densenet121", DenseNetSpec(block_config=(6, 12, 24, 16)))
_register("densenet161", DenseNetSpec(growth_rate=48, block_config=(6, 12, 36, 24)))
_register("densenet169", DenseNetSpec(block_config=(6, 12, 32, 32)))
_register("densenet201", DenseNetSpec(block_config=(6, 12, 48, 32)))
# Table 1's DenseNet-264 has 265 weighted layers by the count that gives 121, 169 and 201 exactly;
# the name stays the paper's.
_register("densenet264", DenseNetSpec(block_config=(6, 12, 64, 48)))
_register("densenet_bc_100_12", _cifar_bc(100, 12))
_register("densenet_bc_250_24", _cifar_bc(250, 24))
