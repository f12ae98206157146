"""Batch augmentation: labels follow the pixels, flips are involutions, draws are seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facemtl.data.augment import FLIP_LANDMARKS, AugmentConfig, BatchAugment, batch_generator
from facemtl.errors import ConfigError, UnknownNameError

S = 64


def _batch(n: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.4, 0.7], [0.6, 0.7]])
    lm = base + (torch.rand(n, 5, 2, generator=g) - 0.5) * 0.06
    return {
        "landmarks": lm,
        "bbox": torch.tensor([[0.2, 0.2, 0.6, 0.65]]).repeat(n, 1),
        "pose": torch.stack([torch.linspace(-60, 60, n), torch.zeros(n), torch.linspace(-10, 10, n)], 1),
        "pose_class": torch.tensor([0, 1, 2, 3, 4, 2, -1, 1] * (n // 8), dtype=torch.int8),
        "attributes": torch.ones(n, 3, dtype=torch.int8),
        "face": torch.ones(n, dtype=torch.int8),
        "present": {"landmarks": n},
    }


def _dots(lm: torch.Tensor, which: int) -> torch.Tensor:
    """(B, 3, S, S) black images with a small bright Gaussian blob at landmark ``which``."""
    ys, xs = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    c = lm[:, which] * S  # (B, 2) pixels
    d2 = (xs[None] - c[:, 0, None, None]) ** 2 + (ys[None] - c[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * 1.2**2)).unsqueeze(1).repeat(1, 3, 1, 1)


def _peak(img: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre of each image's blob, in [0, 1] coordinates (B, 2)."""
    w = img[:, 0]
    w = w * (w > 0.3 * w.flatten(1).max(1).values.view(-1, 1, 1))
    ys, xs = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    tot = w.sum((1, 2))
    return torch.stack([(w * xs).sum((1, 2)) / tot, (w * ys).sum((1, 2)) / tot], 1) / S


def test_flip_twice_is_identity():
    aug = BatchAugment(AugmentConfig(flip=1.0))
    b = _batch()
    x = [torch.rand(8, 3, S, S)]
    y1, b1 = aug(x, b, epoch=0, batch_index=0)
    y2, b2 = aug(y1, b1, epoch=0, batch_index=0)
    assert not torch.allclose(y1[0], x[0])
    assert torch.allclose(y2[0], x[0], atol=1e-5)
    for k in ("landmarks", "bbox", "pose"):
        assert torch.allclose(b2[k], b[k], atol=1e-5), k
    assert torch.equal(b2["pose_class"], b["pose_class"])
    # one flip: mirrored, left/right swapped, yaw and roll negated, pose class mirrored, -1 kept
    assert torch.allclose(b1["landmarks"][:, 0, 0], 1 - b["landmarks"][:, 1, 0], atol=1e-5)
    assert torch.allclose(b1["pose"][:, 0], -b["pose"][:, 0]) and torch.allclose(b1["pose"][:, 2], -b["pose"][:, 2])
    assert b1["pose_class"].tolist() == [4, 3, 2, 1, 0, 2, -1, 3]
    assert torch.allclose(b1["bbox"][:, 0], 1 - b["bbox"][:, 0] - b["bbox"][:, 2], atol=1e-5)
    assert torch.equal(b1["attributes"], b["attributes"]) and b1["present"] == b["present"]


@pytest.mark.parametrize(("preset", "stretch", "warp"), [("light", None, None), ("standard", None, None), ("strong", None, None),
                                                        ("strong", 0.25, None), ("standard", None, 0.06), ("none", None, 0.06)])
def test_landmarks_follow_the_pixels(preset, stretch, warp):
    """A dot drawn at a landmark is still under that landmark's transformed position."""
    b = _batch(16, seed=1)
    # photometric changes off: they would move nothing but add noise to the blob's centre
    aug = BatchAugment(AugmentConfig(preset=preset, brightness=0, contrast=0, saturation=0, hue=0, grey=0, blur=0, noise=0, lowres=0,
                                     texture=0, erase=0, stretch=stretch, warp=warp))
    for k in range(5):
        out, nb = aug([_dots(b["landmarks"], k)], b, epoch=3, batch_index=k)
        peak = _peak(out[0])
        flipped = nb["pose"][:, 0] * b["pose"][:, 0] < 0
        j = torch.where(flipped, FLIP_LANDMARKS[k], k)  # the flip moved landmark k to index FLIP[k]
        where = nb["landmarks"][torch.arange(16), j]
        err_px = ((peak - where).norm(dim=1) * S).max().item()
        assert err_px < 0.35, (k, err_px)


