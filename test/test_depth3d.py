"""3D keypoints from registered depth (diffpose_ros/depth3d.py): exact planes, invalid depth,
the torso check, bad input, and real Kinect RGB-D frames with the real detector."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.depth3d import (
    DepthConfig,
    DepthFrame,
    Intrinsics,
    StampMatcher,
    depth_to_metres,
    keypoints_to_3d,
    persons_to_3d,
)

K = Intrinsics(fx=500.0, fy=480.0, cx=320.0, cy=240.0)
RGBD = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'rgbd'


def _person(points_xy, conf=0.9):
    """One person (1, 17, 3) with the given joints placed (index -> (u, v)), others at conf 0."""
    kpts = np.zeros((1, 17, 3))
    for joint, (u, v) in points_xy.items():
        kpts[0, joint] = (u, v, conf)
    return kpts


TORSO = {5: (300.0, 200.0), 6: (360.0, 200.0), 11: (305.0, 300.0), 12: (355.0, 300.0)}
BOX = np.array([[260.0, 120.0, 400.0, 420.0]])


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_a_plane_gives_exact_back_projected_coordinates(encoding):
    z_m = 2.345
    depth = (np.full((480, 640), 2345, np.uint16) if encoding == '16UC1'
             else np.full((480, 640), z_m, np.float32))
    joints = {**TORSO, 9: (10.4, 470.6), 10: (633.0, 3.0), 0: (320.0, 240.0)}
    result = keypoints_to_3d(_person(joints), BOX, depth_to_metres(depth, encoding), K)
    for joint, (u, v) in joints.items():
        assert result.valid[0, joint]
        # pixel centres at +0.5 (the message convention), K counts from pixel centres
        expected = ((u - 0.5 - K.cx) * z_m / K.fx, (v - 0.5 - K.cy) * z_m / K.fy, z_m)
        np.testing.assert_allclose(result.xyz_m[0, joint], expected, atol=1e-3)
        assert result.confidence[0, joint] == pytest.approx(0.9, abs=1e-6)
    # no 2D joint: invalid, on the box centre's ray at the torso depth (never 0 m or NaN)
    assert not result.valid[0, 1] and result.confidence[0, 1] == 0
    np.testing.assert_allclose(result.xyz_m[0, 1, 2], z_m, atol=1e-3)
    assert result.has_depth.all() and np.isfinite(result.xyz_m).all()


def test_invalid_depth_marks_joints_invalid_never_zero_or_nan_positions():
    depth = np.full((480, 640), 1500, np.uint16)
    depth[:, 500:] = 0                      # no data (16UC1 0)
    joints = {**TORSO, 10: (560.0, 250.0), 9: (250.0, 250.0)}
    result = keypoints_to_3d(_person(joints), BOX, depth_to_metres(depth, '16UC1'), K)
    assert not result.valid[0, 10] and result.confidence[0, 10] == 0
    assert result.valid[0, 9] and result.xyz_m[0, 9, 2] == pytest.approx(1.5, abs=1e-3)
    float_depth = np.full((480, 640), 1.5, np.float32)
    float_depth[:, 500:] = np.nan
    float_depth[:100, :] = np.inf
    float_depth[100:120, :] = 0.0
    joints[7] = (300.0, 50.0)     # on Inf
    joints[8] = (340.0, 110.0)    # on 0.0
    result = keypoints_to_3d(_person(joints), BOX, depth_to_metres(float_depth, '32FC1'), K)
    for joint in (10, 7, 8):
        assert not result.valid[0, joint] and result.confidence[0, joint] == 0
        # on its pixel's ray at the torso depth: neither the no-data 0 nor NaN/Inf
        u, v = joints[joint]
        expected = ((u - 0.5 - K.cx) * 1.5 / K.fx, (v - 0.5 - K.cy) * 1.5 / K.fy, 1.5)
        np.testing.assert_allclose(result.xyz_m[0, joint], expected, atol=1e-3)
    assert np.isfinite(result.xyz_m).all() and (result.xyz_m[..., 2] > 0.1).all()
    # a person with no depth at all: every joint invalid, and the person has no 3D pose
    result = keypoints_to_3d(_person(joints), BOX, np.full((480, 640), np.nan, np.float32), K)
    assert not result.valid.any() and np.isnan(result.torso_depth_m).all()
    assert not result.has_depth.any()


def test_a_joint_on_the_person_edge_that_lands_on_the_wall_is_rejected():
    """Person (a box at 1.2 m) in front of a wall at 3.0 m: a wrist keypoint just outside the
    person's silhouette sees only wall: invalid, not placed at 3 m. A wrist whose window is
    half on the person keeps the person's depth."""
    depth = np.full((480, 640), 3000, np.uint16)
    depth[110:430, 280:380] = 1200
    joints = {**TORSO, 9: (392.0, 260.0), 10: (381.0, 260.0)}
    result = keypoints_to_3d(_person(joints), BOX, depth_to_metres(depth, '16UC1'), K)
    assert result.torso_depth_m[0] == pytest.approx(1.2, abs=1e-3)
    assert not result.valid[0, 9]
    assert result.valid[0, 10] and result.xyz_m[0, 10, 2] == pytest.approx(1.2, abs=1e-3)
    assert 0 < result.support[0, 10] < 1
    # a plain median over the window would have put that wrist on the wall
    loose = keypoints_to_3d(_person(joints), BOX, depth_to_metres(depth, '16UC1'), K,
                            DepthConfig(band_behind_m=5.0, min_support=0.01))
    assert loose.xyz_m[0, 9, 2] == pytest.approx(3.0, abs=1e-3)


