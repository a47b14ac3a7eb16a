"""Training: data loading (COCO, PoseTrack, pseudo-labels), windows, a few real iterations,
resumable checkpoints, and the held-out guard."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffpose_ros.metrics import POSETRACK_KEYPOINT_NAMES
from diffpose_ros.skeleton import BONES, KEYPOINT_NAMES
from diffpose_ros.training.data import (
    HELD_OUT_VIDEO_SHA256,
    HeldOutDataError,
    SampleRef,
    load_sequences,
    sample_refs,
    window_frames,
)
from diffpose_ros.training.trainer import (
    DataSource,
    TrainConfig,
    WindowSampler,
    learning_rate_at,
    train,
)

# A stick figure (COCO-17) in a 120 x 60 box, relative coordinates.
FIGURE = np.array([
    [0.5, 0.08], [0.45, 0.06], [0.55, 0.06], [0.4, 0.08], [0.6, 0.08],
    [0.3, 0.22], [0.7, 0.22], [0.2, 0.4], [0.8, 0.4], [0.15, 0.55], [0.85, 0.55],
    [0.35, 0.55], [0.65, 0.55], [0.35, 0.77], [0.65, 0.77], [0.35, 0.97], [0.65, 0.97]])


def _draw(image: np.ndarray, kpts: np.ndarray) -> None:
    for a, b in BONES:
        cv2.line(image, tuple(int(v) for v in kpts[a]), tuple(int(v) for v in kpts[b]),
                 (240, 240, 240), 3)


def _figure_at(x: float, y: float, w: float = 60.0, h: float = 120.0) -> np.ndarray:
    return FIGURE * [w, h] + [x, y]


def _detector_guess(kpts: np.ndarray, rng: np.random.Generator) -> list[list[float]]:
    """A detector-like estimate of the figure (a few px off, confident): the training prior."""
    noisy = kpts[:, :2] + rng.normal(0, 3, (len(kpts), 2))
    return np.concatenate([noisy, np.full((len(kpts), 1), 0.9)], 1).round(2).tolist()


def write_coco_fixture(root: Path, images: int = 3) -> Path:
    rng = np.random.default_rng(0)
    data = {'categories': [{'id': 1, 'name': 'person', 'keypoints': list(KEYPOINT_NAMES)}],
            'images': [], 'annotations': []}
    for i in range(images):
        image = rng.integers(0, 60, (240, 320, 3), dtype=np.uint8)
        kpts = _figure_at(60 + 40 * i, 50 + 10 * i)
        _draw(image, kpts)
        name = f'img{i}.png'
        cv2.imwrite(str(root / name), image)
        data['images'].append({'id': i + 1, 'file_name': name, 'width': 320, 'height': 240})
        flat = np.concatenate([kpts, np.full((17, 1), 2.0)], 1).ravel().tolist()
        data['annotations'].append({'id': i + 1, 'image_id': i + 1, 'category_id': 1,
                                    'bbox': [float(kpts[:, 0].min()), float(kpts[:, 1].min()),
                                             60.0, 120.0], 'keypoints': flat,
                                    'num_keypoints': 17, 'iscrowd': 0,
                                    'detector_keypoints': _detector_guess(kpts, rng)})
    path = root / 'coco.json'
    path.write_text(json.dumps(data))
    return path


def write_posetrack_fixture(root: Path, frames: int = 6) -> Path:
    """PoseTrack-2018-style: one video, one walking person, every other frame labelled."""
    rng = np.random.default_rng(1)
    data = {'categories': [{'id': 1, 'name': 'person',
                            'keypoints': list(POSETRACK_KEYPOINT_NAMES)}],
            'images': [], 'annotations': []}
    (root / 'seq').mkdir(exist_ok=True)
    for f in range(frames):
        image = rng.integers(0, 60, (240, 320, 3), dtype=np.uint8)
        coco = _figure_at(50 + 12 * f, 60)
        _draw(image, coco)
        name = f'seq/{f:06d}.jpg'
        cv2.imwrite(str(root / name), image)
        labelled = f % 2 == 0
        data['images'].append({'id': 100 + f, 'file_name': name, 'vid_id': 7, 'frame_id': f,
                               'is_labeled': labelled, 'nframes': frames})
        if labelled:
            pt = np.zeros((17, 3))
            pt[0] = [*coco[0], 1]          # nose; head_bottom/top left unlabelled
            pt[5:] = np.concatenate([coco[5:], np.ones((12, 1))], 1)
            data['annotations'].append({'id': f + 1, 'image_id': 100 + f, 'category_id': 1,
                                        'track_id': 3, 'keypoints': pt.ravel().tolist(),
                                        'detector_keypoints': _detector_guess(coco, rng),
                                        'bbox': [float(coco[:, 0].min()),
                                                 float(coco[:, 1].min()), 60.0, 120.0]})
    path = root / 'posetrack.json'
    path.write_text(json.dumps(data))
    return path


def test_loaders_map_layouts_and_group_videos(tmp_path):
    coco = load_sequences(write_coco_fixture(tmp_path))
    assert len(coco) == 3 and all(len(s.image_paths) == 1 for s in coco)
    person = next(iter(coco[0].people[0].values()))
    np.testing.assert_allclose(person.keypoints[:, :2], _figure_at(60, 50))
    assert (person.keypoints[:, 2] == 1).all()

    pt = load_sequences(write_posetrack_fixture(tmp_path))
    assert len(pt) == 1 and len(pt[0].image_paths) == 6
    assert pt[0].labelled == [True, False] * 3
    kp = pt[0].people[2][3].keypoints
    assert kp[0, 2] == 1 and (kp[1:5, 2] == 0).all() and (kp[5:, 2] == 1).all()
    np.testing.assert_allclose(kp[5:, :2], _figure_at(50 + 24, 60)[5:])
    assert [r.frame for r in sample_refs(pt)] == [0, 2, 4]


def test_windows_pad_like_the_pipeline_and_use_unlabelled_neighbours(tmp_path):
    seq = load_sequences(write_posetrack_fixture(tmp_path))[0]
    causal = np.array([-2, -1, 0])
    # frame 2: frame 1 is unlabelled -> its own image with the nearest labelled box (tie: 0)
    assert window_frames(seq, SampleRef(0, 2, 3), causal) == [(0, 0), (1, 0), (2, 2)]
    # frame 0: before the sequence -> repeat the first frame
    assert window_frames(seq, SampleRef(0, 0, 3), causal) == [(0, 0)] * 3
    centred = np.array([-2, -1, 0, 1, 2])
    assert window_frames(seq, SampleRef(0, 4, 3), centred)[-1] == (4, 4)   # past the end


def test_held_out_vtest_frames_are_refused(tmp_path):
    data = {'categories': [{'id': 1, 'name': 'person', 'keypoints': list(KEYPOINT_NAMES)}],
            'videos': [{'id': 1, 'source_sha256': HELD_OUT_VIDEO_SHA256}],
            'images': [{'id': 1, 'file_name': 'x.jpg', 'vid_id': 1, 'frame_id': 650}],
            'annotations': []}
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(data))
    with pytest.raises(HeldOutDataError, match='held-out'):
        load_sequences(path)
    data['images'][0]['frame_id'] = 599                   # training frames are fine
    path.write_text(json.dumps(data))
    assert len(load_sequences(path)) == 1


def test_flip_swaps_left_and_right_labels(tmp_path):
    config = TrainConfig(data=(DataSource(str(write_coco_fixture(tmp_path, 1))),),
                         batch_size=1)
    sampler = WindowSampler(config, config.model_config())
    ref = sampler.refs[0]
    from diffpose_ros.training.trainer import Augmentation

    plain, _ = sampler.target(ref, Augmentation())
    flipped, _ = sampler.target(ref, Augmentation(flip=True))
    width = config.model_config().heatmap_width
    # after a flip the left shoulder (5) sits where the mirrored right shoulder (6) was
    np.testing.assert_allclose(flipped[5, 0], width - plain[6, 0], atol=1e-6)
    np.testing.assert_allclose(flipped[5, 1], plain[6, 1], atol=1e-6)
    assert flipped[5, 0] < flipped[6, 0] or plain[5, 0] < plain[6, 0]


def test_a_pasted_person_covers_part_of_the_crop_and_keeps_the_label(tmp_path):
    """The crowd augmentation composites another labelled person beside and partly over the
    first; the target (the first person) is unchanged, and the variant is reproducible."""
    config = TrainConfig(data=(DataSource(str(write_coco_fixture(tmp_path, 3))),),
                         batch_size=1, feature_cache_variants=2, paste_person_variants=2,
                         paste_person_probability=0.5)
    sampler = WindowSampler(config, config.model_config())
    ref = sampler.refs[0]
    seq = sampler.sequences[ref.sequence]
    plain_aug = sampler.variant_augmentation(0, ref.sequence, ref.track_id)
    pasted_aug = sampler.variant_augmentation(2, ref.sequence, ref.track_id)
    flipped_pasted = sampler.variant_augmentation(3, ref.sequence, ref.track_id)
    assert plain_aug.paste is None and pasted_aug.paste is not None
    assert not pasted_aug.flip and flipped_pasted.flip
    assert (pasted_aug.paste.sequence, pasted_aug.paste.track_id) != (ref.sequence,
                                                                     ref.track_id)
    assert pasted_aug == sampler.variant_augmentation(2, ref.sequence, ref.track_id)
    plain = sampler.crop(seq, ref.frame, ref.frame, ref.track_id, plain_aug).astype(int)
    pasted = sampler.crop(seq, ref.frame, ref.frame, ref.track_id, pasted_aug).astype(int)
    changed = np.abs(pasted - plain).max(axis=2) > 8
    crop_w = plain.shape[1]
    # the pasted person lands beside the first: the changed pixels' centre is off-centre by
    # the drawn shift, and they cover part of the crop, not all of it
    assert 0.03 < changed.mean() < 0.6
    centre_x = np.nonzero(changed)[1].mean() / crop_w - 0.5
    assert np.sign(centre_x) == np.sign(pasted_aug.paste.shift[0])
    xy_plain, w_plain = sampler.target(ref, plain_aug)
    xy_pasted, w_pasted = sampler.target(ref, pasted_aug)
    np.testing.assert_allclose(xy_plain, xy_pasted)
    np.testing.assert_allclose(w_plain, w_pasted)
    # a share of the windows reads a paste variant, the rest the regular ones
    rng = np.random.default_rng(0)
    drawn = np.array([sampler.draw_variant(rng, 4) for _ in range(2000)])
    assert set(drawn) == {0, 1, 2, 3}
    assert 0.45 < (drawn >= 2).mean() < 0.55
    with pytest.raises(ValueError, match='paste_person_probability'):
        TrainConfig(data=config.data, paste_person_probability=0.3)


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(data=(DataSource('x'),), iterations=100, warmup_iterations=10,
                         learning_rate=1e-3, min_learning_rate_fraction=0.1)
    assert learning_rate_at(config, 0) == pytest.approx(1e-4)
    assert learning_rate_at(config, 10) == pytest.approx(1e-3)
    assert learning_rate_at(config, 99) == pytest.approx(1e-4, rel=0.01)


@pytest.fixture(scope='module')
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp('train_data')
    return write_coco_fixture(root), write_posetrack_fixture(root)


def _config(fixtures, out: Path, **kw) -> TrainConfig:
    coco, posetrack = fixtures
    base = dict(data=(DataSource(str(coco)), DataSource(str(posetrack))), out_dir=str(out),
                iterations=24, batch_size=4, learning_rate=2e-3, warmup_iterations=2,
                checkpoint_every=12, log_every=4, feature_cache_variants=2,
                model={'strl_depth': 1, 'decoder_dims': [32, 16, 16]})
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_a_few_iterations_lower_the_loss_and_write_weights(fixtures, tmp_path):
    from diffpose_ros.model.weights import load_model

    summary = train(_config(fixtures, tmp_path / 'run'), progress=False)
    assert summary['final_loss'] < 0.7 * summary['first_loss']
    out = tmp_path / 'run'
    for name in ('loss.csv', 'loss.png', 'checkpoint.safetensors', 'summary.json'):
        assert (out / name).is_file()
    model, trained = load_model(summary['weights'])
    assert trained and model.config.strl_depth == 1


def _logged_losses(loss_csv: Path) -> dict[int, float]:
    """{iteration: mean loss} from a run's loss.csv (iteration,loss,lr,seconds)."""
    rows = [line.split(',') for line in loss_csv.read_text().splitlines()[1:] if line]
    return {int(row[0]): float(row[1]) for row in rows}


