"""VGG (Simonyan & Zisserman 2014) as data: one :class:`VGGSpec`, one :class:`VGG` module, the
paper's configurations A, B, D and E (with and without batch norm) one line each.

The stages are the conv blocks, each ending in its max-pooling; the head is the paper's fully
connected layers (``head.mlp.fc6``, ``fc7``) followed by the classifier ``head.fc``. The ``vgg*``
networks load torchvision state dicts with :func:`reslab.load_torchvision_state_dict`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .base import Backbone, FeatureInfo, Spec, SpecBuilder
from .layers import fc_head, init_relu_net
from .registry import register_model
from .weights import register_torchvision_converter, sequential_from_torchvision

__all__ = ["VGGSpec", "VGG", "VGG_CONFIGS"]

SIMONYAN2014 = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"


# Simonyan & Zisserman Table 1: 3x3 convolutions per block in configurations A, B, D and E.
VGG_CONFIGS: dict[str, tuple[int, ...]] = {"A": (1, 1, 2, 2, 2), "B": (2, 2, 2, 2, 2), "D": (2, 2, 3, 3, 3), "E": (2, 2, 4, 4, 4)}


@dataclass(frozen=True)
class VGGSpec(Spec):
    """A VGG network: blocks of 3x3 convolutions (stride 1, padding 1), each block ending in 2x2
    max-pooling, then three fully connected layers.

    Args:
        layers: 3x3 convolutions in each block (Table 1; see :data:`VGG_CONFIGS`).
        widths: channels of each block.
        batch_norm: batch normalisation after each convolution (not in the paper; torchvision's
            ``vgg*_bn``).
        hidden: widths of the hidden fully connected layers.
        drop_rate: dropout after the hidden fully connected layers (the paper's 0.5).
        pool_size: side of the map fed to the first fully connected layer (adaptive average
            pooling as in torchvision, the identity at 224x224).
    """

    layers: tuple[int, ...] = VGG_CONFIGS["D"]
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    batch_norm: bool = False
    hidden: tuple[int, ...] = (4096, 4096)
    drop_rate: float = 0.5
    pool_size: int = 7

    def __post_init__(self) -> None:
        self._tuples("layers", "widths", "hidden")
        self._check(
            self._positive_ints("layers"),
            self._positive_ints("widths"),
            (len(self.layers) == len(self.widths), f"layers {self.layers} and widths {self.widths} must have equal length"),
            self._positive_ints("hidden", empty=True),
            self._rate("drop_rate"),
            self._positive_int("pool_size"),
        )

    @property
    def depth(self) -> int:
        """Weight layers as the paper counts them: convolutions plus fully connected layers."""
        return sum(self.layers) + len(self.hidden) + 1


class VGG(Backbone):
    """VGG (Simonyan & Zisserman 2014) from a :class:`VGGSpec`.

    The stages are the five conv blocks, each ending in its max-pooling (``stages.i.conv1``,
    ``bn1``, ``act1``, ..., ``pool``). VGG has no stem: the stem is the identity and its
    ``feature_info`` entry is the input image. Weights are initialised as torchvision does.

    The options are those of every :class:`~reslab.models.base.Backbone`; with ``num_classes=0``
    the model returns fc7's output.
    """

    def __init__(self, spec: VGGSpec, *, num_classes: int = 1000, in_chans: int = 3,
                 features_only: bool = False, out_indices: Sequence[int] | None = None) -> None:
        super().__init__(spec, num_classes, in_chans)
        self.stem = nn.Identity()
        self.feature_info = [FeatureInfo(in_chans, 1, "stem")]
        stages = []
        in_chs = in_chans
        for i, (n, width) in enumerate(zip(spec.layers, spec.widths)):
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(1, n + 1):
                layers[f"conv{j}"] = nn.Conv2d(in_chs, width, 3, padding=1)
                if spec.batch_norm:
                    layers[f"bn{j}"] = nn.BatchNorm2d(width)
                layers[f"act{j}"] = nn.ReLU(inplace=True)
                in_chs = width
            layers["pool"] = nn.MaxPool2d(2, stride=2)
            stages.append(nn.Sequential(layers))
            self.feature_info.append(FeatureInfo(width, 2 ** (i + 1), f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Identity()
        self.head, self.num_features = fc_head(in_chs, features_only=features_only, pool_size=spec.pool_size,
                                               hidden=spec.hidden, num_classes=num_classes, drop_rate=spec.drop_rate)
        init_relu_net(self)
        self._finish_init(features_only, out_indices)


for _depth, _config in ((11, "A"), (13, "B"), (16, "D"), (19, "E")):
    for _bn in (False, True):
        register_model(SpecBuilder(VGG, VGGSpec(layers=VGG_CONFIGS[_config], batch_norm=_bn), num_classes=1000),
                       name=f"vgg{_depth}{'_bn' if _bn else ''}", family="vgg", paper=SIMONYAN2014,
                       input_size=(3, 224, 224))

# torchvision's VGG is ``features`` and ``classifier`` Sequentials whose weighted layers come in
# the same order as ours.
register_torchvision_converter(VGG)(sequential_from_torchvision)
