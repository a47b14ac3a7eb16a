#!/usr/bin/env python3
"""In-process benchmarks of the suite (``benchmarks/run_all.py``): two parts.

``pipeline`` (issue 5): ``PosePipeline.process()`` on real 640x480 frames with exactly 1, 3 and
6 people (``common.SCENES``), for steps 1/2/4/8 x hypotheses 1/2/4, PyTorch and ONNX Runtime,
and YOLO11n-pose alone on the same frames. Every configuration and the detector alone run once
per round, in a shuffled order, on the same frame of each scene (the rounds walk the scene's
frames ping-pong), so the machine's drift hits all of them alike. Per stage (detector,
tracking, crop, backbone, strl, denoise, decode: ``FrameResult.timings_ms``) and end to end
(wall time of ``process()``) p50/p95, person-frames/s, PyTorch vs ONNX Runtime, full pipeline
vs YOLO11n-pose alone, peak RSS; the issue's targets checked.

``engine`` (issue 2): the network stages in isolation on real person crops of one vtest frame
(backbone, STRL over a causal window of 3 cached frames, one denoiser step for persons x
hypotheses rows, decode) per backend for 1/3/6 persons; YOLO11n-pose on a full 768x576 frame at
imgsz 640 and 1280; backbone passes per person-frame over a real tracked sequence (centred
windows of 5); peak RSS.

    python benchmarks/run_all.py --only engine,pipeline    # the suite (writes the doc)
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    FRAME_WH,
    SCENES,
    PingPong,
    fmt_pair,
    linear_slope,
    machine_info,
    machine_line,
    paired_ratio,
    peak_rss_mb,
    percentiles,
    pyplot,
    ratio,
    read_vtest_frames,
    reset_peak_rss,
    rss_mb,
    save_figure,
    scene_frames,
    stats,
    time_call,
)

ENGINE_SECTION = '## Pose engine (issue 2)'
PIPELINE_SECTION = '## Pipeline on real frames (issue 5)'
TARGETS_SECTION = '## Targets (issue 5)'

# the node's default first (int8 window encoder on the CPU), then float32 ORT and torch
BACKENDS = ('onnxruntime+int8_encoder', 'onnxruntime', 'torch')
PERSON_COUNTS = (1, 3, 6)
STEPS = (1, 2, 4, 8)
HYPOTHESES = (1, 2, 4)
PIPELINE_STAGES = ('detector', 'tracking', 'crop', 'backbone', 'strl', 'denoise', 'decode')
POSE_STAGES = ('backbone', 'strl', 'denoise', 'decode')
DETECTOR_IMGSZ = 640
BENCH_FRAME = 100  # engine part: vtest frame with >= 6 people found by the detector at 1280

# The targets: this CPU, the node's default runtime, 3 persons, 1 step, 1 hypothesis,
# 640x480.
TARGET_CELL = ('onnxruntime+int8_encoder', 3, 1, 1)
TARGET_MIN_FPS = 5.0
TARGET_MAX_YOLO_RATIO = 2.0

# Cost model for the up-front run-time estimate (ms per call, idle 2-core AMD EPYC, from the
# 2026-11-23 figures in docs/benchmarks.md): detector per frame; pose stage per backend =
# fixed + per_person * N + K * (per_step + per_row_step * N * H).
COST_MS: dict[str, Any] = {
    'detector': {640: 62.0, 1280: 211.0},
    'tracking_crop': 2.0,
    'onnxruntime': {'fixed': 7.0, 'per_person': 12.5, 'per_step': 1.5, 'per_row_step': 3.0},
    'torch': {'fixed': 8.0, 'per_person': 17.0, 'per_step': 2.0, 'per_row_step': 3.5},
    'model_load_s': 20.0,
}


def cell_key(backend: str, persons: int, steps: int, hypotheses: int) -> str:
    return f'{backend}/{persons}/{steps}/{hypotheses}'


def estimate_frame_ms(backend: str, persons: int, steps: int, hypotheses: int) -> float:
    """Cost model: expected wall time of one ``process()`` call (640x480, detector at 640)."""
    c = COST_MS[runtime_choice(backend)['backend']]  # quantised: an upper bound
    pose = c['fixed'] + c['per_person'] * persons + steps * (
        c['per_step'] + c['per_row_step'] * persons * hypotheses)
    return COST_MS['detector'][DETECTOR_IMGSZ] + COST_MS['tracking_crop'] + pose


def runtime_choice(name: str) -> dict[str, str]:
    """A benchmarked runtime: 'onnxruntime', 'torch', or 'onnxruntime+<quantization>' (e.g.
    'onnxruntime+int8_encoder'), as PipelineConfig fields."""
    backend, _, quantization = name.partition('+')
    return {'backend': backend, 'quantization': quantization or 'none'}


# ============================================================================ pipeline part
def pipeline_options(quick: bool = False, **overrides: Any) -> dict[str, Any]:
    opts = {
        'rounds': 30,  # timed samples per cell
        'warmup_rounds': 1,
        'backends': BACKENDS,
        'persons': PERSON_COUNTS,
        'steps': STEPS,
        'hypotheses': HYPOTHESES,
        'seed': 0,
    }
    if quick:
        opts.update(rounds=3, steps=(1, 2), hypotheses=(1, 2))
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


def pipeline_cells(opts: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    cells = list(itertools.product(opts['backends'], opts['persons'], opts['steps'],
                                   opts['hypotheses']))
    if TARGET_CELL[0] in opts['backends'] and TARGET_CELL[1] in opts['persons']:
        if TARGET_CELL not in cells:  # the targets are always measured
            cells.append(TARGET_CELL)
    return cells


def estimate_pipeline_s(opts: dict[str, Any]) -> float:
    per_round_ms = sum(estimate_frame_ms(*cell) for cell in pipeline_cells(opts))
    per_round_ms += len(opts['persons']) * COST_MS['detector'][DETECTOR_IMGSZ]  # YOLO alone
    rounds = opts['rounds'] + opts['warmup_rounds']
    verify_s = sum(SCENES[n].num_frames for n in opts['persons']) * (
        COST_MS['detector'][DETECTOR_IMGSZ] / 1000)
    return COST_MS['model_load_s'] + verify_s + rounds * per_round_ms / 1000


def run_pipeline(opts: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """The real-frame grid; returns the results dict (JSON-serialisable)."""
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.pipeline import PosePipeline
    from diffpose_ros.runtime.factory import make_runtime

    started = time.perf_counter()
    reset_peak_rss()
    memory = {'start_rss_mb': rss_mb()}
    detector = UltralyticsPoseDetector(imgsz=DETECTOR_IMGSZ)
    detector.warmup()
    memory['after_detector_rss_mb'] = rss_mb()

    # ---- scenes: real 640x480 frames, the number of people checked with this detector
    scenes, frames = {}, {}
    for n in opts['persons']:
        scene = SCENES[n]
        frames[n] = scene_frames(scene)
        counts = [len(detector.detect(f)) for f in frames[n]]
        scenes[str(n)] = {'description': scene.describe(), 'first_frame': scene.first_frame,
                     'num_frames': scene.num_frames, 'region_xywh': scene.region_xywh,
                     'scale': scene.scale, 'persons_detected': counts,
                     'exact': all(c == n for c in counts)}
        if not scenes[str(n)]['exact']:
            _say(progress, f'WARNING: scene of {n} person(s): the detector found {counts}')

    # ---- runtimes and one pipeline per (backend, persons); K and H set per call
    runtimes, providers = {}, {}
    for backend in opts['backends']:
        before = rss_mb()
        runtimes[backend] = make_runtime(PipelineConfig(**runtime_choice(backend)))
        providers[backend] = list(runtimes[backend].providers)
        memory[f'{backend}_load_mb'] = rss_mb() - before
    trained = {b: bool(getattr(r, 'trained', False)) for b, r in runtimes.items()}
    pipelines, stamps = {}, {}
    for backend, n in itertools.product(opts['backends'], opts['persons']):
        config = PipelineConfig(**runtime_choice(backend), detector_imgsz=DETECTOR_IMGSZ)
        pipelines[backend, n] = PosePipeline(config, runtimes[backend], detector)
        stamps[backend, n] = 0

    cells = pipeline_cells(opts)
    tasks: list[tuple] = [('pipeline', *cell) for cell in cells]
    tasks += [('yolo', n) for n in opts['persons']]
    samples: dict[str, list[dict]] = {cell_key(*c): [] for c in cells}
    yolo: dict[int, list[float]] = {n: [] for n in opts['persons']}
    order_rng = np.random.default_rng(opts['seed'])
    sequences = {n: PingPong(len(frames[n])) for n in opts['persons']}
    total_rounds = opts['warmup_rounds'] + opts['rounds']
    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(total=total_rounds * len(tasks), desc='pipeline grid', unit='frame',
                   leave=False)
    grid_started = time.perf_counter()
    for round_index in range(total_rounds):
        timed = round_index >= opts['warmup_rounds']
        frame_of = {n: frames[n][sequences[n].take(1)[0]] for n in opts['persons']}
        for task_index in order_rng.permutation(len(tasks)):
            task = tasks[task_index]
            if task[0] == 'yolo':
                n = task[1]
                start = time.perf_counter()
                detector.detect(frame_of[n])
                elapsed = (time.perf_counter() - start) * 1000.0
                if timed:
                    yolo[n].append(elapsed)
            else:
                _, backend, n, k, h = task
                pipeline = pipelines[backend, n]
                pipeline.set_sampling(steps=k, hypotheses=h)
                stamps[backend, n] += 33_333_333
                start = time.perf_counter()
                result = pipeline.process(frame_of[n], stamps[backend, n])
                elapsed = (time.perf_counter() - start) * 1000.0
                if timed:
                    samples[cell_key(backend, n, k, h)].append({
                        'round': round_index,
                        'e2e_ms': elapsed,
                        'persons': len(result.persons) if result else 0,
                        'timings_ms': dict(result.timings_ms) if result else {},
                    })
            if bar is not None:
                bar.update(1)
        if round_index == 0 and progress is not None:
            spent = time.perf_counter() - grid_started
            _say(progress, f'pipeline: first round {spent:.0f} s -> about '
                           f'{spent * (total_rounds - 1) / 60:.1f} min for the remaining '
                           f'{total_rounds - 1} round(s)')
    if bar is not None:
        bar.close()
    memory['peak_rss_mb'] = peak_rss_mb()

    # ---- statistics
    results_cells = {}
    for (backend, n, k, h) in cells:
        rows = samples[cell_key(backend, n, k, h)]
        e2e = [r['e2e_ms'] for r in rows]
        stage_stats = {s: stats([r['timings_ms'].get(s, 0.0) for r in rows])
                       for s in PIPELINE_STAGES}
        pose = [sum(r['timings_ms'].get(s, 0.0) for s in POSE_STAGES) for r in rows]
        other = [r['e2e_ms'] - sum(r['timings_ms'].values()) for r in rows]
        e2e_stats = stats(e2e)
        results_cells[cell_key(backend, n, k, h)] = {
            'backend': backend, 'persons': n, 'steps': k, 'hypotheses': h,
            'e2e': e2e_stats,
            'stages': stage_stats,
            'pose_stage': stats(pose),
            'other': stats(other),
            'persons_mean': float(np.mean([r['persons'] for r in rows])) if rows else 0.0,
            'fps_mean': ratio(1000.0, e2e_stats.get('mean', float('nan'))),
            'person_frames_per_s': ratio(n * 1000.0, e2e_stats.get('p50', float('nan'))),
            'pose_person_frames_per_s': ratio(
                n * 1000.0, stats(pose).get('p50', float('nan'))),
            'e2e_by_round': {int(r['round']): r['e2e_ms'] for r in rows},
        }
    yolo_stats = {str(n): stats(v) for n, v in yolo.items()}
    rounds_timed = list(range(opts['warmup_rounds'], total_rounds))
    vs_yolo = {}
    for backend, n in itertools.product(opts['backends'], opts['persons']):
        cell = results_cells.get(cell_key(backend, n, 1, 1))
        if cell is None:
            continue
        by_round = cell['e2e_by_round']
        paired = [(by_round[r], yolo[n][i]) for i, r in enumerate(rounds_timed) if r in by_round]
        vs_yolo[f'{backend}/{n}'] = {
            'ratio_p50': ratio(cell['e2e']['p50'], yolo_stats[str(n)]['p50']),
            'ratio_p95': ratio(cell['e2e']['p95'], yolo_stats[str(n)]['p95']),
            'ratio_paired': paired_ratio([p for p, _ in paired], [y for _, y in paired]),
        }
    return {
        'part': 'pipeline',
        'date': time.strftime('%Y-%m-%d %H:%M'),
        'machine': machine_info(),
        'options': {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        'frame_wh': FRAME_WH,
        'detector_imgsz': DETECTOR_IMGSZ,
        'providers': providers,
        'trained': trained,
        'strl_depth': next(iter(runtimes.values())).model_config.strl_depth,
        'scenes': scenes,
        'cells': results_cells,
        'yolo': yolo_stats,
        'vs_yolo': vs_yolo,
        'targets': check_targets(results_cells, yolo_stats, vs_yolo),
        'memory': memory,
        'runtime_s': time.perf_counter() - started,
        'grid_s': time.perf_counter() - grid_started,
    }


def _say(progress: Any, message: str) -> None:
    if progress is not None:
        from tqdm import tqdm

        tqdm.write(message)


def check_targets(cells: dict[str, dict], yolo: dict[str, dict],
                  vs_yolo: dict[str, dict]) -> list[dict[str, Any]]:
    backend, n, k, h = TARGET_CELL
    cell = cells.get(cell_key(*TARGET_CELL))
    if cell is None:
        return []
    where = f'{backend}, {n} persons, {k} step, {h} hypothesis, {FRAME_WH[0]}x{FRAME_WH[1]}'
    fps = cell['fps_mean']
    versus = vs_yolo[f'{backend}/{n}']
    return [
        {
            'what': f'end-to-end frames/s ({where}) = 1000 / mean latency',
            'value': fps,
            'target': f'>= {TARGET_MIN_FPS:g}',
            'met': bool(fps >= TARGET_MIN_FPS),
            'detail': f'mean {cell["e2e"]["mean"]:.1f} ms, p50 {cell["e2e"]["p50"]:.1f} ms '
                      f'({ratio(1000.0, cell["e2e"]["p50"]):.1f} frames/s at p50)',
        },
        {
            'what': f'full pipeline / YOLO11n-pose alone, p50 latency ({where})',
            'value': versus['ratio_p50'],
            'target': f'<= {TARGET_MAX_YOLO_RATIO:g}',
            'met': bool(versus['ratio_p50'] <= TARGET_MAX_YOLO_RATIO),
            'detail': f'{cell["e2e"]["p50"]:.1f} / {yolo[str(n)]["p50"]:.1f} ms; p95 ratio '
                      f'{versus["ratio_p95"]:.2f}, median of per-round ratios '
                      f'{versus["ratio_paired"]:.2f}',
        },
    ]


def plot_pipeline(results: dict, path_stages: Path, path_grid: Path) -> None:
    plt = pyplot()
    cells, opts = results['cells'], results['options']
    backends, persons = opts['backends'], opts['persons']
    colours = dict(zip(PIPELINE_STAGES, plt.get_cmap('tab10').colors))
    # 1) stacked stage p50 at K=1, H=1 per person count and backend, YOLO alone beside
    fig, ax = plt.subplots(figsize=(10, 4.5))
    positions, labels, x = [], [], 0.0
    for n in persons:
        for backend in list(backends) + ['yolo']:
            if backend == 'yolo':
                ax.bar(x, results['yolo'][str(n)]['p50'], color='0.5',
                       label='YOLO11n-pose alone' if n == persons[0] else None)
            else:
                cell = cells.get(cell_key(backend, n, 1, 1))
                bottom = 0.0
                for stage in PIPELINE_STAGES:
                    value = cell['stages'][stage]['p50'] if cell else 0.0
                    ax.bar(x, value, bottom=bottom, color=colours[stage],
                           label=stage if (n == persons[0] and backend == backends[0]) else None)
                    bottom += value
            positions.append(x)
            short = {'onnxruntime': 'ORT', 'yolo': 'YOLO alone'}.get(backend, backend)
            labels.append(f'{n}p\n{short}')
            x += 1.0
        x += 0.5
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel('p50 latency [ms]')
    ax.set_title('PosePipeline.process() per stage, 1 step, 1 hypothesis, 640x480 real frames')
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path_stages)
    # 2) end-to-end p50 over steps, per hypotheses, per person count
    fig, axes = plt.subplots(1, len(persons), figsize=(4.2 * len(persons), 4), squeeze=False)
    for ax, n in zip(axes[0], persons):
        for backend, style in zip(backends, ('-', '--', ':', '-.')):
            for h, colour in zip(opts['hypotheses'], ('tab:blue', 'tab:orange', 'tab:green',
                                                      'tab:red')):
                ks = [k for k in opts['steps'] if cell_key(backend, n, k, h) in cells]
                ax.plot(ks, [cells[cell_key(backend, n, k, h)]['e2e']['p50'] for k in ks],
                        style, marker='o', color=colour, label=f'{backend}, H={h}')
        yolo_p50 = results['yolo'][str(n)]['p50']
        ax.axhline(yolo_p50, color='0.4', linestyle=':', label='YOLO11n-pose alone')
        ax.set_title(f'{n} person(s)')
        ax.set_xlabel('denoising steps K')
        ax.set_xscale('log', base=2)
        ax.set_xticks(list(opts['steps']), [str(k) for k in opts['steps']])
        ax.set_ylabel('end-to-end p50 [ms]')
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path_grid)


def pipeline_markdown(results: dict, images: list[str]) -> str:
    cells, opts, info = results['cells'], results['options'], results['machine']
    backends = opts['backends']
    persons, steps, hyps = opts['persons'], opts['steps'], opts['hypotheses']
    yolo = results['yolo']
    lines = [
        PIPELINE_SECTION,
        '',
        f'Measured {results["date"]} by `benchmarks/run_all.py` (part `pipeline`, '
        f'{results["runtime_s"] / 60:.1f} min) on {machine_line(info)}; execution providers '
        + ', '.join(f'{b}: {", ".join(p)}' for b, p in results['providers'].items())
        + f'; FP32, {head_description(results)}. Load average at the start '
        f'{", ".join(str(v) for v in info["load_average"])}.',
        '',
        f'**Method**: `PosePipeline.process(frame, stamp)` (detector YOLO11n-pose at imgsz '
        f'{results["detector_imgsz"]} on every frame, tracking, crops, backbone, STRL over a '
        'causal window of 3, DDIM sampling with K steps x H hypotheses, decoding), one '
        'pipeline per backend and person count with `set_sampling(K, H)` before each call. '
        f'{opts["rounds"]} timed rounds after {opts["warmup_rounds"]} warm-up round(s); in a '
        'round every configuration and YOLO11n-pose alone (`detector.detect(frame)`) process '
        "the same frame of each scene once, in a shuffled order, so the VM's drift hits all "
        'of them alike; the rounds walk the scene ping-pong. **End to end** = wall time of '
        '`process()`; stages from `FrameResult.timings_ms`; **pose stage** = backbone + '
        'STRL + denoise + decode; **person-frames/s** = persons x 1000 / p50; **frames/s** = '
        '1000 / mean.',
        '',
        '| scene | frames (640x480) | persons found by YOLO11n-pose at 640, per frame |',
        '|---|---|---|',
    ]
    for n in persons:
        scene = results['scenes'][str(n)]
        counts = scene['persons_detected']
        found = (f'exactly {n} in all {len(counts)}' if scene['exact']
                 else 'NOT exact: ' + ', '.join(str(c) for c in counts))
        lines.append(f'| {n} person(s) | {scene["description"]} | {found} |')
    torch_vs_ort = {'torch', 'onnxruntime'} <= set(backends)
    lines += [
        '',
        '### End to end, p50 / p95 ms and person-frames/s',
        '',
        '| persons | K | H | ' + ' | '.join(
            f'{b} p50 / p95 | {b} person-frames/s' for b in backends)
        + (' | torch / onnxruntime (p50) |' if torch_vs_ort else ' |'),
        '|---|---|---|' + '---|---|' * len(backends) + ('---|' if torch_vs_ort else ''),
    ]
    for n, k, h in itertools.product(persons, steps, hyps):
        row = f'| {n} | {k} | {h} | '
        values = []
        for b in backends:
            cell = cells.get(cell_key(b, n, k, h))
            values.append(f'{fmt_pair(cell["e2e"], 0)} | {cell["person_frames_per_s"]:.1f}'
                          if cell else '- | -')
        row += ' | '.join(values)
        if torch_vs_ort:
            a, b = (cells.get(cell_key(x, n, k, h)) for x in ('torch', 'onnxruntime'))
            row += (f' | {ratio(a["e2e"]["p50"], b["e2e"]["p50"]):.2f}' if a and b else ' | -')
        lines.append(row + ' |')
    lines += [
        '',
        '### Full pipeline vs YOLO11n-pose alone (same frames, same rounds)',
        '',
        '| persons | YOLO11n-pose alone p50 / p95 | '
        + ' | '.join(f'{b} K=1, H=1 p50 / p95 | ratio p50 | ratio p95 | median per-round ratio'
                     for b in backends) + ' |',
        '|---|---|' + '---|---|---|---|' * len(backends),
    ]
    for n in persons:
        row = f'| {n} | {fmt_pair(yolo[str(n)])} | '
        parts = []
        for b in backends:
            cell, v = cells.get(cell_key(b, n, 1, 1)), results['vs_yolo'].get(f'{b}/{n}')
            parts.append(f'{fmt_pair(cell["e2e"])} | {v["ratio_p50"]:.2f} | '
                         f'{v["ratio_p95"]:.2f} | {v["ratio_paired"]:.2f}'
                         if cell and v else '- | - | - | -')
        lines.append(row + ' | '.join(parts) + ' |')
    slope_lines = []
    for b in backends:
        for n in persons:
            ks = [k for k in steps if cell_key(b, n, k, 1) in cells]
            ts = [cells[cell_key(b, n, k, 1)]['pose_stage']['p50'] for k in ks]
            one = cells.get(cell_key(b, n, 1, 1))
            if len(ks) < 2 or one is None:
                continue
            slope = linear_slope(ks, ts)
            slope_lines.append(
                f'- {b}, {n} person(s): 1-step pose stage {one["pose_stage"]["p50"]:.1f} ms = '
                f'{one["pose_person_frames_per_s"]:.1f} person-frames/s; one extra step '
                f'{slope:+.1f} ms (slope over K = {", ".join(map(str, ks))}) = '
                f'{100 * slope / one["pose_stage"]["p50"]:.0f} % of the 1-step pose stage.')
    if slope_lines:
        lines += ['', 'Pose stage cost of one extra denoising step (least-squares slope of the '
                  'pose stage p50 over K, H = 1), as a share of the 1-step pose stage:', '']
        lines += slope_lines
    for b in backends:
        lines += [
            '',
            f'<details><summary>{b}: every stage, p50 / p95 ms (click)</summary>',
            '',
            '| persons | K | H | ' + ' | '.join(PIPELINE_STAGES)
            + ' | pose stage | other | end to end | persons/frame |',
            '|---|---|---|' + '---|' * (len(PIPELINE_STAGES) + 4),
        ]
        for n, k, h in itertools.product(persons, steps, hyps):
            cell = cells.get(cell_key(b, n, k, h))
            if not cell:
                continue
            lines.append(
                f'| {n} | {k} | {h} | '
                + ' | '.join(fmt_pair(cell['stages'][s]) for s in PIPELINE_STAGES)
                + f' | {fmt_pair(cell["pose_stage"])} | {fmt_pair(cell["other"])} | '
                f'{fmt_pair(cell["e2e"])} | {cell["persons_mean"]:.2f} |')
        lines += ['', '</details>']
    mem = results['memory']
    lines += [
        '',
        f'Memory (RSS): {mem["start_rss_mb"]:.0f} MB at the start of the part, '
        f'{mem["after_detector_rss_mb"]:.0f} MB with the detector loaded, '
        + ', '.join(f'+{mem[f"{b}_load_mb"]:.0f} MB loading the {b} runtime' for b in backends)
        + ' (before its first inference)'
        + f'; peak {mem["peak_rss_mb"]:.0f} MB over the part (all pipelines in one process).',
        '',
    ]
    lines += [f'![{Path(image).stem}]({image})' for image in images]
    lines.append('')
    return '\n'.join(lines)


def targets_markdown(results: dict) -> str:
    lines = [
        TARGETS_SECTION,
        '',
        f'Issue 5 targets, checked with the numbers of the `pipeline` part measured '
        f'{results["date"]} (section below; this CPU: {results["machine"]["cpu"]}, '
        f'{results["machine"]["logical_cores"]} cores). The ROS node targets (issue 3) are '
        'checked in their own section; the soak, fuzz and fault targets in the last section.',
        '',
        '| target | measured | required | met |',
        '|---|---|---|---|',
    ]
    for t in results['targets']:
        lines.append(f'| {t["what"]} ({t["detail"]}) | **{t["value"]:.2f}** | {t["target"]} | '
                     f'{"met" if t["met"] else "MISSED"} |')
    if not results['targets']:
        lines.append('| (the target cell was not measured in this run) | - | - | - |')
    lines.append('')
    return '\n'.join(lines)


# ============================================================================ engine part
def engine_options(quick: bool = False, **overrides: Any) -> dict[str, Any]:
    opts = {
        'iterations': 20,
        'backends': BACKENDS,
        'persons': PERSON_COUNTS,
        'hypotheses': HYPOTHESES,
        'detector_sizes': (640, 1280),
        'passes_frames': 30,
    }
    if quick:
        opts.update(iterations=3, passes_frames=8)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    return opts


def estimate_engine_s(opts: dict[str, Any]) -> float:
    it = opts['iterations'] + 2
    det = sum(COST_MS['detector'][s] * (it + 1) for s in opts['detector_sizes'])
    stages = 0.0
    for backend in opts['backends']:
        c = COST_MS[runtime_choice(backend)['backend']]
        for n in opts['persons']:
            stages += it * (c['fixed'] + c['per_person'] * n + 1.0)
            stages += sum(it * (c['per_step'] + c['per_row_step'] * n * h)
                          for h in opts['hypotheses'])
    passes = opts['passes_frames'] * (COST_MS['detector'][1280] + 80.0)
    return COST_MS['model_load_s'] + (det + stages + passes + COST_MS['detector'][1280]) / 1000


def bench_detector(frame: np.ndarray, sizes: list[int], iterations: int) -> dict:
    from diffpose_ros.detection import UltralyticsPoseDetector

    out = {}
    for imgsz in sizes:
        detector = UltralyticsPoseDetector(imgsz=imgsz)
        samples = time_call(lambda: detector.detect(frame), iterations)
        p50, p95 = percentiles(samples)
        out[int(imgsz)] = {'p50_ms': p50, 'p95_ms': p95, 'persons': len(detector.detect(frame))}
    return out


def real_crops(frame: np.ndarray, model_config, count: int) -> np.ndarray:
    """Crops (count, 3, H, W) float32 RGB [0,1] of the people in the frame (tiled if fewer)."""
    from diffpose_ros.codec import CropTransform
    from diffpose_ros.detection import UltralyticsPoseDetector

    detections = UltralyticsPoseDetector(imgsz=1280).detect(frame)
    if not detections:
        raise RuntimeError('no person found in the benchmark frame')
    transforms = [
        CropTransform.from_box(d.box_xyxy, (model_config.crop_height, model_config.crop_width),
                               model_config.box_enlarge)
        for d in detections
    ]
    while len(transforms) < count:  # tile real crops if needed
        transforms = transforms + transforms
    crops = np.stack([t.warp(frame) for t in transforms])[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(crops, dtype=np.float32) / 255.0


def bench_backend(runtime, crops: np.ndarray, opts: dict[str, Any]) -> dict:
    """Isolated stage latencies for each person count (whole batch of N crops)."""
    from diffpose_ros.codec import decode_heatmaps

    config = runtime.model_config
    heatmap_shape = (config.num_keypoints, config.heatmap_height, config.heatmap_width)
    offsets = np.array([-2, -1, 0], np.int64)
    iterations = opts['iterations']
    result = {}
    for n in opts['persons']:
        batch = crops[:n]
        features = runtime.extract_features(batch)
        window = np.repeat(features[:, None], len(offsets), axis=1)  # (N, T, C, h, w)
        condition = runtime.encode_window(window, offsets)
        stages = {
            'backbone': time_call(lambda: runtime.extract_features(batch), iterations),
            'strl': time_call(lambda: runtime.encode_window(window, offsets), iterations),
        }
        for hyp in opts['hypotheses']:
            rows = n * hyp
            model_input = np.random.default_rng(0).random((rows,) + heatmap_shape,
                                                          dtype=np.float32)
            t = np.full(rows, 999, np.int64)
            person_index = np.repeat(np.arange(n), hyp)
            stages[f'denoise_step_h{hyp}'] = time_call(
                lambda: runtime.denoise(model_input, t, person_index, condition), iterations)
        heatmaps = runtime.denoise(np.zeros((n,) + heatmap_shape, np.float32),
                                   np.full(n, 999, np.int64), np.arange(n), condition)
        stages['decode'] = time_call(lambda: decode_heatmaps(heatmaps), iterations)
        result[str(n)] = {'stages': {k: dict(zip(('p50_ms', 'p95_ms'), percentiles(v)))
                                for k, v in stages.items()}}
    return result


def backbone_passes_per_person_frame(frames_start: int, num_frames: int) -> dict:
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.pipeline import PosePipeline
    from diffpose_ros.runtime.factory import make_runtime

    config = PipelineConfig(window_mode='centered', window_size=5, detector_imgsz=1280,
                            backend='onnxruntime')
    pipeline = PosePipeline(config, make_runtime(config), UltralyticsPoseDetector(imgsz=1280))
    for i, frame in enumerate(read_vtest_frames(frames_start, num_frames)):
        pipeline.process(frame, i * 100_000_000)
    pipeline.flush()
    return {
        'frames': num_frames,
        'backbone_passes': pipeline.backbone_crops,
        'person_frames': pipeline.person_frames,
        'passes_per_person_frame': pipeline.backbone_crops / max(pipeline.person_frames, 1),
    }


def run_engine(opts: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.runtime.factory import make_runtime

    started = time.perf_counter()
    reset_peak_rss()
    frame = read_vtest_frames(BENCH_FRAME, 1)[0]
    results: dict[str, Any] = {
        'part': 'engine',
        'date': time.strftime('%Y-%m-%d %H:%M'),
        'machine': machine_info(),
        'options': {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        'iterations': opts['iterations'],
    }
    _say(progress, 'engine: detector on a full 768x576 frame')
    results['detector'] = bench_detector(frame, list(opts['detector_sizes']),
                                         opts['iterations'])
    results['backends'] = {}
    crops = None
    for backend in opts['backends']:
        _say(progress, f'engine: {backend} stages on real crops')
        runtime = make_runtime(PipelineConfig(**runtime_choice(backend)))
        if crops is None:
            crops = real_crops(frame, runtime.model_config, max(opts['persons']))
        results['backends'][backend] = bench_backend(runtime, crops, opts)
        results.setdefault('trained', {})[backend] = bool(getattr(runtime, 'trained', False))
        results['strl_depth'] = runtime.model_config.strl_depth
        del runtime
        gc.collect()
    if opts['passes_frames']:
        _say(progress, 'engine: backbone passes per person-frame')
        results['backbone_passes'] = backbone_passes_per_person_frame(100, opts['passes_frames'])
    results['peak_rss_mb'] = peak_rss_mb()
    results['runtime_s'] = time.perf_counter() - started
    return results


def plot_engine(results: dict, path: Path) -> None:
    plt = pyplot()
    backends = list(results['backends'])
    fig, axes = plt.subplots(1, len(backends), figsize=(5.5 * len(backends), 4), squeeze=False)
    for ax, backend in zip(axes[0], backends):
        data = results['backends'][backend]
        persons = sorted(int(n) for n in data)
        bottom = np.zeros(len(persons))
        for stage in ('backbone', 'strl', 'denoise_step_h1', 'decode'):
            values = np.array([data[str(n)]['stages'][stage]['p50_ms'] for n in persons])
            ax.bar([str(n) for n in persons], values, bottom=bottom, label=stage)
            bottom += values
        ax.set_title(f'{backend}: network stages, 1 step, 1 hypothesis (p50)')
        ax.set_xlabel('persons per batch')
        ax.set_ylabel('latency [ms]')
        ax.legend()
    save_figure(fig, path)


def head_description(results: dict) -> str:
    """Which head a part measured: the shipped (trained) one or the seeded random head, and
    its window encoder's depth (the one architecture choice that moves the cost)."""
    trained = results.get('trained', {})
    kind = ('the shipped trained head' if trained and all(trained.values()) else
            'random-head weights (cost does not depend on training)')
    depth = results.get('strl_depth')
    return kind + (f', window encoder of {depth} blocks' if depth else '')


