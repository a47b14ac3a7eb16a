"""diffpose-bag: make, inspect, play and record rosbag2 bags without rosbag2 (see --help).

    diffpose-bag make                                  # the sample bag from vtest.avi
    diffpose-bag make clip.mp4:100:400 --out bags/clip --compressed
    diffpose-bag info outputs/bags/vtest
    diffpose-bag play outputs/bags/vtest --clock --loop
    diffpose-bag record --out outputs/bags/run1 --duration 60
    diffpose-bag evaluate outputs/bags/vtest_heldout_gt --detector-imgsz 1280
    diffpose-bag evaluate BAG --recorded outputs/bags/run1

Exit codes: 0 success; 1 a bag or source cannot be read or written (a one-line message, no
traceback); 2 bad command-line usage.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PROG = 'diffpose-bag'

_DESCRIPTION = """\
Rosbag2 bags for diffpose_ros without rosbag2: make them from videos, image folders and
labelled sequences, inspect, play them into the node and record its outputs. Bags are
rosbag2 directories (metadata.yaml + one .mcap or .db3 file) in metadata version 8, the version
`ros2 bag` on both Humble and Jazzy reads (docs/bags.md)."""

_EPILOG = """\
subcommands (each has its own --help):
  make     video / image folder / sequence JSON -> bag (no argument: the sample bag)
  info     topics, counts, duration and size of a bag
  play     publish a bag's messages at the recorded rate (needs ROS)
  record   write topics to a new bag until Ctrl-C or --duration (needs ROS)
  evaluate run the pipeline over a bag, or score a recorded live run; metrics + PNG report

example session (three terminals; scripts/bag_demo.sh does the same):
  diffpose-bag make                                   # outputs/bags/vtest (sample bag)
  diffpose-bag record --out outputs/bags/run1         # the node's outputs
  python -m diffpose_ros.ros.node --ros-args -p autostart:=true -p use_sim_time:=true \\
      -p transport:=compressed
  diffpose-bag play outputs/bags/vtest --clock

exit codes: 0 ok, 1 unreadable/unwritable bag or source (one-line message), 2 usage error
"""

_MAKE_EPILOG = """\
input (positional, optional):
  (none)                    the sample bag: vtest.avi, all 795 frames (10 fps, 768x576),
                            compressed JPEG, into outputs/bags/vtest (kept if it exists)
  VIDEO[:START[:STOP]]      a video, optionally frames START..STOP-1 (as diffpose-label)
  FOLDER                    every image (.jpg .jpeg .png .bmp .tif) in name order; --fps
  SEQUENCE.json             COCO/PoseTrack keypoint JSON with images (vid_id, frame_id,
                            file_name) and optional annotations -> ground truth topic

topics (prefix --namespace, default /camera); every message of a frame has the same stamp:
  /camera/camera_info             sensor_msgs/CameraInfo (pinhole, --hfov-deg, no distortion)
  /camera/image_raw               sensor_msgs/Image bgr8 (default), or
  /camera/image_raw/compressed    sensor_msgs/CompressedImage JPEG (--compressed)
  /camera/ground_truth            diffpose_ros/PersonPoseArray per labelled frame (sequences
                                  with annotations): track ids, boxes, 17 keypoints; keypoint
                                  confidence = keypoint_scores (pseudo labels) or 1 (labelled),
                                  0 = not labelled
  /camera/aligned_depth_to_color/image_raw
                                  sensor_msgs/Image 16UC1 (mm, 0 = no data) from --depth DIR:
                                  16-bit PNGs registered to the colour frames, one per frame
                                  (same stem, or the same name order); the colour frame's stamp
                                  and frame_id. Give the colour camera's --intrinsics with it

examples:
  diffpose-bag make                                       # sample bag
  diffpose-bag make --raw --out outputs/bags/vtest_raw    # sample as raw bgr8 (~1 GB)
  diffpose-bag make vtest.avi:600:795 --out bags/heldout --storage sqlite3
  diffpose-bag make data/pseudo/vtest_heldout/labels_coco.json --compressed --out bags/gt
  diffpose-bag make photos/ --fps 5 --start-time now --out bags/photos
  diffpose-bag make rgbd/color --depth rgbd/depth --intrinsics 525,525,320,240 --fps 30 \\
      --out bags/rgbd                 # or --intrinsics camera.xml (OpenCV FileStorage)