def test_warp_moves_parts_against_each_other_and_boxes_follow():
    """The warp is not an affine: distances between landmarks change by different factors; each
    side of a box goes where the warp takes that side's midpoint (a dot drawn there); adding the
    warp leaves every other draw as it was."""
    b = _batch(16, seed=2)
    aug = BatchAugment(AugmentConfig(warp=0.05))
    x0, y0, w, h = b["bbox"].unbind(1)
    mids = torch.stack([torch.stack([x0, y0 + h / 2], 1), torch.stack([x0 + w, y0 + h / 2], 1),
                        torch.stack([x0 + w / 2, y0], 1), torch.stack([x0 + w / 2, y0 + h], 1)], 1)
    for k in range(4):  # left, right, top, bottom
        out, nb = aug([_dots(mids, k)], b, epoch=1, batch_index=0)
        seen = _peak(out[0])
        nx0, ny0, nw, nh = nb["bbox"].unbind(1)
        side = [nx0, nx0 + nw, ny0, ny0 + nh][k]
        err_px = ((seen[:, 0 if k < 2 else 1] - side).abs() * S).max().item()
        assert err_px < 0.35, (k, err_px)
    assert ((nb["bbox"][:, 2:] / b["bbox"][:, 2:] - 1).abs() > 0.01).any()  # the box changed shape
    lm0, lm1 = b["landmarks"], nb["landmarks"]
    ratio = lambda lm: (lm[:, 3] - lm[:, 0]).norm(dim=1) / (lm[:, 1] - lm[:, 0]).norm(dim=1)
    assert (ratio(lm1) / ratio(lm0) - 1).abs().max() > 0.02  # proportions change
    assert (lm1 - lm0).abs().max() * S < 0.06 * 2 * S  # by at most about the warp's size
    plain = BatchAugment(AugmentConfig(preset="standard"))._draw(16, batch_generator(0, 1, 2))
    more = BatchAugment(AugmentConfig(preset="standard", warp=0.05))._draw(16, batch_generator(0, 1, 2))
    assert all(torch.equal(plain[k], more[k]) for k in plain if isinstance(plain[k], torch.Tensor))
    with pytest.raises(ConfigError, match="augment.warp"):
        AugmentConfig(warp=0.2)


def test_box_centre_and_roll_follow_the_image():
    aug = BatchAugment(AugmentConfig(rotate=20.0, scale=0.1, translate=0.05))
    b = _batch(8)
    _, nb = aug([torch.zeros(8, 3, S, S)], b, epoch=0, batch_index=5)
    # the eye line turns by exactly minus the roll change (roll is counter-clockwise positive)
    def tilt(lm):
        d = lm[:, 1] - lm[:, 0]
        return torch.atan2(d[:, 1], d[:, 0]) * 180 / math.pi
    assert torch.allclose(tilt(nb["landmarks"]) - tilt(b["landmarks"]), b["pose"][:, 2] - nb["pose"][:, 2], atol=1e-3)
    assert torch.allclose(nb["pose"][:, 0], b["pose"][:, 0])  # yaw is not changed by an in-plane turn
    # the box's centre moves like a landmark would; its size scales with the zoom only
    scale = nb["bbox"][:, 2] / b["bbox"][:, 2]
    assert torch.allclose(nb["bbox"][:, 3] / b["bbox"][:, 3], scale) and ((scale > 0.89) & (scale < 1.11)).all()


def test_stretch_widens_and_shortens_in_the_faces_axes():
    aug = BatchAugment(AugmentConfig(stretch=0.2))
    b = _batch(32)
    _, nb = aug([torch.zeros(32, 3, S, S)], b, epoch=0, batch_index=2)
    wx = nb["bbox"][:, 2] / b["bbox"][:, 2]
    hy = nb["bbox"][:, 3] / b["bbox"][:, 3]
    assert torch.allclose(wx * hy, torch.ones(32), atol=1e-5)  # a, then 1 / a: the area is kept
    assert ((wx > 1 / 1.2 - 1e-5) & (wx < 1.2 + 1e-5)).all() and (wx > 1.05).any() and (wx < 0.95).any()
    eyes = (nb["landmarks"][:, 1, 0] - nb["landmarks"][:, 0, 0]) / (b["landmarks"][:, 1, 0] - b["landmarks"][:, 0, 0])
    assert torch.allclose(eyes, wx, atol=1e-5)  # the eye distance widens with the box
    centre = nb["bbox"][:, :2] + nb["bbox"][:, 2:] / 2
    assert torch.allclose(centre, torch.full((32, 2), 0.5) + (b["bbox"][:, :2] + b["bbox"][:, 2:] / 2 - 0.5) * torch.stack([wx, hy], 1), atol=1e-5)
    # adding the stretch leaves every other draw as it was
    base = BatchAugment(AugmentConfig(preset="standard"))
    more = BatchAugment(AugmentConfig(preset="standard", stretch=0.2))
    x = [torch.rand(8, 3, S, S)]
    _, b0 = base(x, _batch(8), epoch=1, batch_index=0)
    _, b1 = more(x, _batch(8), epoch=1, batch_index=0)
    assert torch.equal(b0["pose"], b1["pose"]) and not torch.allclose(b0["landmarks"], b1["landmarks"])


