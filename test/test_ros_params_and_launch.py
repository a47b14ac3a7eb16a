"""Parameter table vs YAML files, descriptors on real rclpy nodes, launch/RViz/DDS files, markers.

The launch files are checked by AST inspection only: ``launch``/``launch_ros`` cannot be
installed here, and executing the files would need them.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from diffpose_ros.config import PipelineConfig
from diffpose_ros.ros import params
from diffpose_ros.ros.params import PARAMETERS, SPECS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'config'
LAUNCH = ROOT / 'launch'
YAML_FILES = sorted(CONFIG.glob('diffpose_*.yaml'))
LAUNCH_FILES = {
    'single': LAUNCH / 'diffpose.launch.py',
    'multi': LAUNCH / 'diffpose_multi_camera.launch.py',
}
COMMON_LAUNCH_ARGUMENTS = {'params_file', 'namespace', 'use_sim_time', 'autostart', 'log_level',
                           'transport', 'depth_transport'}
MARKER_TOPIC = '/diffpose/camera/markers'
DEBUG_IMAGE_TOPIC = '/diffpose/camera/debug_image'


def test_profiles_exist():
    assert {p.name for p in YAML_FILES} >= {'diffpose_cpu.yaml', 'diffpose_gpu.yaml'}


# ------------------------------------------------------------------------- (a) table vs YAML
def test_table_is_consistent():
    names = [s.name for s in PARAMETERS]
    assert len(names) == len(set(names))
    for spec in PARAMETERS:
        assert spec.description, spec.name
        assert params.validate(spec.name, spec.default) is None, spec.name
        if spec.read_only:
            assert not spec.dynamic, f'{spec.name}: read-only implies not dynamic'
        if spec.type_name == 'list[str]':
            assert not spec.read_only, 'declare_parameters sets empty lists after declaring'
    # every core run-time choice is exposed as a parameter
    assert {f.name for f in dataclasses.fields(PipelineConfig)} <= set(SPECS)
    # ROS declares use_sim_time itself; declaring it again would raise
    assert 'use_sim_time' not in SPECS


@pytest.mark.parametrize('path', YAML_FILES, ids=lambda p: p.name)
def test_yaml_matches_table_both_ways(path):
    values = params.load_yaml_defaults(path)
    assert sorted(set(values) - set(SPECS)) == [], 'YAML parameters missing from the table'
    assert sorted(set(SPECS) - set(values)) == [], 'table parameters missing from the YAML'
    for name, value in values.items():
        assert params._type_ok(SPECS[name].type_name, value), (
            f'{path.name}: {name} = {value!r} is not {SPECS[name].type_name}')
        assert params.validate(name, value) is None, params.validate(name, value)
    config = params.to_pipeline_config(values)
    assert isinstance(config, PipelineConfig)
    options = params.node_options(values)
    assert options.cameras and options.diagnostics_period_s > 0
    assert params.camera_setup(values)


def test_yaml_has_one_wildcard_section():
    for path in YAML_FILES:
        data = yaml.safe_load(path.read_text())
        assert list(data) == ['/**'], path.name
        assert set(data['/**']) == {'ros__parameters'}, path.name


def test_cpu_profile_equals_table_defaults():
    values = params.load_yaml_defaults(CONFIG / 'diffpose_cpu.yaml')
    assert values == params.defaults()
    config = params.to_pipeline_config(values)
    assert (config.backend, config.steps, config.hypotheses) == ('onnxruntime', 1, 1)
    assert (config.window_mode, config.window_size, config.detector_imgsz) == ('causal', 3, 640)
    assert config.providers == ('CPUExecutionProvider',)


def test_gpu_profile_choices():
    config = params.to_pipeline_config(params.load_yaml_defaults(CONFIG / 'diffpose_gpu.yaml'))
    assert config.backend == 'onnxruntime' and config.fp16
    assert config.providers[:2] == ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
    assert config.providers[-1] == 'CPUExecutionProvider'
    # steps, hypotheses, t_start from the measured curves (docs/model.md section 7)
    assert (config.steps, config.hypotheses, config.detector_imgsz) == (1, 1, 640)
    assert (config.diffusion_start, config.t_start, config.x0_projection) == (
        'detector', 200, False)
    assert config.window_size == 3  # the window the shipped model was trained on (causal)


def test_load_yaml_defaults_sections_and_nesting(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'steps': 2, 'qos': {'depth': 1}}},
        'diffpose': {'ros__parameters': {'steps': 3}},
        'other': {'ros__parameters': {'steps': 4}},
    }))
    assert params.load_yaml_defaults(path, node_name='diffpose') == {'steps': 3, 'qos.depth': 1}
    assert params.load_yaml_defaults(path)['steps'] == 4
    bad = tmp_path / 'bad.yaml'
    bad.write_text('diffpose: {steps: 1}\n')
    with pytest.raises(ValueError, match='ros__parameters'):
        params.load_yaml_defaults(bad)


# ------------------------------------------------------------------------- (b) validation
@pytest.mark.parametrize('name, value, expected', [
    ('steps', 0, '[1, 50]'),
    ('steps', 51, '[1, 50]'),
    ('steps', 2.0, 'int'),
    ('steps', True, 'int'),
    ('hypotheses', 17, '[1, 16]'),
    ('window_size', 10, '[1, 9]'),
    ('seed', -1, '[0,'),
    ('ddim_eta', 1.5, '[0.0, 1.0]'),
    ('ddim_eta', 1, '1.0, not 1'),
    ('ddim_eta', float('nan'), 'finite'),
    ('detector_imgsz', 650, 'multiple of 32'),
    ('detector_imgsz', 4096, '[32, 2048]'),
    ('detection_score_threshold', -0.1, '[0.0, 1.0]'),
    ('track_max_age_s', 0.0, '[0.05, 60.0]'),
    ('track_high_score_threshold', 1.5, '[0.0, 1.0]'),
    ('track_min_hits', 0, '[1, 100]'),
    ('track_duplicate_ioa_threshold', 0.0, '[0.01, 1.0]'),
    ('window_mode', 'future', "['causal', 'centered']"),
    ('backend', 'tensorflow', "['torch', 'onnxruntime']"),
    ('transport', 'theora', "['raw', 'compressed']"),
    ('transport', 5, 'str'),
    ('fp16', 'yes', 'bool'),
    ('fp16', 1, 'bool'),
    ('device', 'gpu', "'cpu', 'cuda' or 'cuda:N'"),
    ('providers', [], 'at least one'),
    ('providers', ['CUDA'], 'execution provider'),
    ('providers', 'CPUExecutionProvider', 'list[str]'),
    ('image_topics', [], 'at least one'),
    ('image_topics', ['/cam/image raw'], 'valid ROS topic'),
    ('image_topics', ['/a/image', '/a/image'], 'duplicates'),
    ('image_topics', [1], 'list[str]'),
    ('camera_info_topics', ['/a/'], 'valid ROS topic'),
    ('camera_names', ['front cam'], 'valid name'),
    ('marker_depth_m', 0.0, '[0.1, 100.0]'),
    ('latency_budget_ms', -1.0, '[0.0, 10000.0]'),
    ('max_auto_steps', 0, '[1, 50]'),
    ('diagnostics_period_s', 0.01, '[0.1, 60.0]'),
    ('intra_op_threads', 65, '[0, 64]'),
])
def test_validate_rejects_with_reason_naming_the_parameter(name, value, expected):
    reason = params.validate(name, value)
    assert reason is not None, f'{name}={value!r} accepted'
    assert name in reason and expected in reason, reason


@pytest.mark.parametrize('name, value', [
    ('steps', 50), ('detector_imgsz', 1280), ('device', 'cuda:1'), ('device', 'cuda'),
    ('image_topics', ['/a/image_raw', 'relative/image', '~/image']), ('camera_names', []),
    ('ddim_eta', 0.0), ('providers', ['CUDAExecutionProvider', 'CPUExecutionProvider']),
])
def test_validate_accepts(name, value):
    assert params.validate(name, value) is None


def test_validate_unknown_parameter():
    assert 'unknown parameter' in params.validate('stepz', 1)


def test_to_pipeline_config_errors():
    with pytest.raises(ValueError, match='centered windows need an odd window_size'):
        params.to_pipeline_config({'window_mode': 'centered', 'window_size': 4})
    with pytest.raises(ValueError, match='steps must be in'):
        params.to_pipeline_config({'steps': 0})
    with pytest.raises(ValueError, match='unknown parameters'):
        params.to_pipeline_config({'stepz': 1})
    config = params.to_pipeline_config({'steps': 7, 'providers': ['CPUExecutionProvider']})
    assert config.steps == 7 and config.providers == ('CPUExecutionProvider',)


def test_node_options():
    options = params.node_options({'latency_budget_ms': 80.0, 'autostart': True,
                                   'image_topics': ['/a/image_raw', '/b/image_raw']})
    assert options.latency_budget_ms == 80.0 and options.autostart
    assert [c.name for c in options.cameras] == ['a', 'b']
    assert not hasattr(options, 'steps')   # core settings live in PipelineConfig
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.autostart = False


@pytest.mark.parametrize('topic, info, name', [
    ('/camera/image_raw', '/camera/camera_info', 'camera'),
    ('/front/image_raw', '/front/camera_info', 'front'),
    ('/robot/left/image_rect', '/robot/left/camera_info', 'left'),
    ('image', 'camera_info', 'image'),
    ('cam/image', 'cam/camera_info', 'cam'),
    ('/image_raw', '/camera_info', 'image_raw'),
])
def test_camera_setup_derivations(topic, info, name):
    [setup] = params.camera_setup({'image_topics': [topic]})
    assert (setup.image_topic, setup.camera_info_topic, setup.name) == (topic, info, name)
    assert not setup.compressed and setup.subscribed_topic == topic


def test_camera_setup_explicit_and_compressed():
    setups = params.camera_setup({
        'image_topics': ['/a/color/image_raw', '/b/color/image_raw'],
        'camera_info_topics': ['/a/info', '/b/info'],
        'camera_names': ['cam_a', 'cam_b'],
        'transport': 'compressed',
    })
    assert [(s.name, s.camera_info_topic) for s in setups] == [
        ('cam_a', '/a/info'), ('cam_b', '/b/info')]
    assert all(s.compressed for s in setups)
    assert setups[0].subscribed_topic == '/a/color/image_raw/compressed'


@pytest.mark.parametrize('values, match', [
    ({'image_topics': ['/a/color/image_raw', '/b/color/image_raw']}, 'unique'),
    ({'image_topics': ['/a/image', '/b/image'], 'camera_names': ['x']}, 'camera_names has 1'),
    ({'image_topics': ['/a/image'], 'camera_info_topics': ['/a/i', '/b/i']},
     'camera_info_topics has 2'),
    ({'image_topics': ['/a/image', '/b/image'], 'camera_names': ['x', 'x']}, 'unique'),
    ({'image_topics': ['/{ns}/image']}, 'cannot derive a camera name'),
    ({'image_topics': []}, 'at least one'),
])
def test_camera_setup_errors(values, match):
    with pytest.raises(ValueError, match=match):
        params.camera_setup(values)


@pytest.mark.parametrize('value, expected', [
    (['/a/depth image'], 'not a valid ROS topic'),
    (['/a/depth', '/a/depth'], 'duplicates'),
    ([3], 'list[str]'),
])
def test_depth_topics_validation(value, expected):
    reason = params.validate('depth_topics', value)
    assert reason is not None and 'depth_topics' in reason and expected in reason, reason
    # '' entries (no depth for that camera) may repeat
    assert params.validate('depth_topics', ['', '/b/depth', '']) is None
    assert 'compressedDepth' in params.validate('depth_transport', 'png')


def test_camera_setup_with_depth():
    images = ['/a/color/image_raw', '/b/color/image_raw']
    setups = params.camera_setup({
        'image_topics': images, 'camera_names': ['a', 'b'],
        'depth_topics': ['/a/aligned_depth_to_color/image_raw', ''],
        'depth_transport': 'compressedDepth'})
    assert [s.depth_topic for s in setups] == ['/a/aligned_depth_to_color/image_raw', '']
    assert setups[0].depth_compressed and setups[0].subscribed_depth_topic == \
        '/a/aligned_depth_to_color/image_raw/compressedDepth'
    assert setups[1].subscribed_depth_topic == ''
    # [] = no depth anywhere; raw transport subscribes the topic itself
    plain = params.camera_setup({'image_topics': images, 'camera_names': ['a', 'b']})
    assert [s.depth_topic for s in plain] == ['', '']
    [raw] = params.camera_setup({'image_topics': ['/a/image'], 'depth_topics': ['/a/depth']})
    assert raw.subscribed_depth_topic == '/a/depth' and not raw.depth_compressed
    # a length mismatch is a configure error naming both lists
    with pytest.raises(ValueError, match='depth_topics has 1 entries but image_topics has 2'):
        params.camera_setup({'image_topics': images, 'camera_names': ['a', 'b'],
                             'depth_topics': ['/a/depth']})
    with pytest.raises(ValueError, match='also an image topic'):
        params.camera_setup({'image_topics': ['/a/image'], 'depth_topics': ['/a/image']})
    options = params.node_options({'image_topics': ['/a/image'], 'depth_topics': ['/a/depth'],
                                   'depth_stamp_tolerance_ms': 33.0,
                                   'depth_band_behind_m': 0.5, 'depth_min_support': 0.3})
    config = options.depth_config()
    assert options.depth_stamp_tolerance_ms == 33.0
    assert (config.band_behind_m, config.band_front_m, config.min_support) == (0.5, 0.8, 0.3)
    assert 'depth_stamp_tolerance_ms must be in' in params.validate(
        'depth_stamp_tolerance_ms', -1.0)


def test_table_imports_without_ros():
    code = (
        'import sys\n'
        'class Block:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name.split('.')[0] in ('rclpy', 'rcl_interfaces', 'visualization_msgs'):\n"
        "            raise ImportError('blocked ' + name)\n"
        'sys.meta_path.insert(0, Block())\n'
        'from diffpose_ros.ros import params\n'
        "params.to_pipeline_config(params.defaults())\n"
        "params.camera_setup({'image_topics': ['/x/image']})\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------ (c) real rclpy nodes
@pytest.fixture
def ros_context(monkeypatch):
    """A private rclpy Context on an isolated domain; yields a function making contexts."""
    rclpy = pytest.importorskip('rclpy')
    monkeypatch.setenv('ROS_DOMAIN_ID', str(90 + os.getpid() % 10))
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    contexts = []

    def make(args=None):
        context = rclpy.Context()
        rclpy.init(context=context, args=args)
        contexts.append(context)
        return context

    yield make
    from ros_harness import shutdown_context

    for context in contexts:
        shutdown_context(rclpy, context)


def _make_node(kind, context):
    if kind == 'node':
        from rclpy.node import Node

        return Node('diffpose', context=context)
    from rclpy.lifecycle import LifecycleNode

    return LifecycleNode('diffpose', context=context)


@pytest.mark.ros
@pytest.mark.parametrize('kind', ['node', 'lifecycle'])
def test_declare_parameters_descriptors(ros_context, kind):
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import Parameter

    node = _make_node(kind, ros_context())
    try:
        params.declare_parameters(node)
        values = params.read_values(node)
        assert values == params.defaults()
        for spec in PARAMETERS:
            [desc] = node.describe_parameters([spec.name])
            assert desc.type == spec.ros_type(), spec.name
            assert desc.read_only == spec.read_only, spec.name
            assert desc.description == spec.description
            if spec.type_name == 'int' and spec.min is not None:
                [rng] = desc.integer_range
                assert (rng.from_value, rng.to_value, rng.step) == (spec.min, spec.max, spec.step)
            if spec.type_name == 'float' and spec.min is not None:
                [rng] = desc.floating_point_range
                assert (rng.from_value, rng.to_value) == (spec.min, spec.max)
            if spec.choices:
                assert all(c in desc.additional_constraints for c in spec.choices)
        assert node.describe_parameters(['camera_names'])[0].type == (
            ParameterType.PARAMETER_STRING_ARRAY)
        # the empty-list parameters take string lists later (typed STRING_ARRAY, not BYTE_ARRAY)
        [ok] = node.set_parameters([Parameter('camera_names', value=['front'])])
        assert ok.successful, ok.reason
        # ROS enforces the descriptors: range, step, type, read-only
        for bad in (Parameter('steps', value=51), Parameter('detector_imgsz', value=650),
                    Parameter('ddim_eta', value=2.0), Parameter('steps', value='two'),
                    Parameter('weights_path', value='/tmp/x.safetensors'),
                    Parameter('autostart', value=True)):
            [result] = node.set_parameters([bad])
            assert not result.successful, bad.name
        [ok] = node.set_parameters([Parameter('detector_imgsz', value=1280)])
        assert ok.successful
    finally:
        node.destroy_node()


@pytest.mark.ros
@pytest.mark.parametrize('path', YAML_FILES, ids=lambda p: p.name)
def test_yaml_loads_through_rcl(ros_context, path):
    """rcl parses the file and every value matches the declared type (strict ROS typing)."""
    node = _make_node('lifecycle', ros_context(['--ros-args', '--params-file', str(path)]))
    try:
        params.declare_parameters(node)
        assert params.read_values(node) == params.load_yaml_defaults(path)
    finally:
        node.destroy_node()


# ------------------------------------------------------------------------- (d) launch files
def _launch_info(path: Path) -> dict:
    tree = ast.parse(path.read_text(), filename=str(path))
    strings = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    calls: dict[str, list[ast.Call]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, 'attr', None)
            calls.setdefault(name, []).append(node)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split('.')[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or '').split('.')[0])
    declared = set()
    for call in calls.get('DeclareLaunchArgument', []):
        first = call.args[0]
        if isinstance(first, ast.Constant):     # names from a loop are read by the caller
            declared.add(first.value)
    return {'tree': tree, 'strings': strings, 'calls': calls, 'functions': functions,
            'imported': imported, 'declared': declared}


def _constants(tree: ast.AST) -> dict[str, str]:
    """Module-level NAME = 'string' assignments."""
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)):
            out[node.targets[0].id] = node.value.value
    return out


LIST_LAUNCH_ARGUMENTS = {'image_topics', 'camera_names', 'camera_info_topics', 'depth_topics'}


def test_multi_camera_launch_includes_the_main_one():
    info = _launch_info(LAUNCH_FILES['multi'])
    assert 'generate_launch_description' in info['functions']
    assert 'IncludeLaunchDescription' in info['calls'] and 'diffpose.launch.py' in info['strings']
    assert 'LifecycleNode' not in info['calls']
    constants = _constants(info['tree'])
    assert constants['PACKAGE'] == 'diffpose_ros'
    [arguments] = [node.value for node in info['tree'].body if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], 'id', '') == 'ARGUMENTS']
    declared = {key.value for key in arguments.keys}
    assert declared == COMMON_LAUNCH_ARGUMENTS | LIST_LAUNCH_ARGUMENTS
    # every argument it offers is one the main launch file declares
    assert declared <= _launch_info(LAUNCH_FILES['single'])['declared']


def test_launch_file_structure():
    path = LAUNCH_FILES['single']
    info = _launch_info(path)
    assert 'generate_launch_description' in info['functions']
    constants = _constants(info['tree'])
    assert constants['PACKAGE'] == 'diffpose_ros'
    assert constants['EXECUTABLE'] == 'diffpose_node'
    assert constants['NODE_NAME'] == 'diffpose'
    assert constants['FASTDDS_VARIABLE'] == 'FASTDDS_DEFAULT_PROFILES_FILE'
    assert constants['FASTRTPS_VARIABLE'] == 'FASTRTPS_DEFAULT_PROFILES_FILE'
    expected = COMMON_LAUNCH_ARGUMENTS | {'image_topic'} | LIST_LAUNCH_ARGUMENTS
    assert info['declared'] == expected
    # exactly one lifecycle node, with the package/executable/name constants
    [node_call] = info['calls']['LifecycleNode']
    keywords = {k.arg: k.value for k in node_call.keywords}
    assert {'package', 'executable', 'name', 'namespace', 'parameters'} <= set(keywords)
    assert [keywords[k].id for k in ('package', 'executable', 'name')] == [
        'PACKAGE', 'EXECUTABLE', 'NODE_NAME']
    assert 'SetEnvironmentVariable' in info['calls']
    # no launch-side lifecycle transitions (the node's autostart parameter does it; #318),
    # no eval/exec of argument strings
    for forbidden in ('ChangeState', 'EmitEvent', 'OnStateTransition', 'eval', 'exec',
                      'PythonExpression'):
        assert forbidden not in info['calls'], forbidden
    assert 'launch_ros' in info['imported'] and 'launch' in info['imported']


@pytest.mark.parametrize('kind', sorted(LAUNCH_FILES))
def test_launch_file_refers_to_existing_config(kind):
    info = _launch_info(LAUNCH_FILES[kind])
    if kind == 'multi':
        assert 'diffpose_cpu.yaml' in info['strings']
        return
    referenced = {s for s in info['strings']
                  if s.endswith(('.yaml', '.xml', '.rviz')) and '/' not in s}
    assert referenced >= {'diffpose_cpu.yaml', 'fastdds_shm.xml'}
    for name in referenced:
        assert (CONFIG / name).is_file(), f'{LAUNCH_FILES[kind].name} refers to missing {name}'
    # paths are built as <share>/config/<file>
    assert 'config' in info['strings']


def test_launch_parses_lists_safely():
    info = _launch_info(LAUNCH_FILES['single'])
    assert 'safe_load' in info['calls'] and 'load' not in info['calls']
    assert 'yaml' in info['imported']


# ---------------------------------------------------------------------- (e) Fast DDS profile
NS = {'dds': 'http://www.eprosima.com'}


def test_fastdds_profile_structure():
    root = ET.parse(CONFIG / 'fastdds_shm.xml').getroot()
    assert root.tag == '{http://www.eprosima.com}dds'
    descriptors = root.findall('dds:profiles/dds:transport_descriptors/dds:transport_descriptor',
                               NS)
    by_type = {d.findtext('dds:type', namespaces=NS): d for d in descriptors}
    shm, udp = by_type['SHM'], by_type['UDPv4']
    assert int(shm.findtext('dds:segment_size', namespaces=NS)) == 16 * 1024 * 1024
    assert int(shm.findtext('dds:maxMessageSize', namespaces=NS)) == 4 * 1024 * 1024
    # no interface restriction: <interfaces><allowlist> would break the profile on Humble's
    # Fast DDS 2.6, and remote nodes (RViz on a laptop) must still reach the node
    assert udp.find('dds:interfaces', NS) is None
    assert not list(root.iter('{http://www.eprosima.com}interface_allowlist'))
    [participant] = root.findall('dds:profiles/dds:participant', NS)
    assert participant.get('is_default_profile') == 'true'
    used = [t.text for t in participant.findall('dds:rtps/dds:userTransports/dds:transport_id',
                                                 NS)]
    assert sorted(used) == sorted(d.findtext('dds:transport_id', namespaces=NS)
                                  for d in descriptors)
    assert participant.findtext('dds:rtps/dds:useBuiltinTransports', namespaces=NS) == 'false'
    announcements = participant.find(
        'dds:rtps/dds:builtin/dds:discovery_config/dds:initialAnnouncements', NS)
    assert int(announcements.findtext('dds:count', namespaces=NS)) >= 10


def test_profile_variable_follows_the_fast_dds_version(tmp_path):
    from diffpose_ros.ros import dds

    for distro in ('humble', 'Jazzy', 'iron'):
        assert dds.profile_variable({'ROS_DISTRO': distro}) == dds.FASTRTPS_VARIABLE
    for distro in ('kilted', 'rolling'):
        assert dds.profile_variable({'ROS_DISTRO': distro}) == dds.FASTDDS_VARIABLE
    # pip wheels (no ROS_DISTRO): the prefix's Fast DDS package decides; first prefix wins
    (tmp_path / 'two' / 'share' / 'fastrtps').mkdir(parents=True)
    (tmp_path / 'three' / 'share' / 'fastdds').mkdir(parents=True)
    prefixes = f"{tmp_path / 'two'}{os.pathsep}{tmp_path / 'three'}"
    assert dds.profile_variable({'AMENT_PREFIX_PATH': prefixes}) == dds.FASTRTPS_VARIABLE
    assert dds.profile_variable({'AMENT_PREFIX_PATH': str(tmp_path / 'three')}) == \
        dds.FASTDDS_VARIABLE


@pytest.mark.parametrize('path', [LAUNCH_FILES['single'], LAUNCH / 'diffpose_bag.launch.py'],
                         ids=lambda p: p.name)
def test_launch_files_pick_the_profile_variable_like_the_package(path):
    """The launch files import no project code, so they repeat diffpose_ros.ros.dds's rule."""
    from diffpose_ros.ros import dds

    tree = ast.parse(path.read_text())
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) and len(node.targets) == 1
              and isinstance(node.targets[0], ast.Name) and node.targets[0].id.startswith('FAST')}
    assert values == {'FASTDDS_VARIABLE': dds.FASTDDS_VARIABLE,
                      'FASTRTPS_VARIABLE': dds.FASTRTPS_VARIABLE,
                      'FAST_DDS_2_DISTROS': dds.FAST_DDS_2_DISTROS}
    assert 'profile_variable' in _launch_info(path)['functions']