"""

_PLAY_EPILOG = """\
Messages are forwarded as serialized bytes (never decoded), paced by their log time.
QoS: images best effort (sensor data) unless --reliable; other topics reliable.

examples:
  diffpose-bag play outputs/bags/vtest                      # once, real time
  diffpose-bag play outputs/bags/vtest --clock --rate 0.5   # /clock for use_sim_time nodes
  diffpose-bag play BAG --loop --start-offset 30 --topics /camera/image_raw/compressed
  diffpose-bag play BAG --remap /camera/image_raw:=/front/image_raw --wait-for /front/image_raw
"""

_EVALUATE_EPILOG = """\
offline (no --recorded): every image message of the camera topic, in header stamp order, is
decoded as the node decodes it and run through the pipeline with its header stamp (fixed
steps, hypotheses, seed: the same numbers every time); a centered window is flushed at the end.
recorded (--recorded OUTPUT_BAG): the node's PersonPoseArray outputs are matched to the bag's
frames by their header stamp; frames without an output (dropped by the node's latest-frame
slot) are counted and left out of every figure; latency = the recording's log time (receive
time) - the source stamp. Give the settings the node ran with (--params, --detector-imgsz, ...):
YOLO11n-pose runs on the same frames with them.

both: ground truth on <ns>/ground_truth (diffpose-bag make SEQUENCE.json) -> limb PCK@0.1 with
a 95% bootstrap interval and OKS AP, for ours and single-frame YOLO11n-pose on the same frames;
always jitter, lag and agreement per track against the smoothed YOLO teacher.
3D: with a depth topic (diffpose-bag make --depth; or --depth-topic) and the colour CameraInfo,
each scored frame gets the depth message nearest in stamp (within --depth-tolerance-ms) and our
persons go through the node's 3D stage -> frames with/without depth, persons with depth, the
share of valid 3D joints (all 17; those with 2D confidence >= 0.3), per joint, torso depths.
Recorded: also the share of the node's own poses_3d (PersonPose3DArray) when recorded.
writes: evaluation.json, predictions_ours.json, predictions_yolo.json (COCO results with
stamp_ns and track_id), gt_coco.json (with ground truth), report.png, latency.png (recorded)

examples:
  diffpose-bag evaluate bags/gt --detector-imgsz 1280 --out outputs/bag_evaluate/gt
  diffpose-bag evaluate bags/gt --recorded outputs/bags/run1 --detector-imgsz 1280
  diffpose-bag evaluate bags/gt --recorded run1 --params my_node_params.yaml
  diffpose-bag evaluate outputs/bags/vtest --window-mode centered --max-frames 100
"""

_RECORD_EPILOG = """\
Each topic is subscribed when a publisher for it appears (start the recorder first), its
type discovered on the graph and stored with its definition; messages are written as
received (serialized bytes) with the receive time as log time.

examples:
  diffpose-bag record --out outputs/bags/run1                 # node outputs until Ctrl-C
  diffpose-bag record --out run2 --duration 30 --topics /diffpose/front/poses /diagnostics
  diffpose-bag record --out run3 --use-sim-time                # log time from /clock
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


def _intrinsics_arg(text: str) -> str:
    """fx,fy,cx,cy is checked here (a usage error); a file is read by `make`."""
    if ',' in text and not Path(text).exists():
        try:
            values = [float(v) for v in text.split(',')]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) for v in values) \
                or min(values[:2]) <= 0:
            raise argparse.ArgumentTypeError(
                f'expected fx,fy,cx,cy (pixels, fx and fy > 0) or a file, got {text!r}')
    return text


