"""Binary and multi-class metrics against sklearn.metrics and hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from facemtl.metrics.classification import attribute_table, binary_metrics, multiclass_metrics


def _sk_column(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on single-class columns
        return {
            "accuracy": skm.accuracy_score(t, p),
            "balanced_accuracy": skm.balanced_accuracy_score(t, p),
            "f1": skm.f1_score(t, p, zero_division=0),
            "precision": skm.precision_score(t, p, zero_division=0),
            "recall": skm.recall_score(t, p, zero_division=0),
        }


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, k = 200, 12
    target = (rng.random((n, k)) < rng.uniform(0.05, 0.9, k)).astype(np.int64)
    target[rng.random((n, k)) < 0.2] = -1  # unknown entries
    prob = np.clip(0.35 * target + rng.random((n, k)) * 0.8, 0, 1)
    # degenerate columns: all negative, all positive, all unknown, nothing predicted positive
    target[:, 0] = np.where(target[:, 0] >= 0, 0, -1)
    target[:, 1] = np.where(target[:, 1] >= 0, 1, -1)
    target[:, 2] = -1
    prob[:, 3] = 0.1
    prob[:, 4] = 0.5  # exactly on the threshold: predicted positive (prob >= threshold)
    target[:, 6] = np.where(target[:, 6] >= 0, 0, -1)  # no positive, none predicted: F1 = 0
    prob[:, 6] = 0.2
    return prob, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    prob, target = _random_case(seed)
    m = binary_metrics(prob, target)
    for k in range(target.shape[1]):
        known = target[:, k] >= 0
        if not known.any():
            continue
        t, p = target[known, k], (prob[known, k] >= 0.5).astype(int)
        for key, want in _sk_column(p, t).items():
            assert m[key][k] == pytest.approx(want, abs=1e-12), (key, k)
        assert m["support"][k] == known.sum()
        assert m["positives"][k] == t.sum()


def test_binary_metrics_degenerate_columns():
    prob, target = _random_case(0)
    m = binary_metrics(prob, target)
    # all-unknown column: NaN rates, zero counts
    assert all(np.isnan(m[k][2]) for k in ("accuracy", "f1", "balanced_accuracy", "majority_accuracy"))
    assert m["support"][2] == 0
    # all-negative column: recall and F1 are 0 by zero_division=0; balanced accuracy = TNR
    assert m["recall"][0] == 0 and m["f1"][0] == 0.0
    assert m["balanced_accuracy"][0] == pytest.approx(m["accuracy"][0])
    assert m["majority_accuracy"][0] == 1.0 and m["majority_balanced_accuracy"][0] == 1.0
    # all-positive column: majority baseline is perfect
    assert m["majority_accuracy"][1] == 1.0
    # no positive and none predicted: precision, recall, F1 all 0 (zero_division=0), accuracy 1
    assert (m["f1"][6], m["precision"][6], m["recall"][6], m["accuracy"][6]) == (0.0, 0.0, 0.0, 1.0)
    # nothing predicted positive: precision 0
    assert m["precision"][3] == 0.0
    # both classes present elsewhere: majority balanced accuracy 0.5
    assert m["majority_balanced_accuracy"][5] == 0.5


def test_binary_metrics_hand_computed():
    # one column, 6 known entries + 1 unknown
    # target  1 1 1 0 0 0 -1
    # prob   .9 .6 .2 .7 .1 .3 .9  -> pred 1 1 0 1 0 0 (unknown ignored)
    # TP=2 FN=1 FP=1 TN=2: acc 4/6, precision 2/3, recall 2/3, F1 = 4/(4+1+1) = 2/3,
    # balanced (2/3 + 2/3)/2 = 2/3, majority 3/6 = 0.5
    target = np.array([1, 1, 1, 0, 0, 0, -1])
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.9])
    m = binary_metrics(prob, target)
    assert m["accuracy"][0] == pytest.approx(4 / 6)
    for key in ("precision", "recall", "f1", "balanced_accuracy"):
        assert m[key][0] == pytest.approx(2 / 3)
    assert m["majority_accuracy"][0] == 0.5
    assert m["support"][0] == 6
    # threshold 0.65: pred 1 0 0 1 0 0 -> TP=1 FP=1 FN=2 TN=2, F1 = 2/(2+1+2) = 0.4
    assert binary_metrics(prob, target, threshold=0.65)["f1"][0] == pytest.approx(0.4)


def test_attribute_table_has_mean_row():
    prob, target = _random_case(1)
    names = [f"attr{i}" for i in range(target.shape[1])]
    df = attribute_table(names, prob, target)
    assert list(df.index) == [*names, "mean"]
    m = binary_metrics(prob, target)
    valid = m["support"] > 0
    assert df.loc["mean", "accuracy"] == pytest.approx(m["accuracy"][valid].mean())
    assert df.loc["mean", "f1"] == pytest.approx(np.nanmean(m["f1"]))
    assert np.isnan(df.loc["attr2", "accuracy"])
    with pytest.raises(ValueError, match="names"):
        attribute_table(names[:-1], prob, target)


def test_binary_metrics_errors():
    with pytest.raises(ValueError, match="N = 0"):
        binary_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="shapes differ"):
        binary_metrics(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="1, 0 or -1"):
        binary_metrics(np.zeros(3), np.array([0, 2, 1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = 7
    target = rng.integers(0, c - 1, 300)  # class 6 never occurs in the targets
    pred = np.where(rng.random(300) < 0.6, target, rng.integers(0, c, 300))
    target_u = target.copy()
    target_u[:20] = -1
    m = multiclass_metrics(pred, target_u, c)
    t, p = target[20:], pred[20:]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
    np.testing.assert_array_equal(m["confusion"], skm.confusion_matrix(t, p, labels=range(c)))
    recall = skm.recall_score(t, p, labels=range(c), average=None, zero_division=0)
    np.testing.assert_allclose(m["per_class_recall"][:6], recall[:6])
    assert np.isnan(m["per_class_recall"][6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["macro_recall"] == pytest.approx(skm.balanced_accuracy_score(t, p))
    # scores are arg-maxed
    scores = np.eye(c)[pred] + 0.01
    assert multiclass_metrics(scores, target_u, c)["accuracy"] == m["accuracy"]


def test_multiclass_hand_computed_and_errors():
    # true 0 0 1 2, pred 0 1 1 1: confusion [[1,1,0],[0,1,0],[0,1,0]], recall 1/2, 1, 0
    m = multiclass_metrics(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 2]), 3)
    np.testing.assert_array_equal(m["confusion"], [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(m["per_class_recall"], [0.5, 1.0, 0.0])
    assert m["macro_recall"] == pytest.approx(0.5) and m["accuracy"] == 0.5
    with pytest.raises(ValueError, match="no|none"):
        multiclass_metrics(np.array([0]), np.array([-1]), 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        multiclass_metrics(np.array([3]), np.array([0]), 3)
