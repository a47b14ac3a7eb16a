"""RViz markers for tracked 2D poses: pure functions, no node objects.

Keypoints are image pixels; RViz needs 3D points. Each keypoint is back-projected through the
camera intrinsics onto a plane ``depth_m`` in front of the camera, in the camera optical frame
(x right, y down, z forward; REP-103), so the skeleton overlays the camera image when RViz looks
through that camera. A person with 3D keypoints from a depth image (``keypoints_3d``) is drawn at
its measured positions instead: only its valid 3D joints, bones only between two of them.

Marker contract (no blinking, no RViz warnings):

- namespaces ``joints`` (SPHERE_LIST of confident joints) and ``bones`` (LINE_LIST of bones
  whose two ends are confident); marker id = track id (stable per track);
- colour from the track id (the same hue as the debug image), alpha 1, ``orientation.w = 1``;
- header = the source image header, ``lifetime`` ~ 2 frame periods, ``frame_locked`` false;
- a marker that would be empty is sent as DELETE instead (RViz rejects point-less lists);
- tracks that ended get DELETE in both namespaces; :func:`delete_all_markers` on deactivate.
"""
from __future__ import annotations

import colorsys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from diffpose_ros.skeleton import BONES

JOINTS_NS = 'joints'
BONES_NS = 'bones'
NAMESPACES = (JOINTS_NS, BONES_NS)
MARKER_ID_MASK = 0x7FFFFFFF  # Marker.id is int32; track ids are int64 and never reused


def track_colour(track_id: int) -> tuple[float, float, float]:
    """Deterministic RGB in [0, 1] for a track id.

    Same hue as the debug image (OpenCV hue ``(id * 47) % 180``, saturation 220/255, value 1):
    consecutive ids are 94 degrees of hue apart.
    """
    hue = (int(track_id) * 47) % 180
    r, g, b = colorsys.hsv_to_rgb(hue / 180.0, 220.0 / 255.0, 1.0)
    return float(r), float(g), float(b)


def marker_id(track_id: int) -> int:
    """The int32 marker id of a track (the track id itself below 2**31)."""
    return int(track_id) & MARKER_ID_MASK


def camera_matrix_from(camera_matrix: Any) -> np.ndarray:
    """A checked (3, 3) float64 intrinsic matrix (accepts ``CameraInfo.k``'s 9 numbers).

    Raises:
        ValueError: wrong size, non-finite entries, or fx / fy zero (uncalibrated camera).
    """
    k = np.asarray(camera_matrix, dtype=np.float64)
    if k.size != 9:
        raise ValueError(f'camera matrix must be 3x3 (or 9 numbers), got shape {k.shape}')
    k = k.reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise ValueError('camera matrix has non-finite entries')
    if k[0, 0] == 0.0 or k[1, 1] == 0.0:
        raise ValueError(
            f'camera matrix has fx = {k[0, 0]} and fy = {k[1, 1]}: the camera is uncalibrated '
            '(CameraInfo.k must have non-zero focal lengths)')
    return k


def backproject(pixels_xy: np.ndarray, camera_matrix: Any, depth_m: float) -> np.ndarray:
    """Image pixels -> 3D points on the plane z = ``depth_m`` in the camera optical frame.

    Args:
        pixels_xy: (K, 2) pixel coordinates with the origin at the top-left corner of the
            top-left pixel (pixel centres at +0.5, the message convention).
        camera_matrix: (3, 3) intrinsics K (pixel-centre convention, as in CameraInfo).
        depth_m: Depth of the plane [m].

    Returns:
        (K, 3) points [m]: x right, y down, z forward (= ``depth_m``).

    Raises:
        ValueError: invalid intrinsics or pixel array shape.
    """
    k = camera_matrix_from(camera_matrix)
    xy = np.asarray(pixels_xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f'pixels_xy must be (K, 2), got shape {xy.shape}')
    u = xy[:, 0] - 0.5  # corner convention -> pixel-centre convention of the camera model
    v = xy[:, 1] - 0.5
    fx, skew, cx = k[0]
    fy, cy = k[1, 1], k[1, 2]
    y_n = (v - cy) / fy
    x_n = (u - cx - skew * y_n) / fx
    depth = float(depth_m)
    return np.stack([x_n * depth, y_n * depth, np.full_like(x_n, depth)], axis=1)


