"""The training augmentations against their definitions.

- pad-crop-flip (He et al. 2015, Sec. 4.2): zero-pad by ``pad``, a random crop of the original
  size, or its horizontal flip;
- scale augmentation (Sec. 3.4): shorter side sampled uniformly in [smin, smax], a random
  ``crop`` x ``crop`` crop, or its flip;
- PCA lighting (Krizhevsky et al. 2012): every pixel gets ``sum_j alpha_j lambda_j v_j`` with
  ``alpha_j ~ N(0, std)``, ``(lambda_j, v_j)`` the eigenvalues/vectors of ImageNet's RGB covariance.

Each output is matched against every candidate the definition allows, computed here independently.
"""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reslab.data.loader import TensorLoader, epoch_permutation
from reslab.data.transforms import Normalizer, ScaleAugment, lighting, pad_crop_flip


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- pad-crop-flip ---------------------------------------------------------------------------------
def _match_pad_crop_flip(x, out, pad):
    """For each image: the (dy, dx, flipped) of the one candidate crop of the zero-padded image
    (or of its mirror) that equals the output. Fails if none or several match."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    hits = torch.zeros(n, dtype=torch.long)
    where = torch.full((n, 3), -1, dtype=torch.long)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, :, dy:dy + h, dx:dx + w]
            for flipped, cand in ((0, crop), (1, crop.flip(3))):
                eq = (cand == out).flatten(1).all(1)
                hits += eq.long()
                where[eq] = torch.tensor([dy, dx, flipped])
    assert (hits == 1).all(), f"{int((hits == 0).sum())} outputs match no allowed crop, {int((hits > 1).sum())} several"
    return where


def test_pad_crop_flip_outputs_are_crops_of_the_padded_image_or_its_mirror():
    pad, n = 2, 3000
    x = torch.rand(n, 2, 6, 5, generator=_gen(1)) + 0.5  # no zeros: padding is told apart from content
    out = pad_crop_flip(x, pad, _gen(7))
    assert out.shape == x.shape
    where = _match_pad_crop_flip(x, out, pad)
    dy, dx, flipped = where.unbind(1)
    # offsets drawn uniformly from [0, 2*pad], independently in y and x
    for d in (dy, dx):
        counts = torch.bincount(d, minlength=2 * pad + 1)
        assert len(counts) == 2 * pad + 1 and (counts > 0).all()
        assert (counts - n / (2 * pad + 1)).abs().max() < 5 * (n / (2 * pad + 1)) ** 0.5
    assert len(set(zip(dy.tolist(), dx.tolist()))) == (2 * pad + 1) ** 2
    # flips about half the time
    assert abs(flipped.float().mean().item() - 0.5) < 0.05
    assert ((dy != pad) | (dx != pad)).any() and (flipped == 1).any()


def test_pad_crop_flip_is_a_function_of_its_generator_seed():
    x = torch.rand(64, 3, 8, 8, generator=_gen(2))
    a = pad_crop_flip(x, 4, _gen(11))
    assert torch.equal(a, pad_crop_flip(x, 4, _gen(11)))
    assert not torch.equal(a, pad_crop_flip(x, 4, _gen(12)))


def test_pad_crop_flip_options():
    x = torch.rand(500, 1, 5, 5, generator=_gen(3)) + 0.5
    only_flip = pad_crop_flip(x, 4, _gen(5), crop=False)
    flipped = (only_flip == x.flip(3)).flatten(1).all(1)
    assert ((only_flip == x).flatten(1).all(1) | flipped).all() and 0.4 < flipped.float().mean() < 0.6
    only_crop = pad_crop_flip(x, 2, _gen(5), flip=False)
    assert (_match_pad_crop_flip(x, only_crop, 2)[:, 2] == 0).all()
    assert torch.equal(pad_crop_flip(x, 0, _gen(5), flip=False), x)


def test_training_batches_are_pad_crop_flips_of_the_normalised_images_in_epoch_order():
    """The loader pads after normalising: the padding is the mean image (0), as in the paper."""
    images = torch.randint(1, 255, (40, 3, 6, 6), dtype=torch.uint8, generator=_gen(4))
    images[:, :, 0, 0] = torch.arange(40, dtype=torch.uint8)[:, None]  # tells the images apart
    labels = torch.arange(40) % 10
    norm = Normalizer.fit("per_pixel_mean", images)
    loader = TensorLoader(images, labels, 16, normalizer=norm, device=torch.device("cpu"), train=True, seed=3,
                          augment="pad_crop_flip", pad=2)
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 2  # the incomplete last batch is dropped
    order = epoch_permutation(40, 3, 1)
    mean = images.double().div(255).mean(0)
    std = (images.double().div(255) - mean).pow(2).mean().sqrt()
    for b, (x, y) in enumerate(batches):
        idx = order[b * 16:(b + 1) * 16]
        assert torch.equal(y, labels[idx])
        want = ((images[idx].double() / 255 - mean) / std).float()
        _match_pad_crop_flip_close(want, x, 2)


def _match_pad_crop_flip_close(x, out, pad):
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    ok = torch.zeros(n, dtype=torch.bool)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, :, dy:dy + h, dx:dx + w]
            for cand in (crop, crop.flip(3)):
                ok |= torch.isclose(cand, out, rtol=1e-5, atol=1e-5).flatten(1).all(1)
    assert ok.all(), f"{int((~ok).sum())} of {n} images are no pad-crop-flip of their normalised image"


# -- scale augmentation -----------------------------------------------------------------------------
def _scale_candidates(img, smin, smax, crop):
    """Every output ScaleAugment may give, by definition: shorter side s in [smin, smax], the longer
    side in proportion (either rounding), every crop position, mirrored or not -> (s, top, left, flip)."""
    w, h = img.size
    table = {}
    for s in range(smin, smax + 1):
        exact = max(w, h) * s / min(w, h)
        for long in sorted({int(np.floor(exact)), int(np.ceil(exact))}):
            size = (long, s) if w > h else (s, long)
            arr = np.asarray(img.resize(size, Image.BILINEAR))
            for top in range(size[1] - crop + 1):
                for left in range(size[0] - crop + 1):
                    view = arr[top:top + crop, left:left + crop]
                    table.setdefault(view.tobytes(), []).append((s, top, left, 0))
                    table.setdefault(view[:, ::-1].tobytes(), []).append((s, top, left, 1))
    return table


def test_scale_augment_is_a_random_crop_of_the_image_at_a_uniform_random_shorter_side():
    rng_np = np.random.default_rng(0)
    img = Image.fromarray(rng_np.integers(0, 256, (18, 24, 3), dtype=np.uint8))  # h=18 < w=24
    smin, smax, crop = 16, 24, 12
    aug = ScaleAugment([smin, smax], crop)
    table = _scale_candidates(img, smin, smax, crop)
    rng = random.Random(0)
    draws = 900
    scales, flips, tops = [], [], []
    for _ in range(draws):
        out = aug(img, rng)
        assert out.dtype == torch.uint8 and tuple(out.shape) == (3, crop, crop)
        key = out.permute(1, 2, 0).contiguous().numpy().tobytes()
        assert key in table, "an output that is no crop of the image rescaled within the range"
        cands = table[key]
        assert len({c[0] for c in cands}) == 1, "ambiguous match"
        s, top, left, flip = cands[0]
        scales.append(s)
        flips.append(flip)
        tops.append(top)
    counts = np.bincount(np.array(scales) - smin, minlength=smax - smin + 1)
    per = draws / (smax - smin + 1)
    assert (counts > 0).all() and np.abs(counts - per).max() < 5 * per ** 0.5  # uniform over [smin, smax]
    assert abs(np.mean(flips) - 0.5) < 0.06
    assert min(tops) == 0 and max(tops) > 0


def test_scale_augment_is_a_function_of_the_rng_and_handles_small_and_gray_images():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (10, 14), dtype=np.uint8))
    aug = ScaleAugment([16, 20], 16)
    a = [aug(img, random.Random(5)) for _ in range(2)]
    assert torch.equal(a[0], a[1]) and tuple(a[0].shape) == (1, 16, 16)
    assert not all(torch.equal(aug(img, random.Random(5)), aug(img, random.Random(k))) for k in range(6, 12))


# -- PCA lighting ------------------------------------------------------------------------------------
# The eigen-decomposition of ImageNet's RGB covariance (pixels in [0, 1]) that the ResNet authors'
# training code uses (fb.resnet.torch, datasets/imagenet.lua); eigenvectors are the COLUMNS.
EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float64)
EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                       [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]], dtype=torch.float64)


def _coordinates(rgb):
    """c with rgb = sum_j c_j v_j for each row (the published vectors are orthonormal to 4 digits only)."""
    return torch.linalg.solve(EIGVEC, rgb.T).T


def test_pca_lighting_adds_eigenvector_noise_scaled_by_the_eigenvalues():
    n, alphastd, std = 6000, 0.1, 0.25
    x = torch.randn(n, 3, 2, 3, generator=_gen(8))
    out = lighting(x, alphastd, _gen(9), torch.tensor([std]).reshape(1, 1, 1))
    added = (out - x).double()
    # one colour offset per image, the same at every pixel
    assert torch.allclose(added, added[:, :, :1, :1].expand_as(added), atol=1e-6)
    rgb = added[:, :, 0, 0] * std  # back to [0, 1] pixel units
    # coordinates along the eigenvectors, in units of the eigenvalues: alpha ~ N(0, alphastd) each
    alpha = _coordinates(rgb) / EIGVAL
    assert torch.allclose((alpha * EIGVAL) @ EIGVEC.T, rgb, atol=1e-7)  # offset = sum_j alpha_j lambda_j v_j
    assert alpha.mean(0).abs().max() < 4 * alphastd / n ** 0.5
    assert ((alpha.std(0) / alphastd) - 1).abs().max() < 0.05
    corr = torch.corrcoef(alpha.T)
    assert (corr - torch.eye(3, dtype=corr.dtype)).abs().max() < 0.06  # independent draws
    assert alpha.std(1).gt(0).all()


def test_pca_lighting_off_for_zero_std_and_gray_images_and_seeded():
    x = torch.randn(4, 3, 2, 2)
    assert torch.equal(lighting(x, 0.0, _gen(1)), x)
    gray = torch.randn(4, 1, 2, 2)
    assert torch.equal(lighting(gray, 0.1, _gen(1)), gray)
    assert torch.equal(lighting(x, 0.1, _gen(3)), lighting(x, 0.1, _gen(3)))
    assert not torch.equal(lighting(x, 0.1, _gen(3)), x)


@pytest.mark.parametrize("std", [None, 0.5])
def test_pca_lighting_scale_follows_the_normaliser_std(std):
    x = torch.zeros(2000, 3, 1, 1)
    out = lighting(x, 0.2, _gen(4), None if std is None else torch.tensor([[[std]]]))
    rgb = out[:, :, 0, 0].double() * (1.0 if std is None else std)
    alpha = _coordinates(rgb) / EIGVAL
    assert ((alpha.std(0) / 0.2) - 1).abs().max() < 0.08


# -- test-time views and resizing -----------------------------------------------------------------------
def test_ten_crop_views_are_the_four_corners_the_centre_and_their_mirrors():
    from reslab.data.transforms import ten_crop_views

    x = torch.arange(2 * 1 * 5 * 7, dtype=torch.float32).reshape(2, 1, 5, 7)  # h 5, w 7
    views = ten_crop_views(x, 3)
    # corners: rows 0..2 or 2..4, columns 0..2 or 4..6; centre: rows 1..3, columns 2..4
    boxes = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
    want = [x[:, :, t:t + 3, l:l + 3] for t, l in boxes]
    want += [v.flip(3) for v in want]
    assert len(views) == 10 and all(torch.equal(v, w) for v, w in zip(views, want))
    whole = ten_crop_views(x[:, :, :, :5], 5)  # a crop the size of the image: ten times the image or its mirror
    assert all(torch.equal(v, x[:, :, :, :5]) for v in whole[:5]) and all(torch.equal(v, x[:, :, :, :5].flip(3)) for v in whole[5:])
    for crop in (6, 8):  # taller or wider than the 5 x 7 images
        with pytest.raises(ValueError, match=rf"^crop {crop} is larger than the images \(5x7\)$"):
            ten_crop_views(x, crop)


def test_scaled_views_resize_the_whole_image_by_each_factor_and_mirror_it():
    from reslab.data.transforms import scaled_views

    x = torch.rand(2, 3, 8, 6, generator=_gen(5))
    views = scaled_views(x, [1.0, 0.5, 1.5, 0.01])
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 6), (8, 6), (4, 3), (4, 3), (12, 9), (12, 9), (1, 1), (1, 1)]
    assert torch.equal(views[0], x) and torch.equal(views[1], x.flip(3))
    # 0.5 of an even size, bilinear without corner alignment: the mean of each 2 x 2 block
    blocks = x.reshape(2, 3, 4, 2, 3, 2).mean((3, 5))
    torch.testing.assert_close(views[2], blocks)
    torch.testing.assert_close(views[3], blocks.flip(3))
    assert torch.equal(views[5], views[4].flip(3)) and torch.equal(views[7], views[6].flip(3))


def test_pil_to_uint8_keeps_channel_order_and_gives_gray_one_channel():
    from reslab.data.transforms import pil_to_uint8

    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 1] = (10, 20, 30)
    t = pil_to_uint8(Image.fromarray(rgb))
    assert t.dtype == torch.uint8 and tuple(t.shape) == (3, 2, 3) and t[:, 0, 1].tolist() == [10, 20, 30]
    assert t.is_contiguous()
    gray = pil_to_uint8(Image.fromarray(np.array([[0, 255], [7, 9]], dtype=np.uint8)))
    assert gray.tolist() == [[[0, 255], [7, 9]]]


def test_resize_center_crop_on_tensors_matches_pils_antialiased_resize_then_centre_crop():
    from reslab.data.transforms import resize_center_crop

    arr = np.random.default_rng(6).integers(0, 256, (24, 40), dtype=np.uint8)  # h 24 < w 40
    x = torch.from_numpy(arr)[None, None]
    got = resize_center_crop(x, 12)
    # PIL's bilinear filter is antialiased: the shorter side to 12 (so 40 -> 20), centre 12 x 12 (columns 4..15)
    want = torch.from_numpy(np.array(Image.fromarray(arr).resize((20, 12), Image.BILINEAR)))[:, 4:16]
    assert got.dtype == torch.uint8 and tuple(got.shape) == (1, 1, 12, 12)
    assert (got[0, 0].int() - want.int()).abs().max() <= 1
    same = resize_center_crop(torch.from_numpy(arr[:, :30])[None, None], 24)  # already 24 on the shorter side
    assert torch.equal(same[0, 0], torch.from_numpy(arr[:, 3:27]))


def test_pil_resize_center_crop_sizes_margins_and_small_images():
    from reslab.data.transforms import pil_resize_center_crop

    img = Image.fromarray(np.arange(20 * 31, dtype=np.uint32).astype(np.uint8).reshape(20, 31))
    same = pil_resize_center_crop(img, 20, 14)  # no resampling; odd margins: (31 - 14) // 2 = 8, (20 - 14) // 2 = 3
    assert np.array_equal(np.asarray(same), np.asarray(img)[3:17, 8:22])
    assert pil_resize_center_crop(img, 10, None).size == (16, 10)  # 31 * 10 / 20 = 15.5 -> 16
    # a crop larger than the resized image is the largest centred square
    assert pil_resize_center_crop(img, 10, 50).size == (10, 10)
    tall = Image.fromarray(np.zeros((31, 20), dtype=np.uint8))
    assert pil_resize_center_crop(tall, 10, 50).size == (10, 10)
    assert pil_resize_center_crop(tall, 10, None).size == (10, 16)
    # a thin strip: the long side scales, the short one stays at least one pixel
    strip = Image.fromarray(np.zeros((1, 40), dtype=np.uint8))
    assert pil_resize_center_crop(strip, 1, None).size == (40, 1)
    thin = Image.fromarray(np.zeros((3, 100), dtype=np.uint8))
    assert pil_resize_center_crop(thin, 1, None).size == (33, 1)
    assert pil_resize_center_crop(Image.fromarray(np.zeros((100, 3), dtype=np.uint8)), 1, None).size == (1, 33)
    assert pil_resize_center_crop(Image.fromarray(np.zeros((1, 300), dtype=np.uint8)), 1, None).size == (300, 1)


def test_resize_short_side_ratio_and_resize_center_crop_class():
    from reslab.data.transforms import ResizeCenterCrop, resize_short_side_ratio

    assert [resize_short_side_ratio(c) for c in (224, 14, 21, 32, 299)] == [256, 16, 24, 36, 341]
    img = Image.fromarray(np.random.default_rng(7).integers(0, 256, (30, 45, 3), dtype=np.uint8))
    t = ResizeCenterCrop(24, 21)(img)
    want = np.asarray(img.resize((36, 24), Image.BILINEAR))[1:22, 7:28]  # margins (24-21)//2, (36-21)//2
    assert t.dtype == torch.uint8 and torch.equal(t, torch.from_numpy(want.copy()).permute(2, 0, 1))
    assert tuple(ResizeCenterCrop(24, None)(img).shape) == (3, 24, 36)


def test_scale_augment_crops_reach_every_position():
    img = Image.fromarray(np.random.default_rng(8).integers(0, 256, (8, 8), dtype=np.uint8))
    aug = ScaleAugment([8, 8], 6)  # no rescaling: 3 x 3 crop positions, told apart by the pixels
    arr = np.asarray(img)
    positions = set()
    rng = random.Random(1)
    for _ in range(200):
        out = aug(img, rng)[0].numpy()
        for top in range(3):
            for left in range(3):
                view = arr[top:top + 6, left:left + 6]
                if np.array_equal(out, view) or np.array_equal(out, view[:, ::-1]):
                    positions.add((top, left))
    assert positions == {(t, l) for t in range(3) for l in range(3)}


# -- normalisation -----------------------------------------------------------------------------------------
def test_normalizer_fit_per_channel_and_per_pixel_mean_statistics():
    images = torch.tensor([[[[0, 255], [51, 102]], [[10, 10], [10, 10]]],
                           [[[255, 255], [51, 0]], [[30, 30], [30, 30]]]], dtype=torch.uint8)  # (2, 2, 2, 2)
    x = images.double() / 255
    pc = Normalizer.fit("per_channel", images, chunk=1)  # chunks of one image: the sums still add up
    m = x.mean((0, 2, 3))
    s = (x - m[None, :, None, None]).pow(2).mean((0, 2, 3)).sqrt()
    assert pc.kind == "per_channel" and pc.mean.shape == (2, 1, 1) and pc.std.shape == (2, 1, 1)
    torch.testing.assert_close(pc.mean.double().flatten(), m, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pc.std.double().flatten(), s, rtol=1e-5, atol=1e-7)
    pp = Normalizer.fit("per_pixel_mean", images)
    torch.testing.assert_close(pp.mean.double(), x.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(pp.std.double().flatten(), (x - x.mean(0)).pow(2).mean().sqrt().reshape(1), rtol=1e-5, atol=1e-7)
    out = pc(images)
    torch.testing.assert_close(out.double(), (x - m[None, :, None, None]) / s[None, :, None, None], rtol=1e-5, atol=1e-5)
    constant = Normalizer.fit("per_channel", torch.full((3, 1, 2, 2), 9, dtype=torch.uint8))
    assert float(constant.std) > 0  # no division by zero for a constant channel
    with pytest.raises(ValueError, match="unknown normalisation 'zca'"):
        Normalizer.fit("zca", images)


def test_normalizer_none_and_empty_and_state():
    images = torch.randint(0, 256, (3, 2, 4, 4), dtype=torch.uint8, generator=_gen(9))
    for norm in (Normalizer.fit("none", images), Normalizer.fit("per_pixel_mean", images[:0])):
        assert norm.kind == "none" and torch.equal(norm(images), images.float() / 255)
        assert norm.mean.shape == (2, 1, 1) and norm.std.shape == (2, 1, 1)
    pp = Normalizer.fit("per_pixel_mean", images)
    st = pp.state_dict()
    assert set(st) == {"mean", "std"} and torch.equal(st["mean"], pp.mean) and torch.equal(st["std"], pp.std)
    moved = pp.to("cpu")
    assert moved.kind == pp.kind and torch.equal(moved.mean, pp.mean) and torch.equal(moved.std, pp.std)
    # another image size: the mean image is resized bilinearly to it
    big = torch.randint(0, 256, (1, 2, 8, 8), dtype=torch.uint8, generator=_gen(10))
    mean8 = F.interpolate(pp.mean[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(pp(big), (big.float() / 255 - mean8) / pp.std)


def test_resize_center_crop_takes_a_single_image_too():
    from reslab.data.transforms import resize_center_crop

    arr = np.random.default_rng(11).integers(0, 256, (20, 24), dtype=np.uint8)  # h 20 < w 24: the width is the size asked
    got = resize_center_crop(torch.from_numpy(arr)[None], 24)  # (C, H, W)
    # the long side: 24 * 24/20 = 28.8, truncated to 28 (torchvision's rule); centre columns 2..25
    want = torch.from_numpy(np.array(Image.fromarray(arr).resize((28, 24), Image.BILINEAR)))[:, 2:26]
    assert tuple(got.shape) == (1, 24, 24) and (got[0].int() - want.int()).abs().max() <= 1
