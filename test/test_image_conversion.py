"""ROS image messages -> BGR arrays: round trips, error kinds, cv_bridge fallback, fuzzing."""
from __future__ import annotations

import array
import pathlib
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from diffpose_ros.ros import image_conversion as ic
from diffpose_ros.ros.image_conversion import (
    BAD_INPUT_KINDS,
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    bgr_to_image_msg,
    compressed_to_bgr,
    cv_bridge_status,
    image_to_bgr,
)

# Bytes per pixel as stored, for building messages (independent of the module's table).
BYTES_PER_PIXEL = {
    'bgr8': 3, '8UC3': 3, 'rgb8': 3, 'bgra8': 4, 'rgba8': 4, 'mono8': 1, '8UC1': 1,
    'mono16': 2, '16UC1': 2, 'yuv422': 2, 'uyvy': 2, 'yuv422_yuy2': 2, 'yuyv': 2,
}
YUV_CODES = {
    'yuv422': cv2.COLOR_YUV2BGR_UYVY, 'uyvy': cv2.COLOR_YUV2BGR_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2BGR_YUY2, 'yuyv': cv2.COLOR_YUV2BGR_YUY2,
}


def pack_rows(rows: np.ndarray, pad_bytes: int, fill: int = 0xA5) -> tuple[bytes, int]:
    """(H, row_bytes) uint8 -> (data with pad_bytes of junk after each row, step)."""
    height, row_bytes = rows.shape
    step = row_bytes + pad_bytes
    buffer = np.full((height, step), fill, np.uint8)
    buffer[:, :row_bytes] = rows
    return buffer.tobytes(), step


def make_image(encoding: str, rows: np.ndarray, width: int, pad_bytes: int = 0,
               is_bigendian: int = 0, cls=Image):
    """A message of class ``cls`` holding (H, width * bpp) uint8 rows with row padding."""
    data, step = pack_rows(rows, pad_bytes)
    msg = cls() if cls is not types.SimpleNamespace else types.SimpleNamespace(header=None)
    msg.height = rows.shape[0]
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = is_bigendian
    msg.step = step
    msg.data = data
    return msg


def reference_bgr(msg) -> np.ndarray:
    """Independent, row-by-row reference conversion (cv2 only for YUV, as the module does)."""
    height, width, step = msg.height, msg.width, msg.step
    row_bytes = width * BYTES_PER_PIXEL[msg.encoding]
    data = bytes(msg.data)
    rows = np.array([np.frombuffer(data[r * step:r * step + row_bytes], np.uint8)
                     for r in range(height)]).reshape(height, row_bytes)
    encoding = msg.encoding
    if encoding in ('bgr8', '8UC3'):
        return rows.reshape(height, width, 3)
    if encoding == 'rgb8':
        return rows.reshape(height, width, 3)[:, :, ::-1]
    if encoding == 'bgra8':
        return rows.reshape(height, width, 4)[:, :, :3]
    if encoding == 'rgba8':
        return rows.reshape(height, width, 4)[:, :, [2, 1, 0]]
    if encoding in ('mono8', '8UC1'):
        return np.repeat(rows[:, :, None], 3, axis=2)
    if encoding in ('mono16', '16UC1'):
        dtype = '>u2' if msg.is_bigendian else '<u2'
        values = np.frombuffer(rows.tobytes(), dtype).reshape(height, width)
        return np.repeat((values >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    return cv2.cvtColor(rows.reshape(height, width, 2).copy(), YUV_CODES[encoding])


def random_rows(rng: np.random.Generator, encoding: str, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, (height, width * BYTES_PER_PIXEL[encoding]), np.uint8)


def assert_fresh_bgr(result: np.ndarray, msg) -> None:
    assert result.dtype == np.uint8
    assert result.shape == (msg.height, msg.width, 3)
    assert result.flags.c_contiguous and result.flags.writeable
    assert not np.shares_memory(result, np.frombuffer(msg.data, np.uint8))


@pytest.fixture(autouse=True)
def fresh_cv_bridge_probe():
    """Every test starts with an unprobed cv_bridge and leaves none behind."""
    ic.reset_cv_bridge_probe()
    yield
    ic.reset_cv_bridge_probe()


# ------------------------------------------------------------------------------------------------
# raw round trips


def test_supported_encodings_are_the_documented_set():
    assert set(SUPPORTED_ENCODINGS) == set(BYTES_PER_PIXEL)


# Odd padding for every 8-bit encoding; 16-bit rows must stay 2-byte aligned (an error case).
ROUND_TRIP_CASES = [(encoding, pad_bytes) for encoding in sorted(BYTES_PER_PIXEL)
                    for pad_bytes in (0, 6, 5)
                    if not (pad_bytes % 2 and encoding in ('mono16', '16UC1'))]


@pytest.mark.parametrize('case_index', range(len(ROUND_TRIP_CASES)),
                         ids=[f'{encoding}-pad{pad}' for encoding, pad in ROUND_TRIP_CASES])
def test_round_trip_every_encoding_with_and_without_padding(case_index):
    encoding, pad_bytes = ROUND_TRIP_CASES[case_index]
    rng = np.random.default_rng(case_index)
    height, width = 7, 10
    msg = make_image(encoding, random_rows(rng, encoding, height, width), width, pad_bytes)
    result = image_to_bgr(msg)
    assert_fresh_bgr(result, msg)
    np.testing.assert_array_equal(result, reference_bgr(msg))


def test_colour_encodings_match_cv2_on_a_random_image():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (48, 64, 3), np.uint8)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)
    for encoding, source in [('bgr8', bgr), ('8UC3', bgr), ('rgb8', rgb), ('bgra8', bgra),
                             ('rgba8', rgba)]:
        for pad_bytes in (0, 11):
            msg = make_image(encoding, source.reshape(48, -1), 64, pad_bytes)
            np.testing.assert_array_equal(image_to_bgr(msg), bgr, err_msg=encoding)
    grey = rng.integers(0, 256, (48, 64), np.uint8)
    for encoding in ('mono8', '8UC1'):
        msg = make_image(encoding, grey, 64, 3)
        np.testing.assert_array_equal(image_to_bgr(msg), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))


