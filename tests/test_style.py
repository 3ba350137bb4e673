"""Fast style transfer's losses and loss networks (:mod:`reslab.style`): the Gram matrix and the
total variation against their closed forms, the perceptual loss against its definition, the VGG-16
loss network against torchvision's own ``vgg16().features`` on a state dict in torchvision's
format, a reslab classifier run as the loss network, and the files refused in one line.

No ImageNet-trained VGG-16 can be downloaded here: the state dicts are of randomly initialised
torchvision VGG-16 feature layers, written with torchvision's key names (``features.N.weight``).
The classifier layers, which the loss network never reads, are left out of the file (they are
500 MB); a key of theirs is included to show they are ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from reslab.errors import ReslabError
from reslab.predict import load_run
from reslab.style import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16_LAYERS,
    PerceptualLoss,
    RunFeatures,
    VGG16Features,
    gram_matrix,
    load_loss_network,
    load_style_image,
    tv_loss,
)

RUN_V0 = Path(__file__).resolve().parent / "fixtures" / "run_v0"  # a resnet20 trained on 1-channel images


def vgg16_features_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's VGG-16 feature layers, randomly initialised (torchvision's own init: Kaiming
    normal weights), with small random biases, under torchvision's state-dict keys."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        tv = torchvision.models.vgg16()  # its 120M classifier weights are never materialised
    features = tv.features.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in features:
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def write_vgg16(path: Path, seed: int = 0) -> Path:
    """A ``.pth`` file in the format of torchvision's ``vgg16-397923af.pth`` (feature layers, and one
    classifier key to show the classifier is ignored)."""
    state = vgg16_features_state(seed)
    state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    return write_vgg16(tmp_path_factory.mktemp("vgg") / "vgg16-random.pth")


# -- closed forms -------------------------------------------------------------------------------------
def test_gram_matrix_is_f_f_transposed_over_chw():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = gram_matrix(f)
    a = f.numpy()
    for n in range(2):
        for c in range(3):
            for d in range(3):
                want = sum(a[n, c, i, j] * a[n, d, i, j] for i in range(4) for j in range(5)) / (3 * 4 * 5)
                assert g[n, c, d].item() == pytest.approx(want, rel=1e-6)
    assert g.dtype == torch.float32 and torch.allclose(g, g.transpose(1, 2))
    # a constant map of value v: every entry is v^2 / C
    assert torch.allclose(gram_matrix(torch.full((1, 4, 3, 3), 2.0)), torch.full((1, 4, 4), 4.0 / 4))


def test_total_variation_closed_forms():
    # vertical stripes 0/1 of one channel: every horizontal step differs by 1, no vertical one
    x = torch.zeros(1, 1, 4, 6)
    x[..., 1::2] = 1.0
    assert tv_loss(x).item() == pytest.approx(1.0)  # mean over the 4 x 5 horizontal neighbour pairs
    # a linear ramp a*i + b*j: squared steps a^2 and b^2 everywhere
    i, j = torch.meshgrid(torch.arange(5.0), torch.arange(7.0), indexing="ij")
    ramp = (0.1 * i + 0.03 * j).expand(2, 3, 5, 7)
    assert tv_loss(ramp).item() == pytest.approx(0.1 ** 2 + 0.03 ** 2, rel=1e-5)
    assert tv_loss(torch.full((3, 3, 8, 8), 0.4)).item() == 0.0
    # random images, against numpy
    r = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    a = r.numpy().astype(np.float64)
    want = np.mean([np.mean(np.diff(a[n], axis=1) ** 2) + np.mean(np.diff(a[n], axis=2) ** 2) for n in range(2)])
    assert tv_loss(r).item() == pytest.approx(want, rel=1e-5)


# -- the VGG-16 loss network ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg(vgg_file) -> VGG16Features:
    net = load_loss_network(str(vgg_file))
    assert isinstance(net, VGG16Features)
    return net


def test_vgg16_loss_network_is_torchvisions_features_at_the_papers_layers(vgg, vgg_file):
    with torch.device("meta"):
        tv = torchvision.models.vgg16(weights=None).features
    tv = tv.to_empty(device="cpu")  # every weight then comes from the file
    tv.load_state_dict({k[len("features."):]: v for k, v in torch.load(vgg_file).items() if k.startswith("features.")})
    tv.eval()
    x = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    normed = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    want, h = {}, normed
    with torch.no_grad():
        for i, layer in enumerate(tv):
            h = layer(h)
            want[i] = h.clone()
        got = vgg(x)
    assert vgg.layers == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"] and vgg.content_layer == "relu2_2"
    assert [tuple(f.shape[1:]) for f in got] == [(64, 40, 48), (128, 20, 24), (256, 10, 12), (512, 5, 6)]
    for f, idx in zip(got, VGG16_LAYERS.values()):
        scale = want[idx].abs().max().item()
        assert scale > 0 and (f - want[idx]).abs().max().item() <= 1e-5 * scale
    assert not any(p.requires_grad for p in vgg.parameters())
    assert len(vgg.sha256) == 64


def test_perceptual_loss_is_its_definition(vgg):
    g = torch.Generator().manual_seed(2)
    style, content, output = torch.rand(3, 36, 44, generator=g), torch.rand(2, 3, 32, 32, generator=g), \
        torch.rand(2, 3, 32, 32, generator=g)
    loss = PerceptualLoss(vgg, style, content_weight=2.0, style_weight=3.0, tv_weight=5.0)
    with torch.no_grad():
        got = loss(output, content)
        fo, fc, fs = vgg(output), vgg(content), vgg(style[None])
    want_content = ((fo[1] - fc[1]) ** 2).mean()  # relu2_2
    want_style = sum(((gram_matrix(a) - gram_matrix(b)) ** 2).mean() for a, b in zip(fo, fs))  # mean over N, C, C
    assert got.content.item() == pytest.approx(want_content.item(), rel=1e-5)
    assert got.style.item() == pytest.approx(want_style.item(), rel=1e-5)
    assert got.tv.item() == pytest.approx(tv_loss(output).item(), rel=1e-6)
    assert got.total.item() == pytest.approx(2 * got.content.item() + 3 * got.style.item() + 5 * got.tv.item(), rel=1e-6)
    # the output's gradient flows through the loss network; the content image's does not
    out = output.clone().requires_grad_()
    cont = content.clone().requires_grad_()
    loss(out, cont).total.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0 and cont.grad is None


# -- a reslab classifier run as the loss network ---------------------------------------------------------
def test_a_classifier_run_is_a_loss_network_of_its_feature_maps():
    net = load_loss_network(str(RUN_V0))
    assert isinstance(net, RunFeatures)
    run = load_run(RUN_V0)
    info = [f.module for f in run.model.feature_info]
    assert net.layers == info and net.content_layer == info[1]
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]  # a 1-channel classifier sees the luminance
    with torch.no_grad():
        got = net(x)
        want = run.model.forward_intermediates((gray - run.normalizer.mean) / run.normalizer.std)
    assert len(got) == len(want) and all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want))


# -- refused in one line --------------------------------------------------------------------------------
def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_a_file_of_another_architecture_is_refused_naming_what_was_expected(tmp_path):
    squeeze = tmp_path / "squeezenet.pth"  # torchvision's SqueezeNet: features.0.weight too, of another shape
    torch.save(torchvision.models.squeezenet1_0().state_dict(), squeeze)
    with pytest.raises(ReslabError) as e:
        load_loss_network(str(squeeze))
    text = _one_line(e)
    assert "not a torchvision VGG-16 state dict" in text and "features.0.weight of shape (64, 3, 3, 3)" in text
    assert "(96, 3, 7, 7)" in text and "vgg16-397923af.pth" in text
    bn = tmp_path / "vgg16_bn.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64),
                "features.1.weight": torch.ones(64), "features.1.running_mean": torch.zeros(64)}, bn)
    with pytest.raises(ReslabError, match="vgg16_bn"):
        load_loss_network(str(bn))


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_text("not a state dict"), "not a readable PyTorch state dict"),
    (lambda p: torch.save([1, 2, 3], p), "does not hold a state dict of tensors"),
    (lambda p: None, "no such file or run directory"),
    (lambda p: p.mkdir(), "is a folder but not a run directory"),
])
def test_unreadable_loss_networks_are_one_line_errors(tmp_path, make, needle):
    path = tmp_path / "net.pth"
    make(path)
    with pytest.raises(ReslabError, match=needle) as e:
        load_loss_network(str(path))
    _one_line(e)


def test_the_style_image_is_resized_to_the_content_size_or_refused_in_one_line(tmp_path):
    Image.new("RGB", (90, 60), (255, 0, 0)).save(tmp_path / "red.png")
    s = load_style_image(tmp_path / "red.png", 48)
    assert s.shape == (3, 48, 72) and s[0].min() == 1.0 and s[1:].max() == 0.0
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ReslabError, match="--style: cannot decode image") as e:
        load_style_image(tmp_path / "bad.jpg", 48)
    _one_line(e)
    with pytest.raises(ReslabError, match="--style: image not found"):
        load_style_image(tmp_path / "missing.png", 48)

