#!/usr/bin/env python3
"""Set up the MediaPipe BlazePose teacher: its own venv (mediapipe 1.2.2) and the .task bundle.

Idempotent: a second run only checks the marker file. Needs the package index (pip) once.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffpose_ros.teachers.blazepose import TeacherUnavailable, ensure_blazepose_env  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cache-dir', type=Path, default=None,
                        help='default: <asset cache>/teachers (see diffpose_ros.assets)')
    args = parser.parse_args()
    started = time.monotonic()
    try:
        env = ensure_blazepose_env(args.cache_dir, log=lambda line: print(line, flush=True))
    except TeacherUnavailable as exc:
        print(f'[blazepose] FAILED: {exc}', file=sys.stderr)
        return 1
    print(f'[blazepose] ok in {time.monotonic() - started:.1f} s\n'
          f'  python: {env.python_path}\n  task:   {env.task_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
