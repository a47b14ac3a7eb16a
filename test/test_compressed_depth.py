"""compressedDepth decoding (diffpose_ros/compressed_depth.py) against encoders written here from
compressed_depth_image_transport's spec (codec.cpp / rvl_codec.cpp), a hand-made RVL byte
vector, a real Kinect depth PNG, and malformed messages."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffpose_ros.compressed_depth import (
    COMPRESSED_DEPTH_ERROR_KINDS,
    CompressedDepthError,
    decode_compressed_depth,
    parse_format,
)

RGBD = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'rgbd'
DEPTH_MAX_M = 10.0  # the publisher's default depth_max
DEPTH_QUANTIZATION = 100.0  # ... and depth_quantization


# --- encoders, as the publisher does it ------------------------------------------------------

def _header(quant_a: float = 0.0, quant_b: float = 0.0) -> bytes:
    return struct.pack('<iff', 0, quant_a, quant_b)  # INV_DEPTH = 0


def _rvl_encode(image: np.ndarray) -> bytes:
    """RVL as in rvl_codec.cpp: nibbles packed most significant first into native int32 words."""
    words: list[int] = []
    state = {'word': 0, 'nibbles': 0}

    def vle(value: int) -> None:
        while True:
            nibble = value & 0x7
            value >>= 3
            if value:
                nibble |= 0x8
            state['word'] = ((state['word'] << 4) | nibble) & 0xFFFFFFFF
            state['nibbles'] += 1
            if state['nibbles'] == 8:
                words.append(state['word'])
                state['word'] = state['nibbles'] = 0
            if not value:
                break

    pixels = [int(v) for v in image.ravel()]
    i, previous = 0, 0
    while i < len(pixels):
        zeros = 0
        while i < len(pixels) and pixels[i] == 0:
            zeros, i = zeros + 1, i + 1
        vle(zeros)
        nonzeros = 0
        while i + nonzeros < len(pixels) and pixels[i + nonzeros]:
            nonzeros += 1
        vle(nonzeros)
        for _ in range(nonzeros):
            delta = pixels[i] - previous
            vle(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
            previous = pixels[i]
            i += 1
    if state['nibbles']:
        words.append((state['word'] << 4 * (8 - state['nibbles'])) & 0xFFFFFFFF)
    height, width = image.shape
    return struct.pack('<II', width, height) + struct.pack(f'<{len(words)}I', *words)


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.png', image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return encoded.tobytes()


def encode_16uc1(depth_mm: np.ndarray, codec: str = 'png') -> tuple[str, bytes]:
    body = _png(depth_mm) if codec == 'png' else _rvl_encode(depth_mm)
    return f'16UC1; compressedDepth {codec}', _header() + body


def encode_32fc1(depth_m: np.ndarray, codec: str = 'png') -> tuple[str, bytes]:
    """Inverse-depth quantisation: q = A / z + B truncated, 0 at/after depth_max (and NaN)."""
    z0 = np.float32(DEPTH_QUANTIZATION)
    quant_a = np.float32(z0 * (z0 + np.float32(1)))
    quant_b = np.float32(np.float32(1) - quant_a / np.float32(DEPTH_MAX_M))
    with np.errstate(invalid='ignore', divide='ignore'):
        keep = depth_m < DEPTH_MAX_M  # False for NaN, as in the C comparison
        q = np.where(keep, quant_a / depth_m + quant_b, 0)
    inverse = np.trunc(q).astype(np.uint16)
    body = _png(inverse) if codec == 'png' else _rvl_encode(inverse)
    return f'32FC1; compressedDepth {codec}', _header(float(quant_a), float(quant_b)) + body


def _synthetic_depth_mm(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(12)
    depth = rng.integers(300, 9000, size=(height, width)).astype(np.uint16)
    depth[rng.random((height, width)) < 0.3] = 0          # scattered holes
    depth[:, :7] = 0                                       # a shadow band
    depth[-1, -5:] = 0                                     # ends in zeros
    depth[0, 0] = 65535                                    # full range
    return depth


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_16uc1_round_trip_is_exact(codec):
    depth = _synthetic_depth_mm()
    decoded, encoding = decode_compressed_depth(*encode_16uc1(depth, codec))
    assert encoding == '16UC1' and decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, depth)


def test_rvl_image_ending_in_non_zero_pixels_and_all_zero_image():
    ending_nonzero = _synthetic_depth_mm(5, 7)
    ending_nonzero[-1, -1] = 1234
    decoded, _ = decode_compressed_depth(*encode_16uc1(ending_nonzero, 'rvl'))
    np.testing.assert_array_equal(decoded, ending_nonzero)
    empty = np.zeros((30, 40), np.uint16)
    decoded, _ = decode_compressed_depth(*encode_16uc1(empty, 'rvl'))
    np.testing.assert_array_equal(decoded, empty)


def test_rvl_hand_made_byte_vector():
    # pixels 0 0 5 6: VLE 2 (zeros), 2 (non-zeros), zigzag(5) = 10 -> nibbles 0xA 0x1, zigzag(1)
    # = 2; nibbles 2 2 A 1 2 packed from the top of one little-endian word: 0x22A12000.
    data = _header() + struct.pack('<II', 4, 1) + bytes([0x00, 0x20, 0xA1, 0x22])
    decoded, _ = decode_compressed_depth('16UC1; compressedDepth rvl', data)
    np.testing.assert_array_equal(decoded, [[0, 0, 5, 6]])
    assert _rvl_encode(np.array([[0, 0, 5, 6]], np.uint16)) == data[12:]


def test_rvl_deltas_wrap_like_uint16_and_chunks_split_values():
    # Large jumps (deltas of +-65535) and an image long enough for several decode chunks.
    rng = np.random.default_rng(3)
    depth = rng.choice(np.array([1, 65535, 0, 40000], np.uint16), size=(300, 1000))
    decoded, _ = decode_compressed_depth(*encode_16uc1(depth, 'rvl'))
    np.testing.assert_array_equal(decoded, depth)


@pytest.mark.parametrize('codec', ['png', 'rvl'])
def test_32fc1_round_trip_within_quantisation(codec):
    rng = np.random.default_rng(7)
    depth = rng.uniform(0.3, 9.9, size=(40, 50)).astype(np.float32)
    depth[5:9, 10:20] = np.nan                    # no data
    depth[20, :] = 12.0                           # beyond depth_max -> no data
    decoded, encoding = decode_compressed_depth(*encode_32fc1(depth, codec))
    assert encoding == '32FC1' and decoded.dtype == np.float32
    lost = ~np.isfinite(depth) | (depth >= DEPTH_MAX_M)
    assert np.isnan(decoded[lost]).all()
    quant_a = DEPTH_QUANTIZATION * (DEPTH_QUANTIZATION + 1)
    kept = ~lost
    # truncation rounds q down, so decoded >= true, by less than one step z * z' / A
    error = decoded[kept] - depth[kept]
    step = depth[kept] * decoded[kept] / quant_a
    assert (error >= -1e-5 * depth[kept]).all()
    assert (error <= step * 1.001 + 1e-5).all()
    assert np.abs(error).max() < 0.011          # 1 cm at 10 m with the default settings


def test_older_format_strings_mean_png():
    depth = _synthetic_depth_mm(8, 8)
    _, data = encode_16uc1(depth)
    for fmt in ('16UC1; compressedDepth', '16UC1'):
        decoded, encoding = decode_compressed_depth(fmt, data)
        assert encoding == '16UC1'
        np.testing.assert_array_equal(decoded, depth)
    assert parse_format('32FC1; compressedDepth rvl') == ('32FC1', 'rvl')
    assert parse_format('mono16; compressedDepth png') == ('mono16', 'png')


def test_accepts_buffer_types_of_rclpy_and_rosbags():
    import array

    depth = _synthetic_depth_mm(6, 9)
    fmt, data = encode_16uc1(depth)
    for buffer in (array.array('B', data), np.frombuffer(data, np.uint8), bytearray(data)):
        np.testing.assert_array_equal(decode_compressed_depth(fmt, buffer)[0], depth)


# --- real data ---------------------------------------------------------------------------------

def test_real_kinect_depth_png_wrapped_as_compressed_depth():
    files = sorted((RGBD / 'kinect_upper_body' / 'depth').glob('*.png'))
    if not files:
        pytest.skip(f'real RGB-D frames not found under {RGBD}')
    png = files[0].read_bytes()
    expected = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert expected.dtype == np.uint16 and expected.shape == (480, 640)
    decoded, encoding = decode_compressed_depth('16UC1; compressedDepth png', _header() + png)
    assert encoding == '16UC1'
    np.testing.assert_array_equal(decoded, expected)
    crop = expected[200:280, 260:380]  # the person and the shadow: RVL on real runs of zeros
    decoded, _ = decode_compressed_depth(*encode_16uc1(crop, 'rvl'))
    np.testing.assert_array_equal(decoded, crop)


# --- malformed messages ------------------------------------------------------------------------

def _kind(fmt, data, **kwargs) -> str:
    with pytest.raises(CompressedDepthError) as info:
        decode_compressed_depth(fmt, data, **kwargs)
    assert info.value.kind in COMPRESSED_DEPTH_ERROR_KINDS
    assert isinstance(info.value, ValueError) and str(info.value)
    return info.value.kind


def test_unknown_formats_and_encodings():
    _, data = encode_16uc1(_synthetic_depth_mm(8, 8))
    for fmt in ('16UC1; compressedDepth jpeg', '16UC1; jpeg compressed bgr8',
                'rgb8; compressedDepth png', '8UC1; compressedDepth', 'png', ''):
        assert _kind(fmt, data) == 'compressed_depth_format', fmt


def test_truncated_and_corrupt_data():
    fmt, data = encode_16uc1(_synthetic_depth_mm())
    assert _kind(fmt, b'') == 'corrupt_compressed_depth'
    assert _kind(fmt, data[:12]) == 'corrupt_compressed_depth'           # header only
    assert _kind(fmt, data[:30]) == 'corrupt_compressed_depth'           # PNG header cut
    assert _kind(fmt, data[:len(data) // 2]) == 'corrupt_compressed_depth'  # PNG body cut
    assert _kind(fmt, _header() + b'\x89PNX' + data[16:]) == 'corrupt_compressed_depth'
    garbled = bytearray(data)
    garbled[80:120] = bytes(40)
    assert _kind(fmt, bytes(garbled)) == 'corrupt_compressed_depth'
    rvl_fmt, rvl = encode_16uc1(_synthetic_depth_mm(), 'rvl')
    assert _kind(rvl_fmt, rvl[:len(rvl) // 2]) == 'corrupt_compressed_depth'
    assert _kind(rvl_fmt, _header() + b'\x01\0\0') == 'corrupt_compressed_depth'
    assert _kind(rvl_fmt, _header() + struct.pack('<II', 0, 5) + b'\0' * 4) == \
        'corrupt_compressed_depth'
    # a run of 0 zeros and 0 non-zeros never ends (the C decoder would loop on it)
    assert _kind(rvl_fmt, _header() + struct.pack('<II', 4, 1) + bytes(4)) == \
        'corrupt_compressed_depth'
    # a run longer than the image
    too_long = _rvl_encode(np.zeros((1, 50), np.uint16))[8:]
    assert _kind(rvl_fmt, _header() + struct.pack('<II', 4, 1) + too_long) == \
        'corrupt_compressed_depth'
    # endless continuation nibbles
    assert _kind(rvl_fmt, _header() + struct.pack('<II', 4, 1) + b'\xff' * 64) == \
        'corrupt_compressed_depth'
    bad_quant = _header(0.0, 0.0) + encode_32fc1(np.ones((4, 4), np.float32))[1][12:]
    assert _kind('32FC1; compressedDepth png', bad_quant) == 'corrupt_compressed_depth'


def test_8_bit_and_colour_pngs_are_refused():
    grey8 = _header() + _png(np.full((8, 8), 200, np.uint8))
    colour16 = _header() + _png(np.full((8, 8, 3), 2000, np.uint16))
    for data in (grey8, colour16):
        assert _kind('16UC1; compressedDepth png', data) == 'corrupt_compressed_depth'


def test_absurd_dimensions_are_refused_before_decoding():
    # A 100000 x 100000 PNG header (20 GB of uint16) on a few bytes of data.
    ihdr = struct.pack('>IIBBBBB', 100_000, 100_000, 16, 0, 0, 0, 0)
    png = b'\x89PNG\r\n\x1a\n' + struct.pack('>I', 13) + b'IHDR' + ihdr + bytes(4) + bytes(64)
    assert _kind('16UC1; compressedDepth png', _header() + png) == 'compressed_depth_oversize'
    rvl = _header() + struct.pack('<II', 100_000, 100_000) + bytes(8)
    assert _kind('16UC1; compressedDepth rvl', rvl) == 'compressed_depth_oversize'
    fmt, data = encode_16uc1(_synthetic_depth_mm(48, 64))
    assert _kind(fmt, data, max_pixels=48 * 64 - 1) == 'compressed_depth_oversize'
    assert decode_compressed_depth(fmt, data, max_pixels=48 * 64)[0].shape == (48, 64)


def test_error_kind_is_checked():
    with pytest.raises(ValueError, match='unknown CompressedDepthError kind'):
        CompressedDepthError('no_such_kind', 'x')
