"""ResNet family against the papers' tables and torchvision's own modules."""

import operator

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models.layers import ProjectionShortcut, ZeroPadShortcut
from reslab.models.resnet import BasicBlock, Bottleneck
from tests.models._helpers import assert_matches_torchvision, meta_model, n_params, unfilled_model

# He et al. 2015, Table 6 (CIFAR-10, option A): parameters in millions, as printed.
TABLE6 = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7, "resnet1202": 19.4}


@pytest.mark.parametrize("name,paper", TABLE6.items())
def test_cifar_params_match_table6(name, paper):
    params = n_params(meta_model(name)) / 1e6
    decimals = len(str(paper).split(".")[1])
    assert round(params, decimals) == paper, f"{name}: {params:.4f}M vs paper {paper}M"


# He et al. 2016 (pre-activation) and Zagoruyko & Komodakis 2016 (WRN), params in millions.
OTHER_PAPERS = {"preact_resnet164": 1.7, "preact_resnet1001": 10.2, "wrn40_4": 8.9, "wrn16_8": 11.0, "wrn28_10": 36.5}


@pytest.mark.parametrize("name,paper", OTHER_PAPERS.items())
def test_preact_and_wide_params_match_papers(name, paper):
    params = n_params(meta_model(name)) / 1e6
    assert abs(params - paper) / paper < 0.015, f"{name}: {params:.3f}M vs paper {paper}M"


def test_option_a_adds_no_parameters_and_c_more_than_b():
    a = n_params(reslab.create_model("resnet20", shortcut="A"))
    b = n_params(reslab.create_model("resnet20", shortcut="B"))
    c = n_params(reslab.create_model("resnet20", shortcut="C"))
    plain = n_params(reslab.create_model("plain20"))
    assert a == plain
    assert c > b > a
    m = reslab.create_model("resnet20", shortcut="A")
    assert sum(isinstance(x, ZeroPadShortcut) for x in m.modules()) == 2  # two stage transitions
    m = reslab.create_model("resnet20", shortcut="B")
    assert sum(isinstance(x, ProjectionShortcut) for x in m.modules()) == 2
    m = reslab.create_model("resnet20", shortcut="C")
    assert sum(isinstance(x, ProjectionShortcut) for x in m.modules()) == 9  # every block


# He et al. 2015, Table 1: FLOPs (multiply-adds) at 224x224, x10^9.
TABLE1 = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}


@pytest.mark.parametrize("name,paper", TABLE1.items())
def test_imagenet_multiply_adds_match_table1(name, paper):
    info = reslab.model_info(reslab.create_model(name), (3, 224, 224))
    assert abs(info.macs / 1e9 - paper) / paper < 0.03, f"{name}: {info.macs / 1e9:.3f}G vs paper {paper}G"
    assert sum(r.macs for r in info.rows) == info.macs  # the per-stage rows add up to the total


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2"])
def test_matches_torchvision_outputs(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)()
    assert_matches_torchvision(unfilled_model(name, stride_in="3x3"), tv, (3, 96, 96))


def test_paper_v1_differs_from_v15_only_in_stride_position():
    v1 = reslab.create_model("resnet50")
    v15 = reslab.create_model("resnet50", stride_in="3x3")
    assert n_params(v1) == n_params(v15)
    b1, b15 = v1.stages[1][0], v15.stages[1][0]
    assert b1.conv1.stride == (2, 2) and b1.conv2.stride == (1, 1)
    assert b15.conv1.stride == (1, 1) and b15.conv2.stride == (2, 2)


def _count_additions(module: nn.Module) -> int:
    graph = torch.fx.symbolic_trace(module).graph
    return sum(1 for n in graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add, operator.iadd))


@pytest.mark.parametrize("plain,res", [("plain20", "resnet20"), ("plain56", "resnet56"), ("plain34", "resnet34"), ("plain18", "resnet18")])
def test_plain_nets_have_no_shortcut_additions(plain, res):
    p, r = reslab.create_model(plain), reslab.create_model(res)
    blocks = sum(len(s) for s in r.stages)
    assert _count_additions(r.stages) == blocks
    assert _count_additions(p.stages) == 0
    assert all(b.shortcut is None for s in p.stages for b in s)
    # Same layers otherwise: option A/B only adds parameters where dimensions change.
    assert n_params(p) <= n_params(r)


def test_depth_counts_weighted_layers_as_the_paper():
    for name, depth in [("resnet20", 20), ("resnet110", 110), ("resnet1202", 1202), ("resnet50", 50),
                        ("resnet152", 152), ("preact_resnet164", 164), ("preact_resnet1001", 1001)]:
        assert reslab.models.get_model_entry(name).builder.spec.depth == depth  # the spec create_model builds


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet18", "preact_resnet164"])
def test_zero_init_last_makes_identity_blocks(name):
    torch.manual_seed(0)
    m = reslab.create_model(name, zero_init_last=True).eval()
    for stage in m.stages:
        for block in stage:
            if isinstance(block.shortcut, nn.Identity):
                x = torch.relu(torch.randn(2, block_in_channels(block), 8, 8))
                with torch.no_grad():
                    assert torch.allclose(block(x), x)


def block_in_channels(block: nn.Module) -> int:
    return block.conv1.in_channels


