"""diffpose_node across real processes on an isolated ROS domain, fed real vtest.avi frames.

One node process serves two cameras (cam0 fed by a reliable publisher, cam1 by a best-effort
one) with use_sim_time and a /clock published here; a second node process starts unconfigured
(autostart off) with compressed input and is driven through its lifecycle services.
"""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from ros_harness import (
    NodeProcess,
    RosClient,
    camera_info_msg,
    clock_msg,
    compressed_msg,
    diagnostics_values,
    image_msg,
    stamp_ns,
    write_params,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

BASE_STAMP_NS = 1_000_000_000_000       # sim time 1000 s
PERIOD_NS = 100_000_000                 # vtest.avi is 10 fps
NODE_READY_S = 240                      # configure: model export (first time) + warm-up


def _qos(reliable: bool):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT)


class Feeder:
    """Publishes /clock, CameraInfo and images for one camera; waits for the poses of each."""

    def __init__(self, client: RosClient, node: NodeProcess, camera: str, reliable: bool = True,
                 compressed: bool = False):
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from diffpose_ros.msg import PersonPoseArray

        self.client, self.node, self.camera, self.compressed = client, node, camera, compressed
        self.frame_id = f'{camera}_optical'
        topic = f'/{camera}/image_raw' + ('/compressed' if compressed else '')
        self.topic = topic
        self.image_pub = client.node.create_publisher(
            CompressedImage if compressed else Image, topic, _qos(reliable))
        self.info_pub = client.node.create_publisher(CameraInfo, f'/{camera}/camera_info', 5)
        self.clock_pub = client.node.create_publisher(Clock, '/clock', 5)
        self.poses = client.received.get(f'/diffpose/{camera}/poses') or client.subscribe(
            PersonPoseArray, f'/diffpose/{camera}/poses')

    def wait_ready(self) -> None:
        self.client.wait_for(lambda: self.client.node.count_subscribers(self.topic) > 0,
                             NODE_READY_S, f'the node to subscribe to {self.topic}', self.node)
        time.sleep(0.5)                 # let the reliable/best-effort matching settle

    def publish(self, image: np.ndarray, stamp: int, raw_msg=None) -> None:
        self.clock_pub.publish(clock_msg(stamp))
        height, width = image.shape[:2]
        self.info_pub.publish(camera_info_msg(width, height, stamp, self.frame_id))
        if raw_msg is None:
            raw_msg = (compressed_msg if self.compressed else image_msg)(image, stamp,
                                                                        self.frame_id)
        self.image_pub.publish(raw_msg)

    def poses_at(self, stamp: int):
        return [msg for _, msg in self.poses if stamp_ns(msg.header) == stamp]

    def send(self, image: np.ndarray, stamp: int, timeout_s: float = 60.0):
        """Publish one frame and wait for its pose array (lock-step: nothing is dropped)."""
        self.publish(image, stamp)
        return self.client.wait_for(lambda: self.poses_at(stamp), timeout_s,
                                    f'poses of {self.camera} at stamp {stamp}', self.node)[-1]


@pytest.fixture(scope='module')
def client():
    client = RosClient()
    yield client
    client.close()


@pytest.fixture(scope='module')
def two_camera_node(tmp_path_factory, client):
    from diagnostic_msgs.msg import DiagnosticArray

    folder = tmp_path_factory.mktemp('node')
    params = write_params(folder / 'params.yaml', {
        'image_topics': ['/cam0/image_raw', '/cam1/image_raw'],
        'camera_names': ['cam0', 'cam1'],
        'detector_imgsz': 1280, 'autostart': True, 'use_sim_time': True,
        'max_image_pixels': 1_000_000, 'diagnostics_period_s': 0.25,
        'publish_markers': True, 'steps': 1, 'hypotheses': 1, 'latency_budget_ms': 0.0,
    })
    node = NodeProcess(params, folder / 'node.log')
    client.subscribe(DiagnosticArray, '/diagnostics')
    yield node
    code = node.stop()
    assert code == 0, f'node exited with {code}:\n{node.log()}'


@pytest.fixture(scope='module')
def cam0(client, two_camera_node):
    feeder = Feeder(client, two_camera_node, 'cam0', reliable=True)
    feeder.wait_ready()
    return feeder


def _latest_diagnostics(client: RosClient, camera: str, after_s: float) -> dict[str, str]:
    for received_s, msg in reversed(client.received['/diagnostics']):
        if received_s >= after_s:
            values = diagnostics_values(msg, f'camera {camera}')
            if values:
                return values
    return {}


