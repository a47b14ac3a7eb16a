"""PersonPose3DArray from the ROS-free 3D stage (depth3d), shared by the node and the benchmark
(benchmarks/bench_depth3d.py times exactly what the node runs per frame)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import Point

from diffpose_ros.depth3d import Keypoints3d
from diffpose_ros.msg import Keypoint3D, PersonPose3D, PersonPose3DArray


@dataclasses.dataclass
class Poses3dMessage:
    msg: PersonPose3DArray
    # track id -> (xyz_m (K, 3), valid (K,)) of the published persons, for the markers
    by_track: dict[int, tuple[np.ndarray, np.ndarray]]
    valid_joints: int  # valid joints of the published persons
    total_joints: int  # all joints of the published persons
    persons_without_depth: int  # left out: no torso depth


def poses_3d_message(header: Any, camera: str, depth_stamp: Any, persons: Sequence[Any],
                     points: Keypoints3d) -> Poses3dMessage:
    """One PersonPose3DArray; persons without a torso depth are left out and counted."""
    msg = PersonPose3DArray()
    msg.header = header
    msg.camera = camera
    msg.depth_stamp = depth_stamp
    by_track: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    valid_joints = total_joints = without = 0
    # Python floats and bools once (per-element numpy scalars make message building slower)
    xyz_list, confidence_list = points.xyz_m.tolist(), points.confidence.tolist()
    valid_list = points.valid.tolist()
    for index, person in enumerate(persons):
        if not points.has_depth[index]:
            without += 1
            continue
        xyz, valid = points.xyz_m[index], points.valid[index]
        person_msg = PersonPose3D(track_id=int(person.track_id),
                                  torso_depth_m=float(points.torso_depth_m[index]))
        person_msg.keypoints = [
            Keypoint3D(position=Point(x=x, y=y, z=z), confidence=c, valid=v)
            for (x, y, z), c, v in zip(xyz_list[index], confidence_list[index],
                                       valid_list[index])]
        msg.persons.append(person_msg)
        by_track[int(person.track_id)] = (xyz, valid)
        valid_joints += int(valid.sum())
        total_joints += len(valid)
    return Poses3dMessage(msg, by_track, valid_joints, total_joints, without)
