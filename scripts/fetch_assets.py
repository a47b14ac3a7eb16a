#!/usr/bin/env python3
"""Fetch third-party assets (YOLO11n-pose weights, vtest.avi) into the git-ignored cache."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffpose_ros.assets import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
