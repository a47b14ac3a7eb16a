"""3D keypoints from an aligned depth image, across real processes (issue 12).

One node process serves one RGB-D camera fed from here with real Kinect frames (colour JPEG,
registered 16-bit depth in mm, CameraInfo fx = fy = 525, cx = 320, cy = 240) on sim time:
poses_3d with the colour image's header and the man's shoulders at his measured distance; late,
off-stamp and missing depth (2D still published, no 3D, counted); bad depth images (counted per
kind, 2D continues); deactivate/activate; and, when the decoder is installed, compressedDepth
after a reconfigure of the same process. The frames are local data without a licence
(../shared/data/rgbd): the module skips without them.
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import pytest
from ros_harness import (
    NodeProcess,
    RosClient,
    camera_info_msg,
    clock_msg,
    diagnostics_values,
    image_msg,
    stamp_ns,
    write_params,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

RGBD = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'rgbd' / 'kinect_upper_body'
NODE_READY_S = 240
BASE_STAMP_NS = 2_000_000_000_000       # sim time 2000 s; each test uses its own stamp range
PERIOD_NS = 100_000_000
CAMERA = 'rgbd'
COLOUR_TOPIC = '/rgbd/color/image_raw'
DEPTH_TOPIC = '/rgbd/aligned_depth_to_color/image_raw'
INFO_TOPIC = '/rgbd/color/camera_info'
FRAME_ID = 'rgbd_color_optical_frame'
NO_3D_WAIT_S = 1.0


@pytest.fixture(scope='module')
def rgbd_frames():
    import cv2

    if not RGBD.is_dir():
        pytest.skip(f'RGB-D frames not found in {RGBD} (no licence: local data, never committed)')
    frames = []
    for index in range(24):
        colour = cv2.imread(str(RGBD / 'color' / f'{index:010d}.jpg'), cv2.IMREAD_COLOR)
        depth = cv2.imread(str(RGBD / 'depth' / f'{index:010d}.png'), cv2.IMREAD_UNCHANGED)
        assert colour is not None and depth is not None and depth.dtype == np.uint16, index
        frames.append((colour, depth))
    return frames


def _depth_msg(depth: np.ndarray, stamp: int, encoding: str = '16UC1'):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.header.frame_id = FRAME_ID
    msg.height, msg.width = depth.shape[:2]
    msg.encoding = encoding
    msg.step = depth.shape[1] * depth.itemsize * (depth.shape[2] if depth.ndim == 3 else 1)
    msg.data = np.ascontiguousarray(depth).tobytes()
    return msg


def _compressed_depth_msg(depth: np.ndarray, stamp: int):
    """compressed_depth_image_transport's 16UC1 layout: a 12-byte ConfigHeader (format enum,
    two floats unused for 16UC1), then the PNG of the millimetre image."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.header.frame_id = FRAME_ID
    msg.format = '16UC1; compressedDepth png'
    msg.data = struct.pack('<iff', 0, 0.0, 0.0) + cv2.imencode('.png', depth)[1].tobytes()
    return msg


