"""Training one model on several caches: each task from the cache that labels it, evaluation per
cache, clear errors, resume, and two gloo ranks that stay identical while their tasks differ."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.data.cache import FaceCache
from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import train
from facemtl.errors import ConfigError
from tests.engine.test_distributed import SaveState, _free_port


def split_like(cache: FaceCache, path, keep: set[str], size: int | None = None, grey: bool = False, rows: slice = slice(None)):
    """A copy of ``cache``'s rows with only the ``keep`` labels (like one dataset's files)."""
    from facemtl.data.cache import CacheWriter

    idx = np.arange(cache.num_samples)[rows]
    src = max(cache.sizes)
    imgs = cache.read_images(src, int(idx[0]), int(idx[-1]) + 1)
    if size is not None and size != src:
        t = torch.nn.functional.interpolate(torch.from_numpy(imgs).permute(0, 3, 1, 2).float(), size=(size, size), antialias=True,
                                            mode="bilinear")
        imgs = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if grey:
        imgs = np.repeat(imgs.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    attrs = cache.attribute_names if "attributes" in keep else []
    with CacheWriter(path, num_samples=len(idx), sizes=(size or src,), attribute_names=attrs, source=path.stem) as w:
        batch = {"images": {size or src: imgs}, "split": cache.split[idx], "image_ids": [f"r{i}" for i in idx]}
        batch.update({k: cache.labels[k][idx] for k in keep})
        w.write(0, batch)
    return path


@pytest.fixture(scope="module")
def two_caches(synth_cache, tmp_path_factory):
    """landmarks + attributes at 56 px (a 'celeba'), expression only in 48 px grey (a 'fer')."""
    d = tmp_path_factory.mktemp("multi")
    c = FaceCache(synth_cache)
    a = split_like(c, d / "celeba.h5", {"landmarks", "attributes", "face"}, size=56, rows=slice(0, 600))
    b = split_like(c, d / "fer.h5", {"expression", "face"}, size=48, grey=True, rows=slice(600, 1200))
    return a, b


def config(a, b, out, **kw):
    over = {"data.sources": [str(a), str(b)], "data.path": str(a), "out": str(out), "train.device": "cpu",
            "train.batch_size": 16, "train.epochs": 1, "train.max_steps_per_epoch": 6, "model.input_size": 56,
            "tasks.names": ["landmarks", "smile", "expression"], "weighting.name": "ew", "weighting.options": {}}
    over.update(kw)
    return apply_overrides(load_recipe("quick"), over)


def test_each_task_is_measured_on_the_caches_that_label_it(two_caches, tmp_path):
    a, b = two_caches
    res = train(config(a, b, tmp_path / "run", **{"data.mix": "uniform", "data.mix_by": "batch", "weighting.name": "pcgrad"}))
    assert set(res.test_by_dataset) == {"celeba", "fer"}
    assert set(res.test_by_dataset["celeba"]) == {"landmarks", "smile"}
    assert set(res.test_by_dataset["fer"]) == {"expression"}
    assert all(np.isfinite(r["train_loss"]) for r in res.history)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["data_names"] == ["celeba", "fer"] and len(ckpt["data_paths"]) == 2


def test_a_task_no_cache_labels_is_refused_naming_the_caches(two_caches, tmp_path):
    a, b = two_caches
    with pytest.raises(ConfigError, match=r"pose.*celeba \(.*fer \("):
        train(config(a, b, tmp_path / "run", **{"tasks.names": ["landmarks", "pose"]}))
    assert not (tmp_path / "run").exists()


def test_resume_of_a_mixed_run_equals_the_uninterrupted_run(two_caches, tmp_path):
    a, b = two_caches
    kw = {"train.epochs": 2, "data.mix": "temperature:2", "train.schedule": "constant"}  # the lr of epoch 1 must not depend on the count
    full = SaveState(tmp_path / "full.pt")
    train(config(a, b, tmp_path / "full", **kw), callbacks=full)
    train(config(a, b, tmp_path / "part", **{**kw, "train.epochs": 1}))
    resumed = SaveState(tmp_path / "resumed.pt")
    train(config(a, b, tmp_path / "part", **kw), resume=True, callbacks=resumed)
    x, y = torch.load(tmp_path / "full.pt", weights_only=False), torch.load(tmp_path / "resumed.pt", weights_only=False)
    for k, v in x["model"].items():
        assert torch.equal(v, y["model"][k]), k


def test_cli_trains_on_two_caches_and_refuses_a_missing_one(two_caches, tmp_path):
    a, b = two_caches
    runner = CliRunner()
    r = runner.invoke(app, ["train", "--data", f"{a},{b}", "--tasks", "landmarks,expression", "--epochs", "1", "--max-steps", "3",
                            "--mix", "uniform", "--input-size", "56", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "test split of each dataset" in r.output and "fer" in r.output
    r = runner.invoke(app, ["train", "--data", f"{a},{tmp_path / 'nope.h5'}", "--out", str(tmp_path / "run2")])
    assert r.exit_code == 1 and "nope.h5" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run2").exists()
    r = runner.invoke(app, ["train", "--data", f"{a},{b}", "--mix", "mtfl=1", "--out", str(tmp_path / "run3")])
    assert r.exit_code == 1 and "mtfl" in r.output and "celeba" in r.output


def _worker(rank, world, port, a, b, out, result_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # batches of 4 mixed per sample: a task is often labelled on one rank and not on the other
    cfg = config(a, b, out, **{"train.batch_size": 4, "train.max_steps_per_epoch": 12, "weighting.name": "pcgrad", "data.mix_by": "sample",
                               "data.mix": "uniform"})
    train(cfg, callbacks=SaveState(os.path.join(result_dir, f"rank{rank}.pt")))


@pytest.mark.slow
def test_two_gloo_ranks_with_different_tasks_per_step_stay_identical(two_caches, tmp_path):
    a, b = two_caches
    res = tmp_path / "res"
    res.mkdir()
    mp.start_processes(_worker, args=(2, _free_port(), str(a), str(b), str(tmp_path / "run"), str(res)), nprocs=2, join=True,
                       start_method="spawn")
    x, y = torch.load(res / "rank0.pt", weights_only=False), torch.load(res / "rank1.pt", weights_only=False)
    for k, v in x["model"].items():
        if "running_" not in k and "num_batches" not in k:
            assert torch.allclose(v.float(), y["model"][k].float(), atol=1e-6), k
