"""Finding faces in whole photos with a backend's detection head, then running every task on them.

Plain models (one input): an image pyramid scanned with sliding windows. Window sides grow from
``min_face / framing.box_height`` by ``scale_step`` up to the photo's shorter side; for each side the
photo is resized once (PIL's antialiased bilinear, as the training crops were made) so that a window
is exactly the model's input size, and windows are cut every ``stride`` x the window side. A window
is a candidate when its face probability (sigmoid of ``detection[:, 0]``) reaches ``threshold``;
its regressed box (x, y, w, h in the window) is mapped back to photo pixels.

MCFA's cascade: the same pyramid at S_Net's size; MCFA's threshold-control layer passes only the
windows S_Net calls faces to M_Net (the same window at M_Net's size, plus S_Net's feature), and
M_Net's faces on to L_Net, whose boxes are the candidates.

Then non-maximum suppression (:func:`facemtl.metrics.detection.nms`), and ``refine`` rounds of
re-cropping: each kept box is cropped the way training crops were framed (``framing``: box centre
at the crop centre, box height 0.70 of the crop side) and the whole model runs on that crop; its
face probability and box replace the window's (two rounds let a box found from an off-centre
window settle on the face). The last round's landmarks, attributes, expression and pose are the
reported ones; a crop whose probability falls below ``threshold`` is dropped, and a last NMS
removes duplicates, followed by :func:`suppress_nested`: a box lying mostly inside a
higher-scored one (or mostly holding one) is dropped, which IoU alone misses (a face box inside a
head box).

Defaults: ``threshold`` 0.9, not 0.5, because a sliding-window search asks thousands of windows
of which a handful hold a face, while the detection head was trained on roughly balanced crops;
``stride`` 0.25 of the window (the box regression recovers the offset; 0.125 finds a few more
faces at 3-4 times the cost).
Every coordinate in a :class:`Face` is in photo pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from facemtl.errors import ConfigError
from facemtl.export.backends import Backend


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by NMS on x, y, w, h boxes (facemtl.metrics' version; torchvision's as a fallback)."""
    try:
        from facemtl.metrics.detection import nms as _nms
    except ImportError:  # pragma: no cover - facemtl.metrics ships with facemtl
        import torch
        from torchvision.ops import nms as _tv

        b = torch.as_tensor(boxes, dtype=torch.float32)
        return _tv(torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1), torch.as_tensor(scores, dtype=torch.float32), iou).numpy()
    return _nms(boxes, scores, iou)


def suppress_nested(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> np.ndarray:
    """Indices, by decreasing score, of the x, y, w, h boxes left when each box that lies mostly
    inside a higher-scored kept box, or mostly holds one, is dropped: their intersection covers at
    least ``overlap`` of the smaller box. NMS keeps such pairs (a face box inside a head box has a
    low IoU with it); one face is one box."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    for i in order:
        inter = (np.clip(np.minimum(x1[i], x1[keep]) - np.maximum(x0[i], x0[keep]), 0, None)
                 * np.clip(np.minimum(y1[i], y1[keep]) - np.maximum(y0[i], y0[keep]), 0, None))
        smaller = np.maximum(np.minimum(area[i], area[keep]), 1e-9)
        if not (inter / smaller >= overlap).any():
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


@dataclass
class FinderConfig:
    """Face-finder settings (module docstring). ``min_face`` None: the larger of 20 px and a tenth
    of the photo's shorter side."""

    threshold: float = 0.9
    nms_iou: float = 0.3
    min_face: float | None = None
    scale_step: float = 1.25
    stride: float = 0.25
    max_faces: int = 20
    nested: float = 0.7  # drop a box when this share of it (or of the smaller box) lies in a better one; 1: off
    refine: int = 2  # re-crop-and-rerun rounds (0: keep the windows' own scores and boxes)
    cascade_threshold: float | None = None  # None: the threshold stored in the cascade's metadata
    flip_test: bool = False  # each face's crop also runs mirrored, outputs averaged (Backend.run); not the window scan

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}.")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"NMS IoU must be in (0, 1], got {self.nms_iou}.")
        if not 0.0 < self.nested <= 1.0:
            raise ConfigError(f"nested-box overlap must be in (0, 1], got {self.nested}.")
        if self.scale_step <= 1.0:
            raise ConfigError(f"scale step must be > 1 (1.25 typical), got {self.scale_step}.")
        if not 0.0 < self.stride <= 1.0:
            raise ConfigError(f"stride must be a fraction of the window in (0, 1], got {self.stride}.")
        if self.refine < 0:
            raise ConfigError(f"refine must be 0 or more rounds, got {self.refine}.")
        if self.min_face is not None and self.min_face < 4:
            raise ConfigError(f"min_face must be at least 4 pixels, got {self.min_face}.")