@pytest.mark.slow
def test_resumed_training_matches_an_uninterrupted_run(fixtures, tmp_path):
    """Stopped at 12 and resumed to 24 == 24 in one go (per-iteration seeding)."""
    from safetensors.numpy import load_file

    full = train(_config(fixtures, tmp_path / 'full'), progress=False)
    config = _config(fixtures, tmp_path / 'half')
    stopped = train(config, progress=False, stop_after=12)
    last_loss = stopped.pop('last_loss')
    assert stopped == {'finished': False, 'iterations_done': 12,
                       'checkpoint': str(tmp_path / 'half' / 'checkpoint.safetensors')}
    # per-iteration seeding: the stopped run logged the uninterrupted run's losses up to 12
    full_losses = _logged_losses(tmp_path / 'full' / 'loss.csv')
    assert last_loss == pytest.approx(full_losses[12], rel=1e-4)
    assert _logged_losses(tmp_path / 'half' / 'loss.csv') == pytest.approx(
        {i: v for i, v in full_losses.items() if i <= 12}, rel=1e-4)
    # a run killed after its last checkpoint leaves later rows behind: resuming re-runs them
    with open(tmp_path / 'half' / 'loss.csv', 'a') as f:
        f.write('16,99.0,1e-3,1.0\n')
    resumed = train(config, resume=True, progress=False)
    rows = (tmp_path / 'half' / 'loss.csv').read_text().splitlines()[1:]
    assert [int(r.split(',')[0]) for r in rows] == list(range(4, 25, 4))  # no duplicates
    assert '99.0' not in ''.join(rows)
    assert _logged_losses(tmp_path / 'half' / 'loss.csv') == pytest.approx(full_losses, rel=1e-4)
    a, b = load_file(full['weights']), load_file(resumed['weights'])
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-5


SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


@pytest.mark.slow
def test_the_shipped_recipe_on_a_few_real_lspet_images(tmp_path):
    """config/train_default.yaml's recipe on 4 LSPET training photos: the real detector fills
    the prior cache once (a second run reuses it), the validation split is refused unless
    excluded, a few iterations run and write loadable weights. (CI never trains for real.)"""
    from diffpose_ros.model.weights import load_model
    from diffpose_ros.training.priors import read_priors

    lspet = SHARED_DATA / 'lspet' / 'lspet_coco17.json'
    if not lspet.is_file():
        pytest.skip(f'{lspet} not present (research data beside the clone)')
    data = json.loads(lspet.read_text())
    keep = {'images/im00001.jpg', 'images/im00002.jpg', 'images/im00003.jpg',
            'images/im00004.jpg', 'images/im09001.jpg'}
    images = [im for im in data['images'] if im['file_name'] in keep]
    ids = {im['id'] for im in images}
    tiny = tmp_path / 'lspet_tiny.json'
    tiny.write_text(json.dumps({**data, 'images': images, 'annotations': [
        a for a in data['annotations'] if a['image_id'] in ids]}))
    recipe = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / 'config'
                                   / 'train_default.yaml')
    source = DataSource(str(tiny), image_root=str(lspet.parent), priors=str(
        tmp_path / 'priors.jsonl'), teacher_head_joints=True)
    config = TrainConfig(**{**{f: getattr(recipe, f) for f in (
        'learning_rate', 'augment', 'prior', 'causal_window_size', 'centered_window_size')},
        'data': (source,), 'out_dir': str(tmp_path / 'run'), 'iterations': 3,
        'batch_size': 4, 'warmup_iterations': 1, 'feature_cache_variants': 2,
        'checkpoint_every': 3, 'model': {'strl_depth': 1, 'decoder_dims': [32, 16, 16]}})
    with pytest.raises(HeldOutDataError, match='validation split'):
        train(config, progress=False)
    config = TrainConfig(**{**config.__dict__, 'data': (
        DataSource(**{**source.__dict__, 'exclude_held_out': True}),)})
    summary = train(config, progress=False)
    priors = read_priors(tmp_path / 'priors.jsonl')
    assert sorted(priors) == ['im00001.jpg', 'im00002.jpg', 'im00003.jpg', 'im00004.jpg']
    assert summary['finished'] and summary['training_windows_available'] >= 3
    assert np.isfinite(summary['final_loss'])
    _, trained = load_model(summary['weights'])
    assert trained
    # the detector does not run again: the cache already holds every image
    before = (tmp_path / 'priors.jsonl').read_text()
    train(config, resume=False, progress=False)
    assert (tmp_path / 'priors.jsonl').read_text() == before


