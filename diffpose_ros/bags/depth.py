"""3D validity figures of ``diffpose-bag evaluate`` for bags with a depth topic (issue 12; no ROS).

A bag with a depth image registered to the colour image (``diffpose-bag make --depth``, or a
recording of a RealSense/ZED/OAK driver) and the colour camera's CameraInfo: each scored colour
frame is paired with the depth message nearest in header stamp within a tolerance
(:class:`~diffpose_ros.depth3d.StampMatcher`, as the node pairs them), and our 2D persons of that
frame go through :func:`~diffpose_ros.depth3d.persons_to_3d` (the node's 3D stage). Reported:
frames with and without matched depth, persons with depth, the share of valid 3D joints (of the
17 of each person with depth, and of those with 2D confidence >= the 3D stage's threshold), per
joint, and the persons' torso depths.

A recording of a live node with a ``diffpose_ros/msg/PersonPose3DArray`` topic (``poses_3d``) is
scored the same way from its messages, joined to the recorded 2D poses by stamp and track id
(for the 2D confidences), and compared with the 3D recomputed here from the same 2D poses.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros import depth3d
from diffpose_ros.bags import io
from diffpose_ros.ros.image_conversion import depth_image_to_array
from diffpose_ros.skeleton import KEYPOINT_NAMES, NUM_KEYPOINTS

DEFAULT_TOLERANCE_MS = 20.0
DEPTH_HINT = 'depth'  # an image topic with this in its name is taken for a depth topic
MAX_ERRORS_LISTED = 5
DEPTH_CONFIG = depth3d.DepthConfig()  # the node's 3D stage defaults


@dataclasses.dataclass
class DepthStream:
    """The depth topic of a bag and the colour camera's intrinsics."""

    bag: Path
    topic: str
    msgtype: str
    stamps: list[tuple[int, int]]  # (header stamp ns, position in the topic), bag order
    camera_info_topic: str | None
    intrinsics: depth3d.Intrinsics | None
    camera_info_size: tuple[int, int] | None  # (width, height)
    distortion_nonzero: bool
    unusable: str | None  # why no 3D can be computed (no/zero CameraInfo), else None


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _camera_info_topic_for(image_topic: str) -> str:
    """``<ns>/camera_info`` beside ``<ns>/image_raw[/compressed]`` (image_transport's rule)."""
    base = image_topic.removesuffix('/compressed')
    return base.rsplit('/', 1)[0] + '/camera_info'


