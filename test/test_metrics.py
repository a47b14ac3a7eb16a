"""diffpose_ros.metrics against hand-computed cases and the real dev_gt annotations."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from diffpose_ros import metrics as M
from diffpose_ros.skeleton import LIMB_JOINTS, OKS_SIGMAS

# Real annotations (mmpose test data; see test/data/dev_gt/README.md).
DEV_GT = Path(os.environ.get('DIFFPOSE_DEV_GT',
                             Path(__file__).resolve().parent / 'data' / 'dev_gt'))
COCO_JSON = DEV_GT / 'coco' / 'test_coco.json'
AIC_JSON = DEV_GT / 'aic' / 'test_aic.json'

BOX = (100.0, 50.0, 100.0, 200.0)  # xywh: larger side 200 px
SIZE = 200.0


@pytest.fixture(scope='module')
def dev_gt() -> Path:
    """The dev_gt folder; fails (never skips) with the fix when it is missing."""
    if not (COCO_JSON.is_file() and AIC_JSON.is_file()):
        pytest.fail(f'dev_gt annotations not found under {DEV_GT}: set DIFFPOSE_DEV_GT to the '
                    'folder holding coco/test_coco.json and aic/test_aic.json')
    return DEV_GT


def person(offset_x: float = 0.0, seed: int = 0, box=BOX, labelled=None,
           head_box=None) -> M.GtPerson:
    """A COCO-17 GT person with every joint labelled inside its box (area = box area)."""
    rng = np.random.default_rng(seed)
    x, y, w, h = box
    kpts = np.zeros((17, 3))
    kpts[:, 0] = x + offset_x + rng.uniform(0.2, 0.8, 17) * w
    kpts[:, 1] = y + rng.uniform(0.1, 0.9, 17) * h
    kpts[:, 2] = 2
    if labelled is not None:
        mask = np.zeros(17, dtype=bool)
        mask[list(labelled)] = True
        kpts[~mask] = 0
    return M.GtPerson(keypoints=kpts, box_xywh=(x + offset_x, y, w, h), area=w * h,
                      head_box_xywh=head_box)


def shifted(p: M.GtPerson, dist_px, direction=(0.6, 0.8)) -> np.ndarray:
    """Prediction (17, 3): every joint moved by dist_px (scalar or (17,)) along direction."""
    pred = p.keypoints.copy()
    pred[:, 2] = 0.9
    d = np.broadcast_to(np.asarray(dist_px, dtype=float), (17,))
    pred[:, 0] += d * direction[0]
    pred[:, 1] += d * direction[1]
    return pred


# ------------------------------------------------------------------ limb PCK


def test_perfect_prediction_scores_100_pck_and_oks_1():
    gt = {1: [person(seed=1)], 2: [person(seed=2), person(offset_x=400, seed=3)]}
    preds = {k: [p.keypoints.copy() for p in v] for k, v in gt.items()}
    result = M.limb_pck(preds, gt)
    assert result.pck_percent == 100.0
    assert set(result.per_joint_percent.values()) == {100.0}
    assert len(result.per_joint_percent) == 12
    assert result.per_person_correct.tolist() == [12, 12, 12]
    assert M.oks(gt[1][0].keypoints, gt[1][0].keypoints, gt[1][0].area) == pytest.approx(1.0)


@pytest.mark.parametrize('fraction, expected', [(0.05, 100.0), (0.15, 0.0)])
def test_known_shift(fraction, expected):
    gt = {1: [person(seed=4)], 2: [person(seed=5)]}
    preds = {k: [shifted(p, fraction * SIZE) for p in v] for k, v in gt.items()}
    result = M.limb_pck(preds, gt, threshold=0.1)
    assert result.matched.all()  # the shift is scored, not a missed match
    assert result.pck_percent == pytest.approx(expected)


def test_half_near_half_far_scores_50():
    p = person(seed=6)
    dist = np.full(17, 0.05 * SIZE)
    dist[[5, 7, 9, 11, 13, 15]] = 0.15 * SIZE  # the six left limb joints are off
    result = M.limb_pck({1: [shifted(p, dist)]}, {1: [p]})
    assert result.pck_percent == pytest.approx(50.0)
    assert result.per_joint_percent['left_wrist'] == 0.0
    assert result.per_joint_percent['right_wrist'] == 100.0


def test_threshold_is_euclidean_and_uses_the_gt_box():
    p = person(seed=7)
    # 0.08 x size along both axes: each axis within 0.1, the distance (0.113) is not.
    pred = shifted(p, 0.08 * SIZE * math.sqrt(2), direction=(1 / math.sqrt(2),) * 2)
    assert M.limb_pck({1: [pred]}, {1: [p]}).pck_percent == 0.0
    # A larger GT box (same joints) admits the same error: normaliser is the GT box's max side.
    big = M.GtPerson(keypoints=p.keypoints, box_xywh=(0, 0, 100, 300), area=p.area)
    assert M.limb_pck({1: [pred]}, {1: [big]}).pck_percent == 100.0


def test_missed_person_counts_all_its_joints_wrong():
    a, b = person(seed=8), person(offset_x=500, seed=9)
    result = M.limb_pck({1: [a.keypoints.copy()]}, {1: [a, b]})
    assert result.per_person_labelled.tolist() == [12, 12]
    assert result.per_person_correct.tolist() == [12, 0]
    assert result.matched.tolist() == [True, False]
    assert result.pck_percent == pytest.approx(50.0)
    # no predictions at all for an image: everything missed
    assert M.limb_pck({}, {1: [a, b]}).pck_percent == 0.0


def test_unlabelled_gt_joints_are_ignored():
    labelled = [j for j in range(17) if j not in (9, 10)]  # wrists not labelled
    p = person(seed=10, labelled=labelled)
    pred = p.keypoints.copy()
    pred[[9, 10], :2] = [[-1000.0, -1000.0], [5000.0, 5000.0]]  # garbage where unlabelled
    result = M.limb_pck({1: [pred]}, {1: [p]})
    assert result.pck_percent == 100.0
    assert result.per_person_labelled.tolist() == [10]
    assert math.isnan(result.per_joint_percent['left_wrist'])


def test_false_positives_do_not_lower_pck_and_crowd_is_skipped():
    p = person(seed=11)
    crowd = M.GtPerson(keypoints=person(offset_x=600, seed=12).keypoints,
                       box_xywh=(700, 50, 100, 200), iscrowd=True)
    far = shifted(p, 0)  # a copy
    far[:, 0] += 3000  # overlaps nobody
    result = M.limb_pck({1: [p.keypoints.copy(), far]}, {1: [p, crowd]})
    assert result.pck_percent == 100.0
    assert len(result.matched) == 1
    assert result.num_unmatched_predictions == 1


def test_aic_layout_scores_only_shared_joints():
    p = person(seed=13, labelled=M.shared_joints('aic'))
    pred = p.keypoints.copy()
    pred[:5, :2] = 9999.0  # face joints: AIC has none, so they cannot count
    result = M.limb_pck({1: [pred]}, {1: [p]}, layout='aic',
                        joints=tuple(range(17)))
    assert result.joints == tuple(range(5, 17))
    assert result.pck_percent == 100.0


# ------------------------------------------------------------------ OKS and matching


def test_oks_two_joints_by_hand():
    gt = np.zeros((17, 3))
    gt[5] = [100.0, 100.0, 2]  # left shoulder, sigma 0.079
    gt[11] = [120.0, 200.0, 1]  # left hip, sigma 0.107
    pred = np.zeros((17, 2))
    pred[5] = [103.0, 104.0]  # d^2 = 25
    pred[11] = [120.0, 190.0]  # d^2 = 100
    pred[0] = [1e4, 1e4]  # unlabelled in GT: ignored
    area = 10000.0
    e_shoulder = 25.0 / (2 * area * (2 * 0.079) ** 2)
    e_hip = 100.0 / (2 * area * (2 * 0.107) ** 2)
    expected = (math.exp(-e_shoulder) + math.exp(-e_hip)) / 2
    assert M.oks(pred, gt, area) == pytest.approx(expected, rel=1e-9)
    # worked out: e = 25 / 499.28 = 0.0501 and 100 / 915.92 = 0.1092 -> (0.9512 + 0.8966) / 2
    assert expected == pytest.approx(0.9239, abs=1e-4)
    assert M.oks(pred, np.zeros((17, 3)), area) == 0.0  # nothing labelled


def test_oks_matches_pycocotools(dev_gt):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = M.load_coco_keypoints(COCO_JSON)
    image = images[197388]  # five persons
    rng = np.random.default_rng(0)
    preds = np.stack([p.keypoints.copy() for p in image.persons])
    preds[..., :2] += rng.normal(0, 6, preds[..., :2].shape)
    preds[..., 2] = 1
    ours = M.oks_matrix(preds, image.persons)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = M.to_coco17_dataset({image.image_id: image})
        coco_gt.createIndex()
        scores = np.linspace(1.0, 0.5, len(preds))  # distinct: COCOeval sorts by score
        coco_dt = coco_gt.loadRes(M.coco_results(image.image_id, preds, scores))
        ev = COCOeval(coco_gt, coco_dt, 'keypoints')
        ev.params.imgIds = [image.image_id]
        ev.evaluate()
    theirs = np.asarray(ev.ious[(image.image_id, 1)])
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_matching_is_one_to_one():
    a = person(seed=14)
    b = M.GtPerson(keypoints=a.keypoints + [[3.0, 0.0, 0.0]], box_xywh=a.box_xywh,
                   area=a.area)  # almost the same person
    between = a.keypoints.copy()
    between[:, 0] += 1.5
    match = M.match_persons([between], [a, b])
    assert (match.gt_to_pred >= 0).sum() == 1
    # two predictions on one GT person, another GT person far away: one match only
    c = person(offset_x=800, seed=15)
    match = M.match_persons([a.keypoints, shifted(a, 4.0)], [a, c])
    assert match.pred_to_gt.tolist() == [0, -1]
    assert match.gt_to_pred.tolist() == [0, -1]
    result = M.limb_pck({1: [a.keypoints, shifted(a, 4.0)]}, {1: [a, c]})
    assert result.per_person_correct.tolist() == [12, 0]


def test_assignment_is_optimal_not_greedy():
    # greedy on descending OKS takes 0.9 then 0.1 (total 1.0); the optimum is 0.8 + 0.85
    weights = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert M.assign_max_weight(weights, 0.05).tolist() == [1, 0]
    # a pair below the minimum is never matched, even when nothing else is left
    assert M.assign_max_weight(np.array([[0.05]]), 0.1).tolist() == [-1]
    rng = np.random.default_rng(1)
    for shape in [(3, 3), (2, 4), (4, 2), (1, 3), (4, 4)]:
        w = rng.uniform(0, 1, shape)
        got = M.assign_max_weight(w, 0.3)
        assert len(set(got[got >= 0].tolist())) == int((got >= 0).sum())
        total = sum(w[r, c] for r, c in enumerate(got) if c >= 0)
        best = 0.0
        rows, cols = shape
        for perm in itertools.permutations(range(max(rows, cols)), rows):
            best = max(best, sum(w[r, c] for r, c in enumerate(perm)
                                 if c < cols and w[r, c] >= 0.3))
        assert total == pytest.approx(best)


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_contains_estimate_and_narrows_with_more_persons():
    rng = np.random.default_rng(2)
    labelled = rng.integers(6, 13, 20)
    correct = rng.binomial(labelled, 0.7)
    point = 100.0 * correct.sum() / labelled.sum()
    low, high = M.bootstrap_ci(correct, labelled)
    assert low <= point <= high
    assert 0 < high - low < 50
    low10, high10 = M.bootstrap_ci(np.tile(correct, 10), np.tile(labelled, 10))
    assert low10 <= point <= high10
    assert high10 - low10 < 0.5 * (high - low)
    assert M.bootstrap_ci(correct, labelled, seed=3) == M.bootstrap_ci(correct, labelled, seed=3)
    dlow, dhigh = M.bootstrap_diff_ci(correct, correct, labelled)
    assert dlow == dhigh == 0.0
    with pytest.raises(ValueError):
        M.bootstrap_ci([3], [2])
    with pytest.raises(ValueError):
        M.bootstrap_ci([0], [0])


# ------------------------------------------------------------------ loaders


def test_coco_loader_on_dev_gt(dev_gt):
    images = M.load_coco_keypoints(COCO_JSON)
    persons = [p for image in images.values() for p in image.persons]
    assert len(images) == 4
    assert len(persons) == 14
    assert sum(not p.labelled.any() for p in persons) == 2
    raw = json.loads(COCO_JSON.read_text())['annotations'][0]
    first = images[raw['image_id']].persons[0]
    np.testing.assert_array_equal(first.keypoints.reshape(-1), raw['keypoints'])
    assert first.area == raw['area']
    np.testing.assert_allclose(first.box_xywh, raw['bbox'])
    with pytest.raises(ValueError, match='layout'):
        M.load_coco_keypoints(COCO_JSON, layout='aic')


def test_aic_mapping_on_dev_gt(dev_gt):
    raw = json.loads(AIC_JSON.read_text())
    images = M.load_coco_keypoints(AIC_JSON, layout='aic')
    persons = [p for image in images.values() for p in image.persons]
    assert len(persons) == 9
    for p in persons:
        assert not p.labelled[:5].any()  # no face joints in AIC
    aic_labelled = sum(int((np.asarray(a['keypoints']).reshape(14, 3)[:12, 2] > 0).sum())
                       for a in raw['annotations'])
    assert sum(int(p.labelled.sum()) for p in persons) == aic_labelled
    ann = raw['annotations'][0]
    first = images[ann['image_id']].persons[0]
    assert first.keypoints[6].tolist() == ann['keypoints'][0:3]  # right shoulder
    assert first.keypoints[9].tolist() == ann['keypoints'][15:18]  # left wrist
    assert first.area == pytest.approx(0.53 * ann['bbox'][2] * ann['bbox'][3])
    with pytest.raises(ValueError):
        M.load_coco_keypoints(AIC_JSON, layout='coco')


def test_posetrack_loader(tmp_path):
    kpts = np.zeros((17, 3))
    kpts[:3] = [[50, 30, 1], [50, 40, 1], [50, 10, 1]]  # nose, head_bottom, head_top
    kpts[5:] = np.column_stack([np.linspace(30, 70, 12), np.linspace(50, 170, 12), np.ones(12)])
    kpts[16] = [20, 190, 1]  # right ankle inside the ignore region below
    dataset = {
        'images': [
            {'id': 10, 'file_name': 'a/000000.jpg', 'is_labeled': True, 'vid_id': '000342',
             'frame_id': 10, 'ignore_regions_x': [[0, 40, 40, 0]],
             'ignore_regions_y': [[180, 180, 200, 200]]},
            {'id': 11, 'file_name': 'a/000001.jpg', 'is_labeled': False}],
        'annotations': [{'id': 1, 'image_id': 10, 'category_id': 1, 'track_id': 3,
                         'keypoints': kpts.reshape(-1).tolist(),
                         'bbox_head': [35, 5, 30, 40]}],
        'categories': [{'id': 1, 'name': 'person',
                        'keypoints': list(M.POSETRACK_KEYPOINT_NAMES)}],
    }
    path = tmp_path / 'pt.json'
    path.write_text(json.dumps(dataset))
    images = M.load_coco_keypoints(path, layout='posetrack')
    assert list(images) == [10]  # the unlabelled frame is skipped
    p = images[10].persons[0]
    assert p.labelled[0] and not p.labelled[1:5].any()  # head_bottom/top are not eyes
    assert p.labelled[5:16].all() and not p.labelled[16]  # ignored joint -> unlabelled
    assert p.track_id == 3 and images[10].video_id == '000342'
    assert p.head_size_px == pytest.approx(0.6 * 50.0)
    # no bbox in the JSON: the tight box of all annotated joints (ignored ones included)
    annotated = kpts[[0] + list(range(5, 17)), :2]
    lo, hi = annotated.min(axis=0), annotated.max(axis=0)
    np.testing.assert_allclose(p.box_xywh, [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    assert len(M.load_coco_keypoints(path, layout='posetrack', labelled_only=False)) == 2


# ------------------------------------------------------------------ COCO AP (pycocotools)


def _perfect_results(images):
    results = []
    for image_id, image in images.items():
        people = [p for p in image.persons if p.labelled.any()]
        if people:
            results += M.coco_results(image_id, np.stack([p.keypoints for p in people]),
                                      np.linspace(1.0, 0.5, len(people)))
    return results


def test_coco_ap_perfect_is_100_and_shift_lowers_it(dev_gt):
    images = M.load_coco_keypoints(COCO_JSON)
    results = _perfect_results(images)
    assert len(results) == 12
    ap = M.coco_oks_ap(COCO_JSON, results)
    assert ap['AP'] == pytest.approx(100.0)
    assert ap['AP50'] == pytest.approx(100.0)
    assert ap['AR'] == pytest.approx(100.0)
    moved = [dict(r, keypoints=[v + (8.0 if i % 3 != 2 else 0.0)
                                for i, v in enumerate(r['keypoints'])]) for r in results]
    assert M.coco_oks_ap(images, moved)['AP'] < 90.0
    assert M.coco_oks_ap(images, [])['AP'] == 0.0
    with pytest.raises(ValueError):
        M.coco_oks_ap(images, [dict(results[0], image_id=123456)])


def test_coco_ap_on_aic_uses_shared_joints_only(dev_gt):
    images = M.load_coco_keypoints(AIC_JSON, layout='aic')
    results = _perfect_results(images)
    for r in results:  # garbage face joints: unlabelled in AIC, so they must not count
        r['keypoints'][:15] = [9999.0, 9999.0, 1.0] * 5
    ap = M.coco_oks_ap(AIC_JSON, results, layout='aic')
    assert ap['AP'] == pytest.approx(100.0)
    assert math.isnan(ap['APm'])  # no medium-sized person in this subset


# ------------------------------------------------------------------ PCKh


def test_pckh_with_hand_made_head_box():
    head = (0.0, 0.0, 30.0, 40.0)  # diagonal 50 -> head size 0.6 * 50 = 30 -> radius 15 px
    p = person(seed=16, labelled=M.shared_joints('posetrack'), head_box=head)
    gt = {1: [p]}
    assert p.head_size_px == pytest.approx(30.0)
    near = M.pckh({1: [shifted(p, 10.0)]}, gt)
    assert near.mean_percent == 100.0
    assert near.map_percent == pytest.approx(100.0)
    assert M.pckh({1: [shifted(p, 20.0)]}, gt).mean_percent == 0.0
    dist = np.full(17, 10.0)
    dist[[6, 8, 10, 12, 14, 16]] = 20.0  # the six right limb joints are off
    mixed = M.pckh({1: [shifted(p, dist)]}, gt)
    assert mixed.per_joint_percent['nose'] == 100.0
    assert mixed.per_joint_percent['right_knee'] == 0.0
    assert mixed.pck.pck_percent == pytest.approx(100.0 * 7 / 13)
    assert mixed.mean_percent == pytest.approx(100.0 * 7 / 13)
    groups = mixed.groups_percent(mixed.per_joint_percent)
    assert groups['head'] == 100.0 and groups['knee'] == 50.0
    # a missed person counts, and without confidences there is no AP
    q = person(offset_x=600, seed=17, labelled=M.shared_joints('posetrack'), head_box=head)
    missed = M.pckh({1: [p.keypoints[:, :2].copy()]}, {1: [p, q]})
    assert missed.pck.pck_percent == pytest.approx(50.0)
    assert missed.ap_per_joint_percent is None
    with pytest.raises(ValueError, match='head box'):
        M.pckh({1: [p.keypoints]}, {1: [person(seed=18)]})


def test_poseval_assignment():
    scores = np.array([[0.9, 0.8],   # pred 0 keeps GT 0
                       [0.95, 0.5],  # pred 1 keeps GT 0 too and wins it
                       [0.0, 0.0]])
    assert M.poseval_assignment(scores).tolist() == [-1, 0, -1]


# ------------------------------------------------------------------ temporal


def test_jitter_constant_velocity_is_zero_and_alternating_is_4d_over_size():
    t = np.arange(20, dtype=float)
    track = np.zeros((20, 17, 2))
    track[..., 0] = 100 + 3.0 * t[:, None]
    track[..., 1] = 50 - 1.5 * t[:, None]
    sizes = np.full(20, 120.0)
    assert M.jitter(track, sizes) == pytest.approx(0.0, abs=1e-12)
    d = 2.0
    alternating = track.copy()
    alternating[..., 0] += d * (-1.0) ** t[:, None]
    # x[t+1] - 2 x[t] + x[t-1] = d (-1)^t (-1 - 2 - 1): norm 4 d
    assert M.jitter(alternating, sizes) == pytest.approx(4 * d / 120.0)
    # a masked joint (low confidence) is skipped; a wild value there changes nothing
    valid = np.ones((20, 17), dtype=bool)
    valid[7, 3] = False
    wild = alternating.copy()
    wild[7, 3] = [1e4, -1e4]
    assert M.jitter(wild, sizes, valid=valid) == pytest.approx(4 * d / 120.0)
    assert math.isnan(M.jitter(track[:2], sizes[:2]))


def _wiggly_reference(n: int = 60) -> np.ndarray:
    t = np.arange(n, dtype=float)
    ref = np.zeros((n, 17, 2))
    phase = np.arange(17) * 0.3
    ref[..., 0] = 300 + 40 * np.sin(0.21 * t[:, None] + phase) + 0.05 * t[:, None] ** 2
    ref[..., 1] = 200 + 25 * np.cos(0.13 * t[:, None] + phase)
    return ref


def test_lag_of_a_shifted_track():
    ref = _wiggly_reference()
    late = np.concatenate([np.repeat(ref[:1], 2, axis=0), ref[:-2]])  # late[t] = ref[t - 2]
    early = np.concatenate([ref[2:], np.repeat(ref[-1:], 2, axis=0)])  # early[t] = ref[t + 2]
    assert M.lag_frames(late, ref, max_lag=5) == 2
    assert M.lag_frames(early, ref, max_lag=5) == -2
    assert M.lag_frames(ref, ref) == 0
    profile = M.lag_profile(late, ref, max_lag=3)
    assert profile[2] == 0.0 and min(profile.values()) == 0.0
    with pytest.raises(ValueError):
        M.lag_frames(ref[:4], ref[:4], max_lag=5)


def test_agreement():
    ref = _wiggly_reference(30)
    sizes = np.full(30, 200.0)
    assert M.agreement(ref, ref, sizes) == 100.0
    off = ref.copy()
    off[..., 0] += 0.15 * 200.0
    assert M.agreement(off, ref, sizes, threshold=0.1) == 0.0
    off[:15] = ref[:15]
    assert M.agreement(off, ref, sizes) == pytest.approx(50.0)


def test_temporal_smooth():
    t = np.arange(15, dtype=float)
    line = np.zeros((15, 17, 2))
    line[..., 0] = 5.0 * t[:, None]
    np.testing.assert_allclose(M.temporal_smooth(line, 5), line, atol=1e-9)  # no lag
    noisy = line + np.random.default_rng(4).normal(0, 2, line.shape)
    sizes = np.full(15, 100.0)
    assert M.jitter(M.temporal_smooth(noisy, 5), sizes) < 0.5 * M.jitter(noisy, sizes)
    # a zero-confidence outlier on a still joint is ignored by its neighbours and replaced
    still = np.full((15, 17, 2), 40.0)
    spiky = still.copy()
    spiky[7, 0] = [1e4, 1e4]
    conf = np.ones((15, 17))
    conf[7, 0] = 0.0
    smooth = M.temporal_smooth(spiky, 3, confidences=conf)
    np.testing.assert_allclose(smooth, still, atol=1e-9)
    conf[:, 0] = 0.0  # no weight anywhere in the window -> NaN
    assert np.isnan(M.temporal_smooth(spiky, 3, confidences=conf)[:, 0]).all()
    with pytest.raises(ValueError):
        M.temporal_smooth(line, 4)


def test_layout_helpers():
    assert M.shared_joints('aic') == tuple(LIMB_JOINTS)
    assert M.shared_joints('posetrack') == (0,) + tuple(LIMB_JOINTS)
    assert len(M.shared_joints('coco')) == 17
    assert sorted(M.AIC_TO_COCO.values()) == list(LIMB_JOINTS)
    assert len(OKS_SIGMAS) == 17
    with pytest.raises(ValueError):
        M.shared_joints('mpii')


# --- identity (IDF1) ---------------------------------------------------------------------------

def test_identity_scores_hand_computed():
    # GT track 1 seen on 4 frames: predicted id 7 on 3 of them, id 8 on 1; GT track 2 on 3
    # frames, predicted id 9 on 2 (missed once); one false positive person-frame (id 10).
    pairs = [(1, 7), (1, 7), (1, 7), (1, 8), (2, 9), (2, 9)]
    scores = M.identity_scores(pairs, num_gt=7, num_pred=7)
    assert scores.assignment == {1: 7, 2: 9}
    assert (scores.idtp, scores.idfp, scores.idfn) == (5, 2, 2)
    assert scores.idf1 == pytest.approx(10 / 14)
    assert (scores.idp, scores.idr) == (pytest.approx(5 / 7), pytest.approx(5 / 7))
    perfect = M.identity_scores([(1, 7)] * 4 + [(2, 9)] * 3, num_gt=7, num_pred=7)
    assert perfect.idf1 == 1.0 and perfect.to_dict()['assignment'] == {1: 7, 2: 9}


def test_identity_assignment_is_optimal_not_greedy():
    # shared frames: GT a-p 3, a-q 2, b-p 2, b-q 0. Greedy (a-p first) gets 3; optimal a-q +
    # b-p gets 4.
    pairs = [(0, 10)] * 3 + [(0, 11)] * 2 + [(1, 10)] * 2
    scores = M.identity_scores(pairs, num_gt=7, num_pred=7)
    assert scores.idtp == 4 and scores.assignment == {0: 11, 1: 10}


def test_identity_scores_edge_cases():
    empty = M.identity_scores([], num_gt=0, num_pred=0)
    assert math.isnan(empty.idf1)
    assert M.identity_scores([], num_gt=3, num_pred=2).idf1 == 0.0
    with pytest.raises(ValueError, match='matched person-frames'):
        M.identity_scores([(0, 1)] * 3, num_gt=2, num_pred=5)
