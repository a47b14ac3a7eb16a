"""Skeleton drawing shared by the debug image, diffpose-video and the evaluation overlays.

Sizes follow the person: the line width and the joint radius grow with the person's extent
(its box, else the spread of its drawn joints), so a small, distant person is not painted over
by its own skeleton and a close one gets readable lines. Confidence sets the style: joints
below ``hide_below`` are not drawn, nor are their bones; joints below ``solid_from`` are hollow
rings and their bones thin and faded; the rest are solid. Keypoints without a confidence
column (ground truth) are all solid.
"""
from __future__ import annotations

import numpy as np

from diffpose_ros.skeleton import BONES

# a 90 px tall person gets 1 px lines, 180 px 2 px, ... up to MAX_LINE_PX; joints a 1 px
# radius per 60 px (a disc 3 px wide on a 60-100 px person), up to MAX_RADIUS_PX
PERSON_PX_PER_LINE_PX = 90.0
MAX_LINE_PX = 6
PERSON_PX_PER_RADIUS_PX = 60.0
MAX_RADIUS_PX = 9
HIDE_BELOW = 0.2       # confidence under which a joint is not drawn
SOLID_FROM = 0.5       # confidence from which a joint is drawn solid (between: hollow, faded)


def line_and_radius_px(person_size_px: float) -> tuple[int, int]:
    """(line width, joint radius) in pixels for a person ``person_size_px`` tall (or wide)."""
    size = float(person_size_px) if np.isfinite(person_size_px) else 0.0
    line = int(np.clip(round(size / PERSON_PX_PER_LINE_PX), 1, MAX_LINE_PX))
    return line, int(np.clip(round(size / PERSON_PX_PER_RADIUS_PX), 1, MAX_RADIUS_PX))


def _person_size_px(points_xy: np.ndarray, drawn: np.ndarray,
                    box_xyxy: np.ndarray | None) -> float:
    if box_xyxy is not None:
        x0, y0, x1, y1 = (float(v) for v in box_xyxy)
        return max(x1 - x0, y1 - y0)
    if not drawn.any():
        return 0.0
    extent = points_xy[drawn].max(axis=0) - points_xy[drawn].min(axis=0)
    return float(extent.max())


def _faded(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(round(0.5 * c + 0.5 * 128)) for c in colour)


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, colour: tuple[int, int, int],
                  scale: float = 1.0, mask: np.ndarray | None = None, *,
                  box_xyxy: np.ndarray | None = None, hide_below: float = HIDE_BELOW,
                  solid_from: float = SOLID_FROM) -> None:
    """Draw one person's bones and joints into ``image`` (in place).

    Args:
        image: BGR uint8 image, drawn into.
        keypoints: (17, 2) or (17, 3) COCO-17 keypoints in pixels of the image before
            ``scale`` (pixel-corner convention), the third column a confidence.
        colour: BGR colour.
        scale: ``image`` is the original scaled by this factor (evaluation thumbnails).
        mask: (17,) bool; False joints are not drawn (e.g. unlabelled ground truth).
        box_xyxy: the person's box (original pixels); sizes follow it, else the joints' spread.
        hide_below: joints with a confidence below it are not drawn.
        solid_from: joints with a confidence below it are drawn hollow, their bones faded.
    """
    # imported here: diffpose_ros.evaluation imports this module whether it draws or not
    import cv2

    kp = np.asarray(keypoints, dtype=np.float64)
    xy = kp[:, :2]
    drawn = np.all(np.isfinite(xy), axis=1)
    if mask is not None:
        drawn &= np.asarray(mask, dtype=bool)
    if kp.shape[1] > 2:
        confidence = np.nan_to_num(kp[:, 2], nan=0.0)
        drawn &= confidence >= hide_below
        solid = confidence >= solid_from
    else:
        solid = np.ones(len(kp), dtype=bool)
    size = _person_size_px(xy, drawn, None if box_xyxy is None else np.asarray(box_xyxy))
    line, radius = line_and_radius_px(size * scale)
    faded = _faded(colour)
    # anti-aliasing smears a 1 px line over ~3 px: small people get crisp lines
    line_type = cv2.LINE_AA if line > 1 else cv2.LINE_8
    points = [(int(round((x - 0.5) * scale)), int(round((y - 0.5) * scale)))
              for x, y in np.nan_to_num(xy)]
    for a, b in BONES:
        if drawn[a] and drawn[b]:
            confident = solid[a] and solid[b]
            cv2.line(image, points[a], points[b], colour if confident else faded,
                     line if confident else max(1, line // 2), line_type)
    for j in np.flatnonzero(drawn):
        if solid[j]:
            cv2.circle(image, points[j], radius, colour, -1, line_type)
        else:
            cv2.circle(image, points[j], radius, colour, 1, line_type)