def test_autostart_lockstep_stamps_tracks_and_markers(client, two_camera_node, cam0,
                                                      vtest_frames_100_129):
    from visualization_msgs.msg import Marker, MarkerArray

    markers = client.subscribe(MarkerArray, '/diffpose/cam0/markers')
    outputs = []
    for i, frame in enumerate(vtest_frames_100_129[:8]):
        stamp = BASE_STAMP_NS + i * PERIOD_NS
        msg = cam0.send(frame, stamp)
        assert stamp_ns(msg.header) == stamp and msg.header.frame_id == 'cam0_optical'
        assert msg.camera == 'cam0' and msg.steps == 1 and msg.hypotheses == 1
        assert msg.window_mode == 'causal' and msg.window_size == 3
        assert msg.pose_latency_ms > 0
        outputs.append(msg)
    for msg in outputs:
        assert len(msg.persons) >= 2
        for person in msg.persons:
            assert len(person.keypoints) == 17
            assert person.box_x_max > person.box_x_min and person.detection_score > 0
    # the people seen first are still tracked under the same ids at the end
    first = {p.track_id for p in outputs[0].persons}
    last = {p.track_id for p in outputs[-1].persons}
    assert len(first & last) >= 2, (first, last)
    # markers: same stamp and frame as the image, one id per track, both namespaces
    last_stamp = stamp_ns(outputs[-1].header)
    arrays = client.wait_for(
        lambda: [m for _, m in markers if m.markers and
                 stamp_ns(m.markers[0].header) == last_stamp], 10, 'markers of the last frame')
    adds = [m for m in arrays[-1].markers if m.action == Marker.ADD]
    assert {m.ns for m in adds} == {'joints', 'bones'}
    assert {m.id for m in adds} <= {p.track_id for p in outputs[-1].persons}
    assert all(m.header.frame_id == 'cam0_optical' for m in adds)


def test_best_effort_publisher_is_served(client, two_camera_node, vtest_frames_100_129):
    cam1 = Feeder(client, two_camera_node, 'cam1', reliable=False)
    cam1.wait_ready()
    messages = [cam1.send(frame, BASE_STAMP_NS + i * PERIOD_NS)
                for i, frame in enumerate(vtest_frames_100_129[10:12])]
    assert all(msg.camera == 'cam1' and len(msg.persons) >= 2 for msg in messages)
    # one tracker per camera: cam1's ids start at 1 although cam0 already used several
    assert 1 in {p.track_id for p in messages[0].persons}


def test_image_qos_is_overridable(client, two_camera_node, cam0):
    from rcl_interfaces.srv import ListParameters

    request = ListParameters.Request(prefixes=['qos_overrides'], depth=0)
    names = client.call(ListParameters, '/diffpose/list_parameters', request,
                        resend_after_s=15.0).result.names
    # the standard QoS-override parameters exist for every image subscription
    for topic in ('/cam0/image_raw', '/cam1/image_raw'):
        assert f'qos_overrides.{topic}.subscription.reliability' in names, names
        assert f'qos_overrides.{topic}.subscription.depth' in names, names


def _set_param(client, name, value, node='/diffpose'):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    elif isinstance(value, int):
        pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    elif isinstance(value, float):
        pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
    return client.call(SetParameters, f'{node}/set_parameters', request).results[0]


def test_invalid_parameter_changes_are_rejected(client, two_camera_node, cam0,
                                                vtest_frames_100_129):
    for name, value in (('steps', 0), ('hypotheses', 1000), ('window_mode', 'future'),
                        ('window_size', 5), ('backend', 'tensorflow'),
                        ('decode_blur_sigma_px', -1.0)):
        result = _set_param(client, name, value)
        assert not result.successful, (name, value)
        assert name in result.reason, result.reason
    assert not _set_param(client, 'steps', 'two').successful        # wrong type
    assert _set_param(client, 'steps', 2).successful
    msg = cam0.send(vtest_frames_100_129[8], BASE_STAMP_NS + 8 * PERIOD_NS)
    assert msg.steps == 2
    assert _set_param(client, 'steps', 1).successful
    assert _set_param(client, 'decode_blur_sigma_px', 0.0).successful     # dynamic
    assert _set_param(client, 'decode_blur_sigma_px', 3.0).successful


