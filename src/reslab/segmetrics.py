"""Segmentation metrics and losses: confusion-matrix figures, the ISBI 2012 Rand error, boundary F1,
the U-Net paper's border-weight map and the training losses (cross-entropy, soft Dice).

Conventions (the project's segmentation design):

- logits are ``(B, K, H, W)``; targets are int64 class indices ``(B, H, W)``, or float32
  ``(B, 2, H, W)`` when a per-pixel loss weight goes with them (channel 0 the class index,
  channel 1 the weight, e.g. :func:`unet_weight_map`);
- label images of *objects* (for the Rand error) are integer ``(H, W)`` arrays, 0 the background;
  a binary cell/membrane mask becomes one by :func:`label_components` (4-connectivity, as the
  ISBI 2012 challenge's Fiji scripts label both the ground truth and the proposal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .errors import ReslabError

__all__ = [
    "SegConfusion", "confusion_from_labels", "pixel_error", "iou_per_class", "dice_per_class", "mean_iou",
    "label_components", "adapted_rand_stats", "adapted_rand_error", "rand_error_from_masks", "boundary_f1",
    "class_balance_weights", "unet_weight_map", "split_target", "center_crop_target", "seg_loss",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
PredZero = Literal["cluster", "unassigned"]

# 4-connectivity in 2-D: the cross. The ISBI 2012 challenge's scripts (Fiji, trainableSegmentation.metrics.RandError)
# label the binarised ground truth and proposal with Utils.connectedComponents(image, 4).
FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _numpy(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 2:
        raise ReslabError(f"{name} must be one 2-D (H, W) image, got shape {tuple(a.shape)}; pass one image at a time")
    return a


# --------------------------------------------------------------------------------------------------------------------
# Confusion matrix and the figures computed from it
# --------------------------------------------------------------------------------------------------------------------


def split_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(class indices int64 ``(B, H, W)``, per-pixel weights ``(B, H, W)`` or None) from either target form."""
    if target.is_floating_point():
        if target.dim() != 4 or target.shape[1] != 2:
            raise ReslabError(f"a float target must be (B, 2, H, W) (class index, weight), got shape {tuple(target.shape)}")
        return target[:, 0].round().long(), target[:, 1]
    return target.long(), None


def confusion_from_labels(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                          ignore_index: int | None = None) -> torch.Tensor:
    """(K, K) int64 pixel counts of predicted labels against true labels; rows are true classes,
    columns predictions. ``pred`` and ``target`` are integer tensors of the same shape."""
    if pred.shape != target.shape:
        raise ReslabError(f"predicted labels {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape; "
                          "crop the target to the output (center_crop_target)")
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes or int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ReslabError(f"labels outside 0..{num_classes - 1}: targets span {int(t.min())}..{int(t.max())}, "
                          f"predictions {int(p.min())}..{int(p.max())}; check num_classes and the masks")
    k = num_classes
    return torch.bincount(t * k + p, minlength=k * k).reshape(k, k)


def pixel_error(cm: torch.Tensor) -> float:
    """Share of wrongly labelled pixels, in percent (NaN for an empty matrix)."""
    total = int(cm.sum())
    return 100.0 * (total - int(cm.diag().sum())) / total if total else math.nan


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every class, TP / (TP + FP + FN), float64; NaN for a class that is
    neither in the targets nor in the predictions."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


def dice_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Dice (F1) of every class, 2 TP / (2 TP + FP + FN), float64; NaN where the class is absent from both."""
    cm = cm.double()
    tp = cm.diag()
    both = cm.sum(0) + cm.sum(1)
    return torch.where(both > 0, 2 * tp / both.clamp_min(1), torch.full_like(tp, math.nan))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes present (in targets or predictions)."""
    iou = iou_per_class(cm)
    present = iou[~iou.isnan()]
    return float(present.mean()) if present.numel() else math.nan


