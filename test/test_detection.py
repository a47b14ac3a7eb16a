"""UltralyticsPoseDetector on real vtest.avi frames, input validation and weights handling."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.assets import YOLO11N_POSE, AssetError
from diffpose_ros.detection import (
    COCO_NUM_KEYPOINTS,
    Detection,
    UltralyticsPoseDetector,
    WeightsError,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_detects_people_with_sane_boxes_and_keypoints(vtest_detector, vtest_frames_100_129):
    image = vtest_frames_100_129[0]
    height, width = image.shape[:2]
    detections = vtest_detector.detect(image)
    assert len(detections) >= 2, f'expected >= 2 people on vtest frame 100, got {detections}'
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    for d in detections:
        assert isinstance(d, Detection)
        assert d.box_xyxy.shape == (4,) and d.box_xyxy.dtype == np.float32
        x1, y1, x2, y2 = d.box_xyxy
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert 20 <= y2 - y1 <= height / 2, 'people in vtest are 50-120 px tall'
        assert y2 - y1 > x2 - x1, 'standing people are taller than wide'
        assert vtest_detector.score_threshold <= d.score <= 1.0
        assert d.keypoints is not None and d.keypoints.shape == (COCO_NUM_KEYPOINTS, 3)
        assert d.keypoints.dtype == np.float32
        confident = d.keypoints[d.keypoints[:, 2] > 0.5, :2]
        assert len(confident) >= 5, 'a clearly visible person has confident keypoints'
        margin = 0.2 * (y2 - y1)
        assert np.all((confident >= [x1 - margin, y1 - margin])
                      & (confident <= [x2 + margin, y2 + margin])), 'keypoints lie in the box'


@pytest.mark.parametrize('image, message', [
    (np.zeros((0, 0, 3), np.uint8), 'empty'),
    (np.zeros((48, 64, 3), np.float32), 'uint8'),
    (np.zeros((48, 64), np.uint8), r'\(H, W, 3\)'),
    (np.zeros((48, 64, 4), np.uint8), r'\(H, W, 3\)'),
    ([[0, 0, 0]], 'numpy array'),
])
def test_bad_input_raises_value_error(vtest_detector, image, message):
    with pytest.raises(ValueError, match=message):
        vtest_detector.detect(image)


def test_missing_explicit_weights_name_the_path(tmp_path):
    missing = tmp_path / 'nope.pt'
    with pytest.raises(WeightsError, match=re.escape(str(missing))):
        UltralyticsPoseDetector(weights_path=missing)


@pytest.mark.timeout(120)
def test_corrupt_explicit_weights_name_the_path(tmp_path):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'this is not a torch checkpoint\n' * 100)
    with pytest.raises(WeightsError, match=re.escape(str(garbage))) as info:
        UltralyticsPoseDetector(weights_path=garbage)
    assert isinstance(info.value, AssetError), 'callers can catch every weights problem at once'


@pytest.mark.parametrize('content, message', [(None, 'missing'), (b'garbage', 'corrupt')])
def test_default_weights_are_verified_before_loading(tmp_path, monkeypatch, content, message):
    monkeypatch.setenv('DIFFPOSE_CACHE_DIR', str(tmp_path))
    if content is not None:
        (tmp_path / YOLO11N_POSE.filename).write_bytes(content)
    with pytest.raises(AssetError, match=message) as info:
        UltralyticsPoseDetector()
    assert YOLO11N_POSE.filename in str(info.value) and 'scripts/setup.sh' in str(info.value)


def test_constructor_validates_arguments():
    for kwargs in ({'imgsz': 100}, {'score_threshold': 1.5}, {'iou_threshold': 0.0},
                   {'max_persons': 0}, {'torch_threads': -1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            UltralyticsPoseDetector(**kwargs)


def test_from_config_takes_the_pipeline_settings_and_caps_torch_threads():
    import torch

    from diffpose_ros.config import PipelineConfig

    before = torch.get_num_threads()
    try:
        config = PipelineConfig(detector_imgsz=320, detection_score_threshold=0.4,
                                max_persons=3, intra_op_threads=1)
        detector = UltralyticsPoseDetector.from_config(config)
        assert (detector.imgsz, detector.score_threshold, detector.max_persons) == (320, 0.4, 3)
        assert torch.get_num_threads() == 1
        detector.detect(np.zeros((240, 320, 3), np.uint8))  # ultralytics' setup keeps it too
        assert torch.get_num_threads() == 1
        UltralyticsPoseDetector.from_config(PipelineConfig())  # 0 = leave the process's count
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)



def test_ultralytics_setup_never_sets_another_thread_count(monkeypatch):
    """On a machine with more cores ultralytics' select_device sets cpu_count - 1 threads;
    torch keeps a count per thread, so even a brief change leaks into other threads."""
    import torch
    from ultralytics.utils import torch_utils

    before = torch.get_num_threads()
    monkeypatch.setattr(torch_utils, 'NUM_THREADS', 3)      # as on a 4-core robot
    counts_set = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, 'set_num_threads',
                        lambda n: (counts_set.append(n), real_set(n))[-1])
    try:
        detector = UltralyticsPoseDetector(imgsz=320, torch_threads=1)
        detector.detect(np.zeros((240, 320, 3), np.uint8))   # first predict: select_device
        assert counts_set and set(counts_set) == {1}, counts_set
        assert detector.torch_threads_in_use == 1 and torch.get_num_threads() == 1
    finally:
        real_set(before)

def test_detection_module_is_light():
    code = ('import sys, diffpose_ros.detection; '
            'bad = [m for m in ("torch", "ultralytics", "rclpy") if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, check=True)


def _pip_freeze(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, '-m', 'pip', 'freeze'], env=env, check=True,
                          capture_output=True, text=True).stdout


@pytest.mark.timeout(300)
def test_detection_and_tracking_install_and_write_nothing_outside_the_project(tmp_path):
    # A fresh process (Ultralytics reads its env at import) with a throw-away HOME: running must
    # neither pip-install anything nor create Ultralytics settings in the user's config dir.
    home = tmp_path / 'home'
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith('YOLO_')}
    env.update(PIP_NO_INDEX='1', PIP_DISABLE_PIP_VERSION_CHECK='1', HOME=str(home),
               XDG_CONFIG_HOME=str(home / '.config'), PYTHONPATH=str(REPO_ROOT))
    script = textwrap.dedent("""
        from diffpose_ros.assets import VTEST_VIDEO, asset_path, cache_dir
        from diffpose_ros.detection import UltralyticsPoseDetector
        from diffpose_ros.tracking import CameraTracker
        import cv2
        detector = UltralyticsPoseDetector(imgsz=1280)
        from ultralytics.utils import AUTOINSTALL, ONLINE, USER_CONFIG_DIR
        assert not AUTOINSTALL and not ONLINE, (AUTOINSTALL, ONLINE)
        assert USER_CONFIG_DIR.is_relative_to(cache_dir()), USER_CONFIG_DIR
        capture = cv2.VideoCapture(str(asset_path(VTEST_VIDEO)))
        tracker = CameraTracker()
        for index in range(2):
            ok, frame = capture.read()
            assert ok
            tracker.update(detector.detect(frame), index * 100_000_000)
        print('ok')
    """)
    before = _pip_freeze(env)
    run = subprocess.run([sys.executable, '-c', script], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0 and run.stdout.strip().endswith('ok'), run.stderr[-2000:]
    assert _pip_freeze(env) == before
    created = sorted(str(p.relative_to(home)) for p in home.rglob('*'))
    assert not [p for p in created if 'ultralytics' in p.lower()], created


def test_detection_keeps_the_process_torch_thread_count(vtest_detector, vtest_frames_100_129):
    import torch

    before = torch.get_num_threads()
    vtest_detector.detect(vtest_frames_100_129[0])
    assert torch.get_num_threads() == before


@pytest.mark.timeout(120)
def test_first_frame_gives_the_same_floats_as_later_ones(vtest_frames_100_129):
    """Without a warm-up, ultralytics' first predict changed torch's thread count mid-call and
    gave other floats than later calls: a node (warmed up) and an offline evaluation (not)
    then disagreed on the same frames."""
    import torch

    if torch.get_num_threads() < 2:
        pytest.skip('needs >= 2 torch threads to see the thread switch')
    crop = np.ascontiguousarray(vtest_frames_100_129[0][:288, 384:])
    detector = UltralyticsPoseDetector(imgsz=640)             # fresh, never warmed up

    def outputs() -> np.ndarray:
        detections = detector.detect(crop)
        assert detections, 'expected people in the crop'
        return np.concatenate([np.r_[d.box_xyxy, d.keypoints.ravel()] for d in detections])

    first = outputs()
    np.testing.assert_array_equal(first, outputs())


@pytest.mark.parametrize('user_setting', [None, '1'])
def test_importing_ultralytics_keeps_the_thread_settings(user_setting, tmp_path):
    """ultralytics sets OMP_NUM_THREADS=1 at import when unset: torch imported after it ran on
    one thread and child processes inherited it. A user's own setting is kept."""
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    if user_setting is not None:
        env['OMP_NUM_THREADS'] = user_setting
    fresh = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],
                           env=env, capture_output=True, text=True, timeout=120)
    probe = subprocess.run(
        [sys.executable, '-c',
         'import os; from diffpose_ros.ultralytics_env import configure_ultralytics_env; '
         'configure_ultralytics_env(); import ultralytics, torch; '
         'print(torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "unset"))'],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0 and probe.returncode == 0, fresh.stderr + probe.stderr
    threads, omp = probe.stdout.split()
    assert int(threads) == int(fresh.stdout)
    assert omp == (user_setting or 'unset')
