"""Super-resolution metrics as SR papers report them: PSNR and SSIM on the luminance (Y) channel,
with ``scale`` pixels shaved off every border, computed by scikit-image.

- Y is ITU-R BT.601's luma as MATLAB's ``rgb2ycbcr`` computes it: for R, G, B in [0, 1],
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``, in [16, 235]; kept unrounded (as BasicSR does;
  MATLAB rounds a uint8 image's Y, a difference of ~0.01 dB).
- PSNR: :func:`skimage.metrics.peak_signal_noise_ratio` with ``data_range=255``; identical images
  give :data:`PSNR_CAP` instead of infinity, so a mean over images stays finite.
- SSIM: :func:`skimage.metrics.structural_similarity` with ``data_range=255``, ``gaussian_weights=True``,
  ``sigma=1.5`` and ``use_sample_covariance=False``: Wang et al. 2004's 11x11 Gaussian window, the
  setting of the SR papers' MATLAB code (the mean over the pixels whose window lies inside the image).

Images are compared as uint8 (what a saved PNG holds): a network's output is clamped to [0, 1]
and rounded to 8 bits before it is measured.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ReslabError

__all__ = ["Y_WEIGHTS", "Y_OFFSET", "PSNR_CAP", "SSIM_WINDOW", "rgb_to_y", "shave", "psnr_y", "ssim_y",
           "y_squared_error", "min_eval_side", "psnr_from_mse"]

Y_WEIGHTS = (65.481, 128.553, 24.966)
"""BT.601 luma weights for R, G, B on [0, 1], giving Y on the 0-255 scale (MATLAB's ``rgb2ycbcr``)."""

Y_OFFSET = 16.0
"""BT.601's black level on the 0-255 scale."""

PSNR_CAP = 100.0
"""The PSNR (dB) given for identical images, where the ratio is infinite."""

SSIM_WINDOW = 11
"""The side of SSIM's Gaussian window (sigma 1.5, truncated at 3.5 sigma): a shaved image needs at least this."""


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An RGB image as float64 (H, W, 3) on [0, 1]: a uint8 (3, H, W) tensor, or a float one on [0, 1]."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ReslabError(f"expected an RGB (3, H, W) image, got shape {tuple(image.shape)}")
        arr = image.detach().cpu().permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ReslabError(f"expected an RGB (H, W, 3) array, got shape {arr.shape}")
    return arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float64)


def rgb_to_y(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """BT.601 luma on the 0-255 scale (float64 (H, W), in [16, 235]) of an RGB image: a uint8
    ``(3, H, W)`` tensor, a float one on [0, 1], or an ``(H, W, 3)`` array (uint8 or [0, 1])."""
    rgb = _hwc(image)
    return Y_OFFSET + rgb @ np.asarray(Y_WEIGHTS)


def shave(a: np.ndarray, border: int) -> np.ndarray:
    """``a`` (H, W, ...) without ``border`` pixels on each side."""
    if border < 0:
        raise ReslabError(f"border must be >= 0, got {border}")
    if border == 0:
        return a
    if min(a.shape[:2]) <= 2 * border:
        raise ReslabError(f"a {a.shape[1]}x{a.shape[0]} image has nothing left after shaving {border} pixels a side")
    return a[border:-border, border:-border]


def min_eval_side(scale: int) -> int:
    """The smallest side of an image that PSNR and SSIM can be measured on at ``scale``: SSIM's window
    after the ``scale``-pixel shave, plus up to ``scale - 1`` pixels cut to a multiple of the scale."""
    return SSIM_WINDOW + 2 * scale + scale - 1


def psnr_y(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, border: int) -> float:
    """PSNR (dB) of ``pred`` against ``target`` on Y, ``border`` pixels shaved (scikit-image, peak 255)."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = shave(rgb_to_y(target), border), shave(rgb_to_y(pred), border)
    if a.shape != b.shape:
        raise ReslabError(f"images of different sizes: {a.shape} and {b.shape}")
    if np.array_equal(a, b):
        return PSNR_CAP
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim_y(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, border: int) -> float:
    """SSIM of ``pred`` against ``target`` on Y, ``border`` pixels shaved (scikit-image, Gaussian
    window of sigma 1.5, population covariances, peak 255)."""
    from skimage.metrics import structural_similarity

    a, b = shave(rgb_to_y(target), border), shave(rgb_to_y(pred), border)
    if a.shape != b.shape:
        raise ReslabError(f"images of different sizes: {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ReslabError(f"a {a.shape[1]}x{a.shape[0]} image (after the {border}-pixel shave) is smaller than SSIM's "
                          f"{SSIM_WINDOW}x{SSIM_WINDOW} window")
    return float(structural_similarity(a, b, data_range=255, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def y_squared_error(pred: torch.Tensor, target: torch.Tensor, border: int) -> tuple[torch.Tensor, int]:
    """(sum of squared Y differences on the 0-255 scale, pixels counted) of float ``(N, 3, H, W)``
    batches on [0, 1] (``pred`` clamped to it), ``border`` pixels shaved: running training statistics,
    computed on the batch's device without rounding."""
    if border:
        pred, target = pred[..., border:-border, border:-border], target[..., border:-border, border:-border]
    w = torch.tensor(Y_WEIGHTS, dtype=torch.float32, device=pred.device).reshape(1, 3, 1, 1)
    diff = ((pred.detach().float().clamp(0, 1) - target.float()) * w).sum(1)
    return diff.square().sum(), diff.numel()


def psnr_from_mse(mse: float) -> float:
    """PSNR (dB, peak 255) of a mean squared error on the 0-255 scale (:data:`PSNR_CAP` for 0)."""
    return PSNR_CAP if mse <= 0 else 10 * math.log10(255.0 ** 2 / mse)
