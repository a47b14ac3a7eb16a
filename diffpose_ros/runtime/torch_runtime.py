"""PyTorch backend: CPU or CUDA (chosen at run time, CPU fallback), optional fp16 on CUDA."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from diffpose_ros.model.diffpose import DiffPoseNet
from diffpose_ros.runtime.ort_runtime import TIME_TERM_CACHE_MAX

LOGGER = logging.getLogger(__name__)


def resolve_torch_device(requested: str) -> torch.device:
    """'cuda' / 'cuda:N' when CUDA is really usable, else CPU (with a warning)."""
    if requested.startswith('cuda'):
        if torch.cuda.is_available():
            return torch.device(requested)
        LOGGER.warning('torch device %r requested but CUDA is not available; using CPU', requested)
        return torch.device('cpu')
    if requested != 'cpu':
        raise ValueError(f"torch device must be 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    return torch.device('cpu')


class TorchRuntime:
    name = 'torch'
    quantization = 'none'  # the int8 graphs are ONNX Runtime's

    def __init__(
        self,
        model: DiffPoseNet,
        trained: bool,
        device: str = 'cpu',
        fp16: bool = False,
        intra_op_threads: int = 0,
        half_on_cpu: bool = False,
    ):
        self.device = resolve_torch_device(device)
        # fp16 only where it is a speed-up (CUDA); on CPU it would only cost accuracy.
        # ``half_on_cpu`` runs the half-precision network on the CPU anyway: the stand-in that
        # tests the CUDA fp16 path on machines without a GPU.
        use_half = fp16 and (self.device.type == 'cuda' or half_on_cpu)
        self.dtype = torch.float16 if use_half else torch.float32
        if fp16 and self.dtype != torch.float16:
            LOGGER.warning('fp16 requested on %s: running fp32', self.device)
        if intra_op_threads > 0:
            torch.set_num_threads(intra_op_threads)
        self.model = model.to(self.device, self.dtype).eval()
        self.model_config = model.config
        self.trained = trained
        # {timestep: the denoiser's t-only terms, one row}: a sampler visits few timesteps
        self._time_terms: dict[int, tuple[torch.Tensor, ...]] = {}

    @property
    def providers(self) -> list[str]:
        return [f'torch:{self.device}' + (':fp16' if self.dtype == torch.float16 else '')]

    def _tensor(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, dtype or self.dtype)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.float().cpu().numpy()

    @torch.inference_mode()
    def extract_features(self, crops: np.ndarray) -> np.ndarray:
        return self._numpy(self.model.extract_features(self._tensor(crops)))

    @torch.inference_mode()
    def encode_window(self, features: np.ndarray, offsets: np.ndarray) -> Any:
        return self.model.encode_window(self._tensor(features), self._tensor(offsets, torch.int64))

    @torch.inference_mode()
    def denoise(
        self, model_input: np.ndarray, t: np.ndarray, person_index: np.ndarray, condition: Any
    ) -> np.ndarray:
        steps = np.unique(t)
        if len(steps) != 1:
            return self._numpy(self.model.denoise(
                self._tensor(model_input), self._tensor(t, torch.int64),
                self._tensor(person_index, torch.int64), *condition))
        step = int(steps[0])
        terms = self._time_terms.get(step)
        if terms is None:
            if len(self._time_terms) >= TIME_TERM_CACHE_MAX:
                self._time_terms.clear()
            terms = self.model.time_terms(self._tensor(steps, torch.int64))
            self._time_terms[step] = terms
        rows = self._tensor(person_index, torch.int64)
        return self._numpy(self.model.denoise_timed(
            self._tensor(model_input), *(c[rows] for c in condition), *terms))
