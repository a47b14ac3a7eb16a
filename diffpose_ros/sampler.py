"""DDIM sampling loop over heatmaps, independent of the network backend (torch or ONNX Runtime).

The backend computes each person's condition features once per window and exposes the denoiser
f(x_t, F, t) as a :class:`DenoiseFn`; this module owns the loop so that the number of steps, the
number of hypotheses (pose ensemble) and eta stay run-time choices.

Conventions:
    * Rows: all persons x hypotheses go through ONE denoiser call per step, person-major:
      row ``b = n * hypotheses + h`` holds person n, hypothesis h, and ``person_index[b] = n``.
    * Noise: hypothesis h owns the generator ``np.random.default_rng([seed, h])``. Its first
      draw is x_T, a
      (K, H, W) standard normal map in the signal domain; then, for step i = 0, 1, ... in order,
      one (K, H, W) map z_i is drawn only for the steps that use noise (eta > 0 and t_next >= 0).
      Every person shares its hypothesis' noise, so a person's result does not depend on which
      other persons are in the batch, and the first hypotheses of a larger run reproduce a
      run with fewer hypotheses exactly. The draws depend only on (seed, hypotheses, shape,
      number of draws), so :func:`hypothesis_noise` draws them once and caches them.
    * Precision: float32 throughout (noise drawn as float32); the loop's own array work is a
      visible share of a CPU step, and float32 halves it; the update runs in place
      (:meth:`DiffusionSchedule.ddim_step_from_heatmaps_`).
"""
from __future__ import annotations

import dataclasses
import functools
import operator
from typing import Protocol

import numpy as np

from diffpose_ros.codec import project_heatmaps
from diffpose_ros.diffusion import DiffusionSchedule


class DenoiseFn(Protocol):
    """Denoiser of a batch of rows, each conditioned on one person's features."""

    def __call__(self, model_input: np.ndarray, t: np.ndarray,
                 person_index: np.ndarray) -> np.ndarray:
        """Predict the clean heatmaps.

        Args:
            model_input: (B, K, H, W) float32 in [0, 1],
                ``schedule.signal_to_model_input(x_t)``.
            t: (B,) int64 timesteps.
            person_index: (B,) int64; row b uses the condition features of this person.

        Returns:
            (B, K, H, W) float32 x̂_0 in the heatmap domain [0, 1] (not the signal).
        """
        ...


@dataclasses.dataclass(frozen=True, eq=False)
class SampleResult:
    """Output of :func:`sample_heatmaps`.

    Attributes:
        heatmaps: (N, K, H, W) float32 mean over hypotheses of the final x̂_0 heatmaps.
    """

    heatmaps: np.ndarray


def _check_int(value: int, name: str, low: int, high: int | None = None) -> int:
    try:
        result = operator.index(value)
    except TypeError as exc:
        raise ValueError(f'{name} must be an integer, got {value!r}') from exc
    if isinstance(value, bool) or result < low or (high is not None and result > high):
        bound = f'[{low}, {high}]' if high is not None else f'>= {low}'
        raise ValueError(f'{name} must be {bound}, got {value!r}')
    return result


# Cached noise stays small: e.g. 8 steps x 4 hypotheses of 17x64x48 maps are 7 MB.
NOISE_CACHE_MAX_BYTES = 32 * 1024 * 1024


def hypothesis_noise(seed: int, hypotheses: int, shape: tuple[int, ...],
                     draws: int) -> np.ndarray:
    """The first ``draws`` standard-normal maps of every hypothesis' generator.

    Hypothesis h's generator is ``np.random.default_rng([seed, h])`` and draw d is its d-th
    ``standard_normal(shape, float32)`` (d = 0 is x_T), so the maps depend only on these
    arguments: up to :data:`NOISE_CACHE_MAX_BYTES` they are drawn once and cached instead of at
    every frame, where the draws cost about as much as the rest of the loop's own array work.

    Returns:
        (draws, hypotheses, *shape) float32, not writeable.
    """
    shape = tuple(int(v) for v in shape)
    if draws * hypotheses * int(np.prod(shape)) * 4 <= NOISE_CACHE_MAX_BYTES:
        return _cached_hypothesis_noise(int(seed), int(hypotheses), shape, int(draws))
    return _draw_hypothesis_noise(seed, hypotheses, shape, draws)


def _draw_hypothesis_noise(seed: int, hypotheses: int, shape: tuple[int, ...],
                           draws: int) -> np.ndarray:
    noise = np.empty((draws, hypotheses, *shape), dtype=np.float32)
    for h in range(hypotheses):
        rng = np.random.default_rng([seed, h])
        for d in range(draws):
            noise[d, h] = rng.standard_normal(shape, dtype=np.float32)
    noise.flags.writeable = False
    return noise


_cached_hypothesis_noise = functools.lru_cache(maxsize=8)(_draw_hypothesis_noise)


