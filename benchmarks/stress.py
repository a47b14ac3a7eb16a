#!/usr/bin/env python3
"""Stress and fault runs for diffpose_node (issue 5, part 4): the long versions of test_stress.py.

A benchmark, not a test: every scenario starts ``diffpose_node`` as its own subprocess on an
isolated ROS domain (localhost discovery, the shared-memory Fast DDS profile), drives it from
this process and judges it against the issue's criteria. Scenarios (``--scenarios``, default
all, in this order):

  weights    configure with corrupt (garbage, truncated, empty), missing and config-less head
             weights, on both backends: every attempt must fail cleanly (lifecycle FAILURE, a log
             line naming the file, the process alive and unconfigured), then a configure with good
             weights must succeed.
  fuzz       >= 1,000 malformed image messages of every bad-input kind (raw: encoding, step,
             size, empty, truncated, zero dimension, oversize; then, after a reconfigure to
             ``transport: compressed``, corrupt compressed, compressedDepth, empty, oversize)
             interleaved with good frames sent in lock-step: the node's per-kind counts in
             /diagnostics must equal what was sent, every good frame must be served.
  publisher  the image publisher (a separate process) is SIGKILLed mid-stream and restarted,
             several times; every second restart comes back with stamps 100 s in the past (a
             driver with a new time base): the node must serve every new publisher.
  lifecycle  deactivate/activate cycles while a 30 Hz stream runs, at varying points of the
             worker's frame: transitions succeed, nothing is served while inactive, serving
             resumes after each activate; at the end, SIGINT while the stream still runs must
             exit 0.
  overload   lock-step calibration gives the sustainable rate (0.9 / mean service time), then
             open-loop feeding at 1x and at 2x: p95 at 2x <= 2x the p95 at 1x, and not growing
             (p95 of the second half of the 2x run <= 1.25x that of the first half; the trend of
             the p95 per 10-s window is reported).
  soak       >= 10 minutes at 30 Hz of the sample bag played by ``diffpose-bag play --loop
             --rate 3`` (each loop a backwards time jump that must reset tracking, checked),
             or with ``--soak-source frames`` of vtest.avi frames published here with
             wall-clock stamps (the scene cuts at every loop, so tracks must expire by
             themselves; a separate entry in stress.json): the node runs with an
             in-process sampler (same node class, ``stress.py node``) that records its RSS, live
             tracks and buffered frames every second; RSS slope after warm-up <= 1 MB/min, live
             tracks and buffered frames bounded (no growth in the last third), latency not
             growing (halves, as for overload) and its drift in ms/min.

Every scenario also requires: the node process alive throughout, ``processing_errors`` 0,
exit code 0 on SIGINT (the "crashes" count is the sum of those failures).

Frames: vtest.avi frames 200-299, crop (0, 144, 320, 240) upscaled x2 to 640x480 (1-3 persons;
detector imgsz 640, as in bench_node) for fuzz, publisher, lifecycle and overload; the soak uses
the sample bag (vtest.avi, 768x576 JPEG; made with ``diffpose-bag make`` if missing) or full
768x576 frames 0-299, with detector imgsz 1280.

Writes ``outputs/bench/stress.json`` in the benchmark suite's layout (benchmarks/run_all.py renders
it into docs/benchmarks.md): ``results.<name>`` per scenario with ``summary`` (one sentence with
the counts and crashes), ``metrics`` (flat numbers), ``checks`` (a list of {what, value, target,
met}, one per criterion of the issue, crashes included), ``pass``, ``crashes``, ``date``,
``duration_s``, ``command``, ``quick`` and ``details`` (raw data); entries of scenarios not run
are kept, so the soak can be run on its own.

    python benchmarks/stress.py                    # everything, ~20 minutes on 2 cores
    python benchmarks/stress.py --quick            # smoke: ~3 minutes, JSON into a temp dir
    python benchmarks/stress.py --scenarios soak                      # the 10-min soak
    python benchmarks/stress.py --scenarios soak --soak-source frames

Helper subcommands (used by the runs above and by test/test_stress.py):
    python benchmarks/stress.py publish --topic /stress/image_raw --frames f.npy --rate 10
    python benchmarks/stress.py node --instrument samples.jsonl --ros-args --params-file p.yaml
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (  # the benchmark suite's helpers (benchmarks/ is this script's folder)
    STRESS_JSON,
    CpuStealMeter,
    cpu_speed_reference,
    machine_info,
    record_stress_result,
    rss_mb,
    steal_warning,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))  # ros_harness: NodeProcess, RosClient, write_params

CAMERA = 'stress'
IMAGE_TOPIC = f'/{CAMERA}/image_raw'
POSES_TOPIC = f'/diffpose/{CAMERA}/poses'
FRAME_ID = f'{CAMERA}_optical'
NODE_NAME = 'diffpose'
GOOD_WH = (640, 480)
MAX_PIXELS = GOOD_WH[0] * GOOD_WH[1]  # node's max_image_pixels: a 640x480 frame just fits
CROP_FIRST, CROP_COUNT, CROP_XYWH = 200, 100, (0, 144, 320, 240)
RAW_KINDS = ('unknown_encoding', 'inconsistent_size', 'empty', 'truncated', 'zero_dimension',
             'oversize')
COMPRESSED_KINDS = ('unknown_encoding', 'corrupt_compressed', 'empty', 'oversize')
NODE_PARAMS = {
    'image_topics': [IMAGE_TOPIC],
    'camera_names': [CAMERA],
    'detector_imgsz': 640,
    'max_image_pixels': MAX_PIXELS,
    'use_sim_time': False,
    'autostart': True,
    'steps': 1,
    'hypotheses': 1,
    'latency_budget_ms': 0.0,
    'publish_markers': False,
    'publish_debug_image': False,
    'diagnostics_period_s': 0.2,
}
CRITERIA = {
    'crashes': 'zero crashes: the node process stays up (exit code 0 on SIGINT), no '
               'processing errors, configure failures are clean',
    'counts': 'bad input counted per kind in /diagnostics exactly as sent; every good frame '
              'served',
    'rss_slope': 'soak: RSS slope <= 1 MB/min after warm-up',
    'bounded': 'soak: live tracks and buffered frames bounded',
    'overload': 'under 2x input: p95 latency within 2x of its sustainable-rate value and not '
                'growing',
}
RSS_SLOPE_LIMIT_MB_PER_MIN = 1.0
MIN_RSS_JUDGED_S = 240.0  # the RSS slope is judged on at least this much run after warm-up


# ---------------------------------------------------------------------------- environment
def ros_environment(run_dir: Path) -> dict[str, str]:
    """Isolated ROS settings for this process and its children; call before rclpy loads."""
    if 'rclpy' in sys.modules:
        raise RuntimeError('rclpy was imported before the ROS environment was set')
    # tests use domains 20..99 and bench_node 1..19; <= 101 stays below the ephemeral ports
    os.environ['ROS_DOMAIN_ID'] = os.environ.get('DIFFPOSE_STRESS_DOMAIN_ID',
                                                 str(100 + os.getpid() % 2))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(ROOT / 'config' / 'fastdds_shm.xml')
    os.environ['ROS_LOG_DIR'] = str(run_dir / 'ros_log')
    keys = ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'FASTDDS_DEFAULT_PROFILES_FILE')
    return {key: os.environ[key] for key in keys}


def clean_shm() -> None:
    """Remove Fast DDS shared-memory segments no live process uses (a SIGKILL leaves them).

    Runs the tool with this venv's Python: ``.venv/bin/fastdds`` calls ``python3`` from PATH,
    which lacks psutil ("psutil module not found") and so cleans nothing.
    """
    tool = Path(sys.prefix) / 'tools' / 'fastdds' / 'fastdds.py'
    if tool.exists():
        subprocess.run([sys.executable, str(tool), 'shm', 'clean'], capture_output=True,
                       timeout=60)


# ---------------------------------------------------------------------------- frames
def load_frames(first: int = CROP_FIRST, count: int = CROP_COUNT,
                crop_xywh: tuple[int, int, int, int] | None = CROP_XYWH) -> list[np.ndarray]:
    """vtest.avi frames [first, first + count): the crop upscaled x2 to 640x480, or full."""
    import cv2

    from diffpose_ros.assets import VTEST_VIDEO, asset_path
    from diffpose_ros.evaluation import read_frames

    frames = read_frames(asset_path(VTEST_VIDEO), first, count)
    if crop_xywh is None:
        return frames
    x, y, w, h = crop_xywh
    return [np.ascontiguousarray(cv2.resize(f[y:y + h, x:x + w], GOOD_WH,
                                            interpolation=cv2.INTER_LINEAR)) for f in frames]


def set_stamp(msg: Any, stamp_ns: int, frame_id: str = FRAME_ID) -> Any:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def raw_msg(width: int, height: int, encoding: str, step: int, data: bytes) -> Any:
    from sensor_msgs.msg import Image

    msg = Image(width=width, height=height, encoding=encoding, step=step)
    msg.data = data
    return set_stamp(msg, time.time_ns())


def compressed_msg(fmt: str, data: bytes) -> Any:
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=fmt)
    msg.data = data
    return set_stamp(msg, time.time_ns())


def good_msg(frame: np.ndarray, stamp_ns: int, compressed: bool,
             frame_id: str = FRAME_ID) -> Any:
    import cv2

    if compressed:
        ok, data = cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        return set_stamp(compressed_msg('jpeg', data.tobytes()), stamp_ns, frame_id)
    height, width = frame.shape[:2]
    return set_stamp(raw_msg(width, height, 'bgr8', width * 3, frame.tobytes()), stamp_ns,
                     frame_id)


# ---------------------------------------------------------------------------- malformed input
def _random_bytes(rng: np.random.Generator, size: int) -> bytes:
    return rng.integers(0, 256, size, np.uint8).tobytes()


def malformed_raw(rng: np.random.Generator, kind: str, frame: np.ndarray) -> tuple[Any, str]:
    """A ``sensor_msgs/Image`` that the node must count as ``kind``; (message, variant)."""
    frame_bytes = frame.tobytes()
    height, width = frame.shape[:2]
    w, h = int(rng.integers(16, 65)), int(rng.integers(16, 65))
    if kind == 'unknown_encoding':
        encoding = str(rng.choice(['bayer_rggb8', 'bayer_grbg16', '32FC1', '64FC1', 'rgb16',
                                   'bgra16', 'BGR8', 'Mono8', '', 'yuv420', 'nv12', 'jpeg',
                                   'rgb8 ', 'bgr 8']))
        return raw_msg(w, h, encoding, w * 3, _random_bytes(rng, h * w * 3)), \
            f'encoding {encoding!r}'
    if kind == 'inconsistent_size':
        variant = str(rng.choice(['step < row', 'step not 2-byte aligned', 'odd width yuv',
                                  'extra bytes']))
        if variant == 'step < row':
            step = int(rng.integers(1, w * 3))
            return raw_msg(w, h, 'bgr8', step, _random_bytes(rng, h * step)), variant
        if variant == 'step not 2-byte aligned':
            encoding = str(rng.choice(['mono16', '16UC1']))
            step = w * 2 + 1
            return raw_msg(w, h, encoding, step, _random_bytes(rng, h * step)), variant
        if variant == 'odd width yuv':
            encoding = str(rng.choice(['yuv422', 'yuv422_yuy2', 'uyvy', 'yuyv']))
            w |= 1
            return raw_msg(w, h, encoding, w * 2, _random_bytes(rng, h * w * 2)), variant
        extra = int(rng.integers(1, 4097))
        return raw_msg(width, height, 'bgr8', width * 3,
                       frame_bytes + _random_bytes(rng, extra)), variant
    if kind == 'empty':
        encoding = str(rng.choice(['bgr8', 'rgb8', 'mono8', 'mono16', 'yuv422']))
        return raw_msg(width, height, encoding, width * 3, b''), f'no data ({encoding})'
    if kind == 'truncated':
        cut = int(rng.integers(1, len(frame_bytes)))
        return raw_msg(width, height, 'bgr8', width * 3, frame_bytes[:cut]), 'cut bgr8 frame'
    if kind == 'zero_dimension':
        which = int(rng.integers(0, 3))
        zero_w, zero_h = [(0, h), (w, 0), (0, 0)][which]
        data = b'' if rng.integers(0, 2) else _random_bytes(rng, 64)
        encoding = str(rng.choice(['bgr8', 'mono8', 'bayer_rggb8']))
        return raw_msg(zero_w, zero_h, encoding, zero_w * 3, data), \
            ['width 0', 'height 0', 'both 0'][which]
    if kind == 'oversize':
        variant = str(rng.choice(['huge header, little data', 'real 700x500 mono8',
                                  'real 1280x720 bgr8']))
        if variant == 'huge header, little data':
            big_w, big_h = int(rng.integers(1 << 12, 1 << 31)), int(rng.integers(1 << 8, 1 << 16))
            return raw_msg(big_w, big_h, 'bgr8', big_w * 3 % (1 << 32),
                           _random_bytes(rng, 1024)), variant
        if variant == 'real 700x500 mono8':
            return raw_msg(700, 500, 'mono8', 700, _random_bytes(rng, 700 * 500)), variant
        return raw_msg(1280, 720, 'bgr8', 1280 * 3, bytes(1280 * 720 * 3)), variant
    raise ValueError(f'no raw generator for kind {kind!r}')


def png_with_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR declares another size (the CRC is left stale)."""
    return png[:16] + width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + png[24:]


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose start-of-frame segment declares another size."""
    for marker in (b'\xff\xc0', b'\xff\xc2', b'\xff\xc1'):
        index = jpeg.find(marker)
        if index >= 0:
            return (jpeg[:index + 5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
                    + jpeg[index + 9:])
    raise ValueError('no SOF segment in this JPEG')


def malformed_compressed(rng: np.random.Generator, kind: str, jpeg: bytes,
                         png: bytes) -> tuple[Any, str]:
    """A ``sensor_msgs/CompressedImage`` the node must count as ``kind``; (message, variant).

    ``jpeg`` and ``png`` are valid encodings of a small frame (the raw material); sizes are
    judged against the node's ``max_image_pixels`` = :data:`MAX_PIXELS`.
    """
    from diffpose_ros.ros.image_conversion import (
        COMPRESSED_MAX_BYTES_PER_PIXEL,
        COMPRESSED_SLACK_BYTES,
    )

    if kind == 'unknown_encoding':
        fmt = str(rng.choice(['16UC1; compressedDepth png', '32FC1; compressedDepth',
                              'compressedDepth']))
        return compressed_msg(fmt, png if rng.integers(0, 2) else _random_bytes(rng, 256)), fmt
    if kind == 'corrupt_compressed':
        variant = str(rng.choice(['unknown codec', 'random bytes', 'truncated jpeg',
                                  'truncated png', 'png with garbage']))
        if variant == 'unknown codec':
            fmt = str(rng.choice(['h264', 'tiff', 'webp', 'theora', 'bgr8; avif compressed']))
            return compressed_msg(fmt, jpeg), f'codec {fmt!r}'
        if variant == 'random bytes':
            data = _random_bytes(rng, int(rng.integers(1, 20_000)))
            if data[:2] == b'\xff\xd8' or data[:4] == b'\x89PNG':
                data = b'\x00' + data
            return compressed_msg(str(rng.choice(['jpeg', 'png', ''])), data), variant
        if variant == 'truncated jpeg':  # the end-of-image marker is gone
            return compressed_msg('jpeg', jpeg[:int(rng.integers(2, len(jpeg) - 2))]), variant
        if variant == 'truncated png':
            return compressed_msg('png', png[:int(rng.integers(8, len(png) - 16))]), variant
        idat = png.index(b'IDAT') + 8
        garbage = _random_bytes(rng, 64)
        return compressed_msg('png', png[:idat] + garbage + png[idat + 64:]), variant
    if kind == 'empty':
        return compressed_msg(str(rng.choice(['jpeg', 'png', ''])), b''), 'no data'
    if kind == 'oversize':
        variant = int(rng.integers(0, 3))
        if variant == 2:  # more bytes than any PNG/JPEG within max_pixels can have (< 4 MB SHM)
            limit = MAX_PIXELS * COMPRESSED_MAX_BYTES_PER_PIXEL + COMPRESSED_SLACK_BYTES
            return compressed_msg('jpeg', jpeg + bytes(limit + 1 - len(jpeg))), \
                'more bytes than max pixels allow'
        width, height = int(rng.integers(1000, 30_000)), int(rng.integers(1000, 30_000))
        if variant == 1:
            return compressed_msg('png', png_with_size(png, width, height)), \
                'png header declares > max pixels'
        width, height = min(width, 65_535), min(height, 65_535)
        return compressed_msg('jpeg', jpeg_with_size(jpeg, width, height)), \
            'jpeg header declares > max pixels'
    raise ValueError(f'no compressed generator for kind {kind!r}')


def fuzz_plan(rng: np.random.Generator, count: int, kinds: tuple[str, ...]) -> list[str]:
    """``count`` kinds, every kind (nearly) equally often, in random order."""
    plan = [kinds[i % len(kinds)] for i in range(count)]
    rng.shuffle(plan)
    return plan


# ---------------------------------------------------------------------------- ROS link
def int_values(values: dict[str, str], keys: tuple[str, ...]) -> dict[str, int]:
    return {key: int(values.get(key, 0)) for key in keys}


COUNTER_KEYS = ('frames_received', 'frames_published', 'frames_dropped', 'bad_input_total',
                'time_jumps_back', *(f'bad_input.{kind}' for kind in (
                    'unknown_encoding', 'inconsistent_size', 'empty', 'truncated',
                    'zero_dimension', 'corrupt_compressed', 'oversize')))


class Link:
    """This process's side: image publishers, the node's poses and diagnostics, lifecycle calls.

    Poses are recorded by stamp with their receive time and frame_id; diagnostics as
    (receive time, camera values, engine values).
    """

    def __init__(self, client: Any, node_name: str = NODE_NAME, camera: str = CAMERA,
                 image_topic: str = IMAGE_TOPIC):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        from diffpose_ros.msg import PersonPoseArray

        self.client, self.node_name, self.camera = client, node_name, camera
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.raw_pub = client.node.create_publisher(Image, image_topic, reliable)
        self.compressed_pub = client.node.create_publisher(
            CompressedImage, f'{image_topic}/compressed', reliable)
        self.outputs: dict[int, tuple[int, str, int]] = {}  # stamp -> (receive ns, frame, n)
        self.history: list[tuple[int, int]] = []  # (stamp, receive ns): stamps repeat in loops
        self.diagnostics: list[tuple[float, dict[str, str], dict[str, str]]] = []
        self._cond = threading.Condition()
        self.poses_sub = client.node.create_subscription(
            PersonPoseArray, f'/{node_name}/{camera}/poses', self._on_poses,
            QoSProfile(depth=50))
        client.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                        50)

    def _on_poses(self, msg: Any) -> None:
        now = time.time_ns()
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        with self._cond:
            self.outputs[stamp] = (now, msg.header.frame_id, len(msg.persons))
            self.history.append((stamp, now))
            self._cond.notify_all()

    def _on_diagnostics(self, msg: Any) -> None:
        from ros_harness import diagnostics_values

        camera = diagnostics_values(msg, f'{self.node_name}: camera {self.camera}')
        engine = diagnostics_values(msg, f'{self.node_name}: pose engine')
        if camera:
            with self._cond:
                self.diagnostics.append((time.monotonic(), camera, engine))
                del self.diagnostics[:-2000]
                self._cond.notify_all()

    def wait(self, predicate: Any, timeout_s: float, node: Any = None) -> Any:
        """``predicate()`` (under the lock) once truthy, or its last value after the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                value = predicate()
                remaining = deadline - time.monotonic()
                if value or remaining <= 0:
                    return value
                if node is not None and not node.alive():
                    raise RuntimeError(f'the node died:\n{node.log()}')
                self._cond.wait(min(remaining, 0.2))

    def diag_after(self, t_monotonic: float, timeout_s: float = 5.0) -> tuple[dict, dict]:
        """The first (camera, engine) diagnostics received after ``t_monotonic``."""
        found = self.wait(lambda: [d for d in self.diagnostics if d[0] > t_monotonic],
                          timeout_s)
        if not found:
            raise RuntimeError(f'no diagnostics of camera {self.camera} within {timeout_s} s')
        return found[0][1], found[0][2]

    def counters(self, timeout_s: float = 5.0) -> dict[str, int]:
        camera, engine = self.diag_after(time.monotonic(), timeout_s)
        values = int_values(camera, COUNTER_KEYS)
        values['processing_errors'] = int(engine.get('processing_errors', 0))
        values['tracks_live'] = int(camera.get('tracks_live', 0))
        return values

    def wait_counters(self, predicate: Any, timeout_s: float) -> dict[str, int]:
        """Diagnostics counters once ``predicate(counters)`` holds, else the last ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            values = self.counters()
            if predicate(values) or time.monotonic() > deadline:
                return values

    def serve(self, msg: Any, stamp_ns: int, timeout_s: float, node: Any = None
              ) -> tuple[int, str, int] | None:
        """Publish one good frame and wait for its poses: (receive ns, frame_id, persons)."""
        pub = self.compressed_pub if hasattr(msg, 'format') else self.raw_pub
        pub.publish(msg)
        return self.wait(lambda: self.outputs.get(stamp_ns), timeout_s, node)

    def wait_subscribed(self, compressed: bool, node: Any, timeout_s: float = 300.0) -> None:
        pub = self.compressed_pub if compressed else self.raw_pub
        self.client.wait_for(lambda: pub.get_subscription_count() > 0, timeout_s,
                             'the node to subscribe to its image topic', node)
        self.client.wait_for(lambda: self.poses_sub.get_publisher_count() > 0, 30,
                             'the poses topic to match', node)
        time.sleep(0.3)


def change_state(client: Any, transition: str, node_name: str = NODE_NAME,
                 timeout_s: float = 300.0) -> bool:
    """A lifecycle transition by label ('configure', 'activate', ...); True on success."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request()
    request.transition.id = getattr(Transition, f'TRANSITION_{transition.upper()}')
    return bool(client.call(ChangeState, f'/{node_name}/change_state', request,
                            timeout_s).success)


