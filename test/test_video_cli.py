"""diffpose-video as a user runs it (a subprocess): bad inputs and outputs fail before the models
load, with a non-zero exit and a clear message, and never claim "wrote"; a short real run on
vtest.avi writes a video that reads back with every frame, a JSON with every frame, and warns
about nothing (the default providers on a CPU-only machine)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-m', 'diffpose_ros.cli.video', '--quiet', *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def _assert_failed_early(result: subprocess.CompletedProcess, message: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in output, output
    assert 'wrote' not in output, output
    # nothing was loaded: no ONNX export or cache lookup, no detector
    assert 'ONNX' not in output and 'yolo' not in output.lower(), output


@pytest.mark.parametrize('name', ['result.webm', 'result.gif', 'result'])
def test_unsupported_video_container_fails_before_the_models(tmp_path, name):
    out = tmp_path / name
    result = _run(tmp_path, '--out', str(out), '--json', str(tmp_path / 'poses.json'))
    _assert_failed_early(result, f'cannot write video {out}: unsupported container')
    assert '.mp4' in result.stderr                       # the message names what works
    assert not out.exists() and not (tmp_path / 'poses.json').exists()
    assert list(tmp_path.iterdir()) == []                # no probe file left behind


def test_video_path_that_cannot_be_created_fails(tmp_path):
    blocker = tmp_path / 'not_a_dir'
    blocker.write_text('a file where a directory is needed\n')
    out = blocker / 'annotated.mp4'
    result = _run(tmp_path, '--out', str(out), '--json', str(tmp_path / 'poses.json'))
    _assert_failed_early(result, f'cannot write video {out}')
    assert not (tmp_path / 'poses.json').exists()


def test_json_path_that_cannot_be_created_fails(tmp_path):
    blocker = tmp_path / 'not_a_dir'
    blocker.write_text('x\n')
    result = _run(tmp_path, '--out', str(tmp_path / 'a.mp4'), '--json',
                  str(blocker / 'poses.json'))
    _assert_failed_early(result, f'cannot write {blocker / "poses.json"}')
    assert not (tmp_path / 'a.mp4').exists()


def test_missing_input_video_fails_before_the_models(tmp_path):
    result = _run(tmp_path, str(tmp_path / 'missing.avi'), '--out', str(tmp_path / 'a.mp4'))
    _assert_failed_early(result, f'input video {tmp_path / "missing.avi"} does not exist')


def test_short_real_run_writes_what_it_claims_and_warns_about_nothing(tmp_path):
    import cv2

    out, poses = tmp_path / 'annotated.avi', tmp_path / 'poses.json'
    result = _run(tmp_path, '--out', str(out), '--json', str(poses), '--max-frames', '3',
                  '--start-frame', '100', '--detector-imgsz', '1280')
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f'wrote {out} (3 frames) and {poses}' in result.stdout
    # the default CPU configuration: no provider, GPU or fallback warnings
    assert 'WARNING' not in output, output
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 3 and frames[0].shape == (576, 768, 3)
    data = json.loads(poses.read_text())
    assert [f['frame_index'] for f in data['frames']] == [100, 101, 102]
    assert all(len(f['persons']) >= 2 for f in data['frames'])   # vtest: people walking
    assert data['meta']['devices'].startswith('detector cpu, backbone and pose head CPU')
