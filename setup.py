"""ROS-free install of the estimator core (e.g. a training machine without ROS).

Never pip-install this into the venv that holds the CMake-built ROS package: pip would treat
the CMake install's egg-info as its own and delete the installed messages
(see docs/architecture.md, "Packaging"). The ROS build uses CMakeLists.txt / colcon.
"""
from setuptools import find_packages, setup

setup(
    name='diffpose_ros',
    version='0.1.0',
    description='DiffPose video diffusion pose estimation with detection and tracking '
                '(ROS-free core of diffpose_ros)',
    license='AGPL-3.0-only',
    python_requires='>=3.10',
    packages=find_packages(include=['diffpose_ros', 'diffpose_ros.*']),
    install_requires=[
        'numpy>=1.23', 'pyyaml>=6.0', 'opencv-python-headless>=4.8,<5', 'torch>=2.1',
        'torchvision', 'ultralytics-opencv-headless>=8.3', 'lap>=0.5', 'onnx>=1.16',
        'onnxruntime-gpu>=1.18', 'safetensors>=0.4', 'tqdm>=4.66', 'matplotlib>=3.8',
    ],
    entry_points={'console_scripts': [
        f'diffpose-{name} = diffpose_ros.cli.{name}:main'
        for name in ('video', 'label', 'train', 'evaluate', 'bag')]},
)