def _copy_header(header: Any) -> Header:
    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def _duration(seconds: float) -> Duration:
    sec, nanosec = divmod(int(round(max(float(seconds), 0.0) * 1e9)), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


def _base_marker(header: Header, ns: str, track_id: int, action: int) -> Marker:
    marker = Marker()
    marker.header = _copy_header(header)
    marker.ns = ns
    marker.id = marker_id(track_id)
    marker.action = action
    marker.pose.orientation.w = 1.0
    marker.frame_locked = False
    return marker


def _delete(header: Header, ns: str, track_id: int) -> Marker:
    return _base_marker(header, ns, track_id, Marker.DELETE)


def pose_markers(
    persons: Iterable[Any],
    header: Any,
    camera_matrix: Any | None,
    depth_m: float,
    lifetime_s: float,
    min_confidence: float,
    joint_scale_m: float,
    bone_width_m: float,
    removed_track_ids: Sequence[int] = (),
    keypoints_3d: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> MarkerArray:
    """Skeleton markers for one image.

    Args:
        persons: Objects with ``track_id`` and ``keypoints`` (K, 3): x, y [px], confidence.
        header: The source image header (frame_id = camera optical frame, stamp = image stamp).
        camera_matrix: (3, 3) intrinsics (or CameraInfo.k); None = no markers (empty array).
        depth_m: Depth of the back-projection plane [m].
        lifetime_s: Marker lifetime [s] (0 = until deleted).
        min_confidence: Joints with lower (or non-finite) confidence are left out.
        joint_scale_m: Joint sphere diameter [m].
        bone_width_m: Bone line width [m].
        removed_track_ids: Tracks that ended since the last call: DELETE in both namespaces.
        keypoints_3d: track id -> ((K, 3) positions [m] in the optical frame, (K,) valid) for
            persons with a depth measurement: their joints that are valid (and confident) are
            drawn there; other persons stay on the ``depth_m`` plane.

    Returns:
        DELETEs for removed tracks first, then per person a ``joints`` and a ``bones`` marker
        (each ADD, or DELETE when it would be empty).

    Raises:
        ValueError: invalid intrinsics.
    """
    array = MarkerArray()
    if camera_matrix is None:
        return array
    k = camera_matrix_from(camera_matrix)
    for track_id in removed_track_ids:
        array.markers.extend(_delete(header, ns, track_id) for ns in NAMESPACES)
    for person in persons:
        track_id = int(person.track_id)
        keypoints = np.asarray(person.keypoints, dtype=np.float64)
        confident = np.all(np.isfinite(keypoints), axis=1) & (keypoints[:, 2] >= min_confidence)
        measured = keypoints_3d.get(track_id) if keypoints_3d else None
        if measured is not None:
            points = np.asarray(measured[0], dtype=np.float64)
            confident = confident & np.asarray(measured[1], bool) & np.all(
                np.isfinite(points), axis=1)
        if not confident.any():
            array.markers.extend(_delete(header, ns, track_id) for ns in NAMESPACES)
            continue
        if measured is None:
            points = backproject(keypoints[:, :2], k, depth_m)
        r, g, b = track_colour(track_id)
        colour = ColorRGBA(r=r, g=g, b=b, a=1.0)

        joints = _base_marker(header, JOINTS_NS, track_id, Marker.ADD)
        joints.type = Marker.SPHERE_LIST
        joints.scale.x = joints.scale.y = joints.scale.z = float(joint_scale_m)
        joints.color = colour
        joints.lifetime = _duration(lifetime_s)
        joints.points = [_point(points[j]) for j in np.flatnonzero(confident)]
        array.markers.append(joints)

        ends = [(a, b) for a, b in BONES
                if a < len(confident) and b < len(confident) and confident[a] and confident[b]]
        if not ends:
            array.markers.append(_delete(header, BONES_NS, track_id))
            continue
        bones = _base_marker(header, BONES_NS, track_id, Marker.ADD)
        bones.type = Marker.LINE_LIST
        bones.scale.x = float(bone_width_m)
        bones.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        bones.lifetime = _duration(lifetime_s)
        bones.points = [_point(points[j]) for pair in ends for j in pair]
        array.markers.append(bones)
    return array


def _point(xyz: np.ndarray) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def delete_all_markers(header: Any) -> MarkerArray:
    """One DELETEALL marker (clears this topic's markers in RViz; e.g. on deactivate)."""
    marker = Marker()
    marker.header = _copy_header(header)
    marker.action = Marker.DELETEALL
    marker.pose.orientation.w = 1.0
    return MarkerArray(markers=[marker])
