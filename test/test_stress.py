"""Stress and faults, short CI versions (issue 5, part 4; the long runs: benchmarks/stress.py).

In-process: hypothesis property tests of the image converter over every encoding, step, size,
byte order and data container: a message is either converted exactly as an independent
reference says, or rejected with an ``ImageConversionError`` whose kind is the one the
documented rule order predicts; nothing else is ever raised.

Across processes: one real ``diffpose_node`` (torch backend, head weights in a temp file,
autostart off) on an isolated domain, driven through its lifecycle services:
  1. configure with a truncated and with a missing weights file fails cleanly (FAILURE, a log
     line naming the file, process alive, still unconfigured); good weights then configure;
  2. ~200 malformed messages of every bad-input kind (raw, then compressed after a
     reconfigure), interleaved with good frames in lock-step: per-kind counts in /diagnostics
     equal what was sent, nothing dropped, every good frame served with people in it;
  3. the image publisher (another process) is SIGKILLed mid-stream and a new one, with a
     100-s-older time base, takes over: the node serves its frames and counts the time jump;
  4. deactivate/activate while frames stream: transitions succeed, nothing is served while
     inactive, serving resumes each time;
  5. (last) SIGINT while frames stream: exit code 0, no abort, no processing error.
Two in-process node checks without models back 5 and the diagnostics: destroy_node joins the
worker, and one diagnostics message reports one snapshot of the bad-input counters.
"""
from __future__ import annotations

import array
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ros_harness import shutdown_context

from diffpose_ros.ros.image_conversion import (
    BAD_INPUT_KINDS,
    DEFAULT_MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_to_bgr,
    image_to_bgr,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import stress  # noqa: E402  (benchmarks/stress.py: generators, link, lifecycle helpers)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

# ------------------------------------------------------------------------------------------------
# property tests of the converter (in-process)

# encoding -> (bytes per pixel as stored, element size); written from REP 118 / sensor_msgs,
# independently of the module's own table
LAYOUT = {
    'bgr8': (3, 1), '8UC3': (3, 1), 'rgb8': (3, 1), 'bgra8': (4, 1), 'rgba8': (4, 1),
    'mono8': (1, 1), '8UC1': (1, 1), 'mono16': (2, 2), '16UC1': (2, 2),
    'yuv422': (2, 1), 'uyvy': (2, 1), 'yuv422_yuy2': (2, 1), 'yuyv': (2, 1),
}
YUV_TO_BGR = {'yuv422': cv2.COLOR_YUV2BGR_UYVY, 'uyvy': cv2.COLOR_YUV2BGR_UYVY,
              'yuv422_yuy2': cv2.COLOR_YUV2BGR_YUY2, 'yuyv': cv2.COLOR_YUV2BGR_YUY2}
NEAR_MISSES = ['', 'BGR8', 'Mono8', 'bgr8 ', ' rgb8', 'bayer_rggb8', '32FC1', 'rgb16', 'yuv420',
               'nv12', '8UC4', '16SC1', 'jpeg']
UINT32_MAX = 2**32 - 1
PROPERTY_SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


def test_layout_table_names_exactly_the_supported_encodings():
    assert set(LAYOUT) == set(SUPPORTED_ENCODINGS)


def expected_raw_outcome(height: int, width: int, step: int, encoding: str, size: int,
                         max_pixels: int) -> str | None:
    """The documented rule order (image_conversion's docstring) as an oracle; None = valid."""
    if width == 0 or height == 0:
        return 'zero_dimension'
    if encoding not in LAYOUT:
        return 'unknown_encoding'
    if width * height > max_pixels:
        return 'oversize'
    if size == 0:
        return 'empty'
    pixel_bytes, element_bytes = LAYOUT[encoding]
    if step < width * pixel_bytes or step % element_bytes or (
            encoding in YUV_TO_BGR and width % 2):
        return 'inconsistent_size'
    if size < height * step:
        return 'truncated'
    if size > height * step:
        return 'inconsistent_size'
    return None


def reference_bgr(data: bytes, height: int, width: int, step: int, encoding: str,
                  is_bigendian: int) -> np.ndarray:
    """Row-by-row reference conversion of a valid message (cv2 only for YUV 4:2:2)."""
    row_bytes = width * LAYOUT[encoding][0]
    rows = np.stack([np.frombuffer(data, np.uint8, row_bytes, r * step) for r in range(height)])
    if encoding in ('bgr8', '8UC3'):
        return rows.reshape(height, width, 3)
    if encoding == 'rgb8':
        return rows.reshape(height, width, 3)[:, :, ::-1]
    if encoding in ('bgra8', 'rgba8'):
        pixels = rows.reshape(height, width, 4)[:, :, :3]
        return pixels if encoding == 'bgra8' else pixels[:, :, ::-1]
    if encoding in ('mono8', '8UC1'):
        return np.repeat(rows[:, :, None], 3, axis=2)
    if encoding in ('mono16', '16UC1'):
        values = np.frombuffer(rows.tobytes(), '>u2' if is_bigendian else '<u2')
        return np.repeat((values >> 8).astype(np.uint8).reshape(height, width, 1), 3, axis=2)
    return cv2.cvtColor(np.ascontiguousarray(rows.reshape(height, width, 2)),
                        YUV_TO_BGR[encoding])


def ros_image(height: int, width: int, step: int, encoding: str, is_bigendian: int,
              data: bytes):
    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, step=step, encoding=encoding,
                is_bigendian=is_bigendian)
    msg.data = data
    return msg


