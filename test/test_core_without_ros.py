"""The estimator core imports and runs with rclpy (and every ROS message package) unavailable."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = (
    'diffpose_ros.assets',
    'diffpose_ros.skeleton',
    'diffpose_ros.config',
    'diffpose_ros.codec',
    'diffpose_ros.diffusion',
    'diffpose_ros.sampler',
    'diffpose_ros.buffers',
    'diffpose_ros.detection',
    'diffpose_ros.tracking',
    'diffpose_ros.pipeline',
    'diffpose_ros.latency_budget',
    'diffpose_ros.transport_stats',
    'diffpose_ros.compressed_depth',
    'diffpose_ros.smoothing',
    'diffpose_ros.depth3d',
    'diffpose_ros.metrics',
    'diffpose_ros.model.backbone',
    'diffpose_ros.model.strl',
    'diffpose_ros.model.denoiser',
    'diffpose_ros.model.diffpose',
    'diffpose_ros.model.weights',
    'diffpose_ros.model.files',
    'diffpose_ros.model.layers',
    'diffpose_ros.runtime.base',
    'diffpose_ros.runtime.torch_runtime',
    'diffpose_ros.runtime.ort_runtime',
    'diffpose_ros.runtime.export',
    'diffpose_ros.runtime.factory',
    'diffpose_ros.runtime.devices',
    'diffpose_ros.drawing',
    'diffpose_ros.cli.video',
)


def test_core_imports_with_rclpy_blocked():
    script = textwrap.dedent(f"""
        import importlib, sys

        class BlockRos:
            BLOCKED = ('rclpy', 'rosidl_runtime_py', 'cv_bridge', 'sensor_msgs', 'std_msgs',
                       'visualization_msgs', 'diagnostic_msgs', 'diffpose_ros.msg')
            def find_spec(self, name, path=None, target=None):
                if name.startswith(self.BLOCKED):
                    raise ImportError(f'{{name}} is blocked in this test')
                return None

        sys.meta_path.insert(0, BlockRos())
        sys.path.insert(0, {str(ROOT)!r})
        for module in {CORE_MODULES!r}:
            importlib.import_module(module)
        # a real computation through the core, still without ROS
        import numpy as np
        from diffpose_ros.buffers import window_offsets
        from diffpose_ros.config import ModelConfig
        from diffpose_ros.diffusion import DiffusionSchedule
        assert list(window_offsets('centered', 5)) == [-2, -1, 0, 1, 2]
        DiffusionSchedule.from_config(ModelConfig())
        leaked = [m for m in sys.modules if m.startswith(BlockRos.BLOCKED)]
        assert not leaked, leaked
        print('ok')
    """)
    proc = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith('ok')