class RgbdFeeder:
    """Publishes /clock, CameraInfo, colour and depth; collects the node's outputs."""

    def __init__(self, client: RosClient, node: NodeProcess):
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image
        from visualization_msgs.msg import MarkerArray

        from diffpose_ros.msg import PersonPose3DArray, PersonPoseArray

        self.client, self.node = client, node
        reliable = QoSProfile(depth=5)
        self.clock_pub = client.node.create_publisher(Clock, '/clock', 5)
        self.info_pub = client.node.create_publisher(CameraInfo, INFO_TOPIC, 5)
        self.colour_pub = client.node.create_publisher(Image, COLOUR_TOPIC, reliable)
        self.depth_pub = client.node.create_publisher(Image, DEPTH_TOPIC, reliable)
        self.compressed_depth_pub = client.node.create_publisher(
            CompressedImage, f'{DEPTH_TOPIC}/compressedDepth', reliable)
        self.poses = client.subscribe(PersonPoseArray, f'/diffpose/{CAMERA}/poses')
        self.poses_3d = client.subscribe(PersonPose3DArray, f'/diffpose/{CAMERA}/poses_3d')
        self.markers = client.subscribe(MarkerArray, f'/diffpose/{CAMERA}/markers')

    def wait_ready(self, depth_topic: str = DEPTH_TOPIC) -> None:
        self.client.wait_for(
            lambda: self.client.node.count_subscribers(COLOUR_TOPIC) > 0 and
            self.client.node.count_subscribers(depth_topic) > 0, NODE_READY_S,
            'the node to subscribe to colour and depth', self.node)
        time.sleep(0.5)

    def publish(self, colour: np.ndarray, stamp: int, depth_msg=None) -> None:
        self.clock_pub.publish(clock_msg(stamp))
        self.info_pub.publish(camera_info_msg(640, 480, stamp, FRAME_ID, focal_px=525.0))
        if depth_msg is not None:   # depth first, as a camera driver's aligned depth may come
            (self.compressed_depth_pub if hasattr(depth_msg, 'format')
             else self.depth_pub).publish(depth_msg)
        self.colour_pub.publish(image_msg(colour, stamp, FRAME_ID))

    def at(self, queue, stamp: int) -> list:
        return [msg for _, msg in queue if stamp_ns(msg.header) == stamp]

    def wait_poses(self, stamp: int, timeout_s: float = 60.0):
        return self.client.wait_for(lambda: self.at(self.poses, stamp), timeout_s,
                                    f'poses at {stamp}', self.node)[-1]

    def wait_poses_3d(self, stamp: int, timeout_s: float = 30.0):
        return self.client.wait_for(lambda: self.at(self.poses_3d, stamp), timeout_s,
                                    f'poses_3d at {stamp}', self.node)[-1]

    def send(self, colour: np.ndarray, depth: np.ndarray, stamp: int):
        """A frame with its depth (same stamp); returns (poses, poses_3d)."""
        self.publish(colour, stamp, _depth_msg(depth, stamp))
        return self.wait_poses(stamp), self.wait_poses_3d(stamp)


@pytest.fixture(scope='module')
def client():
    client = RosClient('depth_tester')
    yield client
    client.close()


@pytest.fixture(scope='module')
def depth_node(tmp_path_factory, client, rgbd_frames):
    from diagnostic_msgs.msg import DiagnosticArray

    folder = tmp_path_factory.mktemp('node_depth')
    params = write_params(folder / 'params.yaml', {
        'image_topics': [COLOUR_TOPIC], 'camera_names': [CAMERA],
        'camera_info_topics': [INFO_TOPIC], 'depth_topics': [DEPTH_TOPIC],
        'autostart': True, 'use_sim_time': True, 'diagnostics_period_s': 0.25,
        'publish_markers': True, 'publish_debug_image': False, 'latency_budget_ms': 0.0,
    })
    node = NodeProcess(params, folder / 'node.log')
    client.subscribe(DiagnosticArray, '/diagnostics')
    yield node
    code = node.stop()
    assert code == 0, f'node exited with {code}:\n{node.log()}'


@pytest.fixture(scope='module')
def feeder(client, depth_node):
    feeder = RgbdFeeder(client, depth_node)
    feeder.wait_ready()
    return feeder


def _diagnostics(client: RosClient, after_s: float) -> list[dict[str, str]]:
    return [values for received_s, msg in list(client.received['/diagnostics'])
            if received_s >= after_s and (values := diagnostics_values(msg, f'camera {CAMERA}'))]


def _fresh_diagnostics(client: RosClient, node: NodeProcess) -> dict[str, str]:
    start_s = time.monotonic()
    return client.wait_for(lambda: _diagnostics(client, start_s), 10, 'diagnostics', node)[-1]


def _person_distance_m(depth: np.ndarray, person) -> float:
    """The man's measured distance: median depth of his pixels (nearer than the wall at
    ~2.6 m) inside his box."""
    x0, y0 = int(max(person.box_x_min, 0)), int(max(person.box_y_min, 0))
    x1, y1 = int(person.box_x_max), int(person.box_y_max)
    region = depth[y0:y1, x0:x1].astype(np.float64) / 1000.0
    return float(np.median(region[(region > 0) & (region < 1.6)]))


