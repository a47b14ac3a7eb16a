"""Helpers shared by the benchmark suite (``benchmarks/run_all.py``) and its parts.

Machine description, peak memory, timing and statistics (percentiles, ratios), the Markdown
document the suite owns (split into ``## `` sections, sections replaced or kept), PNG plotting,
and the JSON hook the soak, fuzz and fault scripts fill (``record_stress_result``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'benchmarks'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# Results of the soak, fuzz and fault scripts (issue 5, part 4); see record_stress_result().
STRESS_JSON = ROOT / 'outputs' / 'bench' / 'stress.json'


# ---------------------------------------------------------------------------- statistics
def percentiles(samples: Sequence[float], qs: Sequence[float] = (50, 95)) -> tuple[float, ...]:
    """Percentiles (linear interpolation, numpy's default) of ``samples``; NaN if empty."""
    if len(samples) == 0:
        return tuple(float('nan') for _ in qs)
    return tuple(float(v) for v in np.percentile(np.asarray(samples, float), list(qs)))


def stats(samples: Sequence[float]) -> dict[str, float]:
    """n, mean, min, p50, p95, p99, max of ``samples`` ({'n': 0} if empty)."""
    if len(samples) == 0:
        return {'n': 0}
    a = np.asarray(samples, float)
    p50, p95, p99 = percentiles(a, (50, 95, 99))
    return {
        'n': int(a.size),
        'mean': float(a.mean()),
        'min': float(a.min()),
        'p50': p50,
        'p95': p95,
        'p99': p99,
        'max': float(a.max()),
    }


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when the denominator is 0 or either is NaN."""
    if denominator == 0 or np.isnan(numerator) or np.isnan(denominator):
        return float('nan')
    return float(numerator) / float(denominator)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the element-wise ratios of two equally long series measured in pairs (the
    same round): drift of the machine between rounds cancels in each pair."""
    if len(numerators) != len(denominators):
        raise ValueError(f'paired series differ in length: {len(numerators)} and '
                         f'{len(denominators)}')
    pairs = [n / d for n, d in zip(numerators, denominators) if d > 0]
    return float(np.median(pairs)) if pairs else float('nan')


def time_call(fn: Callable[[], Any], iterations: int, warmup: int = 2) -> list[float]:
    """Wall time of ``fn()`` in ms, ``iterations`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than 2 points)."""
    if len(xs) < 2:
        return float('nan')
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


# ---------------------------------------------------------------------------- frames
# vtest.avi (768x576) shows people 50-120 px tall: YOLO11n-pose at imgsz 640 finds nobody on
# the full frame. A region of it upscaled to 640x480 (x2 for 320x240) makes them 100-240 px
# tall, as a closer camera would see them: real frames with a known number of people.
FRAME_WH = (640, 480)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Consecutive vtest.avi frames, one 4:3 region of each, upscaled to ``FRAME_WH``."""

    persons: int  # YOLO11n-pose at imgsz 640 finds exactly this many in every frame
    first_frame: int
    num_frames: int
    region_xywh: tuple[int, int, int, int]

    @property
    def scale(self) -> float:
        return FRAME_WH[0] / self.region_xywh[2]

    def describe(self) -> str:
        x, y, w, h = self.region_xywh
        return (f'vtest.avi frames {self.first_frame}-{self.first_frame + self.num_frames - 1}, '
                f'region x {x}..{x + w}, y {y}..{y + h} ({w}x{h}) upscaled x{self.scale:.2f}')


# Found from the 1280-px pseudo-labels of vtest.avi (regions holding exactly N whole people
# and nobody cut by the border, N constant over the frames), checked with the detector at 640
# (lowest kept score >= 0.37, highest next candidate <= 0.07 on this machine).
SCENES = {
    1: Scene(1, 360, 20, (96, 128, 320, 240)),
    3: Scene(3, 60, 20, (440, 144, 320, 240)),
    6: Scene(6, 70, 20, (248, 120, 352, 264)),
}


def read_vtest_frames(first_frame: int, num_frames: int) -> list[np.ndarray]:
    """Frames [first_frame, first_frame + num_frames) of vtest.avi, (576, 768, 3) BGR uint8."""
    from diffpose_ros.assets import VTEST_VIDEO, asset_path
    from diffpose_ros.evaluation import read_frames

    return read_frames(asset_path(VTEST_VIDEO), first_frame, num_frames)


def crop_upscale(frame: np.ndarray, region_xywh: Sequence[int],
                 size_wh: tuple[int, int] = FRAME_WH) -> np.ndarray:
    """``frame[region]`` resized (bilinear) to ``size_wh``, contiguous BGR uint8."""
    import cv2

    x, y, w, h = region_xywh
    return np.ascontiguousarray(
        cv2.resize(frame[y : y + h, x : x + w], size_wh, interpolation=cv2.INTER_LINEAR))


def scene_frames(scene: Scene) -> list[np.ndarray]:
    """The scene's 640x480 BGR frames, in video order."""
    return [crop_upscale(f, scene.region_xywh)
            for f in read_vtest_frames(scene.first_frame, scene.num_frames)]


class PingPong:
    """Frame order 0..n-1, n-2..1, 0..: consecutive frames, motion stays continuous."""

    def __init__(self, n: int):
        self.n, self.position = n, 0

    def take(self, count: int) -> list[int]:
        period = max(2 * self.n - 2, 1)
        out = []
        for _ in range(count):
            k = self.position % period
            out.append(k if k < self.n else period - k)
            self.position += 1
        return out


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str, pid: int | str = 'self') -> float | None:
    try:
        match = re.search(rf'^{field}:\s+(\d+) kB', Path(f'/proc/{pid}/status').read_text(),
                          re.MULTILINE)
    except OSError:
        return None
    return float(match.group(1)) if match else None


