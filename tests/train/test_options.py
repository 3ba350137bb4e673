"""Training options do what their definitions say, measured in real ``fit`` runs.

The model ``fit`` builds is watched from outside: its initial weights and every training input are
recorded when it is created (a forward pre-hook), the parameters and gradients after every
optimizer step through ``on_step``; the expected values are then computed here, independently,
from those weights and batches: the loss with label smoothing, the Nesterov update rule of
``torch.optim.SGD``, gradient-norm clipping, the one-cycle learning rate.
"""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import reslab.train.loop as loop
from reslab import rundir
from reslab.config import make_config, resolve_config
from reslab.data import DatasetSplits
from reslab.models import create_model
from reslab.train import fit


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads of small convolutions wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tiny):
    """tiny's 160 training images; 10 validation and 10 test images keep the runs' evaluations short."""
    return DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                         val=tiny.val.subset(range(10)), test=tiny.test.subset(range(10)), info={})


@pytest.fixture()
def watch(monkeypatch):
    """The model fit creates: initial weights, and each training-mode input batch."""
    seen = SimpleNamespace(model=None, init=None, inputs=[])
    real = loop.create_model

    def create(*args, **kwargs):
        model = real(*args, **kwargs)
        assert seen.model is None, "fit built two models"
        seen.model, seen.init = model, copy.deepcopy(model.state_dict())

        def pre_hook(module, inputs):
            if module.training:
                seen.inputs.append(inputs[0].detach().clone())
        model.register_forward_pre_hook(pre_hook)
        return model

    monkeypatch.setattr(loop, "create_model", create)
    return seen


def _config(**overrides):
    # normalize none + augment none: a batch is its images / 255, so each can be found in the dataset
    base = dict(data="embedded", batch_size=32, iterations=2, lr=0.05, momentum=0.0, weight_decay=0.0,
                schedule="constant", augment="none", normalize="none", log_every=1, progress=False,
                tensorboard=False, device="cpu", num_workers=0)
    # the plain defaults (make_config), not recipe auto (what resolve_config uses when no recipe is named)
    return make_config(model="resnet20", **{**base, **overrides})


def _labels_of(x, split):
    """The labels of a batch of unnormalised, unaugmented training images, found by their pixels."""
    images = split.images.float().div(255).flatten(1)
    match = (x.flatten(1)[:, None, :] == images[None]).all(2)
    assert (match.sum(1) == 1).all(), "each batch image is exactly one training image"
    return split.labels[match.float().argmax(1)]


def _fresh(seen, cfg):
    model = create_model(cfg.model, num_classes=10, in_chans=1)
    model.load_state_dict(seen.init)
    return model.train()


def _steps(run):
    return [r for r in rundir.read_metrics(run) if r["event"] == "step"]


class Recorder:
    """on_step: parameters and gradients after each optimizer step (the gradient the step used)."""

    def __init__(self):
        self.params, self.grads = [], []

    def __call__(self, step, model):
        assert step == len(self.params) + 1
        self.params.append({n: p.detach().clone() for n, p in model.named_parameters()})
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})


# -- label smoothing ---------------------------------------------------------------------------------
def test_label_smoothing_is_the_loss_that_cross_entropy_with_label_smoothing_defines(data, watch, tmp_path):
    eps = 0.1
    cfg = _config(label_smoothing=eps, iterations=1)
    fit(cfg, tmp_path / "run", data=data)
    logged = _steps(tmp_path / "run")[0]
    assert logged["step"] == 1
    x = watch.inputs[0]
    y = _labels_of(x, data.train)
    with torch.no_grad():
        logits = _fresh(watch, cfg)(x).double()
    logp = logits.log_softmax(1)
    # (1 - eps) * cross-entropy with the label + eps * the mean over all K classes of -log p_k
    by_hand = float(((1 - eps) * -logp[torch.arange(len(y)), y] - eps * logp.mean(1)).mean())
    assert float(F.cross_entropy(logits, y, label_smoothing=eps)) == pytest.approx(by_hand, rel=1e-12)
    assert logged["loss"] == pytest.approx(by_hand, rel=1e-5)
    plain = float(F.cross_entropy(logits, y))
    assert abs(plain - by_hand) > 1e-3 * by_hand  # smoothing changes this loss measurably


