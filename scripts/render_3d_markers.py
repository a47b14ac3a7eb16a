"""Make docs/img/markers_3d.png: the node's 3D skeleton markers on a real RGB-D frame, rendered
by the project's own plotting (diffpose_ros/ros/marker_render.py; there is no RViz here).

A real Kinect colour frame with its registered 16-bit depth (../shared/data/rgbd, local data,
never committed) goes through the real pipeline (shipped model, CPU; the still frame is fed
``--repeats`` times at 30 Hz, a camera watching a still person, so the tracker confirms the
track and the temporal window fills), then ``depth3d.persons_to_3d`` with the frame's depth and
intrinsics, then 3D markers as the node publishes them (only valid 3D joints; bones between two
of them). Left: the 2D poses drawn as in the debug image (on a blank canvas: the data has no
licence, so none of its pixels is in the picture); right: the MarkerArray in the colour camera's
optical frame.

    .venv/bin/python scripts/render_3d_markers.py [--data full_body|upper_body] [--frame 03]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RGBD = ROOT.parent / 'shared' / 'data' / 'rgbd'
FRAME_ID = 'kinect_rgb_optical_frame'
# intrinsics from ../shared/data/rgbd/README.md (colour = depth frame)
FULL_BODY_K = (364.276, 364.276, 256.512, 207.939)
MARKER_STYLE = {'lifetime_s': 0.0, 'min_confidence': 0.3, 'joint_scale_m': 0.05,
                'bone_width_m': 0.02}


def load_frame(data: str, frame: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(colour BGR, depth uint16 mm, (fx, fy, cx, cy)) of one frame of ../shared/data/rgbd."""
    import cv2

    if data == 'full_body':
        root = RGBD / 'kinect_full_body'
        colour_path, depth_path = root / 'color' / f'{frame}.png', root / 'depth' / f'{frame}.png'
        k = FULL_BODY_K
    else:
        root = RGBD / 'kinect_upper_body'
        name = f'{int(frame):010d}'
        colour_path, depth_path = root / 'color' / f'{name}.jpg', root / 'depth' / f'{name}.png'
        storage = cv2.FileStorage(str(root / 'camera_0000000000.xml'), cv2.FILE_STORAGE_READ)
        matrix = storage.getNode('intrinsic').mat()
        storage.release()
        k = (matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2])
    colour = cv2.imread(str(colour_path), cv2.IMREAD_COLOR)
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if colour is None or depth is None:
        raise FileNotFoundError(f'cannot read {colour_path} / {depth_path} (local data only)')
    if depth.dtype != np.uint16 or depth.shape != colour.shape[:2]:
        raise ValueError(f'{depth_path}: expected uint16 depth of the colour size, got '
                         f'{depth.dtype} {depth.shape}')
    return colour, depth, tuple(float(v) for v in k)


def markers_3d(persons, result3d, header, camera_matrix):
    """The node's markers (markers.pose_markers) at the measured 3D positions."""
    from diffpose_ros.ros.markers import pose_markers

    measured = {int(p.track_id): (result3d.xyz_m[i], result3d.valid[i])
                for i, p in enumerate(persons) if result3d.has_depth[i]}
    return pose_markers(persons, header, camera_matrix, depth_m=2.0,
                        keypoints_3d=measured, **MARKER_STYLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', choices=('full_body', 'upper_body'), default='full_body')
    parser.add_argument('--frame', default='03', help="full_body: 01-03; upper_body: 0-99")
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out', type=Path, default=ROOT / 'docs' / 'img' / 'markers_3d.png')
    args = parser.parse_args(argv)
    import cv2
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from std_msgs.msg import Header

    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.depth3d import Intrinsics, depth_to_metres, persons_to_3d
    from diffpose_ros.pipeline import PosePipeline, draw_poses
    from diffpose_ros.ros.marker_render import draw_marker_array
    from diffpose_ros.runtime.devices import build_engines

    colour, depth, (fx, fy, cx, cy) = load_frame(args.data, args.frame)
    engines = build_engines(PipelineConfig())
    pipeline = PosePipeline(engines.config, engines.runtime, engines.detector)
    result = None
    for i in range(args.repeats):
        result = pipeline.process(colour, i * 33_333_333) or result
    if result is None or not result.persons:
        print('no person found', file=sys.stderr)
        return 1
    persons = result.persons
    result3d = persons_to_3d(persons, depth_to_metres(depth, '16UC1'),
                             Intrinsics(fx=fx, fy=fy, cx=cx, cy=cy))
    camera_matrix = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    header = Header(frame_id=FRAME_ID)
    markers = markers_3d(persons, result3d, header, camera_matrix)

    fig = plt.figure(figsize=(10.0, 5.2), dpi=100)
    left = fig.add_axes((0.01, 0.04, 0.3, 0.86))
    # the 2D poses on a blank canvas of the image's size: the data has no licence, so no pixel
    # of it goes into the committed picture
    overlay = draw_poses(np.full_like(colour, 40), result)
    # the persons' boxes with a margin (the rest is background)
    boxes = np.array([p.box_xyxy for p in persons])
    x0, y0 = boxes[:, :2].min(axis=0)
    x1, y1 = boxes[:, 2:].max(axis=0)
    pad = 0.15 * max(x1 - x0, y1 - y0)
    height, width = overlay.shape[:2]
    x0, y0 = int(max(x0 - pad, 0)), int(max(y0 - pad, 0))
    x1, y1 = int(min(x1 + pad, width)), int(min(y1 + pad, height))
    left.imshow(cv2.cvtColor(overlay[y0:y1, x0:x1], cv2.COLOR_BGR2RGB))
    left.set_axis_off()
    left.set_title('2D poses (as in the debug image)', fontsize=10)
    right = fig.add_axes((0.32, 0.0, 0.68, 0.95), projection='3d')
    summary = draw_marker_array(right, markers)
    right.set_title(f'3D markers from the registered depth ({FRAME_ID})', fontsize=10)
    lines = [f'track {p.track_id}: torso at {result3d.torso_depth_m[i]:.2f} m, '
             f'{int(result3d.valid[i].sum())}/17 valid 3D joints'
             for i, p in enumerate(persons)]
    fig.text(0.99, 0.01, '\n'.join(lines), ha='right', va='bottom', fontsize=8, color='0.3')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    for i, person in enumerate(persons):
        torso = result3d.torso_depth_m[i]
        width = float(np.linalg.norm(result3d.xyz_m[i, 5] - result3d.xyz_m[i, 6]))
        print(f'track {person.track_id}: torso at {torso:.3f} m, '
              f'{int(result3d.valid[i].sum())}/17 valid 3D joints, shoulder width {width:.3f} m')
    print(f'drawn {summary.drawn}, skipped {summary.skipped}; wrote {args.out} '
          f'({args.out.stat().st_size // 1024} KB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
