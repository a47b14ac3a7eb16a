"""BlazePose teacher: COCO-17 mapping, worker protocol failures, agreement with YOLO11n-pose.

The slow tests set the teacher env up themselves (a separate mediapipe venv, ~20-30 s on a fresh
machine with the package index reachable; instant afterwards), so CI runs them too.
"""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.teachers.blazepose import (
    BLAZEPOSE_TO_COCO17,
    WORKER_PATH,
    BlazePoseEnv,
    BlazePoseTeacher,
    TeacherUnavailable,
    TeacherWorkerError,
    ensure_blazepose_env,
    to_coco17,
)

ROOT = Path(__file__).resolve().parents[1]
VTEST_FRAME_INDEX = 600  # several pedestrians, 50-120 px tall
CROP_MARGIN = 1.25  # square crop side / longer box side: BlazePose wants the whole body in view
CROP_HEIGHT_PX = 256  # upscaled crop height (people are small in vtest.avi)
CONFIDENT = 0.5


# --- no env needed ---


def test_to_coco17_picks_joints_and_confidence():
    landmarks = np.zeros((33, 5), dtype=np.float32)
    landmarks[:, 0] = np.arange(33)  # x_px = BlazePose index
    landmarks[:, 1] = 100 + np.arange(33)
    landmarks[:, 3] = 0.9  # visibility
    landmarks[:, 4] = 0.6  # presence
    landmarks[11, 3] = 0.2  # left shoulder barely visible: min(vis, presence) = 0.2
    landmarks[0, 3:5] = (1.5, 2.0)  # out-of-range scores are clipped to 1
    landmarks[28, 3:5] = (-0.1, 0.5)  # ... and to 0

    keypoints = to_coco17(landmarks)

    assert keypoints.shape == (17, 3) and keypoints.dtype == np.float32
    np.testing.assert_array_equal(keypoints[:, 0], BLAZEPOSE_TO_COCO17)
    np.testing.assert_array_equal(keypoints[:, 1], 100 + np.array(BLAZEPOSE_TO_COCO17))
    # COCO order: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow, l/r wrist, l/r hip, l/r knee,
    # l/r ankle; BlazePose left eye is 2 (not 1: that is the inner corner)
    assert BLAZEPOSE_TO_COCO17[1:3] == (2, 5) and BLAZEPOSE_TO_COCO17[5:7] == (11, 12)
    assert BLAZEPOSE_TO_COCO17[-2:] == (27, 28)
    assert keypoints[0, 2] == pytest.approx(1.0)
    assert keypoints[5, 2] == pytest.approx(0.2)  # COCO 5 = left shoulder = BlazePose 11
    assert keypoints[16, 2] == pytest.approx(0.0)  # COCO 16 = right ankle = BlazePose 28
    assert np.allclose(keypoints[[1, 2, 3, 4, 6], 2], 0.6)


def test_to_coco17_rejects_wrong_shape():
    with pytest.raises(ValueError, match='33, 5'):
        to_coco17(np.zeros((17, 3), dtype=np.float32))