def build_parser() -> argparse.ArgumentParser:
    from diffpose_ros.bags import io, make
    from diffpose_ros.ros.bag_record import DEFAULT_TOPICS

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=formatter)
    sub = parser.add_subparsers(dest='command', metavar='{make,info,play,record,evaluate}')
    sub.required = True

    # ---------------------------------------------------------------------------- make
    p = sub.add_parser('make', help='video / image folder / sequence JSON -> bag',
                       description='Make a rosbag2 bag from a video, an image folder or a '
                       'labelled sequence JSON; without an input, the sample bag from vtest.avi.',
                       epilog=_MAKE_EPILOG, formatter_class=formatter)
    p.add_argument('input', nargs='?', help='video[:start[:stop]], image folder or .json '
                   '(default: the sample bag from vtest.avi)')
    p.add_argument('-o', '--out', type=Path,
                   help='bag directory to create (default: outputs/bags/<input name>; the '
                   f'sample bag: {make.sample_bag_path()})')
    p.add_argument('--storage', choices=io.STORAGES, default=io.DEFAULT_STORAGE,
                   help='storage plugin (default: %(default)s)')
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument('--compressed', dest='compressed', action='store_true', default=None,
                     help='CompressedImage JPEG on <ns>/image_raw/compressed (default for the '
                     'sample bag)')
    fmt.add_argument('--raw', dest='compressed', action='store_false',
                     help='Image bgr8 on <ns>/image_raw (default for other inputs)')
    p.add_argument('--jpeg-quality', type=int, default=make.DEFAULT_JPEG_QUALITY,
                   help='JPEG quality 1-100 when encoding frames (default: %(default)s)')
    p.add_argument('--reencode', action='store_true',
                   help='re-encode JPEG/PNG files too (default: stored byte for byte)')
    p.add_argument('--fps', type=_positive_float,
                   help='frame rate for stamps (default: the video\'s or the JSON videos[].fps; '
                   f'else {make.DEFAULT_FPS})')
    p.add_argument('--start-time', default=None, metavar='SECONDS|now',
                   help='stamp of the first frame, seconds since the epoch (default: '
                   f'{make.DEFAULT_START_TIME_NS // 10**9} = 2025-01-01T00:00:00Z, so a bag '
                   'made twice is identical)')
    p.add_argument('--max-frames', type=_positive_int, help='stop after this many frames')
    p.add_argument('--namespace', default=make.DEFAULT_NAMESPACE,
                   help='topic prefix (default: %(default)s)')
    p.add_argument('--frame-id', default=make.DEFAULT_FRAME_ID,
                   help='header frame_id (default: %(default)s)')
    camera = p.add_mutually_exclusive_group()
    camera.add_argument('--hfov-deg', type=float, default=make.DEFAULT_HFOV_DEG,
                        help='horizontal field of view of the CameraInfo (default: '
                        '%(default)s)')
    camera.add_argument('--intrinsics', type=_intrinsics_arg, metavar='FX,FY,CX,CY|FILE',
                        help='the CameraInfo\'s camera matrix: pixels, or an OpenCV FileStorage '
                        'file (.xml/.yaml) with a 3x3 matrix node intrinsic, camera_matrix, '
                        'cameraMatrix, K or M (default: from --hfov-deg)')
    p.add_argument('--depth', type=Path, metavar='DIR',
                   help='add a depth topic from this folder of 16-bit PNG depth frames '
                   '(uint16 mm, 0 = no data) registered to the colour frames, one per frame')
    p.add_argument('--depth-topic', metavar='TOPIC',
                   help='depth topic (default: <namespace>/'
                   f'{make.DEPTH_SUBTOPIC}, as RealSense)')
    p.add_argument('--depth-match', choices=make.DEPTH_MATCHES, default='auto',
                   help='pair depth PNGs with colour frames by file stem or by name order; '
                   'auto: by stem when every colour file has a PNG of its stem, else by order '
                   '(default: %(default)s)')
    p.add_argument('--video-id', help='sequence JSON with several vid_id: the one to use')
    p.add_argument('--image-root', help='sequence JSON: directory file_name is relative to '
                   '(default: the JSON\'s directory or one of its parents)')
    p.add_argument('--force', action='store_true', help='replace an existing output bag')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bar')

    # ---------------------------------------------------------------------------- info
    p = sub.add_parser('info', help='topics, counts, duration and size of a bag',
                       description='Print what a bag holds (like `ros2 bag info`).',
                       epilog='example:\n  diffpose-bag info outputs/bags/vtest\n',
                       formatter_class=formatter)
    p.add_argument('bag', help='bag directory, its metadata.yaml, or a .mcap/.db3 file')

    # ---------------------------------------------------------------------------- play
    p = sub.add_parser('play', help="publish a bag's messages at the recorded rate",
                       description="Publish a bag's topics with rclpy at the recorded rate, "
                       'forwarding serialized bytes.', epilog=_PLAY_EPILOG,
                       formatter_class=formatter)
    p.add_argument('bag', help='bag directory, its metadata.yaml, or a .mcap/.db3 file')
    p.add_argument('-r', '--rate', type=_positive_float, default=1.0,
                   help='playback speed factor (default: %(default)s)')
    p.add_argument('-l', '--loop', action='store_true', help='play again and again')
    p.add_argument('--start-offset', type=_non_negative_float, default=0.0, metavar='SECONDS',
                   help='skip this much of the bag from its start (default: 0)')
    p.add_argument('--clock', nargs='?', type=_positive_float, const=40.0, default=None,
                   metavar='HZ', help='publish /clock (rosgraph_msgs/Clock) for use_sim_time '
                   'nodes, at HZ (default 40)')
    p.add_argument('--topics', nargs='+', metavar='TOPIC', help='only these topics')
    p.add_argument('--remap', nargs='+', default=[], metavar='OLD:=NEW',
                   help='publish topic OLD as NEW')
    p.add_argument('--reliable', action='store_true',
                   help='reliable QoS for images too (default: sensor data, best effort)')
    p.add_argument('--wait-for', nargs='+', default=[], metavar='TOPIC',
                   help='before playing, wait until each (output) topic has a subscriber')
    p.add_argument('--wait-timeout', type=_positive_float, default=30.0, metavar='SECONDS',
                   help='give up waiting after this long (default: %(default)s)')
    p.add_argument('--delay', type=_non_negative_float, default=0.0, metavar='SECONDS',
                   help='sleep before playing (default: 0)')

    # ---------------------------------------------------------------------------- record
    p = sub.add_parser('record', help='write topics to a new bag',
                       description='Record topics (serialized, with their types) into a new '
                       'bag until Ctrl-C / SIGTERM or --duration.', epilog=_RECORD_EPILOG,
                       formatter_class=formatter)
    p.add_argument('-o', '--out', type=Path, required=True, help='bag directory to create')
    p.add_argument('--topics', nargs='+', default=list(DEFAULT_TOPICS), metavar='TOPIC',
                   help='topics to record (default: %(default)s: the node\'s outputs with '
                   'the launch defaults)')
    p.add_argument('--duration', type=_positive_float, metavar='SECONDS',
                   help='stop after this long (default: until Ctrl-C / SIGTERM)')
    p.add_argument('--storage', choices=io.STORAGES, default=io.DEFAULT_STORAGE,
                   help='storage plugin (default: %(default)s)')
    p.add_argument('--use-sim-time', action='store_true',
                   help='log time from /clock instead of the wall clock')

    # ---------------------------------------------------------------------------- evaluate
    p = sub.add_parser('evaluate', help='run the pipeline over a bag, or score a recorded run',
                       description='Run the pipeline offline over every frame of a bag '
                       '(deterministic), or score the outputs a live node published '
                       '(--recorded); accuracy against the bag\'s ground truth and against '
                       'single-frame YOLO11n-pose, jitter/lag/agreement, live latency; JSON '
                       'and PNG into --out (docs/bags.md "evaluate").',
                       epilog=_EVALUATE_EPILOG, formatter_class=formatter)
    p.add_argument('bag', help='input bag (images, optional ground truth)')
    p.add_argument('--recorded', metavar='OUTPUT_BAG',
                   help='score this recording of the node\'s outputs (diffpose-bag record) '
                   'instead of running the pipeline')
    p.add_argument('-o', '--out', type=Path,
                   help='output folder (default: outputs/bag_evaluate/<bag>[_recorded])')
    p.add_argument('--camera-topic', metavar='TOPIC',
                   help='image topic (with or without /compressed; default: the bag\'s)')
    p.add_argument('--gt-topic', metavar='TOPIC',
                   help='ground truth topic (default: <ns>/ground_truth when present)')
    p.add_argument('--poses-topic', metavar='TOPIC',
                   help='recorded PersonPoseArray topic (default: the recording\'s only one, '
                   'or /diffpose/<camera>/poses)')
    group = p.add_argument_group('3D from depth (when the bag has a depth topic)')
    group.add_argument('--depth-topic', metavar='TOPIC',
                       help='registered depth image topic, 16UC1 or 32FC1 (default: the one '
                       'diffpose-bag make wrote, else the only image topic named *depth*)')
    group.add_argument('--camera-info-topic', metavar='TOPIC',
                       help='the colour camera\'s CameraInfo (default: <ns>/camera_info beside '
                       'the camera topic, else the bag\'s only one)')
    group.add_argument('--depth-tolerance-ms', type=_non_negative_float, metavar='MS',
                       help='largest |depth stamp - colour stamp| for a pair (default: '
                       'depth_stamp_tolerance_ms of --params, else 20)')
    group.add_argument('--poses-3d-topic', metavar='TOPIC',
                       help='recorded PersonPose3DArray topic (default: the recording\'s only '
                       'one, or /diffpose/<camera>/poses_3d; none: no live 3D figures)')
    group = p.add_argument_group('pipeline (defaults: the node\'s parameters, '
                                 'config/diffpose_cpu.yaml)')
    group.add_argument('--params', type=Path, metavar='YAML',
                       help='node params file the live run used (applied before the options '
                       'below)')
    group.add_argument('--weights', help='DiffPose weights (default: the shipped model)')
    group.add_argument('--backend', choices=('onnxruntime', 'torch'))
    group.add_argument('--steps', type=_positive_int, help='DDIM steps (node default 1)')
    group.add_argument('--hypotheses', type=_positive_int, help='noise hypotheses (default 1)')
    group.add_argument('--seed', type=int, help='noise seed (default 0)')
    group.add_argument('--window-mode', choices=('causal', 'centered'))
    group.add_argument('--window-size', type=_positive_int, help='frames per window (default 3)')
    group.add_argument('--detector-imgsz', type=_positive_int,
                       help='YOLO11n-pose input size (default 640; 1280 for vtest.avi)')
    group.add_argument('--detect-every-n', type=_positive_int,
                       help='detector on every n-th frame (node default 2)')
    group = p.add_argument_group('scoring')
    group.add_argument('--max-frames', type=_positive_int, help='only the first N frames')
    group.add_argument('--min-track-frames', type=_positive_int, default=5,
                       help='shorter tracks get no temporal metrics (default: %(default)s)')
    group.add_argument('--bootstrap', type=_positive_int, default=1000, metavar='N',
                       help='bootstrap resamples of the PCK intervals (default: %(default)s)')
    group.add_argument('--detection-cache', type=Path, metavar='JSON',
                       help='reuse and update YOLO11n-pose detections in this file')
    p.add_argument('-q', '--quiet', action='store_true', help='no progress bars')
    return parser


