import numpy as np
import pytest
import torch

from reslab import create_model
from reslab.analysis import autocorrelation, calibrate_bn, line_gradients, neighbour_correlation, white_noise_autocorrelation


def _net(name, x, seed=0, **kw):
    torch.manual_seed(seed)
    return calibrate_bn(create_model(name, num_classes=10, in_chans=1, **kw), x)


def test_autocorrelation_matches_numpy():
    g = torch.randn(50, generator=torch.Generator().manual_seed(3), dtype=torch.float64).cumsum(0)
    c = g.numpy() - g.numpy().mean()
    full = np.correlate(c, c, mode="full")[len(c) - 1:] / (c * c).sum()
    np.testing.assert_allclose(autocorrelation(g, 10).numpy(), full[:11], rtol=1e-12)
    assert abs(float(white_noise_autocorrelation(4096, 3)[1])) < 0.05


def test_line_gradient_is_the_derivative_along_the_line(images):
    x, _ = images
    model = _net("resnet20", x, layers=(1, 1, 1)).double()
    a, b = x[0].double(), x[1].double()
    g, grads = line_gradients(model, a, b, output=3, points=9, chunk=4)
    assert grads.shape == (9, a.numel())
    with torch.no_grad():
        f = lambda t: float(model((a + t * (b - a))[None])[0, 3])  # noqa: E731
        h = 1e-6
        for i in (0, 4, 8):
            t = i / 8
            assert g[i].item() == pytest.approx((f(t + h) - f(t - h)) / (2 * h), rel=1e-4, abs=1e-8)
    assert neighbour_correlation(grads[[0, 0]]) == pytest.approx(1.0)


def test_plain_nets_gradients_decorrelate_with_depth_faster_than_residual_nets(images):
    x, y = images
    corr, acf1 = {}, {}
    for name in ("plain20", "plain56", "resnet20", "resnet56"):
        model = _net(name, x)
        cs, rs = [], []
        for i in range(2):
            g, grads = line_gradients(model, x[2 * i], x[2 * i + 1], int(y[2 * i]), points=64)
            cs.append(neighbour_correlation(grads))
            rs.append(float(autocorrelation(g, 1)[1]))
        corr[name], acf1[name] = sum(cs) / 2, sum(rs) / 2
    plain_drop = corr["plain20"] - corr["plain56"]
    res_drop = corr["resnet20"] - corr["resnet56"]
    assert plain_drop > res_drop + 0.2, corr
    assert acf1["resnet56"] > acf1["plain56"] + 0.2, acf1
    assert corr["resnet56"] > 0.5 and abs(corr["plain56"]) < 0.2, corr
