"""Export :class:`DiffPoseNet` to four ONNX graphs for :class:`OrtRuntime`.

- ``backbone.onnx``: crops (N, 3, 256, 192) -> features (N, 640, 16, 12), run once per person
  per frame (the features are cached per track);
- ``window_encoder.onnx``: features (N, T, 640, 16, 12), offsets (N, T) int64 -> f1 (N, d1, 16,
  12), f2 (N, d2, 32, 24), f3 (N, d3, 64, 48) and the denoiser's step-independent fusion terms
  c1 (N, 192, d1), c2 (N, d2, 32, 24), c3 (N, d3, 64, 48); backbone + window encoder together
  are the paper's window encoder, split so per-frame features can be cached;
- ``time_terms.onnx``: t (B,) int64 -> the step's 18 t-only terms (``TIME_TERM_NAMES``), run
  once per distinct timestep;
- ``denoiser.onnx``: one denoising step, model_input (B, K, 64, 48), each row's f1, f2, f3,
  c1, c2, c3 (B, ...; the runtime selects them once per sampler call) and the time terms
  (R = B or 1 rows) -> x0 heatmaps (B, K, 64, 48).

N, T, B and R are dynamic. The legacy TorchScript exporter (``dynamo=False``) is used: the dynamo
exporter needs ``onnxscript``, which is not a dependency. Every graph is checked with
``onnx.checker`` (full check), run in ONNX Runtime (CPU) at shapes other than the traced ones
and compared with PyTorch, then simplified with onnxslim when the simplified graph gives the
same outputs. ``model_config.json`` and ``manifest.json`` are written beside the graphs, the
manifest last, so a directory with a manifest is complete.

CLI: ``python -m diffpose_ros.runtime.export --weights <path or omitted> --out <dir>``.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from diffpose_ros.model.diffpose import DiffPoseNet
from diffpose_ros.runtime.ort_runtime import (
    BACKBONE,
    DENOISER,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MODEL_CONFIG_FILE,
    TIME_TERMS,
    WINDOW_ENCODER,
    GraphSpec,
    graph_specs,
)

LOGGER = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# ONNX Runtime (CPU, FP32) vs PyTorch on the export self-check; features reach |x| ~ 5
MAX_EXPORT_ABS_ERROR = 1e-3
# a simplified graph is kept only if it reproduces the plain graph's outputs this closely
MAX_SLIM_ABS_ERROR = 1e-5
EXPORTER = 'torch.onnx.export, TorchScript tracer (dynamo=False)'


class ExportError(RuntimeError):
    """A graph could not be exported or does not reproduce the PyTorch model."""


class _Call(nn.Module):
    """Expose one method of the network as ``forward`` for tracing."""

    def __init__(self, model: DiffPoseNet, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: torch.Tensor) -> Any:
        return getattr(self.model, self.method)(*args)


def _example_inputs(model: DiffPoseNet, persons: int, offsets: list[int], seed: int,
                    shared_time: bool = False) -> dict[str, tuple[torch.Tensor, ...]]:
    """Realistic inputs per graph: crops in [0, 1], the backbone's own features, the window
    encoder's own condition, heatmap-domain model inputs in [0, 1], 2 rows per person, and
    the time terms of per-row timesteps (``shared_time``: one timestep, terms of one row, as
    the runtime feeds a sampler's step)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    frames = len(offsets)
    crops = torch.rand(persons * frames, 3, cfg.crop_height, cfg.crop_width, generator=gen)
    # per-person offsets, as stamps give them (the second person's window skipped a frame)
    offsets_t = torch.tensor(offsets, dtype=torch.int64).repeat(persons, 1)
    if persons > 1 and frames > 2:
        offsets_t[1, 0] -= 1
    with torch.inference_mode():
        features = model.extract_features(crops)
        window = features.reshape(persons, frames, *features.shape[1:])
        condition = model.encode_window(window, offsets_t)
    rows = 2 * persons
    model_input = torch.rand(rows, cfg.num_keypoints, cfg.heatmap_height, cfg.heatmap_width,
                             generator=gen)
    t = torch.randint(0, cfg.diffusion_timesteps, (rows,), generator=gen)
    person_index = torch.arange(persons).repeat_interleave(2)
    with torch.inference_mode():
        time_terms = model.time_terms(t[:1] if shared_time else t)
    return {BACKBONE: (crops[:persons].clone(),),
            WINDOW_ENCODER: (window.clone(), offsets_t),
            TIME_TERMS: (t,),
            DENOISER: (model_input, *(c[person_index].clone() for c in condition),
                       *(v.clone() for v in time_terms))}


def _declare_shapes(proto: onnx.ModelProto, spec: GraphSpec) -> None:
    """Write the contract's dims (fixed sizes, named dynamic dims) on the graph's inputs and
    outputs; the tracer leaves derived output dims as anonymous symbols."""
    for values, specs in ((proto.graph.input, spec.inputs), (proto.graph.output, spec.outputs)):
        by_name = {s.name: s for s in specs}
        for value in values:
            dims = value.type.tensor_type.shape.dim
            want = by_name[value.name].shape
            if len(dims) != len(want):
                raise ExportError(f'{spec.filename}: {value.name} has rank {len(dims)}, '
                                  f'expected {len(want)}')
            for dim, size in zip(dims, want):
                if isinstance(size, str):
                    dim.dim_param = size
                else:
                    dim.dim_value = size


def _ort_outputs(model_bytes: bytes, spec: GraphSpec, inputs: tuple[torch.Tensor, ...],
                 ) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=['CPUExecutionProvider'])
    feed = {name: value.numpy() for name, value in zip(spec.input_names, inputs)}
    return session.run(spec.output_names, feed)


