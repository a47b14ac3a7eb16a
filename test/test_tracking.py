"""CameraTracker: synthetic scenarios and hand-checked identities on real vtest.avi frames."""
from __future__ import annotations

import collections
import enum
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.detection import Detection
from diffpose_ros.tracking import (
    NS_PER_S,
    CameraTracker,
    ConstantVelocityKalmanXYAH,
    TrackedPerson,
    TrackerConfig,
    iou_xyxy,
    xyah_to_xyxy,
    xyxy_to_xyah,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / 'data' / 'vtest_tracks_100_129.json'
RATE_30HZ_NS = NS_PER_S // 30
RATE_10HZ_NS = NS_PER_S // 10


def det(cx: float, cy: float, score: float = 0.9, w: float = 40.0, h: float = 100.0) -> Detection:
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)
    return Detection(box_xyxy=box, score=score, keypoints=np.zeros((17, 3), np.float32))


def centre_x(person: TrackedPerson) -> float:
    return float(person.box_xyxy[0] + person.box_xyxy[2]) / 2


def ids_by_nearest(people: list[TrackedPerson], boxes_xyxy: list, min_iou: float) -> list[int]:
    """Id of the tracked person with the highest IoU to each box (fails below min_iou)."""
    iou = iou_xyxy(np.array(boxes_xyxy, dtype=np.float32), np.stack([p.box_xyxy for p in people]))
    best = iou.argmax(axis=1)
    for row, col in enumerate(best):
        assert iou[row, col] >= min_iou, f'no tracked person at {boxes_xyxy[row]}'
    return [people[col].track_id for col in best]


# --- geometry and filter -----------------------------------------------------------------------

def test_box_format_round_trip_and_iou():
    box = np.array([10, 20, 50, 120], dtype=np.float32)
    np.testing.assert_allclose(xyxy_to_xyah(box), [30, 70, 0.4, 100])
    np.testing.assert_allclose(xyah_to_xyxy(xyxy_to_xyah(box)), box, atol=1e-4)
    iou = iou_xyxy(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10],
                                                           [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]])


def test_kalman_prediction_composes_over_time_steps():
    # Predicting 0.1 s then 0.2 s must equal predicting 0.3 s: the motion model uses real time.
    kf = ConstantVelocityKalmanXYAH()
    mean, cov = kf.initiate(np.array([100.0, 50.0, 0.5, 80.0]))
    mean[4] = 30.0                                     # 30 px/s to the right
    one_mean, one_cov = kf.predict(mean, cov, 0.3)
    two_mean, two_cov = kf.predict(*kf.predict(mean, cov, 0.1), 0.2)
    np.testing.assert_allclose(one_mean, two_mean)
    np.testing.assert_allclose(one_cov, two_cov, rtol=1e-9)
    assert one_mean[0] == pytest.approx(109.0)


# --- synthetic scenarios -----------------------------------------------------------------------

@pytest.mark.parametrize('period_ns', [RATE_30HZ_NS, RATE_10HZ_NS])
def test_two_people_crossing_keep_their_ids(period_ns):
    rng = np.random.default_rng(0)
    tracker = CameraTracker()
    speed_px_s = 120.0
    duration_s = 4.0
    seen = {'left_to_right': set(), 'right_to_left': set()}
    overlapped = False
    for frame in range(int(duration_s * NS_PER_S / period_ns)):
        t_s = frame * period_ns / NS_PER_S
        walkers = {'left_to_right': det(100 + speed_px_s * t_s, 200),
                   'right_to_left': det(580 - speed_px_s * t_s, 215)}   # offset: not identical
        overlapped |= iou_xyxy(walkers['left_to_right'].box_xyxy,
                               walkers['right_to_left'].box_xyxy)[0, 0] > 0.5
        order = rng.permutation(2)           # detector output order must not matter
        dets = [list(walkers.values())[i] for i in order]
        people = tracker.update(dets, frame * period_ns)
        for name, walker in walkers.items():
            (track_id,) = ids_by_nearest(people, [walker.box_xyxy], min_iou=0.99)
            seen[name].add(track_id)
    assert overlapped, 'the scenario must make the boxes overlap'
    assert seen == {'left_to_right': {1}, 'right_to_left': {2}}


