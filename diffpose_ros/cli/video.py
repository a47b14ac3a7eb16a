"""diffpose-video: run the full pipeline over a video file.

    diffpose-video                       # the bundled sample (vtest.avi), first 100 frames
    diffpose-video INPUT --out annotated.mp4 --json poses.json --steps 2 --hypotheses 4 \
        --window-mode centered --window-size 5
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from diffpose_ros.config import QUANTIZATION_MODES, PipelineConfig
from diffpose_ros.ros.params import spec as param_spec

if TYPE_CHECKING:
    import cv2

LOGGER = logging.getLogger('diffpose-video')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffpose-video',
        description='Detect, track and estimate COCO-17 poses with '
        'DiffPose over a video; writes an annotated video and a JSON of poses.',
    )
    parser.add_argument(
        'input',
        nargs='?',
        default=None,
        help='video file (default: the sample vtest.avi fetched by setup)',
    )
    parser.add_argument('--out', default='outputs/annotated.mp4',
                        help=f'annotated video ({", ".join(VIDEO_FOURCC)})')
    parser.add_argument('--json', default='outputs/poses.json', help='poses as JSON')
    parser.add_argument('--steps', type=int, default=1, help='DDIM denoising steps (1..)')
    parser.add_argument('--hypotheses', type=int, default=1, help='noise seeds ensembled')
    parser.add_argument('--seed', type=int, default=0, help='base noise seed')
    parser.add_argument('--diffusion-start', choices=('detector', 'noise'), default='detector',
                        help="start from the detector's keypoints noised to --t-start "
                             '(default) or from pure noise (the paper)')
    parser.add_argument('--t-start', type=int, default=PipelineConfig.t_start,
                        help='first timestep when starting from the detector (0..999; '
                             'default %(default)s)')
    parser.add_argument('--decode-blur-sigma', type=float,
                        default=param_spec('decode_blur_sigma_px').default,
                        help='Gaussian blur [heatmap px] before locating each peak (DARK; 0 = '
                             "none; default: the node's, %(default)s)")
    parser.add_argument('--keypoint-filter', choices=('one_euro', 'none'), default='one_euro',
                        help='causal smoothing of the keypoints per track (default one_euro; '
                             "none = the head's raw output)")
    parser.add_argument('--window-mode', choices=('causal', 'centered'), default='causal')
    parser.add_argument(
        '--window-size',
        type=int,
        default=None,
        help='frames per window (default: 3 causal, 5 centered)',
    )
    parser.add_argument('--start-frame', type=int, default=0)
    parser.add_argument('--max-frames', type=int, default=100, help='frames to process (0 = all)')
    parser.add_argument('--backend', choices=('torch', 'onnxruntime'), default='onnxruntime')
    parser.add_argument('--quantization', choices=QUANTIZATION_MODES,
                        default=param_spec('quantization').default,
                        help="ONNX Runtime CPU graphs (default: the node's, %(default)s)")
    parser.add_argument('--device', default='cpu', help="torch device ('cpu', 'cuda')")
    parser.add_argument(
        '--weights',
        default=None,
        help='DiffPose weights (.safetensors; default: the shipped model)',
    )
    parser.add_argument('--detector-imgsz', type=int, default=640)
    parser.add_argument(
        '--detect-every',
        type=int,
        default=1,
        help='run the detector every N frames, propagate boxes in between',
    )
    tracking = parser.add_argument_group(
        'detection and tracking', 'every detection at --detection-score-threshold gets a pose; '
        'the tracker thresholds only decide the track ids (docs/ros.md, tracker parameters)')
    tracking.add_argument('--detection-score-threshold', type=float,
                          default=PipelineConfig.detection_score_threshold,
                          help='minimum person detection score (default %(default)s)')
    tracking.add_argument('--track-high-score-threshold', type=float,
                          default=PipelineConfig.track_high_score_threshold,
                          help='detections at or above are matched first, to all tracks; lower '
                               'ones only continue tracked people (default %(default)s)')
    tracking.add_argument('--track-new-score-threshold', type=float,
                          default=PipelineConfig.track_new_score_threshold,
                          help='an unmatched detection starts a track at or above this score, '
                               'else gets an id for its frame only (default %(default)s)')
    tracking.add_argument('--track-min-hits', type=int,
                          default=PipelineConfig.track_min_hits,
                          help='consecutive matches that confirm a new track (default '
                               '%(default)s)')
    tracking.add_argument('--track-max-age-s', type=float,
                          default=PipelineConfig.track_max_age_s,
                          help='a lost track is removed after this many seconds (default '
                               '%(default)s)')
    parser.add_argument(
        '--draw-detector',
        action='store_true',
        help="also draw the detector's own single-frame keypoints (grey)",
    )
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def _person_json(person) -> dict:
    out = {
        'track_id': int(person.track_id),
        'box_xyxy': [round(float(v), 2) for v in person.box_xyxy],
        'score': round(float(person.score), 4),
        'keypoints': np.round(person.keypoints.astype(float), 3).tolist(),
        'box_is_predicted': bool(person.is_predicted),
    }
    if person.detector_keypoints is not None:
        out['detector_keypoints'] = np.round(person.detector_keypoints.astype(float), 3).tolist()
    return out


# containers the annotated video can be written to, and the codec for each (OpenCV's FFmpeg
# backend); anything else (.webm, .gif, ...) is refused before the models load
VIDEO_FOURCC = {'.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'mp4v', '.avi': 'MJPG'}


class OutputError(RuntimeError):
    """An output cannot be written, or was not written completely."""


def open_video_writer(path: Path, fps: float, size_wh: tuple[int, int]) -> cv2.VideoWriter:
    """An opened OpenCV writer for ``path`` (parents created); OutputError if it cannot be."""
    import cv2

    fourcc = VIDEO_FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise OutputError(f'cannot write video {path}: unsupported container '
                          f'{path.suffix or "(no extension)"!r}; use one of '
                          f'{", ".join(VIDEO_FOURCC)}')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f'cannot write video {path}: {exc}') from exc
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size_wh)
    if not writer.isOpened():
        raise OutputError(f'cannot write video {path}: OpenCV could not open a {fourcc} writer '
                          '(is the directory writable?)')
    return writer


def check_video_output(path: Path) -> None:
    """Before any model loads: open a writer beside ``path`` (same directory and container,
    so an existing ``path`` is untouched) and delete it again."""
    if path.is_dir():
        raise OutputError(f'cannot write video {path}: it is a directory')
    probe = path.with_name(f'.{path.stem}.probe{path.suffix}')
    try:
        open_video_writer(probe, 10.0, (64, 64)).release()
    except OutputError as exc:
        raise OutputError(str(exc).replace(str(probe), str(path))) from exc
    finally:
        probe.unlink(missing_ok=True)


def check_json_output(path: Path) -> None:
    """Fail early unless ``path`` can be created (its directory exists or can be made and is
    writable, and the path is not a directory)."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f'cannot write {path}: {exc}') from exc
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise OutputError(f'cannot write {path}: '
                          + ('it is a directory' if path.is_dir()
                             else f'{path.parent} is not writable'))


