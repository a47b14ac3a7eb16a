"""Training of the DiffPose head (STRL + condition pyramid + LMSFI denoiser); backbone frozen.

One iteration: B track windows (one random crop augmentation shared by a window's frames) ->
frozen backbone features, every neighbour aligned to the key frame's crop -> STRL condition ->
the model input -> predicted x0 -> confidence- and joint-weighted heatmap MSE against the label.

The model input teaches *correction* of the detector (``PriorConfig``): most rows start from the
detector's real estimate of the person (YOLO11n-pose run once over the training images,
``training.priors``) with realistic corruptions on top (jitter scaled to the detector's measured
per-joint error, left/right swaps, dropped joints, confidence noise), drawn as confidence-weighted
Gaussians and noised to a timestep in the deployed range; some rows start from the label plus a
small error (what a later step sees after x̂0 projection); the rest noise the label itself at a
uniform timestep (the paper's objective, which keeps the start from pure noise usable).

Every iteration's randomness derives from (seed, iteration), so a resumed run continues exactly
where it stopped. Checkpoints are safetensors (no pickle).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from diffpose_ros.buffers import window_offsets
from diffpose_ros.codec import (
    CropTransform,
    align_features,
    box_to_center_size,
    encode_heatmaps_batch,
    render_prior_heatmaps,
)
from diffpose_ros.config import ModelConfig
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.skeleton import NUM_KEYPOINTS, flip_permutation
from diffpose_ros.training.data import (
    PersonLabel,
    SampleRef,
    Sequence,
    load_sequences,
    sample_refs,
    window_frames,
)
from diffpose_ros.training.priors import read_priors

LOGGER = logging.getLogger(__name__)

# Per-joint loss weights of the DCPose lineage (wrists, ankles and elbows/knees count more).
JOINT_LOSS_WEIGHTS = (1.0,) * 7 + (1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5)
CHECKPOINT_NAME = 'checkpoint.safetensors'


@dataclasses.dataclass(frozen=True)
class DataSource:
    path: str
    image_root: str | None = None
    weight: float = 1.0  # sampling weight of this source relative to the others
    exclude_held_out: bool = False  # drop LSPET validation images instead of refusing the file
    # detector prior cache (JSON lines; filled by running the detector on first use); None:
    # the priors come from the annotations' ``detector_keypoints`` (diffpose-label output)
    priors: str | None = None
    detector_imgsz: int = 640
    # label unlabelled head joints (nose, eyes, ears) with the detector's own (confidence >= 0.5,
    # loss weight halved): LSPET labels limbs only
    teacher_head_joints: bool = False


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """How model inputs are drawn (see the module docstring)."""

    prior_probability: float = 0.85      # rows starting from a detector-like prior
    synthetic_probability: float = 0.25  # of those: label + small error instead of the detector
    synthetic_error: float = 0.35        # synthetic error std, x the detector's per-joint error
    t_max: int = 500                     # prior rows: t ~ U[0, t_max]
    jitter_probability: float = 0.5      # extra jitter on a detector prior ...
    jitter_scale: float = 1.0            # ... std U(0, scale) x the detector's per-joint error
    swap_probability: float = 0.08       # per limb pair (arms, legs): left/right swapped
    drop_probability: float = 0.05       # per joint: no prior (confidence 0)
    confidence_noise: float = 0.3        # confidence x U(1 - x, 1 + x)
    # curriculum tying the input's error to t: detector priors at t ~ U[detector_t_min, t_max],
    # label + small error at t ~ U[0, synthetic_t_max] with the error growing with t, so that a
    # later denoising step (small t) learns its input is already close and refines it
    curriculum: bool = False
    detector_t_min: int = 100
    synthetic_t_max: int = 200
    # teach trust in a sure detector (the head overruled a correct, confident prior: docs/model.md
    # section 7). clean_probability: share of detector rows replaced by the label + a tiny error
    # (clean_error x the detector's error) at confidence U(0.8, 1), "a detector that is right
    # and sure". wrong_joint_error > 0: detector-prior joints (after corruptions) farther than
    # this many times the detector's median error from the label get their confidence scaled by
    # U(wrong_joint_confidence), so that confidence tells right from wrong in training.
    clean_probability: float = 0.0
    clean_error: float = 0.1
    wrong_joint_error: float = 0.0
    wrong_joint_confidence: tuple[float, float] = (0.1, 0.5)

    def __post_init__(self) -> None:
        if not 0 <= self.clean_probability <= 1:
            raise ValueError(f'clean_probability must be in [0, 1], got {self.clean_probability}')
        low, high = self.wrong_joint_confidence
        if not 0 <= low <= high <= 1 or self.wrong_joint_error < 0:
            raise ValueError('wrong_joint_confidence must be 0 <= low <= high <= 1 and '
                             'wrong_joint_error >= 0')
        if not 0 <= self.t_max <= 999:
            raise ValueError(f'prior t_max must be in [0, 999], got {self.t_max}')
        if not 0 <= self.detector_t_min <= self.t_max:
            raise ValueError(f'detector_t_min must be in [0, t_max], got {self.detector_t_min}')
        if not 0 <= self.synthetic_t_max <= 999:
            raise ValueError(f'synthetic_t_max must be in [0, 999], got {self.synthetic_t_max}')


def draw_prior_timesteps(rng: np.random.Generator, synthetic: np.ndarray,
                         pc: PriorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Timesteps of prior rows and the scale of the synthetic rows' error.

    Without the curriculum every prior row draws t ~ U[0, t_max] and the error keeps its size.
    With it, detector priors draw t ~ U[detector_t_min, t_max] and "label + small error" rows
    t ~ U[0, synthetic_t_max] with an error growing from 0.25x to 1x over that range.
    """
    rows = len(synthetic)
    if not pc.curriculum:
        return rng.integers(0, pc.t_max + 1, size=rows), np.ones(rows)
    prior_t = np.where(synthetic, rng.integers(0, pc.synthetic_t_max + 1, size=rows),
                       rng.integers(pc.detector_t_min, pc.t_max + 1, size=rows))
    scale = np.where(synthetic, 0.25 + 0.75 * prior_t / max(pc.synthetic_t_max, 1), 1.0)
    return prior_t, scale


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    flip_probability: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.25)   # crop region size factor
    rotation_deg: float = 30.0
    rotation_probability: float = 0.4
    shift_fraction: float = 0.06                      # centre shift, share of the crop size
    brightness: float = 0.2                           # +- fraction
    contrast: float = 0.2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: tuple[DataSource, ...]
    out_dir: str = 'outputs/train'
    seed: int = 0
    iterations: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    min_learning_rate_fraction: float = 0.05
    warmup_iterations: int = 50
    weight_decay: float = 1e-4
    grad_clip_norm: float = 1.0
    causal_window_size: int = 3
    centered_window_size: int = 5
    centered_probability: float = 0.3  # share of batches with centred windows
    min_labelled_joints: int = 4
    checkpoint_every: int = 200
    log_every: int = 10
    # threads of the training loop (0 = torch default). The feature cache is built with torch's
    # default first. 1 is the robust choice on a machine that does other work: OpenMP threads
    # stall when one of them is preempted (0.8 -> 3.8 s/iteration seen on 2 busy cores).
    torch_threads: int = 0
    # > 0: precompute frozen-backbone features for this many augmentation variants per track
    # (fast on CPU); 0: fresh augmentation and a backbone pass every iteration
    feature_cache_variants: int = 6
    # video windows: share with random frame gaps (1..max_frame_gap), so that offsets taken
    # from stamps (dropped frames) are seen in training
    variable_spacing_probability: float = 0.3
    max_frame_gap: int = 2
    # a second person pasted into the crop, partly over the labelled one (the crowded case the
    # photos lack: docs/model.md section 9, Bonn): this many extra cached variants carry one
    # (0: plain + paste, 1: flipped + paste, ...), drawn for this share of the windows; the
    # label, the prior and the target stay the first person's
    paste_person_variants: int = 0
    paste_person_probability: float = 0.0
    augment: AugmentConfig = AugmentConfig()
    prior: PriorConfig = PriorConfig()
    model: dict = dataclasses.field(default_factory=dict)  # ModelConfig overrides
    # fine-tune: start the head from these weights (a safetensors head file with its config
    # beside it) instead of a fresh initialisation; ignored when resuming a checkpoint
    init_weights: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (len(self.data) >= 1, 'data needs at least one source'),
            (self.iterations >= 1, 'iterations must be >= 1'),
            (self.batch_size >= 1, 'batch_size must be >= 1'),
            (self.learning_rate > 0, 'learning_rate must be > 0'),
            (0 <= self.centered_probability <= 1, 'centered_probability must be in [0, 1]'),
            (self.causal_window_size >= 1 and self.centered_window_size % 2 == 1,
             'window sizes must be >= 1 and the centred one odd'),
            (self.checkpoint_every >= 1 and self.log_every >= 1, 'intervals must be >= 1'),
            (self.paste_person_variants >= 0, 'paste_person_variants must be >= 0'),
            (0 <= self.paste_person_probability <= 1,
             'paste_person_probability must be in [0, 1]'),
            (self.paste_person_probability == 0 or self.paste_person_variants > 0
             or self.feature_cache_variants == 0,
             'paste_person_probability > 0 needs paste_person_variants > 0 with a feature cache'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f'unknown training config keys: {unknown}')
        raw['data'] = tuple(DataSource(**d) for d in raw.get('data', ()))
        augment = dict(raw.get('augment', {}))
        if 'scale_range' in augment:
            augment['scale_range'] = tuple(augment['scale_range'])
        raw['augment'] = AugmentConfig(**augment)
        prior = dict(raw.get('prior', {}))
        if 'wrong_joint_confidence' in prior:
            prior['wrong_joint_confidence'] = tuple(prior['wrong_joint_confidence'])
        raw['prior'] = PriorConfig(**prior)
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({**ModelConfig().to_dict(), **self.model})


