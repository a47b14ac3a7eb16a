"""Per-track ring buffers of cached per-frame features, and window assembly.

Every person-frame's backbone features are computed once and stored here, keyed by track id
and the camera's frame index; each window containing that frame reuses them. Memory is bounded:
records older than the window horizon are dropped, and a track disappears with its last record.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class FrameRecord:
    """One person in one frame."""

    frame_index: int  # the camera's frame counter
    stamp_ns: int
    features: np.ndarray  # (C, h, w) backbone features of this person's crop
    transform: Any  # codec.CropTransform used for the crop
    box_xyxy: np.ndarray  # (4,) image px
    score: float  # detection score
    detector_keypoints: np.ndarray | None  # (K, 3) the detector's single-frame keypoints
    is_predicted: bool  # box propagated by the tracker's motion model


def window_offsets(window_mode: str, window_size: int) -> np.ndarray:
    """Frame offsets relative to the key frame: causal [-(T-1)..0], centred [-T//2..T//2]."""
    if window_mode == 'causal':
        return np.arange(-(window_size - 1), 1, dtype=np.int64)
    if window_mode == 'centered':
        half = window_size // 2
        return np.arange(-half, half + 1, dtype=np.int64)
    raise ValueError(f"window_mode must be 'causal' or 'centered', got {window_mode!r}")


class TrackBuffers:
    """Ring buffers of ``FrameRecord`` per track for one camera."""

    def __init__(self, horizon_frames: int):
        if horizon_frames < 1:
            raise ValueError(f'horizon_frames must be >= 1, got {horizon_frames}')
        self.horizon_frames = horizon_frames
        self._tracks: dict[int, collections.deque[FrameRecord]] = {}

    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def num_records(self) -> int:
        return sum(len(records) for records in self._tracks.values())

    def push(self, track_id: int, record: FrameRecord) -> None:
        records = self._tracks.setdefault(track_id, collections.deque(maxlen=self.horizon_frames))
        if records and record.frame_index <= records[-1].frame_index:
            raise ValueError(
                f'track {track_id}: frame {record.frame_index} is not newer than '
                f'{records[-1].frame_index}'
            )
        records.append(record)

    def record_at(self, track_id: int, frame_index: int) -> FrameRecord | None:
        for record in reversed(self._tracks.get(track_id, ())):
            if record.frame_index == frame_index:
                return record
            if record.frame_index < frame_index:
                break
        return None

    def track_ids(self) -> list[int]:
        """Ids of the tracks that still hold records."""
        return list(self._tracks)

    def tracks_at(self, frame_index: int) -> list[int]:
        """Track ids with a record at ``frame_index``, in ascending id order."""
        return sorted(tid for tid in self._tracks if self.record_at(tid, frame_index) is not None)

    def window(
        self, track_id: int, key_frame_index: int, offsets: np.ndarray
    ) -> list[FrameRecord]:
        """Records for ``key_frame_index + offsets``.

        A frame the track has no record for (before the track started, after it ended, or a
        frame it was missed in) is padded with the track's record nearest in time, so windows
        at the start and end of a track repeat its first or last frame.
        """
        records = self._tracks.get(track_id)
        key = self.record_at(track_id, key_frame_index)
        if not records or key is None:
            raise KeyError(f'track {track_id} has no record at frame {key_frame_index}')
        by_index = {r.frame_index: r for r in records}
        indices = np.fromiter(by_index, dtype=np.int64)
        window = []
        for offset in offsets.tolist():
            wanted = key_frame_index + offset
            record = by_index.get(wanted)
            if record is None:
                nearest = int(
                    indices[np.argmin(np.abs(indices - wanted) * 2 + (indices > wanted))]
                )  # ties: the earlier
                record = by_index[nearest]
            window.append(record)
        return window

    def prune(self, oldest_frame_index: int) -> None:
        """Drop records older than ``oldest_frame_index`` and tracks left empty."""
        for track_id in list(self._tracks):
            records = self._tracks[track_id]
            while records and records[0].frame_index < oldest_frame_index:
                records.popleft()
            if not records:
                del self._tracks[track_id]

    def reset(self) -> None:
        self._tracks.clear()


class FramePeriodEstimator:
    """A camera's nominal frame period, from the stamps of the images it sends.

    The 25th percentile of the last ``history`` positive stamp intervals: frames dropped under
    load make some intervals two or three periods long, and a low quantile ignores them as long
    as a quarter of the intervals are single. The node feeds it every *received* image (before
    its own drops); ``fixed_period_ns`` > 0 overrides the estimate.
    """

    def __init__(self, fixed_period_ns: int = 0, history: int = 31):
        if fixed_period_ns < 0 or history < 2:
            raise ValueError('fixed_period_ns must be >= 0 and history >= 2')
        self.fixed_period_ns = int(fixed_period_ns)
        self._intervals: collections.deque[int] = collections.deque(maxlen=history)
        self._last_stamp_ns: int | None = None

    def observe(self, stamp_ns: int) -> None:
        stamp_ns = int(stamp_ns)
        if self._last_stamp_ns is not None and stamp_ns > self._last_stamp_ns:
            self._intervals.append(stamp_ns - self._last_stamp_ns)
        if self._last_stamp_ns is None or stamp_ns > self._last_stamp_ns:
            self._last_stamp_ns = stamp_ns
        elif stamp_ns < self._last_stamp_ns:  # time jumped back: start over
            self.reset()
            self._last_stamp_ns = stamp_ns

    def reset(self) -> None:
        self._intervals.clear()
        self._last_stamp_ns = None

    @property
    def period_ns(self) -> int | None:
        """The period, or None until two intervals were seen (offsets then stay nominal)."""
        if self.fixed_period_ns > 0:
            return self.fixed_period_ns
        if len(self._intervals) < 2:
            return None
        return int(np.percentile(np.fromiter(self._intervals, np.int64), 25))


def stamp_offsets(stamps_ns: np.ndarray, nominal_offsets: np.ndarray, padded: np.ndarray,
                  period_ns: int | None, max_offset: int) -> np.ndarray:
    """Window offsets in nominal frame periods, from the stamps of the window's records.

    A window built from processed frames spans more time when frames were dropped; the model
    sees that (e.g. -3, -1, 0 instead of -2, -1, 0). Padded positions (a record repeated because
    the track has no frame there) keep their nominal offset, as in training. Offsets stay
    strictly ordered with the key frame the only 0, and are clipped to +-``max_offset``.

    Args:
        stamps_ns: (T,) stamps of the records at each window position.
        nominal_offsets: (T,) the window mode's offsets (exactly one 0: the key frame).
        padded: (T,) bool, position holds a repeated record.
        period_ns: the camera's nominal frame period; None keeps the nominal offsets.
        max_offset: the model's largest offset.

    Returns:
        (T,) int64 offsets.
    """
    nominal = np.asarray(nominal_offsets, np.int64)
    if period_ns is None or period_ns <= 0:
        return nominal.copy()
    key = int(np.flatnonzero(nominal == 0)[0])
    stamps = np.asarray(stamps_ns, np.int64)
    measured = np.rint((stamps - stamps[key]) / float(period_ns)).astype(np.int64)
    out = np.where(np.asarray(padded, bool), nominal, measured)
    out[key] = 0
    for i in range(key - 1, -1, -1):
        out[i] = min(out[i], out[i + 1] - 1)
    for i in range(key + 1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    return np.clip(out, -max_offset, max_offset)
