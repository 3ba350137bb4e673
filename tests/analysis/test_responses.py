"""layer_responses: exactly the 3x3 layers' BN outputs, in layer order, with the right std."""

import pytest
import torch
from torch import nn

from reslab import create_model
from reslab.analysis import layer_responses
from reslab.errors import ReslabError
from reslab.models.resnet import ResNet, ResNetSpec


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so a BN output differs from its input."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) * 1.5 + 0.1)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _convs3x3(model):
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_one_response_per_3x3_conv_in_layer_order(name):
    model = _randomise_bn(create_model(name, num_classes=10))
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = layer_responses(model, x)
    names = _convs3x3(model)
    assert len(out) == len(names) == 19  # 1 stem conv + 9 blocks x 2
    assert [n for n, _ in out] == names  # the order the layers run in
    assert all(s > 0 for _, s in out)


def test_std_is_that_of_the_bn_output_not_the_conv_output():
    torch.manual_seed(0)
    model = _randomise_bn(create_model("resnet20", num_classes=10))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = dict(layer_responses(model, x))
    with torch.no_grad():
        stem_conv = model.stem.conv(x)
        stem = model.stem.bn(stem_conv)
        h = model.stages[0](model.stem.act(stem.clone()))
        blk = model.stages[1][0]
        c2 = blk.conv2(blk.act1(blk.bn1(blk.conv1(h))))
        r2 = blk.bn2(c2)
    assert got["stem.conv"] == pytest.approx(float(stem.std()), rel=1e-5)
    assert got["stages.1.0.conv2"] == pytest.approx(float(r2.std()), rel=1e-5)
    assert abs(float(c2.std()) - float(r2.std())) > 0.05  # the check above tells BN output from conv output


def test_plain_net_response_matches_manual_computation():
    model = _randomise_bn(create_model("plain20", num_classes=10), seed=3)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    got = dict(layer_responses(model, x))
    with torch.no_grad():
        h = model.stages[0](model.stem(x))
        blk = model.stages[1][0]
        r1 = blk.bn1(blk.conv1(h))
    assert got["stages.1.0.conv1"] == pytest.approx(float(r1.std()), rel=1e-5)


def test_chunks_give_the_same_std_as_one_batch_and_mode_is_restored():
    model = _randomise_bn(create_model("resnet20", num_classes=10), seed=5)
    model.train()
    x = torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    whole = layer_responses(model, x)
    chunked = layer_responses(model, x, batch_size=4)  # 4 + 2
    assert [n for n, _ in whole] == [n for n, _ in chunked]
    assert [s for _, s in chunked] == pytest.approx([s for _, s in whole], rel=1e-6)
    assert model.training  # measured in eval mode, training flag restored


def test_preact_conv_not_followed_by_bn_is_measured_on_its_own_output():
    spec = ResNetSpec(block="basic", layers=(1, 1, 1), widths=(8, 16, 32), stem="cifar", shortcut="B", preact=True)
    model = _randomise_bn(ResNet(spec, num_classes=10), seed=7)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    got = dict(layer_responses(model, x))
    assert list(got) == _convs3x3(model)
    with torch.no_grad():
        blk = model.stages[0][0]
        c1 = blk.conv1(blk.act1(blk.bn1(model.stem(x))))
        bn2 = blk.bn2(c1)
        bn2_std = float(bn2.std())
        c2 = blk.conv2(blk.act2(bn2))
    assert got["stages.0.0.conv1"] == pytest.approx(bn2_std, rel=1e-5)  # taken by bn2 directly
    assert got["stages.0.0.conv2"] == pytest.approx(float(c2.std()), rel=1e-5)  # goes to the addition


def test_bad_input():
    with pytest.raises(ReslabError, match="no 3x3"):
        layer_responses(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(2, 3, 2, 2))
    with pytest.raises(ReslabError, match="N, C, H, W"):
        layer_responses(create_model("resnet20"), torch.randn(3, 32, 32))
    with pytest.raises(ReslabError, match="batch_size"):
        layer_responses(create_model("resnet20"), torch.randn(1, 3, 8, 8), batch_size=0)
