"""diffpose-evaluate: scoring against hand-made predictions, the real pipeline on dev_gt photos
and vtest.avi frames (real YOLO11n-pose, DiffPose head as shipped or the seeded random head),
the grid and its zeroed-heatmap ablation, and the temporal metrics on synthetic tracks."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diffpose_ros import evaluation as E
from diffpose_ros import metrics as M
from diffpose_ros.cli import evaluate as cli
from diffpose_ros.config import PipelineConfig
from diffpose_ros.detection import Detection
from diffpose_ros.skeleton import LIMB_JOINTS

# dev_gt annotations and photos are committed in test/data/dev_gt (mmpose test data).
GT_DIR = Path(__file__).resolve().parent / 'data' / 'dev_gt'
COCO_JSON = GT_DIR / 'coco' / 'test_coco.json'
DEV_GT_IMAGES = Path(os.environ.get('DIFFPOSE_DEV_GT_IMAGES',
                    Path(__file__).resolve().parents[1] / 'test' / 'data' / 'dev_gt'))
CPU = ('CPUExecutionProvider',)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope='module')
def coco_images_json() -> Path:
    """dev_gt's COCO JSON beside its 4 photos; fails (never skips) when they are missing."""
    path = DEV_GT_IMAGES / 'coco' / 'test_coco.json'
    if not path.is_file() or not (path.parent / '000000000785.jpg').is_file():
        pytest.fail(f'dev_gt photos not found under {DEV_GT_IMAGES}: set DIFFPOSE_DEV_GT_IMAGES '
                    'to the folder holding coco/test_coco.json and its images')
    return path


@pytest.fixture(scope='module')
def config() -> PipelineConfig:
    return PipelineConfig(backend='onnxruntime', providers=CPU)


@pytest.fixture(scope='module')
def photo_detector():
    """One YOLO11n-pose at imgsz 640 behind a cache: each photo is detected once per module."""
    from diffpose_ros.detection import UltralyticsPoseDetector

    return E.CachingDetector(UltralyticsPoseDetector(imgsz=640))


@pytest.fixture(scope='module')
def runtime(config, photo_detector, vtest_detector):
    """Built after the detectors, as the CLI does: on this 2-core machine YOLO ran 2-6x
    slower, erratically, when the ONNX Runtime sessions were created before it."""
    from diffpose_ros.runtime.factory import make_runtime

    return make_runtime(config)


@pytest.fixture
def use_models(monkeypatch, runtime, photo_detector, vtest_detector):
    """The CLI builds no models of its own: it gets the module's (photos) or the session's
    (vtest.avi, imgsz 1280) detector, each call a fresh cache for the video one."""
    def detector(config):
        if config.detector_imgsz == 640:
            return photo_detector
        return E.CachingDetector(vtest_detector)

    monkeypatch.setattr(cli, '_detector', detector)
    monkeypatch.setattr(cli, '_runtime', lambda args, config: runtime)


# ------------------------------------------------------------------ helpers


def _gt():
    return M.load_coco_keypoints(COCO_JSON)


def _results(images, shift_fraction=0.0, drop=None):
    """COCO results from the GT persons with labelled joints, every joint moved by
    shift_fraction x the person's box size along (0.6, 0.8); ``drop`` = (image_id, index)."""
    results = []
    for image_id, image in images.items():
        people = [p for p in image.persons if p.labelled.any()]
        for index, person in enumerate(people):
            if drop == (image_id, index):
                continue
            kpts = person.keypoints.copy()
            kpts[:, 2] = person.labelled  # confidence 1 where labelled, 0 elsewhere
            kpts[:, 0] += 0.6 * shift_fraction * person.box_size_px
            kpts[:, 1] += 0.8 * shift_fraction * person.box_size_px
            results += M.coco_results(image_id, kpts[None], np.array([0.9 - 0.01 * index]))
    return results


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# ------------------------------------------------------------------ score


