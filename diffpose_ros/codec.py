"""Gaussian heatmap codec and person-crop geometry (numpy + OpenCV, no torch).

Coordinate convention (used for images, crops and heatmaps alike): continuous pixel coordinates
``(x, y)`` with the origin at the top-left *corner* of the top-left pixel, x to the right and y
down. Pixel ``(i, j)`` (row i, column j) covers ``[j, j + 1) x [i, i + 1)`` and its centre is
``(j + 0.5, i + 0.5)``. An image of width W therefore spans ``[0, W]`` and a horizontal flip maps
``x`` to ``W - x``.

With this convention, resampling by an integer stride is a pure scale: heatmap pixel ``(i, j)``
covers crop pixels ``[s j, s (j + 1)) x [s i, s (i + 1))`` for stride s, so
``crop_xy = heatmap_xy * heatmap_stride`` exactly. OpenCV puts pixel centres at integer
coordinates instead; :meth:`CropTransform.cv2_matrix` converts, so that :meth:`CropTransform.warp`
and the point maps agree.

Shapes: N persons, K keypoints, H x W heatmap (or crop) rows x columns.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np
from numpy.typing import ArrayLike

# A heatmap is clipped to this floor before taking its log during sub-pixel refinement.
LOG_FLOOR = 1e-10
# Refinement steps of this size or more (heatmap px, per axis) are not trusted.
MAX_REFINE_OFFSET_PX = 1.0


def _as_points(points: ArrayLike) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim < 1 or array.shape[-1] != 2:
        raise ValueError(f'points must have shape (..., 2), got {array.shape}')
    return array


def _check_hw(hw: tuple[int, int], name: str) -> tuple[int, int]:
    if len(hw) != 2:
        raise ValueError(f'{name} must be (height, width), got {hw!r}')
    height, width = (int(v) for v in hw)
    if height != hw[0] or width != hw[1] or height < 1 or width < 1:
        raise ValueError(f'{name} must be two positive integers, got {hw!r}')
    return height, width


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply one or a batch of 2x3 affine maps to points.

    Args:
        matrix: (2, 3) map applied to every point, or (N, 2, 3) with one map per leading index.
        points: (..., 2) points for a (2, 3) map, or (N, ..., 2) for an (N, 2, 3) batch.

    Returns:
        Mapped points, float64, same shape as ``points``.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    pts = _as_points(points)
    if matrix.shape == (2, 3):
        return pts @ matrix[:, :2].T + matrix[:, 2]
    if matrix.ndim != 3 or matrix.shape[1:] != (2, 3):
        raise ValueError(f'matrix must have shape (2, 3) or (N, 2, 3), got {matrix.shape}')
    if pts.ndim < 2 or pts.shape[0] != matrix.shape[0]:
        raise ValueError(
            f'points must have shape (N, ..., 2) with N = {matrix.shape[0]}, got {pts.shape}')
    flat = pts.reshape(pts.shape[0], -1, 2)                                      # (N, P, 2)
    out = np.einsum('nij,npj->npi', matrix[:, :, :2], flat) + matrix[:, None, :, 2]
    return out.reshape(pts.shape)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Return the inverse of a (2, 3) affine map as a (2, 3) float64 matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f'matrix must have shape (2, 3), got {matrix.shape}')
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear_inv, -linear_inv @ matrix[:, 2:]], axis=1)


def box_to_center_size(box_xyxy: ArrayLike, aspect_wh: float,
                       enlarge: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Centre and size of the image region a person box is cropped from.

    The shorter side (relative to ``aspect_wh``) is extended about the box centre so that the
    region has the crop's aspect ratio; then both sides are scaled by ``enlarge``.

    Args:
        box_xyxy: (4,) box ``x1, y1, x2, y2`` in image px (continuous convention).
        aspect_wh: crop width / crop height.
        enlarge: scale factor applied to both sides after the aspect correction.

    Returns:
        ``(center_xy (2,), size_wh (2,))`` in image px, float64.

    Raises:
        ValueError: if the box is not finite or has zero or negative width or height.
    """
    box = np.asarray(box_xyxy, dtype=np.float64)
    if box.shape != (4,):
        raise ValueError(f'box_xyxy must have shape (4,), got {box.shape}')
    if not np.all(np.isfinite(box)):
        raise ValueError(f'box_xyxy must be finite, got {box.tolist()}')
    width, height = box[2] - box[0], box[3] - box[1]
    if not (width > 0 and height > 0):
        raise ValueError(f'box_xyxy must have positive width and height, got {box.tolist()}')
    if not (math.isfinite(aspect_wh) and aspect_wh > 0):
        raise ValueError(f'aspect_wh must be finite and > 0, got {aspect_wh}')
    if not (math.isfinite(enlarge) and enlarge > 0):
        raise ValueError(f'enlarge must be finite and > 0, got {enlarge}')
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    if width > aspect_wh * height:
        height = width / aspect_wh
    else:
        width = height * aspect_wh
    return center, np.array([width, height]) * enlarge


