"""Where our weights live and how their files are named (no torch import, so the ONNX Runtime
path can find and hash weights without PyTorch)."""
from __future__ import annotations

import sys
from pathlib import Path

SETUP_HINT = ('run scripts/setup.sh (development) or scripts/fetch_assets.py (robot), or pass '
              'the path of a diffpose_ros .safetensors file')
# Weights this project ships (models/ in the source tree or the installed share/ folder).
DEFAULT_WEIGHTS_NAME = 'diffpose_yolo11n_coco17.safetensors'


class WeightsError(RuntimeError):
    """Missing, corrupt or mismatching weights; the message names the file and the fix."""


def config_path_for(weights_path: Path) -> Path:
    """The ModelConfig JSON saved beside a weights file."""
    return Path(weights_path).with_suffix('.json')


def _installed_share() -> Path | None:
    """share/diffpose_ros of an installed package (colcon workspace or venv), via ament_index."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory('diffpose_ros'))
    except (LookupError, ValueError, OSError):    # PackageNotFoundError is a KeyError
        return None


def default_weights_path() -> Path | None:
    """The shipped weights if present: source checkout, the ament-indexed install, sys.prefix."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / 'models' / DEFAULT_WEIGHTS_NAME]
    share = _installed_share()
    if share is not None:
        candidates.append(share / 'models' / DEFAULT_WEIGHTS_NAME)
    candidates.append(Path(sys.prefix, 'share', 'diffpose_ros', 'models', DEFAULT_WEIGHTS_NAME))
    return next((p for p in candidates if p.is_file()), None)