def get_state(client: Any, node_name: str = NODE_NAME) -> str:
    from lifecycle_msgs.srv import GetState

    return client.call(GetState, f'/{node_name}/get_state', GetState.Request(),
                       resend_after_s=15.0).current_state.label


def set_parameter(client: Any, name: str, value: str, node_name: str = NODE_NAME) -> Any:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    value_msg = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)])
    return client.call(SetParameters, f'/{node_name}/set_parameters', request).results[0]


def set_transport(client: Any, transport: str, node_name: str = NODE_NAME) -> None:
    """Reconfigure the node to ``transport`` (raw/compressed) and leave it active."""
    state = get_state(client, node_name)
    if state == 'active':
        assert change_state(client, 'deactivate', node_name)
        state = 'inactive'
    if state == 'inactive':
        assert change_state(client, 'cleanup', node_name)
    result = set_parameter(client, 'transport', transport, node_name)
    if not result.successful:
        raise RuntimeError(f'cannot set transport {transport}: {result.reason}')
    if not change_state(client, 'configure', node_name):
        raise RuntimeError('configure failed after changing the transport')
    if not change_state(client, 'activate', node_name):
        raise RuntimeError('activate failed after changing the transport')


# ---------------------------------------------------------------------------- fuzz
def run_fuzz(link: Link, node: Any, frames: list[np.ndarray], rng: np.random.Generator,
             count: int, compressed: bool, good_every: int = 8, pace_s: float = 0.02,
             pace_s_per_mb: float = 0.02, serve_timeout_s: float = 60.0) -> dict[str, Any]:
    """``count`` malformed messages of every kind of the transport, good frames in between.

    Bad frames are paced (``pace_s`` plus ``pace_s_per_mb`` per MB of payload: a 4 MB message
    arrives later than a small one, so a fixed gap let the next message replace it in the
    node's latest-frame slot) so the worker, idle between them, looks at every one;
    good frames go in lock-step (next message once its poses arrived), so the node's counters
    must match what was sent exactly and a drop shows up as a count mismatch.
    """
    import cv2

    kinds = COMPRESSED_KINDS if compressed else RAW_KINDS
    small = cv2.resize(frames[0], (160, 120))
    jpeg = cv2.imencode('.jpg', small, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    png = cv2.imencode('.png', small)[1].tobytes()
    before = link.counters()
    sent: collections.Counter[str] = collections.Counter()
    variants: collections.Counter[str] = collections.Counter()
    good = {'sent': 0, 'served': 0, 'with_persons': 0}
    unserved: list[int] = []
    started = time.perf_counter()

    def send_good(index: int) -> None:
        stamp = time.time_ns()
        msg = good_msg(frames[index % len(frames)], stamp, compressed)
        good['sent'] += 1
        output = link.serve(msg, stamp, serve_timeout_s, node)
        if output is None:
            unserved.append(stamp)
            return
        good['served'] += 1
        good['with_persons'] += output[2] > 0

    for i, kind in enumerate(fuzz_plan(rng, count, kinds)):
        if i % good_every == 0:
            send_good(i // good_every)
        if compressed:
            msg, variant = malformed_compressed(rng, kind, jpeg, png)
            link.compressed_pub.publish(msg)
        else:
            msg, variant = malformed_raw(rng, kind, frames[i % len(frames)])
            link.raw_pub.publish(msg)
        sent[kind] += 1
        variants[f'{kind}: {variant}'] += 1
        time.sleep(pace_s + pace_s_per_mb * len(msg.data) / 1e6)
    send_good(count)
    expected_total = before['bad_input_total'] + count
    after = link.wait_counters(lambda v: v['bad_input_total'] >= expected_total, 15.0)
    counted = {kind: after[f'bad_input.{kind}'] - before[f'bad_input.{kind}']
               for kind in ('unknown_encoding', 'inconsistent_size', 'empty', 'truncated',
                            'zero_dimension', 'corrupt_compressed', 'oversize')}
    delta = {key: after[key] - before[key] for key in (
        'frames_received', 'frames_published', 'frames_dropped', 'processing_errors')}
    return {
        'transport': 'compressed' if compressed else 'raw',
        'malformed_sent': dict(sent),
        'malformed_counted': counted,
        'malformed_total': count,
        'variants': dict(sorted(variants.items())),
        'good_frames': good,
        'unserved_good_stamps': unserved,
        'received': delta['frames_received'],
        'published': delta['frames_published'],
        'dropped': delta['frames_dropped'],
        'processing_errors': delta['processing_errors'],
        'duration_s': time.perf_counter() - started,
    }


def check(what: str, value: Any, target: str, met: bool) -> dict[str, Any]:
    """One criterion as the benchmark suite renders it (docs/benchmarks.md)."""
    return {'what': what, 'value': value, 'target': target, 'met': bool(met)}


def fuzz_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    sent, counted = result['malformed_sent'], result['malformed_counted']
    wrong = {k: f'{counted[k]} of {sent.get(k, 0)}' for k in counted
             if counted[k] != sent.get(k, 0)}
    good = result['good_frames']
    name = result['transport']
    return [
        check(f'{name}: bad frames counted per kind = sent', wrong or 'all equal', 'all equal',
              not wrong),
        check(f'{name}: good frames served', f'{good["served"]} / {good["sent"]}', 'all',
              good['served'] == good['sent']),
        check(f'{name}: frames dropped', result['dropped'], '0', result['dropped'] == 0),
        check(f'{name}: frames received by the node',
              f'{result["received"]} / {result["malformed_total"] + good["sent"]}', 'all',
              result['received'] == result['malformed_total'] + good['sent']),
    ]


def crash_check(crashes: int) -> dict[str, Any]:
    return check('crashes (process died, exit code != 0, processing errors)', crashes, '0',
                 crashes == 0)


# ---------------------------------------------------------------------------- publisher process
def publisher_command(topic: str, frames_npy: Path, rate_hz: float, frame_id: str,
                      stamp_offset_s: float = 0.0) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), 'publish', '--topic', topic,
            '--frames', str(frames_npy), '--rate', str(rate_hz), '--frame-id', frame_id,
            '--stamp-offset-s', str(stamp_offset_s)]


