"""MediaPipe BlazePose worker: runs inside the teacher virtualenv, never in the main one.

mediapipe pins its own numpy/OpenCV/protobuf, so it lives in a separate venv and this file is
started there by path (``python -I blazepose_worker.py ...``); it imports nothing from
diffpose_ros. Two commands:

``build-task``: add TFLite metadata to the legacy BlazePose models (shipped without it; the Tasks
API refuses float inputs without NormalizationOptions) and bundle them into a ``.task``, then load
it once to prove it works.

``serve``: load a ``.task`` into ``vision.PoseLandmarker`` (IMAGE mode, one pose) and answer
requests on stdin/stdout. Every message in both directions is one frame::

    status (1 byte) | payload length (4 bytes, little-endian uint32) | payload

Client to worker: ``I`` + ``np.save`` bytes of a uint8 (H, W, 3) RGB image; ``Q`` (empty) to
quit. Worker to client: ``R`` + JSON once the model is loaded; then per image ``O`` + ``np.save``
bytes of float32 (33, 5) [x_px, y_px, z, visibility, presence], or (0, 5) when no pose is found;
or ``E`` + a UTF-8 message for a bad request (the worker keeps serving).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import zipfile
from typing import Any, BinaryIO

HEADER = struct.Struct('<cI')  # status byte, payload length in bytes
MAX_PAYLOAD_BYTES = 1 << 30  # guards against reading garbage as a length
NUM_LANDMARKS = 33
NUM_FIELDS = 5  # x_px, y_px, z, visibility, presence

# Input normalisation of the legacy graphs (mediapipe/modules/pose_*/*.pbtxt): the detector
# takes [-1, 1], the landmark model [0, 1].
DETECTOR_NORM = ([127.5], [127.5])
LANDMARKS_NORM = ([0.0], [255.0])
DETECTOR_MEMBER = 'pose_detector.tflite'
LANDMARKS_MEMBER = 'pose_landmarks_detector.tflite'
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member dates so the same inputs give the same bytes


def _protect_stdout() -> BinaryIO:
    """Keep the real stdout for the protocol and send everything else written to fd 1 to stderr.

    Must run before mediapipe is imported: its C++ logging (glog/absl) and any stray print would
    otherwise corrupt the binary stream.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, 'wb', buffering=0)


def _quiet_logging() -> None:
    os.environ.setdefault('GLOG_minloglevel', '1')  # warnings and errors only
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        absl_logging.use_absl_handler()  # absl's handler writes to stderr
    except ImportError:
        pass


def _read_exact(stream: BinaryIO, num_bytes: int) -> bytes | None:
    """Read exactly num_bytes; None on EOF before the first byte (client closed the pipe)."""
    chunks = []
    remaining = num_bytes
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == num_bytes:
                return None
            raise EOFError(f'stdin closed mid-message ({num_bytes - remaining}/{num_bytes} B)')
        chunks.append(chunk)
        remaining -= len(chunk)
    return b''.join(chunks)


def _write_frame(stream: BinaryIO, status: bytes, payload: bytes) -> None:
    stream.write(HEADER.pack(status, len(payload)) + payload)
    stream.flush()


def _make_landmarker(task_path: str, min_detection_confidence: float, min_presence: float) -> Any:
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=task_path),
        running_mode=vision.RunningMode.IMAGE,  # crops are independent: no tracking between calls
        num_poses=1,  # crops hold one person
        min_pose_detection_confidence=min_detection_confidence,
        min_pose_presence_confidence=min_presence,
        output_segmentation_masks=False,
    )
    return vision.PoseLandmarker.create_from_options(options)


def _detect(landmarker: Any, image_rgb: Any) -> Any:
    import mediapipe as mp
    import numpy as np

    height_px, width_px = image_rgb.shape[:2]
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image_rgb))
    result = landmarker.detect(image)
    if not result.pose_landmarks:
        return np.zeros((0, NUM_FIELDS), dtype=np.float32)
    out = np.zeros((NUM_LANDMARKS, NUM_FIELDS), dtype=np.float32)
    for i, lm in enumerate(result.pose_landmarks[0][:NUM_LANDMARKS]):
        # normalised [0, 1] image coordinates -> pixels of the image that was sent
        out[i] = (lm.x * width_px, lm.y * height_px, lm.z,
                  lm.visibility if lm.visibility is not None else 0.0,
                  lm.presence if lm.presence is not None else 0.0)
    return out


def _decode_request(payload: bytes) -> Any:
    import numpy as np

    image = np.load(io.BytesIO(payload), allow_pickle=False)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f'expected a non-empty uint8 (H, W, 3) RGB image, got {image.dtype} '
                         f'{image.shape}')
    return image


