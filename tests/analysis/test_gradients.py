import pytest
import torch
import torch.nn.functional as F

from reslab import create_model
from reslab.analysis import layer_gradient_norms, weighted_layers
from reslab.errors import ReslabError


def _net(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_chans=1, **kw)


def test_norms_are_the_weight_gradients_of_a_training_step_and_leave_the_net_unchanged(images):
    x, y = images
    model = _net("resnet20", layers=(1, 1, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    got = layer_gradient_norms(model, x, y)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats restored
    assert all(p.grad is None for p in model.parameters())
    ref = _net("resnet20", layers=(1, 1, 1)).train()
    F.cross_entropy(ref(x), y).backward()
    layers = [(n, m) for n, m in ref.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    # run order of a ResNet: stem conv, then per block conv1, conv2, then the classifier
    assert [n for n, _ in got] == [n for n, _ in weighted_layers(ref, x)]
    assert [n for n, _ in got][0] == "stem.conv" and [n for n, _ in got][-1] == "head.fc"
    expect = {n: float(m.weight.grad.double().norm()) for n, m in layers}
    for name, value in got:
        assert value == pytest.approx(expect[name], rel=1e-4)


def test_plain_nets_early_gradients_change_exponentially_with_depth_residual_nets_do_not(images):
    # With batch norm the plain net's first layers get ever *larger* gradients as depth grows
    # (Philipp et al. 2018); the shortcuts keep a residual net's first/last ratio near 1.
    x, y = images
    ratio = {}
    for name in ("plain20", "plain56", "resnet20", "resnet56"):
        n = layer_gradient_norms(_net(name), x, y)
        ratio[name] = n[0][1] / n[-1][1]
    assert ratio["plain56"] / ratio["plain20"] > 20
    assert 0.25 < ratio["resnet56"] / ratio["resnet20"] < 4
    assert 0.05 < ratio["resnet56"] < 20 and ratio["plain56"] > 100


def test_bad_batch():
    with pytest.raises(ReslabError, match="at least 2"):
        layer_gradient_norms(_net("resnet20", layers=(1, 1, 1)), torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
