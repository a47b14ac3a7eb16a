"""Typed, validated configuration objects.

``ModelConfig`` holds trained-in facts and is saved as JSON beside the weights; ``PipelineConfig``
holds run-time choices (steps, hypotheses, window mode, thresholds, backend).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from diffpose_ros.skeleton import NUM_KEYPOINTS
from diffpose_ros.smoothing import FILTER_KINDS

BACKBONES = ('yolo11n-pose', 'vit-b')
WINDOW_MODES = ('causal', 'centered')
DIFFUSION_STARTS = ('detector', 'noise')
BACKENDS = ('torch', 'onnxruntime')
# ONNX Runtime graphs: float32, int8 window encoder, int8 window encoder + backbone
QUANTIZATION_MODES = ('none', 'int8_encoder', 'int8')


def _check(condition: bool, message: str) -> None:
    # ValueError, not assert: validation must survive `python -O`.
    if not condition:
        raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and diffusion facts a set of weights was trained with."""

    num_keypoints: int = NUM_KEYPOINTS
    crop_height: int = 256
    crop_width: int = 192
    heatmap_stride: int = 4  # crop px per heatmap px: 256x192 -> 64x48
    feature_stride: int = 16  # crop px per STRL token: 256x192 -> 16x12
    box_enlarge: float = 1.25  # person box enlargement before cropping (paper, DCPose lineage)
    backbone: str = 'yolo11n-pose'
    backbone_channels: int = 640  # yolo11n-pose neck at 1/16: P3 space-to-depth 4x64 + P4 + P5
    # stride-8 channels stored space-to-depth in the first 4x of the features (0: none, ViT)
    fine_feature_channels: int = 64
    # STRL: joint space-time attention over the window's tokens
    max_window_offset: int = 4  # relative frame offsets -4..+4 have embeddings
    strl_dim: int = 256
    strl_depth: int = 4
    strl_heads: int = 8
    strl_mlp_ratio: float = 2.0
    strl_token_pool: int = 2  # STRL attends over tokens pooled 2x2 (8x6 per frame): CPU budget
    cond_channels: int = 256
    # LMSFI denoiser widths at 1/16 (attention), 1/8 and 1/4 (convolutional) of the crop
    decoder_dims: tuple[int, int, int] = (64, 48, 32)
    decoder_heads: int = 4
    time_embed_dim: int = 64
    time_in_blocks: bool = True  # timestep FiLM after every norm of the denoiser (not only input)
    # Diffusion on Gaussian heatmaps
    diffusion_timesteps: int = 1000
    noise_schedule: str = 'cosine'
    signal_scale: float = 2.0
    heatmap_sigma: float = 2.0  # heatmap px

    @property
    def heatmap_height(self) -> int:
        return self.crop_height // self.heatmap_stride

    @property
    def heatmap_width(self) -> int:
        return self.crop_width // self.heatmap_stride

    @property
    def feature_height(self) -> int:
        return self.crop_height // self.feature_stride

    @property
    def feature_width(self) -> int:
        return self.crop_width // self.feature_stride

    def __post_init__(self) -> None:
        object.__setattr__(self, 'decoder_dims', tuple(int(d) for d in self.decoder_dims))
        _check(self.num_keypoints >= 1, f'num_keypoints must be >= 1, got {self.num_keypoints}')
        _check(
            self.backbone in BACKBONES,
            f'backbone must be one of {BACKBONES}, got {self.backbone!r}',
        )
        for name in ('crop_height', 'crop_width'):
            value = getattr(self, name)
            _check(
                16 <= value <= 1024 and value % self.feature_stride == 0,
                f'{name} must be in [16, 1024] and a multiple of feature_stride '
                f'({self.feature_stride}), got {value}',
            )
        _check(
            self.feature_stride == 4 * self.heatmap_stride,
            'the LMSFI denoiser upsamples the condition 4x: feature_stride must be '
            f'4 * heatmap_stride, got {self.feature_stride} and {self.heatmap_stride}',
        )
        _check(self.box_enlarge >= 1.0, f'box_enlarge must be >= 1, got {self.box_enlarge}')
        _check(
            1 <= self.max_window_offset <= 16,
            f'max_window_offset must be in [1, 16], got {self.max_window_offset}',
        )
        _check(
            self.strl_dim % self.strl_heads == 0,
            f'strl_dim ({self.strl_dim}) must be divisible by strl_heads ({self.strl_heads})',
        )
        _check(
            self.strl_token_pool in (1, 2, 4)
            and self.feature_height % self.strl_token_pool == 0
            and self.feature_width % self.strl_token_pool == 0,
            f'strl_token_pool must be 1, 2 or 4 and divide the feature grid, got '
            f'{self.strl_token_pool}',
        )
        _check(self.strl_depth >= 1, f'strl_depth must be >= 1, got {self.strl_depth}')
        _check(
            len(self.decoder_dims) == 3 and min(self.decoder_dims) >= 4,
            f'decoder_dims must be 3 widths >= 4, got {self.decoder_dims}',
        )
        _check(
            self.decoder_dims[0] % self.decoder_heads == 0,
            f'decoder_dims[0] ({self.decoder_dims[0]}) must be divisible by decoder_heads',
        )
        _check(self.time_embed_dim % 2 == 0, 'time_embed_dim must be even')
        _check(
            self.fine_feature_channels >= 0
            and 4 * self.fine_feature_channels <= self.backbone_channels,
            'fine_feature_channels must be >= 0 and 4x of it fit in backbone_channels',
        )
        _check(
            self.backbone == 'yolo11n-pose' or self.fine_feature_channels == 0,
            'only the yolo11n-pose backbone has stride-8 features: set fine_feature_channels 0',
        )
        _check(
            2 <= self.diffusion_timesteps <= 10000,
            f'diffusion_timesteps must be in [2, 10000], got {self.diffusion_timesteps}',
        )
        _check(
            self.noise_schedule in ('cosine', 'linear'),
            f"noise_schedule must be 'cosine' or 'linear', got {self.noise_schedule!r}",
        )
        _check(self.signal_scale > 0, f'signal_scale must be > 0, got {self.signal_scale}')
        _check(0.5 <= self.heatmap_sigma <= 10, 'heatmap_sigma must be in [0.5, 10]')

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data['decoder_dims'] = list(self.decoder_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f'unknown ModelConfig keys: {unknown}')
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n')

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f'cannot read model config {path}: {exc}') from exc
        _check(isinstance(data, dict), f'model config {path} must hold a JSON object')
        return cls.from_dict(data)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Run-time choices; none of these require retraining."""

    steps: int = 1  # DDIM denoising steps per estimate
    hypotheses: int = 1  # noise seeds ensembled (heatmaps averaged)
    seed: int = 0  # base noise seed (hypothesis h draws from rng([seed, h]))
    ddim_eta: float = 1.0  # 0 = deterministic DDIM, 1 = DiffusionDet's default
    # 'detector': start from the detector's keypoints noised to t_start (SDEdit); 'noise': the
    # paper's start from pure noise at t = T - 1
    diffusion_start: str = 'detector'
    t_start: int = 200  # first timestep when starting from the detector (0 .. T - 1)
    # redraw x̂0 as clean Gaussians before re-noising (steps > 1); off by default: with the
    # shipped model plain DDIM loses less per extra step (docs/model.md, section 7)
    x0_projection: bool = False
    # Gaussian blur (heatmap px) of the estimate before its peak is located (DARK's
    # distribution modulation): the heavier mode wins over a one-pixel spike
    decode_blur_sigma_px: float = 3.0
    frame_period_ms: float = 0.0  # camera frame period for window offsets; 0 = from stamps
    # causal smoothing of the published keypoints per track (diffpose_ros/smoothing.py):
    # 'one_euro' or 'none'; parameters chosen on Penn Action motion (docs/model.md)
    keypoint_filter: str = 'one_euro'
    filter_min_cutoff_hz: float = 2.5  # cutoff of a still joint: lower = smoother, more lag
    filter_beta: float = 4.0  # cutoff gain per person height / s of speed: higher = less lag
    window_mode: str = (
        'causal'  # 'causal' (no delay) or 'centered' (window_size // 2 frames delay)
    )
    window_size: int = 3
    detector_imgsz: int = 640
    detect_every_n: int = 1  # run the detector on every n-th frame, propagate boxes between
    detection_score_threshold: float = 0.25
    max_persons: int = 16
    keypoint_score_threshold: float = 0.0
    track_max_age_s: float = 1.0  # a track not matched for this long is removed
    # Tracker (ByteTrack; tracking.TrackerConfig). detection_score_threshold is its low
    # threshold: every detection is output with a pose, these only decide the ids.
    track_high_score_threshold: float = 0.5  # matched first, to all tracks; below: only to tracked
    track_new_score_threshold: float = 0.25  # starts a track; below: a one-frame id
    # a low-score detection this much inside a person's box (intersection / its area) is a
    # duplicate box of that person: it starts no track (one-frame id)
    track_duplicate_ioa_threshold: float = 0.8
    track_match_iou_threshold: float = 0.2  # first association (high-score detections)
    track_second_match_iou_threshold: float = 0.5  # second association (low-score detections)
    track_unconfirmed_match_iou_threshold: float = 0.3  # tentative tracks
    track_min_hits: int = 2  # consecutive matches that confirm a new track
    backend: str = 'torch'
    device: str = 'cpu'  # torch device: 'cpu', 'cuda', 'cuda:1'
    fp16: bool = False  # torch CUDA / TensorRT only
    onnx_dir: str = ''  # exported ONNX models (backend='onnxruntime')
    # ONNX Runtime execution providers in order of preference; GPU ones (TensorRT, CUDA) only
    # when asked for, so a CPU-only machine runs the defaults without warnings
    providers: tuple[str, ...] = ('CPUExecutionProvider',)
    trt_engine_cache_dir: str = ''
    intra_op_threads: int = 0  # 0 = ONNX Runtime / torch default
    # ONNX Runtime CPU: 'int8_encoder' = int8 window encoder (accuracy unchanged within noise),
    # 'int8' = also the backbone (faster, a little less accurate); runtime/quantize.py.
    # The torch backend ignores it.
    quantization: str = 'none'
    max_image_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, 'providers', tuple(self.providers))
        _check(1 <= self.steps <= 1000, f'steps must be in [1, 1000], got {self.steps}')
        _check(1 <= self.hypotheses <= 64, f'hypotheses must be in [1, 64], got {self.hypotheses}')
        _check(0.0 <= self.ddim_eta <= 1.0, f'ddim_eta must be in [0, 1], got {self.ddim_eta}')
        _check(
            self.diffusion_start in DIFFUSION_STARTS,
            f'diffusion_start must be one of {DIFFUSION_STARTS}, got {self.diffusion_start!r}',
        )
        _check(0 <= self.t_start <= 999, f't_start must be in [0, 999], got {self.t_start}')
        if self.diffusion_start == 'detector':
            _check(
                self.steps <= self.t_start + 1,
                f'steps ({self.steps}) must be <= t_start + 1 ({self.t_start + 1})',
            )
        _check(
            0.0 <= self.decode_blur_sigma_px <= 16.0,
            f'decode_blur_sigma_px must be in [0, 16], got {self.decode_blur_sigma_px}',
        )
        _check(
            self.keypoint_filter in FILTER_KINDS,
            f'keypoint_filter must be one of {FILTER_KINDS}, got {self.keypoint_filter!r}',
        )
        _check(
            0.0 < self.filter_min_cutoff_hz <= 1000.0,
            f'filter_min_cutoff_hz must be in (0, 1000], got {self.filter_min_cutoff_hz}',
        )
        _check(0.0 <= self.filter_beta <= 1000.0,
               f'filter_beta must be in [0, 1000], got {self.filter_beta}')
        _check(
            0.0 <= self.frame_period_ms <= 10_000.0,
            f'frame_period_ms must be in [0, 10000], got {self.frame_period_ms}',
        )
        _check(
            self.window_mode in WINDOW_MODES,
            f'window_mode must be one of {WINDOW_MODES}, got {self.window_mode!r}',
        )
        _check(
            1 <= self.window_size <= 9, f'window_size must be in [1, 9], got {self.window_size}'
        )
        if self.window_mode == 'centered':
            _check(
                self.window_size % 2 == 1,
                f'centered windows need an odd window_size, got {self.window_size}',
            )
        _check(
            32 <= self.detector_imgsz <= 2048 and self.detector_imgsz % 32 == 0,
            f'detector_imgsz must be a multiple of 32 in [32, 2048], got {self.detector_imgsz}',
        )
        _check(
            1 <= self.detect_every_n <= 100,
            f'detect_every_n must be in [1, 100], got {self.detect_every_n}',
        )
        _check(
            0.0 <= self.detection_score_threshold <= 1.0,
            'detection_score_threshold must be in [0, 1]',
        )
        _check(
            1 <= self.max_persons <= 256,
            f'max_persons must be in [1, 256], got {self.max_persons}',
        )
        _check(
            0.0 <= self.keypoint_score_threshold <= 1.0,
            'keypoint_score_threshold must be in [0, 1]',
        )
        _check(0.0 < self.track_max_age_s <= 60.0, 'track_max_age_s must be in (0, 60]')
        for name in ('track_high_score_threshold', 'track_new_score_threshold'):
            _check(0.0 <= getattr(self, name) <= 1.0,
                   f'{name} must be in [0, 1], got {getattr(self, name)}')
        for name in ('track_duplicate_ioa_threshold', 'track_match_iou_threshold',
                     'track_second_match_iou_threshold', 'track_unconfirmed_match_iou_threshold'):
            _check(0.0 < getattr(self, name) <= 1.0,
                   f'{name} must be in (0, 1], got {getattr(self, name)}')
        _check(1 <= self.track_min_hits <= 100,
               f'track_min_hits must be in [1, 100], got {self.track_min_hits}')
        _check(
            self.backend in BACKENDS, f'backend must be one of {BACKENDS}, got {self.backend!r}'
        )
        _check(self.intra_op_threads >= 0, 'intra_op_threads must be >= 0')
        _check(self.quantization in QUANTIZATION_MODES,
               f'quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}')

        _check(self.max_image_pixels >= 64 * 64, 'max_image_pixels must be >= 4096')

    def replace(self, **changes: Any) -> PipelineConfig:
        return dataclasses.replace(self, **changes)
