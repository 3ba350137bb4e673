"""The timm / torchvision-reference regularisers do what their references define.

References, each computed here independently of reslab's code path: torchvision's v2 transforms
applied image by image with the image's seed (RandAugment, TrivialAugment, random erasing), the
definitions of mixup (``lam * x + (1 - lam) * x.roll(1, 0)``, torchvision's pairing) and CutMix (a
box of the paired image, labels weighted by area), the closed-form EMA of the recorded weight
trajectory (float64), the AdamW update of step 1 in closed form, and the batches of the loader
as it was before these options existed.
"""

import json
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torchvision.transforms import v2

import reslab.train.loop as loop
from reslab.config import make_config
from reslab.data import DatasetSplits
from reslab.data.loader import TensorLoader, _mix, batch_generator, epoch_permutation
from reslab.data.regularize import BatchRegularizer, PolicyAugment, image_seeds, per_image
from reslab.data.transforms import Normalizer, pad_crop_flip
from reslab.evaluate import evaluate_run
from reslab.train.classify import ClassifyTask
from reslab.train.loop import TrainingInterrupted, fit


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tiny):
    """tiny's 160 training images (5 batches of 32); 20 validation and 20 test images."""
    return DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                         val=tiny.val.subset(range(20)), test=tiny.test.subset(range(20)), info={})


def _cfg(**kw):
    base = dict(model="resnet20", data="embedded", batch_size=32, lr=0.05, schedule="constant", pad=2,
                deterministic=True, progress=False, tensorboard=False, device="cpu", log_every=1)
    return make_config(**{**base, **kw})


def _images(n=8, c=3, size=16, seed=0):
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- per-image policies -------------------------------------------------------------------------
def _per_image_reference(reference, images, order, *, seed, epoch, batch, size):
    """What a TensorLoader batch of per-image transforms must be: torchvision's ``reference()``
    applied to each image of the batch with torch's generator seeded by that image's seed."""
    want = []
    for i, s in zip(order[batch * size:(batch + 1) * size].tolist(), image_seeds(_mix(seed, epoch, batch, 6), size, 0, size)):
        torch.manual_seed(s)
        want.append(reference()(images[i]).float() / 255)
    return torch.stack(want)


@pytest.mark.parametrize("name, reference", [("randaugment", v2.RandAugment), ("trivialaugment", v2.TrivialAugmentWide)])
def test_policy_batches_are_torchvision_applied_per_image_with_each_image_seed(name, reference):
    images, labels = _images(64), torch.arange(64) % 10
    loader = TensorLoader(images, labels, 16, normalizer=Normalizer.fit("none", images), device=torch.device("cpu"),
                          train=True, seed=3, augment="none", policy=name)
    loader.set_epoch(2)
    rng_before = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), rng_before), "the loader moved the global RNG"
    order = epoch_permutation(64, 3, 2)
    for b, (x, _) in enumerate(batches):
        assert torch.equal(x, _per_image_reference(reference, images, order, seed=3, epoch=2, batch=b, size=16))
    # one operation per image, not one per batch: the images of a batch were not all changed alike
    changed = [(x != images[i].float() / 255).flatten(1).any(1).sum().item()
               for x, i in zip(batches[0][0], order[:16].tolist())]
    assert len(set(changed)) > 1
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, list(loader))), "not a pure function of (seed, epoch, batch)"


def test_streamed_policy_follows_the_crop_and_draws_from_the_image_rng():
    import random
    base = lambda image, rng: image  # noqa: E731  (the crop is tested elsewhere)
    image = _images(1)[0]
    aug = PolicyAugment(base, "randaugment")
    rng = random.Random(7)
    seed = random.Random(7).getrandbits(62)
    torch.manual_seed(seed)
    assert torch.equal(aug(image, rng), v2.RandAugment()(image))
    assert torch.equal(aug(image, None), image), "evaluation (no rng) is not augmented"


# --- random erasing, mixup, CutMix --------------------------------------------------------------
def test_random_erasing_is_torchvision_per_image_with_each_image_seed():
    x = torch.randn(8, 3, 16, 16)
    reg = BatchRegularizer(10, random_erasing=1.0)
    out, y = reg(x, torch.arange(8), stream_seed=11, offset=8, global_n=16)
    assert torch.equal(y, torch.arange(8))
    for img, got, s in zip(x, out, image_seeds(11, 16, 8, 8)):
        torch.manual_seed(s)
        assert torch.equal(got, v2.RandomErasing(p=1.0)(img))
    boxes = [(o == 0).all(0) for o in out]
    assert all(b.any() for b in boxes) and len({tuple(b.nonzero()[0].tolist()) for b in boxes}) > 1, \
        "every image gets its own erased box"


