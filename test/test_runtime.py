"""ONNX export, the ONNX Runtime backend, provider selection and the runtime factory.

One export per session (a few seconds on 2 CPU cores); every parity check compares the same
random-head network in PyTorch and in ONNX Runtime (FP32, CPU execution provider).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros.codec import CropTransform, decode_heatmaps, encode_heatmaps_batch
from diffpose_ros.config import PipelineConfig
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.runtime.ort_runtime import (
    CPU,
    CUDA,
    MANIFEST_FILE,
    MODEL_CONFIG_FILE,
    TENSORRT,
    TIME_TERM_NAMES,
    OnnxModelError,
    OrtRuntime,
    select_providers,
)
from diffpose_ros.sampler import sample_heatmaps

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_PROVIDERS = (TENSORRT, CUDA, CPU)
ABS_TOL = 1e-4                 # torch vs ONNX Runtime, FP32 CPU
KEYPOINT_TOL_IMAGE_PX = 0.05

WINDOWS = [pytest.param(1, [-2, -1, 0], id='N1-causal-T3'),
           pytest.param(3, [-2, -1, 0, 1, 2], id='N3-centred-T5')]


@pytest.fixture(scope='session')
def net():
    from diffpose_ros.model.weights import load_model

    return load_model(None)          # (random head unless weights ship, trained flag)


@pytest.fixture(scope='session')
def onnx_dir(net, tmp_path_factory) -> Path:
    from diffpose_ros.runtime.export import export_onnx

    model, trained = net
    return export_onnx(model, tmp_path_factory.mktemp('onnx'), trained=trained)


@pytest.fixture(scope='session')
def ort_rt(onnx_dir) -> OrtRuntime:
    return OrtRuntime(onnx_dir, providers=(CPU,))


@pytest.fixture(scope='session')
def torch_rt(net):
    from diffpose_ros.runtime.torch_runtime import TorchRuntime

    model, trained = net
    return TorchRuntime(model, trained)


def _noisy_model_input(config, persons: int, rows_per_person: int, rng: np.random.Generator,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Realistic denoiser inputs: Gaussian keypoint heatmaps noised by the forward process."""
    schedule = DiffusionSchedule.from_config(config)
    k, h, w = config.num_keypoints, config.heatmap_height, config.heatmap_width
    rows = persons * rows_per_person
    keypoints = rng.uniform([4, 4], [w - 4, h - 4], size=(rows, k, 2))
    heatmaps = encode_heatmaps_batch(keypoints, np.ones((rows, k)), (h, w), config.heatmap_sigma)
    t = rng.integers(0, config.diffusion_timesteps, rows).astype(np.int64)
    x_t = schedule.add_noise(schedule.heatmaps_to_signal(heatmaps),
                             rng.standard_normal(heatmaps.shape).astype(np.float32), t)
    return schedule.signal_to_model_input(x_t).astype(np.float32), t


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


# -- export -----------------------------------------------------------------------------------

def test_export_writes_checked_graphs_and_manifest(onnx_dir, net):
    import onnx

    from diffpose_ros.assets import sha256_of

    manifest = json.loads((onnx_dir / MANIFEST_FILE).read_text())
    assert manifest['opset'] == 17 and manifest['trained'] == net[1]
    assert set(manifest['versions']) >= {'torch', 'onnx', 'onnxruntime'}
    assert (onnx_dir / MODEL_CONFIG_FILE).is_file()
    for name, entry in manifest['graphs'].items():
        path = onnx_dir / entry['file']
        assert path.name == f'{name}.onnx' and sha256_of(path) == entry['sha256']
        onnx.checker.check_model(str(path), full_check=True)
        assert entry['max_abs_error_vs_torch'] < ABS_TOL
    denoiser = manifest['graphs']['denoiser']
    assert [i['name'] for i in denoiser['inputs']] == [
        'model_input', 'f1', 'f2', 'f3', 'c1', 'c2', 'c3', *TIME_TERM_NAMES]
    assert denoiser['inputs'][1]['shape'] == ['B', 64, 16, 12]       # each row's condition
    time_terms = manifest['graphs']['time_terms']
    assert [i['name'] for i in time_terms['inputs']] == ['t']
    assert [o['name'] for o in time_terms['outputs']] == list(TIME_TERM_NAMES)
    # the denoiser takes one row of time terms (broadcast) as well as B rows
    assert {tuple(i['shape']) for i in denoiser['inputs'][7:]} >= {('R', 17, 1, 1),
                                                                  ('R', 1, 64)}
    assert [o['name'] for o in manifest['graphs']['window_encoder']['outputs']] == [
        'f1', 'f2', 'f3', 'c1', 'c2', 'c3']
    assert denoiser['inputs'][0]['shape'] == ['B', 17, 64, 48]
    assert manifest['graphs']['backbone']['outputs'][0]['shape'] == ['N', 640, 16, 12]
    assert manifest['graphs']['window_encoder']['inputs'][0]['shape'] == ['N', 'T', 640, 16, 12]


