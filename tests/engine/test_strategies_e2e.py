"""Every weighting strategy through the real engine on SynthFaces: finite losses, learning, exact resume."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from facemtl.engine.trainer import train
from facemtl.weighting import WEIGHTINGS

from .test_train import StopAt, quick

TASKS = ["landmarks", "smile", "pose"]
OPTIONS = {"fixed": {"weights": {"landmarks": 2.0, "smile": 0.5, "pose": 1.0}}, "tcdcn": {"main": "landmarks", "k": 2}}


# The landmark head is the linear one here: every task then reads the one shared vector, the
# representation the strategies' papers define (with the heatmap head, landmarks read the feature
# maps and MGDA's min-norm weights starve the other tasks within these 30 steps; docs/weighting.md).
# The heatmap head's maps in "rep" mode go through every strategy in tests/weighting/test_heatmap_rep.py.
def _over(name: str) -> dict:
    return {"tasks.names": TASKS, "model.input_size": 56, "train.epochs": 3, "train.max_steps_per_epoch": 10,
            "train.lr": 0.003, "weighting.name": name, "weighting.options": OPTIONS.get(name, {}),
            "tasks.options": {"landmarks": {"head": "linear"}}}


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_strategy_learns_and_resumes_exactly(name, synth_cache, tmp_path):
    full = train(quick("quick", synth_cache, tmp_path / "full", **_over(name)))
    hist = pd.DataFrame(full.history)
    assert all(math.isfinite(v) for v in hist["train_loss"]), hist["train_loss"].tolist()
    for t in TASKS:  # every task learns under the strategy, not only the summed loss
        assert hist[f"train_loss/{t}"].iloc[-1] < hist[f"train_loss/{t}"].iloc[0], (t, hist[f"train_loss/{t}"].tolist())

    cfg = quick("quick", synth_cache, tmp_path / "cut", **_over(name))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=StopAt(epoch=1, step=3))
    resumed = train(cfg, resume=True)
    # the epoch cut in two logs the same means as the uninterrupted one (the strategy saw them too)
    assert np.allclose(hist["train_loss"], pd.DataFrame(resumed.history)["train_loss"], rtol=1e-6)
    assert full.history[-1]["val_loss"] == pytest.approx(resumed.history[-1]["val_loss"], rel=1e-6)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6), k
    wa, wb = pd.read_csv(tmp_path / "full" / "weights.csv"), pd.read_csv(tmp_path / "cut" / "weights.csv")
    cols = [c for c in wa.columns if c.startswith("weight/")]
    assert len(wa) == len(wb) and np.allclose(wa[cols].values, wb[cols].values)