def test_mixup_is_lam_x_plus_one_minus_lam_x_rolled_with_labels_mixed_alike():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    out, soft = BatchRegularizer(10, mixup=0.4)(x, y, stream_seed=5)
    xr = x.roll(1, 0)
    lam = float(((out - xr) * (x - xr)).sum() / ((x - xr) ** 2).sum())  # least squares: the one lam that fits
    assert 0 < lam < 1
    torch.testing.assert_close(out, lam * x + (1 - lam) * xr, rtol=0, atol=1e-5)
    one_hot = F.one_hot(y, 10).float()
    torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot.roll(1, 0), rtol=0, atol=1e-5)
    torch.testing.assert_close(soft.sum(1), torch.ones(16))
    again = BatchRegularizer(10, mixup=0.4)(x, y, stream_seed=5)
    assert torch.equal(again[0], out) and torch.equal(again[1], soft)


def test_cutmix_pastes_one_box_of_the_paired_image_and_weights_labels_by_area():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    out, soft = BatchRegularizer(10, cutmix=1.0)(x, y, stream_seed=9)
    pasted = (out != x).any(1)                                  # (N, H, W): where the image changed
    box = pasted.any(0)
    assert torch.equal(out[:, :, box], x.roll(1, 0)[:, :, box]), "the box holds the paired image"
    assert torch.equal(out[:, :, ~box], x[:, :, ~box])
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    assert box.sum() == len(rows) * len(cols), "one rectangle"
    lam = 1 - box.sum().item() / 64
    one_hot = F.one_hot(y, 10).float()
    torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot.roll(1, 0))


def test_mixup_and_cutmix_together_give_one_or_the_other_per_batch():
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 10
    reg = BatchRegularizer(10, mixup=0.4, cutmix=1.0)
    kinds = set()
    for s in range(12):
        out, _ = reg(x, y, stream_seed=s)
        kinds.add("cutmix" if ((out == x).all(1).any()) else "mixup")
    assert kinds == {"mixup", "cutmix"}


def test_soft_targets_are_smoothed_and_counted_against_their_argmax():
    task = ClassifyTask(_cfg(label_smoothing=0.1))
    logits, target = torch.randn(4, 10), torch.softmax(torch.randn(4, 10), 1)
    loss, _ = task.loss(logits, target)
    smoothed = target * 0.9 + 0.01
    torch.testing.assert_close(loss, -(smoothed * logits.log_softmax(1)).sum(1).mean())
    assert task.batch_stats(target * 5, target)["correct"] == 4
    assert task.batch_stats(-target, target)["correct"] == 0