def test_the_shipped_recipe_chains_three_stages():
    """`make train` = config/train_default.yaml, then config/train_trust_strong.yaml, which
    fine-tunes stage 1's output with sure-and-right priors and confidence that marks wrong
    joints, then config/train_strl2_long.yaml, which keeps stage 2's first 2 window-encoder
    blocks and fine-tunes longer with stage 2's recipe (the shipped head). Every stage reads
    the same data, and only the window encoder's depth changes."""
    from diffpose_ros.config import ModelConfig
    from diffpose_ros.model.weights import DEFAULT_WEIGHTS_NAME

    config_dir = Path(__file__).resolve().parents[1] / 'config'
    stage1 = TrainConfig.from_yaml(config_dir / 'train_default.yaml')
    stage2 = TrainConfig.from_yaml(config_dir / 'train_trust_strong.yaml')
    stage3 = TrainConfig.from_yaml(config_dir / 'train_strl2_long.yaml')
    assert stage2.init_weights == f'{stage1.out_dir}/{DEFAULT_WEIGHTS_NAME}'
    assert stage3.init_weights == f'{stage2.out_dir}/{DEFAULT_WEIGHTS_NAME}'
    assert len({stage1.out_dir, stage2.out_dir, stage3.out_dir}) == 3
    assert stage1.init_weights is None
    for later in (stage2, stage3):
        assert [d.path for d in later.data] == [d.path for d in stage1.data]
        assert all(d.exclude_held_out for d in later.data if 'lspet' in d.path)
    assert stage2.model == stage1.model
    depth2 = stage2.model.get('strl_depth', ModelConfig().strl_depth)
    assert stage3.model == {**stage2.model, 'strl_depth': 2} and depth2 > 2
    assert stage3.prior == stage2.prior and stage3.iterations > stage2.iterations
    assert stage2.prior.clean_probability == 0.5 and stage2.prior.wrong_joint_error == 1.5
    assert stage2.prior.t_max <= 400 < stage1.prior.t_max
    makefile = (config_dir.parent / 'Makefile').read_text()
    train_rule = makefile[makefile.index('\ntrain:'):makefile.index('\nevaluate:')]
    assert (train_rule.index('train_default.yaml') < train_rule.index('train_trust_strong.yaml')
            < train_rule.index('train_strl2_long.yaml'))
    shipped = json.loads((config_dir.parent / 'models' / 'diffpose_yolo11n_coco17.json')
                         .read_text())
    assert shipped['strl_depth'] == stage3.model['strl_depth']


