"""Heatmap codec and crop geometry: round trips, borders, degenerate boxes, warp vs point maps."""
import math

import numpy as np
import pytest

from diffpose_ros import codec
from diffpose_ros.codec import CropTransform

HEATMAP_HW = (64, 48)


def _encode_one(keypoints_xy, visible, heatmap_hw=HEATMAP_HW, sigma=2.0):
    """(K, H, W) heatmaps of one person's (K, 2) keypoints."""
    return codec.encode_heatmaps_batch(np.asarray(keypoints_xy, float)[None],
                                       np.asarray(visible)[None], heatmap_hw, sigma)[0]


def _blob_image(center_xy, shape_hw=(240, 320), sigma=2.0):
    """Float image with a Gaussian blob at center_xy (continuous convention)."""
    return _encode_one(np.asarray([center_xy], float), np.ones(1), shape_hw, sigma)[0]


def _centroid_xy(image):
    """Intensity-weighted centroid in continuous coordinates (pixel centres at +0.5)."""
    weights = np.clip(image.astype(np.float64), 0, None)
    rows, cols = np.indices(weights.shape)
    total = weights.sum()
    return np.array([((cols + 0.5) * weights).sum() / total,
                     ((rows + 0.5) * weights).sum() / total])


# ------------------------------------------------------------------------------------------------
# encode / decode
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('sigma', [2.0, 3.0])
def test_round_trip_random_subpixel(sigma):
    rng = np.random.default_rng(0)
    height, width = HEATMAP_HW
    num, k = 6, 17
    xy = np.stack([rng.uniform(1.5, width - 1.5, (num, k)),
                   rng.uniform(1.5, height - 1.5, (num, k))], axis=-1)
    heatmaps = codec.encode_heatmaps_batch(xy, np.ones((num, k)), HEATMAP_HW, sigma)
    coords, scores = codec.decode_heatmaps(heatmaps)
    assert coords.shape == (num, k, 2) and scores.shape == (num, k)
    error = np.abs(coords - xy).max()
    assert error < 0.05, f'max round-trip error {error:.4f} heatmap px (sigma {sigma})'
    # scores: the value of the nearest pixel centre, which is within 0.5 px on each axis
    assert np.all(scores <= 1.0) and np.all(scores >= math.exp(-0.5 / (2 * sigma ** 2)) - 1e-6)


@pytest.mark.parametrize('sigma', [2.0, 3.0])
@pytest.mark.parametrize('xy', [
    (1.5, 1.5),            # 1.5 px from the top-left corner
    (46.5, 62.5),          # 1.5 px from the bottom-right corner
    (1.05, 30.3),          # argmax on column 1, the first column with two neighbours
    (46.95, 0.0 + 1.2),    # near the right and top edges
    (24.0, 32.0),          # exactly between four pixel centres
    (24.5, 32.5),          # exactly on a pixel centre
])
def test_round_trip_near_borders(sigma, xy):
    heatmaps = _encode_one(np.array([xy]), np.array([True]), HEATMAP_HW, sigma)
    coords, _ = codec.decode_heatmaps(heatmaps[None])
    np.testing.assert_allclose(coords[0, 0], xy, atol=0.05)


def test_border_pixel_refines_only_the_inner_axis():
    # x = 0.7 puts the argmax on column 0 (no left neighbour): x falls back to the pixel centre
    # 0.5, y (an interior row) is still refined exactly.
    heatmaps = _encode_one(np.array([[0.7, 20.3]]), np.ones(1), HEATMAP_HW, 2.0)
    coords, _ = codec.decode_heatmaps(heatmaps)
    assert coords[0, 0] == pytest.approx(0.5)
    assert coords[0, 1] == pytest.approx(20.3, abs=1e-4)


def test_encode_values_and_peak():
    sigma = 2.0
    xy = np.array([[10.5, 20.5], [7.3, 3.9]])
    heatmaps = _encode_one(xy, np.ones(2), HEATMAP_HW, sigma)
    assert heatmaps.shape == (2, 64, 48) and heatmaps.dtype == np.float32
    assert heatmaps[0, 20, 10] == pytest.approx(1.0)          # keypoint on pixel (20, 10) centre
    assert heatmaps[0].max() == heatmaps[0, 20, 10]
    # value at pixel (i, j) = exp(-((j + 0.5 - x)^2 + (i + 0.5 - y)^2) / (2 sigma^2))
    i, j = 5, 8
    expected = math.exp(-((j + 0.5 - 7.3) ** 2 + (i + 0.5 - 3.9) ** 2) / (2 * sigma ** 2))
    assert heatmaps[1, i, j] == pytest.approx(expected, rel=1e-6)
    assert heatmaps[1].max() < 1.0                             # sub-pixel: no pixel at the peak