def test_malformed_burst_is_counted_and_the_next_good_frame_served(client, two_camera_node,
                                                                   cam0, vtest_frames_100_129):
    from sensor_msgs.msg import Image

    def raw(width, height, encoding, step, data):
        msg = Image(width=width, height=height, encoding=encoding, step=step)
        msg.header.frame_id = 'cam0_optical'
        msg.header.stamp.sec = 1009
        msg.data = bytes(data)
        return msg

    good = vtest_frames_100_129[9]
    bad = {
        'unknown_encoding': raw(64, 48, 'bayer_unknown', 64, b'\x00' * 64 * 48),
        'inconsistent_size': raw(64, 48, 'bgr8', 100, b'\x00' * 100 * 48),
        'empty': raw(64, 48, 'bgr8', 192, b''),
        'truncated': raw(64, 48, 'bgr8', 192, b'\x00' * 1000),
        'zero_dimension': raw(0, 48, 'bgr8', 0, b''),
        'oversize': raw(1100, 1000, 'mono8', 1100, b'\x00' * 1100 * 1000),
    }
    start_s = time.monotonic()
    for msg in bad.values():
        for _ in range(2):
            cam0.image_pub.publish(msg)
            time.sleep(0.15)              # slower than conversion: each one is looked at
    assert two_camera_node.alive(), two_camera_node.log()
    values = client.wait_for(
        lambda: (v := _latest_diagnostics(client, 'cam0', start_s)) and all(
            int(v.get(f'bad_input.{kind}', 0)) >= 2 for kind in bad) and v,
        15, 'diagnostics counting every bad kind '
        f'(latest: {_latest_diagnostics(client, "cam0", start_s)})', two_camera_node)
    assert int(values['bad_input_total']) >= 2 * len(bad)
    # bad frames (stamps of another time) do not make the sim-time stamps incomparable, and a
    # reliable shared-memory publisher loses nothing
    assert values['stamps_comparable'] == 'yes', values
    assert 0 <= float(values['latency_p50_ms']) < 60_000, values   # sim time stands still
    assert 0 < float(values['processing_latency_p50_ms']) < 60_000, values
    assert values['frames_lost_in_transport'] == '0', values
    msg = cam0.send(good, BASE_STAMP_NS + 9 * PERIOD_NS)
    assert len(msg.persons) >= 2


def test_backwards_clock_jump_resets_tracks(client, two_camera_node, cam0,
                                            vtest_frames_100_129):
    before = cam0.send(vtest_frames_100_129[10], BASE_STAMP_NS + 10 * PERIOD_NS)
    old_ids = {p.track_id for p in before.persons}
    # a looping bag: time (and /clock) jump back; the same scene must get fresh tracks
    jumped = [cam0.send(frame, BASE_STAMP_NS - 10 * 10**9 + i * PERIOD_NS)
              for i, frame in enumerate(vtest_frames_100_129[10:12])]
    new_ids = {p.track_id for msg in jumped for p in msg.persons}
    assert new_ids and not (new_ids & old_ids), (old_ids, new_ids)


def test_latency_budget_selects_steps(client, two_camera_node, cam0, vtest_frames_100_129):
    stamp = BASE_STAMP_NS + 30 * PERIOD_NS
    # the profiles cap automatic steps at 1 (the shipped model's best); the mechanism is tested
    # with a higher cap
    assert _set_param(client, 'max_auto_steps', 4).successful
    assert _set_param(client, 'latency_budget_ms', 10000.0).successful
    steps = [cam0.send(frame, stamp + i * PERIOD_NS).steps
             for i, frame in enumerate(vtest_frames_100_129[:3])]
    assert steps[-1] == 4, steps                          # max_auto_steps set above
    assert _set_param(client, 'latency_budget_ms', 1.0).successful
    start_s = time.monotonic()
    msg = cam0.send(vtest_frames_100_129[3], stamp + 3 * PERIOD_NS)
    msg = cam0.send(vtest_frames_100_129[4], stamp + 4 * PERIOD_NS)
    assert msg.steps == 1
    engine = client.wait_for(
        lambda: [diagnostics_values(m, 'pose engine') for t, m in client.received['/diagnostics']
                 if t > start_s and 'latency budget' in diagnostics_values(
                     m, 'pose engine').get('_message', '')], 10, 'the budget warning')
    assert 'running 1 step' in engine[-1]['_message']
    # the node's torch keeps the machine's thread count (ultralytics' OMP_NUM_THREADS=1 is undone)
    fresh = subprocess.run([sys.executable, '-c', 'import torch; print(torch.get_num_threads())'],
                           capture_output=True, text=True, timeout=120)
    assert engine[-1]['torch_threads'] == fresh.stdout.strip()
    assert _set_param(client, 'latency_budget_ms', 0.0).successful   # off: back to `steps`
    assert cam0.send(vtest_frames_100_129[5], stamp + 5 * PERIOD_NS).steps == 1
    assert _set_param(client, 'max_auto_steps', 1).successful         # the profile's cap again