def test_persons_are_vectorised_and_windows_scale_with_the_box():
    depth = np.full((480, 640), 2000, np.uint16)
    depth[238:243, 318:323] = 1000  # a 5x5 patch: only a small window sees it as the majority
    kpts = np.concatenate([_person({**TORSO, 0: (320.0, 240.0)}) for _ in range(2)])
    boxes = np.array([[300.0, 200.0, 340.0, 260.0], [100.0, 20.0, 540.0, 470.0]])
    result = keypoints_to_3d(kpts, boxes, depth_to_metres(depth, '16UC1'), K,
                             DepthConfig(band_front_m=5.0, band_behind_m=5.0))
    assert result.xyz_m.shape == (2, 17, 3)
    assert result.xyz_m[0, 0, 2] == pytest.approx(1.0, abs=1e-3)   # small person: 5x5 window
    assert result.xyz_m[1, 0, 2] == pytest.approx(2.0, abs=1e-3)   # large person: 21x21 window


@pytest.mark.parametrize('image, encoding, message', [
    (np.zeros((4, 4), np.uint16), 'rgb8', 'unsupported depth encoding'),
    (np.zeros((4, 4), np.float32), '16UC1', 'must be uint16'),
    (np.zeros((4, 4), np.uint16), '32FC1', 'must be float32'),
    (np.zeros((4, 4, 3), np.uint16), '16UC1', 'must be 2-D'),
    (np.zeros((0, 4), np.uint16), '16UC1', 'must be 2-D and non-empty'),
])
def test_bad_depth_images_are_refused_with_a_clear_error(image, encoding, message):
    with pytest.raises(ValueError, match=message):
        depth_to_metres(image, encoding)


def test_bad_intrinsics_and_settings_are_refused():
    with pytest.raises(ValueError):
        Intrinsics(fx=0.0, fy=500.0, cx=1.0, cy=1.0)
    with pytest.raises(ValueError):
        Intrinsics(fx=float('nan'), fy=500.0, cx=1.0, cy=1.0)
    with pytest.raises(ValueError):
        DepthConfig(min_support=0.0)
    with pytest.raises(ValueError):
        DepthConfig(band_front_m=-1.0)
    assert Intrinsics.from_k([525, 0, 320, 0, 525, 240, 0, 0, 1]) == Intrinsics(525, 525, 320, 240)


@pytest.fixture(scope='module')
def photo_detector():
    """YOLO11n-pose at imgsz 640 (the node's default), sha256-checked weights."""
    from diffpose_ros.assets import AssetError
    from diffpose_ros.detection import UltralyticsPoseDetector

    try:
        return UltralyticsPoseDetector(imgsz=640)
    except AssetError as exc:
        pytest.fail(str(exc))


def _upper_body(index: int):
    import cv2

    root = RGBD / 'kinect_upper_body'
    if not root.is_dir():
        pytest.skip(f'RGB-D frames not found in {root} (no licence: local data, never committed)')
    colour = cv2.imread(str(root / 'color' / f'{index:010d}.jpg'), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(root / 'depth' / f'{index:010d}.png'), cv2.IMREAD_UNCHANGED)
    return colour, depth


