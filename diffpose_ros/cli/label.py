"""diffpose-label: pseudo-label videos and images with offline teachers (COCO-17 JSON).

    diffpose-label --video vtest.avi:0:600 --out data/pseudo/vtest_train
    diffpose-label --video clip.mp4 --images photos/ --teachers yolo,blazepose --out data/pseudo/x

YOLO11n-pose (multi-person) finds and labels people; a tracker gives track ids; BlazePose
(single-person, run on each person's crop in its own environment) is fused in where both
teachers see a joint; each track is smoothed offline with past and future frames; unreliable
joints, people and tracks are dropped. Writes:
  OUT/frames/<sequence>/<frame>.jpg     frames the labels refer to
  OUT/labels_coco.json                  COCO keypoint format (+ track_id, keypoint_scores)
  OUT/posetrack/<sequence>.json         PoseTrack-2018-style files (vid_id, frame_id, track_id)
  OUT/report.json                       counts, teacher agreement, label jitter
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.assets import sha256_of
from diffpose_ros.labeling import (
    LabelConfig,
    annotation_entry,
    clean_track,
    coco_category,
    fuse_teachers,
    posetrack_sequence,
    teacher_agreement,
    track_jitter,
)

LOGGER = logging.getLogger('diffpose-label')
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


@dataclasses.dataclass
class LabelSequence:
    name: str
    frames: list[tuple[int, np.ndarray]]  # (frame index in the source, BGR image)
    source: str
    source_sha256: str
    fps: float
    is_video: bool


def parse_video_spec(spec: str) -> tuple[Path, int, int | None]:
    """'path[:start[:stop]]' -> (path, start, stop); stop exclusive, None = to the end."""
    parts = spec.split(':')
    path = Path(parts[0])
    start = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    stop = int(parts[2]) if len(parts) > 2 and parts[2] else None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f'bad frame range in {spec!r}: need 0 <= start < stop')
    return path, start, stop


def read_video(spec: str) -> LabelSequence:
    import cv2

    path, start, stop = parse_video_spec(spec)
    if not path.is_file():
        raise FileNotFoundError(f'video {path} does not exist')
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f'cannot open video {path}')
    fps = capture.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    index = 0
    while stop is None or index < stop:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= start:
            frames.append((index, frame))
        index += 1
    capture.release()
    if not frames:
        raise ValueError(f'{path}: no frames in range {start}:{stop}')
    end = frames[-1][0] + 1
    return LabelSequence(f'{path.stem}_{start:06d}_{end:06d}', frames, str(path.resolve()),
                     sha256_of(path), float(fps), True)


def read_images(paths: list[str]) -> list[LabelSequence]:
    import cv2

    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) \
            if p.is_dir() else [p]
    sequences = []
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            LOGGER.error('skipping %s: not a readable image', f)
            continue
        sequences.append(LabelSequence(f'image_{f.stem}', [(0, image)], str(f.resolve()),
                                   sha256_of(f), 0.0, False))
    return sequences


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='diffpose-label', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--video', action='append', default=[], metavar='PATH[:START[:STOP]]',
                        help='video to label, optionally a frame range (stop exclusive); '
                        'repeatable. Default when nothing is given: the sample vtest.avi:0:600')
    parser.add_argument('--images', action='append', default=[], metavar='PATH',
                        help='image file or folder of images (each a one-frame sequence)')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--teachers', default='yolo',
                        help="comma list: 'yolo' (required) and optionally 'blazepose' "
                        '(set up in its own environment on first use)')
    parser.add_argument('--detector-imgsz', type=int, default=1280,
                        help='YOLO input size; 1280 finds the 50-120 px people in vtest')
    parser.add_argument('--detector-weights', default=None)
    parser.add_argument('--min-box-height', type=float, default=LabelConfig.min_box_height_px)
    parser.add_argument('--keep-joint-confidence', type=float,
                        default=LabelConfig.keep_joint_confidence)
    parser.add_argument('--jpeg-quality', type=int, default=95)
    parser.add_argument('--no-progress', action='store_true')
    return parser


@dataclasses.dataclass
class _Observation:
    frame: int
    box_xyxy: np.ndarray
    score: float
    keypoints: np.ndarray         # fused (17, 3)
    yolo_keypoints: np.ndarray    # (17, 3)
    blaze_keypoints: np.ndarray | None


def label_sequence(seq: LabelSequence, detector: Any, blazepose: Any, config: LabelConfig,
                   out_dir: Path, jpeg_quality: int, progress: bool) -> dict[str, Any]:
    """Teachers over one sequence -> {'tracks': {id: [observations]}, 'frames': [paths]}."""
    import cv2
    from tqdm import tqdm

    from diffpose_ros.tracking import CameraTracker, TrackerConfig

    if blazepose is not None:
        from diffpose_ros.teachers.blazepose import keypoints_in_box

    tracker = CameraTracker(TrackerConfig(max_age_s=1.0))
    frame_dir = out_dir / 'frames' / seq.name
    frame_dir.mkdir(parents=True, exist_ok=True)
    period_ns = int(1e9 / seq.fps) if seq.fps > 0 else int(1e8)
    tracks: dict[int, list[_Observation]] = {}
    frame_files = {}
    next_single_id = 1
    for frame_index, image in tqdm(seq.frames, desc=f'label {seq.name}', unit='frame',
                                   disable=not progress, leave=False):
        file = frame_dir / f'{frame_index:06d}.jpg'
        cv2.imwrite(str(file), image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        frame_files[frame_index] = file
        detections = detector.detect(image)
        if seq.is_video:
            people = [(p.track_id, p.box_xyxy, p.score, p.keypoints)
                      for p in tracker.update(detections, frame_index * period_ns)
                      if not p.is_predicted and p.keypoints is not None]
        else:
            people = []
            for det in detections:
                people.append((next_single_id, det.box_xyxy, det.score, det.keypoints))
                next_single_id += 1
        for track_id, box, score, yolo_kpts in people:
            box = np.asarray(box, dtype=np.float64)
            yolo = np.asarray(yolo_kpts, dtype=np.float64)
            blaze = None
            if blazepose is not None and box[3] - box[1] >= config.min_box_height_px:
                blaze = keypoints_in_box(blazepose, image, box)
            size = float(max(box[2] - box[0], box[3] - box[1]))
            fused, _ = fuse_teachers(yolo, blaze, size, config)
            tracks.setdefault(track_id, []).append(
                _Observation(frame_index, box, float(score), fused, yolo, blaze))
    return {'tracks': tracks, 'frames': frame_files}


def _detector_extra(raw_keypoints: np.ndarray) -> dict[str, Any] | None:
    """YOLO's own single-frame keypoints of this person-frame: the prior training corrects."""
    if not np.all(np.isfinite(raw_keypoints)):
        return None
    return {'detector_keypoints': [[round(float(x), 2), round(float(y), 2), round(float(c), 4)]
                                   for x, y, c in raw_keypoints]}


