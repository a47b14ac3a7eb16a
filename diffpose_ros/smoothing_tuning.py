"""Choosing the One Euro filter's parameters on real human motion (Penn Action labels).

Penn Action (Zhang et al., ICCV 2013) gives 2,326 hand-labelled keypoint sequences at 30 fps, no
frames. Each sequence is taken as the truth; per-frame Gaussian noise of a given size (per axis,
in person heights) stands in for an estimator's jitter; the filter runs causally over the noisy
track, and the error against the truth (RMS over visible joints, in person heights) is what it
costs: too little smoothing leaves the noise, too much lags behind real motion.

Since the jitter of a real estimator is not one fixed size, the chosen parameters are the ones
whose worst regret over several noise sizes is smallest (regret = RMS / best RMS at that size).
Neither the Bonn video nor vtest is used, so both stay test sets for the filter.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.smoothing import OneEuroConfig, OneEuroKeypointFilter

PENN_FPS = 30.0
DEFAULT_NOISE_HEIGHTS = (0.01, 0.02, 0.04)
DEFAULT_MIN_CUTOFFS_HZ = (0.3, 0.6, 1.0, 1.5, 2.5, 4.0)
DEFAULT_BETAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def load_penn_action(label_dir: str | Path, every_nth: int = 1,
                     min_frames: int = 20) -> list[dict[str, np.ndarray]]:
    """Sequences of ``labels/NNNN.mat``: xy (T, 13, 2) px, visible (T, 13), height_px (T,)."""
    import scipy.io

    label_dir = Path(label_dir)
    files = sorted(label_dir.glob('*.mat'))
    if not files:
        raise FileNotFoundError(f'no Penn Action label files (*.mat) in {label_dir}')
    sequences = []
    for path in files[::every_nth]:
        mat = scipy.io.loadmat(str(path), squeeze_me=True)
        xy = np.stack([mat['x'], mat['y']], axis=-1).astype(np.float64)
        boxes = np.atleast_2d(mat['bbox']).astype(np.float64)
        if xy.ndim != 3 or len(xy) < min_frames or len(boxes) != len(xy):
            continue  # a few sequences have a box per frame missing
        height_px = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
        if np.any(height_px < 20):
            continue
        sequences.append({'xy': xy, 'visible': np.asarray(mat['visibility'], bool),
                          'height_px': height_px, 'boxes': boxes})
    return sequences


def filtered_rms(sequences: Sequence[dict[str, np.ndarray]], config: OneEuroConfig | None,
                 noise_heights: float, seed: int = 0, fps: float = PENN_FPS) -> float:
    """RMS error (person heights) of the filtered noisy tracks against the labels."""
    rng = np.random.default_rng(seed)
    squared, count = 0.0, 0
    for seq in sequences:
        xy, height = seq['xy'], seq['height_px']
        noisy = xy + rng.normal(0.0, noise_heights, xy.shape) * height[:, None, None]
        if config is None:
            out = noisy
        else:
            track_filter = OneEuroKeypointFilter(config)
            ones = np.ones((xy.shape[1], 1))
            out = np.stack([
                track_filter(np.concatenate([noisy[i], ones], axis=1), seq['boxes'][i],
                             int(round(i * 1e9 / fps)))[:, :2]
                for i in range(len(xy))])
        err = np.linalg.norm(out - xy, axis=-1) / height[:, None]
        squared += float(np.sum(err[seq['visible']] ** 2))
        count += int(seq['visible'].sum())
    return float(np.sqrt(squared / max(count, 1)))


def tune_one_euro(sequences: Sequence[dict[str, np.ndarray]],
                  noise_heights: Sequence[float] = DEFAULT_NOISE_HEIGHTS,
                  min_cutoffs_hz: Sequence[float] = DEFAULT_MIN_CUTOFFS_HZ,
                  betas: Sequence[float] = DEFAULT_BETAS, progress: bool = True) -> dict[str, Any]:
    """Grid over (min_cutoff_hz, beta); the choice minimises the worst regret over noise sizes."""
    from tqdm import tqdm

    grid = list(itertools.product(min_cutoffs_hz, betas))
    raw = {s: filtered_rms(sequences, None, s) for s in noise_heights}
    rms = {}
    for min_cutoff, beta in tqdm(grid, desc='one euro grid', disable=not progress):
        cfg = OneEuroConfig(min_cutoff_hz=min_cutoff, beta=beta)
        rms[(min_cutoff, beta)] = {s: filtered_rms(sequences, cfg, s) for s in noise_heights}
    best = {s: min(v[s] for v in rms.values()) for s in noise_heights}
    regret = {k: max(v[s] / best[s] for s in noise_heights) for k, v in rms.items()}
    chosen = min(regret, key=regret.get)
    return {
        'method': 'Penn Action labels as truth + Gaussian noise per axis (person heights); '
                  'causal One Euro filter; choice = smallest worst regret over noise sizes',
        'num_sequences': len(sequences),
        'fps': PENN_FPS,
        'noise_heights': list(noise_heights),
        'raw_rms_heights': {str(s): raw[s] for s in noise_heights},
        'grid': [{'min_cutoff_hz': k[0], 'beta': k[1], 'worst_regret': regret[k],
                  'rms_heights': {str(s): v for s, v in rms[k].items()}}
                 for k in grid],
        'chosen': {'min_cutoff_hz': chosen[0], 'beta': chosen[1],
                   'worst_regret': regret[chosen],
                   'rms_heights': {str(s): rms[chosen][s] for s in noise_heights},
                   'rms_reduction_vs_raw': {str(s): 1.0 - rms[chosen][s] / raw[s]
                                            for s in noise_heights}},
    }


def plot_tuning(result: dict[str, Any], path: str | Path) -> Path:
    """RMS vs beta per min cutoff, one panel per noise size."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    noises = result['noise_heights']
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.6), squeeze=False)
    cutoffs = sorted({row['min_cutoff_hz'] for row in result['grid']})
    for ax, noise in zip(axes[0], noises):
        for cutoff in cutoffs:
            rows = [r for r in result['grid'] if r['min_cutoff_hz'] == cutoff]
            ax.plot([r['beta'] for r in rows], [r['rms_heights'][str(noise)] for r in rows],
                    marker='o', ms=3, label=f'min cutoff {cutoff} Hz')
        ax.axhline(result['raw_rms_heights'][str(noise)], color='k', ls='--', lw=1,
                   label='no filter')
        chosen = result['chosen']
        ax.plot([chosen['beta']], [chosen['rms_heights'][str(noise)]], 'r*', ms=12,
                label='chosen')
        ax.set_xscale('symlog', linthresh=0.5)
        ax.set_xlabel('beta (cutoff gain per person height / s)')
        ax.set_ylabel('RMS error (person heights)')
        ax.set_title(f'noise {noise} heights per axis')
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"One Euro filter on Penn Action motion ({result['num_sequences']} sequences, "
                 f"{result['fps']:.0f} fps)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
