#!/usr/bin/env python3
"""Weight-space interpolation of two DiffPose heads (WiSE-FT, Wortsman et al., CVPR 2022).

``theta = (1 - alpha) * theta_a + alpha * theta_b`` for every floating-point tensor of two heads
with the same config, where ``b`` was fine-tuned from ``a`` (so the two sit in one basin and
the straight line between them is a family of models, not noise). Writes
``<out>.safetensors`` + ``<out>.json`` in the project's format (float16 storage, as shipped),
with both sources' sha256 and alpha in the metadata.

    python scripts/interpolate_weights.py models/diffpose_yolo11n_coco17.safetensors \\
        outputs/train/strl4_long/diffpose_yolo11n_coco17.safetensors --alpha 0.5 \\
        --out outputs/soup/alpha050/diffpose_yolo11n_coco17.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def interpolate(path_a: Path, path_b: Path, alpha: float, out: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    from diffpose_ros.config import ModelConfig
    from diffpose_ros.model.files import config_path_for

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    config_a = ModelConfig.load(config_path_for(path_a))
    config_b = ModelConfig.load(config_path_for(path_b))
    if config_a != config_b:
        raise ValueError(f'{path_a} and {path_b} have different configs; only heads of one '
                         'architecture can be interpolated')
    state_a, state_b = load_file(str(path_a)), load_file(str(path_b))
    if state_a.keys() != state_b.keys():
        raise ValueError(f'the heads have different tensors: '
                         f'{sorted(state_a.keys() ^ state_b.keys())[:5]}')
    mixed = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise ValueError(f'{name}: shape {tuple(a.shape)} vs {tuple(b.shape)}')
        if a.is_floating_point():
            value = torch.lerp(a.float(), b.float(), alpha)
            mixed[name] = value.to(torch.float16).contiguous()
        else:
            mixed[name] = a.contiguous()
    metadata = {'format': 'diffpose_ros-head-v1',
                'interpolation': json.dumps({
                    'method': 'WiSE-FT weight-space interpolation (1 - alpha) a + alpha b',
                    'alpha': alpha, 'a': str(path_a), 'a_sha256': sha256(path_a),
                    'b': str(path_b), 'b_sha256': sha256(path_b)})}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(mixed, str(out), metadata=metadata)
    config_a.save(config_path_for(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('weights_a', type=Path, help='the starting head (alpha = 0)')
    parser.add_argument('weights_b', type=Path, help='the head fine-tuned from it (alpha = 1)')
    parser.add_argument('--alpha', type=float, required=True)
    parser.add_argument('--out', type=Path, required=True, help='output .safetensors path')
    args = parser.parse_args(argv)
    for path in (args.weights_a, args.weights_b):
        if not path.is_file():
            print(f'error: {path} does not exist', file=sys.stderr)
            return 2
    try:
        out = interpolate(args.weights_a, args.weights_b, args.alpha, args.out)
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
