"""Launch ONE diffpose_node process serving several cameras (ROS 2 Humble and later).

All cameras share one detector and one pose network; their persons are batched together, which
is cheaper than one process per camera (each process would load the models and deserialise its
own images).

Usage::

    ros2 launch diffpose_ros diffpose_multi_camera.launch.py \\
        image_topics:="['/front/image_raw', '/rear/image_raw']"
    ros2 launch diffpose_ros diffpose_multi_camera.launch.py \\
        image_topics:="['/cam_a/color/image_raw', '/cam_b/color/image_raw']" \\
        camera_names:="[cam_a, cam_b]"

Arguments:
    params_file: ROS params file (default: the package's config/diffpose_cpu.yaml).
    namespace: Node namespace (default ''). Outputs are ``/<namespace>/diffpose/<camera>/...``.
    use_sim_time: Use /clock (rosbag replay). Default false.
    autostart: true (default) = the node configures and activates itself; false = it waits for
        ``ros2 lifecycle set /diffpose configure`` then ``... activate`` (the launch file never
        emits both transitions itself: launch_ros #318).
    image_topics: YAML list of image topics, e.g. "['/front/image_raw', '/rear/image_raw']";
        '' (default) = keep the params file's ``image_topics``.
    camera_names: YAML list, one name per image topic; '' (default) = the params file's value
        ([] there = derived from each topic's parent namespace: /front/image_raw -> front).
    camera_info_topics: YAML list, one per image topic; '' (default) = the params file's value
        ([] there = <image namespace>/camera_info).
    transport: raw or compressed; '' (default) = the params file's value.
    depth_topics: YAML list, one registered depth topic per image topic ('' entry = no depth for
        that camera); '' (default) = the params file's value. Cameras with depth publish
        ``~/<camera>/poses_3d``.
    depth_transport: raw or compressedDepth; '' (default) = the params file's value.
    log_level: debug, info (default), warn, error or fatal.

The lists are parsed with yaml.safe_load (never eval); a bare string counts as a one-element
list. Lists whose lengths do not match image_topics make ``configure`` fail with the reason.
This file only documents the multi-camera use and includes diffpose.launch.py, which takes the
same arguments (one launch description to maintain).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

PACKAGE = 'diffpose_ros'
ARGUMENTS = {
    'params_file': (None, 'ROS params file (default: config/diffpose_cpu.yaml)'),
    'namespace': ('', 'Node namespace'),
    'use_sim_time': ('false', 'Use /clock for time (rosbag replay with --clock)'),
    'autostart': ('true', 'true: configure + activate by itself'),
    'image_topics': ('', "YAML list of image topics; '' = the params file's image_topics"),
    'camera_names': ('', "YAML list, one name per image topic; '' = the params file's value"),
    'camera_info_topics': ('', "YAML list, one CameraInfo topic per image topic"),
    'transport': ('', "raw or compressed; '' = the params file's transport"),
    'depth_topics': ('', "YAML list, one registered depth topic per image topic ('' = none)"),
    'depth_transport': ('', "raw or compressedDepth; '' = the params file's depth_transport"),
    'log_level': ('info', 'Logger level'),
}


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    defaults = {'params_file': os.path.join(share, 'config', 'diffpose_cpu.yaml')}
    declared = [DeclareLaunchArgument(name, default_value=defaults.get(name, default),
                                      description=description)
                for name, (default, description) in ARGUMENTS.items()]
    # forwarded explicitly (included files would also see them: launch configurations are
    # inherited), so this file's defaults are the ones used
    forwarded = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'diffpose.launch.py')),
        launch_arguments=forwarded.items())
    return LaunchDescription(declared + [include])
