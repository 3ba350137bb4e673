"""PSNR and SSIM on Y as SR papers report them: the luma formula, the border shave, PSNR against its
closed form, SSIM against scikit-image called directly, and the training statistic against both."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from reslab.errors import ReslabError
from reslab.srmetrics import (
    PSNR_CAP,
    min_eval_side,
    psnr_from_mse,
    psnr_y,
    rgb_to_y,
    shave,
    ssim_y,
    y_squared_error,
)


def _images(seed: int = 0, h: int = 30, w: int = 26) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    noisy = (hr.int() + torch.randint(-20, 21, (3, h, w), generator=g)).clamp(0, 255).to(torch.uint8)
    return noisy, hr


def test_luma_is_bt601_on_the_0_255_scale():
    white, black = torch.full((3, 1, 1), 255, dtype=torch.uint8), torch.zeros(3, 1, 1, dtype=torch.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).reshape(3, 1, 1)
    assert rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)
    # MATLAB's rgb2ycbcr(uint8([10 200 30])) gives Y = 122 (16 + 27114.39 / 255, rounded); ours is unrounded
    px = torch.tensor([10, 200, 30], dtype=torch.uint8).reshape(3, 1, 1)
    assert rgb_to_y(px)[0, 0] == pytest.approx(16 + 27114.39 / 255) and round(rgb_to_y(px)[0, 0]) == 122
    hwc = np.array([[[10, 200, 30]]], dtype=np.uint8)
    assert rgb_to_y(hwc)[0, 0] == rgb_to_y(px)[0, 0]


def test_psnr_is_its_closed_form_on_the_shaved_luma():
    pred, hr = _images()
    a, b = rgb_to_y(hr)[2:-2, 2:-2], rgb_to_y(pred)[2:-2, 2:-2]
    mse = float(np.mean((a - b) ** 2))
    assert psnr_y(pred, hr, 2) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
    assert psnr_from_mse(mse) == pytest.approx(psnr_y(pred, hr, 2), rel=1e-12)
    # the shave matters: the border is left out
    assert psnr_y(pred, hr, 0) != psnr_y(pred, hr, 2)


def test_a_uniform_luma_offset_gives_the_textbook_psnr():
    hr = torch.full((3, 20, 20), 100, dtype=torch.uint8)
    pred = hr + 1  # Y rises by (65.481 + 128.553 + 24.966) / 255 = 219 / 255 everywhere
    assert psnr_y(pred, hr, 3) == pytest.approx(20 * math.log10(255 / (219 / 255)), rel=1e-12)


def test_identical_images_get_the_cap_not_infinity():
    _, hr = _images()
    assert psnr_y(hr, hr, 2) == PSNR_CAP and psnr_from_mse(0.0) == PSNR_CAP


def test_ssim_is_scikit_images_with_the_papers_window():
    pred, hr = _images(1, 40, 44)
    a, b = rgb_to_y(hr)[3:-3, 3:-3], rgb_to_y(pred)[3:-3, 3:-3]
    expected = structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim_y(pred, hr, 3) == expected
    assert ssim_y(hr, hr, 3) == pytest.approx(1.0)
    assert 0 < ssim_y(pred, hr, 3) < 1


def test_too_small_to_measure_is_one_line():
    small = torch.zeros(3, 14, 14, dtype=torch.uint8)
    with pytest.raises(ReslabError, match="smaller than SSIM's 11x11 window"):
        ssim_y(small, small, 2)
    with pytest.raises(ReslabError, match="nothing left after shaving"):
        shave(np.zeros((4, 4)), 2)
    assert min_eval_side(2) == 16 and min_eval_side(4) == 22


def test_training_statistic_matches_the_evaluation_measure():
    pred, hr = _images(2)
    sq, n = y_squared_error(pred[None].float() / 255, hr[None].float() / 255, 2)
    mse = float(sq) / n
    assert n == 26 * 22
    assert psnr_from_mse(mse) == pytest.approx(psnr_y(pred, hr, 2), rel=1e-5)  # float32 against float64


def test_float_images_on_the_unit_range_read_like_uint8():
    pred, hr = _images(3)
    assert psnr_y(pred.double() / 255, hr.double() / 255, 1) == pytest.approx(psnr_y(pred, hr, 1), rel=1e-12)
