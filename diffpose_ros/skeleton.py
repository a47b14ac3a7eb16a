"""COCO-17 keypoint layout used everywhere (model, messages, files)."""
from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
    'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
    'left_wrist', 'right_wrist', 'left_hip', 'right_hip',
    'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Index pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))

# Bones for drawing (COCO skeleton, 0-based).
BONES: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

# The 12 limb joints (shoulders, elbows, wrists, hips, knees, ankles).
LIMB_JOINTS: tuple[int, ...] = tuple(range(5, 17))

# COCO OKS sigmas (per keypoint), for OKS matching and AP.
OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)


def flip_permutation() -> list[int]:
    """Keypoint index permutation applied after a horizontal flip."""
    perm = list(range(NUM_KEYPOINTS))
    for a, b in FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm
