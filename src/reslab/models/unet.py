"""U-Nets: the paper's network and a U-Net decoder over any reslab classifier.

``unet`` is Ronneberger, Fischer & Brox 2015 ("U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI, arXiv:1505.04597) as Fig. 1 draws it: two unpadded 3x3 convolutions with
ReLU per level, 2x2 max-pooling with stride 2, widths 64-128-256-512-1024, 2x2 up-convolutions that
halve the channels, the centre crop of the contracting path's map concatenated to each up-sampled
map, and a final 1x1 convolution; a 572x572 tile gives a 388x388 map. ``unet_same`` is the same
:class:`UNetSpec` with padded convolutions and batch norm: the output keeps the input size.

``unet_<classifier>`` (``unet_resnet34``, ``unet_densenet121``, ... and, built on demand, ``unet_``
followed by any registered classifier) puts a :class:`BackboneUNet` decoder on the classifier's
feature maps (its ``feature_info``), with segmentation_models_pytorch's ``Unet`` decoder widths.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError, UnknownModelError
from . import densenet, resnet  # noqa: F401  (their names are registered before the U-Nets over them)
from .base import Backbone, SegmentationModel, Spec, SpecBuilder, check, is_int, positive_ints
from .registry import ModelEntry, create_model, get_model_entry, make_entry, register_model, register_resolver
from .weights import convert_torchvision_state_dict, load_state_dict_checked

__all__ = ["UNetSpec", "UNet", "BackboneUNet", "BackboneUNetBuilder", "SMP_DECODER_CHANNELS", "center_crop"]

RONNEBERGER2015 = "Ronneberger et al. 2015, U-Net: Convolutional Networks for Biomedical Image Segmentation"
SMP_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # segmentation_models_pytorch's Unet default


@dataclass(frozen=True)
class UNetSpec(Spec):
    """Everything that tells one U-Net from another.

    Args:
        widths: channels of each level of the contracting path, top to bottom (Fig. 1: 64 to
            1024); there are ``len(widths) - 1`` max-pools and as many up-convolutions.
        padding: ``"valid"`` (the paper: unpadded 3x3 convolutions, the output is a centred part
            of the input) or ``"same"`` (zero padding 1: the output keeps the input size).
        bn: batch norm after every 3x3 convolution (conv-BN-ReLU, the convolutions then without
            bias). Not in the paper.
        drop_rate: dropout on the outputs of the two deepest levels of the contracting path. The
            paper (Sec. 3.1) says "drop-out layers at the end of the contracting path perform
            further implicit data augmentation"; the released Caffe model (``phseg_v5-train``)
            has them after the last ReLU of the 512- and the 1024-channel level (``dropout_d3c``,
            ``dropout_d4c``, ratio 0.5), the first in place, so the 512-channel skip connection
            carries it too; so does this module. 0 disables them.
        upconv_act: a ReLU after each up-convolution, as the released Caffe model has
            (``relu_u3a``, ...); the paper's text has none.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512, 1024)
    padding: Literal["valid", "same"] = "valid"
    bn: bool = False
    drop_rate: float = 0.5
    upconv_act: bool = False

    def __post_init__(self) -> None:
        self._tuples("widths")
        self._check(
            self._positive_ints("widths"),
            (len(self.widths) >= 2, f"widths needs at least two levels, got {self.widths}"),
            self._one_of("padding", ("valid", "same")),
            self._flag("bn"),
            self._rate("drop_rate"),
            self._flag("upconv_act"),
        )

    @property
    def depth(self) -> int:
        """Max-pools (and up-convolutions): 4 in the paper."""
        return len(self.widths) - 1

    def output_side(self, n: int) -> int | None:
        """The output side for an input side ``n``, or ``None`` when ``n`` is illegal: a max-pool
        would see an odd side (its window would drop a row, and the skip crops would no longer be
        centred) or a map would vanish."""
        if self.padding == "same":
            return n if n >= 1 and n % 2 ** self.depth == 0 else None
        for _ in range(self.depth):  # two 3x3 valid convs (-4), then the 2x2 pool
            n -= 4
            if n < 2 or n % 2:
                return None
            n //= 2
        n -= 4  # the bottom level's convs
        for _ in range(self.depth):  # 2x2 up-convolution (x2), two 3x3 valid convs (-4)
            if n < 1:
                return None
            n = 2 * n - 4
        return n if n >= 1 else None

    def legal_sides(self, n: int) -> tuple[int | None, int]:
        """The largest legal side <= ``n`` (``None`` if there is none) and the smallest legal side >= ``n``."""
        step = 2 ** self.depth
        smallest = 1
        while self.output_side(smallest) is None:  # legal sides are smallest + k * step
            smallest += 1
        if n <= smallest:
            return (smallest if n == smallest else None), smallest
        below = smallest + (n - smallest) // step * step
        return below, below if below == n else below + step


