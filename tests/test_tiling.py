"""Overlap-tile inference against whole-image predictions of the same networks: same-padding nets
(whose receptive field is smaller than the discarded overlap) and valid-convolution nets on the
mirror-padded image, for odd sizes and images smaller than a tile."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reslab.errors import ReslabError
from reslab.tiling import mirror_indices, predict_tiled, tile_plan

K = 3


def same_net(seed: int = 0) -> nn.Module:
    """Three 3x3 same-padding convolutions (one dilated by 2): receptive field radius 1 + 2 + 1 = 4."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.ReLU(),
                         nn.Conv2d(8, K, 3, padding=1)).eval()


class ValidNet(nn.Sequential):
    """``depth`` unpadded 3x3 convolutions: the output loses ``depth`` pixels on each side."""

    def __init__(self, depth: int = 4, seed: int = 0) -> None:
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(2 if i == 0 else 8, K if i == depth - 1 else 8, 3), nn.ReLU()]
        super().__init__(*layers[:-1])
        self.depth = depth
        self.eval()

    def output_margin(self, h: int, w: int) -> tuple[int, int]:
        return (self.depth, self.depth)

    def check_input_size(self, h: int, w: int) -> None:
        if min(h, w) <= 2 * self.depth:
            raise ReslabError(f"input {h}x{w} is too small: the smallest is {2 * self.depth + 1}")


def image(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, h, w, generator=torch.Generator().manual_seed(seed))


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    return F.pad(x[None], (left, right, top, bottom), mode="reflect")[0]


@torch.no_grad()
def whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x[None])[0]


@pytest.mark.parametrize("size", [(32, 32), (75, 101), (33, 64), (97, 40)])
def test_same_padding_net_tiled_equals_whole_image_when_the_overlap_exceeds_the_receptive_field(size):
    net, x = same_net(), image(*size)
    got = predict_tiled(net, x, tile=32, num_classes=K)  # overlap 32 // 4 = 8 > receptive field radius 4
    assert got.shape == (K, *size) and got.dtype == torch.float32
    torch.testing.assert_close(got, whole(net, x), atol=1e-5, rtol=0)


def test_same_padding_tiling_is_sensitive_to_a_too_small_overlap():
    # the check above can fail: with a 2-pixel overlap the tile edges cut into the receptive field
    net, x = same_net(), image(75, 101)
    diff = (predict_tiled(net, x, tile=32, num_classes=K, overlap=2) - whole(net, x)).abs().max()
    assert diff > 1e-3


@pytest.mark.parametrize("size", [(20, 20), (37, 45), (12, 61), (9, 9), (5, 7)])
def test_valid_net_tiled_equals_whole_prediction_of_the_mirror_padded_image(size):
    net, x = ValidNet(depth=4), image(*size)
    got = predict_tiled(net, x, tile=20, num_classes=K, batch_size=3)  # margin from net.output_margin: 4
    ref = whole(net, reflect_pad(x, 4, 4, 4, 4))
    assert got.shape == (K, *size) and ref.shape == got.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_valid_net_with_a_margin_larger_than_the_image_mirrors_repeatedly():
    net, x = ValidNet(depth=6), image(4, 5)
    got = predict_tiled(net, x, tile=16, num_classes=K)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (6, 6), (6, 6)), mode="reflect"))
    torch.testing.assert_close(got, whole(net, padded), atol=1e-5, rtol=0)


def test_plain_module_takes_the_margin_argument():
    net = ValidNet(depth=3)
    plain = nn.Sequential(*net)  # no output_margin
    x = image(30, 23)
    ref = whole(net, reflect_pad(x, 3, 3, 3, 3))
    torch.testing.assert_close(predict_tiled(plain, x, tile=14, num_classes=K, margin=3), ref, atol=1e-5, rtol=0)
    with pytest.raises(ReslabError, match="margin="):  # margin 0 assumed: the output is smaller than expected
        predict_tiled(plain, x, tile=14, num_classes=K)


