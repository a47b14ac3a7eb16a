"""What the node reports about frames before it processes them, across real processes.

- Frames lost in DDS transport: an independent publisher process WITHOUT the project's Fast DDS
  profile sends large bgr8 frames best effort (fragmented UDP loses many); the node must count
  them (``frames_lost_in_transport``) within 10 % of what was really lost, and say why.
- Stamps from another clock (a camera without time sync): sane latency figures, the offset, and
  exactly one warning.
- Deactivate while the worker is still inside the network (in-process, real models): nothing is
  published afterwards by that worker, also when the node is activated again.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ros_harness import (
    NodeProcess,
    RosClient,
    diagnostics_values,
    image_msg,
    shutdown_context,
    stamp_ns,
    write_params,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
NODE = '/diffpose_transport'
NODE_READY_S = 240
SANE_LATENCY_MS = 60_000.0      # anything above a minute on this machine is a clock mix-up


@pytest.fixture(scope='module')
def client():
    client = RosClient('transport_tester')
    yield client
    client.close()


@pytest.fixture(scope='module')
def transport_node(tmp_path_factory, client):
    from diagnostic_msgs.msg import DiagnosticArray

    folder = tmp_path_factory.mktemp('node_transport')
    params = write_params(folder / 'params.yaml', {
        'image_topics': ['/lossy/image_raw', '/foreign/image_raw', '/synced/image_raw'],
        'camera_names': ['lossy', 'foreign', 'synced'],
        'detector_imgsz': 640, 'autostart': True, 'use_sim_time': False,
        'diagnostics_period_s': 0.25, 'publish_markers': False, 'publish_debug_image': False,
        'steps': 1, 'hypotheses': 1, 'latency_budget_ms': 0.0,
    }, node_name=NODE.strip('/'))
    node = NodeProcess(params, folder / 'node.log',
                       extra_args=('-r', f'__node:={NODE.strip("/")}'))
    client.subscribe(DiagnosticArray, '/diagnostics')
    client.wait_for(lambda: client.node.count_publishers(f'{NODE}/lossy/poses') and
                    client.node.count_subscribers('/lossy/image_raw'), NODE_READY_S,
                    'the node to become active', node)
    yield node
    code = node.stop()
    assert code == 0, f'node exited with {code}:\n{node.log()}'


def _camera_diagnostics(client: RosClient, camera: str, after_s: float) -> dict[str, str]:
    for received_s, msg in reversed(client.received['/diagnostics']):
        if received_s >= after_s:
            values = diagnostics_values(msg, f'{NODE.strip("/")}: camera {camera}')
            if values:
                return values
    return {}


def _fresh_diagnostics(client, node, camera: str) -> dict[str, str]:
    start_s = time.monotonic()
    return client.wait_for(lambda: _camera_diagnostics(client, camera, start_s), 10,
                           f'diagnostics of {camera}', node)


_totals = {'received': 0, 'lost': 0}     # the lossy camera's counts after the previous run


class LockstepCamera:
    """A reliable publisher in this process (shared-memory profile: nothing is lost) that waits
    for the pose array of each frame."""

    def __init__(self, client: RosClient, node: NodeProcess | None, camera: str,
                 node_name: str = NODE):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from diffpose_ros.msg import PersonPoseArray

        self.client, self.node, self.camera = client, node, camera
        self.publisher = client.node.create_publisher(
            Image, f'/{camera}/image_raw',
            QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.poses = client.subscribe(PersonPoseArray, f'{node_name}/{camera}/poses')
        client.wait_for(lambda: client.node.count_subscribers(f'/{camera}/image_raw'), 30,
                        f'the node to subscribe to /{camera}/image_raw', node)
        time.sleep(0.5)

    def send(self, frame, stamp: int):
        self.publisher.publish(image_msg(frame, stamp, f'{self.camera}_optical'))
        return self.client.wait_for(
            lambda: [m for _, m in self.poses if stamp_ns(m.header) == stamp], 60,
            f'poses of {self.camera} at {stamp}', self.node)[-1]


@pytest.mark.parametrize('reliable', [False, True], ids=['best_effort', 'reliable'])
def test_frames_lost_in_transport_are_counted_and_explained(client, transport_node, reliable):
    # no profile: Fast DDS 3 (Kilted) reads the first name, Fast DDS 2 (Humble, Jazzy) the second
    env = {k: v for k, v in os.environ.items()
           if k not in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')}
    run = subprocess.run(
        [sys.executable, str(HERE / 'lossy_publisher.py'), '--topic', '/lossy/image_raw',
         '--answers', f'{NODE}/lossy/poses', '--frames', '40', '--rate_hz', '5',
         *(['--reliable'] if reliable else [])],
        capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, f'{run.stdout}\n{run.stderr}\nnode log:\n{transport_node.log()}'
    report = json.loads(run.stdout.strip().splitlines()[-1])
    values = _fresh_diagnostics(client, transport_node, 'lossy')
    # frames the node could know of: from the first one it saw to the last one sent (the node's
    # totals also hold an earlier run's publisher: a new publisher GID, counted separately)
    visible = report['sent'] - report['first_answered_index']
    received = int(values['frames_received']) - _totals['received']
    true_lost = visible - received
    counted = int(values['frames_lost_in_transport']) - _totals['lost']
    _totals.update(received=_totals['received'] + received, lost=_totals['lost'] + counted)
    print(f'sent {report["sent"]}, visible {visible}, received {received}, lost {true_lost}, '
          f'counted {counted}, dropped by the node {values["frames_dropped"]}')
    assert true_lost >= 5, ('the publisher lost almost nothing, so this test shows nothing: '
                            f'{report}, {values}')
    assert abs(counted - true_lost) <= 0.1 * true_lost, (counted, true_lost, values)
    assert values['transport_loss_source'] == 'sequence_numbers'
    # the node's own queue drops are a different count
    assert int(values['frames_dropped']) + int(values['frames_published']) <= int(
        values['frames_received'])
    log = transport_node.log()
    warnings = [line for line in log.splitlines() if 'never reached the node' in line]
    assert warnings and '[lossy]' in warnings[0], log
    assert 'fastdds_shm.xml' in warnings[0] and 'transport: compressed' in warnings[0]
    # the camera status said so too (in the report after the losses)
    assert any('frames lost in transport' in diagnostics_values(
        m, f'{NODE.strip("/")}: camera lossy').get('_message', '')
        for _, m in client.received['/diagnostics'])


def test_stamps_from_another_clock_give_sane_latency_and_one_warning(
        client, transport_node, vtest_frames_100_129):
    foreign = LockstepCamera(client, transport_node, 'foreign')
    synced = LockstepCamera(client, transport_node, 'synced')
    for frame in vtest_frames_100_129[:6]:
        foreign.send(frame, time.monotonic_ns())  # a camera stamping with its uptime
        synced.send(frame, time.time_ns())        # a camera on the node's (wall) clock
    offset_ms = (time.time_ns() - time.monotonic_ns()) / 1e6
    values = _fresh_diagnostics(client, transport_node, 'foreign')
    assert values['stamps_comparable'] == 'no', values
    assert values['latency_p50_ms'] == values['latency_p95_ms'] == 'n/a', values
    assert 0 < float(values['processing_latency_p50_ms']) <= float(
        values['processing_latency_p95_ms']) < SANE_LATENCY_MS, values
    assert abs(float(values['stamp_clock_offset_ms']) - offset_ms) < 5_000, (values, offset_ms)
    assert 'not from the node clock' in values['_message'] and values['_level'] in (b'\x01', 1)
    assert values['frames_lost_in_transport'] == '0', values      # reliable, shared memory
    log = transport_node.log()
    assert log.count("[foreign] image stamps are not from this node's clock") == 1, log
    synced_values = _fresh_diagnostics(client, transport_node, 'synced')
    assert synced_values['stamps_comparable'] == 'yes', synced_values
    assert 0 < float(synced_values['latency_p50_ms']) < SANE_LATENCY_MS, synced_values
    assert abs(float(synced_values['stamp_clock_offset_ms'])) < 1_000, synced_values
    assert float(synced_values['processing_latency_p50_ms']) > 0
    assert synced_values['_message'] == 'ok', synced_values
    assert "[synced] image stamps" not in log


def test_deactivate_discards_the_results_of_a_worker_that_outlived_its_join(
        client, monkeypatch, vtest_frames_100_129):
    """The worker is held inside the pipeline (a gate before the real process_batch) while the
    node is deactivated and activated again through its lifecycle services; when it finally
    finishes, its frame must not be published (it used to be, by the revived old worker)."""
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from diffpose_ros.ros import node as node_module

    monkeypatch.setattr(node_module, 'WORKER_JOIN_TIMEOUT_S', 0.5)
    overrides = [Parameter('image_topics', value=['/race/image_raw']),
                 Parameter('camera_names', value=['race']),
                 Parameter('detector_imgsz', value=640),
                 Parameter('publish_markers', value=False)]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = node_module.DiffPoseNode('diffpose_race', context=context,
                                    parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    entered, release = threading.Event(), threading.Event()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        real_process_batch = node._pipeline.process_batch

        def gated(batch):
            entered.set()
            release.wait(120)
            return real_process_batch(batch)
        node._pipeline.process_batch = gated
        spinner.start()
        camera = LockstepCamera(client, None, 'race', node_name='/diffpose_race')
        client.wait_for(lambda: client.node.count_publishers('/diffpose_race/race/poses'), 10,
                        'the poses publisher')
        time.sleep(0.5)
        held = time.time_ns()
        camera.publisher.publish(image_msg(vtest_frames_100_129[0], held, 'race_optical'))
        assert entered.wait(60), 'the worker never started on the frame'

        def change(transition_id):
            request = ChangeState.Request()
            request.transition.id = transition_id
            return client.call(ChangeState, '/diffpose_race/change_state', request).success

        assert change(Transition.TRANSITION_DEACTIVATE)    # returns after the 0.5 s join
        old_workers = [t for t in threading.enumerate() if t.name == 'diffpose-worker']
        assert len(old_workers) == 1, 'the held worker should still be running'
        assert change(Transition.TRANSITION_ACTIVATE)
        release.set()
        old_workers[0].join(60)
        assert not old_workers[0].is_alive(), 'the old worker did not end'
        time.sleep(1.0)                                    # its publication would be here now
        assert not [m for _, m in camera.poses if stamp_ns(m.header) == held], \
            'a worker stopped by deactivate published after it'
        assert node._cameras['race'].published == 0
        # the new worker serves
        camera.send(vtest_frames_100_129[1], time.time_ns())
        assert len([t for t in threading.enumerate() if t.name == 'diffpose-worker']) == 1
    finally:
        release.set()
        if node._worker is not None:
            node.trigger_deactivate()
        node.trigger_cleanup()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        shutdown_context(rclpy, context)
