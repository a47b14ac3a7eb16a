"""Evaluation of the pose pipeline: ground-truth images, a sampling grid, unlabelled video.

The engine behind ``diffpose-evaluate`` (:mod:`diffpose_ros.cli.evaluate`). Every metric comes
from :mod:`diffpose_ros.metrics`; this module runs the pipeline, collects its outputs and pools
them. ROS-free; cv2, matplotlib and tqdm are imported where they are used.

- :func:`score_predictions`: a COCO-results list against loaded ground truth (limb PCK@0.1 with
  a bootstrap interval over persons, COCO OKS AP, PCKh@0.5 where head boxes exist).
- :func:`run_images`: the pipeline on each GT image as a one-frame sequence; scores our
  keypoints and YOLO11n-pose's keypoints of the same tracked detections, plus a paired bootstrap
  interval of the difference.
- :func:`run_grid`: accuracy over steps x hypotheses x seeds, and the zeroed-heatmap ablation
  (:class:`ZeroHeatmapRuntime`).
- :func:`run_video`: jitter, lag and agreement on unlabelled video against YOLO11n-pose and its
  offline-smoothed tracks (the teacher of the pseudo-labels); jitter on the same joints for
  every system.
- :func:`run_video_gt`: a labelled video (Bonn PoseTrack, :func:`load_gt_video`): limb PCK of
  ours and YOLO on the same matched persons, jitter of ours / YOLO / GT on the same joints, lag
  vs the GT and ID switches.
- :func:`evaluate_checks`: issue 10's "done when" criteria as booleans.

Conventions: percentages are 0..100; a seed spread is the sample standard deviation
(``ddof=1``) across seeds; non-finite numbers are written to JSON as null (:func:`jsonable`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros import metrics
from diffpose_ros.config import PipelineConfig
from diffpose_ros.detection import Detection
from diffpose_ros.drawing import draw_skeleton
from diffpose_ros.metrics import GtImage
from diffpose_ros.skeleton import KEYPOINT_NAMES, NUM_KEYPOINTS

LOGGER = logging.getLogger(__name__)

PCK_THRESHOLD = 0.1  # limb PCK: fraction of the GT box's larger side
PCKH_THRESHOLD = 0.5  # PCKh: fraction of the head size
AGREEMENT_THRESHOLD = 0.1  # video agreement: fraction of the box's larger side
MIN_CONFIDENCE = 0.3  # video: joints below this (in their own source) are not scored
MIN_TRACK_FRAMES = 5  # video: shorter tracks are not scored
MAX_LAG = 5  # video: lags -5..5 frames are tried
BOOTSTRAP_RESAMPLES = 1000
FRAME_PERIOD_NS = 100_000_000  # stamps of one-frame sequences (any increasing value works)
CACHE_FORMAT = 'diffpose-evaluate-detections/1'

# Overlay colours (BGR): ground truth green, ours red, YOLO11n-pose blue.
GT_BGR = (0, 200, 0)
OURS_BGR = (0, 0, 255)
YOLO_BGR = (255, 0, 0)
TEACHER_BGR = (0, 200, 0)


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """Plain-JSON copy: numpy to Python, NaN/inf to None, tuples to lists, keys to str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``jsonable(data)`` (strict JSON, indented) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=1, allow_nan=False) + '\n')
    return path


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


# --------------------------------------------------------------------------------------------
# Wrappers: a detector that runs once per image, a runtime that never sees the noisy heatmap
# --------------------------------------------------------------------------------------------

def image_key(image: np.ndarray) -> str:
    """Content hash of an image (shape, dtype and bytes): the detection cache key."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((image.shape, str(image.dtype))).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def _copy_detection(det: Detection) -> Detection:
    return Detection(box_xyxy=np.array(det.box_xyxy, dtype=np.float32, copy=True),
                     score=float(det.score),
                     keypoints=None if det.keypoints is None
                     else np.array(det.keypoints, dtype=np.float32, copy=True))


def detector_identity(detector: Any) -> dict[str, Any]:
    """What makes a detector's outputs reproducible (a disk cache must match all of it)."""
    identity: dict[str, Any] = {'class': type(detector).__name__}
    weights = getattr(detector, 'weights_path', None)
    if weights is not None and Path(weights).is_file():
        from diffpose_ros.assets import sha256_of

        identity['weights_sha256'] = sha256_of(Path(weights))
    for name in ('imgsz', 'score_threshold', 'iou_threshold', 'max_persons'):
        value = getattr(detector, name, None)
        if value is not None:
            identity[name] = value
    return identity


class CachingDetector:
    """A :class:`PersonDetector` that runs the wrapped detector once per distinct image.

    Keyed by :func:`image_key` (content, not identity), so re-reading or re-decoding the same
    frame hits the cache. Returns copies: callers may modify what they get.
    """

    def __init__(self, detector: Any, identity: Mapping[str, Any] | None = None):
        self.detector = detector
        self.identity = dict(identity) if identity is not None else detector_identity(detector)
        self._cache: dict[str, list[Detection]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def __getattr__(self, name: str) -> Any:  # imgsz, warmup(), ... of the wrapped detector
        if name == 'detector':  # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.detector, name)

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        key = image_key(image_bgr)
        cached = self._cache.get(key)
        if cached is None:
            self.misses += 1
            cached = [_copy_detection(d) for d in self.detector.detect(image_bgr)]
            self._cache[key] = cached
        else:
            self.hits += 1
        return [_copy_detection(d) for d in cached]

    def to_json(self) -> dict[str, Any]:
        images = {}
        for key, dets in self._cache.items():
            images[key] = [{
                'box_xyxy': [float(v) for v in d.box_xyxy], 'score': float(d.score),
                'keypoints': None if d.keypoints is None
                else [[float(v) for v in row] for row in d.keypoints]} for d in dets]
        return {'format': CACHE_FORMAT, 'detector': self.identity, 'images': images}

    def load_json(self, data: Mapping[str, Any]) -> int:
        """Add cached detections from :meth:`to_json` output; returns how many images were
        added (0 when the file is of another format or another detector setting)."""
        if data.get('format') != CACHE_FORMAT:
            LOGGER.warning('detection cache: unknown format %r, ignored', data.get('format'))
            return 0
        if jsonable(data.get('detector')) != jsonable(self.identity):
            LOGGER.warning('detection cache was made by another detector setting (%s, now %s): '
                           'ignored', data.get('detector'), self.identity)
            return 0
        added = 0
        for key, dets in (data.get('images') or {}).items():
            if key in self._cache:
                continue
            self._cache[key] = [Detection(
                box_xyxy=np.asarray(d['box_xyxy'], dtype=np.float32), score=float(d['score']),
                keypoints=None if d.get('keypoints') is None
                else np.asarray(d['keypoints'], dtype=np.float32)) for d in dets]
            added += 1
        return added

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())

    def load(self, path: str | Path) -> int:
        path = Path(path)
        if not path.is_file():
            return 0
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            LOGGER.warning('detection cache %s is unreadable (%s): ignored', path, exc)
            return 0
        return self.load_json(data)


def caching(detector: Any) -> CachingDetector:
    """``detector`` itself when it already caches, else wrapped."""
    return detector if isinstance(detector, CachingDetector) else CachingDetector(detector)


class ZeroHeatmapRuntime:
    """Ablation: a :class:`PoseRuntime` whose denoiser gets zeros instead of the noisy heatmap.

    Delegates everything to the wrapped runtime; only ``denoise`` is changed, so the DDIM loop,
    the condition (features, STRL) and the decoding are untouched. If accuracy does not drop,
    the denoiser ignores its heatmap input and the "diffusion" is a plain regressor.
    """

    zeroed_heatmap = True

    def __init__(self, runtime: Any):
        self._runtime = runtime

    def __getattr__(self, name: str) -> Any:
        if name == '_runtime':
            raise AttributeError(name)
        return getattr(self._runtime, name)

    def denoise(self, model_input: np.ndarray, t: np.ndarray, person_index: np.ndarray,
                condition: Any) -> np.ndarray:
        return self._runtime.denoise(np.zeros_like(model_input), t, person_index, condition)


# --------------------------------------------------------------------------------------------
# Ground truth and predictions
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GtSet:
    """One ground-truth file, loaded in COCO-17, with where its images are."""

    name: str
    layout: str
    images: dict[int, GtImage]
    image_root: Path
    gt_path: str


def detect_file_layout(dataset: Mapping[str, Any], default: str = 'coco') -> str:
    """Layout from the first category's keypoint names (``default`` when unknown)."""
    for cat in dataset.get('categories') or []:
        if cat.get('keypoints'):
            found = metrics.detect_layout(cat['keypoints'])
            if found is not None:
                return found
    return default