def test_score_perfect_prediction_via_cli(tmp_path):
    images = _gt()
    pred = E.write_json(tmp_path / 'perfect.json', _results(images))
    assert cli.main(['score', '--gt', str(COCO_JSON), '--pred', str(pred),
                     '--out', str(tmp_path / 'out')]) == 0
    out = _read(tmp_path / 'out' / 'score.json')
    assert out['layout'] == 'coco'  # detected from the keypoint names
    assert out['trained'] is None  # no model ran
    assert out['limb_pck']['pck_percent'] == 100.0
    assert out['limb_pck']['ci95_percent'] == [100.0, 100.0]
    assert out['limb_pck']['num_persons'] == 12
    assert out['limb_pck']['num_missed_persons'] == 0
    assert out['oks_ap_percent']['AP'] == pytest.approx(100.0)
    assert out['pckh'] is None  # COCO has no head boxes
    assert (tmp_path / 'out' / 'score_per_joint.png').stat().st_size > 1000


def test_score_shift_of_every_joint():
    images = _gt()
    far = E.score_predictions(images, _results(images, 0.2)).summary
    near = E.score_predictions(images, _results(images, 0.05)).summary
    assert far['limb_pck']['pck_percent'] == 0.0
    assert near['limb_pck']['pck_percent'] == 100.0
    assert near['limb_pck']['num_missed_persons'] == 0
    assert far['oks_ap_percent']['AP'] < near['oks_ap_percent']['AP'] < 100.0


def test_score_missing_person_counts_all_its_joints_wrong():
    images = _gt()
    total = sum(int(p.labelled[list(LIMB_JOINTS)].sum())
                for im in images.values() for p in im.persons)
    dropped = [p for p in images[197388].persons if p.labelled.any()][1]
    k = int(dropped.labelled[list(LIMB_JOINTS)].sum())
    assert (total, k) == (135, 12)
    out = E.score_predictions(images, _results(images, drop=(197388, 1))).summary['limb_pck']
    assert out['pck_percent'] == pytest.approx(100.0 * (135 - 12) / 135)
    assert out['num_missed_persons'] == 1
    assert out['per_joint_percent']['left_wrist'] < 100.0


def test_score_ignores_predictions_on_unknown_images_and_scores_pckh_with_head_boxes(tmp_path):
    data = json.loads(COCO_JSON.read_text())
    for ann in data['annotations']:
        x, y, w, h = ann['bbox']
        ann['bbox_head'] = [x, y, w / 4, h / 6]
    gt_path = tmp_path / 'with_heads.json'
    gt_path.write_text(json.dumps(data))
    gt_set = E.load_gt_set(gt_path)
    results = _results(gt_set.images) + [dict(_results(gt_set.images)[0], image_id=999)]
    out = E.score_predictions(gt_set.images, results).summary
    assert out['num_predictions_on_unknown_images'] == 1
    assert out['pckh']['pckh_mean_percent'] == 100.0
    assert out['pckh']['num_persons'] == 12
    assert out['pckh']['map_percent'] == pytest.approx(100.0)


# ------------------------------------------------------------------ wrappers


def test_caching_detector_runs_once_per_image_and_round_trips_json():
    calls = []

    class Fake:
        imgsz = 640

        def detect(self, image):
            calls.append(image.sum())
            return [Detection(np.array([1, 2, 30, 40], np.float32), 0.875,
                              np.full((17, 3), 0.1 * image[0, 0, 0], np.float32))]

    a, b = np.zeros((8, 8, 3), np.uint8), np.ones((8, 8, 3), np.uint8)
    cached = E.CachingDetector(Fake())
    first = cached.detect(a)
    first[0].keypoints[:] = -1  # callers get copies
    assert cached.detect(a.copy())[0].keypoints[0, 0] == 0.0
    cached.detect(b)
    assert (len(calls), cached.hits, cached.misses, len(cached)) == (2, 1, 2, 2)
    data = json.loads(json.dumps(cached.to_json()))
    again = E.CachingDetector(Fake())
    assert again.load_json(data) == 2
    got = again.detect(b)
    assert len(calls) == 2 and again.misses == 0
    np.testing.assert_array_equal(got[0].keypoints, np.full((17, 3), 0.1, np.float32))
    assert got[0].score == 0.875
    assert E.CachingDetector(Fake(), identity={'imgsz': 1280}).load_json(data) == 0


