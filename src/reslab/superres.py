"""Super-resolution runs: evaluating them beside bicubic upscaling, and upscaling image files.

Every image is super-resolved whole, at its own size, by tiled inference
(:func:`reslab.srtiling.predict_sr_tiled`, exact at the seams: the overlap is the network's
receptive-field radius), so memory is bounded by the tile. An evaluation image is cut to a multiple
of the scale (the HR image), its LR image made by bicubic downscaling and rounded to 8 bits
(:func:`reslab.data.sr.downscale`); the network's output and the bicubic upscale of the same LR
image are rounded to 8 bits and measured against the HR image by PSNR and SSIM on Y with the
``scale``-pixel border shaved (:mod:`reslab.srmetrics`).

:func:`evaluate_sr_run` is what ``fit`` runs for the test split of a super-resolution run and what
``reslab eval`` runs on one; :func:`predict_sr` is ``reslab predict`` for such a run.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import rundir
from .data import DatasetSplits, get_dataset_entry, limits
from .data.decode import open_image
from .data.sr import SRImages, downscale, modcrop, upscale
from .data.transforms import pil_to_uint8
from .errors import ReslabError
from .io import atomic_path, atomic_write_text
from .models import get_model_entry
from .plots import new_figure, save_png
from .predict import LoadedRun, RunEvaluation, image_path, load_run, run_split
from .srmetrics import min_eval_side, psnr_from_mse, psnr_y, ssim_y, y_squared_error
from .srtiling import DEFAULT_TILE, predict_sr_tiled, receptive_radius

__all__ = ["DEFAULT_SCALE", "SAMPLE_ROWS", "run_scale", "sr_loss_kind", "sr_radius", "super_resolve", "bicubic",
           "SRResult", "evaluate_sr", "evaluate_sr_run", "predict_sr", "SRPrediction", "plot_sr_crops", "sr_loss"]

DEFAULT_SCALE = 2
"""The scale of a network that takes any (``vdsr``) when none is given."""

SAMPLE_ROWS = 3
"""Images drawn in an evaluation's figure (LR | bicubic | ours | HR crops)."""

_OUT_SUFFIXES = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".jpg": "JPEG",
                 ".jpeg": "JPEG"}


def run_scale(model: nn.Module, wanted: int | None) -> int:
    """The scale ``model`` upscales by: its own where it was built for one (``wanted`` must then be
    None or the same, else a one-line error), ``wanted`` (default :data:`DEFAULT_SCALE`) where it takes any."""
    built = getattr(model, "scale", None)
    name = getattr(model, "model_name", type(model).__name__)
    if built is None:
        scale = DEFAULT_SCALE if wanted is None else int(wanted)
        if scale < 2:
            raise ReslabError(f"scale must be an integer of at least 2, got {wanted}")
        return scale
    if wanted is not None and int(wanted) != built:
        raise ReslabError(f"{name} is built for x{built}; --scale {wanted} is a scale the model was not built for: "
                          f"train edsr_baseline_x{wanted} (x2, x3, x4) or vdsr (any scale) instead, or drop --scale")
    return int(built)


def sr_loss_kind(wanted: str, model: nn.Module) -> str:
    """``l1`` or ``l2``: ``wanted``, or for ``auto`` the paper's (``model.paper_loss``)."""
    if wanted == "auto":
        return str(getattr(model, "paper_loss", "l1"))
    if wanted not in ("l1", "l2"):
        raise ReslabError(f"sr_loss must be auto, l1 or l2, got {wanted!r}")
    return wanted


