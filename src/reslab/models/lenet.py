"""LeNet-5 (LeCun et al. 1998) as data: one :class:`LeNetSpec`, one :class:`LeNet5` module.

The network is ``stem -> stages -> head`` like every reslab classifier: the stem is C1 and S2,
the stages are C3-S4 and C5, and the head is F6 (``head.mlp.fc6``) followed by the classifier
``head.fc``. The layers only this paper defines (its scaled tanh, its trainable S-layers and
C3's partial connection table) live here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from .base import Backbone, FeatureInfo, Spec, SpecBuilder, positive_ints
from .layers import fc_head
from .registry import register_model

__all__ = ["ScaledTanh", "Subsampling", "PartialConv2d", "LeNetSpec", "LeNet5", "LENET5_C3_TABLE"]

LECUN1998 = "LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition"


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


_LENET_ACTS = {"scaled_tanh": ScaledTanh, "tanh": nn.Tanh, "relu": lambda: nn.ReLU(inplace=True)}


@dataclass(frozen=True)
class LeNetSpec(Spec):
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
        self._tuples("widths")
        self._check(
            (len(self.widths) == 3 and positive_ints(self.widths), f"widths must be 3 positive integers (C1, C3, C5), got {self.widths}"),
            self._positive_int("hidden"),
            self._positive_int("kernel_size"),
            self._one_of("pool", ("subsample", "max", "avg")),
            self._one_of("act", tuple(_LENET_ACTS)),
            (not self.c3_table or self.widths[:2] == (6, 16),
             f"the Table I connections of C3 need widths (6, 16, ...), got {self.widths}; pass c3_table=False for other widths"),
        )


class LeNet5(Backbone):
    """LeNet-5: C1 - S2 - C3 - S4 - C5 - F6 - output, on 32x32 single-channel images.

    The paper's output layer is 10 Euclidean RBF units over F6 (Sec. II.B, Eq. 7), trained with
    its own MAP criterion; here it is a linear classifier (``head.fc``), so LeNet-5 trains with
    cross-entropy like every other model. Every other layer is the paper's, F6 is
    ``head.mlp.fc6``. The head's global average pooling is the identity on a 32x32 input (C5 is
    1x1) and lets larger inputs through. Weights use PyTorch's default fan-in scaled uniform
    initialisation rather than the paper's ``U(-2.4/F, 2.4/F)``.

    The options are those of every :class:`~reslab.models.base.Backbone`; with ``num_classes=0``
    the model returns F6.
    """

    def __init__(self, spec: LeNetSpec, *, num_classes: int = 10, in_chans: int = 1,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__(spec, num_classes, in_chans)
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
        self.head, self.num_features = fc_head(c5, features_only=False, pool_size=1, hidden=(spec.hidden,),
                                               num_classes=num_classes, act=act)
        self._finish_init(features_only, out_indices)


register_model(SpecBuilder(LeNet5, LeNetSpec(), num_classes=10), name="lenet5", family="lenet",
               paper=LECUN1998, input_size=(1, 32, 32))