class SpyRuntime:
    """Records what the denoiser is given, delegates to a real runtime."""

    def __init__(self, runtime):
        self.inner = runtime
        self.name = runtime.name
        self.model_config = runtime.model_config
        self.trained = runtime.trained
        self.inputs = []

    @property
    def providers(self):
        return self.inner.providers

    def extract_features(self, crops):
        return self.inner.extract_features(crops)

    def encode_window(self, features, offsets):
        return self.inner.encode_window(features, offsets)

    def denoise(self, model_input, t, person_index, condition):
        self.inputs.append((model_input.copy(), t.copy(), person_index.copy()))
        return self.inner.denoise(model_input, t, person_index, condition)


def test_zero_heatmap_runtime_passes_zeros(runtime, photo_detector, coco_images_json):
    image = E.read_image(coco_images_json.parent / '000000040083.jpg')
    spy = SpyRuntime(runtime)
    wrapped = E.ZeroHeatmapRuntime(spy)
    assert (wrapped.model_config, wrapped.trained, wrapped.name) == (
        runtime.model_config, runtime.trained, runtime.name)
    poses = []
    for seed in (0, 1):
        cfg = PipelineConfig(steps=2, hypotheses=2, seed=seed, providers=CPU)
        persons = E.estimate_single_image(E.make_pipeline(cfg, wrapped, photo_detector), image, 0)
        poses.append(np.stack([p.keypoints for p in persons]))
    assert len(spy.inputs) == 4  # 2 steps x 2 seeds
    for model_input, _, person_index in spy.inputs:
        assert model_input.shape[0] == 2 * len(poses[0]) and model_input.dtype == np.float32
        assert not model_input.any()
        np.testing.assert_array_equal(person_index, np.repeat(np.arange(len(poses[0])), 2))
    assert spy.inputs[0][1][0] > spy.inputs[1][1][0]  # the DDIM timesteps still advance
    # without its heatmap input the result no longer depends on the noise seed
    np.testing.assert_array_equal(poses[0], poses[1])
    normal = SpyRuntime(runtime)
    cfg = PipelineConfig(steps=2, hypotheses=2, seed=0, providers=CPU)
    E.estimate_single_image(E.make_pipeline(cfg, normal, photo_detector), image, 0)
    # the normal input carries the noised detector prior: its peaks stand out of the noise
    assert all(model_input.max() > 0.4 and model_input.std() > 0.01
               for model_input, _, _ in normal.inputs)


# ------------------------------------------------------------------ images


def test_images_end_to_end_and_predictions_rescore_identically(
        tmp_path, use_models, runtime, coco_images_json):
    out = tmp_path / 'images'
    assert cli.main(['images', '--gt', str(coco_images_json), '--out', str(out),
                     '--quiet']) == 0
    summary = _read(out / 'images.json')
    assert summary['trained'] is runtime.trained
    assert summary['backend'] == 'onnxruntime' and summary['num_images'] == 4
    assert summary['detector_imgsz'] == 640
    yolo, ours = summary['yolo']['limb_pck'], summary['ours']['limb_pck']
    assert yolo['num_persons'] == ours['num_persons'] == 12
    assert yolo['pck_percent'] > 50.0  # YOLO11n-pose is a real model
    assert yolo['ci95_percent'][0] <= yolo['pck_percent'] <= yolo['ci95_percent'][1]
    diff = summary['ours_minus_yolo_limb_pck']
    assert diff['points'] == pytest.approx(ours['pck_percent'] - yolo['pck_percent'])
    assert diff['ci95_points'][0] <= diff['points'] <= diff['ci95_points'][1]
    assert summary['num_persons_estimated'] <= summary['num_detections']
    assert len(list((out / 'overlays').glob('*.png'))) == 4
    for name in ('yolo', 'ours'):
        scored = tmp_path / f'score_{name}'
        assert cli.main(['score', '--gt', str(coco_images_json),
                         '--pred', str(out / f'pred_{name}.json'), '--out', str(scored)]) == 0
        rescored = _read(scored / 'score.json')
        for key in ('limb_pck', 'oks_ap_percent', 'pckh', 'num_predictions'):
            assert rescored[key] == summary[name][key], (name, key)


