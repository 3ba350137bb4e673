"""DenseNet family against the paper's tables and torchvision's own modules."""

import re

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models import get_model_entry
from reslab.models.densenet import DenseLayer, DenseNet, Transition
from tests.models._helpers import assert_matches_torchvision, meta_model, n_params, randomise, unfilled_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a shared 2-core machine two OpenMP threads spin against other jobs: a DenseNet-161
    # forward at 64x64 measured 8.6 s with 2 threads, 0.3 s with 1.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["densenet121", "densenet169", "densenet201", "densenet161"])
def test_matches_torchvision_outputs(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)()
    assert_matches_torchvision(unfilled_model(name), tv, (3, 64, 64))


def test_loads_old_torchvision_key_names():
    # Checkpoints from before torchvision 0.3 name dense-layer modules "norm.1", "conv.2", ...
    torch.manual_seed(0)
    tv = torchvision.models.densenet121().eval()
    randomise(tv, seed=1)
    old = {re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", k): v for k, v in tv.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    ours = reslab.load_torchvision_state_dict(reslab.create_model("densenet121").eval(), old)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() < 1e-5


def test_torchvision_weights_do_not_fit_a_cifar_net():
    tv = torchvision.models.densenet121()
    with pytest.raises(ReslabError, match="do not fit densenet_bc_100_12"):
        reslab.load_torchvision_state_dict(reslab.create_model("densenet_bc_100_12"), tv.state_dict())


# Huang et al. 2017, Table 2 (CIFAR): parameters in millions, as printed. The named nets, and the
# paper's other rows built by overriding the spec of a named one.
TABLE2 = [
    ("densenet_bc_100_12", {}, 0.8),
    ("densenet_bc_250_24", {}, 15.3),
    ("densenet_bc_100_12", {"growth_rate": 40, "block_config": (31, 31, 31)}, 25.6),  # BC L=190 k=40
    ("densenet_bc_100_12", {"bottleneck": False, "compression": 1.0, "block_config": (12, 12, 12)}, 1.0),  # L=40
    ("densenet_bc_100_12", {"bottleneck": False, "compression": 1.0, "block_config": (32, 32, 32)}, 7.0),  # L=100 k=12
    ("densenet_bc_100_12", {"bottleneck": False, "compression": 1.0, "block_config": (32, 32, 32), "growth_rate": 24}, 27.2),
]


@pytest.mark.parametrize("name,overrides,paper", TABLE2)
def test_cifar_params_match_table2(name, overrides, paper):
    m = meta_model(name, **overrides)
    params = n_params(m) / 1e6
    assert round(params, 1) == paper, f"{name} {overrides}: {params:.4f}M vs paper {paper}M"
    assert m.spec.depth == {0.8: 100, 15.3: 250, 25.6: 190, 1.0: 40, 7.0: 100, 27.2: 100}[paper]


def test_densenet264_params():
    # Neither torchvision nor the paper's tables give it; 33.3M is the commonly quoted count for k = 32.
    params = n_params(meta_model("densenet264")) / 1e6
    assert round(params, 1) == 33.3, f"{params:.3f}M"


# torchvision's own metadata for these models: multiply-adds (its "GFLOPS") at 224x224.
TV_OPS = {"densenet121": 2.834, "densenet169": 3.36, "densenet201": 4.291}


@pytest.mark.parametrize("name,ops", TV_OPS.items())
def test_multiply_adds_match_torchvision_metadata(name, ops):
    info = reslab.model_info(reslab.create_model(name), (3, 224, 224))
    assert abs(info.macs / 1e9 - ops) / ops < 0.005, f"{name}: {info.macs / 1e9:.3f}G vs {ops}G"
    assert sum(r.macs for r in info.rows) == info.macs


def test_depth_counts_weighted_layers_as_the_paper():
    for name, depth in [("densenet121", 121), ("densenet169", 169), ("densenet201", 201),
                        ("densenet161", 161), ("densenet_bc_100_12", 100), ("densenet_bc_250_24", 250)]:
        assert get_model_entry(name).builder.spec.depth == depth


def test_bc_structure_follows_the_paper():
    m = reslab.create_model("densenet_bc_100_12")
    assert m.stem.conv.out_channels == 24 and m.stem.conv.kernel_size == (3, 3)  # 2k
    assert [len(s.block.layers) for s in m.stages] == [16, 16, 16]  # (100 - 4) / 6
    layer = m.stages[0].block.layers[3]
    assert layer.conv1.in_channels == 24 + 3 * 12 and layer.conv1.kernel_size == (1, 1)
    assert layer.conv1.out_channels == 48 and layer.conv2.out_channels == 12  # 4k bottleneck, k new maps
    # theta = 0.5: 24 + 16*12 = 216 -> 108; 108 + 192 = 300 -> 150
    assert [s.transition.conv.out_channels for s in m.stages[1:]] == [108, 150]
    assert isinstance(m.stages[1].transition.pool, nn.AvgPool2d)
    assert m.num_features == 342
    plain = reslab.create_model("densenet_bc_100_12", bottleneck=False, compression=1.0, block_config=(12, 12, 12))
    assert plain.stem.conv.out_channels == 16  # paper: 16 for the basic DenseNet
    assert not hasattr(plain.stages[0].block.layers[0], "conv2")


def test_dropout_after_every_conv_but_the_stem():
    m = reslab.create_model("densenet_bc_100_12", block_config=(2, 2), drop_rate=0.2)
    drops = [n for n, x in m.named_modules() if isinstance(x, nn.Dropout)]
    assert len(drops) == 2 * 4 + 1  # two per bottleneck layer, one per transition
    assert all(x.p == 0.2 for x in m.modules() if isinstance(x, nn.Dropout))
    assert not any(isinstance(x, nn.Dropout) for x in reslab.create_model("densenet_bc_100_12").modules())


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, total


@pytest.mark.parametrize("name,overrides,size", [
    ("densenet_bc_100_12", {"block_config": (4, 4, 4)}, 16),
    ("densenet121", {"block_config": (3, 3), "growth_rate": 8}, 32),
    ("densenet_bc_100_12", {"block_config": (3, 3), "drop_rate": 0.2}, 16),
    ("densenet_bc_100_12", {"block_config": (3, 3), "bottleneck": False}, 16),
])
def test_memory_efficient_gives_equal_gradients_and_running_stats(name, overrides, size):
    torch.manual_seed(0)
    ref = reslab.create_model(name, **overrides).train()
    eff = reslab.create_model(name, memory_efficient=True, **overrides).train()
    eff.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, size, size)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = []
    saved = []
    for model, xi in zip((ref, eff), xs):
        torch.manual_seed(1)  # the same dropout masks in both
        out, nbytes = _saved_bytes(model, xi)
        out.pow(2).mean().backward()
        outs.append(out)
        saved.append(nbytes)
    # The checkpointed layers really store less for the backward pass.
    assert saved[1] < saved[0], saved
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-6, rtol=1e-5)
    for (n, p), q in zip(ref.named_parameters(), eff.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), n
    # Recomputation must not update the BN running statistics a second time.
    for (n, b), c in zip(ref.named_buffers(), eff.buffers()):
        assert torch.equal(b, c) if b.dtype == torch.long else torch.allclose(b, c, atol=1e-6), n


