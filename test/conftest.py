"""Shared pytest fixtures.

Fixtures that need fetched assets fail (never skip) with the fix when the asset is missing: CI
always has them (scripts/setup.sh).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.assets import VTEST_VIDEO, AssetError, asset_path
from diffpose_ros.ros.dds import PROFILE_VARIABLES, profile_variable

# ROS isolation for every test process and the node processes they start (inherited env):
# a domain id of our own, discovery on localhost only, the shared-memory Fast DDS profile
# (large images over best-effort UDP are otherwise lost; Jazzy's Fast DDS 2 reads the profile
# from another variable than Kilted's) and logs in a temp dir.
_ROOT = Path(__file__).resolve().parents[1]
os.environ['ROS_DOMAIN_ID'] = os.environ.get('DIFFPOSE_TEST_DOMAIN_ID', str(20 + os.getpid() % 80))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
if not any(name in os.environ for name in PROFILE_VARIABLES):
    os.environ[profile_variable()] = str(_ROOT / 'config' / 'fastdds_shm.xml')
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='diffpose-ros-log-'))

# vtest.avi (768x576) shows small, far-away people: YOLO11n-pose finds nobody at imgsz 640.
VTEST_DETECTOR_IMGSZ = 1280


def read_video_frames(path: str, first_frame: int, num_frames: int) -> list[np.ndarray]:
    """Decode frames [first_frame, first_frame + num_frames) of a video as BGR uint8 arrays."""
    from diffpose_ros.evaluation import read_frames

    try:
        return read_frames(path, first_frame, num_frames)
    except (FileNotFoundError, ValueError) as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope='session')
def vtest_frames_100_129() -> list[np.ndarray]:
    """Frames 100-129 of vtest.avi, (576, 768, 3) uint8 BGR each."""
    try:
        path = asset_path(VTEST_VIDEO)
    except AssetError as exc:
        pytest.fail(str(exc))
    return read_video_frames(str(path), first_frame=100, num_frames=30)


@pytest.fixture(scope='session')
def vtest_detector():
    """One YOLO11n-pose detector (default sha256-checked weights) shared by the session."""
    from diffpose_ros.detection import UltralyticsPoseDetector

    try:
        detector = UltralyticsPoseDetector(imgsz=VTEST_DETECTOR_IMGSZ)
    except AssetError as exc:
        pytest.fail(str(exc))
    detector.warmup()
    return detector