@pytest.mark.parametrize('encoding', sorted(YUV_CODES))
def test_yuv422_matches_cv2_own_conversion(encoding):
    rng = np.random.default_rng(1)
    packed = rng.integers(0, 256, (48, 64, 2), np.uint8)
    expected = cv2.cvtColor(packed, YUV_CODES[encoding])
    for pad_bytes in (0, 9):
        msg = make_image(encoding, packed.reshape(48, 128), 64, pad_bytes)
        np.testing.assert_array_equal(image_to_bgr(msg), expected)


def is_white_then_black(image: np.ndarray) -> bool:
    return bool(image[0, 0].min() > 240 and image[0, 1].max() < 10)


def test_yuv422_is_uyvy_and_yuv422_yuy2_is_yuyv():
    # A white pixel then a black one (BT.601 limited range: Y 235 / 16, neutral chroma 128).
    uyvy = np.array([[128, 235, 128, 16]], np.uint8)  # U Y0 V Y1
    yuyv = np.array([[235, 128, 16, 128]], np.uint8)  # Y0 U Y1 V
    for encoding in ('yuv422', 'uyvy'):
        assert is_white_then_black(image_to_bgr(make_image(encoding, uyvy, 2)))
        assert not is_white_then_black(image_to_bgr(make_image(encoding, yuyv, 2)))
    for encoding in ('yuv422_yuy2', 'yuyv'):
        assert is_white_then_black(image_to_bgr(make_image(encoding, yuyv, 2)))
        assert not is_white_then_black(image_to_bgr(make_image(encoding, uyvy, 2)))


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('is_bigendian', [0, 1])
@pytest.mark.parametrize('pad_bytes', [0, 4])
def test_16_bit_keeps_the_high_byte_in_either_byte_order(encoding, is_bigendian, pad_bytes):
    values = np.array([[0x0000, 0x00FF, 0x0100, 0x1234], [0x7FFF, 0x8000, 0xABCD, 0xFFFF]],
                      np.uint16)
    dtype = '>u2' if is_bigendian else '<u2'
    rows = np.frombuffer(values.astype(dtype).tobytes(), np.uint8).reshape(2, 8)
    msg = make_image(encoding, rows, 4, pad_bytes, is_bigendian=is_bigendian)
    result = image_to_bgr(msg)
    expected_high = np.array([[0x00, 0x00, 0x01, 0x12], [0x7F, 0x80, 0xAB, 0xFF]], np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(result[:, :, channel], expected_high)


def test_data_types_bytes_list_ndarray_and_duck_typed_message():
    rng = np.random.default_rng(2)
    rows = random_rows(rng, 'rgb8', 5, 6)
    real = make_image('rgb8', rows, 6, pad_bytes=3)
    assert isinstance(real.data, array.array)
    expected = reference_bgr(real)
    duck = make_image('rgb8', rows, 6, pad_bytes=3, cls=types.SimpleNamespace)
    for data in (bytes(real.data), bytearray(real.data), list(real.data),
                 np.frombuffer(bytes(real.data), np.uint8), memoryview(bytes(real.data))):
        duck.data = data
        np.testing.assert_array_equal(image_to_bgr(duck), expected)
    np.testing.assert_array_equal(image_to_bgr(real), expected)
    duck.data = 'not bytes'
    with pytest.raises(TypeError, match='bytes-like'):
        image_to_bgr(duck)
    duck.data = [0, 256] * 63
    with pytest.raises(TypeError, match='0..255'):
        image_to_bgr(duck)


def test_unpadded_bgr8_is_a_single_fresh_copy():
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (480, 640, 3), np.uint8)
    msg = make_image('bgr8', bgr.reshape(480, -1), 640)
    result = image_to_bgr(msg)
    assert_fresh_bgr(result, msg)
    np.testing.assert_array_equal(result, bgr)
    result[0, 0] = 7  # writable, and the message is untouched
    assert msg.data[0] == bgr[0, 0, 0]


