"""Rosbag2 tools: make bags from videos, image folders and labelled sequences; read them back.

``diffpose_ros.bags.io`` and ``diffpose_ros.bags.make`` need no ROS installation (they use the
``rosbags`` library); publishing and recording live in ``diffpose_ros.ros.bag_play`` and
``diffpose_ros.ros.bag_record``. The command line is ``diffpose-bag`` (docs/bags.md).
"""
