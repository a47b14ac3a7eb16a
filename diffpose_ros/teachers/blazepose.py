"""MediaPipe BlazePose as a single-person pseudo-labelling teacher, run out of process.

mediapipe pins its own numpy, OpenCV and protobuf, which must never enter the main venv (numpy 2,
exactly one OpenCV). So ``ensure_blazepose_env()`` builds a separate virtualenv with
``mediapipe==1.2.2`` plus a ``pose_landmarker_full.task`` made from the BlazePose models of the
``mediapipe==0.10.21`` wheel (1.x wheels ship no models), and ``BlazePoseTeacher`` talks to
``blazepose_worker.py`` running in that venv over stdin/stdout. This module needs only the
stdlib and numpy.

Typical use::

    with BlazePoseTeacher() as teacher:         # sets the env up on first use (~20-30 s)
        landmarks = teacher.landmarks(crop_rgb)  # (33, 5) or None
        if landmarks is not None:
            keypoints = to_coco17(landmarks)     # (17, 3) [x_px, y_px, confidence]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

# --- What the teacher env contains ---

MEDIAPIPE_VERSION = '1.2.2'  # Tasks API runtime; numpy 2 compatible; ships no models
MODEL_WHEEL_VERSION = '0.10.21'  # last legacy wheel; its BlazePose .tflite files are the models
# The wheel is only a data archive here: the .tflite files are architecture independent and
# sha256-checked, so the x86_64 cp311 wheel serves every host (0.10.21 has no cp311 aarch64
# wheel; mediapipe 1.2.2 itself has x86_64 and aarch64 wheels).
MODEL_WHEEL_TAGS = ('--python-version', '3.11', '--implementation', 'cp', '--abi', 'cp311',
                    '--platform', 'manylinux_2_28_x86_64')
# Everything `pip install mediapipe==1.2.2` resolved to on Python 3.11 (November 2026). Passed as
# constraints (-c) so the env is reproducible; a package a platform does not need is skipped.
TEACHER_CONSTRAINTS = (
    'absl-py==2.5.1', 'certifi==2026.10.18', 'cffi==2.1.1', 'contourpy==1.3.3', 'cycler==0.12.1',
    'flatbuffers==25.12.19', 'fonttools==4.68.0', 'kiwisolver==1.5.1', 'matplotlib==3.11.2',
    f'mediapipe=={MEDIAPIPE_VERSION}', 'numpy==2.4.6', 'opencv-contrib-python==5.0.0.93',
    'packaging==26.3', 'pillow==13.0.0', 'pycparser==3.12', 'pyparsing==3.3.3',
    'python-dateutil==4.0.0', 'sounddevice==0.5.6', 'tzdata==2026.6',
)
TEACHER_PYTHON_VERSION = (3, 11)  # the constraints above were resolved for it (numpy 2.4 >= 3.11)
BUILD_FORMAT = 1  # bump when the .task recipe in blazepose_worker.py changes


@dataclasses.dataclass(frozen=True)
class ModelFile:
    member: str  # path inside the mediapipe 0.10.21 wheel
    filename: str
    sha256: str
    size_bytes: int


POSE_DETECTOR = ModelFile(
    member='mediapipe/modules/pose_detection/pose_detection.tflite',
    filename='pose_detection.tflite',
    sha256='9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c',
    size_bytes=2_959_046,
)
POSE_LANDMARKS_FULL = ModelFile(
    member='mediapipe/modules/pose_landmark/pose_landmark_full.tflite',
    filename='pose_landmark_full.tflite',
    sha256='e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f',
    size_bytes=6_440_512,
)
TASK_FILENAME = 'pose_landmarker_full.task'
VENV_DIRNAME = 'mediapipe-venv'
MODELS_DIRNAME = 'blazepose'
MARKER_FILENAME = 'blazepose-env.json'
WORKER_PATH = Path(__file__).resolve().with_name('blazepose_worker.py')

SETUP_COMMAND = 'python3 scripts/setup_blazepose_teacher.py'
PIP_TIMEOUT_S = 1800.0
BUILD_TIMEOUT_S = 300.0

# --- Landmark layout ---

NUM_LANDMARKS = 33
NUM_FIELDS = 5  # x_px, y_px, z (relative depth, hip-centred, ~x scale), visibility, presence
# BlazePose index of each COCO-17 keypoint: nose, eyes, ears, shoulders, elbows, wrists, hips,
# knees, ankles (left before right, as in COCO).
BLAZEPOSE_TO_COCO17: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26,
                                        27, 28)

# --- Worker protocol (mirrors blazepose_worker.py, which cannot import this module) ---

HEADER = struct.Struct('<cI')  # status byte, payload length in bytes
MAX_REPLY_BYTES = 1 << 20  # a (33, 5) float32 reply is ~800 B; anything huge is a desync
STDERR_TAIL_BYTES = 3000


class TeacherUnavailable(RuntimeError):
    """The teacher env cannot be set up or the worker cannot start (the message names the fix)."""


class TeacherWorkerError(RuntimeError):
    """The running worker died, hung or broke the protocol; the teacher is closed."""


@dataclasses.dataclass(frozen=True)
class BlazePoseEnv:
    python_path: Path  # the teacher venv's interpreter
    task_path: Path  # pose_landmarker_full.task


def to_coco17(landmarks33: np.ndarray) -> np.ndarray:
    """Map BlazePose landmarks to COCO-17 keypoints.

    Args:
        landmarks33: (33, 5) [x_px, y_px, z, visibility, presence] as from
            ``BlazePoseTeacher.landmarks``.

    Returns:
        (17, 3) float32 [x_px, y_px, confidence], confidence = min(visibility, presence)
        clipped to [0, 1].
    """
    landmarks33 = np.asarray(landmarks33, dtype=np.float32)
    if landmarks33.shape != (NUM_LANDMARKS, NUM_FIELDS):
        raise ValueError(f'expected ({NUM_LANDMARKS}, {NUM_FIELDS}) landmarks, got '
                         f'{landmarks33.shape}')
    selected = landmarks33[list(BLAZEPOSE_TO_COCO17)]
    keypoints = np.empty((len(BLAZEPOSE_TO_COCO17), 3), dtype=np.float32)
    keypoints[:, :2] = selected[:, :2]
    keypoints[:, 2] = np.clip(np.minimum(selected[:, 3], selected[:, 4]), 0.0, 1.0)
    return keypoints


# --- Environment setup ---


# People in vtest are 50-120 px tall: BlazePose sees them upscaled to this crop.
PERSON_CROP_HW = (384, 288)


def keypoints_in_box(teacher: BlazePoseTeacher, image_bgr: np.ndarray, box_xyxy: np.ndarray,
                     crop_hw: tuple[int, int] = PERSON_CROP_HW, enlarge: float = 1.25,
                     ) -> np.ndarray | None:
    """BlazePose on one person's box: (17, 3) COCO-17 x, y (image px), confidence, or None."""
    from diffpose_ros.codec import CropTransform

    transform = CropTransform.from_box(box_xyxy, crop_hw=crop_hw, enlarge=enlarge)
    crop_rgb = np.ascontiguousarray(transform.warp(image_bgr)[..., ::-1])
    landmarks = teacher.landmarks(crop_rgb)
    if landmarks is None:
        return None
    coco = to_coco17(landmarks).astype(np.float64)
    coco[:, :2] = transform.crop_to_image(coco[:, :2])
    return coco