class SegConfusion:
    """A K x K confusion matrix accumulated over batches.

    ``update`` takes logits ``(B, K, H, W)`` or predicted labels ``(B, H, W)`` (any shape equal to the
    target's), and targets in either form (:func:`split_target`). Sum ``matrix`` across processes for
    distributed evaluation.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if num_classes < 1:
            raise ReslabError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels, _ = split_target(target) if target.is_floating_point() else (target, None)
        if pred.is_floating_point() or pred.dim() == labels.dim() + 1:
            if pred.dim() != labels.dim() + 1 or pred.shape[1] != self.num_classes:
                raise ReslabError(f"logits {tuple(pred.shape)} do not match {self.num_classes} classes and targets "
                                  f"{tuple(labels.shape)}")
            pred = pred.argmax(1)
        cm = confusion_from_labels(pred.detach().cpu(), labels.detach().cpu(), self.num_classes, self.ignore_index)
        self.matrix += cm

    def pixel_error(self) -> float:
        return pixel_error(self.matrix)

    def iou(self) -> torch.Tensor:
        return iou_per_class(self.matrix)

    def dice(self) -> torch.Tensor:
        return dice_per_class(self.matrix)

    def mean_iou(self) -> float:
        return mean_iou(self.matrix)


# --------------------------------------------------------------------------------------------------------------------
# The ISBI 2012 challenge's Rand error
# --------------------------------------------------------------------------------------------------------------------


def label_components(mask: ArrayLike, foreground: int = 1) -> np.ndarray:
    """Objects of a class mask: the 4-connected components of the pixels equal to ``foreground``,
    numbered 1..n (int64), 0 elsewhere."""
    m = _numpy(mask, "mask") == foreground
    labels, _ = ndimage.label(m, structure=FOUR_CONNECTED)
    return labels.astype(np.int64, copy=False)


def adapted_rand_stats(pred_labels: ArrayLike, true_labels: ArrayLike, *,
                       pred_zero: PredZero = "cluster") -> tuple[float, float, float]:
    """(adapted Rand error, precision, recall) of a segmentation against the ground truth, pixels whose
    true label is 0 left out (the foreground-restricted Rand index of Arganda-Carreras et al. 2015).

    With ``p_ij`` the number of pixels of true object ``i`` (``i > 0``) and predicted object ``j``,
    ``a_i``/``b_j`` the true/predicted object sizes: precision ``P = sum p_ij(p_ij-1) / sum b_j(b_j-1)``
    (of the pixel pairs the prediction puts together, the share that are together in the truth),
    recall ``R = sum p_ij(p_ij-1) / sum a_i(a_i-1)``, and the error is ``1 - 2PR/(P+R)``. These are
    the definitions skimage's docstring gives; ``skimage.metrics.adapted_rand_error`` 0.26 returns the
    two swapped (its code divides its "precision" by the true sizes). The error is the same.

    Args:
        pred_labels: predicted objects, integer ``(H, W)``.
        true_labels: true objects, integer ``(H, W)``; 0 is the background, left out.
        pred_zero: what predicted label 0 is. ``"cluster"`` (default): one object like any other,
            as ``skimage.metrics.adapted_rand_error(true, pred, ignore_labels=(0,))`` counts it;
            ``"unassigned"``: every pixel of it is an object of its own, as the ISBI 2012 challenge's
            Fiji script (``RandError.foregroundRestrictedRandIndex``) and SNEMI3D's prune it.
    """
    pred = _numpy(pred_labels, "pred_labels")
    true = _numpy(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ReslabError(f"predicted labels {pred.shape} and true labels {true.shape} differ in shape")
    if pred_zero not in ("cluster", "unassigned"):
        raise ReslabError(f"pred_zero must be 'cluster' or 'unassigned', got {pred_zero!r}")
    for name, a in (("pred_labels", pred), ("true_labels", true)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise ReslabError(f"{name} must be an integer label image, got {a.dtype}; label a mask with "
                              "label_components (or use rand_error_from_masks)")
    fg = true != 0
    if not fg.any():
        raise ReslabError("the ground truth has no object pixels (every true label is 0): the foreground-restricted "
                          "Rand error is undefined")
    _, t = np.unique(true[fg], return_inverse=True)
    pred_values, p = np.unique(pred[fg], return_inverse=True)
    t, p = t.reshape(-1).astype(np.int64), p.reshape(-1).astype(np.int64)
    n_pred = len(pred_values)
    cells, counts = np.unique(t * n_pred + p, return_counts=True)  # the non-zero entries p_ij of the table
    a = np.bincount(t)  # true object sizes
    if pred_zero == "unassigned" and 0 in pred_values:
        # each pixel of predicted label 0 is its own object: it pairs with nothing, so its column drops out
        keep = cells % n_pred != int(np.searchsorted(pred_values, 0))
        cells, counts = cells[keep], counts[keep]
    b = np.bincount(cells % n_pred, weights=counts, minlength=n_pred).astype(np.int64)  # predicted object sizes
    # integer pair counts (exact), then one division each
    sum_pij = int((counts * (counts - 1)).sum())
    sum_a = int((a * (a - 1)).sum())
    sum_b = int((b * (b - 1)).sum())
    precision = sum_pij / sum_b if sum_b else 1.0
    recall = sum_pij / sum_a if sum_a else 1.0
    denom = 0.5 * sum_a + 0.5 * sum_b
    error = 1.0 - sum_pij / denom if denom else 0.0
    return error, precision, recall


def adapted_rand_error(pred_labels: ArrayLike, true_labels: ArrayLike, *, pred_zero: PredZero = "cluster") -> float:
    """The ISBI 2012 challenge's Rand error: 1 - F-score of the foreground-restricted Rand index
    (true label 0 left out). See :func:`adapted_rand_stats` for the formula and ``pred_zero``."""
    return adapted_rand_stats(pred_labels, true_labels, pred_zero=pred_zero)[0]


def rand_error_from_masks(pred_mask: ArrayLike, true_mask: ArrayLike, foreground: int = 1, *,
                          pred_zero: PredZero = "cluster") -> float:
    """Rand error of a predicted class mask against the true one: objects are the 4-connected components
    of the ``foreground`` class (the cells; ISBI: 1 after 255 -> 1), every other pixel is background 0,
    and true background pixels are left out (:func:`adapted_rand_error`)."""
    return adapted_rand_error(label_components(pred_mask, foreground), label_components(true_mask, foreground),
                              pred_zero=pred_zero)


def _inner_boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image edge is not a boundary)."""
    padded = np.pad(mask, 1, mode="edge")
    core = padded[1:-1, 1:-1]
    outside = ~padded[:-2, 1:-1] | ~padded[2:, 1:-1] | ~padded[1:-1, :-2] | ~padded[1:-1, 2:]
    return core & outside


