"""evaluate / evaluate_run / predict against independent answers, and on a run made by older code."""

import json
import shutil
import sys
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


# -- what evaluate reports, and how it gets there ---------------------------------------------------------
def test_eval_result_to_dict_names_classes_rounds_accuracies_and_leaves_empty_classes_null():
    from reslab.evaluate import EvalResult

    cm = torch.tensor([[2, 1, 0], [0, 0, 0], [1, 1, 1]])
    res = EvalResult("10crop", 6, 0.5, 50.0, 10.0, cm)
    assert res.per_class_acc[0] == pytest.approx(200 / 3) and res.per_class_acc[2] == pytest.approx(100 / 3)
    d = res.to_dict(["cat", "dog", "eel"])
    assert d == {"protocol": "10crop", "n": 6, "loss": 0.5, "top1_err": 50.0, "top5_err": 10.0,
                 "per_class_acc": {"cat": 66.6667, "dog": None, "eel": 33.3333}, "confusion": cm.tolist()}
    assert list(res.to_dict()["per_class_acc"]) == ["0", "1", "2"]
    assert json.loads(json.dumps(d)) == d  # plain JSON: no NaN, no tensors
    assert "confusion" not in repr(res)


def test_evaluate_refuses_an_unknown_protocol_and_an_empty_split():
    from reslab.errors import ReslabError

    images, labels = _indexed_images(3), torch.tensor([0, 1, 2])
    norm = Normalizer.fit("none", images)
    model = FixedLogits(torch.eye(3))
    with pytest.raises(ReslabError, match=r"^unknown protocol 'five-crop'; choose one of center, 10crop, multiscale$"):
        evaluate(model, TensorImages(images, labels), normalizer=norm, num_classes=3, protocol="five-crop")
    with pytest.raises(ReslabError, match=r"^nothing to evaluate: the split is empty$"):
        evaluate(model, TensorImages(images[:0], labels[:0]), normalizer=norm, num_classes=3)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_runs_the_model_in_eval_mode_and_restores_its_mode(training):
    class ModeModel(FixedLogits):
        def forward(self, x):
            self.modes.append(self.training)
            return super().forward(x)

    model = ModeModel(torch.eye(4))
    model.modes = []
    model.train(training)
    images = _indexed_images(4)
    evaluate(model, TensorImages(images, torch.arange(4)), normalizer=Normalizer.fit("none", images), num_classes=4)
    assert model.modes == [False] and model.training == training


def test_evaluate_under_autocast_uses_the_given_dtype():
    class AutocastProbe(FixedLogits):
        def forward(self, x):
            self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return super().forward(x)

    images = _indexed_images(4)
    model = AutocastProbe(torch.eye(4))
    model.seen = []
    data, norm = TensorImages(images, torch.arange(4)), Normalizer.fit("none", images)
    res = evaluate(model, data, normalizer=norm, num_classes=4, amp_dtype=torch.bfloat16)
    evaluate(model, data, normalizer=norm, num_classes=4)
    assert model.seen == [(True, torch.bfloat16), (False, model.seen[1][1])]
    assert res.top1_err == 0.0


def test_top5_error_with_fewer_than_five_classes_is_zero():
    table = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    images = _indexed_images(3)
    res = evaluate(FixedLogits(table), TensorImages(images, torch.tensor([0, 0, 1])),
                   normalizer=Normalizer.fit("none", images), num_classes=3)
    # argmax 2, 0, 2 against labels 0, 0, 1: one hit of three
    assert res.top1_err == pytest.approx(200 / 3) and res.top5_err == 0.0
    assert torch.equal(res.confusion, torch.tensor([[1, 0, 1], [0, 0, 1], [0, 0, 0]]))


def test_ten_crop_without_padding_is_the_image_and_its_mirror():
    torch.manual_seed(1)
    n, size, k = 5, 6, 3
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)
    labels = torch.arange(n) % k
    model = nn.Sequential(nn.Flatten(), nn.Linear(size * size, k))
    res = evaluate(model, TensorImages(images, labels), normalizer=Normalizer.fit("none", images), num_classes=k,
                   protocol="10crop", pad=0)
    x = images.float() / 255
    with torch.no_grad():
        probs = (model(x).double().softmax(1) + model(x.flip(3)).double().softmax(1)) / 2
    assert res.loss == pytest.approx(float(-probs[torch.arange(n), labels].log().mean()), rel=1e-5)


def _streamed_files(tmp_path, sizes):
    """RGB PNG files of the given (width, height) with random pixels; label = index % 3."""
    from reslab.data import FileImages

    samples = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"{i}.png"
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=torch.Generator().manual_seed(i),
                                      dtype=torch.uint8).numpy()).save(path)
        samples.append((str(path), i % 3))
    return FileImages(samples, channels=3)