def sample_heatmaps(denoise: DenoiseFn, schedule: DiffusionSchedule, num_persons: int,
                    heatmap_shape: tuple[int, int, int], steps: int, hypotheses: int = 1,
                    seed: int = 0, eta: float = 1.0, *,
                    prior_heatmaps: np.ndarray | None = None, t_start: int | None = None,
                    projection_sigma: float | None = None) -> SampleResult:
    """Run DDIM to heatmaps for N persons and Hy hypotheses each.

    Start: from pure noise at t = T - 1 (the paper), or, with ``prior_heatmaps``, from the prior
    noised to ``t_start`` (SDEdit, Meng et al. 2022; as in DiffPose of Gong et al. CVPR 2023):
    x_{t_start} = sqrt(abar) * signal(prior) + sqrt(1 - abar) * x_T-noise.
    For each (t, t_next) in ``schedule.time_pairs(steps, t_start)``: the denoiser gets
    ``signal_to_model_input(x_t)`` and returns x̂_0 heatmaps; then either x_t is updated with
    ``schedule.ddim_step`` on ``heatmaps_to_signal(x̂_0)``, or, with ``projection_sigma``
    (x̂_0 projection), x̂_0 is redrawn as clean Gaussians at its peaks
    (:func:`codec.project_heatmaps`) and re-noised to t_next with the step's noise, exactly as
    training noises its inputs. The result of a hypothesis is the last x̂_0 (heatmap domain).
    Row order and noise seeding: see the module docstring (x_T-noise is the first draw; the
    projection uses one draw per step that has a t_next >= 0).

    Args:
        denoise: backend denoiser, called ``steps`` times with B = N * Hy rows.
        schedule: diffusion schedule the weights were trained with.
        num_persons: N >= 0 (0 returns empty arrays without calling the denoiser).
        heatmap_shape: (K, H, W).
        steps: denoising steps, 1 <= steps <= T.
        hypotheses: Hy >= 1 noise seeds whose final heatmaps are averaged.
        seed: base seed >= 0.
        eta: DDIM eta in [0, 1].
        prior_heatmaps: (N, K, H, W) in [0, 1], e.g. the detector's keypoints drawn with
            :func:`codec.render_prior_heatmaps`; needs ``t_start``.
        t_start: first timestep when starting from a prior.
        projection_sigma: heatmap sigma for x̂_0 projection between steps; None = plain DDIM.

    Returns:
        A :class:`SampleResult`.

    Raises:
        ValueError: for bad arguments or a denoiser output of the wrong shape.
    """
    persons = _check_int(num_persons, 'num_persons', 0)
    num_hyp = _check_int(hypotheses, 'hypotheses', 1)
    seed = _check_int(seed, 'seed', 0)
    if len(heatmap_shape) != 3:
        raise ValueError(f'heatmap_shape must be (K, H, W), got {heatmap_shape!r}')
    shape = tuple(_check_int(v, 'heatmap_shape entries', 1) for v in heatmap_shape)
    if not (np.isfinite(eta) and 0 <= eta <= 1):
        raise ValueError(f'eta must be in [0, 1], got {eta}')
    if (prior_heatmaps is None) != (t_start is None):
        raise ValueError('prior_heatmaps and t_start go together')
    pairs = schedule.time_pairs(steps, t_start)              # validates steps and t_start
    if prior_heatmaps is not None:
        prior_heatmaps = np.asarray(prior_heatmaps, np.float32)
        if prior_heatmaps.shape != (persons, *shape):
            raise ValueError(f'prior_heatmaps must have shape {(persons, *shape)}, '
                             f'got {prior_heatmaps.shape}')

    if persons == 0:
        return SampleResult(np.zeros((0, *shape), dtype=np.float32))

    rows = persons * num_hyp
    uses_step_noise = eta > 0 or projection_sigma is not None
    draws = 1 + (sum(1 for _, t_next in pairs if t_next >= 0) if uses_step_noise else 0)
    noise_draws = hypothesis_noise(seed, num_hyp, shape, draws)              # (D, Hy, K, H, W)
    x_t = np.broadcast_to(noise_draws[0], (persons, num_hyp, *shape)).copy()     # (N, Hy, K, H, W)
    if prior_heatmaps is not None:
        x0_prior = schedule.heatmaps_to_signal(prior_heatmaps)[:, None]          # (N, 1, K, H, W)
        x_t = schedule.add_noise(np.broadcast_to(x0_prior, x_t.shape), x_t, t_start)
        x_t = x_t.astype(np.float32, copy=False)
    person_index = np.repeat(np.arange(persons, dtype=np.int64), num_hyp)        # (B,)
    x0_heatmaps = np.zeros(x_t.shape, dtype=np.float32)  # replaced at the first step
    next_draw = 1
    for t, t_next in pairs:
        model_input = schedule.signal_to_model_input_f32(x_t)
        x0_rows = np.asarray(denoise(model_input.reshape(rows, *shape),
                                     np.full(rows, t, dtype=np.int64), person_index.copy()))
        if x0_rows.shape != (rows, *shape):
            raise ValueError(f'denoiser returned shape {x0_rows.shape}, expected '
                             f'{(rows, *shape)}')
        x0_heatmaps = x0_rows.astype(np.float32, copy=False).reshape(x_t.shape)
        if t_next < 0:
            break
        noise = None
        if uses_step_noise:
            noise = np.broadcast_to(noise_draws[next_draw], x_t.shape)
            next_draw += 1
        if projection_sigma is not None:
            projected = project_heatmaps(x0_heatmaps, projection_sigma)
            x_t = schedule.add_noise(schedule.heatmaps_to_signal(projected), noise,
                                     t_next).astype(np.float32, copy=False)
            continue
        x_t = schedule.ddim_step_from_heatmaps_(x_t, x0_heatmaps, t, t_next, eta, noise)

    if num_hyp == 1:
        mean = x0_heatmaps[:, 0].copy()                                           # (N, K, H, W)
    else:
        mean = x0_heatmaps.mean(axis=1, dtype=np.float64).astype(np.float32)     # (N, K, H, W)
    return SampleResult(mean)