def default_cache_dir() -> Path:
    from diffpose_ros.assets import cache_dir  # lazy: keep this module importable standalone

    return cache_dir() / 'teachers'


def _sha256_of(path: Path) -> str:
    from diffpose_ros.assets import sha256_of  # stdlib-only module

    return sha256_of(path)


def _spec() -> dict[str, Any]:
    """Everything the env depends on; a marker with a different spec triggers a rebuild."""
    return {
        'build_format': BUILD_FORMAT,
        'mediapipe': MEDIAPIPE_VERSION,
        'constraints': list(TEACHER_CONSTRAINTS),
        'model_wheel': f'mediapipe=={MODEL_WHEEL_VERSION}',
        'models': {m.filename: m.sha256 for m in (POSE_DETECTOR, POSE_LANDMARKS_FULL)},
    }


def _venv_python(venv_dir: Path) -> Path:
    return venv_dir / 'bin' / 'python'


def _find_base_python() -> Path:
    """A real (non-venv) Python 3.11 to create the teacher venv with.

    The base interpreter of the running Python if it is 3.11 (so the teacher matches the main
    venv), else ``python3.11`` on PATH.
    """
    if sys.version_info[:2] == TEACHER_PYTHON_VERSION:
        base = getattr(sys, '_base_executable', None) or sys.executable
        return Path(base).resolve()
    found = shutil.which('python{}.{}'.format(*TEACHER_PYTHON_VERSION))
    if found:
        return Path(found).resolve()
    raise TeacherUnavailable(
        'BlazePose teacher needs Python {}.{} (its pinned mediapipe/numpy set was resolved for '
        'it); this is Python {}.{} and no python{}.{} is on PATH. Install Python 3.11 and re-run '
        '{}.'.format(*TEACHER_PYTHON_VERSION, *sys.version_info[:2], *TEACHER_PYTHON_VERSION,
                     SETUP_COMMAND))