def test_roll_sign_matches_synthfaces():
    """SynthFaces draws a positive roll counter-clockwise on screen: the eye line tilts by -roll."""
    from facemtl.data.synth import SynthConfig
    from facemtl.data.synth.render import render_face_with_attributes

    cfg = SynthConfig(identities=4, sizes=(64,))
    tilts = []
    for roll in (-15.0, 15.0):
        s = render_face_with_attributes(1, {}, cfg, 64, pose=(0.0, 0.0, roll))
        d = s["landmarks"][1] - s["landmarks"][0]
        tilts.append(math.degrees(math.atan2(d[1], d[0])))
    assert tilts[0] == pytest.approx(15.0, abs=3.0) and tilts[1] == pytest.approx(-15.0, abs=3.0)


def test_same_seed_same_batch_and_nan_labels_stay_missing():
    aug = BatchAugment(AugmentConfig(preset="strong"), seed=4)
    b = _batch()
    b["landmarks"][2] = float("nan")
    x = [torch.rand(8, 3, S, S), torch.rand(8, 3, 2 * S, 2 * S)]
    y1, b1 = aug(x, b, epoch=1, batch_index=7)
    y2, b2 = aug(x, b, epoch=1, batch_index=7)
    y3, _ = aug(x, b, epoch=1, batch_index=8)
    assert all(torch.equal(p, q) for p, q in zip(y1, y2))
    assert torch.equal(torch.nan_to_num(b1["landmarks"]), torch.nan_to_num(b2["landmarks"]))
    assert not torch.equal(y1[0], y3[0])
    assert torch.isnan(b1["landmarks"][2]).all() and torch.isfinite(b1["landmarks"][[0, 1, 3]]).all()
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in y1)
    # both input sizes of a sample got the same geometry: the small one matches the big one downsampled
    assert b1["landmarks"].shape == (8, 5, 2)


def test_photometric_changes_keep_geometry_and_range():
    aug = BatchAugment(AugmentConfig(preset="strong", flip=0, scale=0, rotate=0, translate=0))
    b = _batch()
    x = [torch.rand(8, 3, S, S)]
    y, nb = aug(x, b, epoch=0, batch_index=0)
    assert torch.equal(nb["landmarks"], b["landmarks"]) and not torch.allclose(y[0], x[0])
    grey = AugmentConfig(grey=1.0)
    yg, _ = BatchAugment(grey)(x, b, epoch=0, batch_index=0)
    assert torch.allclose(yg[0][:, 0], yg[0][:, 1]) and torch.allclose(yg[0][:, 1], yg[0][:, 2])


def test_lowres_removes_fine_detail_only_where_drawn():
    """A shrunk-and-enlarged image keeps its mean and coarse shape but loses its finest detail; the
    samples not drawn and every label are untouched; the factor stays in LOWRES_FACTORS."""
    from facemtl.data.augment import LOWRES_FACTORS, batch_generator

    g = torch.Generator().manual_seed(1)
    coarse = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=(S, S), mode="bilinear")
    stripes = (torch.arange(S) % 2).float().view(1, 1, 1, S).expand(16, 3, S, S)  # 1 px stripes
    x = [(0.6 * coarse + 0.4 * stripes).clamp(0, 1)]
    aug = BatchAugment(AugmentConfig(lowres=0.5))
    b = _batch(16)
    y, nb = aug(x, b, epoch=0, batch_index=3)
    p = aug._draw(16, batch_generator(0, 0, 3))
    on = p["lowres"]
    assert 0 < int(on.sum()) < 16
    assert float(p["lowres_factor"].min()) >= LOWRES_FACTORS[0] and float(p["lowres_factor"].max()) <= LOWRES_FACTORS[1]
    assert torch.equal(y[0][~on], x[0][~on]) and torch.equal(nb["landmarks"], b["landmarks"])
    assert torch.equal(nb["attributes"], b["attributes"])  # no attribute names given: labels untouched
    named = BatchAugment(AugmentConfig(lowres=0.5), attribute_names=("Smiling", "Blurry", "Male"))
    _, nb2 = named(x, b, epoch=0, batch_index=3)
    assert (nb2["attributes"][on, 1] == -1).all() and (nb2["attributes"][~on, 1] == 1).all()
    assert (nb2["attributes"][:, [0, 2]] == 1).all() and (b["attributes"] == 1).all()  # Blurry only; input kept

    def stripe_energy(t):  # amplitude of the 1 px alternation
        return (t[..., 1:] - t[..., :-1]).abs().mean((1, 2, 3))

    assert (stripe_energy(y[0][on]) < 0.5 * stripe_energy(x[0][on])).all()
    assert torch.allclose(y[0][on].mean((1, 2, 3)), x[0][on].mean((1, 2, 3)), atol=0.02)
    smooth = torch.nn.functional.interpolate(torch.rand(16, 3, 4, 4, generator=g), size=(S, S), mode="bilinear", align_corners=True)
    ys, _ = aug([smooth], b, epoch=0, batch_index=3)
    assert float((ys[0] - smooth).abs().mean()) < 0.01  # content coarser than the shrunk grid survives


