#!/usr/bin/env python3
"""Pose-engine benchmark: per-stage latency on real vtest.avi crops, PyTorch vs ONNX Runtime.

Measures, on this machine, in one run (so ratios are comparable):
  - detector latency (YOLO11n-pose, 768x576 frames) at the given input sizes;
  - per backend, for 1/3/6 persons (real person crops of one vtest frame): backbone, STRL
    (causal window of 3 cached frames), one denoiser step (persons x hypotheses rows) and
    decode, p50/p95; the whole pose stage (backbone + STRL + K steps + decode) for
    steps x hypotheses, as person-frames/s;
  - backbone passes per person-frame over a real tracked sequence (centred windows of 5);
  - peak RSS.
Writes a Markdown section (--out) and PNG plots next to it (docs/img/).

    python benchmarks/bench_engine.py --out docs/benchmarks.md [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERSON_COUNTS = (1, 3, 6)
STEPS = (1, 2, 4)
HYPOTHESES = (1, 2)
BENCH_FRAME = 100  # vtest frame with >= 6 people found by the detector at 1280


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples_ms, 50)), float(np.percentile(samples_ms, 95))


def time_call(fn, iterations: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def machine_info() -> dict:
    import onnxruntime
    import torch

    cpu = 'unknown'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return {
        'cpu': cpu,
        'logical_cores': os.cpu_count(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'torch_threads': torch.get_num_threads(),
        'onnxruntime': onnxruntime.__version__,
        'platform': platform.platform(),
    }


def read_frame(index: int) -> np.ndarray:
    import cv2

    from diffpose_ros.assets import VTEST_VIDEO, asset_path

    capture = cv2.VideoCapture(str(asset_path(VTEST_VIDEO)))
    for _ in range(index):
        capture.grab()
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f'cannot read vtest frame {index}')
    return frame


def bench_detector(frame: np.ndarray, sizes: list[int], iterations: int) -> dict:
    from diffpose_ros.detection import UltralyticsPoseDetector

    out = {}
    for imgsz in sizes:
        detector = UltralyticsPoseDetector(imgsz=imgsz)
        samples = time_call(lambda: detector.detect(frame), iterations)
        out[imgsz] = {
            'p50_ms': percentiles(samples)[0],
            'p95_ms': percentiles(samples)[1],
            'persons': len(detector.detect(frame)),
        }
    return out


def real_crops(frame: np.ndarray, model_config) -> tuple[np.ndarray, list]:
    """Crops (N, 3, H, W) float32 RGB [0,1] of the people in the frame (tiled if fewer than 6)."""
    from diffpose_ros.codec import CropTransform
    from diffpose_ros.detection import UltralyticsPoseDetector

    detections = UltralyticsPoseDetector(imgsz=1280).detect(frame)
    if not detections:
        raise RuntimeError('no person found in the benchmark frame')
    transforms = [
        CropTransform.from_box(
            d.box_xyxy,
            (model_config.crop_height, model_config.crop_width),
            model_config.box_enlarge,
        )
        for d in detections
    ]
    while len(transforms) < max(PERSON_COUNTS):  # tile real crops if needed
        transforms = transforms + transforms
    crops = np.stack([t.warp(frame) for t in transforms])[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(crops, dtype=np.float32) / 255.0, transforms


def bench_backend(runtime, crops: np.ndarray, iterations: int) -> dict:
    from diffpose_ros.codec import decode_heatmaps
    from diffpose_ros.diffusion import DiffusionSchedule
    from diffpose_ros.sampler import sample_heatmaps

    config = runtime.model_config
    schedule = DiffusionSchedule.from_config(config)
    heatmap_shape = (config.num_keypoints, config.heatmap_height, config.heatmap_width)
    offsets = np.array([-2, -1, 0], np.int64)
    result = {}
    for n in PERSON_COUNTS:
        batch = crops[:n]
        features = runtime.extract_features(batch)
        window = np.repeat(features[:, None], len(offsets), axis=1)  # (N, T, C, h, w)
        condition = runtime.encode_window(window, offsets)
        stages = {
            'backbone': time_call(lambda: runtime.extract_features(batch), iterations),
            'strl': time_call(lambda: runtime.encode_window(window, offsets), iterations),
        }
        for hyp in HYPOTHESES:
            rows = n * hyp
            model_input = np.random.default_rng(0).random(
                (rows,) + heatmap_shape, dtype=np.float32
            )
            t = np.full(rows, 999, np.int64)
            person_index = np.repeat(np.arange(n), hyp)
            stages[f'denoise_step_h{hyp}'] = time_call(
                lambda: runtime.denoise(model_input, t, person_index, condition), iterations
            )
        heatmaps = runtime.denoise(
            np.zeros((n,) + heatmap_shape, np.float32),
            np.full(n, 999, np.int64),
            np.arange(n),
            condition,
        )
        stages['decode'] = time_call(lambda: decode_heatmaps(heatmaps), iterations)

        def pose_stage(steps: int, hyp: int) -> None:
            feats = runtime.extract_features(batch)
            cond = runtime.encode_window(
                np.concatenate([window[:, :-1], feats[:, None]], axis=1), offsets
            )
            sampled = sample_heatmaps(
                lambda x, tt, pi: runtime.denoise(x, tt, pi, cond),
                schedule,
                n,
                heatmap_shape,
                steps=steps,
                hypotheses=hyp,
                seed=0,
                eta=1.0,
            )
            decode_heatmaps(sampled.heatmaps)

        # Interleaved rounds (every configuration once per round, shuffled): this VM's speed
        # drifts, and back-to-back blocks would turn drift into fake differences between cells.
        configs = [(k, h) for k in STEPS for h in HYPOTHESES]
        samples: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
        order_rng = np.random.default_rng(n)
        for config in configs:
            pose_stage(*config)  # warm-up
        for _ in range(iterations):
            for index in order_rng.permutation(len(configs)):
                config = configs[index]
                start = time.perf_counter()
                pose_stage(*config)
                samples[config].append((time.perf_counter() - start) * 1000.0)
        grid = {}
        for (steps, hyp), values in samples.items():
            p50, p95 = percentiles(values)
            grid[f'{steps}x{hyp}'] = {
                'p50_ms': p50,
                'p95_ms': p95,
                'person_frames_per_s': n * 1000.0 / p50,
            }
        result[n] = {
            'stages': {
                k: dict(zip(('p50_ms', 'p95_ms'), percentiles(v))) for k, v in stages.items()
            },
            'pose_stage': grid,
        }
    return result


def backbone_passes_per_person_frame(frames_start: int, num_frames: int) -> dict:
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.pipeline import PosePipeline
    from diffpose_ros.runtime.factory import make_runtime

    config = PipelineConfig(
        window_mode='centered', window_size=5, detector_imgsz=1280, backend='onnxruntime'
    )
    pipeline = PosePipeline(config, make_runtime(config), UltralyticsPoseDetector(imgsz=1280))
    import cv2

    from diffpose_ros.assets import VTEST_VIDEO, asset_path

    capture = cv2.VideoCapture(str(asset_path(VTEST_VIDEO)))
    for _ in range(frames_start):
        capture.grab()
    for i in range(num_frames):
        ok, frame = capture.read()
        pipeline.process(frame, i * 100_000_000)
    pipeline.flush()
    return {
        'frames': num_frames,
        'backbone_passes': pipeline.backbone_crops,
        'person_frames': pipeline.person_frames,
        'passes_per_person_frame': pipeline.backbone_crops / max(pipeline.person_frames, 1),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, backend in zip(axes, ('torch', 'onnxruntime')):
        data = results['backends'].get(backend)
        if not data:
            continue
        stages = ('backbone', 'strl', 'denoise_step_h1', 'decode')
        bottom = np.zeros(len(PERSON_COUNTS))
        for stage in stages:
            values = np.array([data[n]['stages'][stage]['p50_ms'] for n in PERSON_COUNTS])
            ax.bar([str(n) for n in PERSON_COUNTS], values, bottom=bottom, label=stage)
            bottom += values
        ax.set_title(f'{backend}: pose stage, 1 step, 1 hypothesis (p50)')
        ax.set_xlabel('persons per frame')
        ax.set_ylabel('latency [ms]')
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict, image_rel: str) -> str:
    info = results['machine']
    lines = [
        '## Pose engine (issue 2)',
        '',
        f'Measured {results["date"]} by `benchmarks/bench_engine.py` on {info["cpu"]} '
        f'({info["logical_cores"]} logical cores), torch {info["torch"]} '
        f'({info["torch_threads"]} threads), ONNX Runtime {info["onnxruntime"]} '
        f'(CPU EP), FP32, random-head weights (cost does not depend on training). '
        f'{results["iterations"]} timed iterations after warm-up; latency in ms.',
        '',
        '### Detector (YOLO11n-pose, PyTorch, one 768x576 vtest frame)',
        '',
        '| input size | p50 | p95 | persons found |',
        '|---|---|---|---|',
    ]
    for size, row in results['detector'].items():
        lines.append(f'| {size} | {row["p50_ms"]:.1f} | {row["p95_ms"]:.1f} | {row["persons"]} |')
    for backend, data in results['backends'].items():
        lines += [
            '',
            f'### {backend}: per-stage latency (whole batch of N persons)',
            '',
            '| persons | backbone p50/p95 | STRL p50/p95 | 1 denoiser step, H=1 | '
            '1 denoiser step, H=2 | decode |',
            '|---|---|---|---|---|---|',
        ]
        for n in PERSON_COUNTS:
            s = data[n]['stages']

            def cell(key):
                return f'{s[key]["p50_ms"]:.1f} / {s[key]["p95_ms"]:.1f}'

            lines.append(
                f'| {n} | {cell("backbone")} | {cell("strl")} | '
                f'{cell("denoise_step_h1")} | {cell("denoise_step_h2")} | '
                f'{cell("decode")} |'
            )
        lines += [
            '',
            f'{backend}: whole pose stage (backbone + STRL + K steps + decode), '
            'p50 ms and person-frames/s',
            '',
            '| persons | ' + ' | '.join(f'K={k}, H={h}' for k in STEPS for h in HYPOTHESES) + ' |',
            '|---|' + '---|' * (len(STEPS) * len(HYPOTHESES)),
        ]
        for n in PERSON_COUNTS:
            g = data[n]['pose_stage']
            lines.append(
                f'| {n} | '
                + ' | '.join(
                    f'{g[f"{k}x{h}"]["p50_ms"]:.0f} ms, '
                    f'{g[f"{k}x{h}"]["person_frames_per_s"]:.1f}/s'
                    for k in STEPS
                    for h in HYPOTHESES
                )
                + ' |'
            )
        lines.append('')
        for n in PERSON_COUNTS:
            g = data[n]['pose_stage']
            # cost of one extra step: least-squares slope of p50 over K = 1, 2, 4 (H = 1)
            ks = np.array(STEPS, float)
            ts = np.array([g[f'{k}x1']['p50_ms'] for k in STEPS])
            slope_ms = float(np.polyfit(ks, ts, 1)[0])
            one_step = g['1x1']['p50_ms']
            data[n]['extra_step_share'] = slope_ms / one_step
            lines.append(
                f'- {backend}, {n} person(s): 1-step pose stage {one_step:.1f} ms = '
                f'{g["1x1"]["person_frames_per_s"]:.1f} person-frames/s; one extra step '
                f'+{slope_ms:.1f} ms (slope over K = 1, 2, 4) = {100 * slope_ms / one_step:.0f} % '
                'of the 1-step pose stage.'
            )
    bp = results['backbone_passes']
    lines += [
        '',
        f'Backbone passes per person-frame over {bp["frames"]} real vtest frames, '
        f'centred windows of 5: {bp["backbone_passes"]} passes / {bp["person_frames"]} '
        f'person-frames = **{bp["passes_per_person_frame"]:.2f}**.',
        '',
        f'Peak RSS of the benchmark process: {results["peak_rss_mb"]:.0f} MB.',
        '',
        f'![pose stage latency]({image_rel})',
        '',
    ]
    return '\n'.join(lines)


def write_section(out: Path, heading: str, section: str) -> None:
    """Replace the ``heading`` section of a Markdown file (up to the next ``## ``), or append."""
    text = out.read_text() if out.exists() else '# Benchmarks\n\n'
    if heading in text:
        before, _, rest = text.partition(heading)
        after = rest[rest.find('\n## ') + 1 :] if '\n## ' in rest else ''
        text = before + section + ('\n' + after if after else '')
    else:
        text = text.rstrip() + '\n\n' + section
    out.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='docs/benchmarks.md')
    parser.add_argument('--iterations', type=int, default=20)
    parser.add_argument('--backends', default='torch,onnxruntime')
    parser.add_argument('--detector-sizes', default='640,1280')
    parser.add_argument('--json', default='outputs/bench_engine.json')
    args = parser.parse_args()
    from tqdm import tqdm

    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.runtime.factory import make_runtime

    frame = read_frame(BENCH_FRAME)
    progress = tqdm(total=3 + len(args.backends.split(',')), desc='benchmark', unit='part')
    results = {
        'date': time.strftime('%Y-%m-%d'),
        'machine': machine_info(),
        'iterations': args.iterations,
    }
    results['detector'] = bench_detector(
        frame, [int(s) for s in args.detector_sizes.split(',')], args.iterations
    )
    progress.update(1)
    results['backends'] = {}
    crops = None
    for backend in args.backends.split(','):
        runtime = make_runtime(PipelineConfig(backend=backend))
        if crops is None:
            crops, _ = real_crops(frame, runtime.model_config)
        results['backends'][backend] = bench_backend(runtime, crops, args.iterations)
        progress.update(1)
    results['backbone_passes'] = backbone_passes_per_person_frame(100, 30)
    progress.update(1)
    results['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out)
    image = out.parent / 'img' / 'bench_engine_stages.png'
    image.parent.mkdir(parents=True, exist_ok=True)
    plot(results, image)
    progress.update(1)
    progress.close()
    section = markdown(results, str(image.relative_to(out.parent)))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    write_section(out, '## Pose engine (issue 2)', section)
    print(section)
    return 0


if __name__ == '__main__':
    sys.exit(main())
