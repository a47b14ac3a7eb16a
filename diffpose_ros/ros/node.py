"""diffpose_node: lifecycle node publishing temporally stable COCO-17 keypoints.

ROS contract (names relative to the node, default node name ``diffpose``):

Subscriptions, per camera (``image_topics``; ``transport: compressed`` adds ``/compressed``):
  ``<image_topic>``              sensor_msgs/Image or sensor_msgs/CompressedImage, sensor-data
                                 QoS by default (best effort: matches reliable and best-effort
                                 publishers), overridable with ``qos_overrides.<topic>...``
  ``<camera_info_topic>``        sensor_msgs/CameraInfo (intrinsics for markers and 3D; the
                                 image is assumed rectified: one WARN if ``d`` is non-zero)
  ``<depth_topic>``              only for cameras with a ``depth_topics`` entry: depth image
                                 registered to the colour image, sensor_msgs/Image (16UC1 mm,
                                 32FC1 m) or, with ``depth_transport: compressedDepth``,
                                 sensor_msgs/CompressedImage on ``<depth_topic>/compressedDepth``;
                                 sensor-data QoS, overridable like the image topics
Publications, per camera ``<name>`` (from ``camera_names`` or the topic):
  ``~/<name>/poses``             diffpose_ros/PersonPoseArray, header = source image header
  ``~/<name>/poses_3d``          diffpose_ros/PersonPose3DArray, only for cameras with depth:
                                 header = the colour image's (same as ``poses``), positions in
                                 its optical frame [m]; only persons with a torso depth
  ``~/<name>/markers``           visualization_msgs/MarkerArray in the image's frame_id (at the
                                 measured 3D positions when a person has them)
  ``~/<name>/debug_image``       sensor_msgs/Image, annotated; only while someone subscribes
  ``/diagnostics``               diagnostic_msgs/DiagnosticArray every ``diagnostics_period_s``

Lifecycle: configure loads and warms up the models (FAILURE with a logged reason on missing or
corrupt weights or a bad configuration); activate subscribes and starts the worker; deactivate
unsubscribes and clears markers; cleanup releases the models. ``autostart: true`` configures and
activates by itself, so a plain ``ros2 launch`` publishes.

Each camera has one latest-frame slot: a frame replaced before the worker took it is a drop,
counted per camera. Frames that never arrived (lost in DDS transport) are counted per camera
from the publishers' sequence numbers (transport_stats). Bad input is counted per kind, logged
(throttled) and skipped.

Depth: depth messages are only buffered on arrival (the newest ``DEPTH_BUFFER_FRAMES`` per
camera). When a colour frame's poses are published, the depth message with the nearest stamp
within ``depth_stamp_tolerance_ms`` is decoded and the 3D keypoints computed
(``depth3d.persons_to_3d``). No such depth (late or missing) or no CameraInfo yet: the 2D poses
are published as always, no ``poses_3d`` for that frame, counted (``frames_without_depth``,
``frames_without_camera_info``). A bad depth image (encoding, size unlike the colour image's,
truncated, undecodable) is counted per kind (``bad_depth.<kind>``) with a throttled WARN; 2D is
unaffected.
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any

import numpy as np
import rclpy
import rclpy.subscription
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from diffpose_ros.depth3d import DepthFrame, Intrinsics, StampMatcher, persons_to_3d
from diffpose_ros.latency_budget import CostTracker, choose_steps
from diffpose_ros.msg import Keypoint2D, PersonPose, PersonPose3DArray, PersonPoseArray
from diffpose_ros.ros import params as params_mod
from diffpose_ros.ros.image_conversion import (
    BAD_INPUT_KINDS,
    COMPRESSED_MAX_BYTES_PER_PIXEL,
    COMPRESSED_SLACK_BYTES,
    ImageConversionError,
    bgr_to_image_msg,
    compressed_to_bgr,
    cv_bridge_status,
    depth_image_to_array,
    image_to_bgr,
)
from diffpose_ros.ros.markers import camera_matrix_from, delete_all_markers, pose_markers
from diffpose_ros.ros.poses3d import poses_3d_message
from diffpose_ros.transport_stats import SEQUENCE_NUMBERS, StampClockMonitor, TransportLossCounter

NODE_NAME = 'diffpose'
STALE_INPUT_S = 3.0            # publishers exist but no frame for this long -> warning
RATE_WINDOW_S = 5.0            # input/output rates over this window
LATENCY_SAMPLES = 200          # p50/p95 over the last N frames
POSE_STAGES = ('crop', 'backbone', 'strl', 'denoise', 'decode')
WORKER_JOIN_TIMEOUT_S = 30.0   # deactivate waits this long for the frame in flight
TRANSPORT_LOSS_LOG_PERIOD_S = 30.0
DEPTH_BUFFER_FRAMES = 30       # depth messages kept per camera for stamp matching (~1 s at 30 Hz)
VALID_SHARE_FRAMES = 100       # valid_3d_joint_share over the last N poses_3d messages
# a depth frame can be bad in the ways a colour frame can, or not match the colour image's size
BAD_DEPTH_KINDS = BAD_INPUT_KINDS + ('size_mismatch',)
# Subscription callbacks can take (msg, message_info) since Iron (rclpy 4); Humble's rclpy
# passes the message only, so transport losses there are estimated from stamp intervals.
MESSAGE_INFO_IN_CALLBACKS = hasattr(rclpy.subscription.Subscription, 'CallbackType')
SHM_PROFILE_HINT = (
    'run the publisher (camera driver, ros2 bag play) on this host with the shared-memory '
    'profile $(ros2 pkg prefix diffpose_ros)/share/diffpose_ros/config/fastdds_shm.xml in '
    'FASTRTPS_DEFAULT_PROFILES_FILE (Humble, Jazzy) or FASTDDS_DEFAULT_PROFILES_FILE (Kilted) '
    '(README, Fast DDS shared memory), or publish compressed images and set '
    'transport: compressed')


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _sequence_and_publisher(info: Any) -> tuple[int | None, bytes | None]:
    """Publication sequence number and publisher GID from rclpy's message info, if given."""
    if not info:
        return None, None
    sequence = info.get('publication_sequence_number')
    if sequence is not None and sequence >= 2**63:
        sequence = None           # RMW_MESSAGE_INFO_SEQUENCE_NUMBER_UNSUPPORTED passed through
    gid = info.get('publisher_gid')      # Jazzy 7.1+ and Kilted; None: one publisher assumed
    return sequence, (bytes(gid['data']) if gid else None)


