"""diffpose-bag: make (video, folder, sequence JSON with ground truth), info, play, record; the
bag launch file.

Bags made from a few vtest.avi frames are read back with rosbags and with the independent
``mcap``/``mcap-ros2-support`` reader and compared byte for byte with the source. ``play`` and
``record`` run as separate processes talking to this one (and to a real diffpose_node) on the
isolated ROS domain set up by conftest.py. ``launch/diffpose_bag.launch.py`` is executed against
stub ``launch``/``launch_ros`` modules (neither can be installed here) and its commands checked.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import read_video_frames

from diffpose_ros.assets import VTEST_VIDEO, AssetError, asset_path
from diffpose_ros.bags import io, make
from diffpose_ros.cli import bag as cli
from diffpose_ros.skeleton import KEYPOINT_NAMES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'diffpose_bag.launch.py'
N_FRAMES = 6
START_NS = make.DEFAULT_START_TIME_NS
PERIOD_NS = 100_000_000                   # vtest.avi: 10 fps
IMAGE, COMPRESSED = '/camera/image_raw', '/camera/image_raw/compressed'
INFO, GT = '/camera/camera_info', '/camera/ground_truth'
# sequence fixture: frame ids with a gap (stamps follow frame_id), one unlabelled frame, one
# labelled frame with nobody in it
SEQ_FRAME_IDS = [20, 21, 22, 24, 25, 26]
SEQ_UNLABELLED = 22
SEQ_EMPTY = 25


# ----------------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1')


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'diffpose_ros.cli.bag', *args], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, log: Path) -> tuple[subprocess.Popen, object]:
    handle = open(log, 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'diffpose_ros.cli.bag', *args], cwd=ROOT,
                            env=_env(), stdout=handle, stderr=subprocess.STDOUT)
    return proc, handle


def finish(proc: subprocess.Popen, handle, log: Path, sig: int | None = None,
           timeout: float = 30) -> tuple[int, str]:
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    handle.close()
    return code, log.read_text()


def read_rosbags(path: Path) -> list[tuple[str, int, object]]:
    """(topic, log time, decoded message) in log-time order, decoded with rosbags."""
    with io.open_bag(path) as reader:
        store = io.bag_typestore(reader)
        return [(c.topic, t, store.deserialize_cdr(raw, c.msgtype))
                for c, t, raw in io.iter_messages(reader, reader.connections)]


def read_mcap(path: Path) -> list:
    """Decoded messages from the bag's .mcap file with mcap + mcap-ros2-support."""
    from mcap_ros2.reader import read_ros2_messages

    [file] = sorted(Path(path).glob('*.mcap'))
    return list(read_ros2_messages(str(file)))


def by_topic(messages: list[tuple[str, int, object]], topic: str) -> list[tuple[int, object]]:
    return [(t, m) for name, t, m in messages if name == topic]