def center_crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """The centred ``size`` (H, W) part of ``x`` (N, C, H', W')."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by a ReLU (and, with ``bn``, a batch norm before it):
    ``conv1``, (``bn1``), ``act1``, ``conv2``, (``bn2``), ``act2``."""

    def __init__(self, in_chs: int, out_chs: int, padding: int, bn: bool) -> None:
        super().__init__()
        for i, chs in enumerate((in_chs, out_chs), start=1):
            self.add_module(f"conv{i}", nn.Conv2d(chs, out_chs, 3, padding=padding, bias=not bn))
            if bn:
                self.add_module(f"bn{i}", nn.BatchNorm2d(out_chs))
            self.add_module(f"act{i}", nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """One step of the expansive path: the 2x2 up-convolution (stride 2) halving the channels, the
    concatenation with the centre crop of the contracting path's map, two 3x3 convolutions."""

    def __init__(self, in_chs: int, out_chs: int, padding: int, bn: bool, upconv_act: bool) -> None:
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_chs, out_chs, 2, stride=2)
        self.act = nn.ReLU(inplace=True) if upconv_act else nn.Identity()
        self.convs = ConvBlock(2 * out_chs, out_chs, padding, bn)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.act(self.upconv(x))
        # The up-sampled map first, then the cropped skip, in the Caffe model's concat order.
        return self.convs(torch.cat([x, center_crop(skip, [x.shape[-2], x.shape[-1]])], dim=1))