def sr_loss(output: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The mean absolute (``l1``) or squared (``l2``) error of ``output`` against ``target``."""
    output = output.float()
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


def sr_radius(model: nn.Module, scale: int) -> int:
    """The receptive-field radius of ``model`` in LR pixels, its bicubic upscale included for a
    network that takes one (:func:`reslab.srtiling.receptive_radius`)."""
    steps = list(model.rf_steps())  # type: ignore[operator]
    if getattr(model, "upscaled_input", False):
        steps = [("bicubic", scale), *steps]
    return receptive_radius(steps)


def _network(model: nn.Module, scale: int, amp_dtype: torch.dtype | None, device: torch.device
             ) -> Callable[[torch.Tensor], torch.Tensor]:
    pre = getattr(model, "upscaled_input", False)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext())

    def fn(x: torch.Tensor) -> torch.Tensor:
        with autocast:
            return model(upscale(x, scale) if pre else x).float()

    return fn


@torch.no_grad()
def super_resolve(model: nn.Module, lr: torch.Tensor, scale: int, *, tile: int = DEFAULT_TILE,
                  device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None,
                  out_dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """``model``'s ``scale``-times upscale of ``lr`` (uint8, or float on [0, 1], ``(3, h, w)``), by
    exact tiled inference in eval mode: uint8 ``(3, scale * h, scale * w)`` (or ``out_dtype``)."""
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        return predict_sr_tiled(_network(model, scale, amp_dtype, device), lr, scale=scale,
                                overlap=sr_radius(model, scale), tile=tile, device=device, out_dtype=out_dtype)
    finally:
        model.train(was_training)


def bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic upscale of a uint8 ``(3, h, w)`` image, rounded to uint8: the baseline."""
    return upscale(lr[None].float() / 255, scale)[0].clamp(0, 1).mul(255).round().to(torch.uint8)


@dataclass
class SRResult:
    """What :func:`evaluate_sr` measured over a split: means over the images."""

    n: int
    scale: int
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    loss: float
    y_sq_err: float = field(repr=False)
    y_pixels: int = field(repr=False)
    images: list[dict[str, Any]] = field(default_factory=list, repr=False)
    tile: int = DEFAULT_TILE
    radius: int = 0

    @property
    def err(self) -> float:
        """The RMS error of Y over all shaved pixels, in % of 255 (lower is better: the selection metric)."""
        return 100.0 * math.sqrt(self.y_sq_err / max(self.y_pixels, 1)) / 255.0

    def to_dict(self, classes: list[str] | None = None) -> dict[str, Any]:
        return {"protocol": "tiled", "tile": self.tile, "overlap": self.radius, "n": self.n, "scale": self.scale,
                "psnr": self.psnr, "ssim": self.ssim, "bicubic": {"psnr": self.bicubic_psnr, "ssim": self.bicubic_ssim},
                "gain_db": self.psnr - self.bicubic_psnr, "loss": self.loss, "err": self.err,
                "psnr_pooled": psnr_from_mse(self.y_sq_err / max(self.y_pixels, 1)),
                "metric": f"Y (BT.601), {self.scale}-pixel border shaved, scikit-image", "images": self.images}


def evaluate_sr(model: nn.Module, data: SRImages, *, scale: int, tile: int = DEFAULT_TILE,
                device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None, loss: str = "l1",
                keep: int = 0) -> tuple[SRResult, list[tuple[Any, ...]]]:
    """Evaluate ``model`` on every image of ``data`` whole, beside bicubic upscaling.

    Args:
        model: a super-resolution network (:mod:`reslab.models.sr`).
        data: the HR images.
        scale: the upscaling factor.
        tile: the LR tile side of the tiled inference.
        loss: ``l1`` or ``l2``, reported on [0, 1] pixels (the training loss's scale).
        keep: also return the first ``keep`` images as ``(lr, bicubic, ours, hr, name, psnr,
            bicubic psnr)`` rows (uint8 tensors).

    Returns:
        (the result, the kept rows).

    Raises:
        ReslabError: an image too small to be measured at this scale (named).
    """
    device = torch.device(device)
    need = min_eval_side(scale)
    rows, per_image = [], []
    sums = {"psnr": 0.0, "ssim": 0.0, "bpsnr": 0.0, "bssim": 0.0, "loss": 0.0, "sq": 0.0}
    pixels = 0
    for i, image in enumerate(data.images):
        h, w = image.shape[1:]
        if min(h, w) < need:
            raise ReslabError(f"image {data.where(i)} is {w}x{h}: too small to measure at x{scale} (PSNR and SSIM "
                              f"need at least {need} pixels a side); remove it from the evaluation images")
        hr = modcrop(image, scale)
        lr = downscale(hr, scale)
        ours = super_resolve(model, lr, scale, tile=tile, device=device, amp_dtype=amp_dtype)
        base = bicubic(lr, scale)
        p, s = psnr_y(ours, hr, scale), ssim_y(ours, hr, scale)
        bp, bs = psnr_y(base, hr, scale), ssim_y(base, hr, scale)
        sq, count = y_squared_error(ours[None].float() / 255, hr[None].float() / 255, scale)
        sums["sq"] += float(sq)
        pixels += count
        sums["loss"] += float(sr_loss(ours.float() / 255, hr.float() / 255, loss))
        for k, v in (("psnr", p), ("ssim", s), ("bpsnr", bp), ("bssim", bs)):
            sums[k] += v
        per_image.append({"name": data.names[i], "psnr": round(p, 4), "ssim": round(s, 5),
                          "bicubic_psnr": round(bp, 4), "bicubic_ssim": round(bs, 5)})
        if i < keep:
            rows.append((lr, base, ours, hr, data.names[i], p, bp))
    n = len(data)
    if n == 0:
        raise ReslabError("nothing to evaluate: the split is empty")
    res = SRResult(n, scale, sums["psnr"] / n, sums["ssim"] / n, sums["bpsnr"] / n, sums["bssim"] / n, sums["loss"] / n,
                   sums["sq"], pixels, per_image, tile, sr_radius(model, scale))
    return res, rows


def evaluate_sr_run(run_dir: str | Path, *, split: str = "test", checkpoint: str = "best", data: str | None = None,
                    data_dir: str | None = None, splits: DatasetSplits | None = None,
                    device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None, write: bool = True,
                    tile: int = DEFAULT_TILE) -> RunEvaluation[SRResult]:
    """Evaluate a super-resolution run's checkpoint on a split of its data (or ``data``, an ``sr:PATH``).

    Writes ``eval-{split}-tiled.json`` (PSNR and SSIM of the network and of bicubic upscaling, per
    image too) and ``plots/sr-{split}.png`` (LR | bicubic | ours | HR crops of the first
    :data:`SAMPLE_ROWS` images) into the run directory unless ``write`` is False.
    """
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    if data is not None and get_dataset_entry(data).task != "restore":
        raise ReslabError(f"{data} is not super-resolution data; a super-resolution run is evaluated on photos: "
                          "sr:PATH (a folder or archive of images)")
    run = load_run(run_dir, checkpoint, device)
    if getattr(get_model_entry(run.config.model), "task", "classify") != "restore":
        raise ReslabError(f"{run_dir} is not a super-resolution run; evaluate it with 'reslab eval', which chooses by "
                          "the run's task")
    scale = run_scale(run.model, run.config.scale)
    data_name, images = run_split(run, split, data=data, data_dir=data_dir, splits=splits)
    if not isinstance(images, SRImages):
        raise ReslabError(f"{data_name} is not super-resolution data; give sr:PATH (a folder or archive of photos)")
    res, rows = evaluate_sr(run.model, images, scale=scale, tile=tile, device=device, amp_dtype=amp_dtype,
                            loss=sr_loss_kind(run.config.sr_loss, run.model), keep=SAMPLE_ROWS)
    out = RunEvaluation(res, split, run.checkpoint, [], None, None)
    if write:
        out.json_path = run.run_dir / f"eval-{split}-tiled.json"
        atomic_write_text(out.json_path, json.dumps(out.to_dict(), indent=2))
        out.plot_path = run.run_dir / rundir.PLOTS / f"sr-{split}.png"
        plot_sr_crops(rows, out.plot_path, title=f"{run.config.model} x{scale}, {split} split ({run.checkpoint} "
                                                  f"checkpoint): PSNR {res.psnr:.2f} dB, bicubic {res.bicubic_psnr:.2f} dB")
    return out


# ---------------------------------------------------------------------------------------------
# Figures


def _crop_box(base: torch.Tensor, hr: torch.Tensor, side: int, scale: int) -> tuple[int, int]:
    """(top, left), multiples of ``scale``, of the ``side``-pixel window where bicubic upscaling errs most."""
    err = (base.float() - hr.float()).square().sum(0)[None, None]
    h, w = hr.shape[1:]
    if h <= side or w <= side:
        return 0, 0
    pooled = F.avg_pool2d(err, side, stride=scale)[0, 0]
    idx = int(pooled.argmax())
    return idx // pooled.shape[1] * scale, idx % pooled.shape[1] * scale


def plot_sr_crops(rows: Sequence[tuple[Any, ...]], path: str | Path | None, *, title: str | None = None,
                  crop: int = 96):
    """One row per image: LR (drawn with nearest-neighbour pixels) | bicubic | ours | HR, the same
    ``crop``-pixel HR window of each (where bicubic upscaling errs most), whole-image PSNRs in the
    titles. ``rows`` as :func:`evaluate_sr` keeps them; ``path``: PNG written atomically (None: not saved)."""
    if not rows:
        raise ReslabError("no images to draw")
    fig = new_figure((9.0, 2.5 * len(rows) + (0.5 if title else 0.2)))
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for r, (lr, base, ours, hr, name, p, bp) in enumerate(rows):
        scale = hr.shape[1] // lr.shape[1]
        side = min(crop - crop % scale, *hr.shape[1:])
        side -= side % scale
        top, left = _crop_box(base, hr, side, scale)
        lr_crop = lr[:, top // scale:(top + side) // scale, left // scale:(left + side) // scale]
        lr_big = lr_crop.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
        panels = [(lr_big, f"LR (x{scale} smaller): {Path(name).name}"), (base, f"bicubic {bp:.2f} dB"),
                  (ours, f"ours {p:.2f} dB"), (hr, "HR")]
        for ax, (img, label) in zip(axes[r], panels):
            if img is not lr_big:
                img = img[:, top:top + side, left:left + side]
            ax.imshow(np.asarray(img.permute(1, 2, 0).cpu()), interpolation="nearest")
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------
# Upscaling image files


@dataclass
class SRPrediction:
    path: str
    out_path: Path
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    """(width, height) of the input and of the written image."""


def _out_paths(paths: Sequence[Path], out: str | Path | None, scale: int) -> list[Path]:
    """Where each upscaled image goes: ``out`` itself for one image and an image-file name, else
    ``out/<stem>_x<scale>.png`` (``out`` default ``upscaled/``)."""
    target = Path(out) if out is not None else Path("upscaled")
    if len(paths) == 1 and target.suffix.lower() in _OUT_SUFFIXES and not target.is_dir():
        return [target]
    if target.suffix and not target.is_dir() and target.suffix.lower() not in _OUT_SUFFIXES:
        raise ReslabError(f"--out {target}: write the upscaled image as one of {', '.join(_OUT_SUFFIXES)} "
                          "(PNG is lossless), or give a folder")
    if target.exists() and not target.is_dir():
        raise ReslabError(f"--out {target} is a file; with {len(paths)} images give a folder for them")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise ReslabError(f"two images are named {dup!r}: their outputs would overwrite each other; upscale them "
                          "into different --out folders")
    return [target / f"{s}_x{scale}.png" for s in stems]


@torch.no_grad()
def predict_sr(run: LoadedRun, paths: Sequence[str | Path], out: str | Path | None = None, *,
               device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None,
               tile: int = DEFAULT_TILE) -> list[SRPrediction]:
    """Upscale image files of any size with a super-resolution run, by exact tiled inference.

    One image with ``out`` an image-file name (``big.png``) writes that file; otherwise each image
    ``NAME.ext`` goes to ``out/NAME_x<scale>.png`` (``out`` default ``upscaled/``). Files are
    written atomically; an image that fails to decode stops before anything of it is written; an
    output over ``$RESLAB_MAX_IMAGE_PIXELS`` is refused before it is computed.
    """
    from PIL import Image

    if getattr(get_model_entry(run.config.model), "task", "classify") != "restore":
        raise ReslabError(f"{run.run_dir} is not a super-resolution run")
    scale = run_scale(run.model, run.config.scale)
    checked = [image_path(p) for p in paths]
    targets = _out_paths(checked, out, scale)
    device = torch.device(device) if device is not None else next(run.model.parameters()).device
    results = []
    for path, target in zip(checked, targets):
        lr = pil_to_uint8(open_image(str(path), "RGB"))
        h, w = lr.shape[1:]
        limit = limits.max_image_pixels()
        if scale * h * scale * w > limit:
            raise ReslabError(f"the x{scale} upscale of {path} would be {scale * w}x{scale * h} = "
                              f"{scale * scale * h * w:,} pixels, over the {limit:,}-pixel limit; raise "
                              f"${limits.PIXELS_ENV} to write it")
        sr = super_resolve(run.model, lr, scale, tile=tile, device=device, amp_dtype=amp_dtype)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(sr.permute(1, 2, 0).cpu().numpy())).save(
                tmp, format=_OUT_SUFFIXES[target.suffix.lower()])
        results.append(SRPrediction(str(path), target, (w, h), (scale * w, scale * h)))
    return results
