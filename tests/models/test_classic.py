"""LeNet-5, AlexNet, ZFNet and VGG against their papers and against torchvision."""

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models import model_info
from reslab.models.classic import LENET5_C3_TABLE, LocalResponseNorm, PartialConv2d, Subsampling

VGG_NAMES = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta(name: str, **options) -> nn.Module:
    """A reslab model without storage: structure, parameter counts and shapes at no cost."""
    with torch.device("meta"):
        return reslab.create_model(name, **options).eval()


def _meta_tv(name: str) -> nn.Module:
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


def _output_sizes(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...]) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every submodule of the given kinds, by module name."""
    sizes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, kinds):
            hooks.append(m.register_forward_hook(lambda _m, _i, out, name=name: sizes.__setitem__(name, tuple(out.shape[1:]))))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return sizes


# --- local response normalisation ---------------------------------------------------------------

def _lrn_by_the_paper(a: torch.Tensor, n: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Krizhevsky et al. 2012 Sec. 3.3, written out: b_i = a_i / (k + alpha sum_j a_j^2)^beta."""
    channels = a.shape[1]
    b = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        total = sum(a[:, j] ** 2 for j in range(lo, hi + 1))
        b[:, i] = a[:, i] / (k + alpha * total) ** beta
    return b


def test_lrn_is_the_papers_formula():
    torch.manual_seed(0)
    a = torch.randn(2, 9, 4, 5, dtype=torch.float64) * 30  # large enough that alpha * sum matters
    ours = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    expected = _lrn_by_the_paper(a, 5, 1e-4, 0.75, 2.0)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
    assert (ours - a / 2.0**0.75).abs().max() > 1e-2  # the normalisation is not negligible here
    # torch.nn.LocalResponseNorm reads alpha as alpha / n: with the paper's constants it differs.
    torch_lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    assert (torch_lrn - expected).abs().max() > 1e-2
    with pytest.raises(ReslabError, match="odd"):
        LocalResponseNorm(4)


# --- LeNet-5 ------------------------------------------------------------------------------------

