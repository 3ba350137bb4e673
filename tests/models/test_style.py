"""``style_johnson``: the transformation network of Johnson, Alahi & Fei-Fei 2016 (supplementary
material, Table 1), its parameter count from the architecture, any image size in and out, the
options (batch norm, nearest-neighbour upsampling, a narrow net), and ``reslab info``."""

import pytest
import torch
from torch import nn

import reslab
from reslab.cli import main
from reslab.errors import ReslabError
from reslab.models import get_model_entry
from tests.models._helpers import meta_model, n_params


def conv(cin: int, cout: int, k: int, norm: bool = True) -> int:
    """Weights and bias of a k x k convolution, and the scale and shift of the norm after it."""
    return cin * cout * k * k + cout + (2 * cout if norm else 0)


def table1_params(w1: int = 32, w2: int = 64, w3: int = 128, blocks: int = 5) -> int:
    """Table 1 of the supplementary material, layer by layer."""
    return (conv(3, w1, 9)                       # 32 x 9 x 9 conv, stride 1
            + conv(w1, w2, 3) + conv(w2, w3, 3)  # 64 and 128 x 3 x 3 convs, stride 2
            + blocks * 2 * conv(w3, w3, 3)       # residual blocks: two 128 x 3 x 3 convs each
            + conv(w3, w2, 3) + conv(w2, w1, 3)  # 64 and 32 x 3 x 3 convs, stride 1/2
            + conv(w1, 3, 9, norm=False))        # 3 x 9 x 9 conv, stride 1 (then the scaled tanh)


def test_the_papers_network_has_the_parameters_of_table_1():
    assert table1_params() == 1_679_235  # the count of PyTorch's examples/fast_neural_style TransformerNet too
    for norm in ("instance", "batch"):
        for upsample in ("transposed", "nearest"):
            assert n_params(meta_model("style_johnson", norm=norm, upsample=upsample)) == 1_679_235, (norm, upsample)
    assert n_params(meta_model("style_johnson", widths=(8, 16, 32), blocks=2)) == table1_params(8, 16, 32, 2)


def test_the_registry_entry():
    entry = get_model_entry("style_johnson")
    assert entry.task == "stylize" and entry.family == "style" and entry.input_size == (3, 256, 256)
    assert "Johnson" in entry.paper


def test_layers_and_norms_are_the_chosen_ones():
    m = reslab.create_model("style_johnson")
    norms = [type(x) for x in m.modules() if isinstance(x, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert len(norms) == 2 + 2 + 2 * 5 + 1 and set(norms) == {nn.InstanceNorm2d}  # every conv but the last
    assert all(x.affine for x in m.modules() if isinstance(x, nn.InstanceNorm2d))
    ups = [x for x in m.modules() if isinstance(x, nn.ConvTranspose2d)]
    assert [(u.stride, u.in_channels, u.out_channels) for u in ups] == [((2, 2), 128, 64), ((2, 2), 64, 32)]
    assert sum(isinstance(x, nn.ReflectionPad2d) for x in m.modules()) == 3 + 2 * 5 + 1
    bn = reslab.create_model("style_johnson", norm="batch", upsample="nearest")
    assert not any(isinstance(x, (nn.InstanceNorm2d, nn.ConvTranspose2d)) for x in bn.modules())
    assert sum(isinstance(x, nn.Upsample) for x in bn.modules()) == 2


@pytest.mark.parametrize("side", [(32, 32), (37, 50), (5, 9)])
def test_any_image_size_in_the_same_size_out_in_the_unit_range(side):
    torch.manual_seed(0)
    m = reslab.create_model("style_johnson", widths=(8, 16, 32), blocks=2)
    x = torch.rand(2, 3, *side)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_a_side_not_a_multiple_of_4_is_the_padded_images_output_cropped():
    torch.manual_seed(0)
    m = reslab.create_model("style_johnson", widths=(8, 16, 32), blocks=1).eval()
    x = torch.rand(1, 3, 30, 41)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2), mode="reflect")
    with torch.no_grad():
        assert torch.equal(m(x), m(padded)[..., :30, :41])


def test_shapes_follow_table_1_at_256_pixels(capsys):
    assert main(["info", "style_johnson"]) == 0
    out = capsys.readouterr().out
    for row, shape in (("conv1", "32x256x256"), ("conv2", "64x128x128"), ("conv3", "128x64x64"), ("res.4", "128x64x64"),
                       ("up1", "64x128x128"), ("up2", "32x256x256"), ("conv_out", "3x256x256")):
        assert row in out and shape in out, row
    assert "1,679,235" in out


def test_wrong_input_and_options_are_one_line_errors():
    m = reslab.create_model("style_johnson", widths=(4, 4, 4), blocks=0)
    with pytest.raises(ReslabError, match=r"expects images of shape \(N, 3, H, W\)"):
        m(torch.rand(1, 1, 16, 16))
    with pytest.raises(ReslabError, match="norm must be"):
        reslab.create_model("style_johnson", norm="group")
    with pytest.raises(ReslabError, match="widths must be three"):
        reslab.create_model("style_johnson", widths=(8, 16))
    # the training loop passes the data's class count: accepted, unused
    assert n_params(reslab.create_model("style_johnson", num_classes=10, widths=(4, 4, 4), blocks=0)) == \
        table1_params(4, 4, 4, 0)
