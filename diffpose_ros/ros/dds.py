"""Which environment variable points Fast DDS at an XML profile (no rclpy needed).

Fast DDS 2.x (Humble, Iron, Jazzy) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``; Fast DDS 3
(Kilted on) reads ``FASTDDS_DEFAULT_PROFILES_FILE``, and Kilted's rmw also honours the old name
but warns in every process that it is deprecated. Setting the wrong one silently leaves the
default 512 KB shared-memory segment: measured with the Jazzy wheels, a reliable publisher and
the node's best-effort subscription, 768x576 bgr8 frames at 2 Hz arrived 1 of 10 times.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

FASTDDS_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'     # Fast DDS 3: Kilted and later
FASTRTPS_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'   # Fast DDS 2: Humble, Iron, Jazzy
PROFILE_VARIABLES = (FASTDDS_VARIABLE, FASTRTPS_VARIABLE)
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')


def profile_variable(environ: Mapping[str, str] | None = None) -> str:
    """The profile variable the installed Fast DDS reads.

    ``ROS_DISTRO`` decides where it is set (a sourced ROS installation); otherwise (pip wheels)
    the Fast DDS package of the ROS prefixes does: ``share/fastrtps`` is 2.x, ``share/fastdds``
    is 3.
    """
    env = os.environ if environ is None else environ
    distro = env.get('ROS_DISTRO', '').strip().lower()
    if distro:
        return FASTRTPS_VARIABLE if distro in FAST_DDS_2_DISTROS else FASTDDS_VARIABLE
    prefixes = [p for p in env.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    for prefix in (*prefixes, sys.prefix):
        share = Path(prefix) / 'share'
        if (share / 'fastdds').is_dir():
            return FASTDDS_VARIABLE
        if (share / 'fastrtps').is_dir():
            return FASTRTPS_VARIABLE
    return FASTDDS_VARIABLE