DATA_HELP = {
    'lspet': 'LSP Extended (10,000 sports photos, Johnson & Everingham, CVPR 2011): get '
             'lspet_dataset.zip from the authors\' page (http://sam.johnson.io/research/'
             'lspet.html) and convert it to COCO-17 JSON as ../shared/data/lspet/'
             'lspet_coco17.json with its images in ../shared/data/lspet/images/ (joint map in '
             'docs/model.md)',
    'vtest_train': 'the vtest.avi pseudo-labels: run `make label` first (needs `make setup`)',
}


class TrainingDataMissing(FileNotFoundError):
    """A data source of the training recipe is not on this machine."""


def check_data_sources(config: TrainConfig) -> None:
    """Fail before any work when a source file is missing, saying what to get and where."""
    missing = []
    for source in config.data:
        if not Path(source.path).is_file():
            hint = next((text for key, text in DATA_HELP.items() if key in source.path),
                        'see docs/model.md, section "Data"')
            missing.append(f'  - {source.path}: {hint}')
    if missing:
        raise TrainingDataMissing(
            'training data not found (paths are relative to the working directory, '
            f'{Path.cwd()}):\n' + '\n'.join(missing)
            + '\nThe datasets are research data that this project does not redistribute.')


def learning_rate_at(config: TrainConfig, iteration: int) -> float:
    """Linear warm-up, then cosine decay to ``min_learning_rate_fraction``."""
    if iteration < config.warmup_iterations:
        return config.learning_rate * (iteration + 1) / config.warmup_iterations
    span = max(1, config.iterations - config.warmup_iterations)
    progress = min(1.0, (iteration - config.warmup_iterations) / span)
    floor = config.min_learning_rate_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class PastedPerson:
    """Another labelled person, cropped as the pipeline crops it, then scaled by ``scale`` and
    moved by ``shift`` (share of the crop size) over the crop inside an elliptical, feathered
    mask of its box: a second person partly in front of the first."""

    sequence: int
    frame: int
    track_id: int
    flip: bool
    scale: float
    shift: tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Augmentation:
    flip: bool = False
    scale: float = 1.0
    rotation_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # share of the crop region size
    gain: float = 1.0
    bias: float = 0.0
    paste: PastedPerson | None = None


# where a pasted person lands: its centre |dx| in this share of the crop width from the crop's
# centre (beside and partly over the first person, never on top of it), a little up or down,
# at this size relative to the first
PASTE_SHIFT_X = (0.12, 0.45)
PASTE_SHIFT_Y = 0.12
PASTE_SCALE = (0.8, 1.15)
PASTE_FEATHER_PX = 7
PASTE_MAX_DRAWS = 100


