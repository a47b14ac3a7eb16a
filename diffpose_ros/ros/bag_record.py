"""Record topics to a rosbag2 bag (MCAP by default) with rclpy: serialized bytes, no decoding.

``ros2 bag record`` for machines without rosbag2. Each requested topic is subscribed as soon as
a publisher for it appears (the graph is polled, so the recorder may start before the node),
with ``raw=True``: the callback receives the CDR bytes, written unchanged. The message type is
the one discovered on the graph; its definition, embedded in the bag, is read from the
installed ``.msg`` files (ours from the package), so any reader can decode it.

Log time of each message = its receive time: wall clock (``time.time_ns()``), or the node's
ROS clock with ``use_sim_time`` (then, like ``ros2 bag record --use-sim-time``, nothing is
written before the first ``/clock`` message). QoS follows the publishers: reliable when all
of them are reliable, else best effort; transient local when all are; keep last 100.

Recording stops on SIGINT/SIGTERM or after ``duration_s``; the bag is always closed (index
and ``metadata.yaml`` written) before returning.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

from diffpose_ros.bags import io
from diffpose_ros.ros.bag_play import _StopFlag, message_class

DEFAULT_TOPICS = ('/diffpose/camera/poses', '/diffpose/camera/markers', '/diagnostics')
QUEUE_DEPTH = 100


@dataclasses.dataclass
class RecordResult:
    out: str
    counts: dict[str, int]
    types: dict[str, str]
    never_seen: list[str]
    skipped_before_clock: int
    wall_s: float
    stopped_by: str


def _normalise(topic: str) -> str:
    return '/' + topic.strip().lstrip('/')


def record(out: str, topics: Sequence[str] = DEFAULT_TOPICS, *, duration_s: float | None = None,
           storage: str = io.DEFAULT_STORAGE, use_sim_time: bool = False,
           node_name: str = 'diffpose_bag_recorder', poll_s: float = 0.1,
           stop_event: threading.Event | None = None, install_signal_handlers: bool = True,
           log: Any = print) -> RecordResult:
    """Record ``topics`` into a new bag at ``out`` (see the module docstring).

    Raises:
        BagError: ``out`` exists or cannot be written.
        ValueError: no topics, or a non-positive duration.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    wanted = list(dict.fromkeys(_normalise(t) for t in topics))
    if not wanted:
        raise ValueError('no topics to record')
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f'duration must be > 0 s, got {duration_s}')
    stop = _StopFlag(stop_event)
    if install_signal_handlers:
        stop.install()

    writer = io.BagWriter(out, storage, typestore=io.installed_typestore([]),
                          custom_data={'diffpose_ros.recorder': 'diffpose-bag record',
                                       'diffpose_ros.log_time': 'ros_clock' if use_sim_time
                                       else 'wall_clock_receive_time'})
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    types: dict[str, str] = {}
    skipped = 0
    started = time.monotonic()
    stopped_by = 'end'
    try:
        overrides = [Parameter('use_sim_time', value=True)] if use_sim_time else []
        node = rclpy.create_node(node_name, context=context, parameter_overrides=overrides)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        clock = node.get_clock()

        def make_callback(topic: str) -> Any:
            def callback(data: bytes) -> None:
                nonlocal skipped
                if use_sim_time:
                    stamp = clock.now().nanoseconds
                    if stamp == 0:          # no /clock yet
                        skipped += 1
                        return
                else:
                    stamp = time.time_ns()
                writer.write_raw(topic, stamp, data)
            return callback

        def discover() -> None:
            graph = dict(node.get_topic_names_and_types())
            for topic in wanted:
                if topic in types or topic not in graph:
                    continue
                infos = node.get_publishers_info_by_topic(topic)
                if not infos:
                    continue                    # only subscribers so far
                msgtype = graph[topic][0]
                if len(graph[topic]) > 1:
                    log(f'{topic} has several types {graph[topic]}; recording {msgtype}')
                try:
                    cls = message_class(msgtype)
                    writer.typestore = io.installed_typestore([*types.values(), msgtype])
                    writer.add_topic(topic, msgtype)
                except io.BagError as exc:
                    log(f'cannot record {topic}: {exc}')
                    types[topic] = msgtype       # do not retry every poll
                    continue
                reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                               for i in infos)
                latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                              for i in infos)
                qos = QoSProfile(
                    depth=QUEUE_DEPTH,
                    reliability=(ReliabilityPolicy.RELIABLE if reliable
                                 else ReliabilityPolicy.BEST_EFFORT),
                    durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                else DurabilityPolicy.VOLATILE))
                node.create_subscription(cls, topic, make_callback(topic), qos, raw=True)
                types[topic] = msgtype
                log(f'recording {topic} ({msgtype}, '
                    f'{"reliable" if reliable else "best effort"})')

        log(f'recording to {out}: {", ".join(wanted)}'
            + (f' for {duration_s} s' if duration_s else ' until Ctrl-C'))
        next_poll = time.monotonic()
        while not stop.event.is_set():
            now = time.monotonic()
            if duration_s is not None and now - started >= duration_s:
                stopped_by = 'duration'
                break
            if now >= next_poll and len(types) < len(wanted):
                discover()
                next_poll = now + poll_s
            executor.spin_once(timeout_sec=0.02)
        if stop.event.is_set():
            stopped_by = stop.signal_name or 'stop request'
    finally:
        wall_s = time.monotonic() - started
        try:
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)
        finally:
            writer.close()
    counts = {topic: writer.counts.get(topic, 0) for topic in wanted}
    return RecordResult(out=str(out), counts=counts,
                        types={t: types[t] for t in wanted if t in writer.connections},
                        never_seen=[t for t in wanted if t not in types],
                        skipped_before_clock=skipped,
                        wall_s=wall_s, stopped_by=stopped_by)
