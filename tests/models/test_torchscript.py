"""Every registered classifier compiles with ``torch.jit.script`` and the scripted module computes
what the eager one computes: in eval mode over the whole registry, in training mode (batch
statistics, dropout, auxiliary heads), as a ``features_only`` backbone, for the dense-prediction
models, and after a ``torch.jit.save`` / ``torch.jit.load`` round trip.

The scripted graph runs the eager model's kernels, so outputs agree to float rounding; the bound
is relative to the outputs' scale (1e-5), what a reordered float sum could change. Inputs are
small: batch 2 at the smallest side each net takes (32 for most). The registry sweep runs the
compiled graph as compiled (``optimized_execution(False)``); the profiling executor's optimised
reruns are checked on a sample of nets, as they cost seconds on a deep net. Compiling is
TorchScript's own cost, about 3 ms per module: ~10-20 s each for ResNet-1202 and
Pre-ResNet-1001, ~1 s for a ResNet-50.
"""

import itertools

import pytest
import torch
from torch import nn

from reslab.models import get_model_entry, list_models
from reslab.models.base import AuxOutput
from reslab.models.layers import NONLOCAL_MODES
from tests.models._helpers import unfilled_model

CLASSIFIERS = [n for n in list_models() if get_model_entry(n).task == "classify"]

# The smallest input side of the ImageNet-size nets that do not take 32x32: AlexNet's 11x11/4
# first layer and valid poolings, ZFNet's, Inception-v3's valid stem and grid reductions.
SMALLEST_SIDE = {"alexnet": 75, "alexnet_tv": 64, "zfnet": 48, "inception_v3": 75}

# torch.jit is deprecated in favour of torch.export; these tests check that it still works.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

_BASE = torch.randn(1 << 16, generator=torch.Generator().manual_seed(0))


def _draw(n: int, offset: int) -> torch.Tensor:
    """``n`` standard normal values, tiled from one seeded vector (drawing VGG's 138M weights
    anew would take seconds)."""
    start = offset % len(_BASE)
    base = _BASE if start + n <= len(_BASE) else _BASE.repeat(-(-(start + n) // len(_BASE)))
    return base[start:start + n]


@torch.no_grad()
def _model(name: str, **overrides) -> nn.Module:
    """The registered model built without its initialisation, every tensor then filled: weights at
    a ReLU-preserving scale (He et al. 2015), norm layers and BN statistics random near the
    identity with gains below one (so a 1,000-layer residual stream stays finite), small random
    biases. No layer is the identity, so a wrongly compiled branch shows in the outputs."""
    model = unfilled_model(name, **overrides)
    offset = itertools.count(0, 7919)
    for m in model.modules():
        norm = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))
        for key, t in itertools.chain(m.named_parameters(recurse=False), m.named_buffers(recurse=False)):
            if not t.is_floating_point():
                t.zero_()  # BN's num_batches_tracked
                continue
            v = _draw(t.numel(), next(offset)).view_as(t)
            if norm and key == "weight":
                t.copy_(0.25 + 0.5 * v.abs().clamp(max=1))
            elif key == "running_var":
                t.copy_(0.5 + 0.5 * v.abs().clamp(max=1))
            elif t.dim() > 1 and not norm:
                t.copy_(v * (2.0 / t[0].numel()) ** 0.5)
            else:
                t.copy_(0.1 * v)
    return model


def _batch(name: str, side: int | None = None, seed: int = 1) -> torch.Tensor:
    c, h, _ = get_model_entry(name).input_size
    side = side or SMALLEST_SIDE.get(name, min(h, 32))
    return torch.randn(2, c, side, side, generator=torch.Generator().manual_seed(seed))


def _assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    scale = expected.abs().max().item()
    assert torch.isfinite(expected).all() and scale > 0 and expected.std() > 1e-3 * scale
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("name", CLASSIFIERS)
@torch.no_grad()
def test_scripted_classifier_matches_eager(name):
    model = _model(name).eval()
    x = _batch(name)
    expected = model(x)
    scripted = torch.jit.script(model)
    with torch.jit.optimized_execution(False):
        _assert_same(scripted(x), expected)


