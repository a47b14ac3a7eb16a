"""Make docs/img/drawing_example.jpg: the debug-image drawing on a real vtest.avi frame.

The pipeline (shipped model, CPU) runs over frames 98-102; frame 102 is drawn with
``pipeline.draw_poses`` and shown whole (left) and a region enlarged 3x (right, nearest
neighbour, so the drawn pixels are visible as drawn).

    .venv/bin/python scripts/drawing_example.py [--out docs/img/drawing_example.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=ROOT / 'docs' / 'img' / 'drawing_example.jpg')
    parser.add_argument('--frame', type=int, default=102)
    args = parser.parse_args(argv)
    import cv2

    from diffpose_ros.assets import VTEST_VIDEO, asset_path
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.evaluation import read_frames
    from diffpose_ros.pipeline import PosePipeline, draw_poses
    from diffpose_ros.runtime.devices import build_engines

    frames = read_frames(str(asset_path(VTEST_VIDEO)), args.frame - 4, 5)
    engines = build_engines(PipelineConfig(backend='onnxruntime', detector_imgsz=1280))
    pipeline = PosePipeline(engines.config, engines.runtime, engines.detector)
    result = None
    for i, frame in enumerate(frames):
        result = pipeline.process(frame, i * 100_000_000)
    annotated = draw_poses(frames[-1], result)
    # the enlarged region: around the person with the smallest box
    smallest = min(result.persons, key=lambda p: (p.box_xyxy[3] - p.box_xyxy[1]))
    cx, cy = (float(v) for v in (smallest.box_xyxy[:2] + smallest.box_xyxy[2:]) / 2)
    half_w, half_h = 96, 96
    x0 = int(np.clip(cx - half_w, 0, annotated.shape[1] - 2 * half_w))
    y0 = int(np.clip(cy - half_h, 0, annotated.shape[0] - 2 * half_h))
    zoom = cv2.resize(annotated[y0:y0 + 2 * half_h, x0:x0 + 2 * half_w], None, fx=3, fy=3,
                      interpolation=cv2.INTER_NEAREST)
    whole = annotated.copy()
    cv2.rectangle(whole, (x0, y0), (x0 + 2 * half_w, y0 + 2 * half_h), (255, 255, 255), 1)
    height = zoom.shape[0]
    scale = height / whole.shape[0]
    whole = cv2.resize(whole, (int(round(whole.shape[1] * scale)), height),
                       interpolation=cv2.INTER_AREA)
    canvas = np.concatenate([whole, np.full((height, 8, 3), 255, np.uint8), zoom], axis=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # JPEG at high quality: a PNG of this photo is 1 MB
    if not cv2.imwrite(str(args.out), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        print(f'error: cannot write {args.out}', file=sys.stderr)
        return 1
    print(f'wrote {args.out} ({canvas.shape[1]}x{canvas.shape[0]}, {len(result.persons)} persons)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
