"""ONNX Runtime backend: the four exported graphs behind the :class:`PoseRuntime` API.

No torch import: a deployment can run from an exported model directory alone (numpy +
onnxruntime). The directory (written by ``diffpose_ros.runtime.export``) holds:

- ``backbone.onnx``: crops (N, 3, Hc, Wc) -> features (N, C, h, w);
- ``window_encoder.onnx``: features (N, T, C, h, w), offsets (N, T) -> the window's condition
  (f1, f2, f3 and the denoiser's step-independent terms c1, c2, c3);
- ``time_terms.onnx``: timesteps (B,) -> the step's t-only terms (time MLP, FiLM folded into
  each norm's affine, token offsets); run once per distinct timestep and cached;
- ``denoiser.onnx``: one denoising step over B rows, given each row's condition and those terms
  (rows of 1 broadcast) -> x0 heatmaps (B, K, H, W);
- ``model_config.json`` (:class:`ModelConfig`) and ``manifest.json`` (versions, sha256 of each
  graph, whether the head was trained).

At load every graph's sha256 is checked against the manifest and its inputs and outputs
(names, element types, ranks, fixed dims, which dims are dynamic) against ``model_config.json``;
any mismatch raises :class:`OnnxModelError` naming the file and the re-export command.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.config import ModelConfig

LOGGER = logging.getLogger(__name__)

TENSORRT = 'TensorrtExecutionProvider'
CUDA = 'CUDAExecutionProvider'
CPU = 'CPUExecutionProvider'
SUPPORTED_PROVIDERS = (TENSORRT, CUDA, CPU)
GPU_PROVIDERS = (TENSORRT, CUDA)
# the GPU is asked for explicitly (providers, or devices.providers_for_device('cuda'))
DEFAULT_PROVIDERS = (CPU,)

BACKBONE = 'backbone'
WINDOW_ENCODER = 'window_encoder'
DENOISER = 'denoiser'
TIME_TERMS = 'time_terms'
GRAPH_NAMES = (BACKBONE, WINDOW_ENCODER, DENOISER, TIME_TERMS)
MODEL_CONFIG_FILE = 'model_config.json'
MANIFEST_FILE = 'manifest.json'
# v2: offsets (N, T), 640-channel features, the timestep inside the denoiser's blocks
# v4: the denoiser's t-only terms in their own graph (time_terms.onnx)
MANIFEST_FORMAT = 'diffpose_ros-onnx-v4'
# the window's condition: the window encoder's outputs, the denoiser's inputs after x_t, rows
CONDITION_NAMES = ('f1', 'f2', 'f3', 'c1', 'c2', 'c3')
# the denoiser blocks whose norm affine carries the timestep FiLM (LMSFIDenoiser attributes)
FILM_BLOCKS = ('down3', 'down2', 'down1', 'refine2', 'fuse2', 'refine3', 'fuse3')
# LMSFIDenoiser.time_terms, in order: input FiLM, each block's (gain, bias), token offsets
TIME_TERM_NAMES = ('input_gain', 'input_bias',
                   *(f'{block}_{part}' for block in FILM_BLOCKS for part in ('gain', 'bias')),
                   'tokens_seref', 'tokens_trans')
# cached timesteps' terms before the cache is cleared (a sampler visits a few dozen)
TIME_TERM_CACHE_MAX = 4096
EXPORT_COMMAND = ('python -m diffpose_ros.runtime.export --weights <weights.safetensors> '
                  '--out <dir>')

# ONNX Runtime's spelling of the element types our graphs use
_ORT_TYPES = {'float32': 'tensor(float)', 'int64': 'tensor(int64)'}


class OnnxModelError(RuntimeError):
    """An exported model directory is missing, corrupt or does not match its model config."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: tensor name in the graph.
        dtype: 'float32' or 'int64'.
        shape: per dim, a fixed size (int) or the name of a dynamic dim ('N', 'T', 'B').
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'dtype': self.dtype, 'shape': list(self.shape)}


