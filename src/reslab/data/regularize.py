"""The regularisers of timm and torchvision's reference scripts, from torchvision.transforms.v2.

RandAugment / TrivialAugment (per image, on uint8), random erasing (per image, after
normalisation) and mixup / CutMix (per batch, labels become mixed one-hot probabilities) are the
v2 classes themselves; this module only decides which random stream each one draws from. v2
transforms draw from torch's global CPU generator, so each call runs inside
``torch.random.fork_rng`` with that generator seeded from the batch's (seed, epoch, batch) stream
or the image's own ``random.Random``: every training batch stays a pure function of
(seed, epoch, batch), which is what exact resume and multi-process agreement rest on, and the
global RNG of the training process is left as it was.

A v2 transform given a batch draws ONE set of parameters for the whole batch; RandAugment,
TrivialAugment and random erasing are per image in timm and torchvision's references, so they
are applied here image by image, each with its own seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = ["policy_transform", "per_image", "image_seeds", "PolicyAugment", "BatchRegularizer"]

_SEED_MAX = 2**62


def policy_transform(name: str, color_jitter: float = 0.0) -> v2.Transform | None:
    """The per-image policy named by ``auto_augment`` (torchvision's defaults), then
    ``v2.ColorJitter(color_jitter, color_jitter, color_jitter)`` (brightness, contrast and
    saturation, timm's reading of one strength) when ``color_jitter > 0``; None when neither."""
    policies = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}
    if name != "none" and name not in policies:
        raise ValueError(f"unknown auto_augment policy {name!r}")
    steps: list[v2.Transform] = [policies[name]()] if name in policies else []
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else v2.Compose(steps)


def _seeded(transform: Callable[..., Any], seed: int, *inputs: Any) -> Any:
    """``transform(*inputs)`` with torch's CPU generator seeded by ``seed``; the global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return transform(*inputs)


def image_seeds(stream_seed: int, global_n: int, offset: int, n: int) -> list[int]:
    """One seed per image of a global batch of ``global_n`` (a pure function of ``stream_seed``);
    the ``n`` of them from ``offset`` on are this rank's."""
    gen = torch.Generator().manual_seed(stream_seed)
    return torch.randint(_SEED_MAX, (global_n,), generator=gen)[offset:offset + n].tolist()


def per_image(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
              seeds: Sequence[int]) -> torch.Tensor:
    """``transform`` applied to each image (C, H, W) of ``images`` on its own, image i with torch's
    generator seeded by ``seeds[i]``."""
    if len(images) == 0:
        return images
    out = []
    with torch.random.fork_rng(devices=[]):
        for img, s in zip(images, seeds):
            torch.default_generator.manual_seed(s)
            out.append(transform(img))
    return torch.stack(out)


class PolicyAugment:
    """A streamed loader's per-image transform followed by the RandAugment / TrivialAugment policy
    (timm's order: crop and flip, then the policy), seeded from the image's ``random.Random``."""

    def __init__(self, base: Callable[..., torch.Tensor], policy: str, color_jitter: float = 0.0) -> None:
        self.base, self.policy = base, policy_transform(policy, color_jitter)

    def __call__(self, image: Any, rng: random.Random | None) -> torch.Tensor:
        out = self.base(image, rng)
        if rng is None or self.policy is None:
            return out
        return _seeded(self.policy, rng.getrandbits(62), out)


class BatchRegularizer:
    """Random erasing (per image) and mixup / CutMix (per batch) on normalised training batches.

    With both ``mixup`` and ``cutmix`` set, each batch gets one of the two, chosen with equal
    probability (``v2.RandomChoice``, as timm's switch). Mixed batches come with (N, num_classes)
    probability labels (``v2.MixUp`` / ``v2.CutMix``: one-hot labels mixed with the same weight as
    the images, each image paired with the one before it in the batch).
    """

    def __init__(self, num_classes: int, *, mixup: float = 0.0, cutmix: float = 0.0,
                 random_erasing: float = 0.0) -> None:
        self.erase = v2.RandomErasing(p=random_erasing) if random_erasing > 0 else None
        mixers = ([v2.MixUp(alpha=mixup, num_classes=num_classes)] if mixup > 0 else []) + \
                 ([v2.CutMix(alpha=cutmix, num_classes=num_classes)] if cutmix > 0 else [])
        self.mix: v2.Transform | None = (v2.RandomChoice(mixers) if len(mixers) > 1 else mixers[0]) if mixers else None

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int) -> BatchRegularizer | None:
        """The regularizer a RunConfig asks for, or None when every one is off."""
        if not (cfg.mixup > 0 or cfg.cutmix > 0 or cfg.random_erasing > 0):
            return None
        return cls(num_classes, mixup=cfg.mixup, cutmix=cfg.cutmix, random_erasing=cfg.random_erasing)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, stream_seed: int, offset: int = 0,
                 global_n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows ``x``, ``y`` (from ``offset`` in a global batch of ``global_n``), regularised
        from the batch's ``stream_seed``. Mixing pairs images within the rows given."""
        if self.erase is not None:
            x = per_image(self.erase, x, image_seeds(stream_seed, global_n or len(x), offset, len(x)))
        if self.mix is not None and len(x) > 0:
            x, y = _seeded(self.mix, stream_seed ^ 0x5DEECE66D, x, y)
        return x, y
