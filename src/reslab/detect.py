"""Detection and instance segmentation: evaluating detectors by COCO's protocol and drawing what they find.

A detector (:mod:`reslab.models.detection`, or any torchvision detector) takes float images in
[0, 1] of any size and normalises them itself, so evaluation feeds every image whole, as loaded
(a run's ``image_size`` already resized them), and measures:

- box AP (COCO's AP over IoU 0.50:0.95), AP50, AP75, AP by object size and AR at 1/10/100
  detections, by pycocotools (:mod:`reslab.detmetrics`);
- the same for masks when both the detector (Mask R-CNN) and the data have masks;
- the seconds an image of the detector's forward pass.

:func:`evaluate_detection_run` is what ``fit`` runs for the test split of a detection run and what
``reslab eval`` runs on one; :func:`predict_detections` is ``reslab predict`` for such a run;
:func:`plot_detections` draws ground truth beside predictions for the run's report.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import rundir
from .data import DatasetSplits
from .data.decode import open_image
from .data.detection import DetectionImages
from .data.transforms import pil_to_uint8
from .detmetrics import CocoAccumulator
from .errors import ReslabError
from .io import atomic_path, atomic_write_text
from .models import get_model_entry
from .models.registry import TASK_NOUNS
from .plots import PathLike, colours, new_figure, save_png
from .predict import LoadedRun, RunEvaluation, image_path, load_run, run_split

if TYPE_CHECKING:  # matplotlib is imported inside the functions that draw
    from matplotlib.figure import Figure

__all__ = ["DetResult", "DetPrediction", "evaluate_detection", "evaluate_detection_run", "draw_detections",
           "plot_detections", "predict_detections", "detector_num_classes", "SAMPLE_ROWS", "SCORE_THRESHOLD"]

SAMPLE_ROWS = 4
"""Images drawn in an evaluation's figure (ground truth | predictions)."""

SCORE_THRESHOLD = 0.5
"""Detections drawn (figures, ``reslab predict``) score at least this."""

Row = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], str]


def detector_num_classes(model: nn.Module) -> int:
    """K (background included) of a reslab ``Detector`` (its ``num_classes``) or of a torchvision
    Faster/Mask R-CNN or RetinaNet/FCOS."""
    model = getattr(model, "module", model)  # DistributedDataParallel's wrapped module
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    roi = getattr(model, "roi_heads", None)
    if roi is not None:
        return int(roi.box_predictor.cls_score.out_features)
    head = getattr(getattr(model, "head", None), "classification_head", None)
    if head is not None and isinstance(getattr(head, "num_classes", None), int):
        return int(head.num_classes)
    raise ValueError(f"cannot tell the number of classes of {type(model).__name__}; give it a num_classes attribute")


def _metrics_named(metrics: dict[str, Any] | None, classes: Sequence[str]) -> dict[str, Any] | None:
    """``metrics`` with its per-class APs keyed by class name instead of label number."""
    if metrics is None:
        return None
    per = {(classes[int(k)] if k.isdigit() and int(k) < len(classes) else k): v
           for k, v in metrics.get("per_class", {}).items()}
    return {**metrics, "per_class": per}


@dataclass
class DetResult:
    """What :func:`evaluate_detection` measured over a split: COCO's figures (:mod:`reslab.detmetrics`,
    fractions in [0, 1], None where there was nothing to measure) of boxes, and of masks for Mask
    R-CNN on data with masks."""

    n: int
    bbox: dict[str, Any] = field(repr=False)
    segm: dict[str, Any] | None = field(repr=False)
    seconds_per_image: float

    @property
    def box_ap(self) -> float | None:
        """Box AP at IoU 0.50:0.95."""
        return self.bbox["AP"]

    @property
    def mask_ap(self) -> float | None:
        """Mask AP at IoU 0.50:0.95 (None without masks)."""
        return self.segm["AP"] if self.segm else None

    @property
    def err(self) -> float:
        """100 x (1 - box AP): lower is better, like every task's error (NaN with no object to find)."""
        return math.nan if self.box_ap is None else 100.0 * (1.0 - self.box_ap)

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        """The figures as JSON: ``n``, ``bbox``, ``segm`` (or None), ``seconds_per_image``, per-class
        APs named by ``classes``."""
        return {"metric": "COCO AP (pycocotools)", "n": self.n, "err": self.err,
                "bbox": _metrics_named(self.bbox, classes), "segm": _metrics_named(self.segm, classes),
                "seconds_per_image": self.seconds_per_image}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _drawn(prediction: dict[str, torch.Tensor], threshold: float) -> dict[str, torch.Tensor]:
    """The detections at score >= ``threshold``, masks as 0/1 uint8 (what a figure draws)."""
    keep = prediction["scores"] >= threshold
    out = {k: v[keep] for k, v in prediction.items() if k in ("boxes", "labels", "scores", "masks")}
    if "masks" in out:
        out["masks"] = (out["masks"] > 0.5).to(torch.uint8)
    return out


