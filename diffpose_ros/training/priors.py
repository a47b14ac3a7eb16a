"""Detector priors for training: YOLO11n-pose's real predictions on the training images.

The denoiser learns to *correct* the detector, so it must see the detector's own mistakes. The
detector runs once over every training image (or video frame) and its detections are cached as
JSON lines, one per image: ``{"key": ..., "detections": [{"box_xyxy", "score", "keypoints"}]}``.
A run stopped half-way resumes where it stopped (the file is appended to and read back).

At training time each labelled person is matched to the detection whose box overlaps its label
box best (:func:`match_detection`); people the detector misses have no prior and are skipped,
as the pipeline would never estimate them.

ROS-free; the detector is anything with ``detect(image_bgr) -> list[Detection]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

PRIOR_FORMAT = 'diffpose-detector-priors/1'
MIN_MATCH_IOU = 0.3  # a label box and a detection box overlapping less are different people


class DetectorPrior:
    """One detection of the cache: box (4,), score, keypoints (17, 3)."""

    __slots__ = ('box_xyxy', 'score', 'keypoints')

    def __init__(self, box_xyxy: np.ndarray, score: float, keypoints: np.ndarray):
        self.box_xyxy = np.asarray(box_xyxy, np.float64).reshape(4)
        self.score = float(score)
        self.keypoints = np.asarray(keypoints, np.float64).reshape(-1, 3)


def read_priors(path: str | Path) -> dict[str, list[DetectorPrior]]:
    """Key -> detections of a prior cache (a missing file reads as empty)."""
    path = Path(path)
    out: dict[str, list[DetectorPrior]] = {}
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interrupted run: it is recomputed
        if row.get('format') == PRIOR_FORMAT:
            continue
        out[row['key']] = [DetectorPrior(d['box_xyxy'], d['score'], d['keypoints'])
                           for d in row['detections']]
    return out


def cache_priors(items: Iterable[tuple[str, Any]], detector: Any, out_path: str | Path,
                 total: int | None = None, progress: bool = True,
                 identity: dict[str, Any] | None = None) -> dict[str, list[DetectorPrior]]:
    """Run ``detector`` on every (key, image or loader) not cached yet; append to ``out_path``.

    ``items`` yields ``(key, image_bgr)`` or ``(key, callable -> image_bgr)`` (lazy loading, so
    cached keys cost nothing). Returns the whole cache.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_priors(out_path)
    new_file = not out_path.is_file() or out_path.stat().st_size == 0
    with open(out_path, 'a') as f:
        if new_file:
            f.write(json.dumps({'format': PRIOR_FORMAT, **(identity or {})}) + '\n')
        for key, image in tqdm(items, total=total, desc='detector priors', unit='image',
                               disable=not progress):
            if key in done:
                continue
            image_bgr = image() if callable(image) else image
            detections = detector.detect(image_bgr)
            rows = [{'box_xyxy': [round(float(v), 2) for v in d.box_xyxy],
                     'score': round(float(d.score), 4),
                     'keypoints': [[round(float(x), 2), round(float(y), 2), round(float(c), 4)]
                                   for x, y, c in np.asarray(d.keypoints).reshape(-1, 3)]}
                    for d in detections if d.keypoints is not None]
            f.write(json.dumps({'key': key, 'detections': rows}) + '\n')
            f.flush()
            done[key] = [DetectorPrior(r['box_xyxy'], r['score'], r['keypoints']) for r in rows]
    return done


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) xyxy box with (M, 4) boxes."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def match_detection(label_box_xyxy: np.ndarray, label_keypoints: np.ndarray,
                    detections: list[DetectorPrior],
                    min_iou: float = MIN_MATCH_IOU) -> DetectorPrior | None:
    """The detection of this labelled person: best box IoU, ties broken by keypoint distance.

    Label boxes here are the padded tight box of the labelled joints, smaller than a detector's
    box, so the score adds the share of labelled joints that fall inside the detection box.
    """
    if not detections:
        return None
    boxes = np.stack([d.box_xyxy for d in detections])
    iou = box_iou(np.asarray(label_box_xyxy, np.float64), boxes)
    labelled = label_keypoints[:, 2] > 0
    inside = np.zeros(len(detections))
    if labelled.any():
        pts = label_keypoints[labelled, :2]
        inside = np.array([np.mean((pts[:, 0] >= b[0]) & (pts[:, 0] <= b[2])
                                   & (pts[:, 1] >= b[1]) & (pts[:, 1] <= b[3])) for b in boxes])
    score = iou + 0.5 * inside
    best = int(np.argmax(score))
    if iou[best] < min_iou:
        return None
    return detections[best]


def iter_image_files(paths: Iterable[Path]) -> Iterator[tuple[str, Any]]:
    """(file name, lazy loader) per image path, for :func:`cache_priors`."""
    import cv2

    for path in paths:
        yield path.name, (lambda p=path: _imread(cv2, p))


def _imread(cv2: Any, path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return image