def _decode_compressed_depth(msg: Any, max_pixels: int) -> tuple[np.ndarray, str]:
    """A compressedDepth CompressedImage as (array, encoding); errors as ImageConversionError."""
    from diffpose_ros.compressed_depth import CompressedDepthError, decode_compressed_depth

    data = bytes(msg.data)
    if not data:
        raise ImageConversionError('empty', f'compressedDepth image ({msg.format!r}) has no data')
    max_bytes = max_pixels * COMPRESSED_MAX_BYTES_PER_PIXEL + COMPRESSED_SLACK_BYTES
    if len(data) > max_bytes:
        raise ImageConversionError(
            'oversize', f'compressedDepth image has {len(data)} bytes > {max_bytes} allowed for '
            f'max_image_pixels {max_pixels}')
    # the decoder refuses oversize images from their headers, before allocating
    try:
        depth, encoding = decode_compressed_depth(msg.format, data, max_pixels=max_pixels)
    except CompressedDepthError as exc:
        kind = getattr(exc, 'kind', '')
        kind = ('oversize' if 'oversize' in kind else 'unknown_encoding' if 'format' in kind
                else 'corrupt_compressed')
        raise ImageConversionError(kind, str(exc)) from None
    if depth.size > max_pixels:
        raise ImageConversionError(
            'oversize', f'decoded depth image {depth.shape} has more than max_image_pixels '
            f'{max_pixels} pixels')
    return depth, encoding


def _torch_threads(detector: Any) -> str:
    """torch's intra-op threads as the detector last ran with them (in the worker thread: torch
    keeps the count per thread, so this timer thread's own reading could differ), else this
    thread's reading, without importing torch."""
    import sys

    in_use = getattr(detector, 'torch_threads_in_use', 0)
    if in_use:
        return str(in_use)
    torch = sys.modules.get('torch')
    return str(torch.get_num_threads()) if torch is not None else 'not loaded'


@dataclasses.dataclass
class _Slot:
    msg: Any
    compressed: bool
    receive_ns: int               # monotonic clock
    receive_clock_ns: int = 0     # the node's clock (ROS or sim time; 0: not started)


class _Rate:
    """Events per second over a sliding window of wall time."""

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now_s: float) -> None:
        self._times.append(now_s)

    def hz(self, now_s: float) -> float:
        while self._times and now_s - self._times[0] > RATE_WINDOW_S:
            self._times.popleft()
        return len(self._times) / RATE_WINDOW_S


class _Camera:
    """ROS-side state of one camera: slot, subscriptions, publishers, counters."""

    def __init__(self, setup: params_mod.CameraSetup):
        self.setup = setup
        self.slot: _Slot | None = None
        # stamps of every received frame (also those replaced in the slot), for the pipeline's
        # frame-period estimate: window offsets then count real frame periods under drops
        self.received_stamps_ns: collections.deque[int] = collections.deque(maxlen=64)
        self.headers: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self.images: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.camera_matrix: np.ndarray | None = None
        self.last_track_ids: set[int] = set()
        self.subscriptions: list[Any] = []
        self.poses_pub = self.markers_pub = self.debug_pub = None
        self.received = self.processed = self.dropped = self.published = 0
        self.transport = TransportLossCounter()
        self.transport_loss_reported = 0    # lost total at the previous diagnostics report
        self.transport_loss_logged = 0      # ... and at the previous WARN log
        self.transport_loss_logged_s = -float('inf')
        self.stamp_clock = StampClockMonitor()
        self.stamp_clock_warned = False
        self.bad_input: collections.Counter[str] = collections.Counter()
        self.in_rate, self.out_rate = _Rate(), _Rate()
        self.last_receive_s: float | None = None
        self.bad_input_reported = 0     # bad_input total at the previous diagnostics report
        # stamp -> publish on the node's clock, only while the stamps share that clock
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        # receive -> publish on the monotonic clock, always
        self.processing_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.pose_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        # where latency goes: waiting in the slot (camera faster than the node) vs processing
        self.slot_wait_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.service_ms: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self.monotonic_ns: collections.OrderedDict[int, tuple[int, int]] = \
            collections.OrderedDict()     # stamp -> (received, taken by the worker)
        # depth (only used when setup.depth_topic): messages buffered as they arrive, decoded
        # only when matched to a published colour frame
        self.intrinsics: Intrinsics | None = None
        self.distortion_warned = False
        self.depth_matcher = StampMatcher(DEPTH_BUFFER_FRAMES)
        self.image_sizes: collections.OrderedDict[int, tuple[int, int]] = \
            collections.OrderedDict()     # stamp -> colour (width, height)
        self.poses_3d_pub = None
        self.depth_received = 0
        self.depth_rate = _Rate()
        self.last_depth_receive_s: float | None = None
        self.depth_attempts = 0           # published colour frames that looked for depth
        self.frames_without_depth = 0
        self.frames_without_camera_info = 0
        self.poses_3d_published = 0
        self.persons_without_depth = 0    # persons left out of poses_3d (no torso depth)
        self.bad_depth: collections.Counter[str] = collections.Counter()
        # (valid joints, joints) of each recent poses_3d message
        self.joint_counts: collections.deque[tuple[int, int]] = collections.deque(
            maxlen=VALID_SHARE_FRAMES)
        # totals at the previous diagnostics report (warnings cover what happened since)
        self.depth_attempts_reported = self.without_depth_reported = 0
        self.without_info_reported = self.bad_depth_reported = 0


