"""The pose pipeline end to end on real vtest.avi frames (real detector, random-head model)."""

from __future__ import annotations

import numpy as np
import pytest

from diffpose_ros.config import PipelineConfig
from diffpose_ros.pipeline import InvalidImageError, PosePipeline

FRAME_PERIOD_NS = 100_000_000  # vtest.avi is 10 fps
NUM_FRAMES = 8


class ReplayDetector:
    """Replays the real detector's output recorded once per session (keeps the suite fast)."""

    def __init__(self, frames, detections):
        self._by_id = {id(frame): dets for frame, dets in zip(frames, detections)}
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        return self._by_id[id(image)]


class CountingRuntime:
    """Wraps a runtime and counts the work it is asked to do."""

    def __init__(self, runtime):
        self._runtime = runtime
        self.name = runtime.name
        self.model_config = runtime.model_config
        self.trained = runtime.trained
        self.feature_rows = 0
        self.feature_calls = 0
        self.window_calls = 0
        self.denoise_calls = 0

    @property
    def providers(self):
        return self._runtime.providers

    def extract_features(self, crops):
        self.feature_calls += 1
        self.feature_rows += len(crops)
        return self._runtime.extract_features(crops)

    def encode_window(self, features, offsets):
        self.window_calls += 1
        self.offsets_seen = np.array(offsets)
        return self._runtime.encode_window(features, offsets)

    def denoise(self, model_input, t, person_index, condition):
        self.denoise_calls += 1
        return self._runtime.denoise(model_input, t, person_index, condition)


@pytest.fixture(scope='session')
def torch_runtime():
    from diffpose_ros.model.weights import load_model
    from diffpose_ros.runtime.torch_runtime import TorchRuntime

    model, trained = load_model(None, seed=0)
    return TorchRuntime(model, trained)


@pytest.fixture(scope='session')
def frames(vtest_frames_100_129):
    return vtest_frames_100_129[:NUM_FRAMES]


@pytest.fixture(scope='session')
def recorded_detections(frames, vtest_detector):
    return [vtest_detector.detect(frame) for frame in frames]


def _pipeline(runtime, frames, detections, **config):
    config.setdefault('detector_imgsz', 1280)
    return PosePipeline(
        PipelineConfig(**config), CountingRuntime(runtime), ReplayDetector(frames, detections)
    )


def _stamp(index: int) -> int:
    return 5_000_000_000 + index * FRAME_PERIOD_NS


def test_causal_pipeline_with_the_real_detector(torch_runtime, frames, vtest_detector):
    pipeline = PosePipeline(
        PipelineConfig(detector_imgsz=1280), CountingRuntime(torch_runtime), vtest_detector
    )
    results = [pipeline.process(frame, _stamp(i), 'cam0') for i, frame in enumerate(frames[:4])]
    assert all(r is not None for r in results)
    for i, result in enumerate(results):
        assert result.stamp_ns == _stamp(i) and result.camera_id == 'cam0'
        assert (result.steps, result.hypotheses, result.window_size) == (1, 1, 3)
        assert len(result.persons) >= 2
        for person in result.persons:
            assert person.keypoints.shape == (17, 3) and np.isfinite(person.keypoints).all()
            assert person.detector_keypoints.shape == (17, 3)
            # keypoints decode inside the person's crop: the box enlarged 1.25x at 3:4 aspect
            x0, y0, x1, y1 = person.box_xyxy
            margin = 0.7 * max(x1 - x0, (y1 - y0) * 0.75) * 1.25 + 1
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            assert np.all(np.abs(person.keypoints[:, 0] - cx) <= margin)
            assert np.all(np.abs(person.keypoints[:, 1] - cy) <= margin * 4 / 3)
        assert set(result.timings_ms) >= {'detector', 'backbone', 'strl', 'denoise', 'decode'}
    first_ids = {p.track_id for p in results[0].persons}
    assert first_ids & {p.track_id for p in results[-1].persons}, 'track ids did not persist'


def test_backbone_runs_once_per_person_frame(torch_runtime, frames, recorded_detections):
    pipeline = _pipeline(
        torch_runtime, frames, recorded_detections, window_mode='centered', window_size=5
    )
    for i, frame in enumerate(frames):
        pipeline.process(frame, _stamp(i))
    pipeline.flush()
    runtime = pipeline.runtime
    assert pipeline.person_frames > 0
    # every window of 5 frames reused cached features: one backbone row per person-frame
    assert runtime.feature_rows == pipeline.backbone_crops == pipeline.person_frames
    # one STRL call per key frame with all its persons batched (6 in stream), and one for the
    # two key frames flush() emits together; one denoiser call per step of each
    assert runtime.window_calls == runtime.denoise_calls == len(frames) - 2 + 1