class Recorder(nn.Module):
    """A fixed linear map of the 2x2-average-pooled input; records batch sizes and memory layout."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
        self.batches, self.channels_last = [], []

    def forward(self, x):
        self.batches.append(x.shape[0])
        self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return F.adaptive_avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1) @ self.w.T


@pytest.mark.parametrize("protocol", ["center", "10crop", "multiscale"])
def test_streamed_batches_and_channels_last(tmp_path, protocol):
    files = _streamed_files(tmp_path, [(20, 16), (16, 24), (18, 18), (30, 16), (16, 16)])
    norm = Normalizer("per_channel", torch.full((3, 1, 1), 0.5), torch.full((3, 1, 1), 0.25))
    model = Recorder()
    evaluate(model, files, normalizer=norm, num_classes=3, protocol=protocol, batch_size=2, crop_size=14,
             scales=[14, 16], channels_last=True, num_workers=0)
    if protocol == "center":  # equal-size crops: batches of batch_size
        assert model.batches == [2, 2, 1]
    else:  # one image, all its views, per step
        assert model.batches == [1] * (5 * (10 if protocol == "10crop" else 4))
    assert all(model.channels_last)
    model = Recorder()
    evaluate(model, files, normalizer=norm, num_classes=3, protocol=protocol, batch_size=2, crop_size=14,
             scales=[14, 16], num_workers=0)
    assert not any(model.channels_last)


def test_in_memory_channels_last_reaches_the_model():
    images = torch.randint(0, 256, (4, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    model = Recorder()
    evaluate(model, TensorImages(images, torch.arange(4) % 3), normalizer=Normalizer.fit("none", images), num_classes=3,
             channels_last=True)
    assert model.channels_last == [True]
    model = Recorder()
    evaluate(model, TensorImages(images, torch.arange(4) % 3), normalizer=Normalizer.fit("none", images), num_classes=3)
    assert model.channels_last == [False]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_evaluate_disjoint_contiguous_shards_that_cover_the_split(tmp_path, world):
    """What each rank of a distributed evaluation sees (the sums are all-reduced afterwards)."""
    from reslab.evaluate import _batches

    n = 7
    images = _indexed_images(n)
    norm = Normalizer.fit("none", images)
    data = TensorImages(images, torch.arange(n))
    files = _streamed_files(tmp_path, [(8, 8)] * n)
    for split in (data, files):
        seen = []
        for rank in range(world):
            ys = [y for _, y in _batches(FixedLogits(torch.zeros(256, 3)), split, norm, "center", 2, torch.device("cpu"), 4, 8,
                                         None, False, 0, rank, world)]
            seen.append(torch.cat(ys).tolist() if ys else [])
        per = -(-n // world)  # ceil
        want = [split.labels.tolist()[r * per:(r + 1) * per] for r in range(world)]
        assert seen == want and sum(seen, []) == split.labels.tolist()


# -- evaluate_run --------------------------------------------------------------------------------------------------
def _run_probs(run_dir, images):
    """The fixture run's network (resnet20 with its best weights) on per-pixel-mean normalised images,
    assembled here from the run's files."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from reslab.models import create_model

    model = create_model("resnet20", num_classes=10, in_chans=1)
    model.load_state_dict(load_file(run_dir / "checkpoints" / "best.safetensors"))
    with safe_open(str(run_dir / "preprocess.safetensors"), framework="pt") as f:
        mean, std = f.get_tensor("mean").double(), f.get_tensor("std").double()
    with torch.no_grad():
        return model.eval()(((images.double() / 255 - mean) / std).float()).double().softmax(1)


def _small(tiny, n=24):
    from reslab.data import DatasetSplits

    return DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                         val=tiny.val.subset(range(n)), test=tiny.test.subset(range(n)), info={})


@pytest.fixture()
def plots(monkeypatch):
    """evaluate_run's confusion plots, recorded (confusion, classes, path) and written as a stub file:
    matplotlib takes seconds per figure on a small CPU; one test below draws for real."""
    drawn = []

    def record(cm, classes, path):
        drawn.append((cm.clone(), list(classes), Path(path)))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"stub")
    monkeypatch.setattr(sys.modules["reslab.evaluate"], "plot_confusion_matrix", record)
    return drawn


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluate_run_on_given_splits_writes_its_figures_and_plot(old_run, tiny, split, request):
    drawn = request.getfixturevalue("plots") if split == "val" else None
    data = _small(tiny)
    ev = evaluate_run(old_run, split=split, splits=data)
    images = data.test if split == "test" else data.val
    probs = _run_probs(old_run, images.images)
    labels = images.labels
    n = len(labels)
    res = ev.result
    assert ev.split == split and ev.checkpoint == "best" and ev.classes == list(tiny.classes)
    assert res.protocol == "center" and res.n == n  # the run's test_protocol
    assert res.top1_err == pytest.approx(100.0 * int((probs.argmax(1) != labels).sum()) / n)
    assert res.loss == pytest.approx(float(-probs[torch.arange(n), labels].log().mean()), rel=1e-4)
    assert ev.json_path == old_run / f"eval-{split}-center.json"
    assert json.loads(ev.json_path.read_text()) == {"split": split, "checkpoint": "best", **res.to_dict(list(tiny.classes))}
    assert ev.plot_path == old_run / "plots" / f"confusion-{split}-center.png" and ev.plot_path.is_file()
    if drawn is not None:
        assert len(drawn) == 1 and torch.equal(drawn[0][0], res.confusion)
        assert drawn[0][1:] == (list(tiny.classes), ev.plot_path)
    else:
        assert ev.plot_path.read_bytes().startswith(b"\x89PNG")


