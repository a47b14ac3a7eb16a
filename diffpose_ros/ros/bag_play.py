"""Play a rosbag2 bag with rclpy: serialized bytes forwarded unchanged, paced by log time.

``ros2 bag play`` for machines without rosbag2 (this project's pip-installed ROS). Each message's
CDR bytes go to ``Publisher.publish(bytes)`` (rclpy publishes bytes as a serialized message), so
nothing is deserialised or re-serialised and a subscriber receives exactly what was recorded.
Publishers are created with the real message classes (imported from ``<pkg>.msg``), so type
names and hashes match subscribers of those types.

Timing: message ``i`` is published at ``wall_start + (t_i - t_first) / rate`` where ``t`` is the
bag's log time. With ``clock`` the player publishes ``rosgraph_msgs/Clock`` on ``/clock`` at
``clock_hz`` (playback time, advancing with ``rate``) and once more, equal to the message's log
time, just before each message, so a ``use_sim_time`` node never sees a message from its future.
With ``loop`` playback restarts at the first message and ``/clock`` jumps back (as ``ros2 bag
play --loop``).

QoS: sensor data (best effort, keep last 5) for Image and CompressedImage unless ``reliable``;
reliable, keep last 10 for every other topic; ``/clock`` reliable keep last 1 (matches the
best-effort subscription of rclcpp/rclpy time sources).
"""
from __future__ import annotations

import dataclasses
import importlib
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from diffpose_ros.bags import io

CLOCK_TOPIC = '/clock'
DEFAULT_CLOCK_HZ = 40.0
SETTLE_S = 0.3


def message_class(msgtype: str) -> Any:
    """'pkg/msg/Name' -> the rclpy message class; BagError if the package is not installed."""
    try:
        package, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise io.BagError(f'message type {msgtype} is not available in this ROS installation '
                          f'({type(exc).__name__}: {exc})') from exc


def parse_remaps(rules: Sequence[str]) -> dict[str, str]:
    """['old:=new', ...] -> {old: new}."""
    remaps = {}
    for rule in rules:
        old, sep, new = rule.partition(':=')
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"remap rules look like 'old_topic:=new_topic', got {rule!r}")
        remaps[old.strip()] = new.strip()
    return remaps


@dataclasses.dataclass
class PlayResult:
    published: dict[str, int]
    loops: int
    wall_s: float
    bag_span_s: float
    lag_p50_ms: float
    lag_max_ms: float
    clock_messages: int
    interrupted: bool