class DiffPoseNode(LifecycleNode):
    """Lifecycle node: images in, PersonPoseArray + markers + diagnostics out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        params_mod.declare_parameters(self)
        # two locks: image callbacks only touch the slots and must never wait for inference
        self._slot_lock = threading.Lock()
        self._pipeline_lock = threading.Lock()
        # held while publishing results and while stopping a worker: once a worker's stop event
        # is set, that worker publishes nothing more (it may outlive its join, e.g. deep in a
        # TensorRT engine build)
        self._publish_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._pipeline = None
        self._runtime = None
        self._placement = None          # runtime.devices.Placement once configured
        self._options: params_mod.NodeOptions | None = None
        self._cameras: dict[str, _Camera] = {}
        self._diagnostics_pub = None
        self._diagnostics_timer = None
        self._errors: collections.Counter[str] = collections.Counter()
        self._auto_steps_note = ''
        self._costs = CostTracker()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._autostart_timer = None
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(
                0.0, self._autostart, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------ parameters
    def _values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in params_mod.PARAMETERS}

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        specs = {spec.name: spec for spec in params_mod.PARAMETERS}
        configured = self._pipeline is not None
        changes: dict[str, Any] = {}
        for parameter in parameters:
            spec = specs.get(parameter.name)
            if spec is None:
                continue            # e.g. use_sim_time, qos_overrides.*
            reason = params_mod.validate(parameter.name, parameter.value)
            if reason is None and configured and not spec.dynamic:
                reason = (f'{parameter.name} cannot change while the node is configured; '
                          'deactivate, cleanup, set it, then configure again')
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            changes[parameter.name] = parameter.value
        if configured and changes:
            reason = self._apply_dynamic(changes)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_dynamic(self, changes: dict[str, Any]) -> str | None:
        values = self._values()
        values.update(changes)
        try:
            config = params_mod.to_pipeline_config(values)
            options = params_mod.node_options(values)
        except ValueError as exc:
            return str(exc)
        with self._pipeline_lock:
            self._pipeline.config = self._pipeline.config.replace(
                steps=config.steps, hypotheses=config.hypotheses, seed=config.seed,
                ddim_eta=config.ddim_eta, t_start=config.t_start,
                diffusion_start=config.diffusion_start, x0_projection=config.x0_projection,
                decode_blur_sigma_px=config.decode_blur_sigma_px,
                keypoint_score_threshold=config.keypoint_score_threshold,
                max_persons=config.max_persons, detect_every_n=config.detect_every_n,
                detection_score_threshold=config.detection_score_threshold)
            if (config.keypoint_filter, config.filter_min_cutoff_hz, config.filter_beta) != (
                    self._pipeline.config.keypoint_filter,
                    self._pipeline.config.filter_min_cutoff_hz, self._pipeline.config.filter_beta):
                self._pipeline.set_keypoint_filter(
                    config.keypoint_filter, config.filter_min_cutoff_hz, config.filter_beta)
            self._pipeline.detector.score_threshold = config.detection_score_threshold
            self._pipeline.detector.max_persons = config.max_persons
            self._options = options
            self._auto_steps_note = ''
        return None

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        from diffpose_ros.assets import AssetError
        from diffpose_ros.model.files import WeightsError
        from diffpose_ros.pipeline import PosePipeline
        from diffpose_ros.runtime.devices import build_engines

        values = self._values()
        try:
            config = params_mod.to_pipeline_config(values)
            options = params_mod.node_options(values)
            setups = params_mod.camera_setup(values)
        except ValueError as exc:
            self.get_logger().error(f'configure failed: invalid parameters: {exc}')
            return TransitionCallbackReturn.FAILURE
        if any(setup.depth_topic and setup.depth_compressed for setup in setups):
            try:
                import diffpose_ros.compressed_depth  # noqa: F401  (the decoder, imported late)
            except ImportError as exc:
                self.get_logger().error(
                    f'configure failed: depth_transport compressedDepth needs '
                    f'diffpose_ros.compressed_depth: {exc}')
                return TransitionCallbackReturn.FAILURE
        try:
            start = time.perf_counter()
            # no usable GPU: the GPU parts run on the CPU, with one warning (runtime.devices)
            engines = build_engines(config, values['weights_path'] or None,
                                    logger=self.get_logger())
            config, runtime = engines.config, engines.runtime
            pipeline = PosePipeline(config, runtime, engines.detector)
            self._warm_up(pipeline)
        except (AssetError, WeightsError, OSError, RuntimeError, ValueError) as exc:
            self.get_logger().error(f'configure failed: {exc}')
            return TransitionCallbackReturn.FAILURE
        if not runtime.trained:
            self.get_logger().warning('the DiffPose head is UNTRAINED: keypoints are meaningless '
                                      'until trained weights are installed')
        self._runtime, self._pipeline, self._options = runtime, pipeline, options
        self._placement = engines.placement
        self._costs = CostTracker()
        self._auto_steps_note = ''
        self._cameras = {setup.name: _Camera(setup) for setup in setups}
        reliable = QoSProfile(depth=10)
        for camera in self._cameras.values():
            base = f'~/{camera.setup.name}'
            camera.poses_pub = self.create_lifecycle_publisher(
                PersonPoseArray, f'{base}/poses', reliable)
            camera.markers_pub = self.create_lifecycle_publisher(
                MarkerArray, f'{base}/markers', reliable)
            camera.debug_pub = self.create_lifecycle_publisher(
                Image, f'{base}/debug_image', qos_profile_sensor_data)
            if camera.setup.depth_topic:
                camera.poses_3d_pub = self.create_lifecycle_publisher(
                    PersonPose3DArray, f'{base}/poses_3d', reliable)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # wall-clock timer: with use_sim_time a paused or looping bag must not stop diagnostics
        self._diagnostics_timer = self.create_timer(
            options.diagnostics_period_s, self._publish_diagnostics,
            clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'configured in {time.perf_counter() - start:.1f} s: backend {runtime.name}, '
            f'{engines.placement.summary()}, cameras {list(self._cameras)}, steps {config.steps}, '
            f'hypotheses {config.hypotheses}, {config.window_mode} window {config.window_size}')
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, pipeline: Any) -> None:
        """One pass through every stage so the first real frame is not slow.

        Under TensorRT, engines are built for the largest shapes seen so far: warming up at
        max_persons x hypotheses builds them now, not minutes into a run on a Jetson.
        """
        config = pipeline.model_config
        sampling = pipeline.config
        persons = sampling.max_persons if 'TensorrtExecutionProvider' in \
            pipeline.runtime.providers else 1
        rows = persons * sampling.hypotheses
        pipeline.detector.detect(np.zeros((240, 320, 3), np.uint8))
        crops = np.zeros((persons, 3, config.crop_height, config.crop_width), np.float32)
        features = pipeline.runtime.extract_features(crops)
        window = np.repeat(features[:, None], len(pipeline.offsets), axis=1)
        condition = pipeline.runtime.encode_window(window, pipeline.offsets)
        shape = (rows, config.num_keypoints, config.heatmap_height, config.heatmap_width)
        pipeline.runtime.denoise(np.zeros(shape, np.float32), np.zeros(rows, np.int64),
                                 np.repeat(np.arange(persons), sampling.hypotheses), condition)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        qos_options = QoSOverridingOptions.with_default_policies()
        for camera in self._cameras.values():
            setup = camera.setup
            if setup.compressed:
                sub = self.create_subscription(
                    CompressedImage, f'{setup.image_topic}/compressed',
                    self._image_callback(camera, True),
                    qos_profile_sensor_data, qos_overriding_options=qos_options)
            else:
                sub = self.create_subscription(
                    Image, setup.image_topic, self._image_callback(camera, False),
                    qos_profile_sensor_data, qos_overriding_options=qos_options)
            info = self.create_subscription(
                CameraInfo, setup.camera_info_topic,
                lambda msg, c=camera: self._on_camera_info(c, msg), qos_profile_sensor_data)
            camera.subscriptions = [sub, info]
            if setup.depth_topic:
                camera.subscriptions.append(self.create_subscription(
                    CompressedImage if setup.depth_compressed else Image,
                    setup.subscribed_depth_topic,
                    lambda msg, c=camera: self._on_depth(c, msg),
                    qos_profile_sensor_data, qos_overriding_options=qos_options))
            camera.transport.resubscribed()
        self._stop = threading.Event()      # the new worker's own (an old one may still run)
        self._worker = threading.Thread(target=self._work, name='diffpose-worker', daemon=True)
        self._worker.start()
        self.get_logger().info('active: ' + ', '.join(
            f'{c.setup.subscribed_topic} -> {self.get_fully_qualified_name()}/{name}/poses'
            + (f' (+ {c.setup.subscribed_depth_topic} -> poses_3d)' if c.setup.depth_topic
               else '')
            for name, c in self._cameras.items()))
        return super().on_activate(state)

    def _stop_worker(self) -> bool:
        """Stop the worker; True when it ended. Either way it publishes nothing more."""
        with self._publish_lock:            # a publication in progress ends first
            self._stop.set()
        self._wake.set()
        stopped = True
        if self._worker is not None:
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
            stopped = not self._worker.is_alive()
            if not stopped:
                self.get_logger().warning(
                    f'the worker is still processing after {WORKER_JOIN_TIMEOUT_S:g} s; '
                    'its results will be discarded')
            self._worker = None
        return stopped

    def destroy_node(self) -> None:
        # Stop the worker first. Left running, a daemon thread inside ONNX Runtime or torch
        # when the interpreter exits aborts the process (SIGABRT, 'terminate called without an
        # active exception'): Ctrl-C while frames stream exited -6 in 5 of 8 stress runs.
        self._stop_worker()
        super().destroy_node()

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        stopped = self._stop_worker()
        if self._pipeline is not None and stopped:
            # centred windows hold back window_size // 2 key frames: publish them now (not
            # while a worker that outlived its join still runs the pipeline)
            with self._pipeline_lock:
                held_back = self._pipeline.flush()
            for result in held_back:
                self._publish(self._cameras[result.camera_id], result)
        for camera in self._cameras.values():
            for sub in camera.subscriptions:
                self.destroy_subscription(sub)
            camera.subscriptions = []
            camera.slot = None
            camera.depth_matcher.clear()    # stale after a pause; new depth comes with new frames
            if camera.markers_pub is not None and camera.last_track_ids:
                header = next(reversed(camera.headers.values()), None)
                if header is not None:
                    camera.markers_pub.publish(delete_all_markers(header))
            camera.last_track_ids = set()
        return super().on_deactivate(state)

    def _release(self) -> None:
        self._stop_worker()
        for camera in self._cameras.values():
            for sub in camera.subscriptions:
                self.destroy_subscription(sub)
            for pub in (camera.poses_pub, camera.poses_3d_pub, camera.markers_pub,
                        camera.debug_pub):
                if pub is not None:
                    self.destroy_lifecycle_publisher(pub)
            camera.depth_matcher.clear()
        self._cameras = {}
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        self._pipeline = self._runtime = None

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error('lifecycle error: releasing resources')
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ callbacks
    def _image_callback(self, camera: _Camera, compressed: bool) -> Any:
        """The subscription callback; with message info where rclpy can give it."""
        if MESSAGE_INFO_IN_CALLBACKS:
            def on_image_with_info(msg: Any, info: Any) -> None:
                self._on_image(camera, msg, compressed, info)
            return on_image_with_info

        def on_image(msg: Any) -> None:
            self._on_image(camera, msg, compressed)
        return on_image

    def _on_image(self, camera: _Camera, msg: Any, compressed: bool, info: Any = None) -> None:
        now = time.monotonic()
        clock_ns = self.get_clock().now().nanoseconds
        stamp_ns = stamp_to_ns(msg.header.stamp)
        sequence, publisher = _sequence_and_publisher(info)
        with self._slot_lock:
            if camera.slot is not None:
                camera.dropped += 1        # replaced before the worker took it
            camera.slot = _Slot(msg, compressed, time.monotonic_ns(), clock_ns)
            camera.received_stamps_ns.append(stamp_ns)
            camera.transport.observe(stamp_ns, sequence, publisher)
            camera.received += 1
            camera.in_rate.tick(now)
            camera.last_receive_s = now
        self._wake.set()

    def _on_camera_info(self, camera: _Camera, msg: CameraInfo) -> None:
        try:
            camera.camera_matrix = camera_matrix_from(msg.k)
            camera.intrinsics = Intrinsics.from_k(msg.k)
        except ValueError as exc:      # uncalibrated (K = 0) or garbage: no markers, no 3D
            camera.camera_matrix = camera.intrinsics = None
            self.get_logger().warning(f'[{camera.setup.name}] unusable CameraInfo: {exc}',
                                      throttle_duration_sec=10.0)
            return
        if camera.setup.depth_topic and not camera.distortion_warned and any(
                float(d) != 0.0 for d in msg.d):
            camera.distortion_warned = True
            self.get_logger().warning(
                f'[{camera.setup.name}] CameraInfo on {camera.setup.camera_info_topic} has '
                f'non-zero distortion {[round(float(d), 4) for d in msg.d]}: 3D keypoints '
                'assume a rectified colour image (pinhole K only), so they are off by the lens '
                'distortion. Subscribe to the rectified image (image_rect / aligned depth) and '
                'its CameraInfo.')

    def _on_depth(self, camera: _Camera, msg: Any) -> None:
        # cheap: keep the message; only the one matched to a published frame is decoded
        camera.depth_matcher.add(stamp_to_ns(msg.header.stamp), msg)
        now = time.monotonic()
        camera.depth_received += 1
        camera.depth_rate.tick(now)
        camera.last_depth_receive_s = now

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        stop = self._stop          # this worker's own: a later activation makes a new one
        while not stop.is_set():
            self._wake.wait(timeout=0.2)
            self._wake.clear()
            with self._slot_lock:
                taken = [(c, c.slot) for c in self._cameras.values() if c.slot is not None]
                for camera, _ in taken:
                    camera.slot = None
                stamps = {c.setup.name: list(c.received_stamps_ns)
                          for c in self._cameras.values() if c.received_stamps_ns}
                for c in self._cameras.values():
                    c.received_stamps_ns.clear()
            if stamps:
                with self._pipeline_lock:
                    for name, values in stamps.items():
                        for stamp_ns in values:
                            self._pipeline.observe_stamp(name, stamp_ns)
            if taken:
                try:
                    self._process(taken, stop)
                except Exception as exc:  # noqa: BLE001  (keep serving; counted + logged)
                    if stop.is_set() or not self.context.ok():
                        return  # shutting down: the frame in flight cannot be published
                    self._errors['processing'] += 1
                    self.get_logger().error(f'processing failed: {exc!r}',
                                            throttle_duration_sec=5.0)

    def _convert(self, camera: _Camera, slot: _Slot) -> np.ndarray | None:
        from diffpose_ros.pipeline import InvalidImageError, validate_image

        max_pixels = self._pipeline.config.max_image_pixels
        try:
            if slot.compressed:
                image = compressed_to_bgr(slot.msg, max_pixels=max_pixels)
            else:
                image = image_to_bgr(slot.msg, max_pixels=max_pixels)
            validate_image(image, max_pixels)
            return image
        except ImageConversionError as exc:
            kind, message = exc.kind, str(exc)
        except InvalidImageError as exc:
            kind, message = 'inconsistent_size', str(exc)
        camera.bad_input[kind] += 1
        self.get_logger().warning(
            f'[{camera.setup.name}] dropped a bad frame ({kind}): {message} '
            f'(count {camera.bad_input[kind]})', throttle_duration_sec=2.0)
        return None

    def _process(self, taken: list[tuple[_Camera, _Slot]], stop: threading.Event) -> None:
        batch = []
        taken_ns = time.monotonic_ns()
        for camera, slot in taken:
            image = self._convert(camera, slot)
            if image is None:
                continue
            header = slot.msg.header
            stamp_ns = stamp_to_ns(header.stamp)
            # judged on good frames only: a malformed one often has no stamp at all
            change = camera.stamp_clock.observe(stamp_ns, slot.receive_clock_ns)
            if change is not None:
                self._stamp_clock_changed(camera, change)
            camera.headers[stamp_ns] = header
            camera.monotonic_ns[stamp_ns] = (slot.receive_ns, taken_ns)
            if camera.setup.depth_topic:
                camera.image_sizes[stamp_ns] = (image.shape[1], image.shape[0])
            if self._options.publish_debug_image and camera.debug_pub.get_subscription_count():
                camera.images[stamp_ns] = image
            horizon = 2 * self._pipeline.config.window_size + 2
            while len(camera.headers) > horizon:
                camera.headers.popitem(last=False)
            while len(camera.monotonic_ns) > horizon:
                camera.monotonic_ns.popitem(last=False)
            while len(camera.images) > horizon:
                camera.images.popitem(last=False)
            while len(camera.image_sizes) > horizon:
                camera.image_sizes.popitem(last=False)
            batch.append((image, stamp_ns, camera.setup.name))
        if not batch:
            return
        with self._pipeline_lock:
            self._choose_steps()
            pipeline = self._pipeline
            results = pipeline.process_batch(batch)
        for result in results:
            self._publish(self._cameras[result.camera_id], result, stop)

    def _stamp_clock_changed(self, camera: _Camera, comparable: bool) -> None:
        camera.latency_ms.clear()         # figures from before the change mean something else
        name = camera.setup.name
        if not comparable:
            offset_s = camera.stamp_clock.offset_ns / 1e9
            camera.stamp_clock_warned = True
            self.get_logger().warning(
                f'[{name}] image stamps are not from this node\'s clock (node clock - stamp = '
                f'{offset_s:.3f} s at arrival): diagnostics report processing latency and the '
                'clock offset, not stamp-to-publish latency. Sync the camera\'s clock '
                '(chrony/PTP), or play bags with --clock and set use_sim_time:=true')
        elif camera.stamp_clock_warned:
            camera.stamp_clock_warned = False
            self.get_logger().info(f'[{name}] image stamps follow this node\'s clock again')

    def _choose_steps(self) -> None:
        """Latency budget: the most steps whose measured cost fits (at least 1)."""
        budget_ms = self._options.latency_budget_ms
        if budget_ms <= 0 or not self._costs.ready:
            return
        choice = choose_steps(budget_ms, self._costs.fixed_ms, self._costs.per_step_ms,
                              self._options.max_auto_steps)
        self._auto_steps_note = choice.note
        if choice.steps != self._pipeline.config.steps:
            self._pipeline.set_sampling(steps=choice.steps)

    def _publish(self, camera: _Camera, result: Any, stop: threading.Event | None = None) -> None:
        """Publish one result; ``stop``: the calling worker's (nothing once it is set)."""
        with self._publish_lock:
            if stop is None or not stop.is_set():
                self._publish_unlocked(camera, result)

    def _publish_unlocked(self, camera: _Camera, result: Any) -> None:
        header = camera.headers.get(result.stamp_ns)
        if header is None:
            return                        # reset by a time jump in between
        pose_ms = sum(result.timings_ms.get(stage, 0.0) for stage in POSE_STAGES)
        msg = PersonPoseArray()
        msg.header = header
        msg.camera = camera.setup.name
        msg.steps = result.steps
        msg.hypotheses = result.hypotheses
        msg.window_size = result.window_size
        msg.window_mode = result.window_mode
        msg.pose_latency_ms = float(pose_ms)
        msg.persons = [self._person_msg(p) for p in result.persons]
        camera.poses_pub.publish(msg)
        camera.processed += 1
        camera.published += 1
        now = time.monotonic()
        camera.out_rate.tick(now)
        camera.pose_ms.append(pose_ms)
        if camera.stamp_clock.comparable:
            latency_ms = (self.get_clock().now().nanoseconds - result.stamp_ns) / 1e6
            camera.latency_ms.append(latency_ms)
        received_taken = camera.monotonic_ns.get(result.stamp_ns)
        if received_taken is not None:
            received_ns, taken_ns = received_taken
            published_ns = time.monotonic_ns()
            camera.slot_wait_ms.append((taken_ns - received_ns) / 1e6)
            camera.service_ms.append((published_ns - taken_ns) / 1e6)
            camera.processing_ms.append((published_ns - received_ns) / 1e6)
        self._costs.update(result.timings_ms, result.steps)
        options = self._options
        keypoints_3d = self._publish_3d(camera, result, header) if camera.setup.depth_topic \
            else None
        track_ids = {p.track_id for p in result.persons}
        if options.publish_markers and camera.camera_matrix is not None:
            markers = pose_markers(
                result.persons, header, camera.camera_matrix, options.marker_depth_m,
                options.marker_lifetime_s, options.marker_min_confidence,
                options.joint_scale_m, options.bone_width_m,
                removed_track_ids=sorted(camera.last_track_ids - track_ids),
                keypoints_3d=keypoints_3d)
            camera.markers_pub.publish(markers)
        camera.last_track_ids = track_ids
        image = camera.images.pop(result.stamp_ns, None)
        if image is not None and camera.debug_pub.get_subscription_count():
            from diffpose_ros.pipeline import draw_poses

            camera.debug_pub.publish(bgr_to_image_msg(draw_poses(image, result), header, Image))

    def _publish_3d(self, camera: _Camera, result: Any,
                    header: Any) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """3D keypoints of a published frame from its matched depth image; publishes
        ``poses_3d`` and returns track id -> (xyz_m, valid) for the markers (None: no 3D)."""
        name = camera.setup.name
        camera.depth_attempts += 1
        tolerance_ns = int(round(self._options.depth_stamp_tolerance_ms * 1e6))
        match = camera.depth_matcher.nearest(result.stamp_ns, tolerance_ns)
        if match is None:
            camera.frames_without_depth += 1
            self.get_logger().warning(
                f'[{name}] no depth image within {self._options.depth_stamp_tolerance_ms:g} ms '
                f'of the colour frame on {camera.setup.subscribed_depth_topic}: 2D only '
                f'({camera.frames_without_depth} frames so far; depth late, missing or on '
                'another clock?)', throttle_duration_sec=10.0)
            return None
        if camera.intrinsics is None:
            camera.frames_without_camera_info += 1
            self.get_logger().warning(
                f'[{name}] no usable CameraInfo on {camera.setup.camera_info_topic} yet: no 3D',
                throttle_duration_sec=10.0)
            return None
        _, depth_msg = match
        depth_frame = self._depth_frame(camera, depth_msg,
                                        camera.image_sizes.get(result.stamp_ns))
        if depth_frame is None:
            return None
        points = persons_to_3d(result.persons, depth_frame, camera.intrinsics,
                               self._options.depth_config())
        built = poses_3d_message(header, name, depth_msg.header.stamp, result.persons, points)
        camera.persons_without_depth += built.persons_without_depth
        camera.poses_3d_pub.publish(built.msg)
        camera.poses_3d_published += 1
        if built.total_joints:
            camera.joint_counts.append((built.valid_joints, built.total_joints))
        return built.by_track

    def _depth_frame(self, camera: _Camera, msg: Any,
                     colour_size: tuple[int, int] | None) -> DepthFrame | None:
        """The matched depth message as a DepthFrame, or None (counted) if bad."""
        max_pixels = self._pipeline.config.max_image_pixels
        try:
            if camera.setup.depth_compressed:
                depth, encoding = _decode_compressed_depth(msg, max_pixels)
            else:
                depth, encoding = depth_image_to_array(msg, max_pixels)
            size = (depth.shape[1], depth.shape[0]) if depth.ndim == 2 else None
            if size is None or size != colour_size:
                kind = 'size_mismatch'
                message = (f'depth image {depth.shape} (width, height {size}) is not the colour '
                           f'image\'s (width, height {colour_size}): depth must be registered '
                           'to the colour image (e.g. RealSense aligned_depth_to_color)')
            else:
                return DepthFrame(depth, encoding)  # metres only where sampled
        except ImageConversionError as exc:
            kind, message = exc.kind, str(exc)
        except ValueError as exc:       # DepthFrame: a decoded array it cannot take
            kind, message = 'unknown_encoding', str(exc)
        camera.bad_depth[kind] += 1
        self.get_logger().warning(
            f'[{camera.setup.name}] bad depth image on {camera.setup.subscribed_depth_topic} '
            f'({kind}): {message}; 2D only for this frame (count {camera.bad_depth[kind]})',
            throttle_duration_sec=2.0)
        return None

    @staticmethod
    def _person_msg(person: Any) -> PersonPose:
        msg = PersonPose()
        msg.track_id = int(person.track_id)
        box = [float(v) for v in person.box_xyxy]
        msg.box_x_min, msg.box_y_min, msg.box_x_max, msg.box_y_max = box
        msg.detection_score = float(person.score)
        msg.keypoints = [Keypoint2D(x=float(x), y=float(y), confidence=float(c))
                         for x, y, c in person.keypoints]
        return msg

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        now = time.monotonic()
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        pipeline = self._pipeline
        node_status = DiagnosticStatus(name=f'{self.get_name()}: pose engine',
                                       hardware_id=self.get_fully_qualified_name())
        warnings = []
        if pipeline is not None:
            config = pipeline.config
            node_status.values = [
                KeyValue(key='backend', value=self._runtime.name),
                KeyValue(key='providers', value=','.join(self._runtime.providers)),
                KeyValue(key='quantization',
                         value=str(getattr(self._runtime, 'quantization', 'none'))),
                KeyValue(key='devices', value=self._placement.summary()),
                KeyValue(key='weights_trained', value=str(self._runtime.trained)),
                KeyValue(key='steps', value=str(config.steps)),
                KeyValue(key='hypotheses', value=str(config.hypotheses)),
                KeyValue(key='diffusion_start', value=(
                    f'detector t_start={config.t_start}' if config.diffusion_start == 'detector'
                    else 'noise')),
                KeyValue(key='window', value=f'{config.window_mode} {config.window_size}'),
                KeyValue(key='cv_bridge', value=cv_bridge_status()),
                KeyValue(key='torch_threads', value=_torch_threads(pipeline.detector)),
                KeyValue(key='processing_errors', value=str(self._errors['processing'])),
            ]
            if not self._runtime.trained:
                warnings.append('untrained weights')
            if self._auto_steps_note:
                warnings.append(self._auto_steps_note)
        node_status.level = DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        node_status.message = '; '.join(warnings) or 'ok'
        array.status.append(node_status)
        for camera in list(self._cameras.values()):
            array.status.append(self._camera_status(camera, now))
        self._diagnostics_pub.publish(array)

    def _camera_status(self, camera: _Camera, now: float) -> DiagnosticStatus:
        status = DiagnosticStatus(name=f'{self.get_name()}: camera {camera.setup.name}',
                                  hardware_id=camera.setup.image_topic)
        def pct(samples: collections.deque[float], q: float) -> str:
            return f'{np.percentile(np.array(samples), q):.1f}' if samples else 'n/a'

        # one snapshot: the worker counts bad frames while this runs, and a total read before
        # the per-kind values could be lower than their sum in the same message
        bad_input = dict(camera.bad_input)
        bad_total = sum(bad_input.values())
        lost = camera.transport.lost
        comparable = camera.stamp_clock.comparable
        offset_ns = camera.stamp_clock.offset_ns
        stamp_latency = camera.latency_ms if comparable else ()
        values = {
            'input_rate_hz': f'{camera.in_rate.hz(now):.2f}',
            'output_rate_hz': f'{camera.out_rate.hz(now):.2f}',
            'frames_received': camera.received, 'frames_published': camera.published,
            'frames_dropped': camera.dropped,
            'frames_lost_in_transport': lost,
            'transport_loss_source': camera.transport.source,
            'bad_input_total': bad_total,
            'processing_latency_p50_ms': pct(camera.processing_ms, 50),
            'processing_latency_p95_ms': pct(camera.processing_ms, 95),
            'stamps_comparable': {True: 'yes', False: 'no', None: 'unknown'}[comparable],
            'stamp_clock_offset_ms': f'{offset_ns / 1e6:.1f}' if offset_ns is not None
            else 'n/a',
            'latency_p50_ms': pct(stamp_latency, 50),
            'latency_p95_ms': pct(stamp_latency, 95),
            'slot_wait_p50_ms': pct(camera.slot_wait_ms, 50),
            'slot_wait_p95_ms': pct(camera.slot_wait_ms, 95),
            'service_p50_ms': pct(camera.service_ms, 50),
            'service_p95_ms': pct(camera.service_ms, 95),
            'pose_stage_p50_ms': pct(camera.pose_ms, 50),
            'pose_stage_p95_ms': pct(camera.pose_ms, 95),
            'camera_info': 'ok' if camera.camera_matrix is not None else 'missing',
        }
        values.update({f'bad_input.{kind}': bad_input.get(kind, 0) for kind in BAD_INPUT_KINDS})
        tracked = self._pipeline.cameras.get(camera.setup.name) if self._pipeline else None
        values['time_jumps_back'] = tracked.time_jumps if tracked is not None else 0
        values['tracks_live'] = tracked.tracker.num_tracks if tracked is not None else 0
        depth_warnings = self._depth_status(camera, now, values) if camera.setup.depth_topic \
            else []
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        warnings = []
        topic = camera.setup.image_topic + ('/compressed' if camera.setup.compressed else '')
        if camera.subscriptions and self.count_publishers(topic) > 0 and (
                camera.last_receive_s is None or now - camera.last_receive_s > STALE_INPUT_S):
            warnings.append(f'{topic} has publishers but no frames arrive (QoS mismatch, or '
                            'large images over best-effort UDP: use the shared-memory profile)')
        if camera.camera_matrix is None and self._options and self._options.publish_markers:
            warnings.append(f'no CameraInfo on {camera.setup.camera_info_topic}: no markers')
        # warn about what happened since the previous report, so the status can recover;
        # drops are expected when the camera is faster than the node and only reported
        if bad_total > camera.bad_input_reported:
            warnings.append(f'{bad_total - camera.bad_input_reported} bad frames since the last '
                            f'report ({bad_total} in total)')
        camera.bad_input_reported = bad_total
        if lost > camera.transport_loss_reported:
            warnings.append(f'{lost - camera.transport_loss_reported} frames lost in transport '
                            f'since the last report ({lost} in total): large images over UDP? '
                            'use the shared-memory profile or compressed transport')
        camera.transport_loss_reported = lost
        self._log_transport_loss(camera, topic, lost, now)
        if comparable is False:
            warnings.append(f'image stamps are not from the node clock (offset '
                            f'{offset_ns / 1e9:.3f} s): stamp-to-publish latency not reported')
        warnings.extend(depth_warnings)
        status.level = DiagnosticStatus.WARN if warnings else DiagnosticStatus.OK
        status.message = '; '.join(warnings) or 'ok'
        return status

    def _depth_status(self, camera: _Camera, now: float, values: dict[str, Any]) -> list[str]:
        """Depth keys of a depth camera's status (added to ``values``) and its warnings."""
        bad_depth = dict(camera.bad_depth)      # one snapshot (see bad_input)
        bad_total = sum(bad_depth.values())
        attempts, without = camera.depth_attempts, camera.frames_without_depth
        without_info = camera.frames_without_camera_info
        counts = list(camera.joint_counts)
        joints = sum(total for _, total in counts)
        topic = camera.setup.subscribed_depth_topic
        values.update({
            'depth_topic': topic,
            'depth_rate_hz': f'{camera.depth_rate.hz(now):.2f}',
            'depth_frames_received': camera.depth_received,
            'frames_without_depth': without,
            'frames_without_camera_info': without_info,
            'poses_3d_published': camera.poses_3d_published,
            'persons_without_depth': camera.persons_without_depth,
            'valid_3d_joint_share': (f'{sum(valid for valid, _ in counts) / joints:.3f}'
                                     if joints else 'n/a'),
            'bad_depth_total': bad_total,
        })
        values.update({f'bad_depth.{kind}': bad_depth.get(kind, 0) for kind in BAD_DEPTH_KINDS})
        warnings = []
        colour_flowing = camera.last_receive_s is not None and \
            now - camera.last_receive_s <= STALE_INPUT_S
        if camera.subscriptions and colour_flowing and (
                camera.last_depth_receive_s is None
                or now - camera.last_depth_receive_s > STALE_INPUT_S):
            since = ('ever' if camera.last_depth_receive_s is None
                     else f'{now - camera.last_depth_receive_s:.0f} s')
            warnings.append(f'colour frames arrive but no depth on {topic} for {since}: no 3D')
        new_attempts = attempts - camera.depth_attempts_reported
        new_without = without - camera.without_depth_reported
        if new_attempts and 2 * new_without > new_attempts:
            warnings.append(
                f'{new_without} of {new_attempts} frames since the last report had no depth '
                f'within {self._options.depth_stamp_tolerance_ms:g} ms (late, missing or on '
                'another clock)')
        if without_info > camera.without_info_reported:
            warnings.append(f'no CameraInfo on {camera.setup.camera_info_topic}: no 3D')
        if bad_total > camera.bad_depth_reported:
            warnings.append(f'{bad_total - camera.bad_depth_reported} bad depth images since '
                            f'the last report ({bad_total} in total)')
        camera.depth_attempts_reported, camera.without_depth_reported = attempts, without
        camera.without_info_reported, camera.bad_depth_reported = without_info, bad_total
        return warnings

    def _log_transport_loss(self, camera: _Camera, topic: str, lost: int, now: float) -> None:
        """A WARN with the likely cause and the fix, per camera at most every 30 s."""
        if lost <= camera.transport_loss_logged or \
                now - camera.transport_loss_logged_s < TRANSPORT_LOSS_LOG_PERIOD_S:
            return
        new = lost - camera.transport_loss_logged
        camera.transport_loss_logged, camera.transport_loss_logged_s = lost, now
        how = ('gaps in the publishers\' sequence numbers'
               if camera.transport.source == SEQUENCE_NUMBERS
               else 'estimated from image stamp intervals')
        self.get_logger().warning(
            f'[{camera.setup.name}] {new} frames on {topic} never reached the node ({lost} in '
            f'total, {how}; frames_lost_in_transport in /diagnostics). Likely cause: large raw '
            'images over UDP (Fast DDS fragments them and best-effort loses fragments; reliable '
            f'falls behind and skips). Fix: {SHM_PROFILE_HINT}')


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = DiffPoseNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT can shut the context down while the executor builds its next wait set; rclpy
        # then raises RCLError ("the given context is not valid") instead of
        # ExternalShutdownException (seen in CI, Kilted). That is a clean stop too.
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    import sys

    sys.exit(main())
