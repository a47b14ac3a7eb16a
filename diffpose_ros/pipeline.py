"""The pose pipeline: image + stamp + camera id in, tracked COCO-17 poses out.

Per frame and camera: detect persons (every ``detect_every_n`` frames; boxes propagated by the
tracker in between) -> track -> crop each person with its own tracked box -> backbone features
(once per person-frame, cached in the track's ring buffer) -> per key frame, the window's cached
features, each neighbour warped into the key frame's crop -> STRL (window offsets from image
stamps) -> DDIM sampling (``steps`` x ``hypotheses``, all persons of all cameras batched) ->
sub-pixel decoding -> image pixels.

Where sampling starts (``diffusion_start``): ``detector`` (default) draws the detector's
keypoints of the person as confidence-weighted heatmaps, noises them to ``t_start`` and runs
DDIM from there (SDEdit-style); a frame without a fresh detection starts from the track's
previous estimate moved by the box motion (warm start). ``noise`` is the paper's start from
pure noise at t = T - 1. Between steps, x̂0 can be redrawn as clean Gaussians (`x0_projection`).

Window modes: ``causal`` -- the key frame is the newest frame (no delay); ``centered`` -- the key
frame is ``window_size // 2`` frames old, so results come out that many frames late, stamped with
the key frame's stamp; ``flush()`` emits the last ones at the end of a stream.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time

import cv2
import numpy as np

from diffpose_ros.buffers import (
    FramePeriodEstimator,
    FrameRecord,
    TrackBuffers,
    stamp_offsets,
    window_offsets,
)
from diffpose_ros.codec import (
    CropTransform,
    align_features,
    decode_heatmaps,
    render_prior_heatmaps,
)
from diffpose_ros.config import PipelineConfig
from diffpose_ros.detection import PersonDetector, validate_image_bgr
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.drawing import HIDE_BELOW, draw_skeleton
from diffpose_ros.runtime.base import PoseRuntime
from diffpose_ros.sampler import sample_heatmaps
from diffpose_ros.smoothing import OneEuroConfig, TrackFilters
from diffpose_ros.tracking import CameraTracker, tracker_config

LOGGER = logging.getLogger(__name__)
STAGES = ('detector', 'tracking', 'crop', 'backbone', 'strl', 'denoise', 'decode')


class InvalidImageError(ValueError):
    """The image cannot be processed (empty, wrong dtype or channels, absurd size)."""


@dataclasses.dataclass
class PersonPose:
    track_id: int
    box_xyxy: np.ndarray  # (4,) image px
    score: float  # detection score
    keypoints: np.ndarray  # (K, 3): x, y [image px], confidence [0, 1]
    detector_keypoints: np.ndarray | None  # (K, 3) the detector's single-frame estimate
    is_predicted: bool  # box propagated (no detection in the key frame)


@dataclasses.dataclass
class FrameResult:
    camera_id: str
    stamp_ns: int  # stamp of the key frame the poses refer to
    frame_index: int  # the camera's counter of the key frame
    persons: list[PersonPose]
    steps: int
    hypotheses: int
    window_size: int
    window_mode: str
    timings_ms: dict[str, float]  # per stage, for the whole call (shared across cameras)


@dataclasses.dataclass
class _PendingKey:
    frame_index: int
    stamp_ns: int


class _CameraState:
    def __init__(self, config: PipelineConfig):
        self.tracker = CameraTracker(tracker_config(config))
        self.buffers = TrackBuffers(horizon_frames=2 * config.window_size + 1)
        self.pending: collections.deque[_PendingKey] = collections.deque()
        self.frame_index = -1
        self.next_detection_frame = 0    # detect on the first frame and after every reset
        self.last_stamp_ns: int | None = None
        self.time_jumps = 0
        self.period = FramePeriodEstimator(int(round(config.frame_period_ms * 1e6)))
        # track id -> (box, keypoints (K, 3) image px) of its latest estimate (warm starts)
        self.estimates: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.filters = TrackFilters(keypoint_filter_config(config))

    def reset(self) -> None:
        self.filters.reset()
        self.tracker.reset()
        self.buffers.reset()
        self.pending.clear()
        self.estimates.clear()
        self.period.reset()
        self.last_stamp_ns = None
        self.next_detection_frame = self.frame_index + 1


def validate_image(image: np.ndarray, max_pixels: int) -> None:
    """The detector's checks (non-empty (H, W, 3) uint8) plus the size limit."""
    try:
        validate_image_bgr(image)
    except ValueError as exc:
        raise InvalidImageError(str(exc)) from exc
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise InvalidImageError(
            f'image is too large: {width}x{height} > {max_pixels} pixels (max_image_pixels)')