def load_gt_set(gt_path: str | Path, image_root: str | Path | None = None,
                layout: str | None = None, name: str | None = None,
                max_images: int = 0,
                only_images: Callable[[str], bool] | None = None) -> GtSet:
    """Load a COCO/AIC/PoseTrack keypoint JSON.

    Args:
        gt_path: The JSON file.
        image_root: Folder the ``file_name`` entries are relative to (default: the JSON's).
        layout: 'coco', 'aic' or 'posetrack'; None = from the keypoint names (else 'coco').
        name: Label for reports (default: the file's stem).
        max_images: Keep only the first N images (0 = all).
        only_images: keep the images whose ``file_name`` passes (e.g. a validation split).
    """
    gt_path = Path(gt_path)
    dataset = json.loads(gt_path.read_text())
    if only_images is not None:
        keep = {im['id'] for im in dataset['images'] if only_images(im['file_name'])}
        dataset = {**dataset, 'images': [im for im in dataset['images'] if im['id'] in keep],
                   'annotations': [a for a in dataset['annotations'] if a['image_id'] in keep]}
    layout = layout or detect_file_layout(dataset)
    images = metrics.load_coco_keypoints(dataset, layout=layout)
    if max_images > 0:
        images = dict(list(images.items())[:max_images])
    return GtSet(name=name or gt_path.stem, layout=layout, images=images,
                 image_root=Path(image_root) if image_root else gt_path.parent,
                 gt_path=str(gt_path))


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """A COCO keypoint-results JSON: a list of {image_id, category_id, keypoints, score}."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, Mapping) and 'annotations' in data:
        data = data['annotations']
    if not isinstance(data, list):
        raise ValueError(f'{path}: expected a list of COCO keypoint results')
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or 'image_id' not in item or 'keypoints' not in item:
            raise ValueError(f'{path}: result {i} needs image_id and keypoints')
    return data


def predictions_by_image(results: Iterable[Mapping[str, Any]]) -> dict[int, np.ndarray]:
    """COCO results -> image_id -> (P, 17, 3) float64 x, y, confidence."""
    grouped: dict[int, list[np.ndarray]] = {}
    for i, res in enumerate(results):
        kp = np.asarray(res['keypoints'], dtype=np.float64).reshape(-1)
        if kp.size != 3 * NUM_KEYPOINTS:
            raise ValueError(f'result {i}: {kp.size} keypoint values, need {3 * NUM_KEYPOINTS}')
        grouped.setdefault(int(res['image_id']), []).append(kp.reshape(NUM_KEYPOINTS, 3))
    return {k: np.stack(v) for k, v in grouped.items()}


def persons_to_results(image_id: int, persons: Sequence[Any],
                       detector: bool = False) -> list[dict[str, Any]]:
    """Pipeline persons -> COCO results (ours, or the detector's keypoints), scored by the
    detection score (the same ranking for both, so AP compares keypoints only)."""
    rows = [(p.detector_keypoints if detector else p.keypoints, p.score) for p in persons]
    rows = [(k, s) for k, s in rows if k is not None]
    if not rows:
        return []
    return metrics.coco_results(image_id, np.stack([k for k, _ in rows]),
                                np.array([s for _, s in rows]))


def blazepose_results(teacher: Any, image_id: int, image_bgr: np.ndarray,
                      persons: Sequence[Any]) -> list[dict[str, Any]]:
    """BlazePose on each estimated person's box -> COCO results (same scores as ours)."""
    from diffpose_ros.teachers.blazepose import keypoints_in_box

    rows = []
    for person in persons:
        keypoints = keypoints_in_box(teacher, image_bgr, np.asarray(person.box_xyxy))
        if keypoints is not None:
            rows.append((keypoints, person.score))
    if not rows:
        return []
    return metrics.coco_results(image_id, np.stack([k for k, _ in rows]),
                                np.array([s for _, s in rows]))


def detections_to_results(image_id: int, detections: Sequence[Detection]) -> list[dict]:
    rows = [d for d in detections if d.keypoints is not None]
    if not rows:
        return []
    return metrics.coco_results(image_id, np.stack([d.keypoints for d in rows]),
                                np.array([d.score for d in rows]))


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Score:
    """Scores of one prediction set: the per-person limb PCK rows and a JSON-ready summary."""

    pck: metrics.PckResult
    summary: dict[str, Any]


def _evaluable(person: metrics.GtPerson) -> bool:
    return not person.iscrowd and bool(person.labelled.any())


def _head_box_images(gt: Mapping[int, GtImage]) -> dict[int, GtImage]:
    """Images whose every scorable person has a head box (PCKh needs one per person)."""
    out = {}
    for image_id, image in gt.items():
        people = [p for p in image.persons if _evaluable(p)]
        if people and all(p.head_box_xywh is not None for p in people):
            out[image_id] = image
    return out


def score_predictions(gt: Mapping[int, GtImage], results: Sequence[Mapping[str, Any]],
                      layout: str = 'coco', n_resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> Score:
    """Limb PCK@0.1 (+ 95% bootstrap interval over persons), COCO OKS AP, PCKh@0.5.

    Predictions on images absent from ``gt`` are ignored (counted). PCKh and its AP are
    computed on the images whose scorable persons all have head boxes (PoseTrack), else None.

    Args:
        gt: image_id -> GtImage (:func:`metrics.load_coco_keypoints`).
        results: COCO keypoint results (image_id, keypoints 51 numbers, score).
        layout: Layout the GT came from.
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed (fixed: the same predictions give the same interval).
    """
    known = [r for r in results if int(r['image_id']) in gt]
    preds = predictions_by_image(known)
    pck = metrics.limb_pck(preds, gt, threshold=PCK_THRESHOLD, layout=layout)
    if len(pck.matched) and pck.per_person_labelled.sum() > 0:
        ci = metrics.bootstrap_ci(pck.per_person_correct, pck.per_person_labelled,
                                  n_resamples=n_resamples, seed=seed)
    else:
        ci = (math.nan, math.nan)
    ap = metrics.coco_oks_ap(gt, known, layout=layout)
    head_images = _head_box_images(gt)
    pckh = None
    if head_images:
        result = metrics.pckh(preds, head_images, threshold=PCKH_THRESHOLD, layout=layout)
        pckh = {**result.to_dict(), 'num_images': len(head_images)}
    summary = {
        'layout': layout,
        'num_images': len(gt),
        'num_predictions': len(known),
        'num_predictions_on_unknown_images': len(results) - len(known),
        'limb_pck': {**pck.to_dict(), 'ci95_percent': list(ci),
                     'bootstrap_resamples': n_resamples, 'bootstrap_seed': seed},
        'oks_ap_percent': ap,
        'pckh': pckh,
    }
    return Score(pck=pck, summary=summary)


def paired_difference(a: Score, b: Score, n_resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> dict[str, Any]:
    """PCK(a) - PCK(b) on the same GT persons with a paired bootstrap interval."""
    if not np.array_equal(a.pck.labelled, b.pck.labelled) or \
            not np.array_equal(a.pck.image_ids, b.pck.image_ids):
        raise ValueError('paired difference needs both scores on the same GT persons')
    diff = a.pck.pck_percent - b.pck.pck_percent
    if a.pck.per_person_labelled.sum() > 0:
        ci = metrics.bootstrap_diff_ci(a.pck.per_person_correct, b.pck.per_person_correct,
                                       a.pck.per_person_labelled, n_resamples=n_resamples,
                                       seed=seed)
    else:
        ci = (math.nan, math.nan)
    return {'points': diff, 'ci95_points': list(ci), 'paired_bootstrap_over_persons': True}


def ci_overlaps_or_beats(ours_ci: Sequence[float], theirs_ci: Sequence[float]) -> bool:
    """Our interval reaches theirs (overlap) or lies above it."""
    lo_theirs, hi_ours = _nan_if_none(theirs_ci[0]), _nan_if_none(ours_ci[1])
    return bool(hi_ours >= lo_theirs)


# --------------------------------------------------------------------------------------------
# Running the pipeline
# --------------------------------------------------------------------------------------------

def make_pipeline(config: PipelineConfig, runtime: Any, detector: Any) -> Any:
    from diffpose_ros.pipeline import PosePipeline

    return PosePipeline(config, runtime, detector)


def estimate_single_image(pipeline: Any, image_bgr: np.ndarray, stamp_ns: int) -> list[Any]:
    """The pipeline on one image as a sequence of its own (reset first; a causal window pads
    with the same frame; a centred one is flushed)."""
    pipeline.reset()
    result = pipeline.process(image_bgr, stamp_ns)
    results = [result] if result is not None else pipeline.flush()
    return list(results[-1].persons) if results else []


def read_image(path: str | Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return image


def runtime_info(runtime: Any, config: PipelineConfig) -> dict[str, Any]:
    """What every output JSON records about the model and sampling."""
    return {
        'trained': bool(runtime.trained),
        'backend': getattr(runtime, 'name', config.backend),
        'providers': list(getattr(runtime, 'providers', []) or []),
        'steps': config.steps, 'hypotheses': config.hypotheses, 'seed': config.seed,
        'window_mode': config.window_mode, 'window_size': config.window_size,
        'ddim_eta': config.ddim_eta,
    }


def _progress(iterable: Any = None, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


@dataclasses.dataclass
class ImagesRun:
    summary: dict[str, Any]
    ours_results: list[dict[str, Any]]
    yolo_results: list[dict[str, Any]]


def run_images(runtime: Any, detector: Any, config: PipelineConfig, gt_set: GtSet, *,
               overlay_dir: str | Path | None = None, progress: bool = True,
               n_resamples: int = BOOTSTRAP_RESAMPLES, blazepose: Any = None) -> ImagesRun:
    """Our keypoints and YOLO11n-pose's (same tracked detections) against one GT set.

    Each image is a one-frame sequence. ``yolo`` scores the detector keypoints of exactly the
    persons the pipeline estimated (the paired comparison); ``yolo_all_detections`` scores every
    raw detection (the same persons unless more than ``max_persons`` were detected). With a
    ``blazepose`` teacher, BlazePose on the same persons' boxes is scored too (a person it finds
    no pose for counts as missed).
    """
    start = time.perf_counter()
    detector = caching(detector)
    pipeline = make_pipeline(config, runtime, detector)
    ours, yolo, yolo_all, blaze, per_image = [], [], [], [], []
    items = list(gt_set.images.values())
    for index, image in enumerate(_progress(items, desc=f'images {gt_set.name}', unit='image',
                                            disable=not progress)):
        bgr = read_image(gt_set.image_root / image.file_name)
        persons = estimate_single_image(pipeline, bgr, index * FRAME_PERIOD_NS)
        detections = detector.detect(bgr)  # cached: the pipeline just ran it on this image
        ours_i = persons_to_results(image.image_id, persons)
        yolo_i = persons_to_results(image.image_id, persons, detector=True)
        ours += ours_i
        yolo += yolo_i
        yolo_all += detections_to_results(image.image_id, detections)
        if blazepose is not None:
            blaze += blazepose_results(blazepose, image.image_id, bgr, persons)
        per_image.append({'image_id': image.image_id, 'file_name': image.file_name,
                          'gt_persons': sum(_evaluable(p) for p in image.persons),
                          'detections': len(detections), 'persons_estimated': len(persons)})
        if overlay_dir is not None:
            write_overlay(Path(overlay_dir) / f'{gt_set.name}_{image.image_id}.png', bgr,
                          image, ours_i, yolo_i)
    gt = gt_set.images
    s_ours = score_predictions(gt, ours, gt_set.layout, n_resamples=n_resamples)
    s_yolo = score_predictions(gt, yolo, gt_set.layout, n_resamples=n_resamples)
    s_all = score_predictions(gt, yolo_all, gt_set.layout, n_resamples=n_resamples)
    ours_ci = s_ours.summary['limb_pck']['ci95_percent']
    yolo_ci = s_yolo.summary['limb_pck']['ci95_percent']
    summary = {
        **runtime_info(runtime, config),
        'gt': gt_set.gt_path, 'gt_name': gt_set.name, 'image_root': str(gt_set.image_root),
        'layout': gt_set.layout, 'detector_imgsz': getattr(detector, 'imgsz', None),
        'num_images': len(items),
        'num_detections': sum(r['detections'] for r in per_image),
        'num_persons_estimated': sum(r['persons_estimated'] for r in per_image),
        'ours': s_ours.summary,
        'yolo': s_yolo.summary,
        'yolo_all_detections': s_all.summary,
        'ours_minus_yolo_limb_pck': paired_difference(s_ours, s_yolo, n_resamples=n_resamples),
        'ours_ci_overlaps_or_beats_yolo': ci_overlaps_or_beats(ours_ci, yolo_ci),
        'per_image': per_image,
        'elapsed_s': time.perf_counter() - start,
    }
    if blazepose is not None:
        s_blaze = score_predictions(gt, blaze, gt_set.layout, n_resamples=n_resamples)
        summary['blazepose'] = s_blaze.summary
        summary['ours_minus_blazepose_limb_pck'] = paired_difference(
            s_ours, s_blaze, n_resamples=n_resamples)
    return ImagesRun(summary=summary, ours_results=ours, yolo_results=yolo)


def run_zeroed_input_ablation(runtime: Any, detector: Any, config: PipelineConfig,
                              gt_set: GtSet, ours_results: Sequence[Mapping[str, Any]], *,
                              n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """The zeroed-input ablation on one photo set, paired with a normal run's predictions.

    ``ours_results``: the normal pipeline's predictions on ``gt_set`` (same runtime, detector
    and config). ``cost_limb_pck`` is PCK(normal) - PCK(noisy heatmap zeroed) on the same
    persons: positive when the denoiser's input helps, negative when the input carries the
    detector's mistakes into the output.
    """
    zeroed = run_images(ZeroHeatmapRuntime(runtime), detector, config, gt_set, progress=False,
                        n_resamples=n_resamples)
    s_normal = score_predictions(gt_set.images, ours_results, gt_set.layout,
                                 n_resamples=n_resamples)
    s_zeroed = score_predictions(gt_set.images, zeroed.ours_results, gt_set.layout,
                                 n_resamples=n_resamples)
    return {'gt_name': gt_set.name, 'steps': config.steps, 't_start': config.t_start,
            'normal_limb_pck_percent': s_normal.summary['limb_pck']['pck_percent'],
            'zeroed_limb_pck_percent': s_zeroed.summary['limb_pck']['pck_percent'],
            'num_labelled_joints': s_normal.summary['limb_pck']['num_labelled_joints'],
            'normal_oks_ap_percent': s_normal.summary['oks_ap_percent']['AP'],
            'zeroed_oks_ap_percent': s_zeroed.summary['oks_ap_percent']['AP'],
            'cost_limb_pck': paired_difference(s_normal, s_zeroed, n_resamples=n_resamples)}


def pooled_zeroed_input_cost(ablations: Sequence[Mapping[str, Any]]) -> float:
    """PCK(normal) - PCK(zeroed) over several sets, weighted by their labelled limb joints."""
    weights = [a['num_labelled_joints'] for a in ablations]
    if not sum(weights):
        return math.nan
    return sum(a['cost_limb_pck']['points'] * w for a, w in zip(ablations, weights)) / sum(weights)


# --------------------------------------------------------------------------------------------
# Grid: steps x hypotheses x seeds, and the zeroed-heatmap ablation
# --------------------------------------------------------------------------------------------

def merge_gt_sets(gt_sets: Sequence[GtSet]) -> tuple[dict[int, GtImage], dict[int, str],
                                                     list[tuple[int, Path]]]:
    """Pool several GT sets under new image ids 1..N (ids may collide across files).

    Returns:
        merged image_id -> GtImage (COCO-17), image_id -> layout, [(image_id, image path)].
    """
    merged: dict[int, GtImage] = {}
    layouts: dict[int, str] = {}
    paths: list[tuple[int, Path]] = []
    for gt_set in gt_sets:
        for image in gt_set.images.values():
            uid = len(merged) + 1
            merged[uid] = dataclasses.replace(image, image_id=uid)
            layouts[uid] = gt_set.layout
            paths.append((uid, gt_set.image_root / image.file_name))
    return merged, layouts, paths


def pooled_limb_pck(gt: Mapping[int, GtImage], layouts: Mapping[int, str],
                    results: Sequence[Mapping[str, Any]]) -> tuple[float, np.ndarray, np.ndarray]:
    """Limb PCK pooled over persons of GT images of several layouts.

    Returns:
        (PCK percent, per-person correct, per-person labelled).
    """
    preds = predictions_by_image(results)
    correct, labelled = [], []
    for layout in dict.fromkeys(layouts.values()):
        subset = {i: img for i, img in gt.items() if layouts[i] == layout}
        pck = metrics.limb_pck(preds, subset, threshold=PCK_THRESHOLD, layout=layout)
        correct.append(pck.per_person_correct)
        labelled.append(pck.per_person_labelled)
    c = np.concatenate(correct) if correct else np.zeros(0, np.int64)
    n = np.concatenate(labelled) if labelled else np.zeros(0, np.int64)
    total = int(n.sum())
    return (100.0 * int(c.sum()) / total if total else math.nan), c, n


def _spread(values: Sequence[float]) -> float:
    vals = np.asarray(values, dtype=np.float64)
    return float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _cell(steps: int, hypotheses: int, zeroed: bool, pcks: list[float],
          aps: list[float], seeds: Sequence[int]) -> dict[str, Any]:
    return {'steps': steps, 'hypotheses': hypotheses, 'zeroed_heatmap': zeroed,
            'seeds': list(seeds),
            'limb_pck_per_seed': pcks, 'oks_ap_per_seed': aps,
            'limb_pck_mean': float(np.mean(pcks)), 'limb_pck_std': _spread(pcks),
            'oks_ap_mean': float(np.mean(aps)), 'oks_ap_std': _spread(aps)}


def analyse_grid(cells: Sequence[Mapping[str, Any]],
                 ablation_cells: Sequence[Mapping[str, Any]] = (),
                 tolerance_points: float = 1.0) -> dict[str, Any]:
    """Headline figures of a grid (limb PCK means and seed spreads of the cells).

    - best steps per hypotheses count (ties: fewer steps) and 1-step minus best;
    - whether more hypotheses ever cost more than the seed spread: for every step count and
      every pair h < h', ``mean(h) - mean(h') > max(std(h), std(h'))``;
    - ablation: cost = mean(normal, steps, 1 hypothesis) - mean(zeroed); the zeroed heatmap
      "costs accuracy" when at some step count the cost exceeds the larger seed spread of
      the two rows (at 1 step from pure noise the input carries almost nothing even for a
      well-trained model, so requiring it at every step count would be wrong).
    """
    normal = {(c['steps'], c['hypotheses']): c for c in cells if not c['zeroed_heatmap']}
    steps_all = sorted({s for s, _ in normal})
    hyps_all = sorted({h for _, h in normal})
    best_by_h, one_minus_best = {}, {}
    for h in hyps_all:
        row = {s: normal[(s, h)]['limb_pck_mean'] for s in steps_all if (s, h) in normal}
        best = max(row, key=lambda s: (row[s], -s))
        best_by_h[h] = best
        if 1 in row:
            one_minus_best[h] = row[1] - row[best]
    headline_h = 1 if 1 in hyps_all else (hyps_all[0] if hyps_all else None)
    cases = []
    for s in steps_all:
        hs = [h for h in hyps_all if (s, h) in normal]
        for i, h_lo in enumerate(hs):
            for h_hi in hs[i + 1:]:
                lo, hi = normal[(s, h_lo)], normal[(s, h_hi)]
                drop = lo['limb_pck_mean'] - hi['limb_pck_mean']
                spread = max(lo['limb_pck_std'], hi['limb_pck_std'])
                if drop > spread:
                    cases.append({'steps': s, 'fewer_hypotheses': h_lo,
                                  'more_hypotheses': h_hi, 'drop_points': drop,
                                  'seed_spread_points': spread})
    rows = []
    for z in ablation_cells:
        ref = normal.get((z['steps'], 1))
        if ref is None:
            continue
        cost = ref['limb_pck_mean'] - z['limb_pck_mean']
        spread = max(ref['limb_pck_std'], z['limb_pck_std'])
        rows.append({'steps': z['steps'],
                     'normal_limb_pck_mean': ref['limb_pck_mean'],
                     'normal_limb_pck_std': ref['limb_pck_std'],
                     'zeroed_limb_pck_mean': z['limb_pck_mean'],
                     'zeroed_limb_pck_std': z['limb_pck_std'],
                     'normal_oks_ap_mean': ref['oks_ap_mean'],
                     'zeroed_oks_ap_mean': z['oks_ap_mean'],
                     'cost_points': cost, 'seed_spread_points': spread,
                     'costs_more_than_spread': bool(cost > spread and cost > 0)})
    best_cell = max(normal.values(), key=lambda c: (c['limb_pck_mean'], -c['steps'],
                                                    -c['hypotheses'])) if normal else None
    worst_one_step = min(one_minus_best.values()) if one_minus_best else math.nan
    return {
        'headline_hypotheses': headline_h,
        'best_steps': best_by_h.get(headline_h),
        'one_step_minus_best_points': one_minus_best.get(headline_h, math.nan),
        'best_steps_by_hypotheses': best_by_h,
        'one_step_minus_best_points_by_hypotheses': one_minus_best,
        'worst_one_step_minus_best_points': worst_one_step,
        'one_step_within_tolerance_of_best': bool(worst_one_step >= -tolerance_points),
        'tolerance_points': tolerance_points,
        'best_cell': None if best_cell is None else {
            k: best_cell[k] for k in ('steps', 'hypotheses', 'limb_pck_mean', 'limb_pck_std',
                                      'oks_ap_mean', 'oks_ap_std')},
        'more_hypotheses_ever_cost_more_than_seed_spread': bool(cases),
        'hypotheses_cost_cases': cases,
        'ablation': rows,
        'zeroed_heatmap_costs_accuracy': any(r['costs_more_than_spread'] for r in rows),
    }


def run_grid(runtime: Any, detector: Any, config: PipelineConfig, gt_sets: Sequence[GtSet],
             steps_list: Sequence[int] = (1, 2, 4, 8),
             hypotheses_list: Sequence[int] = (1, 2, 4, 8),
             seeds: Sequence[int] = (0, 1, 2, 3, 4),
             ablation_steps: Sequence[int] = (1, 2, 4), *, progress: bool = True
             ) -> dict[str, Any]:
    """Limb PCK and OKS AP (persons of all GT sets pooled) per steps x hypotheses x seed.

    Detections come from one :class:`CachingDetector` (YOLO runs once per image for the whole
    grid); the backbone and STRL are re-run per configuration (cheap next to the denoiser).
    The ablation re-runs ``ablation_steps`` x 1 hypothesis with :class:`ZeroHeatmapRuntime`;
    the normal (steps, 1) cells it is compared with are run too when the grid lacks them.
    """
    start = time.perf_counter()
    detector = caching(detector)
    merged, layouts, paths = merge_gt_sets(gt_sets)
    frames = [(uid, read_image(path)) for uid, path in paths]
    seeds = list(seeds)
    runs = [(s, h, False) for s in steps_list for h in hypotheses_list]
    runs += [(s, 1, False) for s in ablation_steps if (s, 1, False) not in runs]
    runs += [(s, 1, True) for s in ablation_steps]
    zeroed_runtime = ZeroHeatmapRuntime(runtime)
    bar = _progress(total=len(runs) * len(seeds) * len(frames), desc='grid', unit='image',
                    disable=not progress)
    cells = []
    for steps, hyps, zeroed in runs:
        pcks, aps = [], []
        for seed in seeds:
            cfg = config.replace(steps=steps, hypotheses=hyps, seed=seed)
            pipeline = make_pipeline(cfg, zeroed_runtime if zeroed else runtime, detector)
            results = []
            for k, (uid, bgr) in enumerate(frames):
                results += persons_to_results(
                    uid, estimate_single_image(pipeline, bgr, k * FRAME_PERIOD_NS))
                bar.update(1)
            pcks.append(pooled_limb_pck(merged, layouts, results)[0])
            aps.append(metrics.coco_oks_ap(merged, results)['AP'])
        cells.append(_cell(steps, hyps, zeroed, pcks, aps, seeds))
    bar.close()
    grid_keys = {(s, h) for s in steps_list for h in hypotheses_list}
    main = [c for c in cells if not c['zeroed_heatmap']]
    ablation = [c for c in cells if c['zeroed_heatmap']]
    _, _, labelled = pooled_limb_pck(merged, layouts, [])
    return {
        **runtime_info(runtime, config),
        'steps': None, 'hypotheses': None, 'seed': None,  # varied: see the lists below
        'steps_list': list(steps_list), 'hypotheses_list': list(hypotheses_list),
        'seeds': seeds, 'ablation_steps': list(ablation_steps),
        'gt_sets': [{'name': g.name, 'gt': g.gt_path, 'layout': g.layout,
                     'num_images': len(g.images)} for g in gt_sets],
        'num_images': len(frames), 'num_gt_persons': int(len(labelled)),
        'num_labelled_limb_joints': int(labelled.sum()),
        'detector_imgsz': getattr(detector, 'imgsz', None),
        'spread': 'sample standard deviation (ddof=1) across seeds',
        'cells': [c for c in main if (c['steps'], c['hypotheses']) in grid_keys],
        'extra_cells': [c for c in main if (c['steps'], c['hypotheses']) not in grid_keys],
        'ablation_cells': ablation,
        **analyse_grid(main, ablation),
        'detector_cache': {'images': len(detector), 'hits': detector.hits,
                           'misses': detector.misses},
        'elapsed_s': time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------
# Video: jitter, lag and agreement without labels
# --------------------------------------------------------------------------------------------

def read_video(path: str | Path, start: int = 0, stop: int | None = None
               ) -> tuple[float, int, Iterator[tuple[int, np.ndarray]]]:
    """(fps, number of frames that will be read, iterator of (frame index, BGR image)).

    Frames [start, stop) (stop None = to the end), decoded sequentially (seeking is codec
    dependent).
    """
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FileNotFoundError(f'cannot open video {path}')
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) or 10.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if stop is None and count <= 0:
        capture.release()
        raise ValueError(f'{path}: the frame count is unknown; give the stop frame')
    stop = count if stop is None or (count and stop > count) else stop
    if not 0 <= start < stop:
        capture.release()
        raise ValueError(f'bad frame range [{start}, {stop}) for a {count}-frame video')

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        try:
            for _ in range(start):
                capture.grab()
            for index in range(start, stop):
                ok, image = capture.read()
                if not ok:
                    LOGGER.warning('%s: cannot read frame %d, stopping', path, index)
                    return
                yield index, image
        finally:
            capture.release()

    return fps, stop - start, frames()


def read_frames(path: str | Path, first: int, count: int) -> list[np.ndarray]:
    """Frames [first, first + count) as a list; ValueError unless all of them decode."""
    _, _, frames = read_video(path, first, first + count)
    images = [image for _, image in frames]
    if len(images) != count:
        raise ValueError(f'{path}: decoded {len(images)} of frames [{first}, {first + count})')
    return images


@dataclasses.dataclass
class TrackSeries:
    """One track over consecutive frames (NaN rows where it was not reported)."""

    track_id: int
    frames: np.ndarray  # (T,) source frame indices
    ours: np.ndarray  # (T, 17, 3)
    yolo: np.ndarray  # (T, 17, 3) the detector's keypoints
    boxes: np.ndarray  # (T, 4) xyxy
    present: np.ndarray  # (T,) bool

    @property
    def num_frames(self) -> int:
        return int(self.present.sum())


def _conf_valid(kp: np.ndarray, min_confidence: float) -> np.ndarray:
    return np.nan_to_num(kp[..., 2], nan=-1.0) >= min_confidence


def _lag_pair_counts(ours: np.ndarray, ref: np.ndarray, valid: np.ndarray,
                     ref_valid: np.ndarray, sizes: np.ndarray, max_lag: int) -> dict[int, int]:
    """Pairs behind each value of :func:`metrics.lag_profile` (same masks), for pooling."""
    ok = np.all(np.isfinite(ours[..., :2]), axis=2) & valid
    good = np.isfinite(sizes) & (sizes > 0)
    ref_ok = np.all(np.isfinite(ref[..., :2]), axis=2) & ref_valid & good[:, None]
    n = len(ours)
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        t0, t1 = max(0, -lag), min(n, n - lag)
        out[lag] = int((ok[t0 + lag:t1 + lag] & ref_ok[t0:t1]).sum()) if t1 > t0 else 0
    return out


def _agreement_weight(ref: np.ndarray, ref_valid: np.ndarray, sizes: np.ndarray) -> int:
    good = np.isfinite(sizes) & (sizes > 0)
    return int((np.all(np.isfinite(ref[..., :2]), axis=2) & ref_valid & good[:, None]).sum())


def shared_jitter_mask(*tracks: np.ndarray, min_confidence: float | None = None,
                       confident: Sequence[np.ndarray] = ()) -> np.ndarray:
    """(T, J) joints every system is scored on: finite x, y in all of ``tracks`` and, with
    ``min_confidence``, confidence >= min_confidence in each of ``confident``.

    With this one mask passed to :func:`metrics.acceleration_norms` for every system, an
    acceleration term (which needs the joint valid in all three frames) exists for all of them
    or for none: the jitters average the same joint-frames.
    """
    mask = np.ones(np.asarray(tracks[0]).shape[:2], dtype=bool)
    for kp in tracks:
        mask &= np.all(np.isfinite(np.asarray(kp, dtype=np.float64)[..., :2]), axis=2)
    if min_confidence is not None:
        for kp in confident:
            mask &= _conf_valid(np.asarray(kp, dtype=np.float64), min_confidence)
    return mask


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 and math.isfinite(num) else math.nan


def _weighted(values: Sequence[float], weights: Sequence[int]) -> float:
    pairs = [(v, w) for v, w in zip(values, weights) if w > 0 and math.isfinite(v)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else math.nan


def analyse_tracks(tracks: Sequence[TrackSeries], min_track_frames: int = MIN_TRACK_FRAMES,
                   min_confidence: float = MIN_CONFIDENCE, max_lag: int = MAX_LAG,
                   agreement_threshold: float = AGREEMENT_THRESHOLD) -> dict[str, Any]:
    """Temporal metrics pooled over tracks of >= ``min_track_frames`` frames.

    The teacher is :func:`labeling.smooth_track_quadratic` of each track's YOLO keypoints
    (centred, offline). Jitter is scored on the SAME joint-frames for ours, YOLO and the
    teacher (:func:`shared_jitter_mask`): where ours AND YOLO report confidence >=
    min_confidence (and all three are finite); a term needs that in all three of its frames.
    Scoring each source on its own confident joints (``jitter_own_masks``, the metric before
    this fix) flatters the source that reports low confidence on its hardest joints. Lag and
    agreement still use each source's own mask (the teacher keeps YOLO's confidences).
    Pooling: jitter = mean of all acceleration terms; agreement weighted by scored teacher
    joints; lag = argmin of the lag profiles summed with their pair counts as weights (ties:
    smallest |lag|, then the negative one).
    """
    from diffpose_ros.labeling import LabelConfig, smooth_track_quadratic

    label_cfg = LabelConfig()
    terms = {'ours': [], 'yolo': [], 'teacher': []}
    own_terms = {'ours': [], 'yolo': [], 'teacher': []}
    lag_num: dict[int, float] = {}
    lag_den: dict[int, int] = {}
    agree = {'ours': ([], []), 'yolo': ([], [])}
    per_track = []
    used = []
    for track in tracks:
        if track.num_frames < min_track_frames:
            continue
        used.append(track)
        sizes = metrics.box_sizes_from_xyxy(track.boxes)
        teacher = smooth_track_quadratic(track.yolo, label_cfg.smooth_half_window,
                                         label_cfg.smooth_sigma_frames)
        v_ours = _conf_valid(track.ours, min_confidence)
        v_yolo = _conf_valid(track.yolo, min_confidence)
        v_teacher = _conf_valid(teacher, min_confidence)
        shared = shared_jitter_mask(track.ours, track.yolo, teacher,
                                    min_confidence=min_confidence,
                                    confident=(track.ours, track.yolo))
        t_ours = metrics.acceleration_norms(track.ours, sizes, shared)
        t_yolo = metrics.acceleration_norms(track.yolo, sizes, shared)
        t_teacher = metrics.acceleration_norms(teacher, sizes, shared)
        terms['ours'].append(t_ours)
        terms['yolo'].append(t_yolo)
        terms['teacher'].append(t_teacher)
        o_ours = metrics.acceleration_norms(track.ours, sizes, v_ours)
        o_yolo = metrics.acceleration_norms(track.yolo, sizes, v_yolo)
        own_terms['ours'].append(o_ours)
        own_terms['yolo'].append(o_yolo)
        own_terms['teacher'].append(metrics.acceleration_norms(teacher, sizes, v_teacher))
        n = len(track.frames)
        track_max_lag = min(max_lag, n - 1)
        profile = metrics.lag_profile(track.ours, teacher, max_lag=track_max_lag, valid=v_ours,
                                      reference_valid=v_teacher, box_sizes=sizes)
        counts = _lag_pair_counts(track.ours, teacher, v_ours, v_teacher, sizes, track_max_lag)
        _pool_lag(lag_num, lag_den, profile, counts)
        try:
            lag = metrics.lag_frames(track.ours, teacher, max_lag=track_max_lag, valid=v_ours,
                                     reference_valid=v_teacher, box_sizes=sizes)
        except ValueError:
            lag = None
        weight = _agreement_weight(teacher, v_teacher, sizes)
        a_ours = metrics.agreement(track.ours, teacher, sizes, agreement_threshold,
                                   valid=v_ours, reference_valid=v_teacher)
        a_yolo = metrics.agreement(track.yolo, teacher, sizes, agreement_threshold,
                                   valid=v_yolo, reference_valid=v_teacher)
        for key, value in (('ours', a_ours), ('yolo', a_yolo)):
            agree[key][0].append(value)
            agree[key][1].append(weight)
        per_track.append({
            'track_id': track.track_id, 'frames': track.num_frames,
            'first_frame': int(track.frames[0]), 'last_frame': int(track.frames[-1]),
            'jitter_ours': _mean(t_ours), 'jitter_yolo': _mean(t_yolo),
            'jitter_terms': int(t_ours.size),
            'jitter_ours_own_mask': _mean(o_ours), 'jitter_yolo_own_mask': _mean(o_yolo),
            'lag_frames': lag, 'agreement_ours_percent': a_ours,
            'agreement_yolo_percent': a_yolo, 'teacher_joints_scored': weight})
    pooled = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in terms.items()}
    jit = {k: _mean(v) for k, v in pooled.items()}
    own = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in own_terms.items()}
    own_jit = {k: _mean(v) for k, v in own.items()}
    pooled_lag, profile = _pooled_lag(lag_num, lag_den)
    ratio = _ratio(jit['ours'], jit['yolo'])
    return {
        'min_track_frames': min_track_frames, 'min_confidence': min_confidence,
        'num_tracks': len(tracks), 'num_tracks_used': len(used),
        'person_frames_used': sum(t.num_frames for t in used),
        'jitter': {
            'definition': 'mean box-normalised keypoint acceleration (metrics.jitter), '
                          'pooled over the used tracks, on the same joint-frames for every '
                          'system: ours and YOLO both with confidence >= min_confidence in '
                          'all three frames of a term',
            'mask': 'shared (ours and YOLO confident)',
            'ours': jit['ours'], 'yolo_raw': jit['yolo'], 'teacher_smoothed': jit['teacher'],
            'ratio_ours_over_yolo': ratio, 'terms': int(pooled['ours'].size),
            'terms_ours': int(pooled['ours'].size), 'terms_yolo': int(pooled['yolo'].size),
            'terms_teacher': int(pooled['teacher'].size)},
        'jitter_own_masks': {
            'definition': 'the former metric: each source scored on its own joints with '
                          'confidence >= min_confidence (flatters a source with low '
                          'confidences; kept to restate old figures)',
            'ours': own_jit['ours'], 'yolo_raw': own_jit['yolo'],
            'teacher_smoothed': own_jit['teacher'],
            'ratio_ours_over_yolo': _ratio(own_jit['ours'], own_jit['yolo']),
            'terms_ours': int(own['ours'].size), 'terms_yolo': int(own['yolo'].size),
            'terms_teacher': int(own['teacher'].size)},
        'lag': {
            'definition': 'positive = ours late vs the smoothed teacher (metrics.lag_frames)',
            'pooled_frames': pooled_lag, 'pooled_profile': profile,
            'pooled_pairs': {lag: lag_den[lag] for lag in sorted(lag_den)},
            'max_lag': max_lag},
        'agreement': {
            'threshold': agreement_threshold,
            'ours_vs_teacher_percent': _weighted(*agree['ours']),
            'yolo_raw_vs_teacher_percent': _weighted(*agree['yolo']),
            'teacher_joints_scored': int(sum(agree['ours'][1]))},
        'per_track': per_track,
    }


@dataclasses.dataclass
class VideoRun:
    summary: dict[str, Any]
    tracks: list[TrackSeries]
    teachers: dict[int, np.ndarray]  # track id -> (T, 17, 3) smoothed teacher
    overlay_frames: dict[int, np.ndarray]  # source frame index -> BGR image


def collect_tracks(records: Sequence[tuple[int, Any]]) -> list[TrackSeries]:
    """[(source frame index, PersonPose)] -> one :class:`TrackSeries` per track id."""
    by_track: dict[int, dict[int, Any]] = {}
    for frame, person in records:
        by_track.setdefault(int(person.track_id), {})[int(frame)] = person
    tracks = []
    for track_id, frames in sorted(by_track.items()):
        first, last = min(frames), max(frames)
        n = last - first + 1
        ours = np.full((n, NUM_KEYPOINTS, 3), np.nan)
        yolo = np.full((n, NUM_KEYPOINTS, 3), np.nan)
        boxes = np.full((n, 4), np.nan)
        present = np.zeros(n, dtype=bool)
        for frame, person in frames.items():
            t = frame - first
            ours[t] = person.keypoints
            if person.detector_keypoints is not None:
                yolo[t] = person.detector_keypoints
            boxes[t] = person.box_xyxy
            present[t] = True
        tracks.append(TrackSeries(track_id=track_id, frames=np.arange(first, last + 1),
                                  ours=ours, yolo=yolo, boxes=boxes, present=present))
    return tracks


def run_video(runtime: Any, detector: Any, config: PipelineConfig,
              frames: Iterable[tuple[int, np.ndarray]], fps: float, *,
              total: int | None = None, overlay_count: int = 3, progress: bool = True,
              min_track_frames: int = MIN_TRACK_FRAMES, min_confidence: float = MIN_CONFIDENCE,
              max_lag: int = MAX_LAG) -> VideoRun:
    """Run the pipeline over video frames and compute :func:`analyse_tracks`.

    Stamps are ``frame_index / fps`` (100 ms per frame at vtest.avi's 10 fps). A centred
    window is flushed at the end. ``overlay_count`` frames evenly spread over ``total`` are
    kept for overlays.
    """
    from diffpose_ros.labeling import LabelConfig, smooth_track_quadratic

    start_time = time.perf_counter()
    detector = caching(detector)
    pipeline = make_pipeline(config, runtime, detector)
    keep_positions = set()
    if total and overlay_count > 0:
        keep_positions = {int(round(p)) for p in
                          np.linspace(0, total - 1, min(overlay_count, total))}
    source_index: list[int] = []
    kept: dict[int, np.ndarray] = {}
    records: list[tuple[int, Any]] = []
    timings: dict[str, float] = {}

    def take(results: Sequence[Any]) -> None:
        for result in results:
            frame = source_index[result.frame_index]
            records.extend((frame, p) for p in result.persons)
            for stage, ms in result.timings_ms.items():
                timings[stage] = timings.get(stage, 0.0) + ms

    bar = _progress(total=total, desc='video', unit='frame', disable=not progress)
    for position, (frame, image) in enumerate(frames):
        source_index.append(frame)
        if position in keep_positions:
            kept[frame] = image
        result = pipeline.process(image, int(round(frame * 1e9 / fps)))
        take([result] if result is not None else [])
        bar.update(1)
    take(pipeline.flush())
    bar.close()
    tracks = collect_tracks(records)
    analysis = analyse_tracks(tracks, min_track_frames=min_track_frames,
                              min_confidence=min_confidence, max_lag=max_lag)
    if config.keypoint_filter != 'none':  # the same smoothing given to YOLO's keypoints
        filtered = filter_detector_keypoints(records, config, fps)
        same = analyse_tracks(collect_tracks(filtered), min_track_frames=min_track_frames,
                              min_confidence=min_confidence, max_lag=max_lag)
        analysis['yolo_same_filter'] = _same_filter_summary(
            same['jitter']['ours'], same['jitter']['yolo_raw'], same['lag']['pooled_frames'],
            config)
    label_cfg = LabelConfig()
    teachers = {t.track_id: smooth_track_quadratic(t.yolo, label_cfg.smooth_half_window,
                                                   label_cfg.smooth_sigma_frames)
                for t in tracks}
    n_frames = len(source_index)
    summary = {
        **runtime_info(runtime, config),
        'fps': fps, 'stamp_period_ms': 1000.0 / fps,
        'first_frame': source_index[0] if source_index else None,
        'last_frame': source_index[-1] if source_index else None,
        'frames_processed': n_frames, 'person_frames': len(records),
        'detector_imgsz': getattr(detector, 'imgsz', None),
        'teacher': 'labeling.smooth_track_quadratic of the YOLO11n-pose keypoints per track '
                   f'(half window {label_cfg.smooth_half_window}, sigma '
                   f'{label_cfg.smooth_sigma_frames} frames; centred, uses future frames)',
        **analysis,
        'mean_stage_ms_per_frame': {k: v / max(n_frames, 1) for k, v in timings.items()},
        'detector_cache': {'images': len(detector), 'hits': detector.hits,
                           'misses': detector.misses},
        'elapsed_s': time.perf_counter() - start_time,
    }
    return VideoRun(summary=summary, tracks=tracks, teachers=teachers, overlay_frames=kept)


def filter_detector_keypoints(records: Sequence[tuple[int, Any]], config: PipelineConfig,
                              fps: float) -> list[tuple[int, Any]]:
    """(frame, person) records with ``keypoints`` replaced by the detector's keypoints run
    through the pipeline's keypoint filter: YOLO with the same smoothing, for a fair baseline."""
    from diffpose_ros.pipeline import keypoint_filter_config
    from diffpose_ros.smoothing import TrackFilters

    filters = TrackFilters(keypoint_filter_config(config))
    out = []
    for frame, person in sorted(records, key=lambda r: r[0]):
        if person.detector_keypoints is None:
            continue
        smoothed = filters.apply(person.track_id, person.detector_keypoints, person.box_xyxy,
                                 int(round(frame * 1e9 / fps)))
        out.append((frame, dataclasses.replace(person, keypoints=smoothed)))
    return out


def _same_filter_summary(jitter_filtered: Any, jitter_raw: Any, lag_frames: Any,
                         config: PipelineConfig) -> dict[str, Any]:
    return {'definition': "YOLO11n-pose's keypoints through the same causal filter "
                          f'({config.keypoint_filter}, min cutoff {config.filter_min_cutoff_hz} '
                          f'Hz, beta {config.filter_beta}), on the joints of its own analysis',
            'jitter': jitter_filtered, 'jitter_yolo_raw': jitter_raw,
            'ratio_over_yolo_raw': _ratio(jitter_filtered, jitter_raw),
            'lag_frames': lag_frames}


# --------------------------------------------------------------------------------------------
# Video with ground truth (Bonn PoseTrack): PCK, jitter, lag and ID switches against labels
# --------------------------------------------------------------------------------------------

GT_VIDEO_FPS = 25.0  # Bonn PoseTrack (MPII videos) when the JSON states no frame rate


@dataclasses.dataclass(frozen=True)
class GtVideo:
    """One labelled video: GT per frame (COCO-17, ``track_id`` per person), frame files, fps."""

    name: str
    layout: str
    frames: dict[int, GtImage]  # frame index (0-based) -> GT, in frame order
    image_root: Path
    fps: float
    fps_source: str
    gt_path: str

    def image_path(self, frame: int) -> Path:
        return self.image_root / self.frames[frame].file_name


def load_gt_video(gt_path: str | Path, image_root: str | Path | None = None,
                  fps: float | None = None, max_frames: int = 0,
                  default_fps: float = GT_VIDEO_FPS) -> GtVideo:
    """A PoseTrack-style COCO keypoint JSON of ONE video (e.g. Bonn ``060470979_coco17.json``).

    Frames are ordered by ``frame_id`` (else the JSON's image order); every GT person must have
    a ``track_id``. The frame rate is ``fps`` if given, else the images' ``fps`` field when all
    agree, else ``default_fps`` (25, the MPII videos' rate); ``fps_source`` says which.

    Args:
        gt_path: The JSON file.
        image_root: Folder the ``file_name`` entries are relative to (default: the JSON's).
        fps: Frame rate override.
        max_frames: Keep only the first N frames (0 = all).
        default_fps: Frame rate when neither ``fps`` nor the JSON gives one.
    """
    gt_path = Path(gt_path)
    dataset = json.loads(gt_path.read_text())
    layout = detect_file_layout(dataset)
    images = metrics.load_coco_keypoints(dataset, layout=layout)
    if not images:
        raise ValueError(f'{gt_path}: no labelled frames')
    videos = {im.video_id for im in images.values()}
    if len(videos) > 1:
        raise ValueError(f'{gt_path}: {len(videos)} videos; give one video per file')
    ordered = sorted(images.values(), key=lambda im: (
        im.frame_index if im.frame_index is not None else list(images).index(im.image_id)))
    frames = {}
    for position, image in enumerate(ordered):
        frame = image.frame_index if image.frame_index is not None else position
        if frame in frames:
            raise ValueError(f'{gt_path}: frame {frame} appears twice')
        for person in image.persons:
            if person.track_id is None and not person.iscrowd:
                raise ValueError(f'{gt_path}: image {image.image_id} has a person without '
                                 'track_id')
        frames[frame] = image
    if max_frames > 0:
        frames = dict(list(frames.items())[:max_frames])
    json_fps = {float(im['fps']) for im in dataset['images'] if im.get('fps')}
    if fps:
        fps_source = 'given'
    elif len(json_fps) == 1:
        fps, fps_source = json_fps.pop(), 'json images[].fps'
    else:
        fps, fps_source = default_fps, f'default ({default_fps:g} fps: the JSON states none)'
    return GtVideo(name=gt_path.stem, layout=layout, frames=frames,
                   image_root=Path(image_root) if image_root else gt_path.parent,
                   fps=float(fps), fps_source=fps_source, gt_path=str(gt_path))


@dataclasses.dataclass
class GtTrackSeries:
    """One GT track over frames first..last with the pipeline persons matched to it."""

    track_id: int
    frames: np.ndarray  # (T,) frame indices
    gt: np.ndarray  # (T, 17, 3) NaN where the GT track is absent
    ours: np.ndarray  # (T, 17, 3) matched person's keypoints, NaN where unmatched
    yolo: np.ndarray  # (T, 17, 3) its detector keypoints, NaN where unmatched / none
    sizes: np.ndarray  # (T,) GT box larger side (NaN where absent): the one normaliser
    matched_ids: np.ndarray  # (T,) pipeline track id matched, -1 where unmatched

    @property
    def labelled(self) -> np.ndarray:
        return np.nan_to_num(self.gt[..., 2], nan=0.0) > 0

    @property
    def shared(self) -> np.ndarray:
        """(T, 17) joints scored for every system: GT-labelled, a person matched, ours and
        YOLO finite (so GT, ours and YOLO have the same acceleration terms)."""
        return self.labelled & shared_jitter_mask(self.gt, self.ours, self.yolo)


def _match_keypoints(person: Any, match_on: str) -> np.ndarray:
    if match_on == 'detector' and person.detector_keypoints is not None:
        return np.asarray(person.detector_keypoints, dtype=np.float64)
    return np.asarray(person.keypoints, dtype=np.float64)


def match_frame(persons: Sequence[Any], gt_persons: Sequence[metrics.GtPerson],
                min_oks: float = 0.1, match_on: str = 'detector',
                previous: Mapping[int, int] | None = None) -> np.ndarray:
    """(G,) index of the pipeline person matched one-to-one to each GT person (-1: missed).

    :func:`metrics.match_persons` (optimal total OKS, pairs below ``min_oks`` never matched, as
    limb PCK matches). ``match_on='detector'`` matches on each person's detector keypoints (a
    coasting track without them on ours): the matching, hence the scored persons, do not depend
    on the head being evaluated, and ours and YOLO are scored on the same persons.

    ``previous`` (GT track id -> pipeline track id matched on the previous frame) keeps those
    pairs first while their OKS is still >= ``min_oks``, as CLEAR MOT's matching does (and
    py-motmetrics, TrackEval): a second, briefly better-fitting box of the same person (e.g. a
    duplicate upper-body detection) then does not count as an identity switch.
    """
    if match_on not in ('detector', 'ours'):
        raise ValueError(f"match_on must be 'detector' or 'ours', got {match_on!r}")
    if not gt_persons:
        return np.zeros(0, dtype=np.int64)
    preds = [_match_keypoints(p, match_on) for p in persons]
    match = metrics.match_persons(preds, list(gt_persons), min_oks=min_oks)
    if not previous:
        return match.gt_to_pred
    gt_to_pred = np.full(len(gt_persons), -1, dtype=np.int64)
    index_of_id = {int(p.track_id): i for i, p in enumerate(persons)}
    for g, gt_person in enumerate(gt_persons):
        pred = index_of_id.get(previous.get(gt_person.track_id, -1), -1)
        if pred >= 0 and match.scores[pred, g] >= min_oks:
            gt_to_pred[g] = pred
    rest_gt = np.flatnonzero(gt_to_pred < 0)
    rest_pred = np.setdiff1d(np.arange(len(persons)), gt_to_pred[gt_to_pred >= 0])
    if rest_gt.size and rest_pred.size:
        sub = metrics.assign_max_weight(match.scores[np.ix_(rest_pred, rest_gt)], min_oks)
        for r, c in enumerate(sub):
            if c >= 0:
                gt_to_pred[rest_gt[c]] = rest_pred[r]
    return gt_to_pred


def _pck_row(pred: np.ndarray | None, person: metrics.GtPerson, jidx: np.ndarray,
             lab: np.ndarray, threshold: float) -> np.ndarray:
    if pred is None:
        return np.zeros_like(lab)
    dist = np.linalg.norm(np.asarray(pred, np.float64)[jidx, :2] - person.keypoints[jidx, :2],
                          axis=1)
    return lab & np.isfinite(dist) & (dist <= threshold * person.box_size_px)


def _pool_lag(num: dict[int, float], den: dict[int, int], profile: Mapping[int, float],
              counts: Mapping[int, int]) -> None:
    for lag, value in profile.items():
        if counts[lag] and math.isfinite(value):
            num[lag] = num.get(lag, 0.0) + value * counts[lag]
            den[lag] = den.get(lag, 0) + counts[lag]


def _pooled_lag(num: Mapping[int, float], den: Mapping[int, int]
                ) -> tuple[int | None, dict[int, float]]:
    profile = {lag: num[lag] / den[lag] for lag in sorted(den)}
    best = min(profile, key=lambda k: (profile[k], abs(k), k)) if profile else None
    return best, profile


def _lag_vs_gt(kp: np.ndarray, track: GtTrackSeries, valid: np.ndarray, max_lag: int
               ) -> tuple[dict[int, float], dict[int, int], int | None]:
    profile = metrics.lag_profile(kp, track.gt, max_lag=max_lag, valid=valid,
                                  reference_valid=track.labelled, box_sizes=track.sizes)
    counts = _lag_pair_counts(kp, track.gt, valid, track.labelled, track.sizes, max_lag)
    finite = {k: v for k, v in profile.items() if counts[k] and math.isfinite(v)}
    best = min(finite, key=lambda k: (finite[k], abs(k), k)) if finite else None
    return profile, counts, best


def analyse_video_gt(persons_by_frame: Mapping[int, Sequence[Any]],
                     gt_by_frame: Mapping[int, GtImage], *, layout: str = 'coco',
                     min_oks: float = 0.1, match_on: str = 'detector',
                     threshold: float = PCK_THRESHOLD, max_lag: int = MAX_LAG,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                     ) -> tuple[dict[str, Any], list[GtTrackSeries]]:
    """Pipeline persons of each labelled frame against the GT (see :func:`run_video_gt`).

    Args:
        persons_by_frame: frame index -> the pipeline's persons (``keypoints``,
            ``detector_keypoints``, ``track_id``); a frame absent = nobody reported.
        gt_by_frame: frame index -> GtImage whose persons carry ``track_id``; image ids must be
            unique (they key the bootstrap rows).
        layout: Layout the GT came from (limb joints scored: its shared joints among 5..16).
        min_oks, match_on: :func:`match_frame`.
        threshold: Limb PCK threshold (fraction of the GT box's larger side).
        max_lag: Lags -max_lag..max_lag frames are tried.
        n_resamples, seed: Bootstrap.

    Returns:
        (summary, one :class:`GtTrackSeries` per GT track).
    """
    from diffpose_ros.skeleton import LIMB_JOINTS

    if len({int(im.image_id) for im in gt_by_frame.values()}) != len(gt_by_frame):
        raise ValueError('GT frames need unique image ids (they key the bootstrap rows)')
    eval_joints = tuple(j for j in LIMB_JOINTS if j in metrics.shared_joints(layout))
    jidx = np.asarray(eval_joints)
    rows: dict[str, list] = {'ours': [], 'yolo': []}
    labelled_rows, matched_rows, image_rows = [], [], []
    n_pred = n_unmatched = 0
    # per GT track: frame -> (GtPerson, matched PersonPose or None)
    by_track: dict[int, dict[int, tuple[metrics.GtPerson, Any]]] = {}
    previous: dict[int, int] = {}  # GT track id -> pipeline id matched on the previous frame
    for frame in sorted(gt_by_frame):
        image = gt_by_frame[frame]
        persons = list(persons_by_frame.get(frame, ()))
        gts = [p for p in image.persons if not p.iscrowd]
        gt_to_pred = match_frame(persons, gts, min_oks=min_oks, match_on=match_on,
                                 previous=previous)
        previous = {int(p.track_id): int(persons[gt_to_pred[g]].track_id)
                    for g, p in enumerate(gts) if p.track_id is not None and gt_to_pred[g] >= 0}
        n_pred += len(persons)
        n_unmatched += len(persons) - int((gt_to_pred >= 0).sum())
        for g, gt_person in enumerate(gts):
            person = persons[gt_to_pred[g]] if gt_to_pred[g] >= 0 else None
            if gt_person.track_id is not None:
                by_track.setdefault(int(gt_person.track_id), {})[frame] = (gt_person, person)
            lab = gt_person.labelled[jidx]
            if not lab.any():
                continue
            rows['ours'].append(_pck_row(None if person is None else person.keypoints,
                                         gt_person, jidx, lab, threshold))
            rows['yolo'].append(_pck_row(None if person is None else person.detector_keypoints,
                                         gt_person, jidx, lab, threshold))
            labelled_rows.append(lab)
            matched_rows.append(person is not None)
            image_rows.append(int(image.image_id))
    scores = {}
    for name in ('ours', 'yolo'):
        pck = metrics._pck_result(eval_joints, rows[name], labelled_rows, matched_rows,
                                  image_rows, n_pred, n_unmatched, threshold)
        if pck.per_person_labelled.sum() > 0:
            ci = metrics.bootstrap_ci(pck.per_person_correct, pck.per_person_labelled,
                                      n_resamples=n_resamples, seed=seed)
        else:
            ci = (math.nan, math.nan)
        scores[name] = Score(pck=pck, summary={'limb_pck': {
            **pck.to_dict(), 'ci95_percent': list(ci), 'bootstrap_resamples': n_resamples,
            'bootstrap_seed': seed}})
    diff = paired_difference(scores['ours'], scores['yolo'], n_resamples=n_resamples,
                             seed=seed)

    tracks: list[GtTrackSeries] = []
    jit_terms: dict[str, list[np.ndarray]] = {'ours': [], 'yolo': [], 'gt': [], 'gt_all': []}
    lag_num: dict[str, dict[int, float]] = {'ours': {}, 'yolo': {}}
    lag_den: dict[str, dict[int, int]] = {'ours': {}, 'yolo': {}}
    per_track = []
    switches_total = 0
    for track_id, frames in sorted(by_track.items()):
        first, last = min(frames), max(frames)
        n = last - first + 1
        arrays = {k: np.full((n, NUM_KEYPOINTS, 3), np.nan) for k in ('gt', 'ours', 'yolo')}
        sizes = np.full(n, np.nan)
        ids = np.full(n, -1, dtype=np.int64)
        pck_counts = {'ours': 0, 'yolo': 0, 'labelled': 0}
        for frame, (gt_person, person) in frames.items():
            t = frame - first
            arrays['gt'][t] = gt_person.keypoints
            sizes[t] = gt_person.box_size_px
            lab = gt_person.labelled[jidx]
            pck_counts['labelled'] += int(lab.sum())
            if person is None:
                continue
            ids[t] = int(person.track_id)
            arrays['ours'][t] = person.keypoints
            if person.detector_keypoints is not None:
                arrays['yolo'][t] = person.detector_keypoints
            pck_counts['ours'] += int(_pck_row(person.keypoints, gt_person, jidx, lab,
                                               threshold).sum())
            pck_counts['yolo'] += int(_pck_row(person.detector_keypoints, gt_person, jidx, lab,
                                               threshold).sum())
        track = GtTrackSeries(track_id=track_id, frames=np.arange(first, last + 1),
                              gt=arrays['gt'], ours=arrays['ours'], yolo=arrays['yolo'],
                              sizes=sizes, matched_ids=ids)
        tracks.append(track)
        shared = track.shared
        t_jit = {k: metrics.acceleration_norms(getattr(track, k), sizes, shared)
                 for k in ('ours', 'yolo', 'gt')}
        t_jit['gt_all'] = metrics.acceleration_norms(track.gt, sizes, track.labelled)
        for key, values in t_jit.items():
            jit_terms[key].append(values)
        track_max_lag = min(max_lag, n - 1)
        lags = {}
        for key in ('ours', 'yolo'):
            profile, counts, lags[key] = _lag_vs_gt(getattr(track, key), track, shared,
                                                    track_max_lag)
            _pool_lag(lag_num[key], lag_den[key], profile, counts)
        seen = ids[ids >= 0]
        switches = int((seen[1:] != seen[:-1]).sum()) if seen.size else 0
        switches_total += switches
        per_track.append({
            'gt_track_id': track_id, 'frames': len(frames), 'first_frame': first,
            'last_frame': last, 'matched_frames': int(seen.size),
            'pipeline_track_ids': sorted({int(i) for i in seen}), 'id_switches': switches,
            'limb_pck_ours_percent': _ratio(100.0 * pck_counts['ours'], pck_counts['labelled']),
            'limb_pck_yolo_percent': _ratio(100.0 * pck_counts['yolo'], pck_counts['labelled']),
            'jitter_ours': _mean(t_jit['ours']), 'jitter_yolo': _mean(t_jit['yolo']),
            'jitter_gt': _mean(t_jit['gt']), 'jitter_terms': int(t_jit['gt'].size),
            'lag_ours_frames': lags['ours'], 'lag_yolo_frames': lags['yolo']})
    pooled = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in jit_terms.items()}
    jit = {k: _mean(v) for k, v in pooled.items()}
    lag_best, lag_prof = {}, {}
    for key in ('ours', 'yolo'):
        lag_best[key], lag_prof[key] = _pooled_lag(lag_num[key], lag_den[key])
    identity = metrics.identity_scores(
        [(track_id, int(person.track_id)) for track_id, frames in by_track.items()
         for _, person in frames.values() if person is not None],
        num_gt=int(sum(len(f) for f in by_track.values())), num_pred=n_pred)
    owners: dict[int, set[int]] = {}
    for track in tracks:
        for pid in track.matched_ids[track.matched_ids >= 0]:
            owners.setdefault(int(pid), set()).add(track.track_id)
    summary = {
        'layout': layout,
        'frames_scored': len(gt_by_frame),
        'num_gt_tracks': len(tracks),
        'num_gt_person_frames': int(sum(len(f) for f in by_track.values())),
        'matching': {
            'method': 'per frame, one-to-one by OKS (metrics.match_persons, as limb PCK) on the '
                      + ("pipeline person's detector keypoints (ours for a coasting track "
                         'without them)' if match_on == 'detector' else 'our keypoints')
                      + "; a GT track's previous-frame pipeline id is kept while its OKS stays "
                        '>= min_oks (CLEAR MOT)',
            'match_on': match_on, 'min_oks': min_oks,
            'matched_person_frames': int(np.sum(matched_rows)),
            'missed_person_frames': int(len(matched_rows) - np.sum(matched_rows)),
            'pipeline_persons': n_pred, 'unmatched_pipeline_persons': n_unmatched},
        'limb_pck': {
            'definition': f'share of labelled GT limb joints (COCO 5..16) within {threshold} x '
                          'the GT box larger side; a GT person without a match counts all '
                          'its joints wrong; ours and YOLO on the same matched persons',
            'bootstrap_unit': 'GT person-frame (frames of one track are correlated: the '
                              'interval is narrower than independent people would give)',
            'ours': scores['ours'].summary['limb_pck'],
            'yolo': scores['yolo'].summary['limb_pck'],
            'ours_minus_yolo': diff},
        'jitter': {
            'definition': 'mean GT-box-normalised keypoint acceleration on the same '
                          'joint-frames for ours, YOLO and the GT: GT-labelled and the matched '
                          'person present (all three frames of a term)',
            'ours': jit['ours'], 'yolo_raw': jit['yolo'], 'gt': jit['gt'],
            'ratio_ours_over_yolo': _ratio(jit['ours'], jit['yolo']),
            'ratio_ours_over_gt': _ratio(jit['ours'], jit['gt']),
            'terms': int(pooled['gt'].size),
            'gt_all_labelled': jit['gt_all'], 'gt_all_labelled_terms': int(pooled['gt_all'].size)},
        'lag': {
            'definition': 'positive = late vs the GT (metrics.lag_profile pooled over GT tracks '
                          'with pair counts as weights, GT box-normalised)',
            'ours_pooled_frames': lag_best['ours'], 'ours_pooled_profile': lag_prof['ours'],
            'yolo_pooled_frames': lag_best['yolo'], 'yolo_pooled_profile': lag_prof['yolo'],
            'pooled_pairs': {lag: lag_den['ours'][lag] for lag in sorted(lag_den['ours'])},
            'max_lag': max_lag},
        'id_switches': {
            'definition': "changes of the matched pipeline track id along each GT track "
                          '(unmatched frames skipped)',
            'total': switches_total,
            'pipeline_ids_on_several_gt_tracks': sorted(k for k, v in owners.items()
                                                        if len(v) > 1)},
        'identity': {
            'definition': 'IDF1 (Ristani et al. 2016) on the per-frame matches above: GT tracks '
                          'and pipeline track ids assigned one-to-one over the whole video to '
                          'maximise the person-frames they share (IDTP); pipeline persons '
                          'matching nobody count as IDFP, missed GT person-frames as IDFN',
            **identity.to_dict()},
        'per_track': per_track,
    }
    return summary, tracks


@dataclasses.dataclass
class VideoGtRun:
    summary: dict[str, Any]
    tracks: list[GtTrackSeries]
    persons_by_frame: dict[int, list[Any]]


def run_video_gt(runtime: Any, detector: Any, config: PipelineConfig,
                 frames: Iterable[tuple[int, np.ndarray]], gt_by_frame: Mapping[int, GtImage],
                 fps: float, *, layout: str = 'coco', total: int | None = None,
                 progress: bool = True, min_oks: float = 0.1, match_on: str = 'detector',
                 max_lag: int = MAX_LAG, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0) -> VideoGtRun:
    """The pipeline over labelled video frames, scored against the GT (:func:`analyse_video_gt`).

    Runs like :func:`run_video` (stamps ``frame / fps``, a centred window flushed at the end).
    Per labelled frame the pipeline persons are matched one-to-one to the GT persons
    (:func:`match_frame`); then: limb PCK@0.1 of ours and of the detector's keypoints of the same
    matched persons with bootstrap intervals and a paired difference; jitter of ours, YOLO and
    the GT on the same joints; lag of ours (and YOLO) vs the GT; ID switches of the pipeline's
    track ids along each GT track. Frames without GT are run but not scored.

    Args:
        runtime, detector, config: As for :func:`run_video` (the detector is cached).
        frames: (frame index, BGR image), in order; indices key ``gt_by_frame``.
        gt_by_frame: frame index -> GtImage (:func:`load_gt_video`).
        fps: Frame rate for the stamps.
        layout: GT layout.
        total: Frame count for the progress bar.
        min_oks, match_on, max_lag, n_resamples, seed: :func:`analyse_video_gt`.
    """
    start_time = time.perf_counter()
    detector = caching(detector)
    pipeline = make_pipeline(config, runtime, detector)
    source_index: list[int] = []
    persons_by_frame: dict[int, list[Any]] = {}
    timings: dict[str, float] = {}

    def take(results: Sequence[Any]) -> None:
        for result in results:
            frame = source_index[result.frame_index]
            persons_by_frame.setdefault(frame, []).extend(result.persons)
            for stage, ms in result.timings_ms.items():
                timings[stage] = timings.get(stage, 0.0) + ms

    bar = _progress(total=total, desc='video (GT)', unit='frame', disable=not progress)
    for frame, image in frames:
        source_index.append(frame)
        result = pipeline.process(image, int(round(frame * 1e9 / fps)))
        take([result] if result is not None else [])
        bar.update(1)
    take(pipeline.flush())
    bar.close()
    missing = sorted(set(gt_by_frame) - set(source_index))
    if missing:
        raise ValueError(f'GT frames {missing[:5]} were not among the frames run')
    analysis, tracks = analyse_video_gt(
        persons_by_frame, gt_by_frame, layout=layout, min_oks=min_oks, match_on=match_on,
        max_lag=max_lag, n_resamples=n_resamples, seed=seed)
    if config.keypoint_filter != 'none':  # the same smoothing given to YOLO's keypoints
        records = [(f, p) for f in sorted(persons_by_frame) for p in persons_by_frame[f]]
        filtered: dict[int, list[Any]] = {}
        for frame, person in filter_detector_keypoints(records, config, fps):
            filtered.setdefault(frame, []).append(person)
        same, _ = analyse_video_gt(
            filtered, gt_by_frame, layout=layout, min_oks=min_oks, match_on=match_on,
            max_lag=max_lag, n_resamples=n_resamples, seed=seed)
        analysis['yolo_same_filter'] = {
            **_same_filter_summary(same['jitter']['ours'], same['jitter']['yolo_raw'],
                                   same['lag']['ours_pooled_frames'], config),
            'limb_pck_percent': same['limb_pck']['ours']['pck_percent']}
    n_frames = len(source_index)
    summary = {
        **runtime_info(runtime, config),
        'fps': fps, 'stamp_period_ms': 1000.0 / fps,
        'first_frame': source_index[0] if source_index else None,
        'last_frame': source_index[-1] if source_index else None,
        'frames_processed': n_frames,
        'person_frames': sum(len(v) for v in persons_by_frame.values()),
        'detector_imgsz': getattr(detector, 'imgsz', None),
        **analysis,
        'mean_stage_ms_per_frame': {k: v / max(n_frames, 1) for k, v in timings.items()},
        'detector_cache': {'images': len(detector), 'hits': detector.hits,
                           'misses': detector.misses},
        'elapsed_s': time.perf_counter() - start_time,
    }
    return VideoGtRun(summary=summary, tracks=tracks, persons_by_frame=persons_by_frame)


# --------------------------------------------------------------------------------------------
# "Done when" checks
# --------------------------------------------------------------------------------------------

def _check(passed: Any, value: Any, threshold: Any, detail: str) -> dict[str, Any]:
    return {'passed': bool(passed), 'value': value, 'threshold': threshold, 'detail': detail}


def _grid_mean(grid: Mapping[str, Any], steps: int, hypotheses: int = 1) -> float:
    for cell in list(grid.get('cells', [])) + list(grid.get('extra_cells', [])):
        if cell['steps'] == steps and cell['hypotheses'] == hypotheses:
            return _nan_if_none(cell['limb_pck_mean'])
    return math.nan


def pooled_paired_difference(runs: Sequence[Mapping[str, Any]]) -> float:
    """Point estimate of ours - YOLO limb PCK over several GT sets, weighted by their labelled
    limb joints (what one pooled PCK over all the sets' joints gives).

    Each set's difference is turned back into its whole number of joints (points x joints /
    100), so a tie is exactly 0 and not -4e-15, which a ">= 0" check would fail.
    """
    weights = [r['ours']['limb_pck']['num_labelled_joints'] for r in runs]
    diffs = [_nan_if_none(r['ours_minus_yolo_limb_pck']['points']) for r in runs]
    total = sum(weights)
    if not total or any(math.isnan(d) for d in diffs):
        return math.nan
    joints_gained = sum(round(d * w / 100.0) for d, w in zip(diffs, weights))
    return 100.0 * joints_gained / total


def evaluate_checks(images: Mapping[str, Mapping[str, Any]], grid: Mapping[str, Any] | None,
                    video: Mapping[str, Any] | None, bonn: Mapping[str, Any] | None = None,
                    dev_gt_zeroed: Sequence[Mapping[str, Any]] | None = None,
                    *, lspet_margin_points: float = 3.0, ap_tolerance_points: float = 2.0,
                    steps_gain_points: float = 0.5, zeroed_cost_points: float = 3.0,
                    jitter_ratio_max: float = 0.7, lag_max_frames: int = 1,
                    ) -> dict[str, dict[str, Any]]:
    """Issue 10's "done when" criteria as booleans with their numbers.

    ``images``: :func:`run_images` summaries by set name ('lspet_val', 'coco', 'aic');
    ``grid``: :func:`run_grid` on LSPET val (steps 1, 2, 4 x 1 hypothesis x seeds, ablation at
    1 step); ``video``: :func:`run_video` on vtest 600-794; ``bonn``: :func:`run_video_gt`;
    ``dev_gt_zeroed``: :func:`run_zeroed_input_ablation` on COCO and AIC (the same criterion
    where the detector is usually right, reported next to LSPET's).
    A criterion whose inputs are missing or not finite fails.
    """
    checks: dict[str, dict[str, Any]] = {}
    lspet = images.get('lspet_val')
    if lspet is not None:
        diff = lspet['ours_minus_yolo_limb_pck']
        points, ci = _nan_if_none(diff['points']), [_nan_if_none(v) for v in diff['ci95_points']]
        checks['lspet_ours_at_least_yolo_plus_3'] = _check(
            points >= lspet_margin_points and ci[0] > 0,
            {'points': points, 'ci95_points': ci,
             'ours_percent': lspet['ours']['limb_pck']['pck_percent'],
             'yolo_percent': lspet['yolo']['limb_pck']['pck_percent']},
            f'>= +{lspet_margin_points} points, interval above 0',
            'LSPET val limb PCK@0.1, ours (1 step) - YOLO11n-pose on the same persons (paired)')
    dev = [images[name] for name in ('coco', 'aic') if name in images]
    if dev:
        pooled = pooled_paired_difference(dev)
        checks['dev_gt_limb_pck_ours_at_least_yolo'] = _check(
            pooled >= 0, {'pooled_points': pooled,
                          'per_set_points': {n: images[n]['ours_minus_yolo_limb_pck']['points']
                                             for n in ('coco', 'aic') if n in images}},
            '>= 0', 'dev_gt (COCO + AIC) limb PCK@0.1 paired difference, point estimate')
    if 'coco' in images:
        ours_ap = _nan_if_none(images['coco']['ours']['oks_ap_percent']['AP'])
        yolo_ap = _nan_if_none(images['coco']['yolo']['oks_ap_percent']['AP'])
        checks['coco_oks_ap_at_least_yolo_minus_2'] = _check(
            ours_ap >= yolo_ap - ap_tolerance_points, {'ours': ours_ap, 'yolo': yolo_ap},
            f'>= YOLO - {ap_tolerance_points}', 'COCO dev_gt OKS AP')
    if grid is not None:
        one = _grid_mean(grid, 1)
        more = {k: _grid_mean(grid, k) for k in (2, 4)}
        best_more = max(more.values(), key=lambda v: -math.inf if math.isnan(v) else v)
        checks['steps_earn_their_cost'] = _check(
            best_more - one >= steps_gain_points and more[4] >= one,
            {'k1': one, 'k2': more[2], 'k4': more[4]},
            f'best of K in (2, 4) >= K=1 + {steps_gain_points}; K=4 >= K=1',
            'LSPET val limb PCK mean over seeds, 1 hypothesis')
        rows = [r for r in grid.get('ablation', []) if r['steps'] == 1]
        cost = _nan_if_none(rows[0]['cost_points']) if rows else math.nan
        checks['zeroed_input_costs_at_least_3_points'] = _check(
            cost >= zeroed_cost_points, cost, zeroed_cost_points,
            'LSPET val limb PCK(normal) - PCK(noisy heatmap input zeroed), 1 step at t_start')
    if dev_gt_zeroed:
        cost = _nan_if_none(pooled_zeroed_input_cost(dev_gt_zeroed))
        checks['zeroed_input_costs_at_least_3_points_dev_gt'] = _check(
            cost >= zeroed_cost_points, cost, zeroed_cost_points,
            'dev_gt COCO + AIC pooled limb PCK(normal) - PCK(noisy heatmap input zeroed), '
            '1 step at t_start')
    if bonn is not None:
        pck = bonn['limb_pck']
        ours, yolo = _nan_if_none(pck['ours']['pck_percent']), _nan_if_none(
            pck['yolo']['pck_percent'])
        checks['bonn_limb_pck_at_least_yolo'] = _check(
            ours >= yolo, {'ours': ours, 'yolo': yolo}, '>= YOLO',
            'Bonn PoseTrack video, limb PCK@0.1 on the same matched persons')
        ratio = _nan_if_none(bonn['jitter']['ratio_ours_over_yolo'])
        checks['bonn_jitter_at_most_0.7x_yolo'] = _check(
            ratio <= jitter_ratio_max, ratio, jitter_ratio_max,
            'Bonn jitter ours / YOLO on the ground-truth-visible joints')
        lag = bonn['lag'].get('ours_pooled_frames')
        checks['bonn_lag_at_most_1_frame'] = _check(
            lag is not None and abs(lag) <= lag_max_frames, lag, lag_max_frames,
            'Bonn pooled lag of ours vs the ground truth, frames')
    if video is not None:
        ratio = _nan_if_none(video['jitter']['ratio_ours_over_yolo'])
        checks['vtest_jitter_at_most_0.7x_yolo'] = _check(
            ratio <= jitter_ratio_max, ratio, jitter_ratio_max,
            'vtest 600-794 jitter ours / YOLO on joints both report at >= 0.3')
    return checks


# --------------------------------------------------------------------------------------------
# Drawing (cv2 overlays, matplotlib Agg figures)
# --------------------------------------------------------------------------------------------

def _resized(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    import cv2

    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale >= 1.0:
        return image.copy(), 1.0
    size = (int(round(image.shape[1] * scale)), int(round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _legend(image: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
    import cv2

    x = 4
    for text, colour in entries:
        cv2.putText(image, text, (x, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(image, text, (x, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
        x += 9 * len(text) + 10


def write_overlay(path: str | Path, image_bgr: np.ndarray, gt_image: GtImage,
                  ours: Sequence[Mapping[str, Any]], yolo: Sequence[Mapping[str, Any]],
                  max_side: int = 480) -> Path:
    """Small PNG: ours red (bottom), GT green (labelled joints), YOLO11n-pose blue (top)."""
    import cv2

    canvas, scale = _resized(image_bgr, max_side)
    for res in ours:  # bottom layer: GT and YOLO stay visible where they agree
        draw_skeleton(canvas, np.reshape(res['keypoints'], (NUM_KEYPOINTS, 3)), OURS_BGR, scale)
    for person in gt_image.persons:
        draw_skeleton(canvas, person.keypoints, GT_BGR, scale, mask=person.labelled)
    for res in yolo:
        draw_skeleton(canvas, np.reshape(res['keypoints'], (NUM_KEYPOINTS, 3)), YOLO_BGR, scale)
    _legend(canvas, (('GT', GT_BGR), ('ours', OURS_BGR), ('YOLO', YOLO_BGR)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f'cannot write {path}')
    return path


def write_video_overlays(out_dir: str | Path, run: VideoRun,
                         min_confidence: float = MIN_CONFIDENCE) -> list[Path]:
    """PNG per kept frame: ours red, raw YOLO blue, smoothed teacher green (joints >= conf)."""
    import cv2

    paths = []
    for frame, image in sorted(run.overlay_frames.items()):
        canvas = image.copy()
        for track in run.tracks:
            t = frame - int(track.frames[0])
            if not 0 <= t < len(track.frames) or not track.present[t]:
                continue
            teacher = run.teachers[track.track_id][t]
            draw_skeleton(canvas, teacher, TEACHER_BGR,
                          mask=_conf_valid(teacher, min_confidence))
            draw_skeleton(canvas, track.yolo[t], YOLO_BGR,
                          mask=_conf_valid(track.yolo[t], min_confidence))
            draw_skeleton(canvas, track.ours[t], OURS_BGR,
                          mask=_conf_valid(track.ours[t], min_confidence))
        _legend(canvas, (('teacher', TEACHER_BGR), ('ours', OURS_BGR), ('YOLO', YOLO_BGR)))
        path = Path(out_dir) / f'video_overlay_{frame:05d}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), canvas):
            raise OSError(f'cannot write {path}')
        paths.append(path)
    return paths


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _untrained_note(trained: bool) -> str:
    return '' if trained else '\n[UNTRAINED head: random weights]'


def plot_per_joint(path: str | Path, series: Mapping[str, Mapping[str, Any]],
                   title: str, trained: bool) -> Path:
    """Per-joint limb PCK bars, one bar per series (name -> score summary)."""
    plt = _pyplot()
    names = list(series)
    joints = list(next(iter(series.values()))['limb_pck']['per_joint_percent'])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(joints))
    for i, name in enumerate(names):
        pck = series[name]['limb_pck']
        vals = [_nan_if_none(pck['per_joint_percent'][j]) for j in joints]
        lo, hi = (_nan_if_none(v) for v in pck['ci95_percent'])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width,
               label=f'{name}: {_nan_if_none(pck["pck_percent"]):.1f} '
                     f'[{lo:.1f}, {hi:.1f}]')
    ax.set_xticks(x)
    ax.set_xticklabels([j.replace('_', '\n') for j in joints], fontsize=7)
    ax.set_ylabel('PCK@0.1 [%]')
    ax.set_ylim(0, 105)
    ax.set_title(title + _untrained_note(trained), fontsize=9)
    ax.legend(fontsize=8, loc='lower right')
    return _save_figure(plt, fig, path)


def _save_figure(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_grid(path: str | Path, grid: Mapping[str, Any]) -> Path:
    """Limb PCK and OKS AP vs steps, a line per hypotheses count, error bars = seed std."""
    plt = _pyplot()
    cells = grid['cells']
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], 'limb_pck', 'limb PCK@0.1 [%]'),
                           (axes[1], 'oks_ap', 'COCO OKS AP [%]')):
        for h in sorted({c['hypotheses'] for c in cells}):
            row = sorted((c for c in cells if c['hypotheses'] == h), key=lambda c: c['steps'])
            ax.errorbar([c['steps'] for c in row],
                        [_nan_if_none(c[f'{key}_mean']) for c in row],
                        yerr=[_nan_if_none(c[f'{key}_std']) for c in row],
                        marker='o', capsize=3, label=f'{h} hypotheses')
        ax.set_xscale('log', base=2)
        steps = sorted({c['steps'] for c in cells})
        ax.set_xticks(steps)
        ax.set_xticklabels([str(s) for s in steps])
        ax.set_xlabel('DDIM steps')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f'accuracy vs steps, {len(grid["seeds"])} seeds, {grid["num_gt_persons"]} '
                 f'GT persons{_untrained_note(grid["trained"])}', fontsize=9)
    return _save_figure(plt, fig, path)


def plot_ablation(path: str | Path, grid: Mapping[str, Any]) -> Path:
    """Bars: limb PCK with the noisy heatmap input vs zeroed, per step count (1 hypothesis)."""
    plt = _pyplot()
    rows = grid['ablation']
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = np.arange(len(rows))
    for offset, key, label in ((-0.2, 'normal', 'noisy heatmap input'),
                               (0.2, 'zeroed', 'input zeroed')):
        ax.bar(x + offset, [_nan_if_none(r[f'{key}_limb_pck_mean']) for r in rows], 0.4,
               yerr=[_nan_if_none(r[f'{key}_limb_pck_std']) for r in rows], capsize=3,
               label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([f'{r["steps"]} steps' for r in rows])
    ax.set_ylabel('limb PCK@0.1 [%]')
    ax.set_title('ablation: denoiser without its heatmap input'
                 + _untrained_note(grid['trained']), fontsize=9)
    ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


# setting -> (x axis label, title) of its sweep plot
SWEEP_PLOT_LABELS = {
    't_start': ('t_start (of 1000 diffusion steps)',
                'start from the detector: accuracy vs t_start'),
    'decode_blur_sigma_px': ('decode blur sigma [heatmap px] (0 = none)',
                             'modulated decoding: accuracy vs blur'),
}


def plot_setting_sweep(path: str | Path, sweep: Mapping[str, Any]) -> Path:
    """Limb PCK and OKS AP vs one run-time setting at 1 step (``cli.evaluate`` sweeps)."""
    plt = _pyplot()
    name, rows = sweep['setting'], sweep['rows']
    xlabel, title = SWEEP_PLOT_LABELS.get(name, (name, f'accuracy vs {name}'))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs = [r[name] for r in rows]
    ax.plot(xs, [r['limb_pck'] for r in rows], marker='o', label='limb PCK@0.1 [%]')
    ax.plot(xs, [r['oks_ap'] for r in rows], marker='s', label='OKS AP [%]')
    ax.axvline(sweep[f'best_{name}'], color='grey', ls='--', lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel('%')
    ax.set_title(f'{title} ({", ".join(sweep["gt_sets"])})', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


def plot_video_jitter(path: str | Path, summary: Mapping[str, Any]) -> Path:
    plt = _pyplot()
    jit = summary['jitter']
    names = ['ours', 'YOLO raw', 'teacher (smoothed)']
    vals = [_nan_if_none(jit[k]) for k in ('ours', 'yolo_raw', 'teacher_smoothed')]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    bars = ax.bar(names, vals, color=['tab:red', 'tab:blue', 'tab:green'])
    for bar, v in zip(bars, vals):
        ax.annotate(f'{v:.4f}', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center', va='bottom', fontsize=8)
    ratio = _nan_if_none(jit['ratio_ours_over_yolo'])
    ax.set_ylabel('jitter (box-normalised acceleration)')
    ax.set_title(f'video jitter, ours/YOLO = {ratio:.2f}' + _untrained_note(summary['trained']),
                 fontsize=9)
    return _save_figure(plt, fig, path)


def plot_wrist_track(path: str | Path, run: VideoRun,
                     min_confidence: float = MIN_CONFIDENCE) -> Path | None:
    """The longest track's wrist x over time: ours, raw YOLO, smoothed teacher."""
    plt = _pyplot()
    if not run.tracks:
        return None
    track = max(run.tracks, key=lambda t: (t.num_frames, -t.track_id))
    teacher = run.teachers[track.track_id]
    wrists = [KEYPOINT_NAMES.index('left_wrist'), KEYPOINT_NAMES.index('right_wrist')]
    joint = max(wrists, key=lambda j: int(_conf_valid(teacher[:, j], min_confidence).sum()))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for kp, label, colour in ((track.ours, 'ours', 'tab:red'),
                              (track.yolo, 'YOLO raw', 'tab:blue'),
                              (teacher, 'teacher (smoothed)', 'tab:green')):
        x = np.where(_conf_valid(kp[:, joint], min_confidence), kp[:, joint, 0], np.nan)
        ax.plot(track.frames, x, marker='.', label=label, color=colour)
    ax.set_xlabel('frame')
    ax.set_ylabel(f'{KEYPOINT_NAMES[joint]} x [px]')
    ax.set_title(f'track {track.track_id} ({track.num_frames} frames); joints with '
                 f'confidence >= {min_confidence}' + _untrained_note(run.summary['trained']),
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save_figure(plt, fig, path)


def plot_gt_wrist_track(path: str | Path, run: VideoGtRun) -> Path | None:
    """The longest GT track's better-labelled wrist, x and y over time: GT, ours, raw YOLO."""
    plt = _pyplot()
    if not run.tracks:
        return None
    track = max(run.tracks, key=lambda t: (int(np.isfinite(t.sizes).sum()), -t.track_id))
    wrists = [KEYPOINT_NAMES.index('left_wrist'), KEYPOINT_NAMES.index('right_wrist')]
    joint = max(wrists, key=lambda j: int(track.labelled[:, j].sum()))
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True)
    for axis, ax in enumerate(axes):
        for kp, label, colour, valid in (
                (track.gt, 'ground truth', 'tab:green', track.labelled[:, joint]),
                (track.ours, 'ours', 'tab:red', None),
                (track.yolo, 'YOLO raw', 'tab:blue', None)):
            v = kp[:, joint, axis]
            if valid is not None:
                v = np.where(valid, v, np.nan)
            ax.plot(track.frames, v, marker='.', label=label, color=colour)
        ax.set_ylabel(f'{KEYPOINT_NAMES[joint]} {"xy"[axis]} [px]')
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel('frame')
    axes[0].legend(fontsize=8)
    jit = run.summary['jitter']
    axes[0].set_title(
        f'GT track {track.track_id}: jitter ours {_nan_if_none(jit["ours"]):.4f}, YOLO '
        f'{_nan_if_none(jit["yolo_raw"]):.4f}, GT {_nan_if_none(jit["gt"]):.4f}'
        + _untrained_note(run.summary['trained']), fontsize=9)
    return _save_figure(plt, fig, path)
