"""U-Nets: the paper's network (sizes, the parameter count of Fig. 1, initialisation, dropout),
unet_same, and the decoder over any classifier (parity with segmentation_models_pytorch, encoder
weights from reslab and torchvision classifiers, names built on demand)."""

import math

import pytest
import torch
from torch import nn

import reslab
from reslab.errors import ReslabError, UnknownModelError
from reslab.models import get_model_entry, list_models
from reslab.models.unet import BackboneUNet, UNetSpec
from tests.models._helpers import assert_same_output, meta_model, n_params, randomise

SMALL = (4, 8, 16, 32, 64)  # reduced widths, where only shapes and wiring matter
FIG1 = (64, 128, 256, 512, 1024)


def _conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def fig1_params(in_chans: int = 1, num_classes: int = 2, widths=FIG1, bn: bool = False) -> int:
    """Ronneberger et al. 2015, Fig. 1, layer by layer: two 3x3 convs per level of the contracting
    path; per step of the expansive path a 2x2 up-conv halving the channels, then two 3x3 convs on
    the concatenation with the skip; a 1x1 conv to the classes. With ``bn`` (unet_same) every 3x3
    conv loses its bias and gains a BN (2 parameters per channel)."""
    def conv3(c_in, c_out):
        return _conv(3, c_in, c_out, bias=not bn) + (2 * c_out if bn else 0)

    total, c = 0, in_chans
    for w in widths:
        total += conv3(c, w) + conv3(w, w)
        c = w
    for w in reversed(widths[:-1]):
        total += _conv(2, c, w) + conv3(2 * w, w) + conv3(w, w)
        c = w
    return total + _conv(1, widths[0], num_classes)


def test_unet_parameter_count_is_fig1s():
    count = n_params(meta_model("unet"))
    assert count == fig1_params() == 31_030_658  # the figure in UNet's docstring
    assert round(count / 1e6, 1) == 31.0
    assert n_params(meta_model("unet", in_chans=3, num_classes=5)) == fig1_params(3, 5)


def test_unet_same_parameter_count():
    assert n_params(meta_model("unet_same")) == fig1_params(bn=True)
    assert n_params(meta_model("unet_same", bn=False)) == fig1_params()


def test_572_tile_gives_388_and_fig1s_level_shapes():
    # Shapes on the meta device (the same shape rules, none of the 150 G multiply-adds).
    info = reslab.model_info(meta_model("unet"), (1, 572, 572))
    shapes = {r.name: r.output_shape for r in info.rows}
    assert shapes == {
        "down.0": (64, 568, 568), "down.1": (128, 280, 280), "down.2": (256, 136, 136),
        "down.3": (512, 64, 64), "down.4": (1024, 28, 28),
        "up.0": (512, 52, 52), "up.1": (256, 100, 100), "up.2": (128, 196, 196), "up.3": (64, 388, 388),
        "head": (2, 388, 388),
    }
    assert info.params == 31_030_658
    assert sum(r.macs for r in info.rows) == info.macs  # every multiply-add sits in a row


def test_smallest_legal_tile_runs_on_the_cpu():
    torch.manual_seed(0)
    m = reslab.create_model("unet", widths=SMALL).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 1, 188, 188))
    assert out.shape == (1, 2, 4, 4) and torch.isfinite(out).all()
    assert m.output_margin(188, 188) == (92, 92)


def test_legal_sides_are_16k_plus_188():
    m = meta_model("unet")
    legal = []
    for n in range(1, 700):
        try:
            m.check_input_size(n, n)
            legal.append(n)
        except ReslabError:
            pass
    assert legal == list(range(188, 700, 16))
    # Each legal side runs (meta shapes) to 16k + 4, a margin of 92 on each side.
    for n in legal:
        out = m(torch.zeros(1, 1, n, 8 * 16 + 188, device="meta"))
        assert out.shape[-2:] == (n - 184, 128 + 4)
        assert m.output_margin(n, 572) == (92, 92)


def test_illegal_sizes_name_the_legal_ones():
    m = meta_model("unet")
    with pytest.raises(ReslabError, match=r"16k \+ 188 \(the smallest is 188, giving 4 output pixels\); nearest legal side to 100: 188"):
        m.check_input_size(100, 572)
    with pytest.raises(ReslabError, match="nearest legal side to 570: 556 or 572"):
        m.output_margin(572, 570)
    with pytest.raises(ReslabError, match="cannot take a 570x572 input"):
        m(torch.zeros(1, 1, 570, 572, device="meta"))
    with pytest.raises(ReslabError, match=r"expects input of shape \(N, 1, H, W\)"):
        m(torch.zeros(1, 3, 572, 572, device="meta"))
    same = meta_model("unet_same")
    with pytest.raises(ReslabError, match="multiples of 16; nearest legal side to 40: 32 or 48"):
        same.check_input_size(40, 32)
    with pytest.raises(ReslabError, match="multiples of 16; nearest legal side to 8: 16"):
        same.check_input_size(8, 8)


