"""The executables CMake installs into the venv run without an activated venv (README:
`.venv/bin/diffpose-video ...`): their shebang is the build's interpreter."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.prefix) / 'bin'
LIB_DIR = Path(sys.prefix) / 'lib' / 'diffpose_ros'


@pytest.mark.parametrize('name, usage', [
    ('diffpose-video', 'usage: diffpose-video'),
    ('diffpose-bag', 'usage: diffpose-bag'),
    ('diffpose-evaluate', 'usage: diffpose-evaluate'),
    ('diffpose-label', 'usage: diffpose-label'),
    ('diffpose-train', 'usage: diffpose-train'),
])
def test_venv_executable_runs_with_a_bare_path(name, usage, tmp_path):
    executable = VENV_BIN / name
    assert executable.is_file(), f'{executable} is installed by scripts/setup.sh (CMake)'
    # no venv on PATH, no VIRTUAL_ENV: only the shebang can find the right interpreter
    result = subprocess.run([str(executable), '--help'], cwd=tmp_path,
                            env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(usage), result.stdout[:300]


def test_ros2_run_executables_carry_the_build_interpreter():
    for name in ('diffpose_node', 'diffpose-video', 'diffpose-bag', 'diffpose-evaluate'):
        first_line = (LIB_DIR / name).read_text().splitlines()[0]
        assert first_line == f'#!{sys.prefix}/bin/python', (name, first_line)
