"""Smoke tests of the benchmark suite's pieces (benchmarks/run_all.py); timings are not tested.

The frame builder gives real 640x480 frames with exactly 1, 3 and 6 people at the detector's
imgsz; the statistics helpers give hand-computed values; the report keeps, orders and fills
its sections; a 2-frame run of the suite writes a report with the expected sections.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))

import bench_engine  # noqa: E402
import common  # noqa: E402
import run_all  # noqa: E402


def test_percentiles_stats_and_ratios_on_hand_computed_inputs():
    # linear interpolation: p95 of 1..5 sits at rank 0.95 * 4 = 3.8 -> 4 + 0.8 * (5 - 4)
    assert common.percentiles([5, 1, 4, 2, 3]) == pytest.approx((3.0, 4.8))
    assert all(math.isnan(v) for v in common.percentiles([]))
    s = common.stats([10, 20, 30, 40])
    assert s['n'] == 4 and s['mean'] == 25 and s['min'] == 10 and s['max'] == 40
    assert s['p50'] == pytest.approx(25.0)
    assert s['p95'] == pytest.approx(38.5)  # rank 2.85 -> 30 + 0.85 * 10
    assert common.stats([]) == {'n': 0}
    assert common.ratio(3.0, 2.0) == 1.5
    assert math.isnan(common.ratio(1.0, 0.0))
    # per-round ratios 2, 3, 1.5 -> median 2
    assert common.paired_ratio([100, 300, 90], [50, 100, 60]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        common.paired_ratio([1, 2], [1])
    assert common.linear_slope([1, 2, 4, 8], [10, 12, 16, 24]) == pytest.approx(2.0)


def test_ping_pong_order_and_cost_model():
    assert common.PingPong(4).take(9) == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert common.PingPong(1).take(3) == [0, 0, 0]
    # detector 62 + tracking/crop 2 + ORT 7 + 12.5 * 3 + 1 * (1.5 + 3.0 * 3 * 1)
    assert bench_engine.estimate_frame_ms('onnxruntime', 3, 1, 1) == pytest.approx(119.0)
    full = run_all.estimates_s(run_all.part_options(run_all.parse_args([])), run_all.PARTS)
    assert sum(full.values()) < 25 * 60  # the brief: a full run under 25 minutes


def test_peak_rss_is_reported_and_resettable():
    assert common.rss_mb() > 10
    assert common.peak_rss_mb() >= common.rss_mb() * 0.9
    if common.reset_peak_rss():
        assert common.peak_rss_mb() <= common.rss_mb() + 50


def test_sections_are_replaced_kept_and_appended(tmp_path):
    doc = tmp_path / 'b.md'
    doc.write_text('# Benchmarks\n\nintro\n\n## A\n\nold a\n\n### sub of A\n\nx\n\n## B\n\nb\n')
    common.write_section(doc, '## A', '## A\n\nnew a\n')
    common.write_section(doc, '## C', '## C\n\nc\n')
    preamble, sections = common.split_sections(doc.read_text())
    assert preamble.startswith('# Benchmarks') and 'intro' in preamble
    assert list(sections) == ['## A', '## B', '## C']
    assert 'new a' in sections['## A'] and 'sub of A' not in sections['## A']
    assert sections['## B'] == '## B\n\nb\n'


def test_report_orders_sections_keeps_old_ones_and_fills_placeholders(tmp_path):
    doc = tmp_path / 'b.md'
    doc.write_text('# Old title\n\n## ROS node end to end (issue 3)\n\nnode figures\n\n'
                   '## Extra\n\nkept\n')
    run_all.write_report(doc, {run_all.STRESS_SECTION: run_all.stress_markdown(
        tmp_path / 'missing.json')})
    _, sections = common.split_sections(doc.read_text())
    assert list(sections) == list(run_all.SECTION_ORDER) + ['## Extra']
    assert 'node figures' in sections['## ROS node end to end (issue 3)']
    assert '--only pipeline' in sections[bench_engine.PIPELINE_SECTION]
    stress = sections[run_all.STRESS_SECTION]
    assert 'No results yet' in stress and 'record_stress_result' in stress


def test_stress_results_recorded_by_a_script_are_rendered(tmp_path):
    path = tmp_path / 'stress.json'
    common.record_stress_result('fuzz', {
        'summary': '1,200 malformed images, 0 crashes', 'script': 'fuzz.py',
        'metrics': {'messages': 1200, 'crashes': 0},
        'checks': [{'what': 'crashes', 'value': 0, 'target': '0', 'met': True}]}, path)
    common.record_stress_result('soak', {
        'summary': '10 min at 30 Hz', 'duration_s': 600.0,
        'checks': [{'what': 'RSS slope', 'value': 1.5, 'target': '<= 1 MB/min',
                    'met': False}]}, path)
    assert set(json.loads(path.read_text())['results']) == {'fuzz', 'soak'}
    text = run_all.stress_markdown(path)
    assert '1 of 2 checks met' in text
    assert '### fuzz' in text and '### soak' in text and 'MISSED' in text
    assert '| crashes | 0 |' in text and '10.0 min' in text


@pytest.mark.slow
def test_cpu_speed_reference_is_a_plausible_measurement():
    reference = common.cpu_speed_reference(seconds=0.05)
    assert 0.1 < reference['matmul_gflops'] < 1e5
    assert 0.1 < reference['python_loop_mops'] < 1e4


def test_cpu_steal_share_of_all_cpu_time_and_its_warning():
    from collections import namedtuple

    Times = namedtuple('Times', 'user nice system idle iowait irq softirq steal guest')
    readings = iter([Times(100, 0, 10, 500, 5, 0, 1, 20, 7),    # start
                     Times(160, 0, 20, 530, 5, 0, 1, 60, 50)])  # +60 +10 +30 busy/idle, +40 steal
    meter = common.CpuStealMeter(lambda: next(readings))
    steal = meter.percent()
    assert steal == pytest.approx(100 * 40 / (60 + 10 + 30 + 40))  # guest time is inside user
    assert 'steal' in common.steal_warning(steal)
    assert common.steal_warning(common.STEAL_WARN_PERCENT - 0.1) is None
    assert common.steal_warning(None) is None and common.fmt_steal(None) == 'not reported'
    no_steal = namedtuple('NoSteal', 'user system idle')
    assert common.CpuStealMeter(lambda: no_steal(1, 1, 1)).percent() is None
    live = common.CpuStealMeter()                                 # this machine: a real share
    sum(i * i for i in range(200_000))
    value = live.percent()
    assert value is None or 0.0 <= value <= 100.0


def test_scene_frames_hold_exactly_the_advertised_number_of_people():
    from diffpose_ros.detection import UltralyticsPoseDetector

    detector = UltralyticsPoseDetector(imgsz=bench_engine.DETECTOR_IMGSZ)
    for persons, scene in common.SCENES.items():
        frames = common.scene_frames(scene)
        assert len(frames) == scene.num_frames
        for index, frame in enumerate(frames):
            assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
            found = len(detector.detect(frame))
            assert found == persons, (
                f'{scene.describe()}: frame {scene.first_frame + index} has {found} people')


@pytest.mark.slow
def test_two_frame_run_of_the_suite_writes_the_expected_sections(tmp_path):
    out = tmp_path / 'benchmarks.md'
    out.write_text('# Benchmarks\n\n## ROS node end to end (issue 3)\n\nkept node figures\n')
    command = [sys.executable, str(ROOT / 'benchmarks' / 'run_all.py'),
               '--only', 'pipeline,engine,stress', '--out', str(out),
               '--json-dir', str(tmp_path), '--stress-json', str(tmp_path / 'stress.json'),
               '--backends', 'onnxruntime+int8_encoder,onnxruntime,torch', '--persons', '1,3',
               '--steps', '1,2',
               '--hypotheses', '1', '--rounds', '2', '--warmup-rounds', '0',
               '--iterations', '1', '--detector-sizes', '640', '--passes-frames', '2']
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Estimated full-run time' in proc.stdout
    _, sections = common.split_sections(out.read_text())
    assert list(sections) == list(run_all.SECTION_ORDER)
    assert 'kept node figures' in sections['## ROS node end to end (issue 3)']
    targets = sections[bench_engine.TARGETS_SECTION]
    assert targets.count('| end-to-end frames/s') == 1 and 'YOLO11n-pose alone' in targets
    pipeline = sections[bench_engine.PIPELINE_SECTION]
    for expected in ('exactly 1 in all', 'exactly 3 in all', '| 3 | 2 | 1 |',
                     'torch / onnxruntime', 'Full pipeline vs YOLO11n-pose alone',
                     'one extra denoising step', 'peak'):
        assert expected in pipeline, expected
    assert '1 denoiser step, H=1' in sections[bench_engine.ENGINE_SECTION]
    assert 'No results yet' in sections[run_all.STRESS_SECTION]
    machine = sections[run_all.MACHINE_SECTION]
    assert 'AMD' in machine or 'CPU' in machine
    assert 'CPU steal' in machine and machine.count(' %') + machine.count('not reported') >= 3
    assert 'GFLOP/s' in machine and 'M iterations/s' in machine
    for image in ('bench_pipeline_stages.png', 'bench_pipeline_grid.png',
                  'bench_engine_stages.png'):
        assert (tmp_path / 'img' / image).stat().st_size > 1000
    results = json.loads((tmp_path / 'pipeline.json').read_text())
    steal = results['cpu_steal_percent']
    assert steal is None or 0.0 <= steal <= 100.0
    cell = results['cells']['onnxruntime/3/1/1']
    assert cell['e2e']['n'] == 2 and cell['persons_mean'] == 3.0
    assert results['cells']['onnxruntime+int8_encoder/3/1/1']['e2e']['n'] == 2  # the target
    assert set(cell['stages']) == set(bench_engine.PIPELINE_STAGES)


def _local_imports(path: Path, local: set[str]) -> set[str]:
    """Benchmark modules imported anywhere in ``path`` (top level, functions, __main__)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split('.')[0])
    return names & local


def test_benchmark_modules_import_no_circle():
    folder = ROOT / 'benchmarks'
    modules = {path.stem: path for path in folder.glob('*.py')}
    graph = {name: _local_imports(path, set(modules)) - {name} for name, path in modules.items()}
    assert graph['run_all'] >= {'bench_engine', 'bench_node', 'common'}    # the graph is seen

    def cycle_from(name: str, stack: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in stack:
            return stack[stack.index(name):] + (name,)
        for imported in sorted(graph[name]):
            found = cycle_from(imported, stack + (name,))
            if found:
                return found
        return None

    cycles = [c for name in sorted(graph) if (c := cycle_from(name, ()))]
    assert not cycles, f'import circle(s) in benchmarks/: {[" -> ".join(c) for c in cycles]}'
