"""diffpose-bag with depth (issue 12): `make --depth` from 16-bit PNG depth frames and
`evaluate`'s 3D validity figures, on 5 real Kinect RGB-D frames (../shared/data/rgbd, never
part of the repository; skipped when absent) with the real detector.

The bag is read back with rosbags and with the independent mcap reader: the depth messages hold
the PNGs' values, with the colour frames' stamps and frame_id; the CameraInfo the intrinsics of
the dataset's OpenCV file. Bad depth folders end with one line, no traceback and no partial bag.
`evaluate` runs the pipeline and the 3D stage over the bag (the person faces the camera in these
frames: both shoulders valid at his measured distance), and scores a recording holding a
PersonPose3DArray topic written from the same 2D poses and depth PNGs by this test.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros import depth3d
from diffpose_ros.bags import depth as bag_depth
from diffpose_ros.bags import io, make
from diffpose_ros.cli import bag as cli
from diffpose_ros.ros.image_conversion import ImageConversionError, depth_image_to_array
from diffpose_ros.skeleton import KEYPOINT_NAMES

ROOT = Path(__file__).resolve().parents[1]
RGBD = ROOT.parent / 'shared' / 'data' / 'rgbd' / 'kinect_upper_body'
INTRINSICS_XML = RGBD / 'camera_0000000000.xml'
N_FRAMES = 5
FPS = 30
PERIOD_NS = round(1e9 / FPS)
IMAGE, INFO = '/camera/image_raw', '/camera/camera_info'
DEPTH = '/camera/aligned_depth_to_color/image_raw'
POSES, POSES_3D = '/diffpose/camera/poses', '/diffpose/camera/poses_3d'
K_KINECT = [525.0, 0.0, 320.0, 0.0, 525.0, 240.0, 0.0, 0.0, 1.0]

pytestmark = pytest.mark.skipif(not (RGBD / 'depth').is_dir(),
                                reason=f'real RGB-D frames not here ({RGBD}; see '
                                       '../shared/data/rgbd/README.md)')


def _imread(path: Path, flags: int | None = None) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED if flags is None else flags)


def _make(*args: str) -> int:
    return cli.main(['make', *args, '-q'])


def _read(path: Path) -> list[tuple[str, int, object]]:
    with io.open_bag(path) as reader:
        store = io.bag_typestore(reader)
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in io.iter_messages(reader, reader.connections)]


def _stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _depth_array(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), '<u2').reshape(msg.height, msg.width)


def _load(folder: Path) -> dict:
    return json.loads((folder / 'evaluation.json').read_text())


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('bag_depth')


@pytest.fixture(scope='module')
def rgbd(work) -> tuple[Path, Path]:
    """The first 5 colour JPEGs and depth PNGs, copied (a folder of exactly these frames)."""
    colour, depth = work / 'color', work / 'depth'
    colour.mkdir()
    depth.mkdir()
    for i in range(N_FRAMES):
        shutil.copy(RGBD / 'color' / f'{i:010d}.jpg', colour)
        shutil.copy(RGBD / 'depth' / f'{i:010d}.png', depth)
    return colour, depth


@pytest.fixture(scope='module')
def depth_bag(work, rgbd) -> Path:
    colour, depth = rgbd
    out = work / 'rgbd'
    assert _make(str(colour), '--depth', str(depth), '--intrinsics', str(INTRINSICS_XML),
                 '--fps', str(FPS), '--out', str(out)) == 0
    return out


@pytest.fixture(scope='module')
def offline(work, depth_bag) -> Path:
    out = work / 'offline'
    assert cli.main(['evaluate', str(depth_bag), '--out', str(out), '-q', '--detection-cache',
                     str(work / 'detections.json')]) == 0
    return out


# -------------------------------------------------------------------------------------- make
def test_depth_bag_reads_back_with_the_pngs_values_and_colour_stamps(depth_bag, rgbd):
    colour, depth = rgbd
    messages = _read(depth_bag)
    assert {t for t, _, _ in messages} == {IMAGE, INFO, DEPTH}
    images = [(t, m) for topic, t, m in messages if topic == IMAGE]
    depths = [(t, m) for topic, t, m in messages if topic == DEPTH]
    infos = [m for topic, _, m in messages if topic == INFO]
    assert len(images) == len(depths) == len(infos) == N_FRAMES
    pngs = sorted(depth.glob('*.png'))
    for i, ((t_img, img), (t_depth, dep), png) in enumerate(zip(images, depths, pngs)):
        expected_stamp = make.DEFAULT_START_TIME_NS + round(i * 1e9 / FPS)
        assert _stamp(dep.header) == _stamp(img.header) == expected_stamp == t_depth == t_img
        assert dep.header.frame_id == img.header.frame_id == make.DEFAULT_FRAME_ID
        assert (dep.encoding, dep.is_bigendian, dep.width, dep.height, dep.step) == \
            ('16UC1', 0, 640, 480, 1280)
        values = _imread(png)
        assert values.dtype == np.uint16 and (values > 0).mean() > 0.5    # real depth
        np.testing.assert_array_equal(_depth_array(dep), values)
    for info in infos:
        np.testing.assert_array_equal(info.k, K_KINECT)
        assert (info.width, info.height) == (640, 480) and not np.any(info.d)
    custom = io.bag_info(depth_bag)['custom_data']
    assert custom['diffpose_ros.depth_topic'] == DEPTH
    assert custom['diffpose_ros.depth_match'] == 'stem'
    assert custom['diffpose_ros.intrinsics'] == '525.0,525.0,320.0,240.0'
    # the independent reader decodes the same values
    from mcap_ros2.reader import read_ros2_messages

    [mcap_file] = depth_bag.glob('*.mcap')
    read = [m for m in read_ros2_messages(str(mcap_file)) if m.channel.topic == DEPTH]
    assert len(read) == N_FRAMES
    for m, png in zip(read, pngs):
        assert m.ros_msg.encoding == '16UC1'
        np.testing.assert_array_equal(
            np.frombuffer(bytes(m.ros_msg.data), '<u2').reshape(480, 640), _imread(png))


def test_depth_by_name_order_numeric_intrinsics_and_own_topic(work, rgbd, capsys):
    """Depth PNGs named unlike the colour frames pair by sorted order."""
    colour, depth = rgbd
    renamed = work / 'depth_renamed'
    renamed.mkdir()
    for i, png in enumerate(sorted(depth.glob('*.png'))):
        shutil.copy(png, renamed / f'depth_{i:03d}.png')
    out = work / 'ordered'
    assert _make(str(colour), '--depth', str(renamed), '--intrinsics', '525,525,320,240',
                 '--depth-topic', '/cam/depth/image_rect_raw', '--compressed', '--out',
                 str(out)) == 0
    assert 'depth paired by order' in capsys.readouterr().out
    messages = _read(out)
    depths = [m for t, _, m in messages if t == '/cam/depth/image_rect_raw']
    images = [m for t, _, m in messages if t == '/camera/image_raw/compressed']
    assert [_stamp(m.header) for m in depths] == [_stamp(m.header) for m in images]
    for msg, png in zip(depths, sorted(depth.glob('*.png'))):
        np.testing.assert_array_equal(_depth_array(msg), _imread(png))
    np.testing.assert_array_equal(
        next(m for t, _, m in messages if t == INFO).k, K_KINECT)


def _bad_folder(work: Path, name: str, rgbd, edit) -> Path:
    folder = work / name
    shutil.copytree(rgbd[1], folder)
    edit(sorted(folder.glob('*.png')))
    return folder


def test_bad_depth_folders_fail_with_one_line_and_no_bag(work, rgbd, capsys):
    import cv2

    colour = rgbd[0]
    folders = {
        'count': _bad_folder(work, 'd_count', rgbd, lambda pngs: pngs[-1].unlink()),
        'bits': _bad_folder(work, 'd_bits', rgbd, lambda pngs: cv2.imwrite(
            str(pngs[2]), (_imread(pngs[2]) // 20).astype(np.uint8))),
        'size': _bad_folder(work, 'd_size', rgbd, lambda pngs: cv2.imwrite(
            str(pngs[1]), _imread(pngs[1])[::2, ::2].copy())),
        'stem': _bad_folder(work, 'd_stem', rgbd, lambda pngs: pngs[0].rename(
            pngs[0].with_name('other.png'))),
    }
    cases = [
        (['--depth', str(folders['count'])],
         'holds 4 PNG(s) for 5 colour frame(s), and their file stems differ too'),
        (['--depth', str(folders['bits'])], '0000000002.png is a 8-bit PNG with 1 channel(s); '
                                            'depth frames must be 16-bit single-channel PNGs'),
        (['--depth', str(folders['size'])], '0000000001.png is 320x240 but colour frame '
                                            '0000000001.jpg is 640x480'),
        (['--depth', str(folders['stem']), '--depth-match', 'stem'],
         '1 of the 5 colour frame(s) have no depth PNG of the same stem (first: 0000000000.jpg)'),
        (['--depth', str(work / 'nowhere')], 'does not exist'),
        (['--depth', str(colour)], 'holds no .png files'),
        (['--depth', str(rgbd[1]), '--intrinsics', str(work / 'none.xml')], 'does not exist'),
        (['--depth', str(rgbd[1]), '--intrinsics', str(RGBD / 'color' / '0000000000.jpg')],
         'not an OpenCV FileStorage file'),
        (['--depth', str(rgbd[1]), '--intrinsics', '525,525,900,240'],
         'principal point (900, 240) lies outside the 640x480 frames'),
    ]
    for extra, message in cases:
        out = work / 'bad'
        assert _make(str(colour), *extra, '--out', str(out)) == cli.EXIT_ERROR, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith('diffpose-bag make: error:') and message in err[-1], err
        assert not out.exists(), extra                       # no partial bag
    # usage errors: 2
    for extra in (['--intrinsics', '525,525,320'], ['--intrinsics', '0,525,320,240'],
                  ['--intrinsics', '525,525,320,240', '--hfov-deg', '70']):
        with pytest.raises(SystemExit) as exc:
            cli.main(['make', str(colour), '--out', str(work / 'bad'), *extra])
        assert exc.value.code == cli.EXIT_USAGE, extra
        capsys.readouterr()
    assert _make(str(colour), '--depth-topic', '/d', '--out', str(work / 'bad')) == \
        cli.EXIT_USAGE
    # in its own process: no traceback
    proc = subprocess.run([sys.executable, '-m', 'diffpose_ros.cli.bag', 'make', str(colour),
                           '--depth', str(folders['bits']), '--out', str(work / 'bad'), '-q'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == cli.EXIT_ERROR and 'Traceback' not in proc.stderr, proc.stderr
    assert '16-bit single-channel' in proc.stderr and not (work / 'bad').exists()


# ---------------------------------------------------------------------------------- evaluate
def test_evaluate_reports_the_3d_validity_share(offline, capsys):
    summary = _load(offline)
    d3 = summary['depth_3d']
    assert d3['available'] and d3['depth_topic'] == DEPTH and d3['camera_info_topic'] == INFO
    assert d3['intrinsics'] == {'fx': 525.0, 'fy': 525.0, 'cx': 320.0, 'cy': 240.0}
    assert d3['tolerance_ms'] == 20.0 and d3['depth_messages'] == N_FRAMES
    assert (d3['frames_scored'], d3['frames_with_depth'], d3['frames_without_depth'],
            d3['frames_bad_depth']) == (N_FRAMES, N_FRAMES, 0, 0)
    assert d3['depth_offset_ms'] == {'p50': 0.0, 'max': 0.0}
    # one man facing the camera in every frame
    assert d3['persons_in_frames_with_depth'] == d3['persons_with_depth'] == N_FRAMES
    assert 0 < d3['valid_joint_share'] <= 1
    assert d3['valid_joint_share'] == d3['valid_joints'] / (17 * N_FRAMES)
    assert d3['valid_confident_share'] == d3['valid_confident_joints'] / d3['confident_joints']
    assert d3['valid_confident_share'] >= d3['valid_joint_share']
    per_joint = d3['per_joint_valid_share']
    assert list(per_joint) == list(KEYPOINT_NAMES)
    assert per_joint['left_shoulder'] == per_joint['right_shoulder'] == 1.0
    # upper body only: no ankle is in the image
    assert per_joint['left_ankle'] == per_joint['right_ankle'] == 0.0
    torso = d3['torso_depth_m']   # README: the man stands 0.79-0.88 m from the camera
    assert 0.7 <= torso['min'] <= torso['median'] <= torso['max'] <= 1.0
    rows = summary['per_frame']
    assert [r['depth_matched'] for r in rows] == [True] * N_FRAMES
    assert sum(r['valid_joints_3d'] for r in rows) == d3['valid_joints']
    assert 'live_3d' not in summary                        # offline: no live figures
    # a depth topic that is not there: one line, before any model is loaded
    assert cli.main(['evaluate', str(offline.parent / 'rgbd'), '--depth-topic', '/nope',
                     '-q']) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith('diffpose-bag evaluate: error: no depth topic /nope') and \
        len(err.splitlines()) == 1, err


def test_depth_matching_tolerance_and_decoding():
    """Nearest stamp within the tolerance (StampMatcher); 16UC1 big endian with row padding
    and 32FC1 decode to the values written."""
    stream = bag_depth.DepthStream(
        bag=Path('x'), topic=DEPTH, msgtype=io.IMAGE_TYPE,
        stamps=[(1_000_000_000, 0), (1_033_000_000, 1), (1_100_000_000, 2)],
        camera_info_topic=INFO, intrinsics=depth3d.Intrinsics(525, 525, 320, 240),
        camera_info_size=(640, 480), distortion_nonzero=False, unusable=None)
    frames = {0: 1_005_000_000, 1: 1_020_000_000, 2: 1_070_000_000, 3: 1_200_000_000}
    assert bag_depth.match_depth(frames, stream, 20_000_000) == {
        0: (1_000_000_000, 0), 1: (1_033_000_000, 1)}
    assert bag_depth.match_depth(frames, stream, 40_000_000) == {
        0: (1_000_000_000, 0), 1: (1_033_000_000, 1), 2: (1_100_000_000, 2)}
    store = io.make_typestore()
    factory = make.MessageFactory(store, 'cam')
    values = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    padded = np.zeros((3, 10), np.uint8)       # step 10 > 2 x width 4
    padded[:, :8] = values.astype('>u2').view(np.uint8)
    msg = store.types[io.IMAGE_TYPE](header=factory.header(0), height=3, width=4,
                                     encoding='16UC1', is_bigendian=1, step=10,
                                     data=padded.reshape(-1))
    decoded, encoding = depth_image_to_array(msg)
    assert encoding == '16UC1' and decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values)
    metres = np.array([[0.5, np.nan], [2.0, 0.0]], np.float32)
    msg = store.types[io.IMAGE_TYPE](header=factory.header(0), height=2, width=2,
                                     encoding='32FC1', is_bigendian=0, step=8,
                                     data=metres.view(np.uint8).reshape(-1))
    decoded, encoding = depth_image_to_array(msg)
    np.testing.assert_array_equal(decoded, metres)
    for encoding, step in (('rgb8', 12), ('16UC1', 4)):
        msg = store.types[io.IMAGE_TYPE](header=factory.header(0), height=2, width=4,
                                         encoding=encoding, is_bigendian=0, step=step,
                                         data=np.zeros(24, np.uint8))
        with pytest.raises(ImageConversionError) as error:
            depth_image_to_array(msg)
        assert error.value.kind == ('unknown_encoding' if encoding == 'rgb8' else
                                    'inconsistent_size')  # step 4 < 4 px x 2 bytes


def _small_bag(path: Path, depth_png: Path, depth_topics: dict[str, str],
               info: bool = False) -> Path:
    """One colour frame, optionally its CameraInfo, and depth on ``depth_topics`` (topic ->
    'raw' or 'compressed')."""
    store = io.make_typestore()
    factory = make.MessageFactory(store, 'cam')
    depth = _imread(depth_png)
    with io.BagWriter(path, typestore=store) as writer:
        writer.add_topic(IMAGE, io.IMAGE_TYPE)
        writer.write(IMAGE, 5, factory.image(np.zeros((480, 640, 3), np.uint8), 5))
        if info:
            writer.add_topic(INFO, io.CAMERA_INFO_TYPE)
            writer.write(INFO, 5, factory.camera_info(640, 480, np.reshape(K_KINECT, (3, 3)),
                                                      5))
        for topic, kind in depth_topics.items():
            if kind == 'raw':
                writer.add_topic(topic, io.IMAGE_TYPE)
                writer.write(topic, 5, factory.depth_image(depth, 5))
            else:
                writer.add_topic(topic, io.COMPRESSED_IMAGE_TYPE)
                writer.write(topic, 5, factory.compressed(b'x', 'png', 5))
    return path


def test_depth_found_automatically_or_reported_unusable(work, rgbd):
    """Which depth topic a bag's evaluation uses; a depth topic it cannot use (no CameraInfo,
    ambiguous, compressed) is reported, and never stops the 2D evaluation."""
    png = sorted(rgbd[1].glob('*.png'))[0]
    out = _small_bag(work / 'no_info', png, {'/camera/depth/image_raw': 'raw'})
    found = bag_depth.find_depth(out, IMAGE, {})
    assert found.topic == '/camera/depth/image_raw' and found.stamps == [(5, 0)]
    assert found.intrinsics is None and 'no CameraInfo' in found.unusable
    summary = bag_depth.summarise(found, 20_000_000, None, [])
    assert not summary['available'] and 'frames_with_depth' not in summary
    with pytest.raises(io.BagError, match='no depth topic /nope'):
        bag_depth.find_depth(out, IMAGE, {}, depth_topic='/nope')
    assert bag_depth.find_depth(out, '/camera/depth/image_raw', {}) is None  # only the camera
    # RealSense records both: the one aligned to colour is taken
    out = _small_bag(work / 'realsense', png, {'/camera/depth/image_rect_raw': 'raw',
                                               DEPTH: 'raw'}, info=True)
    from diffpose_ros.bags.evaluate import scan_images

    assert scan_images(out).topic == IMAGE        # the colour topic, not a depth one
    found = bag_depth.find_depth(out, IMAGE, {})
    assert found.topic == DEPTH and found.unusable is None and found.camera_info_topic == INFO
    assert found.intrinsics == depth3d.Intrinsics(525.0, 525.0, 320.0, 240.0)
    assert bag_depth.find_depth(out, IMAGE, {}, '/camera/depth/image_rect_raw').topic == \
        '/camera/depth/image_rect_raw'
    out = _small_bag(work / 'ambiguous', png, {'/a/depth': 'raw', '/b/depth': 'raw'}, True)
    assert 'several depth topics (/a/depth, /b/depth)' in \
        bag_depth.find_depth(out, IMAGE, {}).unusable
    topic = '/camera/depth/image_raw/compressedDepth'
    out = _small_bag(work / 'compressed', png, {topic: 'compressed'}, True)
    assert 'CompressedImage topic; evaluate reads raw' in \
        bag_depth.find_depth(out, IMAGE, {}).unusable
    with pytest.raises(io.BagError, match='evaluate reads raw'):
        bag_depth.find_depth(out, IMAGE, {}, depth_topic=topic)


def _write_recording(path: Path, predictions: dict, depth_pngs: list[Path],
                     skip_3d: int, invalidate: tuple[int, int]) -> int:
    """A recording of a live node from a predictions_ours.json: 2D poses on /poses and, like
    the node, 3D poses on /poses_3d computed from them and the depth PNGs with the 3D stage;
    frame ``skip_3d`` has no 3D message, joint ``invalidate`` (frame, joint) of its first
    person is flagged invalid. Returns the valid 3D joints written."""
    store = io.make_typestore()
    factory = make.MessageFactory(store, make.DEFAULT_FRAME_ID)
    types = store.types
    intrinsics = depth3d.Intrinsics(525.0, 525.0, 320.0, 240.0)
    valid_written = 0
    with io.BagWriter(path, typestore=store) as writer:
        writer.add_topic(POSES, io.POSE_ARRAY_TYPE)
        writer.add_topic(POSES_3D, io.POSE_3D_ARRAY_TYPE)
        for i, image in enumerate(predictions['images']):
            stamp = image['stamp_ns']
            people = [a for a in predictions['annotations'] if a['image_id'] == image['id']]
            persons = [{'track_id': a['track_id'], 'score': a['score'],
                        'box_xyxy': (a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                                     a['bbox'][1] + a['bbox'][3]),
                        'keypoints': np.reshape(a['keypoints'], (17, 3))} for a in people]
            writer.write(POSES, stamp + 50_000_000, factory.pose_array(persons, stamp))
            if i == skip_3d:
                continue
            points = depth3d.keypoints_to_3d(
                np.stack([p['keypoints'] for p in persons]),
                np.array([p['box_xyxy'] for p in persons]),
                depth3d.depth_to_metres(_imread(depth_pngs[i]), '16UC1'), intrinsics)
            out = []
            for j, person in enumerate(persons):
                valid = points.valid[j].copy()
                if (i, j) == (invalidate[0], 0):
                    valid[invalidate[1]] = False
                valid_written += int(valid.sum())
                out.append(types['diffpose_ros/msg/PersonPose3D'](
                    track_id=int(person['track_id']),
                    torso_depth_m=float(points.torso_depth_m[j]),
                    keypoints=[types['diffpose_ros/msg/Keypoint3D'](
                        position=types['geometry_msgs/msg/Point'](
                            x=float(x), y=float(y), z=float(z)),
                        confidence=float(c), valid=bool(v))
                        for (x, y, z), c, v in zip(points.xyz_m[j], points.confidence[j],
                                                   valid)]))
            header = factory.header(stamp)
            writer.write(POSES_3D, stamp + 60_000_000, types[io.POSE_3D_ARRAY_TYPE](
                header=header, camera='camera', depth_stamp=header.stamp, persons=out))
    return valid_written


def test_recorded_poses_3d_are_scored_and_compared(work, depth_bag, offline, rgbd, capsys):
    predictions = json.loads((offline / 'predictions_ours.json').read_text())
    assert len(predictions['images']) == N_FRAMES
    rec = work / 'recording'
    shoulder = KEYPOINT_NAMES.index('left_shoulder')
    valid_written = _write_recording(rec, predictions, sorted(rgbd[1].glob('*.png')),
                                     skip_3d=4, invalidate=(1, shoulder))
    out = work / 'recorded'
    assert cli.main(['evaluate', str(depth_bag), '--recorded', str(rec), '--out', str(out),
                     '-q', '--detection-cache', str(work / 'detections.json')]) == 0
    printed = capsys.readouterr().out
    assert '3D (/camera/aligned_depth_to_color/image_raw, tolerance 20 ms): 5 of 5 scored ' \
        'frames with depth, 0 without, 0 bad; 5 persons with depth' in printed
    assert f'live 3D ({POSES_3D}): 4 messages, 1 scored frames without one; 4 persons with ' \
        'depth' in printed
    summary = _load(out)
    ours = summary['depth_3d']              # recomputed from the recorded 2D poses
    offline_3d = _load(offline)['depth_3d']
    for key in ('valid_joints', 'persons_with_depth', 'per_joint_valid_share'):
        assert ours[key] == offline_3d[key], key
    live = summary['live_3d']
    assert live['poses_3d_topic'] == POSES_3D and live['messages'] == N_FRAMES - 1
    assert (live['frames_scored_with_3d'], live['frames_scored_without_3d']) == \
        (N_FRAMES - 1, 1)
    assert live['persons_with_depth'] == live['persons_joined_to_2d'] == N_FRAMES - 1
    assert live['valid_joints'] == valid_written
    assert live['valid_joint_share'] == valid_written / (17 * (N_FRAMES - 1))
    assert live['per_joint_valid_share']['left_shoulder'] == 0.75     # 3 of 4
    agreement = live['agreement_with_recomputed']
    assert agreement['persons_compared'] == N_FRAMES - 1
    assert agreement['joints_same_validity_share'] == 1 - 1 / (17 * (N_FRAMES - 1))
    assert agreement['position_gap_mm']['max'] < 0.01     # same 2D, same depth: same points
