"""Pose-estimation metrics: limb PCK, OKS and COCO AP, PoseTrack-style PCKh, temporal metrics.

Everything works in the COCO-17 layout of :mod:`diffpose_ros.skeleton`. Ground truth in other
layouts (AI Challenger 14, PoseTrack 2018/21) is mapped to COCO-17 on loading; COCO-17 joints that
the source layout lacks are marked unlabelled (visibility 0), so every metric below scores only the
joints both layouts share (:func:`shared_joints`).

Conventions (the evaluation command and ``docs/model.md`` rely on them):

- Coordinates are image pixels; GT boxes are COCO ``xywh``; a joint is labelled when its
  visibility is > 0. Predictions are arrays ``(17, 2)`` (x, y) or ``(17, 3)`` (x, y, confidence);
  a non-finite predicted coordinate counts as a wrong joint.
- OKS is the COCO formula (``pycocotools``): mean over the GT's labelled joints of
  ``exp(-d^2 / (2 * area * (2 * sigma)^2))``. When the GT has no ``area`` (AI Challenger,
  PoseTrack), ``area = 0.53 * box width * box height`` (mmpose's convention: a person's segment
  covers about 53% of its box).
- Persons are matched one-to-one per image by OKS with an optimal assignment (maximum total OKS,
  ``lap.lapjv``, the same solver as the tracker); pairs below ``min_oks`` are never matched, so a
  prediction overlapping nobody is not matched and a GT person with no labelled joint never is.
  Crowd GT regions (``iscrowd``) are neither matched nor scored.
- Limb PCK is recall-like: a GT person no prediction is matched to counts all its labelled joints
  as wrong; extra predictions do not lower it (OKS AP scores precision).
- PCKh follows ``poseval`` (PoseTrack): head size = 0.6 x the head box's diagonal, threshold 0.5 x
  head size, persons matched by poseval's own rule on the PCKh score matrix
  (:func:`poseval_assignment`).

Needs numpy and lap; :func:`coco_oks_ap` also needs pycocotools (imported on first use). No torch,
no ROS.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

import lap
import numpy as np

from diffpose_ros.skeleton import KEYPOINT_NAMES, LIMB_JOINTS, NUM_KEYPOINTS, OKS_SIGMAS

# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------

LAYOUTS: tuple[str, ...] = ('coco', 'aic', 'posetrack')
LAYOUT_NUM_KEYPOINTS: Mapping[str, int] = MappingProxyType(
    {'coco': 17, 'aic': 14, 'posetrack': 17})

# AI Challenger order: 0 r_shoulder, 1 r_elbow, 2 r_wrist, 3 l_shoulder, 4 l_elbow, 5 l_wrist,
# 6 r_hip, 7 r_knee, 8 r_ankle, 9 l_hip, 10 l_knee, 11 l_ankle, 12 head_top, 13 neck.
# head_top and neck have no COCO-17 counterpart; COCO's face joints have no AIC counterpart.
AIC_TO_COCO: Mapping[int, int] = MappingProxyType({
    0: 6, 1: 8, 2: 10, 3: 5, 4: 7, 5: 9, 6: 12, 7: 14, 8: 16, 9: 11, 10: 13, 11: 15})

# PoseTrack 2018/21 "COCO-like" order: 0 nose, 1 head_bottom, 2 head_top, 3 left_ear, 4 right_ear
# (never annotated), 5..16 as COCO. head_bottom/head_top sit where COCO has the eyes but are
# different points, so they are not mapped.
POSETRACK_TO_COCO: Mapping[int, int] = MappingProxyType({0: 0, **{i: i for i in range(5, 17)}})

COCO_TO_COCO: Mapping[int, int] = MappingProxyType({i: i for i in range(NUM_KEYPOINTS)})

LAYOUT_TO_COCO: Mapping[str, Mapping[int, int]] = MappingProxyType({
    'coco': COCO_TO_COCO, 'aic': AIC_TO_COCO, 'posetrack': POSETRACK_TO_COCO})

# Keypoint names as they appear in the datasets' ``categories[0].keypoints`` (for detection).
AIC_KEYPOINT_NAMES: tuple[str, ...] = (
    'right_shoulder', 'right_elbow', 'right_wrist', 'left_shoulder', 'left_elbow', 'left_wrist',
    'right_hip', 'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle', 'head_top',
    'neck')
POSETRACK_KEYPOINT_NAMES: tuple[str, ...] = (
    'nose', 'head_bottom', 'head_top', 'left_ear', 'right_ear') + KEYPOINT_NAMES[5:]

# mmpose: segment area ~ 0.53 x box area when a dataset gives no area.
BOX_TO_SEGMENT_AREA = 0.53
# poseval: head size = 0.6 x head-box diagonal.
HEAD_SIZE_PER_DIAGONAL = 0.6


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')


def shared_joints(layout: str) -> tuple[int, ...]:
    """COCO-17 indices that a layout's ground truth can label (the joints it is scored on).

    Args:
        layout: 'coco' (all 17), 'aic' (the 12 limb joints) or 'posetrack' (nose + 12 limbs).

    Returns:
        Sorted COCO-17 indices.
    """
    _check_layout(layout)
    return tuple(sorted(LAYOUT_TO_COCO[layout].values()))


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace(' ', '_').replace('-', '_')


def detect_layout(keypoint_names: Sequence[str]) -> str | None:
    """Layout from a category's keypoint names, or None when they match no known layout."""
    names = tuple(_normalise_name(n) for n in keypoint_names)
    for layout, known in (('coco', KEYPOINT_NAMES), ('aic', AIC_KEYPOINT_NAMES),
                          ('posetrack', POSETRACK_KEYPOINT_NAMES)):
        if names == known:
            return layout
    return None


