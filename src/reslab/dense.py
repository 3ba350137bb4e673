"""Dense prediction: evaluating segmentation networks and writing masks, by overlap-tile inference.

Every image is predicted whole, at its own size, by :func:`reslab.tiling.predict_tiled` (the
U-Net paper's overlap-tile strategy: mirrored borders, tiles of the trained input size, exact
stitching), so memory is bounded by the tile and no image is resized. The figures:

- pixel error: the share of wrongly labelled pixels, in percent;
- IoU and Dice of every class, and their means, from one confusion matrix over all pixels;
- the ISBI 2012 challenge's foreground-restricted Rand error (two-class tasks: objects are the
  4-connected components of the foreground class; pixels whose true label is the background are left
  out; predicted background pixels count as unassigned, each its own object, as in the challenge's
  Fiji script), averaged over the images (:mod:`reslab.segmetrics`).

:func:`evaluate_dense_run` is what ``fit`` runs for the test split of a segmentation run and what
``reslab eval`` runs on one; :func:`predict_masks` is ``reslab predict`` for such a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import rundir
from .data import DatasetSplits
from .data.decode import open_image
from .data.segmentation import MaskImages
from .data.transforms import Normalizer, pil_to_uint8
from .errors import ReslabError
from .io import atomic_path, atomic_write_text
from .models import get_model_entry
from .plots import class_colours, plot_segmentation
from .predict import LoadedRun, RunEvaluation, image_path, load_run, run_split
from .segmetrics import (
    confusion_from_labels,
    dice_per_class,
    iou_per_class,
    pixel_error,
    rand_error_from_masks,
    seg_loss,
)
from .tiling import predict_tiled

__all__ = ["DenseResult", "MaskPrediction", "evaluate_dense", "evaluate_dense_run", "legal_tile",
           "predict_masks", "run_task", "SAMPLE_ROWS"]

SAMPLE_ROWS = 4
"""Images drawn in an evaluation's figure (image | ground truth | prediction | errors)."""


def run_task(run_dir: str | Path) -> str:
    """The task of a run directory's model: one of :data:`reslab.models.registry.TASKS`."""
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise ReslabError(f"{run_dir} is not a run directory (no config.yaml and checkpoints/); give a directory "
                          "written by 'reslab train'")
    saved = rundir.read_config(run_dir)
    missing = [k for k in ("model", "data") if not saved.get(k)]
    if missing or not isinstance(saved["model"], str):  # load_run's words for the same damage
        raise ReslabError(f"{run_dir / rundir.CONFIG} names no {' or '.join(missing or ['model'])}: it is empty or "
                          "damaged; restore it from a copy of the run")
    return get_model_entry(saved["model"]).task


def legal_tile(model: nn.Module, wanted: int) -> int:
    """The largest input side at most ``wanted`` that ``model`` takes (a valid-convolution U-Net
    takes only some sizes); raises naming the smallest legal size when there is none."""
    check = getattr(model, "check_input_size", None)
    if check is None:
        return wanted
    for side in range(wanted, 0, -1):
        try:
            check(side, side)
        except ReslabError:
            continue
        return side
    check(wanted, wanted)  # raises with the model's own message (the smallest legal size)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class DenseResult:
    """What :func:`evaluate_dense` measured over a split."""

    n: int
    loss: float
    confusion: torch.Tensor = field(repr=False)
    rand_errors: list[float] = field(default_factory=list)
    tile: int = 0

    @property
    def pixel_err(self) -> float:
        return pixel_error(self.confusion)

    @property
    def iou(self) -> list[float]:
        return iou_per_class(self.confusion).tolist()

    @property
    def dice(self) -> list[float]:
        return dice_per_class(self.confusion).tolist()

    @property
    def rand_err(self) -> float | None:
        return float(np.mean(self.rand_errors)) if self.rand_errors else None

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        def per_class(values: list[float]) -> dict[str, float | None]:
            return {c: (None if math.isnan(v) else round(v, 6)) for c, v in zip(classes, values)}

        present = [v for v in self.iou if not math.isnan(v)]
        dice = [v for v in self.dice if not math.isnan(v)]
        return {"protocol": "tiled", "tile": self.tile, "n": self.n, "loss": self.loss, "pixel_err": self.pixel_err,
                "rand_err": self.rand_err, "miou": float(np.mean(present)) if present else None,
                "mdice": float(np.mean(dice)) if dice else None, "iou": per_class(self.iou),
                "dice": per_class(self.dice), "confusion": self.confusion.tolist()}


