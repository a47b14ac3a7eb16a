"""``diffpose-bag evaluate``: accuracy, temporal and latency figures of the pipeline on a bag.

Two modes, one scoring path (no ROS needed for either):

* **offline** (:func:`evaluate_offline`): every image message of one camera topic, in header
  stamp order, decoded as the node decodes it (:mod:`diffpose_ros.ros.image_conversion`) and run
  through :class:`~diffpose_ros.pipeline.PosePipeline` with the header stamps (fixed steps,
  hypotheses and seed: deterministic). A centred window is flushed at the end.
* **recorded** (:func:`evaluate_recorded`): the ``diffpose_ros/msg/PersonPoseArray`` messages
  a live node published (recorded with ``diffpose-bag record``), matched to the input bag's
  frames by their header stamp (the source image's stamp). Frames without an output (dropped by
  the node's latest-frame slot, or the unflushed tail of a centred window) are counted and left
  out of every figure; frames the node could not have decoded either (bad input) are counted
  apart. Latency = the recording's log time (receive time) minus the source stamp.

Both modes then score the same way (:func:`score_frames`), with the metric code of
:mod:`diffpose_ros.evaluation` / :mod:`diffpose_ros.metrics`:

* YOLO11n-pose is run on every scored frame on its own (single frame, a
  :class:`~diffpose_ros.evaluation.CachingDetector`, so the pipeline's own detector calls are
  reused). ``yolo`` scores all its detections; ``yolo_paired`` only the detections paired with
  our persons (optimal one-to-one box IoU >= :data:`PAIR_MIN_IOU`; on frames where the pipeline
  detected, each person's box *is* its detection's box, IoU 1). ``PersonPose.msg`` carries no
  detector keypoints, so the recorded mode pairs the same way and both modes get identical YOLO
  figures for identical outputs.
* With ground truth (``<ns>/ground_truth`` from ``diffpose-bag make SEQUENCE.json``, matched by
  stamp): limb PCK@0.1 with a bootstrap interval over persons, COCO OKS AP
  (:func:`evaluation.score_predictions`; the message has no area, so OKS uses ``0.53 * w * h``
  of the GT box), and paired differences ours - YOLO.
* Always: jitter, lag and agreement per track against the smoothed YOLO teacher
  (:func:`evaluation.analyse_tracks`); frame numbers are positions in the bag, so a dropped
  frame is a gap in a track.
* With a depth topic and the colour CameraInfo: the 3D validity share of our persons
  (:mod:`diffpose_ros.bags.depth`, the node's 3D stage on the depth matched by stamp); recorded,
  also that of the node's own ``poses_3d`` messages when the recording has them.

Outputs in ``out``: ``evaluation.json``, ``predictions_ours.json`` and ``predictions_yolo.json``
(COCO keypoint results with ``track_id`` and ``stamp_ns``, plus an ``images`` table id ->
stamp: they do not need the bag to be read), ``gt_coco.json`` (with ground truth),
``report.png`` and, recorded, ``latency.png``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros import evaluation as E
from diffpose_ros import metrics
from diffpose_ros.bags import io
from diffpose_ros.bags.depth import DEFAULT_TOLERANCE_MS as DEFAULT_DEPTH_TOLERANCE_MS
from diffpose_ros.skeleton import NUM_KEYPOINTS

FORMAT = 'diffpose-bag-evaluate/1'
PREDICTIONS_FORMAT = 'diffpose-bag-predictions/1'
PAIR_MIN_IOU = 0.5  # YOLO detection <-> our person pairing
PLAUSIBLE_LATENCY_S = 3600.0  # receive - stamp beyond this (or < 0): not the same clock
GT_SUFFIX = '/ground_truth'
SETTING_KEYS = ('steps', 'hypotheses', 'window_size', 'window_mode')


# ------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Person:
    """One estimated person, as ``PersonPose.msg`` carries it (float32 box, score, keypoints).

    ``detector_keypoints``: the paired YOLO11n-pose detection's keypoints (set by
    :func:`pair_detections`); ``pipeline_detector_keypoints``: the pipeline's own (offline only,
    None on frames whose box the tracker propagated), kept to check the pairing.
    """

    track_id: int
    box_xyxy: np.ndarray
    score: float
    keypoints: np.ndarray
    detector_keypoints: np.ndarray | None = None
    pipeline_detector_keypoints: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Frame:
    """One image message: position in stamp order (``index``; COCO image id ``index + 1``)."""

    index: int
    stamp_ns: int
    log_time_ns: int
    position: int  # order in the bag (log time order), for reading it again

    @property
    def image_id(self) -> int:
        return self.index + 1


@dataclasses.dataclass
class ImageStream:
    """The image messages of one topic of a bag, ordered by header stamp."""

    bag: Path
    topic: str
    msgtype: str
    frames: list[Frame]
    duplicate_stamps: int
    custom_data: dict[str, str]
    messages_in_bag: int

    @property
    def camera(self) -> str:
        from diffpose_ros.ros.params import camera_name_for

        topic = self.topic.removesuffix('/compressed')
        return camera_name_for(topic)


@dataclasses.dataclass
class GroundTruth:
    topic: str
    images: dict[int, metrics.GtImage]  # image id -> GT (labelled frames only)
    messages: int
    unmatched_stamps: int  # GT messages whose stamp is no image's


@dataclasses.dataclass
class Output:
    """One recorded PersonPoseArray."""

    stamp_ns: int
    log_time_ns: int
    persons: list[Person]
    settings: tuple[int, int, int, str]  # steps, hypotheses, window_size, window_mode
    pose_latency_ms: float
    camera: str


@dataclasses.dataclass
class Recording:
    bag: Path
    topic: str
    outputs: list[Output]
    log_time: str  # custom_data diffpose_ros.log_time, or 'unknown'


# --------------------------------------------------------------------------------- reading
def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _custom_data(bag: str | Path) -> dict[str, str]:
    return {str(k): str(v) for k, v in (io.bag_info(bag).get('custom_data') or {}).items()}


def _image_connection(reader: Any, topic: str | None, custom: Mapping[str, str]) -> Any:
    images = [c for c in reader.connections if c.msgtype in io.IMAGE_TYPES]
    by_topic = {c.topic: c for c in images}
    if topic:
        for name in (topic, f'{topic.rstrip("/")}/compressed'):
            if name in by_topic:
                return by_topic[name]
        known = {c.topic: c.msgtype for c in reader.connections}
        if topic in known:
            raise io.BagError(f'{topic} is a {known[topic]} topic, not an image topic')
        raise io.BagError(f'no image topic {topic} in the bag; its image topics: '
                          f'{", ".join(sorted(by_topic)) or "none"}')
    if custom.get('diffpose_ros.image_topic') in by_topic:
        return by_topic[custom['diffpose_ros.image_topic']]
    if len(by_topic) == 1:
        return images[0]
    colour = [c for t, c in by_topic.items() if 'depth' not in t.lower()]  # an RGB-D bag
    if len(colour) == 1:
        return colour[0]
    if not by_topic:
        raise io.BagError('the bag has no sensor_msgs/Image or CompressedImage topic '
                          f'(topics: {", ".join(sorted(c.topic for c in reader.connections))})')
    raise io.BagError(f'the bag has several image topics ({", ".join(sorted(by_topic))}): '
                      'choose one with --camera-topic')


def scan_images(bag: str | Path, topic: str | None = None, max_frames: int = 0) -> ImageStream:
    """The image messages of ``topic`` (default: the bag's image topic) in stamp order.

    A stamp seen twice keeps its first message (counted in ``duplicate_stamps``): outputs are
    matched to frames by stamp. ``max_frames`` > 0 keeps the first N frames.
    """
    custom = _custom_data(bag)
    with io.open_bag(bag) as reader:
        connection = _image_connection(reader, topic, custom)
        store = io.bag_typestore(reader)
        entries = []
        for position, (conn, log_time, raw) in enumerate(
                io.iter_messages(reader, [connection])):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            entries.append((_stamp(msg.header), position, int(log_time)))
    entries.sort()
    frames: list[Frame] = []
    duplicates = 0
    for stamp, position, log_time in entries:
        if frames and frames[-1].stamp_ns == stamp:
            duplicates += 1
            continue
        frames.append(Frame(len(frames), stamp, log_time, position))
    if max_frames > 0:
        frames = frames[:max_frames]
    if not frames:
        raise io.BagError(f'bag {bag}: no messages on {connection.topic}')
    return ImageStream(bag=Path(bag), topic=connection.topic, msgtype=connection.msgtype,
                       frames=frames, duplicate_stamps=duplicates, custom_data=custom,
                       messages_in_bag=len(entries))


def decode_image(msg: Any, msgtype: str, max_pixels: int) -> np.ndarray:
    """BGR image as the node decodes it (same converter, same checks; no cv_bridge).

    Raises ImageConversionError or pipeline.InvalidImageError (the node's bad-input cases).
    """
    from diffpose_ros.pipeline import validate_image
    from diffpose_ros.ros.image_conversion import compressed_to_bgr, image_to_bgr

    if msgtype == io.COMPRESSED_IMAGE_TYPE:
        image = compressed_to_bgr(msg, max_pixels=max_pixels)
    else:
        image = image_to_bgr(msg, max_pixels=max_pixels, use_cv_bridge=False)
    validate_image(image, max_pixels)
    return image


def iter_images(stream: ImageStream, frames: Sequence[Frame] | None = None,
                max_pixels: int = 4096 * 4096
                ) -> Iterator[tuple[Frame, np.ndarray | None, str | None]]:
    """(frame, BGR image or None, error or None) for ``frames`` (default all) in stamp order.

    Streams when the bag's order is the stamp order; messages that arrive early are held
    until their turn.
    """
    from diffpose_ros.pipeline import InvalidImageError
    from diffpose_ros.ros.image_conversion import ImageConversionError

    wanted = list(stream.frames if frames is None else frames)
    by_position = {f.position: f for f in wanted}
    order = iter(wanted)
    expected = next(order, None)
    pending: dict[int, bytes] = {}
    with io.open_bag(stream.bag) as reader:
        store = io.bag_typestore(reader)
        connections = [c for c in reader.connections if c.topic == stream.topic]

        def decoded(frame: Frame, raw: Any) -> tuple[Frame, np.ndarray | None, str | None]:
            msg = store.deserialize_cdr(raw, stream.msgtype)
            try:
                return frame, decode_image(msg, stream.msgtype, max_pixels), None
            except ImageConversionError as exc:
                return frame, None, f'{exc.kind}: {exc}'
            except InvalidImageError as exc:
                return frame, None, f'inconsistent_size: {exc}'

        for position, (_, _, raw) in enumerate(io.iter_messages(reader, connections)):
            if expected is None:
                break
            if position not in by_position:
                continue
            pending[position] = bytes(raw)
            while expected is not None and expected.position in pending:
                yield decoded(expected, pending.pop(expected.position))
                expected = next(order, None)
    if expected is not None:
        raise io.BagError(f'bag {stream.bag}: message {expected.position} of {stream.topic} '
                          'vanished between two reads')


def _pose_connections(reader: Any) -> dict[str, Any]:
    return {c.topic: c for c in reader.connections if c.msgtype == io.POSE_ARRAY_TYPE}


def _named_pose_connection(poses: Mapping[str, Any], topic: str, where: str) -> Any:
    if topic not in poses:
        raise io.BagError(f'{where} has no {io.POSE_ARRAY_TYPE} topic {topic} (it has '
                          f'{", ".join(sorted(poses)) or "none"})')
    return poses[topic]


def _gt_topic(reader: Any, topic: str | None, custom: Mapping[str, str]) -> Any | None:
    poses = _pose_connections(reader)
    if topic:
        return _named_pose_connection(poses, topic, 'the bag')
    named = custom.get('diffpose_ros.ground_truth_topic')
    if named in poses:
        return poses[named]
    found = [c for t, c in sorted(poses.items()) if t.endswith(GT_SUFFIX)]
    return found[0] if len(found) == 1 else None


def gt_person(person: Any) -> metrics.GtPerson:
    """A ground-truth ``PersonPose`` (make's convention: confidence 0 = unlabelled)."""
    kp = np.array([[k.x, k.y, k.confidence] for k in person.keypoints], dtype=np.float64)
    kp[:, 2] = np.where(kp[:, 2] > 0, 2.0, 0.0)
    x0, y0 = float(person.box_x_min), float(person.box_y_min)
    w = max(float(person.box_x_max) - x0, 0.0)
    h = max(float(person.box_y_max) - y0, 0.0)
    track = int(person.track_id)
    return metrics.GtPerson(keypoints=kp, box_xywh=np.array([x0, y0, w, h]),
                            track_id=None if track < 0 else track)


def read_ground_truth(stream: ImageStream, topic: str | None = None) -> GroundTruth | None:
    """The bag's ground truth per frame (matched by stamp), or None when it has none."""
    frames = {f.stamp_ns: f for f in stream.frames}
    with io.open_bag(stream.bag) as reader:
        connection = _gt_topic(reader, topic, stream.custom_data)
        if connection is None:
            return None
        store = io.bag_typestore(reader)
        images: dict[int, metrics.GtImage] = {}
        messages = unmatched = 0
        for conn, _, raw in io.iter_messages(reader, [connection]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            messages += 1
            frame = frames.get(_stamp(msg.header))
            if frame is None:
                unmatched += 1
                continue
            images[frame.image_id] = metrics.GtImage(
                image_id=frame.image_id, file_name=str(frame.stamp_ns), width=0, height=0,
                persons=tuple(gt_person(p) for p in msg.persons), frame_index=frame.index)
    images = dict(sorted(images.items()))
    return GroundTruth(topic=connection.topic, images=images, messages=messages,
                       unmatched_stamps=unmatched)


def person_from_msg(person: Any) -> Person:
    return Person(
        track_id=int(person.track_id),
        box_xyxy=np.array([person.box_x_min, person.box_y_min, person.box_x_max,
                           person.box_y_max], dtype=np.float32),
        score=float(np.float32(person.detection_score)),
        keypoints=np.array([[k.x, k.y, k.confidence] for k in person.keypoints],
                           dtype=np.float32))


def _poses_connection(reader: Any, path: Path, topic: str | None, camera: str) -> Any:
    poses = _pose_connections(reader)
    if topic:
        return _named_pose_connection(poses, topic, f'recorded bag {path}')
    candidates = {t: c for t, c in poses.items() if not t.endswith(GT_SUFFIX)}
    if len(candidates) == 1:
        return next(iter(candidates.values()))
    preferred = [c for t, c in candidates.items() if t.endswith(f'/diffpose/{camera}/poses')]
    if len(preferred) == 1:
        return preferred[0]
    if not candidates:
        topics = ', '.join(sorted(c.topic for c in reader.connections)) or 'no topics'
        raise io.BagError(f'recorded bag {path} has no {io.POSE_ARRAY_TYPE} output topic '
                          f'({topics}); record the node with `diffpose-bag record`')
    raise io.BagError(f'recorded bag {path} has several pose topics ({", ".join(candidates)}): '
                      'choose one with --poses-topic')


def read_recording(path: str | Path, topic: str | None = None,
                   camera: str = 'camera') -> Recording:
    """The node's recorded PersonPoseArray outputs (log time = receive time)."""
    path = Path(path)
    custom = _custom_data(path)
    with io.open_bag(path) as reader:
        connection = _poses_connection(reader, path, topic, camera)
        store = io.bag_typestore(reader)
        outputs = []
        for conn, log_time, raw in io.iter_messages(reader, [connection]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            outputs.append(Output(
                stamp_ns=_stamp(msg.header), log_time_ns=int(log_time),
                persons=[person_from_msg(p) for p in msg.persons],
                settings=(int(msg.steps), int(msg.hypotheses), int(msg.window_size),
                          str(msg.window_mode)),
                pose_latency_ms=float(msg.pose_latency_ms), camera=str(msg.camera)))
    if not outputs:
        raise io.BagError(f'recorded bag {path}: no messages on {connection.topic}')
    return Recording(bag=path, topic=connection.topic, outputs=outputs,
                     log_time=custom.get('diffpose_ros.log_time', 'unknown'))


# ------------------------------------------------------------------------- configuration
def pipeline_config(params_file: str | Path | None = None, node_name: str = 'diffpose',
                    **overrides: Any) -> tuple[Any, str | None]:
    """(PipelineConfig, weights path or None) as the node would build them.

    Starts from the node's parameter defaults (``config/diffpose_cpu.yaml``: onnxruntime,
    ``detect_every_n`` 2, ``detector_imgsz`` 640, ...), then ``params_file`` (a node params
    YAML; parameters that are not the pipeline's, e.g. ``use_sim_time``, are ignored), then
    the ``overrides`` that are not None (parameter names, e.g. ``steps=1``,
    ``weights_path='x.safetensors'``).
    """
    from diffpose_ros.ros import params

    values: dict[str, Any] = {}
    if params_file is not None:
        loaded = params.load_yaml_defaults(params_file, node_name)
        values.update({k: v for k, v in loaded.items() if k in params.SPECS})
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = params.to_pipeline_config(values)  # validates every value
    weights = {**params.defaults(), **values}['weights_path'] or None
    return config, weights


def settings_of(config: Any) -> dict[str, Any]:
    return {'steps': config.steps, 'hypotheses': config.hypotheses, 'seed': config.seed,
            'ddim_eta': config.ddim_eta, 'window_mode': config.window_mode,
            'window_size': config.window_size, 'detector_imgsz': config.detector_imgsz,
            'detect_every_n': config.detect_every_n,
            'detection_score_threshold': config.detection_score_threshold,
            'max_persons': config.max_persons,
            'keypoint_score_threshold': config.keypoint_score_threshold,
            'track_max_age_s': config.track_max_age_s, 'backend': config.backend}


# ------------------------------------------------------------------------------- running
def pair_detections(persons: Sequence[Person], detections: Sequence[Any],
                    min_iou: float = PAIR_MIN_IOU) -> None:
    """Set each person's ``detector_keypoints`` to its paired detection's (None if unpaired).

    Optimal one-to-one assignment on box IoU (the tracker's own matcher), pairs >= min_iou.
    """
    from diffpose_ros.tracking import iou_xyxy, match_by_iou

    for person in persons:
        person.detector_keypoints = None
    usable = [d for d in detections if d.keypoints is not None]
    if not persons or not usable:
        return
    iou = iou_xyxy(np.stack([p.box_xyxy for p in persons]),
                   np.stack([d.box_xyxy for d in usable]))
    matches, _, _ = match_by_iou(iou, min_iou)
    for row, col in matches:
        persons[row].detector_keypoints = np.array(usable[col].keypoints, dtype=np.float32)


def _person_from_pipeline(person: Any) -> Person:
    """What the node would publish for a pipeline person (float32 as in the message)."""
    return Person(track_id=int(person.track_id),
                  box_xyxy=np.asarray(person.box_xyxy, dtype=np.float32).copy(),
                  score=float(np.float32(person.score)),
                  keypoints=np.asarray(person.keypoints, dtype=np.float32).copy(),
                  pipeline_detector_keypoints=None if person.detector_keypoints is None
                  else np.asarray(person.detector_keypoints, dtype=np.float32).copy())


def _progress(total: int, desc: str, enabled: bool) -> Any:
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit='frame', disable=not enabled, file=sys.stderr)


@dataclasses.dataclass
class Run:
    """Per-frame outputs of one mode, before scoring."""

    outputs: dict[int, list[Person]]  # frame index -> persons (frames with an output)
    detections: dict[int, list[Any]]  # frame index -> YOLO11n-pose detections
    bad: dict[int, str]  # frame index -> why it could not be decoded
    extra: dict[str, Any]
    sizes: dict[int, tuple[int, int]] = dataclasses.field(default_factory=dict)  # (w, h)


def run_offline(stream: ImageStream, config: Any, runtime: Any, detector: Any,
                progress: bool = False) -> Run:
    """The pipeline over every frame of ``stream`` (stamps = header stamps); flushed."""
    detector = E.caching(detector)
    pipeline = E.make_pipeline(config, runtime, detector)
    by_stamp = {f.stamp_ns: f for f in stream.frames}
    outputs: dict[int, list[Person]] = {}
    detections: dict[int, list[Any]] = {}
    bad: dict[int, str] = {}
    stage_ms: dict[str, float] = collections.defaultdict(float)
    frame_ms: list[float] = []
    sizes: dict[int, tuple[int, int]] = {}

    def take(results: Sequence[Any]) -> None:
        for result in results:
            outputs[by_stamp[result.stamp_ns].index] = [
                _person_from_pipeline(p) for p in result.persons]

    bar = _progress(len(stream.frames), 'offline', progress)
    for frame, image, error in iter_images(stream, max_pixels=config.max_image_pixels):
        bar.update(1)
        if image is None:
            bad[frame.index] = error
            continue
        sizes[frame.index] = (image.shape[1], image.shape[0])
        start = time.perf_counter()
        result = pipeline.process(image, frame.stamp_ns, stream.camera)
        frame_ms.append((time.perf_counter() - start) * 1000.0)
        take([result] if result is not None else [])
        if result is not None:
            for stage, ms in result.timings_ms.items():
                stage_ms[stage] += ms
        detections[frame.index] = detector.detect(image)  # cached where the pipeline detected
    take(pipeline.flush())
    bar.close()
    for index, persons in outputs.items():
        pair_detections(persons, detections[index])
    checked = [p for ps in outputs.values() for p in ps
               if p.pipeline_detector_keypoints is not None]
    agree = sum(p.detector_keypoints is not None
                and np.array_equal(p.detector_keypoints, p.pipeline_detector_keypoints)
                for p in checked)
    n = max(len(frame_ms), 1)
    extra = {
        'pipeline_ms_per_frame': {
            'mean': float(np.mean(frame_ms)) if frame_ms else math.nan,
            'p50': float(np.percentile(frame_ms, 50)) if frame_ms else math.nan,
            'max': float(np.max(frame_ms)) if frame_ms else math.nan,
            'by_stage_mean': {k: v / n for k, v in stage_ms.items()},
            'note': 'wall time of PosePipeline.process in this process (YOLO included on '
                    'detection frames); not the live latency'},
        'pairing_check': {
            'persons_with_pipeline_detections': len(checked),
            'paired_detection_is_the_pipelines': int(agree),
            'note': 'persons whose box came from a detection this frame: the IoU pairing '
                    'found that same detection'},
        'detector_cache': {'images': len(detector), 'hits': detector.hits,
                           'misses': detector.misses},
    }
    return Run(outputs=outputs, detections=detections, bad=bad, extra=extra, sizes=sizes)


def match_recording(stream: ImageStream, recording: Recording
                    ) -> tuple[dict[int, Output], dict[str, Any]]:
    """Recorded outputs by frame index (first output per stamp) and the matching counts."""
    frames = {f.stamp_ns: f for f in stream.frames}
    matched: dict[int, Output] = {}
    unmatched = duplicates = 0
    for output in recording.outputs:
        frame = frames.get(output.stamp_ns)
        if frame is None:
            unmatched += 1
        elif frame.index in matched:
            duplicates += 1
        else:
            matched[frame.index] = output
    counts = {'outputs_recorded': len(recording.outputs), 'outputs_matched': len(matched),
              'outputs_with_unknown_stamp': unmatched, 'outputs_duplicate_stamp': duplicates}
    return matched, counts


def run_recorded(stream: ImageStream, matched: Mapping[int, Output], detector: Any,
                 max_pixels: int, progress: bool = False) -> Run:
    """YOLO11n-pose on the frames the node published; persons from the recording."""
    detector = E.caching(detector)
    outputs: dict[int, list[Person]] = {}
    detections: dict[int, list[Any]] = {}
    bad: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    bar = _progress(len(stream.frames), 'recorded', progress)
    for frame, image, error in iter_images(stream, max_pixels=max_pixels):
        bar.update(1)
        if image is None:
            bad[frame.index] = error
            continue
        if frame.index not in matched:
            continue
        sizes[frame.index] = (image.shape[1], image.shape[0])
        persons = [dataclasses.replace(p) for p in matched[frame.index].persons]
        detections[frame.index] = detector.detect(image)
        pair_detections(persons, detections[frame.index])
        outputs[frame.index] = persons
    bar.close()
    extra = {'detector_cache': {'images': len(detector), 'hits': detector.hits,
                                'misses': detector.misses}}
    return Run(outputs=outputs, detections=detections, bad=bad, extra=extra, sizes=sizes)


# ------------------------------------------------------------------------------- scoring
def _results(frames: Sequence[Frame], run: Run) -> tuple[list, list, list]:
    ours, yolo, paired = [], [], []
    for frame in frames:
        persons = run.outputs[frame.index]
        ours += E.persons_to_results(frame.image_id, persons)
        paired += E.persons_to_results(frame.image_id, persons, detector=True)
        yolo += E.detections_to_results(frame.image_id, run.detections[frame.index])
    return ours, yolo, paired


def score_frames(frames: Sequence[Frame], run: Run, gt: GroundTruth | None,
                 n_resamples: int = E.BOOTSTRAP_RESAMPLES,
                 min_track_frames: int = E.MIN_TRACK_FRAMES) -> dict[str, Any]:
    """Accuracy (with GT) and temporal metrics of ``run`` on ``frames`` (all with outputs)."""
    ours, yolo, paired = _results(frames, run)
    accuracy = None
    if gt is not None:
        ids = {f.image_id for f in frames}
        images = {i: img for i, img in gt.images.items() if i in ids}
        s_ours = E.score_predictions(images, ours, n_resamples=n_resamples)
        s_yolo = E.score_predictions(images, yolo, n_resamples=n_resamples)
        s_paired = E.score_predictions(images, paired, n_resamples=n_resamples)
        accuracy = {
            'gt_frames_scored': len(images),
            'gt_persons_scored': int(len(s_ours.pck.labelled)),
            'ours': s_ours.summary,
            'yolo': s_yolo.summary,
            'yolo_paired': s_paired.summary,
            'ours_minus_yolo_limb_pck': E.paired_difference(s_ours, s_yolo, n_resamples),
            'ours_minus_yolo_paired_limb_pck': E.paired_difference(s_ours, s_paired,
                                                                   n_resamples),
            'ours_ci_overlaps_or_beats_yolo': E.ci_overlaps_or_beats(
                s_ours.summary['limb_pck']['ci95_percent'],
                s_yolo.summary['limb_pck']['ci95_percent']),
        }
    records = [(f.index, p) for f in frames for p in run.outputs[f.index]]
    temporal = E.analyse_tracks(E.collect_tracks(records), min_track_frames=min_track_frames)
    return {'accuracy': accuracy, 'temporal': temporal,
            'results': {'ours': ours, 'yolo': yolo, 'yolo_paired': paired}}


def _stats_ms(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {'count': 0, 'min': None, 'p50': None, 'p95': None, 'max': None, 'mean': None}
    return {'count': int(v.size), 'min': float(v.min()), 'p50': float(np.percentile(v, 50)),
            'p95': float(np.percentile(v, 95)), 'max': float(v.max()),
            'mean': float(v.mean())}


def latency_summary(outputs: Sequence[Output], log_time: str) -> dict[str, Any]:
    """Receive time (the recording's log time) minus the source stamp, in ms."""
    values = [(o.log_time_ns - o.stamp_ns) / 1e6 for o in outputs]
    stats = _stats_ms(values)
    consistent = bool(values) and stats['min'] >= 0 and \
        stats['max'] <= PLAUSIBLE_LATENCY_S * 1000.0
    summary = {
        'definition': 'recorded log time (receive time at the recorder) - header stamp of the '
                      'source image, ms; percentiles linear (numpy)',
        'log_time': log_time,
        'clock_consistent': consistent,
        'ms': stats,
        'per_frame_ms': values,
    }
    if not consistent and values:
        summary['note'] = (
            'receive times and stamps are not on one clock (a latency below 0 or above '
            f'{PLAUSIBLE_LATENCY_S:.0f} s): e.g. a bag played without --clock into a '
            'wall-clock recorder. Play with --clock and record with --use-sim-time (latency in '
            'bag time), or feed frames stamped with the current time. relative_ms = latency '
            'minus the smallest one')
        summary['relative_ms'] = _stats_ms(np.asarray(values) - stats['min'])
    return summary


# ------------------------------------------------------------------------------- outputs
def _bbox_xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def predictions_json(frames: Sequence[Frame], run: Run, source: str, meta: Mapping[str, Any],
                     detector: bool = False) -> dict[str, Any]:
    """Bag-independent predictions: COCO results + ``stamp_ns`` (+ ``track_id`` for ours)."""
    annotations = []
    for frame in frames:
        if detector:
            rows = [(None, d.box_xyxy, d.score, d.keypoints) for d in run.detections[frame.index]
                    if d.keypoints is not None]
        else:
            rows = [(p.track_id, p.box_xyxy, p.score, p.keypoints)
                    for p in run.outputs[frame.index]]
        for track_id, box, score, keypoints in rows:
            [result] = metrics.coco_results(frame.image_id, np.asarray(keypoints)[None],
                                            np.array([score]))
            result.update({'stamp_ns': frame.stamp_ns, 'bbox': _bbox_xywh(box)})
            if track_id is not None:
                result['track_id'] = int(track_id)
            annotations.append(result)
    return {'format': PREDICTIONS_FORMAT, 'source': source,
            'keypoints': 'COCO-17 x, y [px, origin at the top-left corner of the top-left '
                         'pixel], confidence',
            **meta,
            'images': [{'id': f.image_id, 'frame': f.index, 'stamp_ns': f.stamp_ns}
                       for f in frames],
            'annotations': annotations}


def _frame_rows(stream: ImageStream, run: Run, gt: GroundTruth | None,
                outputs: Mapping[int, Output] | None) -> list[dict[str, Any]]:
    rows = []
    for frame in stream.frames:
        if frame.index in run.bad:
            status = 'bad_input'
        elif frame.index in run.outputs:
            status = 'scored'
        else:
            status = 'no_output' if outputs is None else 'dropped'
        row = {'frame': frame.index, 'stamp_ns': frame.stamp_ns, 'status': status,
               'persons': len(run.outputs.get(frame.index, [])),
               'yolo_detections': len(run.detections.get(frame.index, [])),
               'gt_persons': None if gt is None or frame.image_id not in gt.images
               else len(gt.images[frame.image_id].persons)}
        if outputs is not None and frame.index in outputs:
            row['latency_ms'] = (outputs[frame.index].log_time_ns - frame.stamp_ns) / 1e6
        if status == 'bad_input':
            row['error'] = run.bad[frame.index]
        rows.append(row)
    return rows


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _latency_axes(ax: Any, latency: Mapping[str, Any]) -> None:
    """Histogram of receive - stamp (relative to the smallest when the clocks differ)."""
    values = np.asarray(latency['per_frame_ms'], dtype=np.float64)
    relative = not latency['clock_consistent']
    if relative:
        values = values - values.min()
    ax.hist(values, bins=min(40, max(5, len(values) // 2)), color='tab:purple',
            edgecolor='white')
    stats = latency['relative_ms' if relative else 'ms']
    for key, style in (('p50', '-'), ('p95', '--'), ('max', ':')):
        ax.axvline(stats[key], color='k', linestyle=style, label=f'{key} {stats[key]:.0f} ms')
    ax.set_xlabel('latency above the smallest [ms] (stamps on another clock)' if relative
                  else 'receive time - stamp [ms]')
    ax.set_ylabel('frames')
    ax.set_title(f'live latency, {stats["count"]} outputs ({latency["log_time"]})', fontsize=9)
    ax.legend(fontsize=8)


def plot_latency(path: Path, latency: Mapping[str, Any]) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _latency_axes(ax, latency)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(path: Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
                ) -> Path:
    """One PNG: per-joint limb PCK, jitter, latency (recorded) and persons per frame."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    ax = axes[0, 0]
    accuracy = summary.get('accuracy')
    if accuracy:
        joints = list(accuracy['ours']['limb_pck']['per_joint_percent'])
        x = np.arange(len(joints))
        for offset, key, label, colour in ((-0.2, 'ours', 'ours', 'tab:red'),
                                           (0.2, 'yolo', 'YOLO11n-pose', 'tab:blue')):
            pck = accuracy[key]['limb_pck']
            vals = [E._nan_if_none(pck['per_joint_percent'][j]) for j in joints]
            ax.bar(x + offset, vals, 0.4, color=colour,
                   label=f'{label}: {E._nan_if_none(pck["pck_percent"]):.1f} %, OKS AP '
                         f'{E._nan_if_none(accuracy[key]["oks_ap_percent"]["AP"]):.1f}')
        ax.set_xticks(x)
        ax.set_xticklabels([j.replace('_', '\n') for j in joints], fontsize=6)
        ax.set_ylim(0, 105)
        ax.set_ylabel('limb PCK@0.1 [%]')
        ax.legend(fontsize=7, loc='lower right')
        ax.set_title(f'{accuracy["gt_frames_scored"]} GT frames, '
                     f'{accuracy["gt_persons_scored"]} persons', fontsize=9)
    else:
        ax.text(0.5, 0.5, 'no ground truth in the bag:\ntemporal metrics only', ha='center',
                va='center')
        ax.set_axis_off()
    ax = axes[0, 1]
    jit = summary['temporal']['jitter']
    vals = [E._nan_if_none(jit[k]) for k in ('ours', 'yolo_raw', 'teacher_smoothed')]
    ax.bar(['ours', 'YOLO raw', 'teacher'], vals, color=['tab:red', 'tab:blue', 'tab:green'])
    lag = summary['temporal']['lag']['pooled_frames']
    agr = summary['temporal']['agreement']
    ax.set_ylabel('jitter (box-normalised acceleration)')
    ax.set_title(f'{summary["temporal"]["num_tracks_used"]} tracks; lag {lag} frames; '
                 f'agreement ours {E._nan_if_none(agr["ours_vs_teacher_percent"]):.1f} %, '
                 f'YOLO {E._nan_if_none(agr["yolo_raw_vs_teacher_percent"]):.1f} %',
                 fontsize=8)
    ax = axes[1, 0]
    latency = summary.get('latency')
    if latency and latency['per_frame_ms']:
        _latency_axes(ax, latency)
    else:
        times = summary.get('pipeline_ms_per_frame') or {}
        ax.text(0.5, 0.5, 'offline run: no live latency\npipeline '
                f'{E._nan_if_none(times.get("mean")):.0f} ms/frame here', ha='center',
                va='center')
        ax.set_axis_off()
    ax = axes[1, 1]
    frames = [r['frame'] for r in rows]
    ax.plot(frames, [r['persons'] if r['status'] == 'scored' else np.nan for r in rows],
            '.-', color='tab:red', label='ours')
    ax.plot(frames, [r['yolo_detections'] if r['status'] == 'scored' else np.nan
                     for r in rows], '.', color='tab:blue', label='YOLO detections')
    if any(r['gt_persons'] is not None for r in rows):
        ax.plot(frames, [np.nan if r['gt_persons'] is None else r['gt_persons'] for r in rows],
                'x', color='tab:green', label='GT')
    missing = [r['frame'] for r in rows if r['status'] != 'scored']
    if missing:
        ax.plot(missing, [0] * len(missing), '|', color='k', markersize=12,
                label=f'not scored ({len(missing)})')
    ax.set_xlabel('frame (position in the bag)')
    ax.set_ylabel('persons')
    ax.set_ylim(bottom=-0.5)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    trained = summary.get('trained')
    note = '' if trained is not False else '  [UNTRAINED head: random weights]'
    fig.suptitle(f'diffpose-bag evaluate ({summary["mode"]}): {Path(summary["bag"]).name}'
                 f'{note}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write(out: Path, stream: ImageStream, run: Run, scored: Sequence[Frame],
           gt: GroundTruth | None, summary: dict[str, Any], source: str,
           outputs: Mapping[int, Output] | None = None,
           frame_extra: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    meta = {'bag': str(stream.bag), 'camera_topic': stream.topic,
            **({'recorded_bag': summary['recorded_bag']} if 'recorded_bag' in summary else {})}
    files = {'evaluation': out / 'evaluation.json',
             'predictions_ours': out / 'predictions_ours.json',
             'predictions_yolo': out / 'predictions_yolo.json',
             'report': out / 'report.png'}
    E.write_json(files['predictions_ours'], predictions_json(scored, run, source, meta))
    E.write_json(files['predictions_yolo'],
                 predictions_json(scored, run, 'yolo11n-pose', meta, detector=True))
    if gt is not None:
        files['gt_coco'] = out / 'gt_coco.json'
        E.write_json(files['gt_coco'], metrics.to_coco17_dataset(gt.images))
    if summary.get('latency'):
        files['latency_png'] = plot_latency(out / 'latency.png', summary['latency'])
    rows = _frame_rows(stream, run, gt, outputs)
    for row in rows:
        row.update((frame_extra or {}).get(row['frame'], {}))
    summary['per_frame'] = rows
    summary['outputs'] = {k: str(v) for k, v in files.items()}
    plot_report(files['report'], summary, rows)
    E.write_json(files['evaluation'], summary)
    return summary


def _frames_summary(stream: ImageStream, run: Run, scored: Sequence[Frame]) -> dict[str, Any]:
    return {'image_messages': stream.messages_in_bag,
            'duplicate_stamps_skipped': stream.duplicate_stamps,
            'frames': len(stream.frames), 'bad_input': len(run.bad), 'scored': len(scored),
            'first_stamp_ns': stream.frames[0].stamp_ns,
            'last_stamp_ns': stream.frames[-1].stamp_ns}


def _gt_summary(gt: GroundTruth | None) -> dict[str, Any] | None:
    if gt is None:
        return None
    return {'topic': gt.topic, 'messages': gt.messages, 'frames': len(gt.images),
            'persons': sum(len(i.persons) for i in gt.images.values()),
            'messages_with_unknown_stamp': gt.unmatched_stamps,
            'oks_area': '0.53 * GT box width * height (the message has no area)'}


def _depth_3d(stream: ImageStream, run: Run, depth: Any, tolerance_ms: float
              ) -> tuple[dict[str, Any] | None, dict[int, list[Any]] | None,
                         dict[int, dict[str, Any]]]:
    """(evaluation.json's ``depth_3d``, our 3D persons per frame, per-frame row fields)."""
    from diffpose_ros.bags import depth as bag_depth

    if depth is None:
        return None, None, {}
    tolerance_ns = int(round(tolerance_ms * 1e6))
    if depth.unusable is not None:
        return bag_depth.summarise(depth, tolerance_ns, None, []), None, {}
    stamps = {f.index: f.stamp_ns for f in stream.frames}
    results, counts = bag_depth.compute_3d(run.outputs, stamps, run.sizes, depth, tolerance_ns)
    persons = [p for ps in results.values() for p in ps]
    rows = {index: {'depth_matched': index in results,
                    'persons_3d': len(results.get(index, [])),
                    'valid_joints_3d': int(sum(p.valid.sum() for p in results.get(index, [])))}
            for index in run.outputs}
    return bag_depth.summarise(depth, tolerance_ns, counts, persons), results, rows


def evaluate_offline(stream: ImageStream, out: str | Path, config: Any, runtime: Any,
                     detector: Any, gt: GroundTruth | None = None, *,
                     n_resamples: int = E.BOOTSTRAP_RESAMPLES,
                     min_track_frames: int = E.MIN_TRACK_FRAMES, progress: bool = False,
                     info: Mapping[str, Any] | None = None, depth: Any = None,
                     depth_tolerance_ms: float = DEFAULT_DEPTH_TOLERANCE_MS) -> dict[str, Any]:
    """Run the pipeline over the bag, score, write ``out``; returns evaluation.json's dict.
    ``depth``: the bag's :class:`~diffpose_ros.bags.depth.DepthStream` (3D figures) or None."""
    start = time.perf_counter()
    run = run_offline(stream, config, runtime, detector, progress)
    scored = [f for f in stream.frames if f.index in run.outputs]
    scores = score_frames(scored, run, gt, n_resamples, min_track_frames)
    frames = _frames_summary(stream, run, scored)
    frames['without_output'] = len(stream.frames) - len(run.bad) - len(scored)
    depth_3d, _, depth_rows = _depth_3d(stream, run, depth, depth_tolerance_ms)
    summary = {
        'format': FORMAT, 'mode': 'offline', 'bag': str(stream.bag),
        'camera_topic': stream.topic, 'image_type': stream.msgtype,
        **E.runtime_info(runtime, config), 'settings': settings_of(config),
        **dict(info or {}),
        'frames': frames, 'ground_truth': _gt_summary(gt),
        'accuracy': scores['accuracy'], 'temporal': scores['temporal'],
        'depth_3d': depth_3d, 'latency': None, **run.extra,
        'bootstrap_resamples': n_resamples, 'min_track_frames': min_track_frames,
        'elapsed_s': time.perf_counter() - start,
    }
    return _write(Path(out), stream, run, scored, gt, summary, 'offline',
                  frame_extra=depth_rows)


def evaluate_recorded(stream: ImageStream, recording: Recording, out: str | Path, config: Any,
                      detector: Any, gt: GroundTruth | None = None, *,
                      n_resamples: int = E.BOOTSTRAP_RESAMPLES,
                      min_track_frames: int = E.MIN_TRACK_FRAMES, progress: bool = False,
                      info: Mapping[str, Any] | None = None, depth: Any = None,
                      depth_tolerance_ms: float = DEFAULT_DEPTH_TOLERANCE_MS,
                      recorded_3d: Any = None
                      ) -> dict[str, Any]:
    """Score a live run's recorded outputs against the input bag; write ``out``.
    ``depth``: as in :func:`evaluate_offline`, from the recorded 2D poses; ``recorded_3d``: the
    recording's ``poses_3d`` (:func:`diffpose_ros.bags.depth.read_recorded_3d`) or None."""
    start = time.perf_counter()
    matched, counts = match_recording(stream, recording)
    run = run_recorded(stream, matched, detector, config.max_image_pixels, progress)
    scored = [f for f in stream.frames if f.index in run.outputs]
    live = [matched[f.index] for f in scored]
    without = [f for f in stream.frames if f.index not in matched and f.index not in run.bad]
    tail = 0
    for frame in reversed(stream.frames):
        if frame.index in matched:
            break
        tail += frame.index not in run.bad
    frames = _frames_summary(stream, run, scored)
    frames.update({
        'dropped': len(without),
        'dropped_stamps_ns': [f.stamp_ns for f in without[:100]],
        'dropped_at_the_end': tail,
        'dropped_note': 'frames of the bag without a recorded output: the node\'s latest-frame '
                        'slot replaced them, or they came after the recording stopped (a '
                        'centred window also holds back its last window_size // 2 frames). '
                        'Left out of every figure, for ours and YOLO alike',
        'bad_input_with_output': sum(f.index in matched for f in stream.frames
                                     if f.index in run.bad),
        **counts})
    settings = collections.Counter(o.settings for o in live)
    live_settings = [{**dict(zip(SETTING_KEYS, key)), 'outputs': n}
                     for key, n in sorted(settings.items(), key=lambda kv: -kv[1])]
    own = (config.steps, config.hypotheses, config.window_size, config.window_mode)
    warnings = []
    if any(key != own for key in settings):
        used = '; '.join(str(dict(zip(SETTING_KEYS, key))) for key in settings)
        warnings.append(f'the live run used {used}, this evaluation is configured for '
                        f'{dict(zip(SETTING_KEYS, own))}: an offline evaluation with these '
                        'settings will not match the live one')
    paired = sum(p.detector_keypoints is not None for ps in run.outputs.values() for p in ps)
    persons = sum(len(ps) for ps in run.outputs.values())
    scores = score_frames(scored, run, gt, n_resamples, min_track_frames)
    unique = settings.most_common(1)[0][0] if len(settings) == 1 else None
    depth_3d, ours_3d, depth_rows = _depth_3d(stream, run, depth, depth_tolerance_ms)
    live_3d = None
    if recorded_3d is not None:
        from diffpose_ros.bags import depth as bag_depth

        live_3d = bag_depth.summarise_recorded(
            recorded_3d, {f.index: f.stamp_ns for f in stream.frames}, run.outputs, ours_3d)
    summary = {
        'format': FORMAT, 'mode': 'recorded', 'bag': str(stream.bag),
        'camera_topic': stream.topic, 'image_type': stream.msgtype,
        'recorded_bag': str(recording.bag), 'poses_topic': recording.topic,
        'cameras_in_outputs': sorted({o.camera for o in recording.outputs}),
        'trained': None,
        **{k: (unique[i] if unique else None) for i, k in enumerate(SETTING_KEYS)},
        'live_settings': live_settings, 'settings': settings_of(config),
        **dict(info or {}),
        'frames': frames, 'ground_truth': _gt_summary(gt),
        'accuracy': scores['accuracy'], 'temporal': scores['temporal'],
        'depth_3d': depth_3d, 'live_3d': live_3d,
        'latency': latency_summary(live, recording.log_time),
        'pose_stage_ms': {**_stats_ms([o.pose_latency_ms for o in live]),
                          'definition': 'PersonPoseArray.pose_latency_ms (crop to decoding)'},
        'yolo_pairing': {'persons': persons, 'paired': int(paired), 'min_iou': PAIR_MIN_IOU},
        **run.extra, 'warnings': warnings,
        'bootstrap_resamples': n_resamples, 'min_track_frames': min_track_frames,
        'elapsed_s': time.perf_counter() - start,
    }
    return _write(Path(out), stream, run, scored, gt, summary, 'recorded', matched,
                  frame_extra=depth_rows)


def read_predictions_by_stamp(path: str | Path) -> dict[tuple[int, int], np.ndarray]:
    """(stamp_ns, track_id) -> (17, 3) keypoints from a predictions_ours.json."""
    data = json.loads(Path(path).read_text())
    if data.get('format') != PREDICTIONS_FORMAT:
        raise ValueError(f'{path}: not a {PREDICTIONS_FORMAT} file')
    return {(int(a['stamp_ns']), int(a['track_id'])):
            np.asarray(a['keypoints'], dtype=np.float64).reshape(NUM_KEYPOINTS, 3)
            for a in data['annotations']}