def test_poses_3d_carry_the_colour_header_and_the_persons_depth(client, depth_node, feeder,
                                                                rgbd_frames):
    from visualization_msgs.msg import Marker

    for i, (colour, depth) in enumerate(rgbd_frames[:5]):
        stamp = BASE_STAMP_NS + i * PERIOD_NS
        poses, poses_3d = feeder.send(colour, depth, stamp)
        # exactly the colour image's header (as the 2D poses), the matched depth's stamp
        assert poses_3d.header == poses.header
        assert stamp_ns(poses_3d.header) == stamp and poses_3d.header.frame_id == FRAME_ID
        assert (poses_3d.depth_stamp.sec, poses_3d.depth_stamp.nanosec) == divmod(
            stamp, 1_000_000_000)
        assert poses_3d.camera == CAMERA
        assert poses.persons and poses_3d.persons
        assert {p.track_id for p in poses_3d.persons} <= {p.track_id for p in poses.persons}
        man_2d = max(poses.persons, key=lambda p: p.detection_score)
        [man] = [p for p in poses_3d.persons if p.track_id == man_2d.track_id]
        distance_m = _person_distance_m(depth, man_2d)
        assert 0.7 <= distance_m <= 0.95, distance_m
        assert len(man.keypoints) == 17
        assert abs(man.torso_depth_m - distance_m) <= 0.1, (man.torso_depth_m, distance_m)
        left, right = man.keypoints[5].position, man.keypoints[6].position
        for joint in (5, 6):                                     # the shoulders
            keypoint = man.keypoints[joint]
            assert keypoint.valid and 0 < keypoint.confidence <= 1, (i, joint)
        # at his distance (+-0.1 m); he starts turning round, so a single shoulder may lie a
        # little in front of or behind it (as in test_depth3d's sequence test)
        assert abs((left.z + right.z) / 2 - distance_m) <= 0.1, (i, left, right, distance_m)
        assert abs(left.z - distance_m) <= 0.15 and abs(right.z - distance_m) <= 0.15, (
            i, left, right, distance_m)
        width_m = float(np.hypot(left.x - right.x, np.hypot(left.y - right.y, left.z - right.z)))
        assert 0.25 <= width_m <= 0.55, width_m
        # the contract for the other joints: finite, never 0 m; invalid ones carry confidence 0
        for keypoint in man.keypoints:
            assert np.isfinite([keypoint.position.x, keypoint.position.y,
                                keypoint.position.z]).all() and keypoint.position.z > 0.1
            if not keypoint.valid:
                assert keypoint.confidence == 0.0
    # markers of the last frame: the man's joints at his depth, not on the 3 m marker plane
    arrays = client.wait_for(
        lambda: [m for _, m in feeder.markers if any(
            x.ns == 'joints' and x.action == Marker.ADD and stamp_ns(x.header) == stamp
            for x in m.markers)], 10, 'markers of the last frame', depth_node)
    [joints] = [m for m in arrays[-1].markers
                if m.ns == 'joints' and m.id == man.track_id and m.action == Marker.ADD]
    depths = [p.z for p in joints.points]
    valid = sum(k.valid for k in man.keypoints)
    assert len(depths) <= valid and all(abs(z - distance_m) < 0.5 for z in depths), depths
    values = _fresh_diagnostics(client, depth_node)
    assert values['depth_topic'] == DEPTH_TOPIC
    assert int(values['depth_frames_received']) >= 5
    assert int(values['poses_3d_published']) >= 5
    assert values['frames_without_depth'] == '0' and values['bad_depth_total'] == '0', values
    assert values['frames_without_camera_info'] == '0', values
    assert 0.2 <= float(values['valid_3d_joint_share']) <= 1.0, values


