"""The contract every registered model keeps, parametrised over the whole registry.

* A classifier trains: forward and backward at its native input size, finite outputs and gradients.
* It serves as a backbone: ``forward_features``, ``forward_head`` (with ``pre_logits``),
  ``reset_classifier``, and ``feature_info`` that describes the ``features_only=True`` maps.
* A segmentation model (``task="segment"``) trains at its smallest legal size of at least 64
  pixels, returns ``(N, num_classes, H', W')`` logits as ``output_margin`` says, and refuses an
  illegal size with ``check_input_size``.
* Its parameter count stays what it was: golden values in ``golden_params.json``, rewritten from
  the registry when ``RESLAB_REGEN_GOLDEN=1`` is set (the test then checks against what it wrote).

Shapes and parameter counts come from models built without their initialisation (see
``_shape_model``).
"""

import json
import math
import os
from pathlib import Path

import pytest
import torch

import reslab
from reslab.errors import ReslabError
from reslab.models import get_model_entry, list_models
from reslab.models.base import AuxOutput, Backbone, SegmentationModel
from tests.models._helpers import meta_model, n_params, unfilled_model

NAMES = list_models()
CLASSIFIERS = [n for n in NAMES if get_model_entry(n).task == "classify"]
SEGMENTERS = [n for n in NAMES if get_model_entry(n).task == "segment"]
STYLIZERS = [n for n in NAMES if get_model_entry(n).task == "stylize"]  # their contract: tests/models/test_style.py
RESTORERS = [n for n in NAMES if get_model_entry(n).task == "restore"]  # their contract: tests/models/test_sr.py
DETECTORS = [n for n in NAMES if get_model_entry(n).task == "detect"]  # their contract: tests/models/test_detection.py
GOLDEN = Path(__file__).with_name("golden_params.json")


def _native_batch(name: str) -> torch.Tensor:
    c, h, w = get_model_entry(name).input_size
    return torch.randn(2, c, h, w)


def _shape_input(name: str) -> torch.Tensor:
    """One image at the native size of small-input nets (CIFAR, MNIST); 96x96 for the ImageNet-size
    ones, the smallest that every one of them takes, a fifth of the arithmetic at 224x224."""
    c, h, w = get_model_entry(name).input_size
    return torch.zeros(1, c, min(h, 96), min(w, 96))


@torch.no_grad()
def _shape_model(name: str, **overrides) -> torch.nn.Module:
    """The model without its initialisation (built on the meta device), on zeroed CPU storage:
    shapes and parameter counts at little cost. The meta device alone would need no storage, but
    its kernels run in Python: 17 s for ResNet-1202's forward pass, against 1 s on the CPU."""
    model = unfilled_model(name, **overrides)
    for t in (*model.parameters(), *model.buffers()):
        t.zero_()
    return model


def test_every_name_has_a_known_task():
    assert sorted(CLASSIFIERS + SEGMENTERS + STYLIZERS + RESTORERS + DETECTORS) == sorted(NAMES)
    assert SEGMENTERS and STYLIZERS and RESTORERS and DETECTORS


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_forward_and_backward_at_native_size(name):
    torch.manual_seed(0)
    model = reslab.create_model(name)
    model.train()
    out = model(_native_batch(name))
    aux = ()
    if isinstance(out, AuxOutput):  # auxiliary classifiers are trained too
        out, aux = out.logits, out.aux_logits
    assert out.shape == (2, model.num_classes)
    assert torch.isfinite(out).all() and all(torch.isfinite(a).all() for a in aux)
    (out.float().pow(2).mean() + sum(a.float().pow(2).mean() for a in aux)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert math.isfinite(sum(g.abs().sum().item() for g in grads))


@pytest.fixture(scope="module")
def golden() -> dict[str, int]:
    if os.environ.get("RESLAB_REGEN_GOLDEN") == "1":
        counts = {name: n_params(_shape_model(name)) for name in NAMES}
        GOLDEN.write_text(json.dumps(counts, indent=1) + "\n")
    return json.loads(GOLDEN.read_text())


def test_golden_counts_name_exactly_the_registry(golden):
    assert sorted(golden) == sorted(NAMES), "rerun with RESLAB_REGEN_GOLDEN=1"


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmentation_contract(name, golden):
    assert n_params(meta_model(name)) == golden[name], "rerun with RESLAB_REGEN_GOLDEN=1"
    torch.manual_seed(0)
    model = reslab.create_model(name)
    assert isinstance(model, SegmentationModel)
    c = model.in_chans
    legal = [s for s in range(64, 400) if _legal(model, s)]
    side, illegal = legal[0], next(s for s in range(legal[0], 400) if s not in legal)
    with pytest.raises(ReslabError, match=f"cannot take a {side}x{illegal} input"):
        model.check_input_size(side, illegal)
    with pytest.raises(ReslabError):
        model(torch.zeros(1, c, illegal, side))
    mh, mw = model.output_margin(side, side)
    model.train()
    out = model(torch.randn(2, c, side, side))
    aux = ()
    if isinstance(out, AuxOutput):  # intermediate supervision is trained too
        out, aux = out.logits, out.aux_logits
    assert out.shape == (2, model.num_classes, side - 2 * mh, side - 2 * mw)
    assert all(a.shape == out.shape for a in aux)
    assert torch.isfinite(out).all() and all(torch.isfinite(a).all() for a in aux)
    (out.pow(2).mean() + sum(a.pow(2).mean() for a in aux)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_parameter_count(name, golden):
    model = meta_model(name)
    assert n_params(model) == golden[name], "rerun with RESLAB_REGEN_GOLDEN=1"
    assert model.kind in ("fasterrcnn", "maskrcnn", "retinanet") and model.num_classes == 91 and model.in_chans == 3


def _legal(model: SegmentationModel, side: int) -> bool:
    try:
        model.check_input_size(side, side)
    except ReslabError:
        return False
    return True


@pytest.mark.parametrize("name", CLASSIFIERS)
@torch.no_grad()
def test_parameter_count_and_feature_contract(name, golden):
    x = _shape_input(name)
    model = _shape_model(name)
    # One build serves both checks.
    assert name in golden, f"{name} has no golden parameter count: rerun with RESLAB_REGEN_GOLDEN=1"
    assert n_params(model) == golden[name]
    assert isinstance(model, Backbone)

    info = model.feature_info
    feats = model.forward_features(x)
    assert feats.shape[:2] == (1, info[-1].num_chs)
    assert model.forward_head(feats, pre_logits=True).shape == (1, model.num_features)
    assert model.forward_head(feats).shape == (1, model.num_classes)
    model.reset_classifier(5)
    assert model.forward_head(feats).shape == (1, 5) and model.num_classes == 5
    model.reset_classifier(0)
    assert model.forward_head(feats).shape == (1, model.num_features)

    backbone = _shape_model(name, features_only=True)
    maps = backbone(x)
    assert backbone.feature_info == info
    assert maps[-1].shape == feats.shape  # the last map is forward_features' output
    assert [m.shape[1] for m in maps] == [f.num_chs for f in info]
    reductions = [f.reduction for f in info]
    sides = [m.shape[-1] for m in maps]
    assert reductions == sorted(reductions) and reductions[0] >= 1
    assert sides == sorted(sides, reverse=True)
    # A map is never larger than its stride allows; valid convolutions may make it smaller
    # (LeNet's C5 maps 5x5 to 1x1 at stride 1, AlexNet's 227 input gives 27 at stride 8).
    assert all(s <= math.ceil(x.shape[-1] / r) for s, r in zip(sides, reductions)), (sides, reductions)

