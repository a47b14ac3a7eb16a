"""Where the detector, the backbone and the pose head run, and the one GPU fallback rule.

A GPU is requested by ``device: cuda[:N]`` (the detector, and the PyTorch pose backend) or by a
TensorRT / CUDA execution provider (the ONNX Runtime pose backend). Whatever cannot get the GPU
it asked for runs on the CPU instead: configure never fails for lack of a GPU. Everything that
fell back is named in ONE warning, which says where each part runs and why; ``placement``
(reported as ``devices`` in the node's diagnostics) says the same. fp16 is dropped with the GPU:
on the CPU it would only cost accuracy. A configuration that asks for no GPU (the CPU profile,
the default) gets no warning.

:func:`build_engines` is the one place that applies the rule; the node and the command-line
tools build their pose runtime and detector through it.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from diffpose_ros.config import PipelineConfig
from diffpose_ros.runtime.ort_runtime import CPU, CUDA, GPU_PROVIDERS, TENSORRT

LOGGER = logging.getLogger(__name__)

# what `--device cuda` means for the ONNX Runtime backend of the command-line tools
GPU_PREFERRED_PROVIDERS = (TENSORRT, CUDA, CPU)
CPU_PROVIDERS = (CPU,)


def providers_for_device(device: str) -> tuple[str, ...]:
    """Execution providers matching a torch device string: GPU-first for 'cuda[:N]', else CPU."""
    return GPU_PREFERRED_PROVIDERS if device.startswith('cuda') else CPU_PROVIDERS


def _torch_cuda_problem(device: str) -> str:
    """'' if torch can use ``device`` ('cuda' or 'cuda:N'), else why not."""
    import torch

    if not torch.cuda.is_available():
        return 'torch sees no CUDA device'
    _, _, index = device.partition(':')
    count = torch.cuda.device_count()
    if index.isdigit() and int(index) >= count:       # a malformed index fails later, named
        return f'torch sees {count} CUDA device(s), {device} asked'
    return ''


def _ort_gpu_problem(requested: list[str]) -> tuple[list[str], str]:
    """(the requested GPU providers this machine can try, why the others cannot run)."""
    import onnxruntime as ort

    from diffpose_ros.runtime.ort_runtime import nvidia_driver_present

    built = set(ort.get_available_providers())
    missing = [p for p in requested if p not in built]
    present = [p for p in requested if p in built]
    problems = []
    if missing:
        problems.append(f'this onnxruntime build has no {", ".join(missing)}')
    if present and not nvidia_driver_present():
        problems.append('no NVIDIA driver (libcuda.so.1) for ONNX Runtime')
        present = []
    return present, '; '.join(problems)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where each part runs after the fallback rule.

    Attributes:
        detector_device: torch device of the detector ('cpu', 'cuda', 'cuda:1').
        pose_providers: the pose runtime's ``providers`` (backbone, window encoder, denoiser).
        gpu_requested: the configuration asked for a GPU somewhere.
        fallback_reason: why a part that asked for the GPU runs on the CPU; '' if none did.
    """

    detector_device: str
    pose_providers: tuple[str, ...]
    gpu_requested: bool
    fallback_reason: str = ''

    @property
    def gpu_fallback(self) -> bool:
        return bool(self.fallback_reason)

    def summary(self) -> str:
        """e.g. 'detector cpu, backbone and pose head CPUExecutionProvider'."""
        text = (f'detector {self.detector_device}, backbone and pose head '
                f'{"+".join(self.pose_providers)}')
        if self.gpu_fallback:
            text += f' (GPU requested, fell back to CPU: {self.fallback_reason})'
        return text