def _error(command: str, message: str) -> int:
    print(f'{PROG} {command}: error: {message}', file=sys.stderr)
    return EXIT_ERROR


def _verify_bag(out: str | Path, counts: dict[str, int]) -> None:
    """Read the bag back: BagError unless it holds the messages the writer counted."""
    from diffpose_ros.bags import io

    written = sum(counts.values())
    found = io.bag_info(out)['message_count']
    if found != written:
        raise io.BagError(f'{out} is incomplete: {written} messages written, {found} readable')


def _sample_variant(args: argparse.Namespace) -> list[str]:
    """Options that make `make` without input differ from the sample bag."""
    from diffpose_ros.bags import io, make

    changed = {
        '--raw': args.compressed is False, '--storage': args.storage != io.DEFAULT_STORAGE,
        '--jpeg-quality': args.jpeg_quality != make.DEFAULT_JPEG_QUALITY,
        '--fps': args.fps is not None, '--start-time': args.start_time is not None,
        '--max-frames': args.max_frames is not None,
        '--namespace': args.namespace != make.DEFAULT_NAMESPACE,
        '--frame-id': args.frame_id != make.DEFAULT_FRAME_ID,
        '--hfov-deg': args.hfov_deg != make.DEFAULT_HFOV_DEG,
        '--intrinsics': args.intrinsics is not None, '--depth': args.depth is not None,
    }
    return [name for name, differs in changed.items() if differs]


