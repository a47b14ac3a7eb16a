"""Make rosbag2 bags from a video, an image folder or a labelled PoseTrack/COCO sequence (no ROS).

One bag per source, every frame as (in this order, all with the frame's stamp as header stamp
and bag log time):

* ``<ns>/camera_info``          sensor_msgs/CameraInfo: a plausible pinhole camera (square pixels,
  principal point at the image centre, horizontal field of view ``hfov_deg``, no distortion),
  or the given intrinsics (``camera_matrix``);
* ``<ns>/image_raw``            sensor_msgs/Image ``bgr8`` (default), or
  ``<ns>/image_raw/compressed`` sensor_msgs/CompressedImage JPEG (``compressed=True``);
  JPEG/PNG files of a folder or sequence are stored unchanged, video frames are encoded with
  ``jpeg_quality``;
* ``<ns>/aligned_depth_to_color/image_raw``  sensor_msgs/Image ``16UC1`` (millimetres, 0 = no
  data) from a folder of 16-bit PNG depth frames registered to the colour frames, one per
  colour frame (``depth_dir``; the topic name is RealSense's for depth aligned to colour);
* ``<ns>/ground_truth``         diffpose_ros/PersonPoseArray, one per *labelled* frame of a
  sequence JSON with annotations (track ids, boxes, 17 COCO keypoints with confidences).

Frame ``i`` (counted from the first frame written; for sequences from the first ``frame_id``)
is stamped ``start_time_ns + round(i * 1e9 / fps)``.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import math
import sys
import time
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.bags import io

DEFAULT_NAMESPACE = '/camera'
DEFAULT_FRAME_ID = 'camera_optical_frame'
DEFAULT_CAMERA_NAME = 'camera'
DEFAULT_FPS = 10.0
DEFAULT_JPEG_QUALITY = 80
DEFAULT_HFOV_DEG = 60.0
# 2025-01-01T00:00:00Z: a fixed default keeps bags made twice from one source byte-identical.
DEFAULT_START_TIME_NS = 1_735_689_600 * 1_000_000_000
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
DEPTH_SUBTOPIC = 'aligned_depth_to_color/image_raw'  # RealSense's name for depth on colour
DEPTH_MATCHES = ('auto', 'stem', 'order')
# OpenCV FileStorage node names a camera matrix is commonly stored under
CAMERA_MATRIX_NODES = ('intrinsic', 'camera_matrix', 'cameraMatrix', 'K', 'M')
NUM_KEYPOINTS = 17


def topics_for(namespace: str = DEFAULT_NAMESPACE) -> dict[str, str]:
    """Topic names under a camera namespace."""
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return {
        'image': f'{ns}/image_raw',
        'compressed': f'{ns}/image_raw/compressed',
        'camera_info': f'{ns}/camera_info',
        'ground_truth': f'{ns}/ground_truth',
        'depth': f'{ns}/{DEPTH_SUBTOPIC}',
    }


def sample_bag_path() -> Path:
    """Where ``diffpose-bag make`` (no input) puts the sample bag: ``outputs/bags/vtest`` of the
    source checkout (git-ignored), or of the working directory for an installed package."""
    root = Path(__file__).resolve().parents[2]
    base = root if (root / 'package.xml').is_file() and (root / 'diffpose_ros').is_dir() \
        else Path.cwd()
    return base / 'outputs' / 'bags' / 'vtest'


def parse_start_time(text: str) -> int:
    """'now' or seconds since the epoch (decimal, exact to the nanosecond) -> ns."""
    if text.strip().lower() == 'now':
        return time.time_ns()
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"start time must be seconds since the epoch or 'now', got {text!r}") \
            from None
    if not value.is_finite() or value < 0:
        raise ValueError(f'start time must be >= 0 seconds, got {text!r}')
    return int(value * 1_000_000_000)


def parse_video_spec(spec: str) -> tuple[Path, int, int | None]:
    """'path[:start[:stop]]' -> (path, start, stop), stop exclusive (as in diffpose-label)."""
    parts = spec.split(':')
    tail: list[str] = []
    # only trailing parts that are empty or integers are a range: paths may contain ':'
    while len(parts) > 1 and len(tail) < 2 and (parts[-1] == '' or parts[-1].isdigit()):
        tail.insert(0, parts.pop())
    path = Path(':'.join(parts))
    start = int(tail[0]) if tail and tail[0] else 0
    stop = int(tail[1]) if len(tail) > 1 and tail[1] else None
    if stop is not None and stop <= start:
        raise ValueError(f'bad frame range in {spec!r}: need start < stop')
    return path, start, stop


# ------------------------------------------------------------------------------------ sources
@dataclasses.dataclass
class Frame:
    """One source frame.

    Attributes:
        index: Frame number in the source (video frame, sequence ``frame_id``, or position in
            the folder), used for stamping.
        image: BGR uint8 (H, W, 3).
        encoded: The file's original JPEG/PNG bytes (folders and sequences), or None.
        encoded_format: 'jpeg' or 'png' for ``encoded``.
        persons: Ground-truth persons (dicts, see :func:`persons_from_annotations`) when this
            frame is labelled, else None.
        name: Source file or frame label, for messages.
    """

    index: int
    image: np.ndarray
    encoded: bytes | None = None
    encoded_format: str | None = None
    persons: list[dict[str, Any]] | None = None
    name: str = ''


class Source(abc.ABC):
    """Base: ``frames()`` yields :class:`Frame` objects in order."""

    kind = 'source'
    fps: float = DEFAULT_FPS
    fps_from_source = True          # False: nobody gave a frame rate, DEFAULT_FPS is used
    count: int | None = None
    has_ground_truth = False
    first_index = 0

    @abc.abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The source's frames in order (each subclass reads its own kind of input)."""

    def describe(self) -> dict[str, str]:
        return {}

    def frame_names(self) -> list[str] | None:
        """File names of the frames in order (folders, sequences), None for a video."""
        return None


