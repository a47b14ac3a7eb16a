"""Skeleton drawing (diffpose_ros.drawing), shared by the debug image / diffpose-video
(pipeline.draw_poses) and the evaluation overlays: sizes follow the person, low-confidence
joints are hollow or hidden, and small real people are not painted over."""
from __future__ import annotations

import numpy as np
import pytest

from diffpose_ros import evaluation, pipeline
from diffpose_ros.drawing import (
    HIDE_BELOW,
    MAX_LINE_PX,
    SOLID_FROM,
    draw_skeleton,
    line_and_radius_px,
)

WHITE = (255, 255, 255)


def _standing_person(x: float, top: float, height: float, confidence: float = 0.9) -> np.ndarray:
    """(17, 3) keypoints of an upright person ``height`` px tall, centred on x."""
    w = height / 4
    rows = [(0, 0.05), (-0.1, 0.03), (0.1, 0.03), (-0.2, 0.05), (0.2, 0.05),     # head
            (-1, 0.2), (1, 0.2), (-1.2, 0.35), (1.2, 0.35), (-1.3, 0.5), (1.3, 0.5),  # arms
            (-0.6, 0.5), (0.6, 0.5), (-0.6, 0.75), (0.6, 0.75), (-0.6, 1.0), (0.6, 1.0)]
    return np.array([[x + dx * w, top + fy * height, confidence] for dx, fy in rows])


def _line_width_px(image: np.ndarray, row: int, x_from: int, x_to: int) -> int:
    """Painted pixels on one image row between two columns (crossing one vertical bone)."""
    return int((image[row, x_from:x_to].max(axis=-1) > 0).sum())


def test_line_and_radius_grow_with_the_person_and_are_bounded():
    sizes = [10, 60, 90, 180, 360, 2000]
    lines = [line_and_radius_px(s)[0] for s in sizes]
    assert lines == sorted(lines) and lines[0] == 1 and lines[-1] == MAX_LINE_PX
    assert line_and_radius_px(180) == (2, 3)
    assert all(radius >= line for line, radius in map(line_and_radius_px, sizes))
    assert line_and_radius_px(80) == (1, 1) and line_and_radius_px(float('nan')) == (1, 1)


def test_bones_of_a_large_person_are_thicker_than_of_a_small_one():
    widths = {}
    for height in (60, 480):
        image = np.zeros((600, 400, 3), np.uint8)
        kp = _standing_person(200, 40, height)
        half_width = 0.4 * height                               # a box taller than wide
        draw_skeleton(image, kp, WHITE, box_xyxy=[200 - half_width, 40, 200 + half_width,
                                                  40 + height])
        # left thigh: hip (11) -> knee (13), vertical at x = 200 - 0.6 * height / 4
        row = int(40 + 0.62 * height)
        x = int(round(kp[11, 0]))
        half_gap = int(0.6 * height / 4) - 1              # half-way to the other thigh
        widths[height] = _line_width_px(image, row, x - half_gap, x + half_gap)
    assert 1 <= widths[60] <= 3                 # a 60 px person: a 1 px line (anti-aliased)
    assert widths[480] >= 2 * widths[60] + 2    # 480 px: a 5 px line


def test_low_confidence_joints_are_hollow_and_very_low_ones_hidden():
    kp = _standing_person(200, 40, 480)
    kp[9, 2] = 0.5 * (HIDE_BELOW + SOLID_FROM)          # left wrist: uncertain
    kp[10, 2] = 0.5 * HIDE_BELOW                         # right wrist: hidden
    image = np.zeros((600, 400, 3), np.uint8)
    draw_skeleton(image, kp, WHITE, box_xyxy=[100, 40, 300, 520])

    def at(j, dx=0, dy=0):
        x, y = (int(round(v - 0.5)) for v in kp[j, :2])
        return image[y + dy, x + dx]

    assert at(5).max() == 255 and at(9, dx=-40).max() == 0    # solid joint; no stray paint
    # the uncertain wrist: a ring (centre not filled by the joint, ring painted)
    _, radius = line_and_radius_px(480)
    assert at(9, dx=radius).max() > 0
    ring_centre_bone_free = at(9, dy=-1)
    assert ring_centre_bone_free.max() < 255                  # faded bone only, no solid disc
    # its bone (elbow 7 -> wrist 9) is faded: mid-point colour below full white
    mid = (kp[7, :2] + kp[9, :2]) / 2
    assert 0 < image[int(mid[1] - 0.5), int(mid[0] - 0.5)].max() < 255
    # the hidden wrist and its bone (8 -> 10) are not drawn at all
    assert at(10).max() == 0
    mid = (kp[8, :2] + kp[10, :2]) / 2
    assert image[int(mid[1] - 0.5), int(mid[0] - 0.5)].max() == 0


def test_mask_and_two_column_keypoints():
    kp = _standing_person(200, 40, 300)[:, :2]                  # ground truth: no confidence
    mask = np.ones(17, bool)
    mask[15] = False                                            # left ankle unlabelled
    image = np.zeros((400, 400, 3), np.uint8)
    draw_skeleton(image, kp, WHITE, mask=mask)
    x, y = (int(round(v - 0.5)) for v in kp[15])
    assert image[y, x].max() == 0
    x, y = (int(round(v - 0.5)) for v in kp[16])
    assert image[y, x].max() == 255                             # solid without confidences


def test_evaluation_and_the_debug_image_share_one_implementation():
    assert evaluation.draw_skeleton is draw_skeleton
    assert pipeline.draw_skeleton is draw_skeleton


def test_small_real_people_are_not_painted_over(vtest_frames_100_129, vtest_detector):
    """vtest.avi's pedestrians are ~70-80 px tall: their skeleton changes ~9-12 % of the
    pixels inside their box (the fixed 2 px lines and 3 px joints drawn before changed
    45-59 %, painting them over)."""
    frame = vtest_frames_100_129[0]
    detections = vtest_detector.detect(frame)
    assert len(detections) >= 3
    persons = [pipeline.PersonPose(track_id=i + 1, box_xyxy=d.box_xyxy, score=d.score,
                                   keypoints=d.keypoints, detector_keypoints=None,
                                   is_predicted=False) for i, d in enumerate(detections)]
    result = pipeline.FrameResult('cam', 0, 0, persons, 1, 1, 3, 'causal', {})
    drawn = pipeline.draw_poses(frame, result)
    for person in persons:
        x0, y0, x1, y1 = (int(round(v)) for v in person.box_xyxy)
        inner = (slice(y0 + 2, y1 - 1), slice(x0 + 2, x1 - 1))     # inside the box outline
        changed = np.any(drawn[inner] != frame[inner], axis=-1).mean()
        height = y1 - y0
        assert height < 180, 'the test is about small people'
        assert 0.03 < changed < 0.2, (person.track_id, height, changed)


@pytest.mark.parametrize('confidence', [0.0, np.nan])
def test_a_person_without_usable_joints_draws_only_its_box(confidence):
    kp = _standing_person(200, 40, 300, confidence)
    image = np.zeros((400, 400, 3), np.uint8)
    draw_skeleton(image, kp, WHITE, box_xyxy=[150, 40, 250, 340])
    assert image.max() == 0
