"""DDIM sampling loop: oracle recovery, forward trajectory, batching, seeding, validation."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from diffpose_ros import sampler
from diffpose_ros.codec import encode_heatmaps_batch
from diffpose_ros.diffusion import DiffusionSchedule
from diffpose_ros.sampler import sample_heatmaps

SHAPE = (3, 16, 12)            # (K, H, W), small for speed
STEP_COUNTS_T1000 = list(range(1, 21)) + [50, 100]


def _true_heatmaps(num_persons, seed=0):
    rng = np.random.default_rng(seed)
    k, h, w = SHAPE
    xy = np.stack([rng.uniform(2, w - 2, (num_persons, k)),
                   rng.uniform(2, h - 2, (num_persons, k))], axis=-1)
    visible = np.ones((num_persons, k))
    visible[0, -1] = 0                                      # one missing joint: all-zero map
    return encode_heatmaps_batch(xy, visible, (h, w), 1.5)  # (N, K, H, W) float32


class Oracle:
    """Returns each row's true clean heatmaps; records every call."""

    def __init__(self, x0_heatmaps):
        self.x0 = x0_heatmaps
        self.calls = []

    def __call__(self, model_input, t, person_index):
        self.calls.append((model_input.copy(), t.copy(), person_index.copy()))
        return self.x0[person_index].copy()


def dummy_denoiser(model_input, t, person_index):
    """Deterministic non-oracle denoiser: depends on its input, t and the person."""
    t_col = t.astype(np.float64)[:, None, None, None]
    person = person_index.astype(np.float64)[:, None, None, None]
    out = model_input * (t_col / (t_col + 1)) * (1 - 0.1 * person) + 0.01 * person
    return out.astype(np.float32)


class LastOutput:
    """Wraps a denoiser; keeps its last output, i.e. every row's final x̂_0."""

    def __init__(self, denoise):
        self.denoise, self.rows = denoise, None

    def __call__(self, model_input, t, person_index):
        self.rows = np.asarray(self.denoise(model_input, t, person_index))
        return self.rows

    def per_hypothesis(self, persons, hypotheses):
        """(N, Hy, K, H, W): rows are person-major (b = n * Hy + h)."""
        return self.rows.reshape(persons, hypotheses, *SHAPE)


def _schedule(num_timesteps=1000):
    return DiffusionSchedule.from_name('cosine', num_timesteps, signal_scale=2.0)


# ------------------------------------------------------------------------------------------------
# oracle
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('num_timesteps,step_counts', [
    (1000, STEP_COUNTS_T1000),
    (20, list(range(1, 21))),
])
@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_oracle_recovers_x0_for_every_step_count(num_timesteps, step_counts, eta):
    schedule = _schedule(num_timesteps)
    x0 = _true_heatmaps(2)
    for steps in step_counts:
        oracle = Oracle(x0)
        result = sample_heatmaps(oracle, schedule, 2, SHAPE, steps, hypotheses=3, seed=7,
                                 eta=eta)
        assert isinstance(result, sampler.SampleResult)
        assert result.heatmaps.shape == (2, *SHAPE) and result.heatmaps.dtype == np.float32
        np.testing.assert_allclose(result.heatmaps, x0, atol=1e-6, err_msg=f'steps={steps}')
        # one denoiser call per step, at the time-pair timesteps
        assert [int(c[1][0]) for c in oracle.calls] == [t for t, _ in schedule.time_pairs(steps)]


