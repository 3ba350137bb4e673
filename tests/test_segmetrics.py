"""reslab.segmetrics against independent references: numpy counts on real ISBI 2012 label maps,
skimage's adapted Rand error and boundaries, brute-force distances for the U-Net weight map,
torch's cross-entropy and segmentation-models-pytorch's Dice loss."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from reslab.errors import ReslabError
from reslab.segmetrics import (
    SegConfusion,
    adapted_rand_error,
    adapted_rand_stats,
    boundary_f1,
    center_crop_target,
    class_balance_weights,
    confusion_from_labels,
    dice_per_class,
    iou_per_class,
    label_components,
    mean_iou,
    pixel_error,
    rand_error_from_masks,
    seg_loss,
    split_target,
    unet_weight_map,
)

ISBI_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012" / "train" / "label"
needs_isbi = pytest.mark.skipif(not (ISBI_LABELS / "0.png").is_file(),
                                reason=f"{ISBI_LABELS} (the ISBI 2012 training labels) is absent")


def isbi_mask(i: int) -> np.ndarray:
    """Label PNG 0 (membrane) -> 0, 255 (cell) -> 1, as the project maps it."""
    a = np.asarray(Image.open(ISBI_LABELS / f"{i}.png"))
    assert set(np.unique(a)) <= {0, 255}
    return (a == 255).astype(np.int64)


def voronoi_mask(h: int = 96, w: int = 80, cells: int = 25, seed: int = 0) -> np.ndarray:
    """Cells of a random Voronoi diagram separated by 1-2 px membranes (0), cells 1: an EM-like label map
    that needs no data files."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, 1, (cells, 2)) * (h, w)
    yy, xx = np.mgrid[:h, :w]
    owner = np.argmin((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2, axis=-1)
    edge = np.zeros((h, w), bool)
    edge[:-1] |= owner[:-1] != owner[1:]
    edge[:, :-1] |= owner[:, :-1] != owner[:, 1:]
    return (~edge).astype(np.int64)


def masks() -> list:
    out = [pytest.param(lambda: voronoi_mask(), id="voronoi")]
    out += [pytest.param(lambda i=i: isbi_mask(i), id=f"isbi{i}", marks=needs_isbi) for i in (0, 17)]
    return out


def perturbations(mask: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    cell = mask.astype(bool)
    return {
        "same": mask,
        "eroded": ndimage.binary_erosion(cell, iterations=2).astype(np.int64),
        "dilated": ndimage.binary_dilation(cell).astype(np.int64),
        "noisy": np.where(rng.random(mask.shape) < 0.05, 1 - mask, mask),
        "shifted": np.roll(mask, (2, -1), axis=(0, 1)),
    }


# ---------------------------------------------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------------------------------------------


def numpy_confusion(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    return np.array([[np.count_nonzero((true == i) & (pred == j)) for j in range(k)] for i in range(k)])


@pytest.mark.parametrize("load", masks())
def test_confusion_and_its_figures_match_numpy_counts_on_real_label_maps(load):
    true = load()
    preds = perturbations(true)
    cm = confusion_from_labels(torch.from_numpy(preds["noisy"]), torch.from_numpy(true), 2)
    ref = numpy_confusion(preds["noisy"], true, 2)
    assert cm.dtype == torch.int64 and cm.tolist() == ref.tolist()

    acc = SegConfusion(2)
    batch_true = np.stack([true, true, true])
    batch_pred = np.stack([preds["eroded"], preds["dilated"], preds["shifted"]])
    acc.update(torch.from_numpy(batch_pred[:2]), torch.from_numpy(batch_true[:2]))
    # logits whose argmax is the prediction (the margin of 2 beats the noise below 1)
    logits = 2.0 * F.one_hot(torch.from_numpy(batch_pred[2:]), 2).permute(0, 3, 1, 2).float()
    logits += torch.rand(logits.shape, generator=torch.Generator().manual_seed(0))
    acc.update(logits, torch.from_numpy(batch_true[2:]))
    ref = numpy_confusion(batch_pred, batch_true, 2)
    assert acc.matrix.tolist() == ref.tolist()

    tp = np.diag(ref).astype(np.float64)
    fp, fn = ref.sum(0) - tp, ref.sum(1) - tp
    wrong = np.count_nonzero(batch_pred != batch_true)
    assert acc.pixel_error() == pytest.approx(100.0 * wrong / batch_true.size, abs=1e-12)
    assert acc.iou().tolist() == pytest.approx((tp / (tp + fp + fn)).tolist(), abs=1e-15)
    assert acc.dice().tolist() == pytest.approx((2 * tp / (2 * tp + fp + fn)).tolist(), abs=1e-15)
    assert acc.mean_iou() == pytest.approx(float(np.mean(tp / (tp + fp + fn))), abs=1e-15)
    acc.reset()
    assert int(acc.matrix.sum()) == 0


def test_confusion_takes_the_weighted_target_form_and_ignores_a_label():
    true = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    pred = torch.tensor([[[0, 2, 2], [1, 1, 0]]])
    weighted = torch.stack([true.float(), torch.full(true.shape, 3.5)], 1)  # (B, 2, H, W)
    acc = SegConfusion(3)
    acc.update(pred, weighted)
    # rows true, columns predicted: (0,0) x2; (1,2), (1,1); (2,2), (2,1)
    assert acc.matrix.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    ignored = confusion_from_labels(pred, true, 3, ignore_index=2)
    assert ignored.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    labels, weights = split_target(weighted)
    assert labels.dtype == torch.int64 and torch.equal(labels, true) and float(weights.unique()) == 3.5


def test_absent_class_is_nan_and_left_out_of_the_mean():
    cm = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    assert iou[:2].tolist() == pytest.approx([3 / 6, 4 / 7]) and math.isnan(iou[2])
    assert dice[:2].tolist() == pytest.approx([6 / 9, 8 / 11]) and math.isnan(dice[2])
    assert mean_iou(cm) == pytest.approx((3 / 6 + 4 / 7) / 2)
    assert pixel_error(cm) == pytest.approx(100 * 3 / 10)
    assert math.isnan(pixel_error(torch.zeros(2, 2, dtype=torch.long)))


def test_confusion_rejects_out_of_range_labels_and_mismatched_shapes():
    with pytest.raises(ReslabError, match="outside 0..1"):
        confusion_from_labels(torch.tensor([0, 2]), torch.tensor([0, 1]), 2)
    with pytest.raises(ReslabError, match="differ in shape"):
        confusion_from_labels(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(ReslabError, match="do not match"):
        SegConfusion(3).update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------------------------
# adapted Rand error
# ---------------------------------------------------------------------------------------------------------------


def skimage_are(pred_labels, true_labels):
    from skimage.metrics import adapted_rand_error as ski

    return ski(true_labels, pred_labels, ignore_labels=(0,))


def singletons(labels: np.ndarray) -> np.ndarray:
    """Every pixel of label 0 made an object of its own (what 'unassigned' means), for skimage."""
    out = labels.copy()
    zero = out == 0
    out[zero] = out.max() + 1 + np.arange(np.count_nonzero(zero))
    return out


@pytest.mark.parametrize("load", masks())
def test_adapted_rand_error_equals_skimage_on_real_labels_and_perturbed_predictions(load):
    true = load()
    true_labels = ndimage.label(true)[0]  # scipy's default 2-D structure: the 4-connected cross
    assert np.array_equal(label_components(true), true_labels)
    assert true_labels.max() > 10
    errors = {}
    for name, pred in perturbations(true).items():
        pred_labels = ndimage.label(pred)[0]
        err, prec, rec = adapted_rand_stats(pred_labels, true_labels)
        ref_err, ref_prec, ref_rec = skimage_are(pred_labels, true_labels)
        assert abs(err - ref_err) <= 1e-12, name
        # skimage 0.26 returns precision and recall swapped relative to its own docstring
        assert abs(prec - ref_rec) <= 1e-12 and abs(rec - ref_prec) <= 1e-12, name
        assert abs(rand_error_from_masks(pred, true) - ref_err) <= 1e-12
        unassigned = adapted_rand_error(pred_labels, true_labels, pred_zero="unassigned")
        assert abs(unassigned - skimage_are(singletons(pred_labels), true_labels)[0]) <= 1e-12, name
        errors[name] = err
    assert errors["same"] == 0.0
    assert all(errors[k] > 0 for k in ("eroded", "dilated", "noisy", "shifted"))


def test_adapted_rand_error_on_general_label_images_and_torch_input():
    rng = np.random.default_rng(3)
    true = rng.integers(0, 6, (40, 50))  # label 0 (left out) plus five objects
    pred = np.where(rng.random(true.shape) < 0.7, true, rng.integers(0, 9, true.shape)) + 100  # other numbering
    ref = skimage_are(pred, true)[0]
    assert abs(adapted_rand_error(pred, true) - ref) <= 1e-12
    assert abs(adapted_rand_error(torch.from_numpy(pred), torch.from_numpy(true)) - ref) <= 1e-12


def test_adapted_rand_error_by_hand():
    # true objects: A = 4 pixels, B = 2 pixels, plus two background pixels (left out)
    true = np.array([[1, 1, 1, 1, 2, 2, 0, 0]])
    pred = np.array([[5, 5, 7, 7, 7, 7, 5, 0]])
    # table over true-object pixels: A: {5: 2, 7: 2}; B: {7: 2}
    # pairs together in both: 2*1 + 2*1 + 2*1 = 6 (ordered pairs); true: 4*3 + 2*1 = 14;
    # predicted (restricted to the object pixels): sizes 5 -> 2, 7 -> 4: 2 + 12 = 14
    err, prec, rec = adapted_rand_stats(pred, true)
    assert (prec, rec) == (6 / 14, 6 / 14) and err == pytest.approx(1 - 6 / 14, abs=1e-15)
    # predicted 0 as 'unassigned' changes nothing here (no object pixel is predicted 0)
    assert adapted_rand_error(pred, true, pred_zero="unassigned") == err
    pred0 = np.array([[0, 0, 7, 7, 7, 7, 5, 0]])
    # cluster: the same table as above (0 is a label like 5); unassigned: column 0 drops out: pairs 2 + 2 = 4,
    # predicted 7 -> 4 pixels: 12, true 14
    assert adapted_rand_error(pred0, true) == pytest.approx(1 - 6 / 14, abs=1e-15)
    assert adapted_rand_error(pred0, true, pred_zero="unassigned") == pytest.approx(1 - 4 / 13, abs=1e-15)


def test_rand_error_labels_cells_with_4_connectivity():
    # two cells touching only at a corner: two objects under 4-connectivity (the ISBI scripts'), one under 8
    true = np.array([[1, 1, 0, 0],
                     [1, 1, 0, 0],
                     [0, 0, 1, 1],
                     [0, 0, 1, 1]])
    assert label_components(true).max() == 2
    merged = np.where(true > 0, 1, 0)  # predicted labels: both cells one object
    assert adapted_rand_error(merged, label_components(true)) > 0.3
    assert rand_error_from_masks(true, true) == 0.0


def test_adapted_rand_error_rejects_bad_input():
    with pytest.raises(ReslabError, match="no object pixels"):
        adapted_rand_error(np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ReslabError, match="integer label image"):
        adapted_rand_error(np.ones((3, 3)) * 0.5, np.ones((3, 3), int))
    with pytest.raises(ReslabError, match="one 2-D"):
        adapted_rand_error(np.ones((2, 3, 3), int), np.ones((2, 3, 3), int))
    with pytest.raises(ReslabError, match="pred_zero"):
        adapted_rand_error(np.ones((3, 3), int), np.ones((3, 3), int), pred_zero="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# boundary F1
# ---------------------------------------------------------------------------------------------------------------


def brute_boundary_f1(pred, true, tol):
    from skimage.segmentation import find_boundaries

    bp = np.argwhere(find_boundaries(pred, connectivity=1, mode="inner", background=0))
    bt = np.argwhere(find_boundaries(true, connectivity=1, mode="inner", background=0))
    if len(bp) == 0 or len(bt) == 0:
        return float(len(bp) == len(bt))
    d = np.sqrt(((bp[:, None, :] - bt[None, :, :]) ** 2).sum(-1))
    p = (d.min(1) <= tol).mean()
    r = (d.min(0) <= tol).mean()
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("tol", [0, 1, 2, 3.5])
def test_boundary_f1_matches_a_brute_force_computation(tol):
    true = voronoi_mask(40, 36, 8, seed=2)
    for pred in perturbations(true).values():
        assert boundary_f1(pred, true, tolerance=tol) == pytest.approx(brute_boundary_f1(pred, true, tol), abs=1e-12)


def test_boundary_f1_edge_cases():
    m = voronoi_mask(30, 30, 5)
    assert boundary_f1(m, m, tolerance=0) == 1.0
    shifted = np.roll(m, 1, axis=1)
    assert boundary_f1(shifted, m, tolerance=0) < 0.6 < boundary_f1(shifted, m, tolerance=1)
    ones = np.ones((5, 5), int)
    assert boundary_f1(ones, ones) == 1.0  # no boundary in either (the image edge is not one)
    assert boundary_f1(ones, m[:5, :5] * 0 + np.eye(5, dtype=int)) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# U-Net border-weight map
# ---------------------------------------------------------------------------------------------------------------


def brute_weight_map(mask, w0, sigma, wc):
    """Eq. 2 by exhaustive distances from every pixel to every pixel of every cell (4-connected)."""
    cells, n = ndimage.label(mask == 1)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    dists = []
    for k in range(1, n + 1):
        pts = np.argwhere(cells == k)
        d = np.sqrt((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).min(-1)
        dists.append(d)
    d = np.sort(np.stack(dists), axis=0)
    border = w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return wc[mask] + np.where(mask == 1, 0.0, border)


def three_blobs():
    m = np.zeros((30, 34), np.int64)
    m[3:12, 4:14] = 1  # a square
    m[3:12, 15:22] = 1  # one pixel column from it: a thin border
    yy, xx = np.mgrid[:30, :34]
    m[(yy - 22) ** 2 + (xx - 20) ** 2 <= 25] = 1  # a disc below
    return m


def test_unet_weight_map_matches_brute_force_distances_on_three_blobs():
    m = three_blobs()
    assert ndimage.label(m)[1] == 3
    n1 = np.count_nonzero(m)
    wc = np.array([m.size / (2 * (m.size - n1)), m.size / (2 * n1)])
    assert class_balance_weights(m) == pytest.approx(wc)
    w = unet_weight_map(m)
    assert w.dtype == torch.float32 and w.shape == m.shape
    np.testing.assert_allclose(w.numpy(), brute_weight_map(m, 10.0, 5.0, wc), rtol=1e-6, atol=1e-5)
    # the paper's properties: never below w_c; about w_c + w0 exp(-2^2/50) in the 1-px gap between touching cells;
    # the cells themselves keep w_c
    assert (w.numpy() >= wc[m] - 1e-6).all()
    gap = float(w[6, 14])
    assert gap == pytest.approx(wc[0] + 10 * math.exp(-4 / 50), rel=1e-5) and gap > wc[0] + 9
    assert np.allclose(w.numpy()[m == 1], wc[1])
    other = unet_weight_map(m, w0=3.0, sigma=2.0, class_weights=[1.0, 1.0])
    np.testing.assert_allclose(other.numpy(), brute_weight_map(m, 3.0, 2.0, np.array([1.0, 1.0])), atol=1e-5)


def test_unet_weight_map_with_fewer_than_two_cells_is_the_class_map():
    m = np.zeros((10, 12), np.int64)
    assert torch.equal(unet_weight_map(m), torch.ones(10, 12))
    m[2:5, 3:7] = 1
    assert torch.allclose(unet_weight_map(m), torch.from_numpy(class_balance_weights(m)[m]).float())


@needs_isbi
def test_unet_weight_map_on_a_real_label_matches_exact_distances_and_is_fast():
    full = isbi_mask(3)
    crop = full[100:228, 200:328]
    cells, n = ndimage.label(crop)
    # exact reference without the bounding-box cutoff: one full-image distance transform per cell
    d = np.sort(np.stack([ndimage.distance_transform_edt(cells != k) for k in range(1, n + 1)]), axis=0)
    wc = class_balance_weights(crop)
    ref = wc[crop] + np.where(crop == 1, 0.0, 10 * np.exp(-((d[0] + d[1]) ** 2) / 50))
    np.testing.assert_allclose(unet_weight_map(crop).numpy(), ref, rtol=1e-6, atol=1e-4)  # cutoff: < 10 * 1e-6
    t0 = time.perf_counter()
    unet_weight_map(full)
    assert time.perf_counter() - t0 < 3.0  # measured 0.16 s on one core


# ---------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------


def batch(seed=0, b=2, k=3, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, h, w, generator=g) * 2, torch.randint(0, k, (b, h, w), generator=g)


def test_ce_equals_torch_cross_entropy_and_ones_weights_change_nothing():
    logits, target = batch()
    assert torch.allclose(seg_loss(logits, target, "ce"), F.cross_entropy(logits, target), atol=1e-6)
    cw = torch.tensor([0.5, 2.0, 1.0])
    assert torch.allclose(seg_loss(logits, target, "ce", class_weights=cw), F.cross_entropy(logits, target, weight=cw),
                          atol=1e-6)
    ones = torch.stack([target.float(), torch.ones(target.shape)], 1)
    for kind in ("ce", "dice", "ce+dice"):
        assert torch.allclose(seg_loss(logits, ones, kind), seg_loss(logits, target, kind), atol=1e-6)


def test_weighted_ce_is_the_mean_of_weight_times_pixel_loss():
    logits, target = batch(1)
    w = torch.rand(target.shape, generator=torch.Generator().manual_seed(5)) * 10
    logp = logits.log_softmax(1)
    pixel = -logp.gather(1, target[:, None])[:, 0]  # -log p_l(x)(x)
    got = seg_loss(logits, torch.stack([target.float(), w], 1), "ce")
    assert torch.allclose(got, (w * pixel).sum() / pixel.numel(), atol=1e-6)


def test_dice_by_hand_on_a_tiny_case():
    # one image, two classes, two pixels; logits give p(class 1) = sigmoid(l1 - l0)
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), -math.log(3.0)]]]])  # p1 = 0.75, 0.25
    target = torch.tensor([[[1, 0]]])
    # class 0: p0 = (0.25, 0.75), t0 = (0, 1): inter 0.75, sum p 1, sum t 1 -> (1.5 + 1) / (2 + 1)
    # class 1: p1 = (0.75, 0.25), t1 = (1, 0): the same
    want = 1 - (2.5 / 3)
    assert float(seg_loss(logits, target, "dice")) == pytest.approx(want, abs=1e-6)
    assert float(seg_loss(logits, target, "dice", smooth=0.0)) == pytest.approx(1 - 1.5 / 2, abs=1e-6)
    ce = -(math.log(0.75) + math.log(0.75)) / 2
    assert float(seg_loss(logits, target, "ce+dice")) == pytest.approx(ce + want, abs=1e-6)
    # class weights weigh the per-class Dice: both equal here, so no change
    assert float(seg_loss(logits, target, "dice", class_weights=[1.0, 3.0])) == pytest.approx(want, abs=1e-6)