@pytest.mark.parametrize('period_ns', [RATE_30HZ_NS, RATE_10HZ_NS])
def test_occluded_for_0_3_s_keeps_id(period_ns):
    tracker = CameraTracker()
    speed_px_s = 100.0
    occluded_s = (1.0, 1.3)
    reported = []
    for frame in range(int(2.0 * NS_PER_S / period_ns)):
        stamp_ns = frame * period_ns
        t_s = stamp_ns / NS_PER_S
        visible = not occluded_s[0] <= t_s < occluded_s[1]
        people = tracker.update([det(100 + speed_px_s * t_s, 200)] if visible else [], stamp_ns)
        assert len(people) == (1 if visible else 0)
        reported += [p.track_id for p in people]
    assert set(reported) == {1}
    assert tracker.num_tracks == 1


def test_absent_longer_than_max_age_gets_new_id():
    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    stamp_ns = 0
    for _ in range(5):
        assert [p.track_id for p in tracker.update([det(100, 200)], stamp_ns)] == [1]
        stamp_ns += RATE_10HZ_NS
    last_seen_ns = stamp_ns - RATE_10HZ_NS
    while stamp_ns - last_seen_ns <= 1.0 * NS_PER_S:
        tracker.update([], stamp_ns)
        stamp_ns += RATE_10HZ_NS
    assert tracker.num_tracks == 1, 'lost, but kept for max_age_s'
    tracker.update([], stamp_ns)
    assert tracker.num_tracks == 0, 'removed tracks are dropped entirely'
    stamp_ns += RATE_10HZ_NS
    for _ in range(3):   # reported from its first frame (tentative), then confirmed
        assert [p.track_id for p in tracker.update([det(100, 200)], stamp_ns)] == [2]
        stamp_ns += RATE_10HZ_NS


def test_reappearing_after_a_silent_gap_longer_than_max_age_gets_new_id():
    # Missed once, then no frames at all (e.g. a camera drop-out): expiry is by stamp.
    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    for frame in range(3):
        tracker.update([det(100, 200)], frame * RATE_10HZ_NS)
    tracker.update([], 3 * RATE_10HZ_NS)                 # lost from here on
    stamp_ns = 2 * RATE_10HZ_NS + int(1.5 * NS_PER_S)
    people = tracker.update([det(100, 200)], stamp_ns)   # a new, tentative track
    assert [p.track_id for p in people] == [2] and tracker.num_tracks == 1
    people = tracker.update([det(100, 200)], stamp_ns + RATE_10HZ_NS)
    assert [p.track_id for p in people] == [2]


def test_stamp_gap_within_max_age_keeps_track_moving_fast():
    # Frames arrive irregularly; the person moves 2 box widths during the 0.4 s gap, so only a
    # motion model that uses the real dt keeps the boxes overlapping.
    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    speed_px_s = 200.0
    stamps_s = [0.0, 0.033, 0.1, 0.133, 0.2, 0.3, 0.7, 0.75, 1.6, 1.65]   # gaps 0.4 s and 0.85 s
    for t_s in stamps_s:
        people = tracker.update([det(100 + speed_px_s * t_s, 200)], int(t_s * NS_PER_S))
        assert [p.track_id for p in people] == [1], f'lost the person at t={t_s} s'
    assert tracker.num_tracks == 1


def test_trackers_have_independent_id_counters():
    cam_a, cam_b = CameraTracker(), CameraTracker()
    assert [p.track_id for p in cam_a.update([det(100, 200), det(300, 200)], 0)] == [1, 2]
    assert [p.track_id for p in cam_b.update([det(500, 200)], 0)] == [1]
    cam_a.reset()
    assert [p.track_id for p in cam_b.update([det(500, 200), det(100, 200)],
                                             RATE_10HZ_NS)] == [1, 2]   # new one: tentative
    assert [p.track_id for p in cam_b.update([det(500, 200), det(100, 200)],
                                             2 * RATE_10HZ_NS)] == [1, 2]
    assert [p.track_id for p in cam_a.update([det(100, 200)], RATE_10HZ_NS)] == [3]
    assert (cam_a.reset_count, cam_b.reset_count) == (1, 0)


