"""Augmentation for segmentation: one geometric transform applied alike to an image, its mask and
an optional per-pixel weight map, on tensors, every random draw from a passed ``torch.Generator``.

The training tile of a U-Net (Ronneberger et al., 2015) is cut from the image with mirrored
borders: a valid (unpadded) network maps an image tile of size ``S`` to the centre ``S - 2 *
margin`` of it, so the image is read ``margin`` pixels beyond the target tile on every side, by
reflection where that leaves the image (the paper's Fig. 2 "overlap-tile strategy"). Indices are
mirrored, never clamped (:func:`reflect_index`), so an image smaller than the tile works too.

The paper's elastic deformation (Sec. 3.1): "random displacement vectors on a coarse 3 by 3 grid
... sampled from a Gaussian distribution with 10 pixels standard deviation. Per-pixel
displacements are then computed using bicubic interpolation." (:func:`elastic_field`). The tile is
then read at the displaced coordinates in one ``grid_sample`` call over the whole image
(:func:`sample`): the image bilinear (or bicubic), the mask by its nearest pixel, the weights
bilinear; reflection beyond the image edge, as for the crop.

Flips and 90-degree rotations act on the finished tiles (:func:`flip_rot`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["reflect_index", "crop_origin", "crop", "elastic_field", "sample", "flip_rot", "Tile", "random_tile",
           "IMAGE_MODES"]

IMAGE_MODES = ("bilinear", "bicubic", "nearest")
"""How a deformed image is interpolated (``grid_sample``'s modes)."""


def reflect_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Indices mirrored into ``[0, n)`` about the edge pixels (``d c b | a b c d | c b a``, numpy's
    and torch's ``"reflect"`` padding), however far outside they are; ``n == 1`` maps all to 0."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def crop_origin(h: int, w: int, size: int, gen: torch.Generator) -> tuple[int, int]:
    """A random (top, left) of a ``size`` x ``size`` target tile in an ``h`` x ``w`` image, uniform over
    the positions inside it; where the image is smaller than the tile, over the positions that keep
    the image inside the tile (the rest is mirrored). Draws two integers from ``gen``."""
    lo_y, hi_y = min(0, h - size), max(0, h - size)
    lo_x, hi_x = min(0, w - size), max(0, w - size)
    top = int(torch.randint(lo_y, hi_y + 1, (1,), generator=gen))
    left = int(torch.randint(lo_x, hi_x + 1, (1,), generator=gen))
    return top, left


def _rows_cols(top: int, left: int, size: int, margin: int, h: int, w: int,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = reflect_index(torch.arange(top - margin, top + size + margin, device=device), h)
    cols = reflect_index(torch.arange(left - margin, left + size + margin, device=device), w)
    return rows, cols


def crop(x: torch.Tensor, top: int, left: int, size: int, margin: int = 0) -> torch.Tensor:
    """The region ``[top - margin, top + size + margin)`` x ``[left - margin, left + size + margin)``
    of ``x`` (..., H, W), mirrored where it leaves the image: exact copies of pixels, no interpolation."""
    h, w = x.shape[-2:]
    rows, cols = _rows_cols(top, left, size, margin, h, w, x.device)
    return x[..., rows[:, None], cols[None, :]]


def elastic_field(size: int, sigma: float, gen: torch.Generator, *, grid: int = 3,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The U-Net paper's random displacement field over a ``size`` x ``size`` tile: float32
    ``(2, size, size)``, (dy, dx) in pixels.

    ``grid`` x ``grid`` displacement vectors (the paper: 3 x 3) are drawn from N(0, sigma^2) (from
    ``gen``, on the CPU, so the draw does not depend on the device) at nodes spread evenly over the
    tile, corners included, and interpolated bicubically to every pixel (``align_corners=True``:
    the field passes through the drawn vectors at the nodes).
    """
    coarse = torch.randn(1, 2, grid, grid, generator=gen) * float(sigma)
    coarse = coarse.to(device)
    if size == 1:
        return coarse[0, :, :1, :1].clone()
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0]


def sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``x`` (C, H, W), float, read at the pixel coordinates ``ys``, ``xs`` (each (h, w), row and
    column; ``(0, 0)`` is the top-left pixel's centre): (C, h, w). Coordinates beyond the image are
    mirrored about the edge pixels, as :func:`reflect_index` does for whole pixels; ``mode`` is
    ``grid_sample``'s (``"bilinear"``, ``"bicubic"``, ``"nearest"``)."""
    h, w = x.shape[-2:]
    gx = xs * (2.0 / (w - 1)) - 1 if w > 1 else torch.zeros_like(xs)
    gy = ys * (2.0 / (h - 1)) - 1 if h > 1 else torch.zeros_like(ys)
    grid = torch.stack([gx, gy], dim=-1)[None].to(x.dtype)
    return F.grid_sample(x[None], grid, mode=mode, padding_mode="reflection", align_corners=True)[0]


def flip_rot(x: torch.Tensor, hflip: bool, vflip: bool, k: int) -> torch.Tensor:
    """``x`` (..., H, W) flipped left-right (``hflip``), then top-bottom (``vflip``), then rotated by
    ``k`` quarter turns counter-clockwise (``torch.rot90``)."""
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if k % 4:
        x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x


class Tile(NamedTuple):
    """A training tile: the image float (C, S, S) in the uint8 range [0, 255] (not normalised), the
    mask int64 (S - 2m, S - 2m), the weights float32 (S - 2m, S - 2m) or None."""

    image: torch.Tensor
    mask: torch.Tensor
    weight: torch.Tensor | None


def random_tile(image: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None, *, size: int,
                margin: int, gen: torch.Generator, elastic_sigma: float = 0.0, elastic_grid: int = 3,
                flips: bool = True, rot90: bool = True, image_mode: str = "bilinear") -> Tile:
    """One random training tile of ``image`` (C, H, W), ``mask`` (H, W) and ``weight`` (H, W, or None).

    The target tile (``size - 2 * margin`` square) is placed at random (:func:`crop_origin`); the
    image tile is it plus ``margin`` on every side, mirrored beyond the image. With
    ``elastic_sigma > 0`` the tile is deformed (:func:`elastic_field` over the image tile, the
    mask's the centre of it) and read by :func:`sample`: the image by ``image_mode``, the mask by
    nearest pixel, the weights bilinear; at 0 the pixels are copied exactly (:func:`crop`). Then a
    left-right flip and a top-bottom flip, each with probability 1/2 (``flips``), and 0-3 quarter
    turns (``rot90``).

    The draws from ``gen``, in order: top, left; the 2 x grid x grid displacements (if
    ``elastic_sigma > 0``); the two flips (if ``flips``); the quarter turns (if ``rot90``). The
    same generator state gives the same tile.
    """
    if image_mode not in IMAGE_MODES:
        raise ValueError(f"image_mode must be one of {', '.join(IMAGE_MODES)}, got {image_mode!r}")
    target = size - 2 * margin
    if target < 1:
        raise ValueError(f"a tile of {size} px with a margin of {margin} px leaves no target pixels")
    h, w = mask.shape[-2:]
    top, left = crop_origin(h, w, target, gen)
    if elastic_sigma > 0:
        field = elastic_field(size, elastic_sigma, gen, grid=elastic_grid, device=image.device)
        base_y = torch.arange(top - margin, top + target + margin, device=image.device, dtype=torch.float32)
        base_x = torch.arange(left - margin, left + target + margin, device=image.device, dtype=torch.float32)
        ys = base_y[:, None] + field[0]
        xs = base_x[None, :] + field[1]
        inner = (slice(margin, margin + target), slice(margin, margin + target))
        x = sample(image.float(), ys, xs, image_mode)
        if image_mode == "bicubic":
            x = x.clamp_(0, 255)  # bicubic overshoots at edges
        y = sample(mask[None].float(), ys[inner], xs[inner], "nearest")[0].long()
        wt = sample(weight[None].float(), ys[inner], xs[inner], "bilinear")[0] if weight is not None else None
    else:
        x = crop(image, top, left, target, margin).float()
        y = crop(mask, top, left, target).long()
        wt = crop(weight, top, left, target).float() if weight is not None else None
    hflip = vflip = False
    k = 0
    if flips:
        hflip, vflip = (torch.rand(2, generator=gen) < 0.5).tolist()
    if rot90:
        k = int(torch.randint(0, 4, (1,), generator=gen))
    x, y = flip_rot(x, hflip, vflip, k), flip_rot(y, hflip, vflip, k)
    if wt is not None:
        wt = flip_rot(wt, hflip, vflip, k)
    return Tile(x.contiguous(), y.contiguous(), wt.contiguous() if wt is not None else None)

