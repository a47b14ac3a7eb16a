"""Bound how long torch's OpenMP workers busy-wait once a parallel region ends.

The detector (ultralytics, torch) and the pose graphs (ONNX Runtime) take turns on the same
cores. GNU OpenMP's idle workers spin before they sleep (GOMP_SPINCOUNT, 300,000 by default):
measured here, ~10-14 ms of a core burnt after every YOLO11n-pose call, exactly while ONNX
Runtime runs the backbone. A spin count of 30,000 burns ~1-2 ms, keeps the detector as fast
(a much shorter one, 1,000, made it ~20 % slower) and takes ~2 ms off the backbone stage at
3 persons (docs/runtime.md, "Threads").

libgomp reads the variable once, when it is loaded (with torch), so this must run before the
first ``import torch``; ``diffpose_ros/__init__.py`` calls it. A user's own OMP_WAIT_POLICY or
GOMP_SPINCOUNT is left as it is.
"""
from __future__ import annotations

import os

GOMP_SPINCOUNT_DEFAULT = 30_000


def bound_openmp_spin_wait(environ: os._Environ | dict | None = None) -> bool:
    """Set GOMP_SPINCOUNT unless the user chose an OpenMP wait policy. True if it was set."""
    env = os.environ if environ is None else environ
    if 'OMP_WAIT_POLICY' in env or 'GOMP_SPINCOUNT' in env:
        return False
    env['GOMP_SPINCOUNT'] = str(GOMP_SPINCOUNT_DEFAULT)
    return True
