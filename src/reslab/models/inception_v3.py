"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer Vision")
as data: the released model's layout as an :class:`~reslab.models.inception.InceptionLayout`.

Its defaults are torchvision's, so torchvision's state dicts load with identical outputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..errors import ReslabError
from .base import SpecBuilder
from .inception import (
    AuxHeadSpec,
    Block,
    Branch,
    Conv,
    InceptionLayout,
    InceptionNet,
    InceptionSpec,
    Pool,
    Split,
    drop_absent_aux,
)
from .registry import register_model
from .weights import StateDict, register_torchvision_converter, rename_keys

__all__ = ["InceptionV3Spec", "InceptionV3"]

SZEGEDY2015 = "Szegedy et al. 2015, Rethinking the Inception Architecture for Computer Vision"


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
class InceptionV3Spec(InceptionSpec):
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
        self._check(*self._common_checks(aux=True))

    def layout(self) -> InceptionLayout:
        stem = (
            ("conv1a", Conv(32, 3, 2, 0)), ("conv2a", Conv(32, 3, 1, 0)), ("conv2b", Conv(64, 3)),
            ("pool1", Pool("max", 3, 2)), ("conv3b", Conv(80)), ("conv4a", Conv(192, 3, 1, 0)),
        )
        stages = (
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



class InceptionV3(InceptionNet):
    """Inception-v3, Szegedy et al. 2015, from an :class:`InceptionV3Spec`."""

    spec_type = InceptionV3Spec


register_model(SpecBuilder(InceptionV3, InceptionV3Spec()), name="inception_v3", family="inception",
               paper=SZEGEDY2015, input_size=(3, 299, 299))


# ---------------------------------------------------------------------------------------------
# torchvision's Inception-v3 state dicts

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
    return rename_keys(drop_absent_aux(model, state_dict, ("AuxLogits.",)), _V3_RULES)
