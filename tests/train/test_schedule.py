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


# -- the warm-up rule, case by case ----------------------------------------------------------------------
def _warm(depth=110, **kw):
    cfg = make_config(model="resnet110", lr=0.1, schedule="constant", **{"warmup_lr": 0.01, **kw})
    return LRSchedule(cfg, 100, 10000, cfg.lr, model_depth=depth)


def test_warmup_without_a_cap_ends_only_when_the_error_is_strictly_below_the_threshold():
    s = _warm(warmup_until_err=80.0, warmup_iters=0)
    for step, err in ((1, 95.0), (500, 90.0), (5000, 80.0)):  # no cap: any number of steps; 80% is not below 80%
        s.observe_train_error(step, err)
        assert s.lr(step) == 0.01, (step, err)
    s.observe_train_error(5001, 79.9)
    assert s.lr(5001) == 0.1 and s.state_dict()["warmup"] is False
    s.observe_train_error(5002, 99.0)  # over: a later high error does not restart it
    assert s.lr(5002) == 0.1


def test_warmup_with_only_a_cap_ends_at_the_cap_whatever_the_error():
    s = _warm(warmup_iters=50)
    s.observe_train_error(49, 0.0)  # no threshold: a low error does not end it
    assert s.lr(49) == 0.01
    s.observe_train_error(50, 99.0)
    assert s.lr(50) == 0.1


def test_warmup_applies_only_to_models_deep_enough_and_needs_an_end_rule():
    assert _warm(depth=110, warmup_min_depth=110, warmup_iters=10).lr(0) == 0.01
    assert _warm(depth=164, warmup_min_depth=110, warmup_iters=10).lr(0) == 0.01
    assert _warm(depth=56, warmup_min_depth=110, warmup_iters=10).lr(0) == 0.1
    assert _warm(depth=None, warmup_min_depth=110, warmup_iters=10).lr(0) == 0.1  # a model without a depth
    assert _warm(depth=None, warmup_iters=10).lr(0) == 0.01  # no depth bound: every model
    assert _warm(warmup_iters=0, warmup_until_err=None).lr(0) == 0.1  # nothing would end it: off
    assert _warm(warmup_lr=None, warmup_iters=10).lr(0) == 0.1


def test_observing_errors_does_nothing_outside_the_rules_they_drive():
    s = _sched(schedule="cosine", lr=0.1)
    before = s.state_dict()
    s.observe_train_error(10, 5.0)
    s.observe_val_error(5.0)
    s.observe_val_error(50.0)
    assert s.state_dict() == before and s.lr(0) == 0.1


# -- plateau ------------------------------------------------------------------------------------------------------
def test_plateau_counts_only_real_improvements_and_divides_repeatedly():
    s = _sched(schedule="plateau", lr=0.1, plateau_patience=2, gamma=0.5)
    s.observe_val_error(40.0)
    s.observe_val_error(40.0 - 0.5e-4)  # within 1e-4 of the best: no improvement (1 bad epoch)
    s.observe_val_error(39.0)  # an improvement resets the count
    assert s.state_dict()["plateau_best"] == 39.0 and s.state_dict()["plateau_bad"] == 0
    for _ in range(2):
        s.observe_val_error(39.5)
    assert s.lr(0) == 0.1  # two bad epochs: within patience 2
    s.observe_val_error(39.5)  # the third: halve, and count again from zero
    assert s.lr(0) == pytest.approx(0.05) and s.state_dict()["plateau_bad"] == 0
    for _ in range(3):
        s.observe_val_error(39.5)
    assert s.lr(0) == pytest.approx(0.025)
    s.observe_val_error(39.0 - 2e-4)  # better by more than 1e-4
    assert s.state_dict()["plateau_best"] == pytest.approx(39.0 - 2e-4)


def test_plateau_with_zero_patience_divides_at_the_first_bad_epoch_and_survives_resume():
    s = _sched(schedule="plateau", lr=0.2, plateau_patience=0, gamma=0.1)
    s.observe_val_error(10.0)
    s.observe_val_error(10.0)
    assert s.lr(0) == pytest.approx(0.02)
    resumed = _sched(schedule="plateau", lr=0.2, plateau_patience=0, gamma=0.1)
    resumed.load_state_dict(s.state_dict())
    assert resumed.lr(0) == pytest.approx(0.02)
    resumed.observe_val_error(10.0)
    assert resumed.lr(0) == pytest.approx(0.002)


def test_state_dict_is_a_copy():
    s = _sched(schedule="plateau", lr=0.1)
    st = s.state_dict()
    st["plateau_scale"] = 0.5
    assert s.lr(0) == 0.1


# -- lengths and units ---------------------------------------------------------------------------------------------
def test_schedules_clamp_past_the_end_and_guard_zero_lengths():
    s = _sched(schedule="onecycle", lr=0.2, total=100)
    assert s.lr(150) == pytest.approx(0.2 / 1e4)  # past the end: stays at the end value
    c = _sched(schedule="cosine", lr=0.1, total=100)
    assert c.lr(300) == pytest.approx(0.0, abs=1e-12)
    zero = _sched(schedule="cosine", lr=0.1, total=0, steps_per_epoch=0)  # both at least 1
    assert zero.total_steps == 1 and zero.steps_per_epoch == 1
    assert zero.lr(0) == pytest.approx(0.1) and zero.lr(1) == pytest.approx(0.0, abs=1e-12)
    ep = _sched(schedule="step", lr=0.1, total=1000, steps_per_epoch=0, milestones=[3], milestone_unit="epoch")
    assert ep.milestones == [3] and ep.lr(2) == pytest.approx(0.1) and ep.lr(3) == pytest.approx(0.01)


def test_step_milestones_are_sorted_and_each_divides_once():
    s = _sched(schedule="step", lr=1.0, milestones=[30, 10, 20], milestone_unit="iter", gamma=0.5)
    assert s.milestones == [10, 20, 30]
    assert [s.lr(i) for i in (9, 10, 19, 20, 29, 30, 10**6)] == pytest.approx([1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125])


def test_onecycle_quarter_point_and_descent_midpoint():
    s = _sched(schedule="onecycle", lr=1.0, total=400)
    assert s.lr(99) < s.lr(100) == pytest.approx(1.0) and s.lr(101) < 1.0
    # half-way down (t = 0.25 + 0.75 / 2): the mean of the peak and the floor
    assert s.lr(250) == pytest.approx((1.0 + 1e-4) / 2)


def test_a_one_iteration_warmup_cap_is_a_cap():
    s = _warm(warmup_iters=1)
    assert s.lr(0) == 0.01
    s.observe_train_error(1, 99.0)
    assert s.lr(1) == 0.1