def test_texture_adds_another_samples_fine_detail():
    """A chosen sample gains amount x (source - its 5x5 binomial blur) of the sample it draws; a
    smooth source adds (almost) nothing; samples not drawn and every label are untouched."""
    from facemtl.data.augment import TEXTURE_AMOUNT, _binomial_blur, batch_generator, texture_sources

    g = torch.Generator().manual_seed(2)
    x = torch.rand(16, 3, S, S, generator=g) * 0.5 + 0.25  # fine noise, no clamping needed
    x[8:] = 0.5  # flat samples: no detail to give
    aug = BatchAugment(AugmentConfig(texture=0.6))
    b = _batch(16)
    y, nb = aug([x], b, epoch=2, batch_index=5)
    p = aug._draw(16, batch_generator(0, 2, 5))
    on, k = p["texture"], p["texture_amount"]
    src = texture_sources(p["texture_pick"], b["face"])  # the batch has no non-face: any sample
    assert 0 < int(on.sum()) < 16 and float(k.min()) >= TEXTURE_AMOUNT[0] and float(k.max()) <= TEXTURE_AMOUNT[1]
    detail = x - _binomial_blur(_binomial_blur(x))
    want = torch.where(on.view(-1, 1, 1, 1), x + k.view(-1, 1, 1, 1) * detail[src], x).clamp(0, 1)
    assert torch.allclose(y[0], want, atol=1e-6)
    from_flat = on & (src >= 8)
    assert from_flat.any() and torch.allclose(y[0][from_flat], x[from_flat], atol=1e-6)
    from_noise = on & (src < 8)
    assert from_noise.any() and ((y[0][from_noise] - x[from_noise]).abs().mean((1, 2, 3)) > 0.02).all()
    assert torch.equal(nb["landmarks"], b["landmarks"]) and torch.equal(nb["attributes"], b["attributes"])
    face = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1] * 2, dtype=torch.int8)  # with non-faces, only they give detail
    many = face.repeat(25)  # 400 samples, 100 non-faces
    got = set(texture_sources(torch.rand(400, generator=g), many).tolist())
    assert got <= set((many == 0).nonzero().flatten().tolist()) and len(got) > 80
    assert set(texture_sources(torch.linspace(0, 0.999, 50), face).tolist()) == {1, 4, 9, 12}


def test_hue_rotation_keeps_luma_and_full_turn_is_identity():
    from facemtl.data.augment import _LUMA, _hue_matrix

    h = _hue_matrix(torch.tensor([0.7, 2 * math.pi]))
    luma = torch.tensor(_LUMA)
    assert torch.allclose(luma @ h[0], luma, atol=1e-5)  # grey level of every colour unchanged
    assert torch.allclose(h[1], torch.eye(3), atol=1e-5)