def publish_main(args: argparse.Namespace) -> int:
    """A camera driver stand-in: publish frames at a fixed rate until killed (or --count)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    frames = np.load(args.frames) if args.frames else np.stack(load_frames(count=30))
    messages = [good_msg(frame, 0, False, args.frame_id) for frame in frames]
    rclpy.init()
    node = rclpy.create_node(f'stress_publisher_{os.getpid()}')
    pub = node.create_publisher(Image, args.topic, QoSProfile(
        depth=5, reliability=ReliabilityPolicy.RELIABLE))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.match_timeout_s
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    print(f'matched {pub.get_subscription_count()}', flush=True)
    offset_ns = int(args.stamp_offset_s * 1e9)
    start, sent = time.perf_counter(), 0
    try:
        while not stop.is_set() and (args.count <= 0 or sent < args.count):
            delay = start + sent / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            msg = messages[sent % len(messages)]
            set_stamp(msg, time.time_ns() + offset_ns, args.frame_id)
            pub.publish(msg)
            sent += 1
    except KeyboardInterrupt:
        pass
    print(f'sent {sent}', flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ---------------------------------------------------------------------------- instrumented node
def node_sample(node: Any) -> dict[str, Any]:
    """What the node holds right now: tracks, buffered frames, per-camera dicts, threads."""
    sample: dict[str, Any] = {'t': time.monotonic(), 'rss_mb': rss_mb(),
                              'threads': threading.active_count(),
                              'fds': len(os.listdir('/proc/self/fd'))}
    with node._pipeline_lock:  # the worker holds it while processing: a consistent view
        pipeline = node._pipeline
        states = list(pipeline.cameras.values()) if pipeline is not None else []
        sample['tracks_live'] = sum(s.tracker.num_tracks for s in states)
        sample['buffered_tracks'] = sum(len(s.buffers) for s in states)
        sample['buffered_frames'] = sum(s.buffers.num_records for s in states)
        sample['pending_keys'] = sum(len(s.pending) for s in states)
        # everything kept per track id: tracker tracks, warm-start estimates, keypoint filters
        sample['track_state_entries'] = sum(
            s.tracker.num_tracks + len(s.estimates) + len(s.filters) for s in states)
    cameras = list(node._cameras.values())
    sample['node_headers'] = sum(len(c.headers) for c in cameras)
    sample['node_images'] = sum(len(c.images) for c in cameras)
    sample['node_stamps'] = sum(len(c.monotonic_ns) for c in cameras)
    return sample


def node_main(args: argparse.Namespace, ros_args: list[str]) -> int:
    """diffpose_node (the same class and main loop) plus a sampler thread writing JSON lines."""
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from diffpose_ros.ros.node import DiffPoseNode

    rclpy.init(args=['stress_node', *ros_args])
    node = DiffPoseNode()
    stop = threading.Event()

    def sample_forever() -> None:
        with open(args.instrument, 'a') as out:
            while not stop.wait(args.sample_s):
                try:
                    out.write(json.dumps(node_sample(node)) + '\n')
                    out.flush()
                except Exception as exc:  # noqa: BLE001  (never take the node down)
                    out.write(json.dumps({'t': time.monotonic(), 'error': repr(exc)}) + '\n')

    sampler = threading.Thread(target=sample_forever, name='stress-sampler', daemon=True)
    sampler.start()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def start_node(run_dir: Path, name: str, overrides: dict[str, Any],
               instrument: Path | None = None) -> Any:
    """The node in a subprocess: ``python -m diffpose_ros.ros.node``, or with ``instrument``
    this script's ``node`` subcommand (the same node class, plus the sampler)."""
    from ros_harness import NodeProcess, write_params

    params = write_params(run_dir / f'{name}.yaml', {**NODE_PARAMS, **overrides})
    if instrument is None:
        return NodeProcess(params, run_dir / f'{name}.log')

    class InstrumentedNode(NodeProcess):
        def __init__(self) -> None:  # NodeProcess's log handling, another command line
            self.log_path = run_dir / f'{name}.log'
            self._log = open(self.log_path, 'w')
            env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT))
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), 'node', '--instrument',
                 str(instrument), '--ros-args', '--params-file', str(params)],
                stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    return InstrumentedNode()