@dataclasses.dataclass(frozen=True, eq=False)
class CropTransform:
    """Affine map between an image and a person crop (continuous convention, see module doc).

    Attributes:
        matrix: (2, 3) float64 map from image px to crop px, ``crop = A @ image + b``.
            Stored as a read-only copy.
        crop_hw: crop ``(height, width)`` in px.
    """

    matrix: np.ndarray
    crop_hw: tuple[int, int] = (256, 192)
    _inverse: np.ndarray = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f'matrix must have shape (2, 3), got {matrix.shape}')
        if not np.all(np.isfinite(matrix)):
            raise ValueError('matrix must be finite')
        det = float(np.linalg.det(matrix[:, :2]))
        if not abs(det) > 1e-12:
            raise ValueError(f'matrix must be invertible, got determinant {det}')
        inverse = invert_affine(matrix)
        matrix.flags.writeable = False
        inverse.flags.writeable = False
        object.__setattr__(self, 'matrix', matrix)
        object.__setattr__(self, '_inverse', inverse)
        object.__setattr__(self, 'crop_hw', _check_hw(self.crop_hw, 'crop_hw'))

    @classmethod
    def from_box(cls, box_xyxy: ArrayLike, crop_hw: tuple[int, int] = (256, 192),
                 enlarge: float = 1.25) -> CropTransform:
        """Axis-aligned crop of a person box (see :func:`box_to_center_size`).

        Args:
            box_xyxy: (4,) box ``x1, y1, x2, y2`` in image px.
            crop_hw: crop ``(height, width)`` in px.
            enlarge: box enlargement after the aspect correction (1.25 in DiffPose).

        Raises:
            ValueError: for a degenerate box (non-finite, zero or negative width or height).
        """
        crop_h, crop_w = _check_hw(crop_hw, 'crop_hw')
        center, size = box_to_center_size(box_xyxy, crop_w / crop_h, enlarge)
        return cls.from_center_scale_rotation(center, size, 0.0, (crop_h, crop_w))

    @classmethod
    def from_center_scale_rotation(cls, center_xy: ArrayLike, size_wh: ArrayLike,
                                   rotation_deg: float = 0.0,
                                   crop_hw: tuple[int, int] = (256, 192),
                                   flip: bool = False) -> CropTransform:
        """General crop: a rotated image rectangle mapped onto the whole crop.

        ``crop = F @ S @ R @ (image - center) + crop_center`` with R the rotation, S the per-axis
        scale ``(crop_w / size_w, crop_h / size_h)`` and F the optional horizontal flip
        ``x -> crop_w - x``. A positive ``rotation_deg`` turns the image content
        counter-clockwise as displayed (y down), as ``cv2.getRotationMatrix2D`` does.
        A flip does not swap left/right keypoint labels; that is the caller's job.

        Args:
            center_xy: (2,) image px point that lands on the crop centre.
            size_wh: (2,) width and height of the image rectangle (image px, before rotation).
            rotation_deg: rotation in degrees.
            crop_hw: crop ``(height, width)`` in px.
            flip: mirror the crop horizontally.

        Raises:
            ValueError: for non-finite arguments or a non-positive size.
        """
        crop_h, crop_w = _check_hw(crop_hw, 'crop_hw')
        center = np.asarray(center_xy, dtype=np.float64)
        size = np.asarray(size_wh, dtype=np.float64)
        if center.shape != (2,) or size.shape != (2,):
            raise ValueError(f'center_xy and size_wh must have shape (2,), got '
                             f'{center.shape} and {size.shape}')
        if not (np.all(np.isfinite(center)) and np.all(np.isfinite(size))
                and math.isfinite(rotation_deg)):
            raise ValueError('center_xy, size_wh and rotation_deg must be finite')
        if not np.all(size > 0):
            raise ValueError(f'size_wh must be positive, got {size.tolist()}')
        theta = math.radians(rotation_deg)
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        rotation = np.array([[cos_t, sin_t], [-sin_t, cos_t]])
        linear = np.diag([crop_w / size[0], crop_h / size[1]]) @ rotation
        if flip:
            linear = np.diag([-1.0, 1.0]) @ linear
        offset = np.array([crop_w / 2, crop_h / 2]) - linear @ center
        return cls(np.concatenate([linear, offset[:, None]], axis=1), (crop_h, crop_w))

    @property
    def crop_height(self) -> int:
        return self.crop_hw[0]

    @property
    def crop_width(self) -> int:
        return self.crop_hw[1]

    @property
    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) float64 map from crop px to image px (read-only)."""
        return self._inverse

    @property
    def crop_px_per_image_px(self) -> float:
        """Mean linear scale (sqrt of the absolute determinant) from image to crop."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @property
    def cv2_matrix(self) -> np.ndarray:
        """(2, 3) image-to-crop map in OpenCV's convention (pixel centres at integers).

        With ``p_cv = p - 0.5``: ``crop_cv = A @ image_cv + (b + A @ (0.5, 0.5) - 0.5)``.
        """
        linear = self.matrix[:, :2]
        offset = self.matrix[:, 2] + linear @ np.array([0.5, 0.5]) - 0.5
        return np.concatenate([linear, offset[:, None]], axis=1)

    def image_to_crop(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) image px points to crop px (float64, same shape)."""
        return apply_affine(self.matrix, points_xy)

    def crop_to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) crop px points to image px (float64, same shape)."""
        return apply_affine(self._inverse, points_xy)

    def heatmap_to_image(self, points_xy: np.ndarray, heatmap_stride: float) -> np.ndarray:
        """Map (..., 2) heatmap px points (crop px / ``heatmap_stride``) to image px."""
        _check_stride(heatmap_stride)
        return self.crop_to_image(_as_points(points_xy) * heatmap_stride)

    def image_to_heatmap(self, points_xy: np.ndarray, heatmap_stride: float) -> np.ndarray:
        """Map (..., 2) image px points to heatmap px."""
        _check_stride(heatmap_stride)
        return self.image_to_crop(points_xy) / heatmap_stride

    def warp(self, image: np.ndarray, border_value: float | tuple[float, ...] = 0.0,
             interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Resample the crop from an image.

        A feature drawn at image location p appears at crop location ``image_to_crop(p)``.

        Args:
            image: (H_img, W_img) or (H_img, W_img, C) image, C <= 4 for a per-channel
                ``border_value``.
            border_value: fill value outside the image; a scalar fills every channel.
            interpolation: OpenCV interpolation flag.

        Returns:
            (crop_h, crop_w[, C]) crop with the image's dtype.
        """
        image = np.asarray(image)
        if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f'image must have shape (H, W) or (H, W, C), got {image.shape}')
        if np.ndim(border_value) == 0:
            # OpenCV turns a bare scalar into (v, 0, 0, 0): fill every channel explicitly.
            border = (float(border_value),) * 4
        else:
            border = tuple(float(v) for v in border_value)
        return cv2.warpAffine(image, self.cv2_matrix, (self.crop_width, self.crop_height),
                              flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=border)


def _check_stride(heatmap_stride: float) -> None:
    if not (math.isfinite(heatmap_stride) and heatmap_stride > 0):
        raise ValueError(f'heatmap_stride must be finite and > 0, got {heatmap_stride}')


def heatmap_coords_to_image(coords_xy: np.ndarray,
                            transforms: list[CropTransform] | tuple[CropTransform, ...],
                            heatmap_stride: float) -> np.ndarray:
    """Map decoded (N, K, 2) heatmap px coordinates of N persons to (N, K, 2) image px."""
    coords = _as_points(coords_xy)
    if coords.ndim != 3 or coords.shape[0] != len(transforms):
        raise ValueError(f'coords_xy must have shape (N, K, 2) with N = {len(transforms)}, '
                         f'got {coords.shape}')
    _check_stride(heatmap_stride)
    if not transforms:
        return coords.copy()
    inverses = np.stack([t.inverse_matrix for t in transforms])                  # (N, 2, 3)
    return apply_affine(inverses, coords * heatmap_stride)


def encode_heatmaps_batch(keypoints_xy: np.ndarray, visible: np.ndarray,
                          heatmap_hw: tuple[int, int] = (64, 48),
                          sigma: float = 2.0) -> np.ndarray:
    """Unnormalised Gaussian heatmaps for N persons.

    ``heatmap[n, k, i, j] = exp(-((j + 0.5 - x)^2 + (i + 0.5 - y)^2) / (2 sigma^2))`` with
    ``(x, y) = keypoints_xy[n, k]`` at its exact sub-pixel location (peak value 1 when the
    keypoint is at a pixel centre). Joints with ``visible <= 0`` or non-finite coordinates get
    all-zero maps. Joints outside the heatmap keep the part of their Gaussian that falls inside;
    the caller decides their training weight.

    Args:
        keypoints_xy: (N, K, 2) keypoints in heatmap px (continuous convention).
        visible: (N, K) bool or float; a joint is encoded when its value is > 0.
        heatmap_hw: heatmap ``(H, W)``.
        sigma: Gaussian standard deviation in heatmap px.

    Returns:
        (N, K, H, W) float32 heatmaps in [0, 1].
    """
    height, width = _check_hw(heatmap_hw, 'heatmap_hw')
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f'sigma must be finite and > 0, got {sigma}')
    keypoints = np.asarray(keypoints_xy, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[2] != 2:
        raise ValueError(f'keypoints_xy must have shape (N, K, 2), got {keypoints.shape}')
    vis = np.asarray(visible)
    if vis.shape != keypoints.shape[:2]:
        raise ValueError(f'visible must have shape {keypoints.shape[:2]}, got {vis.shape}')
    encode = (vis.astype(np.float64) > 0) & np.all(np.isfinite(keypoints), axis=-1)   # (N, K)
    keypoints = np.where(encode[..., None], keypoints, 0.0)
    inv_two_var = 1.0 / (2.0 * sigma * sigma)
    centers_x = np.arange(width, dtype=np.float64) + 0.5
    centers_y = np.arange(height, dtype=np.float64) + 0.5
    gauss_x = np.exp(-(centers_x - keypoints[..., 0:1]) ** 2 * inv_two_var)      # (N, K, W)
    gauss_y = np.exp(-(centers_y - keypoints[..., 1:2]) ** 2 * inv_two_var)      # (N, K, H)
    gauss_y *= encode[..., None]
    return (gauss_y[..., :, None] * gauss_x[..., None, :]).astype(np.float32)    # (N, K, H, W)


@functools.lru_cache(maxsize=32)
def _gaussian_taps(sigma_px: float) -> np.ndarray:
    """(2 ceil(3 sigma) + 1, 1) float32 taps of ``cv2.getGaussianKernel`` (cv2.GaussianBlur's)."""
    half = int(math.ceil(3.0 * sigma_px))
    taps = cv2.getGaussianKernel(2 * half + 1, sigma_px, cv2.CV_32F)
    taps.setflags(write=False)   # shared by every caller through the cache
    return taps


def modulate_heatmaps(maps: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian-blurred copies of (M, H, W) heatmaps (DARK's "distribution modulation").

    The blur turns a prediction's mass, not its single highest pixel, into the peak: of two
    modes the broader, heavier one wins, and a one-pixel spike no longer moves the argmax. A
    Gaussian heatmap stays a Gaussian (wider, same centre), so the Newton step stays exact.
    Borders mirror (OpenCV's default); non-finite values count as 0. The same result as
    ``cv2.GaussianBlur`` per map. Returns float32 (M, H, W).
    """
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f'sigma_px must be finite and > 0, got {sigma_px}')
    src = np.asarray(maps, np.float32)
    if not np.isfinite(src).all():
        src = np.nan_to_num(src, nan=0.0, posinf=0.0, neginf=0.0)
    lead, (height, width) = src.shape[:-2], src.shape[-2:]
    src = np.ascontiguousarray(src.reshape(-1, height, width))
    kernel = _gaussian_taps(sigma_px)
    out = np.empty_like(src)
    # cv2 per map, single-threaded: faster than matrix products on the stack, and a product
    # large enough for OpenBLAS's worker threads would leave them spinning against the
    # detector's torch threads on the next frame
    for index in range(src.shape[0]):
        cv2.sepFilter2D(src[index], -1, kernel, kernel, dst=out[index],
                        borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(*lead, height, width)


def decode_heatmaps(heatmaps: np.ndarray, blur_sigma_px: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel keypoint locations and scores from heatmaps.

    With ``blur_sigma_px > 0`` the locations come from :func:`modulate_heatmaps` copies (DARK's
    distribution modulation); the scores stay the raw maps' maxima. Then: argmax, then one
    Newton step on the log-heatmap (DARK, Zhang et al. CVPR 2020): with the
    gradient g and Hessian Hs of ``log(max(heatmap, LOG_FLOOR))`` from central finite differences
    at the maximum, the offset is ``-Hs^-1 g``. This is exact for a Gaussian, whose log is
    quadratic. Where the maximum is on a border row (column), or the Hessian is not negative
    definite, each axis that still has both neighbours and a negative second derivative is
    refined alone; otherwise that axis keeps the argmax pixel centre. Offsets of
    ``MAX_REFINE_OFFSET_PX`` or more on an axis are discarded (flat or odd-shaped maxima).

    Args:
        heatmaps: (N, K, H, W) heatmaps (any leading shape (..., H, W) works).
        blur_sigma_px: Gaussian blur (heatmap px) before locating the maximum; 0 = none.

    Returns:
        ``coords`` (N, K, 2) float64 ``(x, y)`` in heatmap px (continuous convention) and
        ``scores`` (N, K) float64, the heatmap value at the maximum clipped to [0, 1].
        Non-finite heatmap values are ignored; an all-non-finite map decodes to the centre
        (0.5, 0.5) of pixel (0, 0) with score 0.
    """
    maps = np.asarray(heatmaps)
    if maps.ndim < 2 or maps.shape[-1] < 1 or maps.shape[-2] < 1:
        raise ValueError(f'heatmaps must have shape (..., H, W), got {maps.shape}')
    if not (math.isfinite(blur_sigma_px) and blur_sigma_px >= 0):
        raise ValueError(f'blur_sigma_px must be finite and >= 0, got {blur_sigma_px}')
    lead, (height, width) = maps.shape[:-2], maps.shape[-2:]
    flat = np.asarray(maps, np.float32).reshape(-1, height * width)             # (M, H*W)
    finite = np.isfinite(flat)
    all_finite = bool(finite.all())
    if not all_finite:
        flat = np.where(finite, flat, np.float32(-np.inf))
    count = flat.shape[0]
    rows = np.arange(count)
    best = np.argmax(flat, axis=1) if count else np.zeros(0, dtype=np.int64)
    peak = flat[rows, best].astype(np.float64)
    scores = np.clip(np.where(np.isfinite(peak), peak, 0.0), 0.0, 1.0)
    if blur_sigma_px > 0 and count:
        flat = modulate_heatmaps(flat.reshape(-1, height, width), blur_sigma_px)
        flat = flat.reshape(count, height * width)
        if not all_finite:
            flat[~np.isfinite(peak)] = -np.inf   # all-non-finite maps keep their (0, 0) answer
        best = np.argmax(flat, axis=1)
    row, col = best // width, best % width

    # 3x3 neighbourhood of the maximum (indices clamped at the borders; those axes are masked).
    steps = np.array([-1, 0, 1])
    rr = np.clip(row[:, None] + steps, 0, height - 1)                            # (M, 3)
    cc = np.clip(col[:, None] + steps, 0, width - 1)                             # (M, 3)
    patch = flat.reshape(count, height, width)[rows[:, None, None], rr[:, :, None],
                                               cc[:, None, :]].astype(np.float64)  # (M, 3, 3)
    logp = np.log(np.maximum(patch, LOG_FLOOR))
    grad_x = (logp[:, 1, 2] - logp[:, 1, 0]) / 2
    grad_y = (logp[:, 2, 1] - logp[:, 0, 1]) / 2
    dxx = logp[:, 1, 2] - 2 * logp[:, 1, 1] + logp[:, 1, 0]
    dyy = logp[:, 2, 1] - 2 * logp[:, 1, 1] + logp[:, 0, 1]
    dxy = (logp[:, 2, 2] - logp[:, 2, 0] - logp[:, 0, 2] + logp[:, 0, 0]) / 4
    inner_x = (col >= 1) & (col <= width - 2)
    inner_y = (row >= 1) & (row <= height - 2)

    with np.errstate(divide='ignore', invalid='ignore'):
        det = dxx * dyy - dxy * dxy
        joint = inner_x & inner_y & (dxx < 0) & (det > 0)          # negative definite Hessian
        joint_x = -(dyy * grad_x - dxy * grad_y) / det
        joint_y = -(dxx * grad_y - dxy * grad_x) / det
        joint &= np.maximum(np.abs(joint_x), np.abs(joint_y)) < MAX_REFINE_OFFSET_PX
        alone_x = -grad_x / dxx
        alone_y = -grad_y / dyy
    ok_x = inner_x & (dxx < 0) & (np.abs(alone_x) < MAX_REFINE_OFFSET_PX)
    ok_y = inner_y & (dyy < 0) & (np.abs(alone_y) < MAX_REFINE_OFFSET_PX)
    offset_x = np.where(joint, joint_x, np.where(ok_x, alone_x, 0.0))
    offset_y = np.where(joint, joint_y, np.where(ok_y, alone_y, 0.0))

    coords = np.stack([col + 0.5 + offset_x, row + 0.5 + offset_y], axis=-1)    # (M, 2)
    return coords.reshape(*lead, 2), scores.reshape(lead)


def render_prior_heatmaps(keypoints_xy: np.ndarray, confidence: np.ndarray,
                          heatmap_hw: tuple[int, int] = (64, 48),
                          sigma: float = 2.0) -> np.ndarray:
    """Heatmaps of a keypoint estimate weighted by its confidence (a diffusion prior).

    ``confidence[n, k] * gaussian(keypoints_xy[n, k])``; joints with confidence <= 0 or
    non-finite coordinates are all-zero maps (no evidence). Confidences are clipped to [0, 1].

    Args:
        keypoints_xy: (N, K, 2) heatmap px (continuous convention).
        confidence: (N, K).

    Returns:
        (N, K, H, W) float32 in [0, 1].
    """
    conf = np.clip(np.nan_to_num(np.asarray(confidence, np.float32)), 0.0, 1.0)
    maps = encode_heatmaps_batch(keypoints_xy, conf > 0, heatmap_hw, sigma)
    return maps * conf[..., None, None]


def project_heatmaps(heatmaps: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """x̂0 projection: redraw predicted heatmaps as clean Gaussians at their decoded peaks.

    Each map becomes ``score * gaussian(decoded location)``, so a prediction with a blurred,
    doubled or negative-valued peak is re-noised as the clean kind of heatmap the denoiser was
    trained on. (N, K, H, W) -> (N, K, H, W) float32.
    """
    maps = np.asarray(heatmaps)
    lead, hw = maps.shape[:-2], maps.shape[-2:]
    coords, scores = decode_heatmaps(maps.reshape(-1, *hw))
    # amplitude such that the redrawn map's peak pixel reads the same score again
    nearest_centre = np.floor(coords) + 0.5
    off_centre = np.exp(-np.sum((coords - nearest_centre) ** 2, axis=1) / (2 * sigma * sigma))
    amplitude = np.minimum(scores / off_centre, 1.0)
    out = render_prior_heatmaps(coords[:, None], amplitude[:, None], hw, sigma)
    return out.reshape(*lead, *hw)


_CV2_MAX_CHANNELS = 512  # OpenCV's CV_CN_MAX: warp wider feature maps in chunks
_IDENTITY_AFFINE = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])


def feature_alignment_matrix(source: CropTransform, target: CropTransform,
                             feature_stride: float) -> np.ndarray:
    """(2, 3) map from ``target``'s feature-cell indices to ``source``'s (OpenCV's convention).

    Cell (i, j) covers crop px ``[j s, (j + 1) s) x [i s, (i + 1) s)``, its centre is
    ``((j + 0.5) s, (i + 0.5) s)``; the map goes target cell -> target crop px -> image px ->
    source crop px -> source cell.
    """
    s = float(feature_stride)
    index_to_px = np.array([[s, 0, 0.5 * s], [0, s, 0.5 * s], [0, 0, 1]])
    px_to_index = np.array([[1 / s, 0, -0.5], [0, 1 / s, -0.5], [0, 0, 1]])
    full = (px_to_index @ _homogeneous(source.matrix) @ _homogeneous(target.inverse_matrix)
            @ index_to_px)
    return full[:2]


def _bilinear_sampling_matrix(scale: float, offset: float, size: int) -> np.ndarray:
    """(size, size) float32 matrix S with ``(S @ v)[i]`` = v sampled bilinearly at index
    ``scale * i + offset``; neighbours outside ``[0, size)`` count as 0 (cv2's BORDER_CONSTANT
    with a zero border value)."""
    source = scale * np.arange(size) + offset
    low = np.floor(source)
    frac = source - low
    low = low.astype(np.int64)
    matrix = np.zeros((size, size + 2), np.float32)       # columns -1 and size absorb the outside
    rows = np.arange(size)
    inside = (low >= -1) & (low < size)                    # at least one neighbour inside
    matrix[rows[inside], low[inside] + 1] = 1.0 - frac[inside]
    matrix[rows[inside], low[inside] + 2] = frac[inside]
    return np.ascontiguousarray(matrix[:, 1:-1])


def align_features(features: np.ndarray, source: CropTransform, target: CropTransform,
                   feature_stride: float, out: np.ndarray | None = None) -> np.ndarray:
    """Resample features computed on ``source``'s crop onto ``target``'s crop grid.

    Window frames are each cropped with their own box; before the STRL mixes them, every
    neighbour's cached features are moved into the key frame's crop (bilinear, zero outside),
    so a feature cell means the same image place in every frame of the window.

    Args:
        features: (C, h, w) features of the source crop.
        source, target: the crop transforms of the source frame and of the key frame.
        feature_stride: crop px per feature cell.
        out: optional (C, h, w) array to write the result into (e.g. a slice of the window
            batch, which saves the copies of stacking).

    Returns:
        (C, h, w) features in ``features``' dtype: ``out`` when given, else the input itself
        when the crops coincide, else a new array.
    """
    matrix = feature_alignment_matrix(source, target, feature_stride)
    if np.abs(matrix - _IDENTITY_AFFINE).max() <= 1e-6:
        if out is None:
            return features
        out[...] = features
        return out
    if abs(matrix[0, 1]) < 1e-9 and abs(matrix[1, 0]) < 1e-9:
        # Axis-aligned crops (the pipeline's box crops): the warp is separable, two small
        # matrix products instead of cv2 (faster, and without cv2's 1/32-px weight grid).
        _, h, w = features.shape
        cols = _bilinear_sampling_matrix(matrix[0, 0], matrix[0, 2], w)           # (w, w)
        rows = _bilinear_sampling_matrix(matrix[1, 1], matrix[1, 2], h)           # (h, h)
        # one tiny product per channel: a single (C*h, w) product would be large enough for
        # OpenBLAS to wake its worker threads, whose spin-wait then slows the detector's torch
        # threads on the next frame about 3x (measured)
        across = np.matmul(np.asarray(features, np.float32), cols.T)             # (c, h, w)
        if out is not None and out.dtype == np.float32 and out.flags.c_contiguous:
            return np.matmul(rows, across, out=out)
        result = np.matmul(rows, across)
    else:                                                  # rotated crops (training augmentation)
        result = _warp_features_cv2(features, matrix)
    if out is None:
        return result.astype(features.dtype, copy=False)  # both branches made a new array
    out[...] = result
    return out


def _warp_features_cv2(features: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(C, h, w) features resampled at ``matrix`` @ (cell index) by ``cv2.warpAffine``
    (bilinear on cv2's 1/32-cell weight grid, zero outside); any affine map. Returns float32."""
    c, h, w = features.shape
    # OpenCV warps interleaved (h, w, channels) images of at most CV_CN_MAX channels: split C
    # into equal groups so one transposing copy lays every group out contiguously.
    groups = -(-c // _CV2_MAX_CHANNELS)
    while c % groups:
        groups += 1
    per_group = c // groups
    work = np.ascontiguousarray(
        features.reshape(groups, per_group, h, w).transpose(0, 2, 3, 1), dtype=np.float32)
    warped = np.empty_like(work)                                                 # (G, h, w, C/G)
    for group in range(groups):
        cv2.warpAffine(work[group], matrix, (w, h), dst=warped[group],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped.transpose(0, 3, 1, 2).reshape(c, h, w)
