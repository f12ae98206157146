"""Shared fixtures: tiny caches written in tmp_path; one torch thread per test worker."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("FACEMTL_PROGRESS", "0")


def write_toy_cache(path, n=300, sizes=(16, 32), chunk_rows=16, attrs=("Male", "Smiling", "Eyeglasses"), seed=0, splits=None):
    """A cache whose pixels encode the row index (pixel [0,0,0] = row % 251) for loader checks."""
    from facemtl.data.cache import CacheWriter

    rng = np.random.default_rng(seed)
    with CacheWriter(path, num_samples=n, sizes=sizes, attribute_names=attrs, source="toy", chunk_rows=chunk_rows) as w:
        for start in range(0, n, 50):
            stop = min(n, start + 50)
            m = stop - start
            images = {}
            for s in sizes:
                img = rng.integers(0, 255, (m, s, s, 3), dtype=np.uint8)
                img[:, 0, 0, 0] = np.arange(start, stop) % 251
                img[:, 0, 0, 1] = np.arange(start, stop) // 251
                images[s] = img
            split = splits[start:stop] if splits is not None else (np.arange(start, stop) % 10 == 0).astype(np.int8)
            w.write(start, {
                "images": images,
                "attributes": rng.integers(0, 2, (m, len(attrs))).astype(np.int8),
                "landmarks": rng.uniform(0.2, 0.8, (m, 5, 2)).astype(np.float32),
                "face": np.ones(m, np.int8),
                "identity": rng.integers(0, 10, m),
                "split": split,
                "image_ids": [f"toy{i}" for i in range(start, stop)],
            })
    return path


@pytest.fixture
def toy_cache(tmp_path):
    return write_toy_cache(tmp_path / "toy.h5")
