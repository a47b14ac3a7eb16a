"""Training data: COCO, PoseTrack 2018/21 and pseudo-labelled video JSON as track windows.

Every source is a COCO-format file; what differs is read from it:
- COCO keypoints (``images`` without ``vid_id``): each image is a one-frame sequence, so its
  windows repeat the frame (as the pipeline pads a track's first frames);
- PoseTrack 2018/21 (``vid_id``/``frame_id``, ``track_id``, PoseTrack keypoint names): frames of
  a video form a sequence; windows are built around *labelled* frames; an unlabelled
  neighbouring frame is cropped with the box of the track's nearest labelled frame (the paper
  crops a clip with the key frame's box);
- our pseudo-labels (``diffpose-label``): PoseTrack layout with COCO-17 names and per-joint
  ``keypoint_scores`` used as loss weights.
Keypoints of other layouts are mapped to COCO-17 with ``metrics.map_keypoints_to_coco``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from diffpose_ros.metrics import detect_layout, map_keypoints_to_coco
from diffpose_ros.skeleton import NUM_KEYPOINTS

LOGGER = logging.getLogger(__name__)

# vtest.avi frames 600-794 are the held-out block for temporal evaluation: never trained on.
HELD_OUT_VIDEO_SHA256 = '45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf'
HELD_OUT_FIRST_FRAME = 600
# LSPET images im09001-im10000 are its validation split (../shared/data/README.md).
LSPET_VALIDATION = range(9001, 10001)
_LSPET_NAME = re.compile(r'im(\d{5})\.(?:jpg|png)$')


def is_lspet_validation(file_name: str) -> bool:
    """True for an LSPET validation image name (im09001.jpg .. im10000.jpg)."""
    match = _LSPET_NAME.search(str(file_name))
    return bool(match) and int(match.group(1)) in LSPET_VALIDATION


class HeldOutDataError(ValueError):
    """A training source contains held-out evaluation frames."""


@dataclasses.dataclass
class PersonLabel:
    box_xyxy: np.ndarray      # (4,) image px
    keypoints: np.ndarray     # (17, 3) x px, y px, confidence in [0, 1] (0 = unlabelled)
    # the detector's own single-frame estimate of this person (17, 3) and its box, if known
    prior: np.ndarray | None = None
    prior_box_xyxy: np.ndarray | None = None


@dataclasses.dataclass
class Sequence:
    """Frames of one video (or one image) and its people per frame, keyed by track id."""

    name: str
    image_paths: list[Path]
    # per frame position: track id -> label
    people: list[dict[int, PersonLabel]]
    labelled: list[bool]

    def track_frames(self, track_id: int) -> np.ndarray:
        return np.array([i for i, p in enumerate(self.people) if track_id in p], dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class SampleRef:
    sequence: int
    frame: int      # position in the sequence
    track_id: int


def _keypoint_scores(ann: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    visible = raw[:, 2] > 0
    scores = ann.get('keypoint_scores')
    if scores is not None and len(scores) == len(raw):
        conf = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        return np.where(visible, conf, 0.0)
    return visible.astype(np.float64)


def load_sequences(path: str | Path, image_root: str | Path | None = None,
                   min_labelled_joints: int = 1, exclude_held_out: bool = False,
                   ) -> list[Sequence]:
    """Read one COCO/PoseTrack/pseudo-label JSON into sequences (see the module docstring).

    An annotation's ``detector_keypoints`` (written by ``diffpose-label``) becomes the person's
    prior, with the annotation's box (the detector's) as the prior's box.

    Args:
        exclude_held_out: drop LSPET validation images (im09001-im10000) instead of refusing
            the file; lets one read the training part of the full LSPET file.

    Raises:
        HeldOutDataError: if the file holds vtest.avi frames 600+ (the held-out block), or LSPET
            validation images and ``exclude_held_out`` is False.
        ValueError: for a keypoint layout it cannot map to COCO-17.
    """
    path = Path(path)
    data = json.loads(path.read_text())
    held_out_images = [im for im in data['images'] if is_lspet_validation(im['file_name'])]
    if held_out_images and not exclude_held_out:
        raise HeldOutDataError(
            f'{path}: {len(held_out_images)} images of the LSPET validation split '
            f'(e.g. {held_out_images[0]["file_name"]}; im09001-im10000 are for evaluation only). '
            'Set exclude_held_out: true on this data source to train on the rest.')
    if held_out_images:
        dropped = {im['id'] for im in held_out_images}
        LOGGER.info('%s: left out %d LSPET validation images', path, len(dropped))
        data = {**data, 'images': [im for im in data['images'] if im['id'] not in dropped],
                'annotations': [a for a in data['annotations'] if a['image_id'] not in dropped]}
    root = Path(image_root) if image_root is not None else path.parent
    names = data['categories'][0].get('keypoints', [])
    layout = detect_layout(names) if names else 'coco'
    if layout is None:
        raise ValueError(f'{path}: unknown keypoint layout {names[:5]}...')
    held_out_videos = {v['id'] for v in data.get('videos', [])
                       if v.get('source_sha256') == HELD_OUT_VIDEO_SHA256}
    person_ids = {c['id'] for c in data['categories']}
    images = {im['id']: im for im in data['images']}
    by_sequence: dict[Any, list[dict]] = {}
    for im in data['images']:
        if im.get('vid_id') in held_out_videos and im.get('frame_id', 0) >= HELD_OUT_FIRST_FRAME:
            raise HeldOutDataError(
                f'{path}: frame {im["frame_id"]} of vtest.avi is in the held-out block '
                f'(frames {HELD_OUT_FIRST_FRAME}+ are for evaluation only)')
        key = ('video', im['vid_id']) if 'vid_id' in im else ('image', im['id'])
        by_sequence.setdefault(key, []).append(im)
    anns_by_image: dict[int, list[dict]] = {}
    for ann in data['annotations']:
        if ann.get('category_id', 1) in person_ids and ann.get('keypoints'):
            anns_by_image.setdefault(ann['image_id'], []).append(ann)
    sequences = []
    for key, ims in by_sequence.items():
        ims = sorted(ims, key=lambda im: im.get('frame_id', 0))
        people: list[dict[int, PersonLabel]] = []
        labelled = []
        for im in ims:
            frame_people: dict[int, PersonLabel] = {}
            for n, ann in enumerate(anns_by_image.get(im['id'], [])):
                raw = np.asarray(ann['keypoints'], dtype=np.float64).reshape(-1, 3)
                kpts = map_keypoints_to_coco(raw, layout)
                conf = map_keypoints_to_coco(
                    np.concatenate([raw[:, :2], _keypoint_scores(ann, raw)[:, None]], 1),
                    layout)[:, 2]
                kpts[:, 2] = conf
                if (kpts[:, 2] > 0).sum() < min_labelled_joints:
                    continue
                box = _box_xyxy(ann, kpts)
                if box is None:
                    continue
                track_id = int(ann['track_id']) if 'track_id' in ann else n
                prior = ann.get('detector_keypoints')
                if prior is not None:
                    prior = np.asarray(prior, np.float64).reshape(NUM_KEYPOINTS, 3)
                frame_people[track_id] = PersonLabel(
                    box, kpts, prior, None if prior is None else box.copy())
            people.append(frame_people)
            labelled.append(bool(im.get('is_labeled', True)))
        paths = [root / images[im['id']]['file_name'] for im in ims]
        sequences.append(Sequence(f'{path.stem}:{key[1]}', paths, people, labelled))
    return sequences


def _box_xyxy(ann: dict[str, Any], kpts: np.ndarray) -> np.ndarray | None:
    if ann.get('bbox') and len(ann['bbox']) == 4 and ann['bbox'][2] > 1 and ann['bbox'][3] > 1:
        x, y, w, h = (float(v) for v in ann['bbox'])
        return np.array([x, y, x + w, y + h])
    seen = kpts[kpts[:, 2] > 0, :2]
    if len(seen) < 2:
        return None
    lo, hi = seen.min(0), seen.max(0)
    if np.any(hi - lo < 2):
        return None
    return np.concatenate([lo, hi])  # tight box of the joints; the crop enlarges it


def sample_refs(sequences: list[Sequence], min_labelled_joints: int = 4) -> list[SampleRef]:
    """Every (sequence, labelled frame, track) with enough labelled joints."""
    refs = []
    for s, seq in enumerate(sequences):
        for f, (frame_people, is_labelled) in enumerate(zip(seq.people, seq.labelled)):
            if not is_labelled:
                continue
            for track_id, person in sorted(frame_people.items()):
                if (person.keypoints[:, 2] > 0).sum() >= min_labelled_joints:
                    refs.append(SampleRef(s, f, track_id))
    return refs


def window_frames(seq: Sequence, ref: SampleRef, offsets: np.ndarray,
                  ) -> list[tuple[int, int]]:
    """(image frame, box frame) positions of a window.

    Where the track is labelled at the wanted frame, both are that frame. A wanted frame outside
    the sequence, or a labelled frame the track is absent from, repeats the track's nearest
    frame, as ``buffers.TrackBuffers.window`` pads (ties go to the earlier frame). An unlabelled
    frame inside the sequence (PoseTrack) uses its own image with the nearest frame's box.
    """
    present = seq.track_frames(ref.track_id)
    out = []
    for offset in offsets.tolist():
        wanted = ref.frame + offset
        nearest = int(present[np.argmin(np.abs(present - wanted) * 2 + (present > wanted))])
        if 0 <= wanted < len(seq.people) and not seq.labelled[wanted]:
            out.append((wanted, nearest))
        else:
            out.append((nearest, nearest))
    return out


def validate_keypoints(keypoints: np.ndarray) -> None:
    if keypoints.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f'keypoints must be ({NUM_KEYPOINTS}, 3), got {keypoints.shape}')
