"""Detector-prior diffusion (issue 10): prior heatmaps, SDEdit start, x̂0 projection, aligned
windows, stamp-based window offsets, the held-out LSPET split. ROS-free, no trained weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffpose_ros.buffers import FramePeriodEstimator, stamp_offsets
from diffpose_ros.codec import (
    CropTransform,
    _warp_features_cv2,
    align_features,
    decode_heatmaps,
    feature_alignment_matrix,
    project_heatmaps,
    render_prior_heatmaps,
)
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.sampler import sample_heatmaps

HW = (64, 48)


def test_prior_heatmaps_are_confidence_weighted_gaussians_at_the_keypoints():
    xy = np.array([[[10.5, 20.5], [30.25, 40.75], [5.0, 5.0]]])
    conf = np.array([[0.9, 0.4, 0.0]])
    maps = render_prior_heatmaps(xy, conf, HW, sigma=2.0)
    coords, scores = decode_heatmaps(maps)
    np.testing.assert_allclose(coords[0, :2], xy[0, :2], atol=1e-3)
    np.testing.assert_allclose(scores[0, :2], [0.9, 0.4], atol=0.01)  # peak pixel, off-centre
    assert maps[0, 2].max() == 0.0  # confidence 0: no evidence at all


def test_projection_redraws_a_blurred_doubled_peak_as_one_clean_gaussian():
    xy = np.array([[[20.0, 30.0]]])
    clean = render_prior_heatmaps(xy, np.array([[0.8]]), HW, 2.0)
    messy = clean * 0.9 + 0.3 * render_prior_heatmaps(xy + 9, np.array([[1.0]]), HW, 4.0) - 0.05
    projected = project_heatmaps(messy, sigma=2.0)
    coords, scores = decode_heatmaps(messy)
    again, again_scores = decode_heatmaps(projected)
    np.testing.assert_allclose(again, coords, atol=1e-3)
    np.testing.assert_allclose(again_scores, scores, atol=2e-3)  # projection keeps the score
    assert projected.min() >= 0.0
    # one peak: the second blob and the negative offset are gone
    assert projected[0, 0, 39, 29] < 1e-3


def test_time_pairs_from_t_start():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    assert schedule.time_pairs(1, t_start=200) == [(200, -1)]
    assert schedule.time_pairs(2, t_start=200) == [(200, 99), (99, -1)]
    assert schedule.time_pairs(4, t_start=200)[0][0] == 200
    with pytest.raises(ValueError, match='steps'):
        schedule.time_pairs(3, t_start=1)
    with pytest.raises(ValueError, match='t_start'):
        schedule.time_pairs(1, t_start=1000)


def _echo_denoiser(model_input, t, person_index):
    """x̂0 = the (clipped) input heatmap: a denoiser that trusts its input completely."""
    return np.asarray(model_input, np.float32)


@pytest.mark.parametrize('steps', [1, 3])
def test_sampling_from_a_prior_at_small_t_returns_the_prior(steps):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    xy = np.array([[[12.3, 40.2], [25.0, 8.5]], [[30.0, 30.0], [40.1, 50.7]]])
    prior = render_prior_heatmaps(xy, np.ones((2, 2)), HW, 2.0)
    result = sample_heatmaps(_echo_denoiser, schedule, 2, (2, *HW), steps=steps, seed=3,
                             prior_heatmaps=prior, t_start=5, projection_sigma=2.0)
    coords, _ = decode_heatmaps(result.heatmaps)
    np.testing.assert_allclose(coords, xy, atol=0.15)


def test_a_shifted_prior_moves_the_sampled_output():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    xy = np.array([[[20.0, 30.0]]])
    outs = []
    for shift in (0.0, 4.0):
        prior = render_prior_heatmaps(xy + shift, np.ones((1, 1)), HW, 2.0)
        res = sample_heatmaps(_echo_denoiser, schedule, 1, (1, *HW), steps=1, seed=0,
                              prior_heatmaps=prior, t_start=50)
        outs.append(decode_heatmaps(res.heatmaps)[0][0, 0])
    np.testing.assert_allclose(outs[1] - outs[0], [4.0, 4.0], atol=0.3)


def test_prior_needs_t_start_and_the_right_shape():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    prior = np.zeros((1, 1, *HW), np.float32)
    with pytest.raises(ValueError, match='go together'):
        sample_heatmaps(_echo_denoiser, schedule, 1, (1, *HW), steps=1, prior_heatmaps=prior)
    with pytest.raises(ValueError, match='prior_heatmaps must have shape'):
        sample_heatmaps(_echo_denoiser, schedule, 2, (1, *HW), steps=1, prior_heatmaps=prior,
                        t_start=10)


def test_pure_noise_start_is_unchanged_by_the_prior_options():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    a = sample_heatmaps(_echo_denoiser, schedule, 2, (3, *HW), steps=2, seed=1)
    b = sample_heatmaps(_echo_denoiser, schedule, 2, (3, *HW), steps=2, seed=1,
                        prior_heatmaps=None, t_start=None, projection_sigma=None)
    np.testing.assert_array_equal(a.heatmaps, b.heatmaps)


# ------------------------------------------------------------------ aligned windows

def test_features_of_a_shifted_crop_are_moved_into_the_key_crop():
    stride = 16
    key = CropTransform.from_box([100, 100, 292, 356], crop_hw=(256, 192), enlarge=1.0)
    # the neighbour's crop sits one feature cell (16 crop px) further right in the image
    cell_in_image = stride / key.crop_px_per_image_px
    neighbour = CropTransform.from_box([100 + cell_in_image, 100, 292 + cell_in_image, 356],
                                       crop_hw=(256, 192), enlarge=1.0)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(600, 16, 12)).astype(np.float32)   # > OpenCV's 512 channels
    aligned = align_features(features, neighbour, key, stride)
    # key cell j shows the image place of neighbour cell j - 1
    np.testing.assert_allclose(aligned[:, :, 1:], features[:, :, :-1], atol=1e-5)
    np.testing.assert_allclose(aligned[:, :, 0], 0.0)            # outside the neighbour crop
    assert aligned.dtype == features.dtype
    assert align_features(features, key, key, stride) is features
    # written into a caller's buffer (the pipeline's window batch): the same numbers
    batch = np.full((2, *features.shape), np.nan, np.float32)
    first, second = batch[0], batch[1]
    assert align_features(features, neighbour, key, stride, out=first) is first
    assert align_features(features, key, key, stride, out=second) is second
    np.testing.assert_array_equal(batch[0], aligned)
    np.testing.assert_array_equal(batch[1], features)



def _bilinear_reference(features, matrix):
    """Per-cell bilinear sampling at ``matrix @ (j, i, 1)``, zero outside (a plain loop)."""
    c, h, w = features.shape
    out = np.zeros_like(features, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            x, y = matrix @ [j, i, 1.0]
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j] += wy * wx * features[:, yy, xx]
    return out


def test_box_crop_alignment_is_exact_bilinear_and_matches_cv2_within_its_weight_grid():
    stride = 16
    key = CropTransform.from_box([100, 100, 292, 356], crop_hw=(256, 192))
    # a neighbour crop that is shifted by a fraction of a cell and 4 % larger, partly outside
    neighbour = CropTransform.from_box([104.3, 91.2, 303.1, 362.5], crop_hw=(256, 192))
    matrix = feature_alignment_matrix(neighbour, key, stride)
    assert matrix[0, 1] == 0 and matrix[1, 0] == 0 and not np.isclose(matrix[0, 0], 1)
    rng = np.random.default_rng(3)
    features = rng.normal(size=(600, 16, 12)).astype(np.float32)
    aligned = align_features(features, neighbour, key, stride)
    np.testing.assert_allclose(aligned, _bilinear_reference(features, matrix), atol=1e-5)
    # OpenCV's warp (used for rotated crops) rounds the weights to 1/32 of a cell
    np.testing.assert_allclose(aligned, _warp_features_cv2(features, matrix),
                               atol=np.abs(features).max() / 32)
    into_batch = np.full((2, *features.shape), np.nan, np.float32)[1]
    assert align_features(features, neighbour, key, stride, out=into_batch) is into_batch
    np.testing.assert_array_equal(into_batch, aligned)


def test_rotated_crop_alignment_uses_the_general_warp():
    stride = 16
    center, size = np.array([200.0, 220.0]), np.array([192.0, 256.0])
    key = CropTransform.from_center_scale_rotation(center, size, 10.0, (256, 192))
    neighbour = CropTransform.from_center_scale_rotation(center + 3, size, 0.0, (256, 192))
    features = np.random.default_rng(4).normal(size=(8, 16, 12)).astype(np.float32)
    matrix = feature_alignment_matrix(neighbour, key, stride)
    aligned = align_features(features, neighbour, key, stride)
    np.testing.assert_allclose(aligned, _bilinear_reference(features, matrix),
                               atol=np.abs(features).max() / 32)

def test_alignment_follows_the_augmentation_flip():
    stride = 16
    center, size = np.array([200.0, 220.0]), np.array([192.0, 256.0])
    key = CropTransform.from_center_scale_rotation(center, size, 0.0, (256, 192), flip=True)
    same_place = CropTransform.from_center_scale_rotation(center, size, 0.0, (256, 192),
                                                          flip=False)
    features = np.arange(2 * 16 * 12, dtype=np.float32).reshape(2, 16, 12)
    aligned = align_features(features, same_place, key, stride)
    np.testing.assert_allclose(aligned, features[:, :, ::-1], atol=1e-4)


# ------------------------------------------------------------------ offsets from stamps

def test_window_offsets_count_frame_periods_when_frames_were_dropped():
    period = 33_000_000
    nominal = np.array([-2, -1, 0])
    stamps = np.array([0, 2, 3]) * period            # the frame at -2 periods ... one dropped
    np.testing.assert_array_equal(
        stamp_offsets(stamps, nominal, np.zeros(3, bool), period, 4), [-3, -1, 0])
    # no period known yet: nominal offsets
    np.testing.assert_array_equal(stamp_offsets(stamps, nominal, np.zeros(3, bool), None, 4),
                                  nominal)
    # a padded position (track not seen there) keeps its nominal offset, never a second 0
    stamps_padded = np.array([3, 3, 3]) * period
    np.testing.assert_array_equal(
        stamp_offsets(stamps_padded, nominal, np.array([True, True, False]), period, 4),
        [-2, -1, 0])
    # long gaps are clipped to the model's range; order and the single 0 are kept
    out = stamp_offsets(np.array([0, 9, 10, 11, 20]) * period, np.array([-2, -1, 0, 1, 2]),
                        np.zeros(5, bool), period, 4)
    np.testing.assert_array_equal(out, [-4, -1, 0, 1, 4])
    # jittery stamps round to whole periods
    out = stamp_offsets(np.array([0, 1.1, 1.9]) * period, nominal, np.zeros(3, bool), period, 4)
    np.testing.assert_array_equal(out, [-2, -1, 0])


def test_frame_period_estimate_ignores_dropped_frames_and_resets_on_a_jump_back():
    estimator = FramePeriodEstimator()
    assert estimator.period_ns is None
    stamp = 0
    for i in range(30):
        stamp += 50_000_000 * (2 if i % 3 == 0 else 1)   # every third interval a drop
        estimator.observe(stamp)
    assert estimator.period_ns == 50_000_000
    estimator.observe(10)
    assert estimator.period_ns is None
    assert FramePeriodEstimator(fixed_period_ns=40_000_000).period_ns == 40_000_000


# ------------------------------------------------------------------ held-out split

def test_lspet_validation_images_are_refused_by_the_training_loader(tmp_path):
    from diffpose_ros.training.data import HeldOutDataError, load_sequences

    def ann(i, image_id):
        return {'id': i, 'image_id': image_id, 'category_id': 1, 'bbox': [0, 0, 50, 100],
                'keypoints': [0, 0, 0] * 5 + [10, 10, 2] * 12}

    data = {'images': [{'id': 1, 'file_name': 'images/im08999.jpg'},
                       {'id': 2, 'file_name': 'images/im09001.jpg'}],
            'annotations': [ann(1, 1), ann(2, 2)],
            'categories': [{'id': 1, 'name': 'person',
                            'keypoints': ['nose', 'left_eye', 'right_eye', 'left_ear',
                                          'right_ear', 'left_shoulder', 'right_shoulder',
                                          'left_elbow', 'right_elbow', 'left_wrist',
                                          'right_wrist', 'left_hip', 'right_hip', 'left_knee',
                                          'right_knee', 'left_ankle', 'right_ankle']}]}
    path = tmp_path / 'lspet.json'
    path.write_text(json.dumps(data))
    with pytest.raises(HeldOutDataError, match='im09001'):
        load_sequences(path)
    sequences = load_sequences(path, exclude_held_out=True)
    assert [s.image_paths[0].name for s in sequences] == ['im08999.jpg']
