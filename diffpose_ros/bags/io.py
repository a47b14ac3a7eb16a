"""Read and write rosbag2 bags without ROS, with diffpose_ros's own message types.

Uses the pure-Python ``rosbags`` library (no ``rosbag2_py``, no ROS installation).

Format written (see docs/bags.md, "Compatibility"):

* storage ``mcap`` (default) or ``sqlite3``, uncompressed;
* ``metadata.yaml`` **version 8**. Version 9 (Jazzy's own) stores ``offered_qos_profiles`` as a
  YAML list, which Humble's rosbag2 cannot parse (it reads a string: "yaml-cpp: bad
  conversion"); version 8 keeps the string form that Humble, Iron, Jazzy and later all read.
  rosbags can write only versions 8 and 9;
* message definitions of the standard types from rosbags' Humble typestore (Image,
  CompressedImage, CameraInfo and Header are identical in Humble, Jazzy and Kilted), and of our
  ``diffpose_ros/msg/*`` types from the package's own ``.msg`` files, embedded in the bag, so
  readers (rosbags, ``mcap-ros2-support``, Foxglove) decode every topic without our package.

Everything here raises :class:`BagError` with a message meant for users (missing path, not a
bag, corrupt or truncated file, existing output) instead of library tracebacks.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

STORAGES = ('mcap', 'sqlite3')
DEFAULT_STORAGE = 'mcap'
METADATA_VERSION = 8

PACKAGE = 'diffpose_ros'
CUSTOM_TYPE_NAMES = ('Keypoint2D', 'PersonPose', 'PersonPoseArray',
                     'Keypoint3D', 'PersonPose3D', 'PersonPose3DArray')
POSE_ARRAY_TYPE = 'diffpose_ros/msg/PersonPoseArray'
POSE_3D_ARRAY_TYPE = 'diffpose_ros/msg/PersonPose3DArray'
IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
CLOCK_TYPE = 'rosgraph_msgs/msg/Clock'
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)

_STORAGE_SUFFIXES = ('.mcap', '.db3')


class BagError(RuntimeError):
    """A bag cannot be read or written; the message says which bag and why."""


# ----------------------------------------------------------------------------- message types
def _prefixes() -> list[Path]:
    """Install prefixes to search for ``share/<pkg>/msg``: AMENT_PREFIX_PATH, then sys.prefix."""
    seen: list[Path] = []
    for entry in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) + [sys.prefix]:
        if entry and Path(entry) not in seen:
            seen.append(Path(entry))
    return seen


def custom_msg_dir() -> Path:
    """Directory holding our ``.msg`` files: the source checkout's ``msg/``, else the installed
    ``share/diffpose_ros/msg``."""
    candidates = [Path(__file__).resolve().parents[2] / 'msg']
    candidates += [prefix / 'share' / PACKAGE / 'msg' for prefix in _prefixes()]
    for directory in candidates:
        if all((directory / f'{name}.msg').is_file() for name in CUSTOM_TYPE_NAMES):
            return directory
    raise BagError(f'cannot find the {PACKAGE} .msg files (looked in '
                   f'{", ".join(str(c) for c in candidates)})')


def custom_types() -> dict[str, Any]:
    """rosbags type definitions of our messages (:data:`CUSTOM_TYPE_NAMES`: the 2D poses and
    ``Keypoint3D``/``PersonPose3D``/``PersonPose3DArray``)."""
    from rosbags.typesys import get_types_from_msg

    directory = custom_msg_dir()
    types: dict[str, Any] = {}
    for name in CUSTOM_TYPE_NAMES:
        text = (directory / f'{name}.msg').read_text()
        types.update(get_types_from_msg(text, f'{PACKAGE}/msg/{name}'))
    return types


def make_typestore() -> Any:
    """rosbags typestore: ROS 2 Humble's standard types plus our custom types."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(custom_types())
    return store


def _dependencies(fielddef: Any) -> list[str]:
    """Type names a (consts, fields) definition refers to."""
    from rosbags.interfaces import Nodetype

    names = []
    for _name, (nodetype, detail) in fielddef[1]:
        if nodetype == Nodetype.NAME:
            names.append(detail)
        elif nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (sub_type, sub_detail), _size = detail
            if sub_type == Nodetype.NAME:
                names.append(sub_detail)
    return names


def _installed_msg_text(msgtype: str) -> str | None:
    package, kind, name = msgtype.split('/')
    for prefix in _prefixes():
        path = prefix / 'share' / package / kind / f'{name}.msg'
        if path.is_file():
            return path.read_text()
    return None