def test_module_imports_without_ros():
    code = ('import sys\n'
            "for name in ('rclpy', 'sensor_msgs', 'std_msgs', 'cv_bridge'):\n"
            '    sys.modules[name] = None\n'
            'import diffpose_ros.ros.image_conversion as m\n'
            "print(m.cv_bridge_status().split(':')[0])\n")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120, cwd=pathlib.Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'unavailable'


# ------------------------------------------------------------------------------------------------
# raw error kinds


def valid_bgr8(height: int = 4, width: int = 6) -> Image:
    rows = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width * 3)
    return make_image('bgr8', rows, width)


def assert_kind(msg, kind: str, **kwargs) -> None:
    with pytest.raises(ImageConversionError) as caught:
        image_to_bgr(msg, **kwargs)
    assert caught.value.kind == kind, str(caught.value)


def with_fields(msg, **fields):
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


RAW_ERROR_CASES = [
    ('unknown encoding', lambda: with_fields(valid_bgr8(), encoding='bayer_rggb8'),
     'unknown_encoding', "'bayer_rggb8'"),
    ('empty encoding', lambda: with_fields(valid_bgr8(), encoding=''), 'unknown_encoding', "''"),
    ('encodings are case sensitive', lambda: with_fields(valid_bgr8(), encoding='BGR8'),
     'unknown_encoding', 'BGR8'),
    ('step too small', lambda: with_fields(valid_bgr8(), step=17, data=bytes(4 * 17)),
     'inconsistent_size', 'step 17 < width 6 x 3 bytes for bgr8'),
    ('step not a multiple of the element size',
     lambda: make_image('mono16', np.zeros((3, 8), np.uint8), 4, pad_bytes=1),
     'inconsistent_size', 'step 9 is not a multiple of the 2-byte element size of mono16'),
    ('odd width for packed yuv',
     lambda: make_image('yuv422', np.zeros((2, 10), np.uint8), 5),
     'inconsistent_size', 'width 5 is odd'),
    ('extra trailing bytes', lambda: with_fields(valid_bgr8(), data=bytes(4 * 18 + 1)),
     'inconsistent_size', '73 bytes of data > height 4 x step 18 = 72 (1 extra)'),
    ('empty data', lambda: with_fields(valid_bgr8(), data=b''), 'empty', 'no data'),
    ('truncated data', lambda: with_fields(valid_bgr8(), data=bytes(71)), 'truncated',
     '71 bytes of data < height 4 x step 18 = 72'),
    ('zero width', lambda: with_fields(valid_bgr8(), width=0), 'zero_dimension', '0x4'),
    ('zero height', lambda: with_fields(valid_bgr8(), height=0), 'zero_dimension', '6x0'),
    ('zero everywhere (default message)', Image, 'zero_dimension', '0x0'),
    ('oversize raw',
     lambda: with_fields(valid_bgr8(), width=100_000, height=100_000, step=300_000),
     'oversize', '10000000000 pixels > max_pixels 16777216'),
    ('negative size (duck-typed)',
     lambda: types.SimpleNamespace(height=2, width=-3, step=6, encoding='bgr8', is_bigendian=0,
                                   data=bytes(12)),
     'inconsistent_size', 'negative size'),
]


@pytest.mark.parametrize('make_msg, kind, text', [case[1:] for case in RAW_ERROR_CASES],
                         ids=[case[0] for case in RAW_ERROR_CASES])
@pytest.mark.parametrize('use_cv_bridge', [True, False])
def test_raw_error_kinds(make_msg, kind, text, use_cv_bridge):
    with pytest.raises(ImageConversionError) as caught:
        image_to_bgr(make_msg(), use_cv_bridge=use_cv_bridge)
    assert caught.value.kind == kind
    assert isinstance(caught.value, ValueError)
    assert text in str(caught.value)


def test_oversize_uses_max_pixels_and_is_checked_before_the_data():
    msg = valid_bgr8(4, 6)
    assert image_to_bgr(msg, max_pixels=24).shape == (4, 6, 3)
    with pytest.raises(ImageConversionError) as caught:
        image_to_bgr(msg, max_pixels=23)
    assert caught.value.kind == 'oversize'
    # Huge dimensions with almost no data: oversize, not truncated, and nothing is allocated.
    with pytest.raises(ImageConversionError) as caught:
        image_to_bgr(with_fields(valid_bgr8(), width=70_000, height=70_000, step=210_000))
    assert caught.value.kind == 'oversize'
    with pytest.raises(ValueError, match='max_pixels must be positive'):
        image_to_bgr(msg, max_pixels=0)


