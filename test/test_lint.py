"""Lint gate: ruff with target Python 3.10 (ROS 2 Humble and JetPack 6 ship 3.10)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean_for_python_310():
    ruff = Path(sys.prefix) / 'bin' / 'ruff'
    proc = subprocess.run(
        [str(ruff), 'check', '--target-version', 'py310', 'diffpose_ros', 'test', 'benchmarks',
         'launch', 'scripts/fetch_assets.py', 'setup.py'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_sources_parse_as_python_310():
    """ruff reports syntax newer than its target only for some constructs; compile() with
    feature_version catches the rest (e.g. PEP 695 generics, except*, match is fine in 3.10)."""
    import ast

    files = [p for pattern in ('diffpose_ros/**/*.py', 'launch/*.py', 'test/*.py',
                               'benchmarks/*.py', 'scripts/*.py')
             for p in ROOT.glob(pattern)]
    files += [ROOT / 'scripts' / name for name in ('diffpose_node', 'diffpose-video')]
    assert len(files) > 20
    for path in files:
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
