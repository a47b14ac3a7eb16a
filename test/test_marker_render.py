"""The MarkerArray renderer (diffpose_ros/ros/marker_render.py) on the node's own markers
(ros/markers.py pose_markers) and on hand-made markers of every drawn type."""
from __future__ import annotations

import types

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from diffpose_ros.ros.marker_render import render_marker_array
from diffpose_ros.ros.markers import delete_all_markers, pose_markers, track_colour

K = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
HEADER = Header(frame_id='camera_color_optical_frame')
STYLE = {'lifetime_s': 0.2, 'min_confidence': 0.3, 'joint_scale_m': 0.05,
         'bone_width_m': 0.02}


def _standing_person(track_id: int, centre_u: float) -> types.SimpleNamespace:
    """A COCO-17 stick figure (px) standing at image column ``centre_u``."""
    offsets = [(0, -150), (-8, -158), (8, -158), (-16, -154), (16, -154),  # head
               (-40, -110), (40, -110), (-55, -50), (55, -50), (-60, 5), (60, 5),  # arms
               (-25, 10), (25, 10), (-28, 90), (28, 90), (-30, 170), (30, 170)]  # legs
    keypoints = np.array([[centre_u + du, 240.0 + dv, 0.9] for du, dv in offsets])
    return types.SimpleNamespace(track_id=track_id, keypoints=keypoints)


def _colour_pixels(png_path, rgb01, tolerance=6) -> int:
    image = cv2.imread(str(png_path), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    target = np.round(np.asarray(rgb01) * 255).astype(int)
    return int((np.abs(image - target).max(axis=-1) <= tolerance).sum())


def test_renders_pose_markers_in_each_tracks_colour(tmp_path):
    persons = [_standing_person(3, 220.0), _standing_person(8, 430.0)]
    markers = pose_markers(persons, HEADER, K, depth_m=2.5, removed_track_ids=[5], **STYLE)
    out = tmp_path / 'markers.png'
    summary = render_marker_array(markers, out, title='two tracks')
    assert summary.frame_id == 'camera_color_optical_frame'
    assert summary.drawn == {'SPHERE_LIST': 2, 'LINE_LIST': 2}
    assert summary.skipped == {'DELETE': 2}            # track 5 ended: both namespaces
    assert summary.extent_m[2] == pytest.approx((2.5, 2.5))  # the plane at depth_m
    assert out.stat().st_size > 10_000
    image = cv2.imread(str(out))
    assert image.shape[:2] == (550, 600) and image.std() > 5
    for track_id in (3, 8):
        assert _colour_pixels(out, track_colour(track_id)) > 200, track_id
    assert _colour_pixels(out, track_colour(4)) == 0   # a track that is not there


def test_marker_pose_per_point_colours_points_strip_and_text(tmp_path):
    strip = Marker(header=HEADER, ns='strip', id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    strip.points = [Point(x=0.0, y=0.0, z=1.0), Point(x=0.5, y=0.0, z=1.0)]
    strip.scale.x = 0.02
    strip.color = ColorRGBA(r=0.0, g=0.0, b=1.0, a=1.0)
    # 90 degrees about z, then moved 1 m forward: (0.5, 0, 1) -> (0, 0.5, 2)
    strip.pose.orientation.z = strip.pose.orientation.w = np.sqrt(0.5)
    strip.pose.position.z = 1.0
    dots = Marker(header=HEADER, ns='dots', id=1, type=Marker.POINTS, action=Marker.ADD)
    dots.points = [Point(x=-0.4, y=-0.3, z=1.5), Point(x=0.4, y=0.3, z=1.5)]
    dots.colors = [ColorRGBA(r=1.0, g=0.0, b=1.0, a=1.0), ColorRGBA(r=0.0, g=1.0, b=1.0, a=1.0)]
    dots.scale.x = dots.scale.y = 0.08
    label = Marker(header=HEADER, ns='label', id=2, type=Marker.TEXT_VIEW_FACING,
                   action=Marker.ADD, text='track 7')
    label.pose.position.y = -0.5
    label.pose.position.z = 1.5
    label.scale.z = 0.1
    label.color = ColorRGBA(r=1.0, g=0.0, b=0.0, a=1.0)  # the default alpha 0 is invisible
    unsupported = Marker(header=HEADER, ns='cube', id=3, type=Marker.CUBE, action=Marker.ADD)
    out = tmp_path / 'mixed.png'
    summary = render_marker_array(MarkerArray(markers=[strip, dots, label, unsupported]), out)
    assert summary.drawn == {'LINE_STRIP': 1, 'POINTS': 1, 'TEXT_VIEW_FACING': 1}
    assert summary.skipped == {'CUBE': 1}
    (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = summary.extent_m
    assert (x_lo, x_hi) == pytest.approx((-0.4, 0.4))
    assert (y_lo, y_hi) == pytest.approx((-0.5, 0.5))   # the rotated strip ends at y = 0.5
    assert (z_lo, z_hi) == pytest.approx((1.5, 2.0))    # ... and z = 2
    assert _colour_pixels(out, (1.0, 0.0, 1.0)) > 20     # per-point colours
    assert _colour_pixels(out, (0.0, 1.0, 1.0)) > 20
    assert _colour_pixels(out, (1.0, 0.0, 0.0), tolerance=30) > 20  # the text


def test_empty_deletions_only_and_several_frames_are_refused(tmp_path):
    out = tmp_path / 'never.png'
    with pytest.raises(ValueError, match='nothing to draw'):
        render_marker_array(MarkerArray(), out)
    with pytest.raises(ValueError, match='DELETEALL'):
        render_marker_array(delete_all_markers(HEADER), out)
    nobody = _standing_person(2, 300.0)
    nobody.keypoints[:, 2] = 0.0                          # no confident joint: DELETEs only
    with pytest.raises(ValueError, match='nothing to draw'):
        render_marker_array(pose_markers([nobody], HEADER, K, depth_m=2.0, **STYLE), out)
    first = pose_markers([_standing_person(1, 300.0)], HEADER, K, depth_m=2.0, **STYLE)
    second = pose_markers([_standing_person(2, 300.0)], Header(frame_id='other_frame'), K,
                          depth_m=2.0, **STYLE)
    with pytest.raises(ValueError, match='several frames'):
        render_marker_array(MarkerArray(markers=first.markers + second.markers), out)
    assert not out.exists()