class UNet(SegmentationModel):
    """The U-Net of Ronneberger et al. 2015 from a :class:`UNetSpec` (``unet``: the paper's valid
    network; ``unet_same``: padded convolutions with batch norm).

    Modules: ``down.0`` ... ``down.4`` (the levels of the contracting path, top first), ``pool``,
    ``drop``, ``up.0`` ... ``up.3`` (the expansive path, bottom first), ``head`` (the 1x1 conv).

    Parameters of ``unet`` (one input channel, two classes): 31,030,658, about 31.0M, counted layer
    by layer from the paper's Fig. 1 (conv ``k*k*c_in*c_out + c_out``; the paper states no total;
    tests/models/test_unet.py derives it from the figure).

    Sizes (valid): a side ``n`` is legal when every max-pool sees an even side: ``n = 16k + 188``
    for ``k >= 0``, giving ``16k + 4`` (188 -> 4, 572 -> 388), a margin of 92 pixels on each side.
    With ``padding="same"`` the sides must be multiples of 16 and the output keeps the input size.

    Initialisation (paper Sec. 3): weights from a Gaussian with standard deviation ``sqrt(2/N)``,
    N "the number of incoming nodes of one neuron", e.g. ``9 * 64`` for a 3x3 conv on 64 channels:
    ``kaiming_normal_(mode="fan_in")`` (fan-in ``k*k*c_in`` of ``nn.Conv2d``). The 2x2
    up-convolutions follow the released Caffe model, whose layers use Caffe's ``msra`` filler:
    N = the weight blob's ``count / num``, for a Deconvolution blob ``(c_in, c_out, k, k)`` that is
    ``k*k*c_out``, which is what ``fan_in`` gives for ``nn.ConvTranspose2d`` (the paper's text
    does not say). Biases start at 0.

    Args:
        spec: the architecture.
        num_classes: output channels (the paper: 2, cell and background / border).
        in_chans: input channels (the paper: 1, grey-scale microscopy).
    """

    def __init__(self, spec: UNetSpec, *, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(num_classes, in_chans)
        self.spec = spec
        pad = 1 if spec.padding == "same" else 0
        chs = [in_chans, *spec.widths]
        self.down = nn.ModuleList(ConvBlock(chs[i], chs[i + 1], pad, spec.bn) for i in range(len(spec.widths)))
        self.pool = nn.MaxPool2d(2, stride=2)
        self.drop = nn.Dropout(spec.drop_rate) if spec.drop_rate > 0 else nn.Identity()
        widths = spec.widths
        self.up = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], pad, spec.bn, spec.upconv_act) for i in reversed(range(spec.depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self._depth = spec.depth  # for forward: torch.jit.script does not see the spec
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def output_margin(self, h: int, w: int) -> tuple[int, int]:
        self.check_input_size(h, w)
        out_h, out_w = self.spec.output_side(h), self.spec.output_side(w)
        assert out_h is not None and out_w is not None  # check_input_size passed
        return (h - out_h) // 2, (w - out_w) // 2

    def _size_problem(self, h: int, w: int) -> str | None:
        bad = [n for n in (h, w) if self.spec.output_side(n) is None]
        if not bad:
            return None
        below, above = self.spec.legal_sides(bad[0])
        nearest = f"{below} or {above}" if below is not None else str(above)
        smallest = self.spec.legal_sides(1)[1]
        step = 2 ** self.spec.depth
        if self.spec.padding == "same":
            rule = f"sides must be multiples of {step}"
        else:
            rule = (f"with valid convolutions every max-pool needs an even side: sides must be {step}k + {smallest} "
                    f"(the smallest is {smallest}, giving {self.spec.output_side(smallest)} output pixels)")
        return f"{rule}; nearest legal side to {bad[0]}: {nearest}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # a scripted model leaves the check to its layers
            self.check_input(x)
        skips: list[torch.Tensor] = []
        for i, level in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = level(x)
            if i >= self._depth - 1:  # the end of the contracting path (see UNetSpec.drop_rate)
                x = self.drop(x)
            skips.append(x)
        for i, up in enumerate(self.up):  # the expansive path meets the skips deepest first
            x = up(x, skips[len(skips) - 2 - i])
        return self.head(x)

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        return ([(f"down.{i}", m) for i, m in enumerate(self.down)] + [(f"up.{i}", m) for i, m in enumerate(self.up)]
                + [("head", self.head)])


register_model(SpecBuilder(UNet, UNetSpec(), num_classes=2, in_chans=1), name="unet", family="unet",
               paper=RONNEBERGER2015, input_size=(1, 572, 572), task="segment")
register_model(SpecBuilder(UNet, UNetSpec(padding="same", bn=True), num_classes=2, in_chans=1), name="unet_same",
               family="unet", paper=RONNEBERGER2015 + " (padded convolutions, batch norm)", input_size=(1, 512, 512),
               task="segment")


# ---------------------------------------------------------------------------------------------
# A U-Net decoder over a classifier's feature maps.

class DecoderBlock(nn.Module):
    """Up-sample to the skip's size (or the input's, for a last block without skip), concatenate
    the skip, then two 3x3 conv-BN-ReLU: segmentation_models_pytorch's ``UnetDecoderBlock``."""

    def __init__(self, in_chs: int, skip_chs: int, out_chs: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.conv1 = nn.Conv2d(in_chs + skip_chs, out_chs, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, size: list[int], skip: torch.Tensor | None = None) -> torch.Tensor:
        if [x.shape[-2], x.shape[-1]] != size:
            x = F.interpolate(x, size=size, mode=self.mode)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x)))


def _decoder_widths(n: int) -> tuple[int, ...]:
    """segmentation_models_pytorch's widths for ``n`` blocks: (256, 128, 64, 32, 16) for five, its
    last ``n`` for fewer, halved on from 256 upwards for more."""
    if n <= len(SMP_DECODER_CHANNELS):
        return SMP_DECODER_CHANNELS[len(SMP_DECODER_CHANNELS) - n:]
    extra = n - len(SMP_DECODER_CHANNELS)
    return tuple(256 * 2 ** (extra - i) for i in range(extra)) + SMP_DECODER_CHANNELS


_HEAD_PREFIXES = ("head.", "aux_heads.")
_TORCHVISION_HEADS = ("classifier.",)  # torchvision's VGG/AlexNet classifier, left unmapped on a headless encoder


