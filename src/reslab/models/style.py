"""The fast style-transfer network of Johnson, Alahi & Fei-Fei 2016 ("Perceptual Losses for
Real-Time Style Transfer and Super-Resolution", ECCV, arXiv:1603.08155), as its supplementary
material's Table 1 draws it:

    9x9 conv 32, stride 1 -> 3x3 conv 64, stride 2 -> 3x3 conv 128, stride 2
    -> 5 residual blocks of 128 (two 3x3 convs each)
    -> 3x3 conv 64, stride 1/2 -> 3x3 conv 32, stride 1/2 -> 9x9 conv 3, stride 1

Each convolution but the last is followed by a normalisation and a ReLU. The residual blocks are
Gross & Wilber's (the supplementary's Figure 1): conv-norm-ReLU-conv-norm plus the identity, with
no ReLU after the addition. The output is a scaled tanh: the paper maps it to [0, 255]; this net
takes and returns images in [0, 1], ``(tanh(x) + 1) / 2``.

Where this module departs from the paper, as the common re-implementations do (PyTorch's
``examples/fast_neural_style``, Johnson's own later ``fast-neural-style`` code):

- **instance normalisation** (Ulyanov, Vedaldi & Lempitsky 2016) instead of batch norm, the
  default (``norm="batch"`` is the paper's);
- **reflection padding** of every convolution, so the output has the input's size, instead of the
  paper's 40-pixel reflection border and unpadded residual convolutions (``128x80x80`` ... in
  Table 1). The parameter count is the same.

The upsampling layers are the paper's fractionally strided (transposed) convolutions by default;
``upsample="nearest"`` gives the nearest-neighbour resize followed by a 3x3 convolution (Odena et
al. 2016's remedy for checkerboard artefacts), with the same parameters. Every convolution has a
bias, as in Johnson's code (a bias before instance norm is cancelled by it: kept for the count).

The network is fully convolutional: any image size is taken; a side that is not a multiple of 4
is padded by reflection to one and the output cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from .base import Spec, SpecBuilder, check, is_int
from .registry import register_model

__all__ = ["StyleNetSpec", "StyleTransformNet", "JOHNSON2016"]

JOHNSON2016 = "Johnson, Alahi & Fei-Fei 2016, Perceptual Losses for Real-Time Style Transfer and Super-Resolution"


@dataclass(frozen=True)
class StyleNetSpec(Spec):
    """Everything that tells one transformation network from another.

    Args:
        widths: channels of the three downsampling convolutions (the paper: 32, 64, 128); the
            residual blocks have the last, the two upsampling convolutions the second and first.
        blocks: residual blocks (the paper: 5).
        norm: ``"instance"`` (Ulyanov et al. 2016; the default) or ``"batch"`` (the paper).
        upsample: ``"transposed"`` (the paper's fractionally strided 3x3 convolutions) or
            ``"nearest"`` (nearest-neighbour x2, then a 3x3 convolution).
    """

    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 5
    norm: Literal["instance", "batch"] = "instance"
    upsample: Literal["transposed", "nearest"] = "transposed"

    def __post_init__(self) -> None:
        self._tuples("widths")
        self._check(
            self._positive_ints("widths"),
            (len(self.widths) == 3, f"widths must be three channel counts (the paper: 32,64,128), got {self.widths}"),
            (is_int(self.blocks) and self.blocks >= 0, f"blocks must be a non-negative integer, got {self.blocks!r}"),
            self._one_of("norm", ("instance", "batch")),
            self._one_of("upsample", ("transposed", "nearest")),
        )


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True) if kind == "instance" else nn.BatchNorm2d(channels)


class ConvLayer(nn.Sequential):
    """Reflection padding, a ``k``x``k`` convolution, then (unless ``norm`` is None) norm and ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, norm: str | None = "instance") -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(k // 2), nn.Conv2d(cin, cout, k, stride=stride)]
        if norm is not None:
            layers += [_norm(norm, cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UpLayer(nn.Sequential):
    """x2 upsampling: a fractionally strided 3x3 convolution (the paper) or nearest-neighbour
    resize and a 3x3 convolution; then norm and ReLU."""

    def __init__(self, cin: int, cout: int, mode: str, norm: str) -> None:
        if mode == "transposed":
            layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)]
        else:
            layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
        super().__init__(*layers, _norm(norm, cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Gross & Wilber's residual block: ``x + norm(conv(relu(norm(conv(x)))))``, no ReLU after the sum."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, norm=norm)
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class StyleTransformNet(nn.Module):
    """Images in [0, 1] ``(N, C, H, W)`` to stylised images in [0, 1] of the same size.

    Args:
        spec: the architecture (:class:`StyleNetSpec`).
        in_chans: image channels, in and out (3: colour).
        num_classes: ignored. The training loop builds every model with the data's class count;
            a transformation network has no classes. Kept so the same calls build it.
    """

    def __init__(self, spec: StyleNetSpec, in_chans: int = 3, num_classes: int | None = None) -> None:
        super().__init__()
        check([(is_int(in_chans) and in_chans >= 1, f"in_chans must be a positive integer, got {in_chans!r}")])
        self.spec, self.in_chans = spec, in_chans
        w1, w2, w3 = spec.widths
        self.conv1 = ConvLayer(in_chans, w1, 9, norm=spec.norm)
        self.conv2 = ConvLayer(w1, w2, 3, stride=2, norm=spec.norm)
        self.conv3 = ConvLayer(w2, w3, 3, stride=2, norm=spec.norm)
        self.res = nn.Sequential(*(ResidualBlock(w3, spec.norm) for _ in range(spec.blocks)))
        self.up1 = UpLayer(w3, w2, spec.upsample, spec.norm)
        self.up2 = UpLayer(w2, w1, spec.upsample, spec.norm)
        self.conv_out = ConvLayer(w1, in_chans, 9, norm=None)

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        """The rows of ``reslab info``: each layer of Table 1, a row per residual block."""
        rows: list[tuple[str, nn.Module]] = [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3)]
        rows += [(f"res.{i}", b) for i, b in enumerate(self.res)]
        return rows + [("up1", self.up1), ("up2", self.up2), ("conv_out", self.conv_out)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ReslabError(f"{getattr(self, 'model_name', type(self).__name__)} expects images of shape "
                              f"(N, {self.in_chans}, H, W) in [0, 1]; got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = -h % 4, -w % 4  # two stride-2 layers and two x2 upsamplings: sides a multiple of 4
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.conv3(self.conv2(self.conv1(x)))
        y = self.conv_out(self.up2(self.up1(self.res(y))))
        # the paper's scaled tanh, onto [0, 1]
        return ((torch.tanh(y) + 1) / 2)[..., :h, :w]


register_model(SpecBuilder(StyleTransformNet, StyleNetSpec(), in_chans=3), name="style_johnson", family="style",
               paper=JOHNSON2016, input_size=(3, 256, 256), task="stylize")