def test_late_off_stamp_or_missing_depth_keeps_2d_and_is_counted(client, depth_node, feeder,
                                                                 rgbd_frames):
    previous = _fresh_diagnostics(client, depth_node)
    before = int(previous['frames_without_depth'])
    before_info = int(previous['frames_without_camera_info'])
    start_s = time.monotonic()
    base = BASE_STAMP_NS + 10 * PERIOD_NS
    no_3d = []
    # missing: no depth at all
    stamp = base
    feeder.publish(rgbd_frames[5][0], stamp)
    assert feeder.wait_poses(stamp).persons
    no_3d.append(stamp)
    # off-stamp: depth 50 ms away from the colour frame (tolerance 20 ms)
    stamp = base + PERIOD_NS
    feeder.publish(rgbd_frames[6][0], stamp, _depth_msg(rgbd_frames[6][1], stamp + 50_000_000))
    assert feeder.wait_poses(stamp).persons
    no_3d.append(stamp)
    # late: the right depth arrives after the poses were published
    stamp = base + 2 * PERIOD_NS
    feeder.publish(rgbd_frames[7][0], stamp)
    assert feeder.wait_poses(stamp).persons
    feeder.depth_pub.publish(_depth_msg(rgbd_frames[7][1], stamp))
    no_3d.append(stamp)
    # no usable CameraInfo (uncalibrated, K = 0): no intrinsics, no 3D, counted separately
    stamp = base + 3 * PERIOD_NS
    uncalibrated = camera_info_msg(640, 480, stamp, FRAME_ID, focal_px=525.0)
    uncalibrated.k = [0.0] * 9
    feeder.clock_pub.publish(clock_msg(stamp))
    feeder.info_pub.publish(uncalibrated)
    time.sleep(0.2)
    feeder.depth_pub.publish(_depth_msg(rgbd_frames[8][1], stamp))
    feeder.colour_pub.publish(image_msg(rgbd_frames[8][0], stamp, FRAME_ID))
    assert feeder.wait_poses(stamp).persons
    no_3d.append(stamp)
    # the next frame with depth has 3D again; poses_3d is one reliable publisher, so anything
    # published for the frames before has arrived by now
    stamp = base + 4 * PERIOD_NS
    feeder.send(*rgbd_frames[9], stamp)
    time.sleep(NO_3D_WAIT_S)
    for skipped in no_3d:
        assert not feeder.at(feeder.poses_3d, skipped), skipped
    values = client.wait_for(
        lambda: (v := _diagnostics(client, start_s)) and int(
            v[-1]['frames_without_depth']) >= before + 3 and v, 10,
        'frames_without_depth counted', depth_node)
    assert int(values[-1]['frames_without_depth']) == before + 3, values[-1]
    assert int(values[-1]['frames_without_camera_info']) == before_info + 1, values[-1]
    # the reports covering those frames warned
    assert any('had no depth within 20 ms' in v['_message'] for v in values), \
        [v['_message'] for v in values]
    # depth stops while colour goes on: WARN after 3 s without depth
    start_s = time.monotonic()
    stamp = BASE_STAMP_NS + 100 * PERIOD_NS     # up to 30 s of frames: below the next test's
    while not any('no depth on' in v['_message'] for v in _diagnostics(client, start_s)):
        assert time.monotonic() - start_s < 30, 'no warning that depth stopped'
        feeder.publish(rgbd_frames[10][0], stamp)
        feeder.wait_poses(stamp)
        stamp += PERIOD_NS
    [warning] = [v for v in _diagnostics(client, start_s) if 'no depth on' in v['_message']][:1]
    assert warning['_level'] in (b'\x01', 1) and DEPTH_TOPIC in warning['_message'], warning


def test_bad_depth_images_are_counted_and_2d_continues(client, depth_node, feeder,
                                                      rgbd_frames):
    base = BASE_STAMP_NS + 1000 * PERIOD_NS
    colour, depth = rgbd_frames[9]
    # a CameraInfo with lens distortion: 3D assumes a rectified image, said once per camera
    distorted = camera_info_msg(640, 480, base, FRAME_ID, focal_px=525.0)
    distorted.d = [0.2, -0.5, 0.0, 0.0, 0.1]
    for _ in range(2):
        feeder.info_pub.publish(distorted)
        time.sleep(0.2)
    def truncated(stamp):
        msg = _depth_msg(depth, stamp)
        msg.data = bytes(msg.data)[:1000]
        return msg

    bad = {
        'size_mismatch': lambda stamp: _depth_msg(np.ascontiguousarray(depth[::2, ::2]), stamp),
        'unknown_encoding': lambda stamp: _depth_msg(colour, stamp, encoding='bgr8'),
        'truncated': truncated,
    }
    for i, (kind, make) in enumerate(bad.items()):
        stamp = base + i * PERIOD_NS
        feeder.publish(colour, stamp, make(stamp))
        assert feeder.wait_poses(stamp).persons, kind          # 2D keeps flowing
    stamp = base + len(bad) * PERIOD_NS
    feeder.send(colour, depth, stamp)                          # and good depth works again
    for i in range(len(bad)):
        assert not feeder.at(feeder.poses_3d, base + i * PERIOD_NS)
    start_s = time.monotonic()
    values = client.wait_for(
        lambda: (v := _diagnostics(client, start_s)) and all(
            int(v[-1][f'bad_depth.{kind}']) == 1 for kind in bad) and v[-1], 15,
        'bad depth counted per kind', depth_node)
    assert int(values['bad_depth_total']) == len(bad), values
    log = depth_node.log_path.read_text()
    assert 'bad depth image' in log and 'size_mismatch' in log
    assert log.count('non-zero distortion') == 1 and 'rectified' in log


