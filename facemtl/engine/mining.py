"""Hard non-faces mined from fresh SynthFaces scenes during training (``[mine]``, off by default).

A sliding-window face finder asks thousands of windows per photo, and what it gets wrong are the
few windows that look most like a face to *this* model. Sampled negatives rarely are those
windows; bootstrapping (Sung & Poggio 1998; MTCNN's hard examples) looks for them with the model
itself and trains on them. Here a round, at the start of epoch ``start + 1`` and every ``every``
epochs after it:

1. renders ``scenes`` SynthFaces scenes that no cache holds (scene indices from
   :data:`SCENE_BASE` on, a new range each round; the cache's own scenes, which evaluation uses,
   are never drawn), with the SynthFaces settings the training cache was rendered with; a share
   ``photos`` of them are instead windows of SynthFaces' own photos (:func:`photo_scene`:
   scikit-image's sample photos without faces, never a check photo), which hold no face at all;
2. scores every square window of ``window_sizes`` scene pixels, stepped by a third of its side,
   with the model being trained (evaluation mode; the moving average when ``train.ema`` is on);
3. keeps the windows that are *clear* of every face by SynthFaces' rule for scene non-faces
   (:func:`facemtl.data.synth.negatives.window_clear_of`: no face centre, at most
   ``max_landmarks`` (2) of a face's 5 landmarks, IoU below 0.3 with each face box and with the
   square a face crop frames) and that
   score at least ``min_score``; per scene the ``per_scene`` highest, after NMS at IoU 0.5;
4. cuts them from the scene at the cache's image sizes (PIL's antialiased bilinear, as SynthFaces'
   crops are made) and adds them to a pool that holds the newest ``pool`` windows.

Every training batch then gets ``per_batch`` windows of the pool appended, drawn with
``(seed, epoch, batch index)``, labelled non-face (``face = 0``) and unknown for every other
label; augmentation treats them like any sample. With ``replace`` they take the places of the
batch's first non-faces instead (as many as it has, up to ``per_batch``), so the batch's share
of non-faces stays what the cache gives. ``weight`` below 1 makes each mined window count that
much in the face / non-face loss (a weighted mean), so they teach "not a face" more softly. The
pool is saved in every checkpoint, so a resumed run continues exactly. Only a SynthFaces cache
can be mined (its scenes are rendered from the settings in its provenance); nothing from the
real-image checks is ever used.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from facemtl.data import schema
from facemtl.engine.schedules import is_epochs_or_share
from facemtl.errors import ConfigError

log = logging.getLogger(__name__)

#: mined scenes are SynthFaces scene indices from here on (a cache's own scenes are 0, 1, ...)
SCENE_BASE = 1 << 24
SCENE_SIZE = 256
NMS_IOU = 0.5


@dataclass(frozen=True)
class MineConfig:
    """``[mine]``: hard non-faces mined during training (module docstring); ``every = 0`` is off."""

    every: int = 0            # epochs between rounds; 0: no mining
    start: float = 8          # the first round runs after this many epochs, or after this share of train.epochs (0 < start < 1)
    scenes: int = 160         # fresh scenes scanned per round
    photos: float = 0.0       # share of them that are windows of SynthFaces' photos (no faces) instead of scenes
    per_scene: int = 4        # at most this many windows kept from one scene
    min_score: float = 0.5    # a window is kept when the model's face probability reaches this
    max_landmarks: int = 2    # of a face's 5 landmarks, at most this many in a kept window (SynthFaces' rule: 2)
    pool: int = 1024          # the newest mined windows kept
    per_batch: int = 8        # mined windows added to each training batch
    replace: bool = False     # True: they take the places of the batch's first non-faces instead of being appended
    weight: float = 1.0       # each mined window's weight in the face / non-face loss (the batch's own samples: 1)
    window_sizes: tuple[int, ...] = (56, 80, 112, 160, 224)  # window sides in scene pixels (256 px scenes)

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def checks(self) -> list[tuple[str, Any, bool, str]]:
        """(setting, value, holds, what it must be), for :meth:`RunConfig.validate`."""
        return [
            ("mine.every", self.every, self.every >= 0, "0 (off) or a number of epochs"),
            ("mine.start", self.start, is_epochs_or_share(self.start),
             "a whole number of epochs, at least 1, or a share of train.epochs in (0, 1)"),
            ("mine.scenes", self.scenes, self.scenes >= 1, "at least 1"),
            ("mine.photos", self.photos, 0.0 <= self.photos <= 1.0, "a share in [0, 1]"),
            ("mine.per_scene", self.per_scene, self.per_scene >= 1, "at least 1"),
            ("mine.min_score", self.min_score, 0.0 <= self.min_score < 1.0, "in [0, 1)"),
            ("mine.max_landmarks", self.max_landmarks, 0 <= self.max_landmarks <= 2, "0, 1 or 2"),
            ("mine.pool", self.pool, self.pool >= 1, "at least 1"),
            ("mine.per_batch", self.per_batch, self.per_batch >= 1, "at least 1"),
            ("mine.weight", self.weight, 0.0 < self.weight <= 1.0, "in (0, 1]"),
            ("mine.window_sizes", self.window_sizes,
             bool(self.window_sizes) and all(16 <= w <= SCENE_SIZE for w in self.window_sizes),
             f"window sides between 16 and {SCENE_SIZE} scene pixels"),
        ]

    def round_due(self, epoch: int) -> bool:
        """True when a round runs before (0-based) ``epoch``."""
        return self.enabled and epoch >= self.start and (epoch - self.start) % self.every == 0


def synth_config_of(cache) -> Any:
    """The :class:`~facemtl.data.synth.SynthConfig` a SynthFaces cache was rendered with, or None
    for another cache (mining renders scenes with those settings, so it needs one)."""
    from facemtl.data.synth import SynthConfig

    prov = cache.provenance
    if prov.get("generator") != "SynthFaces" or not isinstance(prov.get("config"), dict):
        return None
    known = {f.name for f in dataclasses.fields(SynthConfig)}
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in prov["config"].items() if k in known}
    return SynthConfig(**cfg)


def photo_scene(index: int, synth) -> dict:
    """A scene with no face: a ``SCENE_SIZE`` window of one of SynthFaces' photos (scikit-image's
    sample photos without faces, :data:`~facemtl.data.synth.photos.PHOTO_NAMES`; never a check
    photo), with SynthFaces' photo-window colour changes, drawn from ``(seed, index)``."""
    from facemtl.data.synth.photos import photo_window

    if synth.photo_source != "skimage":
        raise ConfigError("mine.photos scans SynthFaces' photos, but this cache was rendered without them "
                          "(photo_source is not 'skimage'); install facemtl[real] and prepare it again, or set mine.photos = 0.")
    rng = np.random.default_rng([synth.seed, index, 0x50484F54])
    img = np.array(photo_window(rng, SCENE_SIZE, tiny=0.0).convert("RGB"), dtype=np.uint8)
    return {"image": img, "boxes": np.zeros((0, 4), np.float32), "landmarks": np.zeros((0, 5, 2), np.float32)}