@dataclass
class Face:
    """One face: ``box`` x, y, w, h and ``crop`` x0, y0, side in photo pixels; ``outputs`` are the
    model's raw outputs (one row) on that crop; ``score`` is the face probability (None without
    a detection head)."""

    box: np.ndarray
    score: float | None
    crop: tuple[float, float, float]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


class Photo:
    """A decoded photo and the crops cut from it (zero padding outside, antialiased bilinear)."""

    def __init__(self, rgb: np.ndarray):
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ConfigError(f"a photo must be uint8 (H, W, 3) RGB, got {rgb.dtype} {rgb.shape}.")
        self.array = rgb
        self.image = Image.fromarray(rgb)
        self.height, self.width = rgb.shape[:2]

    def crops(self, windows: np.ndarray, size: int) -> np.ndarray:
        """(N, 3) windows x0, y0, side -> float32 (N, 3, size, size) RGB in [0, 1]."""
        out = np.empty((len(windows), 3, size, size), dtype=np.float32)
        if not len(windows):
            return out
        lo = np.floor(min(windows[:, 0].min(), windows[:, 1].min(), 0.0))
        hi = np.ceil(max((windows[:, 0] + windows[:, 2]).max() - self.width, (windows[:, 1] + windows[:, 2]).max() - self.height, 0.0))
        pad = int(max(-lo, hi))
        img = self.image
        if pad:
            img = Image.new("RGB", (self.width + 2 * pad, self.height + 2 * pad))
            img.paste(self.image, (pad, pad))
        for k, (x0, y0, side) in enumerate(windows):
            box = (x0 + pad, y0 + pad, x0 + pad + side, y0 + pad + side)
            crop = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
            out[k] = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return out

    def centred_square(self) -> tuple[float, float, float]:
        """The aligned-crop convention of the dataset readers: side min(w, h), centred."""
        side = min(self.width, self.height)
        return float((self.width - side) // 2), float((self.height - side) // 2), float(side)


def pyramid_windows(photo: Photo, size: int, cfg: FinderConfig, box_height: float):
    """Yield (windows (N, 3) in photo pixels, images (N, 3, size, size)) level by level."""
    short = min(photo.width, photo.height)
    min_face = cfg.min_face if cfg.min_face is not None else max(20.0, short / 10.0)
    side = min_face / box_height
    sides = []
    while side <= short + 1e-6:
        sides.append(side)
        side *= cfg.scale_step
    if not sides:  # faces cannot be that small here: one window over the shorter side
        sides = [float(short)]
    for side in sides:
        s = size / side
        w, h = max(size, int(photo.width * s)), max(size, int(photo.height * s))
        level = photo.image.resize((w, h), Image.Resampling.BILINEAR, box=(0, 0, w / s, h / s))
        arr = np.asarray(level, dtype=np.float32) / 255.0  # (h, w, 3)
        step = max(1, int(round(cfg.stride * size)))
        ys, xs = _positions(h, size, step), _positions(w, size, step)
        view = np.lib.stride_tricks.sliding_window_view(arr, (size, size), axis=(0, 1))  # (h', w', 3, S, S)
        for row in np.array_split(ys, max(1, math.ceil(len(ys) * len(xs) / 512))):
            if not len(row):
                continue
            yy, xx = np.meshgrid(row, xs, indexing="ij")
            yy, xx = yy.ravel(), xx.ravel()
            images = np.ascontiguousarray(view[yy, xx])  # (N, 3, S, S)
            windows = np.stack([xx / s, yy / s, np.full(len(xx), side)], 1)
            yield windows, images


def _positions(extent: int, size: int, step: int) -> np.ndarray:
    pos = list(range(0, extent - size + 1, step))
    if pos[-1] != extent - size:
        pos.append(extent - size)  # cover the far border
    return np.asarray(pos)


def decode_boxes(det: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Detection outputs (N, 5) on windows (N, 3) -> (scores (N,), boxes (N, 4) in photo pixels)."""
    side = windows[:, 2:3]
    # an untrained or confused head can regress any number: keep boxes near their window
    xy, wh = np.clip(det[:, 1:3], -0.5, 1.5), np.clip(det[:, 3:5], 0.02, 1.5)
    boxes = np.concatenate([windows[:, :2] + xy * side, wh * side], 1)
    return sigmoid(det[:, 0]), boxes


class FaceFinder:
    """Finds faces with ``backend``'s detection head (see the module docstring)."""

    def __init__(self, backend: Backend, cfg: FinderConfig | None = None):
        self.backend = backend
        self.cfg = cfg or FinderConfig()
        meta = backend.meta
        det = meta.task("detection")
        if det is None:
            raise ConfigError(
                f"this model has no detection head (tasks: {', '.join(meta.task_names)}), so it cannot find faces "
                "in whole photos; pass --aligned and give face crops."
            )
        self.det = det.name
        self.box_height = float(meta.framing.get("box_height", 0.7))
        self.box_centre = [float(v) for v in meta.framing.get("box_centre", (0.5, 0.5))]
        gate = (meta.cascade or {}).get("threshold", 0.5)
        self.gate = self.cfg.cascade_threshold if self.cfg.cascade_threshold is not None else float(gate)

    # -- candidates ----------------------------------------------------------------------------
    def candidates(self, photo: Photo) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), boxes (N, 4)) of windows the detector accepts, before NMS."""
        sizes = self.backend.meta.input_sizes
        all_scores, all_boxes = [], []
        for windows, images in pyramid_windows(photo, sizes[0], self.cfg, self.box_height):
            out = self.backend.run_stage(0, images)
            p = sigmoid(out[self.det][:, 0])
            thr = self.gate if len(sizes) > 1 else self.cfg.threshold
            keep = p >= thr
            windows, out = windows[keep], {k: v[keep] for k, v in out.items()}
            for i in range(1, len(sizes)):  # MCFA's threshold-control layer
                if not len(windows):
                    break
                out = self.backend.run_stage(i, photo.crops(windows, sizes[i]), out["feature"])
                keep = sigmoid(out[self.det][:, 0]) >= (self.gate if i < len(sizes) - 1 else self.cfg.threshold)
                windows, out = windows[keep], {k: v[keep] for k, v in out.items()}
            if len(windows):
                scores, boxes = decode_boxes(out[self.det], windows)
                all_scores.append(scores)
                all_boxes.append(boxes)
        if not all_scores:
            return np.zeros(0), np.zeros((0, 4))
        return np.concatenate(all_scores), np.concatenate(all_boxes)

    # -- running all tasks on crops ------------------------------------------------------------
    def run_crops(self, photo: Photo, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Every task on (N, 3) crops x0, y0, side (cascade: all stages chained, no gating)."""
        return self.backend.run([photo.crops(crops, s) for s in self.backend.meta.input_sizes], flip_test=self.cfg.flip_test)

    def framed_crops(self, boxes: np.ndarray) -> np.ndarray:
        """Crops framed like the training crops around (N, 4) boxes: (N, 3) x0, y0, side."""
        side = np.maximum(boxes[:, 3], 1.0) / self.box_height
        cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
        return np.stack([cx - self.box_centre[0] * side, cy - self.box_centre[1] * side, side], 1)

    def find(self, photo: Photo) -> list[Face]:
        scores, boxes = self.candidates(photo)
        if not len(scores):
            return []
        keep = nms(boxes, scores, self.cfg.nms_iou)[: 4 * self.cfg.max_faces]
        scores, boxes = scores[keep], boxes[keep]
        crops = self.framed_crops(boxes)
        out = self.run_crops(photo, crops)
        for round_ in range(self.cfg.refine):  # the framed crop's own probability and box replace the window's
            if round_:
                crops = self.framed_crops(boxes)
                out = self.run_crops(photo, crops)
            scores, boxes = decode_boxes(out[self.det], crops)
        good = scores >= self.cfg.threshold
        idx = np.flatnonzero(good)
        if len(idx):
            idx = idx[nms(boxes[idx], scores[idx], self.cfg.nms_iou)]
            if self.cfg.nested < 1.0:
                idx = idx[suppress_nested(boxes[idx], scores[idx], self.cfg.nested)]
            idx = idx[: self.cfg.max_faces]
        return [
            Face(boxes[k], float(scores[k]), tuple(float(v) for v in crops[k]), {n: v[k] for n, v in out.items() if n != "feature"})
            for k in idx
        ]


def run_aligned(backend: Backend, photo: Photo, flip_test: bool = False) -> Face:
    """The whole image is one aligned face crop (its centred square); no detection head needed.
    ``flip_test``: see :meth:`Backend.run`."""
    crop = np.asarray([photo.centred_square()])
    out = backend.run([photo.crops(crop, s) for s in backend.meta.input_sizes], flip_test=flip_test)
    det = backend.meta.task("detection")
    score, box = None, np.asarray(crop[0, [0, 1, 2, 2]], dtype=np.float64)
    if det is not None:
        p, b = decode_boxes(out[det.name], crop)
        score, box = float(p[0]), b[0]
    return Face(box, score, tuple(float(v) for v in crop[0]), {n: v[0] for n, v in out.items() if n != "feature"})