def _read_image_file(path: Path) -> tuple[np.ndarray, bytes, str | None]:
    import cv2

    data = path.read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{path} is not a readable image')
    fmt = 'jpeg' if data[:2] == b'\xff\xd8' else 'png' if data[:8] == b'\x89PNG\r\n\x1a\n' \
        else None
    return image, data, fmt


class VideoSource(Source):
    kind = 'video'

    def __init__(self, spec: str, fps: float | None = None):
        import cv2

        self.path, self.start, self.stop = parse_video_spec(spec)
        if not self.path.is_file():
            raise FileNotFoundError(f'video {self.path} does not exist')
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise ValueError(f'OpenCV cannot open the video {self.path}')
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        capture.release()
        video_fps = source_fps > 0 and math.isfinite(source_fps)
        self.fps_from_source = fps is not None or video_fps
        self.fps = float(fps) if fps is not None else (
            float(source_fps) if video_fps else DEFAULT_FPS)
        end = total if self.stop is None else min(self.stop, total) if total > 0 else self.stop
        self.count = max(0, end - self.start) if end else None
        self.first_index = self.start

    def frames(self) -> Iterator[Frame]:
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        try:
            for _ in range(self.start):    # sequential decoding: seeking is codec dependent
                if not capture.grab():
                    raise ValueError(f'{self.path} has fewer than {self.start} frames')
            index = self.start
            while self.stop is None or index < self.stop:
                ok, image = capture.read()
                if not ok:
                    break
                yield Frame(index, image, name=f'{self.path.name}#{index}')
                index += 1
        finally:
            capture.release()

    def describe(self) -> dict[str, str]:
        return {'source': str(self.path.resolve()), 'source_kind': 'video'}


