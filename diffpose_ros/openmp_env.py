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

The same holds for numpy's OpenBLAS: after a matrix product large enough for it to use its
worker threads, they spin (yielding) for a long while, and the next frame's detector ran ~3x
slower beside them (142 vs 48 ms, measured 2026-12-06). The node's own numpy products are kept
small (``codec``), and :func:`bound_blas_threads` makes OpenBLAS single-threaded unless the user
chose a count: torch and ONNX Runtime own the cores here. OpenBLAS reads it when numpy is first
imported, so it only takes effect where ``diffpose_ros`` is imported before numpy (the node and
the CLIs are).
"""
from __future__ import annotations

import os

GOMP_SPINCOUNT_DEFAULT = 30_000
BLAS_THREADS_DEFAULT = 1


def _set_unless_chosen(environ: os._Environ | dict | None, variable: str, value: int,
                       user_choices: tuple[str, ...]) -> bool:
    """``environ[variable] = value`` unless one of ``user_choices`` is set. True if it was set."""
    env = os.environ if environ is None else environ
    if any(name in env for name in user_choices):
        return False
    env[variable] = str(value)
    return True


def bound_openmp_spin_wait(environ: os._Environ | dict | None = None) -> bool:
    """Set GOMP_SPINCOUNT unless the user chose an OpenMP wait policy. True if it was set."""
    return _set_unless_chosen(environ, 'GOMP_SPINCOUNT', GOMP_SPINCOUNT_DEFAULT,
                              ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT'))


def bound_blas_threads(environ: os._Environ | dict | None = None) -> bool:
    """Set OPENBLAS_NUM_THREADS unless the user chose it. True if it was set."""
    return _set_unless_chosen(environ, 'OPENBLAS_NUM_THREADS', BLAS_THREADS_DEFAULT,
                              ('OPENBLAS_NUM_THREADS',))