def boundary_f1(pred_mask: ArrayLike, true_mask: ArrayLike, tolerance: float = 2.0, foreground: int = 1) -> float:
    """F1 of the object boundaries with a distance tolerance (Martin et al. 2004's boundary F-measure).

    Boundary pixels are the ``foreground`` pixels with a 4-neighbour of another class (the image edge
    does not count). Precision is the share of predicted boundary pixels within ``tolerance`` pixels
    (Euclidean) of a true boundary pixel, recall the converse; F1 = 2PR/(P+R). Both masks without a
    boundary score 1, one of them without a boundary 0.
    """
    pred = _numpy(pred_mask, "pred_mask") == foreground
    true = _numpy(true_mask, "true_mask") == foreground
    if pred.shape != true.shape:
        raise ReslabError(f"pred_mask {pred.shape} and true_mask {true.shape} differ in shape")
    bp, bt = _inner_boundary(pred), _inner_boundary(true)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    dist_to_true = ndimage.distance_transform_edt(~bt)
    dist_to_pred = ndimage.distance_transform_edt(~bp)
    precision = float((dist_to_true[bp] <= tolerance).mean())
    recall = float((dist_to_pred[bt] <= tolerance).mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# --------------------------------------------------------------------------------------------------------------------
# The U-Net border-weight map (Ronneberger et al. 2015, eq. 2)
# --------------------------------------------------------------------------------------------------------------------


def class_balance_weights(mask: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """Per-class weights ``N / (C n_k)`` (``C`` classes present, ``n_k`` pixels of class ``k``): the
    class-frequency balancing ``w_c`` of the U-Net paper; the mean weight over the pixels is 1. Absent
    classes get weight 0 (no pixel uses it)."""
    m = _numpy(mask, "mask").astype(np.int64)
    counts = np.bincount(m.ravel(), minlength=num_classes or 0).astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = m.size / (present.sum() * counts[present])
    return w


def unet_weight_map(mask: ArrayLike, w0: float = 10.0, sigma: float = 5.0, foreground: int = 1, *,
                    class_weights: Sequence[float] | np.ndarray | None = None, cutoff: float = 1e-6) -> torch.Tensor:
    """The U-Net paper's loss weight map (eq. 2): ``w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``.

    ``d1``/``d2`` are the Euclidean distances to the nearest and second-nearest cell, a cell being a
    4-connected component of the ``foreground`` class. The border term is added on the pixels of the
    other classes only (the membranes/background between cells, as the paper's Fig. 3d shows): inside
    a cell ``d1`` is 0 and the term would mark cell pixels near a neighbour, while the paper weights the
    thin separating borders the network must learn. Foreground pixels get ``w_c`` alone.

    Args:
        mask: ``(H, W)`` class indices.
        w0, sigma: the paper's 10 and 5 pixels.
        foreground: the cell class (ISBI: 1).
        class_weights: ``w_c`` per class; default :func:`class_balance_weights` of this mask (pass
            weights measured over the training set to share them across images).
        cutoff: border terms below ``w0 * cutoff`` are dropped: a cell's distances are computed only
            in its bounding box grown by ``sigma * sqrt(2 ln(1 / cutoff))`` pixels, which bounds the cost
            (measured 0.16 s on a 512 x 512 ISBI label with 136 cells, one core).

    Returns:
        float32 ``(H, W)`` weights.
    """
    m = _numpy(mask, "mask").astype(np.int64)
    if sigma <= 0:
        raise ReslabError(f"sigma must be positive, got {sigma}")
    if not 0 < cutoff < 1:
        raise ReslabError(f"cutoff must be in (0, 1), got {cutoff}")
    if int(m.min(initial=0)) < 0:
        raise ReslabError("the mask holds negative class indices; give class indices 0..K-1")
    wc_table = class_balance_weights(m) if class_weights is None else np.asarray(class_weights, dtype=np.float64)
    if wc_table.ndim != 1 or len(wc_table) <= int(m.max(initial=0)):
        raise ReslabError(f"class_weights has {wc_table.size} entries but the mask holds class {int(m.max())}; "
                          "give one weight per class")
    w = wc_table[m]
    cells, n = ndimage.label(m == foreground, structure=FOUR_CONNECTED)
    if n >= 2 and w0 != 0:
        reach = sigma * math.sqrt(2.0 * math.log(1.0 / cutoff))  # d1 + d2 beyond this: term < w0 * cutoff
        grow = int(math.ceil(reach))
        h, wd = m.shape
        d1 = np.full(m.shape, np.inf)
        d2 = np.full(m.shape, np.inf)
        for k, box in enumerate(ndimage.find_objects(cells), start=1):
            if box is None:
                continue
            ys = slice(max(box[0].start - grow, 0), min(box[0].stop + grow, h))
            xs = slice(max(box[1].start - grow, 0), min(box[1].stop + grow, wd))
            # distances to cell k inside the grown box are exact (the whole cell lies in it); outside it they
            # exceed `grow`, so the term there is below the cutoff whatever the other distance
            dk = ndimage.distance_transform_edt(cells[ys, xs] != k)
            a, b = d1[ys, xs], d2[ys, xs]
            b[...] = np.minimum(b, np.maximum(a, dk))
            a[...] = np.minimum(a, dk)
        border = m != foreground
        s = d1[border] + d2[border]
        w[border] += w0 * np.exp(-(s * s) / (2.0 * sigma * sigma))
    return torch.from_numpy(w.astype(np.float32))


# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------


def center_crop_target(target: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """The centred ``out_h x out_w`` window of a target (or any tensor) in its last two dimensions, for
    networks whose output is smaller than the input (the valid-convolution U-Net)."""
    h, w = target.shape[-2:]
    if out_h > h or out_w > w or out_h < 1 or out_w < 1:
        raise ReslabError(f"cannot crop a {h}x{w} target to {out_h}x{out_w}; the output must not exceed the target")
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return target[..., top:top + out_h, left:left + out_w]


def _soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None,
                    smooth: float) -> torch.Tensor:
    k = logits.shape[1]
    probs = logits.float().softmax(1)
    onehot = F.one_hot(labels, k).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)  # one Dice per class over the whole batch
    inter = (probs * onehot).sum(dims)
    card = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (card + smooth)
    if class_weights is None:
        return 1 - dice.mean()
    cw = class_weights.to(dice)
    return 1 - (cw * dice).sum() / cw.sum()


def seg_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce",
             class_weights: torch.Tensor | Sequence[float] | None = None, smooth: float = 1.0) -> torch.Tensor:
    """The training loss of a segmentation network.

    Args:
        logits: ``(B, K, H, W)``.
        target: int64 ``(B, H, W)`` class indices, or float ``(B, 2, H, W)`` (class index, weight)
            when a per-pixel weight map goes with them. Same ``H, W`` as the logits (crop it with
            :func:`center_crop_target` for a valid-convolution network).
        kind: ``"ce"`` (cross-entropy), ``"dice"`` (soft Dice) or ``"ce+dice"`` (their sum).
        class_weights: optional ``(K,)`` class weights.
        smooth: the soft Dice's additive smoothing.

    The cross-entropy is the mean over pixels; with ``class_weights`` alone it is torch's weighted mean
    (``F.cross_entropy(weight=...)``: ``sum w_y ce / sum w_y``). With a weight map it is
    ``mean(w(x) * w_y * ce(x))``: the U-Net paper's energy ``E = sum_x w(x) log p_l(x)(x)``
    (eq. 1) divided by the fixed number of pixels in the batch, so every pixel keeps the weight the map
    gives it, across images too. The soft Dice is ``1 - mean_k (2 sum p_k t_k + s) / (sum p_k + sum t_k + s)``
    over softmax probabilities, one Dice per class over the whole batch (weighted mean over the classes
    with ``class_weights``); it ignores the weight map.
    """
    if kind not in ("ce", "dice", "ce+dice"):
        raise ReslabError(f"unknown segmentation loss {kind!r}; choose ce, dice or ce+dice")
    if logits.dim() != 4:
        raise ReslabError(f"logits must be (B, K, H, W), got shape {tuple(logits.shape)}")
    labels, weights = split_target(target)
    if labels.shape != (logits.shape[0], *logits.shape[2:]):
        raise ReslabError(f"target {tuple(labels.shape)} does not match the logits {tuple(logits.shape)}; a network "
                          "with a smaller output needs the target cropped (center_crop_target)")
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    if cw is not None and cw.shape != (logits.shape[1],):
        raise ReslabError(f"class_weights must have one entry per class ({logits.shape[1]}), got {tuple(cw.shape)}")
    x = logits.float()
    loss = x.new_zeros(())
    if kind in ("ce", "ce+dice"):
        if weights is None:
            loss = loss + F.cross_entropy(x, labels, weight=cw)
        else:
            ce = F.cross_entropy(x, labels, weight=cw, reduction="none")
            loss = loss + (weights.to(ce) * ce).mean()
    if kind in ("dice", "ce+dice"):
        loss = loss + _soft_dice_loss(x, labels, cw, smooth)
    return loss
