"""Learning-rate schedules at exact points, against their definitions."""

import math

import pytest

from reslab.config import make_config
from reslab.train.schedule import LRSchedule


def _sched(total=1000, steps_per_epoch=100, **kw):
    cfg = make_config(model="resnet20", **kw)
    return LRSchedule(cfg, steps_per_epoch, total, cfg.lr)


def test_onecycle_start_peak_and_end():
    s = _sched(schedule="onecycle", lr=0.2)
    assert s.lr(0) == pytest.approx(0.2 / 25)            # starts at lr/25
    assert s.lr(250) == pytest.approx(0.2)               # peaks at 25% of the run
    assert s.lr(125) == pytest.approx(0.2 / 25 + (0.2 - 0.2 / 25) * 0.5)  # half-way up a cosine
    assert s.lr(1000) == pytest.approx(0.2 / 1e4)        # ends at lr/1e4
    ups = [s.lr(i) for i in range(0, 251, 10)]
    downs = [s.lr(i) for i in range(250, 1001, 10)]
    assert ups == sorted(ups) and downs == sorted(downs, reverse=True)


def test_cosine_midpoint_and_ends():
    s = _sched(schedule="cosine", lr=0.1)
    assert s.lr(0) == pytest.approx(0.1)
    assert s.lr(500) == pytest.approx(0.05)
    assert s.lr(250) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s.lr(1000) == pytest.approx(0.0, abs=1e-12)


def test_step_milestones_in_iterations_and_in_epochs():
    it = _sched(total=64000, steps_per_epoch=351, schedule="step", lr=0.1, milestones=[32000, 48000], milestone_unit="iter")
    assert [it.lr(i) for i in (31999, 32000, 47999, 48000)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    ep = _sched(total=1000, steps_per_epoch=100, schedule="step", lr=0.1, milestones=[3], milestone_unit="epoch", gamma=0.5)
    assert [ep.lr(i) for i in (299, 300)] == pytest.approx([0.1, 0.05])


def test_constant_and_plateau():
    assert {_sched(schedule="constant", lr=0.3).lr(i) for i in (0, 500, 1000)} == {0.3}
    s = _sched(schedule="plateau", lr=0.1, plateau_patience=1, gamma=0.1)
    for err in (50.0, 50.0):  # one epoch without improvement: within patience
        s.observe_val_error(err)
    assert s.lr(0) == pytest.approx(0.1)
    s.observe_val_error(50.0)  # the second: divide
    assert s.lr(0) == pytest.approx(0.01)


def test_warmup_ends_at_the_error_threshold_or_the_cap_and_survives_resume():
    cfg = make_config(recipe="paper_cifar10", model="resnet110")
    s = LRSchedule(cfg, 351, 64000, cfg.lr, model_depth=110)
    assert s.lr(0) == pytest.approx(0.01)
    s.observe_train_error(399, 85.0)
    assert s.lr(399) == pytest.approx(0.01)
    resumed = LRSchedule(cfg, 351, 64000, cfg.lr, model_depth=110)
    resumed.load_state_dict(s.state_dict())
    resumed.observe_train_error(400, 85.0)  # the 400-iteration cap, error still above 80%
    assert resumed.lr(400) == pytest.approx(0.1)
