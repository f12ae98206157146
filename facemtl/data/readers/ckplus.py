"""CK+ reader: ``cohn-kanade-images/Sxxx/yyy/*.png`` with ``Emotion/Sxxx/yyy/*_emotion.txt`` labels.

An emotion file (``S005_001_00000011_emotion.txt``, one float such as ``3.0000000e+00``) labels the
frame it is named after, the peak of the sequence. facemtl labels the last ``peak_frames`` frames
up to and including that frame with the sequence's emotion, and, with ``neutral``, the first frame
of each labelled sequence as Neutral. Unlabelled sequences are not read.

CK+ codes -> facemtl (FER2013) order: 0 neutral -> Neutral, 1 anger -> Angry, 3 disgust -> Disgust,
4 fear -> Fear, 5 happy -> Happy, 6 sadness -> Sad, 7 surprise -> Surprise. 2 contempt has no FER
class: its sequences are skipped (``contempt="skip"``, the default, counted in the provenance) or
labelled Disgust (``contempt="disgust"``, the nearest FER class; say so when you report results).

Split by subject (a person is never in two splits): subjects are shuffled with ``seed``; a
``test_fraction`` of them -> test, a ``val_fraction`` -> val, the rest train. Identity = subject
number (S005 -> 5). Images (640x490, mostly grey) are cut to their centred square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemtl.data import schema
from facemtl.data.readers._annotations import Problems, read_lines
from facemtl.data.readers._plan import Plan, split_by_group
from facemtl.data.readers.manifest import load_manifest
from facemtl.errors import ConfigError

NEUTRAL = schema.EXPRESSION_NAMES.index("Neutral")
# CK+ code -> index in schema.EXPRESSION_NAMES; contempt (2) is handled by the `contempt` option.
CK_TO_FER = {0: NEUTRAL, 1: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
CONTEMPT = 2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_emotion(path: Path, problems: Problems) -> int | None:
    rows = read_lines(path)
    if len(rows) != 1 or len(rows[0][1].split()) != 1:
        problems.add(path, rows[0][0] if rows else None, "expected exactly one number (the CK+ emotion code)")
        return None
    ln, text = rows[0]
    try:
        value = float(text)
    except ValueError:
        problems.add(path, ln, f"'{text}' is not a number")
        return None
    if value != int(value) or not 0 <= value <= 7:
        problems.add(path, ln, f"emotion code must be an integer 0..7, found {text}")
        return None
    return int(value)


def scan(
    problems: Problems, *, root: str | Path, peak_frames: int = 3, neutral: bool = False, contempt: str = "skip",
    seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
) -> Plan | None:
    """Walk the emotion labels, find their sequences' frames and build a :class:`Plan`."""
    if peak_frames < 1:
        raise ConfigError(f"--peak-frames must be at least 1, got {peak_frames}.")
    if contempt not in ("skip", "disgust"):
        raise ConfigError(f"Invalid --contempt '{contempt}'. Use skip or disgust.")
    m = load_manifest("ckplus")
    root = Path(root)
    found = m.locate_required(root, problems)
    if found is None:
        return None
    img_root, emo_root = found["images"], found["emotion"]
    ids, paths, labels, subjects = [], [], [], []
    n_contempt = n_seq = 0
    for label_file in sorted(emo_root.glob("*/*/*_emotion.txt")):
        code = read_emotion(label_file, problems)
        if code is None:
            continue
        subject, seq = label_file.parent.parent.name, label_file.parent.name
        frame_name = label_file.name[: -len("_emotion.txt")]
        seq_dir = img_root / subject / seq
        frames = sorted(p for p in seq_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if seq_dir.is_dir() else []
        if not frames:
            problems.add(label_file, None, f"no frames found in {seq_dir}")
            continue
        stems = [p.stem for p in frames]
        if frame_name not in stems:
            problems.add(label_file, None, f"labels frame {frame_name}, which is not in {seq_dir}")
            continue
        if code == CONTEMPT and contempt == "skip":
            n_contempt += 1
            continue
        expr = CK_TO_FER.get(code, schema.EXPRESSION_NAMES.index("Disgust"))
        peak = stems.index(frame_name)
        chosen = [(i, expr) for i in range(max(0, peak - peak_frames + 1), peak + 1)]
        if neutral and peak - peak_frames + 1 > 0:
            chosen.insert(0, (0, NEUTRAL))
        n_seq += 1
        for i, e in chosen:
            ids.append(f"{subject}/{seq}/{frames[i].name}")
            paths.append(str(frames[i]))
            labels.append(e)
            subjects.append(subject)
    if problems:
        return None
    if not ids:
        problems.add(emo_root, None, "no labelled sequence found (expected Sxxx/yyy/*_emotion.txt files)")
        return None
    n = len(ids)
    identity = np.array([int("".join(c for c in s if c.isdigit()) or -1) for s in subjects], np.int64)
    plan = Plan(
        source="ckplus", attribute_names=[], image_ids=ids, images=paths,
        split=split_by_group(subjects, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction),
        labels={"expression": np.array(labels, np.int8), "identity": identity, "face": np.ones(n, np.int8)},
        crops=np.full((n, 3), np.nan),
        provenance={"dataset": "ckplus", "root": str(root.resolve()), "peak_frames": peak_frames, "neutral": neutral,
                    "contempt": contempt, "contempt_sequences_skipped": n_contempt, "sequences": n_seq,
                    "split": f"by subject, seed {seed}, val {val_fraction}, test {test_fraction}",
                    "manifest_version": m.data.get("version")},
    )
    expected = m.data["images"].get("labelled_sequences")
    if expected and n_seq + n_contempt != expected:
        plan.warnings.append(f"{n_seq + n_contempt} labelled sequences where the full CK+ has {expected} : a subset?")
    return plan