def _check_platform() -> None:
    machine = platform.machine().lower()
    if sys.platform != 'linux' or machine not in ('x86_64', 'amd64', 'aarch64', 'arm64'):
        raise TeacherUnavailable(
            f'BlazePose teacher supports Linux x86_64/aarch64 (mediapipe {MEDIAPIPE_VERSION} '
            f'manylinux wheels); this is {sys.platform} {machine}.')


def _run_step(step: str, cmd: list[str], timeout_s: float, cwd: Path | None = None) -> str:
    """Run one setup command; any failure becomes TeacherUnavailable naming the step."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TeacherUnavailable(
            f'BlazePose setup step "{step}" timed out after {timeout_s:.0f} s: {" ".join(cmd)}. '
            f'Check network access to the package index, then re-run {SETUP_COMMAND}.') from None
    except OSError as exc:
        raise TeacherUnavailable(f'BlazePose setup step "{step}" could not start '
                                 f'{cmd[0]}: {exc}. Re-run {SETUP_COMMAND}.') from exc
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-1500:]
        raise TeacherUnavailable(
            f'BlazePose setup step "{step}" failed (exit {proc.returncode}): '
            f'{" ".join(cmd)}\n{output}\nFix the cause above (pip needs the package index; venv '
            f'needs the python3.11-venv package on Debian), then re-run {SETUP_COMMAND}.')
    return proc.stdout


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise setup across processes (parallel test workers, several nodes)."""
    import fcntl

    with open(lock_path, 'a+b') as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _marker_valid(cache_dir: Path, env: BlazePoseEnv) -> bool:
    marker = cache_dir / MARKER_FILENAME
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    dist_info = (env.python_path.parent.parent / 'lib' /
                 'python{}.{}'.format(*TEACHER_PYTHON_VERSION) / 'site-packages' /
                 f'mediapipe-{MEDIAPIPE_VERSION}.dist-info')
    return (recorded.get('spec') == _spec()
            and env.python_path.exists()  # follows the symlink: base Python still installed
            and dist_info.is_dir()
            and env.task_path.is_file()
            and _sha256_of(env.task_path) == recorded.get('task_sha256'))


def _extract_models(wheel: Path, models_dir: Path) -> dict[str, Path]:
    paths = {}
    with zipfile.ZipFile(wheel) as zf:
        for model in (POSE_DETECTOR, POSE_LANDMARKS_FULL):
            dest = models_dir / model.filename
            partial = dest.with_suffix('.partial')
            with zf.open(model.member) as src, open(partial, 'wb') as out:
                shutil.copyfileobj(src, out)
            actual = _sha256_of(partial)
            if actual != model.sha256:
                partial.unlink()
                raise TeacherUnavailable(
                    f'BlazePose setup step "extract models": {model.member} in {wheel.name} has '
                    f'sha256 {actual}, expected {model.sha256}; the wheel on the index changed. '
                    'Update POSE_DETECTOR/POSE_LANDMARKS_FULL only after checking the new file.')
            os.replace(partial, dest)
            paths[model.filename] = dest
    return paths