def test_every_recipe_in_config_loads_and_keeps_the_validation_split_out():
    """The experiment recipes documented in docs/model.md stay runnable: each parses, writes to
    its own directory and never trains on LSPET's validation split."""
    config_dir = Path(__file__).resolve().parents[1] / 'config'
    recipes = sorted(config_dir.glob('train_*.yaml'))
    assert len(recipes) >= 5
    out_dirs = set()
    for path in recipes:
        recipe = TrainConfig.from_yaml(path)
        assert recipe.iterations > 0, path.name
        assert all(d.exclude_held_out for d in recipe.data if 'lspet' in d.path), path.name
        out_dirs.add(recipe.out_dir)
    assert len(out_dirs) == len(recipes)


def test_missing_training_data_gives_a_clear_error(tmp_path):
    """`make train` on a machine without ../shared/data: one clear message, no traceback."""
    import subprocess
    import sys

    config = tmp_path / 'recipe.yaml'
    config.write_text('data:\n  - path: ../shared/data/lspet/nothing_here.json\n'
                      f'out_dir: {tmp_path / "out"}\n')
    proc = subprocess.run([sys.executable, '-m', 'diffpose_ros.cli.train', '--config',
                           str(config)], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    err = proc.stderr
    assert 'training data not found' in err and 'LSP Extended' in err
    assert 'Traceback' not in err


def test_the_curriculum_ties_the_input_error_to_t():
    """Off (the shipped recipe): every prior row draws t in [0, t_max], error unscaled, with the
    same random stream as before. On: detector priors at t >= detector_t_min, label + small
    error rows at t <= synthetic_t_max with an error that grows with t."""
    from diffpose_ros.training.trainer import PriorConfig, draw_prior_timesteps

    synthetic = np.arange(4000) % 4 == 0
    off_t, off_scale = draw_prior_timesteps(np.random.default_rng(0), synthetic, PriorConfig())
    np.testing.assert_array_equal(off_t, np.random.default_rng(0).integers(0, 501, size=4000))
    assert (off_scale == 1).all()
    pc = PriorConfig(curriculum=True, detector_t_min=100, synthetic_t_max=200)
    t, scale = draw_prior_timesteps(np.random.default_rng(1), synthetic, pc)
    assert t[~synthetic].min() >= 100 and t[~synthetic].max() <= 500
    assert t[synthetic].max() <= 200 and (scale[~synthetic] == 1).all()
    assert np.corrcoef(t[synthetic], scale[synthetic])[0, 1] > 0.99
    assert 0.25 <= scale[synthetic].min() and scale[synthetic].max() <= 1.0
    with pytest.raises(ValueError):
        PriorConfig(curriculum=True, detector_t_min=600)


def test_the_trust_recipe_makes_confidence_tell_right_from_wrong(tmp_path):
    """clean rows: the label at confidence >= 0.8 within a tiny error; wrong_joint_error: a
    detector joint moved far from the label loses confidence, a close one keeps it."""
    from diffpose_ros.training.trainer import Augmentation, PriorConfig

    prior = PriorConfig(clean_probability=1.0, clean_error=0.1, wrong_joint_error=2.0,
                        wrong_joint_confidence=(0.1, 0.5), jitter_probability=0.0,
                        swap_probability=0.0, drop_probability=0.0, confidence_noise=0.0)
    config = TrainConfig(data=(DataSource(str(write_coco_fixture(tmp_path, 1))),),
                         batch_size=1, prior=prior)
    sampler = WindowSampler(config, config.model_config())
    ref = sampler.refs[0]
    label, _ = sampler.target(ref, Augmentation())
    rng = np.random.default_rng(0)
    xy, conf = sampler.prior(ref, Augmentation(), rng, synthetic=False, clean=True)
    assert (conf >= 0.8).all()
    assert np.abs(xy - label).max() < 1.0              # heatmap px: 0.1 x a few px of error
    person = sampler._person(ref)
    person.prior[:, :2] = person.keypoints[:, :2]
    person.prior[9, :2] += 40.0                         # left wrist 40 px off: wrong
    xy, conf = sampler.prior(ref, Augmentation(), rng, synthetic=False)
    assert 0.09 <= conf[9] <= 0.46 and np.allclose(np.delete(conf, 9), 0.9)
    with pytest.raises(ValueError):
        PriorConfig(wrong_joint_confidence=(0.6, 0.2))


def test_init_weights_starts_the_head_from_trained_weights(tmp_path):
    """Fine-tuning: iteration 0's head is the given weights' head, not a fresh one."""
    import torch

    from diffpose_ros.model.diffpose import DiffPoseNet
    from diffpose_ros.model.weights import load_model, save_weights
    from diffpose_ros.training.trainer import load_init_weights

    config = TrainConfig(data=(DataSource(str(write_coco_fixture(tmp_path, 1))),))
    torch.manual_seed(5)
    source = DiffPoseNet(config.model_config())
    weights = save_weights(source, tmp_path / 'init.safetensors')
    torch.manual_seed(6)
    fresh = DiffPoseNet(config.model_config())
    load_init_weights(fresh, weights)
    expected = load_model(weights)[0].head_state_dict()
    for name, value in fresh.head_state_dict().items():
        torch.testing.assert_close(value, expected[name])


def test_init_weights_can_prune_the_window_encoder(tmp_path):
    """A run with a shallower STRL starts from the first blocks of a deeper model; anything
    else that differs is refused."""
    import dataclasses

    import torch

    from diffpose_ros.model.diffpose import DiffPoseNet
    from diffpose_ros.model.weights import load_model, save_weights
    from diffpose_ros.training.trainer import load_init_weights

    config = TrainConfig(data=(DataSource(str(write_coco_fixture(tmp_path, 1))),))
    deep = config.model_config()
    torch.manual_seed(5)
    weights = save_weights(DiffPoseNet(deep), tmp_path / 'deep.safetensors')
    expected = load_model(weights)[0].head_state_dict()
    torch.manual_seed(6)
    shallow = DiffPoseNet(dataclasses.replace(deep, strl_depth=deep.strl_depth - 2))
    load_init_weights(shallow, weights)
    state = shallow.head_state_dict()
    assert not any(f'strl.blocks.{deep.strl_depth - 1}.' in k for k in state)
    for name, value in state.items():  # every kept tensor, blocks 0..depth-3 included
        torch.testing.assert_close(value, expected[name])
    for other in (dataclasses.replace(deep, strl_depth=deep.strl_depth + 1),
                  dataclasses.replace(deep, strl_dim=deep.strl_dim // 2)):
        with pytest.raises(ValueError, match='another model config'):
            load_init_weights(DiffPoseNet(other), weights)
