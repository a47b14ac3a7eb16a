"""Launch diffpose_node for one camera as a lifecycle node (ROS 2 Humble and later).

Usage::

    ros2 launch diffpose_ros diffpose.launch.py image_topic:=/front/image_raw
    ros2 launch diffpose_ros diffpose.launch.py \\
        params_file:=$(ros2 pkg prefix diffpose_ros)/share/diffpose_ros/config/diffpose_gpu.yaml
    ros2 launch diffpose_ros diffpose.launch.py use_sim_time:=true   # with `ros2 bag play --clock`

Arguments:
    params_file: ROS params file (default: the package's config/diffpose_cpu.yaml).
    namespace: Node namespace (default ''). Outputs are ``/<namespace>/diffpose/<camera>/...``.
    use_sim_time: Use /clock (rosbag replay). Default false.
    autostart: true (default) = the node configures and activates itself; false = it waits in
        'unconfigured' for ``ros2 lifecycle set /diffpose configure`` then ``... activate``.
        (The launch file never emits configure + activate itself: doing both at once races,
        launch_ros #318; the node's read-only ``autostart`` parameter chains them safely.)
    image_topic: One image topic; '' (default) = keep the params file's ``image_topics``. The
        camera name and CameraInfo topic are derived from it unless the params file sets
        ``camera_names`` / ``camera_info_topics``.
    image_topics, camera_names, camera_info_topics: YAML lists for several cameras in this one
        node process (see diffpose_multi_camera.launch.py), e.g.
        image_topics:="['/front/image_raw', '/rear/image_raw']"; '' (default) = the params
        file's value. Parsed with yaml.safe_load (never eval); a bare string is a one-element
        list. ``image_topic`` and ``image_topics`` are mutually exclusive.
    transport: raw or compressed (subscribe to ``<image_topic>/compressed``); '' (default) = the
        params file's ``transport``.
    depth_topics: YAML list of depth image topics registered to the colour images, one per image
        topic ('' in the list = no depth for that camera), e.g.
        depth_topics:="['/camera/aligned_depth_to_color/image_raw']"; cameras with depth
        publish ``~/<camera>/poses_3d``. '' (default) = the params file's ``depth_topics``.
    depth_transport: raw or compressedDepth (``<depth_topic>/compressedDepth``); '' (default) =
        the params file's ``depth_transport``.
    log_level: debug, info (default), warn, error or fatal.

Topics with the defaults (image /camera/image_raw -> camera name ``camera``):
    /diffpose/camera/poses (diffpose_ros/PersonPoseArray), /diffpose/camera/markers,
    /diffpose/camera/debug_image, /diagnostics.

Fast DDS: the profile variable of the installed Fast DDS (FASTRTPS_DEFAULT_PROFILES_FILE on
Humble and Jazzy, FASTDDS_DEFAULT_PROFILES_FILE from Kilted on) is set to the package's
config/fastdds_shm.xml (big shared-memory segment, faster discovery) for the node process,
unless either variable is already set in the environment (an explicit choice wins). Use the
same profile for the camera driver to get shared-memory transport end to end (see the file's
comments).
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    GroupAction,
    LogInfo,
    OpaqueFunction,
    SetEnvironmentVariable,
)
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = 'diffpose_ros'
EXECUTABLE = 'diffpose_node'
NODE_NAME = 'diffpose'
# Fast DDS 2 (Humble, Iron, Jazzy) reads its profile only from FASTRTPS_DEFAULT_PROFILES_FILE;
# Fast DDS 3 (Kilted on) from FASTDDS_DEFAULT_PROFILES_FILE, and warns about the old name. Same
# rule as diffpose_ros/ros/dds.py (launch files import no project code).
FASTDDS_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'
FASTRTPS_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
LIST_ARGUMENTS = ('image_topics', 'camera_names', 'camera_info_topics', 'depth_topics')
# lists whose entries may be '' (depth_topics: '' = that camera has no depth)
LISTS_WITH_EMPTY_ENTRIES = ('depth_topics',)
DEPTH_TRANSPORTS = ('raw', 'compressedDepth')


def _as_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ('true', '1', 'yes', 'on'):
        return True
    if value in ('false', '0', 'no', 'off'):
        return False
    raise ValueError(f"launch argument {name} must be 'true' or 'false', got {text!r}")


def _string_list(name: str, text: str) -> list[str] | None:
    """A YAML list of strings (or one bare string); None for '' (= keep the params file)."""
    allow_empty = name in LISTS_WITH_EMPTY_ENTRIES
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'launch argument {name} is not valid YAML: {exc}') from exc
    if isinstance(value, str):
        value = [value]
    if (not isinstance(value, list) or not value
            or not all(isinstance(item, str) and (allow_empty or item.strip())
                       for item in value)):
        raise ValueError(f"launch argument {name} must be a non-empty YAML list of strings, "
                         f"e.g. \"['/front/image_raw', '/rear/image_raw']\", got {text!r}")
    return [item.strip() for item in value]


def profile_variable() -> str:
    """The Fast DDS profile variable of this ROS distribution (ROS_DISTRO)."""
    distro = os.environ.get('ROS_DISTRO', '').strip().lower()
    return FASTRTPS_VARIABLE if distro in FAST_DDS_2_DISTROS else FASTDDS_VARIABLE


def _launch_setup(context, *args, **kwargs):
    share = get_package_share_directory(PACKAGE)
    params_file = LaunchConfiguration('params_file').perform(context)
    namespace = LaunchConfiguration('namespace').perform(context)
    use_sim_time = _as_bool('use_sim_time', LaunchConfiguration('use_sim_time').perform(context))
    autostart = _as_bool('autostart', LaunchConfiguration('autostart').perform(context))
    image_topic = LaunchConfiguration('image_topic').perform(context).strip()
    transport = LaunchConfiguration('transport').perform(context).strip()
    if transport not in ('', 'raw', 'compressed'):
        raise ValueError(f"launch argument transport must be 'raw' or 'compressed', "
                         f'got {transport!r}')
    depth_transport = LaunchConfiguration('depth_transport').perform(context).strip()
    if depth_transport not in ('', *DEPTH_TRANSPORTS):
        raise ValueError(f'launch argument depth_transport must be one of {DEPTH_TRANSPORTS}, '
                         f'got {depth_transport!r}')
    log_level = LaunchConfiguration('log_level').perform(context).strip().lower()
    if log_level not in LOG_LEVELS:
        raise ValueError(f'launch argument log_level must be one of {LOG_LEVELS}, '
                         f'got {log_level!r}')
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f'params_file {params_file!r} does not exist')

    overrides = {'use_sim_time': use_sim_time, 'autostart': autostart}
    for name in LIST_ARGUMENTS:
        value = _string_list(name, LaunchConfiguration(name).perform(context))
        if value is not None:
            overrides[name] = value
    if transport:
        overrides['transport'] = transport
    if depth_transport:
        overrides['depth_transport'] = depth_transport
    if image_topic:
        if 'image_topics' in overrides:
            raise ValueError('give either image_topic or image_topics, not both')
        overrides['image_topics'] = [image_topic]

    actions = []
    environment = getattr(context, 'environment', os.environ)
    if FASTDDS_VARIABLE not in environment and FASTRTPS_VARIABLE not in environment:
        profile = os.path.join(share, 'config', 'fastdds_shm.xml')
        actions.append(SetEnvironmentVariable(profile_variable(), profile))
    topics = overrides.get('image_topics', '(from params file)')
    actions.append(LogInfo(msg=f'diffpose: params {params_file}, image topics {topics}, '
                               f'autostart {autostart}'))
    actions.append(LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=namespace,
        parameters=[params_file, overrides],
        arguments=['--ros-args', '--log-level', log_level],
        output='screen',
        emulate_tty=True,
    ))
    return actions


def generate_launch_description():
    default_params = os.path.join(
        get_package_share_directory(PACKAGE), 'config', 'diffpose_cpu.yaml')
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file', default_value=default_params,
            description='ROS params file with every diffpose parameter '
                        '(config/diffpose_cpu.yaml or config/diffpose_gpu.yaml)'),
        DeclareLaunchArgument('namespace', default_value='', description='Node namespace'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use /clock for time (rosbag replay with --clock)'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='true: configure + activate by itself; false: wait for '
                        '`ros2 lifecycle set /diffpose configure` and `activate`'),
        DeclareLaunchArgument(
            'image_topic', default_value='',
            description="Image topic; '' = the params file's image_topics"),
        DeclareLaunchArgument(
            'image_topics', default_value='',
            description="YAML list of image topics; '' = the params file's image_topics"),
        DeclareLaunchArgument(
            'camera_names', default_value='',
            description="YAML list, one name per image topic; '' = the params file's value"),
        DeclareLaunchArgument(
            'camera_info_topics', default_value='',
            description="YAML list, one CameraInfo topic per image topic; '' = the params "
                        "file's value"),
        DeclareLaunchArgument(
            'transport', default_value='',
            description="raw or compressed; '' = the params file's transport"),
        DeclareLaunchArgument(
            'depth_topics', default_value='',
            description="YAML list, one registered depth topic per image topic ('' entry = no "
                        "depth for that camera); '' = the params file's depth_topics"),
        DeclareLaunchArgument(
            'depth_transport', default_value='',
            description="raw or compressedDepth; '' = the params file's depth_transport"),
        DeclareLaunchArgument(
            'log_level', default_value='info', choices=list(LOG_LEVELS),
            description='Logger level'),
        # Scoped group: the Fast DDS variable set inside reaches only this node, not actions
        # of a launch file that includes this one (environment scoping: Humble and later).
        GroupAction([OpaqueFunction(function=_launch_setup)]),
    ])