def verify_video(path: Path, frames_written: int) -> None:
    """Raise OutputError unless ``path`` reads back with ``frames_written`` frames."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        readable = capture.isOpened()
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if readable else 0
    finally:
        capture.release()
    if not readable or frames != frames_written:
        raise OutputError(f'video {path} is incomplete: {frames_written} frames written, '
                          f'{frames if readable else "none"} readable')


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    import cv2
    from tqdm import tqdm

    from diffpose_ros.assets import VTEST_VIDEO, AssetError, asset_path
    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.pipeline import PosePipeline, draw_poses
    from diffpose_ros.runtime.devices import build_engines, providers_for_device
    from diffpose_ros.skeleton import KEYPOINT_NAMES

    out_path, json_path = Path(args.out), Path(args.json)
    # inputs and outputs first: a typo must not cost a model load and export
    try:
        video_path = Path(args.input) if args.input else asset_path(VTEST_VIDEO)
        if not video_path.is_file():
            raise OutputError(f'input video {video_path} does not exist')
        capture = cv2.VideoCapture(str(video_path))
        if not capture.isOpened():
            raise OutputError(f'cannot open video {video_path} (not a video OpenCV can read)')
        check_video_output(out_path)
        check_json_output(json_path)
    except (AssetError, OutputError) as exc:
        LOGGER.error('%s', exc)
        return 2
    try:
        window_size = args.window_size or (5 if args.window_mode == 'centered' else 3)
        config = PipelineConfig(
            steps=args.steps,
            hypotheses=args.hypotheses,
            seed=args.seed,
            diffusion_start=args.diffusion_start,
            t_start=args.t_start,
            decode_blur_sigma_px=args.decode_blur_sigma,
            keypoint_filter=args.keypoint_filter,
            window_mode=args.window_mode,
            window_size=window_size,
            detector_imgsz=args.detector_imgsz,
            detect_every_n=args.detect_every,
            detection_score_threshold=args.detection_score_threshold,
            track_high_score_threshold=args.track_high_score_threshold,
            track_new_score_threshold=args.track_new_score_threshold,
            track_min_hits=args.track_min_hits,
            track_max_age_s=args.track_max_age_s,
            backend=args.backend,
            quantization=args.quantization,
            device=args.device,
            providers=providers_for_device(args.device),
        )
        # `--device cuda` without a usable GPU runs on the CPU, with one warning
        engines = build_engines(config, weights_path=args.weights)
        config, runtime = engines.config, engines.runtime
    except (AssetError, ValueError, OSError, RuntimeError) as exc:
        LOGGER.error('%s', exc)
        return 2
    if not runtime.trained:
        LOGGER.warning(
            'the DiffPose head is UNTRAINED (random weights): drawn keypoints are '
            'meaningless; boxes and track ids are real'
        )
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) - args.start_frame
    if args.max_frames > 0:
        total = min(total, args.max_frames)
    capture.set(cv2.CAP_PROP_POS_FRAMES, args.start_frame)
    pipeline = PosePipeline(config, runtime, engines.detector)
    writer = None
    frames_written = 0
    held: dict[int, np.ndarray] = {}  # frames waiting for their (centred) results
    frames_json = []
    timings_total: dict[str, float] = {}
    start = time.perf_counter()

    def emit(result) -> None:
        nonlocal writer, frames_written
        image = held.pop(result.frame_index)
        annotated = draw_poses(image, result, draw_detector=args.draw_detector)
        if writer is None:
            height, width = annotated.shape[:2]
            writer = open_video_writer(out_path, fps, (width, height))
        writer.write(annotated)
        frames_written += 1
        frames_json.append(
            {
                'frame_index': args.start_frame + result.frame_index,
                'stamp_ns': result.stamp_ns,
                'persons': [_person_json(p) for p in result.persons],
            }
        )

    progress = tqdm(total=total, unit='frame', disable=args.quiet, desc='diffpose')
    try:
        for index in range(total):
            ok, image = capture.read()
            if not ok:
                break
            stamp_ns = int(round((args.start_frame + index) / fps * 1e9))
            held[index] = image
            result = pipeline.process(image, stamp_ns)
            if result is not None:
                for stage, value in result.timings_ms.items():
                    timings_total[stage] = timings_total.get(stage, 0.0) + value
                emit(result)
            progress.update(1)
        for result in pipeline.flush():
            emit(result)
    except OutputError as exc:
        LOGGER.error('%s', exc)
        return 1
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
    elapsed_s = time.perf_counter() - start
    if not frames_json:
        LOGGER.error('no frame read from %s (start frame %d of %d): nothing written',
                     video_path, args.start_frame, int(total + args.start_frame))
        return 1
    meta = {
        'video': str(video_path),
        'fps': fps,
        'keypoint_names': list(KEYPOINT_NAMES),
        'keypoint_layout': 'COCO-17, x/y in image pixels (origin: top-left pixel corner)',
        'model_trained': runtime.trained,
        'backend': runtime.name,
        'providers': runtime.providers,
        'devices': engines.placement.summary(),
        'steps': config.steps,
        'hypotheses': config.hypotheses,
        'window_mode': config.window_mode,
        'window_size': config.window_size,
        'seed': config.seed,
    }
    try:
        verify_video(out_path, frames_written)
        json_path.write_text(json.dumps({'meta': meta, 'frames': frames_json}) + '\n')
    except (OutputError, OSError) as exc:
        LOGGER.error('%s', exc)
        return 1
    n = max(len(frames_json), 1)
    person_frames = sum(len(f['persons']) for f in frames_json)
    print(
        f'{len(frames_json)} frames, {person_frames} person-frames in {elapsed_s:.1f} s '
        f'({len(frames_json) / elapsed_s:.2f} frames/s); backend {runtime.name} '
        f'({getattr(runtime, "quantization", "none")} graphs), '
        f'{engines.placement.summary()}; steps {config.steps}, hypotheses {config.hypotheses}, '
        f'{config.window_mode} window of {config.window_size}'
    )
    print(
        'mean per frame [ms]: ' + ', '.join(f'{k} {v / n:.1f}' for k, v in timings_total.items())
    )
    print(f'wrote {out_path} ({frames_written} frames) and {json_path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