def _person_3d(detector, index):
    colour, depth = _upper_body(index)
    persons = detector.detect(colour)
    assert len(persons) >= 1, index
    person = max(persons, key=lambda p: p.score)
    depth_m = depth_to_metres(depth, '16UC1')
    result = keypoints_to_3d(person.keypoints[None], np.asarray(person.box_xyxy)[None], depth_m,
                             Intrinsics(525, 525, 320, 240))
    # the man's measured distance in this frame: median depth of his pixels (nearer than the
    # wall) inside his box; the dataset's README gives 0.79-0.88 m over the sequence
    x0, y0, x1, y1 = np.asarray(person.box_xyxy).astype(int)
    region = depth_m[max(y0, 0):y1, max(x0, 0):x1]
    return result, float(np.nanmedian(region[region < 1.6]))


@pytest.mark.parametrize('index', [0, 95])
def test_real_kinect_frames_facing_the_camera_put_shoulders_and_elbows_at_the_person(
        index, photo_detector):
    """Facing the camera: shoulders and elbows at his distance (+-0.1 m) and an anatomical 3D
    shoulder width."""
    result, distance_m = _person_3d(photo_detector, index)
    assert 0.75 <= distance_m <= 0.95, distance_m
    for joint in (5, 6, 7, 8):
        assert result.valid[0, joint], joint
        assert abs(result.xyz_m[0, joint, 2] - distance_m) <= 0.1, (joint, result.xyz_m[0, joint],
                                                                    distance_m)
    width = float(np.linalg.norm(result.xyz_m[0, 5] - result.xyz_m[0, 6]))
    assert 0.3 <= width <= 0.5, width


def test_real_kinect_sequence_keeps_every_joint_on_the_person(photo_detector):
    """Every 10th frame while he turns round (front, side, back): no valid joint on the wall
    (~2.6 m) or at 0 m, and the shoulders' midpoint at his distance (+-0.1 m). Single shoulders
    of a turned body lie up to ~0.2 m in front of or behind that distance, as they should."""
    for index in range(0, 100, 10):
        result, distance_m = _person_3d(photo_detector, index)
        valid_z = result.xyz_m[0, result.valid[0], 2]
        assert ((valid_z > 0.5) & (valid_z < 1.5)).all(), (index, valid_z)
        shoulders = result.xyz_m[0, [5, 6], 2][result.valid[0, [5, 6]]]
        assert len(shoulders), index
        assert abs(float(np.mean(shoulders)) - distance_m) <= 0.1, (index, shoulders, distance_m)


