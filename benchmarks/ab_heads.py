#!/usr/bin/env python3
"""Paired speed comparison of two DiffPose heads (e.g. a 4-block and a 2-block window encoder)
in the full pipeline on the benchmark's real 640x480 frames, with YOLO11n-pose alone timed in
the same rounds.

Every round times, in a random order, YOLO alone and each head at 1 and 2 steps on the same
frame, so drift of a shared or noisy machine hits every system alike. Reported per head:
pipeline p50 / YOLO p50 (issue 10's <= 1.85x at 3 persons, 1 step), the 1-step pose stage and
what the second step adds as a share of it (issue 10's <= 15 %).

    .venv/bin/python benchmarks/ab_heads.py --a models/diffpose_yolo11n_coco17.safetensors \
        --b outputs/ship/diffpose_yolo11n_coco17.safetensors --out outputs/bench/ab_heads.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import DETECTOR_IMGSZ, POSE_STAGES, runtime_choice  # noqa: E402
from common import (  # noqa: E402
    SCENES,
    PingPong,
    machine_info,
    paired_ratio,
    ratio,
    scene_frames,
    stats,
)


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.pipeline import PosePipeline
    from diffpose_ros.runtime.factory import make_runtime

    detector = UltralyticsPoseDetector(imgsz=DETECTOR_IMGSZ)
    detector.warmup()
    frames = scene_frames(SCENES[args.persons])
    config = PipelineConfig(**runtime_choice(args.runtime), detector_imgsz=DETECTOR_IMGSZ)
    heads = {'a': args.a, 'b': args.b}
    pipelines = {}
    for name, path in heads.items():
        runtime = make_runtime(config, weights_path=path)
        pipelines[name] = PosePipeline(config, runtime, detector)
    tasks = [('yolo', 0)] + [(name, k) for name in heads for k in (1, 2)]
    e2e = {task: [] for task in tasks}
    pose = {task: [] for task in tasks if task[0] != 'yolo'}
    stamps = dict.fromkeys(heads, 0)
    order = np.random.default_rng(0)
    sequence = PingPong(len(frames))
    for round_index in tqdm(range(args.warmup_rounds + args.rounds), desc='rounds'):
        frame = frames[sequence.take(1)[0]]
        for task_index in order.permutation(len(tasks)):
            name, steps = tasks[task_index]
            start = time.perf_counter()
            if name == 'yolo':
                detector.detect(frame)
                result = None
            else:
                pipelines[name].set_sampling(steps=steps, hypotheses=1)
                stamps[name] += 33_333_333
                result = pipelines[name].process(frame, stamps[name])
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            if round_index < args.warmup_rounds:
                continue
            e2e[name, steps].append(elapsed_ms)
            if result is not None:
                pose[name, steps].append(sum(result.timings_ms.get(s, 0.0) for s in POSE_STAGES))
    yolo = e2e['yolo', 0]
    yolo_stats = stats(yolo)
    report = {'date': time.strftime('%Y-%m-%d %H:%M'), 'machine': machine_info(),
              'persons': args.persons, 'rounds': args.rounds, 'runtime': args.runtime,
              'yolo_ms': yolo_stats, 'heads': {}}
    for name, path in heads.items():
        pipeline1 = stats(e2e[name, 1])
        pose1, pose2 = stats(pose[name, 1]), stats(pose[name, 2])
        report['heads'][name] = {
            'weights': str(path),
            'pipeline_ms_1_step': pipeline1,
            'pipeline_over_yolo_p50': ratio(pipeline1['p50'], yolo_stats['p50']),
            'pipeline_over_yolo_paired': paired_ratio(e2e[name, 1], yolo),
            'pose_stage_ms_1_step': pose1,
            'pose_stage_ms_2_steps': pose2,
            'extra_step_share_of_pose_stage': ratio(pose2['p50'] - pose1['p50'], pose1['p50']),
            'pose_person_frames_per_s': ratio(args.persons * 1000.0, pose1['p50']),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--a', required=True, help='first head (.safetensors + its .json)')
    parser.add_argument('--b', required=True, help='second head')
    parser.add_argument('--persons', type=int, default=3, choices=sorted(SCENES))
    parser.add_argument('--runtime', default='onnxruntime+int8_encoder')
    parser.add_argument('--rounds', type=int, default=40)
    parser.add_argument('--warmup-rounds', type=int, default=2)
    parser.add_argument('--out', type=Path, default=Path('outputs/bench/ab_heads.json'))
    args = parser.parse_args()
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"YOLO alone p50 {report['yolo_ms']['p50']:.1f} ms ({args.persons} persons)")
    for name, head in report['heads'].items():
        print(f"{name}: {head['weights']}\n   pipeline / YOLO p50 "
              f"{head['pipeline_over_yolo_p50']:.3f}x"
              f" (paired {head['pipeline_over_yolo_paired']:.3f}x);"
              f" 1-step pose stage {head['pose_stage_ms_1_step']['p50']:.1f} ms"
              f" ({head['pose_person_frames_per_s']:.1f} person-frames/s); a second step"
              f" +{100 * head['extra_step_share_of_pose_stage']:.1f} %")
    print(f'-> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
