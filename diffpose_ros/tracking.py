"""ByteTrack-style multi-person tracker, one instance per camera.

Association follows ByteTrack (Zhang et al., ECCV 2022): high-score detections are matched to all
tracks by IoU first, then low-score detections to the still unmatched, currently tracked tracks,
so that people who are partly occluded (low score) keep their track instead of spawning a new one.
The detector's own score threshold is ByteTrack's low threshold: every detection passed to
``update()`` is used, and every one is reported with an id in that frame (recall equals the
detector's), including the first frame of a stream and single photos.

Differences from ``ultralytics.trackers.BYTETracker``, on purpose:

- every ``CameraTracker`` owns its id counter (Ultralytics' ``BaseTrack._count`` is class-global,
  so two cameras would share and reset each other's ids);
- ages and the motion model use message stamps in seconds (Ultralytics counts frames with a
  hard-coded frame rate), so irregular frame rates and "detect every n-th frame" work;
- every threshold lives in ``TrackerConfig``;
- a new (tentative) track gets its id and is reported from its first frame, and a detection
  that starts no track is still reported, under an id of its own for that frame; Ultralytics
  reports neither, so it outputs fewer persons than it detects;
- low-score detections may start tracks too (ByteTrack drops them), unless they duplicate a
  person already matched in the frame (e.g. the upper-body box YOLO adds inside an occluded
  person's box): such a duplicate would later steal that person's detections and id;
- matched tracks report the detection's own box (what the keypoints belong to); the Kalman filter
  only bridges frames without a detection.

Pure numpy + ``lap``; importable without ROS or torch.
"""
from __future__ import annotations

import dataclasses
import enum
import itertools
from typing import Any

import lap
import numpy as np

from diffpose_ros.detection import Detection

NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds; all scores are detector confidences, all IoUs in [0, 1].

    Attributes:
        high_score_threshold: Detections at or above this are matched first, against all
            confirmed tracks (tracked and lost); the others (down to the detector's threshold)
            only continue currently tracked people (ByteTrack's second association).
        new_track_score_threshold: A detection matching no track starts a (tentative) track at
            or above this score; below it, it is reported under an id used for that frame only.
        duplicate_ioa_threshold: A low-score detection matching no track starts no track when
            more than this share of its box (intersection over its own area) lies inside the
            box of a person already reported in the frame (a duplicate box of that person); it
            is reported under a one-frame id. 1 = never treated as a duplicate.
        match_iou_threshold: Minimum IoU for the first association (high-score detections).
        second_match_iou_threshold: Minimum IoU for the second association (low-score
            detections); stricter, because low-score boxes are less reliable.
        unconfirmed_match_iou_threshold: Minimum IoU to match a tentative track.
        max_age_s: A lost track is removed this long after its last match.
        min_hits: A tentative track is confirmed once matched in this many consecutive updates,
            counting the one that created it; 1 confirms at once. A tentative track that misses
            an update is dropped (a confirmed one is kept as lost for ``max_age_s``). Tracks
            created by the first update after a reset are confirmed at once (nothing to confirm
            them against).
    """

    high_score_threshold: float = 0.5
    new_track_score_threshold: float = 0.25
    duplicate_ioa_threshold: float = 0.8
    match_iou_threshold: float = 0.2
    second_match_iou_threshold: float = 0.5
    unconfirmed_match_iou_threshold: float = 0.3
    max_age_s: float = 1.0
    min_hits: int = 2

    def __post_init__(self) -> None:
        for name in ('high_score_threshold', 'new_track_score_threshold'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        for name in ('duplicate_ioa_threshold', 'match_iou_threshold',
                     'second_match_iou_threshold', 'unconfirmed_match_iou_threshold'):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f'{name} must be in (0, 1], got {value}')
        if not self.max_age_s > 0.0:
            raise ValueError(f'max_age_s must be > 0, got {self.max_age_s}')
        if isinstance(self.min_hits, bool) or not isinstance(self.min_hits, int) \
                or self.min_hits < 1:
            raise ValueError(f'min_hits must be an int >= 1, got {self.min_hits!r}')


def tracker_config(config: Any) -> TrackerConfig:
    """The tracker settings of a ``PipelineConfig`` (its ``track_*`` fields)."""
    return TrackerConfig(
        high_score_threshold=config.track_high_score_threshold,
        new_track_score_threshold=config.track_new_score_threshold,
        duplicate_ioa_threshold=config.track_duplicate_ioa_threshold,
        match_iou_threshold=config.track_match_iou_threshold,
        second_match_iou_threshold=config.track_second_match_iou_threshold,
        unconfirmed_match_iou_threshold=config.track_unconfirmed_match_iou_threshold,
        max_age_s=config.track_max_age_s,
        min_hits=config.track_min_hits)


@dataclasses.dataclass
class TrackedPerson:
    """One tracked person in one frame.

    Attributes:
        track_id: Id unique within its ``CameraTracker`` for the tracker's lifetime (>= 1).
        box_xyxy: (4,) float32 box in image pixels: the matched detection's box, or the motion
            model's prediction when ``is_predicted``.
        score: Score of the matched detection; the last matched score when predicted.
        keypoints: (17, 3) detector keypoints of the matched detection; None when predicted.
        is_predicted: True when no detection was matched this frame and the box comes from the
            motion model.
        stamp_ns: Stamp of the frame this state belongs to, in nanoseconds.
    """

    track_id: int
    box_xyxy: np.ndarray
    score: float
    keypoints: np.ndarray | None
    is_predicted: bool
    stamp_ns: int


def xyxy_to_xyah(box_xyxy: np.ndarray) -> np.ndarray:
    """(4,) corners -> (4,) centre x, centre y, aspect ratio width / height, height."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    height = max(y2 - y1, 1e-6)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / height, height])


def xyah_to_xyxy(box_xyah: np.ndarray) -> np.ndarray:
    """(4,) centre x, centre y, aspect ratio, height -> (4,) float32 corners."""
    cx, cy, aspect, height = (float(v) for v in box_xyah[:4])
    half_w, half_h = aspect * height / 2, height / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=np.float32)


def _intersections(boxes_a_xyxy: np.ndarray, boxes_b_xyxy: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersection areas (A, B) of (A, 4) and (B, 4) boxes; their areas (A,), (B,)."""
    a = np.asarray(boxes_a_xyxy, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b_xyxy, dtype=np.float64).reshape(-1, 4)
    inter_w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    inter_h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return inter, area_a, area_b


def iou_xyxy(boxes_a_xyxy: np.ndarray, boxes_b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (A, 4) and (B, 4) boxes -> (A, B)."""
    inter, area_a, area_b = _intersections(boxes_a_xyxy, boxes_b_xyxy)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def ioa_xyxy(boxes_a_xyxy: np.ndarray, boxes_b_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the area of the first box, (A, 4) and (B, 4) -> (A, B)."""
    inter, area_a, _ = _intersections(boxes_a_xyxy, boxes_b_xyxy)
    return np.where(area_a[:, None] > 0, inter / np.maximum(area_a[:, None], 1e-12), 0.0)


def match_by_iou(iou: np.ndarray, min_iou: float) -> tuple[list[tuple[int, int]], list[int],
                                                             list[int]]:
    """Optimal one-to-one assignment maximising IoU, keeping pairs with IoU >= min_iou.

    Args:
        iou: (R, C) IoU between R tracks and C detections.
        min_iou: Pairs below this IoU are never matched.

    Returns:
        (row, col) matches, unmatched rows, unmatched cols.
    """
    rows, cols = iou.shape
    if rows == 0 or cols == 0:
        return [], list(range(rows)), list(range(cols))
    # lapjv with cost_limit leaves every row/col whose best cost exceeds the limit unassigned.
    _, row_to_col, col_to_row = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - min_iou)
    matches = [(r, int(c)) for r, c in enumerate(row_to_col) if c >= 0]
    unmatched_rows = [r for r, c in enumerate(row_to_col) if c < 0]
    unmatched_cols = [c for c, r in enumerate(col_to_row) if r < 0]
    return matches, unmatched_rows, unmatched_cols


class ConstantVelocityKalmanXYAH:
    """Constant-velocity Kalman filter on boxes in (cx, cy, aspect, height) form.

    State (8,): cx, cy, aspect, height in px (aspect unitless) and their rates per second.
    The process noise is continuous white acceleration integrated over the real time step, so
    predicting 0.1 s twice equals predicting 0.2 s once; position noises scale with the box
    height (a near person moves more pixels than a far one), as in SORT/ByteTrack.
    """

    # Model constants (not decision thresholds); heights per second are 'h/s'.
    measurement_std_per_h = 0.05      # detector box noise, fraction of box height
    aspect_measurement_std = 0.05     # detector aspect-ratio noise (unitless)
    accel_std_per_h = 2.0             # h/s^2: people start, stop and turn
    aspect_accel_std = 0.5            # 1/s^2
    init_position_std_per_h = 0.1
    init_velocity_std_per_h = 1.5     # h/s: a new track's speed is unknown
    init_aspect_velocity_std = 0.1    # 1/s

    def initiate(self, box_xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean (8,) and covariance (8, 8) of a new track at rest at ``box_xyah``."""
        mean = np.concatenate([np.asarray(box_xyah, dtype=np.float64), np.zeros(4)])
        height = mean[3]
        pos_std = self.init_position_std_per_h * height
        vel_std = self.init_velocity_std_per_h * height
        std = np.array([pos_std, pos_std, self.aspect_measurement_std, pos_std,
                        vel_std, vel_std, self.init_aspect_velocity_std, vel_std])
        return mean, np.diag(std ** 2)

    def predict(self, mean: np.ndarray, covariance: np.ndarray,
                dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Propagate the state ``dt_s`` seconds ahead (dt_s <= 0 leaves it unchanged)."""
        if dt_s <= 0.0:
            return mean, covariance
        motion = np.eye(8)
        motion[:4, 4:] = np.eye(4) * dt_s
        accel_var = np.array([self.accel_std_per_h, self.accel_std_per_h, self.aspect_accel_std,
                              self.accel_std_per_h]) ** 2
        accel_var[[0, 1, 3]] *= mean[3] ** 2
        # Continuous white-noise acceleration: per axis q * [[dt^3/3, dt^2/2], [dt^2/2, dt]].
        noise = np.zeros((8, 8))
        idx = np.arange(4)
        noise[idx, idx] = accel_var * dt_s ** 3 / 3
        noise[idx, idx + 4] = noise[idx + 4, idx] = accel_var * dt_s ** 2 / 2
        noise[idx + 4, idx + 4] = accel_var * dt_s
        mean = motion @ mean
        mean[3] = max(mean[3], 1.0)          # a box never shrinks below one pixel
        return mean, motion @ covariance @ motion.T + noise

    def update(self, mean: np.ndarray, covariance: np.ndarray,
               box_xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct the state with a measured box."""
        meas_std = self.measurement_std_per_h * mean[3]
        meas_cov = np.diag(np.array([meas_std, meas_std, self.aspect_measurement_std,
                                     meas_std]) ** 2)
        projected_cov = covariance[:4, :4] + meas_cov
        gain = np.linalg.solve(projected_cov, covariance[:4, :]).T     # (8, 4)
        innovation = np.asarray(box_xyah, dtype=np.float64) - mean[:4]
        mean = mean + gain @ innovation
        covariance = covariance - gain @ projected_cov @ gain.T
        return mean, (covariance + covariance.T) / 2


class TrackState(enum.Enum):
    TENTATIVE = 'tentative'   # not yet confirmed; has an id, dropped when it misses an update
    TRACKED = 'tracked'       # matched in the last update
    LOST = 'lost'             # not matched in the last update; kept up to max_age_s


class _Track:
    """Internal per-track state (the caller sees TrackedPerson)."""

    def __init__(self, detection: Detection, stamp_ns: int, kalman: ConstantVelocityKalmanXYAH,
                 state: TrackState, track_id: int) -> None:
        self.kalman = kalman
        self.mean, self.covariance = kalman.initiate(xyxy_to_xyah(detection.box_xyxy))
        self.state_stamp_ns = stamp_ns       # time the Kalman state refers to
        self.last_match_stamp_ns = stamp_ns
        self.hits = 1
        self.state = state
        self.track_id = track_id
        self.detection = detection

    @property
    def predicted_box_xyxy(self) -> np.ndarray:
        return xyah_to_xyxy(self.mean)

    def predict_to(self, stamp_ns: int) -> None:
        dt_s = (stamp_ns - self.state_stamp_ns) / NS_PER_S
        self.mean, self.covariance = self.kalman.predict(self.mean, self.covariance, dt_s)
        self.state_stamp_ns = max(self.state_stamp_ns, stamp_ns)

    def match(self, detection: Detection, stamp_ns: int) -> None:
        self.mean, self.covariance = self.kalman.update(
            self.mean, self.covariance, xyxy_to_xyah(detection.box_xyxy))
        self.detection = detection
        self.last_match_stamp_ns = stamp_ns
        self.hits += 1

    def as_person(self, stamp_ns: int, is_predicted: bool) -> TrackedPerson:
        if is_predicted:
            box, keypoints = self.predicted_box_xyxy, None
        else:
            box = np.asarray(self.detection.box_xyxy, dtype=np.float32).copy()
            keypoints = self.detection.keypoints
        return TrackedPerson(track_id=self.track_id, box_xyxy=box,
                             score=float(self.detection.score), keypoints=keypoints,
                             is_predicted=is_predicted, stamp_ns=int(stamp_ns))


class CameraTracker:
    """Tracks the people seen by one camera; create one per camera.

    Call ``update()`` on frames with detections and ``propagate()`` on frames without (e.g. when
    the detector runs every n-th frame). Stamps are the image header stamps in nanoseconds; a
    stamp older than the previous one (a bag restarting) resets the tracker.

    A person counts as absent only on frames where ``update()`` ran without matching them: such a
    lost track is removed ``max_age_s`` after its last match. A silent gap (no frames, or only
    ``propagate()``) is no evidence of absence, so tracked people stay matchable across it.

    Ids count up from 1 per instance and are never reused, not even after ``reset()``, so
    downstream state keyed by id cannot mix two people (free it by age, as
    ``TrackBuffers.prune`` does). The tracker holds only its live tracks: its memory is bounded
    by the people in view, however long it runs.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self._kalman = ConstantVelocityKalmanXYAH()
        self._ids = itertools.count(1)
        self._tracks: list[_Track] = []
        self._last_stamp_ns: int | None = None
        self._updated_since_reset = False
        self.reset_count = 0

    @property
    def num_tracks(self) -> int:
        """Tracks held in memory, including tentative and lost ones."""
        return len(self._tracks)

    def reset(self) -> None:
        """Drop all tracks (their ids are never used again)."""
        self._tracks = []
        self._last_stamp_ns = None
        self._updated_since_reset = False
        self.reset_count += 1

    def update(self, detections: list[Detection], stamp_ns: int) -> list[TrackedPerson]:
        """Associate this frame's detections with the tracks.

        Args:
            detections: Detections of the frame at ``stamp_ns`` (all are used: the detector's
                score threshold is the tracker's low threshold).
            stamp_ns: Image stamp in nanoseconds.

        Returns:
            One person per detection (``is_predicted`` False), sorted by track id: matched to
            its track, on a new track, or under a one-frame id when too unsure to start one.
        """
        self._advance_time(stamp_ns)
        cfg = self.config
        # 0. Forget lost tracks older than max_age_s before they can be matched again.
        self._remove_expired(stamp_ns)
        for track in self._tracks:
            track.predict_to(stamp_ns)
        high = [d for d in detections if d.score >= cfg.high_score_threshold]
        low = [d for d in detections if d.score < cfg.high_score_threshold]
        confirmed = [t for t in self._tracks if t.state is not TrackState.TENTATIVE]
        tentative = [t for t in self._tracks if t.state is TrackState.TENTATIVE]
        reported: list[_Track] = []

        # 1. High-score detections vs all confirmed tracks (tracked and lost).
        pairs, rest_tracks, rest_high = self._associate(
            confirmed, high, cfg.match_iou_threshold)
        for track, det in pairs:
            self._match(track, det, stamp_ns, reported)

        # 2. Low-score detections vs tracks that were tracked until now (not the lost ones):
        #    keeps partly occluded people on their track.
        still_tracked = [t for t in rest_tracks if t.state is TrackState.TRACKED]
        pairs, unmatched_tracked, rest_low = self._associate(
            still_tracked, low, cfg.second_match_iou_threshold)
        for track, det in pairs:
            self._match(track, det, stamp_ns, reported)
        for track in unmatched_tracked:
            track.state = TrackState.LOST

        # 3. The rest vs tentative tracks; unmatched tentative tracks die. Low-score detections
        #    take part: a person scored 0.3-0.5 throughout must still get a lasting track.
        pairs, dead_tentative, rest = self._associate(
            tentative, rest_high + rest_low, cfg.unconfirmed_match_iou_threshold)
        for track, det in pairs:
            self._match(track, det, stamp_ns, reported)
        dead = set(map(id, dead_tentative))

        # 4. Detections matching no track start one (most confident first); too unsure ones
        #    and low-score duplicates of a person in this frame get a one-frame id.
        first_frame = not self._updated_since_reset
        for det in sorted(rest, key=lambda d: -d.score):
            starts = det.score >= cfg.new_track_score_threshold and (
                det.score >= cfg.high_score_threshold or not self._duplicates(det, reported))
            track = _Track(det, stamp_ns, self._kalman, TrackState.TENTATIVE, next(self._ids))
            reported.append(track)
            if not starts:
                continue
            if first_frame or cfg.min_hits <= 1:
                track.state = TrackState.TRACKED
            self._tracks.append(track)

        # 5. Forget tentative tracks that missed a frame and tracks lost for too long.
        self._tracks = [t for t in self._tracks if id(t) not in dead]
        self._remove_expired(stamp_ns)
        self._updated_since_reset = True
        return sorted((t.as_person(stamp_ns, is_predicted=False) for t in reported),
                      key=lambda p: p.track_id)

    def propagate(self, stamp_ns: int) -> list[TrackedPerson]:
        """Predict the tracked persons' boxes to a frame the detector did not run on.

        Tracks stay in their state (a skipped detection is no evidence of absence); lost tracks
        still expire after ``max_age_s``.

        Returns:
            Persons matched at the last update (tentative tracks included; one-frame ids not),
            boxes moved by the motion model (``is_predicted`` True, ``keypoints`` None), sorted
            by track id.
        """
        self._advance_time(stamp_ns)
        self._remove_expired(stamp_ns)
        for track in self._tracks:
            track.predict_to(stamp_ns)
        active = [t for t in self._tracks if t.state is not TrackState.LOST]
        return sorted((t.as_person(stamp_ns, is_predicted=True) for t in active),
                      key=lambda p: p.track_id)

    def _advance_time(self, stamp_ns: int) -> None:
        stamp_ns = int(stamp_ns)
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            self.reset()   # time went backwards: a looping bag or a restarted source
        self._last_stamp_ns = stamp_ns

    def _associate(self, tracks: list[_Track], detections: list[Detection], min_iou: float
                   ) -> tuple[list[tuple[_Track, Detection]], list[_Track], list[Detection]]:
        iou = np.zeros((len(tracks), len(detections)))
        if tracks and detections:
            iou = iou_xyxy(np.stack([t.predicted_box_xyxy for t in tracks]),
                           np.stack([d.box_xyxy for d in detections]))
        pairs, rest_rows, rest_cols = match_by_iou(iou, min_iou)
        return ([(tracks[r], detections[c]) for r, c in pairs], [tracks[r] for r in rest_rows],
                [detections[c] for c in rest_cols])

    def _duplicates(self, det: Detection, reported: list[_Track]) -> bool:
        """Whether ``det``'s box lies mostly inside a box reported in this frame."""
        if not reported:
            return False
        ioa = ioa_xyxy(det.box_xyxy, np.stack([t.detection.box_xyxy for t in reported]))
        return bool(ioa.max() > self.config.duplicate_ioa_threshold)

    def _match(self, track: _Track, det: Detection, stamp_ns: int,
               reported: list[_Track]) -> None:
        track.match(det, stamp_ns)
        if track.state is TrackState.TENTATIVE and track.hits >= self.config.min_hits:
            track.state = TrackState.TRACKED
        elif track.state is TrackState.LOST:
            track.state = TrackState.TRACKED
        reported.append(track)

    def _remove_expired(self, stamp_ns: int) -> None:
        max_age_ns = self.config.max_age_s * NS_PER_S
        self._tracks = [t for t in self._tracks
                        if not (t.state is TrackState.LOST
                                and stamp_ns - t.last_match_stamp_ns > max_age_ns)]
