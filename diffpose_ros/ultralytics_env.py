"""Import ultralytics without side effects outside the project.

ultralytics writes a settings file on first import and pip-installs missing requirements at
run time unless told otherwise; both are switched off before the first import.
"""
from __future__ import annotations

import os


def configure_ultralytics_env() -> None:
    from diffpose_ros.assets import cache_dir

    os.environ.setdefault('YOLO_CONFIG_DIR', str(cache_dir() / 'ultralytics'))
    os.environ.setdefault('YOLO_AUTOINSTALL', 'False')
    os.environ.setdefault('YOLO_OFFLINE', 'True')
    os.environ.setdefault('YOLO_VERBOSE', 'False')