def _run_make(args: argparse.Namespace) -> int:
    from diffpose_ros.bags import io, make

    sample = args.input is None
    compressed = sample if args.compressed is None else args.compressed
    if sample and args.out is None and _sample_variant(args):
        return _error('make', f'{", ".join(_sample_variant(args))} make a variant of the sample '
                      f'bag: give it its own --out (the default, {make.sample_bag_path()}, is '
                      'the sample bag itself)')
    if sample:
        source = make.vtest_source(args.fps)
        out = args.out or make.sample_bag_path()
    else:
        source = make.open_source(args.input, args.fps, args.video_id, args.image_root)
        stem = Path(args.input.split(':')[0] if source.kind == 'video' else args.input)
        out = args.out or Path('outputs') / 'bags' / (stem.stem or stem.name)
    out = Path(out)
    if out.exists():
        if args.force:
            make.remove_existing_bag(out)
        elif sample and args.out is None:
            info = io.bag_info(out)
            print(f'sample bag already exists ({info["message_count"]} messages, '
                  f'{info["size_bytes"] / 1e6:.1f} MB): {out}  (--force rebuilds it)')
            return EXIT_OK
        else:
            return _error('make', f'{out} already exists (use --force to replace it)')
    if not source.fps_from_source:
        print(f'note: the source has no frame rate; stamping at {source.fps} fps (--fps)',
              file=sys.stderr)
    if args.depth_topic is not None and args.depth is None:
        print(f'{PROG} make: error: --depth-topic needs --depth DIR (the depth frames)',
              file=sys.stderr)
        return EXIT_USAGE
    depth = None if args.depth is None else make.DepthFolder(args.depth, args.depth_match)
    camera_matrix = None if args.intrinsics is None else make.parse_intrinsics(args.intrinsics)
    if depth is not None and camera_matrix is None:
        print(f'note: --depth without --intrinsics: the CameraInfo is a made-up '
              f'{args.hfov_deg:g} degree pinhole camera, so 3D positions from this bag will be '
              'off; give the colour camera\'s intrinsics', file=sys.stderr)
    options = make.MakeOptions(
        out=out, storage=args.storage, compressed=compressed, jpeg_quality=args.jpeg_quality,
        reencode=args.reencode,
        start_time_ns=(make.parse_start_time(args.start_time) if args.start_time is not None
                       else make.DEFAULT_START_TIME_NS),
        namespace=args.namespace, frame_id=args.frame_id, hfov_deg=args.hfov_deg,
        camera_matrix=camera_matrix, depth=depth, depth_topic=args.depth_topic,
        max_frames=args.max_frames, progress=not args.quiet)
    summary = make.make_bag(source, options)
    _verify_bag(summary['out'], summary['topics'])
    topics = ', '.join(f'{t} x{n}' for t, n in summary['topics'].items())
    print(f"wrote {summary['out']} ({summary['storage']}, metadata version "
          f"{summary['metadata_version']}): {summary['frames']} frames "
          f"{summary['width']}x{summary['height']} at {summary['fps']:g} fps, "
          f"{summary['size_bytes'] / 1e6:.1f} MB in {summary['seconds']:.1f} s; {topics}"
          + (f"; depth paired by {summary['depth_match']}" if summary['depth_topic'] else ''))
    return EXIT_OK