def stop_node(node: Any) -> dict[str, Any]:
    alive = node.alive()
    code = node.stop()
    return {'alive_at_end': alive, 'exit_code': code}


def crash_count(node_end: dict[str, Any], processing_errors: int, extra: int = 0) -> int:
    return (not node_end['alive_at_end']) + (node_end['exit_code'] != 0) + \
        (processing_errors > 0) + extra


def latency_stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {'n': 0}
    a = np.asarray(values, float)
    return {'n': int(a.size), 'p50': float(np.percentile(a, 50)),
            'p95': float(np.percentile(a, 95)), 'max': float(a.max())}


def slope_per_min(times_s: list[float], values: list[float]) -> float | None:
    if len(times_s) < 3 or max(times_s) - min(times_s) <= 0:
        return None
    return float(np.polyfit(np.asarray(times_s) / 60.0, np.asarray(values, float), 1)[0])


def window_stats(records: list[tuple[float, float]], window_s: float) -> list[dict[str, float]]:
    """(time s, latency ms) -> p50/p95 per window of ``window_s`` from the first record."""
    if not records:
        return []
    t0 = records[0][0]
    windows = []
    for start in np.arange(0.0, records[-1][0] - t0 + 1e-9, window_s):
        inside = [v for t, v in records if start <= t - t0 < start + window_s]
        if inside:
            windows.append({'start_s': float(start), 'n': len(inside),
                            'p50': float(np.percentile(inside, 50)),
                            'p95': float(np.percentile(inside, 95))})
    return windows


def halves(records: list[tuple[float, float]]) -> dict[str, Any]:
    """"Not growing": p95 of the second half (by time) <= 1.25x the p95 of the first half.

    Halves hold many samples each, so the rule is stable on a noisy 2-core machine where a
    regression over a handful of window p95s is not; the per-window trend is reported too.
    """
    if len(records) < 10:
        return {'holds': False, 'ratio': None}
    middle = (records[0][0] + records[-1][0]) / 2
    first = [v for t, v in records if t < middle]
    second = [v for t, v in records if t >= middle]
    if not first or not second:
        return {'holds': False, 'ratio': None}
    p95_first, p95_second = float(np.percentile(first, 95)), float(np.percentile(second, 95))
    ratio = p95_second / p95_first
    return {'holds': ratio <= 1.25, 'ratio': ratio, 'p95_first_half': p95_first,
            'p95_second_half': p95_second}


def p95_trend(windows: list[dict[str, float]]) -> float | None:
    return slope_per_min([w['start_s'] for w in windows], [w['p95'] for w in windows])


class Session:
    """One scenario's node process, ROS client and link; always stops the node."""

    def __init__(self, run_dir: Path, name: str, overrides: dict[str, Any],
                 instrument: Path | None = None, wait_compressed: bool | None = False,
                 image_topic: str = IMAGE_TOPIC):
        from ros_harness import RosClient

        self.node = start_node(run_dir, name, overrides, instrument)
        self.client = RosClient(f'stress_{name}')
        self.link = Link(self.client, image_topic=image_topic)
        if wait_compressed is not None:
            self.link.wait_subscribed(wait_compressed, self.node)

    def stop_node(self) -> dict[str, Any]:
        """SIGINT the node now (e.g. while frames still stream); once."""
        if not hasattr(self, 'end'):
            self.end = stop_node(self.node)
        return self.end

    def close(self) -> dict[str, Any]:
        try:
            self.client.close()
        finally:
            end = self.stop_node()
        return end


def open_loop(link: Link, node: Any, messages: list[Any], rate_hz: float, duration_s: float,
              label: str) -> list[dict[str, Any]]:
    """Publish at ``rate_hz`` for ``duration_s`` (wall-clock stamps); per frame: stamp and E2E
    latency (poses receive time - stamp) or None when the frame was dropped."""
    count = max(int(round(rate_hz * duration_s)), 1)
    sent = []
    start = time.perf_counter()
    next_print = start + 30.0
    for k in range(count):
        delay = start + k / rate_hz - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        msg = messages[k % len(messages)]
        stamp = time.time_ns()
        set_stamp(msg, stamp)
        link.raw_pub.publish(msg)
        sent.append(stamp)
        if time.perf_counter() >= next_print:
            next_print += 30.0
            if not node.alive():
                raise RuntimeError(f'the node died:\n{node.log()}')
            print(f'  {label}: {time.perf_counter() - start:.0f} s, sent {k + 1}, served '
                  f'{sum(s in link.outputs for s in sent)}', flush=True)
    link.wait(lambda: sent[-1] in link.outputs, 30.0)  # the last frame stays in the slot
    time.sleep(0.5)
    records = []
    with link._cond:
        for stamp in sent:
            output = link.outputs.get(stamp)
            records.append({'stamp_ns': stamp,
                            'e2e_ms': (output[0] - stamp) / 1e6 if output else None,
                            'persons': output[2] if output else None})
    return records


def served_latencies(records: list[dict[str, Any]], skip: int = 3) -> list[float]:
    served = [r['e2e_ms'] for r in records if r['e2e_ms'] is not None]
    return served[skip:]


# ---------------------------------------------------------------------------- scenarios
def make_good_weights(folder: Path) -> Path:
    """A valid head (seeded random weights, stored as trained) + its config JSON."""
    import torch

    from diffpose_ros.config import ModelConfig
    from diffpose_ros.model.diffpose import DiffPoseNet
    from diffpose_ros.model.weights import save_weights

    torch.manual_seed(0)
    return save_weights(DiffPoseNet(ModelConfig()), folder / 'good_head.safetensors')