class FolderSource(Source):
    kind = 'images'

    def __init__(self, directory: str | Path, fps: float | None = None):
        self.directory = Path(directory)
        self.files = sorted(f for f in self.directory.iterdir()
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise ValueError(f'{self.directory} holds no images ({", ".join(IMAGE_SUFFIXES)})')
        self.fps_from_source = fps is not None
        self.fps = float(fps) if fps is not None else DEFAULT_FPS
        self.count = len(self.files)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            image, data, fmt = _read_image_file(path)
            yield Frame(index, image, data, fmt, name=path.name)

    def describe(self) -> dict[str, str]:
        return {'source': str(self.directory.resolve()), 'source_kind': 'images'}

    def frame_names(self) -> list[str]:
        return [path.name for path in self.files]


class SequenceSource(Source):
    """A PoseTrack-style sequence in COCO keypoint format: ``images`` with ``vid_id``,
    ``frame_id`` (or ``frame_index``) and ``file_name``; optional ``annotations`` (ground
    truth); optional ``videos[].fps``. Both ``diffpose-label``'s ``labels_coco.json`` and its
    ``posetrack/<sequence>.json`` files qualify, as do PoseTrack 2018/21 files."""

    kind = 'sequence'

    def __init__(self, json_path: str | Path, video_id: str | None = None,
                 image_root: str | Path | None = None, fps: float | None = None):
        from diffpose_ros import metrics

        self.json_path = Path(json_path)
        try:
            dataset = json.loads(self.json_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f'cannot read {self.json_path}: {exc}') from exc
        if not isinstance(dataset, dict) or not isinstance(dataset.get('images'), list):
            raise ValueError(f'{self.json_path} is not a COCO/PoseTrack file: no "images" list')
        images = [img for img in dataset['images'] if isinstance(img, dict)]
        if not images:
            raise ValueError(f'{self.json_path} has no images')

        groups: dict[Any, list[dict]] = {}
        for img in images:
            groups.setdefault(img.get('vid_id'), []).append(img)
        if video_id is not None:
            matches = [k for k in groups if str(k) == str(video_id)]
            if not matches:
                raise ValueError(f'{self.json_path}: no images with vid_id {video_id}; it has '
                                 f'{", ".join(str(k) for k in groups)}')
            self.video_id = matches[0]
        elif len(groups) > 1:
            raise ValueError(f'{self.json_path} holds {len(groups)} sequences (vid_id '
                             f'{", ".join(str(k) for k in groups)}); choose one with --video-id')
        else:
            self.video_id = next(iter(groups))
        selected = groups[self.video_id]

        def frame_number(position_img: tuple[int, dict]) -> int:
            position, img = position_img
            value = img.get('frame_id', img.get('frame_index'))
            return int(value) if value is not None else position

        ordered = sorted(enumerate(selected), key=frame_number)
        self.images = [(frame_number(item), item[1]) for item in ordered]
        numbers = [n for n, _ in self.images]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f'{self.json_path}: duplicate frame_id values in sequence '
                             f'{self.video_id}')
        self.first_index = numbers[0]
        self.count = len(self.images)

        videos = {str(v.get('id')): v for v in dataset.get('videos') or [] if isinstance(v, dict)}
        video_fps = (videos.get(str(self.video_id)) or {}).get('fps')
        self.fps_from_source = fps is not None or bool(video_fps)
        self.fps = float(fps) if fps is not None else float(video_fps) if video_fps \
            else DEFAULT_FPS

        self.image_root = self._find_image_root(image_root)

        annotations = dataset.get('annotations')
        self.has_ground_truth = isinstance(annotations, list) and (
            bool(annotations) or any(img.get('is_labeled') for _, img in self.images))
        self.persons_by_image: dict[int, list[dict[str, Any]]] = {}
        if self.has_ground_truth:
            layout = 'coco'
            person_categories = {int(c['id']) for c in dataset.get('categories') or []
                                 if c.get('name', 'person') == 'person'} or {1}
            for category in dataset.get('categories') or []:
                names = category.get('keypoints')
                if names:
                    detected = metrics.detect_layout(names)
                    if detected is None and len(names) != NUM_KEYPOINTS:
                        raise ValueError(f'{self.json_path}: unknown keypoint layout with '
                                         f'{len(names)} keypoints')
                    layout = detected or 'coco'
            wanted = {int(img['id']) for _, img in self.images if 'id' in img}
            for ann in annotations:
                if (int(ann.get('image_id', -1)) not in wanted or ann.get('iscrowd')
                        or int(ann.get('category_id', 1)) not in person_categories
                        or 'keypoints' not in ann):
                    continue
                self.persons_by_image.setdefault(int(ann['image_id']), []).append(
                    person_from_annotation(ann, layout))

    def _find_image_root(self, image_root: str | Path | None) -> Path:
        first = str(self.images[0][1].get('file_name', ''))
        if not first:
            raise ValueError(f'{self.json_path}: images have no file_name')
        if image_root is not None:
            candidates = [Path(image_root)]
        else:
            base = self.json_path.resolve().parent
            candidates = [base, *list(base.parents)[:3]]
        for root in candidates:
            if (root / first).is_file():
                return root
        raise FileNotFoundError(
            f'{first} (the first image of {self.json_path}) not found under '
            f'{", ".join(str(c) for c in candidates)}; give the dataset root with --image-root')

    def frames(self) -> Iterator[Frame]:
        for number, img in self.images:
            path = self.image_root / str(img['file_name'])
            image, data, fmt = _read_image_file(path)
            persons = None
            if self.has_ground_truth and img.get('is_labeled', True) is not False:
                persons = self.persons_by_image.get(int(img.get('id', -1)), [])
            yield Frame(number, image, data, fmt, persons, name=str(img['file_name']))

    def describe(self) -> dict[str, str]:
        return {'source': str(self.json_path.resolve()), 'source_kind': 'sequence',
                'video_id': str(self.video_id), 'image_root': str(self.image_root.resolve())}

    def frame_names(self) -> list[str]:
        return [str(img['file_name']) for _, img in self.images]