def _max_abs_error(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


def _slim(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        import onnxslim
    except ImportError:
        LOGGER.info('onnxslim is not installed; keeping the exported graphs as they are')
        return None
    try:
        return onnxslim.slim(copy.deepcopy(proto))
    except Exception as exc:  # onnxslim raises many types; the plain graph is always usable
        LOGGER.warning('onnxslim failed (%s); keeping the plain graph', exc)
        return None


def _export_graph(model: DiffPoseNet, spec: GraphSpec, method: str, opset: int,
                  trace_inputs: tuple[torch.Tensor, ...], check_inputs: tuple[torch.Tensor, ...],
                  slim: bool) -> tuple[bytes, dict[str, Any]]:
    """Export, check and (optionally) simplify one graph; returns its bytes and manifest info."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.onnx.export(_Call(model, method), trace_inputs, buffer, dynamo=False,
                          opset_version=opset, input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes(),
                          do_constant_folding=True)
    for item in caught:   # legacy-exporter deprecation and tracer notes; parity is checked below
        LOGGER.debug('%s export: %s: %s', spec.name, item.category.__name__, item.message)
    proto = onnx.load_from_string(buffer.getvalue())
    _declare_shapes(proto, spec)
    onnx.checker.check_model(proto, full_check=True)
    plain = proto.SerializeToString()

    with torch.inference_mode():
        expected = getattr(model, method)(*check_inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    got = _ort_outputs(plain, spec, check_inputs)
    error = _max_abs_error(expected, got)
    if not error <= MAX_EXPORT_ABS_ERROR:
        raise ExportError(f'{spec.filename}: ONNX Runtime differs from PyTorch by {error:.3g} '
                          f'(limit {MAX_EXPORT_ABS_ERROR}) on shapes other than the traced ones')
    info: dict[str, Any] = {'max_abs_error_vs_torch': error, 'slimmed': False,
                            'nodes': len(proto.graph.node)}
    if slim:
        slimmed = _slim(proto)
        if slimmed is not None:
            _declare_shapes(slimmed, spec)
            onnx.checker.check_model(slimmed, full_check=True)
            data = slimmed.SerializeToString()
            slim_error = _max_abs_error(got, _ort_outputs(data, spec, check_inputs))
            if slim_error <= MAX_SLIM_ABS_ERROR:
                info.update(slimmed=True, nodes=len(slimmed.graph.node),
                            max_abs_error_vs_torch=_max_abs_error(
                                expected, _ort_outputs(data, spec, check_inputs)))
                return data, info
            LOGGER.warning('%s: onnxslim changed the outputs by %.3g; keeping the plain graph',
                           spec.filename, slim_error)
    return plain, info


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_onnx(model: DiffPoseNet, out_dir: str | Path, opset: int = DEFAULT_OPSET, *,
                trained: bool = False, weights_sha256: str | None = None,
                weights_file: str | None = None, graph_code_sha256: str | None = None,
                slim: bool = True, seed: int = 0) -> Path:
    """Write the four graphs, ``model_config.json`` and ``manifest.json`` into ``out_dir``.

    Args:
        model: the network (any device/dtype; it is exported as a float32 CPU copy when it is
            not already float32 on the CPU). Its training flag is restored afterwards.
        out_dir: created if missing; existing files of an earlier export are replaced.
        opset: ONNX opset (17: LayerNormalization is native; supported by TensorRT 8.6+).
        trained: whether the head weights were trained (recorded in the manifest).
        weights_sha256: sha256 of the head weights file, recorded for cache validation.
        weights_file: name of the weights file, recorded for humans.
        graph_code_sha256: hash of the code defining the graphs
            (:func:`diffpose_ros.runtime.factory.graph_code_sha256`), recorded for cache
            validation.
        slim: simplify each graph with onnxslim when its outputs stay identical.
        seed: seed of the example inputs used for tracing and checking.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        ExportError: a graph does not reproduce the PyTorch outputs in ONNX Runtime.
        onnx.checker.ValidationError: an exported graph is not valid ONNX.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = list(model.parameters()) + list(model.buffers())
    if any(p.device.type != 'cpu' or (p.is_floating_point() and p.dtype != torch.float32)
           for p in params):
        model = copy.deepcopy(model).to('cpu', torch.float32)
    was_training = model.training
    model.eval()
    specs = graph_specs(model.config)
    methods = {BACKBONE: 'extract_features', WINDOW_ENCODER: 'encode_window',
               TIME_TERMS: 'time_terms', DENOISER: 'denoise_timed'}
    # trace at one size, check at another: proves N, T and B are really dynamic
    trace = _example_inputs(model, persons=2, offsets=[-2, -1, 0], seed=seed)
    check = _example_inputs(model, persons=3, offsets=[-2, -1, 0, 1, 2], seed=seed + 1,
                            shared_time=True)
    graphs: dict[str, Any] = {}
    try:
        for name, spec in specs.items():
            data, info = _export_graph(model, spec, methods[name], opset, trace[name],
                                       check[name], slim)
            _write_atomic(out / spec.filename, data)
            graphs[name] = {'file': spec.filename, 'sha256': _sha256_bytes(data),
                            'bytes': len(data),
                            'inputs': [s.to_dict() for s in spec.inputs],
                            'outputs': [s.to_dict() for s in spec.outputs], **info}
            LOGGER.info('exported %s (%.1f MB, %d nodes, slimmed=%s, max |ORT - torch| '
                        '= %.2g)', spec.filename, len(data) / 1e6, info['nodes'],
                        info['slimmed'], info['max_abs_error_vs_torch'])
    finally:
        model.train(was_training)
    model.config.save(out / MODEL_CONFIG_FILE)
    manifest = {
        'format': MANIFEST_FORMAT,
        'opset': opset,
        'exporter': EXPORTER,
        'versions': _versions(),
        'trained': bool(trained),
        'weights': {'file': weights_file, 'sha256': weights_sha256},
        'graph_code_sha256': graph_code_sha256,
        'backbone': model.config.backbone,
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'graphs': graphs,
    }
    _write_atomic(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + '\n').encode())
    return out


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    import diffpose_ros

    versions: dict[str, str | None] = {'diffpose_ros': diffpose_ros.__version__,
                                       'torch': torch.__version__, 'onnx': onnx.__version__}
    for dist, key in (('onnxslim', 'onnxslim'), ('onnxruntime-gpu', 'onnxruntime'),
                      ('onnxruntime', 'onnxruntime')):
        if versions.get(key):
            continue
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m diffpose_ros.runtime.export',
        description='Export the DiffPose network to ONNX graphs for the onnxruntime backend.')
    parser.add_argument('--weights', default=None,
                        help='diffpose_ros .safetensors head weights (default: the shipped '
                             'weights, else a random head with a warning)')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--no-slim', action='store_true', help='skip onnxslim')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] %(name)s: %(message)s')

    from diffpose_ros.assets import sha256_of
    from diffpose_ros.model.weights import WeightsError, default_weights_path, load_model
    from diffpose_ros.runtime.factory import graph_code_sha256

    weights = Path(args.weights) if args.weights else default_weights_path()
    try:
        model, trained = load_model(weights)
    except WeightsError as exc:
        LOGGER.error('%s', exc)
        return 1
    out = export_onnx(model, args.out, args.opset, trained=trained,
                      weights_sha256=sha256_of(weights) if weights else None,
                      weights_file=weights.name if weights else None,
                      graph_code_sha256=graph_code_sha256(), slim=not args.no_slim)
    LOGGER.info('wrote %s (trained head: %s)', out, trained)
    return 0


if __name__ == '__main__':
    sys.exit(main())