@pytest.mark.parametrize("name, overrides", [
    ("resnet20", {}), ("preact_resnet18", {}), ("se_resnet20", {}), ("googlenet", {}), ("lenet5", {}),
    ("densenet_bc_100_12", {"block_config": (2, 2, 2)}),  # the dense blocks' growing list, in a short net
])
@torch.no_grad()
def test_optimised_scripted_classifier_matches_eager(name, overrides):
    """The default (profiling) executor: the first run profiles, the second runs the graph its
    passes optimised."""
    model = _model(name, **overrides).eval()
    x = _batch(name)
    expected = model(x)
    scripted = torch.jit.script(model)
    for _ in range(2):
        _assert_same(scripted(x), expected)


@pytest.mark.parametrize("name, overrides", [
    *(("resnet20", {"nonlocal_after": ((1, 0),), "nonlocal_mode": mode}) for mode in NONLOCAL_MODES),
    ("resnet20", {"preact": True, "residual": False, "attn": "gc", "shortcut": "C"}),
    ("densenet_bc_100_12", {"memory_efficient": True, "block_config": (2, 2, 2)}),  # scripted: no checkpointing
    ("densenet_bc_100_12", {"bottleneck": False, "block_config": (2, 2, 2)}),
])
@torch.no_grad()
def test_scripted_options_match_eager(name, overrides):
    """Options no registered name uses: every non-local pairwise function, a plain
    pre-activation net, DenseNet's basic layer and its memory-efficient one."""
    model = _model(name, **overrides).eval()
    x = _batch(name)
    expected = model(x)
    with torch.jit.optimized_execution(False):
        _assert_same(torch.jit.script(model)(x), expected)


@pytest.mark.parametrize("name, side", [("googlenet", 96), ("resnet20", 32)])
def test_scripted_training_mode_matches_eager(name, side):
    """Training mode: batch statistics, dropout (same seed, same masks) and GoogLeNet's auxiliary
    heads, whose ``AuxOutput`` comes back as a named tuple of the same fields."""
    model = _model(name).train()
    x = _batch(name, side)
    scripted = torch.jit.script(model)
    torch.manual_seed(2)
    expected = model(x)
    torch.manual_seed(2)
    got = scripted(x)
    if isinstance(expected, AuxOutput):
        assert got._fields == AuxOutput._fields and len(expected.aux_logits) == 2
        assert got.aux_weights == expected.aux_weights == [0.3, 0.3]
        for g, e in zip(got.aux_logits, expected.aux_logits, strict=True):
            _assert_same(g, e)
        got, expected = got.logits, expected.logits
    _assert_same(got, expected)


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn"])
@torch.no_grad()
def test_scripted_backbone_maps_match_eager(name):
    """``features_only``: the stem's map before its trailing max-pool (ResNet), an identity stem
    (VGG), ``out_indices`` picking maps."""
    model = _model(name, features_only=True, out_indices=(0, 2, -1)).eval()
    x = _batch(name, 64)
    expected = model(x)
    got = torch.jit.script(model)(x)
    assert isinstance(got, list) and len(got) == len(expected) == 3
    for g, e in zip(got, expected, strict=True):
        _assert_same(g, e)


@pytest.mark.parametrize("name, side", [("unet", 188), ("unet_same", 64), ("unet_resnet18", 64)])
@torch.no_grad()
def test_scripted_segmentation_model_matches_eager(name, side):
    model = _model(name).eval()
    x = _batch(name, side)
    expected = model(x)
    with torch.jit.optimized_execution(False):
        _assert_same(torch.jit.script(model)(x), expected)


def test_scripted_stacked_hourglass_matches_eager_in_both_modes():
    """Eval mode: the last stack's logits; training mode: every stack's (intermediate supervision)."""
    model = _model("hourglass2").eval()
    x = _batch("hourglass2", 64)
    scripted = torch.jit.script(model)
    with torch.jit.optimized_execution(False):
        with torch.no_grad():
            _assert_same(scripted(x), model(x))
        expected, got = model.train()(x), scripted.train()(x)
    assert isinstance(expected, AuxOutput) and got.aux_weights == expected.aux_weights == [1.0]
    _assert_same(got.logits, expected.logits)
    _assert_same(got.aux_logits[0], expected.aux_logits[0])


@torch.no_grad()
def test_saved_scripted_model_loads_and_matches_eager(tmp_path):
    model = _model("wrn16_8").eval()
    x = _batch("wrn16_8")
    path = tmp_path / "wrn16_8.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = torch.jit.load(str(path))
    assert not loaded.training
    _assert_same(loaded(x), model(x))