def test_invisible_and_non_finite_joints_give_zero_maps():
    xy = np.array([[10.0, 10.0], [20.0, 30.0], [np.nan, 5.0], [5.0, 5.0]])
    visible = np.array([1.0, 0.0, 1.0, 0.5])                   # floats: > 0 means visible
    heatmaps = _encode_one(xy, visible, HEATMAP_HW)
    assert np.all(heatmaps[1] == 0) and np.all(heatmaps[2] == 0)
    assert heatmaps[0].max() > 0.9 and heatmaps[3].max() > 0.9
    assert np.all(np.isfinite(heatmaps))
    heatmaps_bool = _encode_one(xy, visible > 0, HEATMAP_HW)
    np.testing.assert_array_equal(heatmaps, heatmaps_bool)


@pytest.mark.parametrize('bad', [
    dict(keypoints_xy=np.zeros((1, 3, 3)), visible=np.ones((1, 3))),
    dict(keypoints_xy=np.zeros((3, 2)), visible=np.ones(3)),
    dict(keypoints_xy=np.zeros((1, 3, 2)), visible=np.ones((1, 4))),
    dict(keypoints_xy=np.zeros((1, 3, 2)), visible=np.ones((1, 3)), sigma=0.0),
    dict(keypoints_xy=np.zeros((1, 3, 2)), visible=np.ones((1, 3)), heatmap_hw=(0, 48)),
])
def test_encode_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        codec.encode_heatmaps_batch(**bad)


def test_decode_scores_fallbacks_and_shapes():
    heatmaps = np.zeros((2, 3, 8, 6), np.float32)
    heatmaps[0, 0, 4, 3] = 1.7                                  # single spike: clipped score
    heatmaps[0, 1, 2:5, 1:4] = 0.6                              # flat plateau
    heatmaps[0, 2] = -0.2                                       # all negative: score 0
    heatmaps[1, 0, 3, 2] = np.nan                               # NaN is ignored
    heatmaps[1, 0, 5, 4] = 0.4
    coords, scores = codec.decode_heatmaps(heatmaps)
    assert coords.shape == (2, 3, 2) and scores.shape == (2, 3)
    assert scores[0, 0] == 1.0 and scores[0, 2] == 0.0
    assert scores[1, 0] == pytest.approx(0.4)
    np.testing.assert_allclose(coords[1, 0], (4.5, 5.5), atol=1e-6)
    # plateau: argmax at its top-left pixel (2, 1); refined towards the plateau centre, < 1 px
    assert np.all(coords[0, 1] > (1.5, 2.5)) and np.all(coords[0, 1] < (2.5, 3.5))
    assert np.all(np.isfinite(coords))
    # any leading shape works; (K, H, W) gives (K, 2)
    coords_k, scores_k = codec.decode_heatmaps(heatmaps[0])
    np.testing.assert_array_equal(coords_k, coords[0])
    np.testing.assert_array_equal(scores_k, scores[0])


def test_decode_falls_back_per_axis_when_hessian_is_not_negative_definite():
    # a diagonal ridge through the maximum at pixel (4, 3): strong cross term, det(Hs) < 0
    heatmap = np.full((8, 6), 0.5, np.float32)
    heatmap[4, 3] = 0.9
    heatmap[3, 2] = heatmap[5, 4] = 0.89
    heatmap[3, 4] = heatmap[5, 2] = 0.01
    heatmap[4, 4] = 0.6                                         # asymmetric along x
    logp = np.log(heatmap.astype(np.float64))
    dxx = logp[4, 4] - 2 * logp[4, 3] + logp[4, 2]
    dyy = logp[5, 3] - 2 * logp[4, 3] + logp[3, 3]
    dxy = (logp[5, 4] - logp[5, 2] - logp[3, 4] + logp[3, 2]) / 4
    assert dxx * dyy - dxy ** 2 < 0                             # the premise of the test
    coords, _ = codec.decode_heatmaps(heatmap[None])
    alone_x = -(logp[4, 4] - logp[4, 2]) / 2 / dxx             # 1-D Newton step on x alone
    np.testing.assert_allclose(coords[0], (3.5 + alone_x, 4.5), atol=1e-6)


