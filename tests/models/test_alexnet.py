"""AlexNet and ZFNet against their papers and against torchvision."""

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models.layers import LocalResponseNorm
from tests.models._helpers import assert_feature_maps, assert_matches_torchvision, meta_model, n_params, unfilled_model


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
    # ... and alpha_over_size asks for that reading (GoogLeNet's Caffe model).
    caffe = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0, alpha_over_size=True)(a)
    torch.testing.assert_close(caffe, torch_lrn, rtol=0, atol=0)
    with pytest.raises(ReslabError, match="odd"):
        LocalResponseNorm(4)


# --- the papers ---------------------------------------------------------------------------------

def test_alexnet_matches_the_paper():
    m = meta_model("alexnet")
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
    assert n_params(m) == sum(by_layer) == 60_965_224
    assert abs(n_params(m) - 60e6) / 60e6 < 0.02
    # Sec. 3.5 neurons per layer from conv2 on (the paper's conv1 figure, 253,440, contradicts its
    # own 227 -> 55x55x96 arithmetic).
    sizes = _output_sizes(m, torch.zeros(1, 3, 227, 227, device="meta"), (nn.Conv2d, nn.Linear))
    neurons = [torch.Size(sizes[k]).numel() for k in
               ("stages.0.conv2", "stages.1.conv3", "stages.1.conv4", "stages.1.conv5", "head.mlp.fc6", "head.mlp.fc7", "head.fc")]
    assert neurons == [186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
    assert sizes["stem.conv1"] == (96, 55, 55)


def test_zfnet_matches_figure_3():
    m = meta_model("zfnet")
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
    assert n_params(m) == sum(by_layer)


# --- torchvision --------------------------------------------------------------------------------

def test_alexnet_tv_equals_torchvision():
    torch.manual_seed(0)
    assert_matches_torchvision(unfilled_model("alexnet_tv"), torchvision.models.alexnet(), (3, 224, 224), batch=1)
    m = reslab.create_model("alexnet_tv")
    assert [d for d in m.head.mlp._modules][:2] == ["drop6", "fc6"]  # torchvision's dropout order


def test_torchvision_weights_for_another_architecture_are_rejected():
    with torch.device("meta"):
        tv = torchvision.models.alexnet()
    with pytest.raises(ReslabError, match="shape mismatch.*stem.conv1.weight"):
        reslab.load_torchvision_state_dict(meta_model("alexnet"), tv.state_dict())


# --- the backbone contract ----------------------------------------------------------------------

@pytest.mark.parametrize("name,size,expected", [
    ("alexnet", 227, [(96, 8, 27), (256, 16, 13), (256, 32, 6)]),
    ("alexnet_tv", 224, [(64, 8, 27), (192, 16, 13), (256, 32, 6)]),
    ("zfnet", 224, [(96, 4, 55), (256, 16, 13), (256, 32, 6)]),
])
def test_features_only_channels_and_strides(name, size, expected):
    assert_feature_maps(name, size, expected)


def test_pooled_features_without_classifier():
    headless = meta_model("alexnet_tv", num_classes=0)
    assert headless(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 4096)


@pytest.mark.parametrize("name,options,message", [
    ("alexnet", {"groups": (1, 2, 1)}, "one entry per conv layer"),
    ("alexnet", {"lrn_size": 4}, "lrn_size must be a positive odd"),
    ("alexnet", {"pool_after": (0, 1)}, "pool_after must be"),
    ("alexnet", {"groups": (1, 3, 1, 2, 2)}, "conv2 has groups=3"),
    ("zfnet", {"colour": "red"}, "'colour'"),
])
def test_bad_options_are_rejected(name, options, message):
    with pytest.raises(ReslabError, match=message):
        reslab.create_model(name, **options)