def test_unet_same_keeps_the_size_and_trains():
    torch.manual_seed(0)
    m = reslab.create_model("unet_same", widths=SMALL, num_classes=3, in_chans=3)
    assert m.output_margin(32, 48) == (0, 0)
    out = m(torch.randn(2, 3, 32, 48))
    assert out.shape == (2, 3, 32, 48)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert sum(isinstance(x, nn.BatchNorm2d) for x in m.modules()) == 2 * (5 + 4)
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3))


def test_he_initialisation_as_the_paper_and_the_caffe_model():
    torch.manual_seed(0)
    m = reslab.create_model("unet")
    # Paper Sec. 3: std sqrt(2/N), N = 9 * c_in for a 3x3 conv (the paper's example: 9 * 64).
    for conv in (m.down[4].conv2, m.down[1].conv1, m.up[1].convs.conv1):
        expected = math.sqrt(2 / (9 * conv.in_channels))
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)
    # Up-convolutions: the Caffe msra filler's N = k*k*c_out (count / num of the weight blob).
    up = m.up[0].upconv
    assert (up.in_channels, up.out_channels) == (1024, 512)
    assert up.weight.std().item() == pytest.approx(math.sqrt(2 / (4 * 512)), rel=0.02)
    assert all(p.abs().sum() == 0 for name, p in m.named_parameters() if name.endswith("bias"))


def test_dropout_sits_at_the_end_of_the_contracting_path():
    m = reslab.create_model("unet", widths=SMALL)
    seen = []
    m.drop.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape[1:])))
    m.train()
    x = torch.randn(1, 1, 188, 188)
    torch.manual_seed(1)
    a = m(x)
    # After the 32-channel level (its skip included) and after the 64-channel bottom, as Caffe's
    # dropout_d3c and dropout_d4c.
    assert seen == [(32, 16, 16), (64, 4, 4)]
    torch.manual_seed(2)
    assert not torch.equal(a, m(x))
    m.eval()
    assert torch.equal(m(x), m(x))
    no_drop = reslab.create_model("unet", widths=SMALL, drop_rate=0.0).train()
    assert isinstance(no_drop.drop, nn.Identity) and torch.equal(no_drop(x), no_drop(x))
    assert isinstance(reslab.create_model("unet", widths=SMALL, upconv_act=True).up[0].act, nn.ReLU)


def test_spec_errors_are_one_line():
    with pytest.raises(ReslabError, match="padding must be 'valid' or 'same'"):
        UNetSpec(padding="full")
    with pytest.raises(ReslabError, match="widths needs at least two levels"):
        reslab.create_model("unet", widths=(64,))
    with pytest.raises(ReslabError, match="drop_rate must be in"):
        reslab.create_model("unet", drop_rate=1.5)


def test_registry_facts():
    e = get_model_entry("unet")
    assert (e.task, e.family, e.input_size) == ("segment", "unet", (1, 572, 572))
    assert "Ronneberger" in e.paper
    assert get_model_entry("resnet18").task == "classify"
    m = meta_model("unet")
    assert (m.in_chans, m.num_classes) == (1, 2)
    assert set(list_models("unet*")) == {"unet", "unet_same", "unet_resnet18", "unet_resnet34", "unet_resnet50",
                                         "unet_preact_resnet34", "unet_densenet121"}
    for name in list_models("unet_*"):
        if name != "unet_same":
            assert get_model_entry(name).input_size == (3, 256, 256) and get_model_entry(name).task == "segment"


# -- the decoder over a classifier ----------------------------------------------------------------

def test_backbone_unet_decodes_every_map():
    m = meta_model("unet_resnet18")
    assert [f.reduction for f in m.encoder.feature_info] == [2, 4, 8, 16, 32]
    assert [(b.conv1.in_channels, b.conv1.out_channels) for b in m.decoder] == [
        (512 + 256, 256), (256 + 128, 128), (128 + 64, 64), (64 + 64, 32), (32, 16)]  # the last: no skip
    assert m.head.kernel_size == (3, 3) and m.head.out_channels == 2
    # A CIFAR ResNet's maps are at 1, 1, 2, 4: three blocks, no final up-sampling, smp's last widths.
    small = meta_model("unet_resnet20")
    assert [b.conv1.out_channels for b in small.decoder] == [64, 32, 16]
    out = small(torch.zeros(1, 3, 32, 32, device="meta"))
    assert out.shape == (1, 2, 32, 32)


def test_backbone_unet_output_size_and_size_rule():
    torch.manual_seed(0)
    m = reslab.create_model("unet_resnet18", num_classes=3, decoder_channels=(32, 16, 16, 8, 8))
    out = m(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96) and m.output_margin(64, 96) == (0, 0)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    with pytest.raises(ReslabError, match="multiples of 32 .*nearest legal side to 100: 96 or 128"):
        m.check_input_size(100, 64)
    with pytest.raises(ReslabError, match="decoder_channels must be 5 positive integers"):
        reslab.create_model("unet_resnet18", decoder_channels=(64, 32))