def test_evaluate_run_protocol_batch_size_plot_name_and_ranks(old_run, tiny, monkeypatch, plots):
    ev_mod = sys.modules["reslab.evaluate"]  # reslab.evaluate is also the function, in reslab's namespace

    data = _small(tiny, 12)
    calls = []
    real = ev_mod.evaluate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev_mod, "evaluate", spy)
    ev = evaluate_run(old_run, splits=data, protocol="10crop", plot_name="cm.png", checkpoint="last")
    assert ev.result.protocol == "10crop" and ev.checkpoint == "last"
    assert ev.json_path.name == "eval-test-10crop.json" and ev.plot_path == old_run / "plots" / "cm.png"
    assert ev.plot_path.is_file() and [p for _, _, p in plots] == [ev.plot_path]
    # the run's settings: batch max(32, 256), pad 4, crop 224, no scales, channels_last off, 2 workers
    want = {"protocol": "10crop", "batch_size": 256, "pad": 4, "crop_size": 224, "scales": None, "channels_last": False,
            "num_workers": 2, "num_classes": 10, "amp_dtype": None, "rank": 0, "world_size": 1, "device": "cpu"}
    assert {k: calls[0][k] for k in want} == want
    assert calls[0]["normalizer"].kind == "per_pixel_mean"
    evaluate_run(old_run, splits=data, batch_size=5)
    assert calls[1]["batch_size"] == 5
    # rank 1 of 2 (the sums' all-reduce stubbed: one process here) evaluates its half and writes nothing
    monkeypatch.setattr(ev_mod.dist, "all_reduce", lambda t: None)
    not_main = evaluate_run(old_run, splits=data, split="val", rank=1, world_size=2)
    assert not_main.json_path is None and not_main.plot_path is None
    assert not (old_run / "eval-val-center.json").exists()
    assert (calls[2]["rank"], calls[2]["world_size"]) == (1, 2) and not_main.result.n == 6


def test_evaluate_run_loads_the_runs_own_data_with_its_split_settings(old_run, plots):
    ev = evaluate_run(old_run, split="val")  # embedded, val_size 100, seed 0: as the run was trained
    want = load_dataset("embedded", val_size=100, seed=0).val
    probs = _run_probs(old_run, want.images)
    n = len(want)
    assert ev.result.n == n == 100
    assert ev.result.loss == pytest.approx(float(-probs[torch.arange(n), want.labels].log().mean()), rel=1e-4)


def test_evaluate_run_refuses_bad_arguments_and_foreign_data(old_run, tiny, plots):
    from reslab.data import DatasetSplits
    from reslab.errors import ReslabError

    with pytest.raises(ReslabError, match=r"^split must be test or val, got 'train'$"):
        evaluate_run(old_run, split="train")
    with pytest.raises(ReslabError, match=r"^batch size must be at least 1, got 0$"):
        evaluate_run(old_run, batch_size=0)
    evaluate_run(old_run, splits=_small(tiny, 4), batch_size=1)  # 1 is allowed
    other = DatasetSplits(name="x", classes=[f"c{i}" for i in range(10)], channels=1, image_size=(28, 28),
                          train=tiny.train, val=tiny.val, test=tiny.test, info={})
    with pytest.raises(ReslabError, match=r"^embedded has classes c0, c1, c2, c3, c4\.\.\. but the run was trained on "
                                          r"T-shirt/top, Trouser, Pullover, Dress, Coat\.\.\.; give the data it was trained on$"):
        evaluate_run(old_run, splits=other)
    no_val = DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                           val=tiny.val.subset([]), test=None, info={})
    with pytest.raises(ReslabError, match=r"^embedded has no val split to evaluate$"):
        evaluate_run(old_run, split="val", splits=no_val)
    with pytest.raises(ReslabError, match=r"^embedded has no test split to evaluate$"):
        evaluate_run(old_run, split="test", splits=no_val)