def map_keypoints_to_coco(keypoints: np.ndarray, layout: str) -> np.ndarray:
    """Source-layout keypoints -> COCO-17, unshared COCO joints unlabelled.

    Args:
        keypoints: (K, 3) x_px, y_px, visibility in the source layout (K = 17 or 14).
        layout: Source layout.

    Returns:
        (17, 3) float64 x_px, y_px, visibility; joints the layout lacks are (0, 0, 0).
    """
    _check_layout(layout)
    kpts = np.asarray(keypoints, dtype=np.float64)
    if kpts.shape != (LAYOUT_NUM_KEYPOINTS[layout], 3):
        raise ValueError(f'{layout} keypoints must be ({LAYOUT_NUM_KEYPOINTS[layout]}, 3), '
                         f'got {kpts.shape}')
    out = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
    for src, dst in LAYOUT_TO_COCO[layout].items():
        out[dst] = kpts[src]
    out[out[:, 2] <= 0] = 0.0
    return out


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GtPerson:
    """One ground-truth person in COCO-17.

    Attributes:
        keypoints: (17, 3) float64 x_px, y_px, visibility (> 0 = labelled).
        box_xywh: (4,) float64 person box x, y, width, height in pixels.
        area: Area in px^2 used by OKS; None -> ``0.53 * width * height``.
        head_box_xywh: (4,) float64 head box (PoseTrack ``bbox_head``), or None.
        iscrowd: COCO crowd region: never matched, never scored.
        track_id: PoseTrack track id, or None.
        annotation_id: The JSON annotation's id, or None.
    """

    keypoints: np.ndarray
    box_xywh: np.ndarray
    area: float | None = None
    head_box_xywh: np.ndarray | None = None
    iscrowd: bool = False
    track_id: int | None = None
    annotation_id: int | None = None

    def __post_init__(self) -> None:
        kpts = np.asarray(self.keypoints, dtype=np.float64)
        if kpts.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f'keypoints must be ({NUM_KEYPOINTS}, 3), got {kpts.shape}')
        box = np.asarray(self.box_xywh, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < 0 or box[3] < 0:
            raise ValueError(f'box_xywh must be 4 finite numbers with w, h >= 0, got {box}')
        area = BOX_TO_SEGMENT_AREA * box[2] * box[3] if self.area is None else float(self.area)
        if not math.isfinite(area) or area < 0:
            raise ValueError(f'area must be finite and >= 0, got {area}')
        head = self.head_box_xywh
        if head is not None:
            head = np.asarray(head, dtype=np.float64).reshape(-1)
            if head.shape != (4,) or not np.all(np.isfinite(head)):
                raise ValueError(f'head_box_xywh must be 4 finite numbers, got {head}')
        object.__setattr__(self, 'keypoints', kpts)
        object.__setattr__(self, 'box_xywh', box)
        object.__setattr__(self, 'area', float(area))
        object.__setattr__(self, 'head_box_xywh', head)
        object.__setattr__(self, 'iscrowd', bool(self.iscrowd))

    @property
    def labelled(self) -> np.ndarray:
        """(17,) bool: joint is labelled (visibility > 0)."""
        return self.keypoints[:, 2] > 0

    @property
    def box_size_px(self) -> float:
        """Larger side of the GT box (the limb-PCK normaliser)."""
        return float(max(self.box_xywh[2], self.box_xywh[3]))

    @property
    def head_size_px(self) -> float:
        """poseval head size: 0.6 x head-box diagonal; ValueError without a head box."""
        if self.head_box_xywh is None:
            raise ValueError('this GT person has no head box')
        return HEAD_SIZE_PER_DIAGONAL * float(np.hypot(self.head_box_xywh[2],
                                                       self.head_box_xywh[3]))


@dataclasses.dataclass(frozen=True)
class GtImage:
    """One annotated image (or video frame).

    Attributes:
        image_id: The JSON image id.
        file_name: As in the JSON (relative to the dataset's image root).
        width: Image width in pixels (0 when unknown).
        height: Image height in pixels (0 when unknown).
        persons: Ground-truth persons in COCO-17.
        ignore_regions: PoseTrack ignore polygons, each (K, 2) x_px, y_px.
        video_id: PoseTrack ``vid_id``, or None.
        frame_index: PoseTrack ``frame_id`` (or position in the video), or None.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    persons: tuple[GtPerson, ...]
    ignore_regions: tuple[np.ndarray, ...] = ()
    video_id: str | None = None
    frame_index: int | None = None


GtPersons = Union[GtImage, Sequence[GtPerson]]
PredPersons = Union[np.ndarray, Sequence[np.ndarray]]


def _read_dataset(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, (str, Path)):
        with open(source, encoding='utf-8') as f:
            dataset = json.load(f)
    else:
        dataset = source
    if not isinstance(dataset, Mapping) or 'images' not in dataset \
            or 'annotations' not in dataset:
        raise ValueError('not a COCO-format dataset: needs "images" and "annotations"')
    return dataset


def _person_category_ids(dataset: Mapping[str, Any]) -> set[int]:
    cats = dataset.get('categories') or []
    ids = {int(c['id']) for c in cats if c.get('name', 'person') == 'person'}
    return ids or {1}


def points_in_polygon(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    """Even-odd (ray casting) point-in-polygon test.

    Args:
        points_xy: (N, 2) points in pixels.
        polygon_xy: (K, 2) polygon vertices (closed implicitly), K >= 3.

    Returns:
        (N,) bool, True inside.
    """
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon_xy, dtype=np.float64).reshape(-1, 2)
    if len(poly) < 3:
        return np.zeros(len(pts), dtype=bool)
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide='ignore', invalid='ignore'):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.logical_and(crosses, x < x_at).sum(axis=1) % 2 == 1


def _in_any_region(points_xy: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    inside = np.zeros(len(points_xy), dtype=bool)
    for poly in regions:
        inside |= points_in_polygon(points_xy, poly)
    return inside


def load_coco_keypoints(source: str | Path | Mapping[str, Any], layout: str = 'coco',
                        labelled_only: bool = True) -> dict[int, GtImage]:
    """Load COCO-format keypoint ground truth (COCO, AI Challenger or PoseTrack 2018/21 JSON).

    Keypoints are mapped to COCO-17 (:func:`map_keypoints_to_coco`). Annotations without a
    ``keypoints`` field or of another category are skipped. A missing ``bbox`` is the tight box
    of the labelled joints; a missing ``area`` is ``0.53 * w * h``. PoseTrack: ``bbox_head``
    (xywh) becomes the head box; images with ``is_labeled`` false are skipped when
    ``labelled_only``; GT joints inside the image's ignore regions (``ignore_regions_x/_y``) are
    marked unlabelled, as poseval does.

    Args:
        source: Path to the JSON file, or the parsed dict.
        layout: 'coco', 'aic' or 'posetrack'. Checked against ``categories[0].keypoints`` when
            those names are a known layout.
        labelled_only: Skip images marked ``is_labeled: false`` (PoseTrack).

    Returns:
        image_id -> GtImage, in the JSON's image order.
    """
    _check_layout(layout)
    dataset = _read_dataset(source)
    n_src = LAYOUT_NUM_KEYPOINTS[layout]
    for cat in dataset.get('categories') or []:
        names = cat.get('keypoints')
        if names:
            detected = detect_layout(names)
            if detected is not None and detected != layout:
                raise ValueError(f'keypoint names look like layout {detected!r}, not {layout!r}')
            if len(names) != n_src:
                raise ValueError(f'layout {layout!r} has {n_src} keypoints, the category has '
                                 f'{len(names)}')
    person_cats = _person_category_ids(dataset)

    persons: dict[int, list[GtPerson]] = {}
    for ann in dataset['annotations']:
        if 'keypoints' not in ann or int(ann.get('category_id', 1)) not in person_cats:
            continue
        raw = np.asarray(ann['keypoints'], dtype=np.float64)
        if raw.size != 3 * n_src:
            raise ValueError(f'annotation {ann.get("id")}: {raw.size} keypoint values, '
                             f'layout {layout!r} needs {3 * n_src}')
        kpts = map_keypoints_to_coco(raw.reshape(n_src, 3), layout)
        box = ann.get('bbox')
        if box is None or len(box) != 4:
            lab = kpts[kpts[:, 2] > 0, :2]
            if len(lab):
                lo, hi = lab.min(axis=0), lab.max(axis=0)
                box = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
            else:
                box = [0.0, 0.0, 0.0, 0.0]
        area = ann.get('area')
        area = float(area) if area is not None and float(area) > 0 else None
        head = ann.get('bbox_head')
        head = head if head is not None and len(head) == 4 else None
        track = ann.get('track_id')
        persons.setdefault(int(ann['image_id']), []).append(GtPerson(
            keypoints=kpts, box_xywh=np.asarray(box, dtype=np.float64), area=area,
            head_box_xywh=head, iscrowd=bool(ann.get('iscrowd', 0)),
            track_id=None if track is None else int(track),
            annotation_id=None if ann.get('id') is None else int(ann['id'])))

    images: dict[int, GtImage] = {}
    for img in dataset['images']:
        if labelled_only and img.get('is_labeled') is False:
            continue
        image_id = int(img['id'])
        regions = tuple(
            np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], axis=1)
            for xs, ys in zip(img.get('ignore_regions_x') or [], img.get('ignore_regions_y') or [])
            if len(xs) >= 3 and len(xs) == len(ys))
        people = persons.get(image_id, [])
        if regions:
            people = [_unlabel_ignored(p, regions) for p in people]
        frame = img.get('frame_id', img.get('frame_index'))
        video = img.get('vid_id')
        images[image_id] = GtImage(
            image_id=image_id, file_name=str(img.get('file_name', '')),
            width=int(img.get('width', 0) or 0), height=int(img.get('height', 0) or 0),
            persons=tuple(people), ignore_regions=regions,
            video_id=None if video is None else str(video),
            frame_index=None if frame is None else int(frame))
    return images


def _unlabel_ignored(person: GtPerson, regions: Sequence[np.ndarray]) -> GtPerson:
    inside = _in_any_region(person.keypoints[:, :2], regions) & person.labelled
    if not inside.any():
        return person
    kpts = person.keypoints.copy()
    kpts[inside] = 0.0
    return dataclasses.replace(person, keypoints=kpts)


def _gt_persons(value: GtPersons) -> tuple[Sequence[GtPerson], Sequence[np.ndarray]]:
    if isinstance(value, GtImage):
        return value.persons, value.ignore_regions
    return value, ()


def _pred_array(value: PredPersons | None) -> np.ndarray:
    """Predictions of one image -> (P, 17, C) float64, C = 2 or 3."""
    if value is None:
        return np.zeros((0, NUM_KEYPOINTS, 2))
    if isinstance(value, np.ndarray):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
    else:
        if len(value) == 0:
            return np.zeros((0, NUM_KEYPOINTS, 2))
        arr = np.stack([np.asarray(p, dtype=np.float64) for p in value])
    if arr.ndim != 3 or arr.shape[1] != NUM_KEYPOINTS or arr.shape[2] not in (2, 3):
        raise ValueError(f'predictions must be (P, 17, 2|3) or a list of (17, 2|3), got '
                         f'{arr.shape}')
    return arr


# --------------------------------------------------------------------------------------------
# OKS and matching
# --------------------------------------------------------------------------------------------

def _sigmas_array(sigmas: Sequence[float]) -> np.ndarray:
    arr = np.asarray(sigmas, dtype=np.float64)
    if arr.shape != (NUM_KEYPOINTS,) or np.any(arr <= 0):
        raise ValueError(f'sigmas must be {NUM_KEYPOINTS} positive numbers')
    return arr


def _joint_mask(joints: Sequence[int] | None) -> np.ndarray:
    mask = np.zeros(NUM_KEYPOINTS, dtype=bool)
    if joints is None:
        mask[:] = True
        return mask
    idx = np.asarray(tuple(joints), dtype=np.int64)
    if idx.size == 0 or np.any(idx < 0) or np.any(idx >= NUM_KEYPOINTS):
        raise ValueError(f'joints must be non-empty COCO-17 indices, got {tuple(joints)}')
    mask[idx] = True
    return mask


def oks(pred: np.ndarray, gt: np.ndarray, area: float,
        sigmas: Sequence[float] = OKS_SIGMAS, joints: Sequence[int] | None = None) -> float:
    """COCO object keypoint similarity between one prediction and one GT person.

    ``mean over labelled GT joints of exp(-d^2 / (2 * (area + eps) * (2 * sigma)^2))``, as in
    pycocotools' ``COCOeval.computeOks``. A non-finite predicted joint contributes 0.

    Args:
        pred: (17, 2) or (17, 3) predicted x_px, y_px (confidence ignored).
        gt: (17, 3) GT x_px, y_px, visibility.
        area: GT area in px^2 (>= 0).
        sigmas: (17,) per-joint OKS sigmas.
        joints: COCO indices to use (default all); unlabelled GT joints are always skipped.

    Returns:
        OKS in [0, 1]; 0.0 when no used GT joint is labelled (COCO would fall back to box
        distances; such a person can never be matched here).
    """
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != NUM_KEYPOINTS or p.shape[1] not in (2, 3):
        raise ValueError(f'pred must be (17, 2|3), got {p.shape}')
    if g.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f'gt must be (17, 3), got {g.shape}')
    if not math.isfinite(area) or area < 0:
        raise ValueError(f'area must be finite and >= 0, got {area}')
    person = GtPerson(keypoints=g, box_xywh=np.zeros(4), area=area)
    return float(oks_matrix(p[None], [person], sigmas=sigmas, joints=joints)[0, 0])


def oks_matrix(preds: np.ndarray, gts: Sequence[GtPerson],
               sigmas: Sequence[float] = OKS_SIGMAS,
               joints: Sequence[int] | None = None) -> np.ndarray:
    """OKS between every prediction and every GT person of one image.

    Args:
        preds: (P, 17, 2|3) predicted keypoints in pixels.
        gts: G ground-truth persons.
        sigmas: (17,) per-joint OKS sigmas.
        joints: COCO indices to use (default all).

    Returns:
        (P, G) float64 OKS.
    """
    pred = _pred_array(preds)[..., :2]
    sig = _sigmas_array(sigmas)
    use = _joint_mask(joints)
    out = np.zeros((len(pred), len(gts)), dtype=np.float64)
    two_var = 2.0 * (2.0 * sig) ** 2
    for g, person in enumerate(gts):
        lab = person.labelled & use
        if not lab.any() or len(pred) == 0:
            continue
        d2 = np.sum((pred[:, lab] - person.keypoints[lab, :2]) ** 2, axis=-1)  # (P, k)
        d2 = np.where(np.isfinite(d2), d2, np.inf)
        e = d2 / two_var[lab] / (person.area + np.spacing(1))
        out[:, g] = np.exp(-e).mean(axis=1)
    return out


def assign_max_weight(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Optimal one-to-one assignment maximising the total weight, pairs < min_weight excluded.

    Pairs below ``min_weight`` get weight 0, a full assignment of the smaller side maximising
    the total is solved with ``lap.lapjv`` (Jonker-Volgenant; same optimum as
    ``scipy.optimize.linear_sum_assignment(..., maximize=True)``), then pairs below
    ``min_weight`` are dropped. The result maximises the total weight over all matchings that
    use only pairs >= min_weight.

    Args:
        weights: (R, C) non-negative weights (e.g. OKS).
        min_weight: Minimum weight of a matched pair (> 0).

    Returns:
        (R,) int64: the column matched to each row, -1 when unmatched.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f'weights must be 2-D, got {w.shape}')
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError('weights must be finite and >= 0')
    if not min_weight > 0:
        raise ValueError(f'min_weight must be > 0, got {min_weight}')
    row_to_col = np.full(w.shape[0], -1, dtype=np.int64)
    if w.size == 0:
        return row_to_col
    masked = np.where(w >= min_weight, w, 0.0)
    if not masked.any():
        return row_to_col
    cost = masked.max() - masked
    _, r2c, _ = lap.lapjv(cost, extend_cost=True)
    for r, c in enumerate(r2c):
        if c >= 0 and w[r, c] >= min_weight:
            row_to_col[r] = c
    return row_to_col


@dataclasses.dataclass(frozen=True)
class Match:
    """One-to-one matching of one image's predictions and GT persons.

    Attributes:
        pred_to_gt: (P,) int64 GT index matched to each prediction, -1 when none.
        gt_to_pred: (G,) int64 prediction index matched to each GT person, -1 when none.
        scores: (P, G) float64 similarity used for matching (OKS or PCKh score).
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray
    scores: np.ndarray


def _match_from_pred_to_gt(pred_to_gt: np.ndarray, n_gt: int, scores: np.ndarray) -> Match:
    gt_to_pred = np.full(n_gt, -1, dtype=np.int64)
    for p, g in enumerate(pred_to_gt):
        if g >= 0:
            if gt_to_pred[g] >= 0:
                raise AssertionError('matching is not one-to-one')
            gt_to_pred[g] = p
    return Match(pred_to_gt=np.asarray(pred_to_gt, dtype=np.int64), gt_to_pred=gt_to_pred,
                 scores=scores)


def match_persons(preds: PredPersons, gts: Sequence[GtPerson], min_oks: float = 0.1,
                  sigmas: Sequence[float] = OKS_SIGMAS,
                  joints: Sequence[int] | None = None) -> Match:
    """Match one image's predictions to its GT persons one-to-one by OKS.

    Optimal assignment maximising the total OKS (:func:`assign_max_weight`); a pair with OKS
    below ``min_oks`` is never matched. Crowd GT persons are never matched.

    Args:
        preds: (P, 17, 2|3) array or list of (17, 2|3) predicted keypoints in pixels.
        gts: G ground-truth persons.
        min_oks: Minimum OKS of a matched pair, in (0, 1].
        sigmas: (17,) per-joint OKS sigmas.
        joints: COCO indices the OKS uses (default all labelled GT joints).

    Returns:
        The Match; ``scores`` is the (P, G) OKS matrix (0 for crowd GT).
    """
    if not 0 < min_oks <= 1:
        raise ValueError(f'min_oks must be in (0, 1], got {min_oks}')
    scores = oks_matrix(_pred_array(preds), gts, sigmas=sigmas, joints=joints)
    crowd = np.array([p.iscrowd for p in gts], dtype=bool)
    if crowd.any():
        scores[:, crowd] = 0.0
    pred_to_gt = assign_max_weight(scores, min_oks)
    return _match_from_pred_to_gt(pred_to_gt, len(gts), scores)


# --------------------------------------------------------------------------------------------
# Limb PCK
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PckResult:
    """Per-person, per-joint outcome of a PCK-style evaluation.

    Rows are the GT persons with at least one labelled evaluated joint, in image order.

    Attributes:
        joints: The J evaluated COCO-17 indices.
        correct: (N, J) bool, joint within the threshold (False when unlabelled or missed).
        labelled: (N, J) bool, joint labelled in the GT.
        matched: (N,) bool, a prediction was matched to the person.
        image_ids: (N,) int64 image of each person.
        num_predictions: Predictions on the evaluated images.
        num_unmatched_predictions: Of those, matched to no GT person (false positives).
        threshold: The PCK threshold (fraction of the normaliser).
    """

    joints: tuple[int, ...]
    correct: np.ndarray
    labelled: np.ndarray
    matched: np.ndarray
    image_ids: np.ndarray
    num_predictions: int
    num_unmatched_predictions: int
    threshold: float

    @property
    def per_person_correct(self) -> np.ndarray:
        """(N,) int64 correct labelled joints per person."""
        return self.correct.sum(axis=1).astype(np.int64)

    @property
    def per_person_labelled(self) -> np.ndarray:
        """(N,) int64 labelled joints per person."""
        return self.labelled.sum(axis=1).astype(np.int64)

    @property
    def pck_percent(self) -> float:
        """Correct / labelled over all persons and joints, in percent (NaN if none labelled)."""
        total = int(self.labelled.sum())
        return 100.0 * int(self.correct.sum()) / total if total else math.nan

    @property
    def per_joint_percent(self) -> dict[str, float]:
        """Joint name -> PCK in percent (NaN where never labelled)."""
        lab = self.labelled.sum(axis=0)
        cor = self.correct.sum(axis=0)
        return {KEYPOINT_NAMES[j]: (100.0 * int(c) / int(n) if n else math.nan)
                for j, c, n in zip(self.joints, cor, lab)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-person arrays)."""
        return {
            'pck_percent': self.pck_percent,
            'per_joint_percent': self.per_joint_percent,
            'threshold': self.threshold,
            'num_persons': int(len(self.matched)),
            'num_missed_persons': int((~self.matched).sum()),
            'num_labelled_joints': int(self.labelled.sum()),
            'num_predictions': self.num_predictions,
            'num_unmatched_predictions': self.num_unmatched_predictions,
        }

def _pck_result(eval_joints: Any, correct_rows: list, labelled_rows: list, matched_rows: list,
                image_rows: list, n_pred: int, n_unmatched: int, threshold: float) -> PckResult:
    """Per-person rows collected by limb_pck / pckh -> PckResult arrays."""
    n_j = len(eval_joints)
    return PckResult(
        joints=eval_joints,
        correct=np.array(correct_rows, dtype=bool).reshape(-1, n_j),
        labelled=np.array(labelled_rows, dtype=bool).reshape(-1, n_j),
        matched=np.array(matched_rows, dtype=bool),
        image_ids=np.array(image_rows, dtype=np.int64),
        num_predictions=n_pred, num_unmatched_predictions=n_unmatched, threshold=float(threshold))



def _evaluated_joints(joints: Sequence[int], layout: str) -> tuple[int, ...]:
    _joint_mask(joints)
    allowed = set(shared_joints(layout))
    out = tuple(j for j in dict.fromkeys(int(j) for j in joints) if j in allowed)
    if not out:
        raise ValueError(f'none of joints {tuple(joints)} is labelled in layout {layout!r}')
    return out


def limb_pck(preds_per_image: Mapping[int, PredPersons | None],
             gts_per_image: Mapping[int, GtPersons], threshold: float = 0.1,
             joints: Sequence[int] = LIMB_JOINTS, layout: str = 'coco', min_oks: float = 0.1,
             sigmas: Sequence[float] = OKS_SIGMAS) -> PckResult:
    """Limb PCK: share of labelled GT joints within ``threshold x max(GT box w, h)``.

    Per image, predictions are matched to GT persons one-to-one by OKS
    (:func:`match_persons`, OKS over the layout's shared joints). A GT person with no matched
    prediction counts all its labelled joints as wrong. Unlabelled GT joints are ignored, crowd
    GT is skipped, predictions on images absent from ``gts_per_image`` are ignored.

    Args:
        preds_per_image: image_id -> (P, 17, 2|3) array or list of (17, 2|3) predictions in
            pixels; a missing image means no predictions.
        gts_per_image: image_id -> GtImage or list of GtPerson (from :func:`load_coco_keypoints`).
        threshold: Fraction of the GT box's larger side (> 0).
        joints: COCO-17 indices to score (default the 12 limb joints); intersected with
            :func:`shared_joints` of ``layout``.
        layout: Layout the GT came from.
        min_oks: Minimum OKS for a match.
        sigmas: (17,) OKS sigmas for matching.

    Returns:
        PckResult (``pck_percent``, ``per_joint_percent``, per-person counts for
        :func:`bootstrap_ci`).
    """
    if not threshold > 0:
        raise ValueError(f'threshold must be > 0, got {threshold}')
    eval_joints = _evaluated_joints(joints, layout)
    match_joints = shared_joints(layout)
    jidx = np.asarray(eval_joints)
    correct_rows, labelled_rows, matched_rows, image_rows = [], [], [], []
    n_pred = n_unmatched = 0
    for image_id, value in gts_per_image.items():
        persons, _ = _gt_persons(value)
        persons = [p for p in persons if not p.iscrowd]
        preds = _pred_array(preds_per_image.get(image_id))
        match = match_persons(preds, persons, min_oks=min_oks, sigmas=sigmas,
                              joints=match_joints)
        n_pred += len(preds)
        n_unmatched += int((match.pred_to_gt < 0).sum())
        for g, person in enumerate(persons):
            lab = person.labelled[jidx]
            if not lab.any():
                continue
            size = person.box_size_px
            if not size > 0:
                raise ValueError(f'image {image_id}: GT person with labelled joints has an '
                                 f'empty box {person.box_xywh}')
            p = match.gt_to_pred[g]
            if p >= 0:
                dist = np.linalg.norm(preds[p, jidx, :2] - person.keypoints[jidx, :2], axis=1)
                ok = lab & np.isfinite(dist) & (dist <= threshold * size)
            else:
                ok = np.zeros_like(lab)
            correct_rows.append(ok)
            labelled_rows.append(lab)
            matched_rows.append(p >= 0)
            image_rows.append(int(image_id))
    return _pck_result(eval_joints, correct_rows, labelled_rows, matched_rows, image_rows,
                       n_pred, n_unmatched, threshold)


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------

def _check_counts(correct: np.ndarray, labelled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    n = np.asarray(labelled, dtype=np.float64).reshape(-1)
    if c.shape != n.shape:
        raise ValueError(f'correct and labelled differ in length: {c.shape} vs {n.shape}')
    if np.any(c < 0) or np.any(c > n):
        raise ValueError('need 0 <= correct <= labelled for every person')
    return c, n


def _check_bootstrap_args(n_resamples: int, level: float) -> None:
    if n_resamples < 1:
        raise ValueError(f'n_resamples must be >= 1, got {n_resamples}')
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level}')


def bootstrap_ci(per_person_correct: np.ndarray, per_person_labelled: np.ndarray,
                 n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a pooled PCK, resampling persons with replacement.

    Each resample draws N persons (those with >= 1 labelled joint) and computes
    ``sum(correct) / sum(labelled)``, keeping the joints of a person together.

    Args:
        per_person_correct: (N,) correct joints per person.
        per_person_labelled: (N,) labelled joints per person.
        n_resamples: Bootstrap resamples.
        seed: numpy Generator seed (same seed -> same interval).
        level: Coverage, e.g. 0.95.

    Returns:
        (low, high) PCK in percent.
    """
    _check_bootstrap_args(n_resamples, level)
    c, n = _check_counts(per_person_correct, per_person_labelled)
    keep = n > 0
    c, n = c[keep], n[keep]
    if not len(n):
        raise ValueError('no person has a labelled joint')
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(n_resamples, len(n)))
    stats = 100.0 * c[idx].sum(axis=1) / n[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_diff_ci(correct_a: np.ndarray, correct_b: np.ndarray, labelled: np.ndarray,
                      n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval of PCK(a) - PCK(b) on the same GT persons.

    Args:
        correct_a: (N,) correct joints per person for model a.
        correct_b: (N,) correct joints per person for model b (same persons, same order).
        labelled: (N,) labelled joints per person.
        n_resamples: Bootstrap resamples.
        seed: numpy Generator seed.
        level: Coverage.

    Returns:
        (low, high) difference in percentage points (> 0: a better).
    """
    _check_bootstrap_args(n_resamples, level)
    ca, n = _check_counts(correct_a, labelled)
    cb, _ = _check_counts(correct_b, labelled)
    keep = n > 0
    ca, cb, n = ca[keep], cb[keep], n[keep]
    if not len(n):
        raise ValueError('no person has a labelled joint')
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(n_resamples, len(n)))
    stats = 100.0 * (ca[idx].sum(axis=1) - cb[idx].sum(axis=1)) / n[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------
# COCO OKS AP (pycocotools)
# --------------------------------------------------------------------------------------------

def to_coco17_dataset(images: Mapping[int, GtImage]) -> dict[str, Any]:
    """COCO-17 keypoint dataset dict (pycocotools-ready) from loaded ground truth.

    Unshared joints stay (0, 0, 0), ``num_keypoints`` counts the labelled COCO-17 joints and
    annotation ids are renumbered from 1 (pycocotools treats a GT id of 0 as "no match").
    """
    out_images, annotations = [], []
    for image in images.values():
        out_images.append({'id': int(image.image_id), 'file_name': image.file_name,
                           'width': int(image.width), 'height': int(image.height)})
        for person in image.persons:
            kpts = person.keypoints.copy()
            kpts[~person.labelled] = 0.0
            annotations.append({
                'id': len(annotations) + 1, 'image_id': int(image.image_id), 'category_id': 1,
                'keypoints': [float(v) for v in kpts.reshape(-1)],
                'num_keypoints': int(person.labelled.sum()),
                'bbox': [float(v) for v in person.box_xywh], 'area': float(person.area),
                'iscrowd': int(person.iscrowd)})
    return {
        'info': {'description': 'COCO-17 ground truth built by diffpose_ros.metrics'},
        'licenses': [], 'images': out_images, 'annotations': annotations,
        'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                        'keypoints': list(KEYPOINT_NAMES), 'skeleton': []}],
    }


def coco_results(image_id: int, keypoints: np.ndarray, scores: np.ndarray) -> list[dict]:
    """COCO keypoint result dicts for one image's predictions.

    Args:
        image_id: The GT image id.
        keypoints: (P, 17, 3) x_px, y_px, confidence (or (P, 17, 2): confidence 1).
        scores: (P,) person scores (ranking for AP).

    Returns:
        P dicts with image_id, category_id 1, keypoints (51 floats) and score.
    """
    kp = _pred_array(keypoints)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(sc) != len(kp):
        raise ValueError(f'{len(kp)} predictions but {len(sc)} scores')
    if kp.shape[2] == 2:
        kp = np.concatenate([kp, np.ones(kp.shape[:2] + (1,))], axis=2)
    return [{'image_id': int(image_id), 'category_id': 1,
             'keypoints': [float(v) for v in kp[i].reshape(-1)], 'score': float(sc[i])}
            for i in range(len(kp))]


COCO_AP_KEYS: tuple[str, ...] = ('AP', 'AP50', 'AP75', 'APm', 'APl',
                                 'AR', 'AR50', 'AR75', 'ARm', 'ARl')


def coco_oks_ap(gt: str | Path | Mapping[str, Any] | Mapping[int, GtImage],
                predictions: Sequence[Mapping[str, Any]], layout: str = 'coco',
                sigmas: Sequence[float] = OKS_SIGMAS) -> dict[str, float]:
    """COCO keypoint AP/AR with pycocotools' ``COCOeval(iouType='keypoints')``.

    The GT is always rebuilt as COCO-17 (:func:`to_coco17_dataset`). For AI Challenger or
    PoseTrack GT the joints COCO-17 has but the layout lacks are unlabelled (v = 0), and
    COCOeval's OKS sums only over labelled GT joints, so AP is scored on the shared joints only
    and the predicted eyes/ears are simply ignored. Such AP uses COCO's sigmas and the
    ``0.53 x box`` area, so it is not comparable with a dataset's official AP.

    Args:
        gt: Path or dict of a COCO-format JSON in ``layout``, or loaded GT
            (:func:`load_coco_keypoints`).
        predictions: COCO result dicts: image_id, category_id (1), keypoints (51 numbers,
            COCO-17 x, y, confidence), score.
        layout: Layout of ``gt`` when it is a path or dict.
        sigmas: (17,) OKS sigmas.

    Returns:
        AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl in percent; NaN where undefined
        (e.g. no medium GT); zeros when there are GT persons but no predictions.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('coco_oks_ap needs pycocotools (pip install pycocotools)') from exc
    if isinstance(gt, Mapping) and 'annotations' not in gt:
        images = dict(gt)
        if not all(isinstance(v, GtImage) for v in images.values()):
            raise ValueError('gt mapping must be a COCO dict or image_id -> GtImage')
    else:
        images = load_coco_keypoints(gt, layout=layout)
    dataset = to_coco17_dataset(images)
    image_ids = {img['id'] for img in dataset['images']}
    results = []
    for i, pred in enumerate(predictions):
        kp = np.asarray(pred.get('keypoints', ()), dtype=np.float64).reshape(-1)
        if kp.size != 3 * NUM_KEYPOINTS or not np.all(np.isfinite(kp)):
            raise ValueError(f'prediction {i}: keypoints must be {3 * NUM_KEYPOINTS} finite '
                             'numbers')
        if int(pred.get('image_id', -1)) not in image_ids:
            raise ValueError(f'prediction {i}: image_id {pred.get("image_id")} not in the GT')
        if int(pred.get('category_id', 1)) != 1:
            raise ValueError(f'prediction {i}: category_id must be 1')
        score = float(pred.get('score', 1.0))
        if not math.isfinite(score):
            raise ValueError(f'prediction {i}: score must be finite')
        results.append({'image_id': int(pred['image_id']), 'category_id': 1,
                        'keypoints': kp.tolist(), 'score': score})
    has_gt = any(a['num_keypoints'] > 0 and not a['iscrowd'] for a in dataset['annotations'])
    if not results:
        value = 0.0 if has_gt else math.nan
        return dict.fromkeys(COCO_AP_KEYS, value)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dataset)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, 'keypoints')
        evaluator.params.kpt_oks_sigmas = _sigmas_array(sigmas)
        evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {key: (100.0 * float(v) if v >= 0 else math.nan)
            for key, v in zip(COCO_AP_KEYS, evaluator.stats)}


# --------------------------------------------------------------------------------------------
# PoseTrack-style PCKh and AP
# --------------------------------------------------------------------------------------------

# poseval's groups, restricted to COCO-17 joints (head_top and head_bottom have no COCO joint).
POSETRACK_GROUPS: Mapping[str, tuple[int, ...]] = MappingProxyType({
    'head': (0,), 'shoulder': (5, 6), 'elbow': (7, 8), 'wrist': (9, 10), 'hip': (11, 12),
    'knee': (13, 14), 'ankle': (15, 16)})


def poseval_assignment(scores: np.ndarray) -> np.ndarray:
    """poseval's person assignment (``assignGTmulti``) on a (P, G) PCKh score matrix.

    Every prediction keeps only its best GT (first on ties); every GT then takes the best of
    the predictions that kept it; a pair scoring 0 is no match. One-to-one by construction.

    Args:
        scores: (P, G) share of the GT's labelled joints the prediction hits.

    Returns:
        (P,) int64 GT index per prediction, -1 when unmatched.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f'scores must be 2-D, got {s.shape}')
    n_pred, n_gt = s.shape
    pred_to_gt = np.full(n_pred, -1, dtype=np.int64)
    if n_pred == 0 or n_gt == 0:
        return pred_to_gt
    kept = np.zeros_like(s)
    best_gt = np.argmax(s, axis=1)
    kept[np.arange(n_pred), best_gt] = s[np.arange(n_pred), best_gt]
    best_pred = np.argmax(kept, axis=0)
    for g in range(n_gt):
        if kept[best_pred[g], g] > 0:
            pred_to_gt[best_pred[g]] = g
    return pred_to_gt


def _voc_ap(scores: np.ndarray, labels: np.ndarray, total_pos: int) -> float:
    """All-point interpolated AP (poseval's ``computeRPC`` + ``VOCap``), in [0, 1]."""
    if total_pos <= 0:
        return math.nan
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind='stable')
    tp = np.cumsum(np.asarray(labels, dtype=np.float64)[order])
    recall = tp / total_pos
    precision = tp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


@dataclasses.dataclass(frozen=True)
class PckhResult:
    """PoseTrack-style PCKh and per-joint AP.

    Attributes:
        pck: Per-person outcome (rows: GT persons with a labelled evaluated joint); the
            threshold is relative to the head size.
        ap_per_joint_percent: Joint name -> poseval-style AP in percent, or None when the
            predictions carry no confidences.
    """

    pck: PckResult
    ap_per_joint_percent: dict[str, float] | None

    @property
    def per_joint_percent(self) -> dict[str, float]:
        """Joint name -> PCKh in percent."""
        return self.pck.per_joint_percent

    @property
    def mean_percent(self) -> float:
        """Unweighted mean of the per-joint PCKh (poseval's "Total")."""
        vals = [v for v in self.per_joint_percent.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    @property
    def map_percent(self) -> float | None:
        """Mean of the per-joint AP (poseval's "Total" mAP), or None without confidences."""
        if self.ap_per_joint_percent is None:
            return None
        vals = [v for v in self.ap_per_joint_percent.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    def groups_percent(self, per_joint: Mapping[str, float]) -> dict[str, float]:
        """poseval's table groups (head = nose only here) from a per-joint dict."""
        out = {}
        for group, members in POSETRACK_GROUPS.items():
            vals = [per_joint[name] for name in (KEYPOINT_NAMES[j] for j in members)
                    if name in per_joint and not math.isnan(per_joint[name])]
            out[group] = float(np.mean(vals)) if vals else math.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        out = {'pckh_mean_percent': self.mean_percent,
               'pckh_per_joint_percent': self.per_joint_percent,
               'pckh_groups_percent': self.groups_percent(self.per_joint_percent),
               'pckh_pooled_percent': self.pck.pck_percent,
               'threshold': self.pck.threshold,
               'num_persons': int(len(self.pck.matched)),
               'num_missed_persons': int((~self.pck.matched).sum())}
        if self.ap_per_joint_percent is not None:
            out['map_percent'] = self.map_percent
            out['ap_per_joint_percent'] = self.ap_per_joint_percent
            out['ap_groups_percent'] = self.groups_percent(self.ap_per_joint_percent)
        return out


def pckh(preds_per_image: Mapping[int, PredPersons | None],
         gts_per_image: Mapping[int, GtPersons], threshold: float = 0.5,
         joints: Sequence[int] | None = None, layout: str = 'posetrack') -> PckhResult:
    """PoseTrack-style PCKh@threshold and per-joint AP on the joints PoseTrack and COCO share.

    Follows poseval's ``assignGTmulti``: a joint hits when its distance to the GT is
    <= threshold x head size (0.6 x head-box diagonal); GT persons without a labelled evaluated
    joint are dropped; prediction p and GT g score the share of g's labelled joints p hits;
    persons are matched by :func:`poseval_assignment`. Predicted joints that are non-finite or
    inside the image's ignore regions are absent (poseval drops them). PCKh per joint is
    hits / labelled GT joints (a missed GT person counts as wrong). AP per joint ranks every
    present predicted joint by its confidence; a joint is a true positive when its person is
    matched and it hits; positives = labelled GT joints.

    Args:
        preds_per_image: image_id -> (P, 17, 2|3) predictions in pixels (confidence in column
            3 enables AP).
        gts_per_image: image_id -> GtImage or list of GtPerson with head boxes.
        threshold: Fraction of the head size (> 0).
        joints: COCO-17 indices (default :func:`shared_joints` of ``layout``).
        layout: Layout the GT came from.

    Returns:
        PckhResult.
    """
    if not threshold > 0:
        raise ValueError(f'threshold must be > 0, got {threshold}')
    eval_joints = _evaluated_joints(shared_joints(layout) if joints is None else joints, layout)
    jidx = np.asarray(eval_joints)
    n_j = len(eval_joints)
    correct_rows, labelled_rows, matched_rows, image_rows = [], [], [], []
    ap_scores: list[list[float]] = [[] for _ in range(n_j)]
    ap_labels: list[list[bool]] = [[] for _ in range(n_j)]
    has_conf: bool | None = None
    n_pred = n_unmatched = 0
    for image_id, value in gts_per_image.items():
        persons, regions = _gt_persons(value)
        persons = [p for p in persons if not p.iscrowd and p.labelled[jidx].any()]
        preds = _pred_array(preds_per_image.get(image_id))
        if len(preds):
            conf = preds.shape[2] == 3
            if has_conf is not None and conf != has_conf:
                raise ValueError('all predictions must have the same number of columns')
            has_conf = conf
        xy = preds[:, jidx, :2]  # (P, J, 2)
        present = np.all(np.isfinite(xy), axis=2)
        if regions and len(preds):
            inside = _in_any_region(np.nan_to_num(xy.reshape(-1, 2)), regions).reshape(
                present.shape)
            present &= ~inside
        keep = present.any(axis=1)
        preds, xy, present = preds[keep], xy[keep], present[keep]
        n_pred += len(preds)
        lab = np.array([p.labelled[jidx] for p in persons], dtype=bool).reshape(-1, n_j)
        hit = np.zeros((len(preds), len(persons), n_j), dtype=bool)
        for g, person in enumerate(persons):
            head = person.head_size_px
            if not head > 0:
                raise ValueError(f'image {image_id}: empty head box {person.head_box_xywh}')
            dist = np.linalg.norm(xy - person.keypoints[jidx, :2], axis=2)  # (P, J)
            hit[:, g] = present & lab[g] & (np.nan_to_num(dist, nan=np.inf) <= threshold * head)
        scores = hit.sum(axis=2) / np.maximum(lab.sum(axis=1), 1)[None, :]
        pred_to_gt = poseval_assignment(scores)
        match = _match_from_pred_to_gt(pred_to_gt, len(persons), scores)
        n_unmatched += int((pred_to_gt < 0).sum())
        for g in range(len(persons)):
            p = match.gt_to_pred[g]
            correct_rows.append(hit[p, g] if p >= 0 else np.zeros(n_j, dtype=bool))
            labelled_rows.append(lab[g])
            matched_rows.append(p >= 0)
            image_rows.append(int(image_id))
        if has_conf:
            for p in range(len(preds)):
                g = pred_to_gt[p]
                for j in range(n_j):
                    if present[p, j]:
                        ap_scores[j].append(float(preds[p, jidx[j], 2]))
                        ap_labels[j].append(bool(g >= 0 and hit[p, g, j]))
    pck = _pck_result(eval_joints, correct_rows, labelled_rows, matched_rows, image_rows,
                       n_pred, n_unmatched, threshold)
    ap = None
    if has_conf:
        positives = pck.labelled.sum(axis=0)
        ap = {KEYPOINT_NAMES[j]: 100.0 * _voc_ap(np.asarray(ap_scores[k]),
                                                 np.asarray(ap_labels[k]), int(positives[k]))
              for k, j in enumerate(eval_joints)}
    return PckhResult(pck=pck, ap_per_joint_percent=ap)


# --------------------------------------------------------------------------------------------
# Temporal metrics on unlabelled video
# --------------------------------------------------------------------------------------------

def box_sizes_from_xyxy(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(T, 4) x1, y1, x2, y2 boxes -> (T,) larger side in pixels."""
    b = np.asarray(boxes_xyxy, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f'boxes must be (T, 4), got {b.shape}')
    return np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def _track_arrays(track_xy: np.ndarray, box_sizes: np.ndarray | None,
                  valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    xy = np.asarray(track_xy, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] not in (2, 3):
        raise ValueError(f'track must be (T, J, 2|3), got {xy.shape}')
    xy = xy[..., :2]
    ok = np.all(np.isfinite(xy), axis=2)
    xy = np.where(ok[..., None], xy, 0.0)  # masked below; keeps the arithmetic warning-free
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != ok.shape:
            raise ValueError(f'valid must be {ok.shape}, got {v.shape}')
        ok &= v
    sizes = None
    if box_sizes is not None:
        sizes = np.asarray(box_sizes, dtype=np.float64).reshape(-1)
        if sizes.shape != (xy.shape[0],):
            raise ValueError(f'box_sizes must be ({xy.shape[0]},), got {sizes.shape}')
        good = np.isfinite(sizes) & (sizes > 0)
        ok &= good[:, None]
        sizes = np.where(good, sizes, np.nan)
    return xy, sizes, ok


def acceleration_norms(track_xy: np.ndarray, box_sizes: np.ndarray,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Box-normalised second differences ``||x[t+1] - 2 x[t] + x[t-1]|| / size[t]``.

    Args:
        track_xy: (T, J, 2|3) one person's keypoints per frame in pixels.
        box_sizes: (T,) box size per frame in pixels (e.g. :func:`box_sizes_from_xyxy`).
        valid: (T, J) bool, False for joints to skip (e.g. confidence < 0.3); a term needs the
            joint valid and finite in all three frames.

    Returns:
        (M,) float64 values of the valid terms (pool these across tracks).
    """
    xy, sizes, ok = _track_arrays(track_xy, box_sizes, valid)
    if len(xy) < 3:
        return np.zeros(0)
    acc = xy[2:] - 2.0 * xy[1:-1] + xy[:-2]  # (T-2, J, 2), centred on t = 1..T-2
    use = ok[2:] & ok[1:-1] & ok[:-2]
    norm = np.linalg.norm(np.where(use[..., None], acc, 0.0), axis=2) / sizes[1:-1, None]
    return norm[use]


def jitter(track_xy: np.ndarray, box_sizes: np.ndarray,
           valid: np.ndarray | None = None) -> float:
    """Mean keypoint acceleration normalised by box size (see :func:`acceleration_norms`).

    A constant-velocity track has jitter 0; a joint alternating +-d around a fixed point has
    ``4 d / size``.

    Args:
        track_xy: (T, J, 2|3) one person's keypoints per frame in pixels.
        box_sizes: (T,) box size per frame in pixels.
        valid: (T, J) bool, False for joints to skip (e.g. low confidence).

    Returns:
        Mean over valid joints and frames (dimensionless, fraction of the box per frame^2);
        NaN when no term is valid.
    """
    terms = acceleration_norms(track_xy, box_sizes, valid)
    return float(terms.mean()) if terms.size else math.nan


def lag_profile(track_xy: np.ndarray, reference_xy: np.ndarray, max_lag: int = 5,
                valid: np.ndarray | None = None, reference_valid: np.ndarray | None = None,
                box_sizes: np.ndarray | None = None) -> dict[int, float]:
    """Mean distance between our track shifted by each lag and the reference.

    For lag L the pairs are ``track[t + L]`` vs ``reference[t]`` over all t where both exist and
    are valid, so a positive best lag means we are L frames late.

    Args:
        track_xy: (T, J, 2|3) our keypoints in pixels.
        reference_xy: (T, J, 2|3) reference (e.g. teacher's smoothed) keypoints, same frames.
        max_lag: Lags -max_lag..max_lag are tried (0 <= max_lag < T).
        valid: (T, J) bool mask for our track.
        reference_valid: (T, J) bool mask for the reference.
        box_sizes: (T,) reference box sizes; distances are divided by them when given.

    Returns:
        lag -> mean distance (pixels, or box fractions); NaN when no pair is valid.
    """
    xy, _, ok = _track_arrays(track_xy, None, valid)
    ref, sizes, ref_ok = _track_arrays(reference_xy, box_sizes, reference_valid)
    if xy.shape != ref.shape:
        raise ValueError(f'track {xy.shape} and reference {ref.shape} differ')
    n = len(xy)
    if not 0 <= max_lag < n:
        raise ValueError(f'max_lag must be in [0, {n - 1}], got {max_lag}')
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        t0, t1 = max(0, -lag), min(n, n - lag)  # reference frames t with t + lag in range
        ours, theirs = xy[t0 + lag:t1 + lag], ref[t0:t1]
        use = ok[t0 + lag:t1 + lag] & ref_ok[t0:t1]
        dist = np.linalg.norm(np.where(use[..., None], ours - theirs, 0.0), axis=2)
        if sizes is not None:
            dist = dist / sizes[t0:t1, None]
        out[lag] = float(dist[use].mean()) if use.any() else math.nan
    return out


def lag_frames(track_xy: np.ndarray, reference_xy: np.ndarray, max_lag: int = 5,
               valid: np.ndarray | None = None, reference_valid: np.ndarray | None = None,
               box_sizes: np.ndarray | None = None) -> int:
    """Frame offset in [-max_lag, max_lag] that best aligns our track with the reference.

    Minimises :func:`lag_profile`; positive = we are late (our frame t + L matches the
    reference's frame t). Ties go to the smallest |L| (then the negative one).

    Args:
        track_xy: (T, J, 2|3) our keypoints in pixels.
        reference_xy: (T, J, 2|3) reference keypoints, same frames.
        max_lag: Largest |lag| tried, in frames.
        valid: (T, J) bool mask for our track.
        reference_valid: (T, J) bool mask for the reference.
        box_sizes: (T,) reference box sizes to normalise distances (optional).

    Returns:
        The lag in frames; ValueError when no lag has a valid pair.
    """
    profile = lag_profile(track_xy, reference_xy, max_lag=max_lag, valid=valid,
                          reference_valid=reference_valid, box_sizes=box_sizes)
    finite = {k: v for k, v in profile.items() if not math.isnan(v)}
    if not finite:
        raise ValueError('no valid frame pair at any lag')
    return min(finite, key=lambda k: (finite[k], abs(k), k))


def agreement(track_xy: np.ndarray, reference_xy: np.ndarray, box_sizes: np.ndarray,
              threshold: float = 0.1, valid: np.ndarray | None = None,
              reference_valid: np.ndarray | None = None) -> float:
    """PCK against a reference track: share of joints within threshold x box size.

    Args:
        track_xy: (T, J, 2|3) our keypoints in pixels.
        reference_xy: (T, J, 2|3) reference keypoints (e.g. the teacher's smoothed labels).
        box_sizes: (T,) reference box sizes in pixels.
        threshold: Fraction of the box size (> 0).
        valid: (T, J) bool mask for our track (an invalid joint where the reference is valid
            counts as a miss).
        reference_valid: (T, J) bool mask for the reference (only these joints are scored).

    Returns:
        Percent of scored joints that agree; NaN when none is scored.
    """
    if not threshold > 0:
        raise ValueError(f'threshold must be > 0, got {threshold}')
    xy, _, ok = _track_arrays(track_xy, None, valid)
    ref, sizes, ref_ok = _track_arrays(reference_xy, box_sizes, reference_valid)
    if xy.shape != ref.shape:
        raise ValueError(f'track {xy.shape} and reference {ref.shape} differ')
    if not ref_ok.any():
        return math.nan
    dist = np.linalg.norm(np.where(ok[..., None], xy - ref, np.inf), axis=2)
    hit = ok & (dist <= threshold * sizes[:, None])
    return 100.0 * float(hit[ref_ok].mean())


def temporal_smooth(track_xy: np.ndarray, window: int,
                    confidences: np.ndarray | None = None) -> np.ndarray:
    """Offline, centred, confidence-weighted moving average of a keypoint track.

    Frame t averages frames t-h..t+h (h = window // 2) weighted by confidence (non-finite
    points weigh 0). Near the ends the half-width shrinks to min(h, t, T-1-t) so the window
    stays centred: a constant-velocity track passes unchanged (no lag), the first and last
    frames are not smoothed. A moving average rather than Savitzky-Golay: it needs no scipy
    and handles missing joints by weighting.

    Args:
        track_xy: (T, J, 2|3) keypoints in pixels (a third column is ignored).
        window: Odd window length in frames (1 = no smoothing).
        confidences: (T, J) weights >= 0 (default 1).

    Returns:
        (T, J, 2) float64 smoothed keypoints; NaN where the window holds no weight.
    """
    if not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise ValueError(f'window must be an odd int >= 1, got {window!r}')
    xy, _, ok = _track_arrays(track_xy, None, None)
    n = len(xy)
    w = np.ones(ok.shape) if confidences is None else np.asarray(confidences, np.float64)
    if w.shape != ok.shape:
        raise ValueError(f'confidences must be {ok.shape}, got {w.shape}')
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError('confidences must be finite and >= 0')
    w = np.where(ok, w, 0.0)
    pts = np.where(ok[..., None], xy, 0.0)
    half = window // 2
    t = np.arange(n)
    half_t = np.minimum(half, np.minimum(t, n - 1 - t))
    num = np.zeros_like(pts)
    den = np.zeros(ok.shape)
    for k in range(-half, half + 1):
        rows = t[np.abs(k) <= half_t]
        num[rows] += w[rows + k, :, None] * pts[rows + k]
        den[rows] += w[rows + k]
    with np.errstate(invalid='ignore', divide='ignore'):
        out = num / den[..., None]
    out[den <= 0] = np.nan
    return out


# --------------------------------------------------------------------------------------------
# Identity: IDF1 (Ristani et al., ECCV 2016 workshops)
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class IdentityScores:
    """Identity precision, recall and F1 of predicted tracks against GT tracks.

    Attributes:
        idtp: Person-frames whose prediction belongs to the predicted track assigned to the GT
            track (one-to-one assignment of whole tracks maximising ``idtp``).
        idfp: Predicted person-frames not counted in ``idtp`` (false positives included).
        idfn: GT person-frames not counted in ``idtp`` (misses included).
        assignment: GT track id -> the predicted track id assigned to it (only those assigned).
    """

    idtp: int
    idfp: int
    idfn: int
    assignment: dict[int, int]

    @property
    def idp(self) -> float:
        return _safe_ratio(self.idtp, self.idtp + self.idfp)

    @property
    def idr(self) -> float:
        return _safe_ratio(self.idtp, self.idtp + self.idfn)

    @property
    def idf1(self) -> float:
        return _safe_ratio(2 * self.idtp, 2 * self.idtp + self.idfp + self.idfn)

    def to_dict(self) -> dict[str, Any]:
        return {'idf1': self.idf1, 'idp': self.idp, 'idr': self.idr, 'idtp': self.idtp,
                'idfp': self.idfp, 'idfn': self.idfn,
                'assignment': {int(g): int(p) for g, p in sorted(self.assignment.items())}}


def _safe_ratio(num: float, den: float) -> float:
    return float(num) / den if den > 0 else math.nan


def identity_scores(matched_pairs: Sequence[tuple[int, int]], num_gt: int,
                    num_pred: int) -> IdentityScores:
    """IDF1 from the per-frame matches of a video.

    The standard definition (as ``py-motmetrics`` and TrackEval compute it): every GT track is
    assigned at most one predicted track and vice versa, maximising the number of person-frames
    on which the pair was matched (IDTP); everything else is an identity false positive
    (predicted person-frames) or false negative (GT person-frames).
    IDF1 = 2 IDTP / (num_gt + num_pred).

    Args:
        matched_pairs: One (GT track id, predicted track id) per person-frame on which the two
            were matched (each GT and each predicted person at most once per frame).
        num_gt: GT person-frames scored (matched or not).
        num_pred: Predicted person-frames on the scored frames (matched or not).
    """
    pairs = [(int(g), int(p)) for g, p in matched_pairs]
    if len(pairs) > min(num_gt, num_pred):
        raise ValueError(f'{len(pairs)} matched person-frames but only {num_gt} GT and '
                         f'{num_pred} predicted person-frames')
    gt_ids = sorted({g for g, _ in pairs})
    pred_ids = sorted({p for _, p in pairs})
    counts = np.zeros((len(gt_ids), len(pred_ids)))
    gt_row = {g: i for i, g in enumerate(gt_ids)}
    pred_col = {p: j for j, p in enumerate(pred_ids)}
    for g, p in pairs:
        counts[gt_row[g], pred_col[p]] += 1
    row_to_col = assign_max_weight(counts, min_weight=1.0)
    assignment = {gt_ids[r]: pred_ids[c] for r, c in enumerate(row_to_col) if c >= 0}
    idtp = int(sum(counts[r, c] for r, c in enumerate(row_to_col) if c >= 0))
    return IdentityScores(idtp=idtp, idfp=num_pred - idtp, idfn=num_gt - idtp,
                          assignment=assignment)
