"""The backend interface the pipeline and the sampler use.

All arrays crossing it are numpy float32 / int64 on the host, so the DDIM loop and the noise
are identical whichever backend runs the network. A window's condition stays in the backend's
own form (torch tensors on the device, or numpy for ONNX Runtime) between steps.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from diffpose_ros.config import ModelConfig


class PoseRuntime(Protocol):
    name: str  # 'torch' or 'onnxruntime'
    model_config: ModelConfig
    trained: bool  # False: random head, outputs are meaningless

    @property
    def providers(self) -> list[str]:
        """Devices / execution providers really in use (e.g. ['CPUExecutionProvider'])."""

    def extract_features(self, crops: np.ndarray) -> np.ndarray:
        """crops (N, 3, Hc, Wc) float32 RGB in [0, 1] -> features (N, C, h, w) float32."""

    def encode_window(self, features: np.ndarray, offsets: np.ndarray) -> Any:
        """features (N, T, C, h, w), offsets (N, T) int64 (per person, from stamps) -> opaque
        window condition."""

    def denoise(
        self, model_input: np.ndarray, t: np.ndarray, person_index: np.ndarray, condition: Any
    ) -> np.ndarray:
        """model_input (B, K, H, W) in [0, 1], t (B,) int64, person_index (B,) int64 ->
        predicted x0 heatmaps (B, K, H, W) float32."""
