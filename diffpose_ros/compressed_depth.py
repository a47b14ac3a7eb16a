"""Decode ``compressedDepth`` images (ROS image_transport's compressed_depth_image_transport).

A depth camera's ``<topic>/compressedDepth`` publishes ``sensor_msgs/CompressedImage`` messages
that plain ``image_transport`` ``compressed`` decoders cannot read. The layout, from the
publisher and subscriber in ros-perception/image_transport_plugins
(``compressed_depth_image_transport/src/codec.cpp``, ``rvl_codec.cpp`` and
``include/.../compression_common.h``; the same on ROS 1 Noetic and ROS 2):

- ``format`` = ``"<encoding>; compressedDepth <codec>"``, e.g. ``"16UC1; compressedDepth png"``
  or ``"32FC1; compressedDepth rvl"``. Older publishers wrote ``"<encoding>; compressedDepth"``
  or just ``"<encoding>"``: both mean PNG.
- ``data`` = a 12-byte ``ConfigHeader`` (int32 compression format, float32 depthQuantA,
  float32 depthQuantB; native byte order, little-endian on every platform ROS ships for) then
  the image:
  - PNG: a 16-bit single-channel PNG;
  - RVL: uint32 cols, uint32 rows, then the RVL stream (Wilson 2017, "Fast Lossless Depth
    Image Compression"): 32-bit words whose 4-bit nibbles, most significant first, hold
    variable-length integers (3 value bits, least significant group first, and a continuation
    bit); the values repeat [zero-run length, non-zero-run length, zigzag deltas of the
    non-zero pixels from the previous non-zero pixel].
- ``16UC1`` (and ``mono16``): the 16-bit image is the depth in millimetres, unchanged.
- ``32FC1``: the 16-bit image is quantised inverse depth, ``q = depthQuantA / z + depthQuantB``
  (truncated) for ``z < depth_max`` and 0 otherwise; decoding is
  ``z = depthQuantA / (q - depthQuantB)`` in metres, and ``q = 0`` is no data (NaN).
  With the publisher's defaults (depth_quantization 100, depth_max 10 m) one step is
  ``z**2 / 10100`` m: 0.4 mm at 2 m, 1 cm at 10 m.

Everything malformed raises :class:`CompressedDepthError` (a ``ValueError``) whose ``kind`` is
one of :data:`COMPRESSED_DEPTH_ERROR_KINDS`, so a node can count bad input per kind. Image
dimensions are checked against ``max_pixels`` from the PNG header or the RVL size fields before
anything that big is allocated. No ROS imports: messages are not touched, only their fields.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

COMPRESSED_DEPTH_ERROR_KINDS = (
    'compressed_depth_format',  # format string: not a compressedDepth depth encoding / codec
    'corrupt_compressed_depth',  # data truncated, undecodable, or not what the format says
    'compressed_depth_oversize',  # declared image larger than max_pixels
)
DEFAULT_MAX_PIXELS = 4096 * 4096  # the colour path's limit (ros/image_conversion.py)
CONFIG_HEADER = struct.Struct('<iff')  # compressionFormat format; float depthParam[2]
_RVL_SIZE = struct.Struct('<II')  # cols, rows
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_GREY = 0  # IHDR colour type of a single-channel image
_UINT16_DEPTH = ('16UC1', 'mono16')
_FLOAT_DEPTH = ('32FC1',)
# A VLE value needs at most 11 nibbles to reach 33 bits; more means a corrupt stream (the C
# decoder's shift would go negative).
_RVL_MAX_NIBBLES_PER_VALUE = 11
_RVL_CHUNK_WORDS = 1 << 16  # words decoded per numpy pass: bounds the temporaries (~30 MB)
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)  # most significant nibble first


class CompressedDepthError(ValueError):
    """A compressedDepth message that cannot be decoded; ``kind`` says why.

    Attributes:
        kind: One of :data:`COMPRESSED_DEPTH_ERROR_KINDS`.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in COMPRESSED_DEPTH_ERROR_KINDS:
            raise ValueError(f'unknown CompressedDepthError kind {kind!r}')
        super().__init__(message)
        self.kind = kind


