"""3D keypoints from a depth image registered to the colour image (issue 12; no ROS).

Per joint: the depth pixels in a small window around the 2D keypoint (its half size scales with
the person's box), restricted to a band around the person's torso depth, give a robust depth
(median); the joint is back-projected with the colour camera's pinhole intrinsics into its
optical frame (x right, y down, z forward, metres). The image is assumed rectified (the
caller warns once when the CameraInfo has distortion).

Why a band around the torso: a window on a joint at the person's edge mixes the person with
the wall behind (or an object in front). Its plain median can land on the wall; the band keeps
only pixels at a plausible body depth, and a joint with too few of them is invalid instead of
being placed on the wall.

Outputs per joint: ``xyz_m``, ``valid``, ``support`` (share of the window's pixels inside the
band) and ``confidence = 2D confidence x support`` (0 where invalid). Per person: ``has_depth``
(a torso depth was measured). Positions are never 0 m or NaN for a person with depth: a valid
joint sits at its own depth; an invalid one on its pixel's viewing ray at the person's torso
depth, flagged invalid with confidence 0 (a consumer that ignores the flag still gets a point on
the person, not at the camera or at infinity). A person without depth has no 3D pose (its
``xyz_m`` is NaN and it is not published). Vectorised over persons and joints.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Sequence

import numpy as np

DEPTH_ENCODINGS = ('16UC1', 'mono16', '32FC1')
TORSO_JOINTS = (5, 6, 11, 12)  # COCO-17 shoulders and hips


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) colour image, pixels."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self) -> None:
        for name in ('fx', 'fy', 'cx', 'cy'):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f'intrinsics {name} must be finite, got {value}')
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f'focal lengths must be > 0, got fx={self.fx}, fy={self.fy}')

    @classmethod
    def from_k(cls, k: np.ndarray | list[float]) -> Intrinsics:
        """From a row-major 3x3 camera matrix (CameraInfo.k)."""
        k = np.asarray(k, np.float64).reshape(3, 3)
        return cls(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]))


@dataclasses.dataclass(frozen=True)
class DepthConfig:
    window_fraction: float = 0.02  # half window = this x the box's larger side
    min_half_window_px: int = 2
    max_half_window_px: int = 10
    band_behind_m: float = 0.35  # a joint may lie this far behind the torso (body depth)
    band_front_m: float = 0.80  # ... and this far in front (an arm reaching to the camera)
    min_support: float = 0.15  # share of the window's pixels in the band for a valid joint
    min_keypoint_confidence: float = 0.3  # 2D confidence below this: no 3D joint (a guess)
    min_depth_m: float = 0.1
    max_depth_m: float = 20.0

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'{name} must be a finite number >= 0, got {value}')
        if self.min_keypoint_confidence > 1:
            raise ValueError('min_keypoint_confidence must be in [0, 1]')
        if not 0 < self.min_support <= 1:
            raise ValueError(f'min_support must be in (0, 1], got {self.min_support}')
        if not 1 <= self.min_half_window_px <= self.max_half_window_px <= 64:
            raise ValueError('need 1 <= min_half_window_px <= max_half_window_px <= 64')
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise ValueError('need 0 < min_depth_m < max_depth_m')


@dataclasses.dataclass
class Keypoints3d:
    xyz_m: np.ndarray  # (P, K, 3) float32, camera optical frame (see the module docstring)
    valid: np.ndarray  # (P, K) bool
    support: np.ndarray  # (P, K) float32 in [0, 1]
    confidence: np.ndarray  # (P, K) float32: 2D confidence x support, 0 where invalid
    torso_depth_m: np.ndarray  # (P,) float32, NaN when unknown
    has_depth: np.ndarray  # (P,) bool: torso depth known, so every xyz_m of the person is finite


class DepthFrame:
    """A depth image as it arrived (REP 118: 16UC1/mono16 uint16 millimetres, 32FC1 float32
    metres; 0, NaN and Inf mean no data), converted to metres only where it is sampled: the
    3D stage reads a few thousand pixels, so converting the whole frame would cost more than
    the stage itself. ValueError on a wrong size, dtype or encoding."""

    def __init__(self, values: np.ndarray, encoding: str):
        values = np.asarray(values)
        if values.ndim != 2 or values.size == 0:
            raise ValueError(f'depth image must be 2-D and non-empty, got shape {values.shape}')
        expected = {'16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}.get(encoding)
        if expected is None:
            raise ValueError(f'unsupported depth encoding {encoding!r}; expected one of '
                             f'{DEPTH_ENCODINGS}')
        if values.dtype != expected:
            raise ValueError(f'{encoding} depth must be {np.dtype(expected)}, got '
                             f'{values.dtype}')
        self.values, self.encoding = values, encoding
        self.shape: tuple[int, int] = values.shape

    def metres_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Depth in metres (float32, NaN = no data) at integer pixel indices inside the image."""
        return self._to_metres(self.values[ys, xs])

    def metres(self) -> np.ndarray:
        """The whole image in metres (float32, NaN = no data)."""
        return self._to_metres(self.values)

    def _to_metres(self, raw: np.ndarray) -> np.ndarray:
        if self.encoding == '32FC1':
            metres = raw.astype(np.float32, copy=True)
            metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
            return metres
        metres = raw.astype(np.float32) * np.float32(0.001)
        metres[raw == 0] = np.nan
        return metres


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A depth image as float32 metres with NaN for no data (REP 118: 16UC1 in millimetres,
    32FC1 in metres; 0, NaN and Inf mean no data). ValueError as :class:`DepthFrame`."""
    return DepthFrame(depth, encoding).metres()


def _masked_median(values: np.ndarray) -> np.ndarray:
    """Median over the last axis ignoring NaN (NaN where nothing is left); a sort and two
    gathers, several times faster than ``np.nanmedian`` on these small windows."""
    ordered = np.sort(values, axis=-1)  # NaN last
    count = np.isfinite(values).sum(axis=-1)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[..., None], -1)[..., 0]
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[..., None], -1)[..., 0]
    median = 0.5 * (low + high)
    return np.where(count > 0, median, np.nan)


def _window_offsets(max_half: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(-max_half, max_half + 1)
    dy, dx = np.meshgrid(r, r, indexing='ij')
    return dy.ravel(), dx.ravel()


def keypoints_to_3d(keypoints: np.ndarray, boxes_xyxy: np.ndarray,
                    depth: DepthFrame | np.ndarray,
                    intrinsics: Intrinsics, config: DepthConfig = DepthConfig(),
                    ) -> Keypoints3d:
    """3D joints of P persons from their 2D keypoints (P, K, 3) [px, px, conf] and boxes
    (P, 4) on a depth image of the same size as the colour image the keypoints refer to: a
    :class:`DepthFrame` as it arrived, or an (H, W) array in metres (NaN = no data)."""
    kpts = np.asarray(keypoints, np.float64)
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if kpts.ndim != 3 or kpts.shape[-1] != 3 or len(kpts) != len(boxes):
        raise ValueError(f'keypoints must be (P, K, 3) with one box each, got {kpts.shape} '
                         f'and {boxes.shape}')
    num_persons, num_joints = kpts.shape[:2]
    if not isinstance(depth, DepthFrame):  # metres, NaN = no data
        depth = DepthFrame(np.asarray(depth, np.float32), '32FC1')
    height, width = depth.shape
    empty = np.full((num_persons, num_joints), np.nan, np.float32)
    if num_persons == 0:
        return Keypoints3d(np.zeros((0, num_joints, 3), np.float32), np.zeros_like(empty, bool),
                           empty.copy(), empty.copy(), np.zeros(0, np.float32),
                           np.zeros(0, bool))
    # windows: (P, K, S) pixel samples, masked to each person's half size
    box_size = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    half = np.clip(np.round(config.window_fraction * box_size), config.min_half_window_px,
                   config.max_half_window_px).astype(np.int64)  # (P,)
    dy, dx = _window_offsets(config.max_half_window_px)
    # keypoints have their origin at the top-left pixel's corner (pixel centres at +0.5, the
    # message convention): the pixel a keypoint lies in is floor(x); the camera model (K) counts
    # from pixel centres, hence the -0.5 in the back-projection below
    finite_xy = np.isfinite(kpts[..., 0]) & np.isfinite(kpts[..., 1])
    u = np.floor(np.where(finite_xy, kpts[..., 0], -10**6)).astype(np.int64)
    v = np.floor(np.where(finite_xy, kpts[..., 1], -10**6)).astype(np.int64)
    in_window = (np.abs(dy)[None, :] <= half[:, None]) & (np.abs(dx)[None, :] <= half[:, None])
    ys = v[..., None] + dy  # (P, K, S)
    xs = u[..., None] + dx
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width) & in_window[:, None, :]
    samples = np.full(ys.shape, np.nan, np.float32)
    samples[inside] = depth.metres_at(ys[inside], xs[inside])
    samples[(samples < config.min_depth_m) | (samples > config.max_depth_m)] = np.nan
    window_count = np.maximum(inside.sum(axis=-1), 1)  # (P, K) window pixels inside the image
    confident = (kpts[..., 2] >= config.min_keypoint_confidence) & finite_xy

    plain = _masked_median(samples)  # (P, K)
    torso_idx = [j for j in TORSO_JOINTS if j < num_joints]
    torso = (_masked_median(np.where(confident[:, torso_idx], plain[:, torso_idx], np.nan))
             if torso_idx else np.full(num_persons, np.nan))
    # no torso joint with depth: the median of the person's joints stands in
    fallback = _masked_median(np.where(confident, plain, np.nan))
    torso = np.where(np.isfinite(torso), torso, fallback)
    with np.errstate(invalid='ignore'):  # NaN torso: no pixel is in the band
        low = (torso - config.band_front_m)[:, None, None]
        high = (torso + config.band_behind_m)[:, None, None]
        in_band = np.isfinite(samples) & (samples >= low) & (samples <= high)
    depth = _masked_median(np.where(in_band, samples, np.nan))  # (P, K)
    support = (in_band.sum(axis=-1) / window_count).astype(np.float32)
    valid = confident & np.isfinite(depth) & (support >= config.min_support)
    # invalid joints: on their pixel's ray at the torso depth (a missing 2D joint: the box's
    # centre), so no position is ever 0 m or NaN for a person with depth
    z = np.where(valid, depth, torso[:, None])
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    px = np.where(finite_xy, kpts[..., 0], centre[:, None, 0])
    py = np.where(finite_xy, kpts[..., 1], centre[:, None, 1])
    xyz = np.stack([(px - 0.5 - intrinsics.cx) * z / intrinsics.fx,
                    (py - 0.5 - intrinsics.cy) * z / intrinsics.fy, z], axis=-1)
    confidence = np.where(valid, np.clip(kpts[..., 2], 0, 1) * support, 0.0)
    return Keypoints3d(xyz_m=xyz.astype(np.float32), valid=valid,
                       support=support,
                       confidence=confidence.astype(np.float32),
                       torso_depth_m=torso.astype(np.float32),
                       has_depth=np.isfinite(torso))


def persons_to_3d(persons: Sequence[object], depth: DepthFrame | np.ndarray,
                  intrinsics: Intrinsics,
                  config: DepthConfig = DepthConfig()) -> Keypoints3d:
    """``keypoints_to_3d`` for pipeline persons (anything with ``keypoints`` (K, 3) and
    ``box_xyxy`` (4,)); the node and ``diffpose-bag evaluate`` share it."""
    if not persons:
        return keypoints_to_3d(np.zeros((0, 17, 3)), np.zeros((0, 4)), depth, intrinsics,
                               config)
    keypoints = np.stack([np.asarray(p.keypoints, np.float64) for p in persons])
    boxes = np.stack([np.asarray(p.box_xyxy, np.float64) for p in persons])
    return keypoints_to_3d(keypoints, boxes, depth, intrinsics, config)


class StampMatcher:
    """A bounded buffer of stamped items (depth images) and a nearest-stamp lookup, to pair
    each colour frame with the depth frame taken with it.

    Depth and colour arrive on separate topics in either order; ``nearest`` is asked when the
    colour frame's poses are ready, so depth arriving within the pose stage's latency still
    matches. The buffer holds the newest ``capacity`` items (about a second at 30 Hz).
    """

    def __init__(self, capacity: int = 30):
        if capacity < 1:
            raise ValueError(f'capacity must be >= 1, got {capacity}')
        self._items: collections.deque[tuple[int, object]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()  # depth callbacks add while the worker looks up

    def __len__(self) -> int:
        return len(self._items)

    def add(self, stamp_ns: int, item: object) -> None:
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, object] | None:
        """The item whose stamp is nearest to ``stamp_ns``, if within ``tolerance_ns``."""
        with self._lock:
            items = list(self._items)
        if not items:
            return None
        best = min(items, key=lambda entry: abs(entry[0] - stamp_ns))
        return best if abs(best[0] - stamp_ns) <= tolerance_ns else None
