"""Pseudo-labels from offline teachers: fusion, offline smoothing, filtering, COCO/PoseTrack JSON.

ROS-free and model-free: the teachers (YOLO11n-pose, BlazePose) are run by
``diffpose_ros.cli.label``; this module turns their per-frame keypoints into training labels.

A label track is one tracked person over consecutive frames of one sequence:
``keypoints (T, 17, 3)`` = x px, y px, confidence in [0, 1], ``boxes (T, 4)`` xyxy px, with NaN
rows for frames the person was not detected in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffpose_ros.metrics import acceleration_norms, box_sizes_from_xyxy
from diffpose_ros.skeleton import BONES, KEYPOINT_NAMES, NUM_KEYPOINTS


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """Thresholds of fusion, smoothing and filtering (saved in the label file's ``info``)."""

    # fusion: teachers agree when their joints are within this share of the box's larger side
    fusion_agree_fraction: float = 0.1
    # a joint both teachers see but disagree on keeps the primary teacher with its confidence
    # scaled by this (so it usually falls below keep_joint_confidence and is dropped)
    disagreement_confidence_scale: float = 0.5
    teacher_min_confidence: float = 0.5  # a teacher "sees" a joint at or above this
    # smoothing: weighted local quadratic fit over +-smooth_half_window frames (keeps swings
    # that a moving average would flatten)
    smooth_half_window: int = 2
    smooth_sigma_frames: float = 1.5
    # a raw joint this far (share of box size) from its smoothed track is an outlier: dropped
    outlier_fraction: float = 0.15
    keep_joint_confidence: float = 0.3  # joints below are written unlabelled (v = 0)
    min_box_height_px: float = 40.0  # smaller people are dropped (too few pixels to label)
    min_labelled_joints: int = 6  # people with fewer kept joints are dropped
    min_track_frames: int = 3  # shorter tracks are dropped (smoothing needs neighbours)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Fusion of two teachers
# --------------------------------------------------------------------------------------------

def fuse_teachers(primary: np.ndarray, secondary: np.ndarray | None, box_size_px: float,
                  config: LabelConfig = LabelConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Fuse two teachers' (17, 3) keypoints of one person in one frame.

    Where both see a joint and agree: confidence-weighted mean, the larger confidence. Where both
    see it and disagree: the primary's point with its confidence scaled down (doubtful). Where
    only the secondary sees it: the secondary's point and confidence. Otherwise the primary.

    Returns:
        fused (17, 3) and a (17,) int code per joint: 0 primary only, 1 agreed, 2 disagreed,
        3 secondary only.
    """
    fused = np.array(primary, dtype=np.float64, copy=True)
    codes = np.zeros(len(fused), dtype=np.int64)
    if secondary is None:
        return fused, codes
    sec = np.asarray(secondary, dtype=np.float64)
    if sec.shape != fused.shape:
        raise ValueError(f'secondary keypoints {sec.shape} != primary {fused.shape}')
    sees_p = fused[:, 2] >= config.teacher_min_confidence
    sees_s = (sec[:, 2] >= config.teacher_min_confidence) & np.all(np.isfinite(sec[:, :2]), 1)
    dist = np.linalg.norm(fused[:, :2] - sec[:, :2], axis=1)
    agree = sees_p & sees_s & (dist <= config.fusion_agree_fraction * box_size_px)
    disagree = sees_p & sees_s & ~agree
    only_s = sees_s & ~sees_p
    w_p, w_s = fused[:, 2:3], sec[:, 2:3]
    mean_xy = (fused[:, :2] * w_p + sec[:, :2] * w_s) / np.maximum(w_p + w_s, 1e-9)
    fused[agree, :2] = mean_xy[agree]
    fused[agree, 2] = np.maximum(fused[agree, 2], sec[agree, 2])
    fused[disagree, 2] *= config.disagreement_confidence_scale
    fused[only_s] = sec[only_s]
    codes[agree], codes[disagree], codes[only_s] = 1, 2, 3
    return fused, codes


def teacher_agreement(primary: Sequence[np.ndarray], secondary: Sequence[np.ndarray],
                      box_sizes_px: Sequence[float], min_confidence: float = 0.5,
                      ) -> dict[str, Any]:
    """How closely two teachers agree on the joints both see (box-normalised distances)."""
    dists: list[np.ndarray] = []
    per_joint: list[list[float]] = [[] for _ in range(NUM_KEYPOINTS)]
    for a, b, size in zip(primary, secondary, box_sizes_px):
        both = (a[:, 2] >= min_confidence) & (b[:, 2] >= min_confidence)
        d = np.linalg.norm(a[:, :2] - b[:, :2], axis=1) / size
        dists.append(d[both])
        for j in np.flatnonzero(both):
            per_joint[j].append(float(d[j]))
    flat = np.concatenate(dists) if dists else np.zeros(0)
    return {
        'persons': len(dists),
        'joints_seen_by_both': int(flat.size),
        'mean_distance_per_box': float(flat.mean()) if flat.size else math.nan,
        'median_distance_per_box': float(np.median(flat)) if flat.size else math.nan,
        'share_within_0.05_box': float((flat <= 0.05).mean()) if flat.size else math.nan,
        'share_within_0.1_box': float((flat <= 0.1).mean()) if flat.size else math.nan,
        'per_joint_mean_distance_per_box': {
            KEYPOINT_NAMES[j]: (float(np.mean(v)) if v else None)
            for j, v in enumerate(per_joint)},
    }


# --------------------------------------------------------------------------------------------
# Offline smoothing and filtering of one track
# --------------------------------------------------------------------------------------------

def smooth_track_quadratic(keypoints: np.ndarray, half_window: int = 2,
                           sigma_frames: float = 1.5) -> np.ndarray:
    """Offline, centred, confidence-weighted local quadratic fit of each joint's trajectory.

    For frame t, x(t + d) ~ a + b d + c d^2 is fitted over d in [-h, h] with weights
    ``confidence * exp(-d^2 / 2 sigma^2)``; the smoothed point is ``a``. A quadratic keeps the
    peaks of limb swings that a moving average flattens (a 5-frame mean keeps 65 % of a 10-frame
    swing), and being centred it adds no lag. Where fewer than 3 weighted frames exist the fit
    falls back to the weighted mean, and to the raw point when there is nothing to average.

    Args:
        keypoints: (T, J, 3) x, y, confidence; NaN or zero-confidence points weigh nothing.
        half_window: h >= 1 frames each side.
        sigma_frames: Gaussian width of the temporal weights.

    Returns:
        (T, J, 3) smoothed x, y with the input confidences.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f'keypoints must be (T, J, 3), got {kp.shape}')
    if half_window < 1:
        raise ValueError(f'half_window must be >= 1, got {half_window}')
    n = len(kp)
    finite = np.all(np.isfinite(kp[..., :2]), axis=2)
    conf = np.where(finite, np.nan_to_num(kp[..., 2], nan=0.0).clip(0, 1), 0.0)
    xy = np.where(finite[..., None], kp[..., :2], 0.0)
    moments = np.zeros((5,) + conf.shape)          # sum w d^k, k = 0..4
    targets = np.zeros((3,) + xy.shape)            # sum w d^k x, k = 0..2
    count = np.zeros(conf.shape)
    for d in range(-half_window, half_window + 1):
        lo, hi = max(0, -d), min(n, n - d)         # frames t with t + d inside
        if lo >= hi:
            continue
        w = conf[lo + d:hi + d] * math.exp(-d * d / (2 * sigma_frames ** 2))
        for k in range(5):
            moments[k, lo:hi] += w * d ** k
        for k in range(3):
            targets[k, lo:hi] += (w * d ** k)[..., None] * xy[lo + d:hi + d]
        count[lo:hi] += w > 0
    out = kp.copy()
    mean_ok = moments[0] > 1e-9
    mean = targets[0] / np.where(mean_ok, moments[0], 1.0)[..., None]
    # normal equations of the weighted quadratic fit, solved for the intercept (Cramer's rule)
    m0, m1, m2, m3, m4 = moments
    det = m0 * (m2 * m4 - m3 * m3) - m1 * (m1 * m4 - m3 * m2) + m2 * (m1 * m3 - m2 * m2)
    quad_ok = (count >= 3) & (np.abs(det) > 1e-9 * np.maximum(m0, 1e-9) ** 3)
    safe = np.where(quad_ok, det, 1.0)[..., None]
    t0, t1, t2 = targets
    intercept = (t0 * (m2 * m4 - m3 * m3)[..., None] - m1[..., None] * (t1 * m4[..., None]
                 - m3[..., None] * t2) + m2[..., None] * (t1 * m3[..., None]
                 - m2[..., None] * t2)) / safe
    smoothed = np.where(quad_ok[..., None], intercept, np.where(mean_ok[..., None], mean, xy))
    keep = finite | mean_ok
    out[..., :2] = np.where(keep[..., None], smoothed, kp[..., :2])
    return out


def clean_track(keypoints: np.ndarray, boxes_xyxy: np.ndarray,
                config: LabelConfig = LabelConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Smooth one track, drop outliers and weak joints, flag the frames worth keeping.

    Args:
        keypoints: (T, 17, 3) fused teacher keypoints (NaN rows where not detected).
        boxes_xyxy: (T, 4) boxes (NaN rows where not detected).

    Returns:
        labels (T, 17, 3) with confidences zeroed for dropped joints, and keep (T,) bool.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    present = np.all(np.isfinite(boxes), axis=1)
    sizes = np.where(present, np.nan_to_num(box_sizes_from_xyxy(np.nan_to_num(boxes))), np.nan)
    smoothed = smooth_track_quadratic(kp, config.smooth_half_window, config.smooth_sigma_frames)
    deviation = np.linalg.norm(kp[..., :2] - smoothed[..., :2], axis=2) / sizes[:, None]
    outlier = np.nan_to_num(deviation, nan=np.inf) > config.outlier_fraction
    conf = np.nan_to_num(kp[..., 2], nan=0.0)
    conf = np.where(outlier, 0.0, conf)
    if outlier.any():  # refit without the outliers so they do not pull their neighbours
        refit = kp.copy()
        refit[..., 2] = conf
        smoothed = smooth_track_quadratic(refit, config.smooth_half_window,
                                          config.smooth_sigma_frames)
    labels = smoothed.copy()
    labels[..., 2] = np.where(conf >= config.keep_joint_confidence, conf, 0.0)
    heights = boxes[:, 3] - boxes[:, 1]
    keep = (present & (np.nan_to_num(heights) >= config.min_box_height_px)
            & ((labels[..., 2] > 0).sum(axis=1) >= config.min_labelled_joints))
    if present.sum() < config.min_track_frames:
        keep[:] = False
    labels[~keep] = np.nan
    return labels, keep


def track_jitter(keypoints: np.ndarray, boxes_xyxy: np.ndarray, min_confidence: float) -> tuple:
    """(sum of box-normalised accelerations, number of terms) over one track's joints."""
    kp = np.asarray(keypoints, dtype=np.float64)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    sizes = box_sizes_from_xyxy(np.nan_to_num(boxes, nan=0.0))
    valid = np.nan_to_num(kp[..., 2], nan=0.0) >= min_confidence
    terms = acceleration_norms(np.nan_to_num(kp[..., :2], nan=np.nan), sizes, valid)
    return float(terms.sum()), int(terms.size)


# --------------------------------------------------------------------------------------------
# Writing COCO- and PoseTrack-style JSON
# --------------------------------------------------------------------------------------------

def coco_category() -> dict[str, Any]:
    return {
        'id': 1, 'name': 'person', 'supercategory': 'person',
        'keypoints': list(KEYPOINT_NAMES),
        'skeleton': [[a + 1, b + 1] for a, b in BONES],  # COCO's 1-based skeleton
    }


def annotation_entry(annotation_id: int, image_id: int, track_id: int, labels: np.ndarray,
                     box_xyxy: np.ndarray, score: float, extra: dict | None = None) -> dict:
    """One COCO keypoint annotation (v = 2 for kept joints) with per-joint confidences."""
    labels = np.asarray(labels, dtype=np.float64)
    kept = labels[:, 2] > 0
    flat: list[float] = []
    for (x, y, _), k in zip(labels, kept):
        flat += [round(float(x), 2), round(float(y), 2), 2] if k else [0, 0, 0]
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    entry = {
        'id': annotation_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
        'track_id': int(track_id),
        'bbox': [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
        'area': round((x2 - x1) * (y2 - y1) * 0.53, 2),  # COCO segment area ~ 0.53 box area
        'keypoints': flat,
        'num_keypoints': int(kept.sum()),
        'keypoint_scores': [round(float(c), 4) for c in labels[:, 2]],
        'score': round(float(score), 4),
    }
    if extra:
        entry.update(extra)
    return entry


def posetrack_sequence(dataset: dict[str, Any], video_id: int) -> dict[str, Any]:
    """The PoseTrack-2018-style file of one sequence (images with ``vid_id``/``frame_id``)."""
    images = [im for im in dataset['images'] if im.get('vid_id') == video_id]
    ids = {im['id'] for im in images}
    return {
        'info': dataset.get('info', {}),
        'categories': dataset['categories'],
        'images': images,
        'annotations': [a for a in dataset['annotations'] if a['image_id'] in ids],
    }