# -- parity -----------------------------------------------------------------------------------

@pytest.mark.parametrize('persons, offsets', WINDOWS)
def test_torch_and_onnxruntime_agree(torch_rt, ort_rt, persons, offsets):
    config = torch_rt.model_config
    rng = np.random.default_rng(persons)
    frames = len(offsets)
    crops = rng.random((persons * frames, 3, config.crop_height, config.crop_width),
                       dtype=np.float32)
    feats_torch = torch_rt.extract_features(crops)
    assert _max_err(feats_torch, ort_rt.extract_features(crops)) < ABS_TOL

    window = feats_torch.reshape(persons, frames, *feats_torch.shape[1:])
    offsets_arr = np.array(offsets, dtype=np.int64)
    cond_torch = torch_rt.encode_window(window, offsets_arr)
    cond_ort = ort_rt.encode_window(window, offsets_arr)
    for a, b in zip(cond_torch, cond_ort):
        assert _max_err(a.numpy(), b) < ABS_TOL

    model_input, t = _noisy_model_input(config, persons, 2, rng)
    person_index = np.repeat(np.arange(persons, dtype=np.int64), 2)       # [0, 0, 1, 1, ...]
    x0_torch = torch_rt.denoise(model_input, t, person_index, cond_torch)
    x0_ort = ort_rt.denoise(model_input, t, person_index,
                            tuple(c.numpy() for c in cond_torch))
    assert x0_ort.shape == (2 * persons, config.num_keypoints, config.heatmap_height,
                            config.heatmap_width)
    assert _max_err(x0_torch, x0_ort) < ABS_TOL
    # a sampler's step: one timestep for every row, its terms computed once and cached
    shared_t = np.full_like(t, t[0])
    x0_torch = torch_rt.denoise(model_input, shared_t, person_index, cond_torch)
    for _ in range(2):
        x0_ort = ort_rt.denoise(model_input, shared_t, person_index,
                                tuple(c.numpy() for c in cond_torch))
        assert _max_err(x0_torch, x0_ort) < ABS_TOL
    assert all(len(term) == 1 for term in ort_rt.time_terms(shared_t))
    assert int(t[0]) in ort_rt._time_term_cache


def test_condition_rows_are_selected_once_per_sampler_call(ort_rt):
    """One hypothesis: the window's arrays are fed as they are; several: the rows are indexed
    once and reused while the same condition comes back; a new window is indexed anew."""
    rng = np.random.default_rng(3)
    condition = tuple(rng.random((2, 4, 3), dtype=np.float32) for _ in range(6))
    assert all(a is b for a, b in zip(ort_rt.condition_rows(condition, np.arange(2)),
                                      condition))
    index = np.array([0, 0, 1, 1])
    rows = ort_rt.condition_rows(condition, index)
    np.testing.assert_array_equal(rows[2], condition[2][index])
    assert ort_rt.condition_rows(condition, index.copy()) is rows
    other = tuple(c.copy() + 1 for c in condition)
    again = ort_rt.condition_rows(other, index)
    assert again is not rows
    np.testing.assert_array_equal(again[0], other[0][index])
    swapped = ort_rt.condition_rows(other, np.array([1, 1, 0, 0]))
    np.testing.assert_array_equal(swapped[5], other[5][[1, 1, 0, 0]])


