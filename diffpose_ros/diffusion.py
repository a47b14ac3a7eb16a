"""Noise schedules and the DDIM update for heatmap diffusion (pure numpy).

Notation (DDPM, Ho et al. 2020; DDIM, Song et al. 2021): timesteps t = 0 .. T-1, noise rates
beta_t, alpha_t = 1 - beta_t, abar_t = prod_{s <= t} alpha_s (``alphas_cumprod``). The forward
process is q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).

DiffPose diffuses Gaussian keypoint heatmaps H in [0, 1]. As in DiffusionDet (Chen et al. 2023)
the network works in a scaled "signal" domain: x_0 = (2 H - 1) * scale (background -scale, peak
+scale); a noisy x_t is clipped to [-scale, scale] and mapped back to [0, 1] before entering the
denoiser, which predicts the clean heatmaps x̂_0 directly (not the noise).
"""
from __future__ import annotations

import math
import operator

import numpy as np

from diffpose_ros.config import ModelConfig

NOISE_SCHEDULES = ('cosine', 'linear')


def _check_timesteps(num_timesteps: int) -> int:
    try:
        value = operator.index(num_timesteps)
    except TypeError as exc:
        raise ValueError(f'num_timesteps must be an integer, got {num_timesteps!r}') from exc
    if value < 1:
        raise ValueError(f'num_timesteps must be >= 1, got {value}')
    return value


def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008,
                          max_beta: float = 0.999) -> np.ndarray:
    """abar_t of the cosine schedule (Nichol & Dhariwal 2021, Eq. 17), as in DiffusionDet.

    f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2 for t = 0 .. T;
    beta_t = min(1 - f(t + 1) / f(t), max_beta); abar_t = prod_{s <= t} (1 - beta_s).

    Args:
        num_timesteps: T.
        s: small offset that keeps beta_0 away from 0.
        max_beta: upper clip of beta_t (avoids the singularity at t = T).

    Returns:
        (T,) float64 abar_t, strictly decreasing, in (0, 1).
    """
    steps = _check_timesteps(num_timesteps)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f's must be finite and > 0, got {s}')
    if not 0 < max_beta < 1:
        raise ValueError(f'max_beta must be in (0, 1), got {max_beta}')
    t = np.arange(steps + 1, dtype=np.float64)
    f = np.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2                    # (T + 1,)
    betas = np.clip(1 - f[1:] / f[:-1], 0.0, max_beta)                           # (T,)
    return np.cumprod(1 - betas)


def linear_alphas_cumprod(num_timesteps: int, beta_start: float = 1e-4,
                          beta_end: float = 0.02) -> np.ndarray:
    """abar_t of the linear schedule of DDPM: beta_t = linspace(beta_start, beta_end, T).

    The betas are not rescaled with T (DDPM's values are meant for T = 1000).

    Returns:
        (T,) float64 abar_t.
    """
    steps = _check_timesteps(num_timesteps)
    if not (0 < beta_start <= beta_end < 1):
        raise ValueError('need 0 < beta_start <= beta_end < 1, got '
                         f'{beta_start} and {beta_end}')
    betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    return np.cumprod(1 - betas)


def make_alphas_cumprod(name: str, num_timesteps: int) -> np.ndarray:
    """(T,) abar_t for a schedule name in ``NOISE_SCHEDULES`` (default parameters)."""
    if name == 'cosine':
        return cosine_alphas_cumprod(num_timesteps)
    if name == 'linear':
        return linear_alphas_cumprod(num_timesteps)
    raise ValueError(f'noise schedule must be one of {NOISE_SCHEDULES}, got {name!r}')


