"""Person detection: a small interface and an Ultralytics YOLO11n-pose implementation.

The rest of the package only sees ``PersonDetector.detect()`` and ``Detection``, so the detector
(Ultralytics is AGPL-3.0) can be swapped without touching the tracker or the pose pipeline.
Ultralytics is imported lazily, inside ``UltralyticsPoseDetector.__init__``, to keep this module
light and importable without torch.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from diffpose_ros.assets import SETUP_COMMAND, YOLO11N_POSE, AssetError, asset_path
from diffpose_ros.ultralytics_env import configure_ultralytics_env

LOGGER = logging.getLogger(__name__)

COCO_NUM_KEYPOINTS = 17
PERSON_CLASS_ID = 0      # COCO class 'person'


class WeightsError(AssetError):
    """Detector weights are missing, unreadable or not a COCO-17 pose model."""


@dataclasses.dataclass
class Detection:
    """One person found in one image.

    Attributes:
        box_xyxy: (4,) float32 box in image pixels, origin at the top-left corner, x right, y down.
        score: Detector confidence in [0, 1].
        keypoints: (17, 3) float32 COCO-17 keypoints (x px, y px, confidence) predicted by the
            detector from this single frame, or None if the detector has no keypoint head. Kept
            as the single-frame reference for the temporal pose estimate.
    """

    box_xyxy: np.ndarray
    score: float
    keypoints: np.ndarray | None = None


class PersonDetector(Protocol):
    """Anything that finds people in a BGR image."""

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Return the people in ``image_bgr`` (H, W, 3) uint8, sorted by score, best first."""
        ...


def validate_image_bgr(image_bgr: Any) -> None:
    """Raise ValueError unless ``image_bgr`` is a non-empty (H, W, 3) uint8 array."""
    if not isinstance(image_bgr, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(image_bgr).__name__}')
    if image_bgr.dtype != np.uint8:
        raise ValueError(f'image must be uint8 BGR, got dtype {image_bgr.dtype}')
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f'image must be (H, W, 3) BGR, got shape {image_bgr.shape}')
    if image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
        raise ValueError(f'image is empty: shape {image_bgr.shape}')


def _resolve_weights(weights_path: str | Path | None) -> Path:
    if weights_path is None:
        # sha256-checked before Ultralytics unpickles it (torch.load runs arbitrary pickles)
        return asset_path(YOLO11N_POSE).resolve()
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        # Checked here: Ultralytics would otherwise try to download a missing file by name.
        raise WeightsError(f'detector weights {path} do not exist. The default model is fetched '
                           f'by {SETUP_COMMAND}.')
    return path