def test_backbone_unet_info_rows_cover_the_model():
    m = meta_model("unet_densenet121")
    info = reslab.model_info(m, (3, 64, 64))
    names = [r.name for r in info.rows]
    assert names == (["encoder.stem"] + [f"encoder.stages.{i}" for i in range(4)] + ["encoder.final"]
                     + [f"decoder.{i}" for i in range(5)] + ["head"])
    assert sum(r.params for r in info.rows) == info.params
    assert sum(r.macs for r in info.rows) == info.macs
    rows = {r.name: r for r in info.rows}
    assert rows["encoder.stem"].macs > 0 and rows["encoder.stem"].output_shape == (64, 16, 16)
    assert rows["head"].output_shape == (2, 64, 64)


def test_any_classifier_gives_a_unet_on_demand():
    assert "unet_resnet101" not in list_models()
    m = meta_model("unet_resnet101", num_classes=4)
    assert isinstance(m, BackboneUNet) and m.encoder.model_name == "resnet101" and m.model_name == "unet_resnet101"
    assert get_model_entry("unet_vgg11_bn").task == "segment"
    assert meta_model("unet_vgg11_bn")(torch.zeros(1, 3, 64, 64, device="meta")).shape == (1, 2, 64, 64)
    # Encoder options pass through; the U-Net's own are checked by name.
    assert meta_model("unet_resnet50", stride_in="3x3", in_chans=1).encoder.spec.stride_in == "3x3"
    with pytest.raises(ReslabError, match="does not accept 'colour'"):
        reslab.create_model("unet_resnet18", colour="red")
    with pytest.raises(UnknownModelError, match="did you mean .*unet_resnet18"):
        reslab.create_model("unet_resnt18")
    with pytest.raises(UnknownModelError):  # a segmentation model is no encoder
        reslab.create_model("unet_hourglass1")


def test_matches_segmentation_models_pytorch():
    """With the same weights, unet_resnet18 computes smp.Unet('resnet18')'s output (bilinear
    up-sampling on both sides), and unet_resnet34 has exactly its parameter count."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    theirs = smp.Unet("resnet18", encoder_weights=None, classes=2, decoder_interpolation="bilinear").eval()
    ours = reslab.create_model("unet_resnet18").eval()
    randomise(theirs)
    state = theirs.state_dict()
    ours.load_encoder({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}, "torchvision")
    decoder = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "decoder":  # decoder.blocks.i.conv{1,2}.{0: conv, 1: bn}.param
            i, conv, layer, param = parts[2], parts[3][-1], parts[4], ".".join(parts[5:])
            decoder[f"{i}.{'conv' if layer == '0' else 'bn'}{conv}.{param}"] = v
    ours.decoder.load_state_dict(decoder)
    ours.head.load_state_dict({"weight": state["segmentation_head.0.weight"], "bias": state["segmentation_head.0.bias"]})
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same_output(ours(x), theirs(x), tol=1e-4)
    smp34 = smp.Unet("resnet34", encoder_weights=None, classes=2)
    assert n_params(meta_model("unet_resnet34")) == n_params(smp34) == 24_436_514


def test_encoder_from_torchvision_gives_torchvisions_features():
    tv_models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    tv = randomise(tv_models.resnet18(), seed=3).eval()
    m = reslab.create_model("unet_resnet18").eval()
    m.load_encoder(tv.state_dict(), source="torchvision")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        maps = m.encoder(x)
        stem = tv.relu(tv.bn1(tv.conv1(x)))
        layer4 = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(stem)))))
    assert_same_output(maps[0], stem)  # the stride-2 map, before the stem's max-pool
    assert_same_output(maps[-1], layer4)


def test_encoder_from_a_reslab_classifier():
    torch.manual_seed(0)
    clf = randomise(reslab.create_model("resnet18", num_classes=7), seed=5).eval()
    m = reslab.create_model("unet_resnet18").eval()
    m.load_encoder(clf.state_dict())  # head.fc.* ignored
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m.encoder(x)[-1], clf.forward_features(x))


def test_encoder_weights_that_do_not_fit_are_named():
    m = meta_model("unet_resnet18")
    with torch.device("meta"):
        other = reslab.create_model("resnet34")
    with pytest.raises(ReslabError, match=r"unet_resnet18\.load_encoder: weights from a reslab state dict do not fit resnet18: unexpected"):
        m.load_encoder(other.state_dict())
    with pytest.raises(ReslabError, match="source must be 'reslab' or 'torchvision'"):
        m.load_encoder(other.state_dict(), source="timm")
    tv_models = pytest.importorskip("torchvision.models")
    with torch.device("meta"):
        tv50 = tv_models.resnet50()
    with pytest.raises(ReslabError, match=r"unet_resnet50\.load_encoder: .*stride_in='1x1'.*create_model\('unet_resnet50'"):
        meta_model("unet_resnet50").load_encoder(tv50.state_dict(), "torchvision")


def test_cli_info_shows_the_levels(capsys):
    from reslab.cli import main

    assert main(["info", "unet", "--input-size", "1,188,188", "--arch", "widths=4,8,16,32,64"]) == 0
    out = capsys.readouterr().out
    assert "down.3" in out and "32x16x16" in out and "up.3" in out and "4x4" in out