def serve(args: argparse.Namespace) -> int:
    protocol_out = _protect_stdout()
    _quiet_logging()
    protocol_in = sys.stdin.buffer
    import mediapipe as mp
    import numpy as np

    landmarker = _make_landmarker(args.task, args.min_detection_confidence, args.min_presence)
    ready = {'mediapipe': getattr(mp, '__version__', 'unknown'), 'numpy': np.__version__,
             'pid': os.getpid()}
    _write_frame(protocol_out, b'R', json.dumps(ready).encode())
    try:
        while True:
            header = _read_exact(protocol_in, HEADER.size)
            if header is None:
                return 0
            status, length = HEADER.unpack(header)
            if length > MAX_PAYLOAD_BYTES:
                raise ValueError(f'request of {length} B exceeds {MAX_PAYLOAD_BYTES} B: '
                                 'protocol out of sync')
            payload = _read_exact(protocol_in, length) if length else b''
            if payload is None:
                raise EOFError('stdin closed between header and payload')
            if status == b'Q':
                return 0
            try:
                if status != b'I':
                    raise ValueError(f'unknown request type {status!r}')
                landmarks = _detect(landmarker, _decode_request(payload))
            except ValueError as exc:
                _write_frame(protocol_out, b'E', str(exc).encode())
                continue
            buffer = io.BytesIO()
            np.save(buffer, landmarks, allow_pickle=False)
            _write_frame(protocol_out, b'O', buffer.getvalue())
    finally:
        landmarker.close()  # explicit: 1.2.2's __del__ at interpreter exit raises TypeError


def _install_metadata_version_shim() -> None:
    """Provide the metadata-version extension that mediapipe 1.x wheels import but do not ship.

    ``mediapipe.tasks.python.metadata.metadata`` imports
    ``mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`` (a pybind module of the
    0.10 wheels) only to stamp ``min_parser_version`` into the metadata. The metadata written
    here uses only features of the first schema version (image input with normalisation,
    plain feature outputs; no tokenizers, tensor groups, associated files or custom metadata),
    whose minimum parser version is 1.0.0. build_task() loads the result to prove it.
    """
    import importlib.util
    import types

    name = 'mediapipe.tasks.cc.metadata.python._pywrap_metadata_version'
    if name in sys.modules:
        return
    try:
        if importlib.util.find_spec(name) is not None:
            return  # a wheel that ships the real module: use it
    except ModuleNotFoundError:
        pass
    parent = None
    parts = name.split('.')
    for depth in range(3, len(parts) + 1):  # mediapipe.tasks exists; shim from .cc down
        module_name = '.'.join(parts[:depth])
        module = sys.modules.get(module_name)
        if module is None:
            module = types.ModuleType(module_name)
            module.__path__ = []  # a package, so the next level can hang off it
            sys.modules[module_name] = module
        if parent is not None:
            setattr(parent, parts[depth - 1], module)
        parent = module
    parent.GetMinimumMetadataParserVersion = lambda metadata_buffer: '1.0.0'


def _with_metadata(model: bytes, name: str, norm_mean: list[float],
                   norm_std: list[float]) -> bytes:
    _install_metadata_version_shim()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils

    buffer = bytearray(model)
    writer = metadata_writer.MetadataWriter.create(buffer)
    writer.add_general_info(name, 'MediaPipe BlazePose (legacy model with metadata added)')
    writer.add_image_input(norm_mean=norm_mean, norm_std=norm_std)
    for output_name in writer_utils.get_output_tensor_names(buffer):
        writer.add_feature_output(name=output_name)
    model_with_metadata, _ = writer.populate()
    return bytes(model_with_metadata)


def build_task(args: argparse.Namespace) -> int:
    _protect_stdout()  # nothing is read from stdout here, but keep library chatter off it
    _quiet_logging()
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import (
        AlignZipFile,
    )

    with open(args.detector, 'rb') as f:
        detector = _with_metadata(f.read(), 'pose_detector', *DETECTOR_NORM)
    with open(args.landmarks, 'rb') as f:
        landmarks = _with_metadata(f.read(), 'pose_landmarks_detector', *LANDMARKS_NORM)
    partial = args.out + '.partial'
    # Stored (not deflated) and 4-byte aligned, as MediaPipe mmaps bundle members.
    with AlignZipFile(partial, mode='w', alignment=4) as bundle:
        for member, content in ((DETECTOR_MEMBER, detector), (LANDMARKS_MEMBER, landmarks)):
            info = zipfile.ZipInfo(member, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            bundle.writestr(info, content)

    # Load it and run once: a task that MediaPipe rejects must fail setup, not the first label.
    import numpy as np

    with _make_landmarker(partial, 0.5, 0.5) as landmarker:
        blank = _detect(landmarker, np.full((256, 256, 3), 128, dtype=np.uint8))
    if blank.shape != (0, NUM_FIELDS):
        raise RuntimeError(f'self-test: a blank grey image gave landmarks {blank.shape}')
    os.replace(partial, args.out)
    print(f'built {args.out}', file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    serve_parser = commands.add_parser('serve', help='answer landmark requests on stdin/stdout')
    serve_parser.add_argument('--task', required=True, help='pose_landmarker .task bundle')
    serve_parser.add_argument('--min-detection-confidence', type=float, default=0.5)
    serve_parser.add_argument('--min-presence', type=float, default=0.5)
    build_parser = commands.add_parser('build-task', help='bundle legacy models into a .task')
    build_parser.add_argument('--detector', required=True, help='pose_detection.tflite')
    build_parser.add_argument('--landmarks', required=True, help='pose_landmark_full.tflite')
    build_parser.add_argument('--out', required=True, help='output .task path')
    args = parser.parse_args(argv)
    return serve(args) if args.command == 'serve' else build_task(args)


if __name__ == '__main__':
    sys.exit(main())