# rclpy modules in Humble's rclpy 3.3 (the oldest supported); newer ones (event_handler,
# type_description_service, service_introspection, parameter_client, clock_type, ...) must be
# imported inside try/except ImportError, with the fallback listed in the README (Distributions).
HUMBLE_RCLPY_MODULES = {
    'action', 'callback_groups', 'client', 'clock', 'constants', 'context', 'duration',
    'exceptions', 'executors', 'expand_topic_name', 'guard_condition', 'impl', 'lifecycle',
    'logging', 'node', 'parameter', 'parameter_service', 'publisher', 'qos', 'qos_event',
    'qos_overriding_options', 'serialization', 'service', 'signals', 'subscription', 'task',
    'time', 'time_source', 'timer', 'topic_endpoint_info', 'topic_or_service_is_hidden',
    'type_support', 'utilities', 'validate_full_topic_name', 'validate_namespace',
    'validate_node_name', 'validate_parameter_name', 'validate_topic_name', 'waitable'}


def _unguarded_rclpy_modules(tree: ast.AST) -> set[str]:
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ('ImportError',
                                                                 'ModuleNotFoundError')
                for h in node.handlers):
            guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    modules = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] if node.module != 'rclpy' else \
                [f'rclpy.{a.name}' for a in node.names]
        else:
            continue
        modules |= {name.split('.')[1] for name in names
                    if name.startswith('rclpy.') and name.split('.')[1][0].islower()}
    return modules