@st.composite
def raw_messages(draw):
    """A valid message, then zero to three fields replaced by anything of the field's type:
    every encoding, step, size and byte order, uint32 extremes, near-miss encoding names."""
    encoding = draw(st.sampled_from(sorted(LAYOUT)))
    pixel_bytes, element_bytes = LAYOUT[encoding]
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if encoding in YUV_TO_BGR and draw(st.booleans()):
        width += width % 2
    pad = draw(st.integers(0, 9))
    step = width * pixel_bytes + pad - pad % element_bytes
    size = height * step
    is_bigendian = draw(st.sampled_from([0, 1]))
    uint32 = st.one_of(st.integers(0, 64), st.sampled_from([2**16, 2**31 - 1, UINT32_MAX]))
    mutations = draw(st.lists(st.sampled_from(
        ['height', 'width', 'step', 'encoding', 'size', 'is_bigendian']), max_size=3))
    for field in mutations:
        if field == 'height':
            height = draw(uint32)
        elif field == 'width':
            width = draw(uint32)
        elif field == 'step':
            step = draw(uint32)
        elif field == 'encoding':
            encoding = draw(st.one_of(st.sampled_from(sorted(LAYOUT)),
                                      st.sampled_from(NEAR_MISSES),
                                      st.text(st.characters(codec='ascii'), max_size=8)))
        elif field == 'size':
            size = draw(st.one_of(st.just(0), st.integers(max(size - 16, 0), size + 16),
                                  st.integers(0, 4096)))
        else:
            is_bigendian = draw(st.integers(0, 255))
    data = np.random.default_rng(draw(st.integers(0, UINT32_MAX))).integers(
        0, 256, size, np.uint8).tobytes()
    return height, width, step, encoding, is_bigendian, data


@PROPERTY_SETTINGS
@given(fields=raw_messages(),
       max_pixels=st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 200)))
def test_property_raw_messages_convert_exactly_or_fail_with_the_documented_kind(
        fields, max_pixels):
    height, width, step, encoding, is_bigendian, data = fields
    msg = ros_image(height, width, step, encoding, is_bigendian, data)
    expected = expected_raw_outcome(height, width, step, encoding, len(data), max_pixels)
    event(f'expected outcome: {expected or "converted"}')
    try:
        result = image_to_bgr(msg, max_pixels=max_pixels)
    except ImageConversionError as exc:  # anything else fails the test
        assert exc.kind in BAD_INPUT_KINDS
        assert exc.kind == expected, f'{exc.kind} != {expected}: {exc}'
        return
    assert expected is None, f'converted, but the rules say {expected}'
    assert result.dtype == np.uint8 and result.shape == (height, width, 3)
    assert result.flags.c_contiguous and result.flags.writeable
    np.testing.assert_array_equal(
        result, reference_bgr(data, height, width, step, encoding, is_bigendian))


