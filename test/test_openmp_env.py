"""The OpenMP spin bound (diffpose_ros/openmp_env.py) is set on import and reaches libgomp."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from diffpose_ros.openmp_env import (
    BLAS_THREADS_DEFAULT,
    GOMP_SPINCOUNT_DEFAULT,
    bound_blas_threads,
    bound_openmp_spin_wait,
)

# Appended to each probe: run ``work()``, then sleep 300 ms and count the CPU time every thread
# of the process burnt meanwhile (schedstat, ms); median of 12 rounds.
_IDLE_CPU_MS = r'''
def cpu_ns():
    total = 0
    for tid in os.listdir('/proc/self/task'):
        try:
            total += int(open(f'/proc/self/task/{tid}/schedstat').read().split()[0])
        except OSError:
            pass
    return total
burnt = []
for _ in range(12):
    work()
    before = cpu_ns()
    time.sleep(0.3)
    burnt.append((cpu_ns() - before) / 1e6)
burnt.sort()
print(json.dumps({'env': os.environ.get(REPORTED_VARIABLE),
                  'idle_cpu_ms': burnt[len(burnt) // 2]}))
'''

# In a fresh interpreter: import diffpose_ros, then torch; parallel convolutions (as the
# detector runs), then the idle CPU time.
_PROBE = r'''
import json, os, time
import diffpose_ros
import torch
torch.set_num_threads(2)
x = torch.randn(1, 16, 160, 160)
w = torch.randn(16, 16, 3, 3)
REPORTED_VARIABLE = 'GOMP_SPINCOUNT'
def work():
    for _ in range(10):
        torch.nn.functional.conv2d(x, w, padding=1)
''' + _IDLE_CPU_MS


def test_spin_bound_is_a_default_the_user_can_override():
    env = {}
    assert bound_openmp_spin_wait(env) is True
    assert env == {'GOMP_SPINCOUNT': str(GOMP_SPINCOUNT_DEFAULT)}
    for chosen in ({'GOMP_SPINCOUNT': '5'}, {'OMP_WAIT_POLICY': 'ACTIVE'}):
        env = dict(chosen)
        assert bound_openmp_spin_wait(env) is False
        assert env == chosen


def _probe(code: str, args: list[str], drop: tuple[str, ...], extra_env: dict[str, str]
           ) -> dict:
    """Run a probe in a fresh interpreter without the variables ``drop``, plus ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra_env)
    out = subprocess.run([sys.executable, '-c', code, *args], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gomp_probe(extra_env: dict[str, str]) -> dict:
    return _probe(_PROBE, [], ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY', 'OMP_NUM_THREADS'),
                  extra_env)


@pytest.mark.skipif(not os.path.exists('/proc/self/task') or (os.cpu_count() or 1) < 2,
                    reason='needs Linux schedstat and >= 2 cores (no OpenMP worker otherwise)')
def test_importing_the_package_first_stops_torch_workers_spinning_when_idle():
    bounded = _gomp_probe({})
    assert bounded['env'] == str(GOMP_SPINCOUNT_DEFAULT)
    libgomp_default = _gomp_probe({'GOMP_SPINCOUNT': '300000'})     # libgomp's own default
    floor = _gomp_probe({'OMP_WAIT_POLICY': 'PASSIVE'})              # no spinning at all
    spin_default = libgomp_default['idle_cpu_ms'] - floor['idle_cpu_ms']
    spin_bounded = bounded['idle_cpu_ms'] - floor['idle_cpu_ms']
    if spin_default < 4.0:
        pytest.skip(f'this torch build does not spin measurably when idle ({libgomp_default})')
    # here: ~9 ms of a core burnt per idle period by default, ~3 ms with the bound
    assert spin_bounded < 0.6 * spin_default, (bounded, libgomp_default, floor)


def test_blas_thread_bound_is_a_default_the_user_can_override():
    env = {}
    assert bound_blas_threads(env) is True
    assert env == {'OPENBLAS_NUM_THREADS': str(BLAS_THREADS_DEFAULT)}
    env = {'OPENBLAS_NUM_THREADS': '4'}
    assert bound_blas_threads(env) is False and env == {'OPENBLAS_NUM_THREADS': '4'}


# In a fresh interpreter: import diffpose_ros, then numpy; a workload of numpy products (argv[1]),
# then the idle CPU time.
_BLAS_PROBE = r'''
import json, os, sys, time
import diffpose_ros
import numpy as np
from diffpose_ros import codec
rng = np.random.default_rng(0)
big_a, big_b = rng.random((3264, 48), np.float32), rng.random((48, 48), np.float32)
features = rng.random((640, 16, 12), np.float32)
key = codec.CropTransform.from_box([100, 100, 292, 356])
neighbour = codec.CropTransform.from_box([104.3, 97.2, 299.1, 360.5])
maps = rng.random((3, 17, 64, 48), np.float32)
REPORTED_VARIABLE = 'OPENBLAS_NUM_THREADS'
def big():
    for _ in range(20):
        big_a @ big_b
def pipeline_codec():
    for _ in range(6):
        codec.align_features(features, neighbour, key, 16)
    codec.decode_heatmaps(maps, 3.0)
work = {'big': big, 'codec': pipeline_codec}[sys.argv[1]]
''' + _IDLE_CPU_MS


def _blas_probe(workload: str, extra_env: dict[str, str]) -> dict:
    return _probe(_BLAS_PROBE, [workload], ('OPENBLAS_NUM_THREADS',), extra_env)


@pytest.mark.skipif(not os.path.exists('/proc/self/task') or (os.cpu_count() or 1) < 2,
                    reason='needs Linux schedstat and >= 2 cores (no OpenBLAS worker otherwise)')
def test_no_openblas_workers_spin_after_the_pipelines_numpy_work():
    two_threads = {'OPENBLAS_NUM_THREADS': '2'}
    spinning = _blas_probe('big', two_threads)       # a product large enough to use workers
    if spinning['idle_cpu_ms'] < 20.0:
        pytest.skip(f'this OpenBLAS does not spin measurably when idle ({spinning})')
    bounded = _blas_probe('big', {})                  # the package's default: one thread
    assert bounded['env'] == str(BLAS_THREADS_DEFAULT)
    # the codec's alignment and DARK blur keep their products small even with workers allowed
    # (a (C*h, w) product here once made the next frame's detector ~3x slower)
    codec_work = _blas_probe('codec', two_threads)
    assert bounded['idle_cpu_ms'] < 0.3 * spinning['idle_cpu_ms'], (bounded, spinning)
    assert codec_work['idle_cpu_ms'] < 0.3 * spinning['idle_cpu_ms'], (codec_work, spinning)