def _track_arrays(observations: list[_Observation], frames: list[int]):
    position = {f: i for i, f in enumerate(frames)}
    kp = np.full((len(frames), 17, 3), np.nan)
    raw = np.full((len(frames), 17, 3), np.nan)
    boxes = np.full((len(frames), 4), np.nan)
    scores = np.zeros(len(frames))
    for obs in observations:
        i = position[obs.frame]
        kp[i], raw[i], boxes[i], scores[i] = obs.keypoints, obs.yolo_keypoints, obs.box_xyxy, \
            obs.score
    return kp, raw, boxes, scores


def run(args: argparse.Namespace) -> dict[str, Any]:
    from diffpose_ros.detection import UltralyticsPoseDetector

    config = LabelConfig(min_box_height_px=args.min_box_height,
                         keep_joint_confidence=args.keep_joint_confidence)
    teachers = [t.strip() for t in args.teachers.split(',') if t.strip()]
    unknown = set(teachers) - {'yolo', 'blazepose'}
    if unknown or 'yolo' not in teachers:
        raise SystemExit(f"--teachers must include 'yolo' and may add 'blazepose'; "
                         f'got {args.teachers!r}')
    if not args.video and not args.images:
        from diffpose_ros.assets import VTEST_VIDEO, asset_path

        args.video = [f'{asset_path(VTEST_VIDEO)}:0:600']
    sequences = [read_video(spec) for spec in args.video] + read_images(args.images)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    detector = UltralyticsPoseDetector(weights_path=args.detector_weights,
                                       imgsz=args.detector_imgsz, score_threshold=0.25)
    blazepose = None
    if 'blazepose' in teachers:
        from diffpose_ros.teachers.blazepose import BlazePoseTeacher, ensure_blazepose_env

        blazepose = BlazePoseTeacher(ensure_blazepose_env(log=LOGGER.info))
    started = time.perf_counter()
    dataset: dict[str, Any] = {'categories': [coco_category()], 'videos': [], 'images': [],
                               'annotations': []}
    pairs_yolo, pairs_blaze, pair_sizes = [], [], []
    jitter_raw = [0.0, 0]
    jitter_labels = [0.0, 0]
    counts = {'frames': 0, 'teacher_person_frames': 0, 'labelled_person_frames': 0,
              'dropped_person_frames': 0, 'tracks': 0, 'dropped_tracks': 0,
              'labelled_joints': 0}
    try:
        for video_id, seq in enumerate(sequences, start=1):
            result = label_sequence(seq, detector, blazepose, config, out_dir,
                                    args.jpeg_quality, not args.no_progress)
            frames = [f for f, _ in seq.frames]
            dataset['videos'].append({
                'id': video_id, 'name': seq.name, 'source': seq.source,
                'source_sha256': seq.source_sha256, 'fps': seq.fps,
                'first_frame': frames[0], 'num_frames': len(frames)})
            image_ids = {}
            for f in frames:
                image_id = video_id * 1_000_000 + f
                image_ids[f] = image_id
                height, width = seq.frames[0][1].shape[:2]
                dataset['images'].append({
                    'id': image_id,
                    'file_name': str(result['frames'][f].relative_to(out_dir)),
                    'width': width, 'height': height, 'vid_id': video_id, 'frame_id': f,
                    'is_labeled': True, 'nframes': len(frames)})
            counts['frames'] += len(frames)
            for track_id, observations in sorted(result['tracks'].items()):
                counts['tracks'] += 1
                counts['teacher_person_frames'] += len(observations)
                for obs in observations:
                    if obs.blaze_keypoints is not None:
                        pairs_yolo.append(obs.yolo_keypoints)
                        pairs_blaze.append(obs.blaze_keypoints)
                        pair_sizes.append(float(np.max(obs.box_xyxy[2:] - obs.box_xyxy[:2])))
                kp, raw, boxes, scores = _track_arrays(observations, frames)
                if seq.is_video:
                    labels, keep = clean_track(kp, boxes, config)
                    for acc, arr in ((jitter_raw, raw), (jitter_labels, labels)):
                        total, n = track_jitter(arr, boxes, config.keep_joint_confidence)
                        acc[0] += total
                        acc[1] += n
                else:
                    labels = kp.copy()
                    labels[..., 2] = np.where(labels[..., 2] >= config.keep_joint_confidence,
                                              labels[..., 2], 0.0)
                    heights = boxes[:, 3] - boxes[:, 1]
                    keep = (heights >= config.min_box_height_px) & (
                        (labels[..., 2] > 0).sum(axis=1) >= config.min_labelled_joints)
                present = np.all(np.isfinite(boxes), axis=1)
                counts['dropped_person_frames'] += int((present & ~keep).sum())
                if not keep.any():
                    counts['dropped_tracks'] += 1
                    continue
                for i in np.flatnonzero(keep):
                    counts['labelled_person_frames'] += 1
                    counts['labelled_joints'] += int((labels[i, :, 2] > 0).sum())
                    dataset['annotations'].append(annotation_entry(
                        len(dataset['annotations']) + 1, image_ids[frames[i]],
                        video_id * 10_000 + track_id, labels[i], boxes[i], scores[i],
                        extra=_detector_extra(raw[i])))
    finally:
        if blazepose is not None:
            blazepose.close()
    report = {
        'teachers': teachers,
        'detector_imgsz': args.detector_imgsz,
        'label_config': config.as_dict(),
        'counts': counts,
        'label_jitter': {
            'teacher_raw': jitter_raw[0] / jitter_raw[1] if jitter_raw[1] else None,
            'labels_smoothed': jitter_labels[0] / jitter_labels[1] if jitter_labels[1]
            else None,
            'note': 'mean keypoint acceleration / box size per frame^2 (metrics.jitter)'},
        'teacher_agreement_yolo_vs_blazepose': (
            teacher_agreement(pairs_yolo, pairs_blaze, pair_sizes) if pairs_yolo else None),
        'seconds': round(time.perf_counter() - started, 1),
    }
    dataset['info'] = {'description': 'diffpose_ros pseudo-labels', 'teachers': teachers,
                       'detector_imgsz': args.detector_imgsz,
                       'label_config': config.as_dict(),
                       'keypoint_layout': 'coco17'}
    (out_dir / 'labels_coco.json').write_text(json.dumps(dataset))
    pt_dir = out_dir / 'posetrack'
    pt_dir.mkdir(exist_ok=True)
    for video in dataset['videos']:
        (pt_dir / f"{video['name']}.json").write_text(
            json.dumps(posetrack_sequence(dataset, video['id'])))
    (out_dir / 'report.json').write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (FileNotFoundError, ValueError) as exc:
        LOGGER.error('%s', exc)
        return 2
    c = report['counts']
    LOGGER.info('%d frames, %d tracks: %d person-frames labelled (%d dropped), %d joints; '
                'label jitter %.4f -> %.4f (raw teacher -> smoothed) in %.0f s',
                c['frames'], c['tracks'], c['labelled_person_frames'],
                c['dropped_person_frames'], c['labelled_joints'],
                report['label_jitter']['teacher_raw'] or float('nan'),
                report['label_jitter']['labels_smoothed'] or float('nan'), report['seconds'])
    agreement = report['teacher_agreement_yolo_vs_blazepose']
    if agreement:
        LOGGER.info('YOLO vs BlazePose: %d joints seen by both, mean distance %.3f box, '
                    '%.0f %% within 0.1 box', agreement['joints_seen_by_both'],
                    agreement['mean_distance_per_box'],
                    100 * agreement['share_within_0.1_box'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