def test_zeroed_input_ablation_on_one_image_is_paired_with_the_normal_run(
        runtime, photo_detector, coco_images_json):
    gt_set = E.load_gt_set(coco_images_json, max_images=2)
    cfg = PipelineConfig(providers=CPU)
    normal = E.run_images(runtime, photo_detector, cfg, gt_set, progress=False, n_resamples=50)
    ablation = E.run_zeroed_input_ablation(runtime, photo_detector, cfg, gt_set,
                                           normal.ours_results, n_resamples=50)
    assert ablation['normal_limb_pck_percent'] == pytest.approx(
        normal.summary['ours']['limb_pck']['pck_percent'])
    cost = ablation['cost_limb_pck']
    assert cost['points'] == pytest.approx(
        ablation['normal_limb_pck_percent'] - ablation['zeroed_limb_pck_percent'])
    assert cost['ci95_points'][0] <= cost['points'] <= cost['ci95_points'][1]
    assert ablation['num_labelled_joints'] > 0 and ablation['t_start'] == cfg.t_start
    # the zeroed run really ran without the prior: the same run fed as "normal" costs nothing
    zeroed = E.run_images(E.ZeroHeatmapRuntime(runtime), photo_detector, cfg, gt_set,
                          progress=False, n_resamples=50)
    assert zeroed.ours_results != normal.ours_results
    itself = E.run_zeroed_input_ablation(runtime, photo_detector, cfg, gt_set,
                                         zeroed.ours_results, n_resamples=50)
    assert itself['cost_limb_pck']['points'] == 0.0
    pooled = E.pooled_zeroed_input_cost([ablation, itself])
    assert pooled == pytest.approx(cost['points'] / 2)


# ------------------------------------------------------------------ grid


def test_grid_shape_on_one_image(tmp_path, runtime, photo_detector, coco_images_json):
    gt_set = E.load_gt_set(coco_images_json, max_images=1)
    misses = photo_detector.misses
    grid = E.run_grid(runtime, photo_detector, PipelineConfig(providers=CPU), [gt_set],
                      steps_list=(1, 2), hypotheses_list=(1, 2), seeds=(0, 1),
                      ablation_steps=(1, 2), progress=False)
    assert photo_detector.misses - misses <= 1  # one YOLO run for 16 pipeline runs
    assert grid['trained'] is runtime.trained and grid['num_images'] == 1
    assert grid['num_gt_persons'] == 1
    assert sorted((c['steps'], c['hypotheses']) for c in grid['cells']) == [
        (1, 1), (1, 2), (2, 1), (2, 2)]
    assert grid['extra_cells'] == []
    for cell in grid['cells'] + grid['ablation_cells']:
        assert len(cell['limb_pck_per_seed']) == len(cell['oks_ap_per_seed']) == 2
        assert all(0.0 <= v <= 100.0 for v in cell['limb_pck_per_seed'])
        assert cell['limb_pck_mean'] == pytest.approx(np.mean(cell['limb_pck_per_seed']))
    assert [c['steps'] for c in grid['ablation_cells']] == [1, 2]
    assert all(c['zeroed_heatmap'] and c['limb_pck_std'] == 0.0 for c in grid['ablation_cells'])
    assert [r['steps'] for r in grid['ablation']] == [1, 2]
    assert grid['best_steps'] in (1, 2) and grid['one_step_minus_best_points'] <= 0.0
    E.plot_grid(tmp_path / 'grid.png', grid)
    E.plot_ablation(tmp_path / 'ablation.png', grid)
    assert (tmp_path / 'grid.png').stat().st_size > 1000
    assert (tmp_path / 'ablation.png').stat().st_size > 1000