def test_ros_layer_imports_only_rclpy_modules_humble_has():
    used = set()
    for path in sorted((ROOT / 'diffpose_ros').rglob('*.py')):
        used |= _unguarded_rclpy_modules(ast.parse(path.read_text()))
    assert {'lifecycle', 'qos', 'executors'} <= used          # the check sees the real imports
    assert used <= HUMBLE_RCLPY_MODULES, sorted(used - HUMBLE_RCLPY_MODULES)
    # and it catches a newer module unless guarded
    newer = 'from rclpy.event_handler import SubscriptionEventCallbacks\n'
    assert _unguarded_rclpy_modules(ast.parse(newer)) == {'event_handler'}
    guarded = f'try:\n    {newer}except ImportError:\n    pass\n'
    assert _unguarded_rclpy_modules(ast.parse(guarded)) == set()


@pytest.mark.ros
def test_fastdds_profile_loads_in_rmw(tmp_path):
    """Fast DDS itself reads the file from the variable we set (an unknown element prints
    XMLPARSER errors; the wrong variable, e.g. FASTDDS_... under Jazzy's Fast DDS 2, is ignored
    silently): this process's own shared-memory segment is the profile's 16 MB, not the
    default 512 KB."""
    pytest.importorskip('rclpy')
    from diffpose_ros.ros.dds import PROFILE_VARIABLES, profile_variable

    code = ('import re, rclpy\n'
            'ctx = rclpy.Context(); rclpy.init(context=ctx)\n'
            "node = rclpy.create_node('fastdds_profile_check', context=ctx)\n"
            'sizes = {}\n'
            "for line in open('/proc/self/maps'):\n"
            '    parts = line.split()\n'
            r"    if len(parts) > 5 and re.fullmatch(r'/dev/shm/fast(dds|rtps)_[0-9a-f]{16}', "
            'parts[5]):\n'
            "        start, end = (int(x, 16) for x in parts[0].split('-'))\n"
            '        sizes[parts[5]] = sizes.get(parts[5], 0) + end - start\n'
            'node.destroy_node(); rclpy.shutdown(context=ctx); print("segments", sizes)\n')
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    env.update({profile_variable(): str(CONFIG / 'fastdds_shm.xml'),
                'ROS_DOMAIN_ID': str(90 + os.getpid() % 10),
                'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST', 'ROS_LOG_DIR': str(tmp_path),
                'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp'})
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and 'segments' in out.stdout, out.stderr[-2000:]
    assert 'XMLPARSER' not in out.stderr + out.stdout, out.stderr[-2000:]
    assert 'deprecated' not in out.stderr, out.stderr[-2000:]
    sizes = ast.literal_eval(out.stdout.split('segments', 1)[1].strip())
    assert sizes and max(sizes.values()) >= 16 * 1024 * 1024, sizes


