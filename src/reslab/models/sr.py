"""Residual networks for single-image super-resolution (task ``restore``).

``vdsr``
    Kim, Lee & Lee 2016 (VDSR): 20 convolutions of 64 3x3 filters with ReLU between them, and a
    global residual: the network adds its output to its input, the bicubic upscale of the
    low-resolution image, so it learns only the missing detail and works at any scale. The paper
    works on the luminance (Y) channel alone (665,921 parameters, "0.67M"); reslab's ``vdsr`` takes
    RGB (``in_chans=3``: 668,227 parameters), as the other networks here do.
``edsr_baseline_x2`` / ``_x3`` / ``_x4``
    Lim, Son, Kim, Nah & Lee 2017 (EDSR), the baseline model: a 3x3 head, 16 residual blocks of
    two 64-channel 3x3 convolutions with ReLU between them and no batch norm, a 3x3 convolution
    closing the body, a skip over the body, a sub-pixel (pixel-shuffle) upsampler and a 3x3 tail.
    ``res_scale`` multiplies each block's residual (1.0 in the baseline; the large EDSR uses 0.1).
    The RGB mean of DIV2K (0.4488, 0.4371, 0.4040) is subtracted from the input and added to the
    output, as the authors' code does (a buffer here, not a parameter). Parameters: 1,369,859 (x2),
    1,554,499 (x3), 1,517,571 (x4), the 1.37M / 1.55M / 1.52M usually quoted.
``srresnet_x4``
    Ledig et al. 2017 (SRGAN's generator, SRResNet): a 9x9 head with PReLU, 16 residual blocks of
    conv-BN-PReLU-conv-BN, a 3x3 convolution with BN closing the body, a skip over the body, two
    x2 pixel-shuffle stages with PReLU and a 9x9 tail: 1,550,659 parameters ("1.5M"). PReLU is
    channel-wise, as in He et al. 2015.

Inputs and outputs are RGB in [0, 1]. Every model carries ``scale`` (its built-in factor, or None
for ``vdsr``, which takes any), ``upscaled_input`` (True where the input is the bicubic upscale,
not the low-resolution image) and ``paper_loss`` (``l1`` for EDSR, ``l2`` for VDSR and SRResNet),
and :meth:`rf_steps` lists its convolutions and pixel shuffles for the receptive-field radius
that tiled inference needs (:func:`reslab.srtiling.receptive_radius`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReslabError
from .registry import register_model

__all__ = ["VDSR", "EDSR", "SRResNet", "EDSRResBlock", "SRResNetBlock", "DIV2K_RGB_MEAN", "rf_steps"]

KIM2016 = "Kim et al. 2016, Accurate Image Super-Resolution Using Very Deep Convolutional Networks (VDSR)"
LIM2017 = "Lim et al. 2017, Enhanced Deep Residual Networks for Single Image Super-Resolution (EDSR)"
LEDIG2017 = "Ledig et al. 2017, Photo-Realistic Single Image Super-Resolution Using a GAN (SRResNet)"

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""The RGB mean EDSR's code subtracts (DIV2K's training images, on [0, 1])."""


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


def _outputs(num_classes: int | None, in_chans: int, name: str) -> None:
    """A restoration net outputs an image: ``num_classes`` (what ``fit`` passes from the data) must be 0."""
    if num_classes not in (None, 0):
        raise ReslabError(f"{name} outputs an image ({in_chans} channels), not class scores; num_classes must be 0 "
                          f"(got {num_classes}): train it on super-resolution data (sr:PATH)")
    if in_chans < 1:
        raise ReslabError(f"in_chans must be a positive number of channels, got {in_chans}")


def rf_steps(module: nn.Module) -> list[tuple[str, int]]:
    """``("conv", radius)`` for each convolution and ``("shuffle", factor)`` for each pixel shuffle,
    in the order the module registers them (which, in every model here, is the order they run)."""
    steps: list[tuple[str, int]] = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size, m.dilation
            steps.append(("conv", max((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])))
        elif isinstance(m, nn.PixelShuffle):
            steps.append(("shuffle", m.upscale_factor))
    return steps


