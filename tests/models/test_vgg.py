"""VGG against its paper and against torchvision."""

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models import model_info
from tests.models._helpers import assert_feature_maps, assert_matches_torchvision, meta_model, n_params, unfilled_model

VGG_NAMES = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]


def _meta_tv(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


@pytest.mark.parametrize("name", VGG_NAMES)
def test_vgg_equals_torchvision(name):
    torch.manual_seed(0)
    # VGG's adaptive pooling accepts 64x64 (a 2x2 map before the classifier), which keeps this fast.
    assert_matches_torchvision(unfilled_model(name), getattr(torchvision.models, name)(), (3, 64, 64), batch=1)


def test_torchvision_weights_for_another_architecture_are_rejected():
    vgg11, vgg16 = meta_model("vgg11"), meta_model("vgg16", num_classes=10)
    with pytest.raises(ReslabError, match="do not fit vgg11.*unexpected: features"):
        reslab.load_torchvision_state_dict(vgg11, _meta_tv("vgg13").state_dict())
    with pytest.raises(ReslabError, match="shape mismatch.*head.fc.weight"):
        reslab.load_torchvision_state_dict(vgg16, _meta_tv("vgg16").state_dict())


def test_vgg_parameters_and_multiply_adds():
    # Table 2 of the paper, in millions: A 133, B 133, D 138, E 144.
    paper_millions = {11: 133, 13: 133, 16: 138, 19: 144}
    for name in VGG_NAMES:
        ours = meta_model(name)
        assert n_params(ours) == n_params(_meta_tv(name)), name
        assert round(n_params(ours) / 1e6) == paper_millions[int(name[3:5])], name
        assert ours.spec.depth == int(name[3:5])
    vgg16, vgg19 = meta_model("vgg16"), meta_model("vgg19")
    assert n_params(vgg16) == 138_357_544
    # He et al. 2015 Sec. 3.3: "the VGG-19 model ... has 19.6 billion FLOPs" (multiply-adds).
    assert round(model_info(vgg19).macs / 1e9, 1) == 19.6


def test_features_only_channels_and_strides():
    assert_feature_maps("vgg11_bn", 64, [(3, 1, 64), (64, 2, 32), (128, 4, 16), (256, 8, 8), (512, 16, 4), (512, 32, 2)])


def test_backbone_has_no_fully_connected_head():
    assert isinstance(meta_model("vgg16", features_only=True).head, nn.Identity)  # no 120M unused parameters


@pytest.mark.parametrize("options,message", [
    ({"layers": (2, 2)}, "equal length"),
    ({"drop_rate": 1.5}, "drop_rate"),
    ({"num_classes": -1}, "num_classes"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ReslabError, match=message):
        reslab.create_model("vgg16", **options)