def encode_source(encoding: str, rng: np.random.Generator, height: int, width: int,
                  big_endian: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows as stored: (H, W * bpp) uint8, the BGR image they must convert to)."""
    if encoding in YUV_TO_BGR:
        packed = rng.integers(0, 256, (height, width, 2), np.uint8)
        return packed.reshape(height, -1), cv2.cvtColor(packed, YUV_TO_BGR[encoding])
    if encoding in ('mono16', '16UC1'):
        values = rng.integers(0, 65536, (height, width), np.uint16)
        stored = values.astype('>u2' if big_endian else '<u2').view(np.uint8)
        grey = (values >> 8).astype(np.uint8)
        return stored.reshape(height, -1), np.repeat(grey[:, :, None], 3, axis=2)
    bgr = rng.integers(0, 256, (height, width, 3), np.uint8)
    alpha = rng.integers(0, 256, (height, width, 1), np.uint8)
    if encoding in ('mono8', '8UC1'):
        grey = bgr[:, :, 0]
        return grey, np.repeat(grey[:, :, None], 3, axis=2)
    stored = {'bgr8': bgr, '8UC3': bgr, 'rgb8': bgr[:, :, ::-1],
              'bgra8': np.concatenate([bgr, alpha], 2),
              'rgba8': np.concatenate([bgr[:, :, ::-1], alpha], 2)}[encoding]
    return np.ascontiguousarray(stored).reshape(height, -1), bgr


@PROPERTY_SETTINGS
@given(encoding=st.sampled_from(sorted(LAYOUT)), height=st.integers(1, 16),
       half_width=st.integers(1, 9), odd=st.booleans(), pad=st.integers(0, 11),
       big_endian=st.booleans(), seed=st.integers(0, UINT32_MAX),
       container=st.sampled_from(['ros', 'bytes', 'bytearray', 'array', 'ndarray', 'list']))
def test_property_valid_images_round_trip_exactly(encoding, height, half_width, odd, pad,
                                                  big_endian, seed, container):
    pixel_bytes, element_bytes = LAYOUT[encoding]
    width = 2 * half_width - (odd and encoding not in YUV_TO_BGR)
    pad -= pad % element_bytes  # 16-bit rows stay 2-byte aligned
    rng = np.random.default_rng(seed)
    rows, expected = encode_source(encoding, rng, height, width, big_endian)
    step = width * pixel_bytes + pad
    buffer = rng.integers(0, 256, (height, step), np.uint8)  # junk in the padding
    buffer[:, :width * pixel_bytes] = rows
    data = buffer.tobytes()
    fields = dict(height=height, width=width, step=step, encoding=encoding,
                  is_bigendian=int(big_endian))
    if container == 'ros':
        msg = ros_image(data=data, **fields)
    else:
        wrapped = {'bytes': data, 'bytearray': bytearray(data),
                   'array': array.array('B', data), 'ndarray': buffer.reshape(-1),
                   'list': list(data)}[container]
        msg = types.SimpleNamespace(data=wrapped, **fields)
    result = image_to_bgr(msg)
    np.testing.assert_array_equal(result, expected)
    assert result.flags.c_contiguous and result.flags.writeable
    assert not np.shares_memory(result, buffer)


def small_image(seed: int, height: int, width: int, grey: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (4, 4, 3), np.uint8), (width, height))
    image = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
    return image[:, :, 0].copy() if grey else image


@st.composite
def compressed_messages(draw):
    """Valid JPEG/PNG data, mutated or not, or arbitrary bytes; any format string."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    grey = draw(st.booleans())
    image = small_image(draw(st.integers(0, 2**16)), height, width, grey)
    codec = draw(st.sampled_from(['.png', '.jpg', 'bytes']))
    if codec == 'bytes':
        data = draw(st.binary(max_size=600))
    else:
        data = cv2.imencode(codec, image)[1].tobytes()
    mutation = draw(st.sampled_from(['none', 'none', 'truncate', 'flip', 'append', 'resize']))
    declared = (width, height)  # what the header says, where we know it
    if mutation == 'truncate' and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == 'flip' and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1:]
    elif mutation == 'append':
        data += draw(st.binary(min_size=1, max_size=64))
    elif mutation == 'resize' and codec != 'bytes':
        new_w, new_h = draw(st.integers(1, 60_000)), draw(st.integers(1, 60_000))
        data = (stress.png_with_size(data, new_w, new_h) if codec == '.png'
                else stress.jpeg_with_size(data, new_w, new_h))
        declared = (new_w, new_h)
    known = st.sampled_from(['jpeg', 'png', 'jpg', '', 'rgb8; jpeg compressed bgr8',
                             'bgr8; png compressed bgr8', 'JPEG'])
    fmt = draw(st.one_of(known, known, known, st.sampled_from(
        ['h264', 'tiff', '16UC1; compressedDepth png', '32FC1; compressedDepth']),
        st.text(max_size=12)))
    known_header = codec != 'bytes' and mutation in ('none', 'append', 'resize')
    return fmt, data, codec, mutation, image, declared if known_header else None