class _SRNet(nn.Module):
    """What every super-resolution net here shares: its scale, its input, its receptive field."""

    scale: int | None
    upscaled_input: bool
    paper_loss: str

    def rf_steps(self) -> list[tuple[str, int]]:
        """The network's convolutions and pixel shuffles, input to output (see :func:`rf_steps`)."""
        return rf_steps(self)

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        return [(name, child) for name, child in self.named_children()]


# ---------------------------------------------------------------------------------------------
# VDSR


class VDSR(_SRNet):
    """VDSR (Kim et al. 2016): ``x + f(x)`` where ``x`` is the bicubic upscale of the low-resolution
    image and ``f`` is ``depth`` 3x3 convolutions of ``width`` channels with ReLU between them.

    Args:
        depth: convolution layers (the paper: 20).
        width: channels of the hidden layers (the paper: 64).
        in_chans: image channels (the paper: 1, the Y channel; reslab: 3, RGB).
        num_classes: must be 0 (an image comes out); accepted because ``fit`` passes it.
    """

    upscaled_input = True
    paper_loss = "l2"

    def __init__(self, *, depth: int = 20, width: int = 64, in_chans: int = 3, num_classes: int | None = 0) -> None:
        super().__init__()
        _outputs(num_classes, in_chans, "vdsr")
        if depth < 2 or width < 1:
            raise ReslabError(f"vdsr needs depth >= 2 and width >= 1, got depth={depth}, width={width}")
        self.scale = None
        self.in_chans, self.depth, self.width = in_chans, depth, width
        self.head = nn.Sequential(_conv(in_chans, width), nn.ReLU(inplace=True))
        body: list[nn.Module] = []
        for _ in range(depth - 2):
            body += [_conv(width, width), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.tail = _conv(width, in_chans)
        # He et al. 2015 initialisation, as the paper: with PyTorch's default (a third of the
        # variance kept per layer) the 20-layer residual branch starts ~0 and stayed there in a
        # 300-step run (test PSNR equal to bicubic's to 0.01 dB).
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.body(self.head(x)))