@pytest.mark.parametrize("size", [(13, 27), (1, 8), (31, 32)])
def test_images_smaller_than_a_tile_are_mirror_padded_to_the_tile(size):
    net, x = same_net(), image(*size)
    h, w = size
    top, left = (32 - h) // 2, (32 - w) // 2
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (top, 32 - h - top), (left, 32 - w - left)), mode="reflect"))
    ref = whole(net, padded)[:, top:top + h, left:left + w]
    torch.testing.assert_close(predict_tiled(net, x, tile=32, num_classes=K), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_mirror_indices_match_numpy_reflect(n):
    for before, after in [(0, 0), (2, 3), (n + 4, 2 * n + 5)]:
        want = np.pad(np.arange(n), (before, after), mode="reflect")
        assert mirror_indices(-before, n + before + after, n).tolist() == want.tolist()


@pytest.mark.parametrize("size,margin,overlap", [(75, 0, 8), (32, 0, 8), (33, 0, 8), (200, 0, 0), (37, 4, 0), (37, 2, 3)])
def test_tile_plan_covers_every_pixel_once_from_a_tile_centre(size, margin, overlap):
    rows, _ = tile_plan(size, 5, 32, (margin, margin), overlap)
    covered = np.zeros(size, int)
    for idx, k0, k1, dst in rows:
        assert len(idx) == 32
        covered[dst:dst + k1 - k0] += 1
        if margin == 0 and size > 32:
            # the kept part stays `overlap` away from the tile's edges except at the image border
            assert k0 >= overlap or dst == 0
            assert k1 <= 32 - overlap or dst + k1 - k0 == size
            assert idx.tolist() == list(range(int(idx[0]), int(idx[0]) + 32))  # inside the image, no mirroring
        # the tile's output pixel o sits over input index idx[margin + o]: the kept pixels land where they belong
        centre = idx[margin + k0:margin + k1].tolist()
        assert centre == list(range(dst, dst + k1 - k0))
    assert (covered == 1).all()


def test_memory_is_bounded_by_the_tile_and_batch_size_does_not_change_the_result():
    net, x = same_net(), image(90, 70)
    seen: list[tuple[int, ...]] = []
    hook = net.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    try:
        one = predict_tiled(net, x, tile=32, num_classes=K, batch_size=1)
        three = predict_tiled(net, x, tile=32, num_classes=K, batch_size=3)
    finally:
        hook.remove()
    assert all(s[1:] == (2, 32, 32) and s[0] <= 3 for s in seen)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=0)


def test_runs_in_eval_mode_without_gradients_and_restores_the_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout2d(0.5), nn.Conv2d(4, K, 1))
    with torch.no_grad():
        net(torch.randn(4, 2, 16, 16))  # a BN update so the running statistics differ from the batch's
    net.train()
    x = image(40, 40)
    got = predict_tiled(net, x, tile=32, num_classes=K)
    assert net.training and not got.requires_grad
    net.eval()
    torch.testing.assert_close(got, whole(net, x), atol=1e-5, rtol=0)


def test_autocast_bfloat16_stays_close_and_returns_float32():
    net, x = same_net(), image(40, 50)
    got = predict_tiled(net, x, tile=32, num_classes=K, amp_dtype=torch.bfloat16, device="cpu")
    assert got.dtype == torch.float32
    ref = whole(net, x)
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


def test_bad_arguments_raise_user_errors():
    net = ValidNet(depth=4)
    with pytest.raises(ReslabError, match="smallest is 9"):
        predict_tiled(net, image(20, 20), tile=8, num_classes=K)  # the model's own check
    with pytest.raises(ReslabError, match="keeps no pixel"):
        predict_tiled(same_net(), image(20, 20), tile=8, num_classes=K, overlap=4)
    with pytest.raises(ReslabError, match="float"):
        predict_tiled(same_net(), torch.zeros(2, 8, 8, dtype=torch.uint8), tile=8, num_classes=K)
    with pytest.raises(ReslabError, match="num_classes=2"):
        predict_tiled(same_net(), image(20, 20), tile=16, num_classes=2)