def _run_info(args: argparse.Namespace) -> int:
    from diffpose_ros.bags import io

    print(io.format_info(io.bag_info(args.bag)))
    return EXIT_OK


def _run_play(args: argparse.Namespace) -> int:
    from diffpose_ros.ros import bag_play

    result = bag_play.play(
        args.bag, rate=args.rate, loop=args.loop, start_offset_s=args.start_offset,
        clock=args.clock is not None, clock_hz=args.clock or bag_play.DEFAULT_CLOCK_HZ,
        topics=args.topics, remaps=bag_play.parse_remaps(args.remap), reliable=args.reliable,
        wait_for=args.wait_for, wait_timeout_s=args.wait_timeout, delay_s=args.delay)
    counts = ', '.join(f'{t} x{n}' for t, n in result.published.items())
    print(f"{'interrupted' if result.interrupted else 'done'}: {counts} in {result.wall_s:.2f} s "
          f'({result.loops} pass(es) over {result.bag_span_s:.2f} s of bag time); schedule lag '
          f'p50 {result.lag_p50_ms:.1f} ms, max {result.lag_max_ms:.1f} ms'
          + (f'; /clock x{result.clock_messages}' if args.clock is not None else ''))
    sys.stdout.flush()
    return EXIT_OK


def _run_record(args: argparse.Namespace) -> int:
    from diffpose_ros.ros import bag_record

    def log(message: str) -> None:
        print(message, flush=True)

    result = bag_record.record(
        str(args.out), args.topics, duration_s=args.duration, storage=args.storage,
        use_sim_time=args.use_sim_time, log=log)
    _verify_bag(result.out, result.counts)
    counts = ', '.join(f'{t} x{n}' for t, n in result.counts.items())
    print(f'stopped ({result.stopped_by}) after {result.wall_s:.1f} s; wrote {result.out}: '
          f'{counts}', flush=True)
    if result.never_seen:
        print(f'warning: never saw a publisher on {", ".join(result.never_seen)}',
              file=sys.stderr)
    if result.skipped_before_clock:
        print(f'note: {result.skipped_before_clock} message(s) arrived before the first /clock '
              'and were not written', file=sys.stderr)
    return EXIT_OK