def parse_format(format: str) -> tuple[str, str]:
    """``(encoding, codec)`` of a compressedDepth ``format`` string; codec is 'png' or 'rvl'.

    Follows the subscriber's rules: no ``;`` or a bare ``compressedDepth`` means PNG (older
    publishers); ``compressedDepth <other>`` is unsupported.
    """
    text = str(format)
    encoding, sep, rest = text.partition(';')
    encoding = encoding.strip()
    if not sep:
        codec = 'png'
    elif 'compressedDepth png' in rest:
        codec = 'png'
    elif 'compressedDepth rvl' in rest:
        codec = 'rvl'
    elif 'compressedDepth' in rest and 'compressedDepth ' not in rest:
        codec = 'png'
    else:
        raise CompressedDepthError(
            'compressed_depth_format',
            f'unsupported compressedDepth format {text!r}: expected "<encoding>; '
            'compressedDepth png" or "<encoding>; compressedDepth rvl"')
    if encoding not in _UINT16_DEPTH + _FLOAT_DEPTH:
        raise CompressedDepthError(
            'compressed_depth_format',
            f'compressedDepth encoding {encoding!r} (format {text!r}) is not a depth encoding; '
            f'expected one of {_UINT16_DEPTH + _FLOAT_DEPTH}')
    return encoding, codec


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise CompressedDepthError('corrupt_compressed_depth',
                                   f'{what} declares a {width}x{height} image')
    if width * height > max_pixels:
        raise CompressedDepthError(
            'compressed_depth_oversize',
            f'{what} declares {width}x{height} = {width * height} pixels, above the limit of '
            f'{max_pixels}')


def _decode_png(payload: bytes, max_pixels: int) -> np.ndarray:
    # IHDR (always the first chunk): width, height (big-endian), bit depth, colour type.
    if len(payload) < 33 or not payload.startswith(_PNG_SIGNATURE) or payload[12:16] != b'IHDR':
        raise CompressedDepthError('corrupt_compressed_depth',
                                   'compressedDepth png payload is not a PNG (bad signature or '
                                   f'truncated header, {len(payload)} bytes)')
    width, height, bit_depth, colour_type = struct.unpack('>IIBB', payload[16:26])
    _check_size(width, height, max_pixels, 'PNG header')
    if bit_depth != 16 or colour_type != _PNG_GREY:
        raise CompressedDepthError(
            'corrupt_compressed_depth',
            f'compressedDepth PNG must be 16-bit single-channel, got bit depth {bit_depth}, '
            f'colour type {colour_type}')
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.shape != (height, width):
        raise CompressedDepthError('corrupt_compressed_depth',
                                   'compressedDepth PNG data is corrupt or truncated')
    return image


def _rvl_values(words: np.ndarray, max_values: int) -> np.ndarray:
    """The first (up to) ``max_values`` variable-length integers of an RVL word stream."""
    chunks: list[np.ndarray] = []
    count = 0
    carry = np.zeros(0, np.uint8)  # nibbles of a value split across two chunks
    for start in range(0, len(words), _RVL_CHUNK_WORDS):
        block = words[start:start + _RVL_CHUNK_WORDS]
        nibbles = ((block[:, None] >> _NIBBLE_SHIFTS) & 0xF).astype(np.uint8).ravel()
        if len(carry):
            nibbles = np.concatenate([carry, nibbles])
        ends = np.flatnonzero(nibbles < 8)  # no continuation bit: last nibble of a value
        if len(ends) == 0:
            carry = nibbles
        else:
            carry = nibbles[ends[-1] + 1:]
            starts = np.empty_like(ends)
            starts[0] = 0
            starts[1:] = ends[:-1] + 1
            lengths = ends - starts + 1
            if lengths.max() > _RVL_MAX_NIBBLES_PER_VALUE:
                raise CompressedDepthError('corrupt_compressed_depth',
                                           'RVL stream has an over-long variable-length value')
            used = nibbles[:ends[-1] + 1]
            position = np.arange(len(used)) - np.repeat(starts, lengths)
            groups = (used & 7).astype(np.uint64) << (3 * position).astype(np.uint64)
            chunks.append(np.add.reduceat(groups, starts))
            count += len(ends)
        if len(carry) > _RVL_MAX_NIBBLES_PER_VALUE:
            raise CompressedDepthError('corrupt_compressed_depth',
                                       'RVL stream has an over-long variable-length value')
        if count >= max_values:
            break
    values = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
    return values[:max_values]


