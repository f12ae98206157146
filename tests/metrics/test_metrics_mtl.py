"""Delta-m% (worked example), Pearson / cosine matrices (numpy, scipy), strongest pairs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from facemtl.metrics.mtl import cosine_matrix, delta_m, pearson, pearson_matrix, strongest_pairs


def test_delta_m_worked_example():
    # accuracy (higher better): single 0.90, mtl 0.88 -> (-1)^1 * (0.88 - 0.90) / 0.90 = +0.022222
    # NME (lower better):       single 0.05, mtl 0.045 -> (-1)^0 * (0.045 - 0.05) / 0.05 = -0.1
    # Delta-m = 100 * (0.022222 - 0.1) / 2 = -3.8889 %  (negative: MTL better on average)
    d = delta_m({"acc": 0.88, "nme": 0.045}, {"acc": 0.90, "nme": 0.05}, {"acc": True, "nme": False})
    assert d == pytest.approx(100 * ((0.02 / 0.90) - 0.1) / 2)
    assert d == pytest.approx(-3.8889, abs=1e-4)


def test_delta_m_sign_lower_is_better():
    # FAMO convention: a model worse on a higher-is-better metric gets a positive Delta-m
    assert delta_m({"f1": 0.6}, {"f1": 0.8}, {"f1": True}) == pytest.approx(25.0)  # (0.8-0.6)/0.8
    assert delta_m({"err": 0.6}, {"err": 0.8}, {"err": False}) == pytest.approx(-25.0)
    assert delta_m({"a": 1.0}, {"a": 1.0}, {"a": True}) == 0.0


def test_delta_m_errors():
    with pytest.raises(ValueError, match="only in mtl"):
        delta_m({"a": 1, "b": 1}, {"a": 1}, {"a": True, "b": True})
    with pytest.raises(ValueError, match="non-zero"):
        delta_m({"a": 1}, {"a": 0}, {"a": True})
    with pytest.raises(ValueError, match="at least one"):
        delta_m({}, {}, {})


def test_pearson_against_numpy_and_scipy():
    rng = np.random.default_rng(0)
    vecs = {f"head{i}": rng.normal(size=(10, 10)) for i in range(5)}
    vecs["head5"] = 2 * vecs["head0"] + 0.5 * rng.normal(size=(10, 10))
    m = pearson_matrix(vecs)
    want = np.corrcoef(np.stack([v.ravel() for v in vecs.values()]))
    np.testing.assert_allclose(m.to_numpy(), want, atol=1e-12)
    assert list(m.index) == list(vecs) == list(m.columns)
    r = pearson(vecs["head0"], vecs["head5"])
    assert r == pytest.approx(pearsonr(vecs["head0"].ravel(), vecs["head5"].ravel())[0], abs=1e-12)


def test_pearson_constant_vector_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(pearsonr([0.1] * 5, [1, 2, 3, 4, 5])[0])  # scipy's behaviour we follow
    assert np.isnan(pearson(np.full(5, 0.1), np.arange(5)))
    m = pearson_matrix({"a": np.full(5, 0.1), "b": np.arange(5.0)})
    assert np.isnan(m.loc["a", "b"]) and m.loc["b", "b"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="length"):
        pearson(np.arange(3), np.arange(4))
    with pytest.raises(ValueError, match="at least 2"):
        pearson(np.arange(1), np.arange(1))
    with pytest.raises(ValueError, match="one length"):
        pearson_matrix({"a": np.arange(3), "b": np.arange(4)})


def test_cosine_matrix_hand_computed():
    # (1,0)·(1,1) / (1 * sqrt 2) = 0.7071; (1,0)·(0,-2) = 0; (1,1)·(0,-2) / (sqrt2 * 2) = -0.7071
    m = cosine_matrix({"a": np.array([1.0, 0]), "b": np.array([1.0, 1]), "c": np.array([0.0, -2])})
    want = [[1, 2**-0.5, 0], [2**-0.5, 1, -(2**-0.5)], [0, -(2**-0.5), 1]]
    np.testing.assert_allclose(m.to_numpy(), want, atol=1e-12)
    assert np.isnan(cosine_matrix({"z": np.zeros(3), "o": np.ones(3)}).loc["z", "o"])


def test_strongest_pairs():
    names = ["a", "b", "c", "d"]
    vals = np.array(
        [[1.0, 0.1, -0.9, 0.5], [0.1, 1.0, 0.3, np.nan], [-0.9, 0.3, 1.0, -0.2], [0.5, np.nan, -0.2, 1.0]]
    )
    df = pd.DataFrame(vals, index=names, columns=names)
    top = strongest_pairs(df, k=3)
    assert list(zip(top["a"], top["b"])) == [("a", "c"), ("a", "d"), ("b", "c")]
    np.testing.assert_allclose(top["value"], [-0.9, 0.5, 0.3])
    all_pairs = strongest_pairs(df, k=100)  # 6 pairs minus the NaN one, no diagonal, no duplicates
    assert len(all_pairs) == 5
    assert not (all_pairs["a"] == all_pairs["b"]).any()
    with pytest.raises(ValueError, match="square"):
        strongest_pairs(df.iloc[:3])
