"""Causal keypoint smoothing per track: a One Euro filter (Casiez, Roussel, Vogel, CHI 2012).

The filter is a first-order low-pass whose cutoff rises with speed: still joints are smoothed
hard (jitter goes), fast joints barely (little lag). MediaPipe smooths its pose landmarks the
same way. It runs on the published keypoints after the diffusion head; the head's own estimate
(used for warm starts) is kept raw.

Speeds are measured in person heights per second (the box's larger side), so one set of
parameters serves near and far people; time steps come from image stamps, so dropped frames
widen the step instead of being treated as one period. The filter is vectorised over joints
(the PyPI ``OneEuroFilter`` package filters one scalar at a time).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

FILTER_KINDS = ('one_euro', 'none')


@dataclasses.dataclass(frozen=True)
class OneEuroConfig:
    min_cutoff_hz: float = 2.5  # cutoff of a still joint: lower = smoother, more lag
    beta: float = 4.0  # cutoff gain per (person heights / s) of speed: higher = less lag
    derivative_cutoff_hz: float = 1.0  # smoothing of the speed estimate itself
    max_gap_s: float = 1.0  # a longer gap between a track's frames restarts its filter

    def __post_init__(self) -> None:
        for name in ('min_cutoff_hz', 'derivative_cutoff_hz', 'max_gap_s'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'{name} must be a finite number > 0, got {value}')
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f'beta must be a finite number >= 0, got {self.beta}')


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau_s = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau_s / dt_s)


class OneEuroKeypointFilter:
    """One track's filter state: positions (K, 2) in image px, speeds in heights / s."""

    def __init__(self, config: OneEuroConfig):
        self.config = config
        self._xy: np.ndarray | None = None  # (K, 2) last filtered position, px
        self._speed: np.ndarray | None = None  # (K,) filtered speed, heights / s
        self._stamp_ns: int | None = None

    def reset(self) -> None:
        self._xy = self._speed = self._stamp_ns = None

    def __call__(self, keypoints: np.ndarray, box_xyxy: np.ndarray, stamp_ns: int) -> np.ndarray:
        """Filtered copy of ``keypoints`` (K, 3): x, y smoothed, confidences unchanged."""
        out = np.array(keypoints, np.float32, copy=True)
        xy = out[:, :2].astype(np.float64)
        box = np.asarray(box_xyxy, np.float64)
        height_px = max(float(np.max(box[2:] - box[:2])), 1.0)
        dt_s = None if self._stamp_ns is None else (int(stamp_ns) - self._stamp_ns) * 1e-9
        if (self._xy is None or dt_s is None or not 0 < dt_s <= self.config.max_gap_s
                or not np.all(np.isfinite(xy))):
            self._xy, self._speed, self._stamp_ns = xy, np.zeros(len(xy)), int(stamp_ns)
            return out
        cfg = self.config
        speed = np.linalg.norm(xy - self._xy, axis=1) / height_px / dt_s
        self._speed = self._speed + _alpha(cfg.derivative_cutoff_hz, dt_s) * (speed - self._speed)
        cutoff_hz = cfg.min_cutoff_hz + cfg.beta * self._speed
        alpha = _alpha(cutoff_hz, dt_s)[:, None]
        self._xy = self._xy + alpha * (xy - self._xy)
        self._stamp_ns = int(stamp_ns)
        out[:, :2] = self._xy
        return out


class TrackFilters:
    """One filter per track id of a camera; ended tracks are dropped with :meth:`keep_only`."""

    def __init__(self, config: OneEuroConfig):
        self.config = config
        self._filters: dict[int, OneEuroKeypointFilter] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def reset(self) -> None:
        self._filters.clear()

    def apply(self, track_id: int, keypoints: np.ndarray, box_xyxy: np.ndarray,
              stamp_ns: int) -> np.ndarray:
        track_filter = self._filters.get(track_id)
        if track_filter is None:
            track_filter = self._filters[track_id] = OneEuroKeypointFilter(self.config)
        return track_filter(keypoints, box_xyxy, stamp_ns)

    def keep_only(self, track_ids: set[int]) -> None:
        for track_id in [t for t in self._filters if t not in track_ids]:
            del self._filters[track_id]
