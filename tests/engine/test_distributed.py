"""Distributed training with 2 CPU processes over gloo: ranks stay identical, rank 0 writes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import Callbacks, train


class SaveState(Callbacks):
    def __init__(self, path):
        self.path = path

    def on_train_end(self, *, model, strategy):
        torch.save({"model": model.state_dict(), "strategy": strategy.state_dict()}, self.path)


def _worker(rank, world, port, cache, out, weighting, result_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = apply_overrides(load_recipe("quick"), {
        "data.path": cache, "out": out, "train.device": "cpu", "train.batch_size": 16, "train.epochs": 2,
        "train.max_steps_per_epoch": 6, "model.input_size": 56, "tasks.names": ["landmarks", "smile", "pose"],
        "weighting.name": weighting, "weighting.options": {},
    })
    res = train(cfg, callbacks=SaveState(os.path.join(result_dir, f"rank{rank}.pt")))
    torch.save({"history": res.history}, os.path.join(result_dir, f"hist{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("weighting", ["ew", "pcgrad"])
def test_two_gloo_ranks_stay_identical(synth_cache, tmp_path, weighting):
    out, res = tmp_path / "run", tmp_path / "res"
    res.mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), str(synth_cache), str(out), weighting, str(res)), nprocs=2, join=True, start_method="spawn")
    a, b = torch.load(res / "rank0.pt", weights_only=False), torch.load(res / "rank1.pt", weights_only=False)
    for k, v in a["model"].items():
        if "running_" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per rank, as in DDP without SyncBN
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k
    for k, v in a["strategy"].items():
        if isinstance(v, torch.Tensor):
            assert torch.allclose(v.float(), b["strategy"][k].float()), k
    # only rank 0 writes the run folder
    assert (out / "last.pt").exists() and (out / "metrics.csv").exists()
    hist = torch.load(res / "hist0.pt", weights_only=False)["history"]
    assert len(hist) == 2 and hist[-1]["train_loss"] < hist[0]["train_loss"]