# ------------------------------------------------------------------------------ (f) RViz
def test_rviz_config():
    data = yaml.safe_load((CONFIG / 'diffpose.rviz').read_text())
    manager = data['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'camera_optical_frame'
    displays = {d['Class']: d for d in manager['Displays']}
    markers = displays['rviz_default_plugins/MarkerArray']
    assert markers['Topic']['Value'] == MARKER_TOPIC
    assert set(markers['Namespaces']) == {'joints', 'bones'}
    image = displays['rviz_default_plugins/Image']
    assert image['Topic']['Value'] == DEBUG_IMAGE_TOPIC
    # the debug image is published with sensor-data QoS: a reliable display would not match
    assert image['Topic']['Reliability Policy'] == 'Best Effort'
    camera = displays['rviz_default_plugins/Camera']
    assert camera['Topic']['Value'] == SPECS['image_topics'].default[0]
    names = {d['Name'] for d in manager['Displays']}
    assert set(camera['Visibility']) - {'Value'} <= names


def test_rviz_topics_follow_the_default_camera_name():
    [setup] = params.camera_setup(params.defaults())
    assert MARKER_TOPIC == f'/diffpose/{setup.name}/markers'
    assert DEBUG_IMAGE_TOPIC == f'/diffpose/{setup.name}/debug_image'


# --------------------------------------------------------------------------- (g) markers
@pytest.fixture
def markers_mod():
    return pytest.importorskip('diffpose_ros.ros.markers')


K = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])