def test_backwards_stamp_resets_and_never_reuses_ids():
    tracker = CameraTracker()
    for frame in range(3):
        tracker.update([det(100, 200), det(300, 200)], 10 * NS_PER_S + frame * RATE_10HZ_NS)
    assert tracker.reset_count == 0
    # the bag loops: time jumps back 10 s
    people = tracker.update([det(100, 200)], 0)
    assert tracker.reset_count == 1 and tracker.num_tracks == 1
    assert [p.track_id for p in people] == [3], 'first frame after a reset confirms at once'
    assert [p.track_id for p in tracker.propagate(RATE_10HZ_NS)] == [3]
    assert tracker.propagate(0) == []           # propagate also notices time going backwards
    assert tracker.reset_count == 2 and tracker.num_tracks == 0


def test_propagate_moves_boxes_along_velocity():
    tracker = CameraTracker()
    speed_px_s = 100.0
    for frame in range(10):
        t_s = frame * RATE_10HZ_NS / NS_PER_S
        tracker.update([det(100 + speed_px_s * t_s, 200)], frame * RATE_10HZ_NS)
    last_x = 100 + speed_px_s * 0.9
    (moved,) = tracker.propagate(int(1.4 * NS_PER_S))
    assert moved.track_id == 1 and moved.is_predicted and moved.keypoints is None
    assert moved.stamp_ns == int(1.4 * NS_PER_S)
    assert centre_x(moved) == pytest.approx(last_x + 0.5 * speed_px_s, abs=3.0)
    assert float(moved.box_xyxy[3] - moved.box_xyxy[1]) == pytest.approx(100.0, abs=2.0)
    # detect-every-n: the detector returns where the motion model said
    (matched,) = tracker.update([det(100 + speed_px_s * 1.5, 200)], int(1.5 * NS_PER_S))
    assert matched.track_id == 1 and not matched.is_predicted and matched.keypoints is not None


def test_propagate_keeps_tracks_between_sparse_detections():
    # Detector every 5th frame at 30 Hz for 4 s; with max_age_s shorter than the detector period
    # a skipped frame is not evidence of absence, so the track survives.
    tracker = CameraTracker(TrackerConfig(max_age_s=0.1))
    for frame in range(120):
        stamp_ns = frame * RATE_30HZ_NS
        x = 100 + 60.0 * stamp_ns / NS_PER_S
        people = (tracker.update([det(x, 200)], stamp_ns) if frame % 5 == 0
                  else tracker.propagate(stamp_ns))
        assert [p.track_id for p in people] == [1]
        assert all(p.is_predicted == (frame % 5 != 0) for p in people)


def test_low_score_detection_keeps_tracked_person():
    # ByteTrack's second association: a partly occluded person (score 0.3) keeps the track.
    tracker = CameraTracker()
    scores = [0.9] * 5 + [0.3] * 5 + [0.9] * 2
    for frame, score in enumerate(scores):
        people = tracker.update([det(100 + 3.0 * frame, 200, score=score)],
                                frame * RATE_10HZ_NS)
        assert [(p.track_id, p.score) for p in people] == [(1, pytest.approx(score))]


