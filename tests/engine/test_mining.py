"""Hard non-faces mined from SynthFaces scenes (facemtl.engine.mining): the rule a mined window
obeys, what a round keeps, how batches are extended, and the settings it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facemtl.data import schema
from facemtl.data.synth import SynthConfig, render_scene
from facemtl.data.synth.negatives import window_clear_of
from facemtl.engine.mining import SCENE_BASE, SCENE_SIZE, HardNegatives, MineConfig
from facemtl.errors import ConfigError


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


FACE = np.array([[100.0, 100.0, 50.0, 60.0]])
MARKS = np.array([[[112, 120], [138, 120], [125, 132], [115, 145], [135, 145]]], dtype=np.float64)


@pytest.mark.parametrize("window, clear", [
    ((100, 100, 50, 60), False),    # the face itself
    ((0, 0, 60, 60), True),         # far from it
    ((40, 40, 200, 200), False),    # low IoU, but it holds the face's centre
    ((100, 100, 40, 28), False),    # no centre, low IoU, but both eyes and the nose (3 landmarks)
    ((90, 135, 70, 40), False),     # the mouth and the nose: 3 landmarks, though the box centre is outside
    ((150, 90, 60, 60), True),      # beside the face: no landmark, low IoU
])
def test_window_clear_of_follows_the_scene_negative_rule(window, clear):
    assert window_clear_of(np.array(window, dtype=np.float64), FACE, MARKS, SCENE_SIZE) is clear


def test_window_clear_of_can_refuse_every_landmark():
    eye = np.array([105.0, 112.0, 15.0, 15.0])  # the left eye alone: clear by SynthFaces' rule, not with 0
    assert window_clear_of(eye, FACE, MARKS, SCENE_SIZE)
    assert not window_clear_of(eye, FACE, MARKS, SCENE_SIZE, max_landmarks=0)


class ConstantFinder(torch.nn.Module):
    """A detector stub that gives every window the same face probability."""

    def __init__(self, p: float, size: int = 32):
        super().__init__()
        self.input_spec = [(size, 3)]
        self.logit = float(np.log(p / (1 - p)))
        self.calls, self.modes = 0, set()

    def forward(self, x):
        self.calls += 1
        self.modes.add(self.training)
        det = torch.zeros(len(x), 5)
        det[:, 0] = self.logit
        return {"detection": det}


SYNTH = SynthConfig(seed=3, identities=12, sizes=(32,), scene_empty_fraction=0.0)


def test_a_round_keeps_high_scoring_windows_clear_of_every_face():
    # every window scores 0.9: what is kept is all that NMS and the rule leave (per_scene does not bind)
    cfg = MineConfig(every=1, start=1, scenes=4, per_scene=100, min_score=0.5, pool=1000, window_sizes=(64, 112))
    mined = HardNegatives(cfg, SYNTH, [32, 48], seed=0)
    model = ConstantFinder(0.9)
    record = mined.mine(model, epoch=1, device=torch.device("cpu"))
    assert model.calls > 0 and model.modes == {False} and model.training  # scored in eval mode, then back to train
    wins = record["windows"]
    assert record["kept"] == len(wins) == len(mined) > 0
    assert {s: tuple(t.shape) for s, t in mined.pool.items()} == {32: (len(wins), 3, 32, 32), 48: (len(wins), 3, 48, 48)}
    for scene_index in np.unique(wins[:, 0]):
        rows = wins[wins[:, 0] == scene_index]
        assert len(rows) <= cfg.per_scene
        boxes_xywh = [np.r_[r[1:], r[3]] for r in rows]
        assert all(_iou(a, b) <= 0.5 for i, a in enumerate(boxes_xywh) for b in boxes_xywh[i + 1:])  # NMS at 0.5
        assert SCENE_BASE <= scene_index < SCENE_BASE + cfg.scenes  # the first round's own scenes, none of a cache's
        scene = render_scene(int(scene_index), SYNTH, size=SCENE_SIZE)
        faces = scene["boxes"] * SCENE_SIZE
        marks = scene["landmarks"] * SCENE_SIZE
        for w in boxes_xywh:  # the rule checked here by hand, not by window_clear_of
            for f, m in zip(faces, marks):
                cx, cy = f[0] + f[2] / 2, f[1] + f[3] / 2
                assert not (w[0] <= cx <= w[0] + w[2] and w[1] <= cy <= w[1] + w[3])
                assert _iou(w, f) < 0.3
                inside = (m[:, 0] >= w[0]) & (m[:, 0] <= w[0] + w[2]) & (m[:, 1] >= w[1]) & (m[:, 1] <= w[1] + w[3])
                assert inside.sum() <= 2
    # the crops are the windows cut from the scene as SynthFaces cuts its crops
    i, x, y, w = wins[0]
    scene = Image.fromarray(render_scene(int(i), SYNTH, size=SCENE_SIZE)["image"])
    want = np.asarray(scene.resize((48, 48), Image.BILINEAR, box=(x, y, x + w, y + w)))
    assert np.array_equal(mined.pool[48][0].permute(1, 2, 0).numpy(), want)
    # a second round scans other scenes and the pool keeps the newest windows
    second = mined.mine(model, epoch=2, device=torch.device("cpu"))
    assert second["windows"][:, 0].min() >= SCENE_BASE + cfg.scenes
    assert len(mined) == min(cfg.pool, record["kept"] + second["kept"])


def test_windows_below_the_score_are_not_kept():
    mined = HardNegatives(MineConfig(every=1, scenes=2, min_score=0.5, window_sizes=(112,)), SYNTH, [32], seed=0)
    record = mined.mine(ConstantFinder(0.2), epoch=1, device=torch.device("cpu"))
    assert record["kept"] == 0 and len(mined) == 0


def test_the_pool_keeps_only_the_newest_windows():
    mined = HardNegatives(MineConfig(every=1, scenes=3, per_scene=4, pool=5, window_sizes=(64,)), SYNTH, [32], seed=0)
    model = ConstantFinder(0.9)
    mined.mine(model, epoch=1, device=torch.device("cpu"))
    before = mined.pool[32].clone()
    record = mined.mine(model, epoch=2, device=torch.device("cpu"))
    assert len(mined) == 5 and record["kept"] >= 5
    assert np.unique(record["windows"][:, 0], return_counts=True)[1].max() <= 4  # per_scene
    assert not any(torch.equal(mined.pool[32][-1], b) for b in before)  # the last one is from the new round


def _batch(n: int = 6, attrs: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {"images": {32: torch.randint(0, 255, (n, 3, 32, 32), generator=g, dtype=torch.uint8)},
             "index": torch.arange(n)}
    for spec in schema.LABELS.values():
        shape = (n, *(attrs if s == "A" else s for s in spec.shape))
        batch[spec.key] = torch.ones(shape, dtype=getattr(torch, spec.dtype))
    batch["present"] = {k: n for k in schema.LABELS}
    return batch


def test_extend_appends_windows_labelled_non_face_and_unknown_elsewhere():
    mined = HardNegatives(MineConfig(every=1, per_batch=4), SYNTH, [32], seed=5)
    mined.pool[32] = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 32, 32).clone()
    batch = _batch()
    out = mined.extend(batch, epoch=2, batch_index=7)
    assert out["images"][32].shape == (10, 3, 32, 32)
    assert torch.equal(out["images"][32][:6], batch["images"][32])
    picked = out["images"][32][6:, 0, 0, 0]
    assert all(int(v) < 10 for v in picked)
    assert (out["face"][6:] == 0).all() and (out["face"][:6] == 1).all()
    for spec in schema.LABELS.values():
        if spec.key == "face":
            continue
        extra = out[spec.key][6:].numpy()
        assert spec.is_missing(extra).all(), spec.key
        assert torch.equal(out[spec.key][:6], batch[spec.key])
    assert out["present"]["face"] == 10 and out["present"]["landmarks"] == 6
    assert (out["index"][6:] == -1).all()
    again = mined.extend(_batch(), epoch=2, batch_index=7)
    assert torch.equal(again["images"][32], out["images"][32])  # (seed, epoch, batch) decide the draw
    others = [mined.extend(_batch(), epoch=2, batch_index=b)["images"][32][6:, 0, 0, 0] for b in range(8, 14)]
    assert any(not torch.equal(o, picked) for o in others)
    assert mined.extend(batch, 2, 7) is not batch and HardNegatives(MineConfig(every=1), SYNTH, [32], 0).extend(batch, 2, 7) is batch


def test_replace_swaps_the_pixels_of_the_batch_non_faces_only():
    mined = HardNegatives(MineConfig(every=1, per_batch=3, replace=True), SYNTH, [32], seed=5)
    mined.pool[32] = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    batch = _batch(n=8)
    batch["images"][32] = torch.zeros_like(batch["images"][32])
    batch["face"] = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1], dtype=torch.int8)
    out = mined.extend(batch, epoch=0, batch_index=0)
    changed = (out["images"][32] == 200).flatten(1).all(1)
    assert changed.tolist() == [False, True, False, True, True, False, False, False]  # the first 3 non-faces
    assert (batch["images"][32] == 0).all()  # the loader's batch is not written into
    for key in [*schema.LABELS, "index", "present"]:
        assert out[key] is batch[key]
    few = _batch(n=4)
    few["face"] = torch.tensor([1, 0, 1, 1], dtype=torch.int8)
    assert (mined.extend(few, 0, 0)["images"][32] == 200).flatten(1).all(1).tolist() == [False, True, False, False]


def test_weight_makes_mined_windows_count_less_in_the_face_loss():
    from facemtl.tasks.kinds import DetectionTask

    task = DetectionTask("detection", "face", 5)
    pool = torch.zeros((4, 3, 32, 32), dtype=torch.uint8)
    plain = HardNegatives(MineConfig(every=1, per_batch=4), SYNTH, [32], seed=5)
    soft = HardNegatives(MineConfig(every=1, per_batch=4, weight=0.25), SYNTH, [32], seed=5)
    plain.pool[32], soft.pool[32] = pool, pool.clone()
    assert "face_weight" not in plain.extend(_batch(), 0, 0)  # weight 1: the loss is the plain mean
    out = soft.extend(_batch(), 0, 0)
    assert out["face_weight"].tolist() == [1.0] * 6 + [0.25] * 4
    logits = torch.linspace(-2.0, 2.0, 10).view(10, 1)
    output = torch.cat([logits, torch.full((10, 4), 0.5)], dim=1)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], out["face"].float(), reduction="none")
    w = out["face_weight"]
    out["bbox"] = torch.where(out["bbox"].isnan(), out["bbox"], 0.5)  # boxes predicted exactly: BCE alone remains
    assert torch.allclose(task.loss(output, out), (bce * w).sum() / w.sum())
    assert torch.allclose(task.loss(output, {**out, "face_weight": torch.ones(10)}), bce.mean())
    replace = HardNegatives(MineConfig(every=1, per_batch=2, replace=True, weight=0.5), SYNTH, [32], seed=5)
    replace.pool[32] = pool
    batch = _batch(n=5)
    batch["face"] = torch.tensor([1, 0, 0, 1, 0], dtype=torch.int8)
    assert replace.extend(batch, 0, 0)["face_weight"].tolist() == [1.0, 0.5, 0.5, 1.0, 1.0]


def test_checkpoint_state_round_trips_and_refuses_other_sizes():
    mined = HardNegatives(MineConfig(every=1, scenes=2, window_sizes=(64,)), SYNTH, [32], seed=0)
    mined.mine(ConstantFinder(0.9), epoch=1, device=torch.device("cpu"))
    other = HardNegatives(MineConfig(every=1), SYNTH, [32], seed=0)
    other.load_state_dict(mined.state_dict())
    assert torch.equal(other.pool[32], mined.pool[32]) and other.rounds[0]["kept"] == mined.rounds[0]["kept"]
    with pytest.raises(ConfigError, match="sizes"):
        HardNegatives(MineConfig(every=1), SYNTH, [56], seed=0).load_state_dict(mined.state_dict())


def test_photo_scenes_are_windows_of_the_synthfaces_photos_only():
    from facemtl.data.synth.photos import skimage_available
    from facemtl.engine.mining import photo_scene

    if not skimage_available():
        pytest.skip("scikit-image is not installed")
    a, b = photo_scene(SCENE_BASE, SYNTH), photo_scene(SCENE_BASE + 1, SYNTH)
    assert a["image"].shape == (SCENE_SIZE, SCENE_SIZE, 3) and a["image"].dtype == np.uint8
    assert np.array_equal(a["image"], photo_scene(SCENE_BASE, SYNTH)["image"]) and not np.array_equal(a["image"], b["image"])
    assert len(a["boxes"]) == 0 and len(a["landmarks"]) == 0
    cfg = MineConfig(every=1, scenes=4, photos=0.5, per_scene=100, window_sizes=(112,))
    mined = HardNegatives(cfg, SYNTH, [32], seed=0)
    record = mined.mine(ConstantFinder(0.9), epoch=1, device=torch.device("cpu"))
    from_photos = record["windows"][:, 0] < SCENE_BASE + 2  # the round's first half are photos
    assert from_photos.any() and (~from_photos).any()
    i, x, y, w = record["windows"][from_photos][0]
    want = np.asarray(Image.fromarray(photo_scene(int(i), SYNTH)["image"]).resize((32, 32), Image.BILINEAR, box=(x, y, x + w, y + w)))
    assert np.array_equal(mined.pool[32][0].permute(1, 2, 0).numpy(), want)
    with pytest.raises(ConfigError, match="photo_source"):
        photo_scene(SCENE_BASE, SynthConfig(seed=3, identities=12, sizes=(32,), photo_source="none"))


def test_rounds_are_due_from_start_every_few_epochs():
    cfg = MineConfig(every=3, start=4)
    assert [e for e in range(12) if cfg.round_due(e)] == [4, 7, 10]
    assert not any(MineConfig(every=0).round_due(e) for e in range(12))