def test_setting_sweep_on_one_image_writes_json_and_plot(tmp_path, runtime, photo_detector,
                                                         coco_images_json):
    gt_set = E.load_gt_set(coco_images_json, max_images=1)
    args = SimpleNamespace(quiet=True, weights=None)
    sweep = cli.run_setting_sweep(args, [gt_set], tmp_path, runtime, photo_detector,
                                  PipelineConfig(providers=CPU, steps=2),
                                  'decode_blur_sigma_px', [0.0, 3.0])
    assert sweep['setting'] == 'decode_blur_sigma_px' and sweep['gt_sets'] == [gt_set.name]
    assert [r['decode_blur_sigma_px'] for r in sweep['rows']] == [0.0, 3.0]
    assert all(0.0 <= r['limb_pck'] <= 100.0 for r in sweep['rows'])
    assert sweep['best_decode_blur_sigma_px'] == cli.choose_setting(sweep['rows'],
                                                                    'decode_blur_sigma_px')
    saved = json.loads((tmp_path / 'decode_blur_sigma_px_sweep.json').read_text())
    assert saved['rows'] == sweep['rows']
    assert (tmp_path / 'decode_blur_sigma_px_sweep.png').stat().st_size > 1000


def test_choose_setting_takes_the_smallest_value_tied_with_the_best():
    rows = [{'t_start': 100, 'limb_pck': 52.60}, {'t_start': 200, 'limb_pck': 52.70},
            {'t_start': 300, 'limb_pck': 52.66}, {'t_start': 50, 'limb_pck': 51.0}]
    assert cli.choose_setting(rows, 't_start') == 200          # 100 is 0.1 below the best
    assert cli.choose_setting(rows, 't_start', tie_points=0.2) == 100
    assert cli.choose_setting(rows[:1], 't_start') == 100


def _cell(steps, hyps, pcks, zeroed=False):
    return E._cell(steps, hyps, zeroed, list(pcks), [0.0] * len(pcks), range(len(pcks)))


def test_analyse_grid_hand_made():
    cells = [_cell(1, 1, [70, 72]), _cell(2, 1, [74, 76]), _cell(4, 1, [73, 73]),
             _cell(1, 4, [75, 75]), _cell(2, 4, [75.5, 75.5]), _cell(4, 4, [69, 71])]
    ablation = [_cell(1, 1, [71, 71], True), _cell(2, 1, [60, 60], True)]
    out = E.analyse_grid(cells, ablation)
    assert out['best_steps'] == 2 and out['best_steps_by_hypotheses'] == {1: 2, 4: 2}
    assert out['one_step_minus_best_points'] == pytest.approx(-4.0)
    assert out['one_step_minus_best_points_by_hypotheses'][4] == pytest.approx(-0.5)
    assert not out['one_step_within_tolerance_of_best']
    # 4 steps: 73 (1 hypothesis) vs 70 +- 1.41 (4 hypotheses) -> a real cost
    assert out['more_hypotheses_ever_cost_more_than_seed_spread']
    assert [(c['steps'], c['fewer_hypotheses'], c['more_hypotheses'])
            for c in out['hypotheses_cost_cases']] == [(4, 1, 4)]
    assert [r['costs_more_than_spread'] for r in out['ablation']] == [False, True]
    assert out['zeroed_heatmap_costs_accuracy']
    assert out['best_cell']['steps'] == 2 and out['best_cell']['hypotheses'] == 4


# ------------------------------------------------------------------ video


def _track(n, lag=0, wobble=0.0):
    """(n, 17, 3) keypoints of a person walking 8 px/frame to the right (box size 100):
    joint j at x = 10 j + 8 (t - lag), plus +-wobble alternating per frame; confidence 0.9."""
    t = np.arange(n, dtype=np.float64)
    x = 8.0 * (t - lag)[:, None] + 10.0 * np.arange(17)[None, :]
    x += wobble * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)[:, None]
    return np.stack([x, np.full_like(x, 50.0), np.full_like(x, 0.9)], axis=2)