def _build(cache_dir: Path, env: BlazePoseEnv, log: Callable[[str], None]) -> None:
    venv_dir = env.python_path.parent.parent
    models_dir = env.task_path.parent
    timings_s = {}

    def step_start(message: str) -> float:
        log(f'[blazepose] {message}')
        return time.monotonic()

    started = step_start(f'creating {venv_dir}')
    base_python = _find_base_python()
    if venv_dir.exists():
        shutil.rmtree(venv_dir)  # stale or half-built: start clean rather than patch it
    _run_step('create venv', [str(base_python), '-I', '-m', 'venv', str(venv_dir)], 300.0)
    timings_s['venv'] = time.monotonic() - started

    started = step_start(f'installing mediapipe=={MEDIAPIPE_VERSION} (pinned, wheels only)')
    constraints = cache_dir / 'blazepose-constraints.txt'
    constraints.write_text('\n'.join(TEACHER_CONSTRAINTS) + '\n')
    pip = [str(env.python_path), '-I', '-m', 'pip']
    _run_step('pip install mediapipe',
              pip + ['install', '--disable-pip-version-check', '--no-input',
                     '--only-binary=:all:', '-c', str(constraints),
                     f'mediapipe=={MEDIAPIPE_VERSION}'], PIP_TIMEOUT_S)
    timings_s['install'] = time.monotonic() - started

    started = step_start(f'downloading mediapipe=={MODEL_WHEEL_VERSION} for its pose models')
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='diffpose-blazepose-', dir=cache_dir) as tmp:
        _run_step('pip download model wheel',
                  pip + ['download', '--disable-pip-version-check', '--no-input', '--no-deps',
                         '--only-binary=:all:', *MODEL_WHEEL_TAGS, '-d', tmp,
                         f'mediapipe=={MODEL_WHEEL_VERSION}'], PIP_TIMEOUT_S)
        wheels = sorted(Path(tmp).glob(f'mediapipe-{MODEL_WHEEL_VERSION}-*.whl'))
        if not wheels:
            raise TeacherUnavailable(f'BlazePose setup step "pip download model wheel": no '
                                     f'mediapipe-{MODEL_WHEEL_VERSION} wheel in {tmp}. '
                                     f'Re-run {SETUP_COMMAND}.')
        models = _extract_models(wheels[0], models_dir)
    timings_s['models'] = time.monotonic() - started

    started = step_start(f'building {env.task_path.name} (TFLite metadata + bundle, self-test)')
    _run_step('build task',
              [str(env.python_path), '-I', str(WORKER_PATH), 'build-task',
               '--detector', str(models[POSE_DETECTOR.filename]),
               '--landmarks', str(models[POSE_LANDMARKS_FULL.filename]),
               '--out', str(env.task_path)], BUILD_TIMEOUT_S)
    timings_s['task'] = time.monotonic() - started

    marker = {'spec': _spec(), 'task_sha256': _sha256_of(env.task_path),
              'python': str(_find_base_python()),
              'built_unix_s': round(time.time(), 3),
              'timings_s': {k: round(v, 2) for k, v in timings_s.items()}}
    partial = cache_dir / (MARKER_FILENAME + '.partial')
    partial.write_text(json.dumps(marker, indent=2) + '\n')
    os.replace(partial, cache_dir / MARKER_FILENAME)  # written last: its presence means done


