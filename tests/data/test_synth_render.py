"""SynthFaces renderer: determinism, label geometry, attribute visibility, prevalences, scenes."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from facemtl.data.schema import EXPRESSION_NAMES, LABELS, pose_class_from_yaw
from facemtl.data.synth import SYNTH_ATTRIBUTES, SynthConfig, render_face_with_attributes, render_sample, render_scene
from facemtl.errors import ConfigError, UnknownNameError

A = {name: k for k, name in enumerate(SYNTH_ATTRIBUTES)}
SMALL = SynthConfig(sizes=(32,), identities=500)
HAPPY, SURPRISE, FEAR = (EXPRESSION_NAMES.index(n) for n in ("Happy", "Surprise", "Fear"))


@pytest.fixture(scope="module")
def batch() -> list[dict]:
    """600 small samples (labels are what matter here; 32 px renders at 64 px, ~1.5 ms each)."""
    return [render_sample(i, SMALL) for i in range(600)]


@pytest.fixture(scope="module")
def faces(batch) -> list[dict]:
    return [s for s in batch if s["face"] == 1]


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if key == "images":
            if a[key].keys() != b[key].keys() or any(a[key][s].tobytes() != b[key][s].tobytes() for s in a[key]):
                return False
        elif not np.array_equal(np.asarray(a[key]), np.asarray(b[key]), equal_nan=True):
            return False
    return True


def _render_chunk(indices: list[int]) -> list[dict]:
    return [render_sample(i, SynthConfig(sizes=(56, 112))) for i in indices]


# --- determinism and output contract -----------------------------------------------------------

def test_same_seed_and_index_give_identical_bytes():
    cfg = SynthConfig(sizes=(56, 112))
    for i in (0, 7, 123):
        assert _same(render_sample(i, cfg), render_sample(i, cfg))


def test_other_seed_or_index_give_other_images():
    a = render_sample(3, SynthConfig(sizes=(56,)))["images"][56]
    assert not np.array_equal(a, render_sample(3, SynthConfig(seed=1, sizes=(56,)))["images"][56])
    assert not np.array_equal(a, render_sample(4, SynthConfig(sizes=(56,)))["images"][56])


def test_worker_processes_reproduce_the_serial_run():
    serial = _render_chunk(list(range(6)))
    with mp.get_context("fork").Pool(2) as pool:
        parallel = [s for chunk in pool.map(_render_chunk, [[0, 1, 2], [3, 4, 5]]) for s in chunk]
    assert all(_same(a, b) for a, b in zip(serial, parallel))


def test_output_contract(batch):
    face = next(s for s in batch if s["face"] == 1)
    neg = next(s for s in batch if s["face"] == 0)
    for s in (face, neg):
        assert s["images"][32].shape == (32, 32, 3) and s["images"][32].dtype == np.uint8
        assert s["attributes"].shape == (len(SYNTH_ATTRIBUTES),) and s["attributes"].dtype == np.int8
        assert s["landmarks"].shape == (5, 2) and s["landmarks"].dtype == np.float32
        assert s["bbox"].shape == (4,) and s["pose"].shape == (3,)
    assert set(np.unique(face["attributes"])) <= {0, 1}
    # non-faces carry exactly the schema's missing markers
    for key in ("attributes", "landmarks", "bbox", "identity", "expression", "pose", "pose_class"):
        assert LABELS[key].is_missing(np.asarray(neg[key])[None])[0], key
    assert len(SYNTH_ATTRIBUTES) >= 20 and len(set(SYNTH_ATTRIBUTES)) == len(SYNTH_ATTRIBUTES)


def test_all_sizes_come_from_one_render():
    s = render_sample(5, SynthConfig(sizes=(56, 112, 224)))
    img = {k: v.astype(np.float32) for k, v in s["images"].items()}
    down = img[224].reshape(56, 4, 56, 4, 3).mean(axis=(1, 3))
    assert np.abs(down - img[56]).mean() < 6.0  # same picture up to independent sensor noise
    assert np.abs(down - np.roll(img[56], 6, axis=1)).mean() > 2 * np.abs(down - img[56]).mean()


def test_negative_fraction(batch):
    frac = np.mean([s["face"] == 0 for s in batch])
    assert 0.19 < frac < 0.31  # default 0.25


def test_config_errors():
    with pytest.raises(ConfigError):
        SynthConfig(identities=0)
    with pytest.raises(ConfigError):
        SynthConfig(sizes=())
    with pytest.raises(UnknownNameError):
        render_face_with_attributes(0, {"Wearing_Cape": 1}, SynthConfig(), 56)


# --- label geometry ----------------------------------------------------------------------------

def test_tight_crops_of_turned_heads_keep_their_landmarks_inside():
    """Head taller than the crop and turned: the head shrinks just enough that every point stays
    2 % inside the edge (without the fit the nose of a profile leaves a 140 % crop)."""
    cfg = SynthConfig(sizes=(32,), face_scale=(1.35, 1.4), frontal_fraction=0.0, yaw_max=70.0)
    samples = [render_sample(i, cfg) for i in range(200)]
    lms = np.array([s["landmarks"] for s in samples if s["face"] == 1])
    assert lms.min() >= 0.02 - 1e-4 and lms.max() <= 0.98 + 1e-4
    reach = np.abs(lms - 0.5).max(axis=(1, 2))
    assert (reach > 0.46).mean() > 0.3  # many are fitted right up to the margin: the head is shrunk no more than needed


def test_landmarks_inside_bbox_and_image(faces):
    for s in faces:
        lm, (x, y, w, h) = s["landmarks"], s["bbox"]
        assert np.all((lm >= 0) & (lm <= 1))
        assert x >= 0 and y >= 0 and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6 and w > 0.2 and h > 0.3
        assert np.all(lm[:, 0] >= x - 1e-5) and np.all(lm[:, 0] <= x + w + 1e-5)
        assert np.all(lm[:, 1] >= y - 1e-5) and np.all(lm[:, 1] <= y + h + 1e-5)


def test_landmark_order_follows_celeba(faces):
    frontal = [s for s in faces if abs(s["pose"][0]) < 30]
    assert len(frontal) > 250
    for s in frontal:
        lm = s["landmarks"]
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]    # "left" = smaller x in the image
    rolled = [s for s in frontal if abs(s["pose"][2]) < 10]
    for s in rolled:
        lm = s["landmarks"]
        assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()    # eyes above the nose above the mouth


def test_nose_moves_with_yaw():
    cfg = SynthConfig(sizes=(112,))
    left = render_face_with_attributes(3, {}, cfg, 112, pose=(-40, 0, 0))["landmarks"]
    right = render_face_with_attributes(3, {}, cfg, 112, pose=(40, 0, 0))["landmarks"]
    # negative yaw = face turned to its own left: the nose goes to the image right of the eyes' middle
    assert left[2, 0] > left[:2, 0].mean() + 0.03
    assert right[2, 0] < right[:2, 0].mean() - 0.03


def test_pupil_is_dark_at_the_eye_landmarks():
    cfg = SynthConfig(sizes=(224,), camera_effects=False)  # pixel-exact thresholds: no JPEG, no low resolution
    plain = {"Eyeglasses": 0, "Smiling": 0, "Blurry": 0, "Narrow_Eyes": 0, "Wearing_Hat": 0}
    for ident in range(8):
        s = render_face_with_attributes(ident, plain, cfg, 224, index=ident, pose=(0, 0, 0))
        lum = s["images"][224].astype(np.float32).mean(axis=2)
        lm = np.round(s["landmarks"] * 224).astype(int)
        cheek = np.median(lum[lm[2, 1] - 2:lm[2, 1] + 3, lm[0, 0] - 2:lm[0, 0] + 3])
        for x, y in lm[:2]:
            pupil = np.median(lum[y - 1:y + 2, x - 1:x + 2])
            assert pupil < 0.5 * cheek
            # 7 px to either side (past the iris, inside the eye opening) is eye white: bright
            assert min(lum[y:y + 2, x - 8:x - 6].mean(), lum[y:y + 2, x + 6:x + 8].mean()) > 4 * pupil


# --- attributes visible where they are drawn ---------------------------------------------------

def _toggle(name: str, extra: dict | None = None, ident: int = 11, size: int = 112):
    cfg = SynthConfig(sizes=(size,), face_scale=(0.6, 1.0))  # a head crop: its corners show background, not the hat
    base = {"Blurry": 0, "Smiling": 0, **(extra or {})}
    off = render_face_with_attributes(ident, {**base, name: 0}, cfg, size, index=ident, pose=(0, 0, 0))
    on = render_face_with_attributes(ident, {**base, name: 1}, cfg, size, index=ident, pose=(0, 0, 0))
    assert on["attributes"][A[name]] == 1 and off["attributes"][A[name]] == 0
    diff = np.abs(on["images"][size].astype(int) - off["images"][size].astype(int)).max(axis=2) > 25
    ys, xs = np.nonzero(diff)
    return diff, xs / size, ys / size, off["landmarks"]


@pytest.mark.parametrize("name", ["Eyeglasses", "Wearing_Hat", "Smiling", "Mouth_Slightly_Open", "Mustache"])
def test_attribute_changes_pixels_only_where_it_is_drawn(name):
    extra = {"Mouth_Slightly_Open": 0} if name in ("Smiling", "Mustache") else {}
    if name == "Mustache":
        extra.update({"No_Beard": 1, "5_o_Clock_Shadow": 0})  # a clean-shaven upper lip to start from
    diff, xs, ys, lm = _toggle(name, extra)
    eye_y, nose_y, mouth_y = lm[:2, 1].mean(), lm[2, 1], lm[3:, 1].mean()
    assert len(xs) > 20, "switching the attribute on must change the picture"
    for corner in (diff[:10, :10], diff[:10, -10:], diff[-10:, :10], diff[-10:, -10:]):
        assert not corner.any()
    if name == "Eyeglasses":
        inside = np.abs(ys - eye_y) < 0.09
    elif name == "Wearing_Hat":
        inside = ys < eye_y - 0.02
    elif name == "Mustache":
        inside = (ys > nose_y - 0.02) & (ys < mouth_y + 0.04) & (np.abs(xs - lm[2, 0]) < 0.15)
    else:  # Smiling, Mouth_Slightly_Open: the mouth
        inside = (ys > nose_y) & (np.abs(xs - lm[3:, 0].mean()) < 0.2)
    if name == "Smiling":  # a smile also narrows the eyes: the mouth need only be most of the change
        assert inside.sum() > 20 and not ((ys > eye_y + 0.06) & ~inside).any()
    else:
        assert inside.mean() > 0.9, f"{name} changed pixels elsewhere"


def test_labels_follow_the_overrides():
    cfg = SynthConfig(sizes=(56,))
    s = render_face_with_attributes(2, {"Smiling": 1, "Bald": 1, "Male": 1, "Mustache": 1}, cfg, 56)
    a = s["attributes"]
    assert s["expression"] == HAPPY and a[A["Smiling"]] == 1 and a[A["Bald"]] == 1
    assert a[A["Black_Hair"]] == a[A["Blond_Hair"]] == a[A["Brown_Hair"]] == a[A["Bangs"]] == 0


# --- pose, expression, prevalence --------------------------------------------------------------

def test_pose_classes_match_yaw_and_all_occur(faces):
    pose = np.array([s["pose"] for s in faces])
    cls = np.array([s["pose_class"] for s in faces])
    assert np.array_equal(cls, pose_class_from_yaw(pose[:, 0]))
    assert set(cls.tolist()) == {0, 1, 2, 3, 4}
    assert np.all(np.abs(pose[:, 0]) <= 70) and np.all(np.abs(pose[:, 1:]) <= 25)
    assert 0.35 < np.mean(cls == 2) < 0.75  # most mass near frontal


def test_expression_consistent_with_mouth_and_smile(faces):
    expr = np.array([s["expression"] for s in faces])
    att = np.array([s["attributes"] for s in faces])
    assert np.array_equal(att[:, A["Smiling"]] == 1, expr == HAPPY)
    assert np.all(att[np.isin(expr, [SURPRISE, FEAR]), A["Mouth_Slightly_Open"]] == 1)
    assert set(expr.tolist()) == set(range(7))


def test_attribute_prevalences_are_imbalanced_like_celeba(faces):
    prev = dict(zip(SYNTH_ATTRIBUTES, np.array([s["attributes"] for s in faces]).mean(axis=0)))
    assert 0.03 < prev["Eyeglasses"] < 0.15
    assert 0.01 < prev["Wearing_Hat"] < 0.10
    assert prev["Bald"] < 0.06 and prev["Mustache"] < 0.10
    assert 0.3 < prev["Male"] < 0.55 and 0.35 < prev["Smiling"] < 0.6
    assert prev["No_Beard"] > 0.75 and prev["Young"] > 0.65
    assert sum(abs(p - 0.5) > 0.3 for p in prev.values()) >= 15  # most attributes far from 50/50


def test_attributes_are_consistent(faces):
    att = np.array([s["attributes"] for s in faces])
    bald = att[:, A["Bald"]] == 1
    hair = att[:, [A[n] for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Bangs")]]
    assert bald.any() and not hair[bald].any()
    female = att[:, A["Male"]] == 0
    assert not att[female][:, [A["Mustache"], A["Goatee"], A["5_o_Clock_Shadow"]]].any()
    assert np.all(att[female, A["No_Beard"]] == 1)
    gray = att[:, A["Gray_Hair"]] == 1
    assert gray.any() and att[gray, A["Young"]].mean() < 0.1
    assert np.all(att[:, [A[n] for n in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]].sum(1) <= 1)


def test_identity_traits_are_stable(faces):
    per_image = {A[n] for n in ("Eyeglasses", "Smiling", "Mouth_Slightly_Open", "Wearing_Hat",
                                "Wearing_Lipstick", "Wearing_Earrings", "Blurry")}
    fixed = [k for k in range(len(SYNTH_ATTRIBUTES)) if k not in per_image]
    seen: dict[int, np.ndarray] = {}
    repeats = 0
    for s in faces:
        a = s["attributes"][fixed]
        if s["identity"] in seen:
            repeats += 1
            assert np.array_equal(seen[s["identity"]], a)
        seen.setdefault(s["identity"], a)
    assert repeats > 50


# --- scenes ------------------------------------------------------------------------------------

def test_scenes_boxes_inside_and_empty_scenes_occur():
    cfg = SynthConfig()
    counts = []
    for i in range(40):
        sc = render_scene(i, cfg, size=128)
        k = len(sc["boxes"])
        counts.append(k)
        assert sc["image"].shape == (128, 128, 3) and sc["image"].dtype == np.uint8
        assert sc["boxes"].shape == (k, 4) and sc["landmarks"].shape == (k, 5, 2)
        b = sc["boxes"]
        assert np.all(b[:, :2] >= 0) and np.all(b[:, :2] + b[:, 2:] <= 1 + 1e-6) and np.all(b[:, 2:] > 0)
        lm = sc["landmarks"]
        assert np.all(lm[..., 0] >= b[:, None, 0] - 1e-5) and np.all(lm[..., 0] <= (b[:, 0] + b[:, 2])[:, None] + 1e-5)
    assert 0 in counts and max(counts) <= 3 and sum(c >= 2 for c in counts) > 5
    assert np.array_equal(render_scene(3, cfg, 128)["image"], render_scene(3, cfg, 128)["image"])