def test_every_detection_is_reported_in_its_frame():
    # Recall equals the detector's: the first frame, newcomers (tentative), low-score and
    # too-unsure detections, in random order, each get exactly one person with its own id.
    rng = np.random.default_rng(1)
    tracker = CameraTracker(TrackerConfig(new_track_score_threshold=0.4))
    for frame in range(40):
        count = int(rng.integers(0, 7))
        dets = [det(float(rng.uniform(0, 1000)), float(rng.uniform(0, 600)),
                    score=float(rng.uniform(0.25, 1.0))) for _ in range(count)]
        people = tracker.update(dets, frame * RATE_10HZ_NS)
        assert len(people) == len(dets)
        assert len({p.track_id for p in people}) == len(people)
        reported = sorted(tuple(p.box_xyxy.tolist()) + (p.score,) for p in people)
        given = sorted(tuple(d.box_xyxy.tolist()) + (d.score,) for d in dets)
        assert reported == given          # each its own detection's box and score
        assert all(not p.is_predicted and p.keypoints is not None for p in people)


def test_new_person_keeps_the_id_of_its_first_frame():
    tracker = CameraTracker(TrackerConfig(min_hits=3))
    assert [p.track_id for p in tracker.update([det(100, 200)], 0)] == [1]
    for frame in range(1, 6):
        people = tracker.update([det(100, 200), det(400, 200)], frame * RATE_10HZ_NS)
        assert [p.track_id for p in people] == [1, 2]   # tentative on frames 1-2, then confirmed


def test_tentative_false_positive_is_dropped_after_one_miss():
    tracker = CameraTracker()
    assert [p.track_id for p in tracker.update([det(100, 200)], 0)] == [1]
    # a one-frame false positive at x=400 is reported (the detector reported it) ...
    people = tracker.update([det(100, 200), det(400, 200)], RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2] and tracker.num_tracks == 2
    # ... and forgotten at its first miss; a person there later gets a new id
    assert [p.track_id for p in tracker.update([det(100, 200)], 2 * RATE_10HZ_NS)] == [1]
    assert tracker.num_tracks == 1
    people = tracker.update([det(100, 200), det(400, 200)], 3 * RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 3]


def test_person_with_low_scores_throughout_gets_one_lasting_track():
    # Scores between the detector's threshold and high_score_threshold on every frame: not
    # ByteTrack's high detections, yet the person must start and keep a track.
    tracker = CameraTracker()
    ids = [p.track_id for frame in range(10)
           for p in tracker.update([det(100 + 4.0 * frame, 200, score=0.3 + 0.01 * frame)],
                                   frame * RATE_10HZ_NS)]
    assert ids == [1] * 10


def test_unsure_detection_gets_one_frame_ids_and_no_track():
    tracker = CameraTracker(TrackerConfig(new_track_score_threshold=0.6))
    ids = []
    for frame in range(4):
        people = tracker.update([det(100, 200), det(600, 200, score=0.55)],
                                frame * RATE_10HZ_NS)
        assert len(people) == 2 and people[0].track_id == 1
        ids.append(people[1].track_id)
        assert tracker.num_tracks == 1, 'the unsure one holds no track'
    assert ids == [2, 3, 4, 5]
    assert [p.track_id for p in tracker.propagate(5 * RATE_10HZ_NS)] == [1]


def test_propagate_reports_tentative_tracks_too():
    tracker = CameraTracker()
    tracker.update([det(100, 200)], 0)
    tracker.update([det(100, 200), det(400, 200)], RATE_10HZ_NS)   # 2 is tentative
    people = tracker.propagate(2 * RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2] and all(p.is_predicted for p in people)
    people = tracker.update([det(100, 200), det(400, 200)], 3 * RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2]