@torch.no_grad()
def evaluate_detection(model: nn.Module, data: DetectionImages, *, device: torch.device | str = "cpu",
                       amp_dtype: torch.dtype | None = None, batch_size: int = 2,
                       keep: int = 0) -> tuple[DetResult, list[Row]]:
    """Evaluate a detector on every image of ``data`` whole, by COCO's protocol.

    Args:
        model: a detector (torchvision's contract: a list of float (3, H, W) images in [0, 1] in,
            one dict of ``boxes``, ``labels``, ``scores`` (and ``masks``) an image out in eval mode).
        data: the images and their targets.
        device: where the detector runs (it is not moved: it must already be there).
        amp_dtype: autocast to this dtype (None: the model's own precision).
        batch_size: images a forward pass.
        keep: also return the first ``keep`` images as ``(image, target, prediction, name)`` rows,
            the prediction cut to the detections at score >= :data:`SCORE_THRESHOLD` with masks
            thresholded to 0/1 (what :func:`plot_detections` draws).

    Returns:
        (the result, the kept rows). Box AP always; mask AP when the model has masks
        (``has_masks``) and so has ``data``.
    """
    if len(data) == 0:
        raise ReslabError("nothing to evaluate: the split is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    masks = bool(getattr(getattr(model, "module", model), "has_masks", False)) and data.has_masks
    acc = CocoAccumulator(num_classes=detector_num_classes(model), iou_types=("bbox", "segm") if masks else ("bbox",))
    was_training = model.training
    model.eval()
    rows: list[Row] = []
    seconds = 0.0
    try:
        for start in range(0, len(data), batch_size):
            idx = range(start, min(start + batch_size, len(data)))
            batch = [data.images[i].to(device, non_blocking=True).float().div_(255) for i in idx]
            _sync(device)
            tic = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs = model(batch)
            _sync(device)
            seconds += time.perf_counter() - tic
            for i, out in zip(idx, outputs):
                pred = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                        for k, v in out.items()}
                target = data.targets[i]
                acc.add(pred, target, size=data.sizes[i])
                if i < keep:
                    rows.append((data.images[i], target, _drawn(pred, SCORE_THRESHOLD), data.names[i]))
    finally:
        model.train(was_training)
    res = acc.summarize()
    return DetResult(len(data), res["bbox"], res.get("segm"), seconds / len(data)), rows