def test_centered_windows_delay_output_and_flush(torch_runtime, frames, recorded_detections):
    pipeline = _pipeline(
        torch_runtime, frames, recorded_detections, window_mode='centered', window_size=5
    )
    emitted = []
    for i, frame in enumerate(frames):
        result = pipeline.process(frame, _stamp(i))
        if i < 2:
            assert result is None  # the key frame is 2 frames old
        else:
            assert result.stamp_ns == _stamp(i - 2) and result.frame_index == i - 2
            emitted.append(result)
    tail = pipeline.flush()
    assert [r.stamp_ns for r in tail] == [_stamp(len(frames) - 2), _stamp(len(frames) - 1)]
    assert [r.frame_index for r in emitted + tail] == list(range(len(frames)))
    assert pipeline.flush() == []


def test_deterministic_and_steps_change_at_run_time(torch_runtime, frames, recorded_detections):
    runs = []
    for _ in range(2):
        pipeline = _pipeline(torch_runtime, frames, recorded_detections, seed=7)
        runs.append([pipeline.process(f, _stamp(i)) for i, f in enumerate(frames[:3])])
    for a, b in zip(*runs):
        assert [p.track_id for p in a.persons] == [p.track_id for p in b.persons]
        np.testing.assert_array_equal(
            np.stack([p.keypoints for p in a.persons]), np.stack([p.keypoints for p in b.persons])
        )
    pipeline.set_sampling(steps=3, hypotheses=2)
    result = pipeline.process(frames[3], _stamp(3))
    assert (result.steps, result.hypotheses) == (3, 2)
    assert pipeline.runtime.denoise_calls == 3 + 3  # 3 frames x 1 step, then 3 steps
    for bad in ({'steps': 0}, {'hypotheses': 0}, {'steps': -5}):
        with pytest.raises(ValueError):
            pipeline.set_sampling(**bad)
    assert (pipeline.config.steps, pipeline.config.hypotheses) == (3, 2)


def test_time_jump_back_resets_tracks_and_buffers(torch_runtime, frames, recorded_detections):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections)
    for i in range(3):
        pipeline.process(frames[i], _stamp(i))
    state = pipeline.cameras['camera']
    assert state.buffers.num_records > len(state.buffers)  # several frames per track
    result = pipeline.process(frames[3], _stamp(0) - FRAME_PERIOD_NS)  # a looping bag
    assert state.time_jumps == 1
    assert state.buffers.num_records == len(result.persons)  # only the new frame is held
    assert result.stamp_ns == _stamp(0) - FRAME_PERIOD_NS


def test_bad_images_raise_and_the_pipeline_keeps_serving(
    torch_runtime, frames, recorded_detections
):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections, max_image_pixels=800 * 600)
    bad_images = {
        'empty': np.zeros((0, 0, 3), np.uint8),
        'float': frames[0].astype(np.float32),
        'gray': frames[0][..., 0],
        'bgra': np.dstack([frames[0], frames[0][..., :1]]),
        'zero_width': np.zeros((10, 0, 3), np.uint8),
        'huge': np.zeros((700, 1000, 3), np.uint8),
        'list': [[1, 2, 3]],
    }
    for image in bad_images.values():
        with pytest.raises(InvalidImageError):
            pipeline.process(image, _stamp(0))
    result = pipeline.process(frames[0], _stamp(0))
    assert result is not None and len(result.persons) >= 2


def test_cameras_have_independent_tracks_and_share_one_inference(
    torch_runtime, frames, recorded_detections
):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections)
    results = pipeline.process_batch(
        [(frames[0], _stamp(0), 'left'), (frames[1], _stamp(0) + 5_000_000, 'right')]
    )
    assert [r.camera_id for r in results] == ['left', 'right']
    for result in results:
        assert min(p.track_id for p in result.persons) == 1  # per-camera id counters
    # backbone, STRL and each denoising step run once over both cameras' persons
    assert pipeline.runtime.feature_calls == 1
    assert pipeline.runtime.window_calls == 1 and pipeline.runtime.denoise_calls == 1
    with pytest.raises(ValueError, match='one frame per camera'):
        pipeline.process_batch([(frames[0], 0, 'left'), (frames[1], 1, 'left')])


