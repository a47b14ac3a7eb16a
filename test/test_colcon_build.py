"""colcon (from PyPI) builds the package the way a robot's workspace does, into a temp dir."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_colcon_build_installs_messages_python_and_executables(tmp_path):
    venv = Path(sys.prefix)
    colcon = venv / 'bin' / 'colcon'
    assert colcon.is_file(), 'colcon is installed by scripts/setup.sh (requirements/test.txt)'
    # a workspace whose src/ holds this repository (a symlink, as a checkout would be)
    workspace = tmp_path / 'ws'
    (workspace / 'src').mkdir(parents=True)
    (workspace / 'src' / 'diffpose_ros').symlink_to(ROOT, target_is_directory=True)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv),
               COLCON_HOME=str(tmp_path / 'colcon_home'), COLCON_LOG_PATH=str(tmp_path / 'log'))
    build = subprocess.run(
        [str(colcon), 'build', '--base-paths', 'src', '--packages-select', 'diffpose_ros',
         '--event-handlers', 'console_cohesion+', '--cmake-args', '-DBUILD_TESTING=OFF',
         f'-DPython3_EXECUTABLE={sys.executable}'],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=800)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    install = workspace / 'install' / 'diffpose_ros'
    site = install / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' \
        / 'site-packages'
    for relative in ('lib/diffpose_ros/diffpose_node', 'lib/diffpose_ros/diffpose-video',
                     'share/diffpose_ros/package.xml',
                     'share/diffpose_ros/launch/diffpose.launch.py',
                     'share/diffpose_ros/config/diffpose_cpu.yaml',
                     'share/diffpose_ros/config/fastdds_shm.xml',
                     'share/ament_index/resource_index/packages/diffpose_ros'):
        assert (install / relative).exists(), relative
    node_script = (install / 'lib' / 'diffpose_ros' / 'diffpose_node').read_text()
    assert node_script.startswith(f'#!{sys.executable}\n')  # the interpreter colcon built for
    assert (site / 'diffpose_ros' / 'msg' / '_person_pose_array.py').is_file()
    assert (site / 'diffpose_ros' / 'ros' / 'node.py').is_file()
    # the staged install works on its own: messages and the hand-written package together
    check_env = dict(env, PYTHONPATH=str(site),
                     LD_LIBRARY_PATH=f'{install / "lib"}:{os.environ.get("LD_LIBRARY_PATH", "")}')
    probe = subprocess.run(
        [sys.executable, '-c',
         'import diffpose_ros, diffpose_ros.msg as m, diffpose_ros.pipeline as p; '
         'msg = m.PersonPoseArray(); msg.persons.append(m.PersonPose()); '
         'print(m.__file__); print(p.__file__); print(len(msg.persons[0].keypoints))'],
        cwd=tmp_path, env=check_env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    msg_file, pipeline_file, keypoints = probe.stdout.split()
    assert msg_file.startswith(str(site)) and pipeline_file.startswith(str(site))
    assert keypoints == '17'