# Table I of the paper as printed: row i = S2 map i, column j = C3 map j.
PAPER_TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
""".split()


def test_lenet5_layer_parameters_match_the_paper():
    m = reslab.create_model("lenet5")
    layers = {"C1": m.stem.c1, "S2": m.stem.s2, "C3": m.stages[0].c3, "S4": m.stages[0].s4,
              "C5": m.stages[1].c5, "F6": m.head.mlp.fc6}
    counts = {name: _params(layer) for name, layer in layers.items()}
    assert counts == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert isinstance(m.stem.s2, Subsampling) and isinstance(m.stages[0].c3, PartialConv2d)
    # The paper's 840-weight RBF output layer is replaced by a linear classifier (850 parameters).
    assert _params(m) == sum(counts.values()) + 84 * 10 + 10
    # Multiply-adds: the paper's connection counts less biases and the subsampling layers, plus the
    # multiplies by zero of C3's dense kernel (10x10 positions x 36 unconnected pairs x 25).
    connections = {"C1": 122_304, "C3": 151_600, "C5": 48_120, "F6": 10_164, "output": 840}
    biases = {"C1": 28 * 28 * 6, "C3": 10 * 10 * 16, "C5": 120, "F6": 84, "output": 0}
    paper_macs = sum(connections[k] - biases[k] for k in connections)
    assert sum(connections.values()) + 5_880 + 2_000 == 340_908  # with S2 and S4: the paper's total
    assert paper_macs == 326_520
    assert model_info(m).macs == paper_macs + 10 * 10 * (96 - 60) * 25


def test_lenet5_c3_follows_table_i():
    table = [[PAPER_TABLE_I[i][j] == "X" for i in range(6)] for j in range(16)]
    assert [tuple(i for i in range(6) if col[i]) for col in table] == list(LENET5_C3_TABLE)
    torch.manual_seed(0)
    c3 = reslab.create_model("lenet5").stages[0].c3
    assert tuple(c3.weight.shape) == (60, 5, 5)
    x = torch.randn(1, 6, 14, 14)
    with torch.no_grad():
        base = c3(x)
        for i in range(6):
            bumped = x.clone()
            bumped[:, i] += 1.0
            changed = (c3(bumped) - base).abs().flatten(2).amax(-1)[0] > 0
            assert changed.tolist() == [table[j][i] for j in range(16)], f"S2 map {i}"


def test_lenet5_scaled_tanh_and_modern_variant():
    m = reslab.create_model("lenet5")
    act = m.stem.act1
    one = torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(act(one), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(act(torch.tensor([3.0])), 1.7159 * torch.tanh(torch.tensor([2.0])))
    modern = reslab.create_model("lenet5", c3_table=False, pool="max", act="relu")
    kinds = {type(mod) for mod in modern.modules()}
    assert nn.MaxPool2d in kinds and nn.ReLU in kinds and Subsampling not in kinds and PartialConv2d not in kinds
    assert _params(modern.stages[0].c3) == 16 * 6 * 25 + 16
    assert _params(modern) == 61_706  # the figure usually quoted for this variant
    assert modern(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.fixture
def one_thread():
    # Tiny ops on a shared 2-core machine: two threads measured 8-18 s for this loop, one 1 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lenet5_as_published_learns(one_thread):
    # Gradients reach every trainable piece (subsampling coefficients, the partial C3): the paper's
    # network memorises a small batch.
    torch.manual_seed(0)
    m = reslab.create_model("lenet5")
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() > 0.9
    assert (m.stem.s2.weight != 0.25).all() and (m.stages[0].s4.bias != 0).all()


# --- AlexNet and ZFNet ----------------------------------------------------------------------------

def test_alexnet_matches_the_paper():
    m = _meta("alexnet")
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    # Sec. 3.5: kernels 11x11x3, 5x5x48, 3x3x256, 3x3x192, 3x3x192 (conv2, 4, 5 see one GPU's maps).
    assert [tuple(c.weight.shape) for c in convs] == [
        (96, 3, 11, 11), (256, 48, 5, 5), (384, 256, 3, 3), (384, 192, 3, 3), (256, 192, 3, 3)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert list(m.stem._modules) == ["conv1", "act1", "lrn1", "pool1"]  # ReLU, then LRN, then pooling
    assert list(m.stages[0]._modules) == ["conv2", "act2", "lrn2", "pool2"]
    assert all(isinstance(p, nn.MaxPool2d) and p.kernel_size == 3 and p.stride == 2
               for p in (m.stem.pool1, m.stages[0].pool2, m.stages[1].pool5))
    lrn = m.stem.lrn1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    drops = [mod.p for mod in m.head.modules() if isinstance(mod, nn.Dropout)]
    assert drops == [0.5, 0.5] and list(m.head.mlp._modules) == ["fc6", "act6", "drop6", "fc7", "act7", "drop7"]
    # Parameters: "60 million"; layer by layer from the paper's kernel shapes and 9216-4096-4096-1000.
    by_layer = [96 * 363 + 96, 256 * 1200 + 256, 384 * 2304 + 384, 384 * 1728 + 384, 256 * 1728 + 256,
                9216 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]
    assert _params(m) == sum(by_layer) == 60_965_224
    assert abs(_params(m) - 60e6) / 60e6 < 0.02
    # Sec. 3.5 neurons per layer from conv2 on (the paper's conv1 figure, 253,440, contradicts its
    # own 227 -> 55x55x96 arithmetic).
    sizes = _output_sizes(m, torch.zeros(1, 3, 227, 227, device="meta"), (nn.Conv2d, nn.Linear))
    neurons = [torch.Size(sizes[k]).numel() for k in
               ("stages.0.conv2", "stages.1.conv3", "stages.1.conv4", "stages.1.conv5", "head.mlp.fc6", "head.mlp.fc7", "head.fc")]
    assert neurons == [186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
    assert sizes["stem.conv1"] == (96, 55, 55)


def test_zfnet_matches_figure_3():
    m = _meta("zfnet")
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [
        (96, 3, 7, 7), (256, 96, 5, 5), (384, 256, 3, 3), (384, 384, 3, 3), (256, 384, 3, 3)]
    assert [c.stride[0] for c in convs] == [2, 2, 1, 1, 1] and all(c.groups == 1 for c in convs)
    assert list(m.stem._modules) == ["conv1", "act1", "pool1", "lrn1"]  # pooled, then normalised
    sizes = _output_sizes(m, torch.zeros(1, 3, 224, 224, device="meta"), (nn.Conv2d, nn.MaxPool2d))
    assert [sizes[k][1] for k in ("stem.conv1", "stem.pool1", "stages.0.conv2", "stages.0.pool2",
                                  "stages.1.conv3", "stages.1.conv4", "stages.1.conv5", "stages.1.pool5")] == \
        [110, 55, 26, 13, 13, 13, 13, 6]
    by_layer = [96 * 147 + 96, 256 * 2400 + 256, 384 * 2304 + 384, 384 * 3456 + 384, 256 * 3456 + 256,
                9216 * 4096 + 4096, 4096 * 4096 + 4096, 4096 * 1000 + 1000]
    assert _params(m) == sum(by_layer)


def _randomise(model: nn.Module) -> nn.Module:
    """Non-default biases, BN affine parameters and running statistics, so every key matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None:
                mod.bias.uniform_(-0.1, 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(7)
    return model


def _assert_same_as_torchvision(name: str, tv: nn.Module, size: int) -> None:
    tv = _randomise(tv).eval()
    # Our own initialisation is overwritten by the load, so build without running it.
    ours = _meta(name).to_empty(device="cpu")
    assert _params(ours) == _params(tv)
    reslab.load_torchvision_state_dict(ours, tv.state_dict())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = tv(x), ours(x)
    assert expected.std() > 1e-3  # a real signal, not a vanishing one
    assert (got - expected).abs().max() < 1e-5


def test_alexnet_tv_equals_torchvision():
    torch.manual_seed(0)
    _assert_same_as_torchvision("alexnet_tv", torchvision.models.alexnet(), 224)
    m = reslab.create_model("alexnet_tv")
    assert [d for d in m.head.mlp._modules][:2] == ["drop6", "fc6"]  # torchvision's dropout order


@pytest.mark.parametrize("name", VGG_NAMES)
def test_vgg_equals_torchvision(name):
    torch.manual_seed(0)
    # VGG's adaptive pooling accepts 64x64 (a 2x2 map before the classifier), which keeps this fast.
    _assert_same_as_torchvision(name, getattr(torchvision.models, name)(), 64)


def test_torchvision_weights_for_another_architecture_are_rejected():
    paper, vgg11, vgg16 = _meta("alexnet"), _meta("vgg11"), _meta("vgg16", num_classes=10)
    with pytest.raises(ReslabError, match="shape mismatch.*stem.conv1.weight"):
        reslab.load_torchvision_state_dict(paper, _meta_tv("alexnet").state_dict())
    with pytest.raises(ReslabError, match="do not fit vgg11.*unexpected: features"):
        reslab.load_torchvision_state_dict(vgg11, _meta_tv("vgg13").state_dict())
    with pytest.raises(ReslabError, match="shape mismatch.*head.fc.weight"):
        reslab.load_torchvision_state_dict(vgg16, _meta_tv("vgg16").state_dict())


def test_vgg_parameters_and_multiply_adds():
    # Table 2 of the paper, in millions: A 133, B 133, D 138, E 144.
    paper_millions = {11: 133, 13: 133, 16: 138, 19: 144}
    for name in VGG_NAMES:
        ours = _meta(name)
        assert _params(ours) == _params(_meta_tv(name)), name
        assert round(_params(ours) / 1e6) == paper_millions[int(name[3:5])], name
        assert ours.spec.depth == int(name[3:5])
    vgg16, vgg19 = _meta("vgg16"), _meta("vgg19")
    assert _params(vgg16) == 138_357_544
    # He et al. 2015 Sec. 3.3: "the VGG-19 model ... has 19.6 billion FLOPs" (multiply-adds).
    assert round(model_info(vgg19).macs / 1e9, 1) == 19.6


# --- the backbone contract ----------------------------------------------------------------------

FEATURES = {
    "lenet5": (32, [(6, 2, 14), (16, 4, 5), (120, 4, 1)]),
    "alexnet": (227, [(96, 8, 27), (256, 16, 13), (256, 32, 6)]),
    "alexnet_tv": (224, [(64, 8, 27), (192, 16, 13), (256, 32, 6)]),
    "zfnet": (224, [(96, 4, 55), (256, 16, 13), (256, 32, 6)]),
    "vgg11_bn": (64, [(3, 1, 64), (64, 2, 32), (128, 4, 16), (256, 8, 8), (512, 16, 4), (512, 32, 2)]),
}


@pytest.mark.parametrize("name", list(FEATURES))
def test_features_only_channels_and_strides(name):
    size, expected = FEATURES[name]
    m = reslab.create_model(name, features_only=True).eval()
    assert [(f.num_chs, f.reduction) for f in m.feature_info] == [(c, r) for c, r, _ in expected]
    c = m.in_chans
    with torch.no_grad():
        maps = m(torch.randn(1, c, size, size))
    assert [tuple(f.shape[1:]) for f in maps] == [(c, s, s) for c, _, s in expected]
    last = reslab.create_model(name, features_only=True, out_indices=(-1,)).eval()
    with torch.no_grad():
        assert last(torch.randn(1, c, size, size))[0].shape == maps[-1].shape


def test_forward_features_head_and_classifier_reset():
    torch.manual_seed(0)
    m = reslab.create_model("lenet5").eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (3, 120, 1, 1)
        assert m.forward_head(feats, pre_logits=True).shape == (3, 84)
        torch.testing.assert_close(m.forward_head(feats), m(x))
        m.reset_classifier(5)
        assert m(x).shape == (3, 5) and m.get_classifier().in_features == 84
    headless = _meta("alexnet_tv", num_classes=0)
    assert headless(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 4096)
    assert isinstance(_meta("vgg16", features_only=True).head, nn.Identity)  # no 120M unused parameters


def test_bad_options_are_rejected():
    bad = [
        ("lenet5", {"pool": "median"}, "pool must be"),
        ("lenet5", {"act": "gelu"}, "act must be"),
        ("lenet5", {"widths": (8, 16, 120)}, "Table I.*c3_table=False"),
        ("alexnet", {"groups": (1, 2, 1)}, "one entry per conv layer"),
        ("alexnet", {"lrn_size": 4}, "lrn_size must be a positive odd"),
        ("alexnet", {"pool_after": (0, 1)}, "pool_after must be"),
        ("alexnet", {"groups": (1, 3, 1, 2, 2)}, "conv2 has groups=3"),
        ("vgg16", {"layers": (2, 2)}, "equal length"),
        ("vgg16", {"drop_rate": 1.5}, "drop_rate"),
        ("vgg16", {"num_classes": -1}, "num_classes"),
        ("zfnet", {"colour": "red"}, "'colour'"),
    ]
    for name, options, message in bad:
        with pytest.raises(ReslabError, match=message):
            reslab.create_model(name, **options)
    assert reslab.create_model("lenet5", widths=(8, 16, 120), c3_table=False).stages[0].c3.in_channels == 8
