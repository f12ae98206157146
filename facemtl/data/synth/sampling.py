"""SynthFaces configuration, per-image sampling and the attribute labels.

``SynthConfig`` is stored as provenance in every cache, so all of its fields are JSON-friendly.
``sample_look`` turns one image's random stream into a ``Look``; ``attributes_of`` derives the
binary attributes from what is actually drawn (identity traits plus the look), which keeps the
labels consistent with the pixels by construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from facemtl.data.schema import CELEBA_ATTRIBUTES, EXPRESSION_NAMES
from facemtl.data.synth.identity import BROW, BUSHY_BROW, HAIR_COLOURS, SKIN_TONES, Identity
from facemtl.data.synth.paint import Look
from facemtl.data.synth.photos import resolve_source
from facemtl.errors import ConfigError, UnknownNameError

HAPPY, NEUTRAL = EXPRESSION_NAMES.index("Happy"), EXPRESSION_NAMES.index("Neutral")
# FER2013 order. Happy is frequent so that Smiling (== Happy) is ~47 % as in CelebA (48 %).
EXPRESSION_WEIGHTS = (0.07, 0.05, 0.06, 0.47, 0.08, 0.08, 0.19)
# Probability of an open mouth per expression: Fear and Surprise always, Sad rarely.
MOUTH_OPEN_P = (0.35, 0.35, 1.0, 0.55, 0.1, 1.0, 0.15)
HAT_COLOURS = ((40, 40, 45), (150, 30, 35), (30, 60, 120), (200, 190, 170), (70, 110, 60), (120, 90, 60),
               (225, 225, 220), (90, 90, 95), (190, 150, 40), (110, 50, 100))


#: the head-height-over-crop-side range a ``face_scale`` may take (below: a speck; above: the
#: crop holds less than the eyes-to-mouth region)
FACE_SCALE_LIMITS = (0.3, 2.0)
#: what a ``face_scale`` must be, for error messages
FACE_SCALE_RULE = (f"two numbers LO, HI with {FACE_SCALE_LIMITS[0]} <= LO <= HI <= {FACE_SCALE_LIMITS[1]} "
                   "(head height over the crop side)")


def valid_face_scale(value) -> bool:
    """Whether ``value`` is a ``face_scale`` range: two numbers LO <= HI within :data:`FACE_SCALE_LIMITS`."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return False
    return FACE_SCALE_LIMITS[0] <= lo <= hi <= FACE_SCALE_LIMITS[1]


def check_face_scale(value, what: str) -> tuple[float, float]:
    """``value`` as ``(LO, HI)`` floats; a ConfigError naming ``what`` when it is not a valid range."""
    if not valid_face_scale(value):
        raise ConfigError(f"{what} must be {FACE_SCALE_RULE}, got {value}.")
    lo, hi = (float(v) for v in value)
    return lo, hi