def _percent(value: object, digits: int = 1) -> str:
    return 'n/a' if value is None or value != value else f'{value:.{digits}f}'


def _run_evaluate(args: argparse.Namespace) -> int:
    from diffpose_ros.assets import AssetError
    from diffpose_ros.bags import evaluate as bag_eval
    from diffpose_ros.bags import io
    from diffpose_ros.model.files import WeightsError

    # the bags first: a missing or corrupt one fails before any model is loaded
    stream = bag_eval.scan_images(args.bag, args.camera_topic, args.max_frames or 0)
    recording = (bag_eval.read_recording(args.recorded, args.poses_topic, stream.camera)
                 if args.recorded else None)
    gt = bag_eval.read_ground_truth(stream, args.gt_topic)
    from diffpose_ros.bags import depth as bag_depth

    depth = bag_depth.find_depth(args.bag, stream.topic, stream.custom_data, args.depth_topic,
                                 args.camera_info_topic)
    recorded_3d = (bag_depth.read_recorded_3d(args.recorded, args.poses_3d_topic,
                                              stream.camera) if args.recorded else None)
    tolerance_ms = _depth_tolerance_ms(args)
    config, weights = bag_eval.pipeline_config(
        args.params, steps=args.steps, hypotheses=args.hypotheses, seed=args.seed,
        window_mode=args.window_mode, window_size=args.window_size,
        detector_imgsz=args.detector_imgsz, detect_every_n=args.detect_every_n,
        backend=args.backend, weights_path=args.weights)
    from diffpose_ros.runtime.devices import plan_devices

    # a GPU params file on a machine without a usable GPU: the CPU, one warning (as the node)
    planned, moved = plan_devices(config)
    if moved:
        pose = ('+'.join(planned.providers) if planned.backend == 'onnxruntime'
                else planned.device)
        print(f'warning: GPU requested but not usable here: {"; ".join(moved)}; running the '
              f'detector on {planned.device}, backbone and pose head on {pose}', file=sys.stderr)
        config = planned
    target = io.resolve_bag(args.bag)
    name = target.name if target.is_dir() else target.stem
    out = args.out or Path('outputs') / 'bag_evaluate' / (name + ('_recorded' if recording
                                                                   else ''))
    common = {'n_resamples': args.bootstrap, 'min_track_frames': args.min_track_frames,
              'progress': not args.quiet,
              'info': {'weights': weights or 'default (shipped weights if present, else the '
                                              'seeded random head)',
                       'params_file': None if args.params is None else str(args.params)}}
    try:
        from diffpose_ros.detection import UltralyticsPoseDetector
        from diffpose_ros.evaluation import CachingDetector

        detector = CachingDetector(UltralyticsPoseDetector.from_config(config))
        if args.detection_cache:
            detector.load(args.detection_cache)
        common.update(depth=depth, depth_tolerance_ms=tolerance_ms)
        if recording is not None:
            summary = bag_eval.evaluate_recorded(stream, recording, out, config, detector, gt,
                                                 recorded_3d=recorded_3d, **common)
        else:
            from diffpose_ros.runtime.factory import make_runtime

            runtime = make_runtime(config, weights_path=weights)
            summary = bag_eval.evaluate_offline(stream, out, config, runtime, detector, gt,
                                                **common)
        if args.detection_cache:
            detector.save(args.detection_cache)
    except (AssetError, WeightsError, OSError) as exc:
        return _error('evaluate', str(exc))
    frames = summary['frames']
    line = (f"{summary['mode']}: {frames['frames']} frames of {stream.topic}, "
            f"{frames['scored']} scored, {frames['bad_input']} bad")
    if recording is not None:
        lat = summary['latency']
        stats = lat['ms'] if lat['clock_consistent'] else lat['relative_ms']
        line += (f", {frames['dropped']} dropped by the live node; latency p50 "
                 f"{stats['p50']:.1f} ms, p95 {stats['p95']:.1f} ms, max {stats['max']:.1f} ms"
                 + ('' if lat['clock_consistent'] else ' (relative: stamps and receive times '
                    'are on different clocks)'))
    print(line)
    accuracy = summary['accuracy']
    if accuracy is None:
        print('no ground truth in the bag: temporal metrics only')
    else:
        for key, label in (('ours', 'ours'), ('yolo', 'YOLO11n-pose')):
            pck = accuracy[key]['limb_pck']
            lo, hi = pck['ci95_percent']
            print(f"{label}: limb PCK@0.1 {_percent(pck['pck_percent'])} % [95% CI "
                  f"{_percent(lo)}, {_percent(hi)}] over {pck['num_persons']} GT persons; OKS "
                  f"AP {_percent(accuracy[key]['oks_ap_percent']['AP'])}")
    _print_3d(summary)
    temporal = summary['temporal']
    jit, agr = temporal['jitter'], temporal['agreement']
    print(f"temporal: {temporal['num_tracks_used']} tracks; jitter ours "
          f"{_percent(jit['ours'], 4)} vs YOLO {_percent(jit['yolo_raw'], 4)}; lag "
          f"{temporal['lag']['pooled_frames']} frames; agreement@0.1 ours "
          f"{_percent(agr['ours_vs_teacher_percent'])} % vs YOLO "
          f"{_percent(agr['yolo_raw_vs_teacher_percent'])} %")
    for warning in summary.get('warnings') or []:
        print(f'warning: {warning}', file=sys.stderr)
    if summary.get('trained') is False:
        print('note: the DiffPose head is UNTRAINED (random weights): our figures are '
              'meaningless until trained weights exist', file=sys.stderr)
    print(f'wrote {out}/evaluation.json and report.png', flush=True)
    return EXIT_OK