def test_detect_every_n_propagates_boxes(torch_runtime, frames, recorded_detections):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections, detect_every_n=3)
    results = [pipeline.process(f, _stamp(i)) for i, f in enumerate(frames[:6])]
    assert pipeline.detector.calls == 2  # frames 0 and 3
    predicted = [p.is_predicted for r in results[1:3] for p in r.persons]
    assert predicted and all(predicted)
    assert not any(p.is_predicted for p in results[3].persons)


def test_detection_runs_right_after_a_time_jump(torch_runtime, frames, recorded_detections):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections, detect_every_n=3)
    pipeline.process(frames[0], _stamp(0))                     # detected
    pipeline.process(frames[1], _stamp(1))                     # propagated
    result = pipeline.process(frames[2], _stamp(0) - FRAME_PERIOD_NS)   # jump back: reset
    assert pipeline.detector.calls == 2
    assert result.persons and not any(p.is_predicted for p in result.persons)


# ------------------------------------------------------------------ issue 10: detector prior

def _shifted(detections, dx):
    from diffpose_ros.detection import Detection

    out = []
    for frame in detections:
        moved = []
        for det in frame:
            kp = det.keypoints.copy()
            kp[:, 0] += dx
            moved.append(Detection(det.box_xyxy.copy(), det.score, kp))
        out.append(moved)
    return out


def test_a_prior_shifted_by_d_pixels_moves_the_output(torch_runtime, frames,
                                                      recorded_detections):
    """The denoiser follows its input: the detector's keypoints moved by +-d pixels move our
    keypoints the same way (by part of d: the image evidence pulls back). Same seed, same
    noise: any difference comes from the prior."""
    d = 8.0
    outs = {}
    for shift in (-d, 0.0, d):
        pipeline = _pipeline(torch_runtime, frames, _shifted(recorded_detections, shift))
        result = pipeline.process(frames[0], _stamp(0))
        outs[shift] = {p.track_id: p.keypoints for p in result.persons}
    common = sorted(set(outs[0.0]) & set(outs[d]) & set(outs[-d]))
    assert common
    moved = {shift: float(np.median(np.concatenate(
        [outs[shift][t][5:, 0] - outs[0.0][t][5:, 0] for t in common]))) for shift in (-d, d)}
    assert 0.04 * d < moved[d] < 1.5 * d, moved
    assert -1.5 * d < moved[-d] < -0.04 * d, moved


def test_window_offsets_follow_stamps_when_frames_are_dropped(torch_runtime, frames,
                                                               recorded_detections):
    pipeline = _pipeline(torch_runtime, frames, recorded_detections)
    runtime = pipeline.runtime
    # frames 0, 1, 2 arrive and are processed; frame 3 arrives but is dropped by the node
    # (only its stamp is observed); frame 4 is processed: its window spans 3 periods back
    for i in range(3):
        pipeline.process(frames[i], _stamp(i))
    np.testing.assert_array_equal(np.unique(runtime.offsets_seen, axis=0), [[-2, -1, 0]])
    pipeline.observe_stamp('camera', _stamp(3))
    pipeline.process(frames[4], _stamp(4))
    rows = np.unique(runtime.offsets_seen, axis=0)
    assert [-3, -2, 0] in rows.tolist()
    assert all(row[-1] == 0 and (np.diff(row) > 0).all() for row in rows)


def test_frames_without_a_detection_warm_start_from_the_moved_estimate(
        torch_runtime, frames, recorded_detections):
    from diffpose_ros.pipeline import move_with_box

    pipeline = _pipeline(torch_runtime, frames, recorded_detections, detect_every_n=2)
    first = pipeline.process(frames[0], _stamp(0))
    state = pipeline.cameras['camera']
    estimates = {t: kp.copy() for t, (_, kp) in state.estimates.items()}
    assert set(estimates) == {p.track_id for p in first.persons}
    used = {}
    original = pipeline._prior_keypoints

    def spy(state_, track_id, record):
        used[track_id] = (original(state_, track_id, record), record.box_xyxy.copy())
        return used[track_id][0]

    pipeline._prior_keypoints = spy
    second = pipeline.process(frames[1], _stamp(1))          # propagated boxes: warm start
    assert second.persons and all(p.is_predicted for p in second.persons)
    for person in second.persons:
        prior, box = used[person.track_id]
        old_box = next(p.box_xyxy for p in first.persons if p.track_id == person.track_id)
        np.testing.assert_allclose(
            prior, move_with_box(estimates[person.track_id], old_box, box))
    # box moved by (5, -2) and doubled in size: keypoints follow
    moved = move_with_box(np.array([[10.0, 20.0, 0.7]]), np.array([0, 0, 10, 20]),
                          np.array([5, -2, 25, 38]))
    np.testing.assert_allclose(moved, [[25.0, 38.0, 0.7]])


