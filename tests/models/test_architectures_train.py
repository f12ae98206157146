"""The architectures in the training engine: learning on SynthFaces, exact resume, two gloo ranks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import train
from facemtl.models import ARCHITECTURES


def tiny(cache, out, arch, **over):
    base = {"data.path": str(cache), "out": str(out), "train.device": "cpu", "train.batch_size": 16, "train.epochs": 2,
            "train.max_steps_per_epoch": 2, "train.val_batches": 1, "augment.preset": "none", "model.input_size": 56,
            "model.options": {"width": 8}, "tasks.names": ["landmarks", "pose"], "model.architecture": arch,
            "train.schedule": "constant"}  # the half run of the resume test must see the same learning rates
    base.update(over)
    return apply_overrides(load_recipe("quick"), base)


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture_learns_on_synthfaces(arch_cache, tmp_path, arch):
    """Six short epochs (132 steps, 8-15 s each on one CPU thread): the landmarks beat the mean face
    and the regressed yaw the mean yaw on the val split. (Expression needs longer here, see
    tests/engine/test_train.py.) Pose is judged by its yaw error, not by its five-class accuracy:
    on 53 val faces one face is 1.9 points, and with 4 threads or torch 2.11 on a GPU machine the
    accuracy of hps after four epochs and of ple after six fell one face short of the threshold,
    while after six epochs every architecture's yaw error was 11-16 degrees (seeds 0-1, 1 or 4
    threads) against 19.7 for the mean yaw and a threshold of 16.7."""
    from tests.engine.test_train import beats, chance

    cfg = tiny(arch_cache, tmp_path / arch, arch, **{"train.max_steps_per_epoch": 0, "train.batch_size": 32, "train.epochs": 6,
                                                      "train.lr": 0.003, "train.schedule": "cosine", "train.val_batches": 0,
                                                      "model.options": {"width": 16}})
    res = train(cfg)
    assert beats(res.val_metrics, chance(arch_cache), "landmarks", "yaw"), res.val_metrics


@pytest.mark.parametrize("arch", ["ltb", "mmoe"])
def test_resume_continues_exactly(arch_cache, tmp_path, arch):
    """LTB draws Gumbel noise every step: resuming restores the generator, so the runs agree."""
    whole = train(tiny(arch_cache, tmp_path / "whole", arch, **{"weighting.name": "pcgrad"}))
    half = tiny(arch_cache, tmp_path / "split", arch, **{"weighting.name": "pcgrad", "train.epochs": 1})
    train(half)
    resumed = train(tiny(arch_cache, tmp_path / "split", arch, **{"weighting.name": "pcgrad"}), resume=True)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=False)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    assert whole.history[-1]["train_loss"] == pytest.approx(resumed.history[-1]["train_loss"], rel=1e-6)


def test_resume_refuses_another_architecture(arch_cache, tmp_path):
    from facemtl.errors import CheckpointError

    train(tiny(arch_cache, tmp_path / "r", "mmoe", **{"train.epochs": 1}))
    with pytest.raises(CheckpointError):
        train(tiny(arch_cache, tmp_path / "r", "cgc"), resume=True)


def test_hps_digest_is_unchanged_by_the_setting():
    """Runs from before ``model.architecture`` existed resume: the default adds nothing to the digest."""
    cfg = load_recipe("quick")
    d = cfg.to_dict()
    del d["model"]["architecture"], d["model"]["architecture_options"]
    from facemtl.engine.config import RunConfig

    assert RunConfig.from_dict(d).digest() == cfg.digest()
    assert apply_overrides(cfg, {"model.architecture": "mtan"}).digest() != cfg.digest()


def _worker(rank, world, port, cache, out, result):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny(cache, out, "ltb", **{"train.epochs": 1, "weighting.name": "pcgrad"})
    from tests.engine.test_distributed import SaveState

    train(cfg, callbacks=SaveState(os.path.join(result, f"rank{rank}.pt")))


@pytest.mark.slow  # about 26 s on 2 shared cores (two spawned processes)
def test_two_gloo_ranks_stay_identical_with_ltb(arch_cache, tmp_path):
    """Each rank draws its own Gumbel noise; the averaged gradients keep the weights identical."""
    from tests.engine.test_distributed import _free_port

    res = tmp_path / "res"
    res.mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), str(arch_cache), str(tmp_path / "run"), str(res)), nprocs=2,
                       join=True, start_method="spawn")
    a, b = torch.load(res / "rank0.pt", weights_only=False), torch.load(res / "rank1.pt", weights_only=False)
    for k, v in a["model"].items():
        if "running_" in k or "num_batches" in k:
            continue  # BatchNorm statistics are per rank
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k
