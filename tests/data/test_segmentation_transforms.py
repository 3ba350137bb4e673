"""Segmentation augmentation on real images (the embedded Fashion-MNIST subset): crops mirror as
numpy's reflect padding does, one transform moves image, mask and weights alike, the elastic
deformation reads the image where scipy's map_coordinates does, every draw is seeded."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from reslab.data.seg_transforms import (
    crop,
    crop_origin,
    elastic_field,
    flip_rot,
    random_tile,
    reflect_index,
    sample,
)


@pytest.fixture(scope="module")
def image(embedded):
    """A real 1x56x84 grayscale image: six Fashion-MNIST images side by side."""
    x = embedded.train.images[:6, 0]
    return torch.cat([torch.cat(list(x[:3]), 1), torch.cat(list(x[3:]), 1)], 0)[None].contiguous()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_reflect_index_is_numpys_reflect_padding():
    for n in (2, 3, 7):
        ref = np.pad(np.arange(n), 40, mode="reflect")
        idx = torch.arange(-40, n + 40)
        assert reflect_index(idx, n).tolist() == ref.tolist()
    assert reflect_index(torch.arange(-3, 4), 1).tolist() == [0] * 7


def test_crop_is_a_window_of_the_reflect_padded_image(image):
    h, w = image.shape[1:]
    pad = 100  # more than the image: reflected over and over
    padded = np.pad(image[0].numpy(), pad, mode="reflect")
    for top, left, size, margin in ((0, 0, 20, 0), (10, 30, 20, 5), (-15, 70, 30, 8), (-60, -90, 128, 10)):
        out = crop(image, top, left, size, margin)
        assert out.shape == (1, size + 2 * margin, size + 2 * margin)
        ref = padded[pad + top - margin:pad + top + size + margin, pad + left - margin:pad + left + size + margin]
        assert np.array_equal(out[0].numpy(), ref)


def test_crop_origins_stay_inside_and_cover_every_position():
    tops, lefts = set(), set()
    for s in range(200):
        top, left = crop_origin(10, 12, 8, gen(s))
        tops.add(top)
        lefts.add(left)
    assert tops == {0, 1, 2} and lefts == {0, 1, 2, 3, 4}
    small = {crop_origin(5, 5, 8, gen(s)) for s in range(200)}  # the image inside the tile, the rest mirrored
    assert {t for t, _ in small} == {-3, -2, -1, 0} and {l for _, l in small} == {-3, -2, -1, 0}


def test_tiles_without_deformation_are_windows_inside_the_image(image):
    h, w = image.shape[1:]
    for s in range(20):
        t = random_tile(image, image[0], None, size=24, margin=0, gen=gen(s), elastic_sigma=0, flips=False,
                        rot90=False)
        assert t.image.dtype == torch.float32 and t.image.shape == (1, 24, 24)
        windows = [(a, b) for a in range(h - 23) for b in range(w - 23)
                   if torch.equal(image[:, a:a + 24, b:b + 24].float(), t.image)]
        assert windows, "the tile is not a window of the image"
        assert torch.equal(t.mask, image[0, windows[0][0]:windows[0][0] + 24, windows[0][1]:windows[0][1] + 24].long())


@pytest.mark.parametrize("margin", [0, 6])
@pytest.mark.parametrize("sigma,mode", [(0.0, "bilinear"), (10.0, "nearest")])
def test_image_mask_and_weights_stay_aligned(image, margin, sigma, mode):
    """The mask is made from the image (a threshold), the weights are the image: after any crop,
    deformation, flip and rotation the mask is still the threshold of the image tile's centre.
    A deformed image is read by nearest pixel here, as the mask is, so the check is exact."""
    mask = (image[0] > 100).to(torch.uint8)
    weight = image[0].float()
    seen = set()
    for s in range(24):
        t = random_tile(image, mask, weight, size=32, margin=margin, gen=gen(s), elastic_sigma=sigma, image_mode=mode)
        inner = t.image[0, margin:32 - margin, margin:32 - margin]
        assert t.mask.shape == (32 - 2 * margin,) * 2 and t.mask.dtype == torch.int64
        assert torch.equal(t.mask, (inner > 100).long())
        if sigma == 0:
            assert torch.equal(t.weight, inner)
        seen.add(bytes(t.image.to(torch.uint8).numpy()))
    assert len(seen) == 24  # every seed gives another tile


def test_deformed_weights_follow_the_deformed_image(image):
    """Bilinear image and bilinear weights through the same field: the same numbers."""
    for s in range(5):
        t = random_tile(image, image[0], image[0].float(), size=40, margin=4, gen=gen(s), elastic_sigma=10.0)
        assert torch.allclose(t.weight, t.image[0, 4:36, 4:36], atol=1e-4)


def test_flips_and_quarter_turns_are_torchs():
    x = torch.arange(12.0).reshape(1, 3, 4)
    assert torch.equal(flip_rot(x, True, False, 0), x.flip(-1))
    assert torch.equal(flip_rot(x, False, True, 0), x.flip(-2))
    assert torch.equal(flip_rot(x, True, True, 3), torch.rot90(x.flip(-1).flip(-2), 3, (-2, -1)))
    assert torch.equal(flip_rot(x, False, False, 4), x)


def test_all_eight_symmetries_are_drawn(image):
    mask = image[0]
    centre = image[:, 20:36, 30:46]  # a square tile the size of the image region: only the symmetry varies
    tiles = set()
    for s in range(64):
        t = random_tile(centre, mask[20:36, 30:46], None, size=16, margin=0, gen=gen(s), elastic_sigma=0)
        tiles.add(bytes(t.image.to(torch.uint8).numpy()))
    assert len(tiles) == 8


def test_zero_sigma_is_the_identity_exactly(image):
    h, w = image.shape[1:]
    square = image[:, :h, :h]
    t = random_tile(square, square[0], square[0].float(), size=h, margin=0, gen=gen(0), elastic_sigma=0.0,
                    flips=False, rot90=False)
    assert torch.equal(t.image, square.float()) and torch.equal(t.mask, square[0].long())
    assert torch.equal(t.weight, square[0].float())
    field = elastic_field(h, 0.0, gen(0))
    assert torch.equal(field, torch.zeros(2, h, h))


def test_elastic_warp_is_scipys_map_coordinates(image):
    """The deformed image is the image read at (row + dy, col + dx), bilinear, mirrored at the
    edges: what scipy.ndimage.map_coordinates(order=1, mode="mirror") computes."""
    x = image.float()
    h, w = x.shape[1:]
    field = elastic_field(48, 10.0, gen(3))
    ys = torch.arange(-4, 44, dtype=torch.float32)[:, None] + field[0]
    xs = torch.arange(30, 78, dtype=torch.float32)[None, :] + field[1]
    out = sample(x, ys, xs, "bilinear")[0]
    ref = ndimage.map_coordinates(x[0].double().numpy(), [ys.double().numpy(), xs.double().numpy()], order=1,
                                  mode="mirror")
    assert field.abs().max() > 5  # a real deformation, reaching beyond the edges
    assert np.abs(out.double().numpy() - ref).max() < 2e-3
    nearest = sample(x, ys, xs, "nearest")[0]
    ref0 = ndimage.map_coordinates(x[0].double().numpy(), [ys.double().numpy(), xs.double().numpy()], order=0,
                                   mode="mirror")
    assert (np.abs(nearest.double().numpy() - ref0) > 0).mean() < 0.01  # ties at exact halves may round apart


def test_the_field_passes_through_the_coarse_displacements():
    """The paper's field: a 3x3 grid of N(0, sigma) vectors at the tile's corners, edge midpoints and
    centre, interpolated bicubically: at the nodes it is the drawn vectors."""
    coarse = torch.randn(1, 2, 3, 3, generator=gen(7)) * 10.0
    field = elastic_field(65, 10.0, gen(7))
    nodes = field[:, ::32, ::32]
    assert torch.allclose(nodes, coarse[0], atol=1e-4)
    coarse = torch.cat([torch.randn(1, 2, 3, 3, generator=gen(s)) for s in range(400)]) * 10.0
    assert abs(float(coarse.std()) - 10.0) < 0.5
    smooth = (field[:, 1:] - field[:, :-1]).abs().max()
    assert smooth < 2.0  # a few pixels over a 65-pixel tile: no tearing


def test_bicubic_images_stay_in_the_uint8_range(image):
    for s in range(4):
        t = random_tile(image, image[0], None, size=40, margin=0, gen=gen(s), elastic_sigma=10.0, image_mode="bicubic")
        assert float(t.image.min()) >= 0 and float(t.image.max()) <= 255


def test_the_same_seed_gives_the_same_tile(image):
    a = random_tile(image, image[0], None, size=40, margin=4, gen=gen(11), elastic_sigma=10.0)
    b = random_tile(image, image[0], None, size=40, margin=4, gen=gen(11), elastic_sigma=10.0)
    c = random_tile(image, image[0], None, size=40, margin=4, gen=gen(12), elastic_sigma=10.0)
    assert torch.equal(a.image, b.image) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.image, c.image)


def test_bad_tile_arguments():
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="leaves no target pixels"):
        random_tile(x, x[0], None, size=8, margin=4, gen=gen(0))
    with pytest.raises(ValueError, match="image_mode must be one of"):
        random_tile(x, x[0], None, size=8, margin=0, gen=gen(0), image_mode="area")
