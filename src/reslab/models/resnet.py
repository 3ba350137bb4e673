"""ResNet as data: one :class:`ResNetSpec`, one :class:`ResNet` module, named depths as one line each.

Covers He et al. 2015 (v1: stride in the first 1x1 of a bottleneck; CIFAR 6n+2 nets; plain
twins), the v1.5 variant (stride in the 3x3, as torchvision), pre-activation ResNet (He et al.
2016, "Identity Mappings in Deep Residual Networks"), Wide ResNet (Zagoruyko & Komodakis 2016),
and attention carried by any of them: squeeze-and-excitation (Hu et al. 2018) or global context
(Cao et al. 2019) in the residual branches, non-local blocks (Wang et al. 2018) between blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from ..errors import ReslabError
from .base import Backbone, ClassifierHead, FeatureInfo, Spec, SpecBuilder, check, is_int, is_number
from .layers import (
    NONLOCAL_MODES,
    ActLayer,
    GlobalContext,
    NonLocal,
    NormLayer,
    SqueezeExcitation,
    conv1x1,
    conv3x3,
    make_act,
    make_shortcut,
    make_stem,
)
from .registry import register_model

__all__ = ["ResNetSpec", "ResNet", "BasicBlock", "Bottleneck"]

HE2015 = "He et al. 2015, Deep Residual Learning for Image Recognition"
HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks"
WRN2016 = "Zagoruyko & Komodakis 2016, Wide Residual Networks"
SENET2018 = "Hu et al. 2018, Squeeze-and-Excitation Networks"
NONLOCAL2018 = "Wang et al. 2018, Non-local Neural Networks"
GCNET2019 = "Cao et al. 2019, GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond"


@dataclass(frozen=True)
class ResNetSpec(Spec):
    """Everything that tells one ResNet from another.

    Args:
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1-3x3-1x1, expansion 4).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50 or ``(n, n, n)`` on CIFAR.
        widths: base width of each stage (the stem has ``widths[0]`` channels).
        stem: ``"cifar"`` (3x3 conv, no pooling) or ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool).
        shortcut: ``"A"`` zero-padding identity, ``"B"`` projection where dimensions change,
            ``"C"`` projection everywhere (paper Sec. 3.3 and Table 3).
        residual: ``False`` builds the plain twin: the same layers with no shortcut at all.
        preact: pre-activation units (BN-ReLU-conv), He et al. 2016.
        stride_in: where a bottleneck downsamples: ``"1x1"`` (paper v1) or ``"3x3"`` (v1.5).
        width_multiplier: multiplies the width of every 3x3 conv (Wide ResNet's k; for
            bottlenecks only the inner width, as in wide_resnet50_2).
        expansion: bottleneck output width / base width.
        zero_init_last: start each residual branch at zero (last BN's gamma, or the last conv in
            pre-activation units), so every block begins as the identity (Goyal et al. 2017).
        block_dropout: dropout between the two convs of a basic block (Wide ResNet).
        attn: attention on each residual branch's output, before the addition with the shortcut:
            ``"se"`` squeeze-and-excitation (SENet Fig. 3), ``"gc"`` global context (GCNet
            Fig. 4d, after the last 1x1 of a bottleneck), or ``None``.
        attn_reduction: the bottleneck ratio ``r`` of the SE / GC transform.
        attn_stages: indices of the stages whose blocks carry ``attn`` (``None``: all stages;
            GCNet's c3-c5 are ``(1, 2, 3)``).
        nonlocal_after: ``(stage, block)`` indices of the residual blocks that a non-local block
            follows; negative indices count from the end, e.g. ``((2, -2),)`` is one block right
            before the last residual block of the third stage (res4).
        nonlocal_mode: the non-local pairwise function: ``"embedded_gaussian"``, ``"gaussian"``,
            ``"dot_product"`` or ``"concatenation"`` (Wang et al. Sec. 3.2).
        nonlocal_subsample: max-pool ``phi`` and ``g`` by 2 (Wang et al. Sec. 3.3).
    """

    block: Literal["basic", "bottleneck"] = "basic"
    layers: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: Literal["cifar", "imagenet"] = "imagenet"
    shortcut: Literal["A", "B", "C"] = "B"
    residual: bool = True
    preact: bool = False
    stride_in: Literal["1x1", "3x3"] = "1x1"
    width_multiplier: float = 1.0
    expansion: int = 4
    zero_init_last: bool = False
    block_dropout: float = 0.0
    attn: Literal["se", "gc"] | None = None
    attn_reduction: int = 16
    attn_stages: tuple[int, ...] | None = None
    nonlocal_after: tuple[tuple[int, int], ...] = ()
    nonlocal_mode: Literal["embedded_gaussian", "gaussian", "dot_product", "concatenation"] = "embedded_gaussian"
    nonlocal_subsample: bool = True

    def __post_init__(self) -> None:
        self._tuples("layers", "widths")
        self._check(
            self._one_of("block", ("basic", "bottleneck")),
            self._one_of("stem", ("cifar", "imagenet")),
            self._one_of("shortcut", ("A", "B", "C")),
            self._one_of("stride_in", ("1x1", "3x3")),
            (len(self.layers) == len(self.widths) and len(self.layers) > 0,
             f"layers {self.layers} and widths {self.widths} must be non-empty and of equal length"),
            self._positive_ints("layers"),
            self._positive_ints("widths"),
            (is_number(self.width_multiplier) and self.width_multiplier > 0, f"width_multiplier must be > 0, got {self.width_multiplier}"),
            self._rate("block_dropout"),
        )
        self._check_attention()

    def _check_attention(self) -> None:
        self._check(
            self._one_of("attn", (None, "se", "gc")),
            self._positive_int("attn_reduction"),
            self._one_of("nonlocal_mode", NONLOCAL_MODES),
            self._flag("nonlocal_subsample"),
        )
        n = len(self.layers)
        if self.attn_stages is not None:
            stages = _as_tuple(self.attn_stages)
            if stages is None or not all(is_int(i) and -n <= i < n for i in stages):
                raise ReslabError(f"attn_stages must be None or stage indices in [0, {n}), got {self.attn_stages!r}")
            object.__setattr__(self, "attn_stages", tuple(sorted({i % n for i in stages})))
        pairs = _as_tuple(self.nonlocal_after)
        resolved = []
        for pair in pairs if pairs is not None else [None]:
            pair = _as_tuple(pair)
            ok = pair is not None and len(pair) == 2 and all(map(is_int, pair)) and -n <= pair[0] < n
            if ok:
                blocks = self.layers[pair[0]]
                ok = -blocks <= pair[1] < blocks
            if not ok:
                raise ReslabError(
                    f"nonlocal_after must be (stage, block) index pairs within layers {self.layers}, "
                    f"got {self.nonlocal_after!r}"
                )
            stage = pair[0] % n
            resolved.append((stage, pair[1] % self.layers[stage]))
        object.__setattr__(self, "nonlocal_after", tuple(sorted(set(resolved))))

    def has_attn(self, stage: int) -> bool:
        """Whether the blocks of ``stage`` carry ``attn``."""
        return self.attn is not None and (self.attn_stages is None or stage in self.attn_stages)

    @property
    def depth(self) -> int:
        """Weighted layers as the paper counts them: convs on the main path plus the classifier."""
        per_block = 2 if self.block == "basic" else 3
        return per_block * sum(self.layers) + 2

    def stage_channels(self, i: int) -> tuple[int, int]:
        """(inner width of the 3x3 convs, output width) of stage ``i``."""
        inner = int(round(self.widths[i] * self.width_multiplier))
        out = inner if self.block == "basic" else self.widths[i] * self.expansion
        return inner, out


def _as_tuple(v: object) -> tuple | None:
    return tuple(v) if isinstance(v, (tuple, list)) else None


def _branch_attention(spec: ResNetSpec, channels: int) -> nn.Module:
    if spec.attn == "se":
        return SqueezeExcitation(channels, spec.attn_reduction)
    return GlobalContext(channels, spec.attn_reduction)


class _ResidualBlock(nn.Module):
    """What :class:`BasicBlock` and :class:`Bottleneck` share: the residual branch built from a list
    of convolutions, each with its norm and activation layers (post-activation: conv-BN-ReLU;
    pre-activation: BN-ReLU-conv), then attention, the shortcut, the addition and an optional
    non-local block.

    The modules are ``conv1``, ``bn1``, ``act1``, ``conv2``, ... in the order they run, so state
    dicts and initialisation follow the papers' layer order.
    """

    # constants for torch.jit.script, which compiles only the branches they take
    __constants__ = ["preact", "_three_convs", "_has_drop"]

    def __init__(self, convs: Sequence[nn.Conv2d], in_chs: int, out_chs: int, stride: int, spec: ResNetSpec,
                 preact_input: bool, *, attn: bool, non_local: bool, drop_before_conv2: bool,
                 norm_layer: NormLayer, act_layer: ActLayer) -> None:
        super().__init__()
        self.preact = spec.preact
        self.n_convs = len(convs)
        if self.n_convs not in (2, 3):
            raise ValueError(f"a residual block has two or three convolutions, got {self.n_convs}")
        self._three_convs = self.n_convs == 3
        self._has_drop = drop_before_conv2
        for i, conv in enumerate(convs, start=1):
            if spec.preact:
                # Pre-activation: BN-ReLU-conv; the first unit after a BN-ReLU stem skips its own.
                skip = i == 1 and not preact_input
                self.add_module(f"bn{i}", nn.Identity() if skip else norm_layer(conv.in_channels))
                self.add_module(f"act{i}", nn.Identity() if skip else make_act(act_layer))
            if i == 2 and drop_before_conv2:
                self.drop = nn.Dropout(spec.block_dropout) if spec.block_dropout > 0 else nn.Identity()
            self.add_module(f"conv{i}", conv)
            if not spec.preact:
                self.add_module(f"bn{i}", norm_layer(conv.out_channels))
                self.add_module(f"act{i}", make_act(act_layer))
        self.attn = _branch_attention(spec, out_chs) if attn else None
        shortcut_norm = None if spec.preact else norm_layer
        self.shortcut = make_shortcut(spec.shortcut, in_chs, out_chs, stride, shortcut_norm) if spec.residual else None
        self.nl = NonLocal(out_chs, mode=spec.nonlocal_mode, subsample=spec.nonlocal_subsample) if non_local else None

    def _layer(self, kind: str, i: int) -> nn.Module:
        return getattr(self, f"{kind}{i}")

    def last_branch_layer(self) -> nn.Module:
        """The layer whose zero weight makes the branch output zero (``zero_init_last``)."""
        return self._layer("conv" if self.preact else "bn", self.n_convs)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch; in a pre-activation unit ``x`` is already normalised (BN-ReLU 1).

        Written out for two or three convolutions: torch.jit.script cannot look layers up by a
        computed name, and compiles only the branches its constants take."""
        if self.preact:
            out = self.act2(self.bn2(self.conv1(x)))
            if self._has_drop:
                out = self.drop(out)
            out = self.conv2(out)
            if self._three_convs:
                out = self.conv3(self.act3(self.bn3(out)))
            return out
        out = self.act1(self.bn1(self.conv1(x)))
        if self._has_drop:
            out = self.drop(out)
        out = self.bn2(self.conv2(out))
        if self._three_convs:
            out = self.bn3(self.conv3(self.act2(out)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            pre = self.act1(self.bn1(x))
            out = self.branch(pre)
            # Projection/zero-pad shortcuts take the pre-activated input (He et al. 2016, Appendix).
            skip = x if isinstance(self.shortcut, nn.Identity) else pre
        else:
            out, skip = self.branch(x), x
        if self.attn is not None:
            out = self.attn(out)
        if self.shortcut is not None:
            # in place, as torchvision adds: one tensor less per block (the branch's last BN, conv or
            # attention output is not needed by its own backward)
            out += self.shortcut(skip)
        if not self.preact:
            out = self.act3(out) if self._three_convs else self.act2(out)
        return out if self.nl is None else self.nl(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (Fig. 2 left), post-activation (2015) or pre-activation (2016); Wide ResNet's
    dropout sits between them."""

    def __init__(self, in_chs: int, inner: int, out_chs: int, stride: int, spec: ResNetSpec,
                 preact_input: bool = True, *, attn: bool = False, non_local: bool = False,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU) -> None:
        convs = [conv3x3(in_chs, inner, stride), conv3x3(inner, out_chs)]
        super().__init__(convs, in_chs, out_chs, stride, spec, preact_input, attn=attn, non_local=non_local,
                         drop_before_conv2=True, norm_layer=norm_layer, act_layer=act_layer)


class Bottleneck(_ResidualBlock):
    """1x1 (reduce) - 3x3 - 1x1 (restore) (Fig. 5 right); the stride sits in the first 1x1
    (``stride_in="1x1"``, paper v1) or in the 3x3 (``"3x3"``, v1.5 / torchvision)."""

    def __init__(self, in_chs: int, inner: int, out_chs: int, stride: int, spec: ResNetSpec,
                 preact_input: bool = True, *, attn: bool = False, non_local: bool = False,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU) -> None:
        s1, s3 = (stride, 1) if spec.stride_in == "1x1" else (1, stride)
        convs = [conv1x1(in_chs, inner, s1), conv3x3(inner, inner, s3), conv1x1(inner, out_chs)]
        super().__init__(convs, in_chs, out_chs, stride, spec, preact_input, attn=attn, non_local=non_local,
                         drop_before_conv2=False, norm_layer=norm_layer, act_layer=act_layer)


class ResNet(Backbone):
    """A residual (or plain) network built from a :class:`ResNetSpec`.

    Besides the options of every :class:`~reslab.models.base.Backbone`:

    Args:
        drop_rate: dropout before the classifier (the paper uses none).
        norm_layer: builds each normalisation layer from its channels (stem, blocks, projection
            shortcuts, the pre-activation net's final BN), e.g. ``lambda c: nn.GroupNorm(32, c)``.
        act_layer: builds each activation (called with ``inplace=True`` where it accepts it).
    """

    def __init__(self, spec: ResNetSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, features_only: bool = False,
                 out_indices: Sequence[int] | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d, act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__(spec, num_classes, in_chans)
        check([(callable(norm_layer), f"norm_layer must be a callable that builds a layer from its channels, got {norm_layer!r}"),
               (callable(act_layer), f"act_layer must be a callable that builds an activation, got {act_layer!r}")])
        layer_kinds = {"norm_layer": norm_layer, "act_layer": act_layer}
        stem_chs = spec.widths[0]

        # a pre-activation net normalises inside its first unit
        self.stem, reduction = make_stem(spec.stem, in_chans, stem_chs, cifar_norm=not spec.preact, **layer_kinds)
        self.feature_info = [FeatureInfo(stem_chs, reduction, "stem")]

        block_cls = BasicBlock if spec.block == "basic" else Bottleneck
        stages = []
        in_chs = stem_chs
        for i, n in enumerate(spec.layers):
            inner, out_chs = spec.stage_channels(i)
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = []
            for j in range(n):
                # An ImageNet pre-activation stem already ends in BN-ReLU (He et al. 2016, Sec. 3.2).
                preact_input = not (spec.preact and spec.stem == "imagenet" and i == 0 and j == 0)
                blocks.append(block_cls(in_chs, inner, out_chs, stride if j == 0 else 1, spec, preact_input,
                                        attn=spec.has_attn(i), non_local=(i, j) in spec.nonlocal_after, **layer_kinds))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(out_chs, reduction, f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        if spec.preact:  # the last unit's output still needs its BN-ReLU before pooling
            self.final = nn.Sequential()
            self.final.add_module("bn", norm_layer(in_chs))
            self.final.add_module("act", make_act(act_layer))
        else:
            self.final = nn.Identity()
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, drop_rate)
        self._init_weights()
        self._finish_init(features_only, out_indices)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015b ("Delving deep"), as the paper says
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.spec.zero_init_last:
            for m in self.modules():
                if isinstance(m, _ResidualBlock):
                    nn.init.zeros_(cast(torch.Tensor, m.last_branch_layer().weight))
        for m in self.modules():  # their own zero-init makes them start as the identity
            if isinstance(m, (NonLocal, GlobalContext)):
                m.reset_parameters()


# ---------------------------------------------------------------------------------------------
# Named architectures: one line each over a spec.

def _cifar(n: int, **kw) -> ResNetSpec:
    """He et al. 2015 Sec. 4.2: 6n+2 layers, widths 16/32/64, option A."""
    return ResNetSpec(**{"block": "basic", "layers": (n, n, n), "widths": (16, 32, 64), "stem": "cifar", "shortcut": "A", **kw})


def _imagenet(block: str, layers: tuple[int, ...], **kw) -> ResNetSpec:
    """He et al. 2015 Table 1: widths 64..512, option B."""
    return ResNetSpec(**{"block": block, "layers": layers, "stem": "imagenet", "shortcut": "B", **kw})


_IMAGENET_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def _register(name: str, spec: ResNetSpec, family: str, paper: str) -> None:
    cifar = spec.stem == "cifar"
    register_model(
        SpecBuilder(ResNet, spec, num_classes=10 if cifar else 1000),
        name=name,
        family=family,
        paper=paper,
        input_size=(3, 32, 32) if cifar else (3, 224, 224),
    )


for _d in (20, 32, 44, 56, 110, 1202):
    _register(f"resnet{_d}", _cifar((_d - 2) // 6), "resnet-cifar", HE2015)
for _d in (20, 32, 44, 56, 110):
    _register(f"plain{_d}", _cifar((_d - 2) // 6, residual=False), "plain-cifar", HE2015)
for _d, (_block, _layers) in _IMAGENET_DEPTHS.items():
    _register(f"resnet{_d}", _imagenet(_block, _layers), "resnet", HE2015)
    _register(f"preact_resnet{_d}", _imagenet(_block, _layers, preact=True), "preact-resnet", HE2016)
for _d in (18, 34):
    _register(f"plain{_d}", _imagenet(*_IMAGENET_DEPTHS[_d], residual=False), "plain", HE2015)
# Pre-activation CIFAR nets (He et al. 2016, Table 2/3): 110 basic; 164 and 1001 bottleneck.
_register("preact_resnet110", _cifar(18, preact=True, shortcut="B"), "preact-resnet-cifar", HE2016)
for _d in (164, 1001):
    _n = (_d - 2) // 9
    _register(f"preact_resnet{_d}", _cifar(_n, block="bottleneck", preact=True, shortcut="B"), "preact-resnet-cifar", HE2016)
# Wide ResNet WRN-d-k (pre-activation basic blocks, (d-4)/6 per stage, widths 16k/32k/64k).
for _d, _k in ((16, 8), (28, 10), (40, 4)):
    _register(f"wrn{_d}_{_k}", _cifar((_d - 4) // 6, preact=True, shortcut="B", width_multiplier=_k), "wide-resnet", WRN2016)
for _d in (50, 101):
    _register(f"wide_resnet{_d}_2", _imagenet(*_IMAGENET_DEPTHS[_d], width_multiplier=2), "wide-resnet", WRN2016)

# Squeeze-and-excitation (Hu et al. 2018, Table 1/2): SE on every residual branch, r = 16. The
# stride sits in the first 1x1 as in SENet's released Caffe models (the reslab default).
for _d in (50, 101, 152):
    _register(f"se_resnet{_d}", _imagenet(*_IMAGENET_DEPTHS[_d], attn="se"), "se-resnet", SENET2018)
for _d in (20, 56):
    _register(f"se_resnet{_d}", _cifar((_d - 2) // 6, attn="se"), "se-resnet-cifar", SENET2018)
# Non-local ResNet-50 (Wang et al. 2018, Sec. 6 on COCO): one embedded-Gaussian block with
# sub-sampling right before the last residual block of res4 (after block 5 of 6 in stage 2).
_register("nl_resnet50", _imagenet(*_IMAGENET_DEPTHS[50], nonlocal_after=((2, 4),)), "nonlocal-resnet", NONLOCAL2018)
# GCNet (Cao et al. 2019): GC (r = 16) after the last 1x1 of every bottleneck in c3-c5. The stride
# sits in the 3x3 as in the authors' released code (mmdetection style="pytorch"), so torchvision
# ResNet-50 weights load into it.
_register("gc_resnet50", _imagenet(*_IMAGENET_DEPTHS[50], attn="gc", attn_stages=(1, 2, 3), stride_in="3x3"),
          "gc-resnet", GCNET2019)
