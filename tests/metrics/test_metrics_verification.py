"""Pairs, ROC (against sklearn), EER and TAR@FAR (hand-computed), verification from embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from facemtl.metrics import verification as V
from facemtl.metrics.verification import eer, make_pairs, roc_curve, tar_at_far, verification_from_embeddings


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(seed, drop):
    rng = np.random.default_rng(seed)
    y = rng.random(400) < 0.4
    s = np.round(rng.normal(size=400) + y, 1)  # ties
    got = roc_curve(s, y, drop_intermediate=drop)
    want = sk_roc_curve(y, s, drop_intermediate=drop)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w)


def test_eer_hand_computed():
    # ROC (0,0) -> (0.5,1) -> (1,1): on the first segment tpr = 2 fpr; FPR = 1 - TPR at fpr = 1/3
    assert eer(np.array([0, 0.5, 1]), np.array([0, 1, 1])) == pytest.approx(1 / 3)
    # perfect separation: EER 0; chance diagonal: EER 0.5
    assert eer(np.array([0, 0, 1]), np.array([0, 1, 1])) == 0.0
    assert eer(np.array([0, 1]), np.array([0, 1])) == pytest.approx(0.5)


def test_eer_equals_crossing_on_random_roc():
    rng = np.random.default_rng(3)
    y = rng.random(2000) < 0.5
    fpr, tpr, _ = roc_curve(rng.normal(size=2000) + 1.5 * y, y)
    e = eer(fpr, tpr)
    # on the interpolated curve the FNR at FPR = e equals e
    assert 1 - np.interp(e, fpr, tpr) == pytest.approx(e, abs=1e-3)


def test_tar_at_far_hand_computed():
    # vertical segment at fpr 0: tar(0) takes the largest TPR there (0.4)
    fpr, tpr = np.array([0, 0, 0.5, 1]), np.array([0, 0.4, 0.8, 1])
    assert tar_at_far(fpr, tpr, 0.0) == pytest.approx(0.4)
    assert tar_at_far(fpr, tpr, 0.25) == pytest.approx(0.6)  # halfway from 0.4 to 0.8
    assert tar_at_far(fpr, tpr, 0.75) == pytest.approx(0.9)
    assert tar_at_far(fpr, tpr, 1.0) == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tar_at_far(fpr, tpr, 1.5)
    with pytest.raises(ValueError, match="non-decreasing"):
        tar_at_far(fpr[::-1], tpr, 0.1)


def _polyline_tar(fpr: np.ndarray, tpr: np.ndarray, far: float) -> float:
    """Brute force: the largest TPR of any ROC segment that contains FPR = far."""
    best = 0.0
    for k in range(len(fpr) - 1):
        x0, x1, y0, y1 = fpr[k], fpr[k + 1], tpr[k], tpr[k + 1]
        if x0 <= far <= x1:
            best = max(best, y1 if x1 == x0 else y0 + (far - x0) / (x1 - x0) * (y1 - y0))
    return best


def test_tar_at_far_matches_brute_force_on_random_roc():
    rng = np.random.default_rng(4)
    y = rng.random(3000) < 0.5
    fpr, tpr, _ = roc_curve(np.round(rng.normal(size=3000) + y, 2), y)  # ties: diagonal segments
    for far in (0.0, 1e-3, 1e-2, 0.1, 0.37, 1.0):
        assert tar_at_far(fpr, tpr, far) == pytest.approx(_polyline_tar(fpr, tpr, far), abs=1e-12)


def test_make_pairs_balanced_valid_deterministic():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, 300)
    pairs, gen = make_pairs(labels, max_pairs=1000, seed=5)
    assert pairs.shape == (1000, 2) and gen.sum() == 500
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], gen)
    again, _ = make_pairs(labels, max_pairs=1000, seed=5)
    np.testing.assert_array_equal(pairs, again)
    other, _ = make_pairs(labels, max_pairs=1000, seed=6)
    assert not np.array_equal(pairs, other)


def test_make_pairs_scarce_genuine_and_errors():
    # identities a a b c d: one genuine pair only -> one of each
    pairs, gen = make_pairs(np.array([0, 0, 1, 2, 3]), max_pairs=100, seed=0)
    assert gen.tolist() == [True, False]
    assert pairs[0].tolist() == [0, 1]
    # identities a a a a b: 6 genuine but only 4 impostor pairs -> 4 of each
    pairs, gen = make_pairs(np.array([0, 0, 0, 0, 1]), max_pairs=100, seed=0)
    assert gen.sum() == 4 and len(gen) == 8 and (pairs[~gen, 1] == 4).all()
    with pytest.raises(ValueError, match="genuine"):
        make_pairs(np.arange(10), 100, 0)  # all singletons
    with pytest.raises(ValueError, match="impostor"):
        make_pairs(np.zeros(10), 100, 0)  # one identity
    with pytest.raises(ValueError, match="max_pairs"):
        make_pairs(np.array([0, 0, 1]), 1, 0)


def test_make_pairs_sampling_path(monkeypatch):
    # force the rejection-sampling branch (used for large sets) on a small set
    monkeypatch.setattr(V, "_ENUMERATE_LIMIT", 10)
    labels = np.random.default_rng(1).integers(0, 8, 200)
    pairs, gen = make_pairs(labels, max_pairs=600, seed=0)
    assert gen.sum() == 300 and len(np.unique(pairs, axis=0)) == 600
    assert (pairs[:, 0] < pairs[:, 1]).all()
    np.testing.assert_array_equal(labels[pairs[:, 0]] == labels[pairs[:, 1]], gen)


def test_verification_from_embeddings():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(40), 6)
    centres = rng.normal(size=(40, 16))
    emb = centres[ids] + 0.8 * rng.normal(size=(240, 16))
    v = verification_from_embeddings(emb, ids, max_pairs=2000, seed=0)
    assert set(v) == {"auc", "eer", "tar_at_far", "roc"}
    assert set(v["tar_at_far"]) == {1e-3, 1e-2}
    # recompute the scores independently and compare with sklearn
    pairs, gen = make_pairs(ids, 2000, 0)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = (unit[pairs[:, 0]] * unit[pairs[:, 1]]).sum(1)
    assert v["auc"] == pytest.approx(roc_auc_score(gen, scores), abs=1e-12)
    fpr, _tpr, _ = v["roc"]
    np.testing.assert_allclose(fpr, sk_roc_curve(gen, scores)[0])
    assert 0.0 <= v["eer"] < 0.5 and v["auc"] > 0.8
    assert v["tar_at_far"][1e-3] <= v["tar_at_far"][1e-2]
    with pytest.raises(ValueError, match="all zeros"):
        verification_from_embeddings(np.zeros((4, 3)), np.array([0, 0, 1, 1]))