def test_preact_units_put_bn_relu_before_convs():
    m = reslab.create_model("preact_resnet110")
    block = m.stages[1][1]
    names = [n for n, _ in block.named_children()]
    assert names.index("bn1") < names.index("conv1") < names.index("bn2") < names.index("conv2")
    assert isinstance(m.final.bn, nn.BatchNorm2d)  # the last unit's activation before pooling
    assert not hasattr(m.stem, "bn")


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet18", "wrn16_8"])
def test_features_only_returns_advertised_maps(name):
    m = reslab.create_model(name, features_only=True).eval()
    entry = reslab.models.get_model_entry(name)
    c, h, w = entry.input_size
    maps = m(torch.randn(2, c, h, w))
    assert len(maps) == len(m.feature_info)
    for fmap, info in zip(maps, m.feature_info):
        assert fmap.shape[1] == info.num_chs
        assert fmap.shape[-1] == w // info.reduction
    sel = reslab.create_model(name, features_only=True, out_indices=(-1,))
    assert len(sel(torch.randn(2, c, h, w))) == 1


def test_forward_head_and_reset_classifier():
    m = reslab.create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    feats = m.forward_features(x)
    assert feats.shape == (2, 64, 8, 8)
    assert torch.allclose(m.forward_head(feats), m(x))
    assert m.forward_head(feats, pre_logits=True).shape == (2, 64)
    m.reset_classifier(7)
    assert m(x).shape == (2, 7)
    m.reset_classifier(0)
    assert m(x).shape == (2, 64)


def test_block_types_follow_the_spec():
    assert isinstance(reslab.create_model("resnet34").stages[0][0], BasicBlock)
    assert isinstance(reslab.create_model("resnet50").stages[0][0], Bottleneck)
    assert isinstance(reslab.create_model("preact_resnet164").stages[0][0], Bottleneck)


# Every block kind (basic / bottleneck, post- / pre-activation), both stems, projection shortcuts;
# one block per stage is enough.
@pytest.mark.parametrize("name,layers", [("resnet20", (1, 1, 1)), ("preact_resnet18", (1, 1, 1, 1)),
                                         ("resnet50", (1, 1, 1, 1)), ("preact_resnet164", (1, 1, 1))])
def test_norm_and_act_layers_are_passed_down(name, layers):
    torch.manual_seed(0)
    default = reslab.create_model(name, layers=layers)
    torch.manual_seed(0)
    explicit = reslab.create_model(name, layers=layers, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU)
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), explicit.state_dict().values()))

    m = reslab.create_model(name, layers=layers, norm_layer=lambda c: nn.GroupNorm(4, c), act_layer=nn.GELU)
    kinds = [type(x) for x in m.modules()]
    # Every BN becomes a GroupNorm (stem, blocks, projection shortcuts, the final BN) under the
    # same name, and every ReLU a GELU; no buffers remain.
    assert nn.BatchNorm2d not in kinds and nn.ReLU not in kinds
    assert kinds.count(nn.GroupNorm) == sum(isinstance(x, nn.BatchNorm2d) for x in default.modules())
    assert kinds.count(nn.GELU) == sum(isinstance(x, nn.ReLU) for x in default.modules())
    assert set(m.state_dict()) == {k for k in default.state_dict() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    c, h, w = reslab.models.get_model_entry(name).input_size
    out = m(torch.randn(2, c, 64 if h > 64 else h, 64 if w > 64 else w))
    assert out.shape == (2, m.num_classes) and torch.isfinite(out).all()
    silu = reslab.create_model(name, layers=layers, act_layer=nn.SiLU)
    assert all(x.inplace for x in silu.modules() if isinstance(x, nn.SiLU))  # inplace where it is accepted


def test_norm_and_act_layers_must_be_callables():
    with pytest.raises(ReslabError, match="norm_layer must be a callable"):
        reslab.create_model("resnet20", norm_layer="group")
    with pytest.raises(ReslabError, match="act_layer must be a callable"):
        reslab.create_model("resnet20", act_layer=None)


def test_imagenet_stem_map_is_taken_before_its_max_pool():
    """The stride-2 map (timm's ``act1`` tap) is what a U-Net decoder needs; logits and keys stay."""
    torch.manual_seed(0)
    clf = reslab.create_model("resnet50").eval()
    m = reslab.create_model("resnet50", features_only=True).eval()
    m.load_state_dict({k: v for k, v in clf.state_dict().items() if not k.startswith("head.")})
    assert [(f.num_chs, f.reduction, f.module) for f in m.feature_info] == [
        (64, 2, "stem.act"), (256, 4, "stages.0"), (512, 8, "stages.1"), (1024, 16, "stages.2"), (2048, 32, "stages.3")]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = m(x)
        stem = clf.stem.act(clf.stem.bn(clf.stem.conv(x)))
        assert torch.equal(maps[0], stem)
        assert torch.equal(maps[1], clf.stages[0](clf.stem.pool(stem)))
        assert torch.equal(maps[-1], clf.forward_features(x))
    assert dict(clf.stem.named_children()).keys() == {"conv", "bn", "act", "pool"}
    cifar = reslab.create_model("resnet20", features_only=True)
    assert cifar.feature_info[0].module == "stem" and cifar.feature_info[0].reduction == 1
