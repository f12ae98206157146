"""``facemtl.reports.correlate``: head-weight Pearson against numpy.corrcoef of the reduced vectors,
label correlations against scipy, gradient cosines against a hand-made backward pass."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from facemtl.engine.checkpoint import load_model
from facemtl.errors import ConfigError
from facemtl.reports.correlate import correlate, gradient_cosines, head_vectors, label_correlation, label_frame

from ._fixtures import check_png


@pytest.fixture(scope="module")
def report(run, base):
    return correlate(run, out=base / "correlate", batches=2, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def loaded(run):
    return load_model(run)


def test_files(report):
    out = report.out_dir
    for name in ("head_pearson", "label_correlation", "grad_cosine", "grad_conflict"):
        assert (out / f"{name}.csv").exists()
        check_png(out / f"{name}.png")
    pairs = pd.read_csv(out / "strongest_pairs.csv")
    assert set(pairs["matrix"]) == {"head_pearson", "label_correlation", "grad_cosine"}
    assert (out / "summary.md").exists() and (out / "correlate.json").exists()


def test_head_pearson_equals_corrcoef_of_reduced_heads(report, loaded):
    model, tasks, _, _ = loaded
    mat = pd.read_csv(report.out_dir / "head_pearson.csv", index_col=0)
    names = list(mat.index)
    # reduce="norm": per shared feature, the L2 norm of the head's weights over its outputs
    vecs = [model.last_linear(n).weight.detach().double().norm(dim=0).numpy() for n in names]
    np.testing.assert_allclose(mat.to_numpy(), np.corrcoef(np.stack(vecs)), atol=1e-9)
    assert "identity" in names and len(names) == len(tasks)


def test_head_rows_and_mean(loaded):
    model, tasks, _, _ = loaded
    rows, skipped = head_vectors(model, tasks, "rows")
    assert "landmarks[left_eye.x]" in rows and "smile" in rows and "identity" in skipped
    w = model.last_linear("landmarks").weight.detach().double().numpy()
    np.testing.assert_array_equal(rows["landmarks[left_eye.x]"], w[0])
    from facemtl.metrics import pearson_matrix, strongest_pairs
    from facemtl.reports.correlate import cross_task

    pairs = strongest_pairs(cross_task(pearson_matrix(rows)), 5)
    assert all(a.split("[")[0] != b.split("[")[0] for a, b in zip(pairs["a"], pairs["b"]))
    mean, _ = head_vectors(model, tasks, "mean")
    np.testing.assert_allclose(mean["landmarks"], w.mean(0))
    with pytest.raises(ConfigError, match="Invalid --reduce"):
        head_vectors(model, tasks, "max")


def test_label_correlation_against_scipy(cache, loaded):
    from facemtl.data.cache import FaceCache

    _, tasks, _, _ = loaded
    frame = label_frame(FaceCache(cache), "train", tasks)
    assert {"smile", "pose:yaw", "expression:Happy", "landmarks:mouth_width/iod"} <= set(frame.columns)
    corr, dropped = label_correlation(frame)
    for a, b in (("smile", "expression:Happy"), ("pose:yaw", "landmarks:eye_tilt"), ("Male", "smile")):
        both = frame[[a, b]].dropna()
        assert corr.loc[a, b] == pytest.approx(stats.pearsonr(both[a], both[b])[0], abs=1e-9)
    assert all(frame[c].nunique() <= 1 for c in dropped)


def test_gradient_cosine_by_hand(loaded, cache):
    """One batch, shared-parameter gradients taken with plain autograd: the same cosines."""
    from facemtl.data.cache import FaceCache
    from facemtl.data.loader import CacheLoader
    from facemtl.engine.steps import input_plan, make_inputs, task_losses
    from facemtl.reports._data import LabelAdapter

    model, tasks, _, _info = loaded
    c = FaceCache(cache)
    cos, conflict, norms, used = gradient_cosines(model, tasks, c, "train", torch.device("cpu"),
                                                  LabelAdapter(None), batches=1, batch_size=32)
    assert used == 1
    plan = input_plan(model, c)
    batch = next(iter(CacheLoader(c, "train", [s for s, _ in plan], 32, shuffle=True, seed=0)))
    model.eval()
    losses = task_losses(tasks, model(*make_inputs(batch, plan, False)), batch, model.criteria)
    shared = model.shared_parameters()
    g = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
        g[name] = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(grads, shared)]).double()
    a, b = "landmarks", "smile"
    expected = float(g[a] @ g[b] / (g[a].norm() * g[b].norm()))
    assert cos.loc[a, b] == pytest.approx(expected, abs=1e-5)
    assert norms[a] == pytest.approx(float(g[a].norm()), rel=1e-4)
    assert np.allclose(np.diag(cos.to_numpy()), 1.0)
    assert conflict.loc[a, b] == float(expected < 0)


def test_single_task_model_is_refused(tiny_ablation, tmp_path):
    with pytest.raises(ConfigError, match="multi-task"):
        correlate(tiny_ablation.out_dir / "runs" / "landmarks__s0", out=tmp_path / "c")
    assert not (tmp_path / "c").exists()