def test_pure_noise_start_stays_selectable(torch_runtime, frames, recorded_detections):
    a = _pipeline(torch_runtime, frames, recorded_detections).process(frames[0], _stamp(0))
    b = _pipeline(torch_runtime, frames, recorded_detections,
                  diffusion_start='noise').process(frames[0], _stamp(0))
    assert [p.track_id for p in a.persons] == [p.track_id for p in b.persons]
    assert not np.allclose(np.stack([p.keypoints for p in a.persons]),
                           np.stack([p.keypoints for p in b.persons]))


def test_fp16_stand_in_on_cpu_matches_fp32(frames, recorded_detections):
    """The CUDA fp16 path, run in half precision on the CPU: same persons, keypoints within
    a pixel of fp32 (the time embedding and every layer run in half)."""
    from diffpose_ros.model.weights import load_model
    from diffpose_ros.runtime.torch_runtime import TorchRuntime

    model32, trained = load_model(None)
    model16, _ = load_model(None)
    half = TorchRuntime(model16, trained, fp16=True, half_on_cpu=True)
    assert half.providers == ['torch:cpu:fp16']
    results = []
    for runtime in (TorchRuntime(model32, trained), half):
        pipeline = _pipeline(runtime, frames, recorded_detections)
        results.append(pipeline.process(frames[0], _stamp(0)))
    full, halved = results
    assert [p.track_id for p in full.persons] == [p.track_id for p in halved.persons]
    a = np.stack([p.keypoints for p in full.persons])
    b = np.stack([p.keypoints for p in halved.persons])
    assert np.isfinite(b).all()
    err = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    assert float(np.median(err)) < 0.5 and float(np.percentile(err, 95)) < 2.0, err
    np.testing.assert_allclose(a[..., 2], b[..., 2], atol=0.05)


def test_published_keypoints_are_smoothed_per_track_and_warm_starts_stay_raw(
        torch_runtime, frames, recorded_detections):
    """keypoint_filter one_euro: the first frame of a track is published as estimated; later
    frames are the causal filter of the raw estimates (kept raw for warm starts); 'none'
    publishes the raw estimates; the filter setting changes at run time."""
    from diffpose_ros.pipeline import keypoint_filter_config
    from diffpose_ros.smoothing import OneEuroKeypointFilter

    smooth = _pipeline(torch_runtime, frames, recorded_detections)
    raw = _pipeline(torch_runtime, frames, recorded_detections, keypoint_filter='none')
    assert smooth.config.keypoint_filter == 'one_euro'
    reference: dict[int, OneEuroKeypointFilter] = {}
    moved = 0
    for i in range(4):
        a = smooth.process(frames[i], _stamp(i))
        b = raw.process(frames[i], _stamp(i))
        raw_by_id = {p.track_id: p.keypoints for p in b.persons}
        assert {p.track_id for p in a.persons} == set(raw_by_id)
        for person in a.persons:
            np.testing.assert_allclose(smooth.cameras['camera'].estimates[person.track_id][1],
                                       raw_by_id[person.track_id], atol=1e-4)
            expected = reference.setdefault(person.track_id, OneEuroKeypointFilter(
                keypoint_filter_config(smooth.config)))(
                raw_by_id[person.track_id], person.box_xyxy, _stamp(i))
            np.testing.assert_allclose(person.keypoints, expected, atol=1e-3)
            if i == 0:
                np.testing.assert_allclose(person.keypoints, raw_by_id[person.track_id],
                                           atol=1e-4)
            else:
                moved += int(not np.allclose(person.keypoints, raw_by_id[person.track_id]))
    assert moved > 0
    smooth.set_keypoint_filter('none')
    a, b = smooth.process(frames[4], _stamp(4)), raw.process(frames[4], _stamp(4))
    for person in a.persons:
        np.testing.assert_allclose(
            person.keypoints, next(p.keypoints for p in b.persons
                                   if p.track_id == person.track_id), atol=1e-4)
    with pytest.raises(ValueError):
        smooth.set_keypoint_filter(beta=-1.0)
