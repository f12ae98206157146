"""SynthFaces identities: the traits of one synthetic person, stable across all of its images.

An identity is drawn from ``np.random.default_rng([seed, IDENTITY_TAG, identity_id])`` alone, so
every worker process rebuilds the same person without any shared state. The prevalences below are
tuned so that the attributes derived from identities (Male, Young, hair colours, Bald, Big_Nose...)
come out close to CelebA's (measured over many samples, see ``docs/synthfaces.md``), and so that
they are consistent with each other: women have no facial hair, gray hair and baldness come with
age, bald people have no hair colour and no bangs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# Sample seeds are [seed, index] (two words); identity seeds have three words and this tag, so the
# two streams can never coincide.
IDENTITY_TAG = 7_340_033

# Base skin colours (before lighting), lightest first. The first one is "pale": kept well apart
# from the next so that Pale_Skin is visible rather than a matter of a few grey levels.
SKIN_TONES = (
    (238, 214, 204),  # pale (Pale_Skin)
    (228, 184, 154),
    (218, 168, 136),
    (206, 154, 118),
    (184, 136, 98),
    (150, 104, 72),
    (108, 72, 50),
)
# Eyebrow thickness in head units (a real brow is about 0.08 of half the head height; they read as a
# dark band even at 25 px); Bushy_Eyebrows are 1.6x thicker.
BROW, BUSHY_BROW = 0.05, 0.08
SKIN_WEIGHTS = (0.043, 0.25, 0.24, 0.18, 0.13, 0.09, 0.067)

HAIR_COLOURS = {
    "black": (26, 22, 22),
    "brown": (92, 58, 34),
    "blond": (226, 194, 122),
    "gray": (176, 174, 170),
    "auburn": (150, 64, 30),     # no CelebA column: a hair colour left unlabelled
    "chestnut": (148, 108, 66),  # no CelebA column either (CelebA leaves ~1/3 of faces unlabelled)
}
IRIS_COLOURS = ((70, 45, 25), (110, 70, 35), (60, 95, 130), (80, 110, 70), (40, 30, 25))
LIPSTICK_COLOURS = ((190, 30, 50), (205, 60, 100), (150, 30, 60), (215, 45, 45))
CLOTHES_COLOURS = (
    (40, 50, 90), (180, 40, 40), (230, 230, 225), (30, 30, 35), (60, 120, 70),
    (200, 160, 60), (120, 80, 140), (90, 150, 190), (110, 110, 112), (150, 120, 90),
    (200, 110, 130), (20, 70, 70),
)


@dataclass(frozen=True)
class Identity:
    """Stable traits of one person. Lengths are in head units (half the head height = 1)."""

    identity_id: int
    male: bool
    age: float
    skin: tuple[int, int, int]
    pale: bool
    hair: str                    # key of HAIR_COLOURS, or "none" for bald
    hair_rgb: tuple[int, int, int]
    long_hair: bool
    bangs: bool
    receding: bool
    hair_volume: float
    hair_length: float           # how far long hair hangs (head units below the head centre)
    head_width: float            # half-width of the skull
    head_depth: float            # front half-depth
    jaw_taper: float             # narrowing of the lower face
    jaw_square: float            # superellipse exponent of the lower face (2 = round, larger = square)
    chubby: bool
    eye_spacing: float           # half the inter-pupil distance
    eye_size: float              # half-width of the eye opening
    eye_open: float              # opening factor; about 0.55 for Narrow_Eyes
    narrow_eyes: bool
    iris_rgb: tuple[int, int, int]
    brow_thickness: float
    bushy_brows: bool
    arched_brows: bool
    nose_length: float           # scale of the nose (1 average)
    big_nose: bool
    mouth_width: float           # half-width of the mouth
    lip_thickness: float
    big_lips: bool
    facial_hair: str             # "none", "stubble", "goatee" or "full"
    mustache: bool
    sideburns: bool
    rosy: bool
    lip_rgb: tuple[int, int, int]
    lipstick_rgb: tuple[int, int, int]
    clothes_rgb: tuple[int, int, int]
    glasses_p: float             # probability of wearing glasses in one image
    glasses_style: int           # 0 thin metal, 1 thick plastic, 2 sunglasses, 3 round metal
    glasses_rgb: tuple[int, int, int]
    hat_p: float
    lipstick_p: float
    earrings_p: float
    clothes_style: int = 0       # 0 plain, 1 collared shirt (a tie for some men), 2 striped, 3 V-neck

    @property
    def young(self) -> bool:
        return self.age < 40.0

    @property
    def bald(self) -> bool:
        return self.hair == "none"


def _pick(rng: np.random.Generator, options, weights=None):
    """One element of ``options`` (rng.choice would turn tuples into arrays)."""
    if weights is None:
        return options[int(rng.integers(len(options)))]
    w = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


@lru_cache(maxsize=8192)
def make_identity(seed: int, identity_id: int) -> Identity:
    """The identity ``identity_id`` of the SynthFaces set with this ``seed`` (deterministic, cached)."""
    rng = np.random.default_rng([seed, IDENTITY_TAG, identity_id])
    u = rng.random(32)  # fixed-order draws: changing one trait's rule never shifts the others
    male = bool(u[0] < 0.42)
    # 77 % young (18-39), the rest 40-78: matches CelebA's Young prevalence.
    age = float(18 + 21 * u[1]) if u[2] < 0.77 else float(40 + 38 * u[1] ** 1.3)
    old = age >= 40

    tone = int(rng.choice(len(SKIN_TONES), p=np.asarray(SKIN_WEIGHTS) / sum(SKIN_WEIGHTS)))
    jitter = rng.uniform(-6, 6, 3)
    skin = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(SKIN_TONES[tone], jitter))

    # Hair: baldness and graying first (they depend on sex and age), then a colour.
    p_bald = (0.16 if old else 0.02) if male else 0.0
    if u[3] < p_bald:
        hair = "none"
    elif old and u[4] < (0.15 + 0.005 * (age - 40)):
        hair = "gray"
    else:
        names = ("black", "brown", "blond", "auburn", "chestnut")
        weights = (0.27, 0.27, 0.06, 0.12, 0.28) if male else (0.23, 0.23, 0.27, 0.11, 0.16)
        hair = _pick(rng, names, weights)
    hair_rgb = (0, 0, 0) if hair == "none" else HAIR_COLOURS[hair]
    shade = rng.uniform(0.9, 1.08)  # one factor for all channels: lighter or darker, same hue
    hair_rgb = tuple(int(min(255.0, c * shade)) for c in hair_rgb)
    bald = hair == "none"
    receding = (not bald) and male and u[5] < (0.42 if old else 0.11)
    long_hair = (not bald) and (not receding) and u[6] < (0.08 if male else 0.82)
    bangs = (not bald) and (not receding) and u[7] < (0.06 if male else 0.23)

    chubby = u[8] < (0.09 if old else 0.045) * (1.3 if male else 0.8)
    head_width = (0.74 if male else 0.70) + rng.uniform(-0.05, 0.05) + (0.06 if chubby else 0.0)
    jaw_taper = (0.16 if male else 0.28) + rng.uniform(-0.09, 0.09) - (0.1 if chubby else 0.0)
    jaw_square = (2.5 if male else 2.05) + rng.uniform(-0.3, 0.35)

    narrow = u[9] < 0.115
    bushy = u[10] < (0.26 if male else 0.06)
    arched = (not bushy) and u[11] < (0.09 if male else 0.42)
    big_nose = u[12] < (0.34 if male else 0.15)
    big_lips = u[13] < (0.17 if male else 0.29)

    # Facial hair only for men: ~60 % clean-shaven or stubbled, so No_Beard is ~85 % overall.
    if male:
        facial_hair = _pick(rng, ("none", "stubble", "goatee", "full"), (0.40, 0.26, 0.15, 0.19))
        mustache = (facial_hair in ("goatee", "full") and u[14] < 0.25) or (
            facial_hair in ("none", "stubble") and u[14] < 0.04)
        sideburns = (facial_hair == "full" and u[15] < 0.5) or (facial_hair != "full" and u[15] < 0.07)
    else:
        facial_hair, mustache, sideburns = "none", False, False
    if bald:
        sideburns = False

    rosy = u[16] < (0.015 if male else 0.10)
    lip_base = _mix(skin, (160, 66, 74), 0.5)  # redder and darker than the skin at every tone
    wears_glasses = u[17] < 0.12
    return Identity(
        identity_id=int(identity_id), male=male, age=age, skin=skin, pale=tone == 0,
        hair=hair, hair_rgb=hair_rgb, long_hair=bool(long_hair), bangs=bool(bangs),
        receding=bool(receding), hair_volume=float(rng.uniform(0.03, 0.13)),
        hair_length=float(rng.uniform(1.15, 1.9)),
        head_width=float(head_width), head_depth=float(rng.uniform(0.78, 0.9)),
        jaw_taper=float(jaw_taper), jaw_square=float(jaw_square), chubby=bool(chubby),
        eye_spacing=float(0.29 * rng.uniform(0.92, 1.08)), eye_size=float(0.13 * rng.uniform(0.9, 1.1)),
        eye_open=float(0.55 if narrow else rng.uniform(0.95, 1.1)), narrow_eyes=bool(narrow),
        iris_rgb=_pick(rng, IRIS_COLOURS),
        brow_thickness=float((BUSHY_BROW if bushy else BROW) * rng.uniform(0.9, 1.1) * (1.15 if male else 0.9)),
        bushy_brows=bool(bushy), arched_brows=bool(arched),
        nose_length=float(rng.uniform(1.3, 1.45) if big_nose else rng.uniform(0.85, 1.08)),
        big_nose=bool(big_nose),
        mouth_width=float(0.2 * rng.uniform(0.88, 1.12)),
        lip_thickness=float((0.062 if big_lips else 0.036) * rng.uniform(0.92, 1.08)),
        big_lips=bool(big_lips),
        facial_hair=facial_hair, mustache=bool(mustache), sideburns=bool(sideburns), rosy=bool(rosy),
        lip_rgb=lip_base, lipstick_rgb=_pick(rng, LIPSTICK_COLOURS), clothes_rgb=_pick(rng, CLOTHES_COLOURS),
        glasses_p=0.55 if wears_glasses else 0.0,
        glasses_style=int(rng.choice(4, p=[0.36, 0.34, 0.14, 0.16])),
        glasses_rgb=_pick(rng, ((20, 20, 20), (60, 40, 30), (150, 150, 155), (170, 140, 60))),
        # Bald and receding people never wear hats here: a hat would hide the attribute.
        hat_p=0.0 if (bald or receding) else (0.32 if u[18] < 0.16 else 0.0),
        lipstick_p=0.0 if male else (0.9 if u[19] < 0.8 else 0.05),
        earrings_p=(0.02 if male else (0.7 if u[20] < 0.42 else 0.0)),
        clothes_style=int(u[21] * 4),
    )
