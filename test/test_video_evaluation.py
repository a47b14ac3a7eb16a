"""Video evaluation against ground truth (evaluation.run_video_gt, ``diffpose-evaluate bonn``):
hand-computed synthetic tracks, the Bonn PoseTrack loader and the real pipeline on 4 Bonn frames.

The Bonn data is not part of the repository: it is read from ``../shared/data`` beside the clone
(see that folder's README); the tests needing it skip when it is absent.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from diffpose_ros import evaluation as E
from diffpose_ros import metrics as M
from diffpose_ros.cli import evaluate as cli
from diffpose_ros.config import PipelineConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
BONN_JSON = SHARED_DATA / 'bonn_posetrack' / '060470979_coco17.json'
LOGGER = logging.getLogger(__name__)


def _need_bonn() -> None:
    if not BONN_JSON.is_file() or not (BONN_JSON.parent / '060470979' / '00001.jpg').is_file():
        pytest.skip(f'Bonn PoseTrack data not found at {BONN_JSON.parent} (research data, '
                    'kept outside the repository in ../shared/data)')


# ------------------------------------------------------------------ synthetic, hand-computed

S = 200.0  # GT box 100 x 200 px: limb PCK and jitter normaliser
LIMBS = np.arange(5, 17)
N = 8


def _kp(x: np.ndarray, y: np.ndarray, v: float = 2.0) -> np.ndarray:
    """(17, 3): limb joints j at (x + 10 j, y + 10 j) with value v, joints 0-4 unlabelled."""
    kp = np.zeros((17, 3))
    kp[LIMBS, 0] = x + 10.0 * LIMBS
    kp[LIMBS, 1] = y + 10.0 * LIMBS
    kp[LIMBS, 2] = v
    return kp


def _gt_person(kp: np.ndarray, track_id: int) -> M.GtPerson:
    x0, y0 = kp[LIMBS, 0].min(), kp[LIMBS, 1].min()
    return M.GtPerson(keypoints=kp, box_xywh=np.array([x0, y0, 100.0, S]), track_id=track_id)


def _pose(kp, track_id, detector=None):
    conf = kp.copy()
    conf[:, 2] = 0.9
    det = None
    if detector is not None:
        det = detector.copy()
        det[:, 2] = 0.9
    return SimpleNamespace(keypoints=conf, detector_keypoints=det, track_id=track_id)


def _synthetic():
    """Track A (GT id 0): x = 100 + 2 t (constant velocity); ours = GT one frame late (2 px
    off, lag 1); YOLO = GT +- 3 px in y alternating (acceleration 12 px). Track B (GT id 1):
    x = 500 + 0.5 t^2 (acceleration 1 px); ours = YOLO = GT, except YOLO's right wrist 40 px
    off (> 0.1 x 200); nobody matched on frame 2; pipeline id 5 on frames 0-1, 6 afterwards
    (1 ID switch). A pipeline person far away on every frame is never matched."""
    gt, persons = {}, {}
    for t in range(N):
        a = _kp(100.0 + 2.0 * t, 50.0)
        b = _kp(500.0 + 0.5 * t * t, 60.0)
        gt[t] = M.GtImage(image_id=100 + t, file_name=f'{t:05d}.jpg', width=960, height=540,
                          persons=(_gt_person(a, 0), _gt_person(b, 1)))
        ours_a = _kp(100.0 + 2.0 * (t - 1), 50.0)
        yolo_a = _kp(100.0 + 2.0 * t, 50.0 + 3.0 * (-1) ** t)
        frame = [_pose(ours_a, 3, yolo_a), _pose(_kp(2000.0, 2000.0), 9, _kp(2000.0, 2000.0))]
        if t != 2:
            yolo_b = b.copy()
            yolo_b[10, 0] += 40.0
            frame.append(_pose(b, 5 if t < 2 else 6, yolo_b))
        persons[t] = frame
    return persons, gt


def test_analyse_video_gt_hand_computed():
    persons, gt = _synthetic()
    out, tracks = E.analyse_video_gt(persons, gt, n_resamples=200)
    assert json.dumps(E.jsonable(out), allow_nan=False)
    assert (out['frames_scored'], out['num_gt_tracks'], out['num_gt_person_frames']) == (8, 2, 16)
    match = out['matching']
    assert (match['matched_person_frames'], match['missed_person_frames']) == (15, 1)
    assert (match['pipeline_persons'], match['unmatched_pipeline_persons']) == (23, 8)
    # limb PCK: 16 person-frames x 12 joints; B's frame 2 missed (12 wrong for both); YOLO's
    # wrist on B's 7 matched frames is wrong too
    pck = out['limb_pck']
    assert pck['ours']['num_labelled_joints'] == pck['yolo']['num_labelled_joints'] == 192
    assert pck['ours']['num_persons'] == 16 and pck['ours']['num_missed_persons'] == 1
    assert pck['ours']['pck_percent'] == pytest.approx(100.0 * 180 / 192)
    assert pck['yolo']['pck_percent'] == pytest.approx(100.0 * 173 / 192)
    assert pck['yolo']['per_joint_percent']['right_wrist'] == pytest.approx(100.0 * 8 / 16)
    diff = pck['ours_minus_yolo']
    assert diff['points'] == pytest.approx(100.0 * 7 / 192)
    assert diff['ci95_points'][0] <= diff['points'] <= diff['ci95_points'][1]
    lo, hi = pck['ours']['ci95_percent']
    assert lo <= pck['ours']['pck_percent'] <= hi
    # jitter on the same joints: A 6 terms x 12 joints (ours 0, YOLO 12/200, GT 0); B only the
    # terms centred on frames 4-6 (frame 2 unmatched): 3 x 12 of 1/200 for all three
    jit = out['jitter']
    assert jit['terms'] == 72 + 36
    assert jit['ours'] == pytest.approx(36 * 0.005 / 108)
    assert jit['yolo_raw'] == pytest.approx((72 * 0.06 + 36 * 0.005) / 108)
    assert jit['gt'] == pytest.approx(jit['ours'])  # ours = GT on B, both still on A
    assert jit['ratio_ours_over_yolo'] == pytest.approx(0.18 / 4.5)
    assert jit['ratio_ours_over_gt'] == pytest.approx(1.0)
    assert (jit['gt_all_labelled'], jit['gt_all_labelled_terms']) == (pytest.approx(0.0025), 144)
    per = {t['gt_track_id']: t for t in out['per_track']}
    assert per[1]['jitter_ours'] == per[1]['jitter_gt'] == per[1]['jitter_yolo'] == \
        pytest.approx(0.005)
    assert per[0]['jitter_yolo'] == pytest.approx(0.06)
    # lag: A one frame late, B on time; YOLO on time; pooled lag-0 profile by hand:
    # A 96 pairs at 2/200, B 7 x 12 pairs at 0
    assert (per[0]['lag_ours_frames'], per[1]['lag_ours_frames']) == (1, 0)
    assert (per[0]['lag_yolo_frames'], per[1]['lag_yolo_frames']) == (0, 0)
    lag = out['lag']
    assert lag['pooled_pairs'][0] == 96 + 84
    assert lag['ours_pooled_profile'][0] == pytest.approx(96 * 0.01 / 180)
    assert lag['yolo_pooled_frames'] == 0
    # ID switches: A keeps id 3; B goes 5, 5, (missed), 6, 6, ...
    assert (per[0]['id_switches'], per[1]['id_switches']) == (0, 1)
    assert per[1]['pipeline_track_ids'] == [5, 6] and per[1]['matched_frames'] == 7
    assert out['id_switches']['total'] == 1
    assert out['id_switches']['pipeline_ids_on_several_gt_tracks'] == []
    # IDF1: A <-> 3 on 8 frames, B <-> 6 on 5 (5 has only 2); 16 GT, 23 pipeline person-frames
    ident = out['identity']
    assert (ident['idtp'], ident['idfn'], ident['idfp']) == (13, 3, 10)
    assert ident['assignment'] == {0: 3, 1: 6}
    assert ident['idf1'] == pytest.approx(26 / 39)
    assert (ident['idp'], ident['idr']) == (pytest.approx(13 / 23), pytest.approx(13 / 16))
    assert per[0]['limb_pck_ours_percent'] == 100.0
    assert per[1]['limb_pck_yolo_percent'] == pytest.approx(100.0 * (7 * 11) / (8 * 12))
    track_b = next(t for t in tracks if t.track_id == 1)
    assert track_b.matched_ids.tolist() == [5, 5, -1, 6, 6, 6, 6, 6]
    assert np.isnan(track_b.ours[2]).all() and not track_b.shared[2].any()


def test_matching_on_the_detector_does_not_depend_on_our_keypoints():
    persons, gt = _synthetic()
    for frame in persons.values():
        for p in frame:
            p.keypoints = p.keypoints + 5000.0  # our head far off: still the same persons
    out, _ = E.analyse_video_gt(persons, gt, n_resamples=50)
    assert out['matching']['matched_person_frames'] == 15
    assert out['limb_pck']['ours']['pck_percent'] == 0.0
    assert out['limb_pck']['yolo']['pck_percent'] == pytest.approx(100.0 * 173 / 192)
    ours_matched, _ = E.analyse_video_gt(persons, gt, match_on='ours', n_resamples=50)
    assert ours_matched['matching']['matched_person_frames'] == 0


def test_matching_keeps_the_previous_frames_pair_as_clear_mot_does():
    gt = [_gt_person(_kp(100.0, 50.0), track_id=0)]
    on_track = _pose(_kp(104.0, 50.0), 3, _kp(104.0, 50.0))     # 4 px off: still a match
    duplicate = _pose(_kp(100.0, 51.0), 9, _kp(100.0, 51.0))    # fits the GT better
    assert E.match_frame([on_track, duplicate], gt).tolist() == [1]
    assert E.match_frame([on_track, duplicate], gt, previous={0: 3}).tolist() == [0]
    far = _pose(_kp(400.0, 50.0), 3, _kp(400.0, 50.0))          # the pair no longer matches
    assert E.match_frame([far, duplicate], gt, previous={0: 3}).tolist() == [1]
    # over a video: GT track 0 keeps id 3 although a better-fitting duplicate (id 9) appears
    gt_by_frame = {t: M.GtImage(image_id=t, file_name=f'{t}.jpg', width=960, height=540,
                                persons=(_gt_person(_kp(100.0, 50.0), 0),)) for t in range(3)}
    persons = {0: [on_track], 1: [on_track, duplicate], 2: [on_track]}
    out, _ = E.analyse_video_gt(persons, gt_by_frame, n_resamples=20)
    assert out['id_switches']['total'] == 0
    assert (out['identity']['idtp'], out['identity']['idfp']) == (3, 1)


# ------------------------------------------------------------------ Bonn PoseTrack


def test_load_bonn_video():
    _need_bonn()
    video = E.load_gt_video(BONN_JSON)
    assert (video.fps, video.fps_source) == (25.0, 'json images[].fps')
    assert list(video.frames) == list(range(41)) and video.layout == 'coco'
    assert video.image_path(0) == BONN_JSON.parent / '060470979' / '00001.jpg'
    for image in video.frames.values():
        assert sorted(p.track_id for p in image.persons) == [0, 1, 2, 3]
        for person in image.persons:
            assert not person.labelled[:5].any() and person.labelled[5:].sum() >= 8
    short = E.load_gt_video(BONN_JSON, max_frames=3, fps=30.0)
    assert list(short.frames) == [0, 1, 2] and (short.fps, short.fps_source) == (30.0, 'given')


@pytest.fixture(scope='module')
def bonn_models():
    """YOLO11n-pose at imgsz 640 and a torch runtime (no ONNX export), built after the detector.
    The shipped weights are used when they load; else (weights of another architecture) the
    seeded random head, requested by hiding the shipped file: only structure is asserted."""
    _need_bonn()
    from diffpose_ros.detection import UltralyticsPoseDetector
    from diffpose_ros.runtime.factory import make_runtime

    config = PipelineConfig(backend='torch', intra_op_threads=1, detector_imgsz=640)
    detector = UltralyticsPoseDetector(imgsz=640)
    try:
        runtime = make_runtime(config)
    except (RuntimeError, ValueError, OSError) as exc:
        LOGGER.warning('shipped weights do not load (%s): using the random head', exc)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr('diffpose_ros.model.weights.default_weights_path', lambda: None)
            patch.setattr('diffpose_ros.model.files.default_weights_path', lambda: None)
            runtime = make_runtime(config)
    return detector, runtime, config


def test_bonn_cli_on_four_frames(tmp_path, monkeypatch, bonn_models):
    detector, runtime, _ = bonn_models
    monkeypatch.setattr(cli, '_detector', lambda config: E.CachingDetector(detector))
    monkeypatch.setattr(cli, '_runtime', lambda args, config: runtime)
    out = tmp_path / 'bonn'
    assert cli.main(['bonn', '--gt', str(BONN_JSON), '--max-frames', '4', '--backend', 'torch',
                     '--out', str(out), '--quiet']) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['trained'] is runtime.trained
    assert (summary['frames_processed'], summary['frames_scored']) == (4, 4)
    assert (summary['fps'], summary['detector_imgsz']) == (25.0, 640)
    assert summary['stamp_period_ms'] == pytest.approx(40.0)
    assert summary['num_gt_tracks'] == 4 and summary['num_gt_person_frames'] == 16
    match = summary['matching']
    assert match['matched_person_frames'] + match['missed_person_frames'] == 16
    assert match['matched_person_frames'] >= 14  # 4 large, clearly visible people
    assert match['pipeline_persons'] == summary['person_frames']
    assert match['pipeline_persons'] - match['unmatched_pipeline_persons'] == \
        match['matched_person_frames']
    pck = summary['limb_pck']
    for name in ('ours', 'yolo'):
        assert pck[name]['num_persons'] == 16
        assert pck[name]['num_missed_persons'] == match['missed_person_frames']
        lo, hi = pck[name]['ci95_percent']
        assert lo <= pck[name]['pck_percent'] <= hi
    assert pck['ours']['num_labelled_joints'] == pck['yolo']['num_labelled_joints']
    assert pck['yolo']['pck_percent'] > 60.0  # YOLO11n-pose is a real model
    diff = pck['ours_minus_yolo']
    assert diff['points'] == pytest.approx(pck['ours']['pck_percent']
                                           - pck['yolo']['pck_percent'])
    jit = summary['jitter']
    assert jit['terms'] > 0 and math.isfinite(jit['gt']) and math.isfinite(jit['yolo_raw'])
    assert jit['gt'] < 0.2 and jit['yolo_raw'] < 0.2
    assert jit['gt_all_labelled_terms'] >= jit['terms']
    assert sum(t['jitter_terms'] for t in summary['per_track']) == jit['terms']
    if jit['ours'] is not None:
        assert jit['ratio_ours_over_yolo'] == pytest.approx(jit['ours'] / jit['yolo_raw'])
    lag = summary['lag']
    assert lag['yolo_pooled_frames'] is not None and abs(lag['yolo_pooled_frames']) <= 3
    assert summary['id_switches']['total'] == sum(t['id_switches']
                                                  for t in summary['per_track'])
    ident = summary['identity']
    assert ident['idtp'] + ident['idfn'] == 16
    assert ident['idtp'] + ident['idfp'] == match['pipeline_persons']
    assert ident['idtp'] <= match['matched_person_frames'] and 0.0 < ident['idf1'] <= 1.0
    assert sorted(t['gt_track_id'] for t in summary['per_track']) == [0, 1, 2, 3]
    assert summary['fps_source'] == 'json images[].fps'
    assert summary['detector_cache']['misses'] == 4
    for png in ('bonn_wrist.png', 'bonn_per_joint.png'):
        assert (out / png).stat().st_size > 1000


def test_bonn_cli_fails_clearly_without_the_data(tmp_path, capsys):
    missing = tmp_path / 'nowhere' / 'bonn.json'
    assert cli.main(['bonn', '--gt', str(missing), '--out', str(tmp_path / 'o')]) == 2