def person_from_annotation(ann: dict[str, Any], layout: str = 'coco') -> dict[str, Any]:
    """One COCO/PoseTrack annotation -> {'track_id', 'box_xyxy', 'score', 'keypoints' (17, 3)}.

    Keypoints are mapped to COCO-17 (PoseTrack's head_bottom/head_top are dropped, its missing
    eyes are unlabelled). Confidence of a joint: 0 when unlabelled (visibility 0); otherwise
    its ``keypoint_scores`` entry (diffpose-label's pseudo labels) or 1.0 (human labels).
    ``track_id`` -1 = the annotation has none; ``score`` = the annotation's ``score`` or 1.0;
    a missing ``bbox`` is the tight box of the labelled joints.
    """
    from diffpose_ros import metrics

    raw = np.asarray(ann['keypoints'], dtype=np.float64).reshape(-1, 3)
    scores = ann.get('keypoint_scores')
    score_col = (np.asarray(scores, dtype=np.float64).reshape(-1) if scores is not None
                 and len(scores) == len(raw) else np.ones(len(raw)))
    if layout == 'coco':
        if raw.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f'annotation {ann.get("id")}: {raw.size} keypoint values, '
                             f'COCO needs {3 * NUM_KEYPOINTS}')
        xyv = raw
        conf = score_col
    else:
        xyv = metrics.map_keypoints_to_coco(raw, layout)
        conf = metrics.map_keypoints_to_coco(
            np.stack([score_col, score_col, raw[:, 2]], axis=1), layout)[:, 0]
    labelled = xyv[:, 2] > 0
    keypoints = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float64)
    keypoints[:, :2] = xyv[:, :2]
    keypoints[:, 2] = np.where(labelled, conf, 0.0)
    box = ann.get('bbox')
    if box is not None and len(box) == 4:
        x, y, w, h = (float(v) for v in box)
    elif labelled.any():
        lo, hi = xyv[labelled, :2].min(axis=0), xyv[labelled, :2].max(axis=0)
        x, y, w, h = lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]
    else:
        x = y = w = h = 0.0
    track = ann.get('track_id')
    return {'track_id': -1 if track is None else int(track),
            'box_xyxy': (x, y, x + w, y + h),
            'score': float(ann.get('score', 1.0)),
            'keypoints': keypoints}


def open_source(spec: str, fps: float | None = None, video_id: str | None = None,
                image_root: str | None = None) -> Source:
    """A video (``path[:start[:stop]]``), an image folder or a sequence ``.json``."""
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, fps)
    if path.suffix.lower() == '.json':
        if not path.is_file():
            raise FileNotFoundError(f'{path} does not exist')
        return SequenceSource(path, video_id, image_root, fps)
    return VideoSource(spec, fps)


def vtest_source(fps: float | None = None) -> VideoSource:
    """The bundled sample video (vtest.avi, 768x576, 10 fps, 795 frames)."""
    from diffpose_ros.assets import VTEST_VIDEO, asset_path

    return VideoSource(str(asset_path(VTEST_VIDEO)), fps)


