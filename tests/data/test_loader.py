"""The in-memory loader: deterministic batches, global batches split across ranks, the paper's
per-pixel mean."""

import torch

from reslab.data.loader import TensorLoader
from reslab.data.transforms import Normalizer, pad_crop_flip, ten_crop_views


def _loader(split, **kw):
    norm = Normalizer.fit("per_pixel_mean", split.images)
    args = dict(normalizer=norm, device="cpu", train=True, seed=3, augment="pad_crop_flip", pad=2)
    args.update(kw)
    return TensorLoader(split.images, split.labels, 32, **args)


def test_batches_are_a_function_of_seed_epoch_and_index(tiny):
    a, b = _loader(tiny.train), _loader(tiny.train)
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    resumed = list(b.iterate(start_batch=3))
    assert len(first) == len(tiny.train) // 32
    for (xa, ya), (xb, yb) in zip(first[3:], resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    b.set_epoch(2)
    assert not torch.equal(next(iter(b))[1], first[0][1])  # a new permutation each epoch
    seen = torch.cat([y for _, y in first])
    assert len(seen) == len(first) * 32 and len(set(seen.tolist())) == 10


def test_rank_slices_make_the_global_batch(tiny):
    whole = _loader(tiny.train)
    ranks = [_loader(tiny.train, rank=r, world_size=2) for r in range(2)]
    for loader in (whole, *ranks):
        loader.set_epoch(0)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *ranks):
        assert torch.equal(torch.cat([y0, y1]), y)
        assert torch.equal(torch.cat([x0, x1]), x)  # same augmentation, whatever the world size


def test_per_pixel_mean_is_the_mean_training_image(tiny):
    norm = Normalizer.fit("per_pixel_mean", tiny.train.images)
    ref = tiny.train.images.double().mean(0) / 255
    assert torch.allclose(norm.mean.double(), ref, atol=1e-6)
    x = norm(tiny.train.images)
    assert x.mean(0).abs().max() < 1e-4 and abs(float(x.std()) - 1) < 0.01


def test_flip_and_crop_are_real_crops_of_the_padded_image():
    x = torch.randn(64, 3, 8, 8)
    out = pad_crop_flip(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    crops = lambda i: [padded[i, :, a:a + 8, b:b + 8] for a in range(5) for b in range(5)]  # noqa: E731
    for i in range(64):
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops(i))
    unflipped = sum(any(torch.equal(out[i], c) for c in crops(i)) for i in range(64))
    assert 16 < unflipped < 48  # about half the batch is flipped


def test_ten_crop_views_are_corners_centre_and_flips():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    views = ten_crop_views(x, 4)
    assert len(views) == 10
    assert torch.equal(views[0], x[..., :4, :4]) and torch.equal(views[3], x[..., 2:, 2:])
    assert torch.equal(views[4], x[..., 1:5, 1:5]) and torch.equal(views[5], views[0].flip(3))