def _depth_tolerance_ms(args: argparse.Namespace) -> float:
    """--depth-tolerance-ms, else the params file's depth_stamp_tolerance_ms, else 20 ms."""
    from diffpose_ros.bags.depth import DEFAULT_TOLERANCE_MS

    if args.depth_tolerance_ms is not None:
        return args.depth_tolerance_ms
    if args.params is not None:
        from diffpose_ros.ros.params import load_yaml_defaults

        value = load_yaml_defaults(args.params, 'diffpose').get('depth_stamp_tolerance_ms')
        if value is not None:
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f'{args.params}: depth_stamp_tolerance_ms must be a number '
                                 f'>= 0, got {value!r}')
            return float(value)
    return DEFAULT_TOLERANCE_MS


def _validity_line(figures: dict) -> str:
    torso = figures['torso_depth_m']
    return (f"{figures['persons_with_depth']} persons with depth; valid 3D joints "
            f"{_percent(_share_percent(figures['valid_joint_share']))} % of 17 per person, "
            f"{_percent(_share_percent(figures['valid_confident_share']))} % of those with 2D "
            'confidence >= 0.3'
            + (f"; median torso depth {torso['median']:.2f} m" if torso else ''))


def _share_percent(share: float | None) -> float | None:
    return None if share is None else 100.0 * share


def _print_3d(summary: dict) -> None:
    depth = summary.get('depth_3d')
    if depth is not None:
        head = f"3D ({depth['depth_topic']}, tolerance {depth['tolerance_ms']:g} ms): "
        if not depth['available']:
            print(head + f"not computed: {depth['unavailable_reason']}")
        else:
            print(head + f"{depth['frames_with_depth']} of {depth['frames_scored']} scored "
                  f"frames with depth, {depth['frames_without_depth']} without, "
                  f"{depth['frames_bad_depth']} bad; " + _validity_line(depth))
            if depth['distortion_nonzero']:
                print(f"warning: {depth['camera_info_topic']} has non-zero distortion; the 3D "
                      'stage assumes a rectified image', file=sys.stderr)
            for error in depth['bad_depth_errors']:
                print(f'warning: depth not used: {error}', file=sys.stderr)
    live = summary.get('live_3d')
    if live is not None:
        print(f"live 3D ({live['poses_3d_topic']}): {live['messages']} messages, "
              f"{live['frames_scored_without_3d']} scored frames without one; "
              + _validity_line(live))


# subcommand -> runner
_RUNNERS = {'make': _run_make, 'info': _run_info, 'play': _run_play, 'record': _run_record,
            'evaluate': _run_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from diffpose_ros.bags.io import BagError

    try:
        return _RUNNERS[args.command](args)
    except (BagError, ValueError, OSError) as exc:     # OSError: e.g. an unwritable --out
        return _error(args.command, str(exc))
    except KeyboardInterrupt:
        return _error(args.command, 'interrupted')


if __name__ == '__main__':
    sys.exit(main())
