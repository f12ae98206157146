"""The facemtl HDF5 cache schema: a public contract (see ``docs/data-format.md``).

Every producer (SynthFaces, the CelebA/LFWA/MTFL/FER2013/CK+/folder/LFW-subset readers) writes this
layout and every consumer reads it. One file holds N samples:

``/images/<S>``            uint8 (N, S, S, 3) RGB, one dataset per square size S (e.g. 56, 112, 224)
``/labels/<name>``         one dataset per label, shapes and missing markers in :data:`LABELS`
``/split``                 int8 (N,)  0 train, 1 val, 2 test
``/image_ids``             variable-length UTF-8 strings (N,): file name or synthetic id
``/scenes/...``            optional whole scenes for detection evaluation (see :data:`SCENE_KEYS`)

File attributes (``h5py`` ``attrs`` on the root): ``schema_version`` (int), ``facemtl_version``,
``source`` (e.g. ``synthetic``, ``celeba``), ``created`` (ISO time), ``attribute_names`` (JSON list),
``expression_names`` (JSON list), ``provenance`` (JSON object: generator parameters, reader
options, skipped files ...), ``format`` = ``"facemtl-cache"``.

Coordinates (landmarks, boxes) are *normalised* to [0, 1] of the stored square image, so one
label serves every stored size. Landmarks are 5 points in CelebA order (left eye, right eye,
nose, left mouth corner, right mouth corner), each (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1
FORMAT_TAG = "facemtl-cache"

SPLITS = {"train": 0, "val": 1, "test": 2}
SPLIT_NAMES = {v: k for k, v in SPLITS.items()}

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
#: where each landmark goes under a horizontal flip (left and right points swap)
FLIP_LANDMARKS = (1, 0, 2, 4, 3)

# FER2013's order; CK+ and others are mapped into it.
EXPRESSION_NAMES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")

# TCDCN's 5 head-pose classes, from yaw: 0 left profile, 1 left, 2 frontal, 3 right, 4 right profile.
POSE_CLASS_NAMES = ("left_profile", "left", "frontal", "right", "right_profile")
#: the pose classes mirrored by a horizontal flip (left profile <-> right profile, left <-> right)
FLIP_POSE_CLASS = (4, 3, 2, 1, 0)
POSE_CLASS_EDGES = (-45.0, -15.0, 15.0, 45.0)  # yaw degrees; yaw < -45 -> 0, ..., yaw >= 45 -> 4


def pose_class_from_yaw(yaw: np.ndarray | float) -> np.ndarray:
    """TCDCN pose class (0..4) from yaw in degrees (negative yaw = face turned to its left)."""
    return np.digitize(np.asarray(yaw, dtype=np.float64), POSE_CLASS_EDGES).astype(np.int8)


# The 40 CelebA attributes, in the official column order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)


@dataclass(frozen=True)
class LabelSpec:
    """How one label is stored: HDF5 key under ``/labels``, dtype, per-sample shape, missing marker.

    ``missing`` is the sentinel for "this sample has no such label": -1 for integer labels,
    NaN for float labels. ``shape`` may contain ``"A"`` for the number of attributes.
    """

    key: str
    dtype: str
    shape: tuple
    missing: float | int
    doc: str

    def empty(self, n: int, num_attributes: int = 0) -> np.ndarray:
        shape = (n,) + tuple(num_attributes if s == "A" else s for s in self.shape)
        return np.full(shape, self.missing, dtype=self.dtype)

    def is_missing(self, values: np.ndarray) -> np.ndarray:
        """Boolean (N,) mask: True where the sample carries no label at all."""
        v = np.asarray(values)
        bad = np.isnan(v) if np.issubdtype(v.dtype, np.floating) else v == self.missing
        return bad.reshape(len(v), -1).all(axis=1)


LABELS: dict[str, LabelSpec] = {
    s.key: s
    for s in (
        LabelSpec("attributes", "int8", ("A",), -1, "1 present, 0 absent, -1 unknown; columns = attribute_names"),
        LabelSpec("landmarks", "float32", (5, 2), np.nan, "5 points (x, y) in CelebA order, normalised to [0, 1]"),
        LabelSpec("bbox", "float32", (4,), np.nan, "face box x, y, w, h normalised to [0, 1] of the stored image"),
        LabelSpec("face", "int8", (), -1, "1 face, 0 non-face (detection negatives), -1 unknown"),
        LabelSpec("identity", "int64", (), -1, "identity id (dataset's own numbering), -1 unknown"),
        LabelSpec("expression", "int8", (), -1, "0..6 in EXPRESSION_NAMES order, -1 unknown"),
        LabelSpec("pose", "float32", (3,), np.nan, "yaw, pitch, roll in degrees"),
        LabelSpec("pose_class", "int8", (), -1, "0..4 TCDCN pose classes (POSE_CLASS_NAMES), -1 unknown"),
    )
}

# Optional scene group for end-to-end detection evaluation: whole images with up to F faces.
SCENE_KEYS = {
    "images": "uint8 (M, H, W, 3)",
    "boxes": "float32 (M, F, 4) x, y, w, h normalised; NaN rows pad",
    "landmarks": "float32 (M, F, 5, 2) normalised; NaN rows pad",
    "split": "int8 (M,)",
}
