"""diffpose-evaluate: accuracy and temporal metrics of the pose pipeline.

    diffpose-evaluate score  --gt GT.json --pred PRED.json [--layout coco|aic|posetrack]
    diffpose-evaluate images --gt GT.json [--image-root DIR] [--layout ...]
    diffpose-evaluate grid   [--gt GT.json ...] [--steps 1 2 4 8] [--hypotheses 1 2 4 8]
                             [--seeds 0 1 2 3 4] [--ablation-steps 1 2 4]
    diffpose-evaluate video  [--video PATH --start 600 --stop 795] [--window-mode causal]
                             [--cache]
    diffpose-evaluate bonn   [--gt BONN.json] [--image-root DIR] [--fps 25]
    diffpose-evaluate all    --out DIR

Every subcommand writes JSON and PNG files into ``--out`` (default ``outputs/evaluate/<cmd>``)
and records whether the DiffPose head is trained. Common options: --weights, --backend
(onnxruntime | torch), --steps, --hypotheses, --seeds, --detector-imgsz, --max-frames (images
per GT set, or video frames; 0 = all). See :mod:`diffpose_ros.evaluation` for the definitions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from diffpose_ros.config import QUANTIZATION_MODES
from diffpose_ros.ros.params import spec as _param_spec

NODE_DEFAULT_QUANTIZATION = _param_spec('quantization').default

LOGGER = logging.getLogger('diffpose-evaluate')
DEV_GT = Path(os.environ.get('DIFFPOSE_DEV_GT_IMAGES',
                    Path(__file__).resolve().parents[2] / 'test' / 'data' / 'dev_gt'))
DEFAULT_GRID_STEPS = (1, 2, 4, 8)
DEFAULT_GRID_HYPOTHESES = (1, 2, 4, 8)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_ABLATION_STEPS = (1, 2, 4)
VIDEO_START, VIDEO_STOP = 600, 795  # vtest.avi's held-out block (frames 0-599 train labels)
# Real labelled data (../shared/data/README.md), relative to the repository root like the
# training recipe; env DIFFPOSE_DATA overrides.
DATA_ROOT = Path(os.environ.get('DIFFPOSE_DATA', '../shared/data'))
LSPET_GT = DATA_ROOT / 'lspet' / 'lspet_coco17.json'
BONN_GT = DATA_ROOT / 'bonn_posetrack' / '060470979_coco17.json'
PENN_LABELS = DATA_ROOT / 'penn_action_labels' / 'labels'
DEFAULT_T_STARTS = (50, 100, 150, 200, 300, 400, 600)
PHOTO_IMGSZ, VIDEO_IMGSZ = 640, 1280  # vtest's people are 50-120 px: 640 finds nobody


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------

def _common(parser: argparse.ArgumentParser, multi: bool, imgsz: int | None) -> None:
    """Model and sampling options; ``multi``: steps/hypotheses/seeds take lists (grid)."""
    group = parser.add_argument_group('model and sampling')
    group.add_argument('--weights', default=None,
                       help='DiffPose weights (.safetensors; default: the shipped model, else '
                            'the seeded random head)')
    group.add_argument('--backend', choices=('onnxruntime', 'torch'), default='onnxruntime')
    group.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]'")
    nargs = '+' if multi else None
    group.add_argument('--steps', type=int, nargs=nargs,
                       default=list(DEFAULT_GRID_STEPS) if multi else 1,
                       help='DDIM steps' + (' (list)' if multi else ''))
    group.add_argument('--hypotheses', type=int, nargs=nargs,
                       default=list(DEFAULT_GRID_HYPOTHESES) if multi else 1,
                       help='noise hypotheses averaged' + (' (list)' if multi else ''))
    group.add_argument('--seeds', type=int, nargs=nargs,
                       default=list(DEFAULT_SEEDS) if multi else 0,
                       help='noise seeds (list; >= 5 for a spread)' if multi else 'noise seed')
    group.add_argument('--diffusion-start', choices=('detector', 'noise'), default='detector',
                       help="start sampling from the detector's keypoints noised to --t-start "
                            '(default) or from pure noise (the paper)')
    group.add_argument('--t-start', type=int, default=None,
                       help='first timestep when starting from the detector (default: the '
                            "pipeline's)")
    group.add_argument('--window-mode', choices=('causal', 'centered'), default='causal')
    group.add_argument('--window-size', type=int, default=None,
                       help='frames per window (default 3 causal, 5 centered)')
    if imgsz is not None:
        group.add_argument('--detector-imgsz', type=int, default=imgsz,
                           help=f'YOLO11n-pose inference size (default {imgsz})')
    group.add_argument('--intra-op-threads', type=int, default=0,
                       help='CPU threads for ONNX Runtime and torch (0 = library default); 1 '
                            'lets two evaluations share a 2-core machine without stalls')
    group.add_argument('--quantization', choices=QUANTIZATION_MODES,
                       default=NODE_DEFAULT_QUANTIZATION,
                       help='ONNX Runtime CPU graphs: none (float32), int8_encoder (int8 '
                            'window encoder) or int8 (also the backbone); default: the '
                            "node's, %(default)s")
    group.add_argument('--x0-projection', choices=('on', 'off'), default='off',
                       help='redraw x0 as clean Gaussians between steps (default off: plain '
                            'DDIM, better with the shipped model)')
    group.add_argument('--decode-blur-sigma', type=float,
                       default=_param_spec('decode_blur_sigma_px').default,
                       help='Gaussian blur [heatmap px] before locating each peak (DARK; 0 = '
                            "none; default: the node's, %(default)s)")
    group.add_argument('--keypoint-filter', choices=('one_euro', 'none'), default='one_euro',
                       help='causal smoothing of the published keypoints per track (default '
                            "one_euro, the pipeline's; none = the head's raw output)")
    group.add_argument('--max-frames', type=int, default=0,
                       help='images per GT set, or video frames (0 = all): tiny CI runs')


def _output(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument('--out', type=Path, default=Path('outputs') / 'evaluate' / name,
                        help='output folder (JSON + PNG)')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')


def _gt_options(parser: argparse.ArgumentParser, multi: bool) -> None:
    action = 'append' if multi else 'store'
    parser.add_argument('--gt', action=action, required=not multi,
                        help='COCO-format keypoint GT (COCO, AI Challenger or PoseTrack)'
                             + (' (repeat; default: dev_gt coco + aic)' if multi else ''))
    parser.add_argument('--image-root', action=action, default=None,
                        help="folder of the GT's file_name entries (default: the JSON's)")
    parser.add_argument('--layout', action=action, choices=('coco', 'aic', 'posetrack'),
                        default=None, help='GT layout (default: from the keypoint names)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffpose-evaluate',
        description='Evaluate DiffPose against ground truth and on unlabelled video.')
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('score', help='score a COCO-results prediction file against a GT JSON')
    p.add_argument('--gt', required=True, help='COCO-format keypoint GT')
    p.add_argument('--pred', required=True, help='COCO keypoint results JSON')
    p.add_argument('--layout', choices=('coco', 'aic', 'posetrack'), default=None,
                   help='GT layout (default: from the keypoint names)')
    _output(p, 'score')

    p = sub.add_parser('images', help='run the pipeline on GT images; ours vs YOLO11n-pose')
    p.add_argument('--blazepose', action='store_true',
                   help='also score BlazePose on the same persons (sets up its environment)')
    _gt_options(p, multi=False)
    _common(p, multi=False, imgsz=PHOTO_IMGSZ)
    _output(p, 'images')

    p = sub.add_parser('grid', help='accuracy vs steps x hypotheses x seeds; zeroed ablation')
    _gt_options(p, multi=True)
    _common(p, multi=True, imgsz=PHOTO_IMGSZ)
    p.add_argument('--ablation-steps', type=int, nargs='+', default=list(DEFAULT_ABLATION_STEPS))
    _output(p, 'grid')

    p = sub.add_parser('lspet', help='LSPET validation split (1,000 people): ours vs '
                                     'YOLO11n-pose, accuracy vs steps, zeroed-input ablation')
    p.add_argument('--gt', type=Path, default=LSPET_GT,
                   help='LSPET COCO-17 JSON (env DIFFPOSE_DATA; default %(default)s)')
    p.add_argument('--grid-steps', type=int, nargs='+', default=[1, 2, 4])
    p.add_argument('--grid-seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS))
    p.add_argument('--ablation-steps', type=int, nargs='+', default=[1])
    p.add_argument('--t-starts', type=int, nargs='*', default=[],
                   help='also sweep these t_start values at 1 step (choose the default)')
    p.add_argument('--decode-blur-sigmas', type=float, nargs='*', default=[],
                   help='also sweep these decode_blur_sigma_px values at 1 step (choose the '
                        'default)')
    _common(p, multi=False, imgsz=PHOTO_IMGSZ)
    _output(p, 'lspet')

    p = sub.add_parser('video', help='jitter, lag and agreement on unlabelled video')
    p.add_argument('--video', default=None, help='video file (default: the sample vtest.avi)')
    p.add_argument('--start', type=int, default=None,
                   help=f'first frame (default {VIDEO_START} for vtest.avi, else 0)')
    p.add_argument('--stop', type=int, default=None,
                   help=f'end frame, exclusive (default {VIDEO_STOP} for vtest.avi, else end)')
    p.add_argument('--cache', action='store_true',
                   help='keep detections in OUT/detections.json and reuse them')
    _common(p, multi=False, imgsz=VIDEO_IMGSZ)
    _output(p, 'video')

    p = sub.add_parser('bonn', help='Bonn PoseTrack video with GT: limb PCK, jitter, lag and '
                                    'ID switches, ours vs YOLO11n-pose')
    p.add_argument('--gt', type=Path, default=BONN_GT,
                   help='PoseTrack-style COCO-17 JSON of one video (env DIFFPOSE_DATA; '
                        'default %(default)s)')
    p.add_argument('--image-root', type=Path, default=None,
                   help="folder of the JSON's file_name entries (default: the JSON's)")
    p.add_argument('--fps', type=float, default=None,
                   help="frame rate (default: the JSON's images[].fps, else 25)")
    _common(p, multi=False, imgsz=PHOTO_IMGSZ)  # Bonn's people are 250-450 px tall
    _output(p, 'bonn')

    p = sub.add_parser('smoothing', help='choose the One Euro keypoint filter parameters on '
                                         'Penn Action motion (labels only, no model)')
    p.add_argument('--labels', type=Path, default=PENN_LABELS,
                   help='Penn Action labels/ folder of NNNN.mat files (default %(default)s)')
    p.add_argument('--every-nth', type=int, default=4,
                   help='use every n-th sequence (default 4: ~580 sequences, ~3 min)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.add_argument('--out', type=Path, default=Path('outputs') / 'evaluate' / 'smoothing')

    p = sub.add_parser('all', help="issue 10's evaluation: images (LSPET val, dev_gt coco + "
                                   'aic), LSPET steps grid + ablation, Bonn, vtest video')
    p.add_argument('--blazepose', action='store_true',
                   help='also score BlazePose on the same persons (sets up its environment)')
    p.add_argument('--dev-gt', type=Path, default=DEV_GT,
                   help='folder with coco/test_coco.json and aic/test_aic.json + images '
                        '(env DIFFPOSE_DEV_GT_IMAGES)')
    _common(p, multi=False, imgsz=PHOTO_IMGSZ)
    p.add_argument('--lspet-gt', type=Path, default=LSPET_GT,
                   help='LSPET COCO-17 JSON (its validation split is scored)')
    p.add_argument('--bonn-gt', type=Path, default=BONN_GT,
                   help='Bonn PoseTrack COCO-17 JSON (video with ground truth)')
    p.add_argument('--grid-steps', type=int, nargs='+', default=[1, 2, 4])
    p.add_argument('--grid-hypotheses', type=int, nargs='+', default=[1, 2])
    p.add_argument('--grid-seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS))
    p.add_argument('--ablation-steps', type=int, nargs='+', default=[1])
    p.add_argument('--video', default=None, help='video file (default: the sample vtest.avi)')
    p.add_argument('--start', type=int, default=None)
    p.add_argument('--stop', type=int, default=None)
    p.add_argument('--video-detector-imgsz', type=int, default=VIDEO_IMGSZ)
    p.add_argument('--cache', action='store_true',
                   help='keep video detections in OUT/video/detections.json and reuse them')
    _output(p, 'all')
    return parser


# --------------------------------------------------------------------------------------------
# Building the pieces
# --------------------------------------------------------------------------------------------

def _config(args: argparse.Namespace, steps: int = 1, hypotheses: int = 1, seed: int = 0,
            imgsz: int | None = None) -> Any:
    from diffpose_ros.config import PipelineConfig

    window = args.window_size or (5 if args.window_mode == 'centered' else 3)
    from diffpose_ros.runtime.devices import providers_for_device

    extra = {'providers': providers_for_device(args.device)}
    if getattr(args, 't_start', None) is not None:
        extra['t_start'] = args.t_start
    extra['intra_op_threads'] = getattr(args, 'intra_op_threads', 0)
    extra['x0_projection'] = getattr(args, 'x0_projection', 'off') == 'on'
    extra['keypoint_filter'] = getattr(args, 'keypoint_filter', 'one_euro')
    extra['decode_blur_sigma_px'] = getattr(args, 'decode_blur_sigma',
                                            _param_spec('decode_blur_sigma_px').default)
    extra['quantization'] = getattr(args, 'quantization', NODE_DEFAULT_QUANTIZATION)

    from diffpose_ros.runtime.devices import plan_devices

    config = PipelineConfig(steps=steps, hypotheses=hypotheses, seed=seed,
                            diffusion_start=getattr(args, 'diffusion_start', 'detector'),
                            window_mode=args.window_mode, window_size=window,
                            detector_imgsz=imgsz or getattr(args, 'detector_imgsz', PHOTO_IMGSZ),
                            backend=args.backend, device=args.device, **extra)
    # the node's fallback story: parts without a usable GPU run on the CPU, ONE warning here
    # (the detector and the runtime then build for the CPU and say nothing more)
    planned, problems = plan_devices(config)
    if problems:
        LOGGER.warning('GPU requested (--device %s) but not usable here: %s. Running the '
                       'detector, backbone and pose head on the CPU.', args.device,
                       '; '.join(problems))
    return planned


def _runtime(args: argparse.Namespace, config: Any) -> Any:
    from diffpose_ros.runtime.factory import make_runtime

    runtime = make_runtime(config, weights_path=args.weights)
    if not runtime.trained:
        LOGGER.warning('the DiffPose head is UNTRAINED (random weights): our keypoint figures '
                       'are meaningless until trained weights exist; every JSON records '
                       '"trained": false')
    return runtime


def _detector(config: Any) -> Any:
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.evaluation import CachingDetector

    return CachingDetector(UltralyticsPoseDetector.from_config(config))


def _weights_info(args: argparse.Namespace) -> dict[str, Any]:
    return {'weights': args.weights or 'default (shipped weights if present, else random head)'}


# --------------------------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------------------------

def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    gt_set = E.load_gt_set(args.gt, layout=args.layout)
    results = E.read_predictions(args.pred)
    score = E.score_predictions(gt_set.images, results, gt_set.layout)
    # no model runs here: whoever made the prediction file knows whether it was trained
    summary = {'gt': args.gt, 'pred': args.pred, 'trained': None,
               'model': 'none (scores a prediction file)', **score.summary}
    out = args.out
    E.write_json(out / 'score.json', summary)
    E.plot_per_joint(out / 'score_per_joint.png', {Path(args.pred).stem: score.summary},
                     f'{Path(args.pred).name} on {Path(args.gt).name}', trained=True)
    _print_score('score', score.summary)
    return summary


def _print_score(name: str, summary: dict[str, Any]) -> None:
    pck = summary['limb_pck']
    lo, hi = pck['ci95_percent']
    print(f'{name}: limb PCK@0.1 {pck["pck_percent"]:.1f} % [95% CI {lo:.1f}, {hi:.1f}] over '
          f'{pck["num_persons"]} persons ({pck["num_missed_persons"]} missed); '
          f'OKS AP {summary["oks_ap_percent"]["AP"]:.1f}')


def run_images_command(args: argparse.Namespace, gt_set: Any, out: Path, runtime: Any,
                       detector: Any, config: Any) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    teacher = None
    if getattr(args, 'blazepose', False):
        from diffpose_ros.teachers.blazepose import BlazePoseTeacher, ensure_blazepose_env

        teacher = BlazePoseTeacher(ensure_blazepose_env(log=LOGGER.info))
    try:
        run = E.run_images(runtime, detector, config, gt_set, overlay_dir=out / 'overlays',
                           progress=not args.quiet, blazepose=teacher)
    finally:
        if teacher is not None:
            teacher.close()
    summary = {**run.summary, **_weights_info(args),
               'predictions_ours': str(out / 'pred_ours.json'),
               'predictions_yolo': str(out / 'pred_yolo.json')}
    E.write_json(out / 'pred_ours.json', run.ours_results)
    E.write_json(out / 'pred_yolo.json', run.yolo_results)
    E.write_json(out / 'images.json', summary)
    E.plot_per_joint(out / 'images_per_joint.png',
                     {'ours': summary['ours'], 'YOLO11n-pose': summary['yolo']},
                     f'{gt_set.name}: limb PCK@0.1 per joint', trained=summary['trained'])
    _print_score(f'{gt_set.name} ours', summary['ours'])
    _print_score(f'{gt_set.name} YOLO', summary['yolo'])
    if 'blazepose' in summary:
        _print_score(f'{gt_set.name} BlazePose', summary['blazepose'])
    diff = summary['ours_minus_yolo_limb_pck']
    print(f'{gt_set.name} ours - YOLO: {diff["points"]:+.1f} points, paired 95% CI '
          f'[{diff["ci95_points"][0]:+.1f}, {diff["ci95_points"][1]:+.1f}]')
    return summary


def cmd_images(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    gt_set = E.load_gt_set(args.gt, args.image_root, args.layout, max_images=args.max_frames)
    config = _config(args, args.steps, args.hypotheses, args.seeds)
    detector = _detector(config)
    return run_images_command(args, gt_set, args.out, _runtime(args, config), detector, config)


def _grid_sets(args: argparse.Namespace) -> list[Any]:
    from diffpose_ros import evaluation as E

    gts = args.gt or [str(DEV_GT / 'coco' / 'test_coco.json'),
                      str(DEV_GT / 'aic' / 'test_aic.json')]
    roots = args.image_root or []
    layouts = args.layout or []
    if len(roots) not in (0, len(gts)) or len(layouts) not in (0, len(gts)):
        raise ValueError('give --image-root and --layout once per --gt, or not at all')
    return [E.load_gt_set(gt, roots[i] if roots else None, layouts[i] if layouts else None,
                          max_images=args.max_frames) for i, gt in enumerate(gts)]


def run_grid_command(args: argparse.Namespace, gt_sets: list[Any], out: Path, runtime: Any,
                     detector: Any, config: Any, steps: list[int], hypotheses: list[int],
                     seeds: list[int], ablation_steps: list[int]) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    grid = E.run_grid(runtime, detector, config, gt_sets, steps, hypotheses, seeds,
                      ablation_steps, progress=not args.quiet)
    grid = {**grid, **_weights_info(args)}
    E.write_json(out / 'grid.json', grid)
    E.plot_grid(out / 'grid_accuracy_vs_steps.png', grid)
    E.plot_ablation(out / 'grid_ablation.png', grid)
    print(f'grid: best steps {grid["best_steps"]} (at {grid["headline_hypotheses"]} '
          f'hypotheses); 1 step - best {grid["one_step_minus_best_points"]:+.2f} points; '
          'more hypotheses ever cost more than the seed spread: '
          f'{grid["more_hypotheses_ever_cost_more_than_seed_spread"]}; zeroed heatmap costs '
          f'accuracy: {grid["zeroed_heatmap_costs_accuracy"]}')
    return grid


def cmd_grid(args: argparse.Namespace) -> dict[str, Any]:
    gt_sets = _grid_sets(args)
    config = _config(args)
    detector = _detector(config)
    return run_grid_command(args, gt_sets, args.out, _runtime(args, config), detector, config,
                            args.steps, args.hypotheses, args.seeds, args.ablation_steps)


def lspet_validation_set(gt_path: Path, max_images: int = 0) -> Any:
    """The LSPET validation split (im09001-im10000); a clear error when the data is absent."""
    from diffpose_ros import evaluation as E
    from diffpose_ros.training.data import is_lspet_validation

    if not Path(gt_path).is_file():
        raise FileNotFoundError(
            f'{gt_path} not found: LSPET (research data, not redistributed here) is expected '
            'at ../shared/data/lspet (set DIFFPOSE_DATA to its parent folder); see '
            'docs/model.md, "Data"')
    return E.load_gt_set(gt_path, layout='coco', name='lspet_val', max_images=max_images,
                         only_images=is_lspet_validation)


# Sweep values whose limb PCK is within this many points of the best count as ties (about 4
# of LSPET val's 8,500 limb joints); the smallest tied value is chosen.
SWEEP_TIE_POINTS = 0.05


def choose_setting(rows: list[dict[str, Any]], name: str,
                   tie_points: float = SWEEP_TIE_POINTS) -> Any:
    """The smallest ``name`` whose limb PCK is within ``tie_points`` of the best row's."""
    best = max(r['limb_pck'] for r in rows)
    return min(r[name] for r in rows if r['limb_pck'] >= best - tie_points)


