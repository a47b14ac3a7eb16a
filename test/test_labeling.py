"""Pseudo-labelling: fusion, offline smoothing, filtering, and the diffpose-label command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffpose_ros.labeling import (
    LabelConfig,
    clean_track,
    fuse_teachers,
    smooth_track_quadratic,
    teacher_agreement,
)
from diffpose_ros.metrics import jitter, load_coco_keypoints


def _track(xy: np.ndarray, conf: float = 0.9) -> np.ndarray:
    """(T, 2) trajectory -> (T, 17, 3) track with every joint on it."""
    kp = np.zeros((len(xy), 17, 3))
    kp[..., :2] = xy[:, None, :]
    kp[..., 2] = conf
    return kp


def test_quadratic_smoothing_keeps_quadratic_motion_exactly():
    t = np.arange(20, dtype=np.float64)
    xy = np.stack([3 + 2 * t + 0.5 * t ** 2, 100 - 0.25 * t ** 2], axis=1)
    out = smooth_track_quadratic(_track(xy), half_window=2)
    np.testing.assert_allclose(out[..., :2], _track(xy)[..., :2], atol=1e-6)


def test_quadratic_smoothing_reduces_noise_and_keeps_swings():
    rng = np.random.default_rng(0)
    t = np.arange(200, dtype=np.float64)
    swing = 20 * np.sin(2 * np.pi * t / 10)          # a 10-frame gait swing
    clean = np.stack([swing, np.zeros_like(t)], axis=1)
    noisy = clean + rng.normal(0, 2.0, clean.shape)
    out = smooth_track_quadratic(_track(noisy), half_window=2, sigma_frames=1.5)
    err_before = np.abs(noisy - clean).mean()
    err_after = np.abs(out[:, 0, :2] - clean).mean()
    assert err_after < 0.8 * err_before
    # the swing's amplitude survives (a 5-frame moving average keeps only 65 % of it)
    assert np.abs(out[5:-5, 0, 0]).max() > 0.85 * 20


def test_smoothing_ignores_missing_and_zero_confidence_points():
    t = np.arange(9, dtype=np.float64)
    xy = np.stack([t, t], axis=1)
    track = _track(xy)
    track[4, :, :2] = np.nan                      # missing frame
    track[6, :, 2] = 0.0                          # zero confidence: must not pull
    track[6, :, :2] = 500.0
    out = smooth_track_quadratic(track, half_window=2)
    np.testing.assert_allclose(out[5, 0, :2], [5, 5], atol=1e-6)
    np.testing.assert_allclose(out[4, 0, :2], [4, 4], atol=1e-6)  # filled from neighbours


def test_fuse_teachers_agree_disagree_and_secondary_only():
    cfg = LabelConfig()
    primary = np.zeros((17, 3))
    primary[:, :2] = 100.0
    primary[:, 2] = 0.8
    secondary = primary.copy()
    secondary[0, :2] = 104.0                      # agrees (4 px of a 100 px box)
    secondary[1, :2] = 150.0                      # disagrees (50 px)
    primary[2, 2] = 0.1                           # only the secondary sees joint 2
    secondary[2, :2] = 90.0
    secondary[3, 2] = 0.1                         # only the primary sees joint 3
    fused, codes = fuse_teachers(primary, secondary, 100.0, cfg)
    assert codes[:4].tolist() == [1, 2, 3, 0]
    np.testing.assert_allclose(fused[0, :2], [102, 102])
    assert fused[1, 2] == pytest.approx(0.8 * cfg.disagreement_confidence_scale)
    np.testing.assert_allclose(fused[2], [90, 90, 0.8])
    np.testing.assert_allclose(fused[3], primary[3])
    same, codes_none = fuse_teachers(primary, None, 100.0, cfg)
    np.testing.assert_array_equal(same, primary)
    assert not codes_none.any()


def test_teacher_agreement_counts_shared_joints():
    a = np.zeros((17, 3))
    a[:, 2] = 0.9
    b = a.copy()
    b[:, 0] += 5.0                                # 5 px on a 100 px box = 0.05
    b[16, 2] = 0.0                                # not seen by b
    report = teacher_agreement([a], [b], [100.0])
    assert report['joints_seen_by_both'] == 16
    assert report['mean_distance_per_box'] == pytest.approx(0.05)
    assert report['share_within_0.1_box'] == 1.0


def test_clean_track_drops_outliers_small_people_and_short_tracks():
    cfg = LabelConfig()
    t = np.arange(10, dtype=np.float64)
    xy = np.stack([100 + t, 100 + 0 * t], axis=1)
    track = _track(xy)
    track[:, :, 0] += np.linspace(0, 50, 17)[None]   # spread joints over the box
    track[5, 9, :2] += 60.0                          # a wrist outlier (0.6 box)
    boxes = np.tile([90.0, 50.0, 190.0, 150.0], (10, 1))
    boxes[8] = [90.0, 50.0, 120.0, 80.0]             # 30 px tall: too small
    boxes[9] = np.nan                                # not detected
    labels, keep = clean_track(track, boxes, cfg)
    assert keep[:8].all() and not keep[8:].any()
    assert labels[5, 9, 2] == 0.0                    # outlier dropped
    assert labels[5, 8, 2] > 0
    assert np.isnan(labels[8]).all()
    short_labels, short_keep = clean_track(track[:2], boxes[:2], cfg)
    assert not short_keep.any()


@pytest.mark.slow
def test_label_command_on_vtest_frames(tmp_path):
    """Real teacher (YOLO11n-pose) on 6 real frames -> COCO JSON the loaders read."""
    from diffpose_ros.assets import VTEST_VIDEO, asset_path
    from diffpose_ros.cli.label import main
    from diffpose_ros.training.data import load_sequences, sample_refs

    out = tmp_path / 'labels'
    assert main(['--video', f'{asset_path(VTEST_VIDEO)}:100:106', '--out', str(out),
                 '--no-progress']) == 0
    data = json.loads((out / 'labels_coco.json').read_text())
    assert len(data['images']) == 6
    assert data['videos'][0]['first_frame'] == 100
    assert all((out / im['file_name']).is_file() for im in data['images'])
    anns = data['annotations']
    assert len(anns) >= 5                           # vtest has 4-7 people per frame
    for ann in anns:
        assert len(ann['keypoints']) == 51 and len(ann['keypoint_scores']) == 17
        assert ann['num_keypoints'] >= LabelConfig().min_labelled_joints
        assert ann['track_id'] > 0
    # a track spans frames with one id, and its labels are smoother than the raw teacher
    report = json.loads((out / 'report.json').read_text())
    assert report['counts']['labelled_person_frames'] == len(anns)
    assert report['label_jitter']['labels_smoothed'] < report['label_jitter']['teacher_raw']
    gt = load_coco_keypoints(out / 'labels_coco.json')
    assert sum(len(im.persons) for im in gt.values()) == len(anns)
    sequences = load_sequences(out / 'labels_coco.json')
    assert len(sequences) == 1 and len(sample_refs(sequences)) == len(anns)
    per_seq = json.loads(next((out / 'posetrack').glob('*.json')).read_text())
    assert {im['vid_id'] for im in per_seq['images']} == {1}


def test_jitter_of_smoothed_labels_is_lower_on_a_noisy_walk():
    rng = np.random.default_rng(1)
    t = np.arange(60, dtype=np.float64)
    xy = np.stack([2 * t, 50 + 0 * t], axis=1)
    noisy = _track(xy + rng.normal(0, 1.5, xy.shape))
    boxes = np.tile([0.0, 0.0, 60.0, 120.0], (60, 1))
    labels, keep = clean_track(noisy, boxes)
    assert keep.all()
    sizes = np.full(60, 120.0)
    assert jitter(labels[..., :2], sizes) < 0.5 * jitter(noisy[..., :2], sizes)


@pytest.mark.slow
def test_label_command_fuses_blazepose_on_vtest_frames(tmp_path):
    """Both teachers on 3 real frames: BlazePose joints are fused in and agreement reported."""
    from diffpose_ros.assets import VTEST_VIDEO, asset_path
    from diffpose_ros.cli.label import main

    out = tmp_path / 'fused'
    assert main(['--video', f'{asset_path(VTEST_VIDEO)}:600:603', '--out', str(out),
                 '--teachers', 'yolo,blazepose', '--no-progress']) == 0
    report = json.loads((out / 'report.json').read_text())
    agreement = report['teacher_agreement_yolo_vs_blazepose']
    assert report['teachers'] == ['yolo', 'blazepose']
    assert agreement['persons'] >= 3 and agreement['joints_seen_by_both'] >= 30
    # two independent real models on real people: most shared joints within 0.1 box
    assert agreement['share_within_0.1_box'] > 0.6
    assert report['counts']['labelled_person_frames'] >= 3