def test_dice_matches_segmentation_models_pytorch_when_every_class_is_present():
    smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")
    logits, target = batch(2, b=3, k=4, h=7, w=9)
    assert len(target.unique()) == 4
    # smoothing 0: smp 0.6 writes Dice as (I + s) / (I + (FP + FN) / 2 + s), i.e. its s is half of ours (and
    # earlier smp releases used ours), so only the unsmoothed losses are comparable across versions
    ref = smp_losses.DiceLoss(mode="multiclass", from_logits=True, smooth=0.0)(logits, target)
    assert torch.allclose(seg_loss(logits, target, "dice", smooth=0.0), ref, atol=1e-6)


def test_loss_gradients_are_finite_even_for_extreme_logits():
    logits, target = batch(3)
    w = torch.stack([target.float(), torch.full(target.shape, 11.0)], 1)
    for scale in (1.0, 1e4):  # 1e4: a saturated softmax (the Dice gradient is then exactly 0, CE's is not)
        x = (logits * scale).requires_grad_()
        for kind in ("ce", "dice", "ce+dice"):
            x.grad = None
            loss = seg_loss(x, w, kind)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(x.grad).all(), (scale, kind)
            assert x.grad.abs().sum() > 0 or (scale > 1 and kind == "dice"), (scale, kind)