def plan_devices(config: PipelineConfig) -> tuple[PipelineConfig, list[str]]:
    """The configuration to build with on this machine, and why parts were moved to the CPU.

    Checks before anything loads: torch's CUDA for ``device``, and for the ONNX Runtime backend
    whether the requested GPU providers are in the installed build and have a driver. What only
    shows once a session exists (missing CUDA / cuDNN / TensorRT libraries) is checked by
    :func:`build_engines` afterwards.
    """
    problems: list[str] = []
    changes: dict[str, Any] = {}
    if config.device.startswith('cuda'):
        problem = _torch_cuda_problem(config.device)
        if problem:
            problems.append(problem)
            changes['device'] = 'cpu'
    if config.backend == 'onnxruntime':
        requested = [p for p in config.providers if p in GPU_PROVIDERS]
        if requested:
            usable, problem = _ort_gpu_problem(requested)
            if problem:
                problems.append(problem)
                changes['providers'] = tuple(p for p in config.providers
                                             if p not in GPU_PROVIDERS or p in usable) or (CPU,)
    built = config.replace(**changes) if changes else config
    if config.fp16 and changes and not _pose_on_gpu(built):
        built = built.replace(fp16=False)
    return built, problems


def _pose_on_gpu(config: PipelineConfig) -> bool:
    if config.backend == 'torch':
        return config.device.startswith('cuda')
    return any(p in GPU_PROVIDERS for p in config.providers)


def gpu_requested(config: PipelineConfig) -> bool:
    """Does ``config`` ask for a GPU anywhere (device or execution providers)?"""
    return config.device.startswith('cuda') or (
        config.backend == 'onnxruntime' and any(p in GPU_PROVIDERS for p in config.providers))


@dataclasses.dataclass
class Engines:
    """What :func:`build_engines` returns."""

    runtime: Any                # PoseRuntime
    detector: Any               # UltralyticsPoseDetector
    config: PipelineConfig      # the configuration really built (after the fallback)
    placement: Placement


def build_engines(config: PipelineConfig, weights_path: str | Path | None = None, *,
                  onnx_cache_dir: str | Path | None = None,
                  logger: Any = None) -> Engines:
    """Pose runtime and detector for ``config``, GPU parts moved to the CPU where no GPU works.

    Args:
        config: the requested configuration.
        weights_path: DiffPose head weights (None: the shipped model).
        onnx_cache_dir: see :func:`diffpose_ros.runtime.factory.make_runtime`.
        logger: where the one fallback warning goes (anything with ``.warning(str)``; the node
            passes its ROS logger); default this module's logger.

    Raises:
        Whatever :func:`make_runtime` and the detector raise for missing or corrupt weights.
    """
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.runtime.factory import make_runtime

    built, problems = plan_devices(config)
    runtime = make_runtime(built, weights_path, onnx_cache_dir=onnx_cache_dir,
                           warn_on_fallback=False)
    detector = UltralyticsPoseDetector.from_config(built)
    wanted_gpu = [p for p in built.providers if p in GPU_PROVIDERS]
    if built.backend == 'onnxruntime' and wanted_gpu and not any(
            p in GPU_PROVIDERS for p in runtime.providers):
        # (a partial fallback, TensorRT -> CUDA, is OrtRuntime's own warning: still a GPU)
        errors = getattr(runtime, 'provider_errors', {})
        detail = '; '.join(f'{name}: {why}' for name, why in errors.items()) or (
            'CUDA, cuDNN or TensorRT libraries missing or not matching')
        problems.append(f'ONNX Runtime could not start {", ".join(wanted_gpu)} ({detail})')
    placement = Placement(detector_device=str(detector.device),
                          pose_providers=tuple(runtime.providers),
                          gpu_requested=gpu_requested(config),
                          fallback_reason='; '.join(problems))
    if placement.gpu_fallback:
        asked = f'device {config.device!r}'
        if config.backend == 'onnxruntime':
            asked += f', providers {list(config.providers)}'
        (logger or LOGGER).warning(
            f'GPU requested ({asked}) but not usable here: {placement.fallback_reason}. Running '
            f'detector on {placement.detector_device}, backbone and pose head on '
            f'{"+".join(placement.pose_providers)}'
            + (' (fp16 off)' if config.fp16 and not built.fp16 else '')
            + '. For a CPU-only machine use the CPU profile (device: cpu, providers: '
            '[CPUExecutionProvider]).')
    return Engines(runtime=runtime, detector=detector, config=built, placement=placement)