def test_memory_efficient_layers_recompute_only_in_training():
    m = reslab.create_model("densenet_bc_100_12", block_config=(2, 2), memory_efficient=True).eval()
    assert all(layer.memory_efficient for layer in m.modules() if isinstance(layer, DenseLayer))
    with torch.no_grad():
        out = m(torch.randn(1, 3, 16, 16))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,size,expected", [
    # The ImageNet stem's map is taken before its max-pool (stride 2), as timm's feature_info.
    ("densenet121", 64, [(64, 2), (256, 4), (512, 8), (1024, 16), (1024, 32)]),
    ("densenet_bc_100_12", 32, [(24, 1), (216, 1), (300, 2), (342, 4)]),
])
def test_features_only_returns_advertised_maps(name, size, expected):
    m = reslab.create_model(name, features_only=True).eval()
    assert [(f.num_chs, f.reduction) for f in m.feature_info] == expected
    with torch.no_grad():
        maps = m(torch.randn(1, 3, size, size))
    assert len(maps) == len(expected)
    for fmap, (chs, red) in zip(maps, expected):
        assert fmap.shape[1:] == (chs, size // red, size // red)
    sel = reslab.create_model(name, features_only=True, out_indices=(1, -1)).eval()
    with torch.no_grad():
        picked = sel(torch.randn(1, 3, size, size))
    assert [t.shape[1] for t in picked] == [expected[1][0], expected[-1][0]]


def test_forward_head_and_reset_classifier():
    m = reslab.create_model("densenet_bc_100_12", block_config=(2, 2, 2)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.min() >= 0  # final BN-ReLU applied
        assert torch.allclose(m.forward_head(feats), m(x))
    m.reset_classifier(7)
    assert m(x).shape == (2, 7)
    assert isinstance(m.stages[1].transition, Transition) and isinstance(m, DenseNet)


@pytest.mark.parametrize("overrides,match", [
    ({"growth_rate": 0}, "growth_rate"),
    ({"growth_rate": 12.5}, "growth_rate"),
    ({"block_config": ()}, "block_config"),
    ({"block_config": (4, 0, 4)}, "block_config"),
    ({"compression": 0.0}, "compression"),
    ({"compression": 1.5}, "compression"),
    ({"compression": 0.001}, "compression"),
    ({"stem": "tiny"}, "stem"),
    ({"init_features": 0}, "init_features"),
    ({"bn_size": 0}, "bn_size"),
    ({"drop_rate": 1.0}, "drop_rate"),
    ({"memory_efficient": "yes"}, "memory_efficient"),
    ({"bottleneck": 1}, "bottleneck"),
    ({"num_classes": -1}, "num_classes"),
    ({"in_chans": 0}, "in_chans"),
    ({"out_indices": (9,)}, "out_indices"),
    ({"growth": 12}, "'growth'"),
])
def test_bad_options_raise_reslab_error(overrides, match):
    with pytest.raises(ReslabError, match=match):
        reslab.create_model("densenet_bc_100_12", **overrides)