@PROPERTY_SETTINGS
@given(message=compressed_messages(),
       max_pixels=st.one_of(st.just(DEFAULT_MAX_PIXELS), st.integers(1, 1600)))
def test_property_compressed_messages_decode_or_fail_with_a_known_kind(message, max_pixels):
    fmt, data, codec, mutation, image, declared = message
    msg = types.SimpleNamespace(format=fmt, data=data)
    words = fmt.strip().lower().split(';', 1)[-1].split()
    known_codec = (words[0] if words else '') in ('jpeg', 'jpg', 'png', '')
    too_big = declared is not None and declared[0] * declared[1] > max_pixels
    expected = ('unknown_encoding' if 'compresseddepth' in fmt.lower() else
                'corrupt_compressed' if not known_codec else 'empty' if not data else
                'oversize' if too_big else None)  # a header declaring too much: never decoded
    try:
        result = compressed_to_bgr(msg, max_pixels=max_pixels)
    except ImageConversionError as exc:  # anything else fails the test
        event(f'{codec} {mutation}: {exc.kind}')
        assert exc.kind in BAD_INPUT_KINDS
        if expected is not None:
            assert exc.kind == expected, f'{exc.kind} != {expected}: {exc}'
        else:
            assert exc.kind in ('oversize', 'corrupt_compressed'), str(exc)
        if mutation == 'none' and codec != 'bytes':
            assert expected is not None, f'a valid {codec} was rejected: {exc}'
        return
    event(f'{codec} {mutation}: decoded')
    assert expected is None, f'decoded, but the format/data say {expected}'
    assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3
    assert result.shape[0] * result.shape[1] <= max_pixels
    if codec == '.jpg' and mutation == 'truncate':
        pytest.fail('a JPEG cut before its end-of-image marker was decoded')
    if codec == '.png' and mutation == 'none':  # lossless: exact
        bgr = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
        np.testing.assert_array_equal(result, bgr)


@pytest.mark.parametrize('compressed', [False, True], ids=['raw', 'compressed'])
def test_fuzz_generators_make_the_kind_they_claim(compressed):
    """The node fuzz below trusts these generators: each message is of the kind it claims."""
    rng = np.random.default_rng(11)
    frame = small_image(3, 480, 640, False)
    small = cv2.resize(frame, (160, 120))
    jpeg = cv2.imencode('.jpg', small)[1].tobytes()
    png = cv2.imencode('.png', small)[1].tobytes()
    kinds = stress.COMPRESSED_KINDS if compressed else stress.RAW_KINDS
    variants = set()
    for i in range(60 * len(kinds)):
        kind = kinds[i % len(kinds)]
        if compressed:
            msg, variant = stress.malformed_compressed(rng, kind, jpeg, png)
        else:
            msg, variant = stress.malformed_raw(rng, kind, frame)
        with pytest.raises(ImageConversionError) as caught:
            if compressed:
                compressed_to_bgr(msg, max_pixels=stress.MAX_PIXELS)
            else:
                image_to_bgr(msg, max_pixels=stress.MAX_PIXELS)
        assert caught.value.kind == kind, (variant, str(caught.value))
        variants.add((kind, variant))
    assert {kind for kind, _ in variants} == set(kinds)
    assert len(variants) >= (12 if compressed else 20), variants