class PosePipeline:
    """Stateful multi-camera pipeline (one tracker and one set of buffers per camera)."""

    def __init__(self, config: PipelineConfig, runtime: PoseRuntime, detector: PersonDetector):
        self.config = config
        self.runtime = runtime
        self.detector = detector
        model_config = runtime.model_config
        self.model_config = model_config
        self.schedule = DiffusionSchedule.from_config(model_config)
        self.crop_hw = (model_config.crop_height, model_config.crop_width)
        self.heatmap_shape = (
            model_config.num_keypoints,
            model_config.heatmap_height,
            model_config.heatmap_width,
        )
        self.offsets = window_offsets(config.window_mode, config.window_size)
        self.delay_frames = int(self.offsets.max())
        self.cameras: dict[str, _CameraState] = {}
        self.backbone_crops = 0  # backbone passes, for "passes per person-frame"
        self.person_frames = 0

    # ------------------------------------------------------------------ run-time settings
    def set_sampling(self, steps: int | None = None, hypotheses: int | None = None,
                     t_start: int | None = None) -> None:
        """Change steps / hypotheses / t_start between frames (validated; no retraining)."""
        self.config = self.config.replace(
            steps=self.config.steps if steps is None else steps,
            hypotheses=self.config.hypotheses if hypotheses is None else hypotheses,
            t_start=self.config.t_start if t_start is None else t_start,
        )

    def set_keypoint_filter(self, kind: str | None = None, min_cutoff_hz: float | None = None,
                            beta: float | None = None) -> None:
        """Change the keypoint smoothing between frames (validated); filters restart."""
        self.config = self.config.replace(
            keypoint_filter=self.config.keypoint_filter if kind is None else kind,
            filter_min_cutoff_hz=(self.config.filter_min_cutoff_hz if min_cutoff_hz is None
                                  else min_cutoff_hz),
            filter_beta=self.config.filter_beta if beta is None else beta,
        )
        for state in self.cameras.values():
            state.filters = TrackFilters(keypoint_filter_config(self.config))

    def observe_stamp(self, camera_id: str, stamp_ns: int) -> None:
        """Tell the frame-period estimate about an image that arrived (also one that will be
        dropped before processing), so window offsets count real frame periods."""
        self.cameras.setdefault(camera_id, _CameraState(self.config)).period.observe(stamp_ns)

    def reset(self, camera_id: str | None = None) -> None:
        for cid, state in self.cameras.items():
            if camera_id is None or cid == camera_id:
                state.reset()

    # ------------------------------------------------------------------ main entry points
    def process(
        self, image_bgr: np.ndarray, stamp_ns: int, camera_id: str = 'camera'
    ) -> FrameResult | None:
        """One frame of one camera; None while a centred window is still filling."""
        results = self.process_batch([(image_bgr, stamp_ns, camera_id)])
        return results[0] if results else None

    def process_batch(self, frames: list[tuple[np.ndarray, int, str]]) -> list[FrameResult]:
        """Frames of several cameras (at most one per camera), persons batched in one inference."""
        cameras = [cid for _, _, cid in frames]
        if len(set(cameras)) != len(cameras):
            raise ValueError(f'at most one frame per camera per batch, got {cameras}')
        timings = dict.fromkeys(STAGES, 0.0)
        for image, _, _ in frames:
            validate_image(image, self.config.max_image_pixels)
        # per camera: detect, track, crop; then ONE backbone call over every camera's persons
        ingested = []
        for image, stamp_ns, camera_id in frames:
            state = self.cameras.setdefault(camera_id, _CameraState(self.config))
            ingested.append((state, *self._detect_track_crop(state, image, int(stamp_ns),
                                                              timings)))
        crops = [crop for _, _, people in ingested for crop, _, _ in people]
        if crops:
            start = time.perf_counter()
            batch = np.stack(crops)[..., ::-1].transpose(0, 3, 1, 2)  # BGR HWC -> RGB CHW
            features = iter(self.runtime.extract_features(
                np.ascontiguousarray(batch, dtype=np.float32) * np.float32(1 / 255)))
            timings['backbone'] += _ms_since(start)
            self.backbone_crops += len(crops)
        keys: list[tuple[str, _PendingKey]] = []
        for (state, stamp_ns, people), (_, _, camera_id) in zip(ingested, frames):
            for _, transform, person in people:
                state.buffers.push(person.track_id, FrameRecord(
                    frame_index=state.frame_index, stamp_ns=stamp_ns, features=next(features),
                    transform=transform, box_xyxy=np.asarray(person.box_xyxy, np.float32),
                    score=float(person.score), detector_keypoints=person.keypoints,
                    is_predicted=bool(person.is_predicted)))
            state.buffers.prune(state.frame_index - (len(self.offsets) + self.delay_frames))
            state.pending.append(_PendingKey(state.frame_index, stamp_ns))
            if len(state.pending) > self.delay_frames:
                keys.append((camera_id, state.pending.popleft()))
        return self._estimate(keys, timings)

    def flush(self, camera_id: str | None = None) -> list[FrameResult]:
        """Emit the key frames a centred window still holds back (end of a stream)."""
        keys = []
        for cid, state in self.cameras.items():
            if camera_id is None or cid == camera_id:
                keys.extend((cid, key) for key in state.pending)
                state.pending.clear()
        return self._estimate(keys, dict.fromkeys(STAGES, 0.0))

    # ------------------------------------------------------------------ stages
    def _detect_track_crop(self, state: _CameraState, image: np.ndarray, stamp_ns: int,
                           timings: dict[str, float]) -> tuple[int, list]:
        """Advance one camera by a frame; returns (stamp_ns, [(crop, transform, person)])."""
        if state.last_stamp_ns is not None and stamp_ns < state.last_stamp_ns:
            LOGGER.warning('time jumped back (%d ns -> %d ns): resetting tracks and buffers',
                           state.last_stamp_ns, stamp_ns)
            state.reset()
            state.time_jumps += 1
        state.last_stamp_ns = stamp_ns
        state.period.observe(stamp_ns)
        state.frame_index += 1
        start = time.perf_counter()
        if state.frame_index >= state.next_detection_frame:
            state.next_detection_frame = state.frame_index + self.config.detect_every_n
            detections = self.detector.detect(image)
            timings['detector'] += _ms_since(start)
            start = time.perf_counter()
            tracked = state.tracker.update(detections, stamp_ns)
        else:
            tracked = state.tracker.propagate(stamp_ns)
        tracked = sorted(tracked, key=lambda p: -p.score)[: self.config.max_persons]
        timings['tracking'] += _ms_since(start)

        start = time.perf_counter()
        people = []
        for person in tracked:
            try:
                transform = CropTransform.from_box(
                    person.box_xyxy, crop_hw=self.crop_hw, enlarge=self.model_config.box_enlarge)
            except ValueError:
                continue  # degenerate box (e.g. propagated off-image): skip this person-frame
            people.append((transform.warp(image), transform, person))
        timings['crop'] += _ms_since(start)
        return stamp_ns, people

    def _estimate(
        self, keys: list[tuple[str, _PendingKey]], timings: dict[str, float]
    ) -> list[FrameResult]:
        cfg = self.config
        rows: list[tuple[int, int, FrameRecord]] = []  # (key list index, track id, key record)
        window_records: list[list[FrameRecord]] = []
        offsets: list[np.ndarray] = []
        priors: list[np.ndarray | None] = []
        start = time.perf_counter()
        for key_number, (camera_id, key) in enumerate(keys):
            state = self.cameras[camera_id]
            period_ns = state.period.period_ns
            for track_id in state.buffers.tracks_at(key.frame_index):
                records = state.buffers.window(track_id, key.frame_index, self.offsets)
                key_record = state.buffers.record_at(track_id, key.frame_index)
                window_records.append(records)
                padded = np.array([r.frame_index != key.frame_index + int(o)
                                   for r, o in zip(records, self.offsets)])
                offsets.append(stamp_offsets(
                    np.array([r.stamp_ns for r in records], np.int64), self.offsets, padded,
                    period_ns, self.model_config.max_window_offset))
                priors.append(self._prior_keypoints(state, track_id, key_record))
                rows.append((key_number, track_id, key_record))
        key_records = [r for _, _, r in rows]
        windows = self._assemble_windows(window_records, key_records) if rows else None
        timings['strl'] += _ms_since(start)  # window assembly (alignment) belongs to the STRL
        persons_per_key: list[list[PersonPose]] = [[] for _ in keys]
        if rows:
            keypoints = self._pose_stage(windows, np.stack(offsets), key_records, priors,
                                         timings)
            for (key_number, track_id, record), kpts in zip(rows, keypoints):
                state = self.cameras[keys[key_number][0]]
                # warm starts use the head's raw estimate; the published one is smoothed
                state.estimates[track_id] = (np.asarray(record.box_xyxy, np.float64), kpts.copy())
                if cfg.keypoint_filter != 'none':
                    kpts = state.filters.apply(track_id, kpts, record.box_xyxy, record.stamp_ns)
                persons_per_key[key_number].append(
                    PersonPose(
                        track_id=track_id,
                        box_xyxy=record.box_xyxy,
                        score=record.score,
                        keypoints=kpts,
                        detector_keypoints=record.detector_keypoints,
                        is_predicted=record.is_predicted,
                    )
                )
            self.person_frames += len(rows)
        for camera_id in {cid for cid, _ in keys}:  # estimates of ended tracks go with them
            state = self.cameras[camera_id]
            live = set(state.buffers.track_ids())
            for track_id in [t for t in state.estimates if t not in live]:
                del state.estimates[track_id]
            state.filters.keep_only(live)
        return [
            FrameResult(
                camera_id=camera_id,
                stamp_ns=key.stamp_ns,
                frame_index=key.frame_index,
                persons=persons,
                steps=cfg.steps,
                hypotheses=cfg.hypotheses,
                window_size=cfg.window_size,
                window_mode=cfg.window_mode,
                timings_ms=dict(timings),
            )
            for (camera_id, key), persons in zip(keys, persons_per_key)
        ]

    def _assemble_windows(self, window_records: list[list[FrameRecord]],
                          key_records: list[FrameRecord]) -> np.ndarray:
        """(N >= 1, T, C, h, w) window batch: every neighbour's features moved into its key
        frame's crop, written straight into the batch (no per-person stacking)."""
        first = window_records[0][0].features
        batch = np.empty((len(window_records), len(window_records[0]), *first.shape),
                         dtype=first.dtype)
        stride = self.model_config.feature_stride
        for person, (records, key_record) in enumerate(zip(window_records, key_records)):
            for slot, record in enumerate(records):
                if record is key_record:
                    batch[person, slot] = record.features
                else:
                    align_features(record.features, record.transform, key_record.transform,
                                   stride, out=batch[person, slot])
        return batch

    def _prior_keypoints(self, state: _CameraState, track_id: int,
                         record: FrameRecord) -> np.ndarray | None:
        """(K, 3) image-px keypoints sampling starts from, or None (pure noise)."""
        if self.config.diffusion_start != 'detector':
            return None
        if record.detector_keypoints is not None and not record.is_predicted:
            return np.asarray(record.detector_keypoints, np.float64)
        previous = state.estimates.get(track_id)
        if previous is not None:  # warm start: the last estimate, moved with the box
            return move_with_box(previous[1], previous[0], record.box_xyxy)
        if record.detector_keypoints is not None:
            return np.asarray(record.detector_keypoints, np.float64)
        return np.zeros((self.model_config.num_keypoints, 3))  # nothing known: no evidence

    def _pose_stage(
        self, windows: np.ndarray, offsets: np.ndarray, key_records: list[FrameRecord],
        priors: list[np.ndarray | None], timings: dict[str, float]
    ) -> np.ndarray:
        """windows (N, T, C, h, w), offsets (N, T) -> keypoints (N, K, 3) in image px."""
        cfg = self.config
        start = time.perf_counter()
        condition = self.runtime.encode_window(windows, offsets)
        timings['strl'] += _ms_since(start)

        start = time.perf_counter()

        def denoise(model_input, t, person_index):
            return self.runtime.denoise(model_input, t, person_index, condition)

        stride = self.model_config.heatmap_stride
        mc = self.model_config
        prior_heatmaps = None
        if cfg.diffusion_start == 'detector':
            prior_xy = np.stack([r.transform.image_to_crop(p[:, :2]) / stride
                                 for r, p in zip(key_records, priors)])
            prior_heatmaps = render_prior_heatmaps(
                prior_xy, np.stack([p[:, 2] for p in priors]),
                (mc.heatmap_height, mc.heatmap_width), mc.heatmap_sigma)
        sampled = sample_heatmaps(
            denoise,
            self.schedule,
            num_persons=len(key_records),
            heatmap_shape=self.heatmap_shape,
            steps=cfg.steps,
            hypotheses=cfg.hypotheses,
            seed=cfg.seed,
            eta=cfg.ddim_eta,
            prior_heatmaps=prior_heatmaps,
            t_start=cfg.t_start if prior_heatmaps is not None else None,
            projection_sigma=mc.heatmap_sigma if cfg.x0_projection else None,
        )
        timings['denoise'] += _ms_since(start)

        start = time.perf_counter()
        coords_hm, scores = decode_heatmaps(sampled.heatmaps, cfg.decode_blur_sigma_px)
        keypoints = np.empty(coords_hm.shape[:2] + (3,), np.float32)
        for i, record in enumerate(key_records):
            keypoints[i, :, :2] = record.transform.crop_to_image(coords_hm[i] * stride)
        keypoints[..., 2] = np.clip(scores, 0.0, 1.0)
        if cfg.keypoint_score_threshold > 0:
            keypoints[keypoints[..., 2] < cfg.keypoint_score_threshold, 2] = 0.0
        timings['decode'] += _ms_since(start)
        return keypoints