def test_analyse_tracks_on_synthetic_tracks():
    n = 20
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (n, 1))
    ours = _track(n, lag=2)
    ours[:, 3, 2] = 0.1  # one joint below the confidence threshold: never scored
    long = E.TrackSeries(track_id=1, frames=np.arange(n), ours=ours,
                         yolo=_track(n, wobble=1.0), boxes=boxes,
                         present=np.ones(n, dtype=bool))
    short = E.TrackSeries(track_id=2, frames=np.arange(4), ours=_track(4),
                          yolo=_track(4, wobble=30.0), boxes=boxes[:4],
                          present=np.ones(4, dtype=bool))
    out = E.analyse_tracks([long, short])
    assert (out['num_tracks'], out['num_tracks_used']) == (2, 1)
    jit = out['jitter']
    assert jit['ours'] == pytest.approx(0.0, abs=1e-12)  # constant velocity
    assert jit['yolo_raw'] == pytest.approx(0.04)  # +-1 px alternating: 4 px / 100 px
    assert jit['teacher_smoothed'] < 0.01
    assert jit['ratio_ours_over_yolo'] == pytest.approx(0.0, abs=1e-9)
    # the same joints for every system: joint 3 (ours not confident) is dropped for YOLO too
    assert (jit['terms_ours'], jit['terms_yolo'], jit['terms_teacher']) == (18 * 16,) * 3
    own = out['jitter_own_masks']
    assert (own['terms_ours'], own['terms_yolo']) == (18 * 16, 18 * 17)
    assert own['yolo_raw'] == pytest.approx(0.04)
    assert out['lag']['pooled_frames'] == 2
    assert out['per_track'][0]['lag_frames'] == 2
    agr = out['agreement']
    assert agr['yolo_raw_vs_teacher_percent'] == 100.0  # the smoothed teacher is within 1 px
    assert agr['ours_vs_teacher_percent'] == 0.0  # 16 px late > 0.1 x 100 px
    assert agr['teacher_joints_scored'] == n * 17


def test_jitter_on_shared_joints_does_not_flatter_a_low_confidence_source():
    """Hand-computed: x = 8 t + 10 j +- w alternating -> acceleration 4 w / box (100 px).

    Ours wobbles +-1.5 px on the 15 easy joints (0.06) and +-10 px on both wrists (0.4) but
    reports confidence 0.1 there; YOLO wobbles +-1 px on the easy joints (0.04) and +-10 px on
    the wrists with confidence 0.9. Scored on its own confident joints ours hides its wrists:
    0.06 vs YOLO's (15 x 0.04 + 2 x 0.4) / 17 = 1.4 / 17, ratio 0.73 ("smoother"). On the
    shared joints both are scored on the 15 easy joints: 0.06 vs 0.04, ratio 1.5.
    """
    n = 10
    wrists = [9, 10]
    ours = _track(n, wobble=1.5)
    ours[:, wrists] = _track(n, wobble=10.0)[:, wrists]
    ours[:, wrists, 2] = 0.1
    yolo = _track(n, wobble=1.0)
    yolo[:, wrists] = _track(n, wobble=10.0)[:, wrists]
    track = E.TrackSeries(track_id=7, frames=np.arange(n), ours=ours, yolo=yolo,
                          boxes=np.tile([0.0, 0.0, 100.0, 100.0], (n, 1)),
                          present=np.ones(n, dtype=bool))
    out = E.analyse_tracks([track])
    old, new = out['jitter_own_masks'], out['jitter']
    assert old['ours'] == pytest.approx(0.06)
    assert old['yolo_raw'] == pytest.approx(1.4 / 17)
    assert old['ratio_ours_over_yolo'] == pytest.approx(0.06 * 17 / 1.4)  # 0.73: flattered
    assert (old['terms_ours'], old['terms_yolo']) == (8 * 15, 8 * 17)
    assert new['ours'] == pytest.approx(0.06)
    assert new['yolo_raw'] == pytest.approx(0.04)
    assert new['ratio_ours_over_yolo'] == pytest.approx(1.5)  # ours really is jitterier
    assert new['terms'] == new['terms_ours'] == new['terms_yolo'] == new['terms_teacher'] == 120
    assert out['per_track'][0]['jitter_ours'] == pytest.approx(0.06)
    assert out['per_track'][0]['jitter_yolo_own_mask'] == pytest.approx(1.4 / 17)
    # the mask itself: a joint-frame needs ours AND YOLO confident
    mask = E.shared_jitter_mask(ours, yolo, min_confidence=0.3, confident=(ours, yolo))
    assert mask.sum() == n * 15 and not mask[:, wrists].any()