# -------------------------------------------------------------------------------------- depth
class DepthFolder:
    """A folder of 16-bit PNG depth frames (uint16 millimetres, 0 = no data) registered to the
    colour frames of a source: one per colour frame, paired by file stem or by sorted order.

    ``match`` 'stem': the depth PNG named like the colour file (``0001.jpg`` <-> ``0001.png``);
    'order': the i-th PNG in name order for the i-th colour frame written (the counts must be
    equal); 'auto': by stem when the source has file names and every one has its PNG, else by
    order. The pairing is checked before anything is written; each PNG's bit depth, channels
    and size when its frame is written.
    """

    def __init__(self, directory: str | Path, match: str = 'auto'):
        if match not in DEPTH_MATCHES:
            raise ValueError(f'depth matching must be one of {", ".join(DEPTH_MATCHES)}, '
                             f'got {match!r}')
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f'depth folder {self.directory} does not exist or is not '
                                    'a folder')
        self.files = sorted(f for f in self.directory.iterdir()
                            if f.is_file() and f.suffix.lower() == '.png')
        if not self.files:
            raise ValueError(f'depth folder {self.directory} holds no .png files (depth frames '
                             'must be 16-bit PNGs)')
        self.requested = match
        self.match = match
        self._by_frame: list[Path] = []

    def pair(self, source: Source, max_frames: int | None = None) -> None:
        """Pair the depth PNGs with the source's frames (``ValueError`` when they do not)."""
        names = source.frame_names()
        if names is not None and max_frames is not None:
            names = names[:max_frames]
        by_stem = {f.stem: f for f in self.files}
        missing = None if names is None else [n for n in names if Path(n).stem not in by_stem]
        count = source.count
        counts_differ = count is not None and count != len(self.files)
        where = f'depth folder {self.directory} holds {len(self.files)} PNG(s)'
        if self.requested == 'stem' or (self.requested == 'auto' and names and not missing):
            if names is None:
                raise ValueError('a video\'s frames have no file names to match depth PNGs by '
                                 'stem: use --depth-match order')
            if missing:
                raise ValueError(f'{where}, but {len(missing)} of the {len(names)} colour '
                                 f'frame(s) have no depth PNG of the same stem (first: '
                                 f'{missing[0]})')
            self.match = 'stem'
            self._by_frame = [by_stem[Path(n).stem] for n in names]
            return
        if counts_differ:
            hint = '' if not missing else (f', and their file stems differ too ({missing[0]} '
                                           'has no depth PNG of its stem)')
            raise ValueError(f'{where} for {count} colour frame(s){hint}: give one 16-bit PNG '
                             'per colour frame, in the same name order or with the same stems')
        self.match = 'order'
        self._by_frame = list(self.files)

    def path_for(self, position: int, frame_name: str) -> Path:
        """The depth PNG of the ``position``-th frame written (after :meth:`pair`)."""
        if position >= len(self._by_frame):
            raise ValueError(f'depth folder {self.directory} has no PNG left for colour frame '
                             f'{frame_name} (frame {position + 1}; {len(self.files)} PNG(s))')
        return self._by_frame[position]

    def read(self, position: int, frame_name: str, size: tuple[int, int]) -> np.ndarray:
        """The uint16 depth of the ``position``-th frame; ``size`` (width, height) of its colour
        frame, which a registered depth image must have."""
        import cv2

        path = self.path_for(position, frame_name)
        data = path.read_bytes()
        if data[:8] != b'\x89PNG\r\n\x1a\n':
            raise ValueError(f'depth frame {path} is not a PNG file')
        depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise ValueError(f'depth frame {path} is not a readable PNG')
        if depth.dtype != np.uint16 or depth.ndim != 2:
            bits = depth.dtype.itemsize * 8
            channels = 1 if depth.ndim == 2 else depth.shape[2]
            raise ValueError(f'depth frame {path} is a {bits}-bit PNG with {channels} '
                             'channel(s); depth frames must be 16-bit single-channel PNGs '
                             '(uint16 millimetres, 0 = no data)')
        height, width = depth.shape
        if (width, height) != size:
            raise ValueError(f'depth frame {path} is {width}x{height} but colour frame '
                             f'{frame_name} is {size[0]}x{size[1]}: the depth must be '
                             'registered (aligned) to the colour image, with its size')
        return depth


def parse_intrinsics(text: str) -> np.ndarray:
    """``fx,fy,cx,cy`` (pixels) or an OpenCV FileStorage file (.xml/.yaml/.yml/.json) holding a
    3x3 camera matrix (node ``intrinsic``, ``camera_matrix``, ``cameraMatrix``, ``K`` or ``M``)
    -> the 3x3 K."""
    from diffpose_ros.depth3d import Intrinsics

    path = Path(text)
    if path.suffix.lower() in ('.xml', '.yaml', '.yml', '.json') or path.is_file():
        k = _read_camera_matrix(path)
    else:
        try:
            values = [float(v) for v in text.split(',')]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ValueError(f'intrinsics must be fx,fy,cx,cy (pixels) or an OpenCV '
                             f'FileStorage file, got {text!r}')
        fx, fy, cx, cy = values
        k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    Intrinsics.from_k(k)  # finite, focal lengths > 0
    return k


