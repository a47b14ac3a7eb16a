# Generated messages (diffpose_ros.msg) are installed into this same import package by CMake;
# extend_path lets a source checkout on sys.path still find them.
__path__ = __import__('pkgutil').extend_path(__path__, __name__)  # noqa: F821

__version__ = '0.1.0'

# before any torch import: torch's idle OpenMP threads would otherwise spin on the cores the
# ONNX Runtime graphs need right after each detector call (diffpose_ros/openmp_env.py)
from diffpose_ros.openmp_env import bound_openmp_spin_wait  # noqa: E402

bound_openmp_spin_wait()