def test_video_on_twelve_vtest_frames_with_a_detection_cache(tmp_path, use_models, runtime):
    out = tmp_path / 'video'
    args = ['video', '--start', '600', '--stop', '612', '--out', str(out), '--quiet', '--cache']
    assert cli.main(args) == 0
    summary = _read(out / 'video.json')
    for key in ('trained', 'backend', 'steps', 'hypotheses', 'window_mode', 'frames_processed',
                'num_tracks_used', 'jitter', 'lag', 'agreement', 'per_track', 'detector_imgsz'):
        assert key in summary, key
    assert summary['trained'] is runtime.trained
    assert (summary['first_frame'], summary['last_frame'], summary['frames_processed']) == (
        600, 611, 12)
    assert summary['window_mode'] == 'causal' and summary['detector_imgsz'] == 1280
    assert summary['stamp_period_ms'] == pytest.approx(100.0)
    assert summary['num_tracks_used'] >= 3  # vtest shows 6-7 walkers here
    jit = summary['jitter']
    assert math.isfinite(jit['yolo_raw']) and 0.0 < jit['yolo_raw'] < 0.5
    assert jit['teacher_smoothed'] < jit['yolo_raw']
    if jit['ours'] is not None:
        assert jit['ratio_ours_over_yolo'] == pytest.approx(jit['ours'] / jit['yolo_raw'])
    assert summary['agreement']['yolo_raw_vs_teacher_percent'] > 80.0
    assert summary['detector_cache']['misses'] == 12
    pngs = sorted(p.name for p in out.glob('*.png'))
    assert pngs == ['video_jitter.png', 'video_overlay_00600.png', 'video_overlay_00606.png',
                    'video_overlay_00611.png', 'video_wrist_x.png']
    # a second run (other steps) takes every detection from OUT/detections.json
    assert cli.main(args + ['--steps', '2']) == 0
    again = _read(out / 'video.json')
    assert again['steps'] == 2 and again['detector_cache']['misses'] == 0
    # YOLO on its own joints is unchanged; on the shared joints it follows ours' confidences
    assert again['jitter_own_masks']['yolo_raw'] == summary['jitter_own_masks']['yolo_raw']


# ------------------------------------------------------------------ checks


def _images_run(ours_pck, yolo_pck, diff, ci, joints=100, ours_ap=50.0, yolo_ap=51.0):
    return {'ours': {'limb_pck': {'pck_percent': ours_pck, 'num_labelled_joints': joints},
                     'oks_ap_percent': {'AP': ours_ap}},
            'yolo': {'limb_pck': {'pck_percent': yolo_pck, 'num_labelled_joints': joints},
                     'oks_ap_percent': {'AP': yolo_ap}},
            'ours_minus_yolo_limb_pck': {'points': diff, 'ci95_points': ci}}