def installed_typestore(msgtypes: Iterable[str]) -> Any:
    """A typestore whose definitions are those installed on this machine (for recording).

    A recorder must describe the bytes it writes with the definitions of the running ROS, which
    may differ from Humble's: each type (and everything it refers to) is read from
    ``<prefix>/share/<package>/msg/<Type>.msg`` on ``AMENT_PREFIX_PATH`` (or this Python's
    prefix); our own types from :func:`custom_msg_dir`; types with no ``.msg`` file fall back to
    rosbags' Humble definitions.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    fallback = get_typestore(Stores.ROS2_HUMBLE)
    custom = custom_types()
    found: dict[str, Any] = {}
    stack = list(msgtypes)
    while stack:
        name = stack.pop()
        if name in found:
            continue
        if name in custom:
            definitions = {name: custom[name]}
        elif (text := _installed_msg_text(name)) is not None:
            definitions = get_types_from_msg(text, name)
        elif name in fallback.fielddefs:
            definitions = {name: fallback.fielddefs[name]}
        else:
            raise BagError(f'no message definition for {name}: no {name}.msg installed and not '
                           'a standard Humble type')
        found.update(definitions)
        stack.extend(_dependencies(definitions[name]))
    store = get_typestore(Stores.EMPTY)
    store.register(found)
    return store


def bag_typestore(reader: Any) -> Any:
    """Typestore for decoding a bag: its embedded definitions, else Humble + our types."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import get_types_from_msg

    store = make_typestore()
    for connection in reader.connections:
        msgdef = connection.msgdef
        if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
            types = get_types_from_msg(msgdef.data, connection.msgtype)
            new = {k: v for k, v in types.items() if k not in store.fielddefs}
            if new:
                store.register(new)
    return store


# ------------------------------------------------------------------------------------ writing
class BagWriter:
    """A new rosbag2 bag (metadata version 8) with topics added on first use.

    Use as a context manager: leaving normally closes the bag (index + ``metadata.yaml``);
    leaving with an exception deletes the partial bag (``make``). A recorder that must keep
    what it has calls :meth:`close` itself.
    """

    def __init__(self, path: str | Path, storage: str = DEFAULT_STORAGE,
                 typestore: Any = None, custom_data: dict[str, str] | None = None):
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        if storage not in STORAGES:
            raise BagError(f'unknown storage {storage!r}; choose one of {", ".join(STORAGES)}')
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'{self.path} already exists; choose another output or remove it')
        self.storage = storage
        self.typestore = typestore if typestore is not None else make_typestore()
        self.connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = Writer(self.path, version=METADATA_VERSION, storage_plugin=plugin)
            for key, value in (custom_data or {}).items():
                self._writer.set_custom_data(key, str(value))
            self._writer.open()
        except (WriterError, OSError) as exc:
            raise BagError(f'cannot create bag {self.path}: {exc}') from exc
        self._open = True

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare ``topic`` (once; again with the same type is a no-op)."""
        if topic in self.connections:
            if self.connections[topic].msgtype != msgtype:
                raise BagError(f'topic {topic} already has type '
                               f'{self.connections[topic].msgtype}, not {msgtype}')
            return
        self.connections[topic] = self._writer.add_connection(topic, msgtype,
                                                              typestore=self.typestore)
        self.counts[topic] = 0

    def write_raw(self, topic: str, time_ns: int, data: bytes | memoryview) -> None:
        """Write CDR bytes (log time ``time_ns``) to a declared topic."""
        self._writer.write(self.connections[topic], int(time_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, time_ns: int, msg: Any) -> bytes:
        """Serialize a rosbags message object and write it; returns the CDR bytes."""
        data = self.typestore.serialize_cdr(msg, self.connections[topic].msgtype)
        self.write_raw(topic, time_ns, data)
        return bytes(data)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()

    def abort(self, remove: bool = True) -> None:
        """Stop writing; delete the partial bag with ``remove``."""
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                self._writer.abort()
        if remove and self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(remove=True)


# ------------------------------------------------------------------------------------ reading
def resolve_bag(path: str | Path) -> Path:
    """The path rosbags should open for ``path``.

    Accepts a bag directory (with ``metadata.yaml``), its ``metadata.yaml`` or storage file, a
    directory without ``metadata.yaml`` holding exactly one ``.mcap``/``.db3`` file (e.g. a
    recording that was killed), or a bare ``.mcap``/``.db3`` file.
    """
    p = Path(path)
    if not p.exists():
        raise BagError(f'bag {p} does not exist')
    if p.is_file():
        if p.name == 'metadata.yaml':
            return p.parent
        if p.suffix in _STORAGE_SUFFIXES:
            return p.parent if (p.parent / 'metadata.yaml').is_file() else p
        raise BagError(f'{p} is not a rosbag2 bag (expected a bag directory with metadata.yaml, '
                       'or a .mcap/.db3 file)')
    if (p / 'metadata.yaml').is_file():
        return p
    files = [f for suffix in _STORAGE_SUFFIXES for f in sorted(p.glob(f'*{suffix}'))]
    if len(files) == 1:
        return files[0]
    reason = 'several storage files' if files else 'no .mcap or .db3 file'
    raise BagError(f'{p} is not a rosbag2 bag: no metadata.yaml and {reason}')


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """An open rosbags ``Reader`` for ``path`` (:func:`resolve_bag`); BagError if unreadable."""
    from rosbags.rosbag2 import Reader

    target = resolve_bag(path)
    try:
        reader = Reader(target)
        reader.open()
    except Exception as exc:  # noqa: BLE001  (any parse failure = an unreadable bag)
        raise BagError(f'cannot read bag {path}: {type(exc).__name__}: {exc}') from exc
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def select_connections(reader: Any, topics: Sequence[str] | None) -> list[Any]:
    """The reader's connections on ``topics`` (all when None); BagError naming unknown topics."""
    connections = list(reader.connections)
    if topics:
        known = {c.topic for c in connections}
        unknown = [t for t in topics if t not in known]
        if unknown:
            raise BagError(f'topic(s) {", ".join(unknown)} not in the bag; it has '
                           f'{", ".join(sorted(known)) or "no topics"}')
        connections = [c for c in connections if c.topic in topics]
    return connections