def run_setting_sweep(args: argparse.Namespace, gt_sets: list[Any], out: Path, runtime: Any,
                      detector: Any, config: Any, name: str, values: list[Any]
                      ) -> dict[str, Any]:
    """Limb PCK at 1 step (1 hypothesis, seed 0) for each value of one run-time setting
    (``t_start``, ``decode_blur_sigma_px``): how their defaults are chosen."""
    from diffpose_ros import evaluation as E

    rows = []
    for value in values:
        cfg = config.replace(**{name: value}, steps=1, hypotheses=1, seed=0)
        grid = E.run_grid(runtime, detector, cfg, gt_sets, [1], [1], [0], [],
                          progress=not args.quiet)
        cell = grid['cells'][0]
        rows.append({name: value, 'limb_pck': cell['limb_pck_mean'],
                     'oks_ap': cell['oks_ap_mean']})
        print(f'{name} {value}: limb PCK {cell["limb_pck_mean"]:.2f}, '
              f'OKS AP {cell["oks_ap_mean"]:.2f}')
    sweep = {'setting': name, 'gt_sets': [g.name for g in gt_sets], 'rows': rows,
             f'best_{name}': choose_setting(rows, name), 'tie_points': SWEEP_TIE_POINTS,
             **_weights_info(args)}
    E.write_json(out / f'{name}_sweep.json', sweep)
    E.plot_setting_sweep(out / f'{name}_sweep.png', sweep)
    return sweep


