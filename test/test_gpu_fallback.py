"""The GPU fallback story on a machine without a usable GPU (this project's CI machines).

Documented behaviour (README "Backends, GPUs and Jetson", docs/runtime.md): a configuration
that asks for a GPU (`device: cuda`, TensorRT / CUDA providers) where none works runs the
detector, the backbone and the pose head on the CPU, with ONE warning naming where each part
runs, and `devices` in the diagnostics saying so; the CPU profile warns about nothing.
Pipeline level here (the real detector and ONNX Runtime on real frames); the node with the GPU
profile is tested across processes in test_gpu_profile_node.py.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.pipeline import PosePipeline
from diffpose_ros.ros import params
from diffpose_ros.runtime.devices import build_engines, gpu_requested, plan_devices

CONFIG = Path(__file__).resolve().parents[1] / 'config'
CPU = 'CPUExecutionProvider'


def _profile(name: str):
    return params.to_pipeline_config(params.load_yaml_defaults(CONFIG / name))


def _gpu_usable() -> bool:
    import torch

    from diffpose_ros.runtime.ort_runtime import nvidia_driver_present

    return torch.cuda.is_available() or nvidia_driver_present()


needs_no_gpu = pytest.mark.skipif(_gpu_usable(), reason='a GPU is usable here: the fallback '
                                  'is not exercised')


@needs_no_gpu
def test_gpu_profile_plans_every_part_on_the_cpu():
    requested = _profile('diffpose_gpu.yaml')
    assert gpu_requested(requested) and requested.device == 'cuda' and requested.fp16
    built, problems = plan_devices(requested)
    assert (built.device, built.providers, built.fp16) == ('cpu', (CPU,), False)
    assert any('torch sees no CUDA device' in p for p in problems), problems
    assert any('libcuda.so.1' in p or 'has no' in p for p in problems), problems
    # everything else is the GPU profile's
    assert built.replace(device='cuda', providers=requested.providers, fp16=True) == requested


def test_cpu_profile_asks_for_no_gpu_and_is_left_alone():
    config = _profile('diffpose_cpu.yaml')
    assert not gpu_requested(config)
    assert plan_devices(config) == (config, [])


@needs_no_gpu
def test_gpu_profile_runs_on_cpu_with_one_warning(caplog, vtest_frames_100_129):
    config = _profile('diffpose_gpu.yaml').replace(detector_imgsz=1280)
    with caplog.at_level(logging.WARNING):
        engines = build_engines(config)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith("GPU requested (device 'cuda', providers ["), message
    assert 'detector on cpu, backbone and pose head on CPUExecutionProvider' in message
    assert '(fp16 off)' in message and 'CPU profile' in message
    placement = engines.placement
    assert placement.gpu_fallback and placement.detector_device == 'cpu'
    assert placement.pose_providers == (CPU,) and engines.runtime.providers == [CPU]
    assert placement.summary().startswith(
        'detector cpu, backbone and pose head CPUExecutionProvider (GPU requested, fell back '
        'to CPU: torch sees no CUDA device')
    # and it really serves: people found and posed on real frames
    pipeline = PosePipeline(engines.config, engines.runtime, engines.detector)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        results = [pipeline.process(frame, i * 100_000_000)
                   for i, frame in enumerate(vtest_frames_100_129[:2])]
    assert all(len(r.persons) >= 2 for r in results)
    assert all(np.isfinite(p.keypoints).all() for r in results for p in r.persons)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cpu_profile_builds_without_warnings(caplog):
    with caplog.at_level(logging.WARNING):
        engines = build_engines(_profile('diffpose_cpu.yaml'))
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not engines.placement.gpu_fallback
    assert engines.placement.summary() == ('detector cpu, backbone and pose head '
                                           'CPUExecutionProvider')


@needs_no_gpu
def test_evaluate_cli_with_a_gpu_device_plans_the_cpu_with_one_warning(caplog):
    """`diffpose-evaluate --device cuda` on a CPU machine: the configuration its detector and
    runtime are built from is the CPU plan, announced by ONE warning (they then stay quiet)."""
    from diffpose_ros.cli import evaluate

    args = evaluate.build_parser().parse_args(['bonn', '--device', 'cuda'])
    with caplog.at_level(logging.WARNING):
        config = evaluate._config(args)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and 'not usable here' in warnings[0].getMessage()
    assert config.device == 'cpu' and config.providers == (CPU,)
