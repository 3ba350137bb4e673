"""SegLoader: batches of random tiles that are a pure function of (seed, epoch, batch index), so a
resumed epoch and the ranks of a global batch agree; images and masks stay aligned through the
whole pipeline (mirror margin, deformation, flips, normalisation)."""

import pytest
import torch

from reslab.data import MaskImages, SegLoader, stack_for_normalizer
from reslab.data.transforms import Normalizer
from reslab.errors import ReslabError


@pytest.fixture(scope="module")
def data(embedded):
    """Ten real images of differing sizes (Fashion-MNIST pieces, 1 channel), masks made from them:
    class 1 where the image is over 100, 2 over 200, else 0."""
    x = embedded.train.images[:10, 0]
    images, masks = [], []
    for i in range(10):
        img = torch.cat([x[i], x[(i + 1) % 10]], 1)[: 20 + i, : 40 - i].contiguous()  # 20..29 x 40..31
        images.append(img[None])
        masks.append((img > 100).to(torch.uint8) + (img > 200).to(torch.uint8))
    return MaskImages(images, masks, [f"img{i}" for i in range(10)])


def loader(data, **kw):
    batch_size = kw.pop("batch_size", 3)
    args = dict(crop_size=24, margin=4, normalizer=Normalizer.fit("per_channel", stack_for_normalizer(data)),
                device="cpu", seed=5, elastic_sigma=10.0)
    args.update(kw)
    return SegLoader(data, batch_size, **args)


def test_batches_are_a_function_of_seed_epoch_and_index(data):
    a, b = loader(data), loader(data)
    a.set_epoch(2)
    b.set_epoch(2)
    first = list(a)
    assert len(first) == len(a) == 3  # 10 images, batches of 3: the last incomplete one dropped
    resumed = list(b.iterate(start_batch=1))
    for (xa, ya), (xb, yb) in zip(first[1:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    x, y = first[0]
    assert x.shape == (3, 1, 24, 24) and x.dtype == torch.float32
    assert y.shape == (3, 16, 16) and y.dtype == torch.int64 and set(y.unique().tolist()) <= {0, 1, 2}
    b.set_epoch(3)
    assert not torch.equal(next(iter(b))[0], x)
    c = loader(data, seed=6)
    c.set_epoch(2)
    assert not torch.equal(next(iter(c))[0], x)


def test_ranks_cut_the_same_global_batch(data):
    whole = loader(data, batch_size=4)
    ranks = [loader(data, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *ranks, strict=True):
        assert x0.shape[0] == 2 and torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


def test_targets_are_the_centre_of_the_image_tile(data):
    """Without normalisation (x / 255) the uint8 tile comes back exactly: the target is the mask of
    its centre, after mirroring (images are smaller than the 40-pixel tile), flips and rotations."""
    plain = Normalizer.fit("none", stack_for_normalizer(data))
    for margin in (0, 5):
        batches = loader(data, crop_size=40, margin=margin, normalizer=plain, elastic_sigma=0.0, batch_size=5)
        for x, y in batches:
            img = (x * 255).round()
            inner = img[:, 0, margin:40 - margin, margin:40 - margin]
            assert torch.equal(y, (inner > 100).long() + (inner > 200).long())


def test_weight_maps_ride_along_as_a_second_target_channel(data):
    weights = [1 + m.float() * 3 for m in data.masks]  # a map that can be checked against the mask
    for sigma in (10.0, 0.0):
        with_w = loader(data, weights=weights, elastic_sigma=sigma)
        without = loader(data, elastic_sigma=sigma)
        for (x, y2), (x0, y) in zip(with_w, without, strict=True):
            assert y2.shape == (3, 2, 16, 16) and y2.dtype == torch.float32
            assert torch.equal(x, x0) and torch.equal(y2[:, 0], y.float())
            if sigma == 0:  # copied pixels: exactly the map of the mask
                assert torch.equal(y2[:, 1], 1 + 3 * y.float())
            else:  # bilinear weights, nearest mask: they agree away from class edges
                assert (y2[:, 1] - (1 + 3 * y.float())).abs().median() < 1e-4


def test_samples_per_epoch_repeats_the_images_evenly(data):
    many = loader(data, samples_per_epoch=35, batch_size=5)
    assert len(many) == 7
    counts = torch.bincount(many.order(), minlength=10)
    assert counts.sum() == 35 and counts.min() >= 3 and counts.max() <= 4
    assert sorted(many.order()[:10].tolist()) == list(range(10))  # each round a permutation


def test_channels_last_and_normalisation(data):
    x, _ = next(iter(loader(data, channels_last=True, elastic_sigma=0.0)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    stack = stack_for_normalizer(data)
    assert stack.shape == (10, 1, 20, 20)  # centre squares of the smallest side
    assert torch.equal(stack[0], data.images[0][:, 0:20, 10:30])
    norm = Normalizer.fit("per_channel", stack)
    assert torch.allclose(norm.mean.flatten(), stack.double().mean().reshape(1).float() / 255, atol=1e-6)
    assert stack_for_normalizer(data, max_images=3, size=8).shape == (3, 1, 8, 8)


def test_bad_loader_arguments(data):
    with pytest.raises(ReslabError, match="leaves no target pixels; use crop_size > 24"):
        loader(data, crop_size=24, margin=12)
    with pytest.raises(ReslabError, match="one map an image"):
        loader(data, weights=[torch.ones(3, 3)])
    with pytest.raises(ReslabError, match="the weight map of image img0 is"):
        loader(data, weights=[torch.ones(3, 3)] * 10)
    with pytest.raises(ReslabError, match="no images"):
        loader(data.subset([]))