def test_loss_is_computed_in_float32_for_half_precision_logits():
    logits, target = batch(4)
    got = seg_loss(logits.bfloat16(), target, "ce+dice")
    assert got.dtype == torch.float32
    assert torch.allclose(got, seg_loss(logits.bfloat16().float(), target, "ce+dice"))


def test_loss_rejects_bad_input():
    logits, target = batch()
    with pytest.raises(ReslabError, match="unknown segmentation loss"):
        seg_loss(logits, target, "focal")
    with pytest.raises(ReslabError, match="center_crop_target"):
        seg_loss(logits[..., 1:-1, 1:-1], target, "ce")
    with pytest.raises(ReslabError, match="one entry per class"):
        seg_loss(logits, target, "ce", class_weights=[1.0, 2.0])
    with pytest.raises(ReslabError, match=r"\(B, 2, H, W\)"):
        seg_loss(logits, target.float(), "ce")


def test_center_crop_target_takes_the_centred_window():
    t = torch.arange(2 * 9 * 8).reshape(2, 9, 8)
    assert torch.equal(center_crop_target(t, 5, 4), t[:, 2:7, 2:6])
    assert torch.equal(center_crop_target(t, 4, 3), t[:, 2:6, 2:5])  # odd difference: the extra row/col at the end
    two = torch.stack([t.float(), t.float() * 2], 1)
    assert torch.equal(center_crop_target(two, 5, 4), two[..., 2:7, 2:6])
    assert torch.equal(center_crop_target(t, 9, 8), t)
    with pytest.raises(ReslabError, match="cannot crop"):
        center_crop_target(t, 10, 8)
