"""Landmark losses and the heatmap head: what the definitions say, checked numerically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.metrics.landmarks import nme
from facemtl.tasks.heatmap import HeatmapHead, soft_argmax
from facemtl.tasks.kinds import MIN_IOD, LandmarksTask, wing


def _task(**options) -> LandmarksTask:
    return LandmarksTask(name="landmarks", label_key="landmarks", out_dim=10, options=options)


def _data(n: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.4, 0.7], [0.6, 0.7]], dtype=torch.float64)
    target = base + (torch.rand(n, 5, 2, generator=g, dtype=torch.float64) - 0.5) * 0.05
    pred = target + torch.randn(n, 5, 2, generator=g, dtype=torch.float64) * 0.02
    return pred, target


def test_nme_loss_is_the_nme_metric():
    pred, target = _data()
    loss = _task().loss(pred.flatten(1), {"landmarks": target})
    # equal up to the 1e-3 smoothing of each distance at 0
    assert float(loss) == pytest.approx(float(nme(pred.numpy(), target.numpy()).mean()), rel=2e-3)


def test_missing_landmarks_are_ignored_and_small_iod_is_floored():
    pred, target = _data(4)
    target[1] = float("nan")
    t = _task()
    full = t.loss(pred.flatten(1), {"landmarks": target})
    keep = [0, 2, 3]
    part = t.loss(pred[keep].flatten(1), {"landmarks": target[keep]})
    assert torch.isclose(full, part)
    # a far profile: eyes 0.01 apart; the loss divides by MIN_IOD, not by 0.01
    target2 = target[keep].clone()
    target2[:, 1] = target2[:, 0] + torch.tensor([0.01, 0.0], dtype=torch.float64)
    d = (pred[keep] - target2).norm(dim=2).mean(1) / MIN_IOD
    assert float(t.loss(pred[keep].flatten(1), {"landmarks": target2})) == pytest.approx(float(d.mean()), rel=1e-3)


def test_wing_loss_matches_its_definition_and_is_continuous():
    w, eps = 0.5, 0.1
    x = torch.tensor([0.0, 0.05, 0.3, w - 1e-9, w, 0.9, -0.3], dtype=torch.float64)
    c = w - w * math.log(1 + w / eps)
    expect = [w * math.log(1 + abs(v) / eps) if abs(v) < w else abs(v) - c for v in x.tolist()]
    assert torch.allclose(wing(x, w, eps), torch.tensor(expect, dtype=torch.float64))
    assert float(wing(torch.tensor(w - 1e-9), w, eps)) == pytest.approx(float(wing(torch.tensor(w), w, eps)), abs=1e-7)
    # small errors get a larger gradient than L1 would give them (the point of the loss)
    v = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
    wing(v, w, eps).backward()
    assert float(v.grad) > 1.0


@pytest.mark.parametrize("kind", ["nme", "wing", "smooth_l1", "l2"])
def test_every_landmark_loss_has_correct_gradients(kind):
    pred, target = _data(3, seed=1)
    pred.requires_grad_(True)
    t = _task(loss=kind)
    assert torch.autograd.gradcheck(lambda p: t.loss(p.flatten(1), {"landmarks": target}), (pred,))
    assert float(t.loss(target.flatten(1), {"landmarks": target})) < 1e-2  # (nearly) 0 at the target


def test_bad_landmark_options_are_refused():
    with pytest.raises(UnknownNameError, match="nme"):
        _task(loss="l3")
    with pytest.raises(UnknownNameError, match="heatmap"):
        _task(head="mlp")
    with pytest.raises(ConfigError, match="feature maps"):
        _task(head="heatmap").build_head(64)
    with pytest.raises(ConfigError, match="heatmap_prior"):
        _task(heatmap_prior=-1)
    with pytest.raises(ConfigError, match="heatmap_sigma"):
        _task(heatmap_sigma=0)
    with pytest.raises(ConfigError, match="linear"):
        _task(heatmap_prior=1.0).build_head(64)


def test_soft_argmax_finds_a_peak_and_has_correct_gradients():
    h, w = 8, 12
    logits = torch.full((2, 5, h, w), -30.0, dtype=torch.float64)
    cells = [(1, 2), (7, 11), (0, 0), (4, 6), (3, 9)]  # (row, col)
    for k, (r, c) in enumerate(cells):
        logits[:, k, r, c] = 30.0
    out = soft_argmax(logits).view(2, 5, 2)
    expect = torch.tensor([[(c + 0.5) / w, (r + 0.5) / h] for r, c in cells], dtype=torch.float64)
    assert torch.allclose(out[0], expect, atol=1e-9)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(soft_argmax, (x,))


@pytest.mark.parametrize("stride", [4, 8])
def test_heatmap_head_starts_at_the_centre_and_learns_a_toy_mapping(stride):
    """A fixed bright spot in the stride-4 map must be found: the head learns where it is."""
    torch.manual_seed(0)
    head = HeatmapHead((8, 16, 32), points=1, width=16, stride=stride)
    n, s = 64, 64
    pos = torch.rand(n, 2) * 0.6 + 0.2
    ys, xs = torch.meshgrid((torch.arange(s // 4) + 0.5) / (s // 4), (torch.arange(s // 4) + 0.5) / (s // 4), indexing="ij")
    blob = torch.exp(-((xs - pos[:, 0, None, None]) ** 2 + (ys - pos[:, 1, None, None]) ** 2) / 0.01)  # (n, 16, 16)
    m4 = blob.unsqueeze(1).repeat(1, 8, 1, 1)
    maps = [m4, torch.nn.functional.avg_pool2d(m4, 2).repeat(1, 2, 1, 1), torch.nn.functional.avg_pool2d(m4, 4).repeat(1, 4, 1, 1)]
    feed = [maps[i] for i in head.used]
    assert torch.allclose(head(feed), torch.full((n, 2), 0.5))
    opt = torch.optim.Adam(head.parameters(), 1e-2)
    for _ in range(150):
        loss = (head(feed) - pos).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    err = (head(feed) - pos).norm(dim=1).mean().item()
    assert err < (0.03 if stride == 4 else 0.06), err


def test_small_backbone_uses_the_heatmap_head_unless_told():
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    info = DataInfo((), 0, ("landmarks",))
    for options, expect in (({}, True), ({"head": "linear"}, False)):
        tasks = build_tasks(["landmarks"], info, {"landmarks": options})
        model = build_model("small", tasks, input_size=48)
        assert (model.map_tasks == ("landmarks",)) is expect
        out = model(torch.rand(2, 3, 48, 48))["landmarks"]
        assert out.shape == (2, 10) and bool(((out >= -1) & (out <= 2)).all())
    tcdcn = build_model("tcdcn", build_tasks(["landmarks"], info, {}))
    assert tcdcn.map_tasks == ()  # no feature maps: the linear regressor of the paper
    assert np.isfinite(tcdcn(torch.rand(2, 3, 40, 40))["landmarks"].detach().numpy()).all()


def test_heatmap_width_option_sets_the_head_width():
    from facemtl.models import build_model
    from facemtl.tasks import DataInfo, build_tasks

    info = DataInfo((), 0, ("landmarks",))
    sizes = {}
    for width in (32, 128):
        model = build_model("small", build_tasks(["landmarks"], info, {"landmarks": {"heatmap_width": width}}), input_size=48)
        head = model.heads["landmarks"]
        assert all(conv.out_channels == width for conv in head.lateral)
        sizes[width] = sum(p.numel() for p in head.parameters())
        assert model(torch.rand(2, 3, 48, 48))["landmarks"].shape == (2, 10)
    assert sizes[128] > sizes[32]


def test_landmarks_collect_keeps_the_yaw_where_labelled():
    task = _task()
    lm = torch.rand(3, 5, 2)
    lm[1] = float("nan")
    out = torch.rand(3, 10)
    c = task.collect(out, {"landmarks": lm, "pose": torch.tensor([[10.0, 0, 0], [20.0, 0, 0], [-40.0, 0, 0]])})
    assert c["yaw"].tolist() == [10.0, -40.0] and c["pred"].shape == (2, 5, 2)
    assert np.isnan(task.collect(out, {"landmarks": lm})["yaw"]).all()


def test_heatmap_moments_of_a_gaussian_and_their_gradients():
    from facemtl.tasks.heatmap import heatmap_moments

    h, w, sigma = 16, 20, 1.3
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    logits = -((xs - 9.0) ** 2 + (ys - 7.5) ** 2) / (2 * sigma**2)  # peak well inside the grid
    mean, var = heatmap_moments(logits.view(1, 1, h, w))
    assert mean[0].tolist() == pytest.approx([9.0 / w, 7.5 / h], abs=1e-9)
    # a sampled Gaussian of sigma 1.3 cells: its variance is sigma^2 (to sampling error), in [0, 1] units
    assert var[0].tolist() == pytest.approx([sigma**2 / w**2, sigma**2 / h**2], rel=1e-3)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.cat(heatmap_moments(t), 1), (x,))


def test_heatmap_prior_adds_the_variance_penalty_in_training_only():
    torch.manual_seed(0)
    head = HeatmapHead((8, 16, 32), points=5, width=8, stride=4, prior_sigma=1.0).double()
    maps = [torch.randn(3, 8, 16, 16), torch.randn(3, 16, 8, 8), torch.randn(3, 32, 4, 4)]
    maps = [m.double() for m in maps]
    head.train()
    out = head(maps)
    assert out.shape == (3, 20)
    # flat maps at the start: variance (16^2 - 1) / 12 cells^2, the target 1 cell^2, in [-1, 1] units
    assert out[0, 10:].tolist() == pytest.approx([4 * (255 / 12 - 1) / 256] * 10)
    head.eval()
    assert head(maps).shape == (3, 10) and torch.allclose(head(maps), out[:, :10])
    _, target = _data(3)
    plain, prior = _task(), _task(heatmap_prior=2.0)
    coords = out[:, :10]
    expect = plain.loss(coords, {"landmarks": target}) + 2.0 * out[:, 10:].pow(2).mean()
    assert torch.isclose(prior.loss(out, {"landmarks": target}), expect)
    assert torch.isclose(prior.loss(coords, {"landmarks": target}), plain.loss(coords, {"landmarks": target}))  # eval
    x = out.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: prior.loss(t, {"landmarks": target}), (x,))
