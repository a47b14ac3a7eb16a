"""Noise schedules, signal scaling, time pairs and the DDIM update."""
import math

import numpy as np
import pytest

from diffpose_ros import diffusion
from diffpose_ros.config import ModelConfig
from diffpose_ros.diffusion import DiffusionSchedule

# ------------------------------------------------------------------------------------------------
# schedules
# ------------------------------------------------------------------------------------------------

# Cosine schedule for T = 4, s = 0.008, by hand:
#   f(t) = cos(((t / 4) + 0.008) / 1.008 * pi / 2)^2
#   f = [0.9998445910004082, 0.8468805280142708, 0.49376684270229254, 0.144249681202635, ~3.7e-33]
#   beta_t = 1 - f(t + 1) / f(t) = [0.15298783867, 0.41695808751, 0.70785871240, ~1 -> 0.999]
#   abar_t = cumprod(1 - beta)
GOLDEN_COSINE_T4 = (0.8470121613269047, 0.4938435904406378, 0.14427210238573585,
                    0.00014427210238573596)


def test_cosine_tiny_t_matches_hand_computation():
    f = [math.cos(((t / 4) + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(5)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(4)]
    assert betas[3] == 0.999, 'the last beta must hit the max_beta clip'
    expected = np.cumprod([1 - b for b in betas])
    abar = diffusion.cosine_alphas_cumprod(4)
    assert abar.dtype == np.float64 and abar.shape == (4,)
    np.testing.assert_allclose(abar, expected, rtol=1e-12)
    np.testing.assert_allclose(abar, GOLDEN_COSINE_T4, rtol=1e-12,
                               err_msg=f'golden values changed: {abar.tolist()}')
    # first beta by hand with explicit numbers
    assert abar[0] == pytest.approx(1 - (1 - 0.8468805280142708 / 0.9998445910004082))


def test_cosine_t1000_known_properties():
    abar = diffusion.cosine_alphas_cumprod(1000)
    assert abar.shape == (1000,)
    assert np.all(np.diff(abar) < 0), 'abar must be strictly decreasing'
    assert 0.9999 < abar[0] < 1.0
    assert abar[-1] < 1e-8                        # x_{T-1} is (almost) pure noise
    assert np.all(abar > 0)
    # abar_t ~ f(t + 1) / f(0): at t + 1 = T / 2 the cosine is cos(~pi / 4)^2 ~ 0.49
    assert abar[499] == pytest.approx(0.4938435904406378, rel=1e-9)
    betas = 1 - abar / np.concatenate([[1.0], abar[:-1]])
    assert betas.max() == pytest.approx(0.999)    # clipped at the end
    assert betas.min() > 0


def test_linear_schedule():
    abar = diffusion.linear_alphas_cumprod(1000)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(abar, np.cumprod(1 - betas), rtol=1e-12)
    assert abar[0] == pytest.approx(1 - 1e-4)
    assert abar.dtype == np.float64 and np.all(np.diff(abar) < 0)
    np.testing.assert_allclose(diffusion.linear_alphas_cumprod(3, 0.1, 0.3),
                               [0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7])


@pytest.mark.parametrize('call', [
    lambda: diffusion.cosine_alphas_cumprod(0),
    lambda: diffusion.cosine_alphas_cumprod(10, s=0.0),
    lambda: diffusion.cosine_alphas_cumprod(10, max_beta=1.0),
    lambda: diffusion.cosine_alphas_cumprod(2.5),
    lambda: diffusion.linear_alphas_cumprod(10, beta_start=0.0),
    lambda: diffusion.linear_alphas_cumprod(10, beta_start=0.1, beta_end=0.01),
    lambda: diffusion.make_alphas_cumprod('sigmoid', 10),
    lambda: DiffusionSchedule(np.array([0.9, 0.95])),                  # increasing
    lambda: DiffusionSchedule(np.array([1.0, 0.5])),                   # abar = 1: eps undefined
    lambda: DiffusionSchedule(np.array([0.5, 0.0])),
    lambda: DiffusionSchedule(np.zeros((2, 2)) + 0.5),
    lambda: DiffusionSchedule(np.array([0.5]), signal_scale=0.0),
])
def test_bad_schedule_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_schedule_from_config():
    schedule = DiffusionSchedule.from_config(ModelConfig())
    assert schedule.num_timesteps == 1000 and schedule.signal_scale == 2.0
    np.testing.assert_array_equal(schedule.alphas_cumprod, diffusion.cosine_alphas_cumprod(1000))
    linear = DiffusionSchedule.from_config(
        ModelConfig(noise_schedule='linear', diffusion_timesteps=50, signal_scale=1.0))
    np.testing.assert_array_equal(linear.alphas_cumprod, diffusion.linear_alphas_cumprod(50))
    with pytest.raises(ValueError):
        schedule.alphas_cumprod[0] = 0.5           # read-only


# ------------------------------------------------------------------------------------------------
# signal domain and forward process
# ------------------------------------------------------------------------------------------------

def test_signal_scaling():
    schedule = DiffusionSchedule.from_name('cosine', 10, signal_scale=2.0)
    heatmaps = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    signal = schedule.heatmaps_to_signal(heatmaps)
    np.testing.assert_allclose(signal, [-2.0, -1.0, 0.0, 2.0])
    assert signal.dtype == np.float32
    model_input = schedule.signal_to_model_input(np.array([-5.0, -2.0, -1.0, 0.0, 2.0, 7.0]))
    np.testing.assert_allclose(model_input, [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    # the two maps are inverse on [0, 1]
    h = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    back = schedule.signal_to_model_input(schedule.heatmaps_to_signal(h))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, h, atol=1e-6)


def test_add_noise_formula_and_statistics():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    abar = schedule.alphas_cumprod
    rng = np.random.default_rng(1)
    x0 = np.full((4, 64, 48), -2.0)
    x0[:, 30:34, 20:24] = 2.0
    eps = rng.standard_normal(x0.shape)
    for t in (0, 10, 500, 999):
        x_t = schedule.add_noise(x0, eps, t)
        np.testing.assert_allclose(x_t, math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * eps)
        residual = x_t - math.sqrt(abar[t]) * x0
        assert residual.mean() == pytest.approx(0.0, abs=0.02)
        assert residual.std() == pytest.approx(math.sqrt(1 - abar[t]), rel=0.02)
    # one t per row, broadcast over the trailing dims
    t_rows = np.array([0, 250, 999, 999])
    x_t = schedule.add_noise(x0, eps, t_rows)
    for b, t in enumerate(t_rows):
        np.testing.assert_allclose(x_t[b], schedule.add_noise(x0[b], eps[b], int(t)))
    # float32 stays float32
    x32 = schedule.add_noise(x0.astype(np.float32), eps.astype(np.float32), t_rows)
    assert x32.dtype == np.float32


@pytest.mark.parametrize('t', [-1, 1000, 2.0, np.array([0, 1000]), True])
def test_add_noise_rejects_bad_t(t):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    with pytest.raises(ValueError):
        schedule.add_noise(np.zeros((2, 3)), np.zeros((2, 3)), t)


def test_add_noise_rejects_bad_shapes():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    with pytest.raises(ValueError):
        schedule.add_noise(np.zeros((2, 3)), np.zeros((3, 2)), 5)
    with pytest.raises(ValueError):
        schedule.add_noise(np.zeros((2, 3)), np.zeros((2, 3)), np.array([1, 2, 3]))


# ------------------------------------------------------------------------------------------------
# time pairs
# ------------------------------------------------------------------------------------------------

def _check_pairs(pairs, steps, num_timesteps):
    assert len(pairs) == steps
    times = np.array([t for t, _ in pairs] + [pairs[-1][1]])
    assert times[0] == num_timesteps - 1 and times[-1] == -1
    assert np.all(np.diff(times) < 0), f'not strictly decreasing for steps={steps}'
    # pairs chain: each t_next is the next pair's t
    assert all(pairs[i][1] == pairs[i + 1][0] for i in range(steps - 1))
    assert all(isinstance(t, int) and isinstance(t_next, int) for t, t_next in pairs)


def test_time_pairs_every_step_count_t1000():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    for steps in range(1, 1001):
        _check_pairs(schedule.time_pairs(steps), steps, 1000)


@pytest.mark.parametrize('num_timesteps', [1, 2, 3, 7, 50])
def test_time_pairs_every_step_count_small_t(num_timesteps):
    schedule = DiffusionSchedule(np.linspace(0.99, 0.01, num_timesteps))
    for steps in range(1, num_timesteps + 1):
        _check_pairs(schedule.time_pairs(steps), steps, num_timesteps)


def test_time_pairs_values():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    assert schedule.time_pairs(1) == [(999, -1)]
    assert schedule.time_pairs(2) == [(999, 499), (499, -1)]
    assert schedule.time_pairs(4) == [(999, 749), (749, 499), (499, 249), (249, -1)]
    # linspace(-1, 999, 4) = [-1, 332.33, 665.67, 999] -> int: uneven gaps 333 / 333 / 334
    assert schedule.time_pairs(3) == [(999, 665), (665, 332), (332, -1)]
    full = schedule.time_pairs(1000)
    assert full[0] == (999, 998) and full[-1] == (0, -1)


@pytest.mark.parametrize('steps', [0, -1, 1001, 2.0, True, None])
def test_time_pairs_rejects_bad_steps(steps):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    with pytest.raises(ValueError):
        schedule.time_pairs(steps)


# ------------------------------------------------------------------------------------------------
# DDIM step
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('steps', [1, 2, 3, 5, 10, 50, 1000])
def test_ddim_eta0_with_oracle_stays_on_forward_trajectory(steps):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    rng = np.random.default_rng(2)
    x0 = schedule.heatmaps_to_signal(rng.random((2, 3, 8, 6)))
    eps = rng.standard_normal(x0.shape)
    pairs = schedule.time_pairs(steps)
    x_t = schedule.add_noise(x0, eps, pairs[0][0])
    for t, t_next in pairs:
        x_t = schedule.ddim_step(x_t, x0, t, t_next, 0.0)
        expected = x0 if t_next < 0 else schedule.add_noise(x0, eps, t_next)
        np.testing.assert_allclose(x_t, expected, atol=1e-9, err_msg=f't={t} -> {t_next}')


def test_ddim_step_formula_with_noise():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    abar = schedule.alphas_cumprod
    rng = np.random.default_rng(3)
    x_t, x0, z = (rng.standard_normal((3, 4, 5)) for _ in range(3))
    t, t_next, eta = 800, 600, 0.7
    eps_hat = (x_t - math.sqrt(abar[t]) * x0) / math.sqrt(1 - abar[t])
    sigma = eta * math.sqrt((1 - abar[t] / abar[t_next]) * (1 - abar[t_next]) / (1 - abar[t]))
    expected = (math.sqrt(abar[t_next]) * x0 + math.sqrt(1 - abar[t_next] - sigma ** 2) * eps_hat
                + sigma * z)
    np.testing.assert_allclose(schedule.ddim_step(x_t, x0, t, t_next, eta, z), expected,
                               rtol=1e-12)
    # last step returns x0 (a copy), whatever eta and noise
    out = schedule.ddim_step(x_t, x0, 100, -1, 1.0, None)
    np.testing.assert_array_equal(out, x0)
    assert out is not x0


def test_ddim_eta1_single_step_is_ddpm_posterior_variance():
    # eta = 1 and t_next = t - 1: sigma^2 = (1 - abar_{t-1}) / (1 - abar_t) * beta_t (DDPM beta~)
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    abar = schedule.alphas_cumprod
    t = 400
    beta_t = 1 - abar[t] / abar[t - 1]
    posterior_var = (1 - abar[t - 1]) / (1 - abar[t]) * beta_t
    x_t = np.zeros(1)
    x0 = np.zeros(1)
    z = np.ones(1)
    # with x_t = x0 = 0 the update is sigma * z
    assert schedule.ddim_step(x_t, x0, t, t - 1, 1.0, z)[0] == pytest.approx(
        math.sqrt(posterior_var), rel=1e-9)


def test_ddim_eta1_with_oracle_keeps_forward_marginals():
    # eps_hat = eps exactly; c^2 + sigma^2 = 1 - abar_next, so x_next ~ q(x_next | x0)
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    abar = schedule.alphas_cumprod
    rng = np.random.default_rng(4)
    x0 = np.full((200_000,), 1.5)
    eps = rng.standard_normal(x0.shape)
    x_t = schedule.add_noise(x0, eps, 900)
    x_next = schedule.ddim_step(x_t, x0, 900, 300, 1.0, rng.standard_normal(x0.shape))
    residual = x_next - math.sqrt(abar[300]) * x0
    assert residual.mean() == pytest.approx(0.0, abs=0.01)
    assert residual.std() == pytest.approx(math.sqrt(1 - abar[300]), rel=0.01)


@pytest.mark.parametrize('kwargs', [
    dict(t=10, t_next=10, eta=0.0),            # t_next must be < t
    dict(t=10, t_next=20, eta=0.0),
    dict(t=1000, t_next=10, eta=0.0),          # t out of range
    dict(t=10, t_next=-2, eta=0.0),
    dict(t=10, t_next=5, eta=-0.1),
    dict(t=10, t_next=5, eta=1.5),
    dict(t=10, t_next=5, eta=float('nan')),
    dict(t=10, t_next=5, eta=0.5),             # noise missing
    dict(t=10, t_next=5, eta=0.5, noise=np.zeros(3)),
    dict(t=10, t_next=5, eta=0.0, x0_signal_pred=np.zeros(3)),
])
def test_ddim_step_rejects_bad_arguments(kwargs):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    args = dict(x_t=np.zeros((2, 2)), x0_signal_pred=np.zeros((2, 2)), noise=None)
    args.update(kwargs)
    with pytest.raises(ValueError):
        schedule.ddim_step(**args)


def test_ddim_step_keeps_float32():
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    x = np.zeros((2, 2), np.float32)
    assert schedule.ddim_step(x, x, 500, 250, 1.0, x).dtype == np.float32


# ------------------------------------------------------------------------------------------------
# the sampler's in-place hot path equals the plain formulas
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('signal_scale', [2.0, 1.5])
def test_signal_to_model_input_f32_equals_the_plain_map(signal_scale):
    schedule = DiffusionSchedule.from_name('cosine', 1000, signal_scale=signal_scale)
    signal = (np.random.default_rng(7).standard_normal((3, 5, 8, 6)) * 2).astype(np.float32)
    fast = schedule.signal_to_model_input_f32(signal)
    plain = schedule.signal_to_model_input(signal)
    assert fast.dtype == np.float32 and fast is not signal
    assert fast.min() == 0.0 and fast.max() == 1.0           # the clipping is exercised
    if signal_scale == 2.0:
        np.testing.assert_array_equal(fast, plain)
    else:
        np.testing.assert_allclose(fast, plain, atol=1e-7)


@pytest.mark.parametrize('eta,t,t_next', [(0.0, 800, 600), (1.0, 800, 600), (0.5, 200, 0)])
def test_ddim_step_from_heatmaps_in_place_equals_ddim_step_on_the_signal(eta, t, t_next):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    rng = np.random.default_rng(11)
    x_t = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    heatmaps = rng.random((2, 3, 4, 5)).astype(np.float32)
    z = rng.standard_normal((3, 4, 5)).astype(np.float32)          # broadcast over the rows
    expected = schedule.ddim_step(x_t.astype(np.float64),
                                  schedule.heatmaps_to_signal(heatmaps.astype(np.float64)),
                                  t, t_next, eta, np.broadcast_to(z, x_t.shape))
    updated = x_t.copy()
    result = schedule.ddim_step_from_heatmaps_(updated, heatmaps, t, t_next, eta, z)
    assert result is updated and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=2e-6)
    assert np.abs(expected - x_t).max() > 0.1                      # the step moved x_t


@pytest.mark.parametrize('kwargs', [
    dict(t_next=-1),                                  # the last step has nothing to update
    dict(t_next=10),
    dict(eta=0.5, noise=None),                        # noise missing
    dict(x_t=np.zeros((2, 2))),                       # float64
    dict(heatmaps=np.zeros(3, np.float32)),
])
def test_ddim_step_from_heatmaps_rejects_bad_arguments(kwargs):
    schedule = DiffusionSchedule.from_name('cosine', 1000)
    args = dict(x_t=np.zeros((2, 2), np.float32), heatmaps=np.zeros((2, 2), np.float32), t=10,
                t_next=5, eta=0.0, noise=None)
    args.update(kwargs)
    with pytest.raises(ValueError):
        schedule.ddim_step_from_heatmaps_(args['x_t'], args['heatmaps'], args['t'],
                                          args['t_next'], args['eta'], args['noise'])
