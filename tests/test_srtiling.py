"""Tiled super-resolution equals whole-image inference: narrow EDSR, SRResNet and VDSR nets on images
several tiles wide (and on sides shorter than a tile), with the overlap at the computed receptive-
field radius; one pixel less overlap is not exact. The plan covers every pixel once."""

from __future__ import annotations

import pytest
import torch

import reslab
from reslab.data.sr import upscale
from reslab.errors import ReslabError
from reslab.srtiling import predict_sr_tiled, sr_axis_plan
from reslab.superres import bicubic, sr_radius, super_resolve


@pytest.mark.parametrize("size, tile, overlap", [(10, 16, 3), (16, 16, 3), (17, 16, 3), (100, 16, 3), (53, 20, 9),
                                                 (7, 3, 1)])
def test_the_plan_keeps_every_pixel_once_inside_the_image(size, tile, overlap):
    plan = sr_axis_plan(size, tile, overlap)
    covered = [p for _, _, a, b in plan for p in range(a, b)]
    assert covered == list(range(size))
    for start, stop, a, b in plan:
        assert 0 <= start <= a < b <= stop <= size and stop - start == min(tile, size)
        assert a == 0 or a - start >= overlap  # an inner edge keeps its overlap band out
        assert b == size or stop - b >= overlap


def test_a_tile_that_keeps_nothing_is_refused():
    with pytest.raises(ReslabError, match="keeps no pixel; use a tile larger than 20 pixels"):
        sr_axis_plan(50, 20, 10)


def _whole(model, lr, scale):
    with torch.no_grad():
        x = lr[None]
        return model(upscale(x, scale) if model.upscaled_input else x)[0]


def _he(model: torch.nn.Module) -> torch.nn.Module:
    """He-normal convolutions (a signal that neither fades nor explodes over a few layers), so the
    farthest pixel of the receptive field moves the output well above float rounding."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
    return model.eval()


@pytest.mark.parametrize("name, overrides, scale", [
    ("edsr_baseline_x2", {"blocks": 2, "width": 4}, 2),
    ("edsr_baseline_x3", {"blocks": 1, "width": 4}, 3),
    ("srresnet_x4", {"blocks": 0, "width": 4}, 4),
    ("vdsr", {"depth": 5, "width": 4}, 3),
])
def test_tiled_equals_whole_image_inference(name, overrides, scale):
    torch.manual_seed(0)
    model = _he(reslab.create_model(name, **overrides))
    radius = sr_radius(model, scale)
    tile = 2 * radius + 6
    lr = torch.rand(3, tile - 3, 3 * tile + 5)  # one tile high (shorter than a tile), several wide
    whole = _whole(model, lr, scale)
    tiled = predict_sr_tiled(lambda x: model(upscale(x, scale) if model.upscaled_input else x), lr, scale=scale,
                             overlap=radius, tile=tile, out_dtype=torch.float32)
    assert tiled.shape == whole.shape == (3, scale * lr.shape[1], scale * lr.shape[2])
    assert whole.std() > 1e-3
    bound = 1e-5 * max(1.0, float(whole.abs().max()))  # float reordering between tile and whole-image convolutions
    assert float((tiled - whole).abs().max()) <= bound
    # one pixel less overlap is not exact: the radius is not padded
    short = predict_sr_tiled(lambda x: model(upscale(x, scale) if model.upscaled_input else x), lr, scale=scale,
                             overlap=radius - 1, tile=tile, out_dtype=torch.float32)
    assert float((short - whole).abs().max()) > 100 * bound
    if name != "edsr_baseline_x2":
        return
    # two dimensions tiled, and a batch of tiles at a time
    lr2 = torch.rand(3, 2 * tile + 1, 2 * tile + 3)
    tiled2 = predict_sr_tiled(lambda x: model(upscale(x, scale) if model.upscaled_input else x), lr2, scale=scale,
                              overlap=radius, tile=tile, batch_size=3, out_dtype=torch.float32)
    assert float((tiled2 - _whole(model, lr2, scale)).abs().max()) <= bound


def test_super_resolve_rounds_to_uint8_and_restores_the_mode():
    torch.manual_seed(0)
    model = reslab.create_model("edsr_baseline_x2", blocks=1, width=8).train()
    lr = (torch.rand(3, 30, 90) * 255).round().byte()
    out = super_resolve(model, lr, 2, tile=24)
    assert out.dtype == torch.uint8 and out.shape == (3, 60, 180) and model.training
    expected = _whole(model.eval(), lr.float() / 255, 2).clamp(0, 1).mul(255).round()
    assert float((out.float() - expected).abs().max()) <= 1  # a value on a rounding boundary may flip


def test_bicubic_baseline_is_the_rounded_upscale():
    lr = (torch.rand(3, 9, 7) * 255).round().byte()
    out = bicubic(lr, 3)
    assert out.dtype == torch.uint8 and out.shape == (3, 27, 21)
    assert torch.equal(out, upscale(lr[None].float() / 255, 3)[0].clamp(0, 1).mul(255).round().byte())
