"""The node's parameters as one table, shared by the node, the YAML files and the tests.

Every parameter is a :class:`ParamSpec` in :data:`PARAMETERS`; its ROS type follows from the
Python type of its default (bool, int, float, str, list[str] -> STRING_ARRAY). The table's
defaults are the CPU profile (``config/diffpose_cpu.yaml`` holds the same values).

Run-time changes (``ros2 param set``):

- ``read_only`` parameters (``onnx_dir``, ``weights_path``, ``autostart``) can only be given at
  start-up (params file, launch, ``--ros-args -p``); ROS itself rejects any later change.
- ``dynamic=False`` parameters (topics, window, backend, detector size, tracker age, ...) shape
  objects built in ``configure``. The node accepts a change only while it is unconfigured;
  while inactive/active it rejects it with a reason: the change takes effect only after
  ``deactivate`` + ``cleanup`` + ``configure``.
- ``dynamic=True`` parameters (sampling, thresholds, markers, latency budget) take effect on the
  next frame.

This module imports rclpy and message packages only inside functions, so the table, the
validation and the config builders work without ROS.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diffpose_ros.config import (
    BACKENDS,
    DIFFUSION_STARTS,
    QUANTIZATION_MODES,
    WINDOW_MODES,
    PipelineConfig,
)
from diffpose_ros.depth3d import DepthConfig
from diffpose_ros.smoothing import FILTER_KINDS

TRANSPORTS = ('raw', 'compressed')
DEPTH_TRANSPORTS = ('raw', 'compressedDepth')
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
RECONFIGURE_NOTE = 'takes effect only after cleanup + configure'

# ROS 2 topic names: optional '/' or '~/', tokens of [A-Za-z0-9_] not starting with a digit,
# or {substitutions}; no '__', no trailing '/'.
_TOKEN = r'(?:[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z0-9_]+\})'
_TOPIC_RE = re.compile(rf'^(?:~/|/)?{_TOKEN}(?:/{_TOKEN})*$')
_NAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_]*$')
_DEVICE_RE = re.compile(r'^(?:cpu|cuda(?::\d+)?)$')
_PROVIDER_RE = re.compile(r'^[A-Za-z0-9]+ExecutionProvider$')


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter.

    Attributes:
        name: Parameter name.
        default: Default value; its Python type is the parameter's type (a list means a list of
            strings).
        description: One line for ``ros2 param describe``.
        min: Inclusive lower bound (numbers only).
        max: Inclusive upper bound (numbers only).
        choices: Allowed values (strings only).
        read_only: Settable only at start-up.
        dynamic: False = changing it while configured is rejected (needs cleanup + configure).
        step: Allowed increment from ``min`` (integers; 0 = any).
    """

    name: str
    default: Any
    description: str
    min: float | int | None = None
    max: float | int | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    dynamic: bool = True
    step: int = 0

    @property
    def type_name(self) -> str:
        """'bool', 'int', 'float', 'str' or 'list[str]'."""
        return _type_name(self.default)

    def ros_type(self) -> int:
        """The rcl_interfaces ``ParameterType`` constant for this parameter."""
        from rcl_interfaces.msg import ParameterType

        return {
            'bool': ParameterType.PARAMETER_BOOL,
            'int': ParameterType.PARAMETER_INTEGER,
            'float': ParameterType.PARAMETER_DOUBLE,
            'str': ParameterType.PARAMETER_STRING,
            'list[str]': ParameterType.PARAMETER_STRING_ARRAY,
        }[self.type_name]

    def constraints_text(self) -> str:
        """Human-readable constraints (ranges, choices, run-time behaviour)."""
        parts = []
        if self.choices is not None:
            parts.append('one of: ' + ', '.join(self.choices))
        if self.min is not None or self.max is not None:
            parts.append(f'range [{_fmt(self.min)}, {_fmt(self.max)}]')
        if self.step:
            parts.append(f'step {self.step}')
        if self.read_only:
            parts.append('read-only: set at start-up only')
        elif not self.dynamic:
            parts.append(f'reconfigure: {RECONFIGURE_NOTE}')
        else:
            parts.append('dynamic: applies to the next frame')
        return '; '.join(parts)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, (list, tuple)):
        return 'list[str]'
    raise TypeError(f'unsupported parameter value type {type(value).__name__}')