def test_evaluate_checks_turn_figures_into_booleans():
    images = {'lspet_val': _images_run(80.0, 76.0, 4.0, [2.5, 5.5]),
              # pooled over joints: (-2 x 300 + 3 x 100) / 400 = -0.75 -> fails
              'coco': _images_run(70.0, 72.0, -2.0, [-5.0, 1.0], joints=300, ours_ap=60.0,
                                  yolo_ap=61.5),
              'aic': _images_run(70.0, 67.0, 3.0, [-1.0, 7.0], joints=100)}
    grid = E.analyse_grid([_cell(1, 1, [75, 75]), _cell(2, 1, [75.6, 75.6]),
                           _cell(4, 1, [74.9, 74.9])],
                          [_cell(1, 1, [70, 70], True)])
    grid['cells'] = [_cell(1, 1, [75, 75]), _cell(2, 1, [75.6, 75.6]), _cell(4, 1, [74.9, 74.9])]
    video = {'jitter': {'ratio_ours_over_yolo': 0.5}}
    bonn = {'limb_pck': {'ours': {'pck_percent': 97.0}, 'yolo': {'pck_percent': 97.2}},
            'jitter': {'ratio_ours_over_yolo': None}, 'lag': {'ours_pooled_frames': 0}}
    checks = E.evaluate_checks(images, grid, video, bonn)
    passed = {name: c['passed'] for name, c in checks.items()}
    assert passed == {
        'lspet_ours_at_least_yolo_plus_3': True,
        'dev_gt_limb_pck_ours_at_least_yolo': False,
        'coco_oks_ap_at_least_yolo_minus_2': True,            # 60 >= 61.5 - 2
        'steps_earn_their_cost': False,                       # K=4 fell below K=1
        'zeroed_input_costs_at_least_3_points': True,         # 75 - 70
        'bonn_limb_pck_at_least_yolo': False,
        'bonn_jitter_at_most_0.7x_yolo': False,               # missing number: fails
        'bonn_lag_at_most_1_frame': True,
        'vtest_jitter_at_most_0.7x_yolo': True,
    }
    assert checks['dev_gt_limb_pck_ours_at_least_yolo']['value']['pooled_points'] == -0.75
    assert json.loads(json.dumps(E.jsonable(checks), allow_nan=False))
    # the dev_gt ablation, pooled over joints: (7.4 x 135 - 2 x 83) / 218 = 3.82 -> passes
    zeroed = [{'cost_limb_pck': {'points': 7.4}, 'num_labelled_joints': 135},
              {'cost_limb_pck': {'points': -2.0}, 'num_labelled_joints': 83}]
    checks = E.evaluate_checks(images, grid, video, bonn, zeroed)
    dev_gt = checks['zeroed_input_costs_at_least_3_points_dev_gt']
    assert dev_gt['passed'] and dev_gt['value'] == pytest.approx((7.4 * 135 - 2 * 83) / 218)
    zeroed[0]['cost_limb_pck']['points'] = 5.0             # (675 - 166) / 218 = 2.33 -> fails
    assert not E.evaluate_checks(images, None, None, None, zeroed)[
        'zeroed_input_costs_at_least_3_points_dev_gt']['passed']


def test_pooled_dev_gt_difference_counts_whole_joints_so_a_tie_passes():
    # measured 2026-12-04: COCO -2 of 135 joints, AIC +2 of 83; float weighting gave -4.6e-15
    coco = _images_run(88.9, 90.4, -200 / 135, [-5.1, 3.0], joints=135)
    aic = _images_run(90.4, 88.0, 200 / 83, [-2.3, 9.5], joints=83)
    assert E.pooled_paired_difference([coco, aic]) == 0.0
    checks = E.evaluate_checks({'coco': coco, 'aic': aic}, None, None)
    assert checks['dev_gt_limb_pck_ours_at_least_yolo']['passed']
    one_joint_short = _images_run(88.1, 90.4, -300 / 135, [-6.7, 2.3], joints=135)
    assert E.pooled_paired_difference([one_joint_short, aic]) == pytest.approx(-100 / 218)
    nan_set = _images_run(0.0, 0.0, None, [None, None], joints=10)
    assert math.isnan(E.pooled_paired_difference([coco, nan_set]))


def test_cli_parses_every_subcommand():
    parser = cli.build_parser()
    grid = parser.parse_args(['grid'])
    assert (grid.steps, grid.hypotheses, grid.seeds) == ([1, 2, 4, 8], [1, 2, 4, 8],
                                                         [0, 1, 2, 3, 4])
    assert grid.ablation_steps == [1, 2, 4] and grid.backend == 'onnxruntime'
    video = parser.parse_args(['video'])
    assert (video.detector_imgsz, video.window_mode, video.steps) == (1280, 'causal', 1)
    assert parser.parse_args(['images', '--gt', 'x.json']).detector_imgsz == 640
    lspet = parser.parse_args(['lspet', '--decode-blur-sigmas', '0', '3'])
    assert (lspet.decode_blur_sigmas, lspet.t_starts, lspet.decode_blur_sigma) == (
        [0.0, 3.0], [], 3.0)
    everything = parser.parse_args(['all', '--out', 'o', '--max-frames', '2', '--backend',
                                    'torch'])
    assert (everything.max_frames, everything.backend) == (2, 'torch')
    assert SimpleNamespace(**vars(everything)).video_detector_imgsz == 1280
