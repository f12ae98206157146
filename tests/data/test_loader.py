"""The chunk-aware loader: coverage, shuffling, workers, DDP sharding, in-memory mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facemtl.data.cache import FaceCache
from facemtl.data.loader import CacheLoader, epoch_order
from tests.conftest import write_toy_cache


def rows_of(batch):
    """Row index decoded from the pixels (the toy cache writes it into pixel (0, 0))."""
    img = batch["images"][16]
    return (img[:, 0, 0, 0].long() + 251 * img[:, 1, 0, 0].long()).numpy()


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("workers", [0, 2])
def test_each_index_once_per_epoch(toy_cache, in_memory, workers):
    if in_memory and workers:
        pytest.skip("in-memory mode reads in the main process")
    loader = CacheLoader(toy_cache, "train", [16, 32], batch_size=32, in_memory=in_memory, num_workers=workers, seed=3)
    want = FaceCache(toy_cache).indices("train")
    seen_epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader)
        idx = np.concatenate([b["index"].numpy() for b in batches])
        assert sorted(idx.tolist()) == want.tolist()
        # images belong to the labelled rows
        assert (np.concatenate([rows_of(b) for b in batches]) == idx).all()
        assert batches[0]["images"][32].shape[1:] == (3, 32, 32)
        seen_epochs.append(idx)
    assert not (seen_epochs[0] == seen_epochs[1]).all(), "epochs must be shuffled differently"
    assert not (seen_epochs[0] == np.sort(seen_epochs[0])).all(), "order must be shuffled"


def test_labels_follow_rows(toy_cache):
    c = FaceCache(toy_cache)
    for b in CacheLoader(c, "train", [16], batch_size=40, in_memory=False):
        idx = b["index"].numpy()
        assert np.allclose(b["landmarks"].numpy(), c.labels["landmarks"][idx])
        assert b["present"]["landmarks"] == len(idx) and b["present"]["pose"] == 0


def test_shuffle_is_seeded(toy_cache):
    a = [b["index"] for b in CacheLoader(toy_cache, "train", [16], batch_size=50, seed=1, in_memory=False)]
    b = [b["index"] for b in CacheLoader(toy_cache, "train", [16], batch_size=50, seed=1, in_memory=False)]
    c = [b["index"] for b in CacheLoader(toy_cache, "train", [16], batch_size=50, seed=2, in_memory=False)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_no_shuffle_keeps_order(toy_cache):
    idx = np.concatenate([b["index"].numpy() for b in CacheLoader(toy_cache, "val", [16], batch_size=7, shuffle=False, in_memory=False)])
    assert idx.tolist() == FaceCache(toy_cache).indices("val").tolist()


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_disjoint_and_complete(toy_cache, world):
    cache = FaceCache(toy_cache)
    want = cache.indices("train")
    shards = []
    for rank in range(world):
        loader = CacheLoader(cache, "train", [16], batch_size=16, rank=rank, world_size=world, drop_last=True, in_memory=False)
        loader.set_epoch(1)
        shards.append(np.concatenate([b["index"].numpy() for b in loader]))
    assert len({len(s) for s in shards}) == 1, "every rank must run the same number of steps"
    # without dropping, ranks cover everything; here check disjointness of the bulk and full coverage via epoch_order
    orders = [epoch_order(want, cache.chunk_rows, 0, 1, True, r, world) for r in range(world)]
    union = np.concatenate(orders)
    assert set(union.tolist()) == set(want.tolist())
    assert len(union) - len(want) < world  # at most world-1 wrapped repeats
    assert len(set(orders[0].tolist()) & set(orders[1].tolist())) <= world


def test_chunk_awareness(tmp_path):
    """In streaming mode a window is made of whole chunks: consecutive samples share few chunks."""
    write_toy_cache(tmp_path / "c.h5", n=640, chunk_rows=32, splits=np.zeros(640, np.int8))
    order = epoch_order(np.arange(640), 32, 0, 0, True)
    chunks = order // 32
    assert (np.diff(chunks) != 0).sum() == 19  # 20 chunks visited one after another


def test_empty_split_is_an_error(tmp_path):
    from facemtl.errors import ConfigError

    path = write_toy_cache(tmp_path / "c.h5", n=20, splits=np.zeros(20, np.int8))
    with pytest.raises(ConfigError, match="no samples in split 'test'"):
        CacheLoader(path, "test", [16])
    with pytest.raises(ConfigError, match="sizes"):
        CacheLoader(path, "train", [64])


def test_in_memory_gathers_stay_under_the_byte_cap_with_the_same_batches(toy_cache, monkeypatch):
    """Blocks over ~32 MiB are mapped afresh by glibc on every gather (page faults: batch 256 at
    64 px ran 2.5-3.5x slower per image than batch 64); the cap bounds the block, batches unchanged."""
    from facemtl.data import loader as loader_mod

    def run():
        ld = CacheLoader(toy_cache, "train", [16], 10, in_memory=True, seed=2)
        ld.set_epoch(1)
        windows = [len(rows) for rows, _ in ld._windows(ld.indices)]
        return windows, [(b["index"].tolist(), b["images"][16].clone()) for b in ld]

    wide, batches = run()
    assert max(wide) == 16 * 10  # 16 batches per block below the cap
    monkeypatch.setattr(loader_mod, "RAM_WINDOW_BYTES", 3 * 10 * 16 * 16 * 3)
    capped, capped_batches = run()
    assert max(capped) == 3 * 10
    assert [i for i, _ in capped_batches] == [i for i, _ in batches]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(capped_batches, batches))
