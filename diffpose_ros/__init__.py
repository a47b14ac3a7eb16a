# Generated messages (diffpose_ros.msg) are installed into this same import package by CMake;
# extend_path lets a source checkout on sys.path still find them.
__path__ = __import__('pkgutil').extend_path(__path__, __name__)  # noqa: F821

__version__ = '0.1.0'

# before any torch or numpy import: torch's idle OpenMP threads and OpenBLAS's idle workers
# would otherwise spin on the cores the ONNX Runtime graphs and the detector need
# (diffpose_ros/openmp_env.py)
from diffpose_ros.openmp_env import bound_blas_threads, bound_openmp_spin_wait  # noqa: E402

bound_openmp_spin_wait()
bound_blas_threads()