def _header(frame='cam_optical', sec=12, nanosec=345):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def _person(track_id, conf):
    keypoints = np.zeros((17, 3))
    keypoints[:, 0] = 100 + 10 * np.arange(17)
    keypoints[:, 1] = 50 + 5 * np.arange(17)
    keypoints[:, 2] = conf
    return SimpleNamespace(track_id=track_id, keypoints=keypoints)


def test_backproject_maths(markers_mod):
    depth = 2.0
    pixels = np.array([[320.5, 240.5],             # principal point (pixel-centre convention)
                       [320.5 + 500.0, 240.5],     # one focal length to the right
                       [320.5, 240.5 - 200.0]])    # half a focal length up
    points = markers_mod.backproject(pixels, K, depth)
    np.testing.assert_allclose(points, [[0, 0, 2], [2, 0, 2], [0, -1, 2]], atol=1e-12)
    # CameraInfo.k (9 numbers) works too
    np.testing.assert_allclose(markers_mod.backproject(pixels, K.ravel(), depth), points)
    skewed = K.copy()
    skewed[0, 1] = 50.0
    [point] = markers_mod.backproject(np.array([[320.5 + 50.0, 240.5 + 400.0]]), skewed, 1.0)
    np.testing.assert_allclose(point, [0.0, 1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize('bad', [
    np.zeros((3, 3)), np.diag([500.0, 0.0, 1.0]), np.eye(2), np.full((3, 3), np.nan)])
def test_invalid_camera_matrix(bad, markers_mod):
    with pytest.raises(ValueError):
        markers_mod.backproject(np.zeros((1, 2)), bad, 1.0)
    with pytest.raises(ValueError):
        markers_mod.pose_markers([_person(1, 0.9)], _header(), bad, 3.0, 0.5, 0.3, 0.05, 0.02)


def _by_key(array):
    return {(m.ns, m.id): m for m in array.markers}


def test_pose_markers_contents(markers_mod):
    from visualization_msgs.msg import Marker

    from diffpose_ros.skeleton import BONES

    person = _person(7, 0.9)
    person.keypoints[[0, 9, 15], 2] = 0.1            # nose, left wrist, left ankle unsure
    person.keypoints[3, 0] = np.nan                  # left ear: not finite
    header = _header()
    array = markers_mod.pose_markers([person], header, K, 3.0, 0.25, 0.3, 0.05, 0.02)
    markers = _by_key(array)
    assert set(markers) == {('joints', 7), ('bones', 7)}
    joints, bones = markers['joints', 7], markers['bones', 7]
    confident = [j for j in range(17) if j not in (0, 3, 9, 15)]
    assert joints.type == Marker.SPHERE_LIST and joints.action == Marker.ADD
    assert len(joints.points) == len(confident)
    expected = markers_mod.backproject(person.keypoints[confident, :2], K, 3.0)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in joints.points], expected)
    assert joints.scale.x == joints.scale.y == joints.scale.z == 0.05
    good_bones = [(a, b) for a, b in BONES if a in confident and b in confident]
    assert bones.type == Marker.LINE_LIST and len(bones.points) == 2 * len(good_bones)
    assert bones.scale.x == 0.02
    for marker in (joints, bones):
        assert marker.header.frame_id == 'cam_optical'
        assert (marker.header.stamp.sec, marker.header.stamp.nanosec) == (12, 345)
        assert marker.header is not header
        assert marker.pose.orientation.w == 1.0
        assert not marker.frame_locked
        assert (marker.lifetime.sec, marker.lifetime.nanosec) == (0, 250_000_000)
        colour = marker.color
        assert colour.a == 1.0
        assert (colour.r, colour.g, colour.b) == pytest.approx(markers_mod.track_colour(7))