def _fmt(bound: float | int | None) -> str:
    if bound is None:
        return 'inf'
    return repr(bound)


P = ParamSpec
PARAMETERS: tuple[ParamSpec, ...] = (
    # ---- input --------------------------------------------------------------------------------
    P('image_topics', ['/camera/image_raw'],
      'Image topics, one per camera (all cameras are served by this one node).', dynamic=False),
    P('camera_info_topics', [],
      'CameraInfo topics, one per image topic; [] = <image namespace>/camera_info '
      '(the image topic with its last segment replaced, as image_transport does).',
      dynamic=False),
    P('camera_names', [],
      'Camera names used in output topics and PersonPoseArray.camera; [] = the image topic\'s '
      'parent namespace (/front/image_raw -> front).', dynamic=False),
    P('transport', 'raw',
      'raw: sensor_msgs/Image on the image topic; compressed: sensor_msgs/CompressedImage on '
      '<image_topic>/compressed.', choices=TRANSPORTS, dynamic=False),
    # ---- depth (3D keypoints) ----------------------------------------------------------------
    P('depth_topics', [],
      'Depth image topics registered to the colour image (16UC1 mm / 32FC1 m), one per image '
      "topic in the same order; '' = no depth for that camera, [] = no depth at all. Cameras "
      'with depth publish ~/<camera>/poses_3d.', dynamic=False),
    P('depth_transport', 'raw',
      'raw: sensor_msgs/Image on the depth topic; compressedDepth: sensor_msgs/CompressedImage '
      'on <depth_topic>/compressedDepth (image_transport compressed_depth).',
      choices=DEPTH_TRANSPORTS, dynamic=False),
    P('depth_stamp_tolerance_ms', 20.0,
      'A colour frame uses the depth image with the nearest stamp if it is at most this far '
      'away [ms]; otherwise no 3D for that frame (counted).', min=0.0, max=1000.0),
    P('depth_band_front_m', DepthConfig().band_front_m,
      'A joint may lie this far in front of the person\'s torso depth [m] (an arm reaching '
      'to the camera); depth pixels outside the band are ignored.', min=0.0, max=10.0),
    P('depth_band_behind_m', DepthConfig().band_behind_m,
      'A joint may lie this far behind the person\'s torso depth [m] (body depth); depth '
      'pixels further back (the wall) are ignored.', min=0.0, max=10.0),
    P('depth_min_support', DepthConfig().min_support,
      'A 3D joint is valid when at least this share of its depth window lies in the torso '
      'band.', min=0.01, max=1.0),
    # ---- temporal window and diffusion sampling ---------------------------------------------
    P('window_mode', 'causal',
      'causal: key frame = newest frame (no delay); centered: key frame in the middle '
      '(window_size // 2 frames of delay, needs an odd window_size).',
      choices=WINDOW_MODES, dynamic=False),
    P('window_size', 3, 'Frames per temporal window.', min=1, max=9, dynamic=False),
    P('steps', 1, 'DDIM denoising steps per estimate (ignored while latency_budget_ms > 0).',
      min=1, max=50),
    P('hypotheses', 1, 'Noise hypotheses per person, heatmaps averaged.', min=1, max=16),
    P('seed', 0, 'Base noise seed (deterministic output for equal inputs).', min=0,
      max=INT32_MAX),
    P('ddim_eta', 1.0, 'DDIM eta: 0 = deterministic DDIM, 1 = DDPM-like noise.', min=0.0,
      max=1.0),
    P('diffusion_start', 'detector',
      "detector: start from the detector's keypoints noised to t_start (frames without a fresh "
      'detection: the track\'s last estimate moved with its box); noise: from pure noise, '
      'as in the paper.', choices=DIFFUSION_STARTS),
    P('t_start', 200, 'First diffusion timestep when starting from the detector (0-999; '
      'smaller trusts the detector more). No retraining needed.', min=0, max=999),
    P('x0_projection', False,
      'Between steps, redraw the estimate as clean Gaussians before re-noising (steps > 1; off: '
      'plain DDIM, better with the shipped model).'),
    P('decode_blur_sigma_px', 3.0,
      'Gaussian blur [heatmap px] of the estimate before its peak is located (DARK '
      'distribution modulation): the heavier of two modes wins over a one-pixel spike; 0 = '
      'none. Chosen on LSPET val (docs/model.md).', min=0.0, max=16.0),
    P('frame_period_ms', 0.0,
      'Camera frame period [ms] for the temporal window offsets; 0 = estimated from the image '
      'stamps (dropped frames then do not shift the model\'s sense of time).', min=0.0,
      max=10000.0, dynamic=False),
    P('keypoint_filter', 'one_euro',
      'Causal smoothing of the published keypoints per track: one_euro (speed-adaptive '
      'low-pass, parameters chosen on Penn Action motion) or none (the head\'s raw output).',
      choices=FILTER_KINDS),
    P('filter_min_cutoff_hz', 2.5,
      'One Euro cutoff of a still joint [Hz]: lower = smoother, more lag.', min=0.01,
      max=1000.0),
    P('filter_beta', 4.0,
      'One Euro cutoff gain per person height / s of joint speed: higher = less lag on fast '
      'motion.', min=0.0, max=1000.0),
    # ---- detection and tracking --------------------------------------------------------------
    P('detector_imgsz', 640, 'Person detector input size [px], long side, multiple of 32.',
      min=32, max=2048, step=32, dynamic=False),
    P('detect_every_n', 2,
      'Run the detector on every n-th frame of a camera; boxes are propagated by the tracker in '
      'between.', min=1, max=100),
    P('detection_score_threshold', 0.25, 'Minimum person detection score.', min=0.0, max=1.0),
    P('max_persons', 16, 'At most this many persons per image (highest scores kept).', min=1,
      max=64),
    P('keypoint_score_threshold', 0.0,
      'Keypoints below this confidence are published with confidence 0 (0 = keep all).',
      min=0.0, max=1.0),
    P('track_max_age_s', 1.0, 'A track not matched for this long [s, image stamps] is removed.',
      min=0.05, max=60.0, dynamic=False),
    # ByteTrack; detection_score_threshold is its low threshold: every detection is published
    # with a pose, these only decide the track ids.
    P('track_high_score_threshold', 0.5,
      'Detections at or above this score are matched first, to all tracks (also lost ones); '
      'lower ones only continue people tracked in the previous frame.', min=0.0, max=1.0,
      dynamic=False),
    P('track_new_score_threshold', 0.25,
      'A detection matching no track starts a track at or above this score; below it, it is '
      'published under an id used for that frame only.', min=0.0, max=1.0, dynamic=False),
    P('track_duplicate_ioa_threshold', 0.8,
      'A detection below track_high_score_threshold matching no track starts none when more '
      "than this share of its box lies inside a person's box of the same frame (a duplicate "
      "box, e.g. of an occluded person's upper body); 1.0 = off.", min=0.01, max=1.0,
      dynamic=False),
    P('track_match_iou_threshold', 0.2,
      'Minimum box IoU to match a high-score detection to a track.', min=0.01, max=1.0,
      dynamic=False),
    P('track_second_match_iou_threshold', 0.5,
      'Minimum box IoU to match a low-score detection to a tracked person.', min=0.01, max=1.0,
      dynamic=False),
    P('track_unconfirmed_match_iou_threshold', 0.3,
      'Minimum box IoU to match a detection to a new, not yet confirmed track.', min=0.01,
      max=1.0, dynamic=False),
    P('track_min_hits', 2,
      'Consecutive matches that confirm a new track; a new track that misses one before is '
      'dropped (its id is not reused). Tracks of the first frame are confirmed at once.',
      min=1, max=100, dynamic=False),
    # ---- inference backend -------------------------------------------------------------------
    P('backend', 'onnxruntime', 'Pose network backend.', choices=BACKENDS, dynamic=False),
    P('device', 'cpu',
      "torch device / CUDA device index for ONNX Runtime: 'cpu', 'cuda' or 'cuda:N'.",
      dynamic=False),
    P('fp16', False, 'Half precision (torch on CUDA; TensorRT engines).', dynamic=False),
    P('providers', ['CPUExecutionProvider'],
      'ONNX Runtime execution providers in priority order; the providers actually used are '
      'reported in diagnostics.', dynamic=False),
    P('onnx_dir', '',
      'Directory of an exported ONNX model set; \'\' = export weights_path once into the '
      'package cache and reuse it.', read_only=True, dynamic=False),
    P('weights_path', '', "DiffPose head weights (.safetensors); '' = the shipped model.",
      read_only=True, dynamic=False),
    P('trt_engine_cache_dir', '',
      "TensorRT engine/timing cache directory; '' = <package cache>/tensorrt.", dynamic=False),
    P('intra_op_threads', 0, 'CPU threads for inference: each ONNX Runtime session and torch '
      '(the detector, the torch backend; process-wide); 0 = library default.', min=0,
      max=64, dynamic=False),
    P('quantization', 'int8_encoder',
      "ONNX Runtime CPU graphs: 'none' (float32), 'int8_encoder' (int8 window encoder: "
      "faster, accuracy unchanged within noise) or 'int8' (also the backbone: fastest, a little "
      'less accurate); made once from the float32 export; GPU providers always run float32 '
      '(docs/runtime.md).', choices=QUANTIZATION_MODES, dynamic=False),
    P('max_image_pixels', 4096 * 4096,
      'Frames with more pixels (width * height) are dropped as bad input.', min=64 * 64,
      max=16384 * 16384, dynamic=False),
    # ---- latency budget ----------------------------------------------------------------------
    P('latency_budget_ms', 0.0,
      'Per-frame budget [ms]; > 0 = automatic step selection: the most steps (<= '
      'max_auto_steps) whose measured cost fits the budget; 0 = off (use steps).', min=0.0,
      max=10000.0),
    P('max_auto_steps', 1, 'Upper bound for automatic step selection (the shipped model is most '
      'accurate at 1 step on everyday people; 2-4 steps help on unusual poses such as sports '
      'photos: docs/model.md section 4a).', min=1, max=50),
    # ---- RViz markers ------------------------------------------------------------------------
    P('publish_markers', True,
      'Publish a MarkerArray per camera (needs CameraInfo for the back-projection).'),
    P('marker_depth_m', 3.0,
      'Keypoints are back-projected onto a plane at this depth [m] in the camera optical frame.',
      min=0.1, max=100.0),
    P('marker_lifetime_s', 0.5,
      'Marker lifetime [s], about 2 frame periods (0 = until deleted).', min=0.0, max=10.0),
    P('marker_min_confidence', 0.3, 'Joints below this confidence are not drawn.', min=0.0,
      max=1.0),
    P('joint_scale_m', 0.05, 'Joint sphere diameter [m].', min=0.001, max=1.0),
    P('bone_width_m', 0.02, 'Bone line width [m].', min=0.001, max=1.0),
    # ---- debug and diagnostics ---------------------------------------------------------------
    P('publish_debug_image', True,
      'Publish an annotated image per camera (drawn only while someone subscribes).'),
    P('diagnostics_period_s', 1.0, 'Period of /diagnostics messages [s].', min=0.1, max=60.0,
      dynamic=False),
    # ---- lifecycle ---------------------------------------------------------------------------
    P('autostart', False,
      'Configure and activate by itself after start-up (false = wait for lifecycle '
      'transitions).', read_only=True, dynamic=False),
)
del P

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