@pytest.mark.parametrize('blur_sigma', [2.0, 3.0, 5.0])
def test_modulated_decode_keeps_a_gaussian_centre(blur_sigma):
    # a blurred Gaussian is a wider Gaussian with the same centre: still decoded exactly
    rng = np.random.default_rng(1)
    height, width = HEATMAP_HW
    xy = np.stack([rng.uniform(12, width - 12, (3, 17)),
                   rng.uniform(12, height - 12, (3, 17))], axis=-1)
    heatmaps = codec.encode_heatmaps_batch(xy, np.ones((3, 17)), HEATMAP_HW, 2.0)
    coords, scores = codec.decode_heatmaps(heatmaps, blur_sigma_px=blur_sigma)
    assert np.abs(coords - xy).max() < 0.05
    # scores are the raw maps' peaks, not the blurred ones
    np.testing.assert_array_equal(scores, codec.decode_heatmaps(heatmaps)[1])


def test_modulated_decode_prefers_the_heavier_mode_over_a_spike():
    # a one-pixel spike (0.9) beside a broad mode of peak 0.8: the argmax takes the spike, the
    # modulated decode the mode with the mass (what the blur is for)
    maps = _encode_one(np.array([[30.5, 40.5]]), np.ones(1), HEATMAP_HW, 2.0)[0] * 0.8
    maps[10, 10] = 0.9
    plain, plain_score = codec.decode_heatmaps(maps[None])
    modulated, modulated_score = codec.decode_heatmaps(maps[None], blur_sigma_px=3.0)
    np.testing.assert_allclose(plain[0], (10.5, 10.5), atol=1e-6)
    np.testing.assert_allclose(modulated[0], (30.5, 40.5), atol=0.05)
    assert plain_score[0] == modulated_score[0] == pytest.approx(0.9)


@pytest.mark.parametrize('shape', [(51, 64, 48), (2, 5, 3), (1, 1, 4)])
def test_modulation_equals_opencv_gaussian_blur(shape):
    # the matrix form must be cv2.GaussianBlur (mirrored borders) exactly, small maps included
    import cv2
    maps = np.random.default_rng(2).random(shape).astype(np.float32)
    expected = np.stack([cv2.GaussianBlur(m, (19, 19), 3.0) for m in maps])
    np.testing.assert_allclose(codec.modulate_heatmaps(maps, 3.0), expected, atol=1e-6)


def test_modulated_decode_edge_cases():
    maps = np.zeros((600, 16, 12), np.float32)      # many maps at once
    maps[:, 8, 6] = 1.0                              # a spike, far enough from the borders
    maps[599, 8, 6] = 0.0
    maps[599, 7, 5] = 2.0                            # the last map is blurred too
    maps[5] = np.nan                                 # all non-finite: pixel (0, 0), score 0
    maps[6, 1, 1] = np.inf                           # one non-finite pixel is ignored
    coords, scores = codec.decode_heatmaps(maps, blur_sigma_px=1.5)
    np.testing.assert_allclose(coords[0], (6.5, 8.5), atol=1e-6)
    np.testing.assert_allclose(coords[599], (5.5, 7.5), atol=1e-6)
    np.testing.assert_allclose(coords[5], (0.5, 0.5))
    assert scores[5] == 0.0 and scores[599] == 1.0 and np.all(np.isfinite(coords))
    np.testing.assert_allclose(coords[6], (6.5, 8.5), atol=1e-6)
    assert codec.decode_heatmaps(np.zeros((0, 8, 6)), blur_sigma_px=2.0)[0].shape == (0, 2)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match='blur_sigma_px'):
            codec.decode_heatmaps(maps[:1], blur_sigma_px=bad)
    with pytest.raises(ValueError, match='sigma_px'):
        codec.modulate_heatmaps(maps[:1], 0.0)