def test_colour_matrix_equals_the_steps_one_by_one():
    """The folded colour map matches brightness, contrast, saturation, hue, grey applied in turn."""
    from facemtl.data.augment import _LUMA, _hue_matrix

    x = torch.rand(6, 3, 16, 16)
    aug = BatchAugment(AugmentConfig(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.05, grey=0.5))
    y, _ = aug([x], _batch(6) | {"pose_class": torch.zeros(6, dtype=torch.int8)}, epoch=0, batch_index=1)
    p = aug._draw(6, __import__("facemtl.data.augment", fromlist=["batch_generator"]).batch_generator(0, 0, 1))
    w = torch.tensor(_LUMA).view(1, 3, 1, 1)

    def grey(t):
        return (t * w).sum(1, keepdim=True)

    z = x * p["brightness"].view(-1, 1, 1, 1)
    mean = grey(z).mean((2, 3), keepdim=True)
    z = (z - mean) * p["contrast"].view(-1, 1, 1, 1) + mean
    z = (z - grey(z)) * p["saturation"].view(-1, 1, 1, 1) + grey(z)
    z = torch.einsum("bij,bjhw->bihw", _hue_matrix(p["hue"]), z)
    z = torch.where(p["grey"].view(-1, 1, 1, 1), grey(z).expand_as(z), z)
    assert torch.allclose(y[0], z.clamp(0, 1), atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(UnknownNameError, match="standard"):
        AugmentConfig(preset="extreme").resolved()
    with pytest.raises(ConfigError, match="augment.flip"):
        AugmentConfig(flip=1.5).resolved()
    with pytest.raises(ConfigError, match="augment.scale"):
        AugmentConfig(scale=1.0).resolved()
    assert not AugmentConfig().enabled and AugmentConfig(preset="light").enabled


def test_validation_never_augments_and_recipes_set_a_preset():
    from facemtl.engine.config import load_recipe, recipe_names

    for name in recipe_names():
        assert load_recipe(name).augment.preset in ("none", "light", "standard", "strong"), name
    assert np.isclose(AugmentConfig(preset="standard").resolved()["flip"], 0.5)


@pytest.mark.parametrize("largest", [3, 7])
def test_randconv_filters_chosen_samples_with_their_own_kernel(largest):
    """Each chosen sample equals mix x itself + (1 - mix) x (its own random k x k convolution,
    reflect-padded, rescaled to the sample's per-channel mean and sd), computed here one sample at a
    time; samples not drawn are untouched; colour attributes become unknown, the rest are kept."""
    from facemtl.data.augment import batch_generator

    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.interpolate(torch.rand(24, 3, 16, 16, generator=g), size=(S, S), mode="bilinear") * 0.6 + 0.2
    aug = BatchAugment(AugmentConfig(randconv=0.6, randconv_kernel=largest), attribute_names=("Smiling", "Blond_Hair", "Pale_Skin"))
    b = _batch(24)
    y, nb = aug([x], b, epoch=1, batch_index=7)
    p = aug._draw(24, batch_generator(0, 1, 7))
    on, size, w, mix = p["randconv"], p["randconv_size"], p["randconv_weight"], p["randconv_mix"]
    assert 0 < int(on.sum()) < 24 and set(size[on].tolist()) <= set(range(1, largest + 1, 2)) and len(set(size[on].tolist())) > 1
    for i in range(24):
        if not on[i]:
            assert torch.equal(y[0][i], x[i])
            continue
        k = int(size[i])
        lo = (largest - k) // 2
        kernel = w[i][..., lo:lo + k, lo:lo + k] / math.sqrt(3 * k * k)
        src = x[i:i + 1]
        pad = torch.nn.functional.pad(src, (k // 2,) * 4, mode="reflect") if k > 1 else src
        f = torch.nn.functional.conv2d(pad, kernel)[0]
        f = (f - f.mean((1, 2), keepdim=True)) / (f.std((1, 2), keepdim=True) + 1e-6) * x[i].std((1, 2), keepdim=True) + x[i].mean((1, 2), keepdim=True)
        want = (mix[i] * x[i] + (1 - mix[i]) * f).clamp(0, 1)
        assert torch.allclose(y[0][i], want, atol=1e-5), i
        assert float((y[0][i] - x[i]).abs().mean()) > 1e-3 or float(mix[i]) > 0.95
    assert (nb["attributes"][on][:, 1:] == -1).all() and (nb["attributes"][~on] == 1).all()
    assert (nb["attributes"][:, 0] == 1).all() and (b["attributes"] == 1).all()  # Smiling kept; input not modified
    assert torch.equal(nb["landmarks"], b["landmarks"])


def test_randconv_kernel_is_a_shape_not_a_switch():
    """The largest kernel must be odd and 1-15; set alone, it augments nothing."""
    for bad in (0, 2, 4.5, 17):
        with pytest.raises(ConfigError, match="randconv_kernel"):
            AugmentConfig(randconv=0.5, randconv_kernel=bad)
    assert not AugmentConfig(randconv_kernel=3).enabled and not BatchAugment(randconv_kernel=3).enabled
    assert AugmentConfig(randconv=0.1).enabled