def test_markers_ids_colours_and_deletes(markers_mod):
    from visualization_msgs.msg import Marker

    persons = [_person(3, 0.9), _person(4, 0.9), _person(5, 0.0)]
    array = markers_mod.pose_markers(persons, _header(), K, 3.0, 0.5, 0.3, 0.05, 0.02,
                                     removed_track_ids=[1, 2])
    markers = _by_key(array)
    assert markers['joints', 3].action == markers['bones', 4].action == Marker.ADD
    # no confident joints -> DELETE instead of an empty list; removed tracks -> DELETE
    for key in [('joints', 5), ('bones', 5), ('joints', 1), ('bones', 1), ('joints', 2),
                ('bones', 2)]:
        assert markers[key].action == Marker.DELETE, key
        assert markers[key].pose.orientation.w == 1.0
    for marker in array.markers:
        if marker.action == Marker.ADD:
            assert marker.points, 'RViz rejects point-less lists'
    # stable colours, distinct for consecutive ids, in [0, 1]
    again = _by_key(markers_mod.pose_markers(persons[:1], _header(), K, 3.0, 0.5, 0.3, 0.05,
                                             0.02))
    assert again['joints', 3].color == markers['joints', 3].color
    colours = [markers_mod.track_colour(i) for i in range(200)]
    assert all(0.0 <= c <= 1.0 for rgb in colours for c in rgb)
    assert all(a != b for a, b in zip(colours, colours[1:]))
    assert markers_mod.track_colour(3) == markers_mod.track_colour(3)
    # ids fit int32 (Marker.id) and equal the track id below 2**31
    big = markers_mod.pose_markers([_person(2**40 + 9, 0.9)], _header(), K, 3.0, 0.5, 0.3, 0.05,
                                   0.02)
    assert {m.id for m in big.markers} == {9}