@torch.no_grad()
def _logits(model: nn.Module, image: torch.Tensor, normalizer: Normalizer, num_classes: int, tile: int,
            device: torch.device, amp_dtype: torch.dtype | None) -> torch.Tensor:
    x = normalizer(image[None].to(device))[0]
    return predict_tiled(model, x, tile=tile, num_classes=num_classes, device=device, amp_dtype=amp_dtype)


def evaluate_dense(model: nn.Module, data: MaskImages, *, normalizer: Normalizer, num_classes: int, tile: int,
                   device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None, loss: str = "ce",
                   keep: int = 0) -> tuple[DenseResult, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]]]:
    """Evaluate ``model`` on every image of ``data`` whole, by overlap-tile inference.

    Args:
        model: a segmentation network (logits ``(N, K, H', W')``).
        data: the images and their label maps.
        normalizer: the run's input normalisation.
        num_classes: K.
        tile: the input side of each tile (the size the network was trained on).
        loss: the loss reported (``ce``, ``dice`` or ``ce+dice``), averaged over the images.
        keep: also return the first ``keep`` images as ``(image, truth, prediction, name)`` rows.

    Returns:
        (the result, the kept rows).
    """
    device = torch.device(device)
    model.eval()
    norm = normalizer.to(device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    losses, rand, rows = [], [], []
    for i in range(len(data)):
        image, mask = data.images[i], data.masks[i]
        logits = _logits(model, image, norm, num_classes, tile, device, amp_dtype).float()
        target = mask.long().to(logits.device)
        losses.append(float(seg_loss(logits[None], target[None], loss)))
        pred = logits.argmax(0)
        cm += confusion_from_labels(pred.cpu(), target.cpu(), num_classes)
        if num_classes == 2:
            # predicted background pixels are unassigned (each its own object), as the challenge's script counts them
            rand.append(float(rand_error_from_masks(pred.cpu().numpy(), mask.numpy(), foreground=1,
                                                    pred_zero="unassigned")))
        if i < keep:
            rows.append((image, mask, pred.cpu().to(torch.uint8), data.names[i]))
    return DenseResult(len(data), float(np.mean(losses)) if losses else math.nan, cm, rand, tile), rows


def evaluate_dense_run(run_dir: str | Path, *, split: str = "test", checkpoint: str = "best", data: str | None = None,
                       data_dir: str | None = None, splits: DatasetSplits | None = None,
                       device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None, write: bool = True,
                       plot_name: str | None = None) -> RunEvaluation[DenseResult]:
    """Evaluate a segmentation run's checkpoint on a split of its data (or ``data``).

    Writes ``eval-{split}-tiled.json`` (pixel error, Rand error, IoU and Dice per class, the
    confusion matrix) and ``plots/{plot_name or 'segmentation-{split}.png'}`` (image | ground
    truth | prediction | errors for the first :data:`SAMPLE_ROWS` images) into the run directory
    unless ``write`` is False.
    """
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    if run_task(run_dir) != "segment":
        raise ReslabError(f"{run_dir} is a classification run; evaluate it with 'reslab eval' (top-1/top-5 error), "
                          "not as a segmentation run")
    run = load_run(run_dir, checkpoint, device)
    cfg = run.config
    data_name, images = run_split(run, split, data=data, data_dir=data_dir, splits=splits)
    if not isinstance(images, MaskImages):
        raise ReslabError(f"{data_name} is a classification dataset; a segmentation run needs images with masks "
                          "(isbi2012:PATH, pennfudan:PATH or segfolder:PATH)")
    res, rows = evaluate_dense(run.model, images, normalizer=run.normalizer, num_classes=len(run.classes),
                               tile=legal_tile(run.model, run.crop_size), device=device, amp_dtype=amp_dtype,
                               loss=cfg.seg_loss, keep=SAMPLE_ROWS)
    out = RunEvaluation(res, split, run.checkpoint, list(run.classes), None, None)
    if write:
        out.json_path = run.run_dir / f"eval-{split}-tiled.json"
        atomic_write_text(out.json_path, json.dumps(out.to_dict(), indent=2))
        out.plot_path = run.run_dir / rundir.PLOTS / (plot_name or f"segmentation-{split}.png")
        plot_segmentation(rows, list(run.classes), out.plot_path,
                          title=f"{cfg.model}, {split} split ({run.checkpoint} checkpoint): pixel error "
                                f"{res.pixel_err:.2f}%")
    return out


@dataclass
class MaskPrediction:
    path: str
    mask_path: Path
    overlay_path: Path
    fractions: dict[str, float]
    """The share of the image's pixels given to each class."""


@torch.no_grad()
def predict_masks(run: LoadedRun, paths: list[str | Path] | tuple[str | Path, ...], out_dir: str | Path,
                  device: torch.device | str | None = None) -> list[MaskPrediction]:
    """Label maps for image files of any size, by overlap-tile inference.

    For each image ``NAME.ext`` writes ``out_dir/NAME_mask.png`` (8-bit class indices; with two
    classes 0 and 255, so the mask is visible in an image viewer) and ``out_dir/NAME_overlay.png``
    (the image with every non-background class tinted in its colour). Files are written atomically;
    an image that fails to decode stops before anything of it is written.
    """
    from PIL import Image

    if run_task(run.run_dir) != "segment":
        raise ReslabError(f"{run.run_dir} is a classification run: 'reslab predict' without --out prints its top-k "
                          "classes; --out writes masks of a segmentation run")
    device = torch.device(device) if device is not None else next(run.model.parameters()).device
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReslabError(f"--out {out_dir} is a file; give a folder for the masks")
    k = len(run.classes)
    tile = legal_tile(run.model, run.crop_size)
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise ReslabError(f"two images are named {dup!r}: their masks would overwrite each other; predict them "
                          "into different --out folders")
    results = []
    for path in map(image_path, paths):
        image = pil_to_uint8(open_image(str(path), "L" if run.channels == 1 else "RGB"))
        logits = _logits(run.model, image, run.normalizer, k, tile, device, None)
        pred = logits.argmax(0).to(torch.uint8).cpu().numpy()
        out_dir.mkdir(parents=True, exist_ok=True)
        mask_path, overlay_path = out_dir / f"{path.stem}_mask.png", out_dir / f"{path.stem}_overlay.png"
        levels = pred * 255 if k == 2 else pred
        rgb = image.permute(1, 2, 0).numpy().astype(np.float64)
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
        colour = np.asarray(class_colours(k))[pred] * 255.0
        tint = np.where((pred > 0)[..., None], 0.55 * rgb + 0.45 * colour, rgb)
        with atomic_path(mask_path) as tmp:
            Image.fromarray(levels.astype(np.uint8), mode="L").save(tmp, format="PNG")
        with atomic_path(overlay_path) as tmp:
            Image.fromarray(tint.round().clip(0, 255).astype(np.uint8), mode="RGB").save(tmp, format="PNG")
        counts = np.bincount(pred.ravel(), minlength=k) / pred.size
        results.append(MaskPrediction(str(path), mask_path, overlay_path,
                                      {c: float(v) for c, v in zip(run.classes, counts)}))
    return results