@pytest.mark.parametrize('steps', [1, 2, 3, 7, 20, 100])
def test_eta0_oracle_inputs_lie_on_forward_trajectory_of_initial_noise(steps):
    schedule = _schedule(1000)
    x0 = _true_heatmaps(2)
    x0_signal = schedule.heatmaps_to_signal(x0.astype(np.float64))          # (N, K, H, W)
    seed, hypotheses = 11, 3
    # the documented seeding: hypothesis h draws x_T first from default_rng([seed, h])
    x_big_t = np.stack([np.random.default_rng([seed, h]).standard_normal(SHAPE, dtype=np.float32)
                        for h in range(hypotheses)]).astype(np.float64)       # (Hy, K, H, W)
    # Sampling starts from pure noise x_T, which is the forward sample at t = T - 1 of the noise
    # eps = (x_T - sqrt(abar_{T-1}) x0) / sqrt(1 - abar_{T-1}); abar_{T-1} ~ 2e-9, so eps ~ x_T.
    # With eta = 0 and an exact x0, eps_hat = eps at every step: all x_t lie on its trajectory.
    abar_last = schedule.alphas_cumprod[-1]
    eps = ((x_big_t[None] - np.sqrt(abar_last) * x0_signal[:, None])
           / np.sqrt(1 - abar_last))                                          # (N, Hy, K, H, W)
    assert np.abs(eps - x_big_t).max() < 1e-3
    unclipped = []

    class RecordingOracle(Oracle):
        def __call__(self, model_input, t, person_index):
            rows = model_input.reshape(2, hypotheses, *SHAPE)                # person-major
            x_t = schedule.add_noise(np.repeat(x0_signal[:, None], hypotheses, axis=1), eps,
                                     int(t[0]))
            expected = schedule.signal_to_model_input(x_t)
            # float32 loop vs this float64 reference
            np.testing.assert_allclose(rows, expected, atol=2e-5,
                                       err_msg=f'x_t off the trajectory at t={t[0]}')
            unclipped.append(np.mean(np.abs(x_t) < schedule.signal_scale))
            return super().__call__(model_input, t, person_index)

    oracle = RecordingOracle(x0)
    result = sample_heatmaps(oracle, schedule, 2, SHAPE, steps, hypotheses, seed, eta=0.0)
    assert len(oracle.calls) == steps
    np.testing.assert_allclose(result.heatmaps, x0, atol=1e-6)
    # the comparison is meaningful: at t = T - 1 most of x_t is inside the clipping range
    assert unclipped[0] > 0.8


def test_eta1_injects_noise():
    # with eta = 1 the second input is NOT the deterministic trajectory any more
    schedule = _schedule(1000)
    x0 = _true_heatmaps(1)
    runs = {}
    for eta in (0.0, 1.0):
        oracle = Oracle(x0)
        sample_heatmaps(oracle, schedule, 1, SHAPE, 3, 1, seed=5, eta=eta)
        runs[eta] = oracle.calls
    np.testing.assert_array_equal(runs[0.0][0][0], runs[1.0][0][0])   # same x_T
    assert np.abs(runs[0.0][1][0] - runs[1.0][1][0]).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# batching and seeding
# ------------------------------------------------------------------------------------------------

def test_one_batched_call_per_step_person_major():
    schedule = _schedule(1000)
    oracle = Oracle(_true_heatmaps(3))
    sample_heatmaps(oracle, schedule, 3, SHAPE, 4, hypotheses=2, seed=0, eta=1.0)
    assert len(oracle.calls) == 4
    for model_input, t, person_index in oracle.calls:
        assert model_input.shape == (6, *SHAPE) and model_input.dtype == np.float32
        assert model_input.min() >= 0.0 and model_input.max() <= 1.0
        assert t.dtype == np.int64 and t.shape == (6,) and np.all(t == t[0])
        assert person_index.dtype == np.int64
        np.testing.assert_array_equal(person_index, [0, 0, 1, 1, 2, 2])
        # every person shares its hypothesis' noise: rows n * Hy + h are equal across n
        rows = model_input.reshape(3, 2, *SHAPE)
        if int(t[0]) == 999:
            np.testing.assert_array_equal(rows[0], rows[1])
            np.testing.assert_array_equal(rows[0], rows[2])