def spec(name: str) -> ParamSpec:
    """The spec of a parameter; KeyError names the unknown parameter."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f'unknown parameter {name!r}') from None


def defaults() -> dict[str, Any]:
    """name -> default value (lists copied)."""
    return {s.name: list(s.default) if isinstance(s.default, list) else s.default
            for s in PARAMETERS}


# ---------------------------------------------------------------------------------- ROS glue
def descriptor(param: ParamSpec) -> Any:
    """The ``rcl_interfaces.msg.ParameterDescriptor`` of a spec.

    Numbers get an ``IntegerRange`` / ``FloatingPointRange`` (a missing bound becomes the type's
    extreme), choices and run-time behaviour are spelled out in ``additional_constraints``.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    desc = ParameterDescriptor(
        name=param.name,
        type=param.ros_type(),
        description=param.description,
        additional_constraints=param.constraints_text(),
        read_only=param.read_only,
    )
    if param.min is not None or param.max is not None:
        if param.type_name == 'int':
            desc.integer_range = [IntegerRange(
                from_value=int(param.min if param.min is not None else -INT64_MAX - 1),
                to_value=int(param.max if param.max is not None else INT64_MAX),
                step=int(param.step))]
        elif param.type_name == 'float':
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(param.min if param.min is not None else -math.inf),
                to_value=float(param.max if param.max is not None else math.inf),
                step=0.0)]
    return desc


