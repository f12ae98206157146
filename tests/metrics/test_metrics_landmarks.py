"""NME, failure rate, CED curve and CED AUC: hand-computed cases and a numerical integration."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.metrics.landmarks import ced_auc, ced_curve, failure_rate, nme

# CelebA order: left eye, right eye, nose, left mouth, right mouth; eyes 10 px apart
TARGET = np.array([[[30.0, 40.0], [40.0, 40.0], [35.0, 48.0], [31.0, 55.0], [39.0, 55.0]]])


def test_nme_hand_computed_inter_ocular():
    # every point off by (3, 4): error 5 px per point, inter-ocular 10 px -> NME 0.5
    assert nme(TARGET + [3.0, 4.0], TARGET)[0] == pytest.approx(0.5)
    # only the nose off by 2 px: mean error 2/5 = 0.4 px -> NME 0.04
    pred = TARGET.copy()
    pred[0, 2, 0] += 2.0
    assert nme(pred, TARGET)[0] == pytest.approx(0.04)
    # (N, 10) interleaved x1, y1, ... gives the same
    assert nme(pred.reshape(1, 10), TARGET.reshape(1, 10))[0] == pytest.approx(0.04)
    # the normaliser comes from the target, not the prediction
    pred2 = TARGET.copy()
    pred2[0, 1] = [50.0, 40.0]  # right eye moved 10 px: mean error 2 px -> 0.2
    assert nme(pred2, TARGET)[0] == pytest.approx(0.2)


def test_nme_bbox_norm():
    # box 40 x 90: sqrt(3600) = 60; error 5 px per point -> 5 / 60
    boxes = np.array([[10.0, 20.0, 40.0, 90.0]])
    assert nme(TARGET + [3.0, 4.0], TARGET, norm="bbox", boxes=boxes)[0] == pytest.approx(5 / 60)
    with pytest.raises(ValueError, match="boxes"):
        nme(TARGET, TARGET, norm="bbox")


def test_nme_random_matches_direct_formula():
    rng = np.random.default_rng(0)
    tgt = rng.uniform(0, 100, (50, 5, 2))
    pred = tgt + rng.normal(0, 2, tgt.shape)
    want = np.array(
        [np.mean([np.hypot(*(pred[n, p] - tgt[n, p])) for p in range(5)]) / np.hypot(*(tgt[n, 0] - tgt[n, 1]))
         for n in range(50)]
    )
    np.testing.assert_allclose(nme(pred, tgt), want, rtol=1e-12)


def test_nme_errors():
    with pytest.raises(ValueError, match="N = 0"):
        nme(np.zeros((0, 5, 2)), np.zeros((0, 5, 2)))
    with pytest.raises(ValueError, match="Invalid norm 'pupil'"):
        nme(TARGET, TARGET, norm="pupil")
    same_eyes = TARGET.copy()
    same_eyes[0, 1] = same_eyes[0, 0]
    with pytest.raises(ValueError, match="<= 0"):
        nme(TARGET, same_eyes)
    with pytest.raises(ValueError, match="shape"):
        nme(np.zeros((2, 4, 2)), np.zeros((2, 4, 2)))


def test_failure_rate_is_strict():
    # 0.10 exactly is not a failure; 0.1001 and 0.3 are: 2 of 4
    assert failure_rate(np.array([0.05, 0.10, 0.1001, 0.3])) == 0.5
    assert failure_rate(np.array([0.05, 0.10]), threshold=0.08) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        failure_rate(np.array([]))
    with pytest.raises(ValueError, match="finite"):
        failure_rate(np.array([np.nan]))


def test_ced_curve_hand_computed():
    thr, frac = ced_curve(np.array([0.0, 0.05, 0.2]), max_threshold=0.1, steps=11)
    np.testing.assert_allclose(thr, np.linspace(0, 0.1, 11))
    # t = 0: one error (0.0) <= 0; from t = 0.05 on, two; never the 0.2 one
    np.testing.assert_allclose(frac, [1 / 3] * 5 + [2 / 3] * 6)


def test_ced_auc_hand_computed():
    # errors 0, 0.05, 0.2 with T = 0.1: contributions (T - e)/T clipped = 1, 0.5, 0 -> mean 0.5
    assert ced_auc(np.array([0.0, 0.05, 0.2]), max_threshold=0.1) == pytest.approx(0.5)
    assert ced_auc(np.zeros(4)) == 1.0
    assert ced_auc(np.full(4, 0.5)) == 0.0


def test_ced_auc_matches_numerical_integration():
    rng = np.random.default_rng(0)
    e = rng.gamma(2.0, 0.03, 500)
    thr, frac = ced_curve(e, max_threshold=0.1, steps=20001)
    numeric = np.sum(np.diff(thr) * (frac[1:] + frac[:-1]) / 2) / 0.1
    assert ced_auc(e, 0.1) == pytest.approx(numeric, abs=1e-4)
