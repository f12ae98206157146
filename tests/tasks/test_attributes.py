"""The attribute task's loss, plain and class-balanced, against what scikit-learn defines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, log_loss
from sklearn.utils.class_weight import compute_sample_weight

from facemtl.errors import ConfigError
from facemtl.tasks.kinds import AttributesTask


def _task(k: int = 1, **options) -> AttributesTask:
    return AttributesTask(name="attributes", label_key="attributes", out_dim=k, options=options,
                          columns=tuple(range(k)), names=tuple(f"a{i}" for i in range(k)))


def test_balanced_loss_is_sklearns_balanced_log_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 1, generator=g, dtype=torch.float64)
    target = (torch.rand(40, 1, generator=g) < 0.15).long()
    target[0, 0], target[1, 0] = 1, 0  # both classes present
    y, p = target[:, 0].numpy(), torch.sigmoid(logits[:, 0]).numpy()
    plain = _task().loss(logits, {"attributes": target})
    balanced = _task(balance=True).loss(logits, {"attributes": target})
    assert float(plain) == pytest.approx(log_loss(y, p), rel=1e-9)
    weights = compute_sample_weight("balanced", y)
    assert float(balanced) == pytest.approx(log_loss(y, p, sample_weight=weights), rel=1e-9)
    assert float(balanced) != pytest.approx(float(plain), rel=1e-3)


def test_balanced_loss_skips_unknown_entries_and_handles_one_class_columns():
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.3, -0.2], [-0.7, 0.9, 0.1], [0.2, -0.4, 1.1]], dtype=torch.float64)
    target = torch.tensor([[1, 0, -1], [0, 0, -1], [0, -1, -1], [-1, 0, -1]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.clamp(min=0).double(), reduction="none")
    col0 = (bce[0, 0] + (bce[1, 0] + bce[2, 0]) / 2) / 2  # one positive, two negatives, one unknown
    col1 = (bce[0, 1] + bce[1, 1] + bce[3, 1]) / 3  # negatives only: their plain mean
    loss = _task(3, balance=True).loss(logits, {"attributes": target})  # column 2 unknown: left out
    assert float(loss) == pytest.approx(float((col0 + col1) / 2), rel=1e-12)

    nothing = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    empty = _task(balance=True).loss(nothing, {"attributes": torch.full((2, 1), -1)})
    assert float(empty.detach()) == 0.0
    empty.backward()  # a graph, as for the plain loss
    assert torch.all(nothing.grad == 0)


def test_balanced_loss_has_correct_gradients():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    target = (torch.rand(12, 2, generator=g) < 0.3).long()
    target[0], target[1], target[2, 1] = 1, 0, -1
    task = _task(2, balance=True)
    assert torch.autograd.gradcheck(lambda x: task.loss(x, {"attributes": target}), (logits,))


def _fit_logistic(task: AttributesTask, xt: torch.Tensor, yt: torch.Tensor) -> np.ndarray:
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = task.loss(w[0] * xt + w[1], {"attributes": yt})
        loss.backward()
        return loss

    opt.step(closure)
    return (w[0] * xt[:, 0] + w[1] > 0).long().numpy()


def test_balance_finds_a_rare_class_that_the_plain_loss_gives_up():
    """Logistic regression on two overlapping 1-D classes, 5 % positives: the plain loss's boundary
    sits far into the positives (most of them called negative), the balanced loss's near the
    midpoint, as class_weight='balanced' puts it."""
    rng = np.random.default_rng(0)
    n = 4000
    y = (rng.random(n) < 0.05).astype(np.int64)
    x = rng.normal(0.0, 1.0, n) + 1.5 * y
    xt, yt = torch.tensor(x).view(-1, 1), torch.tensor(y).view(-1, 1)
    scores = {balance: balanced_accuracy_score(y, _fit_logistic(_task(balance=balance), xt, yt)) for balance in (False, True)}
    assert scores[False] < 0.6  # almost everything called negative
    assert scores[True] > 0.72  # near the Bayes-balanced boundary (x = 0.75): 0.77
    assert scores[True] > scores[False] + 0.1


def test_bad_balance_option_is_refused():
    with pytest.raises(ConfigError, match="balance"):
        _task(balance="yes")