def _decode_rvl(payload: bytes, max_pixels: int) -> np.ndarray:
    if len(payload) < _RVL_SIZE.size:
        raise CompressedDepthError('corrupt_compressed_depth',
                                   f'RVL payload of {len(payload)} bytes has no image size')
    width, height = _RVL_SIZE.unpack_from(payload)
    _check_size(width, height, max_pixels, 'RVL header')
    num_pixels = width * height
    stream = payload[_RVL_SIZE.size:]
    stream += b'\0' * (-len(stream) % 4)  # the publisher writes whole words; be lenient
    words = np.frombuffer(stream, '<u4')
    # A valid stream needs at most 2 values per run plus 1 per non-zero pixel, and every run
    # but the first starts with >= 1 zero, so <= 2 * num_pixels + 2 values in all.
    values = _rvl_values(words, 2 * num_pixels + 2)
    flat = memoryview(np.ascontiguousarray(values, np.uint64)).cast('B').cast('Q')
    run_pixel, run_value, run_length = [], [], []
    pixel = index = 0
    total = len(flat)
    # Sequential over runs (the next run's position depends on this one's length); the
    # per-pixel work below is vectorised.
    while pixel < num_pixels:
        if index + 2 > total:
            raise CompressedDepthError('corrupt_compressed_depth',
                                       f'RVL stream ends after {pixel} of {num_pixels} pixels')
        zeros, nonzeros = flat[index], flat[index + 1]
        if zeros + nonzeros == 0 or pixel + zeros + nonzeros > num_pixels \
                or index + 2 + nonzeros > total:
            raise CompressedDepthError('corrupt_compressed_depth',
                                       f'RVL stream has an invalid run at pixel {pixel}')
        if nonzeros:
            run_pixel.append(pixel + zeros)
            run_value.append(index + 2)
            run_length.append(nonzeros)
        pixel += zeros + nonzeros
        index += 2 + nonzeros
    image = np.zeros(num_pixels, np.uint16)
    if run_length:
        lengths = np.asarray(run_length, np.int64)
        offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        value_index = np.repeat(np.asarray(run_value, np.int64), lengths) + offset
        pixel_index = np.repeat(np.asarray(run_pixel, np.int64), lengths) + offset
        zigzag = values[value_index].astype(np.int64)
        deltas = (zigzag >> 1) ^ -(zigzag & 1)
        image[pixel_index] = (np.cumsum(deltas) & 0xFFFF).astype(np.uint16)  # uint16 wrap
    return image.reshape(height, width)


def decode_compressed_depth(format: str, data: bytes,
                            max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` from a ``compressedDepth`` topic.

    Args:
        format: The message's ``format`` (e.g. ``'16UC1; compressedDepth png'``).
        data: The message's ``data`` (bytes or anything exposing the buffer protocol).
        max_pixels: Larger declared images are refused before they are allocated.

    Returns:
        ``(depth, encoding)``: (H, W) uint16 millimetres for ``16UC1`` / ``mono16`` (0 = no
        data), or (H, W) float32 metres for ``32FC1`` (NaN = no data), and the encoding.

    Raises:
        CompressedDepthError: see :data:`COMPRESSED_DEPTH_ERROR_KINDS`.
    """
    encoding, codec = parse_format(format)
    raw = bytes(data) if not isinstance(data, bytes) else data
    if len(raw) <= CONFIG_HEADER.size:
        raise CompressedDepthError(
            'corrupt_compressed_depth',
            f'compressedDepth data of {len(raw)} bytes is shorter than its 12-byte header plus '
            'an image')
    _, quant_a, quant_b = CONFIG_HEADER.unpack_from(raw)
    payload = raw[CONFIG_HEADER.size:]
    image = _decode_png(payload, max_pixels) if codec == 'png' else _decode_rvl(payload,
                                                                                 max_pixels)
    if encoding in _UINT16_DEPTH:
        return image, encoding
    if not (np.isfinite(quant_a) and np.isfinite(quant_b) and quant_a != 0):
        raise CompressedDepthError(
            'corrupt_compressed_depth',
            f'32FC1 compressedDepth header has unusable quantisation A={quant_a}, B={quant_b}')
    with np.errstate(divide='ignore', invalid='ignore'):
        depth_m = np.float32(quant_a) / (image.astype(np.float32) - np.float32(quant_b))
    depth_m[image == 0] = np.nan
    return depth_m, encoding
