"""evaluate / evaluate_run / predict against independent answers, and on a run made by older code."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from reslab import rundir
from reslab.config import make_config
from reslab.data import TensorImages, load_dataset
from reslab.data.transforms import Normalizer
from reslab.evaluate import evaluate, evaluate_run
from reslab.predict import load_run, predict
from reslab.train import fit

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"


class FixedLogits(nn.Module):
    """Returns row i of a fixed table for the image whose first pixel is i (normalisation 'none')."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x):
        return self.table[(x[:, 0, 0, 0] * 255).round().long()]


def _indexed_images(n, size=8):
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return images


def test_center_protocol_counts_against_hand_computed_values():
    g = torch.Generator().manual_seed(0)
    n, k = 50, 7
    table = torch.randn(n, k, generator=g) * 3
    labels = torch.randint(0, k, (n,), generator=g)
    res = evaluate(FixedLogits(table), TensorImages(_indexed_images(n), labels), normalizer=Normalizer.fit("none", _indexed_images(1)),
                   num_classes=k, batch_size=16)
    probs = table.double().softmax(1)
    pred = probs.argmax(1)
    top5 = probs.topk(5, dim=1).indices
    want_top1 = 100.0 * sum(int(pred[i]) != int(labels[i]) for i in range(n)) / n
    want_top5 = 100.0 * sum(int(labels[i]) not in top5[i].tolist() for i in range(n)) / n
    want_cm = torch.zeros(k, k, dtype=torch.int64)
    for i in range(n):
        want_cm[labels[i], pred[i]] += 1
    want_loss = float(-probs[torch.arange(n), labels].log().mean())
    assert res.n == n and res.top1_err == want_top1 and res.top5_err == want_top5
    assert torch.equal(res.confusion, want_cm)
    assert res.loss == pytest.approx(want_loss, rel=1e-5)
    assert 0 < want_top1 < 100 and want_top5 < want_top1  # the figures test something


def test_ten_crop_is_the_mean_softmax_of_exactly_the_ten_views():
    torch.manual_seed(0)
    n, size, pad, k = 6, 8, 2, 4
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)
    labels = torch.arange(n) % k
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, k))
    norm = Normalizer.fit("none", images)
    res = evaluate(model, TensorImages(images, labels), normalizer=norm, num_classes=k, protocol="10crop", pad=pad)
    x = F.pad(images.float() / 255, (pad, pad, pad, pad))
    full = size + 2 * pad
    corners = [(0, 0), (0, full - size), (full - size, 0), (full - size, full - size), (pad, pad)]
    views = [x[:, :, t:t + size, l:l + size] for t, l in corners]
    views += [v.flip(3) for v in views]
    assert len(views) == 10
    with torch.no_grad():
        probs = torch.stack([model(v).double().softmax(1) for v in views]).mean(0)
        centre_only = model(images.float() / 255).double().softmax(1)
    want = float(-probs[torch.arange(n), labels].log().mean())
    assert res.loss == pytest.approx(want, rel=1e-5)
    assert abs(res.loss - float(-centre_only[torch.arange(n), labels].log().mean())) > 1e-3  # the views matter


@pytest.fixture()
def old_run(tmp_path):
    run = tmp_path / "run_v0"
    shutil.copytree(FIXTURE, run)
    return run


def test_evaluate_run_on_a_run_made_by_older_code_repeats_its_test(old_run):
    recorded = rundir.last_record(old_run, "test")
    ev = evaluate_run(old_run, split="test")
    res = ev.result
    assert ev.checkpoint == "best" and res.protocol == recorded["protocol"] and res.n == 1500
    # the same weights on the same images: equal up to float reordering across CPU kernels
    assert abs(res.top1_err - recorded["top1_err"]) <= 100.0 / res.n
    assert res.loss == pytest.approx(recorded["loss"], rel=1e-4)
    written = json.loads(ev.json_path.read_text())
    assert written["top1_err"] == res.top1_err and sum(map(sum, written["confusion"])) == res.n
    assert ev.plot_path.is_file() and ev.plot_path.name == "confusion-test-center.png"


def test_predict_is_softmax_of_the_normalised_image_with_the_runs_class_names(old_run, tmp_path):
    run = load_run(old_run)
    img = load_dataset("embedded").test.images[0]
    path = tmp_path / "x.png"
    Image.fromarray(img[0].numpy()).save(path)
    (pred,) = predict(run, [path], topk=3)
    with torch.no_grad():
        want = run.model(run.normalizer(img[None])).double().softmax(1)[0]
    vals, idx = want.topk(3)
    classes = json.loads((old_run / rundir.CLASSES).read_text())
    assert [c for c, _ in pred.top] == [classes[i] for i in idx.tolist()]
    assert [p for _, p in pred.top] == pytest.approx(vals.tolist(), rel=1e-5)


def test_a_run_made_by_older_code_resumes(old_run):
    cfg = make_config(rundir.read_config(old_run), iterations=8, progress=False)
    res = fit(cfg, old_run, resume=True)
    steps = [r["step"] for r in rundir.read_metrics(old_run) if r["event"] == "epoch"]
    assert res.status == "finished" and res.steps == 8 and steps[-1] == 8