def _change_state(client, transition_id) -> bool:
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request()
    request.transition.id = transition_id
    return client.call(ChangeState, '/diffpose/change_state', request, 240).success


def test_lifecycle_deactivate_activate_with_depth(client, depth_node, feeder, rgbd_frames):
    from lifecycle_msgs.msg import Transition

    base = BASE_STAMP_NS + 1100 * PERIOD_NS
    assert _change_state(client, Transition.TRANSITION_DEACTIVATE)
    client.wait_for(lambda: client.node.count_subscribers(DEPTH_TOPIC) == 0, 10,
                    'the depth subscription to go', depth_node)
    feeder.publish(rgbd_frames[10][0], base, _depth_msg(rgbd_frames[10][1], base))
    time.sleep(NO_3D_WAIT_S)
    assert not feeder.at(feeder.poses, base) and not feeder.at(feeder.poses_3d, base)
    assert _change_state(client, Transition.TRANSITION_ACTIVATE)
    feeder.wait_ready()
    for i in (1, 2):
        stamp = base + i * PERIOD_NS
        _, poses_3d = feeder.send(*rgbd_frames[10 + i], stamp)
        assert stamp_ns(poses_3d.header) == stamp and poses_3d.persons


def test_compressed_depth_after_reconfigure(client, depth_node, feeder, rgbd_frames):
    pytest.importorskip('diffpose_ros.compressed_depth')
    from lifecycle_msgs.msg import Transition
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    assert _change_state(client, Transition.TRANSITION_DEACTIVATE)
    assert _change_state(client, Transition.TRANSITION_CLEANUP)
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value='compressedDepth')
    request = SetParameters.Request(parameters=[Parameter(name='depth_transport', value=value)])
    [result] = client.call(SetParameters, '/diffpose/set_parameters', request).results
    assert result.successful, result.reason
    assert _change_state(client, Transition.TRANSITION_CONFIGURE)
    assert _change_state(client, Transition.TRANSITION_ACTIVATE)
    feeder.wait_ready(f'{DEPTH_TOPIC}/compressedDepth')
    base = BASE_STAMP_NS + 1200 * PERIOD_NS
    for i in range(2):
        stamp = base + i * PERIOD_NS
        colour, depth = rgbd_frames[13 + i]
        feeder.publish(colour, stamp, _compressed_depth_msg(depth, stamp))
        poses, poses_3d = feeder.wait_poses(stamp), feeder.wait_poses_3d(stamp)
        man_2d = max(poses.persons, key=lambda p: p.detection_score)
        [man] = [p for p in poses_3d.persons if p.track_id == man_2d.track_id]
        assert abs(man.torso_depth_m - _person_distance_m(depth, man_2d)) <= 0.1
    # a corrupt one is counted, 2D continues
    stamp = base + 2 * PERIOD_NS
    corrupt = _compressed_depth_msg(rgbd_frames[15][1], stamp)
    corrupt.data = bytes(corrupt.data)[:200]
    feeder.publish(rgbd_frames[15][0], stamp, corrupt)
    assert feeder.wait_poses(stamp).persons
    start_s = time.monotonic()
    client.wait_for(lambda: (v := _diagnostics(client, start_s)) and int(
        v[-1]['bad_depth.corrupt_compressed']) >= 1, 15, 'the corrupt depth counted', depth_node)