def find_depth(bag: str | Path, image_topic: str, custom: Mapping[str, str],
               depth_topic: str | None = None,
               camera_info_topic: str | None = None) -> DepthStream | None:
    """The bag's depth topic and the colour camera's intrinsics, or None without depth.

    Depth topic: ``depth_topic``; else the one ``diffpose-bag make`` recorded in custom_data;
    else the image topics (not the camera topic) with 'depth' in their name: the only one, or
    the only one named ``aligned_depth_to_color`` (RealSense also records its unregistered
    ``depth/image_rect_raw``). CameraInfo: ``camera_info_topic``; else ``<ns>/camera_info``
    beside the camera topic; else the bag's only CameraInfo topic.

    BagError only for *named* topics that are missing or of the wrong type; a bag whose depth
    was found automatically but cannot be used (ambiguous, compressed, no CameraInfo) gets a
    DepthStream with ``unusable`` saying why, so its 2D evaluation still runs.
    """
    with io.open_bag(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        unusable = None
        if depth_topic:
            if depth_topic not in types:
                images = sorted(t for t, m in types.items() if m in io.IMAGE_TYPES)
                raise io.BagError(f'no depth topic {depth_topic} in the bag; its image topics: '
                                  f'{", ".join(images) or "none"}')
            if types[depth_topic] != io.IMAGE_TYPE:
                raise io.BagError(f'depth topic {depth_topic} is a {types[depth_topic]} topic; '
                                  'evaluate reads raw sensor_msgs/Image depth (16UC1, 32FC1)')
            topic = depth_topic
        elif custom.get('diffpose_ros.depth_topic') in types:
            topic = custom['diffpose_ros.depth_topic']
        else:
            candidates = sorted(t for t, m in types.items() if m in io.IMAGE_TYPES
                                and t != image_topic and DEPTH_HINT in t.lower())
            if not candidates:
                return None
            aligned = [t for t in candidates if 'aligned_depth_to_color' in t]
            topic = (candidates[0] if len(candidates) == 1
                     else aligned[0] if len(aligned) == 1 else None)
            if topic is None:
                topic = candidates[0]
                unusable = (f'several depth topics ({", ".join(candidates)}): choose the one '
                            'registered to the colour image with --depth-topic')
            elif types[topic] != io.IMAGE_TYPE:
                unusable = (f'{topic} is a {types[topic]} topic; evaluate reads raw '
                            'sensor_msgs/Image depth (16UC1, 32FC1) only')
        if unusable is not None:
            return DepthStream(bag=Path(bag), topic=topic, msgtype=types[topic], stamps=[],
                               camera_info_topic=None, intrinsics=None, camera_info_size=None,
                               distortion_nonzero=False, unusable=unusable)
        infos = sorted(t for t, m in types.items() if m == io.CAMERA_INFO_TYPE)
        if camera_info_topic:
            if types.get(camera_info_topic) != io.CAMERA_INFO_TYPE:
                raise io.BagError(f'no CameraInfo topic {camera_info_topic} in the bag; it has '
                                  f'{", ".join(infos) or "none"}')
            info_topic = camera_info_topic
        elif _camera_info_topic_for(image_topic) in infos:
            info_topic = _camera_info_topic_for(image_topic)
        else:
            info_topic = infos[0] if len(infos) == 1 else None
        store = io.bag_typestore(reader)
        connection = next(c for c in reader.connections if c.topic == topic)
        stamps = [(_stamp(store.deserialize_cdr(raw, conn.msgtype).header), position)
                  for position, (conn, _, raw) in enumerate(io.iter_messages(reader,
                                                                             [connection]))]
        intrinsics = size = None
        distorted = False
        if info_topic is None:
            unusable = (f'no CameraInfo for the camera topic {image_topic} (looked for '
                        f'{_camera_info_topic_for(image_topic)}; the bag has '
                        f'{", ".join(infos) or "none"}): no intrinsics to back-project with')
        else:
            info_conn = [c for c in reader.connections if c.topic == info_topic]
            for conn, _, raw in io.iter_messages(reader, info_conn):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                k = np.asarray(msg.k, np.float64)
                if k[0] > 0 and k[4] > 0 and np.isfinite(k).all():
                    intrinsics = depth3d.Intrinsics.from_k(k)
                    size = (int(msg.width), int(msg.height))
                    distorted = bool(np.any(np.asarray(msg.d, np.float64) != 0))
                    break
            if intrinsics is None:
                unusable = f'{info_topic} has no calibrated camera matrix (K is zero)'
    return DepthStream(bag=Path(bag), topic=topic, msgtype=types[topic], stamps=stamps,
                       camera_info_topic=info_topic, intrinsics=intrinsics,
                       camera_info_size=size, distortion_nonzero=distorted, unusable=unusable)


def match_depth(frame_stamps: Mapping[int, int], depth: DepthStream, tolerance_ns: int
                ) -> dict[int, tuple[int, int]]:
    """frame index -> (depth stamp, depth position) nearest in stamp within the tolerance."""
    matcher = depth3d.StampMatcher(capacity=max(1, len(depth.stamps)))
    for stamp, position in depth.stamps:
        matcher.add(stamp, position)
    matched = {}
    for index, stamp in frame_stamps.items():
        found = matcher.nearest(stamp, tolerance_ns)
        if found is not None:
            matched[index] = (found[0], int(found[1]))
    return matched


@dataclasses.dataclass
class Person3d:
    """One person's 3D joints and its 2D confidences (for the confident-joint share)."""

    track_id: int
    xyz_m: np.ndarray  # (17, 3)
    valid: np.ndarray  # (17,) bool
    torso_depth_m: float
    confidence_2d: np.ndarray | None  # (17,), None when the 2D pose is unknown


def compute_3d(persons_by_frame: Mapping[int, Sequence[Any]], frame_stamps: Mapping[int, int],
               frame_sizes: Mapping[int, tuple[int, int]], depth: DepthStream,
               tolerance_ns: int, config: depth3d.DepthConfig = DEPTH_CONFIG,
               ) -> tuple[dict[int, list[Person3d]], dict[str, Any]]:
    """Our 3D joints per scored frame (persons with depth only, as the node publishes) and the
    matching/bad-depth counts. ``persons_by_frame``: frame index -> persons with ``keypoints``
    (17, 3) and ``box_xyxy``; ``frame_sizes``: frame index -> colour (width, height)."""
    matched = match_depth({i: frame_stamps[i] for i in persons_by_frame}, depth, tolerance_ns)
    by_position: dict[int, list[int]] = {}
    for index, (_, position) in matched.items():
        by_position.setdefault(position, []).append(index)
    results: dict[int, list[Person3d]] = {}
    bad: dict[int, str] = {}
    with io.open_bag(depth.bag) as reader:
        store = io.bag_typestore(reader)
        connections = [c for c in reader.connections if c.topic == depth.topic]
        for position, (conn, _, raw) in enumerate(io.iter_messages(reader, connections)):
            if position not in by_position:
                continue
            try:
                # decoded as the node decodes it (ImageConversionError is a ValueError)
                image, encoding = depth_image_to_array(store.deserialize_cdr(raw, conn.msgtype))
                depth_frame = depth3d.DepthFrame(image, encoding)
            except ValueError as exc:
                for index in by_position[position]:
                    bad[index] = str(exc)
                continue
            for index in by_position[position]:
                size = frame_sizes.get(index)
                if size is not None and (depth_frame.shape[1], depth_frame.shape[0]) != size:
                    bad[index] = (f'depth {depth_frame.shape[1]}x{depth_frame.shape[0]} != colour '
                                  f'{size[0]}x{size[1]} (not registered to the colour image)')
                    continue
                persons = list(persons_by_frame[index])
                points = depth3d.persons_to_3d(persons, depth_frame, depth.intrinsics, config)
                results[index] = [
                    Person3d(track_id=int(p.track_id), xyz_m=points.xyz_m[i],
                             valid=points.valid[i],
                             torso_depth_m=float(points.torso_depth_m[i]),
                             confidence_2d=np.asarray(p.keypoints, np.float64)[:, 2])
                    for i, p in enumerate(persons) if points.has_depth[i]]
    offsets = [abs(stamp - frame_stamps[i]) / 1e6 for i, (stamp, _) in matched.items()
               if i not in bad]
    counts = {
        'frames_scored': len(persons_by_frame),
        'frames_with_depth': len(results),
        'frames_without_depth': len(persons_by_frame) - len(matched),
        'frames_bad_depth': len(bad),
        'bad_depth_errors': sorted(set(bad.values()))[:MAX_ERRORS_LISTED],
        'persons_in_frames_with_depth': sum(len(persons_by_frame[i]) for i in results),
        'depth_offset_ms': _stats(offsets),
    }
    return results, counts


def _stats(values: Iterable[float]) -> dict[str, float | None]:
    v = np.asarray(list(values), np.float64)
    if not v.size:
        return {'p50': None, 'max': None}
    return {'p50': float(np.median(v)), 'max': float(v.max())}


def validity(persons: Iterable[Person3d], min_confidence: float) -> dict[str, Any]:
    """Valid-joint shares of persons with depth (all 17 joints; joints with 2D confidence >=
    ``min_confidence``), per joint, and their torso depths."""
    persons = list(persons)
    valid = (np.stack([p.valid for p in persons]) if persons
             else np.zeros((0, NUM_KEYPOINTS), bool))
    with_2d = [p for p in persons if p.confidence_2d is not None]
    confident = (np.stack([p.confidence_2d >= min_confidence for p in with_2d]) if with_2d
                 else np.zeros((0, NUM_KEYPOINTS), bool))
    confident_valid = (np.stack([p.valid for p in with_2d]) if with_2d
                       else np.zeros((0, NUM_KEYPOINTS), bool)) & confident
    torso = np.array([p.torso_depth_m for p in persons], np.float64)

    def share(num: int, den: int) -> float | None:
        return float(num / den) if den else None

    return {
        'persons_with_depth': len(persons),
        'joints': int(valid.size), 'valid_joints': int(valid.sum()),
        'valid_joint_share': share(int(valid.sum()), int(valid.size)),
        'confident_joints': int(confident.sum()),
        'valid_confident_joints': int(confident_valid.sum()),
        'valid_confident_share': share(int(confident_valid.sum()), int(confident.sum())),
        'per_joint_valid_share': {name: share(int(valid[:, j].sum()), len(valid))
                                  for j, name in enumerate(KEYPOINT_NAMES)},
        'torso_depth_m': ({'median': float(np.median(torso)), 'min': float(torso.min()),
                           'max': float(torso.max())} if torso.size else None),
    }


DEFINITIONS = (
    'frames_*: scored frames (with a 2D output) whose nearest depth message (header stamps) is '
    'within tolerance_ms (with_depth), none is (without_depth), or it could not be used '
    '(bad_depth: encoding, size); persons_with_depth: persons whose torso depth was measured '
    '(the node publishes only these); valid_joint_share = valid 3D joints / (17 x '
    'persons_with_depth); valid_confident_share = valid / joints with 2D confidence >= '
    'min_keypoint_confidence (a joint below it is never valid); torso_depth_m over persons with '
    'depth; depth_offset_ms = |depth stamp - colour stamp| of the pairs used')


def summarise(depth: DepthStream, tolerance_ns: int, counts: Mapping[str, Any] | None,
              persons: Iterable[Person3d], config: depth3d.DepthConfig = DEPTH_CONFIG,
              ) -> dict[str, Any]:
    """evaluation.json's ``depth_3d``."""
    intrinsics = None if depth.intrinsics is None else dataclasses.asdict(depth.intrinsics)
    summary: dict[str, Any] = {
        'depth_topic': depth.topic, 'depth_messages': len(depth.stamps),
        'camera_info_topic': depth.camera_info_topic, 'intrinsics': intrinsics,
        'distortion_nonzero': depth.distortion_nonzero,
        'tolerance_ms': tolerance_ns / 1e6,
        'min_keypoint_confidence': config.min_keypoint_confidence,
        'available': depth.unusable is None, 'unavailable_reason': depth.unusable,
    }
    if depth.unusable is None and counts is not None:
        summary.update(counts)
        summary.update(validity(persons, config.min_keypoint_confidence))
        summary['definitions'] = DEFINITIONS
    return summary


# ------------------------------------------------------------------------ recorded poses_3d
@dataclasses.dataclass
class Recorded3d:
    topic: str
    by_stamp: dict[int, list[Person3d]]  # header stamp -> persons (first message per stamp)
    messages: int
    duplicate_stamps: int


def _poses_3d_connection(reader: Any, path: Path, topic: str | None, camera: str) -> Any:
    found = {c.topic: c for c in reader.connections if c.msgtype == io.POSE_3D_ARRAY_TYPE}
    if topic:
        if topic not in found:
            raise io.BagError(f'recorded bag {path} has no {io.POSE_3D_ARRAY_TYPE} topic '
                              f'{topic} (it has {", ".join(sorted(found)) or "none"})')
        return found[topic]
    if len(found) == 1:
        return next(iter(found.values()))
    preferred = [c for t, c in found.items() if t.endswith(f'/diffpose/{camera}/poses_3d')]
    if len(preferred) == 1:
        return preferred[0]
    if found:
        raise io.BagError(f'recorded bag {path} has several 3D pose topics '
                          f'({", ".join(sorted(found))}): choose one with --poses-3d-topic')
    return None


def read_recorded_3d(path: str | Path, topic: str | None = None,
                     camera: str = 'camera') -> Recorded3d | None:
    """A recording's PersonPose3DArray messages (None when it has none and none was named)."""
    path = Path(path)
    with io.open_bag(path) as reader:
        connection = _poses_3d_connection(reader, path, topic, camera)
        if connection is None:
            return None
        store = io.bag_typestore(reader)
        by_stamp: dict[int, list[Person3d]] = {}
        messages = duplicates = 0
        for conn, _, raw in io.iter_messages(reader, [connection]):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            messages += 1
            stamp = _stamp(msg.header)
            if stamp in by_stamp:
                duplicates += 1
                continue
            by_stamp[stamp] = [Person3d(
                track_id=int(p.track_id),
                xyz_m=np.array([[k.position.x, k.position.y, k.position.z]
                                for k in p.keypoints], np.float64),
                valid=np.array([bool(k.valid) for k in p.keypoints]),
                torso_depth_m=float(p.torso_depth_m), confidence_2d=None)
                for p in msg.persons]
    return Recorded3d(topic=connection.topic, by_stamp=by_stamp, messages=messages,
                      duplicate_stamps=duplicates)


def summarise_recorded(recorded: Recorded3d, frame_stamps: Mapping[int, int],
                       persons_2d: Mapping[int, Sequence[Any]],
                       recomputed: Mapping[int, Sequence[Person3d]] | None,
                       config: depth3d.DepthConfig = DEPTH_CONFIG) -> dict[str, Any]:
    """evaluation.json's ``live_3d``: the recording's own 3D validity, its persons joined to the
    recorded 2D poses (same stamp and track id) for their 2D confidences, and how it agrees with
    the 3D recomputed here from those 2D poses and the bag's depth."""
    index_of = {stamp: index for index, stamp in frame_stamps.items()}
    persons: list[Person3d] = []
    unknown = joined = 0
    frames = set()
    agree_valid = both_valid = compared = 0
    gaps_mm: list[float] = []
    for stamp, people in recorded.by_stamp.items():
        index = index_of.get(stamp)
        if index is None:
            unknown += 1
            continue
        frames.add(index)
        two_d = {int(p.track_id): p for p in persons_2d.get(index, [])}
        ours = {p.track_id: p for p in (recomputed or {}).get(index, [])}
        for person in people:
            source = two_d.get(person.track_id)
            if source is not None:
                joined += 1
                person = dataclasses.replace(
                    person, confidence_2d=np.asarray(source.keypoints, np.float64)[:, 2])
            persons.append(person)
            mine = ours.get(person.track_id)
            if mine is not None:
                compared += 1
                agree_valid += int((mine.valid == person.valid).sum())
                both = mine.valid & person.valid
                both_valid += int(both.sum())
                gaps_mm += list(np.linalg.norm(mine.xyz_m[both] - person.xyz_m[both],
                                               axis=1) * 1000.0)
    gaps = np.asarray(gaps_mm, np.float64)
    summary = {
        'poses_3d_topic': recorded.topic, 'messages': recorded.messages,
        'messages_duplicate_stamp': recorded.duplicate_stamps,
        'messages_with_unknown_stamp': unknown,
        'frames_scored_with_3d': len(frames & set(persons_2d)),
        'frames_scored_without_3d': len(set(persons_2d) - frames),
        'persons_joined_to_2d': joined,
        **validity(persons, config.min_keypoint_confidence),
        'agreement_with_recomputed': None if recomputed is None else {
            'persons_compared': compared,
            'joints_same_validity_share': (agree_valid / (compared * NUM_KEYPOINTS)
                                           if compared else None),
            'joints_valid_in_both': both_valid,
            'position_gap_mm': ({'p50': float(np.median(gaps)), 'max': float(gaps.max())}
                                if gaps.size else None),
            'note': 'the live node\'s 3D vs this evaluation\'s, from the same recorded 2D '
                    'poses and the bag\'s depth (equal when the node paired the same depth '
                    'frame)'},
    }
    return summary