def _read_camera_matrix(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f'intrinsics file {path} does not exist')
    not_storage = f'{path} is not an OpenCV FileStorage file (XML, YAML or JSON)'
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError):  # the binding raises SystemError around cv2.error
        raise ValueError(not_storage) from None
    try:
        if not storage.isOpened():
            raise ValueError(not_storage)
        for name in CAMERA_MATRIX_NODES:
            node = storage.getNode(name)
            if not node.empty() and node.isMap():
                matrix = node.mat()
                if matrix is None or matrix.shape != (3, 3):
                    shape = None if matrix is None else matrix.shape
                    raise ValueError(f'{path}: {name} is not a 3x3 matrix (shape {shape})')
                k = np.asarray(matrix, np.float64)
                if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[0, 1] != 0 or k[1, 0] != 0:
                    raise ValueError(f'{path}: {name} is not a pinhole camera matrix '
                                     '[[fx 0 cx] [0 fy cy] [0 0 1]]')
                return k
    finally:
        storage.release()
    raise ValueError(f'{path} holds no camera matrix (looked for the nodes '
                     f'{", ".join(CAMERA_MATRIX_NODES)})')


# ----------------------------------------------------------------------------------- messages
def camera_matrix(width: int, height: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """3x3 K of a pinhole camera: square pixels, centred principal point, given horizontal FOV."""
    if not 1.0 <= hfov_deg <= 179.0:
        raise ValueError(f'horizontal field of view must be in [1, 179] degrees, got {hfov_deg}')
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


class MessageFactory:
    """rosbags message objects for one bag."""

    def __init__(self, store: Any, frame_id: str, camera_name: str = DEFAULT_CAMERA_NAME):
        self.types = store.types
        self.frame_id = frame_id
        self.camera_name = camera_name

    def header(self, stamp_ns: int) -> Any:
        sec, nanosec = io.stamp_of(stamp_ns)
        return self.types['std_msgs/msg/Header'](
            stamp=self.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
            frame_id=self.frame_id)

    def image(self, bgr: np.ndarray, stamp_ns: int) -> Any:
        bgr = np.ascontiguousarray(bgr, dtype=np.uint8)
        height, width = bgr.shape[:2]
        return self.types[io.IMAGE_TYPE](
            header=self.header(stamp_ns), height=height, width=width, encoding='bgr8',
            is_bigendian=0, step=width * 3, data=bgr.reshape(-1))

    def depth_image(self, depth_mm: np.ndarray, stamp_ns: int) -> Any:
        """16UC1 (REP 118: uint16 millimetres, 0 = no data), little endian."""
        depth = np.ascontiguousarray(depth_mm, dtype='<u2')
        height, width = depth.shape
        return self.types[io.IMAGE_TYPE](
            header=self.header(stamp_ns), height=height, width=width, encoding='16UC1',
            is_bigendian=0, step=width * 2, data=depth.reshape(-1).view(np.uint8))

    def compressed(self, data: bytes, fmt: str, stamp_ns: int) -> Any:
        # image_transport's format string: "<original encoding>; <codec> compressed <encoding>"
        return self.types[io.COMPRESSED_IMAGE_TYPE](
            header=self.header(stamp_ns), format=f'bgr8; {fmt} compressed bgr8',
            data=np.frombuffer(data, dtype=np.uint8))

    def camera_info(self, width: int, height: int, k: np.ndarray, stamp_ns: int) -> Any:
        p = np.zeros((3, 4))
        p[:, :3] = k
        roi = self.types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.types[io.CAMERA_INFO_TYPE](
            header=self.header(stamp_ns), height=height, width=width,
            distortion_model='plumb_bob', d=np.zeros(5), k=k.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=p.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def pose_array(self, persons: list[dict[str, Any]], stamp_ns: int) -> Any:
        keypoint = self.types['diffpose_ros/msg/Keypoint2D']
        pose = self.types['diffpose_ros/msg/PersonPose']
        out = []
        for person in persons:
            x0, y0, x1, y1 = person['box_xyxy']
            out.append(pose(
                track_id=int(person['track_id']), box_x_min=float(x0), box_y_min=float(y0),
                box_x_max=float(x1), box_y_max=float(y1),
                detection_score=float(person['score']),
                keypoints=[keypoint(x=float(x), y=float(y), confidence=float(c))
                           for x, y, c in person['keypoints']]))
        # steps/hypotheses/window 0 and an empty window_mode mark ground truth (no model ran)
        return self.types[io.POSE_ARRAY_TYPE](
            header=self.header(stamp_ns), camera=self.camera_name, steps=0, hypotheses=0,
            window_size=0, window_mode='', pose_latency_ms=0.0, persons=out)


# --------------------------------------------------------------------------------------- make
@dataclasses.dataclass
class MakeOptions:
    out: Path
    storage: str = io.DEFAULT_STORAGE
    compressed: bool = False
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    reencode: bool = False
    start_time_ns: int = DEFAULT_START_TIME_NS
    namespace: str = DEFAULT_NAMESPACE
    frame_id: str = DEFAULT_FRAME_ID
    hfov_deg: float = DEFAULT_HFOV_DEG
    camera_matrix: np.ndarray | None = None  # 3x3 K for the CameraInfo (else from hfov_deg)
    depth: DepthFolder | None = None
    depth_topic: str | None = None  # default: <ns>/aligned_depth_to_color/image_raw
    max_frames: int | None = None
    progress: bool = True


def frame_stamp_ns(start_time_ns: int, frame_offset: int, fps: float) -> int:
    return int(start_time_ns) + int(round(frame_offset * 1e9 / fps))


def make_bag(source: Source, options: MakeOptions) -> dict[str, Any]:
    """Write ``source`` as a bag at ``options.out``; returns a summary dict.

    Raises BagError (output exists, cannot write), ValueError/FileNotFoundError (bad source).
    A failed run leaves no partial bag behind.
    """
    import cv2
    from tqdm import tqdm

    if not 1 <= options.jpeg_quality <= 100:
        raise ValueError(f'JPEG quality must be in [1, 100], got {options.jpeg_quality}')
    if not source.fps > 0 or not math.isfinite(source.fps):
        raise ValueError(f'frame rate must be > 0, got {source.fps}')
    topics = topics_for(options.namespace)
    image_topic = topics['compressed'] if options.compressed else topics['image']
    depth_topic = None
    if options.depth is not None:
        depth_topic = '/' + (options.depth_topic or topics['depth']).lstrip('/')
        if depth_topic in (image_topic, topics['camera_info'], topics['ground_truth']):
            raise ValueError(f'depth topic {depth_topic} is already used for another topic')
        options.depth.pair(source, options.max_frames)  # before anything is written
    store = io.make_typestore()
    factory = MessageFactory(store, options.frame_id)
    custom = {f'diffpose_ros.{k}': v for k, v in source.describe().items()}
    custom.update({
        'diffpose_ros.fps': repr(source.fps),
        'diffpose_ros.first_frame': str(source.first_index),
        'diffpose_ros.start_time_ns': str(options.start_time_ns),
        'diffpose_ros.image_topic': image_topic,
        'diffpose_ros.frame_id': options.frame_id,
    })
    if source.has_ground_truth:
        custom['diffpose_ros.ground_truth_topic'] = topics['ground_truth']
    if options.camera_matrix is not None:
        k_given = np.asarray(options.camera_matrix, np.float64).reshape(3, 3)
        custom['diffpose_ros.intrinsics'] = ','.join(
            repr(float(v)) for v in (k_given[0, 0], k_given[1, 1], k_given[0, 2], k_given[1, 2]))
    if options.depth is not None:
        custom.update({'diffpose_ros.depth_topic': depth_topic,
                       'diffpose_ros.depth_source': str(options.depth.directory.resolve()),
                       'diffpose_ros.depth_match': options.depth.match})
    total = source.count
    if options.max_frames is not None:
        total = options.max_frames if total is None else min(total, options.max_frames)

    started = time.monotonic()
    frames = 0
    labelled = 0
    size: tuple[int, int] | None = None
    k = None
    first_stamp = last_stamp = None
    encode_params = [cv2.IMWRITE_JPEG_QUALITY, int(options.jpeg_quality)]
    with io.BagWriter(options.out, options.storage, store, custom) as writer, \
            tqdm(total=total, unit='frame', desc='make', disable=not options.progress,
                 file=sys.stderr) as bar:
        writer.add_topic(topics['camera_info'], io.CAMERA_INFO_TYPE)
        writer.add_topic(image_topic,
                         io.COMPRESSED_IMAGE_TYPE if options.compressed else io.IMAGE_TYPE)
        if depth_topic is not None:
            writer.add_topic(depth_topic, io.IMAGE_TYPE)
        if source.has_ground_truth:
            writer.add_topic(topics['ground_truth'], io.POSE_ARRAY_TYPE)
        for frame in source.frames():
            if options.max_frames is not None and frames >= options.max_frames:
                break
            height, width = frame.image.shape[:2]
            if size is None:
                size = (width, height)
                k = (camera_matrix(width, height, options.hfov_deg)
                     if options.camera_matrix is None else k_given)
                if not (0 <= k[0, 2] <= width and 0 <= k[1, 2] <= height):
                    raise ValueError(f'principal point ({k[0, 2]:g}, {k[1, 2]:g}) lies outside '
                                     f'the {width}x{height} frames: intrinsics of another '
                                     'resolution?')
            elif size != (width, height):
                raise ValueError(f'{frame.name} is {width}x{height}, the first frame was '
                                 f'{size[0]}x{size[1]}: a camera has one image size')
            stamp = frame_stamp_ns(options.start_time_ns, frame.index - source.first_index,
                                   source.fps)
            if last_stamp is not None and stamp <= last_stamp:
                raise ValueError(f'{frame.name}: stamp not after the previous frame '
                                 '(frame numbers must increase)')
            first_stamp = stamp if first_stamp is None else first_stamp
            last_stamp = stamp
            writer.write(topics['camera_info'], stamp,
                         factory.camera_info(width, height, k, stamp))
            if options.compressed:
                if frame.encoded is not None and frame.encoded_format and not options.reencode:
                    data, fmt = frame.encoded, frame.encoded_format
                else:
                    ok, buffer = cv2.imencode('.jpg', frame.image, encode_params)
                    if not ok:
                        raise ValueError(f'{frame.name}: JPEG encoding failed')
                    data, fmt = buffer.tobytes(), 'jpeg'
                writer.write(image_topic, stamp, factory.compressed(data, fmt, stamp))
            else:
                writer.write(image_topic, stamp, factory.image(frame.image, stamp))
            if depth_topic is not None:    # same stamp and frame_id as the colour frame
                depth = options.depth.read(frames, frame.name, size)
                writer.write(depth_topic, stamp, factory.depth_image(depth, stamp))
            if frame.persons is not None:
                writer.write(topics['ground_truth'], stamp,
                             factory.pose_array(frame.persons, stamp))
                labelled += 1
            frames += 1
            bar.update(1)
        if frames == 0:
            raise ValueError('the source has no frames (in the requested range)')
        if (depth_topic is not None and options.depth.match == 'order'
                and options.max_frames is None and frames != len(options.depth.files)):
            raise ValueError(f'depth folder {options.depth.directory} holds '
                             f'{len(options.depth.files)} PNG(s) for {frames} colour frame(s): '
                             'give one 16-bit PNG per colour frame')
        counts = dict(writer.counts)
    return {
        'out': str(Path(options.out).resolve()),
        'storage': options.storage,
        'metadata_version': io.METADATA_VERSION,
        'frames': frames,
        'labelled_frames': labelled,
        'fps': source.fps,
        'fps_from_source': source.fps_from_source,
        'width': size[0] if size else 0,
        'height': size[1] if size else 0,
        'first_stamp_ns': first_stamp,
        'last_stamp_ns': last_stamp,
        'depth_topic': depth_topic,
        'depth_match': None if options.depth is None else options.depth.match,
        'topics': counts,
        'size_bytes': io.dir_size_bytes(options.out),
        'seconds': time.monotonic() - started,
    }


def remove_existing_bag(path: Path) -> None:
    """Delete an existing bag directory for ``--force``; refuse anything that is not a bag."""
    import shutil

    if not path.exists():
        return
    if not path.is_dir():
        raise io.BagError(f'{path} exists and is not a bag directory; not removing it')
    entries = list(path.iterdir())
    bag_like = all(e.is_file() and (e.name == 'metadata.yaml' or e.suffix in ('.mcap', '.db3')
                                    or e.name.endswith(('.db3-shm', '.db3-wal', '.db3-journal')))
                   for e in entries)
    if not bag_like:
        raise io.BagError(f'{path} exists and does not look like a bag (it holds other files); '
                          'not removing it')
    shutil.rmtree(path)