def test_debug_image_only_while_subscribed(client, two_camera_node, cam0, vtest_frames_100_129):
    from sensor_msgs.msg import Image

    stamp = BASE_STAMP_NS + 40 * PERIOD_NS
    cam0.send(vtest_frames_100_129[0], stamp)
    assert '/diffpose/cam0/debug_image' not in client.received
    debug = client.subscribe(Image, '/diffpose/cam0/debug_image', _qos(False))
    client.wait_for(lambda: client.node.count_publishers('/diffpose/cam0/debug_image'), 10,
                    'the debug image publisher')
    time.sleep(0.5)
    frame = vtest_frames_100_129[1]
    cam0.send(frame, stamp + PERIOD_NS)
    images = client.wait_for(lambda: [m for _, m in debug
                                      if stamp_ns(m.header) == stamp + PERIOD_NS], 10,
                             'the annotated debug image')
    image = np.frombuffer(bytes(images[-1].data), np.uint8).reshape(frame.shape)
    assert images[-1].encoding == 'bgr8' and images[-1].header.frame_id == 'cam0_optical'
    assert np.any(image != frame)                          # something was drawn


def test_stale_input_is_reported(client, two_camera_node, cam0):
    # cam1 has a publisher (from an earlier test) but has been silent for a while
    start_s = time.monotonic()
    values = client.wait_for(
        lambda: (v := _latest_diagnostics(client, 'cam1', start_s)) and
        'no frames arrive' in v['_message'] and v, 10, 'the stale-input warning',
        two_camera_node)
    assert values['_level'] in (b'\x01', 1)


def test_lifecycle_deactivate_and_activate(client, two_camera_node, cam0, vtest_frames_100_129):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    def change(transition_id):
        request = ChangeState.Request()
        request.transition.id = transition_id
        return client.call(ChangeState, '/diffpose/change_state', request).success

    def state():
        return client.call(GetState, '/diffpose/get_state', GetState.Request(),
                           resend_after_s=15.0).current_state.label

    assert state() == 'active'
    stamp = BASE_STAMP_NS + 20 * PERIOD_NS
    cam0.send(vtest_frames_100_129[2], stamp - PERIOD_NS)      # the node knows this publisher
    assert change(Transition.TRANSITION_DEACTIVATE) and state() == 'inactive'
    cam0.publish(vtest_frames_100_129[0], stamp)
    time.sleep(2.0)
    assert not cam0.poses_at(stamp), 'an inactive node published poses'
    assert change(Transition.TRANSITION_ACTIVATE) and state() == 'active'
    cam0.wait_ready()
    msg = cam0.send(vtest_frames_100_129[1], stamp + PERIOD_NS)
    assert len(msg.persons) >= 1
    # the frame sent while inactive was not lost in transport (nobody subscribed)
    start_s = time.monotonic()
    values = client.wait_for(lambda: _latest_diagnostics(client, 'cam0', start_s), 10,
                             'diagnostics', two_camera_node)
    assert values['frames_lost_in_transport'] == '0', values


@pytest.fixture(scope='module')
def manual_compressed_node(tmp_path_factory, client):
    folder = tmp_path_factory.mktemp('node_compressed')
    params = write_params(folder / 'params.yaml', {
        'image_topics': ['/cam2/image_raw'], 'camera_names': ['cam2'],
        'transport': 'compressed', 'detector_imgsz': 1280, 'autostart': False,
        'use_sim_time': True, 'diagnostics_period_s': 0.25, 'intra_op_threads': 1,
    }, node_name='diffpose_compressed')
    node = NodeProcess(params, folder / 'node.log',
                       extra_args=('-r', '__node:=diffpose_compressed'))
    yield node
    code = node.stop()
    assert code == 0, f'node exited with {code}:\n{node.log()}'


