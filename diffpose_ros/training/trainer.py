"""Training of the DiffPose head (STRL + condition pyramid + LMSFI denoiser); backbone frozen.

One iteration: B track windows (one random crop augmentation shared by a window's frames) ->
frozen backbone features -> STRL condition -> noisy Gaussian heatmaps at a uniform random
timestep -> predicted x0 -> confidence- and joint-weighted heatmap MSE (the paper's x0
objective). Every iteration's randomness derives from (seed, iteration), so a resumed run
continues exactly where it stopped. Checkpoints are safetensors (no pickle).
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
from diffpose_ros.codec import CropTransform, box_to_center_size, encode_heatmaps_batch
from diffpose_ros.config import ModelConfig
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.skeleton import NUM_KEYPOINTS, flip_permutation
from diffpose_ros.training.data import (
    SampleRef,
    Sequence,
    load_sequences,
    sample_refs,
    window_frames,
)

LOGGER = logging.getLogger(__name__)

# Per-joint loss weights of the DCPose lineage (wrists, ankles and elbows/knees count more).
JOINT_LOSS_WEIGHTS = (1.0,) * 7 + (1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5)
CHECKPOINT_NAME = 'checkpoint.safetensors'


@dataclasses.dataclass(frozen=True)
class DataSource:
    path: str
    image_root: str | None = None
    weight: float = 1.0  # sampling weight of this source relative to the others


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
    torch_threads: int = 0  # 0 = torch default
    # > 0: precompute frozen-backbone features for this many augmentation variants per track
    # (fast on CPU); 0: fresh augmentation and a backbone pass every iteration
    feature_cache_variants: int = 6
    augment: AugmentConfig = AugmentConfig()
    model: dict = dataclasses.field(default_factory=dict)  # ModelConfig overrides

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
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({**ModelConfig().to_dict(), **self.model})


def learning_rate_at(config: TrainConfig, iteration: int) -> float:
    """Linear warm-up, then cosine decay to ``min_learning_rate_fraction``."""
    if iteration < config.warmup_iterations:
        return config.learning_rate * (iteration + 1) / config.warmup_iterations
    span = max(1, config.iterations - config.warmup_iterations)
    progress = min(1.0, (iteration - config.warmup_iterations) / span)
    floor = config.min_learning_rate_fraction
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    flip: bool = False
    scale: float = 1.0
    rotation_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # share of the crop region size
    gain: float = 1.0
    bias: float = 0.0


class WindowSampler:
    """Builds augmented training batches (crops, heatmap targets, joint weights)."""

    def __init__(self, config: TrainConfig, model_config: ModelConfig):
        self.config = config
        self.model_config = model_config
        self.sequences: list[Sequence] = []
        self.refs: list[SampleRef] = []
        self.ref_weights: list[float] = []
        for source in config.data:
            sequences = load_sequences(source.path, source.image_root)
            offset = len(self.sequences)
            refs = [dataclasses.replace(r, sequence=r.sequence + offset)
                    for r in sample_refs(sequences, config.min_labelled_joints)]
            if not refs:
                raise ValueError(f'{source.path}: no person with >= '
                                 f'{config.min_labelled_joints} labelled joints')
            self.sequences += sequences
            self.refs += refs
            self.ref_weights += [source.weight / len(refs)] * len(refs)
        probs = np.asarray(self.ref_weights)
        self.ref_probs = probs / probs.sum()
        self._images: dict[Path, np.ndarray] = {}
        self.flip_perm = np.asarray(flip_permutation())
        self.crop_hw = (model_config.crop_height, model_config.crop_width)
        self.joint_weights = np.asarray(JOINT_LOSS_WEIGHTS[:NUM_KEYPOINTS], np.float32)

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
        """Cached-feature variant: 0 plain, 1 flipped, others random per (track, variant)."""
        if variant == 0:
            return Augmentation()
        if variant == 1:
            return Augmentation(flip=True)
        return self.draw_augmentation(np.random.default_rng(
            [self.config.seed, 7919, variant, ref_sequence, track_id]))

    def transform_for(self, seq: Sequence, box_pos: int, track_id: int,
                      aug: Augmentation) -> CropTransform:
        crop_h, crop_w = self.crop_hw
        box = seq.people[box_pos][track_id].box_xyxy
        center, size = box_to_center_size(box, crop_w / crop_h, self.model_config.box_enlarge)
        return CropTransform.from_center_scale_rotation(
            center + np.asarray(aug.shift) * size, size * aug.scale, aug.rotation_deg,
            self.crop_hw, aug.flip)

    def crop(self, seq: Sequence, image_pos: int, box_pos: int, track_id: int,
             aug: Augmentation) -> np.ndarray:
        crop = self.transform_for(seq, box_pos, track_id, aug).warp(
            self._image(seq.image_paths[image_pos]))
        if aug.gain != 1.0 or aug.bias != 0.0:
            crop = cv2.convertScaleAbs(crop, alpha=aug.gain, beta=aug.bias)
        return crop

    def target(self, ref: SampleRef, aug: Augmentation) -> tuple[np.ndarray, np.ndarray]:
        """Key-frame keypoints in heatmap px (17, 2) and loss weights (17,)."""
        seq = self.sequences[ref.sequence]
        transform = self.transform_for(seq, ref.frame, ref.track_id, aug)
        label = seq.people[ref.frame][ref.track_id].keypoints
        if aug.flip:
            label = label[self.flip_perm]
        crop_h, crop_w = self.crop_hw
        crop_xy = transform.image_to_crop(label[:, :2])
        inside = ((crop_xy[:, 0] >= 0) & (crop_xy[:, 0] < crop_w)
                  & (crop_xy[:, 1] >= 0) & (crop_xy[:, 1] < crop_h))
        return crop_xy / self.model_config.heatmap_stride, label[:, 2] * inside * \
            self.joint_weights

    def _window_setup(self, iteration: int):
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, iteration])
        centered = rng.random() < cfg.centered_probability
        offsets = window_offsets('centered' if centered else 'causal',
                                 cfg.centered_window_size if centered else cfg.causal_window_size)
        picks = rng.choice(len(self.refs), size=cfg.batch_size, p=self.ref_probs)
        return rng, offsets, [self.refs[p] for p in picks]

    def _finish(self, rng, offsets, keypoints_hm, weights, extra) -> dict[str, np.ndarray]:
        mc = self.model_config
        heatmaps = encode_heatmaps_batch(keypoints_hm, weights > 0,
                                         (mc.heatmap_height, mc.heatmap_width),
                                         mc.heatmap_sigma)
        return {
            **extra,
            'offsets': offsets,
            'heatmaps': heatmaps,
            'weights': weights.astype(np.float32),
            'timesteps': rng.integers(0, mc.diffusion_timesteps, size=len(weights)),
            'noise': rng.standard_normal(heatmaps.shape, dtype=np.float32),
        }

    def batch(self, iteration: int) -> dict[str, np.ndarray]:
        """Crops for the backbone (online augmentation; see also :meth:`cached_batch`)."""
        rng, offsets, refs = self._window_setup(iteration)
        crop_h, crop_w = self.crop_hw
        crops = np.empty((len(refs), len(offsets), crop_h, crop_w, 3), np.uint8)
        keypoints_hm = np.zeros((len(refs), NUM_KEYPOINTS, 2))
        weights = np.zeros((len(refs), NUM_KEYPOINTS))
        for b, ref in enumerate(refs):
            seq = self.sequences[ref.sequence]
            aug = self.draw_augmentation(rng)
            for t, (image_pos, box_pos) in enumerate(window_frames(seq, ref, offsets)):
                crops[b, t] = self.crop(seq, image_pos, box_pos, ref.track_id, aug)
            keypoints_hm[b], weights[b] = self.target(ref, aug)
        rgb = crops[..., ::-1].transpose(0, 1, 4, 2, 3)  # (B, T, 3, H, W)
        crops_f = np.ascontiguousarray(rgb, dtype=np.float32) * np.float32(1 / 255)
        return self._finish(rng, offsets, keypoints_hm, weights, {'crops': crops_f})

    def cached_batch(self, iteration: int, cache: FeatureCache) -> dict[str, np.ndarray]:
        """Backbone features gathered from ``cache`` (a random cached variant per window)."""
        rng, offsets, refs = self._window_setup(iteration)
        features = []
        keypoints_hm = np.zeros((len(refs), NUM_KEYPOINTS, 2))
        weights = np.zeros((len(refs), NUM_KEYPOINTS))
        for b, ref in enumerate(refs):
            seq = self.sequences[ref.sequence]
            variant = int(rng.integers(cache.variants))
            aug = self.variant_augmentation(variant, ref.sequence, ref.track_id)
            features.append(np.stack([
                cache.get(ref.sequence, image_pos, box_pos, ref.track_id, variant)
                for image_pos, box_pos in window_frames(seq, ref, offsets)]))
            keypoints_hm[b], weights[b] = self.target(ref, aug)
        feats = np.stack(features).astype(np.float32)
        return self._finish(rng, offsets, keypoints_hm, weights, {'features': feats})

    def window_keys(self) -> list[tuple[int, int, int, int]]:
        """Every (sequence, image frame, box frame, track) any training window reads."""
        cfg = self.config
        keys = set()
        offset_sets = [window_offsets('causal', cfg.causal_window_size)]
        if cfg.centered_probability > 0:
            offset_sets.append(window_offsets('centered', cfg.centered_window_size))
        for ref in self.refs:
            seq = self.sequences[ref.sequence]
            for offsets in offset_sets:
                for image_pos, box_pos in window_frames(seq, ref, offsets):
                    keys.add((ref.sequence, image_pos, box_pos, ref.track_id))
        return sorted(keys)


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
    """Weighted x0 heatmap MSE of one batch (the backbone runs without gradients)."""
    if 'features' in batch:
        features = torch.from_numpy(batch['features'])
        bsz = features.shape[0]
    else:
        crops = torch.from_numpy(batch['crops'])
        bsz, frames = crops.shape[:2]
        with torch.no_grad():
            features = model.extract_features(crops.flatten(0, 1))
        features = features.reshape(bsz, frames, *features.shape[1:])
    f1, f2, f3 = model.encode_window(features, torch.from_numpy(batch['offsets']))
    heatmaps = batch['heatmaps']
    x_t = schedule.add_noise(schedule.heatmaps_to_signal(heatmaps), batch['noise'],
                             batch['timesteps'])
    model_input = schedule.signal_to_model_input(x_t).astype(np.float32)
    if zero_heatmap_input:
        model_input = np.zeros_like(model_input)
    pred = model.denoise(torch.from_numpy(model_input), torch.from_numpy(batch['timesteps']),
                         torch.arange(bsz), f1, f2, f3)
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

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    model_config = config.model_config()
    torch.manual_seed(config.seed)
    model = DiffPoseNet(model_config)
    model.backbone.eval()
    model.window_encoder.train()
    model.denoiser.train()
    schedule = DiffusionSchedule.from_config(model_config)
    sampler = WindowSampler(config, model_config)
    optimizer = torch.optim.AdamW(_trainable(model), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    checkpoint = out_dir / CHECKPOINT_NAME
    loss_log = out_dir / 'loss.csv'
    start = 0
    if resume and checkpoint.is_file():
        start = load_checkpoint(checkpoint, model, optimizer)
        LOGGER.info('resumed from %s at iteration %d', checkpoint, start)
        _truncate_log(loss_log, start)  # rows after the checkpoint are re-run
    elif loss_log.exists():
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
        cache = FeatureCache(sampler, model, config.feature_cache_variants, progress=progress)
        LOGGER.info('feature cache: %d crops x %d variants, %.2f GB', len(cache.index),
                    cache.variants, cache.nbytes / 1e9)
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
