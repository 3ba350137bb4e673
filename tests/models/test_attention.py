"""Squeeze-and-excitation, non-local and global-context blocks in the ResNet spec, against the
papers' parameter counts, direct computations of their equations, and torchvision's ResNet-50."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import reslab
from reslab.cli import main as cli_main
from reslab.errors import ReslabError
from reslab.models.layers import NONLOCAL_MODES, GlobalContext, NonLocal, SqueezeExcitation
from reslab.models.weights import torchvision_to_reslab_key
from tests.models._helpers import meta_model, n_params, randomise

# Hu et al. 2018 (SENet), Table 2: parameters in millions.
SENET_TABLE2 = {"se_resnet50": 28.09, "se_resnet101": 49.33, "se_resnet152": 66.82}


@pytest.mark.parametrize("name,paper", SENET_TABLE2.items())
def test_se_resnet_params_match_senet_table2(name, paper):
    params = n_params(meta_model(name)) / 1e6
    assert round(params, 2) == paper, f"{name}: {params:.4f}M vs paper {paper}M"


def _se_params(c: int, r: int = 16) -> int:
    h = max(1, c // r)
    return c * h + h + h * c + c  # two FCs with biases


def _gc_params(c: int, r: int = 16) -> int:
    h = max(1, c // r)
    return (c + 1) + (c * h + h) + 2 * h + (h * c + c)  # W_k, W_v1, LayerNorm, W_v2


def _nl_params(c: int, mode: str) -> int:
    h = c // 2
    embeddings = 3 if mode != "gaussian" else 1  # theta, phi, g (gaussian: g only)
    return embeddings * c * h + h * c + 2 * c + (2 * h if mode == "concatenation" else 0)  # + W_z, BN, w_f


def _block_channels(model: nn.Module) -> list[list[int]]:
    return [[model.spec.stage_channels(i)[1]] * n for i, n in enumerate(model.spec.layers)]


@pytest.mark.parametrize("name,base", [("se_resnet50", "resnet50"), ("se_resnet56", "resnet56"), ("se_resnet20", "resnet20")])
def test_se_params_follow_block_formula(name, base):
    m = meta_model(name)
    chans = _block_channels(m)
    assert n_params(m) - n_params(meta_model(base)) == sum(_se_params(c) for stage in chans for c in stage)
    assert sum(isinstance(x, SqueezeExcitation) for x in m.modules()) == sum(m.spec.layers)


def test_gc_params_follow_block_formula_and_sit_in_c3_to_c5():
    m = meta_model("gc_resnet50")
    chans = _block_channels(m)
    expected = sum(_gc_params(c) for stage in chans[1:] for c in stage)  # c3-c5 only
    assert n_params(m) - n_params(meta_model("resnet50")) == expected
    assert [sum(isinstance(x, GlobalContext) for x in stage.modules()) for stage in m.stages] == [0, 4, 6, 3]
    block = m.stages[2][0]
    names = [n for n, _ in block.named_children()]
    assert names.index("bn3") < names.index("attn")  # after the last 1x1 (and its BN)


@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_nonlocal_params_follow_block_formula(mode):
    m = meta_model("nl_resnet50", nonlocal_mode=mode)
    assert n_params(m) - n_params(meta_model("resnet50")) == _nl_params(1024, mode)
    # One block, right before the last residual block of res4 (stage 2 has 6 blocks).
    where = [(i, j) for i, s in enumerate(m.stages) for j, b in enumerate(s) if b.nl is not None]
    assert where == [(2, 4)]


# -- inserted with their zero-init, NL and GC leave a network's function unchanged --------------

def _perturbed_output_differs(model: nn.Module, x: torch.Tensor, ref: torch.Tensor, params: list[torch.Tensor]) -> bool:
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.5 + 0.5)
        return (model(x) - ref).abs().max().item() > 1e-3


def test_nonlocal_inserted_into_resnet50_is_the_identity():
    torch.manual_seed(0)
    base = reslab.create_model("resnet50").eval()
    randomise(base)
    nl = reslab.create_model("nl_resnet50", nonlocal_mode="concatenation").eval()
    missing, unexpected = nl.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(".nl." in k for k in missing)  # shared names are identical
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = base(x)
        diff = (nl(x) - ref).abs().max().item()
    assert diff < 1e-5, f"max abs diff {diff}"
    block = nl.stages[2][4].nl
    assert _perturbed_output_differs(nl, x, ref, list(block.parameters()))  # the block is on the path


def test_global_context_inserted_into_torchvision_resnet50_is_the_identity():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    randomise(tv)
    gc = reslab.create_model("gc_resnet50").eval()  # stride in the 3x3, as torchvision
    state = {torchvision_to_reslab_key(k): v for k, v in tv.state_dict().items()}
    missing, unexpected = gc.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(".attn." in k for k in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = tv(x)
        diff = (gc(x) - ref).abs().max().item()
    assert diff < 1e-5, f"max abs diff {diff}"
    last_convs = [m.transform.conv2.weight for m in gc.modules() if isinstance(m, GlobalContext)]
    assert _perturbed_output_differs(gc, x, ref, last_convs)


@pytest.mark.parametrize("name,overrides", [
    ("se_resnet20", {}),
    ("se_resnet50", {}),
    ("preact_resnet18", {"attn": "se"}),
    ("resnet20", {"attn": "gc", "preact": True, "shortcut": "B"}),
])
def test_se_and_gc_blocks_are_identity_with_zero_init_last(name, overrides):
    torch.manual_seed(0)
    m = reslab.create_model(name, zero_init_last=True, **overrides).eval()
    checked = 0
    for stage in m.stages:
        for block in stage:
            assert block.attn is not None
            if isinstance(block.shortcut, nn.Identity):
                x = torch.relu(torch.randn(2, block.conv1.in_channels, 8, 8))
                with torch.no_grad():
                    assert torch.allclose(block(x), x)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name,stage,index", [("se_resnet20", 1, 0), ("se_resnet20", 2, 2), ("se_resnet50", 1, 1)])
def test_se_gate_scales_only_the_residual_branch(name, stage, index):
    """SENet Fig. 3: the gate rescales the branch before the addition, never the shortcut."""
    torch.manual_seed(0)
    m = reslab.create_model(name).eval()
    randomise(m)
    block = m.stages[stage][index]
    seen = {}
    block.attn.register_forward_hook(lambda _m, inp, out: seen.update(branch=inp[0].clone()))
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    with torch.no_grad():
        shortcut = block.shortcut(x)
        for scale in (0.0, 2.0):
            handle = block.attn.gate.register_forward_hook(lambda _m, _i, out, s=scale: torch.full_like(out, s))
            out = block(x)
            handle.remove()
            assert torch.allclose(out, torch.relu(scale * seen["branch"] + shortcut), atol=1e-6)
        gate = block.attn.gate(block.attn.fc2(block.attn.act(block.attn.fc1(block.attn.pool(seen["branch"])))))
        assert torch.allclose(block(x), torch.relu(gate * seen["branch"] + shortcut), atol=1e-6)
    assert not torch.allclose(gate, torch.ones_like(gate))  # the gate does something


# -- the blocks compute the papers' equations ----------------------------------------------------

def _conv(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,bchw->bohw", w[:, :, 0, 0], x)


def _nonlocal_reference(block: NonLocal, x: torch.Tensor, subsample: bool) -> torch.Tensor:
    """Wang et al. Eq. 1 and 6 pair by pair: z_i = BN(W_z y_i) + x_i, y_i = sum_j f(x_i, x_j) g(x_j) / C(x)."""
    pool = (lambda t: F.max_pool2d(t, 2, 2, ceil_mode=True)) if subsample else (lambda t: t)
    b, c, h, w = x.shape
    flat = lambda t: t.flatten(2).transpose(1, 2)  # (B, positions, channels)
    if block.mode == "gaussian":
        th, ph = flat(x), flat(pool(x))
    else:
        th, ph = flat(_conv(block.theta.weight, x)), flat(pool(_conv(block.phi.weight, x)))
    gg = flat(pool(_conv(block.g.weight, x)))
    n_j = ph.shape[1]
    if block.mode in ("gaussian", "embedded_gaussian"):
        f = torch.exp(torch.einsum("bic,bjc->bij", th, ph))
        f = f / f.sum(dim=-1, keepdim=True)
    elif block.mode == "dot_product":
        f = torch.einsum("bic,bjc->bij", th, ph) / n_j
    else:
        pairs = torch.cat([th[:, :, None, :].expand(-1, -1, n_j, -1), ph[:, None, :, :].expand(-1, th.shape[1], -1, -1)], dim=-1)
        f = torch.relu(torch.einsum("bijk,k->bij", pairs, block.w_f)) / n_j
    y = torch.einsum("bij,bjc->bic", f, gg).transpose(1, 2).reshape(b, -1, h, w)
    wy = _conv(block.w_z.weight, y)
    bn = block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return x + wy * scale[None, :, None, None] + (bn.bias - bn.running_mean * scale)[None, :, None, None]


@pytest.mark.parametrize("subsample", [True, False])
@pytest.mark.parametrize("mode", NONLOCAL_MODES)
def test_nonlocal_matches_the_paper_equation(mode, subsample):
    torch.manual_seed(0)
    block = NonLocal(8, mode=mode, subsample=subsample)
    with torch.no_grad():  # weights large enough that every pairwise function is far from uniform
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        block.bn.running_mean.uniform_(-0.2, 0.2)
        block.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    block = block.double().eval()
    with torch.no_grad():
        ours, ref = block(x), _nonlocal_reference(block, x, subsample)
    assert ours.shape == x.shape
    assert torch.allclose(ours, ref, atol=1e-10), (ours - ref).abs().max()
    assert not torch.allclose(ours, x)

    block.train()
    xg = x.clone().requires_grad_(True)
    block(xg).pow(2).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(xg.grad).all()


def test_nonlocal_starts_as_the_identity_in_train_mode_too():
    block = NonLocal(16, mode="embedded_gaussian").train()
    x = torch.randn(2, 16, 6, 6)
    assert torch.equal(block(x), x)


def test_global_context_matches_the_paper_equation():
    """Cao et al. Eq. 4: z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j softmax_j(W_k x_j) x_j))."""
    torch.manual_seed(0)
    block = GlobalContext(32, reduction=4).double()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    logits = torch.einsum("c,bchw->bhw", block.conv_mask.weight[0, :, 0, 0], x) + block.conv_mask.bias
    alpha = torch.softmax(logits.flatten(1), dim=1)  # softmax over all positions j
    context = torch.einsum("bj,bcj->bc", alpha, x.flatten(2))
    t = context @ block.transform.conv1.weight[:, :, 0, 0].T + block.transform.conv1.bias
    t = F.layer_norm(t, t.shape[1:], block.transform.norm.weight[:, 0, 0], block.transform.norm.bias[:, 0, 0])
    t = torch.relu(t) @ block.transform.conv2.weight[:, :, 0, 0].T + block.transform.conv2.bias
    ref = x + t[:, :, None, None]
    with torch.no_grad():
        assert torch.allclose(block(x), ref, atol=1e-10)


# -- in any spec, with features_only and `reslab info` --------------------------------------------

@pytest.mark.parametrize("name,overrides,size", [
    ("resnet20", {"attn": "gc", "nonlocal_after": ((1, -1),), "nonlocal_mode": "dot_product"}, 32),
    ("plain20", {"attn": "se", "nonlocal_after": ((2, 0),)}, 32),
    ("preact_resnet110", {"attn": "se", "attn_reduction": 4, "nonlocal_after": ((1, 2), (2, 5))}, 32),
    ("resnet18", {"attn": "gc", "attn_stages": (-1,), "nonlocal_after": ((2, 1),), "nonlocal_mode": "gaussian"}, 64),
    ("preact_resnet50", {"attn": "se", "nonlocal_after": ((1, 3),), "nonlocal_mode": "concatenation", "stride_in": "3x3"}, 64),
])
def test_attention_in_any_spec_runs_forward_and_backward(name, overrides, size):
    torch.manual_seed(0)
    m = reslab.create_model(name, **overrides).train()
    spec = m.spec
    n_attn = sum(isinstance(x, (SqueezeExcitation, GlobalContext)) for x in m.modules())
    assert n_attn == sum(n for i, n in enumerate(spec.layers) if spec.has_attn(i))
    assert sum(isinstance(x, NonLocal) for x in m.modules()) == len(spec.nonlocal_after)
    out = m(torch.randn(2, 3, size, size))
    assert out.shape == (2, m.num_classes) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("name", ["se_resnet20", "se_resnet50", "nl_resnet50", "gc_resnet50"])
def test_features_only_returns_advertised_maps(name):
    m = reslab.create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = m(x)
    assert len(maps) == len(m.feature_info) == len(m.spec.layers) + 1
    for fmap, info in zip(maps, m.feature_info):
        assert fmap.shape[1:] == (info.num_chs, 64 // info.reduction, 64 // info.reduction)


def test_multiply_adds_count_exactly_what_the_blocks_add():
    """SE-ResNet-50 against SENet Table 2 (3.87 GFLOPs), and every block's multiply-adds by hand."""
    size = (3, 224, 224)
    resnet50, se_resnet50 = reslab.create_model("resnet50"), reslab.create_model("se_resnet50")
    base = reslab.model_info(resnet50, size).macs
    se = reslab.model_info(se_resnet50, size)
    assert abs(se.macs / 1e9 - 3.87) / 3.87 < 0.03, se.macs
    assert sum(r.macs for r in se.rows) == se.macs
    se_fc = sum(2 * c * (c // 16) for stage in _block_channels(se_resnet50) for c in stage)
    assert se.macs - base == se_fc  # SE's FCs act on pooled 1x1 maps

    # Non-local and GC at 112x112 (cheaper; 7x7 res4 also exercises the ceil-mode sub-sampling).
    small = (3, 112, 112)
    hw, pooled = 7 * 7, 4 * 4
    c, h = 1024, 512
    nl = reslab.model_info(reslab.create_model("nl_resnet50"), small).macs
    base = reslab.model_info(resnet50, small).macs
    # theta, phi, g and W_z convs, then theta^T phi and f @ g over HW x HW' pairs.
    assert nl - base == 4 * c * h * hw + 2 * hw * pooled * h

    base15 = reslab.model_info(reslab.create_model("resnet50", stride_in="3x3"), small).macs
    gc = reslab.model_info(reslab.create_model("gc_resnet50"), small).macs
    # Per block: W_k and the attention pooling (C x HW each), and the transform's two FCs.
    expected = sum(n * (2 * ch * s + 2 * ch * (ch // 16))
                   for n, ch, s in [(4, 512, 14 * 14), (6, 1024, 7 * 7), (3, 2048, 4 * 4)])
    assert gc - base15 == expected


def test_reslab_info_cli_for_the_new_nets(capsys):
    assert cli_main(["info", "gc_resnet50", "--input-size", "64"]) == 0
    assert "gc_resnet50" in capsys.readouterr().out
    assert cli_main(["info", "resnet20", "--arch", "attn=se", "--arch", "nonlocal_after=[[2,-1]]"]) == 0
    out = capsys.readouterr().out
    m = reslab.create_model("resnet20", attn="se", nonlocal_after=((2, -1),))
    assert f"{n_params(m):,}" in out and m.spec.nonlocal_after == ((2, 2),)
    assert cli_main(["info", "resnet20", "--arch", "attn=cbam"]) == 2
    assert "attn must be" in capsys.readouterr().err


def test_defaults_leave_the_base_nets_unchanged():
    for name in ("resnet50", "resnet56", "preact_resnet18"):
        m = meta_model(name)
        assert not any(isinstance(x, (SqueezeExcitation, NonLocal, GlobalContext)) for x in m.modules())
        assert not any(".attn." in k or ".nl." in k for k in m.state_dict())


# -- bad option values -----------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("attn", "cbam"),
    ("attn_reduction", 0),
    ("attn_reduction", 2.5),
    ("attn_stages", (4,)),
    ("attn_stages", 1),
    ("nonlocal_after", ((2, 6),)),
    ("nonlocal_after", ((5, 0),)),
    ("nonlocal_after", ((2,),)),
    ("nonlocal_after", (2, 4)),
    ("nonlocal_mode", "softmax"),
    ("nonlocal_subsample", "yes"),
])
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ReslabError, match=f"^{field} "):
        reslab.create_model("resnet50", **{field: value})