def test_error_rule_order_first_failing_rule_wins():
    # zero dimension beats unknown encoding; unknown encoding beats empty data; empty beats a
    # bad step; a bad step beats truncation.
    assert_kind(with_fields(valid_bgr8(), width=0, encoding='nope'), 'zero_dimension')
    assert_kind(with_fields(valid_bgr8(), encoding='nope', data=b''), 'unknown_encoding')
    assert_kind(with_fields(valid_bgr8(), step=0, data=b''), 'empty')
    assert_kind(with_fields(valid_bgr8(), step=5, data=bytes(3)), 'inconsistent_size')


def test_error_kind_must_be_known():
    with pytest.raises(ValueError, match='unknown ImageConversionError kind'):
        ImageConversionError('bad', 'message')
    assert ImageConversionError('empty', 'no data').kind == 'empty'


# ------------------------------------------------------------------------------------------------
# compressed images


def smooth_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)


def compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage()
    msg.format = fmt
    msg.data = data
    return msg


def encode(extension: str, image: np.ndarray, *params: int) -> bytes:
    ok, encoded = cv2.imencode(extension, image, list(params))
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize('fmt', ['png', 'bgr8; png compressed bgr8', 'rgb8; png compressed bgr8',
                                 'PNG', ''])
def test_png_round_trip_is_exact(fmt):
    image = smooth_image(4)
    msg = compressed(fmt, encode('.png', image))
    result = compressed_to_bgr(msg)
    assert result.flags.c_contiguous and result.flags.writeable
    np.testing.assert_array_equal(result, image)


@pytest.mark.parametrize('fmt', ['jpeg', 'jpg', 'rgb8; jpeg compressed bgr8',
                                 'bgr8; jpeg compressed bgr8', ''])
def test_jpeg_round_trip_within_tolerance(fmt):
    image = smooth_image(5)
    data = encode('.jpg', image, cv2.IMWRITE_JPEG_QUALITY, 95)
    result = compressed_to_bgr(compressed(fmt, data))
    assert result.shape == image.shape and result.dtype == np.uint8
    error = np.abs(result.astype(int) - image)
    assert error.mean() < 4 and error.max() <= 40


def test_greyscale_and_16_bit_png_come_back_as_8_bit_bgr():
    grey = smooth_image(6)[:, :, 0].copy()
    result = compressed_to_bgr(compressed('mono8; png compressed mono8', encode('.png', grey)))
    np.testing.assert_array_equal(result, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    values = np.random.default_rng(7).integers(0, 65536, (5, 6), np.uint16)
    result = compressed_to_bgr(compressed('mono16; png compressed mono16',
                                          encode('.png', values)))
    assert result.shape == (5, 6, 3)
    np.testing.assert_array_equal(result[:, :, 1], (values >> 8).astype(np.uint8))


def test_progressive_jpeg_header_size_is_read():
    image = smooth_image(8, 40, 56)
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]):
        data = encode('.jpg', image, *params)
        assert ic._jpeg_size_hw(np.frombuffer(data, np.uint8)) == (40, 56)
    assert ic._png_size_hw(np.frombuffer(encode('.png', image), np.uint8)) == (40, 56)


def exif_orientation_segment(orientation: int) -> bytes:
    """A little-endian EXIF APP1 segment whose only tag is Orientation."""
    tiff = (b'II*\x00' + (8).to_bytes(4, 'little') + (1).to_bytes(2, 'little')
            + (0x0112).to_bytes(2, 'little') + (3).to_bytes(2, 'little')
            + (1).to_bytes(4, 'little') + orientation.to_bytes(2, 'little') + bytes(2)
            + bytes(4))
    payload = b'Exif\x00\x00' + tiff
    return b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload


def test_exif_orientation_is_ignored_so_pixels_stay_in_the_camera_frame():
    image = smooth_image(9, 32, 64)
    jpeg = encode('.jpg', image, cv2.IMWRITE_JPEG_QUALITY, 95)
    rotated_tag = jpeg[:2] + exif_orientation_segment(6) + jpeg[2:]
    # cv2 alone would rotate by 90 degrees: the tag is real.
    assert cv2.imdecode(np.frombuffer(rotated_tag, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (
        64, 32)
    assert compressed_to_bgr(compressed('jpeg', rotated_tag)).shape == (32, 64, 3)


def corrupt(data: bytes, start: int, length: int, seed: int = 0) -> bytes:
    garbage = np.random.default_rng(seed).integers(0, 256, length, np.uint8).tobytes()
    return data[:start] + garbage + data[start + length:]


def png_with_garbage() -> bytes:
    data = encode('.png', smooth_image(10))
    idat = data.index(b'IDAT')
    return corrupt(data, idat + 8, 40)


COMPRESSED_ERROR_CASES = [
    ('compressedDepth', lambda: compressed('16UC1; compressedDepth png', b'\x00' * 20),
     'unknown_encoding', 'compressedDepth'),
    ('compressedDepth legacy', lambda: compressed('32FC1; compressedDepth', b'\x00' * 20),
     'unknown_encoding', 'compressedDepth'),
    ('unknown codec', lambda: compressed('h264', b'\x00' * 20), 'corrupt_compressed', "'h264'"),
    ('empty data', lambda: compressed('jpeg', b''), 'empty', 'no data'),
    ('random bytes', lambda: compressed('jpeg', bytes(range(256)) * 4), 'corrupt_compressed',
     'cannot decode'),
    ('corrupt jpeg bytes',
     lambda: compressed('jpeg', corrupt(encode('.jpg', smooth_image(11)), 2, 300)),
     'corrupt_compressed', ''),
    ('truncated jpeg',
     lambda: compressed('jpeg', encode('.jpg', smooth_image(12))[:-200]),
     'corrupt_compressed', 'no end-of-image marker'),
    ('truncated png',
     lambda: compressed('png', encode('.png', smooth_image(13))[:-100]),
     'corrupt_compressed', 'cannot decode'),
    ('png with garbage', lambda: compressed('png', png_with_garbage()), 'corrupt_compressed',
     'cannot decode'),
]


@pytest.mark.parametrize('make_msg, kind, text', [case[1:] for case in COMPRESSED_ERROR_CASES],
                         ids=[case[0] for case in COMPRESSED_ERROR_CASES])
def test_compressed_error_kinds(make_msg, kind, text):
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_bgr(make_msg())
    assert caught.value.kind == kind
    assert text in str(caught.value)


@pytest.mark.parametrize('extension', ['.png', '.jpg'])
def test_oversize_compressed_is_rejected_from_the_header_before_decoding(extension, monkeypatch):
    data = encode(extension, smooth_image(14, 48, 64))
    assert compressed_to_bgr(compressed('', data), max_pixels=48 * 64).shape == (48, 64, 3)

    def no_decoding(*args, **kwargs):
        raise AssertionError('decoded an oversize image')

    monkeypatch.setattr(ic.cv2, 'imdecode', no_decoding)
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_bgr(compressed('', data), max_pixels=48 * 64 - 1)
    assert caught.value.kind == 'oversize'
    assert 'header declares 64x48 = 3072 pixels > max_pixels 3071' in str(caught.value)


def test_oversize_compressed_by_byte_count_before_decoding(monkeypatch):
    monkeypatch.setattr(ic.cv2, 'imdecode', lambda *args: pytest.fail('decoded'))
    limit = 10 * ic.COMPRESSED_MAX_BYTES_PER_PIXEL + ic.COMPRESSED_SLACK_BYTES
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_bgr(compressed('jpeg', bytes(limit + 1)), max_pixels=10)
    assert caught.value.kind == 'oversize'
    assert f'{limit + 1} bytes > {limit} allowed' in str(caught.value)


def test_oversize_after_decoding_when_the_header_is_not_parsed(monkeypatch):
    data = encode('.png', smooth_image(15))
    monkeypatch.setattr(ic, '_png_size_hw', lambda flat: None)
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_bgr(compressed('png', data), max_pixels=100)
    assert caught.value.kind == 'oversize' and 'decoded 64x48' in str(caught.value)


def test_compressed_duck_typed_message_with_bytes():
    image = smooth_image(16)
    msg = types.SimpleNamespace(format='png', data=encode('.png', image))
    np.testing.assert_array_equal(compressed_to_bgr(msg), image)


# ------------------------------------------------------------------------------------------------
# cv_bridge probe and fallback


class CvBridgeError(Exception):
    """Named like cv_bridge's own error, which the module recognises by name."""


def fake_cv_bridge_module(convert=None, init_error: Exception | None = None):
    """A stand-in ``cv_bridge`` module; ``convert(msg)`` replaces the numpy conversion."""
    module = types.ModuleType('cv_bridge')
    module.calls = []

    class CvBridge:
        def __init__(self):
            if init_error is not None:
                raise init_error

        def imgmsg_to_cv2(self, msg, desired_encoding='passthrough'):
            assert desired_encoding == 'bgr8'
            module.calls.append(msg.encoding)
            if convert is not None:
                return convert(msg)
            return image_to_bgr(msg, use_cv_bridge=False)

    module.CvBridge = CvBridge
    module.CvBridgeError = CvBridgeError
    return module


def test_cv_bridge_is_unavailable_in_this_environment_or_when_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, 'cv_bridge', None)
    assert cv_bridge_status().startswith('unavailable: ')
    msg = make_image('rgb8', random_rows(np.random.default_rng(17), 'rgb8', 3, 4), 4)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))


