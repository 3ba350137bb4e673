"""Overlap-tile inference (Ronneberger et al. 2015, Fig. 2): a dense network predicts an image of any
size tile by tile, with memory bounded by the tile.

Two geometries, chosen by the network's output margin ``m`` (pixels its output loses on each side,
``model.output_margin(tile, tile)``):

- **valid convolutions** (``m > 0``, the paper's U-Net): a ``T x T`` input tile yields the centred
  ``(T - 2m) x (T - 2m)`` output; tiles step by ``T - 2m`` so their outputs abut exactly, and the
  context missing beyond the image border is mirrored (the paper's extrapolation). The result equals
  the network's output on the whole image mirror-padded by ``m``.
- **same padding** (``m = 0``): tiles overlap; at a tile edge inside the image an ``overlap`` band
  (default ``T // 4``) is discarded and the kept centres abut exactly, so each pixel comes from one
  tile, at least ``overlap`` pixels from that tile's inner edges. Tiles lie inside the image and keep
  their pixels up to an image border, so when the network's receptive field reaches no further than
  ``overlap`` pixels, the result equals the whole-image prediction. A side shorter than the tile is
  mirror-padded to the tile (centred).

Tiles are gathered from the image by mirrored indices (never a padded copy of the image) and run
``batch_size`` at a time under ``torch.no_grad`` in eval mode.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from .errors import ReslabError

__all__ = ["predict_tiled", "mirror_indices", "tile_plan"]

# one axis of a plan: (input indices of the tile (length T), kept output slice start/stop, destination start)
AxisTile = tuple[torch.Tensor, int, int, int]


def mirror_indices(start: int, length: int, size: int) -> torch.Tensor:
    """Indices ``start .. start + length - 1`` folded into ``0 .. size - 1`` by mirroring about the
    edge pixels (numpy's and torch's ``reflect``: ``-1 -> 1``, ``size -> size - 2``), repeatedly for
    reaches beyond one image length."""
    idx = torch.arange(start, start + length)
    if size == 1:
        return torch.zeros(length, dtype=torch.long)
    period = 2 * (size - 1)
    idx = idx.remainder(period)
    return torch.where(idx >= size, period - idx, idx)


def _axis_plan(size: int, tile: int, margin: int, overlap: int) -> list[AxisTile]:
    """The tiles along one axis of ``size`` pixels."""
    out = tile - 2 * margin  # output side of one tile
    plan: list[AxisTile] = []
    if margin > 0:
        step = out - 2 * overlap
        for j in range(math.ceil(size / step)):
            dst = j * step
            n = min(step, size - dst)
            plan.append((mirror_indices(dst - margin - overlap, tile, size), overlap, overlap + n, dst))
        return plan
    if size <= tile:
        pad = (tile - size) // 2
        return [(mirror_indices(-pad, tile, size), pad, pad + size, 0)]
    step = tile - 2 * overlap
    count = 1 + math.ceil((size - tile) / step)
    starts = [j * step for j in range(count - 1)] + [size - tile]
    kept_from = 0
    for j, s in enumerate(starts):
        kept_to = size if j == count - 1 else s + tile - overlap
        plan.append((torch.arange(s, s + tile), kept_from - s, kept_to - s, kept_from))
        kept_from = kept_to
    return plan


def tile_plan(height: int, width: int, tile: int, margin: tuple[int, int] = (0, 0),
              overlap: int | None = None) -> tuple[list[AxisTile], list[AxisTile]]:
    """(rows, columns) of the tiling :func:`predict_tiled` uses: for each tile along an axis, its input
    indices, the kept part of its output and where that part goes. Every output pixel is covered once."""
    mh, mw = margin
    if overlap is None:
        overlap = 0 if max(mh, mw) > 0 else tile // 4
    for m in (mh, mw):
        if m < 0 or tile - 2 * m - 2 * overlap < 1:
            raise ReslabError(f"a {tile}-pixel tile with output margin {m} and overlap {overlap} keeps no pixel; "
                              f"use a larger tile or a smaller overlap")
    return _axis_plan(height, tile, mh, overlap), _axis_plan(width, tile, mw, overlap)


def _margin_of(model: nn.Module, tile: int, margin: int | tuple[int, int] | None) -> tuple[int, int]:
    if margin is None:
        fn = getattr(model, "output_margin", None)
        if fn is None:
            return (0, 0)
        margin = fn(tile, tile)
    if isinstance(margin, int):
        return (margin, margin)
    mh, mw = margin
    return (int(mh), int(mw))


@torch.no_grad()
def predict_tiled(model: nn.Module, image: torch.Tensor, *, tile: int, num_classes: int,
                  margin: int | tuple[int, int] | None = None, overlap: int | None = None, batch_size: int = 4,
                  device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Logits of a dense network for one whole image, by overlap-tile inference.

    Args:
        model: a segmentation network returning logits ``(N, K, T - 2m, T - 2m)`` for ``(N, C, T, T)``
            input; evaluated in eval mode (its training mode is restored afterwards).
        image: float ``(C, H, W)``, already normalised; any ``H, W``.
        tile: the input side of every tile (the size the network was trained on); checked with
            ``model.check_input_size`` when the model has one.
        num_classes: K.
        margin: the network's output margin ``m`` (an int or ``(mh, mw)``); default
            ``model.output_margin(tile, tile)``, or 0 for a network without that method.
        overlap: pixels discarded at each inner tile edge; default ``tile // 4`` for same-padding
            networks and 0 for valid ones (whose margin already supplies the context).
        batch_size: tiles per forward pass.
        device: where the network runs (default: where its parameters are).
        amp_dtype: autocast to this dtype (bf16/fp16) when given.

    Returns:
        float32 logits ``(K, H, W)`` on ``image``'s device (argmax for labels, softmax for
        probabilities).
    """
    if image.dim() != 3 or not image.is_floating_point():
        raise ReslabError(f"image must be a float (C, H, W) tensor, got {image.dtype} of shape {tuple(image.shape)}")
    if tile < 1 or batch_size < 1:
        raise ReslabError(f"tile and batch_size must be positive, got tile={tile}, batch_size={batch_size}")
    check = getattr(model, "check_input_size", None)
    if check is not None:
        check(tile, tile)
    mh, mw = _margin_of(model, tile, margin)
    rows, cols = tile_plan(image.shape[1], image.shape[2], tile, (mh, mw), overlap)
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else image.device
    device = torch.device(device)
    out = torch.empty(num_classes, image.shape[1], image.shape[2], dtype=torch.float32, device=image.device)
    tiles = [(r, c) for r in rows for c in cols]
    expected = (num_classes, tile - 2 * mh, tile - 2 * mw)
    autocast = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None
                else contextlib.nullcontext())
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(tiles), batch_size):
            chunk = tiles[b:b + batch_size]
            x = torch.stack([image.index_select(1, r[0].to(image.device)).index_select(2, c[0].to(image.device))
                             for r, c in chunk]).to(device)
            with autocast:
                y = model(x)
            if not isinstance(y, torch.Tensor) or tuple(y.shape[1:]) != expected:
                shape = tuple(y.shape[1:]) if isinstance(y, torch.Tensor) else type(y).__name__
                raise ReslabError(f"the network gave {shape} for a {tile}x{tile} tile, expected {expected} "
                                  f"(num_classes={num_classes}, output margin ({mh}, {mw})); pass num_classes and the "
                                  "network's margin= (pixels its output loses on each side)")
            y = y.float().to(out.device)
            for (r, c), yi in zip(chunk, y):
                _, r0, r1, rd = r
                _, c0, c1, cd = c
                out[:, rd:rd + r1 - r0, cd:cd + c1 - c0] = yi[:, r0:r1, c0:c1]
    finally:
        model.train(was_training)
    return out