def test_manual_lifecycle_with_compressed_frames(client, manual_compressed_node,
                                                 vtest_frames_100_129):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import CompressedImage

    from diffpose_ros.msg import PersonPoseArray

    name = '/diffpose_compressed'

    def change(transition_id):
        request = ChangeState.Request()
        request.transition.id = transition_id
        return client.call(ChangeState, f'{name}/change_state', request, 120).success

    def state():
        return client.call(GetState, f'{name}/get_state', GetState.Request(),
                           resend_after_s=15.0).current_state.label

    assert state() == 'unconfigured'           # autostart off: nothing happens by itself
    assert change(Transition.TRANSITION_CONFIGURE) and state() == 'inactive'
    assert change(Transition.TRANSITION_ACTIVATE) and state() == 'active'
    feeder = Feeder(client, manual_compressed_node, 'cam2', compressed=True)
    feeder.poses = client.subscribe(PersonPoseArray, f'{name}/cam2/poses')
    feeder.wait_ready()
    for i, frame in enumerate(vtest_frames_100_129[:3]):
        stamp = BASE_STAMP_NS + i * PERIOD_NS
        msg = feeder.send(frame, stamp)
        assert stamp_ns(msg.header) == stamp and len(msg.persons) >= 2
    for data in (b'', b'\xff\xd8\xff garbage, not a jpeg'):
        corrupt = CompressedImage(format='jpeg', data=data)
        corrupt.header.frame_id = 'cam2_optical'
        feeder.image_pub.publish(corrupt)
        time.sleep(0.2)
    start_s = time.monotonic()
    values = client.wait_for(
        lambda: (v := _latest_diagnostics(client, 'cam2', start_s)) and int(
            v.get('bad_input.corrupt_compressed', 0)) >= 1 and int(
            v.get('bad_input.empty', 0)) >= 1 and v, 15, 'corrupt frames counted',
        manual_compressed_node)
    assert values['camera_info'] == 'ok'
    assert float(values['service_p50_ms']) > 0 and float(values['slot_wait_p95_ms']) >= 0
    # intra_op_threads caps torch too (the detector runs on torch with the ORT backend)
    engine = [diagnostics_values(m, 'pose engine') for t, m in client.received['/diagnostics']
              if t >= start_s and diagnostics_values(m, 'pose engine')]
    assert engine and engine[-1]['torch_threads'] == '1', engine[-1:]
    assert engine[-1]['quantization'] == 'int8_encoder'  # the CPU default's graphs really run
    msg = feeder.send(vtest_frames_100_129[3], BASE_STAMP_NS + 3 * PERIOD_NS)
    assert len(msg.persons) >= 2
    assert change(Transition.TRANSITION_DEACTIVATE)
    assert change(Transition.TRANSITION_CLEANUP) and state() == 'unconfigured'


class _FakeRclpy:
    """rclpy's module API as main() uses it; spin() stops the way a SIGINT can."""

    def __init__(self, shut_down_before_raising: bool):
        self.shut_down_before_raising = shut_down_before_raising
        self.context_ok = False
        self.calls: list[str] = []

    def init(self, args=None):
        self.context_ok = True

    def ok(self):
        return self.context_ok

    def spin(self, node):
        if self.shut_down_before_raising:
            self.context_ok = False  # the SIGINT handler shut the context down first
        raise RuntimeError('failed to initialize wait set: the given context is not valid')

    def try_shutdown(self):
        self.calls.append('try_shutdown')
        self.context_ok = False


class _StubNode:
    destroyed = False

    def destroy_node(self):
        _StubNode.destroyed = True


@pytest.mark.parametrize('shut_down_first', [True, False])
def test_main_treats_an_error_after_shutdown_as_a_clean_stop(monkeypatch, shut_down_first):
    """A SIGINT can invalidate the context while the executor builds its next wait set: rclpy
    raises RCLError there, not ExternalShutdownException. main() exits 0 then, and still
    raises an error that comes while the context is alive; it cleans up either way."""
    import diffpose_ros.ros.node as node_module

    fake = _FakeRclpy(shut_down_first)
    monkeypatch.setattr(node_module, 'rclpy', fake)
    monkeypatch.setattr(node_module, 'DiffPoseNode', _StubNode)
    _StubNode.destroyed = False
    if shut_down_first:
        assert node_module.main([]) == 0
    else:
        with pytest.raises(RuntimeError, match='context is not valid'):
            node_module.main([])
    assert _StubNode.destroyed and fake.calls == ['try_shutdown']