def iter_messages(reader: Any, connections: Sequence[Any] = (),
                  start_ns: int | None = None) -> Iterator[tuple[Any, int, bytes]]:
    """(connection, log time ns, CDR bytes) in log-time order; read errors become BagError."""
    messages = reader.messages(connections=connections, start=start_ns)
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001  (truncated/corrupt storage)
            raise BagError(f'bag {reader.path} is corrupt or truncated: '
                           f'{type(exc).__name__}: {exc}') from exc
        yield item


def bag_info(path: str | Path) -> dict[str, Any]:
    """Storage, version, times, size and per-topic counts/types of a bag (no message data read)."""
    target = resolve_bag(path)
    with open_bag(target) as reader:
        topics = {}
        for name, info in sorted(reader.topics.items()):
            topics[name] = {'type': info.msgtype, 'count': info.msgcount}
        count = reader.message_count
        metadata = _metadata_yaml(target)
        files = [target] if target.is_file() else [
            f for f in sorted(target.iterdir()) if f.is_file()]
        return {
            'path': str(target),
            'storage': metadata.get('storage_identifier')
            or ('mcap' if target.suffix == '.mcap' else 'sqlite3'),
            'version': metadata.get('version'),
            'ros_distro': metadata.get('ros_distro'),
            'custom_data': metadata.get('custom_data') or {},
            'message_count': count,
            'start_ns': reader.start_time if count else None,
            'end_ns': reader.end_time - 1 if count else None,
            'duration_s': (reader.end_time - 1 - reader.start_time) / 1e9 if count else 0.0,
            'size_bytes': sum(f.stat().st_size for f in files),
            'topics': topics,
        }


def _metadata_yaml(target: Path) -> dict[str, Any]:
    if target.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load((target / 'metadata.yaml').read_text())
        return dict(data['rosbag2_bagfile_information'])
    except Exception as exc:  # noqa: BLE001
        raise BagError(f'bag {target}: unreadable metadata.yaml: {exc}') from exc


def format_info(info: dict[str, Any]) -> str:
    """Human-readable summary, like ``ros2 bag info``."""
    lines = [
        f"bag:       {info['path']}",
        f"storage:   {info['storage']} (metadata version {info['version']}), "
        f"{info['size_bytes'] / 1e6:.1f} MB",
        f"messages:  {info['message_count']} over {info['duration_s']:.3f} s",
    ]
    if info['start_ns'] is not None:
        lines.append(f"stamps:    {info['start_ns'] / 1e9:.3f} .. {info['end_ns'] / 1e9:.3f} s")
    width = max((len(t) for t in info['topics']), default=0)
    for topic, entry in info['topics'].items():
        lines.append(f"  {topic:<{width}}  {entry['count']:>6}  {entry['type']}")
    for key, value in sorted(info['custom_data'].items()):
        lines.append(f'  custom_data {key}: {value}')
    return '\n'.join(lines)


def stamp_of(time_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a time in ns."""
    sec, nanosec = divmod(int(time_ns), 1_000_000_000)
    return sec, nanosec


def dir_size_bytes(path: str | Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob('*') if f.is_file())
