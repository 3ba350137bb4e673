"""GoogLeNet (Szegedy et al. 2014, Inception v1) and BN-Inception (Ioffe & Szegedy 2015) as data:
each paper's table turned into an :class:`~reslab.models.inception.InceptionLayout` by its spec.

The specs' fields are the ``create_model`` options, with the papers' values as defaults;
torchvision's GoogLeNet is one option set away (:data:`GOOGLENET_TORCHVISION`), so its state
dicts load with identical outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import ReslabError
from .base import SpecBuilder
from .inception import LRN, AuxHeadSpec, Block, Conv, InceptionLayout, InceptionNet, InceptionSpec, Layer, Pool, drop_absent_aux
from .registry import register_model
from .weights import StateDict, register_torchvision_converter, rename_keys

__all__ = ["GoogLeNetSpec", "BNInceptionSpec", "GoogLeNet", "BNInception", "GOOGLENET_TORCHVISION", "GOOGLENET_TABLE1",
           "BN_INCEPTION_TABLE"]

SZEGEDY2014 = "Szegedy et al. 2014, Going Deeper with Convolutions"
IOFFE2015 = "Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift"


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
class GoogLeNetSpec(InceptionSpec):
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
        self._check(
            *self._common_checks(aux=True),
            self._flag("batch_norm"),
            (self.kernel_5x5 in (3, 5), f"kernel_5x5 must be 5 (paper) or 3 (torchvision), got {self.kernel_5x5!r}"),
            (self.pool4_kernel in (2, 3), f"pool4_kernel must be 3 (paper) or 2 (torchvision), got {self.pool4_kernel!r}"),
            self._one_of("aux_pool", ("5x5/3", "adaptive")),
            self._rate("aux_drop_rate"),
        )

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
class BNInceptionSpec(InceptionSpec):
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
        self._check(*self._common_checks())

    @staticmethod
    def block(c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: Literal["max", "avg"], proj: int, stride: int) -> Block:
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
        stages: tuple[tuple[Layer, ...], ...] = tuple(tuple((name, self.block(*row)) for name, row in rows) for rows in BN_INCEPTION_TABLE)
        stages = (((("pool2", Pool("max", 3, 2, ceil_mode=True)),) + stages[0]),) + stages[1:]
        return InceptionLayout(stem, stages, (), 0.0, True, self.bn_eps, self.drop_rate)


class GoogLeNet(InceptionNet):
    """GoogLeNet (Inception v1), Szegedy et al. 2014, from a :class:`GoogLeNetSpec`."""

    spec_type = GoogLeNetSpec


class BNInception(InceptionNet):
    """BN-Inception (Inception v2 of the batch-norm paper), Ioffe & Szegedy 2015, from a
    :class:`BNInceptionSpec`."""

    spec_type = BNInceptionSpec


register_model(SpecBuilder(GoogLeNet, GoogLeNetSpec()), name="googlenet", family="inception",
               paper=SZEGEDY2014, input_size=(3, 224, 224))
register_model(SpecBuilder(BNInception, BNInceptionSpec()), name="bn_inception", family="inception",
               paper=IOFFE2015, input_size=(3, 224, 224))


# ---------------------------------------------------------------------------------------------
# torchvision's GoogLeNet state dicts

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
    return rename_keys(drop_absent_aux(model, state_dict, ("aux1.", "aux2.")), _GOOGLENET_RULES)