def test_working_cv_bridge_is_used_for_the_encodings_it_handles(monkeypatch):
    fake = fake_cv_bridge_module()
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    assert cv_bridge_status() == 'ok'
    assert fake.calls == ['rgb8']  # the self-test
    rng = np.random.default_rng(18)
    for encoding in ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'yuv422'):
        msg = make_image(encoding, random_rows(rng, encoding, 5, 6), 6, pad_bytes=2 * 12)
        result = image_to_bgr(msg)
        assert fake.calls[-1] == encoding
        assert_fresh_bgr(result, msg)
        np.testing.assert_array_equal(result, reference_bgr(msg))
    calls = len(fake.calls)
    # Never through cv_bridge: 16-bit (it rounds), generic/alias encodings, YUYV, a step that is
    # not a whole number of pixels, a big-endian flag (numpy-2 newbyteorder), or when disabled.
    skipped = [make_image(encoding, random_rows(rng, encoding, 3, 4), 4)
               for encoding in ('mono16', '16UC1', '8UC3', '8UC1', 'uyvy', 'yuyv', 'yuv422_yuy2')]
    skipped.append(make_image('bgr8', random_rows(rng, 'bgr8', 3, 4), 4, pad_bytes=1))
    skipped.append(make_image('rgb8', random_rows(rng, 'rgb8', 3, 4), 4, is_bigendian=1))
    skipped.append(make_image('bgr8', np.asarray([[1, 2, 3]], np.uint8), 1,
                              cls=types.SimpleNamespace))
    skipped[-1].data = [1, 2, 3]  # not a buffer: cv_bridge's np.ndarray(buffer=...) would fail
    for msg in skipped:
        np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    np.testing.assert_array_equal(image_to_bgr(skipped[0], use_cv_bridge=False),
                                  reference_bgr(skipped[0]))
    assert len(fake.calls) == calls
    assert cv_bridge_status() == 'ok'


def test_cv_bridge_view_results_are_copied(monkeypatch):
    def zero_copy_view(msg):
        return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)

    def convert(msg):
        return (zero_copy_view(msg) if msg.encoding == 'bgr8'
                else image_to_bgr(msg, use_cv_bridge=False))

    fake = fake_cv_bridge_module(convert)
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    msg = valid_bgr8()
    result = image_to_bgr(msg)
    assert fake.calls[-1] == 'bgr8'
    assert_fresh_bgr(result, msg)


def test_malformed_messages_are_classified_before_cv_bridge_sees_them(monkeypatch):
    fake = fake_cv_bridge_module()
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    for make_msg, kind, _ in [case[1:] for case in RAW_ERROR_CASES]:
        assert_kind(make_msg(), kind)
    assert fake.calls in ([], ['rgb8'])  # at most the self-test ran


@pytest.mark.parametrize('error', [ImportError('numpy.core.multiarray failed to import'),
                                   AttributeError('_ARRAY_API not found')])
def test_cv_bridge_broken_at_construction_falls_back(monkeypatch, error):
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake_cv_bridge_module(init_error=error))
    msg = make_image('rgb8', random_rows(np.random.default_rng(19), 'rgb8', 3, 4), 4)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    assert cv_bridge_status() == f'broken: {type(error).__name__}: {error}'


def test_cv_bridge_failing_its_self_test_is_broken(monkeypatch):
    def wrong_pixels(msg):
        return np.zeros((msg.height, msg.width, 3), np.uint8)

    fake = fake_cv_bridge_module(wrong_pixels)
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    msg = make_image('rgb8', random_rows(np.random.default_rng(20), 'rgb8', 3, 4), 4)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    assert cv_bridge_status().startswith('broken: self-test')
    assert fake.calls == ['rgb8']


def test_cv_bridge_failing_at_call_time_is_marked_broken_and_not_used_again(monkeypatch):
    def fails_on_real_frames(msg):
        if msg.height > 2:
            raise AttributeError("module 'numpy' has no attribute 'newbyteorder'")
        return image_to_bgr(msg, use_cv_bridge=False)

    fake = fake_cv_bridge_module(fails_on_real_frames)
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    assert cv_bridge_status() == 'ok'
    msg = make_image('rgb8', random_rows(np.random.default_rng(21), 'rgb8', 3, 4), 4)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    status = cv_bridge_status()
    assert status.startswith('broken: AttributeError') and 'converting rgb8' in status
    calls = len(fake.calls)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    assert len(fake.calls) == calls


