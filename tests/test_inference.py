"""Inference preparation: conv+BN folding over the whole classifier registry (exact in float64,
1e-5 of the logits' scale in float32), what is folded and what is kept, and optimize_for_inference."""

import pytest
import torch
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.inference import InferenceModel, fold_batchnorm, optimize_for_inference
from reslab.models import get_model_entry, list_models
from tests.models._helpers import randomise

CLASSIFIERS = [n for n in list_models() if get_model_entry(n).task == "classify"]
# the smallest sides of the ImageNet-size nets that do not take 32x32 (as in test_torchscript)
SMALLEST_SIDE = {"alexnet": 75, "alexnet_tv": 64, "zfnet": 48, "inception_v3": 75}


def _model_and_batch(name: str, dtype=torch.float32) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = randomise(reslab.create_model(name)).eval().to(dtype)
    c, h, _ = get_model_entry(name).input_size
    side = SMALLEST_SIDE.get(name, min(h, 32))
    return model, torch.randn(2, c, side, side, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("name", CLASSIFIERS)
@torch.no_grad()
def test_folding_keeps_the_logits_of_every_classifier(name):
    # Folding reorders float32 arithmetic and nothing else: 1e-5 of the logits' scale (the issue's
    # bound; measured 1e-7..1e-6 here). In place, so the 100M-parameter VGGs are not copied.
    model, x = _model_and_batch(name)
    expected = model(x)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    folded, report = fold_batchnorm(model, x, inplace=True)
    scale = expected.abs().max().item()
    assert scale > 0 and folded is model
    assert (folded(x) - expected).abs().max().item() <= 1e-5 * scale
    assert len(report.folded) + len(report.kept) == len(bns)
    left = [n for n, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(left) == sorted(report.kept)


@pytest.mark.parametrize("name", ["resnet110", "preact_resnet164", "se_resnet50", "densenet_bc_100_12", "inception_v3"])
@torch.no_grad()
def test_folding_is_exact_in_float64(name):
    # In float64 folding changes only rounding at 1e-16: a wrongly folded pair (a BN whose input
    # was not only the conv's output) would show far above the 1e-9 bound, whatever the net's depth.
    model, x = _model_and_batch(name, torch.float64)
    folded, _ = fold_batchnorm(model, x)
    expected = model(x)
    assert (folded(x) - expected).abs().max().item() <= 1e-9 * expected.abs().max().item()


@pytest.mark.parametrize("name, folded, kept", [
    ("resnet20", 19, 0),    # stem + 9 blocks x 2 convs; option A shortcuts have no conv
    ("resnet50", 53, 0),    # stem + 16 blocks x 3 + 4 projection shortcuts (option B)
    ("plain20", 19, 0),
    ("vgg11", 0, 0),        # no batch norm
    ("vgg11_bn", 8, 0),
    # pre-activation: each block's bn2 follows conv1 (54 folded); bn1 reads the previous block's
    # sum (the shortcut is added in place into conv2's output) and the final BN the last sum
    ("preact_resnet110", 54, 55),
    # DenseNet: each layer's bn2 follows conv1; bn1 reads a concatenation; transitions start with BN
    ("densenet121", 59, 62),
])
def test_what_is_folded_and_what_is_kept(name, folded, kept):
    model, x = _model_and_batch(name)
    _, report = fold_batchnorm(model, x)
    assert (len(report.folded), len(report.kept)) == (folded, kept)


@pytest.mark.parametrize("name", ["resnet56", "resnet50", "densenet121", "inception_v3"])
@torch.no_grad()
def test_folded_float32_logits_within_1e5_of_their_scale(name):
    model, x = _model_and_batch(name)
    prepared = optimize_for_inference(model, x, amp="fp32")
    expected = model(x)
    scale = expected.abs().max().item()
    torch.testing.assert_close(prepared(x), expected, rtol=0, atol=1e-5 * scale)


def test_optimize_for_inference_layouts_and_bf16_agree():
    model, x = _model_and_batch("resnet20")
    expected = model(x)
    for layout in (False, True):
        prepared = optimize_for_inference(model, x, channels_last=layout, amp="fp32")
        assert isinstance(prepared, InferenceModel) and prepared.channels_last == layout
        assert "19 batch norms folded (0 kept)" in prepared.describe()
        torch.testing.assert_close(prepared(x), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    auto = optimize_for_inference(model, x)
    # no example given: a random batch of 8 at the registry's input size (32x32 RGB for resnet20)
    default = optimize_for_inference(model, amp="fp32")
    assert default.folding.folded == auto.folding.folded and len(default.folding.folded) == 19
    torch.testing.assert_close(default(x), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    assert auto.channels_last in (True, False) and auto.precision.name in ("bf16", "fp32")
    bf16 = optimize_for_inference(model, x, amp="bf16")
    out = bf16(x)
    assert out.dtype == torch.float32 and bf16.precision.name == "bf16"
    # bf16 keeps 8 bits of mantissa: logits within a few percent of their scale, not 1e-5
    assert (out - expected).abs().max().item() <= 0.1 * expected.abs().max().item()
    assert not torch.is_inference_mode_enabled()
    assert [p.requires_grad for p in model.parameters()][0], "the original model was changed"


class _SneakyScale(nn.Module):
    """Scales the conv's output in place through ``.data``, which no torch function sees: the
    tracing folds the pair, and the logit check must refuse the result."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(0.5)

    def forward(self, x):
        y = self.conv(x)
        y.data.mul_(2)
        return self.bn(y).mean((2, 3))


def test_a_fold_that_changes_the_logits_is_refused():
    with pytest.raises(ReslabError, match="folding the batch norms changed the logits"):
        optimize_for_inference(_SneakyScale().eval(), torch.randn(2, 3, 8, 8))
    kept = optimize_for_inference(_SneakyScale().eval(), torch.randn(2, 3, 8, 8), fold=False, amp="fp32")
    assert kept.folding.folded == []
