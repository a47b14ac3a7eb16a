"""Build the configured :class:`PoseRuntime` (PyTorch or ONNX Runtime).

For ``backend='onnxruntime'`` without an ``onnx_dir`` the network is exported once into
``<asset cache>/onnx/<weights key>-<code key>/`` and reused. ``<weights key>`` is the first 16
hex digits of the head weights' sha256 (``untrained-<hash of config and torch version>`` for
the seeded random head); ``<code key>`` is the first 12 hex digits of
:func:`graph_code_sha256`, the hash of the code that defines the graphs, so an export made by
older code is never reused. The cached manifest must name the same weights sha256, code hash
and export format. Exports of the same weights by other code that no process used for
``STALE_EXPORT_DAYS`` are deleted after a new export (several checkouts may share the cache).
A cached export that fails to load (deleted or corrupted file) is rebuilt once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from diffpose_ros.config import ModelConfig, PipelineConfig
from diffpose_ros.runtime.base import PoseRuntime
from diffpose_ros.runtime.ort_runtime import (
    GPU_PROVIDERS,
    GRAPH_NAMES,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    OnnxModelError,
    OrtRuntime,
)

LOGGER = logging.getLogger(__name__)


def onnx_cache_root() -> Path:
    """``<asset cache>/onnx``: one sub-directory per exported set of weights."""
    from diffpose_ros.assets import cache_dir

    return cache_dir() / 'onnx'


def cuda_device_id(device: str) -> int:
    """'cuda:N' -> N; 'cuda' and 'cpu' -> 0 (ONNX Runtime takes a device index)."""
    _, _, index = device.partition(':')
    if not index:
        return 0
    if not index.isdigit():
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return int(index)


def _resolve_weights(weights_path: str | Path | None) -> Path | None:
    if weights_path:
        return Path(weights_path)
    from diffpose_ros.model.files import default_weights_path

    return default_weights_path()


# The code that decides what the exported graphs compute: the network, the exporter and the
# graphs' I/O contract (relative to the package). A change to any of them re-exports.
GRAPH_SOURCES = ('model/*.py', 'runtime/export.py', 'runtime/ort_runtime.py')


def graph_code_sha256(package_dir: str | Path | None = None) -> str:
    """sha256 over the export format, torch's version and the files in ``GRAPH_SOURCES``.

    Args:
        package_dir: the ``diffpose_ros`` package directory (default: this installation's).
    """
    from importlib import metadata

    root = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    try:
        torch_version = metadata.version('torch')       # no torch import on the cached path
    except metadata.PackageNotFoundError:
        torch_version = ''
    digest = hashlib.sha256(f'{MANIFEST_FORMAT}\0{torch_version}\0'.encode())
    files = sorted({path for pattern in GRAPH_SOURCES for path in root.glob(pattern)})
    if not files:
        raise FileNotFoundError(f'no graph source files {GRAPH_SOURCES} under {root}')
    for path in files:
        digest.update(f'{path.relative_to(root).as_posix()}\0'.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_key(weights: Path | None) -> tuple[str, str | None]:
    """(directory name, weights sha256 or None for the random head)."""
    from diffpose_ros.assets import sha256_of

    if weights is None:
        # the seeded random head depends on the config and on torch's RNG implementation
        import torch

        seed_source = json.dumps([ModelConfig().to_dict(), torch.__version__], sort_keys=True)
        return f'untrained-{hashlib.sha256(seed_source.encode()).hexdigest()[:12]}', None
    if not weights.is_file():
        from diffpose_ros.model.files import SETUP_HINT, WeightsError

        raise WeightsError(f'weights file {weights} does not exist; {SETUP_HINT}')
    digest = sha256_of(weights)
    return digest[:16], digest


def _is_complete_export(directory: Path, weights_sha256: str | None, code_sha256: str) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get('format') == MANIFEST_FORMAT
            and (manifest.get('weights') or {}).get('sha256') == weights_sha256
            and manifest.get('graph_code_sha256') == code_sha256
            and all((directory / f'{name}.onnx').is_file() for name in GRAPH_NAMES))


STALE_EXPORT_DAYS = 7


def _remove_stale_exports(root: Path, weights_key: str, keep: Path) -> None:
    """Delete exports of these weights by other code (and pre-code-key ones) that were not used
    for ``STALE_EXPORT_DAYS``: another checkout sharing the cache may still use recent ones."""
    import time

    cutoff = time.time() - STALE_EXPORT_DAYS * 86400
    for directory in root.glob(f'{weights_key}*'):
        ours = directory.name == weights_key or directory.name.startswith(f'{weights_key}-')
        derived = directory.name.startswith(f'{keep.name}-')  # its quantised copies
        if not ours or directory == keep or derived or not directory.is_dir():
            continue
        try:
            last_used = (directory / MANIFEST_FILE).stat().st_mtime
        except OSError:
            last_used = 0.0
        if last_used < cutoff:
            LOGGER.info('removing %s: exported by other code, unused for %d days', directory,
                        STALE_EXPORT_DAYS)
            shutil.rmtree(directory, ignore_errors=True)


def ensure_onnx_export(weights_path: str | Path | None = None,
                       cache_root: str | Path | None = None, force: bool = False) -> Path:
    """Directory of the ONNX export of these weights, exporting on first use.

    Args:
        weights_path: head weights (.safetensors); None = the shipped weights, else the seeded
            random head.
        cache_root: parent of the per-weights directories (default :func:`onnx_cache_root`).
        force: export again even if a complete export exists.

    Returns:
        ``<cache_root>/<key>``, holding the graphs, model_config.json and manifest.json.
    """
    weights = _resolve_weights(weights_path)
    weights_key, weights_sha256 = _cache_key(weights)
    code_sha256 = graph_code_sha256()
    key = f'{weights_key}-{code_sha256[:12]}'
    root = Path(cache_root) if cache_root else onnx_cache_root()
    target = root / key
    if not force and _is_complete_export(target, weights_sha256, code_sha256):
        LOGGER.info('using the cached ONNX export %s', target)
        try:
            os.utime(target / MANIFEST_FILE)        # last use, for _remove_stale_exports
        except OSError:
            pass                                    # a read-only cache still works
        return target

    from diffpose_ros.model.weights import load_model
    from diffpose_ros.runtime import export

    LOGGER.info('exporting %s to ONNX in %s (once per set of weights and graph code)',
                weights or 'the random head', target)
    model, trained = load_model(weights)
    root.mkdir(parents=True, exist_ok=True)
    # export beside the target and rename: a crash or a concurrent process never leaves a
    # half-written directory under the final name
    staging = Path(tempfile.mkdtemp(prefix=f'.{key}.', dir=root))
    try:
        export.export_onnx(model, staging, trained=trained, weights_sha256=weights_sha256,
                           weights_file=weights.name if weights else None,
                           graph_code_sha256=code_sha256)
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)
        except OSError:
            if not _is_complete_export(target, weights_sha256, code_sha256):  # not another
                raise                                                        # process's
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _remove_stale_exports(root, weights_key, target)
    return target


def make_runtime(pipeline_config: PipelineConfig, weights_path: str | Path | None = None, *,
                 onnx_cache_dir: str | Path | None = None,
                 warn_on_fallback: bool = True) -> PoseRuntime:
    """The backend chosen by ``pipeline_config.backend``.

    - 'torch': :func:`load_model` + :class:`TorchRuntime` (``device``, ``fp16``,
      ``intra_op_threads``).
    - 'onnxruntime': :class:`OrtRuntime` on ``onnx_dir``, or, when it is empty, on the cached
      export of ``weights_path`` (see :func:`ensure_onnx_export`); with ``quantization`` on its
      int8 copy beside it (:func:`runtime.quantize.ensure_quantized_export`; CPU provider only:
      with a GPU provider requested the float32 graphs run). ``providers`` choose the
      execution providers; ``device`` only gives the CUDA index ('cuda:1' -> 1).

    Args:
        pipeline_config: run-time choices.
        weights_path: head weights; None = the shipped weights, else a random head (warned).
        onnx_cache_dir: parent directory of cached exports (default :func:`onnx_cache_root`).
        warn_on_fallback: the runtime warns itself when it runs on the CPU instead of the
            requested GPU (False: the caller reports it, see ``runtime.devices``).
    """
    config = pipeline_config
    if config.backend == 'torch':
        from diffpose_ros.model.weights import load_model
        from diffpose_ros.runtime.torch_runtime import TorchRuntime

        model, trained = load_model(weights_path)
        return TorchRuntime(model, trained, device=config.device, fp16=config.fp16,
                            intra_op_threads=config.intra_op_threads)
    if config.backend != 'onnxruntime':
        raise ValueError(f"backend must be 'torch' or 'onnxruntime', got {config.backend!r}")

    def build(directory: Path) -> OrtRuntime:
        return OrtRuntime(directory, providers=config.providers,
                          trt_engine_cache_dir=config.trt_engine_cache_dir, fp16=config.fp16,
                          intra_op_threads=config.intra_op_threads,
                          device_id=cuda_device_id(config.device),
                          warn_on_fallback=warn_on_fallback)

    gpu_requested = [p for p in config.providers if p in GPU_PROVIDERS]
    if config.quantization != 'none' and gpu_requested:
        LOGGER.info('quantization %r is for the CPU provider; %s run the float32 graphs',
                    config.quantization, ' and '.join(gpu_requested))

    def quantized(directory: Path, force: bool = False) -> Path:
        if config.quantization == 'none' or gpu_requested:
            return directory
        from diffpose_ros.runtime.quantize import ensure_quantized_export

        return ensure_quantized_export(directory, config.quantization, force=force)

    if config.onnx_dir:
        return build(quantized(Path(config.onnx_dir)))
    directory = ensure_onnx_export(weights_path, onnx_cache_dir)
    try:
        return build(quantized(directory))
    except OnnxModelError as exc:
        LOGGER.warning('cached ONNX export is unusable (%s); exporting again', exc)
        return build(quantized(ensure_onnx_export(weights_path, onnx_cache_dir, force=True),
                               force=True))
