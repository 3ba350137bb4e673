"""The baselines in every classification run: majority class and a linear classifier on pixels."""

from __future__ import annotations

import io
import json

import torch
import torch.nn.functional as F

from reslab.config import make_config
from reslab.data import DatasetSplits, TensorImages
from reslab.report import render_run_report
from reslab.train import fit, logging
from reslab.train.baselines import baselines, fit_linear, majority_baseline, pixel_features


def test_majority_predicts_the_most_frequent_training_class():
    train = torch.tensor([0, 2, 2, 1, 2, 0])
    test = torch.tensor([2, 2, 0, 1, 1])
    out = majority_baseline(train, test, 3)
    assert out["class"] == 2
    assert out["test_err"] == 100.0 * 3 / 5


def _newton(x: torch.Tensor, y: torch.Tensor, k: int, wd: float, iters: int = 30) -> torch.Tensor:
    """The regularised multinomial logistic regression optimum by Newton's method in float64 (an
    independent solver: exact Hessian of the objective)."""
    d = x.shape[1]
    theta = torch.zeros(k * (d + 1), dtype=torch.float64)

    def objective(t: torch.Tensor) -> torch.Tensor:
        w, b = t[: k * d].view(k, d), t[k * d:]
        return F.cross_entropy(x @ w.T + b, y) + 0.5 * wd * (w * w).sum()

    for _ in range(iters):
        g = torch.autograd.functional.jacobian(objective, theta)
        h = torch.autograd.functional.hessian(objective, theta)
        theta = theta - torch.linalg.solve(h + 1e-12 * torch.eye(len(theta), dtype=torch.float64), g)
    return theta


def test_linear_classifier_reaches_the_optimum_an_independent_newton_solver_finds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(120, generator=g, dtype=torch.float64) > 0).long() + \
        (x[:, 2] > 1).long()
    wd = 1e-2
    w, b = fit_linear(x, y, 3, wd)
    theta = _newton(x, y, 3, wd)
    # k*d weights then k biases; the objective is strictly convex in W (L2) and the b's are
    # determined up to a common shift, so compare W and the logits' centred biases
    assert torch.allclose(w, theta[:15].view(3, 5), atol=1e-5)
    assert torch.allclose(b - b.mean(), theta[15:] - theta[15:].mean(), atol=1e-5)


def test_pixel_features_shrink_by_area_averaging_to_at_most_32_a_side():
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    x, y = pixel_features(TensorImages(images, torch.arange(4)))
    assert x.shape == (4, 3 * 32 * 32)
    expected = (images.float() / 255).view(4, 3, 32, 2, 32, 2).mean((3, 5)).flatten(1)
    assert torch.allclose(x, expected, atol=1e-6)
    assert y.tolist() == [0, 1, 2, 3]
    small = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(pixel_features(TensorImages(small, torch.zeros(2, dtype=torch.long)))[0], small.float().flatten(1) / 255)


def _halves(n: int, seed: int, side: int = 8) -> TensorImages:
    """Class = which half (left/right) of the image is bright: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 1, side, side), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, :, :, c * side // 2:(c + 1) * side // 2] += 150
    return TensorImages(images, labels)


def test_baselines_on_separable_data_linear_is_perfect_and_majority_is_the_other_share():
    splits = DatasetSplits("toy", ["left", "right"], 1, (8, 8), _halves(60, 0), _halves(20, 1), _halves(30, 2))
    out = baselines(splits, seed=0)
    assert out["linear"]["test_err"] == 0.0
    assert out["linear"]["weight_decay"] in (1e-4, 1e-3, 1e-2)
    assert out["linear"]["features"] == 64
    # training labels alternate 0,1: a tie, broken towards class 0; half the test images are class 1
    assert out["majority"] == {"class": 0, "test_err": 50.0}


def test_a_run_logs_the_baselines_and_warns_when_the_network_does_not_beat_the_linear_one(tmp_path, monkeypatch):
    splits = DatasetSplits("toy", ["left", "right"], 1, (8, 8), _halves(64, 0), _halves(16, 1), _halves(32, 2))
    cfg = make_config(model="resnet20", data="embedded", iterations=1, batch_size=16, lr=1e-6, augment="none",
                      progress=False, tensorboard=False, amp=False)
    out = io.StringIO()
    monkeypatch.setattr(logging, "log_stream", out)
    fit(cfg, tmp_path / "run", data=splits)
    test = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if '"event": "test"' in line][0]
    assert test["baselines"]["linear"]["test_err"] == 0.0
    assert test["top1_err"] > 0  # one step at lr 1e-6 learns nothing
    err = out.getvalue()
    assert "linear classifier on pixels 0.00%" in err
    assert "does not beat a linear classifier on the pixels (0.00%)" in err
    report = render_run_report(tmp_path / "run").read_text()
    table = report[report.index("## Baselines"):]
    assert "| linear classifier on pixels | 0.00 |" in table and "| majority class | 50.00 |" in table
    assert f"| this network | {test['top1_err']:.2f} |" in table
    assert "**Warning**: the network does not beat a linear classifier" in table


def test_pixel_features_of_a_streamed_split_are_its_centre_squares_at_32(tmp_path):
    from PIL import Image

    from reslab.data import FileImages

    g = torch.Generator().manual_seed(0)
    arrays = [torch.randint(0, 256, (40, 64, 3), generator=g, dtype=torch.uint8) for _ in range(2)]
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a.numpy()).save(tmp_path / f"{i}.png")
        paths.append((str(tmp_path / f"{i}.png"), i))
    x, y = pixel_features(FileImages(paths, channels=3))
    assert x.shape == (2, 3 * 32 * 32) and y.tolist() == [0, 1]
    # PIL: shorter side 40 -> 32 (64 -> 51), then the centre 32x32
    for i, a in enumerate(arrays):
        img = Image.fromarray(a.numpy()).resize((51, 32), Image.BILINEAR)
        left = (51 - 32) // 2
        want = torch.from_numpy(__import__("numpy").asarray(img.crop((left, 0, left + 32, 32)))).permute(2, 0, 1)
        assert torch.allclose(x[i], want.float().flatten() / 255, atol=1 / 255 + 1e-6)