def test_time_term_cache_is_bounded_and_refilled(ort_rt, monkeypatch):
    """Past its bound the cache starts over, and a step still gets every timestep's terms."""
    import diffpose_ros.runtime.ort_runtime as ort_module

    monkeypatch.setattr(ort_module, 'TIME_TERM_CACHE_MAX', 3)
    ort_rt._time_term_cache.clear()
    first = ort_rt.time_terms(np.array([5, 5]))
    ort_rt.time_terms(np.array([1, 2]))
    assert set(ort_rt._time_term_cache) == {1, 2, 5}
    mixed = ort_rt.time_terms(np.array([5, 7, 5]))       # 7 overflows: cleared, 5 and 7 redone
    assert set(ort_rt._time_term_cache) == {5, 7}
    assert all(len(term) == 3 for term in mixed)
    for term, once in zip(mixed, first):
        np.testing.assert_array_equal(term[0], once[0])
        np.testing.assert_array_equal(term[2], once[0])
        assert not np.array_equal(term[1], once[0]) or not term.any()


@pytest.mark.parametrize('persons, offsets', WINDOWS)
def test_keypoints_agree_end_to_end(torch_rt, ort_rt, persons, offsets):
    """Each backend runs its own chain (features -> window -> 2-step DDIM, 2 hypotheses);
    the decoded keypoints agree in image pixels."""
    config = torch_rt.model_config
    rng = np.random.default_rng(10 + persons)
    frames = len(offsets)
    crops = rng.random((persons * frames, 3, config.crop_height, config.crop_width),
                       dtype=np.float32)
    offsets_arr = np.array(offsets, dtype=np.int64)
    schedule = DiffusionSchedule.from_config(config)
    shape = (config.num_keypoints, config.heatmap_height, config.heatmap_width)
    boxes = [[100 + 300 * n, 50, 300 + 300 * n, 650] for n in range(persons)]   # 200x600 px
    transforms = [CropTransform.from_box(box, (config.crop_height, config.crop_width),
                                         config.box_enlarge) for box in boxes]
    keypoints = {}
    for runtime in (torch_rt, ort_rt):
        features = runtime.extract_features(crops)
        condition = runtime.encode_window(
            features.reshape(persons, frames, *features.shape[1:]), offsets_arr)

        def denoise(model_input, t, person_index, runtime=runtime, condition=condition):
            return runtime.denoise(model_input, t, person_index, condition)

        result = sample_heatmaps(denoise, schedule, persons, shape, steps=2, hypotheses=2,
                                 seed=3)
        coords_hm, _ = decode_heatmaps(result.heatmaps)                 # (N, K, 2) heatmap px
        keypoints[runtime.name] = np.stack([
            tf.heatmap_to_image(coords_hm[n], config.heatmap_stride)
            for n, tf in enumerate(transforms)])
    error_px = np.abs(keypoints['torch'] - keypoints['onnxruntime']).max()
    assert error_px < KEYPOINT_TOL_IMAGE_PX


def test_new_graphs_agree_with_per_person_offsets_and_a_detector_prior(torch_rt, ort_rt):
    """Issue 10's graphs: per-person (stamp) offsets into the window encoder, and sampling from
    a detector prior at t_start with x̂0 projection, give the same keypoints in both backends."""
    config = torch_rt.model_config
    rng = np.random.default_rng(42)
    persons, frames = 3, 3
    crops = rng.random((persons * frames, 3, config.crop_height, config.crop_width),
                       dtype=np.float32)
    offsets = np.array([[-2, -1, 0], [-3, -1, 0], [-4, -2, 0]], dtype=np.int64)
    schedule = DiffusionSchedule.from_config(config)
    shape = (config.num_keypoints, config.heatmap_height, config.heatmap_width)
    prior_xy = rng.uniform(8, 40, (persons, config.num_keypoints, 2))
    prior = encode_heatmaps_batch(prior_xy, np.ones((persons, config.num_keypoints)),
                                  shape[1:], config.heatmap_sigma) * 0.8
    coords = {}
    for runtime in (torch_rt, ort_rt):
        features = runtime.extract_features(crops)
        window = features.reshape(persons, frames, *features.shape[1:])
        condition = runtime.encode_window(window, offsets)
        # per-person offsets really reach the STRL: another row gives another condition
        other = runtime.encode_window(window, np.array([[-2, -1, 0]] * 3, dtype=np.int64))
        f1 = condition[0] if runtime is ort_rt else condition[0].numpy()
        f1_other = other[0] if runtime is ort_rt else other[0].numpy()
        assert _max_err(f1[0], f1_other[0]) < 1e-6 and _max_err(f1[1], f1_other[1]) > 1e-4

        def denoise(model_input, t, person_index, runtime=runtime, condition=condition):
            return runtime.denoise(model_input, t, person_index, condition)

        result = sample_heatmaps(denoise, schedule, persons, shape, steps=2, hypotheses=1,
                                 seed=5, prior_heatmaps=prior, t_start=200,
                                 projection_sigma=config.heatmap_sigma)
        coords[runtime.name] = decode_heatmaps(result.heatmaps)[0]
    assert np.abs(coords['torch'] - coords['onnxruntime']).max() < 0.02   # heatmap px


