"""``facemtl prepare synthetic``: render SynthFaces into a cache.

Splits: identities are numbered 0..K-1; the last 10% of identities form the *test* split (held-out
identities, so face verification is measured on people never seen in training, as in CelebA);
the remaining images are split 90/10 into train/val at random (seeded). Detection negatives are
split 80/10/10 by index.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from facemtl.data import schema
from facemtl.data._parallel import make_blocks, map_blocks
from facemtl.data.cache import CacheWriter, validate_sizes
from facemtl.errors import ConfigError

log = logging.getLogger(__name__)

BLOCK = 64


def first_test_person(identities: int) -> int:
    """People ``first_test_person(n)`` .. ``n - 1`` of a cache of ``n`` people are its test split
    (held out); the others train and validate. Person k is drawn from (seed, k) alone, so caches of
    one seed share their people (:func:`facemtl.reports._data.shared_synthfaces_people`)."""
    return int(round(identities * 0.9))


def _split_for(index: int, identity: int, cfg) -> int:
    rng = np.random.default_rng([cfg.seed, 7919, index])
    if identity < 0:
        return int(rng.choice(3, p=[0.8, 0.1, 0.1]))
    if identity >= first_test_person(cfg.identities):
        return schema.SPLITS["test"]
    return schema.SPLITS["val"] if rng.random() < 0.1 else schema.SPLITS["train"]


def render_block(start: int, stop: int, cfg) -> dict:
    from facemtl.data.synth import render_sample

    samples = [render_sample(i, cfg) for i in range(start, stop)]
    out: dict = {"images": {s: np.stack([x["images"][s] for x in samples]) for s in cfg.sizes}}
    for key in schema.LABELS:
        out[key] = np.stack([np.asarray(x[key]) for x in samples])
    out["split"] = np.array([_split_for(i, int(x["identity"]), cfg) for i, x in zip(range(start, stop), samples)], np.int8)
    out["image_ids"] = [f"synth_{i:07d}" for i in range(start, stop)]
    return out


def render_scene_block(start: int, stop: int, cfg, scene_size: int, max_faces: int) -> dict:
    from facemtl.data.synth import render_scene

    n = stop - start
    images = np.zeros((n, scene_size, scene_size, 3), np.uint8)
    boxes = np.full((n, max_faces, 4), np.nan, np.float32)
    lms = np.full((n, max_faces, 5, 2), np.nan, np.float32)
    for j, i in enumerate(range(start, stop)):
        sc = render_scene(i, cfg, size=scene_size)
        k = min(len(sc["boxes"]), max_faces)
        images[j], boxes[j, :k], lms[j, :k] = sc["image"], sc["boxes"][:k], sc["landmarks"][:k]
    return {"images": images, "boxes": boxes, "landmarks": lms, "split": np.full(n, schema.SPLITS["test"], np.int8)}


def prepare_synthetic(
    out: str | Path,
    *,
    num_images: int = 20000,
    identities: int = 200,
    sizes: tuple[int, ...] = (56, 112, 224),
    seed: int = 0,
    workers: int = 0,
    num_scenes: int = 64,
    scene_size: int = 256,
    force: bool = False,
    resume: bool = False,
    on_progress: Callable[[int], None] | None = None,
    **synth_options: Any,
) -> Path:
    """Render ``num_images`` SynthFaces samples (plus ``num_scenes`` detection scenes) into ``out``.

    ``synth_options`` are further :class:`~facemtl.data.synth.SynthConfig` fields (e.g.
    ``camera_effects=False``); they are recorded in the provenance like the others."""
    from facemtl.data.synth import SYNTH_ATTRIBUTES, SynthConfig

    sizes = validate_sizes(sizes)
    if num_images < 1:
        raise ConfigError(f"--num-images must be at least 1, got {num_images}.")
    if identities < 2:
        raise ConfigError(f"--identities must be at least 2, got {identities}.")
    if num_scenes < 0:
        raise ConfigError(f"--scenes must be 0 or more, got {num_scenes}.")
    unknown = sorted(set(synth_options) - {f.name for f in dataclasses.fields(SynthConfig)})
    if unknown:
        raise ConfigError(f"unknown SynthFaces option(s) {unknown}; see SynthConfig in docs/synthfaces.md.")
    cfg = SynthConfig(seed=seed, identities=identities, sizes=tuple(sizes), **synth_options)
    provenance = {"generator": "SynthFaces", "config": dataclasses.asdict(cfg), "num_images": num_images}
    writer = CacheWriter(
        out, num_samples=num_images, sizes=sizes, attribute_names=SYNTH_ATTRIBUTES, source="synthetic",
        provenance=provenance, force=force, resume=resume, keep_partial=True,
        num_scenes=num_scenes, scene_size=scene_size,
    )
    with writer as w:
        todo = np.flatnonzero(~w.done_rows()).tolist()
        for start, batch in map_blocks(partial(render_block, cfg=cfg), make_blocks(todo, BLOCK), workers):
            w.write(start, batch)
            if on_progress:
                on_progress(len(batch["split"]))
        if num_scenes:
            todo_s = np.flatnonzero(~w.done_scenes()).tolist()
            fn = partial(render_scene_block, cfg=cfg, scene_size=scene_size, max_faces=w.max_faces)
            for start, batch in map_blocks(fn, make_blocks(todo_s, 16), workers):
                w.write_scenes(start, batch)
    return Path(out)