def test_cv_bridge_error_for_one_encoding_falls_back_for_that_encoding_only(monkeypatch):
    def no_yuv(msg):
        if msg.encoding == 'yuv422':
            raise CvBridgeError('Unsupported conversion from yuv422 to bgr8')
        return image_to_bgr(msg, use_cv_bridge=False)

    fake = fake_cv_bridge_module(no_yuv)
    monkeypatch.setitem(sys.modules, 'cv_bridge', fake)
    rng = np.random.default_rng(22)
    yuv = make_image('yuv422', random_rows(rng, 'yuv422', 3, 4), 4)
    for _ in range(3):
        np.testing.assert_array_equal(image_to_bgr(yuv), reference_bgr(yuv))
    assert fake.calls.count('yuv422') == 1
    assert cv_bridge_status() == 'ok'
    rgb = make_image('rgb8', random_rows(rng, 'rgb8', 3, 4), 4)
    image_to_bgr(rgb)
    assert fake.calls.count('rgb8') == 2  # self-test + this frame


def test_cv_bridge_returning_the_wrong_shape_is_broken(monkeypatch):
    def wrong_shape(msg):
        if msg.height > 2:
            return np.zeros((msg.height, msg.width), np.uint8)
        return image_to_bgr(msg, use_cv_bridge=False)

    monkeypatch.setitem(sys.modules, 'cv_bridge', fake_cv_bridge_module(wrong_shape))
    msg = make_image('mono8', random_rows(np.random.default_rng(23), 'mono8', 3, 4), 4)
    np.testing.assert_array_equal(image_to_bgr(msg), reference_bgr(msg))
    assert cv_bridge_status().startswith('broken: returned (3, 4)')


# ------------------------------------------------------------------------------------------------
# BGR -> Image


def test_bgr_to_image_msg_round_trip():
    image = smooth_image(24, 30, 40)
    header = Header(frame_id='camera')
    header.stamp.sec = 12
    header.stamp.nanosec = 345
    msg = bgr_to_image_msg(image, header, Image)
    assert isinstance(msg, Image)
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian) == (
        30, 40, 'bgr8', 120, 0)
    assert msg.header.frame_id == 'camera' and msg.header.stamp.nanosec == 345
    assert len(msg.data) == 30 * 120
    np.testing.assert_array_equal(image_to_bgr(msg), image)
    # A non-contiguous view is written in C order.
    view = image[::2, ::-1]
    np.testing.assert_array_equal(image_to_bgr(bgr_to_image_msg(view, header, Image)), view)
    assert bgr_to_image_msg(image, None, Image).header.frame_id == ''


def test_bgr_to_image_msg_rejects_non_bgr_arrays():
    for bad in (np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8),
                np.zeros((4, 5, 3), np.float32), [[0, 0, 0]]):
        with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
            bgr_to_image_msg(bad, None, Image)


# ------------------------------------------------------------------------------------------------
# randomised malformed inputs


def random_malformed_image(rng: np.random.Generator) -> Image:
    """A valid random image, then zero to three random mutations of its fields and data."""
    encoding = str(rng.choice(SUPPORTED_ENCODINGS))
    height = int(rng.integers(1, 9))
    width = int(rng.integers(1, 9)) * 2
    pad_bytes = int(rng.choice([0, 1, 2, 4, 7]))
    msg = make_image(encoding, random_rows(rng, encoding, height, width), width, pad_bytes,
                     is_bigendian=int(rng.integers(0, 2)))
    for _ in range(int(rng.integers(0, 4))):
        mutation = int(rng.integers(0, 8))
        if mutation == 0:
            msg.width = int(rng.choice([0, 1, msg.width - 1, msg.width + 1, 2**31, 2**32 - 1]))
        elif mutation == 1:
            msg.height = int(rng.choice([0, 1, msg.height - 1, msg.height + 1, 2**32 - 1]))
        elif mutation == 2:
            msg.step = int(rng.choice([0, 1, max(msg.step - 1, 0), msg.step + 1, msg.step * 2,
                                       2**32 - 1]))
        elif mutation == 3:
            msg.encoding = str(rng.choice([*SUPPORTED_ENCODINGS, '', 'bayer_rggb8', '32FC1',
                                           'RGB8', 'mono8 ', 'yuv420']))
        elif mutation == 4:
            msg.data = bytes(msg.data)[:int(rng.integers(0, len(msg.data) + 1))]
        elif mutation == 5:
            msg.data = bytes(msg.data) + bytes(int(rng.integers(1, 64)))
        elif mutation == 6:
            msg.data = b''
        else:
            msg.is_bigendian = int(rng.integers(0, 256))
    return msg


