#!/usr/bin/env python3
"""Copy a training run's weights into models/ as float16 safetensors and print the sha256.

    python scripts/ship_model.py outputs/train/default            # -> models/<name>.safetensors
    python scripts/ship_model.py outputs/train/trust_strong --recipe config/train_default.yaml \
        --recipe config/train_trust_strong.yaml                     # a fine-tune: both stages
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import torch

    from diffpose_ros.model.weights import DEFAULT_WEIGHTS_NAME, load_model, save_weights

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dir', help='output folder of diffpose-train')
    parser.add_argument('--dest', default=str(REPO / 'models'))
    parser.add_argument('--recipe', action='append', default=None,
                        help='training config(s) that made the run, in order (default: '
                             'config/train_default.yaml)')
    args = parser.parse_args()
    run = Path(args.run_dir)
    model, trained = load_model(run / DEFAULT_WEIGHTS_NAME)
    summary = json.loads((run / 'summary.json').read_text())
    config = json.loads((run / 'train_config.json').read_text())
    dest = save_weights(model, Path(args.dest) / DEFAULT_WEIGHTS_NAME, storage_dtype=torch.float16,
                        metadata={'iterations': summary['iterations'], 'seed': config['seed'],
                                  'data': [d['path'] for d in config['data']],
                                  'recipe': ' then '.join(args.recipe
                                                          or ['config/train_default.yaml'])})
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    print(json.dumps({'weights': str(dest), 'bytes': dest.stat().st_size, 'sha256': digest,
                      'config_json': str(dest.with_suffix('.json'))}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