def test_decode_offset_is_bounded_for_noisy_maps():
    rng = np.random.default_rng(3)
    heatmaps = rng.random((4, 17, 64, 48)).astype(np.float32)
    coords, _ = codec.decode_heatmaps(heatmaps)
    flat = heatmaps.reshape(4, 17, -1).argmax(-1)
    argmax_xy = np.stack([flat % 48 + 0.5, flat // 48 + 0.5], axis=-1)
    assert np.all(np.abs(coords - argmax_xy) < 1.0)


# ------------------------------------------------------------------------------------------------
# crop geometry
# ------------------------------------------------------------------------------------------------

def _transforms():
    return [
        CropTransform.from_box([100.0, 40.0, 160.0, 220.0]),                 # tall box
        CropTransform.from_box([30.0, 60.0, 290.0, 120.0]),                  # wide box
        CropTransform.from_box([10.0, 10.0, 16.0, 18.0]),                    # small: upscaling
        CropTransform.from_center_scale_rotation((160.0, 120.0), (150.0, 200.0), 30.0),
        CropTransform.from_center_scale_rotation((150.0, 110.0), (120.0, 160.0), -45.0,
                                                 flip=True),
        CropTransform.from_center_scale_rotation((170.0, 130.0), (300.0, 400.0), 0.0,
                                                 (128, 96)),                 # downscaling
    ]


@pytest.mark.parametrize('transform', _transforms())
def test_crop_round_trip(transform):
    rng = np.random.default_rng(4)
    points = rng.uniform(-100, 400, (5, 17, 2))
    np.testing.assert_allclose(transform.crop_to_image(transform.image_to_crop(points)), points,
                               atol=1e-6)
    np.testing.assert_allclose(transform.image_to_crop(transform.crop_to_image(points)), points,
                               atol=1e-6)
    np.testing.assert_allclose(
        transform.heatmap_to_image(transform.image_to_heatmap(points, 4), 4), points, atol=1e-6)


@pytest.mark.parametrize('box', [
    [100.0, 40.0, 160.0, 220.0],     # tall: width is extended
    [30.0, 60.0, 290.0, 120.0],      # wide: height is extended
    [0.0, 0.0, 192.0, 256.0],        # already at the crop aspect
])
def test_from_box_aspect_ratio_and_enlargement(box):
    transform = CropTransform.from_box(box, (256, 192), 1.25)
    corners_crop = np.array([[0.0, 0.0], [192.0, 0.0], [192.0, 256.0], [0.0, 256.0]])
    corners = transform.crop_to_image(corners_crop)
    region_w = corners[1, 0] - corners[0, 0]
    region_h = corners[3, 1] - corners[0, 1]
    assert region_w / region_h == pytest.approx(192 / 256)
    np.testing.assert_allclose(corners[:, 0].mean(), (box[0] + box[2]) / 2)
    np.testing.assert_allclose(corners[:, 1].mean(), (box[1] + box[3]) / 2)
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    # the longer side (relative to the crop aspect) is enlarged by exactly 1.25, the other more
    assert min(region_w / box_w, region_h / box_h) == pytest.approx(1.25)
    assert max(region_w / box_w, region_h / box_h) >= 1.25 - 1e-9
    # the box is inside the crop, axis aligned
    box_crop = transform.image_to_crop(np.array([[box[0], box[1]], [box[2], box[3]]]))
    assert np.all(box_crop >= -1e-9) and np.all(box_crop <= [192 + 1e-9, 256 + 1e-9])
    assert transform.matrix[0, 1] == 0 and transform.matrix[1, 0] == 0
    center, size = codec.box_to_center_size(box, 192 / 256, 1.25)
    np.testing.assert_allclose(size, [region_w, region_h])


@pytest.mark.parametrize('box', [
    [10.0, 10.0, 10.0, 50.0],        # zero width
    [10.0, 10.0, 50.0, 10.0],        # zero height
    [50.0, 10.0, 10.0, 50.0],        # negative width
    [10.0, 50.0, 50.0, 10.0],        # negative height
    [np.nan, 10.0, 50.0, 50.0],
    [10.0, 10.0, np.inf, 50.0],
    [10.0, 10.0, 50.0],              # wrong shape
])
def test_degenerate_boxes_raise(box):
    with pytest.raises(ValueError):
        CropTransform.from_box(box)


@pytest.mark.parametrize('kwargs', [
    dict(center_xy=(0.0, 0.0), size_wh=(0.0, 10.0)),
    dict(center_xy=(0.0, np.nan), size_wh=(10.0, 10.0)),
    dict(center_xy=(0.0, 0.0), size_wh=(10.0, 10.0), rotation_deg=math.inf),
    dict(center_xy=(0.0, 0.0), size_wh=(10.0, 10.0), crop_hw=(0, 10)),
])
def test_general_constructor_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CropTransform.from_center_scale_rotation(**kwargs)


def test_matrix_is_validated_and_read_only():
    with pytest.raises(ValueError):
        CropTransform(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        CropTransform(np.eye(3))
    transform = CropTransform(np.array([[2.0, 0, 1], [0, 2.0, 3]]), (10, 8))
    with pytest.raises(ValueError):
        transform.matrix[0, 0] = 5.0
    assert transform.crop_px_per_image_px == pytest.approx(2.0)


def test_rotation_direction_and_flip():
    center = np.array([100.0, 80.0])
    rotated = CropTransform.from_center_scale_rotation(center, (96.0, 128.0), 90.0)
    # positive angle = counter-clockwise as displayed: image content right of the centre moves up
    crop_xy = rotated.image_to_crop(center + [10.0, 0.0])
    np.testing.assert_allclose(crop_xy, [96.0, 128.0 - 20.0], atol=1e-9)
    plain = CropTransform.from_center_scale_rotation(center, (96.0, 128.0), 20.0)
    flipped = CropTransform.from_center_scale_rotation(center, (96.0, 128.0), 20.0, flip=True)
    points = np.array([[90.0, 70.0], [130.0, 100.0]])
    expected = plain.image_to_crop(points) * [-1, 1] + [192, 0]          # x -> crop_w - x
    np.testing.assert_allclose(flipped.image_to_crop(points), expected, atol=1e-9)


def test_warp_translation_is_exact():
    image = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    transform = CropTransform(np.array([[1.0, 0.0, -5.0], [0.0, 1.0, -7.0]]), (10, 12))
    crop = transform.warp(image)
    np.testing.assert_array_equal(crop, image[7:17, 5:17])


def test_warp_integer_upscale_matches_pixel_centres():
    # a 2x upscale: crop pixel (i, j) centre (j + 0.5, i + 0.5) is image point
    # ((j + 0.5) / 2, (i + 0.5) / 2); OpenCV's bilinear value there must be the exact
    # interpolation between image pixel centres (continuous convention).
    image = np.random.default_rng(5).random((20, 20)).astype(np.float32)
    transform = CropTransform(np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), (40, 40))
    crop = transform.warp(image)
    # crop pixel (5, 7): centre (7.5, 5.5) -> image (3.75, 2.75) -> between image pixel centres
    # (3.5, 2.5) and (4.5, 3.5) with weights 0.75 / 0.25 on each axis.
    ix, iy = 3, 2
    expected = (0.75 * 0.75 * image[iy, ix] + 0.75 * 0.25 * image[iy, ix + 1]
                + 0.25 * 0.75 * image[iy + 1, ix] + 0.25 * 0.25 * image[iy + 1, ix + 1])
    assert crop[5, 7] == pytest.approx(expected, abs=1e-3)   # OpenCV uses 5-bit weights


@pytest.mark.parametrize('transform', _transforms())
def test_warp_agrees_with_point_map(transform):
    # a dot drawn at an image pixel centre p appears in the crop at image_to_crop(p)
    height, width = 240, 320
    region = transform.crop_to_image(np.array(
        [[0, 0], [transform.crop_width, 0], [0, transform.crop_height],
         [transform.crop_width, transform.crop_height]], float))
    # move the dot inside this crop's region: choose the image pixel nearest the region centre
    center = region.mean(axis=0)
    point = np.floor(np.clip(center, 5, [width - 6, height - 6])) + 0.5
    # >= 3 crop px after warping, >= 0.7 image px so that the image samples it well
    sigma = max(3.0 / transform.crop_px_per_image_px, 0.7)
    image = _blob_image(point, (height, width), sigma)
    crop = transform.warp(image)
    expected = transform.image_to_crop(point)
    found = _centroid_xy(crop)
    # measured error ~0.005 crop px; ignoring OpenCV's half-pixel shift would cost ~0.5 px
    assert np.abs(found - expected).max() < 0.05, (found, expected)
    # peak pixel agrees too (within half a crop pixel plus interpolation)
    peak = np.unravel_index(np.argmax(crop), crop.shape)
    assert np.abs(np.array([peak[1] + 0.5, peak[0] + 0.5]) - expected).max() <= 1.0


def test_warp_single_bright_pixel_dot():
    # the brief's literal case: one bright pixel at an integer pixel (row 50, col 70) of a
    # uint8 image, cropped with a 2x upscaling box crop.
    image = np.zeros((120, 160, 3), np.uint8)
    image[50, 70] = 255
    transform = CropTransform.from_box([58.0, 34.0, 82.0, 66.0], (80, 60), 1.25)
    crop = transform.warp(image)
    expected = transform.image_to_crop(np.array([70.5, 50.5]))
    found = _centroid_xy(crop[..., 0])
    # the naive matrix (no half-pixel adjustment) would be off by exactly 0.5 px here
    assert np.abs(found - expected).max() < 0.1, (found, expected)


def test_warp_border_value_and_channels():
    image = np.zeros((10, 10, 3), np.uint8)
    transform = CropTransform(np.array([[1.0, 0.0, 20.0], [0.0, 1.0, 0.0]]), (4, 4))
    crop = transform.warp(image, border_value=114)
    assert crop.shape == (4, 4, 3) and crop.dtype == np.uint8
    assert np.all(crop == 114)                                    # every channel, not (114, 0, 0)
    gray = transform.warp(np.zeros((10, 10), np.float32), border_value=0.5)
    assert gray.shape == (4, 4) and np.all(gray == 0.5)
    with pytest.raises(ValueError):
        transform.warp(np.zeros((10,), np.float32))


def test_heatmap_to_image_and_batched_helpers():
    boxes = np.array([[100.0, 40.0, 160.0, 220.0], [30.0, 60.0, 290.0, 120.0]])
    transforms = [CropTransform.from_box(box) for box in boxes]
    stride = 4
    # heatmap pixel (i, j) centre is crop point (4 j + 2, 4 i + 2)
    hm_xy = np.array([[[0.5, 0.5], [47.5, 63.5], [10.25, 20.75]]] * 2)           # (N, K, 2)
    image_xy = codec.heatmap_coords_to_image(hm_xy, transforms, stride)
    for n, transform in enumerate(transforms):
        np.testing.assert_allclose(transform.image_to_crop(image_xy[n])[:2],
                                   [[2.0, 2.0], [190.0, 254.0]], atol=1e-9)
        np.testing.assert_allclose(image_xy[n], transform.heatmap_to_image(hm_xy[n], stride))
    assert codec.heatmap_coords_to_image(np.zeros((0, 17, 2)), [], 4).shape == (0, 17, 2)
    with pytest.raises(ValueError):
        codec.heatmap_coords_to_image(hm_xy, transforms[:1], stride)
    # apply_affine broadcasting: (2, 3) over (..., 2) and (N, 2, 3) over (N, ..., 2)
    matrices = np.stack([t.matrix for t in transforms])
    np.testing.assert_allclose(codec.apply_affine(matrices, image_xy),
                               np.stack([t.image_to_crop(image_xy[n])
                                         for n, t in enumerate(transforms)]))


def test_image_keypoints_round_trip_through_heatmaps():
    # image keypoints -> heatmap px -> Gaussian heatmaps -> decode -> image px
    rng = np.random.default_rng(6)
    box = np.array([200.0, 100.0, 300.0, 380.0])
    transform = CropTransform.from_box(box)
    keypoints = np.stack([rng.uniform(box[0], box[2], 17), rng.uniform(box[1], box[3], 17)], -1)
    hm_xy = transform.image_to_heatmap(keypoints, 4)
    heatmaps = _encode_one(hm_xy, np.ones(17), HEATMAP_HW, 2.0)
    coords, _ = codec.decode_heatmaps(heatmaps[None])
    decoded = codec.heatmap_coords_to_image(coords, [transform], 4)[0]
    image_px_per_hm_px = 4 / transform.crop_px_per_image_px
    assert np.abs(decoded - keypoints).max() < 0.05 * image_px_per_hm_px