def keypoint_filter_config(config: PipelineConfig) -> OneEuroConfig:
    return OneEuroConfig(min_cutoff_hz=config.filter_min_cutoff_hz, beta=config.filter_beta,
                         max_gap_s=max(config.track_max_age_s, 1e-3))


def move_with_box(keypoints: np.ndarray, from_box_xyxy: np.ndarray,
                  to_box_xyxy: np.ndarray) -> np.ndarray:
    """Keypoints (K, 3) moved and scaled as the box moved (confidences kept)."""
    src = np.asarray(from_box_xyxy, np.float64)
    dst = np.asarray(to_box_xyxy, np.float64)
    scale = (dst[2:] - dst[:2]) / np.maximum(src[2:] - src[:2], 1e-6)
    out = np.array(keypoints, np.float64, copy=True)
    out[:, :2] = (out[:, :2] - src[:2]) * scale + dst[:2]
    return out


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def draw_poses(
    image_bgr: np.ndarray,
    result: FrameResult,
    min_confidence: float = HIDE_BELOW,
    draw_detector: bool = False,
) -> np.ndarray:
    """Annotated copy of the image: boxes, track ids and skeletons (colour per track id).

    Skeletons follow :func:`diffpose_ros.drawing.draw_skeleton`: line width and joint size
    scale with the person's box; joints below ``min_confidence`` are not drawn, uncertain ones
    (below ``drawing.SOLID_FROM``) are hollow with faded bones.
    """
    out = image_bgr.copy()
    for person in result.persons:
        colour = _track_colour(person.track_id)
        x0, y0, x1, y1 = (int(round(v)) for v in person.box_xyxy)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 1)
        cv2.putText(
            out,
            f'{person.track_id}',
            (x0, max(y0 - 3, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
        if draw_detector and person.detector_keypoints is not None:
            draw_skeleton(out, person.detector_keypoints, (200, 200, 200),
                          box_xyxy=person.box_xyxy, hide_below=min_confidence)
        draw_skeleton(out, person.keypoints, colour, box_xyxy=person.box_xyxy,
                      hide_below=min_confidence)
    return out


def _track_colour(track_id: int) -> tuple[int, int, int]:
    hue = (track_id * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])