@dataclass(frozen=True)
class SynthConfig:
    """Generator parameters of a SynthFaces set (all JSON-serialisable, stored as provenance)."""

    seed: int = 0
    identities: int = 200                 # number of distinct identities
    sizes: tuple[int, ...] = (56, 112, 224)
    negative_fraction: float = 0.25       # share of non-face crops (face = 0) for detection
    supersample: int = 2                  # render at this multiple of the largest size ...
    max_render: int = 224                 # ... capped here (or at the largest size if that is larger)
    yaw_max: float = 70.0                 # degrees
    frontal_fraction: float = 0.55        # share of yaws drawn from N(0, frontal_yaw_sd), the rest uniform
    frontal_yaw_sd: float = 11.0
    pitch_sd: float = 9.0                 # clipped to +-25 degrees
    roll_sd: float = 8.0                  # clipped to +-25 degrees
    face_scale: tuple[float, float] = (0.6, 1.4)  # head height (skull top to chin) / crop side: loose head crops to brow-to-chin face crops
    jitter: float = 0.05                  # head centre offset, fraction of the crop side
    blur_fraction: float = 0.05           # share of blurred images (the Blurry attribute)
    noise_sd: tuple[float, float] = (1.5, 7.0)      # sensor noise, grey levels at render resolution
    scene_empty_fraction: float = 0.15    # share of scenes without any face
    # real photos (scikit-image's bundled sample photos, see photos.py): "auto" uses them when
    # scikit-image is installed and is stored resolved, as "skimage" or "none" (procedural stand-ins)
    photo_source: str = "auto"
    photo_background: float = 0.5         # share of face crops in front of a photo window
    # non-faces: photo windows; windows of scenes of people away from every face; clutter with face slivers
    negative_mix: tuple[float, float, float] = (0.4, 0.35, 0.25)
    skin_blobs: float = 1.0               # scales the chance of a skin-coloured blob in a non-face (0: none)
    face_slivers: float = 0.6             # share of clutter non-faces with a sliver of a face at an edge
    # camera effects (False: none of the ones below; Blurry images are still blurred)
    camera_effects: bool = True
    jpeg_fraction: float = 0.5            # share of images stored through JPEG ...
    jpeg_quality: tuple[int, int] = (30, 95)  # ... at a quality drawn from this range
    lowres_fraction: float = 0.25         # share of images captured at low resolution ...
    lowres_face_px: tuple[float, float] = (56.0, 112.0)  # ... with the head this many pixels tall
    motion_blur_fraction: float = 0.1     # mild motion blur (at most 1.2 % of the side)
    white_balance: float = 0.08           # sd of the log colour cast (blue-amber; green-magenta 0.4x)
    gamma_max: float = 1.3                # gamma drawn log-uniformly in [1 / gamma_max, gamma_max]
    vignette: float = 0.35                # strongest darkening of the corners (60 % of the images)
    chroma_noise: float = 4.0             # largest sd of the 2x2-blotched colour noise (half of the images)

    def __post_init__(self) -> None:
        if self.identities < 1:
            raise ConfigError(f"SynthConfig.identities must be >= 1, got {self.identities}.")
        if not self.sizes or any(int(s) < 8 for s in self.sizes):
            raise ConfigError(f"SynthConfig.sizes must be square sizes >= 8, got {self.sizes}.")
        if not 0.0 <= self.negative_fraction < 1.0:
            raise ConfigError(f"SynthConfig.negative_fraction must be in [0, 1), got {self.negative_fraction}.")
        if self.seed < 0:
            raise ConfigError(f"SynthConfig.seed must be >= 0, got {self.seed}.")
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        object.__setattr__(self, "face_scale", check_face_scale(self.face_scale, "SynthConfig.face_scale"))
        object.__setattr__(self, "noise_sd", tuple(float(s) for s in self.noise_sd))
        for name in ("photo_background", "jpeg_fraction", "lowres_fraction", "motion_blur_fraction",
                     "blur_fraction", "scene_empty_fraction", "face_slivers"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"SynthConfig.{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0.0 <= float(self.skin_blobs) <= 2.5:
            raise ConfigError(f"SynthConfig.skin_blobs must be in [0, 2.5] (a scale of the default chances), got {self.skin_blobs}.")
        mix = tuple(float(m) for m in self.negative_mix)
        if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
            raise ConfigError(f"SynthConfig.negative_mix must be 3 non-negative weights, got {self.negative_mix}.")
        q_lo, q_hi = (int(q) for q in self.jpeg_quality)
        if not 1 <= q_lo <= q_hi <= 100:
            raise ConfigError(f"SynthConfig.jpeg_quality must be a range within [1, 100], got {self.jpeg_quality}.")
        f_lo, f_hi = (float(f) for f in self.lowres_face_px)
        if not 4.0 <= f_lo <= f_hi:
            raise ConfigError(f"SynthConfig.lowres_face_px must be a range of at least 4 px, got {self.lowres_face_px}.")
        object.__setattr__(self, "negative_mix", tuple(m / sum(mix) for m in mix))
        object.__setattr__(self, "jpeg_quality", (q_lo, q_hi))
        object.__setattr__(self, "lowres_face_px", (f_lo, f_hi))
        object.__setattr__(self, "camera_effects", bool(self.camera_effects))
        object.__setattr__(self, "photo_source", resolve_source(self.photo_source))

    @property
    def render_size(self) -> int:
        """Side of the one high-resolution render that every stored size is resampled from."""
        top = max(self.sizes)
        return max(top, min(self.max_render, self.supersample * top))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _hair(name: str):
    """Override of one hair colour; switching it off gives unlabelled chestnut hair."""
    def apply(i: Identity, v: int) -> Identity:
        if v:
            return dataclasses.replace(i, hair=name, hair_rgb=HAIR_COLOURS[name])
        if i.hair == name:
            return dataclasses.replace(i, hair="chestnut", hair_rgb=HAIR_COLOURS["chestnut"])
        return i
    return apply


# attribute -> the label rule (identity, look, blurry) -> bool
_RULES = {
    "5_o_Clock_Shadow": lambda i, k, b: i.facial_hair == "stubble",
    "Arched_Eyebrows": lambda i, k, b: i.arched_brows,
    "Bald": lambda i, k, b: i.bald,
    "Bangs": lambda i, k, b: i.bangs,
    "Big_Lips": lambda i, k, b: i.big_lips,
    "Big_Nose": lambda i, k, b: i.big_nose,
    "Black_Hair": lambda i, k, b: i.hair == "black",
    "Blond_Hair": lambda i, k, b: i.hair == "blond",
    "Blurry": lambda i, k, b: b,
    "Brown_Hair": lambda i, k, b: i.hair == "brown",
    "Bushy_Eyebrows": lambda i, k, b: i.bushy_brows,
    "Chubby": lambda i, k, b: i.chubby,
    "Eyeglasses": lambda i, k, b: k.glasses,
    "Goatee": lambda i, k, b: i.facial_hair == "goatee",
    "Gray_Hair": lambda i, k, b: i.hair == "gray",
    "Male": lambda i, k, b: i.male,
    "Mouth_Slightly_Open": lambda i, k, b: k.mouth_open,
    "Mustache": lambda i, k, b: i.mustache,
    "Narrow_Eyes": lambda i, k, b: i.narrow_eyes,
    "No_Beard": lambda i, k, b: i.facial_hair not in ("goatee", "full"),
    "Pale_Skin": lambda i, k, b: i.pale,
    "Receding_Hairline": lambda i, k, b: i.receding,
    "Rosy_Cheeks": lambda i, k, b: i.rosy,
    "Sideburns": lambda i, k, b: i.sideburns,
    "Smiling": lambda i, k, b: k.expression == HAPPY,
    "Wearing_Earrings": lambda i, k, b: k.earrings,
    "Wearing_Hat": lambda i, k, b: k.hat,
    "Wearing_Lipstick": lambda i, k, b: k.lipstick,
    "Young": lambda i, k, b: i.young,
}
SYNTH_ATTRIBUTES: tuple[str, ...] = tuple(a for a in CELEBA_ATTRIBUTES if a in _RULES)


def attributes_of(ident: Identity, look: Look, blurry: bool) -> np.ndarray:
    """int8 (A,) 0/1 in SYNTH_ATTRIBUTES order."""
    return np.array([_RULES[a](ident, look, blurry) for a in SYNTH_ATTRIBUTES], dtype=np.int8)


def sample_yaw(rng: np.random.Generator, cfg: SynthConfig) -> float:
    u, n, v = rng.random(), rng.standard_normal(), rng.uniform(-1.0, 1.0)
    yaw = n * cfg.frontal_yaw_sd if u < cfg.frontal_fraction else v * cfg.yaw_max
    return float(np.clip(yaw, -cfg.yaw_max, cfg.yaw_max))


def sample_look(rng: np.random.Generator, ident: Identity, cfg: SynthConfig) -> Look:
    """One image's look. A fixed number of draws in a fixed order, whatever the outcomes, so that
    an override of one attribute leaves every other random choice unchanged."""
    yaw = sample_yaw(rng, cfg)
    n = rng.standard_normal(2)
    u = rng.random(12)
    expression = int(np.searchsorted(np.cumsum(EXPRESSION_WEIGHTS), u[0] * sum(EXPRESSION_WEIGHTS)))
    expression = min(expression, len(EXPRESSION_NAMES) - 1)
    az = u[1] * 2 * np.pi
    lz = 0.55 + 0.4 * u[2]
    lxy = np.sqrt(1 - lz * lz)
    # light mostly from above (negative y is up)
    light = (float(lxy * np.cos(az)), float(-abs(lxy * np.sin(az)) * (0.3 + 0.7 * u[3])), float(lz))
    norm = float(np.sqrt(sum(c * c for c in light)))
    return Look(
        yaw=yaw,
        pitch=float(np.clip(n[0] * cfg.pitch_sd, -25, 25)),
        roll=float(np.clip(n[1] * cfg.roll_sd, -25, 25)),
        expression=expression,
        mouth_open=bool(u[4] < MOUTH_OPEN_P[expression]),
        glasses=bool(u[5] < ident.glasses_p),
        hat=bool(u[6] < ident.hat_p),
        hat_style=int(u[7] * 3),
        hat_rgb=HAT_COLOURS[int(u[8] * len(HAT_COLOURS))],
        lipstick=bool(u[9] < ident.lipstick_p),
        earrings=bool(u[10] < ident.earrings_p),
        earring_style=int(u[11] * 3),
        light=tuple(c / norm for c in light),
        ambient=float(rng.uniform(0.35, 0.6)),
        gaze=(float(rng.uniform(-0.012, 0.012)), float(rng.uniform(-0.008, 0.008))),
    )


def _trait(field: str, on, off):
    return lambda i, v: dataclasses.replace(i, **{field: on if v else off})


# attribute -> how to force it on an identity (i) or a look (k); used to test attribute visibility
_IDENTITY_OVERRIDES = {
    "5_o_Clock_Shadow": lambda i, v: dataclasses.replace(i, facial_hair="stubble" if v else "none"),
    "Arched_Eyebrows": _trait("arched_brows", True, False),
    "Bald": lambda i, v: dataclasses.replace(i, hair="none", hair_rgb=(0, 0, 0), bangs=False, receding=False,
                                             long_hair=False, hat_p=0.0) if v else (
        dataclasses.replace(i, hair="brown", hair_rgb=HAIR_COLOURS["brown"]) if i.bald else i),
    "Bangs": _trait("bangs", True, False),
    "Big_Lips": lambda i, v: dataclasses.replace(i, big_lips=bool(v), lip_thickness=0.062 if v else 0.036),
    "Big_Nose": lambda i, v: dataclasses.replace(i, big_nose=bool(v), nose_length=1.38 if v else 0.95),
    "Black_Hair": _hair("black"), "Blond_Hair": _hair("blond"), "Brown_Hair": _hair("brown"),
    "Gray_Hair": _hair("gray"),
    "Bushy_Eyebrows": lambda i, v: dataclasses.replace(i, bushy_brows=bool(v), brow_thickness=BUSHY_BROW if v else BROW),
    "Chubby": lambda i, v: dataclasses.replace(i, chubby=bool(v), head_width=i.head_width + (0.06 if v else 0.0)),
    "Goatee": lambda i, v: dataclasses.replace(i, facial_hair="goatee" if v else "none"),
    "Male": _trait("male", True, False),
    "Mustache": _trait("mustache", True, False),
    "Narrow_Eyes": lambda i, v: dataclasses.replace(i, narrow_eyes=bool(v), eye_open=0.55 if v else 1.0),
    "No_Beard": lambda i, v: dataclasses.replace(i, facial_hair="none" if v else "full"),
    "Pale_Skin": lambda i, v: dataclasses.replace(i, pale=bool(v), skin=SKIN_TONES[0] if v else SKIN_TONES[2]),
    "Receding_Hairline": _trait("receding", True, False),
    "Rosy_Cheeks": _trait("rosy", True, False),
    "Sideburns": _trait("sideburns", True, False),
    "Young": lambda i, v: dataclasses.replace(i, age=25.0 if v else 60.0),
}
_LOOK_OVERRIDES = {
    "Eyeglasses": lambda k, v: dataclasses.replace(k, glasses=bool(v)),
    "Mouth_Slightly_Open": lambda k, v: dataclasses.replace(k, mouth_open=bool(v)),
    "Smiling": lambda k, v: dataclasses.replace(k, expression=HAPPY if v else NEUTRAL),
    "Wearing_Earrings": lambda k, v: dataclasses.replace(k, earrings=bool(v)),
    "Wearing_Hat": lambda k, v: dataclasses.replace(k, hat=bool(v)),
    "Wearing_Lipstick": lambda k, v: dataclasses.replace(k, lipstick=bool(v)),
}


def apply_overrides(ident: Identity, look: Look, blurry: bool,
                    overrides: Mapping[str, int]) -> tuple[Identity, Look, bool]:
    """Forces attributes on (1) or off (0), leaving everything else as drawn."""
    for name, value in overrides.items():
        if name in _IDENTITY_OVERRIDES:
            ident = _IDENTITY_OVERRIDES[name](ident, value)
        elif name in _LOOK_OVERRIDES:
            look = _LOOK_OVERRIDES[name](look, value)
        elif name == "Blurry":
            blurry = bool(value)
        else:
            raise UnknownNameError("attribute", name, SYNTH_ATTRIBUTES)
    return ident, look, blurry