# -- provider selection -----------------------------------------------------------------------

def test_select_providers_keeps_requested_order(tmp_path):
    names = [name for name, _ in select_providers([CUDA, TENSORRT, CPU], ALL_PROVIDERS,
                                                  tmp_path)]
    assert names == [CUDA, TENSORRT, CPU]
    names = [name for name, _ in select_providers([CPU, CUDA], ALL_PROVIDERS)]
    assert names == [CPU, CUDA]                      # CPU asked first stays first
    names = [name for name, _ in select_providers([CUDA, CUDA, CPU], ALL_PROVIDERS)]
    assert names == [CUDA, CPU]


def test_select_providers_drops_unavailable_and_says_so(caplog):
    with caplog.at_level(logging.INFO):
        selected = select_providers(ALL_PROVIDERS, [CUDA, CPU])
    assert [name for name, _ in selected] == [CUDA, CPU]
    assert TENSORRT in caplog.text
    assert select_providers([TENSORRT, CUDA], [CPU]) == [(CPU, {})]


def test_select_providers_appends_cpu_fallback():
    assert [name for name, _ in select_providers([CUDA], ALL_PROVIDERS)] == [CUDA, CPU]
    assert select_providers([], ALL_PROVIDERS) == [(CPU, {})]


@pytest.mark.parametrize('fp16', [False, True])
def test_select_providers_tensorrt_options(tmp_path, fp16):
    cache = tmp_path / 'engines' / 'nested'
    selected = dict(select_providers([TENSORRT], ALL_PROVIDERS, str(cache), fp16=fp16,
                                     device_id=1))
    options = selected[TENSORRT]
    assert cache.is_dir()
    assert options['trt_engine_cache_enable'] == 'True'
    assert options['trt_engine_cache_path'] == str(cache)
    assert options['trt_timing_cache_enable'] == 'True'
    assert options['trt_fp16_enable'] == str(fp16)
    assert options['device_id'] == '1'
    assert list(selected) == [TENSORRT, CPU]


def test_select_providers_cuda_options():
    options = dict(select_providers([CUDA, CPU], ALL_PROVIDERS, device_id=2))[CUDA]
    assert options == {'device_id': '2', 'cudnn_conv_algo_search': 'HEURISTIC'}


@pytest.mark.parametrize('requested', [['CudaExecutionProvider'], ['OpenVINOExecutionProvider',
                                                                     CPU], 'CPUExecutionProvider'])
def test_select_providers_rejects_unknown_names(requested):
    with pytest.raises(ValueError, match='provider'):
        select_providers(requested, ALL_PROVIDERS)


def test_select_providers_rejects_negative_device():
    with pytest.raises(ValueError, match='device_id'):
        select_providers([CUDA], ALL_PROVIDERS, device_id=-1)


def test_cuda_request_runs_on_cpu_and_warns(onnx_dir, caplog, ort_rt):
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        pytest.skip('this onnxruntime build has no CUDA provider (CPU-only wheel)')
    with caplog.at_level(logging.WARNING, logger='diffpose_ros.runtime.ort_runtime'):
        runtime = OrtRuntime(onnx_dir, providers=(CUDA, CPU), intra_op_threads=1)
    if runtime.providers != [CPU]:
        pytest.skip(f'a GPU is usable here ({runtime.providers}); the fallback is not exercised')
    assert runtime.provider_fallbacks == [CUDA]
    assert CUDA in caplog.text and 'CPUExecutionProvider' in caplog.text
    crops = np.random.default_rng(0).random((1, 3, 256, 192), dtype=np.float32)
    np.testing.assert_allclose(runtime.extract_features(crops), ort_rt.extract_features(crops),
                               atol=1e-5)


