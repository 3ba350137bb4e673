"""Shattered gradients (Balduzzi et al. 2017, "The shattered gradients problem", Figs. 1-3).

Inputs move along a straight line between two real images, ``x(t) = a + t (b - a)`` for ``points``
values of ``t`` in [0, 1]. At each point the gradient of one output (the logit of ``a``'s class)
with respect to the input is computed; its component along the line, ``g(t) = df/dt``, is a 1-D
signal like Balduzzi's Fig. 1. A smooth net gives a smooth ``g`` whose autocorrelation decays
slowly with the lag (brown noise); a shattered one gives ``g`` like white noise, correlated with
nothing but itself (autocorrelation 0 at every lag > 0). Fig. 3's measure is also reported: the
correlation between the full gradient vectors at neighbouring points.

Batch norm runs with fixed statistics (evaluation mode), so each point's gradient is its own: a
trained net's running statistics, or those of a batch of real images for a net at initialisation
(:func:`calibrate_bn`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReslabError

__all__ = ["calibrate_bn", "line_gradients", "autocorrelation", "neighbour_correlation", "white_noise_autocorrelation"]


@torch.no_grad()
def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of the batch ``x`` (one forward pass with a
    cumulative average); returns the model in evaluation mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    try:
        model(x)
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
    return model.eval()


def line_gradients(model: nn.Module, a: torch.Tensor, b: torch.Tensor, output: int, *, points: int = 256,
                   chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of logit ``output`` along the line from image ``a`` to image ``b``.

    Args:
        model: a classifier; it runs in its current mode (use evaluation mode: see the module doc).
        a, b: two normalised images (C, H, W).
        output: the logit differentiated.
        points: points on the line, ``t = 0, 1/(points-1), ..., 1``.
        chunk: points per forward/backward pass.

    Returns:
        ``(g, grads)``: ``g`` (points,) the derivative along the line ``<grad f(x(t)), b - a>``, and
        ``grads`` (points, C*H*W) the gradient vectors, in float64.
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ReslabError(f"a and b must be two images of one shape (C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}")
    if points < 4:
        raise ReslabError(f"points must be at least 4, got {points}")
    t = torch.linspace(0, 1, points, dtype=a.dtype, device=a.device)
    d = b - a
    out = []
    with torch.enable_grad():
        for s in range(0, points, chunk):
            x = (a + t[s:s + chunk, None, None, None] * d).requires_grad_(True)
            logits = model(x)
            # each point's logit depends on its own input only (fixed BN statistics), so the gradient
            # of the sum is every point's own gradient
            (grad,) = torch.autograd.grad(logits[:, output].sum(), x)
            out.append(grad.detach().flatten(1).double())
    grads = torch.cat(out)
    return grads @ d.flatten().double(), grads


def autocorrelation(g: torch.Tensor, max_lag: int | None = None) -> torch.Tensor:
    """The normalised autocorrelation ``r(k) = sum_t (g_t - m)(g_{t+k} - m) / sum_t (g_t - m)^2`` of a
    1-D signal for lags ``k = 0 .. max_lag`` (default: half its length); ``r(0) = 1``."""
    g = g.double() - g.double().mean()
    n = len(g)
    max_lag = n // 2 if max_lag is None else max_lag
    denom = float((g * g).sum())
    if denom == 0.0:
        return torch.full((max_lag + 1,), float("nan"), dtype=torch.float64)
    return torch.stack([(g[:n - k] * g[k:]).sum() / denom for k in range(max_lag + 1)])


def white_noise_autocorrelation(n: int, max_lag: int | None = None, *, seed: int = 0) -> torch.Tensor:
    """The autocorrelation of ``n`` samples of Gaussian white noise: the shattered limit."""
    gen = torch.Generator().manual_seed(seed)
    return autocorrelation(torch.randn(n, generator=gen, dtype=torch.float64), max_lag)


def neighbour_correlation(grads: torch.Tensor) -> float:
    """The mean Pearson correlation between the gradient vectors of neighbouring points (Fig. 3's
    "correlation between gradients" of nearby inputs); 1 for a smooth net, 0 for white noise."""
    g = grads.double() - grads.double().mean(1, keepdim=True)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return float((g[:-1] * g[1:]).sum(1).mean())