@pytest.mark.parametrize('use_cv_bridge', [False, True])
def test_random_malformed_images_return_correct_arrays_or_classified_errors(
        use_cv_bridge, monkeypatch):
    if use_cv_bridge:
        monkeypatch.setitem(sys.modules, 'cv_bridge', fake_cv_bridge_module())
    rng = np.random.default_rng(20240601)
    outcomes = {'ok': 0} | {kind: 0 for kind in BAD_INPUT_KINDS}
    for _ in range(200):
        msg = random_malformed_image(rng)
        try:
            result = image_to_bgr(msg, max_pixels=1 << 20, use_cv_bridge=use_cv_bridge)
        except ImageConversionError as exc:
            assert exc.kind in BAD_INPUT_KINDS
            outcomes[exc.kind] += 1
            continue
        assert_fresh_bgr(result, msg)
        np.testing.assert_array_equal(result, reference_bgr(msg))
        outcomes['ok'] += 1
    # The mutations reach every raw-image outcome (corrupt_compressed is compressed-only).
    assert all(outcomes[name] > 0 for name in outcomes if name != 'corrupt_compressed'), outcomes


def test_random_malformed_compressed_images_return_arrays_or_classified_errors():
    rng = np.random.default_rng(7)
    sources = [encode('.jpg', smooth_image(25)), encode('.png', smooth_image(26)),
               encode('.jpg', smooth_image(27)[:, :, 0].copy())]
    formats = ['jpeg', 'png', '', 'rgb8; jpeg compressed bgr8', 'tiff', '16UC1; compressedDepth']
    for _ in range(100):
        data = bytearray(sources[int(rng.integers(0, len(sources)))])
        mutation = int(rng.integers(0, 4))
        if mutation == 0:
            del data[int(rng.integers(0, len(data))):]
        elif mutation == 1:
            start = int(rng.integers(0, len(data)))
            length = int(rng.integers(1, 32))
            data[start:start + length] = rng.integers(0, 256, length, np.uint8).tobytes()
        elif mutation == 2:
            data += rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
        msg = compressed(str(rng.choice(formats)), bytes(data))
        try:
            result = compressed_to_bgr(msg, max_pixels=int(rng.choice([100, 1 << 20])))
        except ImageConversionError as exc:
            assert exc.kind in BAD_INPUT_KINDS
            continue
        assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3


# ---------------------------------------------------------------------------------------------
# depth images


def _depth_msg(values: np.ndarray, encoding: str, pad_bytes: int = 0,
               bigendian: bool = False) -> Image:
    order = '>' if bigendian else '<'
    raw = values.astype(values.dtype.newbyteorder(order)).view(np.uint8).reshape(
        values.shape[0], -1)
    data, step = pack_rows(raw, pad_bytes)
    return Image(height=values.shape[0], width=values.shape[1], encoding=encoding,
                 is_bigendian=int(bigendian), step=step, data=data)


@pytest.mark.parametrize('encoding, dtype', [('16UC1', np.uint16), ('mono16', np.uint16),
                                             ('32FC1', np.float32)])
@pytest.mark.parametrize('pad_bytes, bigendian', [(0, False), (4, False), (8, True)])
def test_depth_image_round_trip(encoding, dtype, pad_bytes, bigendian):
    rng = np.random.default_rng(3)
    values = (rng.uniform(0, 5000, (5, 7)) if dtype == np.uint16
              else rng.uniform(0.1, 5.0, (5, 7))).astype(dtype)
    values[0, 0] = 0
    msg = _depth_msg(values, encoding, pad_bytes, bigendian)
    depth, got_encoding = ic.depth_image_to_array(msg)
    assert got_encoding == encoding and depth.dtype == dtype and depth.dtype.isnative
    np.testing.assert_array_equal(depth, values)
    assert depth.flags.c_contiguous and not np.may_share_memory(depth, msg.data)


def test_depth_image_errors():
    values = np.ones((4, 6), np.uint16)
    bgr = Image(height=4, width=6, encoding='bgr8', step=18, data=bytes(72))
    cases = {
        'unknown_encoding': bgr,
        'truncated': Image(height=4, width=6, encoding='16UC1', step=12, data=bytes(40)),
        'inconsistent_size': Image(height=4, width=6, encoding='32FC1', step=22, data=bytes(88)),
        'zero_dimension': Image(height=0, width=6, encoding='16UC1', step=12, data=b''),
        'empty': Image(height=4, width=6, encoding='16UC1', step=12, data=b''),
    }
    for kind, msg in cases.items():
        with pytest.raises(ImageConversionError) as info:
            ic.depth_image_to_array(msg)
        assert info.value.kind == kind, (kind, str(info.value))
    with pytest.raises(ImageConversionError, match='16UC1, mono16, 32FC1') as info:
        ic.depth_image_to_array(bgr)
    with pytest.raises(ImageConversionError) as info:
        ic.depth_image_to_array(_depth_msg(values, '16UC1'), max_pixels=20)
    assert info.value.kind == 'oversize'
