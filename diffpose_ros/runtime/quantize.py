"""INT8 graphs for the ONNX Runtime CPU provider (``quantization: int8_encoder | int8``).

Why: on a 2-core CPU the window encoder (a 4-block transformer, MatMul-bound) and the backbone
(convolutions on every crop) are most of the pose stage; x86 CPUs with AVX-512 VNNI / AVX-VNNI
(and ARM with dot-product instructions) run int8 MatMul and Conv much faster than float32.

What is quantised, with ``onnxruntime.quantization`` (the maintained ONNX Runtime tool):

- ``window_encoder`` (both modes): dynamic quantisation of its MatMul/Gemm weights (int8, per
  tensor); activations are quantised on the fly, so it needs no calibration;
- ``backbone`` (``int8`` only): static QDQ quantisation, weights int8 per output channel,
  activations uint8 with ranges calibrated on real person crops: the bundled sample video's
  training frames (``vtest.avi`` 0-599; frames 600+ stay held out) run through the float32
  pipeline with the real detector, so the crops are exactly what the node feeds the backbone;
- ``denoiser``: kept in float32. Measured on the 2-core machine, both dynamic and static int8
  made it slower (its convolutions are small and depthwise), and it is what every denoising
  step runs.

The quantised directory (``<float32 export>-<mode>``) has the same graph names, model config
and manifest format as the float32 export (so
:class:`~diffpose_ros.runtime.ort_runtime.OrtRuntime` loads it unchanged), with a
``quantization`` section in the manifest naming the method and the calibration data. Accuracy
against float32 is measured in ``docs/model.md`` (paired, the same persons).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.runtime.ort_runtime import (
    BACKBONE,
    DENOISER,
    MANIFEST_FILE,
    TIME_TERMS,
    WINDOW_ENCODER,
)

LOGGER = logging.getLogger(__name__)

# int8_encoder: only the window encoder (accuracy unchanged within noise, docs/model.md);
# int8: window encoder and backbone (faster, measurably less accurate); config.QUANTIZATION_MODES
QUANTIZED_GRAPHS = {'int8_encoder': (WINDOW_ENCODER,), 'int8': (WINDOW_ENCODER, BACKBONE)}
# vtest.avi frames 600-794 are the video test split (evaluation, pseudo-label tools)
CALIBRATION_LAST_FRAME = 599
DEFAULT_CALIBRATION_FRAMES = 60
# vtest.avi's walkers are small: YOLO11n-pose finds few of them at 640 (the demo runs 1280)
CALIBRATION_DETECTOR_IMGSZ = 1280
# activation ranges clip the top 0.01 %: measured on real crops, 6.3 % mean relative feature
# error against 7.4 % for MinMax (whose ranges a few outliers stretch)
CALIBRATION_PERCENTILE = 99.99
# ONNX Runtime's default would also treat Erf/Softmax inputs; MatMul/Gemm are where the time is
DYNAMIC_OP_TYPES = ('MatMul', 'Gemm')


class CropRecorder:
    """A :class:`PoseRuntime` wrapper that keeps every batch of crops the pipeline sends to
    the backbone (the calibration inputs), delegating everything else."""

    def __init__(self, runtime: Any):
        self._runtime = runtime
        self.crops: list[np.ndarray] = []

    def __getattr__(self, name: str) -> Any:
        if name == '_runtime':
            raise AttributeError(name)
        return getattr(self._runtime, name)

    def extract_features(self, crops: np.ndarray) -> np.ndarray:
        self.crops.extend(np.array(c, np.float32) for c in crops)
        return self._runtime.extract_features(crops)


def calibration_crops(fp32_dir: str | Path, detector: Any | None = None,
                      video_path: str | Path | None = None,
                      num_frames: int = DEFAULT_CALIBRATION_FRAMES,
                      max_crops: int = 256) -> np.ndarray:
    """Real backbone inputs (M, 3, Hc, Wc): ``num_frames`` frames spread over vtest.avi's
    training part, through the float32 pipeline (real detector, tracker and crops)."""
    import cv2

    from diffpose_ros.config import PipelineConfig
    from diffpose_ros.pipeline import PosePipeline
    from diffpose_ros.runtime.ort_runtime import OrtRuntime

    if num_frames < 1:
        raise ValueError(f'num_frames must be >= 1, got {num_frames}')
    if video_path is None:
        from diffpose_ros.assets import VTEST_VIDEO, asset_path

        video_path = asset_path(VTEST_VIDEO)
    config = PipelineConfig(backend='onnxruntime', onnx_dir=str(fp32_dir),
                            detector_imgsz=CALIBRATION_DETECTOR_IMGSZ)
    if detector is None:
        from diffpose_ros.detection import UltralyticsPoseDetector

        detector = UltralyticsPoseDetector.from_config(config)
    recorder = CropRecorder(OrtRuntime(fp32_dir))
    pipeline = PosePipeline(config, recorder, detector)
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        raise FileNotFoundError(f'cannot open the calibration video {video_path}')
    wanted = set(np.linspace(0, CALIBRATION_LAST_FRAME, num_frames).round().astype(int))
    try:
        for index in range(CALIBRATION_LAST_FRAME + 1):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                pipeline.reset()  # frames far apart: no tracks across them
                pipeline.process(frame, index * 40_000_000)
    finally:
        capture.release()
    if not recorder.crops:
        raise RuntimeError(f'no person crops in the calibration frames of {video_path}')
    crops = np.stack(recorder.crops)
    if len(crops) > max_crops:  # evenly thinned: calibration time grows with the crop count
        crops = crops[np.linspace(0, len(crops) - 1, max_crops).round().astype(int)]
    return crops


class _CropReader:
    """``CalibrationDataReader`` over crops, one per run: the percentile calibrator stacks the
    runs' outputs and needs equal batch sizes."""

    def __init__(self, crops: np.ndarray, batch: int = 1):
        self._batches = iter([{'crops': crops[i:i + batch]} for i in range(0, len(crops), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _preprocess(source: Path, target: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # the graphs have dynamic batch dims; ONNX shape inference suffices for quantisation
    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def denoiser_term_nodes(window_encoder: str | Path) -> list[str]:
    """Names of the nodes that only compute the denoiser's fusion terms (c1, c2, c3) in the
    window encoder graph: they were float32 in the denoiser and stay so (the int8 mode
    quantises the STRL, whose MatMuls are where the time is)."""
    import onnx

    graph = onnx.load(str(window_encoder)).graph
    producer = {out: node for node in graph.node for out in node.output}

    def ancestors(names: list[str]) -> set[str]:
        seen: set[str] = set()  # by first output: node names may be empty
        stack = list(names)
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.output[0] not in seen:
                seen.add(node.output[0])
                stack.extend(node.input)
        return seen

    outputs = [o.name for o in graph.output]
    terms = ancestors([o for o in outputs if o.startswith('c')])
    terms -= ancestors([o for o in outputs if o.startswith('f')])
    return sorted(producer[out].name for out in terms if producer[out].name)


def quantize_graphs(fp32_dir: str | Path, out_dir: str | Path, mode: str,
                    crops: np.ndarray | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the ``mode`` export of ``fp32_dir`` into ``out_dir`` (a new or empty directory);
    ``crops`` (real backbone inputs) are needed when the backbone is quantised.

    Returns the manifest's ``quantization`` section.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from diffpose_ros.runtime.ort_runtime import _sha256

    if mode not in QUANTIZED_GRAPHS:
        raise ValueError(f'mode must be one of {sorted(QUANTIZED_GRAPHS)}, got {mode!r}')
    graphs = QUANTIZED_GRAPHS[mode]
    fp32_dir, out_dir = Path(fp32_dir), Path(out_dir)
    if BACKBONE in graphs:
        crops = np.asarray(crops if crops is not None else np.zeros(0), np.float32)
        if crops.ndim != 4 or len(crops) == 0:
            raise ValueError('quantising the backbone needs a non-empty (M, 3, Hc, Wc) crops '
                             f'array, got shape {crops.shape}')
    out_dir.mkdir(parents=True, exist_ok=True)
    say = progress or LOGGER.info
    section: dict[str, Any] = {'mode': mode, 'float32_export': fp32_dir.name}
    with tempfile.TemporaryDirectory(prefix='diffpose-int8-') as work:
        work = Path(work)
        say('int8: window encoder (dynamic, MatMul/Gemm weights)')
        _preprocess(fp32_dir / f'{WINDOW_ENCODER}.onnx', work / 'window_encoder.pre.onnx')
        quantize_dynamic(str(work / 'window_encoder.pre.onnx'),
                         str(out_dir / f'{WINDOW_ENCODER}.onnx'), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(DYNAMIC_OP_TYPES),
                         nodes_to_exclude=denoiser_term_nodes(work / 'window_encoder.pre.onnx'))
        section[WINDOW_ENCODER] = ('dynamic int8: MatMul/Gemm weights per tensor, activations '
                                   'quantised at run time')
        if BACKBONE in graphs:
            say(f'int8: backbone (static QDQ, calibrated on {len(crops)} real crops)')
            _preprocess(fp32_dir / f'{BACKBONE}.onnx', work / 'backbone.pre.onnx')
            quantize_static(str(work / 'backbone.pre.onnx'), str(out_dir / f'{BACKBONE}.onnx'),
                            _CropReader(crops), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={'CalibPercentile': CALIBRATION_PERCENTILE})
            section[BACKBONE] = ('static QDQ: int8 weights per channel, uint8 activations, '
                                 f'{CALIBRATION_PERCENTILE} percentile calibration')
            section['calibration'] = {
                'source': f'vtest.avi frames 0-{CALIBRATION_LAST_FRAME} through the float32 '
                          'pipeline', 'crops': int(len(crops))}
    for graph in (BACKBONE, TIME_TERMS, DENOISER):
        if graph not in graphs:
            shutil.copy2(fp32_dir / f'{graph}.onnx', out_dir / f'{graph}.onnx')
            section[graph] = 'float32'
    shutil.copy2(fp32_dir / 'model_config.json', out_dir / 'model_config.json')
    manifest = json.loads((fp32_dir / MANIFEST_FILE).read_text())
    for graph, entry in manifest['graphs'].items():
        path = out_dir / str(entry.get('file', f'{graph}.onnx'))
        entry['sha256'] = _sha256(path)
        entry['bytes'] = path.stat().st_size
    manifest['quantization'] = section
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + '\n')
    return section


def is_quantized_export(directory: str | Path, fp32_manifest: dict[str, Any], mode: str) -> bool:
    """A complete ``mode`` export made from exactly this float32 export."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return False
    section = manifest.get('quantization') if isinstance(manifest, dict) else None
    same_source = all(manifest.get(k) == fp32_manifest.get(k)
                      for k in ('format', 'weights', 'graph_code_sha256'))
    return (isinstance(section, dict) and section.get('mode') == mode and same_source
            and all((directory / str(e.get('file', f'{g}.onnx'))).is_file()
                    for g, e in manifest.get('graphs', {}).items()))


def ensure_quantized_export(fp32_dir: str | Path, mode: str, crops: np.ndarray | None = None,
                            force: bool = False) -> Path:
    """``<fp32_dir>-<mode>``: the quantised export of a float32 export directory, made on first
    use (seconds for the window encoder; about a minute with the backbone's calibration)."""
    if mode not in QUANTIZED_GRAPHS:
        raise ValueError(f'mode must be one of {sorted(QUANTIZED_GRAPHS)}, got {mode!r}')
    fp32_dir = Path(fp32_dir)
    target = fp32_dir.with_name(f'{fp32_dir.name}-{mode}')
    fp32_manifest = json.loads((fp32_dir / MANIFEST_FILE).read_text())
    if not force and is_quantized_export(target, fp32_manifest, mode):
        try:
            os.utime(target / MANIFEST_FILE)  # last use, for factory._remove_stale_exports
        except OSError:
            pass                              # a read-only cache still works
        return target
    LOGGER.info('quantising %s (%s) into %s (once per export)', fp32_dir, mode, target)
    if crops is None and BACKBONE in QUANTIZED_GRAPHS[mode]:
        crops = calibration_crops(fp32_dir)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}.', dir=target.parent))
    try:
        quantize_graphs(fp32_dir, staging, mode, crops)
        if not force and is_quantized_export(target, fp32_manifest, mode):
            return target  # another process (e.g. a second node) made it meanwhile
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.replace(target)
        except OSError:
            if not is_quantized_export(target, fp32_manifest, mode):  # not another process's
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def relative_error(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Mean |difference| over mean |reference|, pooled over outputs (int8 vs float32)."""
    num = sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum()) for a, b in zip(reference, other))
    den = sum(float(np.abs(np.asarray(a)).sum()) for a in reference)
    return num / den if den > 0 else 0.0