def ensure_blazepose_env(cache_dir: Path | None = None,
                         log: Callable[[str], None] = print) -> BlazePoseEnv:
    """Set up (once) the separate mediapipe virtualenv and the BlazePose ``.task``.

    Idempotent: when the marker file matches the pinned versions and the task's sha256, returns
    at once (tens of ms); otherwise rebuilds from scratch (~20-30 s with a reachable index).

    Args:
        cache_dir: Where the venv, models and marker live; default
            ``diffpose_ros.assets.cache_dir() / 'teachers'``.
        log: Receives one progress line per setup step.

    Raises:
        TeacherUnavailable: A step failed; the message names the step and how to retry.
    """
    _check_platform()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir = cache_dir.expanduser().resolve()
    env = BlazePoseEnv(python_path=_venv_python(cache_dir / VENV_DIRNAME),
                       task_path=cache_dir / MODELS_DIRNAME / TASK_FILENAME)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TeacherUnavailable(f'cannot create the teacher cache {cache_dir}: {exc}') from exc
    with _locked(cache_dir / '.blazepose.lock'):
        if _marker_valid(cache_dir, env):
            return env
        (cache_dir / MARKER_FILENAME).unlink(missing_ok=True)
        started = time.monotonic()
        try:
            _build(cache_dir, env, log)
        except TeacherUnavailable:
            raise
        except (OSError, zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise TeacherUnavailable(f'BlazePose setup failed: {type(exc).__name__}: {exc}. '
                                     f'Re-run {SETUP_COMMAND}.') from exc
        log(f'[blazepose] ready in {time.monotonic() - started:.1f} s: {env.task_path}')
    return env


# --- Client ---


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault('GLOG_minloglevel', '1')  # MediaPipe's C++ INFO lines only fill the log
    return env


class BlazePoseTeacher:
    """BlazePose "full" landmarks for single-person crops, computed in the teacher venv.

    Args:
        env: From ``ensure_blazepose_env()``; None sets it up (or finds it) in the default cache.
        min_detection_confidence: BlazePose person-detector score threshold.
        min_presence: Landmark-model pose presence threshold.
        startup_timeout_s: Time allowed for the worker to load the model.
        call_timeout_s: Time allowed per image; a worker exceeding it is killed.

    Raises:
        TeacherUnavailable: The env cannot be set up or the worker does not start.

    Thread-safe (one request at a time); use as a context manager or call ``close()``.
    """

    def __init__(self, env: BlazePoseEnv | None = None, min_detection_confidence: float = 0.5,
                 min_presence: float = 0.5, startup_timeout_s: float = 120.0,
                 call_timeout_s: float = 60.0) -> None:
        for name, value in (('min_detection_confidence', min_detection_confidence),
                            ('min_presence', min_presence)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        self.env = env if env is not None else ensure_blazepose_env()
        if not self.env.task_path.is_file():
            raise TeacherUnavailable(f'BlazePose task {self.env.task_path} is missing. '
                                     f'{self._rebuild_hint()}')
        self.call_timeout_s = float(call_timeout_s)
        self._lock = threading.Lock()
        self._closed = False
        # A file, not a pipe: nobody has to drain it, so a chatty worker cannot block.
        self._stderr_log: IO[bytes] = tempfile.TemporaryFile(prefix='blazepose-worker-')
        cmd = [str(self.env.python_path), '-I', str(WORKER_PATH), 'serve',
               '--task', str(self.env.task_path),
               '--min-detection-confidence', repr(float(min_detection_confidence)),
               '--min-presence', repr(float(min_presence))]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr_log, env=_worker_env(), bufsize=0)
        except OSError as exc:
            self._stderr_log.close()
            self._closed = True
            raise TeacherUnavailable(f'cannot start the BlazePose worker {cmd[0]}: {exc}. '
                                     f'{self._rebuild_hint()}') from exc
        # Non-blocking pipes + select(): every read and write has a deadline, so a dead or
        # stuck worker raises instead of hanging the caller.
        os.set_blocking(self._proc.stdin.fileno(), False)
        os.set_blocking(self._proc.stdout.fileno(), False)
        try:
            status, payload = self._read_frame(startup_timeout_s)
            if status != b'R':
                raise TeacherWorkerError(f'expected a ready message, got {status!r}')
            self.worker_info: dict[str, Any] = json.loads(payload)
        except TeacherWorkerError as exc:
            self._shutdown(kill=True)
            raise TeacherUnavailable(f'BlazePose worker failed to start: {exc}\n'
                                     f'{self._rebuild_hint()}') from None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def landmarks(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """BlazePose landmarks of the one person in an RGB image.

        Args:
            image_rgb: (H, W, 3) uint8 RGB (not BGR) crop around one person.

        Returns:
            (33, 5) float32 [x_px, y_px, z, visibility, presence] in pixels of ``image_rgb``
            (x right, y down, origin at the top-left corner), or None if no pose was found.

        Raises:
            ValueError: ``image_rgb`` is not a non-empty (H, W, 3) uint8 array.
            TeacherWorkerError: The teacher is closed, or its worker died or timed out.
        """
        if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 \
                or image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or 0 in image_rgb.shape:
            shape = getattr(image_rgb, 'shape', None)
            dtype = getattr(image_rgb, 'dtype', type(image_rgb).__name__)
            raise ValueError(f'image_rgb must be a non-empty uint8 (H, W, 3) array, got '
                             f'{dtype} {shape}')
        request = io.BytesIO()
        np.save(request, image_rgb, allow_pickle=False)
        with self._lock:
            if self._closed:
                raise TeacherWorkerError('BlazePoseTeacher is closed')
            self._write_frame(b'I', request.getvalue(), self.call_timeout_s)
            status, payload = self._read_frame(self.call_timeout_s)
            if status == b'E':
                reason = payload.decode(errors='replace')
                raise ValueError(f'BlazePose worker rejected the image: {reason}')
            if status != b'O':
                self._fail(f'unexpected reply type {status!r}')
            try:
                landmarks = np.load(io.BytesIO(payload), allow_pickle=False)
            except ValueError as exc:
                self._fail(f'unreadable reply: {exc}')
            if landmarks.shape == (0, NUM_FIELDS):
                return None
            if landmarks.shape != (NUM_LANDMARKS, NUM_FIELDS):
                self._fail(f'unexpected reply shape {landmarks.shape}')
            return landmarks.astype(np.float32, copy=False)

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._write_frame(b'Q', b'', timeout_s=2.0)
            except TeacherWorkerError:
                pass  # already dead or stuck: _shutdown kills it
            self._shutdown(kill=False)

    def __enter__(self) -> BlazePoseTeacher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not getattr(self, '_closed', True):
                self._shutdown(kill=True)

    # -- internals --

    def _rebuild_hint(self) -> str:
        venv_dir = self.env.python_path.parent.parent
        if venv_dir.name != VENV_DIRNAME:  # not made by ensure_blazepose_env: never suggest rm
            return (f'Use the BlazePoseEnv returned by ensure_blazepose_env() (python_path '
                    f'{self.env.python_path} is not a teacher venv).')
        marker = venv_dir.parent / MARKER_FILENAME
        return (f'If the teacher env is damaged, delete {marker} and re-run {SETUP_COMMAND} '
                '(it rebuilds the env).')

    def _stderr_tail(self) -> str:
        try:
            self._stderr_log.flush()
            size = self._stderr_log.seek(0, os.SEEK_END)
            self._stderr_log.seek(max(0, size - STDERR_TAIL_BYTES))
            return self._stderr_log.read().decode(errors='replace').strip()
        except (OSError, ValueError):
            return ''

    def _shutdown(self, kill: bool) -> None:
        self._closed = True
        proc = self._proc
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if not kill:
            try:
                proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                kill = True
        if kill and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        with contextlib.suppress(OSError):
            proc.stdout.close()
        with contextlib.suppress(OSError):
            self._stderr_log.close()

    def _fail(self, reason: str, exiting: bool = False) -> NoReturn:
        """Kill the worker and raise with its exit code and last stderr lines.

        ``exiting``: the pipe closed, so the worker is going away; wait briefly for its code.
        """
        proc = self._proc
        if exiting and proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2.0)
        code = proc.poll()
        tail = self._stderr_tail()
        self._shutdown(kill=True)
        state = f'exited with code {code}' if code is not None else 'was killed'
        raise TeacherWorkerError(f'BlazePose worker (pid {proc.pid}) {state}: {reason}'
                                 + (f'\n--- worker stderr (tail) ---\n{tail}' if tail else ''))

    def _write_frame(self, status: bytes, payload: bytes, timeout_s: float) -> None:
        data = memoryview(HEADER.pack(status, len(payload)) + payload)
        fd = self._proc.stdin.fileno()
        deadline = time.monotonic() + timeout_s
        while data:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                self._fail(f'not accepting a request within {timeout_s:.0f} s (stuck?)')
            _, writable, _ = select.select([], [fd], [], remaining_s)
            if not writable:
                continue
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as exc:
                self._fail(f'cannot send the request ({exc.__class__.__name__})', exiting=True)
            data = data[written:]

    def _read_exact(self, num_bytes: int, deadline: float, timeout_s: float) -> bytes:
        fd = self._proc.stdout.fileno()
        chunks = []
        remaining = num_bytes
        while remaining:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                self._fail(f'no reply within {timeout_s:.0f} s (stuck?)')
            readable, _, _ = select.select([fd], [], [], remaining_s)
            if not readable:
                continue
            try:
                chunk = os.read(fd, remaining)
            except BlockingIOError:
                continue
            if not chunk:
                self._fail('its stdout closed (it crashed or exited)', exiting=True)
            chunks.append(chunk)
            remaining -= len(chunk)
        return b''.join(chunks)

    def _read_frame(self, timeout_s: float) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + timeout_s
        status, length = HEADER.unpack(self._read_exact(HEADER.size, deadline, timeout_s))
        if length > MAX_REPLY_BYTES:
            self._fail(f'reply of {length} B: protocol out of sync (stray output on stdout?)')
        return status, self._read_exact(length, deadline, timeout_s) if length else b''