class UltralyticsPoseDetector:
    """YOLO11n-pose person detector with COCO-17 keypoints (Ultralytics, AGPL-3.0).

    Args:
        weights_path: A .pt checkpoint; None uses the sha256-verified cached YOLO11N_POSE asset.
        imgsz: Inference size in pixels (long side, multiple of 32). Small, far-away people need
            more than 640 (on vtest.avi, 768x576, YOLO11n-pose finds nobody at 640).
        score_threshold: Minimum detection confidence.
        iou_threshold: NMS IoU threshold.
        max_persons: At most this many detections per image.
        device: Torch device, e.g. 'cpu', 'cuda:0'; CUDA without a usable GPU falls back to
            the CPU with a warning (``runtime.devices.build_engines`` checks it beforehand and
            names every fallback in one warning).

    Raises:
        AssetError: The default weights are missing or corrupt (the message names the fix).
        WeightsError: An explicit ``weights_path`` is missing, unreadable or not a pose model.
    """

    def __init__(self, weights_path: str | Path | None = None, imgsz: int = 640,
                 score_threshold: float = 0.25, iou_threshold: float = 0.7,
                 max_persons: int = 16, device: str = 'cpu', torch_threads: int = 0) -> None:
        if imgsz < 32 or imgsz % 32 != 0:
            raise ValueError(f'imgsz must be a positive multiple of 32, got {imgsz}')
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f'score_threshold must be in [0, 1], got {score_threshold}')
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f'iou_threshold must be in (0, 1], got {iou_threshold}')
        if max_persons < 1:
            raise ValueError(f'max_persons must be >= 1, got {max_persons}')
        if torch_threads < 0:
            raise ValueError(f'torch_threads must be >= 0, got {torch_threads}')
        self.weights_path = _resolve_weights(weights_path)
        self.imgsz = int(imgsz)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_persons = int(max_persons)
        self.device = device
        self._predictor_ready = False
        self.torch_threads_in_use = 0   # torch threads at the last inference (0: none yet)
        self._torch_threads = int(torch_threads)   # 0: whatever the process has
        if device.startswith('cuda'):
            import torch

            if not torch.cuda.is_available():
                LOGGER.warning('detector device %r requested but torch sees no CUDA device; '
                               'running the detector on cpu', device)
                self.device = 'cpu'
        if torch_threads > 0:
            import torch

            # process-wide, like TorchRuntime's intra_op_threads: the detector is torch
            # whatever the pose backend, and a robot caps the node's cores with one setting
            torch.set_num_threads(int(torch_threads))

        # Settings inside the project cache, no auto-install, no online check; Ultralytics
        # reads YOLO_CONFIG_DIR, YOLO_AUTOINSTALL, YOLO_OFFLINE, YOLO_VERBOSE once, at import.
        configure_ultralytics_env()
        from ultralytics import YOLO
        from ultralytics.utils import checks
        # Whatever the environment said (or if Ultralytics was imported before), a robot must
        # never pip-install at run time: torch_safe_load() would for a missing pickled module.
        checks.AUTOINSTALL = False

        try:
            self._model = YOLO(str(self.weights_path), task='pose')
        except (TypeError, RuntimeError, EOFError, ValueError, KeyError, AttributeError,
                ModuleNotFoundError) as exc:
            # Ultralytics/torch report a damaged checkpoint through any of these.
            raise WeightsError(f'cannot load detector weights {self.weights_path}: {exc}. '
                               f'Re-fetch the default model with {SETUP_COMMAND}.') from exc
        kpt_shape = getattr(self._model.model, 'kpt_shape', None)
        if self._model.task != 'pose' or list(kpt_shape or []) != [COCO_NUM_KEYPOINTS, 3]:
            raise WeightsError(f'{self.weights_path} is not a COCO-17 pose model '
                               f'(task {self._model.task!r}, kpt_shape {kpt_shape})')

    @classmethod
    def from_config(cls, config: Any) -> UltralyticsPoseDetector:
        """The detector a PipelineConfig describes (its ``intra_op_threads`` > 0 also sets
        torch's thread count, so a node and an offline run with one config compute alike)."""
        return cls(imgsz=config.detector_imgsz, score_threshold=config.detection_score_threshold,
                   max_persons=config.max_persons, device=config.device,
                   torch_threads=config.intra_op_threads)

    def warmup(self) -> None:
        """Run one dummy inference so the first real frame does not pay for lazy setup."""
        self._predictor_ready = True
        self._predict(np.zeros((self.imgsz, self.imgsz, 3), dtype=np.uint8))

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Find people in one image.

        Args:
            image_bgr: (H, W, 3) uint8 BGR image.

        Returns:
            Detections sorted by score, best first; at most ``max_persons``.

        Raises:
            ValueError: ``image_bgr`` is not a non-empty (H, W, 3) uint8 array.
        """
        validate_image_bgr(image_bgr)
        if not self._predictor_ready:
            # ultralytics' first predict runs select_device mid-call, at another thread count
            # than every later frame, so it gives other floats (~3e-5 px): a node that warmed
            # up and an offline run that did not would then disagree on the same frames.
            self.warmup()
        result = self._predict(image_bgr)
        boxes_xyxy = result.boxes.xyxy.cpu().numpy().astype(np.float32)     # (N, 4)
        scores = result.boxes.conf.cpu().numpy().astype(np.float32)         # (N,)
        keypoints = None
        if result.keypoints is not None:
            keypoints = result.keypoints.data.cpu().numpy().astype(np.float32)  # (N, 17, 3)
        detections = [
            Detection(box_xyxy=boxes_xyxy[i].copy(), score=float(scores[i]),
                      keypoints=None if keypoints is None else keypoints[i].copy())
            for i in range(len(scores))
        ]
        detections.sort(key=lambda det: det.score, reverse=True)
        return detections

    def _predict(self, image_bgr: np.ndarray) -> Any:
        import torch
        from ultralytics.utils import torch_utils

        # ultralytics' select_device (first predict) sets torch's thread count to its own
        # NUM_THREADS (cpu_count - 1): slower detection on 2 cores, too many threads on a
        # bigger robot. torch keeps the count per thread once a thread has read it, so even a
        # brief change leaks into any thread that reads it meanwhile: make select_device set
        # the process's own count, and restore it if anything else changed it.
        # the configured count is enforced in the thread that runs the detector: a worker
        # thread that read torch's count before the constructor set it keeps its own
        threads = self._torch_threads or torch.get_num_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch_utils.NUM_THREADS = threads
        results = self._model.predict(
            image_bgr, imgsz=self.imgsz, conf=self.score_threshold, iou=self.iou_threshold,
            classes=[PERSON_CLASS_ID], max_det=self.max_persons, verbose=False,
            device=self.device)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self.torch_threads_in_use = threads
        return results[0]
