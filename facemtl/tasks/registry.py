"""What each kind of task says about itself, so that export, predict and the reports never check types.

Two small registries, both readable without torch (``facemtl predict`` on an ONNX model uses them):

- :data:`OUTPUTS`, one :class:`OutputKind` per ``kind`` of exported output (the metadata's
  ``tasks[].kind``): the sentence describing its columns (``layout``), how ``predict`` turns the
  raw output into fields of a face record (``read``), and whether it is the face / non-face
  output that finds faces (``finds_faces``).
- :data:`SECTIONS`, one :class:`ReportSection` per kind of evaluation report (``TaskReport.kind``
  and the ``kinds`` of an ablation's ``result.json``): the metrics an ablation table shows, the
  first being the task's headline (the one Delta-m uses), and which metrics are lower-is-better.

A :class:`~facemtl.tasks.base.Task` subclass names its entries (``report_section`` and the kind
returned by :meth:`~facemtl.tasks.base.Task.export_output`); a new task reuses them or registers
its own with :func:`register_output` / :func:`register_section` (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facemtl._registry import Registry
from facemtl.data.schema import FLIP_LANDMARKS, FLIP_POSE_CLASS, LANDMARK_NAMES

#: ``read(y, labels, crop)``: ``y`` the output of one face (1-D float64), ``labels`` the metadata's
#: names of its columns, ``crop`` (x0, y0, side) of the face crop in image pixels; returns the
#: fields it adds to the face record (a dict value is merged into the same field of another task)
Reader = Callable[[np.ndarray, list[str], tuple[float, float, float]], dict[str, Any]]
#: ``unflip(y)``: the (N, dim) outputs of N mirrored crops mapped back to the crops as they were
#: (numpy or torch alike; a new array): what flip testing averages with the plain pass
Unflip = Callable[[Any], Any]


@dataclass(frozen=True)
class OutputKind:
    """How an exported output of this kind is laid out and read back."""

    name: str
    layout: str
    read: Reader
    finds_faces: bool = False  # column 0 is a face logit: the face finder, cascade gate and scene scan use it
    unflip: Unflip | None = None  # None: no mirror mapping (flip testing keeps the plain pass)


@dataclass(frozen=True)
class ReportSection:
    """A kind of evaluation report: its table metrics (headline first) and their directions."""

    name: str
    table: tuple[str, ...]
    lower_is_better: frozenset[str] = field(default_factory=frozenset)

    @property
    def headline(self) -> str:
        """The metric that sums the task up (ablation tables, Delta-m, ``ablate``'s progress line)."""
        return self.table[0]

    def higher_is_better(self, metric: str) -> bool:
        return metric not in self.lower_is_better


OUTPUTS: Registry[Any] = Registry("exported output kind")
SECTIONS: Registry[Any] = Registry("report section")


def register_output(kind: OutputKind) -> OutputKind:
    """Add ``kind`` to :data:`OUTPUTS` (a name registered twice is refused)."""
    return OUTPUTS.register(kind.name)(kind)


def register_section(section: ReportSection) -> ReportSection:
    """Add ``section`` to :data:`SECTIONS` (a name registered twice is refused)."""
    return SECTIONS.register(section.name)(section)


def output_kind(name: str) -> OutputKind | None:
    """The registered kind ``name``, or None (a model exported by a facemtl that had more kinds)."""
    return OUTPUTS.get(name) if name in OUTPUTS else None


def section(name: str) -> ReportSection | None:
    """The registered report section ``name``, or None (a result written by another facemtl)."""
    return SECTIONS.get(name) if name in SECTIONS else None


def lower_is_better_metrics() -> frozenset[str]:
    """Every metric some section marks lower-is-better (a metric's direction never depends on the task)."""
    return frozenset().union(*(SECTIONS.get(n).lower_is_better for n in SECTIONS))


# -- reading exported outputs (predict) -----------------------------------------------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


# -- the mirror rules of flip testing (``evaluate --flip-test`` via Task.unflip, ``predict --flip-test``) --
def _copy(y):
    return y.clone() if hasattr(y, "clone") else y.copy()


def unflip_landmarks(y):
    """Points of a mirrored crop, back on the crop: left and right points swap, x -> 1 - x."""
    xy = y.reshape(len(y), -1, 2)[:, list(FLIP_LANDMARKS)]  # fancy indexing: a copy
    xy[..., 0] = 1.0 - xy[..., 0]
    return xy.reshape(len(y), -1)


def unflip_detection(y):
    """Face logit as it is; the box x, y, w, h mirrored (x -> 1 - x - w)."""
    out = _copy(y)
    out[:, 1] = 1.0 - y[:, 1] - y[:, 3]
    return out


def unflip_pose(y):
    """The 5 pose classes mirrored (left profile <-> right profile, left <-> right), the yaw negated."""
    k = len(FLIP_POSE_CLASS)
    out = y[:, list(FLIP_POSE_CLASS) + list(range(k, y.shape[1]))]
    out[:, k:] = -out[:, k:]
    return out


def unflip_unchanged(y):
    """No column names a side (attributes, expression): the logits as they are."""
    return _copy(y)


def _read_landmarks(y, labels, crop):
    x0, y0, side = crop
    pts = y.reshape(5, 2) * side + np.array([x0, y0])
    return {"landmarks": {n: [round(float(a), 2), round(float(b), 2)] for n, (a, b) in zip(LANDMARK_NAMES, pts)}}


def _read_attributes(y, labels, crop):
    return {"attributes": {n: round(float(p), 4) for n, p in zip(labels, _sigmoid(y))}}


def _class_entry(y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    probs = _softmax(y)
    labels = labels[: len(probs)]
    k = int(probs.argmax())
    return {"label": labels[k], "probability": round(float(probs[k]), 4),
            "probabilities": {n: round(float(p), 4) for n, p in zip(labels, probs)}}


def _read_expression(y, labels, crop):
    return {"expression": _class_entry(y, labels)}


def _read_pose(y, labels, crop):
    entry = _class_entry(y[:5], labels)
    if len(y) > 5:
        entry["yaw"] = round(float(y[5]) * 90.0, 2)
    return {"pose": entry}


def _read_identity(y, labels, crop):
    return {"embedding": [round(float(v), 5) for v in y]}


def _read_nothing(y, labels, crop):
    return {}  # detection: the face finder already turned it into the record's box and score


for _kind in (
    OutputKind("detection", "column 0 face logit (sigmoid = face probability), 1-4 face box x, y, w, h normalised to the crop",
               _read_nothing, finds_faces=True, unflip=unflip_detection),
    OutputKind("landmarks", "x, y of each point in landmarks.order, normalised to the crop", _read_landmarks,
               unflip=unflip_landmarks),
    OutputKind("attributes", "one logit per attribute (sigmoid = probability it is present)", _read_attributes,
               unflip=unflip_unchanged),
    OutputKind("expression", "one logit per class (softmax), FER2013 order", _read_expression, unflip=unflip_unchanged),
    OutputKind("pose", "5 head-pose class logits (softmax), then yaw / 90 degrees when dim is 6", _read_pose,
               unflip=unflip_pose),
    OutputKind("identity", "face embedding (compare with cosine similarity)", _read_identity),
):
    register_output(_kind)

for _section in (
    ReportSection("landmarks", ("nme", "failure_rate"), frozenset({
        "nme", "nme_median", "failure_rate", "nme_yaw_0_30", "nme_yaw_30_60", "nme_yaw_60_90", "nme_yaw_balanced"})),
    ReportSection("attributes", ("balanced_accuracy", "f1")),
    ReportSection("classes", ("accuracy",), frozenset({"yaw_mae_deg"})),
    ReportSection("detection", ("accuracy", "box_iou"), frozenset({"scene_fppi"})),
    ReportSection("identity", ("verification_auc", "eer"), frozenset({"eer"})),
):
    register_section(_section)