def declare_parameters(node: Any) -> None:
    """Declare every parameter of the table on an rclpy ``Node`` or ``LifecycleNode``.

    Uses only ``declare_parameter(name, value, descriptor)`` (Humble API). Call it before
    registering an on-set-parameters callback: list parameters whose value comes out unset are
    then set to ``[]`` here. (An empty list default would otherwise be typed BYTE_ARRAY by
    rclpy, and a YAML ``[]`` arrives as an untyped override; both would break later
    ``STRING_ARRAY`` assignments.)

    Args:
        node: rclpy node (plain or lifecycle).
    """
    from rclpy.parameter import Parameter

    unset_lists = []
    for param in PARAMETERS:
        value: Any = param.default
        if param.type_name == 'list[str]':
            value = list(param.default) if param.default else Parameter.Type.STRING_ARRAY
        declared = node.declare_parameter(param.name, value, descriptor(param))
        if param.type_name == 'list[str]' and declared.type_ == Parameter.Type.NOT_SET:
            unset_lists.append(Parameter(param.name, Parameter.Type.STRING_ARRAY, []))
    if unset_lists:
        results = node.set_parameters(unset_lists)
        failed = [r.reason for r in results if not r.successful]
        if failed:
            raise RuntimeError(f'cannot initialise empty list parameters: {failed}')