def _crop_box(person: PersonLabel) -> np.ndarray:
    """The box a person is cropped with: the detector's (as the pipeline crops) if known."""
    return person.prior_box_xyxy if person.prior_box_xyxy is not None else person.box_xyxy


class WindowSampler:
    """Builds augmented training batches (features or crops, model inputs, targets, weights)."""

    def __init__(self, config: TrainConfig, model_config: ModelConfig, progress: bool = True):
        self.config = config
        self.model_config = model_config
        self.sequences: list[Sequence] = []
        self.refs: list[SampleRef] = []
        self.ref_weights: list[float] = []
        self.stats: dict[str, Any] = {}
        self.flip_perm = np.asarray(flip_permutation())
        self.crop_hw = (model_config.crop_height, model_config.crop_width)
        self.joint_weights = np.asarray(JOINT_LOSS_WEIGHTS[:NUM_KEYPOINTS], np.float32)
        for source in config.data:
            sequences = load_sequences(source.path, source.image_root,
                                       exclude_held_out=source.exclude_held_out)
            if source.priors:
                attach_cached_priors(sequences, source, progress)
            if source.teacher_head_joints:
                label_head_joints_from_prior(sequences)
            offset = len(self.sequences)
            candidates = sample_refs(sequences, config.min_labelled_joints)
            refs = [dataclasses.replace(r, sequence=r.sequence + offset) for r in candidates
                    if sequences[r.sequence].people[r.frame][r.track_id].prior is not None]
            self.stats[source.path] = {'labelled_people': len(candidates),
                                       'with_detector_prior': len(refs)}
            LOGGER.info('%s: %d labelled people, %d with a detector prior (training windows)',
                        source.path, len(candidates), len(refs))
            if not refs:
                raise ValueError(f'{source.path}: no person with >= '
                                 f'{config.min_labelled_joints} labelled joints and a detector '
                                 'prior')
            self.sequences += sequences
            self.refs += refs
            self.ref_weights += [source.weight / len(refs)] * len(refs)
        probs = np.asarray(self.ref_weights)
        self.ref_probs = probs / probs.sum()
        self._images: dict[Path, np.ndarray] = {}
        self.prior_error = self._measure_prior_error()
        self.stats['detector_error_per_joint'] = [round(float(v), 4) for v in self.prior_error]

    def _person(self, ref: SampleRef, frame: int | None = None) -> PersonLabel:
        seq = self.sequences[ref.sequence]
        return seq.people[ref.frame if frame is None else frame][ref.track_id]

    def _measure_prior_error(self) -> np.ndarray:
        """Median per-joint distance detector -> label, as a share of the label box size."""
        errors: list[list[float]] = [[] for _ in range(NUM_KEYPOINTS)]
        for ref in self.refs[:: max(1, len(self.refs) // 4000)]:
            person = self._person(ref)
            size = float(np.max(person.box_xyxy[2:] - person.box_xyxy[:2]))
            ok = (person.keypoints[:, 2] > 0) & (person.prior[:, 2] > 0)
            dist = np.linalg.norm(person.prior[:, :2] - person.keypoints[:, :2], axis=1) / size
            for k in np.flatnonzero(ok):
                errors[k].append(float(dist[k]))
        fallback = float(np.median([e for es in errors for e in es])) if any(errors) else 0.05
        return np.array([np.median(e) if len(e) >= 10 else fallback for e in errors])

    def _image(self, path: Path) -> np.ndarray:
        image = self._images.get(path)
        if image is None:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f'training image {path} is missing or unreadable')
            self._images[path] = image
        return image

    # -- augmentation: one crop perturbation and colour change shared by a window's frames
    def draw_augmentation(self, rng: np.random.Generator) -> Augmentation:
        aug = self.config.augment
        return Augmentation(
            flip=bool(rng.random() < aug.flip_probability),
            scale=float(rng.uniform(*aug.scale_range)),
            rotation_deg=float(rng.uniform(-aug.rotation_deg, aug.rotation_deg)
                               if rng.random() < aug.rotation_probability else 0.0),
            shift=tuple(rng.uniform(-aug.shift_fraction, aug.shift_fraction, size=2)),
            gain=float(1 + rng.uniform(-aug.contrast, aug.contrast)),
            bias=float(255 * rng.uniform(-aug.brightness, aug.brightness)))

    def variant_augmentation(self, variant: int, ref_sequence: int, track_id: int,
                             ) -> Augmentation:
        """Cached-feature variant: 0 plain, 1 flipped, others random per (track, variant);
        from ``feature_cache_variants`` on, the paste variants: base variant j plus a pasted
        person."""
        regular = self.config.feature_cache_variants
        if variant >= regular:
            j = variant - regular
            base = self._regular_variant(j, ref_sequence, track_id)
            rng = np.random.default_rng([self.config.seed, 7927, j, ref_sequence, track_id])
            return dataclasses.replace(base, paste=self.draw_paste(rng, ref_sequence, track_id))
        return self._regular_variant(variant, ref_sequence, track_id)

    def _regular_variant(self, variant: int, ref_sequence: int, track_id: int,
                         ) -> Augmentation:
        if variant == 0:
            return Augmentation()
        if variant == 1:
            return Augmentation(flip=True)
        return self.draw_augmentation(np.random.default_rng(
            [self.config.seed, 7919, variant, ref_sequence, track_id]))

    def draw_paste(self, rng: np.random.Generator, ref_sequence: int,
                   track_id: int) -> PastedPerson:
        """A random other labelled person and where it lands."""
        for _ in range(PASTE_MAX_DRAWS):  # bounded: a single-track source has no other person
            other = self.refs[int(rng.integers(len(self.refs)))]
            if (other.sequence, other.track_id) != (ref_sequence, track_id):
                break
        dx = rng.uniform(*PASTE_SHIFT_X) * (1 if rng.random() < 0.5 else -1)
        return PastedPerson(
            sequence=other.sequence, frame=other.frame, track_id=other.track_id,
            flip=bool(rng.random() < 0.5), scale=float(rng.uniform(*PASTE_SCALE)),
            shift=(float(dx), float(rng.uniform(-PASTE_SHIFT_Y, PASTE_SHIFT_Y))))

    def paste_person(self, crop: np.ndarray, paste: PastedPerson) -> np.ndarray:
        """``crop`` with ``paste``'s person composited over it."""
        seq = self.sequences[paste.sequence]
        transform = self.transform_for(seq, paste.frame, paste.track_id,
                                       Augmentation(flip=paste.flip))
        other = transform.warp(self._image(seq.image_paths[paste.frame]))
        box = _crop_box(seq.people[paste.frame][paste.track_id])
        corners = transform.image_to_crop(np.asarray([box[:2], box[2:]], np.float64))
        crop_h, crop_w = self.crop_hw
        mask = np.zeros((crop_h, crop_w), np.float32)
        center = corners.mean(axis=0)
        axes = np.abs(corners[1] - corners[0]) / 2
        cv2.ellipse(mask, (int(round(center[0])), int(round(center[1]))),
                    (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
                    0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), PASTE_FEATHER_PX)
        # scale about the crop centre, then shift
        s = paste.scale
        move = np.array([[s, 0, (1 - s) * crop_w / 2 + paste.shift[0] * crop_w],
                         [0, s, (1 - s) * crop_h / 2 + paste.shift[1] * crop_h]])
        other = cv2.warpAffine(other, move, (crop_w, crop_h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(mask, move, (crop_w, crop_h), flags=cv2.INTER_LINEAR)[..., None]
        blended = crop.astype(np.float32) * (1 - mask) + other.astype(np.float32) * mask
        return np.clip(blended + 0.5, 0, 255).astype(np.uint8)

    def transform_for(self, seq: Sequence, box_pos: int, track_id: int,
                      aug: Augmentation) -> CropTransform:
        """The crop of a person-frame: the detector's box (as the pipeline crops) if known."""
        crop_h, crop_w = self.crop_hw
        box = _crop_box(seq.people[box_pos][track_id])
        center, size = box_to_center_size(box, crop_w / crop_h, self.model_config.box_enlarge)
        return CropTransform.from_center_scale_rotation(
            center + np.asarray(aug.shift) * size, size * aug.scale, aug.rotation_deg,
            self.crop_hw, aug.flip)

    def crop(self, seq: Sequence, image_pos: int, box_pos: int, track_id: int,
             aug: Augmentation) -> np.ndarray:
        crop = self.transform_for(seq, box_pos, track_id, aug).warp(
            self._image(seq.image_paths[image_pos]))
        if aug.paste is not None:
            crop = self.paste_person(crop, aug.paste)
        if aug.gain != 1.0 or aug.bias != 0.0:
            crop = cv2.convertScaleAbs(crop, alpha=aug.gain, beta=aug.bias)
        return crop

    def _to_heatmap(self, keypoints: np.ndarray, transform: CropTransform,
                    flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(17, 3) image keypoints -> heatmap px (17, 2), confidence (17,), inside-crop (17,)."""
        if flip:
            keypoints = keypoints[self.flip_perm]
        crop_h, crop_w = self.crop_hw
        crop_xy = transform.image_to_crop(keypoints[:, :2])
        inside = ((crop_xy[:, 0] >= 0) & (crop_xy[:, 0] < crop_w)
                  & (crop_xy[:, 1] >= 0) & (crop_xy[:, 1] < crop_h))
        return crop_xy / self.model_config.heatmap_stride, keypoints[:, 2], inside

    def key_transform(self, ref: SampleRef, aug: Augmentation) -> CropTransform:
        """The crop of the window's key frame."""
        return self.transform_for(self.sequences[ref.sequence], ref.frame, ref.track_id, aug)

    def target(self, ref: SampleRef, aug: Augmentation,
               transform: CropTransform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Key-frame keypoints in heatmap px (17, 2) and loss weights (17,)."""
        transform = transform or self.key_transform(ref, aug)
        xy, conf, inside = self._to_heatmap(self._person(ref).keypoints, transform, aug.flip)
        return xy, conf * inside * self.joint_weights

    def prior(self, ref: SampleRef, aug: Augmentation, rng: np.random.Generator,
              synthetic: bool, transform: CropTransform | None = None,
              synthetic_error_scale: float = 1.0, clean: bool = False,
              ) -> tuple[np.ndarray, np.ndarray]:
        """A detector-like estimate of the key frame: heatmap px (17, 2), confidence (17,).

        The detector's real keypoints with corruptions, or (``synthetic``) the label plus a
        small error (what a later denoising step sees after x̂0 projection), or (``clean``) the
        label plus a tiny error at high confidence (a detector that is right and sure).
        """
        pc = self.config.prior
        person = self._person(ref)
        size = float(np.max(person.box_xyxy[2:] - person.box_xyxy[:2]))
        if synthetic or clean:
            keypoints = person.keypoints.copy()
            labelled = keypoints[:, 2] > 0
            error = pc.clean_error if clean else synthetic_error_scale * pc.synthetic_error
            keypoints[:, :2] += rng.normal(size=(NUM_KEYPOINTS, 2)) * (
                error * self.prior_error * size)[:, None]
            # confidence of a projected estimate: the peak of the previous x̂0
            keypoints[:, 2] = np.where(labelled, rng.uniform(0.8 if clean else 0.5, 1.0,
                                                             NUM_KEYPOINTS), 0.0)
            # where the label has no joint, the detector's own estimate stands in
            keypoints[~labelled] = person.prior[~labelled]
        else:
            keypoints = person.prior.copy()
            if rng.random() < pc.jitter_probability:
                std = rng.uniform(0, pc.jitter_scale) * self.prior_error * size
                keypoints[:, :2] += rng.normal(size=(NUM_KEYPOINTS, 2)) * std[:, None]
            for a, b in LIMB_SWAP_PAIRS:
                if rng.random() < pc.swap_probability:
                    keypoints[[a, b]] = keypoints[[b, a]]
            if pc.wrong_joint_error > 0:
                error = np.linalg.norm(keypoints[:, :2] - person.keypoints[:, :2], axis=1)
                wrong = (person.keypoints[:, 2] > 0) & (
                    error > pc.wrong_joint_error * self.prior_error * size)
                keypoints[wrong, 2] *= rng.uniform(*pc.wrong_joint_confidence, int(wrong.sum()))
        keypoints[rng.random(NUM_KEYPOINTS) < pc.drop_probability, 2] = 0.0
        if pc.confidence_noise > 0:
            keypoints[:, 2] *= rng.uniform(1 - pc.confidence_noise, 1 + pc.confidence_noise,
                                           NUM_KEYPOINTS)
        keypoints[:, 2] = np.clip(keypoints[:, 2], 0.0, 1.0)
        transform = transform or self.key_transform(ref, aug)
        xy, conf, _ = self._to_heatmap(keypoints, transform, aug.flip)
        return xy, conf

    def _window_setup(self, iteration: int):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, iteration])
        centered = rng.random() < cfg.centered_probability
        offsets = window_offsets('centered' if centered else 'causal',
                                 cfg.centered_window_size if centered else cfg.causal_window_size)
        picks = rng.choice(len(self.refs), size=cfg.batch_size, p=self.ref_probs)
        return rng, offsets, [self.refs[p] for p in picks]

    def window_spacing(self, rng: np.random.Generator, offsets: np.ndarray,
                       sequence: Sequence) -> np.ndarray:
        """Frame offsets of one window: nominal, or with random gaps (dropped frames)."""
        if len(sequence.people) == 1 or rng.random() >= self.config.variable_spacing_probability:
            return offsets
        gaps = rng.integers(1, self.config.max_frame_gap + 1, size=len(offsets))
        spaced = np.zeros_like(offsets)
        key = int(np.flatnonzero(offsets == 0)[0])
        for i in range(key - 1, -1, -1):
            spaced[i] = spaced[i + 1] - gaps[i]
        for i in range(key + 1, len(offsets)):
            spaced[i] = spaced[i - 1] + gaps[i]
        limit = self.model_config.max_window_offset
        return np.clip(spaced, -limit, limit)

    def model_input(self, rng: np.random.Generator, refs: list[SampleRef],
                    augs: list[Augmentation], transforms: list[CropTransform],
                    targets_hm: np.ndarray, target_weights: np.ndarray,
                    ) -> dict[str, np.ndarray]:
        """x0 the input is noised from (heatmap domain), the timesteps and the noise."""
        mc = self.model_config
        pc = self.config.prior
        hw = (mc.heatmap_height, mc.heatmap_width)
        rows = len(refs)
        prior_xy = np.zeros((rows, NUM_KEYPOINTS, 2))
        prior_conf = np.zeros((rows, NUM_KEYPOINTS))
        from_prior = rng.random(rows) < pc.prior_probability
        synthetic = rng.random(rows) < pc.synthetic_probability
        prior_t, error_scale = draw_prior_timesteps(rng, synthetic, pc)
        timesteps = np.where(from_prior, prior_t,
                             rng.integers(0, mc.diffusion_timesteps, size=rows))
        # drawn only when used, so that older recipes keep their random streams
        clean = (~synthetic & (rng.random(rows) < pc.clean_probability)
                 if pc.clean_probability > 0 else np.zeros(rows, bool))
        for b, (ref, aug, transform) in enumerate(zip(refs, augs, transforms)):
            if from_prior[b]:
                prior_xy[b], prior_conf[b] = self.prior(ref, aug, rng, bool(synthetic[b]),
                                                        transform, float(error_scale[b]),
                                                        bool(clean[b]))
        label_maps = encode_heatmaps_batch(targets_hm, target_weights > 0, hw, mc.heatmap_sigma)
        prior_maps = render_prior_heatmaps(prior_xy, prior_conf, hw, mc.heatmap_sigma)
        x0_input = np.where(from_prior[:, None, None, None], prior_maps, label_maps)
        return {'heatmaps': label_maps, 'x0_input': x0_input.astype(np.float32),
                'timesteps': timesteps.astype(np.int64), 'from_prior': from_prior,
                'noise': rng.standard_normal(label_maps.shape, dtype=np.float32)}

    def _window(self, rng: np.random.Generator, ref: SampleRef, offsets: np.ndarray,
                ) -> tuple[Sequence, np.ndarray, list[tuple[int, int]]]:
        seq = self.sequences[ref.sequence]
        spaced = self.window_spacing(rng, offsets, seq)
        return seq, spaced, window_frames(seq, ref, spaced)

    def batch(self, iteration: int) -> dict[str, np.ndarray]:
        """Crops for the backbone (online augmentation; see also :meth:`cached_batch`)."""
        rng, offsets, refs = self._window_setup(iteration)
        crop_h, crop_w = self.crop_hw
        crops = np.empty((len(refs), len(offsets), crop_h, crop_w, 3), np.uint8)
        keypoints_hm = np.zeros((len(refs), NUM_KEYPOINTS, 2))
        weights = np.zeros((len(refs), NUM_KEYPOINTS))
        batch_offsets = np.zeros((len(refs), len(offsets)), np.int64)
        augs: list[Augmentation] = []
        transforms: list[CropTransform] = []
        for b, ref in enumerate(refs):
            aug = self.draw_augmentation(rng)
            if self.config.paste_person_probability > 0 and \
                    rng.random() < self.config.paste_person_probability:
                aug = dataclasses.replace(aug, paste=self.draw_paste(rng, ref.sequence,
                                                                     ref.track_id))
            seq, batch_offsets[b], frames = self._window(rng, ref, offsets)
            # online crops all use the key frame's box: aligned by construction
            for t, (image_pos, _) in enumerate(frames):
                crops[b, t] = self.crop(seq, image_pos, ref.frame, ref.track_id, aug)
            transforms.append(self.key_transform(ref, aug))
            keypoints_hm[b], weights[b] = self.target(ref, aug, transforms[-1])
            augs.append(aug)
        rgb = crops[..., ::-1].transpose(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        crops_f = np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1 / 255)
        return {'crops': crops_f, 'offsets': batch_offsets, 'weights': weights.astype(np.float32),
                **self.model_input(rng, refs, augs, transforms, keypoints_hm, weights)}

    def cached_batch(self, iteration: int, cache: FeatureCache) -> dict[str, np.ndarray]:
        """Backbone features gathered from ``cache`` (a random cached variant per window), each
        neighbour aligned to the key frame's crop as the pipeline aligns them."""
        rng, offsets, refs = self._window_setup(iteration)
        features = []
        keypoints_hm = np.zeros((len(refs), NUM_KEYPOINTS, 2))
        weights = np.zeros((len(refs), NUM_KEYPOINTS))
        batch_offsets = np.zeros((len(refs), len(offsets)), np.int64)
        augs: list[Augmentation] = []
        transforms: list[CropTransform] = []
        stride = self.model_config.feature_stride
        for b, ref in enumerate(refs):
            variant = self.draw_variant(rng, cache.variants)
            aug = self.variant_augmentation(variant, ref.sequence, ref.track_id)
            seq, batch_offsets[b], frames = self._window(rng, ref, offsets)
            key_transform = self.key_transform(ref, aug)
            window = []
            for image_pos, box_pos in frames:
                feats = cache.get(ref.sequence, image_pos, box_pos, ref.track_id, variant)
                if box_pos != ref.frame:
                    feats = align_features(
                        feats, self.transform_for(seq, box_pos, ref.track_id, aug),
                        key_transform, stride)
                window.append(feats)
            features.append(np.stack(window))
            keypoints_hm[b], weights[b] = self.target(ref, aug, key_transform)
            augs.append(aug)
            transforms.append(key_transform)
        feats = np.stack(features).astype(np.float32)
        return {'features': feats, 'offsets': batch_offsets, 'weights': weights.astype(np.float32),
                **self.model_input(rng, refs, augs, transforms, keypoints_hm, weights)}

    def draw_variant(self, rng: np.random.Generator, variants: int) -> int:
        """A cached variant: a paste variant for ``paste_person_probability`` of the windows."""
        pastes = self.config.paste_person_variants
        if pastes == 0:  # the older recipes' random stream
            return int(rng.integers(variants))
        if rng.random() < self.config.paste_person_probability:
            return variants - pastes + int(rng.integers(pastes))
        return int(rng.integers(variants - pastes))

    def window_keys(self) -> list[tuple[int, int, int, int]]:
        """Every (sequence, image frame, box frame, track) any training window can read."""
        cfg = self.config
        keys = set()
        reach = self.model_config.max_window_offset
        for ref in self.refs:
            seq = self.sequences[ref.sequence]
            if len(seq.people) == 1:
                keys.update((ref.sequence, i, b, ref.track_id) for i, b in window_frames(
                    seq, ref, np.zeros(1, np.int64)))
                continue
            span = np.arange(-reach, reach + 1, dtype=np.int64)
            if cfg.centered_probability <= 0:
                span = span[span <= 0]
            for image_pos, box_pos in window_frames(seq, ref, span):
                keys.add((ref.sequence, image_pos, box_pos, ref.track_id))
        return sorted(keys)


# left/right limb pairs a detector confuses (shoulder..wrist, hip..ankle), swapped as a whole
LIMB_SWAP_PAIRS = ((5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def attach_cached_priors(sequences: list[Sequence], source: DataSource,
                         progress: bool = True) -> None:
    """Give every labelled person its detection from ``source.priors`` (run the detector on
    images the cache lacks); people the detector misses keep ``prior = None``."""
    from diffpose_ros.training.priors import cache_priors, iter_image_files, match_detection

    paths = sorted({p for seq in sequences for p in seq.image_paths})
    cached = read_priors(source.priors)
    missing = [p for p in paths if p.name not in cached]
    if missing:
        from diffpose_ros.detection import UltralyticsPoseDetector

        LOGGER.info('%s: running YOLO11n-pose (imgsz %d) on %d images for the detector priors '
                    '(once; cached in %s)', source.path, source.detector_imgsz, len(missing),
                    source.priors)
        detector = UltralyticsPoseDetector(imgsz=source.detector_imgsz)
        cached = cache_priors(iter_image_files(missing), detector, source.priors,
                              total=len(missing), progress=progress,
                              identity={'detector': 'yolo11n-pose',
                                        'imgsz': source.detector_imgsz})
    for seq in sequences:
        for path, people in zip(seq.image_paths, seq.people):
            detections = cached.get(path.name, [])
            for person in people.values():
                match = match_detection(person.box_xyxy, person.keypoints, detections)
                if match is not None:
                    person.prior = match.keypoints.copy()
                    person.prior_box_xyxy = match.box_xyxy.copy()


HEAD_JOINTS = (0, 1, 2, 3, 4)
TEACHER_MIN_CONFIDENCE = 0.5


def label_head_joints_from_prior(sequences: list[Sequence]) -> None:
    """Unlabelled head joints take the detector's own estimate (confidence >= 0.5) as a
    half-weight teacher label."""
    for seq in sequences:
        for people in seq.people:
            for person in people.values():
                if person.prior is None:
                    continue
                for k in HEAD_JOINTS:
                    if person.keypoints[k, 2] <= 0 and \
                            person.prior[k, 2] >= TEACHER_MIN_CONFIDENCE:
                        person.keypoints[k] = (*person.prior[k, :2], 0.5 * person.prior[k, 2])


class FeatureCache:
    """Frozen-backbone features of every crop training reads, for a few augmentation variants.

    The backbone is frozen, so its features for a fixed crop never change: computing them once
    per (crop, variant) instead of once per iteration makes CPU training several times faster.
    The price is a fixed set of augmentations (``variants`` per track) instead of fresh ones.
    """

    def __init__(self, sampler: WindowSampler, model: Any, variants: int,
                 batch_size: int = 64, progress: bool = True):
        from tqdm import tqdm

        if variants < 1:
            raise ValueError(f'variants must be >= 1, got {variants}')
        self.variants = variants
        keys = sampler.window_keys()
        self.index = {key: i for i, key in enumerate(keys)}
        mc = sampler.model_config
        shape = (len(keys), variants, mc.backbone_channels, mc.feature_height, mc.feature_width)
        self.features = np.empty(shape, np.float16)
        jobs = [(i, v) for i in range(len(keys)) for v in range(variants)]
        bar = tqdm(total=len(jobs), desc='backbone features', unit='crop', disable=not progress)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            crops = []
            for i, v in chunk:
                seq_index, image_pos, box_pos, track_id = keys[i]
                aug = sampler.variant_augmentation(v, seq_index, track_id)
                crops.append(sampler.crop(sampler.sequences[seq_index], image_pos, box_pos,
                                          track_id, aug))
            rgb = np.stack(crops)[..., ::-1].transpose(0, 3, 1, 2)
            batch = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0)
            with torch.inference_mode():
                out = model.extract_features(batch).numpy()
            for (i, v), feats in zip(chunk, out):
                self.features[i, v] = feats
            bar.update(len(chunk))
        bar.close()

    @property
    def nbytes(self) -> int:
        return self.features.nbytes

    def get(self, sequence: int, image_pos: int, box_pos: int, track_id: int,
            variant: int) -> np.ndarray:
        return self.features[self.index[(sequence, image_pos, box_pos, track_id)], variant]


def diffusion_loss(model: Any, schedule: DiffusionSchedule, batch: dict[str, np.ndarray],
                   zero_heatmap_input: bool = False) -> torch.Tensor:
    """Weighted x0 heatmap MSE of one batch (the backbone runs without gradients).

    The input is ``batch['x0_input']`` (a prior or the label, heatmap domain) noised to
    ``batch['timesteps']``; the target is always the label (``batch['heatmaps']``).
    """
    if 'features' in batch:
        features = torch.from_numpy(batch['features'])
        bsz = features.shape[0]
    else:
        crops = torch.from_numpy(batch['crops'])
        bsz, frames = crops.shape[:2]
        with torch.no_grad():
            features = model.extract_features(crops.flatten(0, 1))
        features = features.reshape(bsz, frames, *features.shape[1:])
    condition = model.encode_window(features, torch.from_numpy(batch['offsets']))
    heatmaps = batch['heatmaps']
    x_t = schedule.add_noise(schedule.heatmaps_to_signal(batch['x0_input']), batch['noise'],
                             batch['timesteps'])
    model_input = schedule.signal_to_model_input(x_t).astype(np.float32)
    if zero_heatmap_input:
        model_input = np.zeros_like(model_input)
    pred = model.denoise(torch.from_numpy(model_input), torch.from_numpy(batch['timesteps']),
                         torch.arange(bsz), *condition)
    weights = torch.from_numpy(batch['weights'])[:, :, None, None]
    # scaled so a typical loss reads ~1 (heatmap pixels are mostly 0)
    return ((pred - torch.from_numpy(heatmaps)) ** 2 * weights).mean() * 1000.0


# --------------------------------------------------------------------------------------------
# Checkpoints (safetensors: head weights + AdamW moments; iteration in the metadata)
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer,
                    iteration: int, config_dict: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f'model.{k}': v.detach().contiguous().cpu()
               for k, v in model.head_state_dict().items()}
    names = _trainable_names(model)
    for name, param in zip(names, _trainable(model)):
        state = optimizer.state.get(param, {})
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            if key in state:
                value = state[key]
                value = value if torch.is_tensor(value) else torch.tensor(float(value))
                tensors[f'optim.{name}.{key}'] = value.detach().float().contiguous().cpu()
    tmp = path.with_suffix('.tmp')
    save_file(tensors, str(tmp), metadata={'iteration': str(iteration),
                                           'train_config': json.dumps(config_dict)})
    tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint


def load_init_weights(model: Any, weights_path: str | Path) -> None:
    """Start the head from trained weights (fine-tuning); their model config must match, except
    that a run may keep only the first ``strl_depth`` STRL blocks of a deeper model (pruning the
    window encoder for speed, then fine-tuning)."""
    import dataclasses

    from diffpose_ros.model.weights import load_model

    trained, _ = load_model(weights_path)
    depth = model.config.strl_depth
    same_but_depth = dataclasses.replace(trained.config, strl_depth=depth) == model.config
    if not same_but_depth or depth > trained.config.strl_depth:
        raise ValueError(f'init_weights {weights_path} has another model config than the run '
                         f'(only a smaller strl_depth may differ)')
    state = trained.head_state_dict()
    dropped = [k for k in state if (_strl_block_index(k) or 0) >= depth]
    for key in dropped:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    head_missing = [k for k in missing if k in model.head_state_dict()]
    if head_missing or unexpected:
        raise ValueError(f'init_weights {weights_path} does not fit the run: missing '
                         f'{head_missing[:5]}, unexpected {unexpected[:5]}')
    LOGGER.info('head initialised from %s%s', weights_path,
                f' (STRL blocks {depth}-{trained.config.strl_depth - 1} dropped)' if dropped
                else '')


def _strl_block_index(key: str) -> int | None:
    """N for a parameter of the STRL's N-th transformer block, else None."""
    parts = key.split('.')
    for i in range(len(parts) - 2):
        if parts[i] == 'strl' and parts[i + 1] == 'blocks' and parts[i + 2].isdigit():
            return int(parts[i + 2])
    return None


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer) -> int:
    """Restore weights and optimizer moments; returns the number of iterations done."""
    from safetensors import safe_open

    with safe_open(str(path), framework='pt') as f:
        iteration = int(f.metadata()['iteration'])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    head = {k[len('model.'):]: v for k, v in tensors.items() if k.startswith('model.')}
    missing, unexpected = model.load_state_dict(head, strict=False)
    missing = [k for k in missing if not k.startswith('backbone.')]
    if missing or unexpected:
        raise ValueError(f'{path} does not match the model: missing {missing[:3]}, '
                         f'unexpected {unexpected[:3]}')
    for name, param in zip(_trainable_names(model), _trainable(model)):
        state = {}
        for key in ('exp_avg', 'exp_avg_sq'):
            if f'optim.{name}.{key}' in tensors:
                state[key] = tensors[f'optim.{name}.{key}'].to(param.dtype)
        if f'optim.{name}.step' in tensors:
            state['step'] = tensors[f'optim.{name}.step'].reshape(())
        if state:
            optimizer.state[param] = state
    return iteration


def export_checkpoint(checkpoint: Path, weights_path: Path, model_config: ModelConfig,
                      storage_dtype: torch.dtype = torch.float32) -> Path:
    """Weights file (+ config JSON) from a training checkpoint, to evaluate a run mid-way."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from diffpose_ros.model.files import config_path_for

    with safe_open(str(checkpoint), framework='pt') as f:
        iteration = f.metadata()['iteration']
        tensors = {k[len('model.'):]: f.get_tensor(k) for k in f.keys() if k.startswith('model.')}
    tensors = {k: (v.to(storage_dtype) if v.is_floating_point() else v).contiguous()
               for k, v in tensors.items()}
    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(weights_path), metadata={'format': 'diffpose_ros-head-v1',
                                                    'iterations': iteration})
    model_config.save(config_path_for(weights_path))
    return weights_path


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if p.requires_grad]


def _trainable_names(model: Any) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def _prefetch(sampler: WindowSampler, start: int, stop: int, cache: FeatureCache | None,
              depth: int = 2):
    """Yield batches built in a background thread (cv2 releases the GIL while warping)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        for iteration in range(start, stop):
            try:
                batch = (sampler.batch(iteration) if cache is None
                         else sampler.cached_batch(iteration, cache))
                slots.put((iteration, batch))
            except Exception as exc:  # noqa: BLE001  (re-raised in the consumer)
                slots.put((iteration, exc))
                return

    threading.Thread(target=produce, daemon=True).start()
    for _ in range(start, stop):
        iteration, item = slots.get()
        if isinstance(item, Exception):
            raise item
        yield iteration, item


def train(config: TrainConfig, resume: bool = True, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Writes into ``config.out_dir``:
    checkpoint.safetensors, loss.csv, loss.png, the final weights + config JSON, summary.json.

    ``stop_after``: checkpoint and return once this many iterations are done (a time-boxed
    session); the learning-rate schedule still follows ``config.iterations``.
    """
    from tqdm import tqdm

    from diffpose_ros.model.diffpose import DiffPoseNet
    from diffpose_ros.model.weights import DEFAULT_WEIGHTS_NAME, save_weights

    check_data_sources(config)
    # Denormal floats (tiny AdamW moments, zero-initialised FiLM layers) made CPU iterations
    # 1.5-2x slower after ~1,000 iterations (measured: 2.0-2.9 s -> 1.4 s per iteration).
    torch.set_flush_denormal(True)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_config = config.model_config()
    torch.manual_seed(config.seed)
    model = DiffPoseNet(model_config)
    model.backbone.eval()
    model.window_encoder.train()
    model.denoiser.train()
    schedule = DiffusionSchedule.from_config(model_config)
    sampler = WindowSampler(config, model_config, progress=progress)
    optimizer = torch.optim.AdamW(_trainable(model), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    checkpoint = out_dir / CHECKPOINT_NAME
    loss_log = out_dir / 'loss.csv'
    start = 0
    if resume and checkpoint.is_file():
        start = load_checkpoint(checkpoint, model, optimizer)
        LOGGER.info('resumed from %s at iteration %d', checkpoint, start)
        _truncate_log(loss_log, start)  # rows after the checkpoint are re-run
    else:
        if config.init_weights:
            load_init_weights(model, config.init_weights)
        if loss_log.exists():
            loss_log.unlink()
    if not loss_log.exists():
        loss_log.write_text('iteration,loss,learning_rate,elapsed_s\n')
    (out_dir / 'train_config.json').write_text(json.dumps(config.to_dict(), indent=2))
    running, count = 0.0, 0
    bar = tqdm(total=config.iterations, initial=start, desc='train', unit='it',
               disable=not progress, dynamic_ncols=True)
    stop = config.iterations if stop_after is None else min(stop_after, config.iterations)
    cache = None
    if config.feature_cache_variants > 0 and start < stop:
        cache = FeatureCache(sampler, model,
                             config.feature_cache_variants + config.paste_person_variants,
                             progress=progress)
        LOGGER.info('feature cache: %d crops x %d variants, %.2f GB', len(cache.index),
                    cache.variants, cache.nbytes / 1e9)
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    started = time.perf_counter()
    for iteration, batch in _prefetch(sampler, start, stop, cache):
        lr = learning_rate_at(config, iteration)
        for group in optimizer.param_groups:
            group['lr'] = lr
        loss = diffusion_loss(model, schedule, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(_trainable(model), config.grad_clip_norm)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f'loss is {value} at iteration {iteration}')
        running += value
        count += 1
        bar.update(1)
        done = iteration + 1
        if done % config.log_every == 0 or done == config.iterations:
            mean = running / count
            running, count = 0.0, 0
            bar.set_postfix(loss=f'{mean:.4f}', lr=f'{lr:.2e}')
            with open(loss_log, 'a') as f:
                f.write(f'{done},{mean:.6f},{lr:.6e},{time.perf_counter() - started:.1f}\n')
        if done % config.checkpoint_every == 0 or done == stop:
            save_checkpoint(checkpoint, model, optimizer, done, config.to_dict())
            plot_loss(loss_log, out_dir / 'loss.png')
    bar.close()
    if stop < config.iterations:
        return {'finished': False, 'iterations_done': max(start, stop),
                'checkpoint': str(checkpoint), 'last_loss': _last_loss(loss_log)}
    model.eval()
    weights_path = save_weights(model, out_dir / DEFAULT_WEIGHTS_NAME, metadata={
        'iterations': config.iterations, 'seed': config.seed,
        'data': [d.path for d in config.data]})
    summary = {
        'finished': True,
        'weights': str(weights_path),
        'iterations': config.iterations,
        'samples_seen': config.iterations * config.batch_size,
        'training_windows_available': len(sampler.refs),
        'sequences': len(sampler.sequences),
        'final_loss': _last_loss(loss_log),
        'first_loss': _first_loss(loss_log),
        'seconds_this_run': round(time.perf_counter() - started, 1),
        'trainable_parameters': sum(p.numel() for p in _trainable(model)),
    }
    (out_dir / 'summary.json').write_text(json.dumps(summary, indent=2))
    return summary


def _truncate_log(loss_log: Path, last_iteration: int) -> None:
    if not loss_log.exists():
        return
    lines = loss_log.read_text().splitlines()
    kept = lines[:1] + [ln for ln in lines[1:] if ln and int(ln.split(',')[0]) <= last_iteration]
    loss_log.write_text('\n'.join(kept) + '\n')


def _read_log(loss_log: Path) -> np.ndarray:
    rows = [line.split(',') for line in loss_log.read_text().splitlines()[1:] if line]
    return np.asarray([[float(v) for v in row] for row in rows]).reshape(-1, 4)


def _first_loss(loss_log: Path) -> float | None:
    rows = _read_log(loss_log)
    return float(rows[0, 1]) if len(rows) else None


def _last_loss(loss_log: Path) -> float | None:
    rows = _read_log(loss_log)
    return float(rows[-1, 1]) if len(rows) else None


def plot_loss(loss_log: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = _read_log(loss_log)
    if not len(rows):
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(rows[:, 0], rows[:, 1], lw=1)
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('weighted heatmap MSE x 1000')
    ax.set_title('DiffPose head training loss')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