class BackboneUNet(SegmentationModel):
    """A U-Net decoder on the feature maps of a reslab classifier built with ``features_only=True``.

    From the deepest map up through every shallower one: up-sample (bilinear by default) to the
    shallower map's size, concatenate it, two 3x3 conv-BN-ReLU (:class:`DecoderBlock`). When the
    shallowest map is still reduced (a ResNet's stem at 1/2), one more block without skip
    up-samples to the input size; then ``head``, a ``head_kernel`` convolution to
    ``num_classes``. With a ResNet or DenseNet encoder and the defaults, this is
    segmentation_models_pytorch's ``Unet`` (decoder widths 256, 128, 64, 32, 16, a 3x3 head),
    except that smp up-samples by nearest neighbour unless given ``decoder_interpolation="bilinear"``.

    Sides must be multiples of the deepest map's reduction (32 for a ResNet), so every skip lines
    up with the up-sampled map; the output keeps the input size.

    Args:
        encoder: a :class:`~reslab.models.base.Backbone` built with ``features_only=True``.
        num_classes: output channels.
        decoder_channels: output width of each decoder block, deepest first (default: smp's).
        upsample_mode: ``"bilinear"`` or ``"nearest"`` (smp's default).
        head_kernel: kernel size of the last convolution (3 as smp's head, or 1).
    """

    def __init__(self, encoder: Backbone, *, num_classes: int = 2, decoder_channels: Sequence[int] | None = None,
                 upsample_mode: Literal["bilinear", "nearest"] = "bilinear", head_kernel: int = 3) -> None:
        if not isinstance(encoder, Backbone) or not encoder.features_only:
            raise ReslabError(f"a U-Net encoder must be a reslab classifier built with features_only=True, got {type(encoder).__name__}")
        super().__init__(num_classes, encoder.in_chans)
        self.encoder = encoder
        info = [encoder.feature_info[i] for i in encoder.out_indices]
        skips = info[:-1][::-1]
        n_blocks = len(skips) + (1 if info[0].reduction > 1 else 0)
        widths = _decoder_widths(n_blocks) if decoder_channels is None else tuple(decoder_channels)
        check([
            (n_blocks >= 1, f"the {getattr(encoder, 'model_name', type(encoder).__name__)} encoder exposes one "
                            "full-resolution map: nothing to decode"),
            (positive_ints(widths) and len(widths) == n_blocks,
             f"decoder_channels must be {n_blocks} positive integers (one per decoder block, deepest first), got {widths}"),
            (upsample_mode in ("bilinear", "nearest"), f"upsample_mode must be 'bilinear' or 'nearest', got {upsample_mode!r}"),
            (is_int(head_kernel) and head_kernel >= 1 and head_kernel % 2 == 1, f"head_kernel must be 1, 3, 5, ..., got {head_kernel!r}"),
        ])
        self.reduction = max(f.reduction for f in info)
        in_chs = info[-1].num_chs
        blocks = []
        for i, out_chs in enumerate(widths):
            skip_chs = skips[i].num_chs if i < len(skips) else 0
            blocks.append(DecoderBlock(in_chs, skip_chs, out_chs, upsample_mode))
            in_chs = out_chs
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_chs, num_classes, head_kernel, padding=head_kernel // 2)
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def _size_problem(self, h: int, w: int) -> str | None:
        r = self.reduction
        bad = next((n for n in (h, w) if n % r), None)
        if bad is None:
            return None
        below = bad // r * r
        nearest = f"{below} or {below + r}" if below else str(r)
        return f"sides must be multiples of {r} (the encoder's deepest reduction); nearest legal side to {bad}: {nearest}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # a scripted model leaves the check to its layers
            self.check_input(x)
        size = [x.shape[-2], x.shape[-1]]
        maps = self.encoder(x)
        assert isinstance(maps, list)  # a features_only encoder's maps (a type refinement for TorchScript and mypy)
        skips = maps[:-1][::-1]
        x = maps[-1]
        for i, block in enumerate(self.decoder):
            if i < len(skips):
                skip = skips[i]
                x = block(x, [skip.shape[-2], skip.shape[-1]], skip)
            else:
                x = block(x, size, None)
        return self.head(x)

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        enc = self.encoder
        rows: list[tuple[str, nn.Module]] = [("encoder.stem", enc.stem)]
        rows += [(f"encoder.stages.{i}", s) for i, s in enumerate(enc.stages)]
        if not isinstance(enc.final, nn.Identity):
            rows.append(("encoder.final", enc.final))
        return rows + [(f"decoder.{i}", b) for i, b in enumerate(self.decoder)] + [("head", self.head)]

    def load_encoder(self, state_dict: Mapping[str, torch.Tensor], source: str = "reslab") -> BackboneUNet:
        """Load a classifier's weights into the encoder; its classifier keys are ignored.

        Args:
            state_dict: the classifier's state dict.
            source: ``"reslab"`` (a reslab classifier of the same architecture, e.g. a checkpoint
                of ``resnet34`` for ``unet_resnet34``) or ``"torchvision"`` (torchvision's model of
                that architecture, its keys converted as :func:`~reslab.load_torchvision_state_dict` does).
        """
        name = getattr(self, "model_name", type(self).__name__)
        if source not in ("reslab", "torchvision"):
            raise ReslabError(f"source must be 'reslab' or 'torchvision', got {source!r}")
        try:
            drop: tuple[str, ...] = _HEAD_PREFIXES
            if source == "torchvision":
                mapped = convert_torchvision_state_dict(self.encoder, state_dict)
                drop += _TORCHVISION_HEADS
            else:
                mapped = dict(state_dict)
            encoder_state = {k: v for k, v in mapped.items() if not k.startswith(drop)}
            load_state_dict_checked(self.encoder, encoder_state, f"a {source} state dict")
        except ReslabError as e:
            hint = f" (build the U-Net with the same option: create_model('{name}', ...))" if "create_model(" in str(e) else ""
            raise ReslabError(f"{name}.load_encoder: {e}{hint}") from None
        return self


_ENCODER_SET_BY_UNET = frozenset({"num_classes", "features_only", "out_indices"})


class BackboneUNetBuilder:
    """``create_model``'s builder for ``unet_<encoder>``: the U-Net's own options go to
    :class:`BackboneUNet`; the others (``in_chans`` and the encoder's architecture options, e.g.
    ``stride_in="3x3"`` to load torchvision's ResNet-50) build the encoder."""

    def __init__(self, encoder: str) -> None:
        entry = get_model_entry(encoder)
        if entry.task != "classify":
            raise ValueError(f"a U-Net encoder must be a classifier, {encoder!r} is a {entry.task} model")
        self.encoder = encoder
        self.own = frozenset(p for p in inspect.signature(BackboneUNet.__init__).parameters if p not in ("self", "encoder"))
        self.accepts = frozenset(self.own | (entry.accepts - _ENCODER_SET_BY_UNET))

    def __call__(self, **overrides: Any) -> BackboneUNet:
        own = {k: v for k, v in overrides.items() if k in self.own}
        encoder = create_model(self.encoder, features_only=True, **{k: v for k, v in overrides.items() if k not in self.own})
        if not isinstance(encoder, Backbone):
            raise ReslabError(f"{self.encoder} does not follow the Backbone feature contract: no U-Net over it")
        return BackboneUNet(encoder, **own)


def _backbone_entry(encoder: str) -> ModelEntry:
    paper = get_model_entry(encoder).paper
    return make_entry(BackboneUNetBuilder(encoder), name=f"unet_{encoder}", family="unet-backbone",
                      paper=f"{RONNEBERGER2015}; encoder: {paper or encoder}", input_size=(3, 256, 256), task="segment")


@register_resolver
def _resolve_backbone_unet(name: str) -> ModelEntry | None:
    """``unet_<name>`` for any registered classifier that is not registered itself."""
    if not name.startswith("unet_"):
        return None
    encoder = name[len("unet_"):]
    try:
        entry = get_model_entry(encoder)
    except UnknownModelError:
        return None
    return _backbone_entry(encoder) if entry.task == "classify" else None


for _encoder in ("resnet18", "resnet34", "resnet50", "preact_resnet34", "densenet121"):
    _entry = _backbone_entry(_encoder)
    register_model(_entry.builder, name=_entry.name, family=_entry.family, paper=_entry.paper,
                   input_size=_entry.input_size, task=_entry.task)