class _StopFlag:
    """Set by SIGINT/SIGTERM (when installed) or by the caller."""

    def __init__(self, event: threading.Event | None = None):
        self.event = event or threading.Event()
        self.signal_name: str | None = None

    def install(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            self.event.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def play(bag: str, *, rate: float = 1.0, loop: bool = False, start_offset_s: float = 0.0,
         clock: bool = False, clock_hz: float = DEFAULT_CLOCK_HZ,
         topics: Sequence[str] | None = None, remaps: dict[str, str] | None = None,
         reliable: bool = False, wait_for: Sequence[str] = (), wait_timeout_s: float = 30.0,
         delay_s: float = 0.0, node_name: str = 'diffpose_bag_player',
         stop_event: threading.Event | None = None, install_signal_handlers: bool = True,
         log: Any = print) -> PlayResult:
    """Publish a bag's messages (see the module docstring); returns counts and timing.

    Raises:
        BagError: unreadable bag, unknown topic, no publishable topic, no subscriber on a
            ``wait_for`` topic within ``wait_timeout_s``.
        ValueError: bad rate, offset or clock rate.
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions

    if not rate > 0:
        raise ValueError(f'rate must be > 0, got {rate}')
    if start_offset_s < 0:
        raise ValueError(f'start offset must be >= 0 s, got {start_offset_s}')
    if clock and not clock_hz > 0:
        raise ValueError(f'clock rate must be > 0 Hz, got {clock_hz}')
    remaps = dict(remaps or {})
    stop = _StopFlag(stop_event)
    if install_signal_handlers:
        stop.install()

    with io.open_bag(bag) as reader:
        connections = io.select_connections(reader, topics)
        unknown_remaps = sorted(set(remaps) - {c.topic for c in connections})
        if unknown_remaps:
            raise io.BagError(f'remapped topic(s) {", ".join(unknown_remaps)} not played from '
                              'the bag')
        usable, classes = [], {}
        for connection in connections:
            try:
                classes[connection.id] = message_class(connection.msgtype)
                usable.append(connection)
            except io.BagError as exc:
                log(f'skipping {connection.topic}: {exc}')
        if not usable:
            raise io.BagError(f'bag {bag}: no topic with a message type available here')
        if reader.message_count == 0:
            raise io.BagError(f'bag {bag} holds no messages')
        first_ns = reader.start_time + int(round(start_offset_s * 1e9))
        last_ns = reader.end_time - 1
        if first_ns > last_ns:
            raise io.BagError(f'start offset {start_offset_s} s is past the end of the bag '
                              f'({(last_ns - reader.start_time) / 1e9:.3f} s long)')

        context = rclpy.Context()
        rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        node = None
        try:
            node = rclpy.create_node(node_name, context=context)
            reliable_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            publishers: dict[str, Any] = {}
            by_connection: dict[int, Any] = {}
            for connection in usable:
                out_topic = remaps.get(connection.topic, connection.topic)
                if out_topic not in publishers:
                    sensor = connection.msgtype in io.IMAGE_TYPES and not reliable
                    publishers[out_topic] = node.create_publisher(
                        classes[connection.id], out_topic,
                        qos_profile_sensor_data if sensor else reliable_qos)
                by_connection[connection.id] = publishers[out_topic]
            clock_pub = clock_msg = None
            if clock:
                from rosgraph_msgs.msg import Clock

                clock_pub = node.create_publisher(
                    Clock, CLOCK_TOPIC, QoSProfile(depth=1,
                                                   reliability=ReliabilityPolicy.RELIABLE))
                clock_msg = Clock()
            names = {pub.topic_name: pub for pub in publishers.values()}
            if clock_pub is not None:
                names[clock_pub.topic_name] = clock_pub
            for topic in wait_for:
                pub = names.get(topic) or names.get('/' + topic.lstrip('/'))
                if pub is None:
                    raise io.BagError(f'--wait-for {topic}: not a topic being played '
                                      f'({", ".join(sorted(names))})')
                deadline = time.monotonic() + wait_timeout_s
                while pub.get_subscription_count() == 0:
                    if stop.event.is_set():
                        break
                    if time.monotonic() > deadline:
                        raise io.BagError(f'no subscriber on {topic} after {wait_timeout_s} s')
                    stop.event.wait(0.02)
            if wait_for:
                stop.event.wait(SETTLE_S)     # the subscriber side finishes matching too
            if delay_s > 0:
                stop.event.wait(delay_s)

            log(f'playing {bag}: {len(usable)} topic(s), rate {rate}, '
                f'{(last_ns - first_ns) / 1e9:.3f} s of bag time'
                + (', loop' if loop else '') + (f', /clock at {clock_hz} Hz' if clock else ''))
            published = {pub.topic_name: 0 for pub in publishers.values()}
            lags: list[float] = []
            clock_count = 0
            loops = 0
            started = time.monotonic()
            clock_period = 1.0 / clock_hz if clock else None

            def publish_clock(time_ns: int) -> None:
                nonlocal clock_count
                clock_msg.clock.sec, clock_msg.clock.nanosec = io.stamp_of(time_ns)
                clock_pub.publish(clock_msg)
                clock_count += 1

            while not stop.event.is_set():
                loops += 1
                wall0 = time.monotonic()
                last_clock_ns = -1
                next_clock = wall0
                for connection, time_ns, raw in io.iter_messages(reader, usable, first_ns):
                    due = wall0 + (time_ns - first_ns) / 1e9 / rate
                    while not stop.event.is_set():
                        now = time.monotonic()
                        if clock_period is not None and next_clock <= min(now, due):
                            playback_ns = first_ns + int((now - wall0) * rate * 1e9)
                            last_clock_ns = max(last_clock_ns, min(playback_ns, time_ns))
                            publish_clock(last_clock_ns)
                            next_clock += clock_period * max(
                                1, int((now - next_clock) / clock_period) + 1)
                            continue
                        if now >= due:
                            break
                        wake = due if clock_period is None else min(due, next_clock)
                        stop.event.wait(max(0.0, wake - now))
                    if stop.event.is_set():
                        break
                    if clock_pub is not None and time_ns > last_clock_ns:
                        last_clock_ns = time_ns
                        publish_clock(time_ns)
                    pub = by_connection[connection.id]
                    pub.publish(raw if isinstance(raw, bytes) else bytes(raw))
                    lags.append((time.monotonic() - due) * 1e3)
                    published[pub.topic_name] += 1
                if not loop:
                    break
            wall_s = time.monotonic() - started
            for pub in publishers.values():        # let reliable subscribers get the tail
                if pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE:
                    pub.wait_for_all_acked(Duration(seconds=2))
            if clock_pub is not None:
                clock_pub.wait_for_all_acked(Duration(seconds=1))
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)

    lags.sort()
    return PlayResult(
        published=published, loops=loops, wall_s=wall_s,
        bag_span_s=(last_ns - first_ns) / 1e9,
        lag_p50_ms=lags[len(lags) // 2] if lags else 0.0,
        lag_max_ms=lags[-1] if lags else 0.0,
        clock_messages=clock_count,
        interrupted=stop.event.is_set())
