"""Stacked hourglass networks (Newell et al. 2016): the parameter count module by module, the
residual module and the recursion as in the authors' Torch code, intermediate supervision,
sizes."""

import pytest
import torch
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models import get_model_entry, list_models
from reslab.models.base import AuxOutput
from reslab.models.hourglass import Hourglass, HourglassResidual
from tests.models._helpers import meta_model, n_params


def _conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out  # Torch's convolutions have biases


def residual_params(c_in: int, c_out: int) -> int:
    """pose-hg-train's Residual(numIn, numOut): BN-ReLU-1x1 (numOut/2), BN-ReLU-3x3, BN-ReLU-1x1
    (numOut), plus a 1x1 skip conv where numIn != numOut."""
    mid = c_out // 2
    branch = 2 * c_in + _conv(1, c_in, mid) + 2 * mid + _conv(3, mid, mid) + 2 * mid + _conv(1, mid, c_out)
    return branch + (_conv(1, c_in, c_out) if c_in != c_out else 0)


def hourglass_net_params(stacks: int, classes: int, in_chans: int = 3, f: int = 256, depth: int = 4) -> int:
    """hg.lua's createModel: the stem, per stack an hourglass (3 residuals per level and one at the
    bottom), one residual and lin (1x1 conv + BN) at the output resolution, the heatmap conv, and
    between stacks the two 1x1 remaps."""
    stem = _conv(7, in_chans, 64) + 2 * 64 + residual_params(64, 128) + residual_params(128, 128) + residual_params(128, f)
    hourglass = (3 * depth + 1) * residual_params(f, f)
    stack = hourglass + residual_params(f, f) + _conv(1, f, f) + 2 * f + _conv(1, f, classes)
    remaps = _conv(1, f, f) + _conv(1, classes, f)
    return stem + stacks * stack + (stacks - 1) * remaps


@pytest.mark.parametrize("stacks", [1, 2, 4, 8])
def test_parameter_count_module_by_module(stacks):
    assert n_params(meta_model(f"hourglass{stacks}")) == hourglass_net_params(stacks, 2)
    assert n_params(meta_model(f"hourglass{stacks}", num_classes=16, in_chans=1)) == hourglass_net_params(stacks, 16, 1)


def test_eight_stack_pose_network_figure():
    # The figure in the module docstring: 8 stacks, MPII's 16 joints.
    assert hourglass_net_params(8, 16) == n_params(meta_model("hourglass8", num_classes=16)) == 25_434_112


def test_residual_module_is_the_papers():
    block = HourglassResidual(128, 256)
    names = [n for n, _ in block.named_children()]
    assert names == ["bn1", "act1", "conv1", "bn2", "act2", "conv2", "bn3", "act3", "conv3", "shortcut"]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in (block.conv1, block.conv2, block.conv3)] == [
        (128, 128, (1, 1)), (128, 128, (3, 3)), (128, 256, (1, 1))]
    assert isinstance(block.shortcut, nn.Conv2d) and isinstance(HourglassResidual(256, 256).shortcut, nn.Identity)
    # Pre-activation: the branch sees BN-ReLU of the input, the shortcut the raw input.
    torch.manual_seed(0)
    block = HourglassResidual(8, 8).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        branch = block.conv1(torch.relu(block.bn1(x)))
        branch = block.conv2(torch.relu(block.bn2(branch)))
        branch = block.conv3(torch.relu(block.bn3(branch)))
        assert torch.allclose(block(x), branch + x)


def test_hourglass_recursion_pools_four_times_and_upsamples_nearest():
    hg = Hourglass(4, 8, 1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in hg.modules()) == 4
    ups = [m for m in hg.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "nearest" and u.scale_factor == 2 for u in ups)
    sizes = []
    for m in hg.modules():
        if isinstance(m, Hourglass):
            m.low1.register_forward_hook(lambda mod, i, o: sizes.append(o.shape[-1]))
    hg.eval()
    with torch.no_grad():
        assert hg(torch.randn(1, 8, 64, 64)).shape == (1, 8, 64, 64)
    assert sizes == [32, 16, 8, 4]  # 64x64 features down to 4x4, as in the paper


def test_training_returns_every_stack_and_eval_the_last():
    torch.manual_seed(0)
    m = reslab.create_model("hourglass2", in_chans=1, num_classes=3, features=32)  # narrow: wiring only
    x = torch.randn(2, 1, 64, 128)
    m.train()
    out = m(x)
    assert isinstance(out, AuxOutput) and out.aux_weights == [1.0]
    assert out.logits.shape == out.aux_logits[0].shape == (2, 3, 64, 128)
    (out.logits.pow(2).mean() + out.aux_logits[0].pow(2).mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        last = m(x)
        heat = m.forward_heatmaps(x)
    assert last.shape == (2, 3, 64, 128) and len(heat) == 2 and heat[-1].shape == (2, 3, 16, 32)
    expected = torch.nn.functional.interpolate(heat[-1], size=(64, 128), mode="bilinear", align_corners=False)
    assert torch.equal(last, expected)
    one = reslab.create_model("hourglass1", num_classes=2, features=32).train()
    out1 = one(torch.randn(2, 3, 64, 64))
    assert isinstance(out1, AuxOutput) and out1.aux_logits == [] and out1.logits.shape == (2, 2, 64, 64)


def test_stacks_feed_their_remapped_predictions_forward():
    torch.manual_seed(0)
    m = reslab.create_model("hourglass2", features=32).eval()
    first, last = m.stacks
    assert not hasattr(last, "remap_features") and hasattr(first, "remap_heatmap")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = m.stem(x)
        y = first.lin(first.residuals(first.hourglass(feats)))
        heat = first.heatmap(y)
        nxt = feats + first.remap_features(y) + first.remap_heatmap(heat)
        expected = last.heatmap(last.lin(last.residuals(last.hourglass(nxt))))
        assert torch.allclose(m.forward_heatmaps(x)[-1], expected, atol=1e-6)


def test_sizes_and_registry():
    m = meta_model("hourglass4")
    assert m.output_margin(256, 192) == (0, 0)
    with pytest.raises(ReslabError, match="multiples of 64 .*nearest legal side to 100: 64 or 128"):
        m.check_input_size(100, 64)
    with pytest.raises(ReslabError, match="nearest legal side to 32: 64"):
        m.check_input_size(64, 32)
    assert list_models("hourglass*") == ["hourglass1", "hourglass2", "hourglass4", "hourglass8"]
    e = get_model_entry("hourglass8")
    assert (e.task, e.input_size, e.family) == ("segment", (3, 256, 256), "hourglass") and "Newell" in e.paper
    info = reslab.model_info(meta_model("hourglass2"), (3, 256, 256))
    assert [(r.name, r.output_shape) for r in info.rows] == [
        ("stem", (256, 64, 64)), ("stacks.0", (256, 64, 64)), ("stacks.1", (256, 64, 64))]
    assert sum(r.macs for r in info.rows) == info.macs and sum(r.params for r in info.rows) == info.params