def stamp(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def jpeg(frame: np.ndarray, quality: int = make.DEFAULT_JPEG_QUALITY) -> bytes:
    import cv2

    return cv2.imencode('.jpg', frame, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def vtest() -> Path:
    try:
        return asset_path(VTEST_VIDEO)
    except AssetError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope='module')
def frames(vtest) -> list[np.ndarray]:
    return read_video_frames(str(vtest), 0, N_FRAMES)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    return tmp_path_factory.mktemp('bags')


@pytest.fixture(scope='module')
def raw_bag(bags, vtest) -> Path:
    out = bags / 'raw'
    assert cli.main(['make', f'{vtest}:0:{N_FRAMES}', '--out', str(out), '-q']) == 0
    return out


@pytest.fixture(scope='module')
def jpeg_bag(bags, vtest) -> Path:
    out = bags / 'jpeg'
    assert cli.main(['make', f'{vtest}:0:{N_FRAMES}', '--compressed', '--out', str(out),
                     '-q']) == 0
    return out


def _annotation(ann_id: int, image_id: int, track: int, rng: np.random.Generator) -> dict:
    xy = rng.uniform(50, 500, size=(17, 2)).round(2)
    vis = rng.choice([0, 2], size=17, p=[0.3, 0.7])
    xy[vis == 0] = 0.0
    scores = np.where(vis > 0, rng.uniform(0.3, 1.0, 17), 0.0).round(4)
    kpts = np.concatenate([xy, vis[:, None]], axis=1).reshape(-1).tolist()
    return {'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
            'track_id': track, 'bbox': [10.5 + track, 20.25, 40.0, 80.0], 'area': 3200.0,
            'keypoints': kpts, 'num_keypoints': int((vis > 0).sum()),
            'keypoint_scores': scores.tolist(), 'score': 0.5 + track / 100}


@pytest.fixture(scope='module')
def sequence(bags, frames) -> Path:
    """A PoseTrack-style COCO JSON (as diffpose-label writes) over 6 vtest frames saved as
    JPEG files: two tracks, a crowd region, an unlabelled and an empty labelled frame."""
    import cv2

    root = bags / 'seq'
    (root / 'frames').mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for frame, frame_id in zip(frames, SEQ_FRAME_IDS):
        name = f'frames/{frame_id:06d}.jpg'
        cv2.imwrite(str(root / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        image_id = 1000 + frame_id
        images.append({'id': image_id, 'file_name': name, 'width': 768, 'height': 576,
                       'vid_id': 7, 'frame_id': frame_id,
                       'is_labeled': frame_id != SEQ_UNLABELLED, 'nframes': N_FRAMES})
        if frame_id in (SEQ_UNLABELLED, SEQ_EMPTY):
            continue
        for track in (1, 2):
            annotations.append(_annotation(len(annotations) + 1, image_id, track, rng))
        crowd = _annotation(len(annotations) + 1, image_id, 99, rng)
        crowd['iscrowd'] = 1
        annotations.append(crowd)
    dataset = {'categories': [{'id': 1, 'name': 'person', 'keypoints': list(KEYPOINT_NAMES)}],
               'videos': [{'id': 7, 'name': 'seq', 'fps': 10.0}],
               'images': images, 'annotations': annotations}
    path = root / 'labels_coco.json'
    path.write_text(json.dumps(dataset))
    return path


@pytest.fixture(scope='module')
def gt_bag(bags, sequence) -> Path:
    out = bags / 'gt'
    assert cli.main(['make', str(sequence), '--compressed', '--out', str(out), '-q']) == 0
    return out


# ------------------------------------------------------------------------------------- make
def _check_camera_info(info, width=768, height=576):
    assert (info.width, info.height) == (width, height)
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    assert k[0, 0] == k[1, 1] > 0 and (k[0, 2], k[1, 2]) == (width / 2, height / 2)
    assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], k)
    assert info.distortion_model == 'plumb_bob' and not np.any(info.d)
    assert info.header.frame_id == make.DEFAULT_FRAME_ID


def test_raw_bag_is_bit_identical_with_rosbags(raw_bag, frames):
    metadata = yaml.safe_load((raw_bag / 'metadata.yaml').read_text())
    info = metadata['rosbag2_bagfile_information']
    assert info['version'] == io.METADATA_VERSION == 8
    assert info['storage_identifier'] == 'mcap' and (raw_bag / 'raw.mcap').is_file()
    for topic in info['topics_with_message_count']:      # Humble parses a YAML string here
        assert isinstance(topic['topic_metadata']['offered_qos_profiles'], str)
    messages = read_rosbags(raw_bag)
    assert {name for name, _, _ in messages} == {IMAGE, INFO}
    images, infos = by_topic(messages, IMAGE), by_topic(messages, INFO)
    assert len(images) == len(infos) == N_FRAMES
    for i, ((t, img), (t_info, cam), frame) in enumerate(zip(images, infos, frames)):
        assert t == t_info == stamp(img.header) == stamp(cam.header) == START_NS + i * PERIOD_NS
        assert (img.height, img.width, img.encoding, img.step, img.is_bigendian) == (
            576, 768, 'bgr8', 768 * 3, 0)
        assert img.header.frame_id == make.DEFAULT_FRAME_ID
        assert img.data.tobytes() == frame.tobytes()
        _check_camera_info(cam)
    # per frame: CameraInfo first, then the image (the node needs K before the image)
    assert [name for name, _, _ in messages[:2]] == [INFO, IMAGE]


def test_raw_bag_is_bit_identical_with_mcap(raw_bag, frames):
    messages = read_mcap(raw_bag)
    images = [m for m in messages if m.channel.topic == IMAGE]
    assert len(images) == N_FRAMES
    assert {m.schema.name for m in messages} == {io.IMAGE_TYPE, io.CAMERA_INFO_TYPE}
    for i, (m, frame) in enumerate(zip(images, frames)):
        assert m.log_time_ns == stamp(m.ros_msg.header) == START_NS + i * PERIOD_NS
        assert bytes(m.ros_msg.data) == frame.tobytes()
        assert m.ros_msg.encoding == 'bgr8'
    _check_camera_info([m for m in messages if m.channel.topic == INFO][0].ros_msg)


def test_compressed_bag_holds_the_jpeg_bytes(jpeg_bag, frames):
    rb = by_topic(read_rosbags(jpeg_bag), COMPRESSED)
    mc = [m for m in read_mcap(jpeg_bag) if m.channel.topic == COMPRESSED]
    assert len(rb) == len(mc) == N_FRAMES
    for i, ((t, msg), m, frame) in enumerate(zip(rb, mc, frames)):
        expected = jpeg(frame)
        assert msg.data.tobytes() == bytes(m.ros_msg.data) == expected
        assert t == m.log_time_ns == stamp(msg.header) == START_NS + i * PERIOD_NS
        assert msg.format == 'bgr8; jpeg compressed bgr8'
    assert io.bag_info(jpeg_bag)['size_bytes'] < io.bag_info(jpeg_bag.parent / 'raw')[
        'size_bytes'] / 5


def test_sqlite3_bag_reads_back_with_rosbags(bags, vtest, frames):
    out = bags / 'sqlite'
    assert cli.main(['make', f'{vtest}:2:{N_FRAMES}', '--storage', 'sqlite3', '--out', str(out),
                     '--start-time', '12.5', '-q']) == 0
    assert (out / 'sqlite.db3').is_file()
    images = by_topic(read_rosbags(out), IMAGE)
    assert len(images) == N_FRAMES - 2
    for i, (t, img) in enumerate(images):
        assert t == stamp(img.header) == 12_500_000_000 + i * PERIOD_NS
        assert img.data.tobytes() == frames[2 + i].tobytes()
    assert io.bag_info(out)['storage'] == 'sqlite3'


def test_ground_truth_round_trips(gt_bag, sequence):
    dataset = json.loads(sequence.read_text())
    root = sequence.parent
    messages = read_rosbags(gt_bag)
    images, truth = by_topic(messages, COMPRESSED), by_topic(messages, GT)
    expected_stamps = [START_NS + (f - SEQ_FRAME_IDS[0]) * PERIOD_NS for f in SEQ_FRAME_IDS]
    assert [t for t, _ in images] == expected_stamps             # stamps follow frame_id
    for (_, msg), img in zip(images, dataset['images']):         # JPEG files stored unchanged
        assert msg.data.tobytes() == (root / img['file_name']).read_bytes()
    labelled = [s for s, f in zip(expected_stamps, SEQ_FRAME_IDS) if f != SEQ_UNLABELLED]
    assert [t for t, _ in truth] == [stamp(m.header) for _, m in truth] == labelled
    mcap_truth = {m.log_time_ns: m.ros_msg for m in read_mcap(gt_bag) if m.channel.topic == GT}
    assert sorted(mcap_truth) == labelled
    for (t, msg), frame_id in zip(truth, [f for f in SEQ_FRAME_IDS if f != SEQ_UNLABELLED]):
        anns = [a for a in dataset['annotations']
                if a['image_id'] == 1000 + frame_id and not a['iscrowd']]
        assert len(msg.persons) == len(anns) == (0 if frame_id == SEQ_EMPTY else 2)
        assert msg.camera == 'camera' and msg.header.frame_id == make.DEFAULT_FRAME_ID
        for person, mperson, ann in zip(msg.persons, mcap_truth[t].persons, anns):
            kp = np.asarray(ann['keypoints'], dtype=np.float32).reshape(17, 3)
            conf = np.where(kp[:, 2] > 0, np.asarray(ann['keypoint_scores'], np.float32), 0)
            got = np.array([[k.x, k.y, k.confidence] for k in person.keypoints], np.float32)
            got_mcap = np.array([[k.x, k.y, k.confidence] for k in mperson.keypoints],
                                np.float32)
            np.testing.assert_array_equal(got[:, :2], kp[:, :2])
            np.testing.assert_array_equal(got[:, 2], conf)
            np.testing.assert_array_equal(got_mcap, got)
            assert person.track_id == mperson.track_id == ann['track_id']
            x, y, w, h = ann['bbox']
            assert np.allclose([person.box_x_min, person.box_y_min, person.box_x_max,
                                person.box_y_max], [x, y, x + w, y + h])
            assert person.detection_score == pytest.approx(ann['score'])
    info = io.bag_info(gt_bag)
    assert info['custom_data']['diffpose_ros.ground_truth_topic'] == GT
    assert info['custom_data']['diffpose_ros.first_frame'] == str(SEQ_FRAME_IDS[0])


def test_image_folder_and_sample_mode(bags, sequence, frames, capsys):
    out = bags / 'folder'
    assert cli.main(['make', str(sequence.parent / 'frames'), '--fps', '4', '--out', str(out),
                     '-q', '--max-frames', '2']) == 0
    images = by_topic(read_rosbags(out), IMAGE)
    assert [t for t, _ in images] == [START_NS, START_NS + 250_000_000]
    assert images[0][1].data.shape == (576 * 768 * 3,)
    # no input = the sample bag's recipe (vtest.avi, compressed); here only 2 frames
    sample = bags / 'sample'
    assert cli.main(['make', '--out', str(sample), '--max-frames', '2', '-q']) == 0
    assert [m.ros_msg.data for m in read_mcap(sample) if m.channel.topic == COMPRESSED] == [
        jpeg(f) for f in frames[:2]]
    assert 'wrote' in capsys.readouterr().out
    # variants of the sample bag need their own --out
    assert cli.main(['make', '--raw', '-q']) == cli.EXIT_ERROR
    assert '--raw make a variant of the sample bag' in capsys.readouterr().err


def test_make_is_deterministic(bags, vtest):
    outs = [bags / f'det{i}' / 'bag' for i in range(2)]     # same name: it is in the metadata
    for out in outs:
        assert cli.main(['make', f'{vtest}:0:3', '--compressed', '--out', str(out), '-q']) == 0
    for name in ('bag.mcap', 'metadata.yaml'):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_message_definitions_found_in_a_copy_install(monkeypatch, tmp_path):
    """A copy install has no msg/ next to the package: the installed share/ copy is used."""
    assert io.custom_msg_dir() == ROOT / 'msg'
    monkeypatch.setattr(io, '__file__', str(tmp_path / 'site-packages' / 'diffpose_ros' /
                                            'bags' / 'io.py'))
    share = Path(sys.prefix) / 'share' / 'diffpose_ros' / 'msg'
    assert io.custom_msg_dir() == share
    monkeypatch.setenv('AMENT_PREFIX_PATH', '')
    monkeypatch.setattr(sys, 'prefix', str(tmp_path))
    with pytest.raises(io.BagError, match='cannot find the diffpose_ros .msg files'):
        io.custom_msg_dir()


def test_parse_video_spec_and_start_time():
    assert make.parse_video_spec('a/b.avi') == (Path('a/b.avi'), 0, None)
    assert make.parse_video_spec('a/b.avi:5') == (Path('a/b.avi'), 5, None)
    assert make.parse_video_spec('a/b.avi::7') == (Path('a/b.avi'), 0, 7)
    assert make.parse_video_spec('x:y/b.avi:1:3') == (Path('x:y/b.avi'), 1, 3)
    with pytest.raises(ValueError, match='start < stop'):
        make.parse_video_spec('b.avi:4:4')
    assert make.parse_start_time('1735689600.000000001') == START_NS + 1
    with pytest.raises(ValueError, match='seconds since the epoch'):
        make.parse_start_time('yesterday')


# ------------------------------------------------------------------------------- CLI errors
def test_help_of_every_subcommand(capsys):
    for argv in ([], ['make'], ['info'], ['play'], ['record'], ['evaluate']):
        with pytest.raises(SystemExit) as exc:
            cli.main([*argv, '--help'])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith('usage: diffpose-bag') and 'example' in out
    assert cli.main(['evaluate', 'x']) == cli.EXIT_ERROR   # a missing bag: one line
    assert 'does not exist' in capsys.readouterr().err
    launcher = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'diffpose-bag'), 'play',
                               '--help'], env=_env(), capture_output=True, text=True, timeout=60)
    assert launcher.returncode == 0 and '--start-offset' in launcher.stdout