def _int_colours(n: int) -> list[tuple[int, int, int]]:
    return [(round(255 * r), round(255 * g), round(255 * b)) for r, g, b in colours(n)]


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor | None = None,
                    masks: torch.Tensor | None = None, classes: Sequence[str] | None = None,
                    score_threshold: float = SCORE_THRESHOLD) -> torch.Tensor:
    """``image`` with the detections drawn: masks tinted, boxes outlined, each labelled with its
    class and score ("person 0.93"), one colour an object (torchvision's ``draw_segmentation_masks``
    and ``draw_bounding_boxes``).

    Args:
        image: uint8 (3, H, W) (or (1, H, W), drawn in grey).
        boxes: (N, 4) x1, y1, x2, y2 in the image's pixels.
        labels: (N,) class indices.
        scores: (N,) scores (None: ground truth, every box drawn, labelled by class only).
        masks: (N, H, W) or (N, 1, H, W): 0/1, or probabilities (thresholded at 0.5); None: no masks.
        classes: the class names (default the label numbers).
        score_threshold: the lowest score drawn.

    Returns:
        The drawn image, uint8 (3, H, W).
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be uint8 (3, H, W) or (1, H, W), got {image.dtype} {tuple(image.shape)}")
    out = image.detach().cpu()
    out = out.expand(3, -1, -1).contiguous() if out.shape[0] == 1 else out
    boxes, labels = boxes.detach().cpu().float().reshape(-1, 4), labels.detach().cpu().reshape(-1)
    keep = torch.ones(len(boxes), dtype=torch.bool)
    if scores is not None:
        scores = scores.detach().cpu().float().reshape(-1)
        keep = scores >= score_threshold
    idx = keep.nonzero().flatten()
    if len(idx) == 0:
        return out
    palette = _int_colours(len(idx))
    if masks is not None:
        m = masks.detach().cpu()
        m = m[:, 0] if m.dim() == 4 else m
        m = m[idx]
        binary = m > 0.5 if m.is_floating_point() else m != 0
        out = draw_segmentation_masks(out, binary, alpha=0.45, colors=palette)

    def name(label: int) -> str:
        return str(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)

    text = [name(int(labels[i])) + (f" {float(scores[i]):.2f}" if scores is not None else "") for i in idx.tolist()]
    side = max(out.shape[1:])
    return draw_bounding_boxes(out, boxes[idx], labels=text, colors=palette, width=max(2, round(side / 250)),
                               font=_font(), font_size=max(10, round(side / 45)), label_colors="white",
                               fill_labels=True)


def _font() -> str | None:
    """matplotlib's DejaVu Sans (a font that scales with the image; None: PIL's small default)."""
    from matplotlib import font_manager

    try:
        return str(font_manager.findfont("DejaVu Sans", fallback_to_default=False))
    except ValueError:
        return None


def plot_detections(rows: Sequence[Row], classes: Sequence[str], path: PathLike | None, *,
                    title: str | None = None) -> Figure:
    """Detection results, one row per image: ground truth drawn | predictions at score >=
    :data:`SCORE_THRESHOLD` drawn (:func:`draw_detections`).

    Args:
        rows: ``(image, target, prediction, caption)``: the image uint8 (3, H, W), its target and the
            detector's prediction (torchvision's dicts; masks drawn when present), a caption.
        classes: the class names.
        path: PNG to write (atomically); None draws without saving.
        title: a figure title.
    """
    if not rows:
        raise ReslabError("no images to draw")
    aspect = [float(image.shape[1]) / float(image.shape[2]) for image, *_ in rows]
    heights = [min(max(4.5 * a, 1.5), 7.0) + 0.35 for a in aspect]
    fig = new_figure((9.0, sum(heights) + (0.6 if title else 0.2)))
    axes = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (image, target, pred, caption) in enumerate(rows):
        truth = draw_detections(image, target["boxes"], target["labels"], None, target.get("masks"), classes)
        scores = pred.get("scores")
        shown = int((scores >= SCORE_THRESHOLD).sum()) if scores is not None else len(pred["boxes"])
        found = draw_detections(image, pred["boxes"], pred["labels"], scores, pred.get("masks"), classes)
        panels = [(truth, f"{caption}: ground truth ({len(target['boxes'])})"),
                  (found, f"predicted ({shown} at score >= {SCORE_THRESHOLD:g})")]
        for ax, (drawn, label) in zip(axes[r], panels):
            ax.imshow(drawn.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return fig


def _check_detection_run(run_dir: str | Path) -> None:
    """Refuse, before anything is loaded, a run directory whose model is not a detector."""
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise ReslabError(f"{run_dir} is not a run directory (no config.yaml and checkpoints/); give a directory "
                          "written by 'reslab train'")
    model = rundir.read_config(run_dir).get("model")
    if not isinstance(model, str) or not model:
        raise ReslabError(f"{run_dir / rundir.CONFIG} names no model: it is empty or damaged; restore it from a copy "
                          "of the run")
    task = getattr(get_model_entry(model), "task", "classify")
    if task != "detect":
        raise ReslabError(f"{run_dir} is a {TASK_NOUNS.get(task, task)} run, not a detection run; 'reslab eval' "
                          "evaluates every run by its own task")


def evaluate_detection_run(run_dir: str | Path, *, split: str = "test", checkpoint: str = "best",
                           data: str | None = None, data_dir: str | None = None, splits: DatasetSplits | None = None,
                           device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                           write: bool = True) -> RunEvaluation[DetResult]:
    """Evaluate a detection run's checkpoint on a split of its data (or ``data``).

    Writes ``eval-{split}.json`` (COCO's figures of boxes, and of masks for Mask R-CNN) and
    ``plots/detection-{split}.png`` (ground truth | predictions of the first :data:`SAMPLE_ROWS`
    images) into the run directory unless ``write`` is False.
    """
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    _check_detection_run(run_dir)
    run = load_run(run_dir, checkpoint, device)
    data_name, images = run_split(run, split, data=data, data_dir=data_dir, splits=splits)
    if not isinstance(images, DetectionImages):
        raise ReslabError(f"{data_name} is not detection data; a detection run is evaluated on images with boxes: "
                          "pennfudan:PATH or coco:PATH")
    res, rows = evaluate_detection(run.model, images, device=device, amp_dtype=amp_dtype, keep=SAMPLE_ROWS)
    out = RunEvaluation(res, split, run.checkpoint, list(run.classes), None, None)
    if write:
        out.json_path = run.run_dir / f"eval-{split}.json"
        atomic_write_text(out.json_path, json.dumps(out.to_dict(), indent=2))
        out.plot_path = run.run_dir / rundir.PLOTS / f"detection-{split}.png"
        figures = f"box AP {100 * (res.box_ap or 0):.1f}"
        if res.segm is not None:
            figures += f", mask AP {100 * (res.mask_ap or 0):.1f}"
        plot_detections(rows, list(run.classes), out.plot_path,
                        title=f"{run.config.model}, {split} split ({run.checkpoint} checkpoint): {figures}")
    return out


@dataclass
class DetPrediction:
    """What :func:`predict_detections` found in one image file, and where it drew it."""

    path: str
    out_path: Path
    detections: list[dict[str, Any]]
    """``{"label": class name, "score": float, "box": [x1, y1, x2, y2]}`` in the original image's
    pixels, for every detection at the score threshold or over, best first."""


@torch.no_grad()
def _detect(model: nn.Module, image: torch.Tensor, size: int | None, device: torch.device,
            score_threshold: float) -> dict[str, torch.Tensor]:
    """The detections of one uint8 image scoring at least ``score_threshold``, in the image's own
    pixels: resized first to a shorter side of ``size`` (as the run's data was), the boxes and masks
    mapped back (only the kept masks: an image's 100 full-size masks could take gigabytes)."""
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[1:]
    x = TF.resize(image, [size], antialias=True) if size is not None else image  # as the data loader resizes
    out = model([x.to(device).float().div_(255)])[0]
    keep = out["scores"] >= score_threshold
    pred = {k: (v[keep].float() if v.is_floating_point() else v[keep]).cpu() for k, v in out.items()}
    rh, rw = x.shape[1:]
    if (rh, rw) != (h, w):
        pred["boxes"] = pred["boxes"] * torch.tensor([w / rw, h / rh, w / rw, h / rh])
        if "masks" in pred and len(pred["masks"]):
            pred["masks"] = F.interpolate(pred["masks"], size=(h, w), mode="bilinear", align_corners=False)
    return pred


def predict_detections(run: LoadedRun, paths: Sequence[str | Path], out_dir: str | Path, *,
                       score_threshold: float = SCORE_THRESHOLD,
                       device: torch.device | str | None = None) -> list[DetPrediction]:
    """Detect objects in image files of any size with a detection run.

    For each image ``NAME.ext`` writes ``out_dir/NAME_det.png``: the original image with the
    detections at ``score_threshold`` or over drawn (boxes, class and score, masks for Mask R-CNN).
    When the run was trained on images resized to a shorter side of ``image_size``, each image is
    resized so for the detector and the boxes and masks mapped back to its own pixels. Files are
    written atomically; an image that fails to decode stops before anything of it is written.
    """
    from PIL import Image

    task = getattr(get_model_entry(run.config.model), "task", "classify")
    if task != "detect":
        raise ReslabError(f"{run.run_dir} is a {TASK_NOUNS.get(task, task)} run, not a detection run")
    if not 0.0 <= score_threshold <= 1.0:
        raise ReslabError(f"the score threshold must be in [0, 1], got {score_threshold}")
    device = torch.device(device) if device is not None else next(run.model.parameters()).device
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReslabError(f"--out {out_dir} is a file; give a folder for the drawn images")
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise ReslabError(f"two images are named {dup!r}: their drawings would overwrite each other; predict them "
                          "into different --out folders")
    run.model.eval()
    results = []
    for path in map(image_path, paths):
        image = pil_to_uint8(open_image(str(path), "RGB"))
        pred = _detect(run.model, image, run.config.image_size, device, score_threshold)
        drawn = draw_detections(image, pred["boxes"], pred["labels"], pred["scores"], pred.get("masks"), run.classes,
                                score_threshold)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{path.stem}_det.png"
        with atomic_path(target) as tmp:
            Image.fromarray(np.ascontiguousarray(drawn.permute(1, 2, 0).numpy()), mode="RGB").save(tmp, format="PNG")
        found = [{"label": run.classes[label] if 0 <= label < len(run.classes) else str(label), "score": score,
                  "box": box} for label, score, box in zip(pred["labels"].tolist(), pred["scores"].tolist(),
                                                           pred["boxes"].tolist())]
        results.append(DetPrediction(str(path), target, found))
    return results