def test_low_score_duplicate_box_does_not_steal_the_person():
    # Real case (Bonn PoseTrack 060470979, frames 20-26): behind another person, YOLO adds an
    # upper-body box (score ~0.3) inside the occluded person's box. Were it a track, it would
    # take the person's next low-score detection (closer in shape) and with it the identity.
    def box(x0, y0, x1, y1, score):
        return Detection(box_xyxy=np.array([x0, y0, x1, y1], np.float32), score=score,
                         keypoints=np.zeros((17, 3), np.float32))

    frames = [   # YOLO11n-pose's boxes of the occluded person on Bonn frames 14-26
        [box(437, 29, 527, 302, 0.86)],
        [box(429, 30, 516, 305, 0.85)],
        [box(422, 30, 508, 303, 0.81)],
        [box(423, 28, 503, 304, 0.76)],
        [box(417, 28, 488, 304, 0.70)],
        [box(413, 28, 481, 295, 0.71)],
        [box(407, 32, 480, 304, 0.55), box(413, 29, 482, 218, 0.28)],   # + upper body
        [box(398, 28, 472, 301, 0.46), box(395, 28, 472, 219, 0.29)],
        [box(368, 29, 462, 212, 0.36)],                                  # only the upper body
        [box(357, 30, 453, 140, 0.49), box(358, 30, 458, 193, 0.36)],
        [box(352, 30, 445, 142, 0.67)],
        [box(344, 29, 446, 162, 0.59)],
        [box(338, 30, 446, 233, 0.53)],
    ]
    tracker = CameraTracker()
    ids = []
    for index, dets in enumerate(frames):
        people = tracker.update(dets, index * 40_000_000)
        assert len(people) == len(dets)
        ids.append([p.track_id for p in people])
        assert tracker.num_tracks == 1, 'duplicates start no track'
    assert [frame_ids[0] for frame_ids in ids] == [1] * len(frames)
    assert [frame_ids[1:] for frame_ids in ids] == [[]] * 6 + [[2], [3], [], [4]] + [[]] * 3
    # without the duplicate check the upper-body box starts a track that takes the person over
    tracker = CameraTracker(TrackerConfig(duplicate_ioa_threshold=1.0))
    ids = [[p.track_id for p in tracker.update(dets, index * 40_000_000)]
           for index, dets in enumerate(frames)]
    assert ids[8:12] == [[2], [2, 3], [2], [2]], ids   # the person's own track 1 is lost


def test_confident_or_separate_low_score_detections_start_tracks():
    tracker = CameraTracker()
    tracker.update([det(100, 200, w=80, h=200)], 0)
    # inside the tracked person's box, but confident (ByteTrack's rule: it starts a track)
    people = tracker.update([det(100, 200, w=80, h=200), det(100, 170, score=0.7)],
                            RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2] and tracker.num_tracks == 2
    # low score but apart from everyone: a person of its own
    people = tracker.update([det(100, 200, w=80, h=200), det(100, 170, score=0.7),
                             det(500, 200, score=0.3)], 2 * RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2, 3] and tracker.num_tracks == 3
    # duplicate check off: a low-score box inside a person's starts a track too
    tracker = CameraTracker(TrackerConfig(duplicate_ioa_threshold=1.0))
    tracker.update([det(100, 200, w=80, h=200)], 0)
    tracker.update([det(100, 200, w=80, h=200), det(100, 170, score=0.3)], RATE_10HZ_NS)
    assert tracker.num_tracks == 2


def test_pipeline_and_node_defaults_are_the_tracker_defaults():
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.ros import params
    from diffpose_ros.tracking import tracker_config

    assert tracker_config(PipelineConfig()) == TrackerConfig()
    assert tracker_config(params.to_pipeline_config({})) == TrackerConfig()
    changed = PipelineConfig(track_high_score_threshold=0.6, track_new_score_threshold=0.3,
                             track_duplicate_ioa_threshold=0.9, track_match_iou_threshold=0.25,
                             track_second_match_iou_threshold=0.55,
                             track_unconfirmed_match_iou_threshold=0.35, track_min_hits=3,
                             track_max_age_s=2.0)
    assert tracker_config(changed) == TrackerConfig(
        high_score_threshold=0.6, new_track_score_threshold=0.3, duplicate_ioa_threshold=0.9,
        match_iou_threshold=0.25, second_match_iou_threshold=0.55,
        unconfirmed_match_iou_threshold=0.35, min_hits=3, max_age_s=2.0)
    with pytest.raises(ValueError, match='track_min_hits'):
        PipelineConfig(track_min_hits=0)
    with pytest.raises(ValueError, match='track_duplicate_ioa_threshold'):
        PipelineConfig(track_duplicate_ioa_threshold=0.0)