def test_missing_and_corrupt_bags_fail_cleanly(bags, jpeg_bag, capsys):
    corrupt = bags / 'corrupt'
    shutil.copytree(jpeg_bag, corrupt)
    mcap_file = corrupt / 'jpeg.mcap'
    os.truncate(mcap_file, mcap_file.stat().st_size // 2)
    garbage = bags / 'garbage'
    garbage.mkdir()
    (garbage / 'metadata.yaml').write_text('rosbag2_bagfile_information: [1, 2\n')
    for path, reason in ((bags / 'missing', 'does not exist'), (corrupt, 'cannot read bag'),
                         (garbage, 'cannot read bag'), (bags / 'seq', 'not a rosbag2 bag')):
        assert cli.main(['info', str(path)]) == cli.EXIT_ERROR
        err = capsys.readouterr().err
        assert err.startswith('diffpose-bag info: error:') and reason in err, err
    # existing output, unreadable source
    assert cli.main(['make', str(bags / 'seq' / 'labels_coco.json'), '--out', str(jpeg_bag),
                     '-q']) == cli.EXIT_ERROR
    assert 'already exists' in capsys.readouterr().err
    assert cli.main(['make', str(bags / 'nope.avi'), '--out', str(bags / 'x'), '-q']) == 1
    assert 'does not exist' in capsys.readouterr().err and not (bags / 'x').exists()
    # play in its own process (it installs signal handlers); no traceback
    for path in (corrupt, bags / 'missing'):
        proc = run_cli('play', str(path))
        assert proc.returncode == cli.EXIT_ERROR, proc.stderr
        assert 'error:' in proc.stderr and 'Traceback' not in proc.stderr
    proc = run_cli('play', str(jpeg_bag), '--topics', '/nope')
    assert proc.returncode == cli.EXIT_ERROR and 'not in the bag' in proc.stderr
    assert run_cli('play', str(jpeg_bag), '--rate', '0').returncode == cli.EXIT_USAGE


def test_force_only_replaces_bags(bags, vtest):
    out = bags / 'forced'
    assert cli.main(['make', f'{vtest}:0:1', '--out', str(out), '-q']) == 0
    assert cli.main(['make', f'{vtest}:1:3', '--out', str(out), '-q', '--force']) == 0
    assert io.bag_info(out)['message_count'] == 4
    not_a_bag = bags / 'not_a_bag'
    (not_a_bag / 'sub').mkdir(parents=True)
    assert cli.main(['make', f'{vtest}:0:1', '--out', str(not_a_bag), '-q', '--force']) == 1
    assert (not_a_bag / 'sub').is_dir()


# ------------------------------------------------------------------------- play and record
@pytest.fixture(scope='module')
def client():
    from ros_harness import RosClient

    client = RosClient('bag_tester')
    yield client
    client.close()


def _reliable(depth: int = 100):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


@pytest.mark.ros
def test_play_delivers_every_message_in_order_with_clock(client, gt_bag, tmp_path):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, CompressedImage

    from diffpose_ros.msg import PersonPoseArray

    recorded = read_rosbags(gt_bag)
    queues = {topic: client.subscribe(cls, topic, _reliable()) for topic, cls in (
        (COMPRESSED, CompressedImage), (INFO, CameraInfo), (GT, PersonPoseArray),
        ('/clock', Clock))}
    log = tmp_path / 'play.log'
    proc, handle = start_cli('play', str(gt_bag), '--clock', '--reliable',
                             '--wait-for', COMPRESSED, INFO, GT, '/clock', log=log)
    code, output = finish(proc, handle, log, timeout=60)
    assert code == 0, output
    assert 'done:' in output
    for topic in (COMPRESSED, INFO, GT):
        expected = by_topic(recorded, topic)
        count = len(expected)
        client.wait_for(lambda q=queues[topic], n=count: len(q) >= n, 10,
                        f'{count} messages on {topic}')
        got = [msg for _, msg in queues[topic]]
        assert [stamp(m.header) for m in got] == [t for t, _ in expected], topic
    for msg, (_, sent) in zip([m for _, m in queues[COMPRESSED]], by_topic(recorded, COMPRESSED)):
        assert bytes(msg.data) == sent.data.tobytes()
    for msg, (_, sent) in zip([m for _, m in queues[GT]], by_topic(recorded, GT)):
        assert [p.track_id for p in msg.persons] == [p.track_id for p in sent.persons]
    # paced at the recorded rate: the first and last image are 0.6 s of bag time apart
    arrivals = [t for t, _ in queues[COMPRESSED]]
    assert arrivals[-1] - arrivals[0] == pytest.approx(0.6, abs=0.25)
    # /clock advances monotonically from the first to the last message's time
    clock = [m.clock.sec * 1_000_000_000 + m.clock.nanosec for _, m in queues['/clock']]
    assert len(clock) >= 5 and clock == sorted(clock)
    assert clock[0] >= START_NS and clock[-1] == recorded[-1][1]
    assert len(set(clock)) >= 5


@pytest.mark.ros
def test_play_filter_remap_offset_loop_and_default_qos(client, gt_bag, tmp_path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    front = '/front/image_raw/compressed'
    queue = client.subscribe(CompressedImage, front, QoSProfile(
        depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    log = tmp_path / 'play.log'
    proc, handle = start_cli('play', str(gt_bag), '--topics', COMPRESSED, '--remap',
                             f'{COMPRESSED}:={front}', '--start-offset', '0.35', '--loop',
                             '--rate', '2', '--wait-for', front, log=log)
    try:
        offset = START_NS + 350_000_000
        played = [t for t, _ in by_topic(read_rosbags(gt_bag), COMPRESSED) if t >= offset]
        client.wait_for(lambda: len(queue) >= 2 * len(played) + 1, 20, 'two loops')
        infos = client.node.get_publishers_info_by_topic(front)
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.BEST_EFFORT]
        assert not [i for i in client.node.get_publishers_info_by_topic(INFO)
                    if i.node_name == 'diffpose_bag_player']           # filtered out
    finally:
        code, output = finish(proc, handle, log, sig=signal.SIGINT)
    assert code == 0 and 'interrupted' in output, output
    stamps = [stamp(m.header) for _, m in queue]
    assert min(stamps) >= offset and set(stamps) <= set(played)
    assert any(b < a for a, b in zip(stamps, stamps[1:]))              # looped back


@pytest.mark.ros
def test_record_captures_another_process(client, tmp_path, frames):
    from ros_harness import image_msg
    from sensor_msgs.msg import Image

    from diffpose_ros.msg import PersonPose, PersonPoseArray

    out = tmp_path / 'rec'
    log = tmp_path / 'record.log'
    poses_topic, image_topic = '/rec_test/poses', '/rec_test/image_raw'
    proc, handle = start_cli('record', '--out', str(out), '--topics', poses_topic, image_topic,
                             '/never_published', log=log)
    try:
        poses_pub = client.node.create_publisher(PersonPoseArray, poses_topic, _reliable(10))
        image_pub = client.node.create_publisher(Image, image_topic, _reliable(10))
        client.wait_for(lambda: poses_pub.get_subscription_count() > 0
                        and image_pub.get_subscription_count() > 0, 30,
                        'the recorder to subscribe', None)
        sent = []
        before = time.time_ns()
        for i in range(4):
            t = START_NS + i * PERIOD_NS
            msg = PersonPoseArray()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
            msg.camera = 'rec'
            person = PersonPose()
            person.track_id = 40 + i
            person.keypoints[3].x = float(i)
            msg.persons = [person]
            poses_pub.publish(msg)
            image_pub.publish(image_msg(frames[i], t, 'cam'))
            sent.append(t)
        from rclpy.duration import Duration

        assert poses_pub.wait_for_all_acked(Duration(seconds=10))
        assert image_pub.wait_for_all_acked(Duration(seconds=10))
        time.sleep(0.3)
    finally:
        code, output = finish(proc, handle, log, sig=signal.SIGTERM)
    assert code == 0, output
    assert 'stopped (SIGTERM)' in output
    info = io.bag_info(out)
    assert info['topics'] == {poses_topic: {'type': io.POSE_ARRAY_TYPE, 'count': 4},
                              image_topic: {'type': io.IMAGE_TYPE, 'count': 4}}
    messages = read_rosbags(out)
    poses = by_topic(messages, poses_topic)
    assert [stamp(m.header) for _, m in poses] == sent
    assert [m.persons[0].track_id for _, m in poses] == [40, 41, 42, 43]
    assert [m.persons[0].keypoints[3].x for _, m in poses] == [0.0, 1.0, 2.0, 3.0]
    log_times = [t for t, _ in poses]
    assert before <= log_times[0] and log_times == sorted(log_times) and \
        log_times[-1] <= time.time_ns()                   # receive (wall) time as log time
    images = [m for m in read_mcap(out) if m.channel.topic == image_topic]
    assert [bytes(m.ros_msg.data) for m in images] == [f.tobytes() for f in frames[:4]]
    assert 'never saw a publisher on /never_published' in output


@pytest.mark.ros
@pytest.mark.slow
def test_record_the_node_fed_by_play(tmp_path, jpeg_bag):
    """The bag demo's flow: record + diffpose_node (use_sim_time, compressed) + play --clock."""
    from ros_harness import NodeProcess, write_params

    params = write_params(tmp_path / 'params.yaml', {
        'autostart': True, 'use_sim_time': True, 'transport': 'compressed',
        'diagnostics_period_s': 0.25})
    out = tmp_path / 'outputs'
    rec_log = tmp_path / 'record.log'
    recorder, rec_handle = start_cli('record', '--out', str(out), log=rec_log)
    node = NodeProcess(params, tmp_path / 'node.log')
    try:
        play = run_cli('play', str(jpeg_bag), '--clock', '--rate', '0.5', '--wait-for',
                       COMPRESSED, '--wait-timeout', '240', timeout=300)
        assert play.returncode == 0, play.stderr + node.log()
        time.sleep(3.0)                                   # the last frames are processed
    finally:
        code, output = finish(recorder, rec_handle, rec_log, sig=signal.SIGINT)
        node_code = node.stop()
    assert code == 0 and node_code == 0, output + node.log()
    image_stamps = {t for t, _ in by_topic(read_rosbags(jpeg_bag), COMPRESSED)}
    poses = [m for m in read_mcap(out) if m.channel.topic == '/diffpose/camera/poses']
    assert poses, output + node.log()
    assert {stamp(m.ros_msg.header) for m in poses} <= image_stamps
    assert all(m.ros_msg.camera == 'camera' for m in poses)
    topics = io.bag_info(out)['topics']
    assert topics['/diagnostics']['count'] >= 1
    assert topics['/diffpose/camera/poses']['type'] == io.POSE_ARRAY_TYPE


# ----------------------------------------------------------------------------- launch file
class _Stub:
    """Stands in for a launch action/substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Stub):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _load_launch_file(monkeypatch):
    names = ('DeclareLaunchArgument', 'ExecuteProcess', 'IncludeLaunchDescription', 'LogInfo',
             'OpaqueFunction', 'RegisterEventHandler', 'Shutdown', 'TimerAction')
    modules = {
        'launch': {},
        'launch.actions': {n: type(n, (_Stub,), {}) for n in names},
        'launch.event_handlers': {'OnProcessExit': type('OnProcessExit', (_Stub,), {})},
        'launch.launch_description': {'LaunchDescription': type('LaunchDescription', (_Stub,),
                                                                {})},
        'launch.launch_description_sources': {
            'PythonLaunchDescriptionSource': type('PythonLaunchDescriptionSource', (_Stub,), {})},
        'launch.substitutions': {'LaunchConfiguration': _LaunchConfiguration},
        'ament_index_python': {},
        'ament_index_python.packages': {'get_package_share_directory': lambda pkg: str(ROOT)},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('diffpose_bag_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_launch(monkeypatch, **arguments):
    module = _load_launch_file(monkeypatch)
    [description] = module.generate_launch_description().args
    declared = {a.args[0]: a.kwargs.get('default_value') for a in description
                if type(a).__name__ == 'DeclareLaunchArgument'}
    [opaque] = [a for a in description if type(a).__name__ == 'OpaqueFunction']
    configurations = {k: v for k, v in declared.items() if v is not None}
    configurations.update(arguments)
    context = types.SimpleNamespace(launch_configurations=configurations, environment={})
    actions = opaque.kwargs['function'](context)
    return module, declared, {type(a).__name__: a for a in actions}, actions


def test_launch_file_commands(monkeypatch, jpeg_bag, raw_bag, tmp_path):
    monkeypatch.setenv('ROS_DISTRO', 'humble')
    module, declared, by_type, actions = _run_launch(monkeypatch, bag=str(jpeg_bag))
    assert declared['bag'] is None                        # required
    assert {'output', 'rate', 'image_topic', 'transport', 'params_file', 'record_topics',
            'storage', 'play_delay', 'clock_hz', 'linger'} <= set(declared)
    record = by_type['ExecuteProcess']
    assert record.kwargs['cmd'] == ['ros2', 'bag', 'record', '-s', 'mcap',
                                    '/diffpose/camera/poses', '/diffpose/camera/markers',
                                    '/diagnostics']
    include = by_type['IncludeLaunchDescription']
    assert include.args[0].args[0] == str(ROOT / 'launch' / 'diffpose.launch.py')
    arguments = dict(include.kwargs['launch_arguments'])
    assert arguments['use_sim_time'] == 'true' and arguments['transport'] == 'compressed'
    assert arguments['image_topic'] == IMAGE
    assert Path(arguments['params_file']).is_file()
    timer = by_type['TimerAction']
    assert timer.kwargs['period'] == 15.0
    [play] = timer.kwargs['actions']
    assert play.kwargs['cmd'] == ['ros2', 'bag', 'play', str(jpeg_bag), '-s', 'mcap',
                                  '--clock', '100.0', '-r', '1.0']
    # Humble's Fast DDS 2 reads the profile from FASTRTPS_... (FASTDDS_... from Kilted on)
    assert play.kwargs['additional_env'] == {
        'FASTRTPS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' / 'fastdds_shm.xml')}
    handler = by_type['RegisterEventHandler'].args[0]
    assert handler.kwargs['target_action'] is play
    [_, stop] = handler.kwargs['on_exit']
    assert type(stop.kwargs['actions'][0]).__name__ == 'Shutdown'
    # order: recorder and node first, playback after the delay
    assert [type(a).__name__ for a in actions][1:4] == ['ExecuteProcess',
                                                        'IncludeLaunchDescription',
                                                        'TimerAction']
    # raw bag, later distro (--topics), explicit output, rate and topics
    monkeypatch.setenv('ROS_DISTRO', 'kilted')
    _, _, by_type, _ = _run_launch(monkeypatch, bag=str(raw_bag), output=str(tmp_path / 'o'),
                                   rate='0.5', record_topics='[/a, /b]', storage='sqlite3')
    assert by_type['ExecuteProcess'].kwargs['cmd'] == [
        'ros2', 'bag', 'record', '-s', 'sqlite3', '-o', str(tmp_path / 'o'), '--topics', '/a',
        '/b']
    assert dict(by_type['IncludeLaunchDescription'].kwargs['launch_arguments'])[
        'transport'] == 'raw'
    assert by_type['TimerAction'].kwargs['actions'][0].kwargs['cmd'][-1] == '0.5'
    assert by_type['TimerAction'].kwargs['actions'][0].kwargs['additional_env'] == {
        'FASTDDS_DEFAULT_PROFILES_FILE': str(ROOT / 'config' / 'fastdds_shm.xml')}


@pytest.mark.parametrize('arguments, error, match', [
    ({'bag': ''}, ValueError, 'bag is required'),
    ({'bag': '/nonexistent/bag'}, FileNotFoundError, 'metadata.yaml'),
    ({'rate': '0'}, ValueError, 'rate must be > 0'),
    ({'transport': 'raw'}, ValueError, 'has no /camera/image_raw'),
    ({'output': '.'}, ValueError, 'already exists'),
    ({'storage': 'rosbag'}, ValueError, 'storage must be one of'),
])
def test_launch_file_rejects_bad_arguments(monkeypatch, jpeg_bag, arguments, error, match):
    with pytest.raises(error, match=match):
        _run_launch(monkeypatch, **{'bag': str(jpeg_bag), **arguments})


def test_launch_file_static_rules(monkeypatch):
    from diffpose_ros.ros.params import camera_setup

    tree = ast.parse(LAUNCH_FILE.read_text())
    calls = {getattr(n.func, 'id', getattr(n.func, 'attr', None))
             for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert not calls & {'eval', 'exec', 'load', 'PythonExpression', 'ChangeState'}
    imported = {(n.module or '').split('.')[0] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)}
    assert imported <= {'ament_index_python', 'launch', 'launch_ros'}
    # the recorded topics follow the node's camera-name rule
    module = _load_launch_file(monkeypatch)
    for topic in ('/camera/image_raw', '/front/image_raw', '/robot/left/image_rect',
                  '/image_raw', 'cam/image'):
        [setup] = camera_setup({'image_topics': [topic]})
        assert module.camera_name(topic) == setup.name, topic
