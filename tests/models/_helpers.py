"""Helpers shared by the model tests."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from unittest import mock

import torch
from torch import nn

import reslab


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_INIT_FUNCTIONS = ("uniform_", "normal_", "constant_", "ones_", "zeros_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "trunc_normal_")


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    # On the meta device torch.nn.init's fills run through Python reference kernels and have
    # nothing to fill: skipping them builds ResNet-200 3x and DenseNet-264 7x faster.
    with mock.patch.multiple(torch.nn.init, **{f: (lambda tensor, *args, **kwargs: tensor) for f in _INIT_FUNCTIONS}):
        yield


def meta_model(name: str, **overrides) -> nn.Module:
    """A reslab model without storage: structure, parameter counts and shapes at little cost."""
    with torch.device("meta"), _no_init():
        return reslab.create_model(name, **overrides).eval()


def unfilled_model(name: str, **overrides) -> nn.Module:
    """A reslab model on the CPU with uninitialised storage, for a load that overwrites every tensor:
    building on the meta device skips the weight initialisation (seconds for VGG)."""
    return meta_model(name, **overrides).to_empty(device="cpu")


@torch.no_grad()
def randomise(model: nn.Module, seed: int = 0, *, weights: bool = False) -> nn.Module:
    """Random BN running statistics and affine parameters and random biases, so a weight mapping
    that confused two layers would show in the outputs (defaults 0/1 would hide it).

    With ``weights``, convolution and linear weights too, at a ReLU-preserving scale (He et al.
    2015), with BN near the identity: for nets whose signal would otherwise fade (GoogLeNet built
    without torchvision's initialisation).
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if weights:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / m.weight[0].numel()))
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            low = 0.75 if weights else 0.25
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + (0.75 if weights else 0.5))
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + low)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.num_batches_tracked.fill_(7)
    return model


def load_from_torchvision(ours: nn.Module, tv: nn.Module, *, seed: int = 0, weights: bool = False) -> None:
    """Randomise ``tv`` (see :func:`randomise`) and load its state dict into ``ours`` with reslab's
    converter; both must have the same number of parameters."""
    randomise(tv, seed, weights=weights)
    assert n_params(ours) == n_params(tv)
    reslab.load_torchvision_state_dict(ours, tv.state_dict())


def assert_same_output(got: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` (absolute), on a signal large enough for the tolerance to mean something."""
    assert got.shape == expected.shape
    assert expected.std() > 1e-3, f"vanishing signal: std {expected.std().item():.2e}"
    diff = (got - expected).abs().max().item()
    assert diff < tol, f"max abs diff {diff}"


def assert_matches_torchvision(ours: nn.Module, tv: nn.Module, input_size: tuple[int, int, int], *,
                               batch: int = 2, seed: int = 0, weights: bool = False) -> None:
    """Load randomised ``tv`` into ``ours`` (:func:`load_from_torchvision`) and compare their eval
    outputs on one random batch of ``input_size`` (C, H, W) to 1e-5."""
    load_from_torchvision(ours, tv, seed=seed, weights=weights)
    ours.eval(), tv.eval()
    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        assert_same_output(ours(x), tv(x))


def assert_feature_maps(name: str, size: int, expected: list[tuple[int, int, int]]) -> None:
    """``features_only`` maps of ``name`` on a ``size`` x ``size`` input: ``(channels, reduction,
    side)`` each, as ``feature_info`` says; ``out_indices=(-1,)`` picks the last one."""
    m = reslab.create_model(name, features_only=True).eval()
    assert [(f.num_chs, f.reduction) for f in m.feature_info] == [(c, r) for c, r, _ in expected]
    c = m.in_chans
    with torch.no_grad():
        maps = m(torch.randn(1, c, size, size))
    assert [tuple(f.shape[1:]) for f in maps] == [(c, s, s) for c, _, s in expected]
    last = reslab.create_model(name, features_only=True, out_indices=(-1,)).eval()
    with torch.no_grad():
        assert last(torch.randn(1, c, size, size))[0].shape == maps[-1].shape