def rss_mb(pid: int | None = None) -> float:
    """Current resident set size of a process (default: this one) in MB (psutil)."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak RSS in MB: the kernel's high-water mark (VmHWM; since the last
    :func:`reset_peak_rss`) or, where /proc has none, ``ru_maxrss`` of this process."""
    kb = _status_kb('VmHWM', pid if pid is not None else 'self')
    if kb is not None:
        return kb / 1024
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return float('nan')


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so the next
    :func:`peak_rss_mb` is the peak of what runs in between; False if not supported."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- machine
# On a shared VM another guest can take a large share of the cores ("steal"): latencies then
# grow for reasons that have nothing to do with the code, so every run reports it.
STEAL_WARN_PERCENT = 10.0
_BUSY_AND_IDLE_FIELDS = ('user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal')


def _cpu_times() -> Any:
    import psutil

    return psutil.cpu_times()


class CpuStealMeter:
    """Share of this machine's CPU time taken by other guests since the meter was made, in
    percent of all CPU time; None where the OS does not report steal."""

    def __init__(self, read_cpu_times: Callable[[], Any] = _cpu_times) -> None:
        self._read = read_cpu_times
        self._start = self._read()

    def percent(self) -> float | None:
        now = self._read()
        if not hasattr(now, 'steal'):
            return None
        total = sum(getattr(now, f, 0.0) - getattr(self._start, f, 0.0)
                    for f in _BUSY_AND_IDLE_FIELDS)
        return 100.0 * (now.steal - self._start.steal) / total if total > 0 else 0.0


def probe_steal_percent(seconds: float = 2.0) -> float | None:
    """CPU steal over a short idle wait, before a run starts."""
    meter = CpuStealMeter()
    time.sleep(seconds)
    return meter.percent()


def cpu_speed_reference(seconds: float = 0.5) -> dict[str, float]:
    """Two fixed micro-benchmarks, so runs on different days (or hosts of one VM type) can be
    compared: numpy float32 1024x1024 matmul throughput (all cores) and a pure-Python loop
    (one core). Best of the repeats that fit in ``seconds`` each."""
    rng = np.random.default_rng(0)
    a = rng.random((1024, 1024), dtype=np.float32)
    best_matmul_s = best_loop_s = math.inf
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ a
        best_matmul_s = min(best_matmul_s, time.perf_counter() - t0)
    loop_iterations = 1_000_000
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        total = 0
        for i in range(loop_iterations):
            total += i
        best_loop_s = min(best_loop_s, time.perf_counter() - t0)
    return {'matmul_gflops': 2 * 1024 ** 3 / best_matmul_s / 1e9,
            'python_loop_mops': loop_iterations / best_loop_s / 1e6}


def steal_warning(steal_percent: float | None) -> str | None:
    if steal_percent is None or steal_percent < STEAL_WARN_PERCENT:
        return None
    return (f'WARNING: {steal_percent:.0f} % of this VM\'s CPU time goes to other guests '
            f'(steal): latencies will be longer than on an idle machine and not comparable '
            f'with sections measured without steal')


