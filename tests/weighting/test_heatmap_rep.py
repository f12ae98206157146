"""Every strategy takes a step on a model whose landmark head reads feature maps (rep and params mode)."""

from __future__ import annotations

import math

import pytest
import torch

from facemtl.models import build_model
from facemtl.tasks import DataInfo, build_tasks
from facemtl.weighting import WEIGHTINGS, build_weighting
from facemtl.weighting.base import StepContext

OPTIONS = {"fixed": {"weights": {"landmarks": 2.0, "smile": 0.5}}, "tcdcn": {"main": "landmarks", "k": 2}}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_strategy_steps_with_feature_map_heads(name):
    torch.manual_seed(0)
    info = DataInfo(("Smiling",), 0, ("landmarks", "attributes"))
    tasks = build_tasks(["landmarks", "smile"], info, {})
    model = build_model("small", tasks, input_size=32, width=8)
    assert model.map_tasks == ("landmarks",)
    strategy = build_weighting(name, ["landmarks", "smile"], **OPTIONS.get(name, {}))
    x = torch.rand(8, 3, 32, 32)
    batch = {"landmarks": torch.rand(8, 5, 2) * 0.5 + 0.25, "attributes": torch.randint(0, 2, (8, 1), dtype=torch.int8)}
    modes = ["none"] if strategy.needs == "losses" else [m for m in ("rep", "params") if m not in strategy.refused_modes]
    for mode in modes:
        model.zero_grad(set_to_none=True)
        feats = model.forward_features(x)
        ctx = StepContext.build(feats, model.shared_parameters(), mode)
        out = model.forward_heads(ctx.head_inputs)
        losses = {t.name: t.loss(out[t.name], batch) for t in tasks}
        weights = strategy.backward(losses, ctx)
        assert all(math.isfinite(float(v)) for v in weights.values()), (mode, weights)
        trunk = [p.grad for p in model.trunk.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in trunk), mode  # the maps carry gradient back
        assert model.heads["landmarks"].lateral[0].weight.grad is not None