# ------------------------------------------------------------------------------------------------
# the real node in another process


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('stress')


@pytest.fixture(scope='module')
def weights_target(run_dir) -> Path:
    return run_dir / 'weights' / 'head.safetensors'


@pytest.fixture(scope='module')
def stress_node(run_dir, weights_target):
    """diffpose_node, unconfigured (autostart off), torch backend, weights at a temp path."""
    node = stress.start_node(run_dir, 'node', {
        'autostart': False, 'weights_path': str(weights_target), 'backend': 'torch'})
    yield node
    stress.clean_shm()
    code = node.stop()
    assert code == 0, f'node exited with {code}:\n{node.log()}'


@pytest.fixture(scope='module')
def good_weights(run_dir) -> Path:
    return stress.make_good_weights(run_dir / 'good')


@pytest.fixture(scope='module')
def link(stress_node):
    from ros_harness import RosClient

    client = RosClient('stress_tester')
    yield stress.Link(client)
    client.close()


@pytest.fixture(scope='module')
def frames() -> list[np.ndarray]:
    return stress.load_frames(count=24)


_transport = {'value': 'raw'}


def ensure_active(link, node, good_weights, weights_target, transport: str) -> None:
    """Bring the node to active with good weights and ``transport`` (tests may run alone)."""
    client = link.client
    state = stress.get_state(client)
    if state == 'unconfigured':
        stress.install_weights(good_weights, weights_target, 'good', np.random.default_rng(0))
        assert stress.set_parameter(client, 'transport', transport).successful
        assert stress.change_state(client, 'configure'), node.log()
        state = 'inactive'
    elif _transport['value'] != transport:
        stress.set_transport(client, transport)
        state = 'active'
    if state == 'inactive':
        assert stress.change_state(client, 'activate'), node.log()
    _transport['value'] = transport
    link.wait_subscribed(transport == 'compressed', node)


def read_from(path: Path, offset: int) -> str:
    with open(path, errors='replace') as log:
        log.seek(offset)
        return log.read()


def test_corrupt_and_missing_weights_fail_configure_cleanly(link, stress_node, good_weights,
                                                           weights_target):
    client = link.client
    assert stress.get_state(client) == 'unconfigured'
    rng = np.random.default_rng(0)
    for case, reason in (('truncated', 'corrupt'), ('missing file', 'does not exist')):
        named = stress.install_weights(good_weights, weights_target, case, rng)
        offset = stress_node.log_path.stat().st_size
        assert not stress.change_state(client, 'configure'), f'{case}: configure succeeded'
        assert stress.get_state(client) == 'unconfigured'
        assert stress_node.alive(), stress_node.log()
        lines = link.wait(lambda start=offset: [
            line for line in read_from(stress_node.log_path, start).splitlines()
            if 'configure failed' in line], 10.0)
        assert lines, f'{case}: no "configure failed" line in\n{stress_node.log()}'
        assert str(named) in lines[-1] and reason in lines[-1], lines[-1]
    # the same node, the same path, now a good file: configure and activate work
    stress.install_weights(good_weights, weights_target, 'good', rng)
    assert stress.change_state(client, 'configure'), stress_node.log()
    assert stress.get_state(client) == 'inactive'
    assert stress.change_state(client, 'activate')
    assert stress.get_state(client) == 'active'


def check_fuzz(result: dict, kinds: tuple[str, ...], count: int, node) -> None:
    sent, counted = result['malformed_sent'], result['malformed_counted']
    assert set(sent) == set(kinds) and min(sent.values()) >= count // len(kinds) - 1, sent
    assert counted == {kind: sent.get(kind, 0) for kind in counted}, (sent, counted)
    good = result['good_frames']
    assert good['served'] == good['sent'] >= count // 8, (good, result['unserved_good_stamps'])
    assert good['with_persons'] == good['served'], good        # real people in every frame
    assert result['dropped'] == 0 and result['processing_errors'] == 0, result
    assert result['received'] == count + good['sent'], result
    assert node.alive(), node.log()


