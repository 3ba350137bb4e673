"""Inception family against the papers' tables and torchvision's own GoogLeNet and Inception-v3."""

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import reslab
from reslab.errors import ReslabError
from reslab.models.base import AuxOutput
from reslab.models.googlenet import GOOGLENET_TORCHVISION, _googlenet_from_tv
from reslab.models.inception import InceptionModule
from reslab.models.layers import LocalResponseNorm
from tests.models._helpers import assert_same_output, load_from_torchvision, n_params


@pytest.fixture(autouse=True)
def _no_autograd():
    # Nothing here needs gradients (the registry test runs backward for every model); without
    # the graph the forward passes are cheaper.
    with torch.no_grad():
        yield


def _capture(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules on the next forward pass (clones: ReLUs run in place)."""
    store: dict[str, torch.Tensor] = {}
    for name in names:
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: store.__setitem__(name, out.clone()))
    return store


# ---------------------------------------------------------------------------------------------
# GoogLeNet

@pytest.fixture(scope="module")
def googlenet_pair():
    # init_weights only picks the initial values, and randomise(weights=True) overwrites every one of them.
    tv = torchvision.models.googlenet(aux_logits=True, init_weights=False, transform_input=False)
    ours = reslab.create_model("googlenet", **GOOGLENET_TORCHVISION)
    load_from_torchvision(ours, tv, weights=True)
    taps = _capture(tv, ["conv3", "inception3b", "inception4e", "inception5b"])
    # 128x128 keeps the test fast; torchvision's adaptive auxiliary pooling works at any size.
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    return tv, ours, taps, x


def test_googlenet_matches_torchvision_in_eval_mode(googlenet_pair):
    tv, ours, taps, x = googlenet_pair
    tv.eval(), ours.eval()
    with torch.no_grad():
        ref = tv(x)
        out = ours(x)
        maps = ours.forward_intermediates(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1000)
    assert_same_output(out, ref)
    # The feature maps are torchvision's stem (conv3) and the last module of each grid size.
    for ours_map, name in zip(maps, ["conv3", "inception3b", "inception4e", "inception5b"]):
        assert_same_output(ours_map, taps[name])


def test_googlenet_matches_torchvision_in_training_mode_with_aux_heads(googlenet_pair):
    tv, ours, _, x = googlenet_pair
    tv.train(), ours.train()
    torch.manual_seed(7)
    ref = tv(x)
    torch.manual_seed(7)  # the same dropout masks, drawn in the same order: aux1, aux2, main
    out = ours(x)
    assert isinstance(out, AuxOutput)
    assert out.aux_weights == [0.3, 0.3]
    assert_same_output(out.logits, ref.logits)
    assert len(out.aux_logits) == 2
    assert_same_output(out.aux_logits[0], ref.aux_logits1)  # on (4a)
    assert_same_output(out.aux_logits[1], ref.aux_logits2)  # on (4d)
    # Batch statistics were used and tracked identically, auxiliary heads' BNs included.
    with torch.no_grad():
        mapped = _googlenet_from_tv(ours, tv.state_dict())
        for k, v in ours.state_dict().items():
            assert torch.equal(v, mapped[k]), k


def test_googlenet_parameter_counts_match_torchvision(googlenet_pair):
    tv, with_aux, _, _ = googlenet_pair
    without = reslab.create_model("googlenet", **GOOGLENET_TORCHVISION, aux_logits=False)
    assert n_params(with_aux) == n_params(tv)
    assert n_params(without) == n_params(tv) - n_params(tv.aux1) - n_params(tv.aux2)
    assert n_params(without) == 6_624_904  # torchvision's published figure


# Szegedy et al. 2014, Table 1: output channels and multiply-adds (ops, millions) per module.
TABLE1 = {
    "inception3a": (256, 128), "inception3b": (480, 304),
    "inception4a": (512, 73), "inception4b": (512, 88), "inception4c": (512, 100), "inception4d": (528, 119),
    "inception4e": (832, 170), "inception5a": (832, 54), "inception5b": (1024, 71),
}


def test_googlenet_paper_layout_matches_table1():
    model = reslab.create_model("googlenet").eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    lrns = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k, m.alpha_over_size) for m in lrns] == [(5, 1e-4, 0.75, 1.0, True)] * 2
    grid = {0: 28, 1: 14, 2: 7}
    for i, stage in enumerate(model.stages):
        chs = model.feature_info[i].num_chs
        for name, module in stage.named_children():
            if not isinstance(module, InceptionModule):
                continue
            assert module.branches[2][1][0].kernel_size == (5, 5)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                chs = module(torch.zeros(1, chs, grid[i], grid[i])).shape[1]
            paper_chs, paper_ops = TABLE1[name]
            assert chs == paper_chs, name
            # (5a)'s printed 54M disagrees with its own row's filter counts, which give 51.1M.
            tolerance = 3.0 if name == "inception5a" else 1.0
            assert abs(counter.get_total_flops() / 2e6 - paper_ops) < tolerance, name
    info = reslab.model_info(model)
    assert abs(info.macs / 1e9 - 1.5) / 1.5 < 0.06  # "a computational budget of 1.5 billion multiply-adds"
    # Table 1's parameter column sums to about 6.8M (weights only); ours adds the biases.
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and "aux" not in n)
    assert abs(weights / 6.8e6 - 1) < 0.03
    assert n_params(reslab.create_model("googlenet", aux_logits=False)) == 6_998_552


def test_googlenet_aux_heads_follow_the_paper():
    model = reslab.create_model("googlenet")
    assert [h.after for h in model.aux_heads] == ["inception4a", "inception4d"]
    head = model.aux_heads[0]
    assert isinstance(head.pool, nn.AvgPool2d) and head.pool.kernel_size == 5 and head.pool.stride == 3
    assert head.convs[0].conv.out_channels == 128 and head.fc1.out_features == 1024
    assert head.drop.p == 0.7 and model.head.drop.p == 0.4
    model.train()
    out = model(torch.randn(2, 3, 128, 128))  # the 5x5/3 pool still fits the 8x8 grid of (4a)
    assert isinstance(out, AuxOutput) and out.aux_weights == [0.3, 0.3]
    assert [a.shape for a in out.aux_logits] == [(2, 1000), (2, 1000)]
    model.eval()
    with torch.no_grad():
        assert isinstance(model(torch.randn(2, 3, 128, 128)), torch.Tensor)
    model.train()
    model.reset_classifier(10)
    out = model(torch.randn(2, 3, 128, 128))
    assert out.logits.shape == (2, 10) and all(a.shape == (2, 10) for a in out.aux_logits)
    no_aux = reslab.create_model("googlenet", aux_logits=False).train()
    assert isinstance(no_aux(torch.randn(2, 3, 128, 128)), torch.Tensor)
    assert len(reslab.create_model("googlenet", num_classes=0).aux_heads) == 0


# ---------------------------------------------------------------------------------------------
# Inception-v3

V3_TAPS = ["Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]


@pytest.fixture(scope="module")
def inception_v3_pair():
    tv = torchvision.models.inception_v3(aux_logits=True, init_weights=False, transform_input=False)
    ours = reslab.create_model("inception_v3")
    load_from_torchvision(ours, tv, seed=1, weights=True)
    taps = _capture(tv, V3_TAPS)
    return tv, ours, taps


def test_inception_v3_matches_torchvision_in_eval_mode(inception_v3_pair):
    tv, ours, taps = inception_v3_pair
    tv.eval(), ours.eval()
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(2))  # no aux head: any size
    with torch.no_grad():
        ref = tv(x)
        features = ours.forward_features(x)
        out = ours.forward_head(features)
        maps = ours.forward_intermediates(x)
    assert_same_output(out, ref)
    assert_same_output(features, taps["Mixed_7c"])
    assert [(f.num_chs, f.reduction) for f in ours.feature_info] == [(192, 4), (288, 8), (768, 16), (2048, 32)]
    for ours_map, name in zip(maps, V3_TAPS):
        assert_same_output(ours_map, taps[name])


def test_inception_v3_matches_torchvision_in_training_mode_with_aux_head(inception_v3_pair):
    tv, ours, _ = inception_v3_pair
    tv.train(), ours.train()
    x = torch.randn(2, 3, 299, 299, generator=torch.Generator().manual_seed(3))  # the aux head needs 299
    torch.manual_seed(3)
    ref = tv(x)
    torch.manual_seed(3)
    out = ours(x)
    assert isinstance(out, AuxOutput) and out.aux_weights == [0.4]
    assert_same_output(out.logits, ref.logits)
    assert len(out.aux_logits) == 1
    assert_same_output(out.aux_logits[0], ref.aux_logits)


def test_inception_v3_parameter_counts_match_torchvision(inception_v3_pair):
    tv, ours, _ = inception_v3_pair
    assert n_params(ours) == n_params(tv) == 27_161_264
    without = reslab.create_model("inception_v3", aux_logits=False)
    assert n_params(without) == n_params(tv) - n_params(tv.AuxLogits) == 23_834_568
    assert n_params(without) < 25e6  # Szegedy et al. 2015: "fewer than 25 million parameters"


# ---------------------------------------------------------------------------------------------
# BN-Inception

# Ioffe & Szegedy 2015, Figure 5's table: #1x1, #3x3 reduce, #3x3, double #3x3 reduce,
# double #3x3, pool proj (0: pass through); written out again here to count by hand.
BN_TABLE = [
    (64, 64, 64, 64, 96, 32), (64, 64, 96, 64, 96, 64), (0, 128, 160, 64, 96, 0),
    (224, 64, 96, 96, 128, 128), (192, 96, 128, 96, 128, 128), (160, 128, 160, 128, 160, 128),
    (96, 128, 192, 160, 192, 128), (0, 128, 192, 192, 256, 0),
    (352, 192, 320, 160, 224, 128), (352, 192, 320, 192, 224, 128),
]


def _bn_inception_params_by_hand() -> tuple[int, list[int]]:
    def conv(cin, cout, k=1):  # weights + BN's gamma and beta, no bias
        return cin * cout * k * k + 2 * cout

    total = conv(3, 64, 7) + conv(64, 64) + conv(64, 192, 3)
    chs, widths = 192, []
    for c1, c3r, c3, d3r, d3, proj in BN_TABLE:
        total += conv(chs, c1) if c1 else 0
        total += conv(chs, c3r) + conv(c3r, c3, 3)
        total += conv(chs, d3r) + conv(d3r, d3, 3) + conv(d3, d3, 3)
        total += conv(chs, proj) if proj else 0
        chs = c1 + c3 + d3 + (proj if proj else chs)
        widths.append(chs)
    return total + chs * 1000 + 1000, widths


def test_bn_inception_matches_the_papers_table():
    model = reslab.create_model("bn_inception")
    expected, widths = _bn_inception_params_by_hand()
    assert n_params(model) == expected == 11_285_224  # ~11.3M
    assert widths == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    ours = [m.out_chs for m in model.modules() if isinstance(m, InceptionModule)]
    assert ours == widths
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (5, 5) for m in model.modules())
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == sum(
        isinstance(m, nn.Conv2d) for m in model.modules())
    # (3c) and (4e) reduce the grid inside the module, with max-pool + pass-through.
    assert [m.stride for m in model.modules() if isinstance(m, InceptionModule)] == [1, 1, 2, 1, 1, 1, 1, 2, 1, 1]
    assert isinstance(model.stages[2].inception5b.branches[3][0], nn.MaxPool2d)
    assert isinstance(model.stages[2].inception5a.branches[3][0], nn.AvgPool2d)
    model.train()
    assert isinstance(model(torch.randn(2, 3, 128, 128)), torch.Tensor)  # no auxiliary heads


# ---------------------------------------------------------------------------------------------
# Shared contract

@pytest.mark.parametrize("name,channels", [
    ("googlenet", [192, 480, 832, 1024]),
    ("bn_inception", [192, 320, 608, 1024]),
])
def test_features_only_channels_and_strides(name, channels):
    model = reslab.create_model(name, features_only=True).eval()
    assert len(model.aux_heads) == 0
    assert [f.num_chs for f in model.feature_info] == channels
    assert [f.reduction for f in model.feature_info] == [4, 8, 16, 32]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 128, 128))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 128 // r, 128 // r) for c, r in zip(channels, [4, 8, 16, 32])]
    model.out_indices = (1, 3)
    with torch.no_grad():
        assert [m.shape[1] for m in model(torch.randn(1, 3, 128, 128))] == [channels[1], channels[3]]
    with pytest.raises(ReslabError, match="out of range"):
        reslab.create_model(name, features_only=True, out_indices=(4,))


def test_pooled_features_without_classifier():
    model = reslab.create_model("googlenet", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128)).shape == (1, 1024)


@pytest.mark.parametrize("name,options,match", [
    ("googlenet", {"aux_pool": "median"}, "aux_pool must be"),
    ("googlenet", {"kernel_5x5": 7}, "kernel_5x5 must be"),
    ("googlenet", {"pool4_kernel": 4}, "pool4_kernel must be"),
    ("googlenet", {"drop_rate": 1.0}, "drop_rate must be"),
    ("googlenet", {"aux_drop_rate": -0.1}, "aux_drop_rate must be"),
    ("googlenet", {"batch_norm": "yes"}, "batch_norm must be"),
    ("inception_v3", {"aux_weight": -1}, "aux_weight must be"),
    ("inception_v3", {"bn_eps": 0}, "bn_eps must be"),
    ("inception_v3", {"num_classes": -1}, "num_classes"),
    ("bn_inception", {"aux_logits": True}, "does not accept 'aux_logits'"),
])
def test_bad_options_are_rejected(name, options, match):
    with pytest.raises(ReslabError, match=match):
        reslab.create_model(name, **options)


def test_torchvision_weights_need_the_torchvision_layout(googlenet_pair):
    tv = googlenet_pair[0]
    # Paper layout: a clear message with the options to use, not a shape mismatch.
    with pytest.raises(ReslabError, match=r"batch_norm.*create_model\('googlenet', batch_norm=True"):
        reslab.load_torchvision_state_dict(reslab.create_model("googlenet"), tv.state_dict())
    # aux_pool changes no shapes, so only the check catches it.
    options = {**GOOGLENET_TORCHVISION, "aux_pool": "5x5/3"}
    with pytest.raises(ReslabError, match="aux_pool"):
        reslab.load_torchvision_state_dict(reslab.create_model("googlenet", **options), tv.state_dict())
    # Weights with auxiliary heads load into a model built without them (as torchvision's own loader).
    reslab.load_torchvision_state_dict(reslab.create_model("googlenet", **GOOGLENET_TORCHVISION, aux_logits=False),
                                       tv.state_dict())
    with pytest.raises(ReslabError, match="do not fit"):
        reslab.load_torchvision_state_dict(reslab.create_model("googlenet", **GOOGLENET_TORCHVISION, num_classes=10),
                                           tv.state_dict())