@dataclasses.dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported graph (``<name>.onnx``)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def filename(self) -> str:
        return f'{self.name}.onnx'

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export`` dynamic_axes: {tensor name: {axis: dim name}}."""
        return {spec.name: {axis: dim for axis, dim in enumerate(spec.shape)
                            if isinstance(dim, str)}
                for spec in self.inputs + self.outputs}


def graph_specs(config: ModelConfig) -> dict[str, GraphSpec]:
    """The I/O contract of the four graphs for a model config.

    Dynamic dims: N persons (crops), T window frames, B denoiser rows (persons x hypotheses),
    R rows of the time terms fed to the denoiser (B, or 1 when every row has the same t).

    Returns:
        {graph name: GraphSpec} for 'backbone', 'window_encoder', 'time_terms' and 'denoiser'.
    """
    c, h, w = config.backbone_channels, config.feature_height, config.feature_width
    k, hm_h, hm_w = config.num_keypoints, config.heatmap_height, config.heatmap_width
    d1, d2, d3 = config.decoder_dims
    f1 = TensorSpec('f1', 'float32', ('N', d1, h, w))
    f2 = TensorSpec('f2', 'float32', ('N', d2, 2 * h, 2 * w))
    f3 = TensorSpec('f3', 'float32', ('N', d3, 4 * h, 4 * w))
    # the denoiser's step-independent fusion terms (LMSFIDenoiser.condition_terms)
    c1 = TensorSpec('c1', 'float32', ('N', h * w, d1))
    c2 = TensorSpec('c2', 'float32', ('N', d2, 2 * h, 2 * w))
    c3 = TensorSpec('c3', 'float32', ('N', d3, 4 * h, 4 * w))
    term_widths = {'input': k, 'down3': d3, 'down2': d2, 'down1': d1, 'refine2': d2,
                   'fuse2': d2, 'refine3': d3, 'fuse3': d3}

    def time_term(name: str, rows: str) -> TensorSpec:
        if name.startswith('tokens_'):
            return TensorSpec(name, 'float32', (rows, 1, d1))
        return TensorSpec(name, 'float32', (rows, term_widths[name.rsplit('_', 1)[0]], 1, 1))

    return {
        BACKBONE: GraphSpec(
            BACKBONE,
            (TensorSpec('crops', 'float32', ('N', 3, config.crop_height, config.crop_width)),),
            (TensorSpec('features', 'float32', ('N', c, h, w)),)),
        WINDOW_ENCODER: GraphSpec(
            WINDOW_ENCODER,
            (TensorSpec('features', 'float32', ('N', 'T', c, h, w)),
             TensorSpec('offsets', 'int64', ('N', 'T'))),
            (f1, f2, f3, c1, c2, c3)),
        TIME_TERMS: GraphSpec(
            TIME_TERMS,
            (TensorSpec('t', 'int64', ('B',)),),
            tuple(time_term(name, 'B') for name in TIME_TERM_NAMES)),
        DENOISER: GraphSpec(
            DENOISER,
            (TensorSpec('model_input', 'float32', ('B', k, hm_h, hm_w)),
             *(dataclasses.replace(spec, shape=('B', *spec.shape[1:]))
               for spec in (f1, f2, f3, c1, c2, c3)),
             *(time_term(name, 'R') for name in TIME_TERM_NAMES)),
            (TensorSpec('x0', 'float32', ('B', k, hm_h, hm_w)),)),
    }


def default_trt_engine_cache_dir() -> Path:
    """``<asset cache>/tensorrt``: engines are keyed by model hash, GPU and TensorRT version."""
    from diffpose_ros.assets import cache_dir

    return cache_dir() / 'tensorrt'


def select_providers(requested: Sequence[str], available: Sequence[str],
                     trt_engine_cache_dir: str | Path = '', fp16: bool = False,
                     device_id: int = 0) -> list[tuple[str, dict[str, str]]]:
    """Execution providers and their options, in the requested order.

    Args:
        requested: provider names in order of preference (duplicates are ignored).
        available: ``onnxruntime.get_available_providers()``. A GPU build lists CUDA and
            TensorRT even on a machine without a GPU; the truth is only known once a session
            exists (``InferenceSession.get_providers()``).
        trt_engine_cache_dir: where TensorRT engines and timing caches are stored; '' uses
            :func:`default_trt_engine_cache_dir`. Created if TensorRT is selected.
        fp16: let TensorRT build FP16 engines (no effect on the CUDA and CPU providers).
        device_id: CUDA device index for the TensorRT and CUDA providers.

    Returns:
        [(provider name, options)] with option values as strings, in the requested order;
        CPU is appended when it was not requested.

    Raises:
        ValueError: a requested provider is not one of ``SUPPORTED_PROVIDERS``, or device_id < 0.
    """
    if isinstance(requested, str):
        raise ValueError(f'requested providers must be a sequence of names, got {requested!r}')
    unknown = [name for name in requested if name not in SUPPORTED_PROVIDERS]
    if unknown:
        raise ValueError(f'unsupported ONNX Runtime execution provider(s) {unknown}; '
                         f'choose from {list(SUPPORTED_PROVIDERS)}')
    if int(device_id) != device_id or device_id < 0:
        raise ValueError(f'device_id must be an integer >= 0, got {device_id!r}')
    selected: list[tuple[str, dict[str, str]]] = []
    for name in dict.fromkeys(requested):          # ordered, without duplicates
        if name not in available:
            # INFO: OrtRuntime's one fallback warning names every GPU provider not in use
            LOGGER.info('%s requested but not available here (available: %s); skipping it',
                        name, list(available))
            continue
        if name == TENSORRT:
            cache = Path(trt_engine_cache_dir) if trt_engine_cache_dir \
                else default_trt_engine_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            selected.append((name, {
                'device_id': str(device_id),
                'trt_fp16_enable': str(bool(fp16)),
                'trt_engine_cache_enable': 'True',
                'trt_engine_cache_path': str(cache),
                'trt_timing_cache_enable': 'True',
                'trt_timing_cache_path': str(cache),
            }))
        elif name == CUDA:
            # HEURISTIC: EXHAUSTIVE (the default) benchmarks every conv at start-up
            selected.append((name, {'device_id': str(device_id),
                                    'cudnn_conv_algo_search': 'HEURISTIC'}))
        elif name == CPU:
            selected.append((name, {}))
    if all(name != CPU for name, _ in selected):
        selected.append((CPU, {}))
    return selected


def nvidia_driver_present() -> bool:
    """True when the CUDA driver library loads (a GPU build of onnxruntime needs it)."""
    import ctypes

    try:
        ctypes.CDLL('libcuda.so.1')
    except OSError:
        return False
    return True


def usable_providers(ort: Any) -> list[str]:
    """Compiled-in providers, minus the GPU ones when no NVIDIA driver is installed.

    Asking a GPU build for CUDA/TensorRT without a driver works (it falls back to CPU) but
    prints a screen of loader errors per session; skipping them up front keeps logs readable.
    """
    available = list(ort.get_available_providers())
    if any(p in GPU_PROVIDERS for p in available) and not nvidia_driver_present():
        LOGGER.info('no NVIDIA driver (libcuda.so.1) found: GPU execution providers skipped')
        available = [p for p in available if p not in GPU_PROVIDERS]
    return available


def _sha256(path: Path) -> str:
    from diffpose_ros.assets import sha256_of

    return sha256_of(path)


class OrtRuntime:
    """:class:`PoseRuntime` on ONNX Runtime sessions (TensorRT, CUDA or CPU).

    Arrays in and out are host numpy (float32 / int64); a window's condition is a tuple of
    host arrays (f1, f2, f3, c1, c2, c3) reused by every denoising step. IOBinding (keeping
    the condition and the noisy heatmaps on the GPU between steps) is not used yet, so on
    CUDA and TensorRT every ``run`` copies its inputs to the device and the output back.

    Args:
        onnx_dir: directory written by ``diffpose_ros.runtime.export``.
        providers: execution providers in order of preference (see :func:`select_providers`).
        trt_engine_cache_dir: TensorRT engine/timing cache directory ('' = default).
        fp16: FP16 TensorRT engines (the CUDA and CPU providers run the FP32 graphs).
        intra_op_threads: threads per session for the CPU provider; 0 = ONNX Runtime default
            (one per physical core).
        device_id: CUDA device index.
        warn_on_fallback: warn when every requested GPU provider fell back to the CPU; False
            when the caller reports it (:func:`diffpose_ros.runtime.devices.build_engines`).
            A partial fallback (TensorRT -> CUDA) is always warned.

    Raises:
        OnnxModelError: a file is missing or corrupt, or a graph does not match
            ``model_config.json``.
        ValueError: an unsupported provider name or a negative thread count.
    """

    name = 'onnxruntime'

    def __init__(self, onnx_dir: str | Path, providers: Sequence[str] = DEFAULT_PROVIDERS,
                 trt_engine_cache_dir: str | Path = '', fp16: bool = False,
                 intra_op_threads: int = 0, device_id: int = 0,
                 warn_on_fallback: bool = True):
        import onnxruntime as ort

        if intra_op_threads < 0:
            raise ValueError(f'intra_op_threads must be >= 0, got {intra_op_threads}')
        self.onnx_dir = Path(onnx_dir)
        manifest = self._load_manifest()
        self.manifest = manifest
        self.model_config = self._load_model_config()
        self.trained = bool(manifest.get('trained', False))
        # 'none' (float32 graphs), 'int8_encoder' or 'int8' (runtime/quantize.py)
        self.quantization = str((manifest.get('quantization') or {}).get('mode', 'none'))
        self._specs = graph_specs(self.model_config)

        self._selected = select_providers(providers, usable_providers(ort),
                                          trt_engine_cache_dir, fp16, device_id)
        self._warn_on_fallback = warn_on_fallback
        # {provider: why it could not be created}, for a caller that reports the fallback
        self.provider_errors: dict[str, str] = {}
        self.requested_providers = [name for name, _ in self._selected]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(intra_op_threads)
        # Idle intra-op threads would otherwise busy-wait after every run; in a ROS node they
        # share the cores with the executor, image conversion and the tracker, so a little
        # wake-up latency is the better trade.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self._session_options = options

        self._sessions = {name: self._create_session(ort, name) for name in GRAPH_NAMES}
        self._providers = list(dict.fromkeys(
            p for session in self._sessions.values() for p in session.get_providers()))
        self.provider_fallbacks = [p for p in dict.fromkeys(providers)
                                   if p in GPU_PROVIDERS and p not in self._providers]
        on_gpu = any(p in GPU_PROVIDERS for p in self._providers)
        if self.provider_fallbacks and (warn_on_fallback or on_gpu):
            LOGGER.warning(
                'ONNX Runtime was asked for %s but the sessions run on %s: no usable GPU, or '
                'the CUDA / cuDNN / TensorRT libraries are missing (onnxruntime falls back '
                'without raising)', self.provider_fallbacks, self._providers)
        if fp16 and TENSORRT not in self._providers and (
                warn_on_fallback or on_gpu or TENSORRT not in providers):
            LOGGER.warning('fp16 applies to TensorRT engines only; running the FP32 graphs on %s',
                           self._providers)

        # Names fixed once: the denoiser runs many times per frame.
        self._backbone = self._sessions[BACKBONE]
        self._window_encoder = self._sessions[WINDOW_ENCODER]
        self._denoiser = self._sessions[DENOISER]
        self._time_graph = self._sessions[TIME_TERMS]
        self._backbone_outputs = self._specs[BACKBONE].output_names
        self._window_outputs = self._specs[WINDOW_ENCODER].output_names
        self._denoiser_outputs = self._specs[DENOISER].output_names
        # {timestep: its time terms, each with one row}
        self._time_term_cache: dict[int, tuple[np.ndarray, ...]] = {}
        # (condition, person_index, its rows) of the last sampler call
        self._condition_rows_cache: tuple[Any, np.ndarray, tuple[np.ndarray, ...]] | None = None

    # -- loading ----------------------------------------------------------------------------

    def _hint(self) -> str:
        command = EXPORT_COMMAND.replace('<dir>', str(self.onnx_dir))
        return f'Re-export the model with: {command}'

    def _load_manifest(self) -> dict[str, Any]:
        if not self.onnx_dir.is_dir():
            raise OnnxModelError(f'ONNX model directory {self.onnx_dir} does not exist. '
                                 f'{self._hint()}')
        path = self.onnx_dir / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OnnxModelError(f'cannot read {path}: {exc}. {self._hint()}') from exc
        if not isinstance(manifest, dict) or manifest.get('format') != MANIFEST_FORMAT:
            found = manifest.get('format') if isinstance(manifest, dict) else None
            raise OnnxModelError(f'{path} has format {found!r}, expected {MANIFEST_FORMAT!r}. '
                                 f'{self._hint()}')
        graphs = manifest.get('graphs')
        if not isinstance(graphs, dict) or set(GRAPH_NAMES) - set(graphs):
            raise OnnxModelError(f'{path} does not list the graphs {list(GRAPH_NAMES)}. '
                                 f'{self._hint()}')
        return manifest

    def _load_model_config(self) -> ModelConfig:
        path = self.onnx_dir / MODEL_CONFIG_FILE
        if not path.is_file():
            raise OnnxModelError(f'{path} is missing. {self._hint()}')
        try:
            return ModelConfig.load(path)
        except (ValueError, TypeError) as exc:
            raise OnnxModelError(f'{path}: {exc}. {self._hint()}') from exc

    def _create_session(self, ort: Any, graph: str) -> Any:
        entry = self.manifest['graphs'][graph]
        path = self.onnx_dir / str(entry.get('file', f'{graph}.onnx'))
        if not path.is_file():
            raise OnnxModelError(f'{path} is missing. {self._hint()}')
        expected_sha = entry.get('sha256')
        if expected_sha and _sha256(path) != expected_sha:
            raise OnnxModelError(f'{path} does not match the sha256 in {MANIFEST_FILE}: the file '
                                 f'is corrupt or was replaced. {self._hint()}')
        while True:
            names = [name for name, _ in self._selected]
            try:
                # enable_fallback=0: ORT's own retry prints to stdout and drops our provider
                # options (device_id); failed GPU providers are dropped below instead.
                session = ort.InferenceSession(
                    str(path), sess_options=self._session_options, providers=names,
                    provider_options=[opts for _, opts in self._selected], enable_fallback=0)
                break
            except RuntimeError as exc:
                # Plain RuntimeError = an execution provider could not be registered (e.g. no
                # TensorRT libraries); model errors are onnxruntime's own exception classes.
                if len(names) == 1:
                    raise OnnxModelError(f'ONNX Runtime cannot load {path}: {exc}. '
                                         f'{self._hint()}') from exc
                reason = str(exc).strip().splitlines()[-1][:300]
                self.provider_errors[names[0]] = reason
                LOGGER.log(logging.WARNING if self._warn_on_fallback else logging.INFO,
                           '%s could not be created (%s); continuing with %s', names[0],
                           reason, names[1:])
                self._selected = self._selected[1:]
            except Exception as exc:  # onnxruntime's InvalidProtobuf, InvalidGraph, Fail...
                raise OnnxModelError(f'ONNX Runtime cannot load {path}: {exc}. '
                                     f'{self._hint()}') from exc
        self._validate_io(session, self._specs[graph], path)
        return session

    def _validate_io(self, session: Any, spec: GraphSpec, path: Path) -> None:
        for kind, actual, expected in (('input', session.get_inputs(), spec.inputs),
                                       ('output', session.get_outputs(), spec.outputs)):
            names = [arg.name for arg in actual]
            if names != [s.name for s in expected]:
                raise OnnxModelError(
                    f'{path}: {kind}s {names} do not match {MODEL_CONFIG_FILE} (expected '
                    f'{[s.name for s in expected]}). {self._hint()}')
            for arg, want in zip(actual, expected):
                problem = _shape_problem(arg.type, list(arg.shape), want)
                if problem:
                    raise OnnxModelError(
                        f'{path}: {kind} {arg.name!r} {problem}; {MODEL_CONFIG_FILE} expects '
                        f'{want.dtype} {list(want.shape)}. {self._hint()}')

    # -- PoseRuntime ------------------------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """Execution providers really in use, in order (union of ``session.get_providers()``)."""
        return list(self._providers)

    def extract_features(self, crops: np.ndarray) -> np.ndarray:
        """crops (N, 3, Hc, Wc) float32 RGB in [0, 1] -> features (N, C, h, w) float32."""
        return self._backbone.run(self._backbone_outputs, {'crops': _f32(crops)})[0]

    def encode_window(self, features: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
        """features (N, T, C, h, w), offsets (N, T) int64 -> (f1, f2, f3, c1, c2, c3) float32
        host arrays."""
        return tuple(self._window_encoder.run(
            self._window_outputs, {'features': _f32(features),
                                   'offsets': _i64(per_person_offsets(offsets, len(features)))}))

    def denoise(self, model_input: np.ndarray, t: np.ndarray, person_index: np.ndarray,
                condition: tuple[np.ndarray, ...]) -> np.ndarray:
        """model_input (B, K, H, W) in [0, 1], t (B,) int64, person_index (B,) int64, the
        window's condition (f1, f2, f3, c1, c2, c3) -> predicted x0 heatmaps (B, K, H, W)
        float32."""
        feed = dict(zip(CONDITION_NAMES, self.condition_rows(condition, person_index),
                        strict=True))
        feed.update(zip(TIME_TERM_NAMES, self.time_terms(t), strict=True))
        feed['model_input'] = _f32(model_input)
        return self._denoiser.run(self._denoiser_outputs, feed)[0]

    def condition_rows(self, condition: tuple[np.ndarray, ...], person_index: np.ndarray,
                       ) -> tuple[np.ndarray, ...]:
        """Each row's condition: the window's arrays themselves when the rows are the persons
        in order (one hypothesis), else indexed by ``person_index`` once and reused while the
        same condition object and rows come back (every step of one sampler call)."""
        person_index = np.asarray(person_index, np.int64)
        persons = len(condition[0])
        if len(person_index) == persons and np.array_equal(person_index, np.arange(persons)):
            return tuple(condition)
        cached = self._condition_rows_cache
        # the cache holds the condition object, so its id cannot be reused by another one
        if cached is not None and cached[0] is condition and np.array_equal(cached[1],
                                                                           person_index):
            return cached[2]
        rows = tuple(np.ascontiguousarray(c[person_index]) for c in condition)
        self._condition_rows_cache = (condition, person_index.copy(), rows)
        return rows

    def time_terms(self, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """(B,) timesteps -> the denoiser's t-only terms: rows of 1 when every row has the
        same t (the sampler's case; they broadcast), else B rows. Each timestep's terms are
        computed once by ``time_terms.onnx`` and cached."""
        t = np.asarray(t, np.int64).reshape(-1)
        steps = np.unique(t)
        cache = self._time_term_cache
        missing = [int(v) for v in steps if int(v) not in cache]
        if missing:
            if len(cache) + len(missing) > TIME_TERM_CACHE_MAX:
                cache.clear()
                missing = [int(v) for v in steps]
            outputs = self._time_graph.run(None, {'t': np.asarray(missing, np.int64)})
            for row, step in enumerate(missing):
                cache[step] = tuple(np.ascontiguousarray(o[row:row + 1]) for o in outputs)
        if len(steps) == 1:
            return cache[int(steps[0])]
        per_row = [cache[int(v)] for v in t]
        return tuple(np.concatenate(parts) for parts in zip(*per_row))


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _i64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int64)


def _shape_problem(ort_type: str, shape: list[Any], want: TensorSpec) -> str:
    """'' if an ONNX Runtime input/output matches ``want``, else what is wrong."""
    if ort_type != _ORT_TYPES[want.dtype]:
        return f'has element type {ort_type}'
    if len(shape) != len(want.shape):
        return f'has rank {len(shape)} (shape {shape})'
    for axis, (dim, wanted) in enumerate(zip(shape, want.shape)):
        if isinstance(wanted, int) and isinstance(dim, int) and dim != wanted:
            return f'has size {dim} on axis {axis} (shape {shape})'
        if isinstance(wanted, str) and isinstance(dim, int):
            return (f'has a fixed size {dim} on axis {axis}, which must be dynamic ({wanted}); '
                    'it was exported without dynamic axes')
    return ''


def per_person_offsets(offsets: np.ndarray, persons: int) -> np.ndarray:
    """(T,) offsets shared by every person -> (N, T); (N, T) is returned as it is."""
    offsets = np.asarray(offsets, np.int64)
    if offsets.ndim == 1:
        return np.ascontiguousarray(np.broadcast_to(offsets, (persons, offsets.shape[0])))
    return offsets