def cmd_lspet(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    gt_set = lspet_validation_set(args.gt, args.max_frames)
    config = _config(args, args.steps, args.hypotheses, args.seeds)
    detector = _detector(config)
    runtime = _runtime(args, config)
    out: Path = args.out
    result: dict[str, Any] = {}
    for name, values in (('t_start', args.t_starts),
                         ('decode_blur_sigma_px', args.decode_blur_sigmas)):
        if values:
            result[f'{name}_sweep'] = run_setting_sweep(
                args, [gt_set], out / name, runtime, detector, config, name, values)
    result['images'] = run_images_command(args, gt_set, out / 'images', runtime, detector,
                                          config)
    result['grid'] = run_grid_command(args, [gt_set], out / 'grid', runtime, detector, config,
                                      args.grid_steps, [1], args.grid_seeds, args.ablation_steps)
    E.write_json(out / 'lspet.json', {
        'images': {k: result['images'][k] for k in ('ours', 'yolo', 'ours_minus_yolo_limb_pck',
                                                     'num_images', 'num_persons_estimated')},
        'grid': {k: result['grid'][k] for k in ('cells', 'ablation', 'best_steps',
                                                 'one_step_minus_best_points')},
        **{k: v for k, v in result.items() if k.endswith('_sweep')}})
    return result


def _video_source(args: argparse.Namespace) -> tuple[Path, int, int | None]:
    from diffpose_ros.assets import VTEST_VIDEO, asset_path

    if args.video:
        start = 0 if args.start is None else args.start
        return Path(args.video), start, args.stop
    start = VIDEO_START if args.start is None else args.start
    stop = VIDEO_STOP if args.stop is None else args.stop
    return asset_path(VTEST_VIDEO), start, stop


def run_video_command(args: argparse.Namespace, out: Path, runtime: Any, detector: Any,
                      config: Any) -> dict[str, Any]:
    from diffpose_ros import evaluation as E

    path, start, stop = _video_source(args)
    if args.max_frames > 0:
        stop = min(stop, start + args.max_frames) if stop is not None else \
            start + args.max_frames
    cache_path = out / 'detections.json'
    if args.cache:
        loaded = detector.load(cache_path)
        LOGGER.info('detection cache %s: %d frames loaded', cache_path, loaded)
    fps, total, frames = E.read_video(path, start, stop)
    run = E.run_video(runtime, detector, config, frames, fps, total=total,
                      progress=not args.quiet)
    if args.cache:
        detector.save(cache_path)
    summary = {**run.summary, **_weights_info(args), 'video': str(path), 'start': start,
               'stop': start + run.summary['frames_processed']}
    E.write_json(out / 'video.json', summary)
    E.plot_video_jitter(out / 'video_jitter.png', summary)
    E.plot_wrist_track(out / 'video_wrist_x.png', run)
    E.write_video_overlays(out, run)
    jit, agr = summary['jitter'], summary['agreement']
    print(f'video: {summary["frames_processed"]} frames, {summary["num_tracks_used"]} tracks '
          f'scored; jitter ours {_fmt(jit["ours"])} vs YOLO {_fmt(jit["yolo_raw"])} (ratio '
          f'{_fmt(jit["ratio_ours_over_yolo"], 2)}); lag {summary["lag"]["pooled_frames"]} '
          f'frames; agreement@0.1 ours {_fmt(agr["ours_vs_teacher_percent"], 1)} % vs '
          f'teacher own {_fmt(agr["yolo_raw_vs_teacher_percent"], 1)} %')
    return summary


def _fmt(value: Any, digits: int = 4) -> str:
    return 'n/a' if value is None or value != value else f'{value:.{digits}f}'


def cmd_video(args: argparse.Namespace) -> dict[str, Any]:
    config = _config(args, args.steps, args.hypotheses, args.seeds)
    detector = _detector(config)
    return run_video_command(args, args.out, _runtime(args, config), detector, config)


def load_bonn(args: argparse.Namespace) -> Any:
    """The labelled video of ``args.gt`` (first ``--max-frames``); a clear error when absent."""
    from diffpose_ros import evaluation as E

    gt_path = Path(getattr(args, 'bonn_gt', None) or args.gt)
    if not gt_path.is_file():
        raise FileNotFoundError(
            f'{gt_path} not found: Bonn PoseTrack (research data, not redistributed here; '
            'U. Iqbal, A. Milan, J. Gall, "PoseTrack", CVPR 2017) is expected at '
            '../shared/data/bonn_posetrack (set DIFFPOSE_DATA to its parent folder)')
    return E.load_gt_video(gt_path, getattr(args, 'image_root', None),
                           fps=getattr(args, 'fps', None), max_frames=args.max_frames)


def run_bonn_command(args: argparse.Namespace, out: Path, runtime: Any, detector: Any,
                     config: Any, video: Any = None) -> dict[str, Any]:
    """:func:`evaluation.run_video_gt` on the Bonn video (``video``: from :func:`load_bonn`,
    loaded here when None) -> OUT/summary.json, OUT/bonn_wrist.png, OUT/bonn_per_joint.png."""
    from diffpose_ros import evaluation as E

    video = video or load_bonn(args)
    frames = ((frame, E.read_image(video.image_path(frame))) for frame in video.frames)
    run = E.run_video_gt(runtime, detector, config, frames, video.frames, video.fps,
                         layout=video.layout, total=len(video.frames), progress=not args.quiet)
    summary = {**run.summary, **_weights_info(args), 'gt': video.gt_path,
               'video': video.name, 'fps_source': video.fps_source}
    out.mkdir(parents=True, exist_ok=True)
    E.write_json(out / 'summary.json', summary)
    E.plot_gt_wrist_track(out / 'bonn_wrist.png', run)
    pck = summary['limb_pck']
    E.plot_per_joint(out / 'bonn_per_joint.png',
                     {'ours': {'limb_pck': pck['ours']},
                      'YOLO11n-pose': {'limb_pck': pck['yolo']}},
                     f'{video.name}: limb PCK@0.1 per joint (same matched persons)',
                     trained=summary['trained'])
    jit, lag, diff = summary['jitter'], summary['lag'], pck['ours_minus_yolo']
    print(f'bonn: {summary["frames_processed"]} frames, {summary["num_gt_person_frames"]} GT '
          f'person-frames ({summary["matching"]["missed_person_frames"]} missed); limb PCK@0.1 '
          f'ours {_fmt(pck["ours"]["pck_percent"], 1)} % vs YOLO '
          f'{_fmt(pck["yolo"]["pck_percent"], 1)} % (paired diff {_fmt(diff["points"], 1)}, '
          f'95% CI [{_fmt(diff["ci95_points"][0], 1)}, {_fmt(diff["ci95_points"][1], 1)}]); '
          f'jitter ours {_fmt(jit["ours"])} vs YOLO {_fmt(jit["yolo_raw"])} vs GT '
          f'{_fmt(jit["gt"])} (ours/YOLO {_fmt(jit["ratio_ours_over_yolo"], 2)}); lag '
          f'{lag["ours_pooled_frames"]} frames; ID switches {summary["id_switches"]["total"]}, '
          f'IDF1 {_fmt(summary["identity"]["idf1"], 3)}')
    return summary


def cmd_bonn(args: argparse.Namespace) -> dict[str, Any]:
    video = load_bonn(args)  # fails before any model is built when the data is absent
    config = _config(args, args.steps, args.hypotheses, args.seeds)
    detector = _detector(config)
    return run_bonn_command(args, args.out, _runtime(args, config), detector, config, video)


def cmd_smoothing(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros.evaluation import write_json
    from diffpose_ros.smoothing_tuning import load_penn_action, plot_tuning, tune_one_euro

    if not args.labels.is_dir():
        raise FileNotFoundError(
            f'Penn Action labels not found at {args.labels}: get the Penn Action dataset '
            '(labels/*.mat) from its authors and point --labels (or DIFFPOSE_DATA) at it')
    sequences = load_penn_action(args.labels, every_nth=max(args.every_nth, 1))
    result = tune_one_euro(sequences, progress=not args.quiet)
    write_json(args.out / 'smoothing.json', result)
    plot = plot_tuning(result, args.out / 'smoothing_penn_action.png')
    chosen = result['chosen']
    print(f"chosen: min_cutoff_hz {chosen['min_cutoff_hz']}, beta {chosen['beta']} (worst "
          f"regret {chosen['worst_regret']:.3f}); wrote {args.out / 'smoothing.json'}, {plot}")
    return result


def _images_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        'gt': run['gt'], 'num_images': run['num_images'],
        'num_gt_persons': run['ours']['limb_pck']['num_persons'],
        'ours_limb_pck_percent': run['ours']['limb_pck']['pck_percent'],
        'ours_limb_pck_ci95': run['ours']['limb_pck']['ci95_percent'],
        'yolo_limb_pck_percent': run['yolo']['limb_pck']['pck_percent'],
        'yolo_limb_pck_ci95': run['yolo']['limb_pck']['ci95_percent'],
        'yolo_all_detections_limb_pck_percent':
            run['yolo_all_detections']['limb_pck']['pck_percent'],
        'ours_minus_yolo_points': run['ours_minus_yolo_limb_pck']['points'],
        'ours_minus_yolo_ci95': run['ours_minus_yolo_limb_pck']['ci95_points'],
        'ours_oks_ap_percent': run['ours']['oks_ap_percent']['AP'],
        'yolo_oks_ap_percent': run['yolo']['oks_ap_percent']['AP'],
        **({'blazepose_limb_pck_percent': run['blazepose']['limb_pck']['pck_percent'],
            'blazepose_limb_pck_ci95': run['blazepose']['limb_pck']['ci95_percent'],
            'ours_minus_blazepose_points': run['ours_minus_blazepose_limb_pck']['points'],
            'ours_minus_blazepose_ci95': run['ours_minus_blazepose_limb_pck']['ci95_points']}
           if 'blazepose' in run else {}),
    }


def cmd_all(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 10's evaluation: photos (LSPET val, dev_gt COCO + AIC), the LSPET steps grid with
    the zeroed-input ablation, the Bonn video with ground truth and vtest's held-out block."""
    from diffpose_ros import evaluation as E

    out: Path = args.out
    timings: dict[str, float] = {}
    start = time.perf_counter()
    lspet = lspet_validation_set(args.lspet_gt, args.max_frames)  # clear error without data
    bonn_video = load_bonn(args)
    config = _config(args, args.steps, args.hypotheses, args.seeds)
    video_config = config.replace(detector_imgsz=args.video_detector_imgsz)
    photo_detector = _detector(config)  # shared by images and grid: YOLO once per photo
    video_detector = _detector(video_config)
    runtime = _runtime(args, config)
    sets = [E.load_gt_set(args.dev_gt / 'coco' / 'test_coco.json', layout='coco', name='coco',
                          max_images=args.max_frames),
            E.load_gt_set(args.dev_gt / 'aic' / 'test_aic.json', layout='aic', name='aic',
                          max_images=args.max_frames), lspet]
    timings['setup'] = time.perf_counter() - start
    images = {}
    for gt_set in sets:
        t0 = time.perf_counter()
        images[gt_set.name] = run_images_command(args, gt_set, out / f'images_{gt_set.name}',
                                                 runtime, photo_detector, config)
        timings[f'images_{gt_set.name}'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the zeroed-input ablation where the detector is usually right (the grid's is on LSPET)
    dev_gt_ablation = [E.run_zeroed_input_ablation(
        runtime, photo_detector, config, gt_set,
        json.loads((out / f'images_{gt_set.name}' / 'pred_ours.json').read_text()))
        for gt_set in sets[:2]]
    for ablation in dev_gt_ablation:
        cost = ablation['cost_limb_pck']
        print(f'{ablation["gt_name"]} zeroed-input ablation: limb PCK '
              f'{ablation["normal_limb_pck_percent"]:.1f} -> '
              f'{ablation["zeroed_limb_pck_percent"]:.1f} zeroed, cost {cost["points"]:+.1f} '
              f'[{cost["ci95_points"][0]:+.1f}, {cost["ci95_points"][1]:+.1f}]')
    timings['dev_gt_ablation'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = run_grid_command(args, [lspet], out / 'grid_lspet', runtime, photo_detector, config,
                            args.grid_steps, args.grid_hypotheses, args.grid_seeds,
                            args.ablation_steps)
    timings['grid'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bonn = run_bonn_command(args, out / 'bonn', runtime, photo_detector, config, bonn_video)
    timings['bonn'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    video = run_video_command(args, out / 'video', runtime, video_detector, video_config)
    timings['video'] = time.perf_counter() - t0
    timings['total'] = time.perf_counter() - start
    checks = E.evaluate_checks(images, grid, video, bonn, dev_gt_ablation)
    summary = {
        **E.runtime_info(runtime, config), **_weights_info(args),
        'images': {name: _images_summary(run) for name, run in images.items()},
        'dev_gt_pooled_ours_minus_yolo_points': E.pooled_paired_difference(
            [images['coco'], images['aic']]),
        'dev_gt_zeroed_input': {
            'sets': dev_gt_ablation,
            'pooled_cost_limb_pck_points': E.pooled_zeroed_input_cost(dev_gt_ablation)},
        'grid': {k: grid[k] for k in (
            'steps_list', 'hypotheses_list', 'seeds', 'num_images', 'num_gt_persons',
            'best_steps', 'headline_hypotheses', 'one_step_minus_best_points',
            'best_steps_by_hypotheses', 'one_step_minus_best_points_by_hypotheses',
            'best_cell', 'more_hypotheses_ever_cost_more_than_seed_spread',
            'zeroed_heatmap_costs_accuracy', 'ablation', 'cells')},
        'bonn': {k: bonn[k] for k in ('limb_pck', 'jitter', 'lag', 'id_switches', 'identity',
                                      'matching', 'yolo_same_filter') if k in bonn},
        'video': {
            'video': video['video'], 'first_frame': video['first_frame'],
            'last_frame': video['last_frame'], 'window_mode': video['window_mode'],
            'detector_imgsz': video['detector_imgsz'],
            'num_tracks_used': video['num_tracks_used'],
            'jitter_ours': video['jitter']['ours'], 'jitter_yolo': video['jitter']['yolo_raw'],
            'jitter_ratio_ours_over_yolo': video['jitter']['ratio_ours_over_yolo'],
            'jitter_own_masks': video.get('jitter_own_masks'),
            'lag_frames': video['lag']['pooled_frames'],
            'agreement_ours_percent': video['agreement']['ours_vs_teacher_percent'],
            'agreement_teacher_own_percent': video['agreement']['yolo_raw_vs_teacher_percent'],
            'yolo_same_filter': video.get('yolo_same_filter'),
        },
        'checks': checks,
        'all_checks_passed': all(c['passed'] for c in checks.values()),
        'keypoint_filter': {'kind': config.keypoint_filter,
                            'min_cutoff_hz': config.filter_min_cutoff_hz,
                            'beta': config.filter_beta},
        'runtimes_s': timings,
        'outputs': {'images': {n: str(out / f'images_{n}') for n in images},
                    'grid': str(out / 'grid_lspet'), 'bonn': str(out / 'bonn'),
                    'video': str(out / 'video')},
    }
    E.write_json(out / 'summary.json', summary)
    print('checks: ' + ', '.join(f'{name} {"PASS" if c["passed"] else "FAIL"}'
                                 for name, c in checks.items()))
    if not runtime.trained:
        print('(untrained head: the checks on our keypoints are expected to fail)')
    print(f'wrote {out / "summary.json"} in {timings["total"]:.0f} s')
    return summary


COMMANDS = {'score': cmd_score, 'images': cmd_images, 'grid': cmd_grid, 'video': cmd_video,
            'lspet': cmd_lspet, 'bonn': cmd_bonn, 'smoothing': cmd_smoothing, 'all': cmd_all}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    from diffpose_ros.assets import AssetError

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK):        # before any model loads
            raise PermissionError(f'output directory {args.out} is not writable')
        COMMANDS[args.command](args)
    except (AssetError, ValueError, OSError) as exc:
        LOGGER.error('%s', exc)
        return 2
    print(f'outputs in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