@register_model(family="vdsr", paper=KIM2016, input_size=(3, 48, 48), task="restore")
def vdsr(*, depth: int = 20, width: int = 64, in_chans: int = 3, num_classes: int | None = 0) -> VDSR:
    """VDSR: 20 layers, 64 channels, global residual over the bicubic upscale; any scale."""
    return VDSR(depth=depth, width=width, in_chans=in_chans, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# EDSR


class EDSRResBlock(nn.Module):
    """EDSR's residual block: conv-ReLU-conv, no batch norm, the residual scaled by ``res_scale``."""

    def __init__(self, width: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(width, width), nn.ReLU(inplace=True), _conv(width, width))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def _upsampler(scale: int, width: int, act: type[nn.Module] | None = None) -> nn.Sequential:
    """Sub-pixel upsampling (Shi et al. 2016): a 3x3 convolution to ``f**2`` times the channels and a
    pixel shuffle by ``f``, once for x3, once per factor 2 for x2, x4, x8; ``act`` after each shuffle."""
    if scale == 3:
        factors = [3]
    elif scale >= 2 and scale & (scale - 1) == 0:
        factors = [2] * (scale.bit_length() - 1)
    else:
        raise ReslabError(f"a pixel-shuffle upsampler takes scale 2, 3, 4 or 8, got {scale}")
    layers: list[nn.Module] = []
    for f in factors:
        layers += [_conv(width, width * f * f), nn.PixelShuffle(f)]
        if act is not None:
            layers.append(act(width) if act is nn.PReLU else act())
    return nn.Sequential(*layers)


class EDSR(_SRNet):
    """EDSR (Lim et al. 2017): mean shift, head, ``blocks`` residual blocks and a closing conv with a
    skip over them, a pixel-shuffle upsampler and a tail; the mean added back.

    Args:
        scale: the upscaling factor the upsampler is built for (2, 3, 4 or 8).
        blocks: residual blocks (baseline: 16; EDSR: 32).
        width: channels (baseline: 64; EDSR: 256).
        res_scale: residual scaling (baseline: 1.0; EDSR: 0.1).
        in_chans: image channels; the mean shift uses DIV2K's RGB mean for 3, 0.5 otherwise.
        num_classes: must be 0.
    """

    upscaled_input = False
    paper_loss = "l1"

    def __init__(self, *, scale: int, blocks: int = 16, width: int = 64, res_scale: float = 1.0, in_chans: int = 3,
                 num_classes: int | None = 0) -> None:
        super().__init__()
        _outputs(num_classes, in_chans, f"edsr x{scale}")
        if blocks < 0 or width < 1 or not res_scale > 0:
            raise ReslabError(f"edsr needs blocks >= 0, width >= 1 and res_scale > 0, got {blocks}, {width}, {res_scale}")
        self.scale = scale
        self.in_chans, self.blocks, self.width, self.res_scale = in_chans, blocks, width, res_scale
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.5,) * in_chans
        self.register_buffer("rgb_mean", torch.tensor(mean).reshape(1, in_chans, 1, 1))
        self.head = _conv(in_chans, width)
        self.body = nn.Sequential(*[EDSRResBlock(width, res_scale) for _ in range(blocks)], _conv(width, width))
        self.tail = nn.Sequential(_upsampler(scale, width), _conv(width, in_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x - self.rgb_mean)
        return self.tail(self.body(x) + x) + self.rgb_mean

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        return [("head", self.head), ("body", self.body), ("tail", self.tail)]


def _edsr_builder(scale: int):
    def build(*, blocks: int = 16, width: int = 64, res_scale: float = 1.0, in_chans: int = 3,
              num_classes: int | None = 0) -> EDSR:
        return EDSR(scale=scale, blocks=blocks, width=width, res_scale=res_scale, in_chans=in_chans,
                    num_classes=num_classes)

    build.__name__ = build.__qualname__ = f"edsr_baseline_x{scale}"
    build.__doc__ = (f"EDSR baseline x{scale}: 16 residual blocks of 64 channels, no BN, residual scaling 1.0, "
                     "pixel-shuffle upsampler.")
    return build


for _s in (2, 3, 4):
    register_model(_edsr_builder(_s), name=f"edsr_baseline_x{_s}", family="edsr", paper=LIM2017,
                   input_size=(3, 48, 48), task="restore")


# ---------------------------------------------------------------------------------------------
# SRResNet


class SRResNetBlock(nn.Module):
    """SRResNet's residual block: conv-BN-PReLU-conv-BN plus the identity."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(width, width), nn.BatchNorm2d(width), nn.PReLU(width),
                                  _conv(width, width), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(_SRNet):
    """SRResNet (Ledig et al. 2017): 9x9 head with PReLU, ``blocks`` residual blocks, a conv-BN
    with a skip over the blocks, pixel-shuffle x2 stages with PReLU, a 9x9 tail.

    Args:
        scale: 2, 4 or 8 (x2 stages); the paper: 4.
        blocks: residual blocks (the paper: 16).
        width: channels (the paper: 64).
        in_chans: image channels.
        num_classes: must be 0.
    """

    upscaled_input = False
    paper_loss = "l2"

    def __init__(self, *, scale: int = 4, blocks: int = 16, width: int = 64, in_chans: int = 3,
                 num_classes: int | None = 0) -> None:
        super().__init__()
        _outputs(num_classes, in_chans, f"srresnet x{scale}")
        if scale == 3 or blocks < 0 or width < 1:
            raise ReslabError(f"srresnet needs scale 2, 4 or 8, blocks >= 0 and width >= 1, got {scale}, {blocks}, {width}")
        self.scale = scale
        self.in_chans, self.blocks, self.width = in_chans, blocks, width
        self.head = nn.Sequential(_conv(in_chans, width, 9), nn.PReLU(width))
        self.body = nn.Sequential(*[SRResNetBlock(width) for _ in range(blocks)])
        self.body_end = nn.Sequential(_conv(width, width), nn.BatchNorm2d(width))
        self.upsample = _upsampler(scale, width, nn.PReLU)
        self.tail = _conv(width, in_chans, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.tail(self.upsample(self.body_end(self.body(x)) + x))


@register_model(family="srresnet", paper=LEDIG2017, input_size=(3, 24, 24), task="restore")
def srresnet_x4(*, blocks: int = 16, width: int = 64, in_chans: int = 3, num_classes: int | None = 0) -> SRResNet:
    """SRResNet x4: 16 residual blocks (conv-BN-PReLU-conv-BN), two x2 pixel-shuffle stages, 9x9 head and tail."""
    return SRResNet(scale=4, blocks=blocks, width=width, in_chans=in_chans, num_classes=num_classes)