def test_bones_delete_when_no_bone_is_confident(markers_mod):
    from visualization_msgs.msg import Marker

    person = _person(8, 0.0)
    person.keypoints[0, 2] = 0.9                     # only the nose
    markers = _by_key(markers_mod.pose_markers([person], _header(), K, 3.0, 0.5, 0.3, 0.05,
                                               0.02))
    assert markers['joints', 8].action == Marker.ADD and len(markers['joints', 8].points) == 1
    assert markers['bones', 8].action == Marker.DELETE


def test_track_colour_matches_debug_image(markers_mod):
    pipeline = pytest.importorskip('diffpose_ros.pipeline')
    for track_id in (0, 1, 2, 17, 123):
        b, g, r = pipeline._track_colour(track_id)
        assert markers_mod.track_colour(track_id) == pytest.approx(
            (r / 255, g / 255, b / 255), abs=2 / 255)


def test_no_camera_matrix_and_delete_all(markers_mod):
    from visualization_msgs.msg import Marker

    assert markers_mod.pose_markers([_person(1, 0.9)], _header(), None, 3.0, 0.5, 0.3, 0.05,
                                    0.02).markers == []
    array = markers_mod.delete_all_markers(_header(frame='f'))
    [marker] = array.markers
    assert marker.action == Marker.DELETEALL and marker.header.frame_id == 'f'