@pytest.mark.parametrize('eta', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('steps', [1, 4])
def test_batched_hypotheses_equal_separate_runs(eta, steps):
    schedule = _schedule(1000)
    kwargs = dict(schedule=schedule, num_persons=2, heatmap_shape=SHAPE, steps=steps, seed=3,
                  eta=eta)
    recorded = LastOutput(dummy_denoiser)
    batched = sample_heatmaps(recorded, hypotheses=4, **kwargs)
    per_hyp = recorded.per_hypothesis(2, 4)
    # the first hypotheses of a larger run are a smaller run: batching changes no hypothesis
    alone = sample_heatmaps(dummy_denoiser, hypotheses=1, **kwargs)
    np.testing.assert_array_equal(per_hyp[:, 0], alone.heatmaps)
    pair = LastOutput(dummy_denoiser)
    sample_heatmaps(pair, hypotheses=2, **kwargs)
    np.testing.assert_array_equal(per_hyp[:, :2], pair.per_hypothesis(2, 2))
    # the ensemble is the mean over hypotheses
    np.testing.assert_allclose(batched.heatmaps, per_hyp.mean(axis=1), atol=1e-6)
    # hypotheses differ from each other (the noise matters for this denoiser)
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(per_hyp[:, a] - per_hyp[:, b]).max() > 1e-2


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_persons_batched_equal_persons_alone(eta):
    schedule = _schedule(1000)
    recorded = LastOutput(dummy_denoiser)
    together = sample_heatmaps(recorded, schedule, 3, SHAPE, steps=5, hypotheses=2,
                               seed=9, eta=eta)
    for n in range(3):
        def person_n(model_input, t, person_index, n=n):
            return dummy_denoiser(model_input, t, person_index + n)
        alone = LastOutput(person_n)
        alone_result = sample_heatmaps(alone, schedule, 1, SHAPE, steps=5, hypotheses=2, seed=9,
                                       eta=eta)
        np.testing.assert_array_equal(recorded.per_hypothesis(3, 2)[n],
                                      alone.per_hypothesis(1, 2)[0])
        np.testing.assert_array_equal(together.heatmaps[n], alone_result.heatmaps[0])
    # the person condition matters for this denoiser, so persons differ
    assert np.abs(together.heatmaps[0] - together.heatmaps[1]).max() > 1e-3


def test_determinism_and_seed_dependence():
    schedule = _schedule(1000)
    args = (dummy_denoiser, schedule, 2, SHAPE)
    first = sample_heatmaps(*args, steps=4, hypotheses=2, seed=123, eta=1.0)
    second = sample_heatmaps(*args, steps=4, hypotheses=2, seed=123, eta=1.0)
    other = sample_heatmaps(*args, steps=4, hypotheses=2, seed=124, eta=1.0)
    np.testing.assert_array_equal(first.heatmaps, second.heatmaps)
    assert np.abs(first.heatmaps - other.heatmaps).max() > 1e-3


def _reference_sample(denoise, schedule, persons, steps, hypotheses, seed, eta, prior, t_start):
    """The documented algorithm written plainly (float64, generators drawn step by step)."""
    rngs = [np.random.default_rng([seed, h]) for h in range(hypotheses)]
    x_t = np.stack([rng.standard_normal(SHAPE, dtype=np.float32) for rng in rngs]).astype(
        np.float64)[None].repeat(persons, axis=0)                     # (N, Hy, K, H, W)
    if prior is not None:
        x_t = schedule.add_noise(np.broadcast_to(schedule.heatmaps_to_signal(
            prior.astype(np.float64))[:, None], x_t.shape), x_t, t_start)
    person_index = np.repeat(np.arange(persons), hypotheses)
    for t, t_next in schedule.time_pairs(steps, t_start):
        model_input = schedule.signal_to_model_input(x_t).reshape(-1, *SHAPE)
        x0 = np.asarray(denoise(model_input.astype(np.float32), np.full(len(person_index), t),
                                person_index), np.float64).reshape(x_t.shape)
        if t_next < 0:
            break
        z = np.stack([rng.standard_normal(SHAPE, dtype=np.float32) for rng in rngs]) \
            if eta > 0 else None
        x_t = schedule.ddim_step(x_t, schedule.heatmaps_to_signal(x0), t, t_next, eta,
                                 None if z is None else np.broadcast_to(z, x_t.shape))
    return x0.mean(axis=1)


@pytest.mark.parametrize('eta', [0.0, 1.0])
@pytest.mark.parametrize('start', ['noise', 'prior'])
def test_fast_loop_equals_the_plain_algorithm(eta, start):
    # the sampler's in-place float32 arithmetic and cached noise change nothing but rounding
    schedule = _schedule(1000)
    prior = _true_heatmaps(2, seed=4) if start == 'prior' else None
    t_start = 300 if start == 'prior' else None
    for steps in (1, 2, 5):
        fast = sample_heatmaps(dummy_denoiser, schedule, 2, SHAPE, steps, hypotheses=3, seed=6,
                               eta=eta, prior_heatmaps=prior, t_start=t_start)
        plain = _reference_sample(dummy_denoiser, schedule, 2, steps, 3, 6, eta, prior, t_start)
        np.testing.assert_allclose(fast.heatmaps, plain, atol=2e-5, err_msg=f'steps={steps}')


def test_hypothesis_noise_is_each_generators_draws_in_order_and_cached():
    noise = sampler.hypothesis_noise(5, 2, SHAPE, 3)
    assert noise.shape == (3, 2, *SHAPE) and noise.dtype == np.float32
    assert not noise.flags.writeable          # shared between frames: nobody may change it
    for h in range(2):
        rng = np.random.default_rng([5, h])
        for d in range(3):
            np.testing.assert_array_equal(noise[d, h], rng.standard_normal(SHAPE, np.float32))
    assert sampler.hypothesis_noise(5, 2, SHAPE, 3) is noise          # drawn once
    assert sampler.hypothesis_noise(6, 2, SHAPE, 3) is not noise


def test_hypothesis_noise_beyond_the_cache_limit_is_drawn_each_time(monkeypatch):
    monkeypatch.setattr(sampler, 'NOISE_CACHE_MAX_BYTES', 100)
    first = sampler.hypothesis_noise(1, 1, SHAPE, 2)
    second = sampler.hypothesis_noise(1, 1, SHAPE, 2)
    assert first is not second
    np.testing.assert_array_equal(first, second)


def test_no_persons_skips_the_denoiser():
    oracle = Oracle(np.zeros((0, *SHAPE), np.float32))
    result = sample_heatmaps(oracle, _schedule(), 0, SHAPE, 2, hypotheses=3, seed=0, eta=1.0)
    assert oracle.calls == []
    assert result.heatmaps.shape == (0, *SHAPE)


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('steps', [0, -3, 1001, 2.5, True])
def test_steps_validation(steps):
    with pytest.raises(ValueError):
        sample_heatmaps(dummy_denoiser, _schedule(1000), 1, SHAPE, steps)


def test_steps_validation_small_t():
    schedule = _schedule(20)
    sample_heatmaps(dummy_denoiser, schedule, 1, SHAPE, 20)   # steps = T is fine
    with pytest.raises(ValueError):
        sample_heatmaps(dummy_denoiser, schedule, 1, SHAPE, 21)


@pytest.mark.parametrize('kwargs', [
    dict(num_persons=-1),
    dict(hypotheses=0),
    dict(seed=-1),
    dict(eta=1.5),
    dict(eta=float('nan')),
    dict(heatmap_shape=(16, 12)),
    dict(heatmap_shape=(3, 0, 12)),
])
def test_argument_validation(kwargs):
    args = dict(denoise=dummy_denoiser, schedule=_schedule(), num_persons=1,
                heatmap_shape=SHAPE, steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError):
        sample_heatmaps(**args)


def test_wrong_denoiser_output_shape_raises():
    def bad(model_input, t, person_index):
        return model_input[:, :1]
    with pytest.raises(ValueError, match='denoiser returned shape'):
        sample_heatmaps(bad, _schedule(), 2, SHAPE, 2)


def test_core_modules_import_without_torch_and_rclpy():
    code = ('import sys\n'
            'for name in ("torch", "rclpy", "cv_bridge", "onnxruntime"):\n'
            '    sys.modules[name] = None  # any import of these now raises ImportError\n'
            'import diffpose_ros.codec, diffpose_ros.diffusion, diffpose_ros.sampler\n')
    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, '-c', code], cwd=root, check=True, timeout=60)