# -- corrupt or incomplete model directories ---------------------------------------------------

@pytest.fixture()
def model_copy(onnx_dir, tmp_path) -> Path:
    return Path(shutil.copytree(onnx_dir, tmp_path / 'model'))


def test_garbage_onnx_names_the_file(model_copy):
    (model_copy / 'denoiser.onnx').write_bytes(os.urandom(4096))
    with pytest.raises(OnnxModelError, match=r'denoiser\.onnx.*corrupt.*Re-export'):
        OrtRuntime(model_copy, providers=(CPU,))


def test_garbage_onnx_with_matching_manifest_names_the_file(model_copy):
    """Even with a manifest that vouches for it, ONNX Runtime's parse error names the file."""
    from diffpose_ros.assets import sha256_of

    path = model_copy / 'window_encoder.onnx'
    path.write_bytes(os.urandom(4096))
    manifest = json.loads((model_copy / MANIFEST_FILE).read_text())
    manifest['graphs']['window_encoder']['sha256'] = sha256_of(path)
    (model_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(OnnxModelError, match=r'window_encoder\.onnx.*Re-export'):
        OrtRuntime(model_copy, providers=(CPU,))


@pytest.mark.parametrize('missing', ['backbone.onnx', 'window_encoder.onnx', 'time_terms.onnx',
                                     MANIFEST_FILE,
                                     MODEL_CONFIG_FILE])
def test_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(OnnxModelError, match=missing.replace('.', r'\.')) as info:
        OrtRuntime(model_copy, providers=(CPU,))
    assert 'python -m diffpose_ros.runtime.export' in str(info.value)


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(OnnxModelError, match='does not exist'):
        OrtRuntime(tmp_path / 'nowhere', providers=(CPU,))


def test_graph_not_matching_model_config_is_rejected(model_copy):
    config = json.loads((model_copy / MODEL_CONFIG_FILE).read_text())
    config['num_keypoints'] = 16
    (model_copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(OnnxModelError, match=r"denoiser\.onnx: input 'model_input'.*size 17"):
        OrtRuntime(model_copy, providers=(CPU,))


# -- no package changes -----------------------------------------------------------------------

def test_export_and_inference_leave_pip_freeze_unchanged(tmp_path):
    env = dict(os.environ, PIP_NO_INDEX='1', PIP_DISABLE_PIP_VERSION_CHECK='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                        os.environ.get('PYTHONPATH')])))

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    before = run('-m', 'pip', 'freeze')
    out = tmp_path / 'model'
    run('-m', 'diffpose_ros.runtime.export', '--out', str(out))
    run('-c', 'import numpy as np\n'
              'from diffpose_ros.runtime.ort_runtime import OrtRuntime\n'
              f'rt = OrtRuntime({str(out)!r}, providers=("CPUExecutionProvider",))\n'
              'f = rt.extract_features(np.zeros((1, 3, 256, 192), np.float32))\n'
              'c = rt.encode_window(f[:, None], np.zeros(1, np.int64))\n'
              'x = rt.denoise(np.zeros((2, 17, 64, 48), np.float32), np.array([5, 5]),\n'
              '               np.array([0, 0]), c)\n'
              'assert x.shape == (2, 17, 64, 48)\n')
    assert run('-m', 'pip', 'freeze') == before


# -- factory ----------------------------------------------------------------------------------

def test_make_runtime_backends_share_the_api_and_reuse_the_export(net, tmp_path, monkeypatch):
    from diffpose_ros.model.weights import save_weights
    from diffpose_ros.runtime import export
    from diffpose_ros.runtime.factory import make_runtime

    weights = save_weights(net[0], tmp_path / 'head.safetensors')
    cache = tmp_path / 'onnx_cache'
    calls = []
    real_export = export.export_onnx

    def counting_export(*args, **kwargs):
        calls.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export, 'export_onnx', counting_export)
    ort_config = PipelineConfig(backend='onnxruntime', providers=(CPU,), intra_op_threads=1)
    first = make_runtime(ort_config, weights, onnx_cache_dir=cache)
    manifests = list(cache.glob(f'*/{MANIFEST_FILE}'))
    assert len(calls) == 1 and len(manifests) == 1
    second = make_runtime(ort_config, weights, onnx_cache_dir=cache)
    assert len(calls) == 1
    assert second.providers == [CPU] and second.trained
    # other graph code (here: a pretended edit of the model's source) never reuses the export
    from diffpose_ros.runtime import factory

    manifest = json.loads(manifests[0].read_text())
    assert manifest['graph_code_sha256'] == factory.graph_code_sha256()
    monkeypatch.setattr(factory, 'graph_code_sha256', lambda: 'f' * 64)
    make_runtime(ort_config, weights, onnx_cache_dir=cache)
    assert len(calls) == 2
    # the other code's export was used just now (another checkout may share the cache): kept
    assert len(list(cache.glob(f'*/{MANIFEST_FILE}'))) == 2
    monkeypatch.setattr(factory, 'graph_code_sha256', lambda: 'e' * 64)
    old = time.time() - (factory.STALE_EXPORT_DAYS + 1) * 86400
    os.utime(manifests[0], (old, old))                  # unused for longer than the limit
    make_runtime(ort_config, weights, onnx_cache_dir=cache)
    assert len(calls) == 3
    assert sorted(p.parent.name.rsplit('-', 1)[1] for p in cache.glob(f'*/{MANIFEST_FILE}')) \
        == ['e' * 12, 'f' * 12]                         # only the stale one was deleted

    torch_runtime = make_runtime(PipelineConfig(backend='torch'), weights)
    for runtime in (first, torch_runtime):
        for attribute in ('name', 'model_config', 'trained', 'providers', 'extract_features',
                          'encode_window', 'denoise'):
            assert hasattr(runtime, attribute), (runtime.name, attribute)
    assert (first.name, torch_runtime.name) == ('onnxruntime', 'torch')
    assert first.model_config == torch_runtime.model_config and torch_runtime.trained
    crops = np.random.default_rng(5).random((2, 3, 256, 192), dtype=np.float32)
    outputs = []
    for runtime in (first, torch_runtime):
        features = runtime.extract_features(crops)
        condition = runtime.encode_window(features[:, None], np.zeros(1, np.int64))
        outputs.append(runtime.denoise(np.full((2, 17, 64, 48), 0.5, np.float32),
                                       np.array([10, 900]), np.array([0, 1]), condition))
    assert _max_err(outputs[0], outputs[1]) < ABS_TOL


def test_graph_code_hash_follows_the_model_source(tmp_path):
    from diffpose_ros.runtime.factory import GRAPH_SOURCES, graph_code_sha256

    package = tmp_path / 'diffpose_ros'
    shutil.copytree(REPO_ROOT / 'diffpose_ros', package)
    assert graph_code_sha256(package) == graph_code_sha256(REPO_ROOT / 'diffpose_ros')
    assert 'model/*.py' in GRAPH_SOURCES
    (package / 'pipeline.py').write_text('# not graph code\n', 'utf-8')
    unchanged = graph_code_sha256(package)
    assert unchanged == graph_code_sha256(REPO_ROOT / 'diffpose_ros')
    with open(package / 'model' / 'denoiser.py', 'a') as f:
        f.write('# an edit\n')
    assert graph_code_sha256(package) != unchanged
    (package / 'runtime' / 'export.py').unlink()
    assert graph_code_sha256(package) != unchanged


def test_make_runtime_uses_a_given_onnx_dir(onnx_dir):
    from diffpose_ros.runtime.factory import make_runtime

    runtime = make_runtime(PipelineConfig(backend='onnxruntime', onnx_dir=str(onnx_dir),
                                          providers=(CPU,)))
    assert runtime.onnx_dir == onnx_dir and runtime.providers == [CPU]


def test_cuda_device_id():
    from diffpose_ros.runtime.factory import cuda_device_id

    assert [cuda_device_id(d) for d in ('cpu', 'cuda', 'cuda:3')] == [0, 0, 3]
    with pytest.raises(ValueError):
        cuda_device_id('cuda:x')