def test_client_imports_stay_light_and_worker_stays_standalone():
    # The client runs in the main venv: importing it must not pull in cv2/torch/mediapipe.
    code = ('import sys, diffpose_ros.teachers.blazepose; '
            "print(sorted(m for m in ('cv2', 'torch', 'mediapipe') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == '[]'
    # The worker runs in the teacher venv, where diffpose_ros does not exist.
    tree = ast.parse(WORKER_PATH.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or '' for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith('diffpose_ros') for name in imported), imported


def _fake_worker(tmp_path: Path, script: str) -> BlazePoseEnv:
    """An 'interpreter' that ignores its arguments and runs a shell script instead."""
    python = tmp_path / 'fake-python'
    python.write_text('#!/bin/sh\n' + script + '\n')
    python.chmod(0o755)
    task = tmp_path / 'unused.task'
    task.touch()
    return BlazePoseEnv(python_path=python, task_path=task)


def test_worker_that_cannot_start_raises_with_its_stderr(tmp_path):
    # The main venv has no mediapipe: the real worker exits with an ImportError.
    task = tmp_path / 'never-read.task'
    task.touch()
    env = BlazePoseEnv(python_path=Path(sys.executable), task_path=task)
    started = time.monotonic()
    with pytest.raises(TeacherUnavailable, match='(?s)failed to start.*mediapipe') as failure:
        BlazePoseTeacher(env)
    assert time.monotonic() - started < 30
    assert 'delete' not in str(failure.value)  # never suggest deleting a venv we did not make


def test_missing_task_is_reported_before_starting(tmp_path):
    env = BlazePoseEnv(python_path=Path(sys.executable), task_path=tmp_path / 'missing.task')
    with pytest.raises(TeacherUnavailable, match='missing.task is missing'):
        BlazePoseTeacher(env)


def test_silent_worker_times_out_instead_of_hanging(tmp_path):
    env = _fake_worker(tmp_path, 'exec sleep 60')
    started = time.monotonic()
    with pytest.raises(TeacherUnavailable, match='no reply within 1 s'):
        BlazePoseTeacher(env, startup_timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_stray_stdout_is_reported_as_protocol_error(tmp_path):
    env = _fake_worker(tmp_path, 'echo "INFO: some library chatter"; exec sleep 60')
    with pytest.raises(TeacherUnavailable, match='out of sync'):
        BlazePoseTeacher(env, startup_timeout_s=10.0)


# --- real teacher (sets the env up if needed) ---


@pytest.fixture(scope='module')
def blazepose_env() -> BlazePoseEnv:
    started = time.monotonic()
    try:
        env = ensure_blazepose_env(log=lambda line: print(line, flush=True))
    except TeacherUnavailable as exc:
        pytest.fail(str(exc))
    print(f'BlazePose env ready in {time.monotonic() - started:.1f} s')
    return env


@pytest.fixture(scope='module')
def teacher(blazepose_env):
    with BlazePoseTeacher(blazepose_env) as blazepose:
        yield blazepose


def _read_frame_bgr(index: int) -> np.ndarray:
    import cv2

    from diffpose_ros.assets import VTEST_VIDEO, AssetError, asset_path

    try:
        path = asset_path(VTEST_VIDEO)
    except AssetError as exc:
        pytest.fail(str(exc))
    capture = cv2.VideoCapture(str(path))
    try:
        for _ in range(index):  # sequential decoding: seeking is codec dependent
            capture.grab()
        ok, frame = capture.read()
    finally:
        capture.release()
    assert ok, f'cannot read frame {index} of {path}'
    return frame


def _square_crop(frame_bgr: np.ndarray,
                 box_xyxy: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """RGB crop around a box, upscaled; returns (crop, scale, x0_px, y0_px) to map back."""
    import cv2

    x0, y0, x1, y1 = box_xyxy
    side_px = CROP_MARGIN * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height_px, width_px = frame_bgr.shape[:2]
    left, top = max(0, round(cx - side_px / 2)), max(0, round(cy - side_px / 2))
    right, bottom = min(width_px, round(cx + side_px / 2)), min(height_px, round(cy + side_px / 2))
    crop = frame_bgr[top:bottom, left:right]
    scale = CROP_HEIGHT_PX / crop.shape[0]
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), scale, left, top


@pytest.mark.slow
def test_env_setup_is_idempotent_and_isolated(blazepose_env):
    import importlib.util

    started = time.monotonic()
    again = ensure_blazepose_env(log=lambda line: pytest.fail(f'rebuilt: {line}'))
    assert time.monotonic() - started < 2.0
    assert again == blazepose_env
    assert blazepose_env.python_path.exists() and blazepose_env.task_path.is_file()
    # mediapipe lives only in the teacher venv
    assert importlib.util.find_spec('mediapipe') is None
    assert Path(sys.prefix).resolve() not in blazepose_env.python_path.resolve().parents


@pytest.mark.slow
def test_agrees_with_yolo_on_a_vtest_person(teacher, vtest_detector):
    frame_bgr = _read_frame_bgr(VTEST_FRAME_INDEX)
    height_px, width_px = frame_bgr.shape[:2]
    # the tallest person fully inside the frame, with enough confident YOLO keypoints
    candidates = [d for d in vtest_detector.detect(frame_bgr)
                  if d.keypoints is not None and (d.keypoints[:, 2] > CONFIDENT).sum() >= 10
                  and d.box_xyxy[0] > 0 and d.box_xyxy[1] > 0
                  and d.box_xyxy[2] < width_px - 1 and d.box_xyxy[3] < height_px - 1]
    assert candidates, 'YOLO found no clear, uncut person in vtest frame 600'
    person = max(candidates, key=lambda d: d.box_xyxy[3] - d.box_xyxy[1])
    box_height_px = float(person.box_xyxy[3] - person.box_xyxy[1])
    crop_rgb, scale, left_px, top_px = _square_crop(frame_bgr, person.box_xyxy)

    landmarks = teacher.landmarks(crop_rgb)

    assert landmarks is not None, 'BlazePose found no pose on a clear YOLO person'
    assert landmarks.shape == (33, 5) and landmarks.dtype == np.float32
    keypoints = to_coco17(landmarks)
    keypoints[:, :2] = keypoints[:, :2] / scale + (left_px, top_px)  # crop px -> frame px
    both = (keypoints[:, 2] > CONFIDENT) & (person.keypoints[:, 2] > CONFIDENT)
    distance_px = np.linalg.norm(keypoints[:, :2] - person.keypoints[:, :2], axis=1)[both]
    median_rel = float(np.median(distance_px)) / box_height_px
    print(f'BlazePose vs YOLO: {both.sum()} joints, median {np.median(distance_px):.1f} px '
          f'= {median_rel:.3f} x box height {box_height_px:.0f} px, '
          f'max {distance_px.max():.1f} px')
    assert both.sum() >= 8
    assert median_rel < 0.1


@pytest.mark.slow
def test_blank_image_has_no_pose(teacher):
    assert teacher.landmarks(np.full((256, 192, 3), 128, dtype=np.uint8)) is None


@pytest.mark.slow
def test_bad_images_are_rejected_before_the_worker(teacher):
    for bad in (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.uint8),
                np.zeros((0, 64, 3), np.uint8), [[0, 0, 0]]):
        with pytest.raises(ValueError):
            teacher.landmarks(bad)
    assert teacher.landmarks(np.full((32, 32, 3), 128, dtype=np.uint8)) is None  # still alive


@pytest.mark.slow
def test_closed_or_killed_worker_raises_promptly(blazepose_env):
    image = np.full((128, 128, 3), 128, dtype=np.uint8)
    teacher = BlazePoseTeacher(blazepose_env)
    teacher.close()
    teacher.close()  # idempotent
    with pytest.raises(RuntimeError, match='closed'):
        teacher.landmarks(image)

    teacher = BlazePoseTeacher(blazepose_env)
    try:
        os.kill(teacher.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(TeacherWorkerError, match='exited with code -9'):
            teacher.landmarks(image)
        assert time.monotonic() - started < 10
        with pytest.raises(RuntimeError, match='closed'):  # stays closed afterwards
            teacher.landmarks(image)
    finally:
        teacher.close()