def install_weights(good: Path, target: Path, case: str, rng: np.random.Generator) -> Path:
    """Put the ``case`` variant of ``good`` at ``target``; returns the file the error must name."""
    from diffpose_ros.model.files import config_path_for

    target.parent.mkdir(parents=True, exist_ok=True)
    data, config = good.read_bytes(), config_path_for(good).read_text()
    config_target = config_path_for(target)
    target.write_bytes(data)
    config_target.write_text(config)
    if case == 'garbage bytes':
        target.write_bytes(_random_bytes(rng, 4096))
    elif case == 'truncated':
        target.write_bytes(data[:len(data) // 2])
    elif case == 'empty file':
        target.write_bytes(b'')
    elif case == 'missing file':
        target.unlink()
    elif case == 'missing config json':
        config_target.unlink()
        return config_target
    elif case == 'config of another model':
        values = json.loads(config)
        values['strl_dim'] = int(values.get('strl_dim', 256)) * 2
        config_target.write_text(json.dumps(values))
    elif case != 'good':
        raise ValueError(case)
    return target


def scenario_weights(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Corrupt, missing and mismatching head weights at configure, then good ones."""
    rng = np.random.default_rng(args.seed)
    good = make_good_weights(run_dir / 'weights_good')
    target = run_dir / 'weights' / 'head.safetensors'
    install_weights(good, target, 'good', rng)
    session = Session(run_dir, 'weights', {'autostart': False, 'weights_path': str(target),
                                           'backend': 'torch'}, wait_compressed=None)
    client, node = session.client, session.node
    attempts = []
    end: dict[str, Any] = {}
    try:
        for backend in ('torch', 'onnxruntime'):
            result = set_parameter(client, 'backend', backend)
            if not result.successful:
                raise RuntimeError(f'cannot set backend {backend}: {result.reason}')
            # the ONNX cache may hold an export of the good weights: with it, a missing or
            # foreign config JSON is not read at all, so those cases run on torch only
            cases = ['garbage bytes', 'truncated', 'empty file', 'missing file']
            if backend == 'torch':
                cases += ['missing config json', 'config of another model']
            for case in [*cases, 'good']:
                named = install_weights(good, target, case, rng)
                log_start = node.log_path.stat().st_size
                started = time.perf_counter()
                ok = change_state(client, 'configure')
                seconds = time.perf_counter() - started
                state = get_state(client)
                time.sleep(0.3)  # the log line is written before the service answers; flush
                with open(node.log_path, errors='replace') as log:
                    log.seek(log_start)
                    text = log.read()
                error_lines = [line for line in text.splitlines() if 'configure failed' in line]
                attempt = {'backend': backend, 'case': case, 'configure_ok': ok,
                           'state_after': state, 'seconds': round(seconds, 2),
                           'alive': node.alive(), 'message': error_lines[-1][-400:]
                           if error_lines else ''}
                if case == 'good':
                    attempt['passed'] = ok and state == 'inactive' and node.alive()
                    if ok:
                        change_state(client, 'cleanup')
                else:
                    attempt['names_file'] = str(named) in attempt['message']
                    attempt['passed'] = (not ok and state == 'unconfigured' and node.alive()
                                         and attempt['names_file'])
                attempts.append(attempt)
                print(f'  {backend:12s} {case:24s} configure {"ok" if ok else "FAILED"} '
                      f'({seconds:.1f} s) -> {state}: {attempt["message"][-150:]}', flush=True)
    finally:
        end = session.close()
    bad = [a for a in attempts if a['case'] != 'good']
    good_runs = [a for a in attempts if a['case'] == 'good']
    crashes = crash_count(end, 0, extra=sum(not a['alive'] for a in attempts))
    clean = sum(a['passed'] for a in bad)
    named = sum(a['names_file'] for a in bad)
    good_ok = sum(a['passed'] for a in good_runs)
    checks = [
        check('bad file: configure returns FAILURE, node stays up and unconfigured',
              f'{clean} / {len(bad)}', 'all', bad and clean == len(bad)),
        check('the logged error names the file', f'{named} / {len(bad)}', 'all',
              bad and named == len(bad)),
        check('then good weights configure (torch, onnxruntime)', f'{good_ok} / {len(good_runs)}',
              'all', good_runs and good_ok == len(good_runs)),
        crash_check(crashes),
    ]
    cases = sorted({a['case'] for a in bad})
    return {
        'summary': f'{len(bad)} configures with bad head weights ({", ".join(cases)}; torch and '
                   f'onnxruntime): {clean} failed cleanly naming the file in {named}; good '
                   f'weights configured {good_ok} / {len(good_runs)}; {crashes} crashes',
        'metrics': {
            'bad_configures': len(bad), 'failed_cleanly': clean, 'good_configures': good_ok,
            'slowest_failure_s': max((a['seconds'] for a in bad), default=None),
            'good_configure_s': max((a['seconds'] for a in good_runs), default=None),
        },
        'checks': checks, 'crashes': crashes,
        'details': {'attempts': attempts, 'node': end},
    }


def scenario_fuzz(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    frames = load_frames()
    n_raw = int(round(args.fuzz_count * 0.7))
    session = Session(run_dir, 'fuzz', {})
    phases = {}
    try:
        print(f'  raw phase: {n_raw} malformed messages', flush=True)
        phases['raw'] = run_fuzz(session.link, session.node, frames, rng, n_raw, False)
        set_transport(session.client, 'compressed')
        session.link.wait_subscribed(True, session.node)
        print(f'  compressed phase: {args.fuzz_count - n_raw} malformed messages', flush=True)
        phases['compressed'] = run_fuzz(session.link, session.node, frames, rng,
                                        args.fuzz_count - n_raw, True)
    finally:
        end = session.close()
    checks = [c for phase in phases.values() for c in fuzz_checks(phase)]
    all_kinds = set(RAW_KINDS) | set(COMPRESSED_KINDS)
    kinds_seen = {k for p in phases.values() for k, n in p['malformed_counted'].items() if n}
    checks.append(check('bad-input kinds covered', f'{len(kinds_seen)} / {len(all_kinds)}',
                        'all 7', kinds_seen == all_kinds))
    sent = sum(p['malformed_total'] for p in phases.values())
    if not args.quick:
        checks.append(check('malformed messages sent', sent, '>= 1,000', sent >= 1000))
    errors = sum(p['processing_errors'] for p in phases.values())
    crashes = crash_count(end, errors)
    checks.append(crash_check(crashes))
    good = sum(p['good_frames']['sent'] for p in phases.values())
    served = sum(p['good_frames']['served'] for p in phases.values())
    exact = all(c['met'] for c in checks if 'counted per kind' in c['what'])
    per_kind = collections.Counter()
    for phase in phases.values():
        per_kind.update(phase['malformed_sent'])
    return {
        'summary': f'{sent} malformed image messages of {len(kinds_seen)} kinds (raw, then '
                   f'compressed), counted per kind {"exactly" if exact else "WRONGLY"}; good '
                   f'frames served {served} / {good}; {crashes} crashes',
        'metrics': {'malformed_sent': sent, **{f'sent.{k}': n for k, n in sorted(
                        per_kind.items())},
                    'good_frames_sent': good, 'good_frames_served': served,
                    'processing_errors': errors},
        'checks': checks, 'crashes': crashes,
        'details': {'phases': phases, 'node': end},
    }


def scenario_publisher(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    frames_npy = run_dir / 'publisher_frames.npy'
    np.save(frames_npy, np.stack(load_frames(count=30)))
    session = Session(run_dir, 'publisher', {})
    link, node = session.link, session.node
    publishers = []
    try:
        before = link.counters()
        offset_s = 0.0
        for k in range(args.restarts + 1):
            if k and k % 2 == 0:
                offset_s -= 100.0  # a driver restarted with another time base
            frame_id = f'pub{k}'
            started = time.perf_counter()
            proc = subprocess.Popen(publisher_command(IMAGE_TOPIC, frames_npy, 10.0, frame_id,
                                                      offset_s),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, cwd=ROOT)

            def served(frame_id: str = frame_id) -> int:
                return sum(1 for _, f, _ in link.outputs.values() if f == frame_id)

            link.wait(lambda: served() >= args.served_per_publisher, 120.0, node)
            first_s = time.perf_counter() - started
            count = served()
            last = k == args.restarts
            proc.send_signal(signal.SIGTERM if last else signal.SIGKILL)
            output = proc.communicate(timeout=30)[0]
            publishers.append({'frame_id': frame_id, 'stamp_offset_s': offset_s,
                               'served_before_stop': count,
                               'seconds_to_serve_n': round(first_s, 2),
                               'stopped_by': 'SIGTERM' if last else 'SIGKILL',
                               'exit_code': proc.returncode,
                               'output_tail': output.strip().splitlines()[-2:]})
            print(f'  {frame_id}: {count} frames served in {first_s:.1f} s, then '
                  f'{publishers[-1]["stopped_by"]}', flush=True)
        after = link.counters()
    finally:
        end = session.close()
        clean_shm()
    jumps = sum(1 for k in range(1, args.restarts + 1) if k % 2 == 0)
    detected = after['time_jumps_back'] - before['time_jumps_back']
    errors = after['processing_errors'] - before['processing_errors']
    crashes = crash_count(end, errors)
    n = args.served_per_publisher
    served_ok = sum(p['served_before_stop'] >= n for p in publishers)
    to_serve = [p['seconds_to_serve_n'] for p in publishers]
    checks = [
        check(f'every publisher (after each kill) served >= {n} frames',
              f'{served_ok} / {len(publishers)}', 'all', served_ok == len(publishers)),
        check('stamps 100 s back (new driver time base) detected as time jumps', detected,
              f'>= {jumps}', detected >= jumps),
        crash_check(crashes),
    ]
    return {
        'summary': f'image publisher SIGKILLed {args.restarts} times mid-stream and restarted: '
                   f'{served_ok} / {len(publishers)} publishers served; {crashes} crashes',
        'metrics': {'kills': args.restarts, 'publishers': len(publishers),
                    'time_jumps_back': detected, 'processing_errors': errors,
                    'seconds_to_serve_n_max': max(to_serve, default=None),
                    'seconds_to_serve_n_p50': float(np.median(to_serve)) if to_serve else None},
        'checks': checks, 'crashes': crashes,
        'details': {'publishers': publishers, 'node': end},
    }


class Streamer:
    """Publishes good raw frames at a fixed rate from a thread (wall-clock stamps)."""

    def __init__(self, link: Link, messages: list[Any], rate_hz: float):
        self.link, self.messages, self.rate_hz = link, messages, rate_hz
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        k = 0
        while not self._stop.is_set():
            delay = start + k / self.rate_hz - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            msg = self.messages[k % len(self.messages)]
            stamp = time.time_ns()
            set_stamp(msg, stamp)
            self.link.raw_pub.publish(msg)
            self.sent.append(stamp)
            k += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def lifecycle_cycles(link: Link, node: Any, client: Any, rng: np.random.Generator,
                     cycles: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Deactivate/activate ``cycles`` times while a stream runs; per cycle what happened."""
    results = []
    for cycle in range(cycles):
        cycle_ns = time.time_ns()
        if not link.wait(lambda: sum(s > cycle_ns for s in link.outputs) >= 2, timeout_s, node):
            results.append({'cycle': cycle, 'deactivated': False, 'activated': False,
                            'served_while_inactive': 0, 'resumed': False, 'resume_s': None,
                            'note': 'not serving before the cycle'})
            break
        time.sleep(float(rng.uniform(0.0, 0.4)))  # somewhere in the worker's next frame
        deactivated = change_state(client, 'deactivate')
        inactive_from = time.time_ns()
        time.sleep(float(rng.uniform(0.2, 1.0)))
        inactive_to = time.time_ns()
        activated = change_state(client, 'activate')
        active_ns = time.time_ns()
        resumed = link.wait(lambda: [v for s, v in link.outputs.items() if s > inactive_to],
                            timeout_s, node)
        with link._cond:
            served_inactive = sum(inactive_from < s < inactive_to for s in link.outputs)
        results.append({
            'cycle': cycle, 'deactivated': deactivated, 'activated': activated,
            'served_while_inactive': served_inactive,
            'resumed': bool(resumed),
            'resume_s': round((min(v[0] for v in resumed) - active_ns) / 1e9, 3)
            if resumed else None,
        })
        if not resumed:
            break  # the node stopped serving: later cycles would only wait out timeouts
    return results


def scenario_lifecycle(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    session = Session(run_dir, 'lifecycle', {})
    messages = [good_msg(frame, 0, False) for frame in load_frames(count=30)]
    try:
        before = session.link.counters()
        streamer = Streamer(session.link, messages, 30.0)
        try:
            cycles = lifecycle_cycles(session.link, session.node, session.client, rng,
                                      args.cycles)
            after = session.link.counters()
            state = get_state(session.client)
            session.stop_node()  # Ctrl-C while the stream still runs: must exit 0
        finally:
            streamer.stop()
    finally:
        end = session.close()
    errors = after['processing_errors'] - before['processing_errors']
    crashes = crash_count(end, errors)
    ok = sum(c['deactivated'] and c['activated'] for c in cycles)
    leaked = sum(c['served_while_inactive'] for c in cycles)
    resumed = sum(c['resumed'] for c in cycles)
    resume = latency_stats([c['resume_s'] for c in cycles if c['resume_s'] is not None])
    checks = [
        check('deactivate and activate succeed', f'{ok} / {len(cycles)}', 'all',
              ok == len(cycles)),
        check('frames served while inactive', leaked, '0', leaked == 0),
        check('serving resumes after activate', f'{resumed} / {len(cycles)}', 'all',
              resumed == len(cycles)),
        check('state at the end', state, 'active', state == 'active'),
        check('exit code of SIGINT while the stream runs', end['exit_code'], '0',
              end['exit_code'] == 0),
        crash_check(crashes),
    ]
    return {
        'summary': f'{len(cycles)} deactivate/activate cycles under a 30 Hz stream: '
                   f'{ok} clean, served again {resumed} times (p95 '
                   f'{resume.get("p95", float("nan")):.2f} s after activate); {crashes} crashes',
        'metrics': {'cycles': len(cycles), 'frames_sent': len(streamer.sent),
                    'frames_published': after['frames_published'] - before['frames_published'],
                    'resume_s_p50': resume.get('p50'), 'resume_s_p95': resume.get('p95'),
                    'resume_s_max': resume.get('max'), 'processing_errors': errors},
        'checks': checks, 'crashes': crashes,
        'details': {'cycles': cycles, 'stream_hz': 30.0, 'node': end},
    }


def scenario_overload(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    session = Session(run_dir, 'overload', {})
    link, node = session.link, session.node
    messages = [good_msg(frame, 0, False) for frame in load_frames()]
    try:
        before = link.counters()
        service = []
        for k in range(args.calib_frames):
            stamp = time.time_ns()
            msg = set_stamp(messages[k % len(messages)], stamp)
            output = link.serve(msg, stamp, 60.0, node)
            if output is not None and k >= 3:
                service.append((output[0] - stamp) / 1e6)
        service_ms = float(np.mean(service))
        rate = 0.9 * 1000.0 / service_ms
        print(f'  lock-step service {service_ms:.0f} ms -> sustainable {rate:.2f} Hz, '
              f'overload {2 * rate:.2f} Hz', flush=True)
        time.sleep(1.0)
        one = open_loop(link, node, messages, rate, args.rate_s, '1x')
        time.sleep(1.0)
        two = open_loop(link, node, messages, 2 * rate, args.overload_s, '2x')
        after = link.counters()
    finally:
        end = session.close()
    lat1, lat2 = served_latencies(one), served_latencies(two)
    t0 = two[0]['stamp_ns']
    timeline = [((r['stamp_ns'] - t0) / 1e9, r['e2e_ms']) for r in two[3:]
                if r['e2e_ms'] is not None]
    windows = window_stats(timeline, args.window_s)
    growth, trend = halves(timeline), p95_trend(windows)
    s1, s2 = latency_stats(lat1), latency_stats(lat2)
    errors = after['processing_errors'] - before['processing_errors']
    crashes = crash_count(end, errors)
    ratio = s2['p95'] / s1['p95'] if s1['n'] and s2['n'] else None
    checks = [
        check('p95 at 2x / p95 at 1x', round(ratio, 3) if ratio else None, '<= 2',
              ratio is not None and ratio <= 2),
        check('p95 at 2x not growing: second half / first half',
              round(growth['ratio'], 3) if growth['ratio'] else None, '<= 1.25',
              growth['holds']),
        crash_check(crashes),
    ]
    served1 = sum(r['e2e_ms'] is not None for r in one)
    served2 = sum(r['e2e_ms'] is not None for r in two)
    return {
        'summary': f'sustainable {rate:.2f} Hz (lock-step service {service_ms:.0f} ms): p95 '
                   f'{s1.get("p95", float("nan")):.0f} ms at 1x, '
                   f'{s2.get("p95", float("nan")):.0f} ms at 2x ({2 * rate:.2f} Hz, x'
                   f'{ratio if ratio else float("nan"):.2f}); {crashes} crashes',
        'metrics': {
            'service_ms': service_ms, 'sustainable_hz': rate, 'overload_hz': 2 * rate,
            'p50_ms_1x': s1.get('p50'), 'p95_ms_1x': s1.get('p95'),
            'p50_ms_2x': s2.get('p50'), 'p95_ms_2x': s2.get('p95'),
            'p95_halves_ratio_2x': growth['ratio'],
            'p95_window_trend_ms_per_min_2x': trend, 'served_1x': f'{served1} / {len(one)}',
            'served_2x': f'{served2} / {len(two)}',
            'dropped': after['frames_dropped'] - before['frames_dropped'],
            'processing_errors': errors,
        },
        'checks': checks, 'crashes': crashes,
        'details': {'windows_2x': windows, 'latency_1x': s1, 'latency_2x': s2,
                    'duration_1x_s': args.rate_s, 'duration_2x_s': args.overload_s,
                    'node': end},
    }


def bounded(samples: list[dict[str, Any]], key: str, tolerance: float) -> dict[str, Any]:
    """Max of ``key`` in the last third vs before it (after warm-up): no growth allowed."""
    values = [s[key] for s in samples if key in s]
    if len(values) < 3:
        return {'max': max(values) if values else None, 'bounded': False}
    cut = 2 * len(values) // 3
    earlier, last = max(values[:cut]), max(values[cut:])
    return {'max': max(values), 'max_before_last_third': earlier, 'max_last_third': last,
            'mean': float(np.mean(values)), 'tolerance': tolerance,
            'slope_per_min': slope_per_min([s['t'] - samples[0]['t'] for s in samples
                                            if key in s], values),
            'bounded': last <= earlier + tolerance}


def sample_bag() -> tuple[Path, str]:
    """The sample bag (``diffpose-bag make`` from vtest.avi, made if missing) and its image
    topic."""
    from diffpose_ros.bags import io
    from diffpose_ros.bags.make import sample_bag_path

    path = sample_bag_path()
    if not (path / 'metadata.yaml').exists():
        print(f'  making the sample bag {path}', flush=True)
        subprocess.run([sys.executable, '-m', 'diffpose_ros.cli.bag', 'make', '-q'], cwd=ROOT,
                       check=True)
    topics = io.bag_info(path).get('topics', {})
    names = topics if isinstance(topics, dict) else [t.get('name') for t in topics]
    images = [t for t in names if t.endswith('/image_raw/compressed') or t.endswith('/image_raw')]
    if not images:
        raise RuntimeError(f'no image topic in {path}: {names}')
    return path, sorted(images)[0]


class ImageTimes:
    """Receive times of the images on a topic, by stamp (the bag player's output)."""

    def __init__(self, client: Any, topic: str):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        self.times: dict[int, list[int]] = collections.defaultdict(list)
        self.count = self.jumps_back = 0
        self._last = None
        msg_type = CompressedImage if topic.endswith('/compressed') else Image
        client.node.create_subscription(msg_type, topic, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg: Any) -> None:
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        self.times[stamp].append(time.time_ns())
        self.count += 1
        self.jumps_back += self._last is not None and stamp < self._last
        self._last = stamp

    def received(self, stamp: int, before_ns: int) -> int | None:
        """When the image with ``stamp`` that led to an output at ``before_ns`` arrived."""
        earlier = [t for t in self.times.get(stamp, ()) if t <= before_ns]
        return earlier[-1] if earlier else None


def scenario_soak(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Frames looped at 30 Hz for ``--soak-min``: direct frames (wall-clock stamps, the scene
    cuts at each loop: tracks must expire) or the sample bag played with ``--loop`` at 3x its
    10 fps (stamps jump back at each loop: the node resets tracking every loop)."""
    samples_path = run_dir / 'soak_node_samples.jsonl'
    overrides = {'detector_imgsz': 1280, 'diagnostics_period_s': 1.0}
    messages: list[Any] = []
    bag_source = args.soak_source == 'bag'
    if bag_source:
        bag, topic = sample_bag()
        compressed = topic.endswith('/compressed')
        image_topic = topic[:-len('/compressed')] if compressed else topic
        width, height = 768, 576  # vtest.avi
        overrides.update(image_topics=[image_topic], transport='compressed' if compressed
                         else 'raw', max_image_pixels=width * height)
        source = f'sample bag {bag.relative_to(ROOT) if bag.is_relative_to(ROOT) else bag} ' \
                 f'({topic}) played with --loop --rate 3'
    else:
        frames = load_frames(first=0, count=args.soak_frames, crop_xywh=None)
        height, width = frames[0].shape[:2]
        messages = [good_msg(frame, 0, False) for frame in frames]
        del frames
        image_topic, compressed = IMAGE_TOPIC, False
        overrides['max_image_pixels'] = width * height
        source = f'vtest.avi frames 0-{len(messages) - 1} published directly, wall-clock stamps'
    session = Session(run_dir, 'soak', overrides, instrument=samples_path,
                      wait_compressed=compressed, image_topic=image_topic)
    link, node = session.link, session.node
    images = ImageTimes(session.client, topic) if bag_source else None
    player = None
    pid = node.proc.pid
    duration_s = args.soak_min * 60.0
    rss: list[tuple[float, float]] = []
    diag: list[dict[str, Any]] = []
    try:
        before = link.counters()
        if bag_source:
            player = subprocess.Popen(
                [sys.executable, '-m', 'diffpose_ros.cli.bag', 'play', str(bag), '--rate',
                 '3', '--loop', '--topics', topic], cwd=ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
        start = time.perf_counter()
        next_sample, next_print, k = start, start + 30.0, 0
        while True:
            now = time.perf_counter()
            if now - start >= duration_s:
                break
            if now >= next_sample:
                next_sample += 1.0  # many samples: RSS swings by tens of MB per frame
                rss.append((now - start, rss_mb(pid)))
                camera, engine = link.diagnostics[-1][1:] if link.diagnostics else ({}, {})
                diag.append({'t': now - start, 'tracks_live': int(camera.get('tracks_live', 0)),
                             'latency_p95_ms': camera.get('latency_p95_ms'),
                             'frames_dropped': int(camera.get('frames_dropped', 0)),
                             'processing_errors': int(engine.get('processing_errors', 0))})
            if now >= next_print:
                next_print += 30.0
                if not node.alive():
                    raise RuntimeError(f'the node died:\n{node.log()}')
                if player is not None and player.poll() is not None:
                    raise RuntimeError(f'the bag player exited: {player.communicate()[0]}')
                print(f'  soak {now - start:5.0f} s: images '
                      f'{images.count if images else k}, served {len(link.history)}, RSS '
                      f'{rss[-1][1]:.0f} MB, tracks {diag[-1]["tracks_live"]}', flush=True)
            if player is not None:
                time.sleep(min(0.1, max(next_sample - time.perf_counter(), 0.0)))
                continue
            delay = start + k / 30.0 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            msg = messages[k % len(messages)]
            set_stamp(msg, time.time_ns())
            link.raw_pub.publish(msg)
            k += 1
        if player is not None:
            player.send_signal(signal.SIGINT)
            player_output = player.communicate(timeout=30)[0]
            if player.returncode != 0:
                raise RuntimeError(f'the bag player failed ({player.returncode}): '
                                   f'{player_output[-2000:]}')
        time.sleep(2.0)  # the last frames in the node
        after = link.counters()
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        end = session.close()
    with link._cond:
        history = list(link.history)
    # E2E: poses received - image sent (direct frames: the stamp is the send time; bag: when
    # this process received the player's image, which stamps repeat every loop)
    sent_count = images.count if images else k
    latency = []
    for stamp, received_ns in history:
        sent_ns = images.received(stamp, received_ns) if images else stamp
        if sent_ns is not None:
            latency.append((sent_ns, (received_ns - sent_ns) / 1e6))
    latency.sort()
    latency = [((t - latency[0][0]) / 1e9, v) for t, v in latency]
    warm = args.soak_warmup_s
    rss_after = [(t, v) for t, v in rss if t >= warm]
    rss_slope = slope_per_min([t for t, _ in rss_after], [v for _, v in rss_after])
    minute_max = []  # per-minute peaks: a leak lifts them, the per-frame swing does not
    for t in np.arange(warm, duration_s - 59.0, 60.0):
        inside = [v for u, v in rss_after if t <= u < t + 60.0]
        if inside:
            minute_max.append((float(t), max(inside)))
    rss_max_slope = slope_per_min([t for t, _ in minute_max], [v for _, v in minute_max])
    samples = []
    if samples_path.exists():
        samples = [json.loads(line) for line in samples_path.read_text().splitlines() if line]
    sample_errors = [s['error'] for s in samples if 'error' in s]
    samples = [s for s in samples if 'error' not in s]
    series = soak_series(samples, latency)
    if samples:
        t0 = samples[0]['t']
        samples = [s for s in samples if s['t'] - t0 >= warm]
    timeline = [(t, v) for t, v in latency if t >= warm]
    windows = window_stats(timeline, 60.0 if duration_s >= 300 else 15.0)
    growth, trend = halves(timeline), p95_trend(windows)
    drift = slope_per_min([w['start_s'] for w in windows], [w['p50'] for w in windows])
    tracks = bounded(samples, 'tracks_live', 2)
    buffered = bounded(samples, 'buffered_frames', 7)
    track_state = bounded(samples, 'track_state_entries', 6)
    errors = after['processing_errors'] - before['processing_errors']
    crashes = crash_count(end, errors)
    # RSS swings by tens of MB from frame to frame (1.5-min smoke runs gave -9 to +10 MB/min,
    # a 5-min run +0.5): the slope is judged only on a long enough run
    judged_s = duration_s - warm
    rss_check = [check('RSS slope after warm-up [MB/min]',
                       round(rss_slope, 3) if rss_slope is not None else None,
                       f'<= {RSS_SLOPE_LIMIT_MB_PER_MIN:g}',
                       rss_slope is not None and rss_slope <= RSS_SLOPE_LIMIT_MB_PER_MIN)
                 ] if judged_s >= MIN_RSS_JUDGED_S else []
    checks = [
        *rss_check,
        check('live tracks bounded (max in the last third vs before)',
              f'{tracks.get("max_last_third")} vs {tracks.get("max_before_last_third")}',
              'no growth (+2)', tracks['bounded']),
        check('buffered frames bounded (max in the last third vs before)',
              f'{buffered.get("max_last_third")} vs {buffered.get("max_before_last_third")}',
              'no growth (+7)', buffered['bounded']),
        check('per-track state bounded: tracks + estimates + keypoint filters (max in the last '
              'third vs before)',
              f'{track_state.get("max_last_third")} vs {track_state.get("max_before_last_third")}',
              'no growth (+6)', track_state['bounded']),
        check('E2E p95 not growing after warm-up: second half / first half',
              round(growth['ratio'], 3) if growth['ratio'] else None, '<= 1.25',
              growth['holds']),
        check('node sampler', 'ok' if not sample_errors and samples else
              (sample_errors[:1] or ['no samples'])[0], 'ok', not sample_errors and samples),
        crash_check(crashes),
    ]
    jumps = after['time_jumps_back'] - before['time_jumps_back']
    if images is not None:  # every loop of the bag steps back in time: a reset each
        checks.append(check('bag loops seen by the node as time jumps (resets)',
                            f'{jumps} of {images.jumps_back}', 'all',
                            jumps == images.jumps_back and jumps > 0))
    if not args.quick:
        checks.append(check('duration [min]', round(duration_s / 60, 1), '>= 10',
                            duration_s >= 600))
    lat = latency_stats([v for t, v in latency if t >= warm])
    plot = soak_plot_path(args)
    plot_soak(series, windows, warm, rss_slope, plot)
    return {
        'summary': f'{duration_s / 60:.1f} min at 30 Hz of '
                   f'{"the sample bag" if bag_source else "vtest.avi frames"} ({sent_count} '
                   f'frames, {width}x{height}, detector 1280): RSS slope '
                   f'{rss_slope if rss_slope is not None else float("nan"):+.2f} MB/min after '
                   f'warm-up{"" if rss_check else " (not judged: run too short)"}, live '
                   f'tracks max {tracks.get("max")}, buffered frames max '
                   f'{buffered.get("max")}, E2E p50 drift '
                   f'{drift if drift is not None else float("nan"):+.1f} ms/min; '
                   f'{crashes} crashes',
        'metrics': {
            'duration_min': duration_s / 60, 'rate_hz': 30.0, 'warmup_s': warm,
            'frames_sent': sent_count, 'time_jumps_back': jumps,
            'frames_published': after['frames_published'] - before['frames_published'],
            'frames_dropped': after['frames_dropped'] - before['frames_dropped'],
            'rss_mb_first': rss[0][1] if rss else None,
            'rss_mb_after_warmup': rss_after[0][1] if rss_after else None,
            'rss_mb_last': rss[-1][1] if rss else None,
            'rss_slope_mb_per_min': rss_slope,
            'rss_slope_of_minute_max_mb_per_min': rss_max_slope,
            'tracks_live_max': tracks.get('max'), 'tracks_live_mean': tracks.get('mean'),
            'buffered_frames_max': buffered.get('max'),
            'track_state_entries_max': track_state.get('max'),
            'buffered_frames_mean': buffered.get('mean'),
            'e2e_p50_ms': lat.get('p50'), 'e2e_p95_ms': lat.get('p95'),
            'e2e_p50_drift_ms_per_min': drift, 'e2e_p95_trend_ms_per_min': trend,
            'e2e_p95_halves_ratio': growth['ratio'],
            'threads_max': max((s['threads'] for s in samples), default=None),
            'open_fds_max': max((s['fds'] for s in samples), default=None),
            'processing_errors': errors,
        },
        'checks': checks, 'crashes': crashes,
        'images': [str(plot.relative_to(ROOT)) if plot.is_relative_to(ROOT) else str(plot)],
        'details': {
            'source': source, 'series': series,
            'rss_samples': rss, 'tracks_live': tracks, 'buffered_frames': buffered,
            'track_state_entries': track_state,
            'buffered_tracks': bounded(samples, 'buffered_tracks', 2),
            'node_header_cache': bounded(samples, 'node_headers', 0),
            'open_fds': bounded(samples, 'fds', 4), 'latency_windows': windows,
            'diagnostics_samples': diag, 'sampler_errors': sample_errors[:5], 'node': end,
        },
    }


def soak_series(samples: list[dict[str, Any]], latency: list[tuple[float, float]]
                ) -> dict[str, list[float]]:
    """The soak's time series for the plot (node sampler once a second, E2E per served frame);
    times in seconds from the first sample."""
    t0 = samples[0]['t'] if samples else 0.0
    return {
        't_s': [round(s['t'] - t0, 2) for s in samples],
        'rss_mb': [round(s['rss_mb'], 1) for s in samples],
        'tracks_live': [s['tracks_live'] for s in samples],
        'buffered_frames': [s['buffered_frames'] for s in samples],
        'latency_t_s': [round(t, 2) for t, _ in latency],
        'latency_ms': [round(v, 1) for _, v in latency],
    }


def soak_plot_path(args: argparse.Namespace) -> Path:
    """docs/img for the issue-length run (the suite renders it); beside the JSON for smoke runs."""
    if args.quick:
        return Path(args.json).resolve().parent / 'stress_soak.png'
    return ROOT / 'docs' / 'img' / 'stress_soak.png'


def plot_soak(series: dict[str, list[float]], windows: list[dict[str, float]], warm_s: float,
              rss_slope_mb_per_min: float | None, path: Path) -> Path:
    """RSS, live tracks / buffered frames and E2E latency over the soak, warm-up shaded."""
    from common import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    minutes = [t / 60 for t in series['t_s']]
    axes[0].plot(minutes, series['rss_mb'], lw=0.8, label='node RSS (1 s samples)')
    after = [(m, v) for m, v in zip(minutes, series['rss_mb']) if m * 60 >= warm_s]
    if after and rss_slope_mb_per_min is not None:
        fit = np.polyfit([m for m, _ in after], [v for _, v in after], 1)
        xs = np.array([after[0][0], after[-1][0]])
        axes[0].plot(xs, np.polyval(fit, xs), 'k--', lw=1.2,
                     label=f'fit after warm-up: {rss_slope_mb_per_min:+.2f} MB/min')
    axes[0].set_ylabel('RSS [MB]')
    axes[1].step(minutes, series['tracks_live'], where='post', lw=0.8, label='live tracks')
    axes[1].step(minutes, series['buffered_frames'], where='post', lw=0.8,
                 label='buffered frames (all tracks)')
    axes[1].set_ylabel('count')
    axes[2].plot([t / 60 for t in series['latency_t_s']], series['latency_ms'], '.', ms=1.5,
                 alpha=0.4,
                 label='E2E per served frame (lower band: frames the detector skips)')
    if windows:
        mids = [(w['start_s'] + warm_s) / 60 for w in windows]
        axes[2].plot(mids, [w['p50'] for w in windows], 'o-', label='p50 per minute')
        axes[2].plot(mids, [w['p95'] for w in windows], 's-', label='p95 per minute')
    axes[2].set_ylabel('E2E latency [ms]')
    axes[2].set_xlabel('minutes since the node started sampling')
    for ax in axes:
        ax.axvspan(0, warm_s / 60, color='0.9', zorder=0)
        ax.legend(loc='upper right', fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_title('Soak: sample bag looped at 30 Hz (grey: warm-up, not judged)')
    return save_figure(fig, path)


SCENARIOS = {  # id -> (function, name in stress.json, what it does)
    'weights': (scenario_weights, 'corrupt and missing model files at configure',
                'configure with garbage, truncated, empty, missing, config-less and mismatching '
                'head weights (torch, onnxruntime), then good ones'),
    'fuzz': (scenario_fuzz, 'fuzz: malformed images',
             'malformed image messages of every bad-input kind, good frames in between'),
    'publisher': (scenario_publisher, 'image publisher killed and restarted',
                  'the image publisher process SIGKILLed mid-stream and restarted'),
    'lifecycle': (scenario_lifecycle, 'deactivate/activate under load',
                  'deactivate/activate cycles while a 30 Hz stream runs'),
    'overload': (scenario_overload, 'overload at 2x the sustainable rate',
                 'open-loop input at 1x and at 2x the sustainable rate'),
    'soak': (scenario_soak, 'soak at 30 Hz',
             'the sample bag (or vtest.avi frames) looped at 30 Hz: RSS, live tracks, '
             'buffered frames, latency drift'),
}


# ---------------------------------------------------------------------------- main
def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scenarios', default=','.join(SCENARIOS),
                        help=f'comma-separated subset of {",".join(SCENARIOS)}')
    parser.add_argument('--json', default=str(STRESS_JSON),
                        help='results file; runs of other scenarios in it are kept')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run (short, JSON into a temp dir unless --json is given)')
    parser.add_argument('--seed', type=int, default=5)
    parser.add_argument('--fuzz-count', type=int, default=1050)
    parser.add_argument('--restarts', type=int, default=6)
    parser.add_argument('--served-per-publisher', type=int, default=5)
    parser.add_argument('--cycles', type=int, default=20)
    parser.add_argument('--calib-frames', type=int, default=40)
    parser.add_argument('--rate-s', type=float, default=30.0)
    parser.add_argument('--overload-s', type=float, default=60.0)
    parser.add_argument('--window-s', type=float, default=10.0)
    parser.add_argument('--soak-min', type=float, default=10.0)
    parser.add_argument('--soak-warmup-s', type=float, default=120.0)
    parser.add_argument('--soak-frames', type=int, default=300,
                        help='with --soak-source frames: vtest.avi frames 0..N-1 (10 s at 30 Hz)')
    parser.add_argument('--soak-source', choices=('bag', 'frames'), default='bag',
                        help='bag (default, as the issue asks): the sample bag played by '
                        'diffpose-bag play --loop --rate 3, a tracking reset at every loop; '
                        'frames: vtest.avi frames published here with wall-clock stamps, so '
                        'tracks must expire by themselves (recorded as a separate entry)')
    run_dir = Path(tempfile.mkdtemp(prefix='stress-'))
    if '--quick' in argv:  # shorter defaults; options given explicitly still win
        parser.set_defaults(fuzz_count=120, restarts=2, cycles=3, calib_frames=12, rate_s=10.0,
                            overload_s=20.0, window_s=5.0, soak_min=1.5, soak_warmup_s=20.0,
                            soak_frames=100, json=str(run_dir / 'stress.json'))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(',') if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f'unknown scenarios {unknown}; choose from {list(SCENARIOS)}')
    env = ros_environment(run_dir)
    print(f'ROS environment {env}, run dir {run_dir}', flush=True)
    path = Path(args.json)
    passed = {}
    speed = cpu_speed_reference()                # once per run: compare with runs of other days
    for name in names:
        function, title, what = SCENARIOS[name]
        if name == 'soak':
            title += ' (sample bag)' if args.soak_source == 'bag' else ' (vtest frames)'
        print(f'== {name}: {what}', flush=True)
        started = time.perf_counter()
        steal = CpuStealMeter()
        try:
            entry = function(run_dir, args)
        except Exception as exc:  # noqa: BLE001  (record it, go on with the next scenario)
            import traceback

            traceback.print_exc()
            entry = {'summary': f'the run failed: {exc!r}'[:300], 'crashes': None,
                     'checks': [check('the run completes', repr(exc)[:200], 'yes', False)],
                     'metrics': {}}
        entry['pass'] = bool(entry['checks']) and all(c['met'] for c in entry['checks'])
        steal_percent = steal.percent()
        if steal_percent is not None:          # latencies of a VM that lost CPU to other guests
            entry.setdefault('metrics', {})['cpu_steal_percent'] = round(steal_percent, 1)
            if warning := steal_warning(steal_percent):
                print(f'== {name}: {warning}', flush=True)
        entry.setdefault('metrics', {})['cpu_matmul_gflops_before'] = round(
            speed['matmul_gflops'], 1)
        entry.update({
            'scenario': name, 'what': what, 'date': time.strftime('%Y-%m-%d %H:%M'),
            'duration_s': round(time.perf_counter() - started, 1), 'quick': args.quick,
            'command': 'python benchmarks/stress.py --scenarios ' + name
                       + (' --soak-source frames' if name == 'soak' and args.soak_source
                          == 'frames' else '') + (' --quick' if args.quick else ''),
            'run_dir': str(run_dir), 'machine': machine_info(),
        })
        record_stress_result(title, entry, path)
        passed[name] = entry['pass']
        missed = [c['what'] for c in entry['checks'] if not c['met']]
        print(f'== {name}: {"pass" if entry["pass"] else "FAIL"} in {entry["duration_s"]} s: '
              f'{entry["summary"]}' + (f'; missed: {missed}' if missed else ''), flush=True)
    print(f'wrote {path}: ' + ', '.join(f'{n} {"pass" if ok else "FAIL"}'
                                        for n, ok in passed.items()), flush=True)
    return 0 if all(passed.values()) else 1


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ['publish']:
        parser = argparse.ArgumentParser(prog='stress.py publish')
        parser.add_argument('--topic', default=IMAGE_TOPIC)
        parser.add_argument('--frames', default='', help='.npy of (N, H, W, 3) BGR frames')
        parser.add_argument('--rate', type=float, default=10.0)
        parser.add_argument('--frame-id', default=FRAME_ID)
        parser.add_argument('--stamp-offset-s', type=float, default=0.0)
        parser.add_argument('--count', type=int, default=0, help='0 = until stopped')
        parser.add_argument('--match-timeout-s', type=float, default=60.0)
        return publish_main(parser.parse_args(argv[1:]))
    if argv[:1] == ['node']:
        split = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
        parser = argparse.ArgumentParser(prog='stress.py node')
        parser.add_argument('--instrument', required=True, help='JSON-lines samples file')
        parser.add_argument('--sample-s', type=float, default=1.0)
        return node_main(parser.parse_args(argv[1:split]), argv[split:])
    return run_main(argv)


if __name__ == '__main__':
    sys.exit(main())