def test_fuzz_raw_every_kind_counted_and_every_good_frame_served(
        link, stress_node, good_weights, weights_target, frames):
    ensure_active(link, stress_node, good_weights, weights_target, 'raw')
    result = stress.run_fuzz(link, stress_node, frames, np.random.default_rng(1), 150, False)
    check_fuzz(result, stress.RAW_KINDS, 150, stress_node)


def test_publisher_killed_and_restarted_mid_stream(link, stress_node, good_weights,
                                                   weights_target, frames, run_dir):
    ensure_active(link, stress_node, good_weights, weights_target, 'raw')
    frames_npy = run_dir / 'frames.npy'
    np.save(frames_npy, np.stack(frames[:12]))
    before = link.counters()

    def served(frame_id: str) -> list[int]:
        return [s for s, (_, f, _) in link.outputs.items() if f == frame_id]

    first = subprocess.Popen(stress.publisher_command(stress.IMAGE_TOPIC, frames_npy, 10.0,
                                                      'pub1'), cwd=ROOT)
    try:
        assert len(link.wait(lambda: len(served('pub1')) >= 3 and served('pub1'), 60.0,
                             stress_node)) >= 3, 'the first publisher was not served'
        first.send_signal(signal.SIGKILL)        # mid-stream, no clean shutdown
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        first.kill()
    # a restarted driver with another time base: its stamps are 100 s older
    second = subprocess.Popen(stress.publisher_command(stress.IMAGE_TOPIC, frames_npy, 10.0,
                                                       'pub2', -100.0),
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        stamps = link.wait(lambda: len(served('pub2')) >= 3 and served('pub2'), 60.0,
                           stress_node)
        assert len(stamps) >= 3, 'the restarted publisher was not served'
        assert max(stamps) < time.time_ns() - 90 * 10**9       # its own (older) stamps
        second.send_signal(signal.SIGTERM)
        output = second.communicate(timeout=20)[0]
    finally:
        second.kill()
    assert second.returncode == 0 and 'matched' in output, output
    after = link.counters()
    assert after['time_jumps_back'] - before['time_jumps_back'] >= 1
    assert after['processing_errors'] == before['processing_errors'] == 0
    assert stress_node.alive(), stress_node.log()


def test_deactivate_activate_while_frames_stream(link, stress_node, good_weights,
                                                 weights_target, frames):
    ensure_active(link, stress_node, good_weights, weights_target, 'raw')
    before = link.counters()
    messages = [stress.good_msg(frame, 0, False) for frame in frames[:12]]
    streamer = stress.Streamer(link, messages, 15.0)
    try:
        cycles = stress.lifecycle_cycles(link, stress_node, link.client,
                                         np.random.default_rng(2), 3)
    finally:
        streamer.stop()
    for cycle in cycles:
        assert cycle['deactivated'] and cycle['activated'], cycles
        assert cycle['served_while_inactive'] == 0, cycles
        assert cycle['resumed'] and cycle['resume_s'] < 30, cycles
    assert len(cycles) == 3, cycles
    assert stress.get_state(link.client) == 'active'
    after = link.counters()
    assert after['processing_errors'] == before['processing_errors'] == 0
    assert after['frames_published'] - before['frames_published'] >= 3 * 2
    assert stress_node.alive(), stress_node.log()


def test_fuzz_compressed_every_kind_counted_and_every_good_frame_served(
        link, stress_node, good_weights, weights_target, frames):
    ensure_active(link, stress_node, good_weights, weights_target, 'compressed')
    result = stress.run_fuzz(link, stress_node, frames, np.random.default_rng(3), 50, True)
    check_fuzz(result, stress.COMPRESSED_KINDS, 50, stress_node)


def test_destroy_node_stops_the_worker_first():
    """In-process, no models: the worker thread must be joined before the node goes away
    (the deterministic half of the SIGINT test below)."""
    import rclpy

    from diffpose_ros.ros.node import DiffPoseNode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = DiffPoseNode(context=context)
        node._stop.clear()
        worker = threading.Thread(target=node._work, daemon=True)   # the real worker loop
        node._worker = worker
        worker.start()
        time.sleep(0.3)
        assert worker.is_alive()
        node.destroy_node()
        assert not worker.is_alive()
    finally:
        shutdown_context(rclpy, context)


def test_diagnostics_report_one_snapshot_of_the_bad_input_counts():
    """The worker counts bad frames while the executor builds /diagnostics; a frame counted
    between reading the total and the per-kind values made a message disagree with itself
    (seen as a flaky per-kind vs total check under load). In-process, no models."""
    import collections

    import rclpy

    from diffpose_ros.ros.node import DiffPoseNode, _Camera
    from diffpose_ros.ros.params import CameraSetup

    class CountedMeanwhile(collections.Counter):
        """The worker's turn comes right after the values were read: one more empty frame."""

        def values(self):
            snapshot = list(super().values())
            self['empty'] += 1
            return snapshot

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = DiffPoseNode(context=context)
        camera = _Camera(CameraSetup(name='cam', image_topic='/cam/image_raw',
                                     camera_info_topic='/cam/camera_info', compressed=False))
        camera.bad_input = CountedMeanwhile({'truncated': 2, 'oversize': 1})
        status = node._camera_status(camera, time.monotonic())
        node.destroy_node()
    finally:
        shutdown_context(rclpy, context)
    counts = {kv.key: int(kv.value) for kv in status.values if kv.key.startswith('bad_input')}
    per_kind = {k: v for k, v in counts.items() if k != 'bad_input_total'}
    assert len(per_kind) == len(BAD_INPUT_KINDS)
    assert counts['bad_input_total'] == sum(per_kind.values()) in (3, 4), counts


def test_sigint_while_frames_stream_exits_cleanly(link, stress_node, good_weights,
                                                  weights_target, frames):
    """Last test of the module: it stops the node. Ctrl-C while the worker is inside the
    network used to abort the process (a daemon thread in ONNX Runtime/torch at exit)."""
    ensure_active(link, stress_node, good_weights, weights_target, 'raw')
    messages = [stress.good_msg(frame, 0, False) for frame in frames[:12]]
    streamer = stress.Streamer(link, messages, 15.0)     # faster than the node: always busy
    try:
        served = len(link.outputs)
        link.wait(lambda: len(link.outputs) >= served + 3, 60.0, stress_node)
        served = len(link.outputs)
        link.wait(lambda: len(link.outputs) > served, 30.0, stress_node)
        time.sleep(0.02)                                 # the next frame is in the network
        stress_node.proc.send_signal(signal.SIGINT)
        code = stress_node.proc.wait(timeout=30)
    finally:
        streamer.stop()
    log = stress_node.log()
    assert code == 0, f'exit code {code}:\n{log}'
    assert 'terminate called' not in log and 'processing failed' not in log, log


def test_soak_series_and_plot_are_rendered_in_the_report(tmp_path):
    samples = [{'t': 100.0 + i, 'rss_mb': 900.0 + 0.01 * i, 'tracks_live': i % 4,
                'buffered_frames': i % 7} for i in range(240)]
    latency = [(0.1 * i, 150.0 + (i % 2) * 300.0) for i in range(2000)]
    series = stress.soak_series(samples, latency)
    assert series['t_s'][:2] == [0.0, 1.0] and len(series['rss_mb']) == 240
    assert series['buffered_frames'][6] == 6 and series['latency_ms'][:2] == [150.0, 450.0]
    windows = stress.window_stats(latency, 60.0)
    assert [w['n'] for w in windows] == [600, 600, 600, 200]
    plot = stress.plot_soak(series, windows, 60.0, 0.6, tmp_path / 'soak.png')
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b'\x89PNG'
    import common
    import run_all

    path = tmp_path / 'stress.json'
    common.record_stress_result('soak', {'summary': 'soak', 'checks': [], 'images':
                                         ['docs/img/stress_soak.png']}, path)
    assert '![stress_soak](img/stress_soak.png)' in run_all.stress_markdown(path)
