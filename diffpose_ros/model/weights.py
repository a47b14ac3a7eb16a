"""Save and load our weights without pickle: ``<name>.safetensors`` + ``<name>.json`` (config).

Only the head (STRL, condition pyramid, denoiser) is stored; the backbone comes from its own
verified asset (YOLO11n-pose) or the user's ViTPose checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from diffpose_ros.config import ModelConfig
from diffpose_ros.model.diffpose import DiffPoseNet
from diffpose_ros.model.files import (  # noqa: F401  (re-exported)
    DEFAULT_WEIGHTS_NAME,
    SETUP_HINT,
    WeightsError,
    config_path_for,
    default_weights_path,
)

LOGGER = logging.getLogger(__name__)


def save_weights(
    model: DiffPoseNet, weights_path: str | Path, metadata: dict | None = None,
    storage_dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the head; ``storage_dtype`` float16 halves the file (loading casts back)."""
    from safetensors.torch import save_file

    path = Path(weights_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to(storage_dtype) if v.is_floating_point() else v.detach())
        .contiguous().cpu()
        for k, v in model.head_state_dict().items()
    }
    meta = {'format': 'diffpose_ros-head-v1'}
    meta.update(
        {k: json.dumps(v) if not isinstance(v, str) else v for k, v in (metadata or {}).items()}
    )
    save_file(tensors, str(path), metadata=meta)
    model.config.save(config_path_for(path))
    return path


def load_model(
    weights_path: str | Path | None,
    device: str = 'cpu',
    config: ModelConfig | None = None,
    seed: int = 0,
) -> tuple[DiffPoseNet, bool]:
    """Build the network and load head weights.

    Returns (model in eval mode, trained). ``weights_path`` None and no shipped weights give a
    seeded random head (trained=False) with a warning: poses are then meaningless.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights_path) if weights_path else default_weights_path()
    if path is not None:
        if not path.is_file():
            raise WeightsError(f'weights file {path} does not exist; {SETUP_HINT}')
        cfg_path = config_path_for(path)
        if not cfg_path.is_file():
            raise WeightsError(
                f'{cfg_path} (the model config saved beside {path.name}) is missing; {SETUP_HINT}'
            )
        try:
            config = ModelConfig.load(cfg_path)
        except ValueError as exc:
            raise WeightsError(f'{cfg_path}: {exc}') from exc
    config = config or ModelConfig()
    torch.manual_seed(seed)
    model = DiffPoseNet(config)
    trained = False
    if path is not None:
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as exc:
            raise WeightsError(
                f'cannot read weights {path}: {exc}; the file is corrupt or not '
                f'safetensors. {SETUP_HINT}'
            ) from exc
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise WeightsError(
                f'{path} does not match its config {cfg_path.name}: {str(exc)[:300]}'
            ) from exc
        missing = [k for k in missing if not k.startswith('backbone.')]
        if missing or unexpected:
            raise WeightsError(
                f'{path} does not match its config {cfg_path.name}: missing '
                f'{missing[:3]}, unexpected {unexpected[:3]}'
            )
        trained = True
    else:
        LOGGER.warning(
            'no trained DiffPose weights found: using a randomly initialised head '
            '(seed %d); keypoints will be meaningless until weights are trained',
            seed,
        )
    return model.to(device).eval(), trained
