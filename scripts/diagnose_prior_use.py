"""Does the DiffPose head use its input (the noised detector prior)? An oracle test on LSPET val.

Issue 10 asks that zeroing the noisy heatmap cost >= 3 points; the shipped model loses only
~1.3, and its accuracy is flat over t_start 50-400. This separates "ignores x_t" from "x_t
carries nothing better than the image": the same persons, the same detector boxes, with the
prior's keypoints replaced by the ground truth (labelled joints; the rest stay the detector's).
A head that reads x_t moves towards the oracle, most at small t_start; one that ignores it
scores as with YOLO's prior. Also scored: the prior itself (``prior``, what the head was given).

    .venv/bin/python scripts/diagnose_prior_use.py [--weights W] [--t-starts 50 200]
        [--max-images N] [--out docs/results/prior_use_diagnostic.json]

Tuning split only (LSPET val, im09001-im10000): a diagnosis, nothing is chosen from it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = np.maximum(a[:2], b[:2])
    x1, y1 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


class OracleDetector:
    """The detector's boxes with each matched person's labelled joints set to the ground truth
    (confidence 1); ``gt_persons`` is set per image by the caller."""

    def __init__(self, detector: Any):
        self.detector = detector
        self.gt_persons: list[Any] = []
        self.imgsz = getattr(detector, 'imgsz', None)

    def __getattr__(self, name: str) -> Any:
        if name == 'detector':
            raise AttributeError(name)
        return getattr(self.detector, name)

    def detect(self, image_bgr: np.ndarray) -> list[Any]:
        detections = self.detector.detect(image_bgr)
        used: set[int] = set()
        for detection in detections:
            if detection.keypoints is None:
                continue
            best, best_iou = None, 0.3
            for index, person in enumerate(self.gt_persons):
                if index in used:
                    continue
                x, y, w, h = person.box_xywh
                iou = _iou_xyxy(np.asarray(detection.box_xyxy, np.float64),
                                np.array([x, y, x + w, y + h]))
                if iou > best_iou:
                    best, best_iou = index, iou
            if best is None:
                continue
            used.add(best)
            gt = self.gt_persons[best].keypoints
            labelled = gt[:, 2] > 0
            detection.keypoints[labelled, :2] = gt[labelled, :2]
            detection.keypoints[labelled, 2] = 1.0
        return detections


def run(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros import evaluation as E
    from diffpose_ros.cli.evaluate import LSPET_GT, lspet_validation_set
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.runtime.factory import make_runtime

    gt_set = lspet_validation_set(LSPET_GT, args.max_images)
    base = PipelineConfig(intra_op_threads=args.intra_op_threads)
    runtime = make_runtime(base, weights_path=args.weights)
    caching = E.CachingDetector(UltralyticsPoseDetector.from_config(base))
    oracle = OracleDetector(caching)
    rows = []
    images = list(gt_set.images.values())
    for prior in ('yolo', 'oracle'):
        for t_start in args.t_starts:
            config = PipelineConfig(intra_op_threads=args.intra_op_threads, t_start=t_start)
            detector = oracle if prior == 'oracle' else caching
            pipeline = E.make_pipeline(config, runtime, detector)
            ours, given = [], []
            start = time.perf_counter()
            for index, image in enumerate(images):
                oracle.gt_persons = list(image.persons)
                bgr = E.read_image(gt_set.image_root / image.file_name)
                persons = E.estimate_single_image(pipeline, bgr, index * E.FRAME_PERIOD_NS)
                ours += E.persons_to_results(image.image_id, persons)
                given += E.persons_to_results(image.image_id, persons, detector=True)
            scores = {name: E.score_predictions(gt_set.images, results, gt_set.layout,
                                                n_resamples=200).summary['limb_pck']
                      for name, results in (('ours', ours), ('prior', given))}
            row = {'prior': prior, 't_start': t_start,
                   'ours_limb_pck': scores['ours']['pck_percent'],
                   'prior_limb_pck': scores['prior']['pck_percent'],
                   'elapsed_s': round(time.perf_counter() - start, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {'gt': 'LSPET val (im09001-im10000)', 'num_images': len(images),
            'weights': args.weights or 'shipped', 'steps': 1, 'hypotheses': 1, 'rows': rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default=None, help='DiffPose weights (default: shipped)')
    parser.add_argument('--t-starts', type=int, nargs='+', default=[50, 200])
    parser.add_argument('--max-images', type=int, default=0, help='0 = all 1,000')
    parser.add_argument('--intra-op-threads', type=int, default=1)
    parser.add_argument('--out', type=Path,
                        default=ROOT / 'docs' / 'results' / 'prior_use_diagnostic.json')
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + '\n')
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