def _held_items(obj, seen=None) -> int:
    """Items held in every container reachable from ``obj``'s attributes (a leak grows it)."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (int, float, str, bool, type(None), np.ndarray,
                                           enum.Enum)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, dict):
        return len(obj) + sum(_held_items(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return len(obj) + sum(_held_items(v, seen) for v in obj)
    if hasattr(obj, '__dict__'):
        return sum(_held_items(v, seen) for v in vars(obj).values())
    return 0


def test_state_stays_bounded_over_a_long_stream():
    # 6,000 frames (3.3 min at 30 Hz): walkers enter and leave, one-frame false positives,
    # unsure detections and a looping source (time jumps back). What the tracker holds must
    # not grow with the stream's length, only with the people in view.
    rng = np.random.default_rng(7)
    tracker = CameraTracker(TrackerConfig(max_age_s=0.5, new_track_score_threshold=0.3))
    walkers: list[list[float]] = []      # [x, y, vx]
    held, tracks = [], []
    stamp_ns = 0
    for frame in range(6_000):
        if rng.random() < 0.03 and len(walkers) < 6:
            walkers.append([0.0, float(rng.uniform(100, 500)), float(rng.uniform(2, 8))])
        for walker in walkers:
            walker[0] += walker[2]
        walkers = [w for w in walkers if w[0] < 1000]
        dets = [det(x, y) for x, y, _ in walkers if rng.random() > 0.1]   # 10 % missed
        if rng.random() < 0.2:
            dets.append(det(float(rng.uniform(0, 1000)), float(rng.uniform(0, 600)),
                            score=float(rng.uniform(0.25, 0.6))))
        stamp_ns = 0 if frame % 2_500 == 2_499 else stamp_ns + RATE_30HZ_NS
        tracker.update(dets, stamp_ns)
        if frame % 300 == 299:
            held.append(_held_items(tracker))
            tracks.append(tracker.num_tracks)
    assert tracker.reset_count == 2
    assert max(tracks) <= 12
    assert max(held) <= 3 * max(tracks) + 10, held
    # the second half holds no more than the first (a leak grows linearly with frames)
    assert max(held[10:]) <= max(held[:10]) + 10, held


@pytest.mark.parametrize('changes', [
    {'high_score_threshold': 1.5},
    {'new_track_score_threshold': 2.0},
    {'new_track_score_threshold': -0.1},
    {'duplicate_ioa_threshold': 0.0},
    {'match_iou_threshold': 0.0},
    {'second_match_iou_threshold': 1.1},
    {'unconfirmed_match_iou_threshold': -0.2},
    {'max_age_s': 0.0},
    {'min_hits': 0},
    {'min_hits': 1.5},
])
def test_config_validation(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        TrackerConfig(**changes)


def test_tracking_module_is_light():
    # The tracker must not drag in torch, Ultralytics or ROS.
    code = ('import sys, diffpose_ros.tracking; '
            'bad = [m for m in ("torch", "ultralytics", "rclpy", "cv2") if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, check=True)


# --- real frames --------------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_real_frames_keep_identities(vtest_detector, vtest_frames_100_129):
    spec = json.loads(FIXTURE.read_text())
    assert vtest_detector.imgsz == spec['detector_imgsz']
    tracker = CameraTracker()
    people_per_frame = [
        tracker.update(vtest_detector.detect(frame), index * spec['frame_period_ns'])
        for index, frame in enumerate(vtest_frames_100_129[:spec['num_frames']])
    ]
    ids_per_person = {}
    for person in spec['persons']:
        ids = {
            frame_str: ids_by_nearest(people_per_frame[int(frame_str)], [box],
                                      spec['min_checkpoint_iou'])[0]
            for frame_str, box in person['checkpoints_xyxy'].items()
        }
        assert len(set(ids.values())) == 1, f'{person["name"]} changed id: {ids}'
        ids_per_person[person['name']] = next(iter(ids.values()))
    assert len(set(ids_per_person.values())) == len(ids_per_person), ids_per_person