def engine_markdown(results: dict, images: list[str]) -> str:
    info = results['machine']
    hyps = results['options']['hypotheses']
    lines = [
        ENGINE_SECTION,
        '',
        f'Measured {results["date"]} by `benchmarks/run_all.py` (part `engine`) on '
        f'{machine_line(info)} (CPU EP), FP32, {head_description(results)}. '
        f'{results["iterations"]} timed iterations after warm-up; latency in ms. '
        'The whole pose stage for steps x hypotheses is measured through the pipeline on real '
        'frames (section above).',
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
            '| persons | backbone p50/p95 | STRL p50/p95 | '
            + ' | '.join(f'1 denoiser step, H={h}' for h in hyps) + ' | decode |',
            '|---|---|---|' + '---|' * len(hyps) + '---|',
        ]
        for n in sorted(int(k) for k in data):
            s = data[str(n)]['stages']

            def cell(key):
                return f'{s[key]["p50_ms"]:.1f} / {s[key]["p95_ms"]:.1f}'

            lines.append(f'| {n} | {cell("backbone")} | {cell("strl")} | '
                         + ' | '.join(cell(f'denoise_step_h{h}') for h in hyps)
                         + f' | {cell("decode")} |')
    bp = results.get('backbone_passes')
    if bp:
        lines += [
            '',
            f'Backbone passes per person-frame over {bp["frames"]} real vtest frames, '
            f'centred windows of 5: {bp["backbone_passes"]} passes / {bp["person_frames"]} '
            f'person-frames = **{bp["passes_per_person_frame"]:.2f}**.',
        ]
    lines += [
        '',
        f'Peak RSS of the part: {results["peak_rss_mb"]:.0f} MB.',
        '',
    ]
    lines += [f'![pose stage latency]({image})' for image in images]
    lines.append('')
    return '\n'.join(lines)