class DiffusionSchedule:
    """Forward process, signal scaling, DDIM time pairs and the DDIM update.

    Args:
        alphas_cumprod: (T,) abar_t, non-increasing, each in (0, 1).
        signal_scale: heatmap-to-signal scale (DiffusionDet's SNR scale).
    """

    def __init__(self, alphas_cumprod: np.ndarray, signal_scale: float = 2.0) -> None:
        abar = np.array(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or abar.size < 1:
            raise ValueError(f'alphas_cumprod must have shape (T,), T >= 1, got {abar.shape}')
        if not np.all(np.isfinite(abar)) or np.any(abar <= 0) or np.any(abar >= 1):
            raise ValueError('alphas_cumprod must lie in the open interval (0, 1)')
        if np.any(np.diff(abar) > 0):
            raise ValueError('alphas_cumprod must be non-increasing')
        if not (math.isfinite(signal_scale) and signal_scale > 0):
            raise ValueError(f'signal_scale must be finite and > 0, got {signal_scale}')
        abar.flags.writeable = False
        self._abar = abar
        self._signal_scale = float(signal_scale)

    @classmethod
    def from_name(cls, noise_schedule: str = 'cosine', num_timesteps: int = 1000,
                  signal_scale: float = 2.0) -> DiffusionSchedule:
        """Schedule from a name in ``NOISE_SCHEDULES`` and T."""
        return cls(make_alphas_cumprod(noise_schedule, num_timesteps), signal_scale)

    @classmethod
    def from_config(cls, config: ModelConfig) -> DiffusionSchedule:
        """Schedule from ``noise_schedule``, ``diffusion_timesteps`` and ``signal_scale``."""
        return cls.from_name(config.noise_schedule, config.diffusion_timesteps,
                             config.signal_scale)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """(T,) float64 abar_t (read-only)."""
        return self._abar

    @property
    def num_timesteps(self) -> int:
        """T."""
        return int(self._abar.size)

    @property
    def signal_scale(self) -> float:
        return self._signal_scale

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_timesteps={self.num_timesteps}, '
                f'signal_scale={self._signal_scale})')

    # -- signal domain ----------------------------------------------------------------------------

    def heatmaps_to_signal(self, heatmaps: np.ndarray) -> np.ndarray:
        """x_0 = (2 H - 1) * scale. Keeps a floating input's dtype."""
        heatmaps = np.asarray(heatmaps)
        return (2 * heatmaps - 1) * self._signal_scale

    def signal_to_model_input(self, signal: np.ndarray) -> np.ndarray:
        """(clip(x, -scale, scale) / scale + 1) / 2, in [0, 1]. Keeps a floating input's dtype."""
        scale = self._signal_scale
        return (np.clip(np.asarray(signal), -scale, scale) / scale + 1) / 2

    def signal_to_model_input_f32(self, signal: np.ndarray) -> np.ndarray:
        """:meth:`signal_to_model_input` of a float32 array in 3 passes and one new array (the
        sampler's hot path); equal to it up to float32 rounding (exactly for the default scale
        2)."""
        scale = self._signal_scale
        out = np.clip(signal, -scale, scale, dtype=np.float32)
        out *= np.float32(0.5 / scale)
        out += np.float32(0.5)
        return out

    # -- forward process --------------------------------------------------------------------------

    def _check_t(self, t: int | np.ndarray, name: str = 't', allow_minus_one: bool = False,
                 ) -> np.ndarray:
        t_arr = np.asarray(t)
        if t_arr.dtype == np.bool_ or not np.issubdtype(t_arr.dtype, np.integer):
            raise ValueError(f'{name} must be an integer or an integer array, got {t!r}')
        low = -1 if allow_minus_one else 0
        if t_arr.size and (t_arr.min() < low or t_arr.max() >= self.num_timesteps):
            raise ValueError(f'{name} must be in [{low}, {self.num_timesteps - 1}], got {t!r}')
        return t_arr.astype(np.int64)

    def _per_row(self, values: np.ndarray, t: np.ndarray, ndim: int, dtype: np.dtype,
                 ) -> np.ndarray | float:
        # A scalar t gives a Python float (keeps float32 arrays float32); a (B,) t gives a
        # (B, 1, ..., 1) array broadcast over the trailing dims of a (B, ...) array.
        if t.ndim == 0:
            return float(values[t])
        if t.ndim != 1 or ndim < 1:
            raise ValueError(f't must be a scalar or have shape (B,), got shape {t.shape}')
        return values[t].astype(dtype).reshape((-1,) + (1,) * (ndim - 1))

    def _ddim_coefficients(self, t: int, t_next: int, eta: float) -> tuple[float, float, float]:
        """(a, b, sigma) of x_next = a x̂_0 + b x_t + sigma z for 0 <= t_next < t.

        sqrt(abar_next) x̂_0 + c eps_hat with eps_hat expanded: one linear combination of x̂_0
        and x_t (fewer passes over the arrays than forming eps_hat first).
        """
        abar_t = float(self._abar[t])
        abar_next = float(self._abar[t_next])
        sigma = eta * math.sqrt((1 - abar_t / abar_next) * (1 - abar_next) / (1 - abar_t))
        c = math.sqrt(max(1 - abar_next - sigma * sigma, 0.0))
        c_over = c / math.sqrt(1 - abar_t)
        return math.sqrt(abar_next) - c_over * math.sqrt(abar_t), c_over, sigma

    def ddim_step_from_heatmaps_(self, x_t: np.ndarray, x0_heatmaps: np.ndarray, t: int,
                                 t_next: int, eta: float,
                                 noise: np.ndarray | None = None) -> np.ndarray:
        """:meth:`ddim_step` on ``heatmaps_to_signal(x0_heatmaps)``, written into ``x_t``.

        The sampler's hot path: x_next = 2 s a H + b x_t - s a + sigma z, with no intermediate
        signal array (on a CPU the loop's own passes over the arrays are a visible share of a
        denoising step). Same validation as :meth:`ddim_step`, except that ``t_next`` must be
        >= 0 (at -1 the result is x̂_0 itself, nothing to update).

        Args:
            x_t: float32 noisy signal at t, any shape; overwritten with x_{t_next}.
            x0_heatmaps: predicted x̂_0 in the heatmap domain, same shape as ``x_t``.
            t, t_next: 0 <= t_next < t <= T - 1.
            eta: in [0, 1].
            noise: z, broadcastable to ``x_t``; needed when sigma > 0.

        Returns:
            ``x_t`` (the same array, updated).
        """
        if not (isinstance(x_t, np.ndarray) and x_t.dtype == np.float32 and x_t.flags.writeable):
            raise ValueError('x_t must be a writeable float32 array')
        heatmaps = np.asarray(x0_heatmaps, dtype=np.float32)
        if heatmaps.shape != x_t.shape:
            raise ValueError(f'x0_heatmaps shape {heatmaps.shape} != x_t shape {x_t.shape}')
        t_int = int(self._check_t(t))
        t_next_int = int(self._check_t(t_next, 't_next'))
        if t_next_int >= t_int:
            raise ValueError(f't_next must be < t, got t={t_int}, t_next={t_next_int}')
        if not (math.isfinite(eta) and 0 <= eta <= 1):
            raise ValueError(f'eta must be in [0, 1], got {eta}')
        coef_x0, coef_xt, sigma = self._ddim_coefficients(t_int, t_next_int, eta)
        scale = self._signal_scale
        x_t *= np.float32(coef_xt)
        term = np.multiply(heatmaps, np.float32(2 * scale * coef_x0), dtype=np.float32)
        x_t += term
        if sigma > 0:
            if noise is None:
                raise ValueError('noise is required when eta > 0 and t_next >= 0')
            np.multiply(np.broadcast_to(np.asarray(noise, np.float32), x_t.shape),
                        np.float32(sigma), out=term)
            x_t += term
        x_t -= np.float32(scale * coef_x0)
        return x_t

    def add_noise(self, x0_signal: np.ndarray, noise: np.ndarray,
                  t: int | np.ndarray) -> np.ndarray:
        """Sample q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

        Args:
            x0_signal: (B, ...) clean signal.
            noise: eps, same shape as ``x0_signal``.
            t: an int, or a (B,) int array (one timestep per leading row).

        Returns:
            x_t with the shape of ``x0_signal`` (float32 stays float32).
        """
        x0 = np.asarray(x0_signal)
        eps = np.asarray(noise)
        if x0.shape != eps.shape:
            raise ValueError(f'noise shape {eps.shape} != x0_signal shape {x0.shape}')
        t_arr = self._check_t(t)
        if t_arr.ndim == 1 and (x0.ndim < 1 or x0.shape[0] != t_arr.shape[0]):
            raise ValueError(f't has {t_arr.shape[0]} rows, x0_signal has shape {x0.shape}')
        dtype = np.result_type(x0.dtype, eps.dtype, np.float32)
        sqrt_abar = self._per_row(np.sqrt(self._abar), t_arr, x0.ndim, dtype)
        sqrt_one_minus = self._per_row(np.sqrt(1 - self._abar), t_arr, x0.ndim, dtype)
        return sqrt_abar * x0 + sqrt_one_minus * eps

    # -- reverse process --------------------------------------------------------------------------

    def time_pairs(self, steps: int, t_start: int | None = None) -> list[tuple[int, int]]:
        """(t, t_next) pairs of a DDIM sampling run with ``steps`` denoiser calls.

        As DiffusionDet / lucidrains: ``times = linspace(-1, t_start, steps + 1)``, reversed, cast
        to int; consecutive entries form the pairs [(t_start, ...), ..., (..., -1)]. This list is
        the only source of t_next (a stride formula breaks for uneven spacings, diffusers#11347).

        Args:
            steps: number of denoising steps, 1 <= steps <= t_start + 1.
            t_start: first timestep; None = T - 1 (start from pure noise). A smaller value
                starts from a noised prior (SDEdit).

        Returns:
            ``steps`` pairs with strictly decreasing t; the first t is t_start, the last t_next -1.
        """
        start = self.num_timesteps - 1 if t_start is None else self.check_t_start(t_start)
        try:
            count = operator.index(steps)
        except TypeError as exc:
            raise ValueError(f'steps must be an integer, got {steps!r}') from exc
        if isinstance(steps, bool) or not 1 <= count <= start + 1:
            raise ValueError(f'steps must be in [1, {start + 1}] (t_start {start}), '
                             f'got {steps!r}')
        times = np.linspace(-1, start, count + 1)[::-1].astype(np.int64)
        values = times.tolist()
        return list(zip(values[:-1], values[1:], strict=True))

    def check_t_start(self, t_start: int) -> int:
        """Validated start timestep in [0, T - 1]."""
        try:
            value = operator.index(t_start)
        except TypeError as exc:
            raise ValueError(f't_start must be an integer, got {t_start!r}') from exc
        if isinstance(t_start, bool) or not 0 <= value < self.num_timesteps:
            raise ValueError(f't_start must be in [0, {self.num_timesteps - 1}], got {t_start!r}')
        return value

    def ddim_step(self, x_t: np.ndarray, x0_signal_pred: np.ndarray, t: int, t_next: int,
                  eta: float, noise: np.ndarray | None = None) -> np.ndarray:
        """One DDIM update x_t -> x_{t_next} given the predicted clean signal x̂_0.

        eps_hat = (x_t - sqrt(abar_t) x̂_0) / sqrt(1 - abar_t);
        if t_next < 0 the result is x̂_0; otherwise (DDIM Eq. 12 and 16)
        sigma = eta * sqrt((1 - abar_t / abar_next) (1 - abar_next) / (1 - abar_t)),
        c = sqrt(1 - abar_next - sigma^2),
        x_next = sqrt(abar_next) x̂_0 + c eps_hat + sigma z.

        Args:
            x_t: noisy signal at t, any shape.
            x0_signal_pred: x̂_0 in the signal domain, same shape.
            t: current timestep in [0, T-1].
            t_next: next timestep in [-1, t - 1] (-1: return x̂_0).
            eta: 0 for deterministic DDIM, 1 for DDPM-like ancestral noise; in [0, 1].
            noise: z, same shape as ``x_t``; needed when sigma > 0 (eta > 0 and t_next >= 0).

        Returns:
            x_{t_next} (x̂_0 itself, as a new array, when t_next < 0).
        """
        x_t = np.asarray(x_t)
        x0 = np.asarray(x0_signal_pred)
        if x0.shape != x_t.shape:
            raise ValueError(f'x0_signal_pred shape {x0.shape} != x_t shape {x_t.shape}')
        t_int = int(self._check_t(t))
        t_next_int = int(self._check_t(t_next, 't_next', allow_minus_one=True))
        if t_next_int >= t_int:
            raise ValueError(f't_next must be < t, got t={t_int}, t_next={t_next_int}')
        if not (math.isfinite(eta) and 0 <= eta <= 1):
            raise ValueError(f'eta must be in [0, 1], got {eta}')
        if t_next_int < 0:
            return x0.copy()
        coef_x0, coef_xt, sigma = self._ddim_coefficients(t_int, t_next_int, eta)
        x_next = coef_x0 * x0 + coef_xt * x_t
        if sigma > 0:
            if noise is None:
                raise ValueError('noise is required when eta > 0 and t_next >= 0')
            z = np.asarray(noise)
            if z.shape != x_t.shape:
                raise ValueError(f'noise shape {z.shape} != x_t shape {x_t.shape}')
            x_next = x_next + sigma * z
        return x_next
