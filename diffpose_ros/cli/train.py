"""diffpose-train: train the DiffPose head from COCO, PoseTrack or pseudo-labelled JSON.

    diffpose-train --config config/train_default.yaml          # the shipped model: stage 1
    diffpose-train --config config/train_trust_strong.yaml     # stage 2, fine-tunes stage 1
    diffpose-train --config my.yaml --out outputs/train/mine --iterations 200
    diffpose-train --config my.yaml --no-resume                 # start over
    diffpose-train --config my.yaml --stop-after 500            # time-boxed; rerun resumes

The YAML lists data sources (COCO keypoint JSON, PoseTrack 2018/21 JSON, or the output of
diffpose-label) and the recipe (see config/train_default.yaml; `make train` runs both stages).
Training resumes from OUT/checkpoint.safetensors when one exists; writes OUT/loss.csv,
OUT/loss.png, the weights (diffpose_yolo11n_coco17.safetensors + .json) and OUT/summary.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='diffpose-train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='training YAML')
    parser.add_argument('--out', default=None, help='output folder (overrides out_dir)')
    parser.add_argument('--iterations', type=int, default=None, help='overrides iterations')
    parser.add_argument('--batch-size', type=int, default=None, help='overrides batch_size')
    parser.add_argument('--seed', type=int, default=None, help='overrides seed')
    parser.add_argument('--torch-threads', type=int, default=None,
                        help='overrides torch_threads (threads of the training loop)')
    parser.add_argument('--no-resume', action='store_true', help='ignore an existing checkpoint')
    parser.add_argument('--stop-after', type=int, default=None, metavar='N',
                        help='checkpoint and exit after N iterations in total (resume later)')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--export-checkpoint', default=None, metavar='WEIGHTS',
                        help='write the checkpoint of OUT as a weights file (+ .json) and exit: '
                             'evaluate a run while it trains')
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args = build_parser().parse_args(argv)
    from diffpose_ros.training.trainer import TrainConfig, train

    try:
        config = TrainConfig.from_yaml(args.config)
        overrides = {k: v for k, v in (('out_dir', args.out), ('iterations', args.iterations),
                                       ('batch_size', args.batch_size), ('seed', args.seed),
                                       ('torch_threads', args.torch_threads))
                     if v is not None}
        config = dataclasses.replace(config, **overrides)
        if args.export_checkpoint:
            from pathlib import Path

            from diffpose_ros.training.trainer import CHECKPOINT_NAME, export_checkpoint

            path = export_checkpoint(Path(config.out_dir) / CHECKPOINT_NAME,
                                     Path(args.export_checkpoint), config.model_config())
            print(f'wrote {path}')
            return 0
        summary = train(config, resume=not args.no_resume, progress=not args.no_progress,
                        stop_after=args.stop_after)
    except (OSError, ValueError) as exc:          # a missing input or an unwritable output
        logging.getLogger('diffpose-train').error('%s', exc)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
