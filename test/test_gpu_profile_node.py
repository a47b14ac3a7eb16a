"""config/diffpose_gpu.yaml on a machine without a usable GPU, across real processes.

As documented (README, "Backends, GPUs and Jetson"): the node configures and activates anyway,
runs the detector, the backbone and the pose head on the CPU, says so in ONE warning and in
`devices` in /diagnostics, and serves poses on real vtest.avi frames.
"""
from __future__ import annotations

import re

import pytest
import yaml
from ros_harness import (
    ROOT,
    NodeProcess,
    RosClient,
    camera_info_msg,
    diagnostics_values,
    image_msg,
    stamp_ns,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]

NODE_READY_S = 240


def _gpu_usable() -> bool:
    import torch

    from diffpose_ros.runtime.ort_runtime import nvidia_driver_present

    return torch.cuda.is_available() or nvidia_driver_present()


@pytest.mark.skipif(_gpu_usable(), reason='a GPU is usable here: the fallback is not exercised')
def test_gpu_profile_falls_back_to_cpu_with_one_warning(tmp_path, vtest_frames_100_129):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image

    from diffpose_ros.msg import PersonPoseArray

    profile = yaml.safe_load((ROOT / 'config' / 'diffpose_gpu.yaml').read_text())
    values = dict(next(iter(profile.values()))['ros__parameters'])
    assert values['device'] == 'cuda' and 'CUDAExecutionProvider' in values['providers']
    # the profile as shipped; only the topic, start-up and what vtest's small people need
    values.update({'image_topics': ['/gpucam/image_raw'], 'camera_names': ['gpucam'],
                   'autostart': True, 'detector_imgsz': 1280, 'diagnostics_period_s': 0.25})
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'diffpose': {'ros__parameters': values}}))
    node = NodeProcess(params, tmp_path / 'node.log')
    client = RosClient('gpu_profile_tester')
    try:
        poses = client.subscribe(PersonPoseArray, '/diffpose/gpucam/poses')
        client.subscribe(DiagnosticArray, '/diagnostics')
        image_pub = client.node.create_publisher(Image, '/gpucam/image_raw', QoSProfile(depth=5))
        info_pub = client.node.create_publisher(CameraInfo, '/gpucam/camera_info', 5)
        client.wait_for(lambda: client.node.count_subscribers('/gpucam/image_raw') > 0,
                        NODE_READY_S, 'the node to configure and subscribe (GPU profile)', node)
        for i, frame in enumerate(vtest_frames_100_129[:2]):
            stamp = client.node.get_clock().now().nanoseconds
            info_pub.publish(camera_info_msg(768, 576, stamp, 'gpucam_optical'))
            image_pub.publish(image_msg(frame, stamp, 'gpucam_optical'))
            msg = client.wait_for(
                lambda s=stamp: [m for _, m in poses if stamp_ns(m.header) == s], 60,
                f'poses of frame {i}', node)[-1]
            assert len(msg.persons) >= 2
        engine = client.wait_for(
            lambda: [v for _, m in client.received['/diagnostics']
                     if (v := diagnostics_values(m, 'pose engine'))], 10, 'diagnostics', node)
        devices = engine[-1]['devices']
        assert devices.startswith('detector cpu, backbone and pose head CPUExecutionProvider '
                                  '(GPU requested, fell back to CPU: torch sees no CUDA'), devices
        assert engine[-1]['providers'] == 'CPUExecutionProvider'
        assert engine[-1]['quantization'] == 'none'  # the GPU profile runs the float32 graphs
    finally:
        client.close()
        code = node.stop()
    log = node.log_path.read_text()
    assert code == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if re.search(r'\[(WARN|WARNING|ERROR)\]', line)]
    assert len(warnings) == 1, '\n'.join(warnings)
    assert "GPU requested (device 'cuda', providers ['TensorrtExecutionProvider', " \
           "'CUDAExecutionProvider', 'CPUExecutionProvider'])" in warnings[0]
    assert 'detector on cpu, backbone and pose head on CPUExecutionProvider (fp16 off)' \
        in warnings[0]