# -- Nesterov momentum --------------------------------------------------------------------------------
def test_nesterov_updates_follow_torch_sgd_nesterov_formula(data, watch, tmp_path):
    lr, mu, wd = 0.05, 0.9, 5e-4
    cfg = _config(nesterov=True, momentum=mu, weight_decay=wd, lr=lr, iterations=2)
    rec = Recorder()
    fit(cfg, tmp_path / "run", data=data, on_step=rec)
    state = torch.load(rundir.state_file(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert all(g["nesterov"] is True and g["momentum"] == mu for g in state["optimizer"]["param_groups"])

    names = [n for n, _ in watch.model.named_parameters()]
    theta0 = {n: watch.init[n] for n in names}
    (theta1, theta2), (g1, g2) = rec.params, rec.grads
    # torch.optim.SGD(nesterov=True): d = g + wd*theta; b = mu*b + d (b = d at the first step);
    # theta <- theta - lr*(d + mu*b)
    heavy_ball_differs = False
    for n in names:
        d1 = g1[n] + wd * theta0[n]
        b1 = d1
        want1 = theta0[n] - lr * (d1 + mu * b1)
        torch.testing.assert_close(theta1[n], want1, rtol=1e-5, atol=1e-7)
        d2 = g2[n] + wd * theta1[n]
        b2 = mu * b1 + d2
        want2 = theta1[n] - lr * (d2 + mu * b2)
        torch.testing.assert_close(theta2[n], want2, rtol=1e-5, atol=1e-7)
        heavy_ball = theta1[n] - lr * b2  # plain momentum would give this
        heavy_ball_differs |= not torch.allclose(heavy_ball, theta2[n], rtol=1e-4, atol=1e-6)
    assert heavy_ball_differs


def test_nesterov_off_gives_heavy_ball_momentum(data, watch, tmp_path):
    lr, mu = 0.05, 0.9
    cfg = _config(nesterov=False, momentum=mu, lr=lr, iterations=2)
    rec = Recorder()
    fit(cfg, tmp_path / "run", data=data, on_step=rec)
    (theta1, theta2), (g1, g2) = rec.params, rec.grads
    for n, _ in watch.model.named_parameters():
        torch.testing.assert_close(theta1[n], watch.init[n] - lr * g1[n], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(theta2[n], theta1[n] - lr * (mu * g1[n] + g2[n]), rtol=1e-5, atol=1e-7)


# -- gradient clipping -----------------------------------------------------------------------------------
def _norm(grads):
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in grads.values()])))


def test_grad_clip_bounds_the_gradient_norm_the_optimizer_uses(data, watch, tmp_path):
    clip, lr = 0.05, 0.05
    cfg = _config(grad_clip=clip, lr=lr, iterations=3)
    rec = Recorder()
    fit(cfg, tmp_path / "run", data=data, on_step=rec)
    norms = [_norm(g) for g in rec.grads]
    assert all(n <= clip + 1e-6 for n in norms), norms
    # the unclipped gradient of the first step, from the initial weights and the first batch
    x = watch.inputs[0]
    y = _labels_of(x, data.train)
    model = _fresh(watch, cfg)
    F.cross_entropy(model(x), y).backward()
    full = {n: p.grad for n, p in model.named_parameters()}
    full_norm = _norm(full)
    assert full_norm > 2 * clip, "the clip must bind for this test to test anything"
    assert norms[0] < full_norm
    for n, g in rec.grads[0].items():  # the same direction, rescaled to norm clip
        torch.testing.assert_close(g, full[n] * (clip / (full_norm + 1e-6)), rtol=1e-4, atol=1e-8)
        # the step used the clipped gradient (no momentum, no weight decay: theta1 = theta0 - lr*g)
        torch.testing.assert_close(rec.params[0][n], watch.init[n] - lr * g, rtol=1e-5, atol=1e-7)
    assert norms[0] == pytest.approx(clip, rel=1e-4)


# -- the one-cycle schedule in a run ------------------------------------------------------------------------
def _one_cycle(step, total, peak):
    """Smith & Topin's one-cycle as the short_cpu recipe defines it: a half cosine from peak/25 up
    to peak over the first 25% of the steps, then a half cosine down to peak/1e4."""
    t = step / total
    if t < 0.25:
        lo = peak / 25
        return lo + (peak - lo) * (1 - math.cos(math.pi * t / 0.25)) / 2
    lo = peak / 1e4
    return lo + (peak - lo) * (1 + math.cos(math.pi * (t - 0.25) / 0.75)) / 2


def test_short_cpu_run_logs_the_one_cycle_learning_rate_at_every_step(data, tmp_path):
    cfg = resolve_config("resnet20", recipe="short_cpu", data="embedded", epochs=1, batch_size=16, log_every=1,
                         progress=False, tensorboard=False, device="cpu", num_workers=0)
    assert cfg.schedule == "onecycle" and cfg.lr == 0.2
    fit(cfg, tmp_path / "run", data=data)
    records = _steps(tmp_path / "run")
    total = len(data.train) // 16  # one epoch
    assert [r["step"] for r in records] == list(range(1, total + 1))
    # record k carries the lr of the k-th optimizer step, which starts at step index k - 1
    got = [r["lr"] for r in records]
    want = [_one_cycle(k - 1, total, 0.2) for k in range(1, total + 1)]
    assert got == pytest.approx(want, rel=1e-9)
    assert got[0] == pytest.approx(0.2 / 25) and max(got) == pytest.approx(0.2, rel=0.1)
