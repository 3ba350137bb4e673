"""ClassifyTask (the training loss, the epoch figures, validation and the final test) against
values computed here from their definitions, never by reslab's own code."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from reslab.config import make_config
from reslab.data import DatasetSplits, TensorImages
from reslab.data.transforms import Normalizer
from reslab.models import create_model
from reslab.models.base import AuxOutput
from reslab.train.classify import ClassifyTask
from reslab.train.distributed import DistContext

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_v0"


def _cross_entropy(logits, target, eps=0.0):
    """Mean over the batch of (1 - eps) * -log p_target + eps * mean_k -log p_k, in float64."""
    logp = logits.double().log_softmax(1)
    return float(((1 - eps) * -logp[torch.arange(len(target)), target] - eps * logp.mean(1)).mean())


# -- the loss -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_loss_is_cross_entropy_with_the_configured_label_smoothing(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(9, 5, generator=g) * 2
    target = torch.randint(0, 5, (9,), generator=g)
    task = ClassifyTask(make_config(model="resnet20", label_smoothing=eps))
    loss, pred = task.loss(logits, target)
    assert pred is logits
    assert float(loss) == pytest.approx(_cross_entropy(logits, target, eps), rel=1e-6)
    if eps:
        assert abs(float(loss) - _cross_entropy(logits, target)) > 1e-3  # smoothing changes the figure


def test_loss_with_auxiliary_heads_adds_their_weighted_losses_and_predicts_with_the_main_head():
    g = torch.Generator().manual_seed(1)
    main, aux1, aux2 = (torch.randn(6, 4, generator=g) * 2 for _ in range(3))
    target = torch.randint(0, 4, (6,), generator=g)
    eps = 0.1
    task = ClassifyTask(make_config(model="resnet20", label_smoothing=eps))
    loss, pred = task.loss(AuxOutput(main, (aux1, aux2), (0.3, 0.7)), target)
    assert pred is main
    want = _cross_entropy(main, target, eps) + 0.3 * _cross_entropy(aux1, target, eps) + 0.7 * _cross_entropy(aux2, target, eps)
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_loss_backpropagates_into_every_head():
    g = torch.Generator().manual_seed(2)
    heads = [torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(2)]
    target = torch.tensor([0, 1, 2, 0])
    loss, _ = ClassifyTask(make_config(model="resnet20")).loss(AuxOutput(heads[0], (heads[1],), (0.4,)), target)
    loss.backward()
    # d loss / d logits = w * (softmax - onehot) / batch, for each head
    onehot = torch.eye(3)[target]
    for h, w in zip(heads, (1.0, 0.4)):
        want = w * (h.detach().softmax(1) - onehot) / 4
        torch.testing.assert_close(h.grad, want, rtol=1e-5, atol=1e-7)


# -- epoch figures ---------------------------------------------------------------------------------------
def test_batch_stats_count_the_argmax_hits():
    pred = torch.tensor([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.2, 0.3], [0.5, 0.4, 0.6]], requires_grad=True)
    target = torch.tensor([1, 1, 2, 0])
    stats = ClassifyTask(make_config(model="resnet20")).batch_stats(pred, target)
    assert set(stats) == {"correct"} and int(stats["correct"]) == 2  # rows 0 and 2


def test_train_metrics_and_running_error_from_summed_statistics():
    task = ClassifyTask(make_config(model="resnet20"))
    stats = {"loss": 30.0, "n": 40, "correct": torch.tensor(30)}
    m = task.train_metrics(stats)
    assert m["train_loss"] == pytest.approx(0.75) and float(m["train_err"]) == pytest.approx(25.0)
    assert task.running_error(stats) == pytest.approx(25.0)
    empty = {"loss": 0.0, "n": 0, "correct": torch.tensor(0)}  # no batch yet: no division by zero
    assert task.train_metrics(empty)["train_loss"] == 0.0 and float(task.train_metrics(empty)["train_err"]) == 100.0
    assert task.running_error(empty) == 100.0


def test_task_names_the_metric_that_selects_the_best_checkpoint():
    task = ClassifyTask(make_config(model="resnet20"))
    assert task.name == "classify" and task.selection_metric == "val_err"


# -- validation ------------------------------------------------------------------------------------------
class TableModel(nn.Module):
    """Row i of a fixed logit table for the image whose pixels (0,0) and (0,1) encode i (normalize
    'none'); records the batch sizes and whether inputs came channels-last."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", table)
        self.batches, self.channels_last = [], []

    def forward(self, x):
        self.batches.append(x.shape[0])
        self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        i = (x[:, 0, 0, 0] * 255).round().long() + 256 * (x[:, 0, 0, 1] * 255).round().long()
        return self.table[i]