# --- the optimizer and the EMA in real fit runs --------------------------------------------------
def _f64(model):
    return {k: v.detach().clone().double() if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def _trajectory(monkeypatch):
    """The model fit builds: its initial state, and its state and gradients after each step."""
    seen = {"init": None, "steps": [], "grads": []}
    real = loop.create_model

    def create(*args, **kwargs):
        model = real(*args, **kwargs)
        seen["init"] = _f64(model)
        return model

    def on_step(step, model):
        seen["steps"].append(_f64(model))
        seen["grads"].append({n: p.grad.detach().clone().double() for n, p in model.named_parameters()})

    monkeypatch.setattr(loop, "create_model", create)
    return seen, on_step


def test_adamw_step_one_is_the_adamw_update(tmp_path, data, monkeypatch):
    seen, on_step = _trajectory(monkeypatch)
    fit(_cfg(optimizer="adamw", lr=0.003, weight_decay=0.05, iterations=1), tmp_path / "r", data=data, on_step=on_step)
    p0, p1, g = seen["init"], seen["steps"][0], seen["grads"][0]
    lr, wd, eps = 0.003, 0.05, 1e-8
    for name, grad in g.items():  # step 1: m_hat = g, v_hat = g^2; decoupled decay
        want = p0[name] * (1 - lr * wd) - lr * grad / (grad.abs() + eps)
        torch.testing.assert_close(p1[name], want, rtol=1e-5, atol=1e-6, msg=name)


def _ema_closed_form(steps, decay):
    ema = dict(steps[0])  # torch's AveragedModel: the first update copies the weights
    for p in steps[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * p[k] if p[k].is_floating_point() else ema[k] for k in ema}
    return ema


def test_ema_checkpoint_is_the_closed_form_average_and_eval_reproduces_the_test(tmp_path, data, monkeypatch):
    seen, on_step = _trajectory(monkeypatch)
    result = fit(_cfg(ema_decay=0.8, iterations=5), tmp_path / "r", data=data, on_step=on_step)
    want = _ema_closed_form(seen["steps"], 0.8)
    ckpt = tmp_path / "r" / "checkpoints"
    best, last = load_file(str(ckpt / "best.safetensors")), load_file(str(ckpt / "last.safetensors"))
    floats = [k for k, v in want.items() if v.is_floating_point()]
    assert floats and best.keys() == want.keys()
    for k in floats:
        torch.testing.assert_close(best[k].double(), want[k], rtol=1e-5, atol=1e-6, msg=k)
        assert torch.equal(best[k], last[k])
    state = torch.load(ckpt / "last.state.pt", weights_only=True)
    raw = seen["steps"][-1]
    assert all(torch.equal(state["model"][k].double(), raw[k]) for k in raw), "the state keeps the training weights"
    assert any(not torch.equal(state["model"][k], best[k]) for k in floats), "the published weights are the average"
    assert all(torch.equal(state["ema"][f"module.{k}"], best[k]) for k in floats)
    # reslab eval reads best.safetensors: the average reproduces the test error fit logged
    run = evaluate_run(tmp_path / "r", split="test", splits=data)
    assert run.result.top1_err == result.test["top1_err"] and run.result.loss == pytest.approx(result.test["loss"])
    val = [r for r in map(json.loads, (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) if r["event"] == "epoch"]
    assert evaluate_run(tmp_path / "r", split="val", splits=data).result.top1_err == val[-1]["val_err"], \
        "validation (model selection) used the average too"


REGULARISED = dict(ema_decay=0.9, mixup=0.2, cutmix=1.0, auto_augment="trivialaugment", random_erasing=0.25,
                   optimizer="adamw", lr=0.002)


def test_resume_with_every_regulariser_on_is_bit_identical(tmp_path, data):
    fit(_cfg(epochs=2, **REGULARISED), tmp_path / "whole", data=data)
    fit(_cfg(epochs=1, **REGULARISED), tmp_path / "split", data=data)
    fit(_cfg(epochs=2, **REGULARISED), tmp_path / "split", data=data, resume=True)
    for name in ("last.safetensors", "best.safetensors"):
        a, b = (load_file(str(tmp_path / r / "checkpoints" / name)) for r in ("whole", "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.state.pt", weights_only=True) for r in ("whole", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])

    def kill_at_step_7(step, _model):
        if step == 7:  # mid-epoch 2 (5 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):
        fit(_cfg(epochs=2, **REGULARISED), tmp_path / "cut", data=data, on_step=kill_at_step_7)
    fit(_cfg(epochs=2, **REGULARISED), tmp_path / "cut", data=data, resume=True)
    a, b = (load_file(str(tmp_path / r / "checkpoints" / "last.safetensors")) for r in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a), "a resume from mid-epoch diverged"


# --- every flag off: the loader and the run as before ---------------------------------------------
def test_every_flag_off_gives_the_batches_and_checkpoints_of_before(tmp_path, data, monkeypatch):
    cfg = _cfg(iterations=3, mixup=0.0, cutmix=0.0, random_erasing=0.0, auto_augment="none", ema_decay=None,
               optimizer="sgd", momentum=0.9)
    assert BatchRegularizer.from_config(cfg, 10) is None
    inputs = []
    real = loop.create_model

    def create(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, i: inputs.append(i[0].clone()) if m.training else None)
        return model

    monkeypatch.setattr(loop, "create_model", create)
    fit(cfg, tmp_path / "r", data=data)
    # the batches of the loader as it was: normalise, then pad-crop-flip from the batch generator
    images, labels = data.train.images, data.train.labels
    norm = Normalizer.fit(cfg.normalize, images)
    order = epoch_permutation(len(labels), cfg.seed, 0)
    for b, x in enumerate(inputs):
        want = pad_crop_flip(norm(images[order[b * 32:(b + 1) * 32]]), 2, batch_generator(cfg.seed, 0, b, torch.device("cpu")))
        assert torch.equal(x, want)
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.state.pt", weights_only=True)
    last = load_file(str(tmp_path / "r" / "checkpoints" / "last.safetensors"))
    assert "ema" not in state and all(torch.equal(state["model"][k], last[k]) for k in last)
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values()), "SGD with momentum"


def test_per_image_of_nothing_is_nothing():
    empty = torch.zeros(0, 3, 4, 4, dtype=torch.uint8)
    assert per_image(v2.RandAugment(), empty, []) is empty
    assert len(image_seeds(1, 4, 0, 4)) == 4 and image_seeds(1, 4, 2, 2) == image_seeds(1, 4, 0, 4)[2:]


def test_color_jitter_is_torchvision_colorjitter_per_image_after_the_policy():
    images, labels = _images(32), torch.arange(32) % 10
    loader = TensorLoader(images, labels, 16, normalizer=Normalizer.fit("none", images), device=torch.device("cpu"),
                          train=True, seed=5, augment="none", policy="trivialaugment", color_jitter=0.4)
    loader.set_epoch(1)
    order = epoch_permutation(32, 5, 1)
    reference = lambda: v2.Compose([v2.TrivialAugmentWide(), v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)])  # noqa: E731
    for b, (x, _) in enumerate(loader):
        assert torch.equal(x, _per_image_reference(reference, images, order, seed=5, epoch=1, batch=b, size=16))
    # jitter alone changes every image (a brightness factor drawn from [0.6, 1.4] is never exactly 1)
    alone = TensorLoader(images, labels, 32, normalizer=Normalizer.fit("none", images), device=torch.device("cpu"),
                         train=True, seed=5, augment="none", color_jitter=0.4)
    x, _ = next(iter(alone))
    assert all((a != images[i].float() / 255).any() for a, i in zip(x, epoch_permutation(32, 5, 0).tolist()))
