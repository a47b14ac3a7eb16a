"""Automatic step selection: the most steps whose measured cost fits the budget."""
from __future__ import annotations

import pytest

from diffpose_ros.latency_budget import CostTracker, choose_steps


@pytest.mark.parametrize('budget, fixed, per_step, max_steps, expected', [
    (100.0, 40.0, 10.0, 8, 6),      # 40 + 6 * 10 = 100 fits exactly
    (99.9, 40.0, 10.0, 8, 5),
    (1000.0, 40.0, 10.0, 8, 8),     # capped
    (55.0, 40.0, 10.0, 8, 1),
])
def test_most_steps_that_fit(budget, fixed, per_step, max_steps, expected):
    choice = choose_steps(budget, fixed, per_step, max_steps)
    assert choice.steps == expected and choice.fits and choice.note == ''


def test_one_step_when_nothing_fits_and_says_so():
    choice = choose_steps(30.0, 40.0, 10.0, 8)
    assert choice.steps == 1 and not choice.fits
    assert '30 ms' in choice.note and '50 ms' in choice.note


def test_invalid_arguments():
    with pytest.raises(ValueError):
        choose_steps(0.0, 1.0, 1.0, 4)
    with pytest.raises(ValueError):
        choose_steps(10.0, 1.0, 1.0, 0)
    with pytest.raises(ValueError):
        CostTracker(smoothing=0.0)


def test_cost_tracker_separates_fixed_and_per_step_cost():
    tracker = CostTracker(smoothing=1.0)
    assert not tracker.ready
    tracker.update({'detector': 30.0, 'backbone': 10.0, 'denoise': 12.0}, steps=3)
    assert tracker.ready and tracker.fixed_ms == 40.0 and tracker.per_step_ms == 4.0
    smooth = CostTracker(smoothing=0.5)
    smooth.update({'detector': 20.0, 'denoise': 10.0}, steps=1)
    smooth.update({'detector': 40.0, 'denoise': 30.0}, steps=1)
    assert smooth.fixed_ms == 30.0 and smooth.per_step_ms == 20.0