class HardNegatives:
    """The pool of mined windows (uint8, one array per stored image size) and its rounds."""

    def __init__(self, cfg: MineConfig, synth, sizes: list[int], seed: int):
        self.cfg, self.synth, self.sizes, self.seed = cfg, synth, sorted(set(sizes)), seed
        self.pool = {s: torch.zeros((0, 3, s, s), dtype=torch.uint8) for s in self.sizes}
        #: per round: {"epoch", "scenes", "kept", "mean_score", "pool", "seconds",
        #: "windows": (kept, 4) scene index, x, y, side}
        self.rounds: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.pool[self.sizes[0]])

    # -- mining -----------------------------------------------------------------------------------
    @torch.no_grad()
    def mine(self, model, epoch: int, device: torch.device) -> dict[str, Any]:
        """One round with ``model`` before (0-based) ``epoch``; returns the round's record."""
        from facemtl.data.synth import render_scene
        from facemtl.data.synth.negatives import window_clear_of
        from facemtl.metrics import nms
        from facemtl.models.cascade import CascadeModel
        from facemtl.reports.scenes import scan_windows

        cfg = self.cfg
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        size = max(s for s, _ in model.input_spec)
        cascade = isinstance(model, CascadeModel)
        first = SCENE_BASE + len(self.rounds) * cfg.scenes
        crops: dict[int, list[np.ndarray]] = {s: [] for s in self.sizes}
        scores: list[float] = []
        kept: list[tuple[int, float, float, float]] = []  # (scene index, x, y, side) of each window kept
        n_photos = round(cfg.photos * cfg.scenes)
        for index in range(first, first + cfg.scenes):
            scene = photo_scene(index, self.synth) if index - first < n_photos else render_scene(index, self.synth, size=SCENE_SIZE)
            img = torch.from_numpy(scene["image"]).permute(2, 0, 1).float().div(255.0).to(device)
            boxes = scene["boxes"].astype(np.float64) * SCENE_SIZE
            marks = scene["landmarks"].astype(np.float64) * SCENE_SIZE
            wins_a, s_a, _ = scan_windows(model, img, size, cfg.window_sizes, 1 / 3, cascade, "detection")
            cand = np.flatnonzero(s_a >= cfg.min_score)
            cand = cand[[window_clear_of(np.r_[wins_a[i], wins_a[i, 2]], boxes, marks, SCENE_SIZE, cfg.max_landmarks)
                         for i in cand]]
            if not len(cand):
                continue
            sq = np.concatenate([wins_a[cand], wins_a[cand, 2:3]], 1)  # x, y, w, h
            keep = cand[nms(sq, s_a[cand], NMS_IOU)][: cfg.per_scene]
            photo = Image.fromarray(scene["image"])
            for i in keep:
                x, y, w = wins_a[i]
                for s in self.sizes:
                    crops[s].append(np.asarray(photo.resize((s, s), Image.BILINEAR, box=(x, y, x + w, y + w))))
                scores.append(float(s_a[i]))
                kept.append((index, float(x), float(y), float(w)))
        if was_training:
            model.train()
        for s in self.sizes:
            if crops[s]:
                new = torch.from_numpy(np.stack(crops[s])).permute(0, 3, 1, 2).contiguous()
                self.pool[s] = torch.cat([self.pool[s], new])[-cfg.pool:]
        record = {"epoch": epoch, "scenes": cfg.scenes, "kept": len(scores),
                  "mean_score": float(np.mean(scores)) if scores else 0.0, "pool": len(self),
                  "seconds": time.perf_counter() - t0,
                  "windows": np.asarray(kept, dtype=np.float64).reshape(-1, 4)}
        self.rounds.append(record)
        log.debug("mined %d hard non-faces from %d scenes before epoch %d (mean face score %.3f); pool %d",
                 record["kept"], cfg.scenes, epoch + 1, record["mean_score"], record["pool"])
        return record

    # -- training batches -------------------------------------------------------------------------
    def extend(self, batch: dict, epoch: int, batch_index: int) -> dict:
        """``batch`` (on its device) with ``per_batch`` pool windows as labelled non-faces: appended,
        or (``replace``) in place of the batch's first non-faces, so its share of non-faces stays."""
        n = len(self)
        if not n:
            return batch
        pick = np.random.default_rng([self.seed, epoch, batch_index, 0x4D494E45]).integers(0, n, self.cfg.per_batch)
        out = dict(batch)
        face = batch["face"]
        if self.cfg.replace:  # SynthFaces' non-faces carry no other label: only their pixels change
            rows = torch.nonzero(face == 0).flatten()[: len(pick)]
            pick = torch.from_numpy(pick[: len(rows)])
            out["images"] = {s: x.index_copy(0, rows, self.pool[s][pick].to(x.device)) for s, x in batch["images"].items()}
            if self.cfg.weight != 1.0:
                out["face_weight"] = torch.ones(len(face), device=face.device).index_fill(0, rows, self.cfg.weight)
            return out
        k = len(pick)
        if self.cfg.weight != 1.0:  # read by the detection task's loss (DetectionTask.loss)
            out["face_weight"] = torch.cat([torch.ones(len(face), device=face.device),
                                            torch.full((k,), self.cfg.weight, device=face.device)])
        out["images"] = {s: torch.cat([x, self.pool[s][pick].to(x.device)]) for s, x in batch["images"].items()}
        for spec in schema.LABELS.values():
            if spec.key in batch:
                have = batch[spec.key]
                extra = torch.full((k, *have.shape[1:]), 0 if spec.key == "face" else spec.missing, dtype=have.dtype,
                                   device=have.device)
                out[spec.key] = torch.cat([have, extra])
        idx = batch["index"]
        out["index"] = torch.cat([idx, torch.full((k,), -1, dtype=idx.dtype, device=idx.device)])
        out["present"] = {**batch["present"], "face": batch["present"].get("face", 0) + k}
        return out

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"pool": {s: t.clone() for s, t in self.pool.items()}, "rounds": list(self.rounds)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        pool = state["pool"]
        if sorted(pool) != self.sizes:
            raise ConfigError(f"the checkpoint's mined non-faces are at sizes {sorted(pool)}, this run reads {self.sizes}; "
                              "resume with the same cache and model, or start a new run with --out.")
        self.pool = {s: t.to(torch.uint8) for s, t in pool.items()}
        self.rounds = list(state["rounds"])