def read_values(node: Any) -> dict[str, Any]:
    """name -> current value of every table parameter on a node (lists as ``list``)."""
    values = {}
    for param in PARAMETERS:
        value = node.get_parameter(param.name).value
        if param.type_name == 'list[str]':
            value = list(value) if value is not None else []
        values[param.name] = value
    return values


# -------------------------------------------------------------------------------- validation
def validate(name: str, value: Any) -> str | None:
    """Check one value against the table.

    Args:
        name: Parameter name.
        value: Proposed value (Python types as rclpy delivers them).

    Returns:
        None if the value is acceptable, else a reason naming the parameter and what is allowed.
    """
    param = SPECS.get(name)
    if param is None:
        return f'unknown parameter {name!r}'
    kind = param.type_name
    if not _type_ok(kind, value):
        hint = ' (write e.g. 1.0, not 1)' if kind == 'float' and _is_int(value) else ''
        return (f'{name} must be of type {kind}, got {type(value).__name__} '
                f'{value!r}{hint}')
    if kind == 'float' and not math.isfinite(value):
        return f'{name} must be finite, got {value!r}'
    if kind in ('int', 'float'):
        low, high = param.min, param.max
        if (low is not None and value < low) or (high is not None and value > high):
            return f'{name} must be in [{_fmt(low)}, {_fmt(high)}], got {value!r}'
        if param.step and (value - (low or 0)) % param.step:
            return f'{name} must be a multiple of {param.step} in [{low}, {high}], got {value!r}'
    if param.choices is not None and value not in param.choices:
        return f'{name} must be one of {list(param.choices)}, got {value!r}'
    return _extra_check(name, value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == 'bool':
        return isinstance(value, bool)
    if kind == 'int':
        return _is_int(value)
    if kind == 'float':
        return isinstance(value, float)
    if kind == 'str':
        return isinstance(value, str)
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _extra_check(name: str, value: Any) -> str | None:
    if name == 'image_topics' and not value:
        return 'image_topics must name at least one image topic'
    if name in ('image_topics', 'camera_info_topics'):
        for topic in value:
            if not is_valid_topic(topic):
                return f'{name}: {topic!r} is not a valid ROS topic name'
        if len(set(value)) != len(value):
            return f'{name} must not contain duplicates, got {list(value)}'
    if name == 'depth_topics':
        for topic in value:
            if topic and not is_valid_topic(topic):
                return (f"depth_topics: {topic!r} is not a valid ROS topic name ('' = no depth "
                        'for that camera)')
        given = [topic for topic in value if topic]
        if len(set(given)) != len(given):
            return f'depth_topics must not contain duplicates, got {list(value)}'
    if name == 'camera_names':
        for camera in value:
            if not is_valid_camera_name(camera):
                return (f'camera_names: {camera!r} is not a valid name (letters, digits, '
                        'single underscores; starts with a letter)')
    if name == 'device' and not _DEVICE_RE.match(value):
        return f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}"
    if name == 'providers':
        if not value:
            return 'providers must name at least one ONNX Runtime execution provider'
        for provider in value:
            if not _PROVIDER_RE.match(provider):
                return (f'providers: {provider!r} is not an execution provider name '
                        '(e.g. CPUExecutionProvider)')
        if len(set(value)) != len(value):
            return f'providers must not contain duplicates, got {list(value)}'
    return None


