"""Tiled super-resolution: a network that maps a low-resolution image to one ``scale`` times larger
runs on tiles of the low-resolution image, with memory bounded by the tile, and the result equals
whole-image inference.

Geometry (per axis, in low-resolution pixels): a side no longer than the tile is one tile (no
padding). A longer side is covered by tiles of ``tile`` pixels that lie inside the image, stepping by
``tile - 2 * overlap``, the last one flush with the far border. Each output pixel is taken from one
tile: at a tile edge inside the image an ``overlap`` band is discarded and the kept parts abut
exactly; at an image border a tile keeps its pixels up to the border, where its computation is the
whole image's. When ``overlap`` is at least the network's receptive-field radius (in
low-resolution pixels, :func:`receptive_radius`), every kept pixel sees exactly the input it sees in
the whole image, so tiled and whole-image outputs agree up to float reordering.

The radius is computed from the network's layers, output back to input: a convolution of radius
``k`` adds ``k`` pixels at its resolution; a pixel shuffle by ``f`` maps a radius ``r`` at the finer
resolution to ``ceil(r / f)`` at the coarser one (output pixel ``Y`` comes from ``floor(Y / f)``);
a bicubic upsampling by ``f`` (VDSR's input, a=-0.5 kernel of support 2) maps ``r`` to
``ceil(2.5 + (r - 0.5) / f) - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .errors import ReslabError

__all__ = ["receptive_radius", "sr_axis_plan", "predict_sr_tiled", "DEFAULT_TILE"]

DEFAULT_TILE = 256
"""Low-resolution tile side: most photos of a few hundred pixels go through in one or two tiles."""


def receptive_radius(steps: Sequence[tuple[str, int]]) -> int:
    """The receptive-field radius, in input pixels, of a network given as ``steps`` in input-to-output
    order: ``("conv", k)`` (a convolution reaching ``k`` pixels each side), ``("shuffle", f)`` (a
    pixel shuffle by ``f``) or ``("bicubic", f)`` (bicubic upsampling by ``f``)."""
    r = 0
    for kind, value in reversed(list(steps)):
        if kind == "conv":
            r += int(value)
        elif kind == "shuffle":
            r = math.ceil(r / value)
        elif kind == "bicubic":
            r = math.ceil(2.5 + (r - 0.5) / value) - 1
        else:
            raise ValueError(f"unknown step {kind!r}; expected conv, shuffle or bicubic")
    return r


def sr_axis_plan(size: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """The tiles along one axis of ``size`` low-resolution pixels: ``(start, stop, keep_from,
    keep_to)`` each, the tile's extent and the part of it kept (absolute coordinates); the kept
    parts cover ``0 .. size`` once."""
    if size <= tile:
        return [(0, size, 0, size)]
    step = tile - 2 * overlap
    if step < 1:
        raise ReslabError(f"a {tile}-pixel tile with an overlap of {overlap} pixels keeps no pixel; use a tile larger "
                          f"than {2 * overlap} pixels")
    starts = list(range(0, size - tile, step)) + [size - tile]
    plan = []
    kept_from = 0
    for j, s in enumerate(starts):
        kept_to = size if j == len(starts) - 1 else s + tile - overlap
        plan.append((s, s + tile, kept_from, kept_to))
        kept_from = kept_to
    return plan


@torch.no_grad()
def predict_sr_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *, scale: int, overlap: int,
                     tile: int = DEFAULT_TILE, batch_size: int = 1, device: torch.device | str | None = None,
                     out_dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """The super-resolved ``image``, computed tile by tile.

    Args:
        fn: the network: float ``(N, C, h, w)`` in [0, 1] on ``device`` to ``(N, C, scale * h,
            scale * w)`` (for VDSR: the bicubic upscale, then the network).
        image: float ``(C, H, W)`` in [0, 1] (or uint8, divided by 255), the low-resolution image.
        scale: the upscaling factor.
        overlap: pixels discarded at each inner tile edge: at least the receptive-field radius for
            an exact result (:func:`receptive_radius`).
        tile: the low-resolution tile side.
        batch_size: tiles per call of ``fn``.
        device: where ``fn`` runs (default: the image's device).
        out_dtype: ``torch.uint8`` (the default: clamped to [0, 1], scaled by 255 and rounded, what
            a PNG holds; a quarter of float32's memory) or a float dtype (unclamped).

    Returns:
        ``(C, scale * H, scale * W)`` of ``out_dtype`` on the image's device.
    """
    if image.dim() != 3:
        raise ReslabError(f"image must be a (C, H, W) tensor, got shape {tuple(image.shape)}")
    if tile < 1 or batch_size < 1 or scale < 1 or overlap < 0:
        raise ReslabError(f"tile, batch_size and scale must be positive and overlap >= 0, got tile={tile}, "
                          f"batch_size={batch_size}, scale={scale}, overlap={overlap}")
    if not image.is_floating_point():
        image = image.float() / 255
    c, h, w = image.shape
    device = torch.device(device) if device is not None else image.device
    rows, cols = sr_axis_plan(h, tile, overlap), sr_axis_plan(w, tile, overlap)
    out = torch.empty(c, scale * h, scale * w, dtype=out_dtype, device=image.device)
    tiles = [(r, q) for r in rows for q in cols]
    for b in range(0, len(tiles), batch_size):
        chunk = tiles[b:b + batch_size]
        x = torch.stack([image[:, r[0]:r[1], q[0]:q[1]] for r, q in chunk]).to(device)
        y = fn(x)
        expected = (c, scale * x.shape[2], scale * x.shape[3])
        if tuple(y.shape[1:]) != expected:
            raise ReslabError(f"the network gave {tuple(y.shape[1:])} for a {x.shape[2]}x{x.shape[3]} tile, expected "
                              f"{expected} (scale {scale})")
        y = y.float()
        if out_dtype == torch.uint8:
            y = y.clamp(0, 1).mul(255).round().to(torch.uint8)
        else:
            y = y.to(out_dtype)
        y = y.to(image.device)
        for ((r0, _, rk0, rk1), (q0, _, qk0, qk1)), yi in zip(chunk, y):
            out[:, scale * rk0:scale * rk1, scale * qk0:scale * qk1] = \
                yi[:, scale * (rk0 - r0):scale * (rk1 - r0), scale * (qk0 - q0):scale * (qk1 - q0)]
    return out
