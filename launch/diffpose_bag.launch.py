"""Replay a bag into diffpose_node on sim time and record its outputs (ROS 2 Humble and later).

Usage::

    ros2 launch diffpose_ros diffpose_bag.launch.py bag:=/data/bags/vtest
    ros2 launch diffpose_ros diffpose_bag.launch.py bag:=/data/bags/vtest \\
        output:=/data/bags/vtest_poses rate:=0.5

What runs:
    1. ``ros2 bag record -o <output> -s <storage> <topics>``: the node's outputs, from the start;
    2. diffpose.launch.py (this package) with ``use_sim_time:=true``, ``image_topic`` and
       ``transport`` (detected from the bag unless given);
    3. after ``play_delay`` seconds (the node loads and warms up its models in ``configure``
       meanwhile; frames sent earlier would be dropped): ``ros2 bag play <bag> -s <storage of
       the bag> --clock <clock_hz> -r <rate>``, with the package's Fast DDS profile (large
       shared-memory segment) in the variable the installed Fast DDS reads, unless
       FASTDDS_DEFAULT_PROFILES_FILE or FASTRTPS_DEFAULT_PROFILES_FILE is set;
    4. ``linger`` seconds after the player exits (the last frames are still being processed),
       everything is shut down; ``ros2 bag record`` closes its bag on that SIGINT.

Arguments:
    bag: Bag to play (required): a rosbag2 directory with metadata.yaml, e.g. one made by
        ``diffpose-bag make``.
    output: Bag directory to record into; must not exist. '' (default) = ros2 bag record's own
        ``rosbag2_<date>_<time>`` in the working directory.
    rate: Playback rate factor (default 1.0). On a CPU the node is slower than 10 fps; frames it
        cannot keep up with are dropped (counted in /diagnostics), so use e.g. 0.3 to score
        every frame.
    image_topic: Camera image topic in the bag (default /camera/image_raw).
    transport: raw or compressed; '' (default) = compressed if the bag has
        ``<image_topic>/compressed`` and not ``<image_topic>``, else raw.
    params_file: Node params file; '' (default) = the package's config/diffpose_cpu.yaml.
    record_topics: YAML list of topics to record; '' (default) = the node's outputs for this
        camera: ``/diffpose/<camera>/poses``, ``/diffpose/<camera>/markers``, ``/diagnostics``
        (``<camera>`` = the image topic's parent namespace, as the node derives it).
    storage: Storage of the recording: mcap (default; on Humble needs the
        ``ros-humble-rosbag2-storage-mcap`` package) or sqlite3.
    play_delay: Seconds between start-up and playback (default 15.0).
    clock_hz: /clock rate during playback (default 100.0).
    linger: Seconds to keep running after playback ends (default 5.0).

Without rosbag2 (this project's pip-installed ROS), scripts/bag_demo.sh runs the same flow with
``diffpose-bag play`` / ``diffpose-bag record`` (``make bag-demo``).
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
    TimerAction,
)
from launch.event_handlers import OnProcessExit
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = 'diffpose_ros'
NODE_NAME = 'diffpose'
# Fast DDS 2 (Humble, Iron, Jazzy) reads its profile only from FASTRTPS_DEFAULT_PROFILES_FILE;
# Fast DDS 3 (Kilted on) from FASTDDS_DEFAULT_PROFILES_FILE, and warns about the old name. Same
# rule as diffpose_ros/ros/dds.py (launch files import no project code).
FASTDDS_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTRTPS_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')
STORAGES = ('mcap', 'sqlite3')
# `ros2 bag record` takes topics as positional arguments up to Jazzy (Jazzy also has --topics);
# later distributions dropped the positional form (rosbag2 #1632, #2418).
POSITIONAL_TOPICS_DISTROS = ('humble', 'iron', 'jazzy')


def camera_name(image_topic: str) -> str:
    """The node's default camera name: the image topic's parent namespace."""
    parts = [p for p in image_topic.split('/') if p]
    return parts[-2] if len(parts) >= 2 else parts[-1]


def _positive(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'launch argument {name} must be a number, got {text!r}') from None
    if not value > 0:
        raise ValueError(f'launch argument {name} must be > 0, got {text!r}')
    return value


def _bag_metadata(bag: str) -> dict:
    path = os.path.join(bag, 'metadata.yaml')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'launch argument bag: {path} does not exist (bag must be a '
                                'rosbag2 directory with metadata.yaml)')
    with open(path) as f:
        return yaml.safe_load(f)['rosbag2_bagfile_information']


def profile_variable() -> str:
    """The Fast DDS profile variable of this ROS distribution (ROS_DISTRO)."""
    distro = os.environ.get('ROS_DISTRO', '').strip().lower()
    return FASTRTPS_VARIABLE if distro in FAST_DDS_2_DISTROS else FASTDDS_VARIABLE


def _launch_setup(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    bag = LaunchConfiguration('bag').perform(context).strip()
    if not bag:
        raise ValueError('launch argument bag is required: bag:=/path/to/bag')
    bag = os.path.abspath(os.path.expanduser(bag))
    metadata = _bag_metadata(bag)
    bag_storage = metadata.get('storage_identifier') or 'sqlite3'
    bag_topics = {t['topic_metadata']['name']
                  for t in metadata.get('topics_with_message_count') or []}

    output = LaunchConfiguration('output').perform(context).strip()
    if output and os.path.exists(output):
        raise ValueError(f'launch argument output: {output} already exists')
    rate = _positive('rate', LaunchConfiguration('rate').perform(context))
    clock_hz = _positive('clock_hz', LaunchConfiguration('clock_hz').perform(context))
    play_delay = _positive('play_delay', LaunchConfiguration('play_delay').perform(context))
    linger = _positive('linger', LaunchConfiguration('linger').perform(context))
    storage = LaunchConfiguration('storage').perform(context).strip()
    if storage not in STORAGES:
        raise ValueError(f'launch argument storage must be one of {STORAGES}, got {storage!r}')

    image_topic = LaunchConfiguration('image_topic').perform(context).strip()
    transport = LaunchConfiguration('transport').perform(context).strip()
    if transport not in ('', 'raw', 'compressed'):
        raise ValueError(f"launch argument transport must be 'raw' or 'compressed', "
                         f'got {transport!r}')
    if not transport:
        compressed_only = (f'{image_topic}/compressed' in bag_topics
                           and image_topic not in bag_topics)
        transport = 'compressed' if compressed_only else 'raw'
    subscribed = f'{image_topic}/compressed' if transport == 'compressed' else image_topic
    if subscribed not in bag_topics:
        raise ValueError(f'the bag has no {subscribed} (transport {transport}); its topics: '
                         f'{sorted(bag_topics)}')

    record_topics_text = LaunchConfiguration('record_topics').perform(context).strip()
    if record_topics_text:
        record_topics = yaml.safe_load(record_topics_text)
        if isinstance(record_topics, str):
            record_topics = [record_topics]
        if not isinstance(record_topics, list) or not all(
                isinstance(t, str) and t for t in record_topics):
            raise ValueError('launch argument record_topics must be a YAML list of topics')
    else:
        camera = camera_name(image_topic)
        record_topics = [f'/{NODE_NAME}/{camera}/poses', f'/{NODE_NAME}/{camera}/markers',
                         '/diagnostics']

    record_cmd = ['ros2', 'bag', 'record', '-s', storage]
    if output:
        record_cmd += ['-o', output]
    distro = os.environ.get('ROS_DISTRO', '').lower()
    record_cmd += record_topics if distro in POSITIONAL_TOPICS_DISTROS \
        else ['--topics', *record_topics]

    play_env = {}
    environment = getattr(context, 'environment', os.environ)
    if FASTDDS_VARIABLE not in environment and FASTRTPS_VARIABLE not in environment:
        play_env[profile_variable()] = os.path.join(share, 'config', 'fastdds_shm.xml')
    play = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', bag, '-s', bag_storage, '--clock', str(clock_hz),
             '-r', str(rate)],
        name='bag_play', output='screen', additional_env=play_env)
    record = ExecuteProcess(cmd=record_cmd, name='bag_record', output='screen')

    node_arguments = {'use_sim_time': 'true', 'image_topic': image_topic,
                      'transport': transport}
    # always forwarded: launch configurations are inherited by included files, so this file's
    # '' would otherwise reach diffpose.launch.py instead of its default
    params_file = LaunchConfiguration('params_file').perform(context).strip()
    node_arguments['params_file'] = params_file or os.path.join(share, 'config',
                                                                'diffpose_cpu.yaml')
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'diffpose.launch.py')),
        launch_arguments=node_arguments.items())

    return [
        LogInfo(msg=f'diffpose_bag: {bag} ({bag_storage}, {transport} images on {subscribed}) '
                    f'-> node -> {output or "rosbag2_<date>"} ({", ".join(record_topics)})'),
        record,
        node,
        TimerAction(period=play_delay, actions=[play]),
        RegisterEventHandler(OnProcessExit(
            target_action=play,
            on_exit=[LogInfo(msg=f'diffpose_bag: playback ended; stopping in {linger} s'),
                     TimerAction(period=linger,
                                 actions=[Shutdown(reason='bag playback finished')])])),
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument('bag', description='Bag directory to play (required)'),
        DeclareLaunchArgument(
            'output', default_value='',
            description="Bag directory to record into (must not exist); '' = rosbag2_<date>"),
        DeclareLaunchArgument('rate', default_value='1.0', description='Playback rate factor'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='Image topic in the bag'),
        DeclareLaunchArgument(
            'transport', default_value='',
            description="raw or compressed; '' = detected from the bag's topics"),
        DeclareLaunchArgument(
            'params_file', default_value='',
            description="Node params file; '' = config/diffpose_cpu.yaml"),
        DeclareLaunchArgument(
            'record_topics', default_value='',
            description="YAML list of topics to record; '' = the node's outputs"),
        DeclareLaunchArgument('storage', default_value='mcap', choices=list(STORAGES),
                              description='Storage of the recording'),
        DeclareLaunchArgument('play_delay', default_value='15.0',
                              description='Seconds before playback starts (model loading)'),
        DeclareLaunchArgument('clock_hz', default_value='100.0',
                              description='/clock rate during playback [Hz]'),
        DeclareLaunchArgument('linger', default_value='5.0',
                              description='Seconds to keep running after playback ends'),
        OpaqueFunction(function=_launch_setup),
    ])
