# Generated messages (diffpose_ros.msg) are installed into this same import package by CMake;
# extend_path lets a source checkout on sys.path still find them.
__path__ = __import__('pkgutil').extend_path(__path__, __name__)  # noqa: F821

__version__ = '0.1.0'
