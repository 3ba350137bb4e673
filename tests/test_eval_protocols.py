"""The multi-view test protocols against independent computations of exactly the paper's views.

A model whose output depends on the view (a fixed random linear layer over a 4x4 average-pooled
input: it sees position, scale and mirroring) is evaluated by :func:`reslab.evaluate.evaluate`;
the expected scores are the mean softmax over views built here with torch / PIL / torchvision
calls, never with reslab's own view code. Each test also checks that a centre-only evaluation
would give another loss, so a protocol that silently drops views fails.

- in memory, ``multiscale``: the whole (normalised) image at scales 1, 1.25, 1.5 (bilinear) and
  the mirror of each;
- streamed from disk (an ``imagefolder:`` of mixed-size images), with ``crop_size`` c and
  R = floor(c * 256 / 224): ``center`` = shorter side to R, centre c x c crop; ``10crop`` = the
  four corner and the centre c x c crops of the image with shorter side R, and their mirrors
  (torchvision's ``ten_crop``); ``multiscale`` = the whole image with shorter side s for each
  scale s, and its mirror (default scales: the paper's {224, 256, 384, 480, 640}).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from reslab.data import FileImages, TensorImages, load_dataset
from reslab.data.transforms import Normalizer
from reslab.evaluate import evaluate


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads of small convolutions wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class PooledLinear(nn.Module):
    """Fixed random weights: a 3x3 convolution (edges: sensitive to scale and mirroring), ReLU,
    4x4 average pooling (position), a linear map to moderate logits. Takes any input size."""

    def __init__(self, channels, classes=10, seed=0, width=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("k", torch.randn(width, channels, 3, 3, generator=g) / (3 * channels ** 0.5))
        self.register_buffer("w", torch.randn(classes, width * 16, generator=g) * 3 / (width * 16) ** 0.5)
        self.register_buffer("b", torch.randn(classes, generator=g))

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.k, padding=1))
        return F.adaptive_avg_pool2d(h, 4).flatten(1) @ self.w.T + self.b


def _mean_softmax(model, views):
    with torch.no_grad():
        return torch.stack([model(v).double().softmax(1) for v in views]).mean(0)


def _loss(probs, labels):
    return float(-probs[torch.arange(len(labels)), labels].log().mean())


def _confusion(probs, labels, k=10):
    cm = torch.zeros(k, k, dtype=torch.int64)
    for t, p in zip(labels.tolist(), probs.argmax(1).tolist()):
        cm[t, p] += 1
    return cm


def _check(res, probs, labels, wrong_views):
    """``res`` equals the expected mean softmax ``probs``; every list in ``wrong_views`` (e.g. the
    centre view alone) would have given a clearly different loss."""
    want = _loss(probs, labels)
    assert res.n == len(labels)
    assert res.loss == pytest.approx(want, rel=1e-4)
    assert torch.equal(res.confusion, _confusion(probs, labels))
    n = len(labels)
    assert res.top1_err == pytest.approx(100.0 * (n - int((probs.argmax(1) == labels).sum())) / n)
    for probs_wrong in wrong_views:
        assert abs(_loss(probs_wrong, labels) - want) > 10 * 1e-4 * want, "the views do not matter to this model"


# -- in memory ----------------------------------------------------------------------------------------
def test_in_memory_multiscale_is_the_mean_softmax_over_three_scales_and_their_mirrors(tiny):
    images, labels = tiny.test.images, tiny.test.labels
    norm = Normalizer.fit("per_pixel_mean", tiny.train.images)
    model = PooledLinear(1).eval()
    res = evaluate(model, TensorImages(images, labels), normalizer=norm, num_classes=10, protocol="multiscale",
                   batch_size=32)
    # the normalisation, independently: per-pixel mean image and one global std of the training set
    train = tiny.train.images.double() / 255
    mean = train.mean(0)
    std = (train - mean).pow(2).mean().sqrt()
    x = ((images.double() / 255 - mean) / std).float()
    h, w = x.shape[-2:]
    views = []
    for s in (1.0, 1.25, 1.5):
        size = (round(h * s), round(w * s))  # 28, 35, 42
        v = F.interpolate(x, size=size, mode="bilinear", align_corners=False) if s != 1.0 else x
        views += [v, v.flip(3)]
    assert [v.shape[-1] for v in views] == [28, 28, 35, 35, 42, 42]
    _check(res, _mean_softmax(model, views), labels,
           wrong_views=[_mean_softmax(model, views[:1]), _mean_softmax(model, views[:2]),
                        _mean_softmax(model, views[::2])])


def test_in_memory_multiscale_takes_given_scales(tiny):
    images, labels = tiny.test.images[:40], tiny.test.labels[:40]
    norm = Normalizer.fit("none", images)
    model = PooledLinear(1, seed=1).eval()
    res = evaluate(model, TensorImages(images, labels), normalizer=norm, num_classes=10, protocol="multiscale",
                   scales=[0.5, 2.0])
    x = images.float() / 255
    views = []
    for size in (14, 56):
        v = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        views += [v, v.flip(3)]
    _check(res, _mean_softmax(model, views), labels, wrong_views=[_mean_softmax(model, [x])])


# -- streamed from an image folder ------------------------------------------------------------------------
CROP = 14
RESIZE = math.floor(CROP * 256 / 224)  # 16
# (width, height) of the files: landscape, portrait and square, so that every resize in these
# tests gives whole-pixel long sides and even margins (no rounding conventions come into play)
SIZES = [(28, 28), (35, 28), (28, 35), (42, 28), (28, 42)]
SCALES = [16, 24, 32]


def _colour(gray):
    """A real grayscale image (H, W) as an RGB image whose channels differ."""
    g = gray.astype(np.int32)
    return np.stack([g, 255 - g, (g // 2 + 64)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, embedded):
    root = tmp_path_factory.mktemp("imgs")
    classes = embedded.classes
    for split, source, per in (("train", embedded.train, 1), ("test", embedded.test, 3)):
        for c, name in enumerate(classes):
            d = root / split / name.replace("/", "-")
            d.mkdir(parents=True)
            idx = (source.labels == c).nonzero().squeeze(1)[:per].tolist()
            for j, i in enumerate(idx):
                img = Image.fromarray(_colour(source.images[i, 0].numpy()))
                img.resize(SIZES[(c + j) % len(SIZES)], Image.BILINEAR).save(d / f"{j}.png")
    return root


@pytest.fixture()
def streamed(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    splits = load_dataset(f"imagefolder:{folder}", val_size=0)
    assert isinstance(splits.test, FileImages), "mixed-size images must be streamed from disk"
    assert splits.channels == 3 and len(splits.test) == 30
    return splits


NORM = Normalizer("per_channel", torch.tensor([0.4, 0.5, 0.3]).reshape(3, 1, 1),
                  torch.tensor([0.2, 0.25, 0.3]).reshape(3, 1, 1))


def _normalise(img):
    x = TF.pil_to_tensor(img).double() / 255
    return ((x - NORM.mean.double()) / NORM.std.double()).float()[None]


def _open(path):
    with Image.open(path) as img:
        return img.convert("RGB")


def _expected(files, make_views):
    probs = []
    model = PooledLinear(3, seed=2).eval()
    for path, _ in files.samples:
        probs.append(_mean_softmax(model, make_views(_open(path))))
    return torch.cat(probs), files.labels


def _center(img):
    return [_normalise(TF.center_crop(TF.resize(img, RESIZE), CROP))]


def _ten_crop(img):
    resized = TF.resize(img, RESIZE)
    assert min(resized.size) == RESIZE
    return list(TF.ten_crop(_normalise(resized), CROP))


def _multiscale(scales):
    def views(img):
        out = []
        for s in scales:
            v = _normalise(TF.resize(img, s))
            assert min(v.shape[-2:]) == s
            out += [v, v.flip(3)]
        return out
    return views


def _evaluate(files, protocol, **kw):
    return evaluate(PooledLinear(3, seed=2), files, normalizer=NORM, num_classes=10, protocol=protocol,
                    crop_size=CROP, batch_size=8, **kw)


def test_streamed_center_is_the_centre_crop_of_the_resized_image(streamed):
    res = _evaluate(streamed.test, "center", num_workers=0)
    probs, labels = _expected(streamed.test, _center)
    # a different view (the whole image squashed to the crop) gives another answer
    squashed, _ = _expected(streamed.test, lambda img: [_normalise(img.resize((CROP, CROP), Image.BILINEAR))])
    _check(res, probs, labels, wrong_views=[squashed])


def test_streamed_ten_crop_is_the_mean_over_corners_centre_and_mirrors(streamed):
    res = _evaluate(streamed.test, "10crop", num_workers=2)
    probs, labels = _expected(streamed.test, _ten_crop)
    centre, _ = _expected(streamed.test, _center)
    centre_and_mirror, _ = _expected(streamed.test, lambda img: _ten_crop(img)[4::5])
    five, _ = _expected(streamed.test, lambda img: _ten_crop(img)[:5])
    _check(res, probs, labels, wrong_views=[centre, centre_and_mirror, five])


def test_streamed_multiscale_is_the_mean_over_whole_images_at_each_shorter_side_and_mirrors(streamed):
    res = _evaluate(streamed.test, "multiscale", scales=SCALES, num_workers=0)
    probs, labels = _expected(streamed.test, _multiscale(SCALES))
    centre, _ = _expected(streamed.test, _center)
    one_scale, _ = _expected(streamed.test, _multiscale(SCALES[:1]))
    no_mirrors, _ = _expected(streamed.test, lambda img: _multiscale(SCALES)(img)[::2])
    _check(res, probs, labels, wrong_views=[centre, one_scale, no_mirrors])


def test_streamed_multiscale_defaults_to_the_papers_scales(streamed):
    sizes = [Image.open(p).size for p, _ in streamed.test.samples]
    files = streamed.test.subset([sizes.index((35, 28)), sizes.index((28, 42))])  # landscape and portrait
    model = PooledLinear(3, seed=2, width=2)
    res = evaluate(model, files, normalizer=NORM, num_classes=10, protocol="multiscale", crop_size=CROP,
                   num_workers=0)
    paper = [224, 256, 384, 480, 640]  # He et al. 2015, Sec. 3.4
    per_view = [[_mean_softmax(model, [v]) for v in _multiscale(paper)(_open(p))] for p, _ in files.samples]
    probs = torch.cat([torch.stack(v).mean(0) for v in per_view])
    labels = files.labels
    assert res.loss == pytest.approx(_loss(probs, labels), rel=1e-4)
    assert torch.equal(res.confusion, _confusion(probs, labels))
    without_224 = torch.cat([torch.stack(v[2:]).mean(0) for v in per_view])
    assert abs(_loss(without_224, labels) - _loss(probs, labels)) > 1e-3 * _loss(probs, labels)
