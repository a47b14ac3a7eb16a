"""CameraTracker: synthetic scenarios and hand-checked identities on real vtest.avi frames."""
from __future__ import annotations

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
    assert tracker.pop_removed_ids() == []


def test_absent_longer_than_max_age_gets_new_id_and_old_id_is_reported():
    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    stamp_ns = 0
    for _ in range(5):
        assert [p.track_id for p in tracker.update([det(100, 200)], stamp_ns)] == [1]
        stamp_ns += RATE_10HZ_NS
    last_seen_ns = stamp_ns - RATE_10HZ_NS
    while stamp_ns - last_seen_ns <= 1.5 * NS_PER_S:
        tracker.update([], stamp_ns)
        stamp_ns += RATE_10HZ_NS
    assert tracker.pop_removed_ids() == [1]
    assert tracker.pop_removed_ids() == [], 'popping clears the list'
    assert tracker.num_tracks == 0, 'removed tracks are dropped entirely'
    tracker.update([det(100, 200)], stamp_ns)                           # tentative
    people = tracker.update([det(100, 200)], stamp_ns + RATE_10HZ_NS)  # confirmed
    assert [p.track_id for p in people] == [2]


def test_reappearing_after_a_silent_gap_longer_than_max_age_gets_new_id():
    # Missed once, then no frames at all (e.g. a camera drop-out): expiry is by stamp.
    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    for frame in range(3):
        tracker.update([det(100, 200)], frame * RATE_10HZ_NS)
    tracker.update([], 3 * RATE_10HZ_NS)                 # lost from here on
    stamp_ns = 2 * RATE_10HZ_NS + int(1.5 * NS_PER_S)
    assert tracker.update([det(100, 200)], stamp_ns) == []   # a new, tentative track
    assert tracker.pop_removed_ids() == [1]
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
    assert tracker.pop_removed_ids() == []


def test_trackers_have_independent_id_counters():
    cam_a, cam_b = CameraTracker(), CameraTracker()
    assert [p.track_id for p in cam_a.update([det(100, 200), det(300, 200)], 0)] == [1, 2]
    assert [p.track_id for p in cam_b.update([det(500, 200)], 0)] == [1]
    cam_a.reset()
    assert [p.track_id for p in cam_b.update([det(500, 200), det(100, 200)],
                                             RATE_10HZ_NS)] == [1]   # new one is tentative
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
    assert tracker.reset_count == 1
    assert sorted(tracker.pop_removed_ids()) == [1, 2]
    assert [p.track_id for p in people] == [3], 'first frame after a reset confirms at once'
    tracker.propagate(RATE_10HZ_NS)
    tracker.propagate(0)                        # propagate also notices time going backwards
    assert tracker.reset_count == 2
    assert tracker.pop_removed_ids() == [3]


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


def test_low_or_unconfirmed_detections_do_not_create_ids():
    tracker = CameraTracker(TrackerConfig(min_hits=2))
    assert [p.track_id for p in tracker.update([det(100, 200)], 0)] == [1]
    # a one-frame false positive at x=400 stays tentative and is not reported
    people = tracker.update([det(100, 200), det(400, 200)], RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1]
    # a person too unsure (0.55 < new_track_score_threshold) never starts a track
    for frame in range(2, 6):
        people = tracker.update([det(100, 200), det(600, 200, score=0.55)],
                                frame * RATE_10HZ_NS)
        assert [p.track_id for p in people] == [1]
    # a real newcomer gets the next id, not one burned by the false positive
    tracker.update([det(100, 200), det(400, 200)], 6 * RATE_10HZ_NS)
    people = tracker.update([det(100, 200), det(400, 200)], 7 * RATE_10HZ_NS)
    assert [p.track_id for p in people] == [1, 2]


def test_memory_is_bounded_after_many_people_pass():
    tracker = CameraTracker(TrackerConfig(max_age_s=0.5))
    frame = 0
    for person in range(50):
        for _ in range(3):
            tracker.update([det(50 + 10 * person, 200)], frame * RATE_10HZ_NS)
            frame += 1
        tracker.update([], frame * RATE_10HZ_NS)   # missed: lost
        frame += 10                                # 1 s later the next person, close by
    tracker.update([], frame * RATE_10HZ_NS)
    assert tracker.num_tracks == 0
    assert tracker.pop_removed_ids() == list(range(1, 51))


@pytest.mark.parametrize('changes', [
    {'high_score_threshold': 1.5},
    {'low_score_threshold': -0.1},
    {'low_score_threshold': 0.6, 'high_score_threshold': 0.5},
    {'new_track_score_threshold': 2.0},
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
