#!/usr/bin/env python3
"""The benchmark suite: one command measures everything and writes docs/benchmarks.md + plots.

    python benchmarks/run_all.py --out docs/benchmarks.md        # full run (make bench)
    python benchmarks/run_all.py --quick                          # smoke run (make bench-quick)
    python benchmarks/run_all.py --only node,stress               # some parts, others kept
    python benchmarks/run_all.py --estimate                       # print the estimate, exit

Parts (run in this order; each writes its sections as soon as it is done, so an interrupted run
keeps what it finished):

- ``pipeline``: ``PosePipeline.process()`` on real 640x480 frames with exactly 1, 3 and 6
  people, steps 1/2/4/8 x hypotheses 1/2/4, PyTorch and ONNX Runtime, per stage and end to end
  p50/p95, person-frames/s, the full pipeline vs YOLO11n-pose alone (interleaved, same frames),
  peak RSS, and the issue-5 targets checked (``bench_engine.py``);
- ``engine``: the network stages in isolation on real crops, the detector on full vtest frames,
  backbone passes per person-frame (``bench_engine.py``);
- ``node``: ``diffpose_node`` in its own process end to end vs the same pipeline in-process,
  at the sustainable rate and at 2x (``bench_node.py``);
- ``stress``: renders the soak, fuzz and fault results that the stress scripts record in
  ``outputs/bench/stress.json`` (``common.record_stress_result``); measures nothing itself.

The estimated run time is printed first (full run on the idle 2-core CI machine: ~14 min).
Sections of ``--out`` that this run does not produce are kept as they are. Raw numbers go to
``<json dir>/<part>.json``, plots to ``<out dir>/img/``. ``--quick`` (fewer rounds, K 1/2, H 1/2,
short node run) writes to outputs/bench/quick/ unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_engine  # noqa: E402
import bench_node  # noqa: E402
from common import (  # noqa: E402
    ROOT,
    STRESS_JSON,
    CpuStealMeter,
    cpu_speed_reference,
    fmt_steal,
    machine_info,
    probe_steal_percent,
    split_sections,
    steal_warning,
    write_document,
)

PARTS = ('pipeline', 'engine', 'node', 'stress')
MACHINE_SECTION = '## Machine and run'
STRESS_SECTION = '## Soak, fuzz and faults'
SECTION_ORDER = (
    bench_engine.TARGETS_SECTION,
    MACHINE_SECTION,
    bench_engine.PIPELINE_SECTION,
    bench_engine.ENGINE_SECTION,
    bench_node.SECTION,
    STRESS_SECTION,
)
PLACEHOLDER = {
    bench_engine.TARGETS_SECTION: 'pipeline',
    MACHINE_SECTION: 'pipeline,engine,node',
    bench_engine.PIPELINE_SECTION: 'pipeline',
    bench_engine.ENGINE_SECTION: 'engine',
    bench_node.SECTION: 'node',
}


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(',') if v.strip())


def str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(',') if v.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='The benchmark suite: writes docs/benchmarks.md and PNG plots.',
        epilog='Example: python benchmarks/run_all.py --out docs/benchmarks.md',
    )
    parser.add_argument('--out', help='Markdown report (default docs/benchmarks.md; with '
                        '--quick outputs/bench/quick/benchmarks.md)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 3 rounds, K 1/2, H 1/2, short node run (~3 min)')
    parser.add_argument('--only', default=','.join(PARTS),
                        help=f'comma-separated parts to run, of {",".join(PARTS)} (default all)')
    parser.add_argument('--json-dir', help='raw results (default outputs/bench, quick: the '
                        'directory of --out)')
    parser.add_argument('--stress-json', default=str(STRESS_JSON),
                        help='results of the soak, fuzz and fault scripts (rendered if present)')
    parser.add_argument('--estimate', action='store_true',
                        help='print the estimated run time and exit')
    grid = parser.add_argument_group('pipeline and engine parts')
    grid.add_argument('--backends', type=str_list, help='default onnxruntime,torch')
    grid.add_argument('--persons', type=int_list, help='default 1,3,6')
    grid.add_argument('--steps', type=int_list, help='default 1,2,4,8')
    grid.add_argument('--hypotheses', type=int_list, help='default 1,2,4')
    grid.add_argument('--rounds', type=int, help='pipeline: timed samples per cell (default 30)')
    grid.add_argument('--warmup-rounds', type=int, help='pipeline: untimed rounds (default 1)')
    grid.add_argument('--iterations', type=int, help='engine: timed calls per stage (default 20)')
    grid.add_argument('--detector-sizes', type=int_list, help='engine: default 640,1280')
    grid.add_argument('--passes-frames', type=int,
                      help='engine: vtest frames for backbone passes per person-frame (0: skip)')
    args = parser.parse_args(argv)
    args.parts = str_list(args.only)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f'unknown part(s) {unknown}; choose from {",".join(PARTS)}')
    if args.out is None:
        args.out = ('outputs/bench/quick/benchmarks.md' if args.quick else 'docs/benchmarks.md')
    if args.json_dir is None:
        args.json_dir = str(Path(args.out).parent) if args.quick else 'outputs/bench'
    return args


def part_options(args: argparse.Namespace, quick: bool | None = None) -> dict[str, dict]:
    quick = args.quick if quick is None else quick
    return {
        'pipeline': bench_engine.pipeline_options(
            quick, rounds=args.rounds, warmup_rounds=args.warmup_rounds, backends=args.backends,
            persons=args.persons, steps=args.steps, hypotheses=args.hypotheses),
        'engine': bench_engine.engine_options(
            quick, iterations=args.iterations, backends=args.backends, persons=args.persons,
            hypotheses=args.hypotheses, detector_sizes=args.detector_sizes,
            passes_frames=args.passes_frames),
        'node': bench_node.node_options(quick),
    }


def estimates_s(options: dict[str, dict], parts: tuple[str, ...]) -> dict[str, float]:
    functions = {
        'pipeline': lambda: bench_engine.estimate_pipeline_s(options['pipeline']),
        'engine': lambda: bench_engine.estimate_engine_s(options['engine']),
        'node': lambda: bench_node.estimate_node_s(options['node']),
        'stress': lambda: 0.0,
    }
    return {part: functions[part]() for part in parts}


def full_run_estimate_s() -> dict[str, float]:
    """Per part, the estimated duration of a full run (default settings, idle machine)."""
    return estimates_s(part_options(parse_args([])), PARTS)


def print_estimate(args: argparse.Namespace) -> None:
    full = full_run_estimate_s()
    this = estimates_s(part_options(args), args.parts)
    print(f'Estimated full-run time (all parts, default settings, idle 2-core machine): '
          f'{sum(full.values()) / 60:.1f} min ('
          + ', '.join(f'{p} {s / 60:.1f}' for p, s in full.items() if s) + ')', flush=True)
    print(f'Estimated time of this run ({",".join(args.parts)}'
          f'{", quick" if args.quick else ""}): {sum(this.values()) / 60:.1f} min; on a busy '
          'machine it takes longer.', flush=True)


# ---------------------------------------------------------------------------- sections
def placeholder(heading: str) -> str:
    parts = PLACEHOLDER.get(heading, '')
    text = (f'{heading}\n\n_Not measured yet: run `python benchmarks/run_all.py --only {parts}` '
            '(or `make bench` for everything)._\n')
    if heading == bench_engine.TARGETS_SECTION:
        backend, n, k, h = bench_engine.TARGET_CELL
        text += (f'\nTargets (issue 5), on this CPU with {backend}, {n} persons, {k} step, {h} '
                 f'hypothesis, 640x480: >= {bench_engine.TARGET_MIN_FPS:g} frames/s end to end '
                 f'and <= {bench_engine.TARGET_MAX_YOLO_RATIO:g}x the latency of YOLO11n-pose '
                 'alone on the same frames.\n')
    return text


def preamble() -> str:
    return '\n'.join([
        '# Benchmarks',
        '',
        'Written by the benchmark suite, `python benchmarks/run_all.py --out docs/benchmarks.md` '
        f'(`make bench`; the run time is estimated and printed first: '
        f'~{sum(full_run_estimate_s().values()) / 60:.0f} min on the idle 2-core CI machine). '
        '`--only pipeline,engine,node,stress` re-measures some parts and keeps the '
        'other sections as they are; `make bench-quick` is a smoke run into outputs/bench/quick/. '
        'Raw numbers: outputs/bench/<part>.json. Each section states when, how and on what it '
        'was measured. The VM\'s speed varies from day to day (other guests take CPU time, '
        '"steal", or the host is slower), so a run records the steal before and during each '
        'part and a CPU speed reference (numpy matmul GFLOP/s, Python loop rate), and warns '
        'at >= 10 % steal: compare figures of different days only with those in view.',
        '',
        'Sections: ' + ', '.join(f'[{h[3:]}](#{anchor(h)})' for h in SECTION_ORDER) + '.',
        '',
    ])


def anchor(heading: str) -> str:
    text = heading[3:].strip().lower()
    return ''.join(c for c in text if c.isalnum() or c in ' -').replace(' ', '-')


def speed_reference_text(reference: dict[str, float] | None) -> str:
    if not reference:
        return '-'
    return (f'numpy float32 1024x1024 matmul {reference["matmul_gflops"]:.0f} GFLOP/s; '
            f'Python loop {reference["python_loop_mops"]:.1f} M iterations/s (one core)')


def machine_markdown(info: dict[str, Any], runs: dict[str, dict], command: str,
                     started: str) -> str:
    def version(key: str) -> str:
        return str(info.get(key, '-'))

    lines = [
        MACHINE_SECTION,
        '',
        f'Last suite run {started}: `{command}`; parts measured: {", ".join(runs)}. Sections '
        'of other parts come from earlier runs and state their own date and machine.',
        '',
        '| | |',
        '|---|---|',
        f'| CPU | {info["cpu"]}, {info["logical_cores"]} logical cores '
        f'({info.get("physical_cores", "?")} physical) |',
        f'| RAM | {info.get("ram_gb", float("nan")):.1f} GB |',
        f'| OS | {info.get("os", "?")}, kernel {info.get("kernel", "?")} |',
        f'| Python | {info["python"]} |',
        f'| numpy / OpenCV | {version("numpy")} / {version("opencv")} |',
        f'| torch | {version("torch")} ({version("torch_threads")} intra-op threads) |',
        f'| ONNX Runtime | {version("onnxruntime")}; available providers: '
        f'{", ".join(info.get("ort_available_providers", [])) or "-"} |',
        f'| ultralytics | {version("ultralytics")} |',
        f'| rclpy / Fast DDS (pip wheels) | {version("ros-rclpy")} / {version("ros-fastdds")} |',
        f'| load average (1, 5, 15 min) at the start / end | '
        f'{", ".join(str(v) for v in info["load_average"])} / '
        f'{", ".join(f"{v:.2f}" for v in os.getloadavg())} |',
        f'| CPU steal (time taken by other guests of the host) before the run | '
        f'{fmt_steal(info.get("steal_percent_before"))} (2-s probe) |',
        f'| CPU speed reference before the run (compare runs of other days with it) | '
        f'{speed_reference_text(info.get("speed_reference"))} |',
        '',
        '| part | run time | peak RSS | providers in use | CPU steal during the part |',
        '|---|---|---|---|---|',
    ]
    for part, run in runs.items():
        lines.append(f'| {part} | {run["runtime_s"] / 60:.1f} min | {run["peak_rss"]} | '
                     f'{run.get("providers", "-")} | {fmt_steal(run.get("steal_percent"))} |')
    lines.append('')
    return '\n'.join(lines)


def stress_markdown(path: Path) -> str:
    path = Path(path)
    lines = [STRESS_SECTION, '']
    try:
        rel = path.resolve().relative_to(ROOT)
    except ValueError:
        rel = path
    if not path.exists():
        lines += [
            f'_No results yet._ This section renders `{rel}`, which `python '
            'benchmarks/stress.py` (issue 5, part 4; `--scenarios soak` etc. for single runs) '
            'writes, one entry per run (any script can add one with '
            '`benchmarks/common.py:record_stress_result(name, result)`): fuzz (>= 1,000 '
            'malformed image messages of every kind, property-based fuzzing of the image '
            'converter), soak (>= 10 min of the sample bag looped at 30 Hz: RSS slope after '
            'warm-up, live tracks and buffered frames, latency drift), overload at 2x, the image '
            'publisher killed and restarted, deactivate/activate under load, corrupt and missing '
            'model files. Then `python benchmarks/run_all.py --only stress` renders them here.',
            '',
            'Targets (issue 5): zero crashes; RSS slope <= 1 MB/min after warm-up; live tracks '
            'and buffers bounded; under 2x input, p95 latency within 2x of its sustainable-rate '
            'value and not growing.',
            '',
        ]
        return '\n'.join(lines)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return '\n'.join(lines + [f'_`{rel}` is unreadable: {exc}._', ''])
    results = data.get('results', {})
    if isinstance(results, list):  # also accept a list of results with a 'name' each
        results = {r.get('name', f'run {i + 1}'): r for i, r in enumerate(results)}
    checks_all = [c for r in results.values() for c in r.get('checks', [])]
    met = sum(bool(c.get('met')) for c in checks_all)
    lines += [
        f'Rendered from `{rel}` ({len(results)} run(s); {met} of {len(checks_all)} checks '
        'met), written by `benchmarks/stress.py` (or another script through '
        '`common.record_stress_result`). Runs marked *quick* are smoke runs, not the '
        'issue\'s durations.',
        '',
    ]
    criteria = data.get('stress_criteria')
    if isinstance(criteria, dict) and criteria:
        lines += ['Criteria (issue 5): ' + '; '.join(str(v) for v in criteria.values()) + '.',
                  '']
    lines += [
        '| run | date | duration | summary | checks met | passed |',
        '|---|---|---|---|---|---|',
    ]
    for name, r in results.items():
        checks = r.get('checks', [])
        duration = f'{r["duration_s"] / 60:.1f} min' if r.get('duration_s') else '-'
        passed = '-' if 'pass' not in r else ('yes' if r['pass'] else '**no**')
        lines.append(f'| {name}{" (*quick*)" if r.get("quick") else ""} | '
                     f'{r.get("date", "-")} | {duration} | {r.get("summary", "-")} | '
                     f'{sum(bool(c.get("met")) for c in checks)} / {len(checks)} | {passed} |')
    for name, r in results.items():
        lines += ['', f'### {name}', '']
        if r.get('script') or r.get('command'):
            lines += [f'Produced by `{r.get("command") or r.get("script")}`.', '']
        if r.get('checks'):
            lines += ['| check | measured | target | met |', '|---|---|---|---|']
            for c in r['checks']:
                lines.append(f'| {c.get("what", "?")} | {_value(c.get("value"))} | '
                             f'{c.get("target", "-")} | {"met" if c.get("met") else "MISSED"} |')
            lines.append('')
        if r.get('metrics'):
            lines += ['| metric | value |', '|---|---|']
            lines += [f'| {k} | {_value(v)} |' for k, v in r['metrics'].items()]
            lines.append('')
        for image in r.get('images', []):
            lines.append(f'![{Path(image).stem}]({_relative_image(image)})')
    lines.append('')
    return '\n'.join(lines)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.3g}'
    return '-' if value is None else str(value)


def _relative_image(image: str) -> str:
    """A repository-relative image path as seen from docs/."""
    return image[len('docs/'):] if image.startswith('docs/') else f'../{image}'


def write_report(out: Path, new_sections: dict[str, str]) -> None:
    """Regenerate ``out``: the suite's preamble, then every section in SECTION_ORDER (new,
    else kept from the existing file, else a placeholder), then unknown kept sections."""
    existing: dict[str, str] = {}
    if out.exists():
        _, existing = split_sections(out.read_text())
    sections = []
    for heading in SECTION_ORDER:
        sections.append(new_sections.get(heading) or existing.get(heading)
                        or placeholder(heading))
    sections += [text for heading, text in existing.items() if heading not in SECTION_ORDER]
    write_document(out, preamble(), sections)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = 'python benchmarks/run_all.py ' + ' '.join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print_estimate(args)
    if args.estimate:
        return 0
    out = Path(args.out)
    json_dir = Path(args.json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    image_dir = out.parent / 'img'
    if 'node' in args.parts:  # the ROS environment must be set before anything loads rclpy
        run_dir = Path(tempfile.mkdtemp(prefix='bench-node-'))
        bench_node.prepare(run_dir)
    options = part_options(args)
    started = time.strftime('%Y-%m-%d %H:%M')
    info = machine_info()
    info['steal_percent_before'] = probe_steal_percent()
    info['speed_reference'] = cpu_speed_reference()
    warning = steal_warning(info['steal_percent_before'])
    if warning:
        print(warning, flush=True)
    new_sections: dict[str, str] = {}
    runs: dict[str, dict] = {}
    exit_code = 0
    from tqdm import tqdm

    progress = tqdm(total=len(args.parts), desc='benchmark suite', unit='part', position=0)

    def rel(path: Path) -> str:
        return str(path.relative_to(out.parent))

    for part in args.parts:
        progress.set_postfix_str(part)
        t0 = time.perf_counter()
        steal = CpuStealMeter()
        results: dict[str, Any] | None = None
        if part == 'pipeline':
            results = bench_engine.run_pipeline(options['pipeline'], progress)
            images = [image_dir / 'bench_pipeline_stages.png',
                      image_dir / 'bench_pipeline_grid.png']
            bench_engine.plot_pipeline(results, *images)
            new_sections[bench_engine.PIPELINE_SECTION] = bench_engine.pipeline_markdown(
                results, [rel(p) for p in images])
            new_sections[bench_engine.TARGETS_SECTION] = bench_engine.targets_markdown(results)
            runs[part] = {'peak_rss': f'{results["memory"]["peak_rss_mb"]:.0f} MB (this '
                                      'process: detector + both runtimes)',
                          'providers': '; '.join(f'{b}: {", ".join(p)}' for b, p in
                                                 results['providers'].items())}
            for target in results['targets']:
                tqdm.write(f'target: {target["what"]}: {target["value"]:.2f} '
                           f'(required {target["target"]}: '
                           f'{"met" if target["met"] else "MISSED"})')
        elif part == 'engine':
            results = bench_engine.run_engine(options['engine'], progress)
            image = image_dir / 'bench_engine_stages.png'
            bench_engine.plot_engine(results, image)
            new_sections[bench_engine.ENGINE_SECTION] = bench_engine.engine_markdown(
                results, [rel(image)])
            runs[part] = {'peak_rss': f'{results["peak_rss_mb"]:.0f} MB (this process)'}
        elif part == 'node':
            results = bench_node.run_node(options['node'])
            images = bench_node.node_images(out)
            bench_node.plot_node(results, images)
            new_sections[bench_node.SECTION] = bench_node.markdown(
                results, [rel(p) for p in images])
            runs[part] = {'peak_rss': f'{results.get("node_peak_rss_mb", float("nan")):.0f} '
                                      'MB (node process)',
                          'providers': 'onnxruntime (node parameters)'}
            exit_code |= int(results.get('node_exit_code', 0) != 0)
        elif part == 'stress':
            new_sections[STRESS_SECTION] = stress_markdown(Path(args.stress_json))
        if results is not None:
            runs[part]['runtime_s'] = time.perf_counter() - t0
            runs[part]['steal_percent'] = results['cpu_steal_percent'] = steal.percent()
            warning = steal_warning(results['cpu_steal_percent'])
            if warning:
                tqdm.write(f'{part}: {warning}')
            (json_dir / f'{part}.json').write_text(json.dumps(results, indent=1, default=str))
        if runs:
            new_sections[MACHINE_SECTION] = machine_markdown(info, runs, command, started)
        write_report(out, new_sections)  # after every part: an interrupted run keeps it
        gc.collect()  # the next part's peak RSS starts from what this one really keeps
        progress.update(1)
    progress.close()
    print(f'wrote {out} ({", ".join(args.parts)}); raw numbers in {json_dir}/', flush=True)
    return exit_code


if __name__ == '__main__':
    sys.exit(main())
