"""Accuracy of the int8 ONNX graphs against float32 on the same persons (paired).

Runs the pipeline (1 step, the node's defaults otherwise) over LSPET val (the tuning split) and
dev_gt (COCO + AIC photos) once per ``quantization`` mode, with one cached detector so every
mode sees the same boxes, and reports each mode's limb PCK@0.1 and COCO OKS AP, and the paired
difference to float32 with a 95 % bootstrap interval over persons. The video checks (Bonn,
vtest) are `diffpose-evaluate bonn|video --quantization MODE`.

    .venv/bin/python scripts/compare_quantization.py [--modes none int8_encoder int8]
        [--max-images N] [--out docs/results/quantization_accuracy.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros import evaluation as E
    from diffpose_ros.cli.evaluate import DEV_GT, LSPET_GT, lspet_validation_set
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.runtime.factory import make_runtime

    gt_sets = {'lspet_val': lspet_validation_set(LSPET_GT, args.max_images)}
    for name in ('coco', 'aic'):
        gt_sets[name] = E.load_gt_set(DEV_GT / name / f'test_{name}.json')
    detector = E.CachingDetector(UltralyticsPoseDetector.from_config(PipelineConfig()))
    scores: dict[str, dict[str, Any]] = {}
    rows = []
    for mode in args.modes:
        config = PipelineConfig(backend='onnxruntime', quantization=mode,
                                intra_op_threads=args.intra_op_threads)
        runtime = make_runtime(config, weights_path=args.weights)
        for set_name, gt_set in gt_sets.items():
            start = time.perf_counter()
            ours = E.run_images(runtime, detector, config, gt_set, progress=False).ours_results
            score = E.score_predictions(gt_set.images, ours, gt_set.layout)
            scores.setdefault(set_name, {})[mode] = score
            row = {'gt': set_name, 'quantization': mode,
                   'limb_pck_percent': score.summary['limb_pck']['pck_percent'],
                   'oks_ap_percent': (score.summary['oks_ap_percent'] or {}).get('AP'),
                   'num_persons': len(score.pck.matched),
                   'elapsed_s': round(time.perf_counter() - start, 1)}
            if mode != args.modes[0]:
                diff = E.paired_difference(score, scores[set_name][args.modes[0]])
                row[f'minus_{args.modes[0]}_points'] = diff['points']
                row[f'minus_{args.modes[0]}_ci95'] = diff['ci95_points']
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {'what': 'limb PCK@0.1 and OKS AP per quantization mode, same detector boxes; paired '
                    f'difference to {args.modes[0]!r} (bootstrap over persons)',
            'steps': 1, 'hypotheses': 1, 'weights': args.weights or 'shipped', 'rows': rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modes', nargs='+', default=['none', 'int8_encoder', 'int8'],
                        help='quantization modes; the first is the reference')
    parser.add_argument('--weights', default=None, help='DiffPose weights (default: shipped)')
    parser.add_argument('--max-images', type=int, default=0, help='LSPET val images, 0 = all')
    parser.add_argument('--intra-op-threads', type=int, default=0)
    parser.add_argument('--out', type=Path,
                        default=ROOT / 'docs' / 'results' / 'quantization_accuracy.json')
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