def test_lifetime_zero_means_forever(markers_mod):
    [joints, _] = markers_mod.pose_markers([_person(1, 0.9)], _header(), K, 3.0, 0.0, 0.3, 0.05,
                                           0.02).markers
    assert (joints.lifetime.sec, joints.lifetime.nanosec) == (0, 0)
    assert math.isclose(SPECS['marker_lifetime_s'].min, 0.0)
    for lifetime_s, expected in ((1.5, (1, 500_000_000)), (0.9999999999, (1, 0))):
        [joints, _] = markers_mod.pose_markers([_person(1, 0.9)], _header(), K, 3.0, lifetime_s,
                                               0.3, 0.05, 0.02).markers
        assert (joints.lifetime.sec, joints.lifetime.nanosec) == expected


def test_pose_markers_at_measured_3d_positions(markers_mod):
    from visualization_msgs.msg import Marker

    from diffpose_ros.skeleton import BONES

    with_depth, without_depth = _person(4, 0.9), _person(5, 0.9)
    xyz = np.stack([np.linspace(-0.3, 0.3, 17), np.linspace(-0.5, 0.6, 17),
                    np.full(17, 0.8) + 0.01 * np.arange(17)], axis=1)
    valid = np.ones(17, bool)
    valid[[7, 9]] = False                          # left elbow and wrist: no depth
    with_depth.keypoints[11, 2] = 0.1              # left hip: valid 3D but unsure in 2D
    array = markers_mod.pose_markers([with_depth, without_depth], _header(), K, 3.0, 0.5, 0.3,
                                     0.05, 0.02, keypoints_3d={4: (xyz, valid)})
    markers = _by_key(array)
    drawn = [j for j in range(17) if valid[j] and j != 11]
    joints = markers['joints', 4]
    assert joints.action == Marker.ADD
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in joints.points], xyz[drawn])
    bones = markers['bones', 4]
    ends = [(a, b) for a, b in BONES if a in drawn and b in drawn]
    assert ends and len(bones.points) == 2 * len(ends)
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in bones.points],
                               [xyz[j] for pair in ends for j in pair])
    # a person without 3D keeps the fixed plane
    plane = markers['joints', 5]
    assert {round(p.z, 9) for p in plane.points} == {3.0}
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in plane.points],
                               markers_mod.backproject(without_depth.keypoints[:, :2], K, 3.0))


def test_pose_markers_3d_without_valid_joints_deletes(markers_mod):
    from visualization_msgs.msg import Marker

    person = _person(6, 0.9)
    xyz = np.full((17, 3), 0.8)
    markers = _by_key(markers_mod.pose_markers(
        [person], _header(), K, 3.0, 0.5, 0.3, 0.05, 0.02,
        keypoints_3d={6: (xyz, np.zeros(17, bool))}))
    assert markers['joints', 6].action == markers['bones', 6].action == Marker.DELETE
