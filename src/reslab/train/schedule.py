"""Learning-rate schedules as functions of the iteration, plus the two stateful rules the paper
uses: the ImageNet "divide by 10 on plateau" and the ResNet-110 warm-up until the training error
drops below 80%."""

from __future__ import annotations

import math
from typing import Any

from ..config import RunConfig

__all__ = ["LRSchedule"]


class LRSchedule:
    """``lr(step)`` for the configured schedule; ``state_dict`` keeps the stateful parts for resume."""

    def __init__(self, cfg: RunConfig, steps_per_epoch: int, total_steps: int, base_lr: float,
                 model_depth: int | None = None) -> None:
        """``model_depth``: the model's depth in layers (e.g. ``ResNetSpec.depth``), which
        ``cfg.warmup_min_depth`` compares against; None for models without one."""
        self.cfg = cfg
        self.base_lr = base_lr
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, total_steps)
        unit = 1 if cfg.milestone_unit == "iter" else self.steps_per_epoch
        self.milestones = sorted(int(m) * unit for m in cfg.milestones)
        deep_enough = cfg.warmup_min_depth is None or (model_depth is not None and model_depth >= cfg.warmup_min_depth)
        warm = cfg.warmup_lr is not None and deep_enough
        warm = warm and (cfg.warmup_iters > 0 or cfg.warmup_until_err is not None)
        self.state: dict[str, Any] = {"warmup": bool(warm), "plateau_scale": 1.0, "plateau_best": None, "plateau_bad": 0}

    # -- deterministic part ----------------------------------------------------------------------
    def _scheduled(self, step: int) -> float:
        lr, kind, t = self.base_lr, self.cfg.schedule, min(step / self.total_steps, 1.0)
        if kind == "step":
            return lr * self.cfg.gamma ** sum(step >= m for m in self.milestones)
        if kind == "cosine":
            return lr * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "onecycle":  # cosine up from lr/25 over the first 25%, cosine down to lr/1e4
            up = 0.25
            if t < up:
                return lr / 25 + (lr - lr / 25) * 0.5 * (1 - math.cos(math.pi * t / up))
            return lr / 1e4 + (lr - lr / 1e4) * 0.5 * (1 + math.cos(math.pi * (t - up) / (1 - up)))
        if kind == "plateau":
            return lr * self.state["plateau_scale"]
        return lr

    def lr(self, step: int) -> float:
        if self.state["warmup"]:
            # on only with a warmup_lr: set so in __init__, and a resume cannot change warmup_lr
            assert self.cfg.warmup_lr is not None
            return float(self.cfg.warmup_lr)
        return self._scheduled(step)

    # -- stateful rules --------------------------------------------------------------------------
    def observe_train_error(self, step: int, err: float) -> None:
        """End the warm-up once the training error is below the threshold (or the cap is hit)."""
        if not self.state["warmup"]:
            return
        cap = self.cfg.warmup_iters if self.cfg.warmup_iters > 0 else None
        below = self.cfg.warmup_until_err is not None and err < self.cfg.warmup_until_err
        if below or (cap is not None and step >= cap):
            self.state["warmup"] = False

    def observe_val_error(self, err: float) -> None:
        """The plateau rule: divide by 1/gamma after ``plateau_patience`` epochs without improvement."""
        if self.cfg.schedule != "plateau":
            return
        best = self.state["plateau_best"]
        if best is None or err < best - 1e-4:
            self.state["plateau_best"], self.state["plateau_bad"] = err, 0
            return
        self.state["plateau_bad"] += 1
        if self.state["plateau_bad"] > self.cfg.plateau_patience:
            self.state["plateau_scale"] *= self.cfg.gamma
            self.state["plateau_bad"] = 0

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state.update(state)
