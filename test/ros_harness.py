"""Cross-process ROS test harness: start diffpose_node in its own process, talk to it from here.

The node runs as a real subprocess (``python -m diffpose_ros.ros.node``) on an isolated ROS
domain (see conftest.py: unique ROS_DOMAIN_ID, localhost-only discovery, the shared-memory
Fast DDS profile); this process publishes images, CameraInfo and /clock and subscribes to the
node's outputs with its own rclpy context and a background executor thread.
"""
from __future__ import annotations

import collections
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def shutdown_context(rclpy: Any, context: Any) -> None:
    """Shut an in-process rclpy context down with its nodes' handles already freed.

    A node handle left to the garbage collector is finalised whenever the collector next runs,
    e.g. in the next test, while that test's participant is discovering: Fast DDS 3.2 can then
    spin for ever in ``DomainParticipant::set_listener`` (participant destruction) while a
    discovery callback waits on the participant's mutex (seen once in CI on 2026-12-06).
    Collecting here, before and after the shutdown, destroys them while no other participant
    of this process is alive."""
    gc.collect()
    rclpy.try_shutdown(context=context)
    gc.collect()


def write_params(path: Path, overrides: dict[str, Any], node_name: str = 'diffpose') -> Path:
    """A params file: the CPU profile's values with ``overrides`` applied."""
    base = yaml.safe_load((ROOT / 'config' / 'diffpose_cpu.yaml').read_text())
    values = dict(next(iter(base.values()))['ros__parameters'])
    values.update(overrides)
    path.write_text(yaml.safe_dump({node_name: {'ros__parameters': values}}))
    return path


class NodeProcess:
    """diffpose_node in a subprocess; its log goes to a file shown on failure."""

    def __init__(self, params_file: Path, log_path: Path, extra_args: tuple[str, ...] = ()):
        self.log_path = log_path
        self._log = open(log_path, 'w')
        env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'diffpose_ros.ros.node', '--ros-args',
             '--params-file', str(params_file), *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log(self) -> str:
        if not self._log.closed:  # stop() closes it; the file stays readable
            self._log.flush()
        return self.log_path.read_text()[-6000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(2)          # SIGINT: rclpy shuts down cleanly
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class RosClient:
    """This process's rclpy side: publishers, subscribers, service calls, waiting."""

    def __init__(self, name: str = 'diffpose_tester'):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, collections.deque] = {}
        self._lock = threading.Lock()
        self._clients: dict[tuple[Any, str], Any] = {}
        self._spin = threading.Thread(target=self._spin_forever, daemon=True)
        self._spin.start()

    def _spin_forever(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001  (context shut down under us)
                return

    def subscribe(self, msg_type: Any, topic: str, qos: Any = 10) -> collections.deque:
        queue: collections.deque = collections.deque(maxlen=10_000)
        self.received[topic] = queue

        def callback(msg: Any) -> None:
            with self._lock:
                queue.append((time.monotonic(), msg))
        self.node.create_subscription(msg_type, topic, callback, qos)
        return queue

    def wait_for(self, predicate: Callable[[], Any], timeout_s: float, what: str,
                 node: NodeProcess | None = None) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                value = predicate()
            if value:
                return value
            if node is not None and not node.alive():
                raise AssertionError(f'node died while waiting for {what}:\n{node.log()}')
            time.sleep(0.02)
        log = f'\nnode log:\n{node.log()}' if node is not None else ''
        raise AssertionError(f'timed out after {timeout_s} s waiting for {what}{log}')

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = 60.0,
             resend_after_s: float | None = None) -> Any:
        """One service call; the client is made once per service and kept.

        A client made just before its first request can lose the response: the server may not
        yet have matched the client's response reader when it answers (rmw drops it; seen once
        under CI load as a get_state that never answered). Kept clients are matched after their
        first call, and ``resend_after_s`` re-sends a request that has had no answer by then,
        for queries that are safe to repeat (get_state, get/list parameters).
        """
        with self._lock:
            client = self._clients.get((srv_type, name))
            if client is None:
                client = self._clients[srv_type, name] = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise AssertionError(f'service {name} not available')
        deadline = time.monotonic() + timeout_s
        while True:
            future = client.call_async(request)
            resend_at = (time.monotonic() + resend_after_s if resend_after_s
                         else float('inf'))
            while not future.done() and time.monotonic() < min(deadline, resend_at):
                time.sleep(0.01)
            if future.done():
                return future.result()
            if time.monotonic() >= deadline:
                raise AssertionError(f'service {name} did not answer in {timeout_s} s')
            client.remove_pending_request(future)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        shutdown_context(self.rclpy, self.context)
        self._spin.join(timeout=5)


def image_msg(image_bgr: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width = image_bgr.shape[:2]
    msg.encoding = 'bgr8'
    msg.step = image_bgr.shape[1] * 3
    msg.data = np.ascontiguousarray(image_bgr).tobytes()
    return msg


def compressed_msg(image_bgr: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    import cv2
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.format = 'jpeg'
    msg.data = cv2.imencode('.jpg', image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return msg


def camera_info_msg(width: int, height: int, stamp_ns: int, frame_id: str,
                    focal_px: float = 600.0) -> Any:
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.width, msg.height = width, height
    msg.k = [focal_px, 0.0, width / 2, 0.0, focal_px, height / 2, 0.0, 0.0, 1.0]
    msg.p = [focal_px, 0.0, width / 2, 0.0, 0.0, focal_px, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    return msg


def clock_msg(stamp_ns: int) -> Any:
    from rosgraph_msgs.msg import Clock

    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def diagnostics_values(array: Any, name_contains: str) -> dict[str, str]:
    for status in array.status:
        if name_contains in status.name:
            return {kv.key: kv.value for kv in status.values} | {'_message': status.message,
                                                                  '_level': status.level}
    return {}
