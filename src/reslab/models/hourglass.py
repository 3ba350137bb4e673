"""Stacked hourglass networks (Newell, Yang & Deng 2016, "Stacked Hourglass Networks for Human
Pose Estimation", ECCV, arXiv:1603.06937), here predicting per-pixel class logits.

The network follows the paper and the authors' Torch code (princeton-vl/pose-hg-train,
``src/models/hg.lua`` and ``layers/Residual.lua``, with its defaults of 256 features and one
residual module per step):

* the residual module (Fig. 4 left): BN-ReLU-1x1 conv to half the output width (128), BN-ReLU-3x3
  conv, BN-ReLU-1x1 conv to the output width (256), added to the input, projected by a 1x1 conv
  where the widths differ;
* the stem: 7x7/2 conv (64)-BN-ReLU, a residual module to 128, 2x2 max-pool, residual modules to
  128 and to 256 features: 1/4 of the input resolution;
* each hourglass (Fig. 3) is recursive, of depth 4: at every scale a residual branch at that scale
  and a lower branch (2x2 max-pool, residual, the next hourglass or a residual at the bottom,
  residual, nearest-neighbour up-sampling by 2), added element-wise;
* after each hourglass: a residual module and a 1x1 conv-BN-ReLU at the output resolution, then
  a 1x1 conv to the ``num_classes`` heatmaps; between stacks the features and the heatmaps are
  remapped by 1x1 convs and added to the hourglass's input (Fig. 4 right, intermediate supervision).

For segmentation each stack's heatmaps (1/4 of the input resolution) are up-sampled bilinearly to
the input size. In training mode the model returns
``AuxOutput(last stack, earlier stacks, (1.0, ...))``: every stack is supervised, with the same
weight, as in the paper; in eval mode the last stack's logits. The paper states no parameter total;
with 256 features and 16 heatmaps (MPII's joints) the 8-stack network has 25,434,112 parameters,
counted module by module in tests/models/test_hourglass.py. Weights keep PyTorch's default
initialisation, the uniform fan-in rule of Torch7 that the authors' code used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import AuxOutput, SegmentationModel, Spec, SpecBuilder
from .registry import register_model

__all__ = ["HourglassSpec", "StackedHourglass", "Hourglass", "HourglassResidual", "HourglassStack"]

NEWELL2016 = "Newell et al. 2016, Stacked Hourglass Networks for Human Pose Estimation"


@dataclass(frozen=True)
class HourglassSpec(Spec):
    """Everything that tells one stacked hourglass network from another.

    Args:
        stacks: hourglasses in sequence (the paper's final network has 8).
        depth: max-pools inside each hourglass (4: 64x64 features down to 4x4 on a 256 input).
        features: channels between the residual modules (256).
        modules_per_step: residual modules at each step of an hourglass and after it (the
            authors' ``nModules``, 1).
    """

    stacks: int = 8
    depth: int = 4
    features: int = 256
    modules_per_step: int = 1

    def __post_init__(self) -> None:
        self._check(
            self._positive_int("stacks"),
            self._positive_int("depth"),
            self._positive_int("features"),
            self._positive_int("modules_per_step"),
            (self.features % 2 == 0, f"features must be even (the residual module halves it inside), got {self.features}"),
        )

    @property
    def reduction(self) -> int:
        """The coarsest map's stride: 4 from the stem, 2 per max-pool of an hourglass (64)."""
        return 4 * 2 ** self.depth


class HourglassResidual(nn.Module):
    """The paper's residual module: ``bn1``-``act1``-``conv1`` (1x1, to ``out_chs / 2``),
    ``bn2``-``act2``-``conv2`` (3x3), ``bn3``-``act3``-``conv3`` (1x1, to ``out_chs``), plus
    ``shortcut`` (identity, or a 1x1 conv where the widths differ). Convolutions have biases, as
    in the Torch code."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid = out_chs // 2
        self.bn1, self.act1, self.conv1 = nn.BatchNorm2d(in_chs), nn.ReLU(inplace=True), nn.Conv2d(in_chs, mid, 1)
        self.bn2, self.act2, self.conv2 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.act3, self.conv3 = nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, out_chs, 1)
        self.shortcut: nn.Module = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act1(self.bn1(x)))
        out = self.conv2(self.act2(self.bn2(out)))
        out = self.conv3(self.act3(self.bn3(out)))
        return out + self.shortcut(x)


def _residuals(chs: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(HourglassResidual(chs, chs) for _ in range(n)))


class Hourglass(nn.Module):
    """One hourglass of ``depth`` max-pools (Fig. 3): ``up1`` (the branch at this scale) plus the
    up-sampled ``low3(low2(low1(pool(x))))``, where ``low2`` is the hourglass of ``depth - 1``
    (residual modules at the bottom)."""

    def __init__(self, depth: int, chs: int, n_modules: int) -> None:
        super().__init__()
        self.up1 = _residuals(chs, n_modules)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.low1 = _residuals(chs, n_modules)
        self.low2: nn.Module = Hourglass(depth - 1, chs, n_modules) if depth > 1 else _residuals(chs, n_modules)
        self.low3 = _residuals(chs, n_modules)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up1(x) + self.upsample(self.low3(self.low2(self.low1(self.pool(x)))))


class HourglassStack(nn.Module):
    """One stack: ``hourglass``, ``residuals`` and ``lin`` (1x1 conv-BN-ReLU) at the output
    resolution, ``heatmap`` (1x1 conv to the classes) and, except on the last stack, the 1x1 convs
    ``remap_features`` and ``remap_heatmap`` whose outputs are added to the stack's input.

    ``forward`` returns (the next stack's input, or the last stack's features; the heatmaps).
    """

    __constants__ = ["last"]  # torch.jit.script compiles the remapping convs only where there are some

    def __init__(self, spec: HourglassSpec, num_classes: int, last: bool) -> None:
        super().__init__()
        chs = spec.features
        self.last = last
        self.hourglass = Hourglass(spec.depth, chs, spec.modules_per_step)
        self.residuals = _residuals(chs, spec.modules_per_step)
        self.lin = nn.Sequential()
        self.lin.add_module("conv", nn.Conv2d(chs, chs, 1))
        self.lin.add_module("bn", nn.BatchNorm2d(chs))
        self.lin.add_module("act", nn.ReLU(inplace=True))
        self.heatmap = nn.Conv2d(chs, num_classes, 1)
        if not last:
            self.remap_features = nn.Conv2d(chs, chs, 1)
            self.remap_heatmap = nn.Conv2d(num_classes, chs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.lin(self.residuals(self.hourglass(x)))
        heat = self.heatmap(y)
        if self.last:
            return y, heat
        return x + self.remap_features(y) + self.remap_heatmap(heat), heat


class StackedHourglass(SegmentationModel):
    """A stacked hourglass network from a :class:`HourglassSpec` (see the module docstring).

    Input sides must be multiples of 64 (4 for the stem times 2 per max-pool of an hourglass);
    the logits have the input's size.

    Args:
        spec: the architecture.
        num_classes: heatmaps, i.e. output channels.
        in_chans: input channels.
    """

    def __init__(self, spec: HourglassSpec, *, num_classes: int = 2, in_chans: int = 3) -> None:
        super().__init__(num_classes, in_chans)
        self.spec = spec
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_chans, 64, 7, stride=2, padding=3))
        self.stem.add_module("bn", nn.BatchNorm2d(64))
        self.stem.add_module("act", nn.ReLU(inplace=True))
        self.stem.add_module("res1", HourglassResidual(64, 128))
        self.stem.add_module("pool", nn.MaxPool2d(2, stride=2))
        self.stem.add_module("res2", HourglassResidual(128, 128))
        self.stem.add_module("res3", HourglassResidual(128, spec.features))
        self.stacks = nn.ModuleList(HourglassStack(spec, num_classes, last=i == spec.stacks - 1) for i in range(spec.stacks))

    def _size_problem(self, h: int, w: int) -> str | None:
        r = self.spec.reduction
        bad = next((n for n in (h, w) if n % r), None)
        if bad is None:
            return None
        below = bad // r * r
        nearest = f"{below} or {below + r}" if below else str(r)
        return f"sides must be multiples of {r} (the stem's 4 times 2 per max-pool of an hourglass); nearest legal side to {bad}: {nearest}"

    def forward_heatmaps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stack's heatmaps at 1/4 of the input resolution, first stack first."""
        x = self.stem(x)
        heatmaps = []
        for stack in self.stacks:
            x, heat = stack(x)
            heatmaps.append(heat)
        return heatmaps

    def forward(self, x: torch.Tensor) -> torch.Tensor | AuxOutput:
        if not torch.jit.is_scripting():  # a scripted model leaves the check to its layers
            self.check_input(x)
        size = [x.shape[-2], x.shape[-1]]
        heatmaps = self.forward_heatmaps(x)
        if not self.training:
            return F.interpolate(heatmaps[-1], size=size, mode="bilinear", align_corners=False)
        logits = [F.interpolate(h, size=size, mode="bilinear", align_corners=False) for h in heatmaps]
        return AuxOutput(logits[-1], logits[:-1], [1.0 for _ in logits[:-1]])

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        return [("stem", self.stem)] + [(f"stacks.{i}", s) for i, s in enumerate(self.stacks)]


for _n in (1, 2, 4, 8):
    register_model(SpecBuilder(StackedHourglass, HourglassSpec(stacks=_n), num_classes=2, in_chans=3),
                   name=f"hourglass{_n}", family="hourglass", paper=NEWELL2016, input_size=(3, 256, 256), task="segment")
