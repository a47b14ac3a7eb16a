"""INT8 ONNX graphs (runtime/quantize.py): really quantised, loadable, close to float32, cached.

The backbone is calibrated on real crops: real vtest.avi frames through the float32 pipeline
with the real detector (a few frames here; the shipped default uses 60).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from diffpose_ros.config import QUANTIZATION_MODES, PipelineConfig
from diffpose_ros.runtime import quantize as Q
from diffpose_ros.runtime.ort_runtime import CPU, CUDA, MANIFEST_FILE, OrtRuntime


@pytest.fixture(scope='module')
def fp32_dir(tmp_path_factory) -> Path:
    from diffpose_ros.model.weights import load_model
    from diffpose_ros.runtime.export import export_onnx

    model, trained = load_model(None)  # the shipped weights
    return export_onnx(model, tmp_path_factory.mktemp('fp32') / 'export', trained=trained)


@pytest.fixture(scope='module')
def real_crops(fp32_dir, vtest_detector) -> np.ndarray:
    crops = Q.calibration_crops(fp32_dir, detector=vtest_detector, num_frames=4)
    assert crops.ndim == 4 and crops.shape[1:] == (3, 256, 192) and len(crops) >= 8
    assert 0.0 <= crops.min() and crops.max() <= 1.0 and crops.std() > 0.05  # real images
    return crops


def _ops(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _window(runtime, crops: np.ndarray):
    features = runtime.extract_features(crops[:6])
    return features, runtime.encode_window(features.reshape(2, 3, *features.shape[1:]),
                                           np.tile(np.array([-2, -1, 0]), (2, 1)))


def test_int8_encoder_quantises_only_the_window_encoder(fp32_dir, real_crops, tmp_path):
    out = tmp_path / 'q'
    section = Q.quantize_graphs(fp32_dir, out, 'int8_encoder')
    assert section['mode'] == 'int8_encoder' and section['backbone'] == 'float32'
    assert {'MatMulInteger', 'DynamicQuantizeLinear'} <= _ops(out / 'window_encoder.onnx')
    assert 'MatMulInteger' not in _ops(fp32_dir / 'window_encoder.onnx')
    for graph in ('backbone', 'denoiser'):  # untouched copies
        assert (out / f'{graph}.onnx').read_bytes() == (fp32_dir / f'{graph}.onnx').read_bytes()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest['quantization'] == section

    fp32, int8 = OrtRuntime(fp32_dir, providers=(CPU,)), OrtRuntime(out, providers=(CPU,))
    features, cond_fp32 = _window(fp32, real_crops)
    _, cond_int8 = _window(int8, real_crops)
    error = Q.relative_error(cond_fp32, cond_int8)
    assert 0 < error < 0.02, error  # measured ~0.3 % on real crops


def test_int8_quantises_the_backbone_with_real_calibration(fp32_dir, real_crops, tmp_path):
    out = tmp_path / 'q'
    section = Q.quantize_graphs(fp32_dir, out, 'int8', crops=real_crops[::2])
    assert section['calibration']['crops'] == len(real_crops[::2])
    assert 'QuantizeLinear' in _ops(out / 'backbone.onnx')
    fp32, int8 = OrtRuntime(fp32_dir, providers=(CPU,)), OrtRuntime(out, providers=(CPU,))
    held_out = real_crops[1::2]  # not used for calibration
    error = Q.relative_error([fp32.extract_features(held_out)], [int8.extract_features(held_out)])
    assert 0 < error < 0.15, error  # measured ~6 % (uint8 activations after SiLU)
    with pytest.raises(ValueError, match='crops'):
        Q.quantize_graphs(fp32_dir, tmp_path / 'no_crops', 'int8')
    with pytest.raises(ValueError, match='mode'):
        Q.quantize_graphs(fp32_dir, tmp_path / 'bad', 'int4')


def test_the_quantised_export_is_made_once_and_follows_its_source(fp32_dir, tmp_path,
                                                                  monkeypatch):
    import shutil

    source = tmp_path / 'export'
    shutil.copytree(fp32_dir, source)
    calls = []
    real = Q.quantize_graphs
    monkeypatch.setattr(Q, 'quantize_graphs', lambda *a, **k: calls.append(a) or real(*a, **k))
    first = Q.ensure_quantized_export(source, 'int8_encoder')
    assert first == tmp_path / 'export-int8_encoder' and len(calls) == 1
    assert Q.ensure_quantized_export(source, 'int8_encoder') == first and len(calls) == 1
    # another float32 export under the same name (e.g. new weights): made again
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    manifest['weights'] = {**(manifest.get('weights') or {}), 'sha256': '0' * 64}
    (source / MANIFEST_FILE).write_text(json.dumps(manifest))
    Q.ensure_quantized_export(source, 'int8_encoder')
    assert len(calls) == 2
    Q.ensure_quantized_export(source, 'int8_encoder', force=True)
    assert len(calls) == 3
    assert not list(tmp_path.glob('.export-int8_encoder.*'))  # no staging left behind


def test_make_runtime_picks_the_quantised_graphs_on_the_cpu_only(fp32_dir):
    from diffpose_ros.runtime.factory import make_runtime

    config = PipelineConfig(backend='onnxruntime', onnx_dir=str(fp32_dir), providers=(CPU,),
                            quantization='int8_encoder')
    runtime = make_runtime(config)
    assert runtime.onnx_dir.name == f'{fp32_dir.name}-int8_encoder'
    # a GPU provider asked for: the float32 graphs, whatever the provider falls back to
    gpu = PipelineConfig(backend='onnxruntime', onnx_dir=str(fp32_dir), providers=(CUDA, CPU),
                         quantization='int8_encoder')
    assert make_runtime(gpu, warn_on_fallback=False).onnx_dir == fp32_dir


def test_quantization_is_validated():
    assert QUANTIZATION_MODES == ('none', *Q.QUANTIZED_GRAPHS)
    with pytest.raises(ValueError, match='quantization'):
        PipelineConfig(quantization='fp8')
    from diffpose_ros.ros import params

    assert params.validate('quantization', 'int8') is None
    assert 'quantization' in (params.validate('quantization', 'int4') or '')