def test_real_kinect_joints_in_the_shadow_or_on_the_wall_are_invalid(photo_detector):
    """Keypoints moved onto the wall beside the man, or into the Kinect's shadow (no depth),
    are invalid, never placed at the wall's depth."""
    colour, depth = _upper_body(0)
    person = max(photo_detector.detect(colour), key=lambda p: p.score)
    depth_m = depth_to_metres(depth, '16UC1')
    kpts = person.keypoints.copy()
    wall = np.argwhere(depth_m > 2.0)
    shadow = np.argwhere(np.isnan(depth_m[:, 320:])) + [0, 320]
    assert len(wall) and len(shadow)
    # the wall pixel and the shadow pixel farthest from any depth change
    kpts[9, :2] = wall[len(wall) // 2][::-1]
    kpts[10, :2] = shadow[len(shadow) // 2][::-1]
    kpts[9:11, 2] = 0.9
    result = keypoints_to_3d(kpts[None], np.asarray(person.box_xyxy)[None], depth_m,
                             Intrinsics(525, 525, 320, 240))
    assert not result.valid[0, 9] and not result.valid[0, 10]
    assert result.valid[0, 5] and result.valid[0, 6]


def test_real_colour_frame_with_synthetic_depth_gives_exact_positions(photo_detector):
    """The real detector on a real colour frame; synthetic depth with a known answer: the
    person's box is a slab at 1.25 m in front of a wall at 3.0 m. Joints well inside the box
    come out exactly on the slab (1 mm), back-projected from their keypoints; joints that the
    detector put outside the box see only the wall and are invalid."""
    colour, _ = _upper_body(0)
    person = max(photo_detector.detect(colour), key=lambda p: p.score)
    box = np.asarray(person.box_xyxy, np.float64)
    height, width = colour.shape[:2]
    depth = np.full((height, width), 3000, np.uint16)
    x0, y0 = np.floor(np.maximum(box[:2], 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(box[2:], [width, height])).astype(int)
    depth[y0:y1, x0:x1] = 1250
    intrinsics = Intrinsics(525, 525, 320, 240)
    result = keypoints_to_3d(person.keypoints[None], box[None], DepthFrame(depth, '16UC1'),
                             intrinsics)
    kpts = person.keypoints
    margin = 12  # > the largest half window (10 px): the whole window is on the slab
    inside = ((kpts[:, 0] >= x0 + margin) & (kpts[:, 0] < x1 - margin)
              & (kpts[:, 1] >= y0 + margin) & (kpts[:, 1] < y1 - margin) & (kpts[:, 2] >= 0.3))
    assert inside[[5, 6]].all(), kpts[[5, 6]]  # both shoulders of the man facing the camera
    for joint in np.flatnonzero(inside):
        u, v = kpts[joint, :2]
        expected = ((u - 0.5 - 320) * 1.25 / 525, (v - 0.5 - 240) * 1.25 / 525, 1.25)
        assert result.valid[0, joint], joint
        np.testing.assert_allclose(result.xyz_m[0, joint], expected, atol=1e-3)
        assert result.confidence[0, joint] == pytest.approx(kpts[joint, 2], abs=1e-6)
    outside = ((kpts[:, 0] < x0 - margin) | (kpts[:, 0] >= x1 + margin)
               | (kpts[:, 1] < y0 - margin) | (kpts[:, 1] >= y1 + margin))
    assert not result.valid[0, outside].any()
    assert result.torso_depth_m[0] == pytest.approx(1.25, abs=1e-3)


def test_stamp_matcher_pairs_the_nearest_depth_within_tolerance_and_stays_bounded():
    matcher = StampMatcher(capacity=4)
    assert matcher.nearest(100, 10**9) is None
    for stamp_ns in (1_000, 34_000, 67_000, 100_000, 133_000):
        matcher.add(stamp_ns, f'depth@{stamp_ns}')
    assert len(matcher) == 4                       # the oldest (1_000) was evicted
    assert matcher.nearest(70_000, 5_000) == (67_000, 'depth@67000')
    assert matcher.nearest(84_000, 5_000) is None  # 17 us from both neighbours
    assert matcher.nearest(1_000, 1_000) is None   # evicted
    matcher.clear()
    assert len(matcher) == 0


def test_persons_to_3d_reads_pipeline_persons():
    class Person:
        def __init__(self, joints):
            self.keypoints = _person(joints)[0]
            self.box_xyxy = BOX[0]

    depth = depth_to_metres(np.full((480, 640), 2000, np.uint16), '16UC1')
    result = persons_to_3d([Person(TORSO), Person(TORSO)], depth, K)
    assert result.valid.shape == (2, 17) and result.has_depth.all()
    np.testing.assert_allclose(result.xyz_m[:, 5, 2], 2.0, atol=1e-3)
    assert persons_to_3d([], depth, K).xyz_m.shape == (0, 17, 3)


def test_back_projection_agrees_with_the_marker_plane_convention():
    """depth3d and markers.backproject share the message's pixel convention (centres at +0.5):
    the same keypoints at the same depth give the same points."""
    markers = pytest.importorskip('diffpose_ros.ros.markers')
    depth = depth_to_metres(np.full((480, 640), 1800, np.uint16), '16UC1')
    kpts = _person({**TORSO, 9: (123.25, 321.75)})
    result = keypoints_to_3d(kpts, BOX, depth, K)
    k_matrix = [[K.fx, 0, K.cx], [0, K.fy, K.cy], [0, 0, 1]]
    joints = [5, 6, 9, 11, 12]
    plane = markers.backproject(kpts[0, joints, :2], k_matrix, 1.8)
    np.testing.assert_allclose(result.xyz_m[0, joints], plane, atol=1e-6)


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_a_depth_frame_as_it_arrived_gives_the_same_3d_as_the_whole_image_in_metres(encoding):
    """The node passes the raw image (converted only where sampled): same result as converting
    the whole frame first, with 0/NaN/Inf still no data."""
    rng = np.random.default_rng(3)
    millimetres = rng.integers(800, 3000, (480, 640)).astype(np.uint16)
    millimetres[:, 400:] = 0
    raw = millimetres if encoding == '16UC1' else millimetres.astype(np.float32) / 1000
    if encoding == '32FC1':
        raw[:50] = np.inf
    frame = DepthFrame(raw, encoding)
    joints = {**TORSO, 9: (420.0, 250.0), 0: (330.0, 30.0)}
    from_frame = keypoints_to_3d(_person(joints), BOX, frame, K)
    from_metres = keypoints_to_3d(_person(joints), BOX, depth_to_metres(raw, encoding), K)
    for field in ('xyz_m', 'valid', 'support', 'confidence', 'torso_depth_m'):
        np.testing.assert_array_equal(getattr(from_frame, field), getattr(from_metres, field))
    assert not from_frame.valid[0, 9]
    with pytest.raises(ValueError, match='must be uint16'):
        DepthFrame(raw.astype(np.int32), '16UC1')
