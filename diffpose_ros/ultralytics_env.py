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
    _import_keeping_thread_settings()


def _import_keeping_thread_settings() -> None:
    """Import ultralytics without its process-wide ``OMP_NUM_THREADS=1``.

    ultralytics/__init__ sets OMP_NUM_THREADS=1 when it is unset ("reduced CPU utilization
    during training"): torch imported after that ran every op on one thread (YOLO11n-pose at
    imgsz 1280 took ~2x as long in diffpose-video), and child processes inherited it. torch is
    imported first so its thread pool is sized by the machine (or by the user's own setting),
    and the variable is removed again unless the user had set it.
    """
    import sys

    if 'ultralytics' in sys.modules:
        return
    import torch  # noqa: F401  (sizes its thread pool before ultralytics edits the environment)

    user_set = 'OMP_NUM_THREADS' in os.environ
    import ultralytics  # noqa: F401

    if not user_set:
        os.environ.pop('OMP_NUM_THREADS', None)