def _indexed(n):
    images = torch.zeros(n, 2, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = (torch.arange(n) % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (torch.arange(n) // 256).to(torch.uint8)
    images[:, 1] = 7  # a second channel: channels-last is then a distinct memory layout
    return images


def _ev(cfg):
    return SimpleNamespace(cfg=cfg, device=torch.device("cpu"), amp_dtype=None, ctx=DistContext())


@pytest.mark.parametrize("channels_last", [False, True])
def test_validate_reports_the_centre_view_errors_and_loss_of_the_val_split(channels_last):
    g = torch.Generator().manual_seed(3)
    n, k = 300, 10
    table = torch.randn(n, k, generator=g) * 2
    labels = torch.randint(0, k, (n,), generator=g)
    val = TensorImages(_indexed(n), labels)
    splits = DatasetSplits(name="t", classes=[str(c) for c in range(k)], channels=2, image_size=(4, 4),
                           train=val, val=val, test=None, info={})
    cfg = make_config(model="resnet20", batch_size=32, channels_last=channels_last)
    model = TableModel(table).train()
    got = ClassifyTask(cfg).validate(model, splits, Normalizer.fit("none", val.images), _ev(cfg))
    probs = table.double().softmax(1)
    top5 = probs.topk(5, dim=1).indices
    want_err = 100.0 * sum(int(probs[i].argmax()) != int(labels[i]) for i in range(n)) / n
    want_top5 = 100.0 * sum(int(labels[i]) not in top5[i].tolist() for i in range(n)) / n
    want_loss = float(-probs[torch.arange(n), labels].log().mean())
    assert set(got) == {"val_loss", "val_err", "val_top5_err"}
    assert got["val_err"] == pytest.approx(want_err) and got["val_top5_err"] == pytest.approx(want_top5)
    assert got["val_loss"] == pytest.approx(want_loss, rel=1e-5)
    assert 0 < want_top5 < want_err < 100
    # one centre view per image, in batches of at least 256 (the training batch is only 32)
    assert model.batches == [256, 44]
    assert model.channels_last == [channels_last] * 2
    assert model.training  # left in the mode it was in


# -- the final test ------------------------------------------------------------------------------------------
@pytest.fixture()
def run_dir(tmp_path):
    """The fixture run, with 'last' weights that differ from 'best' (the head's weights negated)."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    last = run / "checkpoints" / "last.safetensors"
    with safe_open(str(last), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(last)
    tensors["head.fc.weight"] = -tensors["head.fc.weight"]
    save_file(tensors, last, metadata=meta)
    (run / "plots" / "confusion.png").unlink()
    return run


def _reference_probs(run, tag, images):
    """The run's network (resnet20, 10 classes, 1 channel) with its ``tag`` weights on per-pixel-mean
    normalised images, assembled here from the files."""
    model = create_model("resnet20", num_classes=10, in_chans=1)
    model.load_state_dict(load_file(run / "checkpoints" / f"{tag}.safetensors"))
    with safe_open(str(run / "preprocess.safetensors"), framework="pt") as f:
        mean, std = f.get_tensor("mean").double(), f.get_tensor("std").double()
    x = ((images.double() / 255 - mean) / std).float()
    with torch.no_grad():
        return model.eval()(x).double().softmax(1)


@pytest.mark.parametrize("tag", ["best", "last"])
def test_test_evaluates_the_chosen_checkpoint_on_the_test_split_and_writes_the_plot(run_dir, tiny, tag):
    data = DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                         val=tiny.val, test=tiny.test.subset(range(60)), info={})
    cfg = make_config(model="resnet20", data="embedded", test_protocol="center")
    rec = ClassifyTask(cfg).test(run_dir, data, tag, _ev(cfg))
    probs = _reference_probs(run_dir, tag, data.test.images)
    labels = data.test.labels
    n = len(labels)
    want_top1 = 100.0 * int((probs.argmax(1) != labels).sum()) / n
    want_top5 = 100.0 * sum(int(labels[i]) not in probs[i].topk(5).indices.tolist() for i in range(n)) / n
    want_loss = float(-probs[torch.arange(n), labels].log().mean())
    assert rec["event"] == "test" and rec["split"] == "test" and rec["protocol"] == "center"
    assert rec["checkpoint"] == tag
    assert rec["top1_err"] == pytest.approx(want_top1) and rec["top5_err"] == pytest.approx(want_top5)
    assert rec["loss"] == pytest.approx(want_loss, rel=1e-4)
    assert (run_dir / "plots" / "confusion.png").is_file()
    assert (run_dir / "eval-test-center.json").is_file()


def test_test_uses_the_configured_test_protocol(run_dir, tiny):
    data = DatasetSplits(name="embedded", classes=tiny.classes, channels=1, image_size=(28, 28), train=tiny.train,
                         val=tiny.val, test=tiny.test.subset(range(8)), info={})
    cfg = make_config(model="resnet20", data="embedded", test_protocol="10crop")
    rec = ClassifyTask(cfg).test(run_dir, data, "best", _ev(cfg))
    assert rec["protocol"] == "10crop" and (run_dir / "eval-test-10crop.json").is_file()
    cfg = make_config(model="resnet20", data="embedded")
    centre = ClassifyTask(cfg).test(run_dir, data, "best", _ev(cfg))
    assert centre["protocol"] == "center" and abs(centre["loss"] - rec["loss"]) > 1e-4


def test_running_error_after_one_sample():
    task = ClassifyTask(make_config(model="resnet20"))
    assert task.running_error({"loss": 0.1, "n": 1, "correct": torch.tensor(1)}) == 0.0
    assert task.running_error({"loss": 0.1, "n": 1, "correct": torch.tensor(0)}) == 100.0
    assert task.train_metrics({"loss": 0.1, "n": 1, "correct": torch.tensor(1)})["train_err"] == 0.0