def is_valid_topic(topic: str) -> bool:
    """Whether ``topic`` is a syntactically valid ROS 2 topic name (absolute or relative)."""
    return bool(_TOPIC_RE.match(topic)) and '__' not in topic


def is_valid_camera_name(name: str) -> bool:
    """Whether ``name`` can be one token of a topic name (``~/<name>/poses``)."""
    return bool(_NAME_RE.match(name)) and '__' not in name


def _resolve(values: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``values``; every value validated (ValueError with the reason)."""
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ValueError(f'unknown parameters: {unknown}')
    merged = defaults()
    merged.update(values)
    for name, value in merged.items():
        reason = validate(name, value)
        if reason is not None:
            raise ValueError(reason)
    return merged


# ---------------------------------------------------------------------------- config builders
def to_pipeline_config(values: Mapping[str, Any]) -> PipelineConfig:
    """The core :class:`PipelineConfig` from parameter values.

    Args:
        values: name -> value; names missing here take the table default.

    Raises:
        ValueError: an unknown name, an invalid value (the :func:`validate` reason) or a
            cross-field problem (the core's message, e.g. a centered window of even size).
    """
    merged = _resolve(values)
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    kwargs = {name: merged[name] for name in fields}
    kwargs['providers'] = tuple(kwargs['providers'])
    return PipelineConfig(**kwargs)


@dataclasses.dataclass(frozen=True)
class CameraSetup:
    """One camera's topics.

    Attributes:
        name: Camera name (output topics ``~/<name>/...``, ``PersonPoseArray.camera``).
        image_topic: Image topic as configured (without ``/compressed``).
        camera_info_topic: CameraInfo topic.
        compressed: Subscribe to ``<image_topic>/compressed`` (CompressedImage).
        depth_topic: Registered depth image topic; '' = no depth (no 3D) for this camera.
        depth_compressed: Subscribe to ``<depth_topic>/compressedDepth`` (CompressedImage).
    """

    name: str
    image_topic: str
    camera_info_topic: str
    compressed: bool
    depth_topic: str = ''
    depth_compressed: bool = False

    @property
    def subscribed_topic(self) -> str:
        """The topic actually subscribed for images."""
        return f'{self.image_topic}/compressed' if self.compressed else self.image_topic

    @property
    def subscribed_depth_topic(self) -> str:
        """The topic actually subscribed for depth ('' = none)."""
        if not self.depth_topic:
            return ''
        return (f'{self.depth_topic}/compressedDepth' if self.depth_compressed
                else self.depth_topic)


def camera_info_topic_for(image_topic: str) -> str:
    """``/ns/image_raw`` -> ``/ns/camera_info``; ``image`` -> ``camera_info``."""
    head, sep, _ = image_topic.rpartition('/')
    return f'{head}{sep}camera_info'


def camera_name_for(image_topic: str) -> str:
    """``/front/image_raw`` -> ``front``; a topic without a namespace gives its own name."""
    segments = [s for s in image_topic.lstrip('~').split('/') if s]
    return segments[-2] if len(segments) >= 2 else segments[-1]


def camera_setup(values: Mapping[str, Any]) -> list[CameraSetup]:
    """Per-camera topics and names, derived where the lists are empty.

    Args:
        values: name -> value; names missing here take the table default.

    Raises:
        ValueError: invalid values, list lengths that do not match ``image_topics``, invalid or
            duplicate camera names.
    """
    merged = _resolve(values)
    images = list(merged['image_topics'])
    infos = list(merged['camera_info_topics'])
    names = list(merged['camera_names'])
    depths = list(merged['depth_topics'])
    for key, given in (('camera_info_topics', infos), ('camera_names', names),
                       ('depth_topics', depths)):
        if given and len(given) != len(images):
            empty = ("[] for no depth ('' in the list: no depth for that camera)"
                     if key == 'depth_topics' else '[] to derive them')
            raise ValueError(
                f'{key} has {len(given)} entries but image_topics has {len(images)}: give one '
                f'per image topic, or {empty}')
    if not infos:
        infos = [camera_info_topic_for(t) for t in images]
    if not names:
        names = [camera_name_for(t) for t in images]
        for topic, camera in zip(images, names):
            if not is_valid_camera_name(camera):
                raise ValueError(
                    f'cannot derive a camera name from {topic!r} (got {camera!r}); set '
                    'camera_names')
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f'camera names must be unique, got {names} (duplicates {duplicates}); set '
            'camera_names explicitly')
    if not depths:
        depths = [''] * len(images)
    for image, depth in zip(images, depths):
        if depth and depth == image:
            raise ValueError(f'depth_topics: {depth!r} is also an image topic; give the '
                             'registered depth topic (e.g. .../aligned_depth_to_color/image_raw)')
    compressed = merged['transport'] == 'compressed'
    depth_compressed = merged['depth_transport'] == 'compressedDepth'
    return [CameraSetup(name, image, info, compressed, depth, depth_compressed)
            for name, image, info, depth in zip(names, images, infos, depths)]


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """ROS-only settings (everything that is not part of the core :class:`PipelineConfig`)."""

    cameras: tuple[CameraSetup, ...]
    transport: str
    weights_path: str
    latency_budget_ms: float
    max_auto_steps: int
    publish_markers: bool
    marker_depth_m: float
    marker_lifetime_s: float
    marker_min_confidence: float
    joint_scale_m: float
    bone_width_m: float
    publish_debug_image: bool
    diagnostics_period_s: float
    autostart: bool
    depth_transport: str = 'raw'
    depth_stamp_tolerance_ms: float = 20.0
    depth_band_front_m: float = 0.8
    depth_band_behind_m: float = 0.35
    depth_min_support: float = 0.15

    def depth_config(self) -> Any:
        """The core ``depth3d.DepthConfig`` (its other settings keep their defaults)."""
        return DepthConfig(band_front_m=self.depth_band_front_m,
                           band_behind_m=self.depth_band_behind_m,
                           min_support=self.depth_min_support)


def node_options(values: Mapping[str, Any]) -> NodeOptions:
    """The node's ROS-only settings from parameter values (see :func:`to_pipeline_config`)."""
    merged = _resolve(values)
    kwargs = {f.name: merged[f.name] for f in dataclasses.fields(NodeOptions)
              if f.name != 'cameras'}
    return NodeOptions(cameras=tuple(camera_setup(merged)), **kwargs)


# ---------------------------------------------------------------------------------- YAML files
def load_yaml_defaults(path: str | Path, node_name: str | None = None) -> dict[str, Any]:
    """Parameter values from a ROS 2 params file.

    The file maps node names (or ``/**``) to ``{ros__parameters: {...}}``; nested dictionaries
    become dotted names. Sections are merged in file order; with ``node_name`` only ``/**``,
    ``/**/<name>``, ``<name>`` and ``/<name>`` sections count.

    Raises:
        ValueError: the file is not a ROS 2 params file.
    """
    import yaml

    with open(path, encoding='utf-8') as stream:
        data = yaml.safe_load(stream)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping of node names to ros__parameters')
    wanted = None
    if node_name is not None:
        bare = node_name.strip('/')
        wanted = {'/**', f'/**/{bare}', bare, f'/{bare}'}
    values: dict[str, Any] = {}
    for section, body in data.items():
        if wanted is not None and section not in wanted:
            continue
        if not isinstance(body, dict) or not isinstance(body.get('ros__parameters'), dict):
            raise ValueError(f'{path}: section {section!r} has no ros__parameters mapping')
        values.update(_flatten(body['ros__parameters']))
    return values


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{name}.'))
        else:
            flat[name] = value
    return flat

