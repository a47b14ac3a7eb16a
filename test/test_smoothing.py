"""The causal One Euro keypoint filter (diffpose_ros/smoothing.py) and its tuning on motion."""
from __future__ import annotations

import math

import numpy as np
import pytest

from diffpose_ros.config import PipelineConfig
from diffpose_ros.metrics import jitter
from diffpose_ros.smoothing import OneEuroConfig, OneEuroKeypointFilter, TrackFilters

PERIOD_NS = 40_000_000  # 25 fps


def _run(config, xy_track, box_height=200.0, period_ns=PERIOD_NS):
    """Filter a (T, K, 2) track with a fixed box of the given height; returns (T, K, 2)."""
    track_filter = OneEuroKeypointFilter(config)
    box = np.array([0.0, 0.0, box_height / 2, box_height])
    out = []
    for i, xy in enumerate(xy_track):
        kpts = np.concatenate([xy, np.full((len(xy), 1), 0.9)], axis=1)
        out.append(track_filter(kpts, box, i * period_ns)[:, :2])
    return np.stack(out)


def test_a_still_noisy_joint_is_smoothed_and_confidences_are_kept():
    rng = np.random.default_rng(0)
    truth = np.tile([[100.0, 50.0]], (200, 3, 1))
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    out = _run(OneEuroConfig(), noisy)
    boxes = np.full(200, 200.0)  # box sizes (px)
    assert jitter(out, boxes) < 0.5 * jitter(noisy, boxes)
    assert np.sqrt(np.mean((out[20:] - truth[20:]) ** 2)) < 0.8 * np.sqrt(
        np.mean((noisy[20:] - truth[20:]) ** 2))
    track_filter = OneEuroKeypointFilter(OneEuroConfig())
    kpts = np.array([[1.0, 2.0, 0.25], [3.0, 4.0, 0.75]])
    track_filter(kpts, np.array([0, 0, 10, 20]), 0)
    again = track_filter(kpts + [5.0, 5.0, 0.0], np.array([0, 0, 10, 20]), PERIOD_NS)
    np.testing.assert_allclose(again[:, 2], [0.25, 0.75])


def test_fast_motion_lags_less_than_a_frame_with_speed_adaptation():
    """A joint moving at 2 person heights / s: the adaptive cutoff keeps the lag under one
    frame; without speed adaptation (beta 0) the same low cutoff lags several frames."""
    t = np.arange(100)
    speed_px_per_frame = 2.0 * 200.0 * PERIOD_NS * 1e-9
    track = np.stack([t * speed_px_per_frame, np.zeros(100)], axis=-1)[:, None, :]
    lag_px = {beta: float(np.mean(track[50:, 0, 0] - _run(
        OneEuroConfig(min_cutoff_hz=1.0, beta=beta), track)[50:, 0, 0]))
        for beta in (0.0, 4.0)}
    assert 0 <= lag_px[4.0] < 1.0 * speed_px_per_frame
    assert lag_px[0.0] > 3.0 * speed_px_per_frame


def test_parameters_are_scale_free_and_time_comes_from_stamps():
    rng = np.random.default_rng(1)
    track = np.cumsum(rng.normal(0, 1.0, (60, 4, 2)), axis=0)
    small = _run(OneEuroConfig(), track, box_height=100.0)
    large = _run(OneEuroConfig(), 3.0 * track, box_height=300.0)
    np.testing.assert_allclose(large, 3.0 * small, rtol=1e-6, atol=1e-6)
    # a dropped frame widens the time step: the filter follows more of the jump
    track_filter = OneEuroKeypointFilter(OneEuroConfig(beta=0.0))
    box = np.array([0, 0, 100, 200])
    track_filter(np.array([[0.0, 0.0, 1.0]]), box, 0)
    one = track_filter(np.array([[10.0, 0.0, 1.0]]), box, PERIOD_NS)[0, 0]
    track_filter.reset()
    track_filter(np.array([[0.0, 0.0, 1.0]]), box, 0)
    two = track_filter(np.array([[10.0, 0.0, 1.0]]), box, 2 * PERIOD_NS)[0, 0]
    assert 0 < one < two < 10.0


def test_long_gaps_and_time_going_back_restart_the_filter():
    track_filter = OneEuroKeypointFilter(OneEuroConfig(max_gap_s=0.5))
    box = np.array([0, 0, 100, 200])
    track_filter(np.array([[0.0, 0.0, 1.0]]), box, 0)
    jumped = track_filter(np.array([[50.0, 0.0, 1.0]]), box, 600_000_000)
    assert jumped[0, 0] == 50.0
    back = track_filter(np.array([[80.0, 0.0, 1.0]]), box, 100_000_000)
    assert back[0, 0] == 80.0


def test_track_filters_drop_ended_tracks():
    filters = TrackFilters(OneEuroConfig())
    box = np.array([0, 0, 100, 200])
    for track_id in range(5):
        filters.apply(track_id, np.zeros((17, 3)), box, 0)
    filters.keep_only({1, 3})
    assert len(filters) == 2


@pytest.mark.parametrize('kwargs', [
    {'min_cutoff_hz': 0.0}, {'min_cutoff_hz': math.nan}, {'beta': -1.0}, {'beta': math.inf},
    {'derivative_cutoff_hz': -2.0}, {'max_gap_s': 0.0}])
def test_absurd_filter_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        OneEuroConfig(**kwargs)


@pytest.mark.parametrize('kwargs', [
    {'keypoint_filter': 'kalman'}, {'filter_min_cutoff_hz': 0.0},
    {'filter_min_cutoff_hz': math.nan}, {'filter_beta': -0.5}])
def test_absurd_pipeline_filter_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        PipelineConfig(**kwargs)


def test_tuning_on_motion_prefers_a_filter_to_none():
    """The Penn Action tuning on synthetic motion (a moving, then still, joint): the chosen
    filter beats the raw noisy track at every noise size."""
    from diffpose_ros.smoothing_tuning import tune_one_euro

    rng = np.random.default_rng(0)
    sequences = []
    for _ in range(6):
        steps = np.concatenate([rng.normal(0, 4.0, (30, 13, 2)), np.zeros((30, 13, 2))])
        xy = 200.0 + np.cumsum(steps, axis=0)
        boxes = np.tile([100.0, 100.0, 200.0, 300.0], (60, 1))
        sequences.append({'xy': xy, 'visible': np.ones((60, 13), bool),
                          'height_px': np.full(60, 200.0), 'boxes': boxes})
    result = tune_one_euro(sequences, noise_heights=(0.01, 0.03), min_cutoffs_hz=(0.5, 2.0),
                           betas=(0.0, 4.0), progress=False)
    chosen = result['chosen']
    assert len(result['grid']) == 4
    for noise in ('0.01', '0.03'):
        assert chosen['rms_heights'][noise] < result['raw_rms_heights'][noise]
    assert chosen['worst_regret'] == min(row['worst_regret'] for row in result['grid'])