def fmt_steal(steal_percent: float | None) -> str:
    return 'not reported' if steal_percent is None else f'{steal_percent:.1f} %'


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, OS, Python and library versions,
    ONNX Runtime's available execution providers, torch threads, load average."""
    import importlib.metadata

    import psutil

    cpu = platform.processor() or 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.system()
    try:
        release = Path('/etc/os-release').read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', release, re.MULTILINE)
        if match:
            os_name = match.group(1)
    except OSError:
        pass
    info: dict[str, Any] = {
        'cpu': cpu,
        'logical_cores': os.cpu_count(),
        'physical_cores': psutil.cpu_count(logical=False),
        'ram_gb': psutil.virtual_memory().total / 2**30,
        'os': os_name,
        'kernel': platform.release(),
        'platform': platform.platform(),
        'python': platform.python_version(),
        'load_average': [round(v, 2) for v in os.getloadavg()],
    }
    try:
        import torch

        info['torch'] = torch.__version__
        info['torch_threads'] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import onnxruntime

        info['onnxruntime'] = onnxruntime.__version__
        info['ort_available_providers'] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    for dist in ('numpy', 'onnxruntime-gpu', 'onnxruntime', 'ros-rclpy', 'ros-fastdds'):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import cv2

        info['opencv'] = cv2.__version__
    except ImportError:
        pass
    try:
        import ultralytics

        info['ultralytics'] = ultralytics.__version__
    except ImportError:
        pass
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One sentence naming the machine, for the top of a section."""
    return (f'{info["cpu"]} ({info["logical_cores"]} logical cores, '
            f'{info.get("ram_gb", float("nan")):.0f} GB RAM), {info.get("os", "?")}, '
            f'Python {info["python"]}, torch {info.get("torch", "-")} '
            f'({info.get("torch_threads", "?")} threads), ONNX Runtime '
            f'{info.get("onnxruntime", "-")}')


# ---------------------------------------------------------------------------- Markdown
def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """(preamble, {'## heading line': section text including the heading}) of a document."""
    parts = re.split(r'(?m)^(?=## )', text)
    preamble, sections = parts[0], {}
    for part in parts[1:]:
        heading = part.split('\n', 1)[0].rstrip()
        sections[heading] = part.rstrip() + '\n'
    return preamble, sections


def write_section(out: Path, heading: str, section: str) -> None:
    """Replace the ``heading`` section of a Markdown file (up to the next ``## ``), or append.

    ``section`` starts with the heading line itself.
    """
    out = Path(out)
    text = out.read_text() if out.exists() else '# Benchmarks\n\n'
    preamble, sections = split_sections(text)
    sections[heading] = section.rstrip() + '\n'
    write_document(out, preamble, list(sections.values()))


def write_document(out: Path, preamble: str, sections: Sequence[str]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = '\n'.join(s.rstrip() + '\n' for s in sections)
    out.write_text(preamble.rstrip() + '\n\n' + body)


def fmt_ms(value: float, digits: int = 1) -> str:
    return '-' if value is None or np.isnan(value) else f'{value:.{digits}f}'


def fmt_pair(stat: dict[str, float], digits: int = 1) -> str:
    """'p50 / p95' of a :func:`stats` dict."""
    if not stat or not stat.get('n'):
        return '-'
    return f'{stat["p50"]:.{digits}f} / {stat["p95"]:.{digits}f}'


# ---------------------------------------------------------------------------- plots
def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


# ---------------------------------------------------------------------------- stress hook
def record_stress_result(name: str, result: dict[str, Any], path: Path | None = None) -> Path:
    """Merge one soak / fuzz / fault run into ``outputs/bench/stress.json`` (the suite's
    "Soak, fuzz and faults" section renders that file).

    ``result`` keys (all optional but ``summary``):

    - ``summary``: one sentence, e.g. '1,200 malformed images, 0 crashes';
    - ``script`` / ``command``: what produced it; ``date``: when (default: now);
    - ``duration_s``: how long it ran;
    - ``metrics``: {name: number or text} (units in the name, e.g. ``rss_slope_mb_per_min``);
    - ``checks``: [{'what': 'RSS slope after warm-up', 'value': 0.3, 'target': '<= 1 MB/min',
      'met': True}, ...];
    - ``images``: PNG paths relative to the repository root.
    """
    path = Path(path) if path else STRESS_JSON
    data: dict[str, Any] = {}
    if path.exists():
        data = json.loads(path.read_text())
    data.setdefault('results', {})
    entry = dict(result)
    entry.setdefault('date', time.strftime('%Y-%m-%d %H:%M'))
    data['results'][name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)
    return path
