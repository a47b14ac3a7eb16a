"""An independent camera client that loses frames in transport (used by test_node.py).

Plain rclpy, no project code, and started WITHOUT the project's Fast DDS profile: its 768x576
bgr8 frames (1.3 MB) exceed Fast DDS's default 512 KB shared-memory segment and go over
fragmented UDP, where best-effort frames are lost. It knows what it sent:

1. head: small frames (64x48, one UDP datagram) one at a time until the node answers one with a
   pose array, so the node has seen this publisher before the burst;
2. burst: ``--frames`` large frames at ``--rate_hz``;
3. tail: small frames one at a time until the node answers one, so the node sees the gap after
   the last large frame.

Prints one JSON line: frames sent in total and the index of the first answered frame (frames
before it were never seen by the node and cannot be counted by it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image


def image(width: int, height: int, rng: np.random.Generator) -> Image:
    msg = Image(width=width, height=height, encoding='bgr8', step=width * 3)
    msg.header.frame_id = 'lossy_camera'
    msg.data = rng.integers(0, 256, height * width * 3, np.uint8).tobytes()
    return msg


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--topic', required=True)
    parser.add_argument('--answers', required=True, help="the node's pose array topic")
    parser.add_argument('--frames', type=int, default=40)
    parser.add_argument('--rate_hz', type=float, default=5.0)
    parser.add_argument('--answer_timeout_s', type=float, default=60.0)
    parser.add_argument('--reliable', action='store_true',
                        help='reliable writer (the node reads best effort, so it is still lossy)')
    args = parser.parse_args()

    from diffpose_ros.msg import PersonPoseArray  # the node's output type (message only)

    rclpy.init()
    node = rclpy.create_node('lossy_camera')
    publisher = node.create_publisher(
        Image, args.topic, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE
                                      if args.reliable else ReliabilityPolicy.BEST_EFFORT))
    answered: set[int] = set()

    def on_answer(msg: PersonPoseArray) -> None:
        answered.add(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
    node.create_subscription(PersonPoseArray, args.answers, on_answer, 10)

    def spin_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=min(0.02, max(0.0, deadline - time.monotonic())))

    rng = np.random.default_rng(0)
    small, large = image(64, 48, rng), image(768, 576, rng)
    sent = 0
    first_answered: int | None = None

    def publish(msg: Image) -> int:
        nonlocal sent
        stamp_ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        publisher.publish(msg)
        sent += 1
        return stamp_ns

    def until_answered(what: str) -> int:
        for _ in range(5):
            index, stamp_ns = sent, publish(small)
            deadline = time.monotonic() + args.answer_timeout_s
            while stamp_ns not in answered and time.monotonic() < deadline:
                spin_for(0.05)
            if stamp_ns in answered:
                return index
        raise SystemExit(f'the node answered no {what} frame')

    deadline = time.monotonic() + 120
    while (publisher.get_subscription_count() == 0 or
           node.count_publishers(args.answers) == 0) and time.monotonic() < deadline:
        spin_for(0.1)
    spin_for(1.0)
    first_answered = until_answered('head')
    for _ in range(args.frames):
        publish(large)
        spin_for(1.0 / args.rate_hz)
    until_answered('tail')
    print(json.dumps({'sent': sent, 'first_answered_index': first_answered}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
