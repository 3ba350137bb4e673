"""Baselines every classification run is compared with: did the CNN earn its keep?

- **majority class**: always predict the most frequent training class.
- **linear classifier on pixels**: multinomial logistic regression on the images' pixels (shrunk by
  area averaging to at most 32x32, standardised with the training split's mean and std), L2
  weight decay chosen on the validation split from :data:`WEIGHT_DECAYS`, solved to convergence
  by full-batch L-BFGS. Seconds on small data; at most :data:`MAX_IMAGES` images per split are
  used (a fixed sample), so streamed folders stay cheap.

Both are scored on the same test split as the CNN with the centre view.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..data import DatasetSplits, FileImages, TensorImages

__all__ = ["baselines", "majority_baseline", "fit_linear", "pixel_features", "WEIGHT_DECAYS", "MAX_IMAGES",
           "MAX_SIDE"]

WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)
MAX_IMAGES = 20_000
MAX_SIDE = 32


def _sample(n: int, seed: int, cap: int = MAX_IMAGES) -> list[int]:
    if n <= cap:
        return list(range(n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].tolist())


def pixel_features(split: TensorImages | FileImages, seed: int = 0, side: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 (N, D) pixels in [0, 1], shrunk by area averaging to at most ``MAX_SIDE`` a side;
    int64 labels) of up to :data:`MAX_IMAGES` images of ``split``."""
    idx = _sample(len(split), seed)
    if isinstance(split, TensorImages):
        images = split.images[idx].float() / 255
        labels = split.labels[idx]
    else:
        from torchvision.transforms.v2.functional import pil_to_tensor

        from ..data.transforms import pil_resize_center_crop

        s = side or MAX_SIDE  # streamed images differ in size: the shorter side to s, the centre square
        images = torch.stack([pil_to_tensor(pil_resize_center_crop(split.load(i), s, s)) for i in idx]).float() / 255 \
            if idx else torch.zeros(0, split.channels, s, s)
        labels = torch.tensor([split.samples[i][1] for i in idx], dtype=torch.long)
    h, w = images.shape[-2:]
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        images = F.interpolate(images, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return images.flatten(1), labels


def majority_baseline(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Always the most frequent training class (the lowest index among ties)."""
    counts = torch.bincount(train_labels, minlength=num_classes)
    cls = int(counts.argmax())
    err = 100.0 * float((test_labels != cls).double().mean()) if len(test_labels) else math.nan
    return {"class": cls, "test_err": err}


def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = 200,
               start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: (W (K, D), b (K,)) minimising mean cross-entropy +
    ``weight_decay`` / 2 * ||W||^2 over standardised ``x``, by L-BFGS with a strong-Wolfe line
    search, run until the gradient vanishes (tolerance 1e-7) or ``max_iter``; from ``start``
    (a warm start, e.g. the solution for a larger weight decay) or zeros."""
    w = (start[0].clone() if start else torch.zeros(num_classes, x.shape[1], dtype=x.dtype)).requires_grad_()
    b = (start[1].clone() if start else torch.zeros(num_classes, dtype=x.dtype)).requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _err(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    if len(y) == 0:
        return math.nan
    return 100.0 * float(((x @ w.T + b).argmax(1) != y).double().mean())


def baselines(splits: DatasetSplits, seed: int = 0) -> dict[str, Any]:
    """The majority-class and linear-on-pixels test errors (%) for ``splits``, with what they used."""
    train, test, val = splits.train, splits.test, splits.val
    if test is None or len(test) == 0 or not all(isinstance(s, (TensorImages, FileImages)) for s in (train, test, val)):
        return {}  # classification only (not masks, photos to restore or detection targets)
    assert isinstance(train, (TensorImages, FileImages)) and isinstance(test, (TensorImages, FileImages))
    assert isinstance(val, (TensorImages, FileImages))
    t0 = time.time()
    k = len(splits.classes)
    xtr, ytr = pixel_features(train, seed)
    xte, yte = pixel_features(test, seed + 1)
    has_val = val is not None and len(val) > 0
    xva, yva = pixel_features(val, seed + 2) if val is not None and has_val else (xtr[:0], ytr[:0])
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-3)
    xtr, xte, xva = ((v - mean) / std for v in (xtr, xte, xva))
    candidates = sorted(WEIGHT_DECAYS, reverse=True) if has_val else [WEIGHT_DECAYS[1]]
    fits: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    for wd in candidates:  # strongest decay first, each fit warm-started from the previous one
        fits.append((wd, *fit_linear(xtr, ytr, k, wd, max_iter=100, start=fits[-1][1:] if fits else None)))
    val_errs = [_err(xva, yva, w, b) for _, w, b in fits] if has_val else [math.nan]
    i = min(range(len(fits)), key=lambda j: val_errs[j]) if has_val else 0
    wd, w, b = fits[i]
    return {
        "majority": majority_baseline(ytr, yte, k),
        "linear": {"test_err": _err(xte, yte, w, b), "val_err": val_errs[i], "weight_decay": wd,
                   "features": int(xtr.shape[1]), "train_images": int(len(ytr)), "test_images": int(len(yte)),
                   "seconds": round(time.time() - t0, 2)},
    }
