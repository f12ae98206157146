"""The concrete tasks: detection, landmarks, attributes (all or one), identity, expression, pose."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facemtl.data import schema
from facemtl.errors import ConfigError, UnknownNameError
from facemtl.tasks.base import Task, masked_mean


def _np(x: Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _binary_metrics(prob: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1 of thresholded probabilities, averaged over columns.

    ``prob``/``target`` are (N, K); target -1 marks unknown entries. Exact definitions live in
    :mod:`facemtl.metrics`; this is the quick version used for validation during training."""
    known = target >= 0
    pred = prob >= 0.5
    pos = target == 1
    acc, bacc, f1 = [], [], []
    for k in range(target.shape[1]):
        m = known[:, k]
        if not m.any():
            continue
        p, t = pred[m, k], pos[m, k]
        acc.append((p == t).mean())
        tpr = (p & t).sum() / max(t.sum(), 1)
        tnr = (~p & ~t).sum() / max((~t).sum(), 1)
        bacc.append((tpr + tnr) / 2 if t.any() and (~t).any() else (p == t).mean())
        denom = 2 * (p & t).sum() + (p & ~t).sum() + (~p & t).sum()
        f1.append(2 * (p & t).sum() / denom if denom else 1.0)
    if not acc:
        return {}
    return {"accuracy": float(np.mean(acc)), "balanced_accuracy": float(np.mean(bacc)), "f1": float(np.mean(f1))}


def balanced_mean(per: Tensor, target: Tensor) -> Tensor:
    """Mean over columns of (mean loss of the positives + mean loss of the negatives) / 2.

    ``per``/``target`` are (B, K); target -1 marks unknown entries, which count nowhere. A column
    with only positives or only negatives known in the batch gets that class's mean; a column with
    nothing known is left out; 0 (with a graph) when nothing is known, as :func:`masked_mean`."""
    pos, neg = (target == 1).to(per.dtype), (target == 0).to(per.dtype)
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    mean_pos = (per * pos).sum(0) / n_pos.clamp(min=1)
    mean_neg = (per * neg).sum(0) / n_neg.clamp(min=1)
    both = (n_pos > 0) & (n_neg > 0)
    col = torch.where(both, (mean_pos + mean_neg) / 2, torch.where(n_pos > 0, mean_pos, mean_neg))
    return masked_mean(col, (n_pos + n_neg) > 0)


@dataclass
class AttributesTask(Task):
    """Several binary attributes, one logit each, binary cross-entropy over the known entries.

    Option ``balance`` (false by default): each attribute's loss is the mean of its positives'
    cross-entropy and its negatives' cross-entropy, each averaged within the batch, so a rare
    attribute (eyeglasses on 6-10 % of faces) counts its few positives as much as its many
    negatives: the loss whose minimum is the balanced accuracy's, as scikit-learn's
    ``class_weight="balanced"`` gives. A column with one class only in the batch falls back to the
    plain mean. The loss keeps the plain loss's scale (each half is a mean cross-entropy)."""

    columns: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    report_section = "attributes"

    def __post_init__(self) -> None:
        if not isinstance(self.options.get("balance", False), bool):
            raise ConfigError(f"task '{self.name}': balance = {self.options['balance']!r}; it must be true or false.")

    def export_output(self):
        return "attributes", len(self.names), list(self.names)

    def output_names(self):
        return list(self.names)

    def unlabelled_reason(self, labels):
        if (labels[:, list(self.columns)] >= 0).any():
            return None
        return f"none of its attributes ({', '.join(self.names[:5])}{'...' if len(self.names) > 5 else ''}) is labelled"

    def mask(self, batch):
        return (batch["attributes"][:, list(self.columns)] >= 0).any(1)

    def loss(self, output, batch, criterion=None):
        target = batch["attributes"][:, list(self.columns)]
        dt = torch.promote_types(output.dtype, torch.float32)  # float32 under autocast, float64 kept
        per = F.binary_cross_entropy_with_logits(output.to(dt), target.to(dt).clamp(min=0), reduction="none")
        if not self.options.get("balance", False):
            return masked_mean(per, target >= 0)
        return balanced_mean(per, target)

    def collect(self, output, batch):
        return {"prob": _np(torch.sigmoid(output.float())), "target": batch["attributes"][:, list(self.columns)].cpu().numpy()}

    def metrics(self, c):
        return _binary_metrics(c["prob"], c["target"])


class Affine(nn.Module):
    """``shift + scale * x``: heads regress normalised coordinates in well-scaled units
    (mean 0.5, spread 0.25) while the model's outputs stay in [0, 1] image coordinates."""

    def __init__(self, scale: float = 0.25, shift: float = 0.5):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


COORD_SCALE = 0.25


#: landmark losses (``[tasks.options.landmarks] loss = ...``); see :meth:`LandmarksTask.loss`
LANDMARK_LOSSES = ("nme", "wing", "smooth_l1", "l2")
LANDMARK_HEADS = ("auto", "heatmap", "linear")
#: the inter-ocular distance a landmark loss divides by never falls below this (normalised units):
#: a far profile's eyes nearly overlap, and its loss would otherwise explode
MIN_IOD = 0.05


def wing(x: Tensor, w: float = 0.5, eps: float = 0.1) -> Tensor:
    """Wing loss of |x| (Feng et al., CVPR 2018): ``w ln(1 + |x| / eps)`` below ``w``, linear above,
    continuous at ``w``. It grows like log for small errors, so they keep a large gradient."""
    a = x.abs()
    c = w - w * math.log(1.0 + w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


@dataclass
class LandmarksTask(Task):
    """5 landmarks regressed as 10 numbers in [0, 1] image coordinates (x1, y1, ..., x5, y5).

    Losses (option ``loss``), all per sample, averaged over the labelled samples:

    - ``nme`` (default): the metric itself, mean point-to-point distance over the inter-ocular
      distance (at least :data:`MIN_IOD`), with a 1e-3 smoothing at 0. Starts near 0.5-1 and ends
      near 0.05, the same range as a cross-entropy, so equal task weights are a sane start; its
      gradient does not fade as the error shrinks (unlike L2).
    - ``wing``: the Wing loss of each coordinate's error in inter-ocular units (w = 0.5, eps = 0.1).
    - ``smooth_l1``: smooth-L1 (beta 0.1) of the coordinate error in units of :data:`COORD_SCALE`.
    - ``l2``: TCDCN/MCFA's least squares, squared coordinate error in units of :data:`COORD_SCALE`
      (about 0.01-0.05 once trained: small beside cross-entropies).

    Head (option ``head``): ``auto`` (default) is a heatmap head with a soft-argmax
    (:mod:`facemtl.tasks.heatmap`) when the backbone exposes feature maps (``small``), else a
    linear regressor on the shared vector; ``heatmap`` or ``linear`` force one. Option
    ``heatmap_stride`` (4, the default, or 8) sets the heatmaps' resolution, ``heatmap_width``
    the head's channels (64). ``heatmap_prior`` (weight, 0 = off) adds DSNT's variance
    regularisation (Nibali et al. 2018) to the training loss: the weight times the mean squared
    difference between each heatmap's variance along x and y and that of a Gaussian of
    ``heatmap_sigma`` cells (1), in DSNT's [-1, 1] units; validation losses and metrics leave it out.

    Metric: NME, mean point-to-point error divided by the inter-ocular distance (between the two
    eye landmarks, i.e. eye centres), and the failure rate (NME > 0.10)."""

    report_section = "landmarks"

    def export_output(self):
        return "landmarks", 10, [f"{n}_{c}" for n in schema.LANDMARK_NAMES for c in "xy"]

    def output_names(self):
        return [f"{schema.LANDMARK_NAMES[k // 2]}.{'xy'[k % 2]}" for k in range(10)]

    def __post_init__(self) -> None:
        kind = self.options.get("loss", "nme")
        if kind not in LANDMARK_LOSSES:
            raise UnknownNameError("landmark loss", kind, list(LANDMARK_LOSSES))
        if self.options.get("head", "auto") not in LANDMARK_HEADS:
            raise UnknownNameError("landmark head", self.options["head"], list(LANDMARK_HEADS))
        for key, low, default in (("heatmap_prior", 0.0, 0.0), ("heatmap_sigma", 1e-3, 1.0), ("heatmap_width", 1, 64)):
            value = self.options.get(key, default)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= low:
                raise ConfigError(f"task '{self.name}': {key} = {value!r}; it must be a number >= {low} (default {default}).")

    def build_head(self, in_features):
        from facemtl.tasks.base import linear_head

        if self.options.get("head", "auto") == "heatmap":
            raise ConfigError(f"task '{self.name}': head = 'heatmap' needs a backbone that exposes feature maps "
                              "(small); use head = 'auto' or 'linear' with this backbone.")
        if self.options.get("heatmap_prior"):
            raise ConfigError(f"task '{self.name}': heatmap_prior acts on the heatmap head, and this model's landmark "
                              "head is linear (head = 'linear', or a backbone without feature maps); drop heatmap_prior.")
        return nn.Sequential(linear_head(in_features, self.out_dim, self.hidden), Affine(COORD_SCALE, 0.5))

    def build_map_head(self, channels):
        from facemtl.tasks.heatmap import HeatmapHead

        if self.options.get("head", "auto") == "linear":
            return None
        return HeatmapHead(tuple(channels), points=self.out_dim // 2, stride=int(self.options.get("heatmap_stride", 4)),
                           width=int(self.options.get("heatmap_width", 64)),
                           prior_sigma=float(self.options.get("heatmap_sigma", 1.0)) if self.options.get("heatmap_prior") else 0.0)

    def mask(self, batch):
        return torch.isfinite(batch["landmarks"]).flatten(1).all(1)

    def loss(self, output, batch, criterion=None):
        dt = torch.promote_types(output.dtype, torch.float32)  # float32 under autocast, float64 kept
        spread = None
        if output.shape[1] > self.out_dim:  # a heatmap head with a prior, training: coordinates, then variance excesses
            output, spread = output[:, :self.out_dim], output[:, self.out_dim:].to(dt)
        target = batch["landmarks"].to(dt)  # (B, 5, 2)
        known = torch.isfinite(target).flatten(1).all(1)
        target = torch.nan_to_num(target)
        diff = output.to(dt).view(-1, 5, 2) - target
        kind = self.options.get("loss", "nme")
        if kind in ("nme", "wing"):
            iod = (target[:, 0] - target[:, 1]).norm(dim=1).clamp(min=MIN_IOD).view(-1, 1, 1)
            d = diff / iod
            if kind == "nme":
                per = (d.pow(2).sum(2) + 1e-6).sqrt().mean(1)
            else:
                per = wing(d).flatten(1).mean(1)
        elif kind == "smooth_l1":
            d = diff.flatten(1) / COORD_SCALE
            per = F.smooth_l1_loss(d, torch.zeros_like(d), reduction="none", beta=0.1).mean(1)
        else:
            per = (diff.flatten(1) / COORD_SCALE).pow(2).mean(1)
        if spread is not None:
            per = per + float(self.options["heatmap_prior"]) * spread.pow(2).mean(1)
        return masked_mean(per, known)

    def collect(self, output, batch):
        m = _np(self.mask(batch)).astype(bool)
        # the head's yaw where the batch labels it (NaN elsewhere): the report breaks NME down by |yaw|
        pose = batch.get("pose")
        yaw = _np(pose[:, 0]).astype(np.float64)[m] if pose is not None else np.full(int(m.sum()), np.nan)
        return {"pred": _np(output)[m].reshape(-1, 5, 2), "target": _np(batch["landmarks"])[m], "yaw": yaw}

    def metrics(self, c):
        if not len(c["target"]):
            return {}
        pred, tgt = c["pred"], c["target"]
        iod = np.linalg.norm(tgt[:, 0] - tgt[:, 1], axis=1).clip(min=1e-6)
        nme = np.linalg.norm(pred - tgt, axis=2).mean(1) / iod
        return {"nme": float(nme.mean()), "failure_rate": float((nme > 0.10).mean())}


@dataclass
class DetectionTask(Task):
    """Face / non-face logit plus box regression (x, y, w, h in [0, 1]) on faces with a box.

    Loss = BCE(face) (a weighted mean where the batch has ``face_weight``) + ``bbox_weight`` *
    squared error of the box (MTCNN/MCFA's Euclidean loss), averaged over the 4 numbers in units of
    :data:`COORD_SCALE`. The head's outputs are the raw logit and the box in [0, 1] image
    coordinates."""

    report_section = "detection"

    def export_output(self):
        return "detection", 5, ["face_logit", "x", "y", "w", "h"]

    def output_names(self):
        return ["face", "x", "y", "w", "h"]

    def build_head(self, in_features):
        from facemtl.tasks.base import linear_head

        return nn.Sequential(linear_head(in_features, self.out_dim, self.hidden), _DetectionOut())

    def mask(self, batch):
        return batch["face"] >= 0

    def loss(self, output, batch, criterion=None):
        face = batch["face"]
        known = face >= 0
        if "face_weight" in batch:  # per-sample weights (mined non-faces, facemtl.engine.mining): a weighted mean
            known = known * batch["face_weight"]
        cls = masked_mean(
            F.binary_cross_entropy_with_logits(output[:, 0].float(), face.float().clamp(min=0), reduction="none"), known
        )
        box = batch["bbox"]
        has_box = torch.isfinite(box).all(1) & (face == 1)
        reg = masked_mean((((output[:, 1:5].float() - torch.nan_to_num(box)) / COORD_SCALE) ** 2).mean(1), has_box)
        return cls + float(self.options.get("bbox_weight", 1.0)) * reg

    def collect(self, output, batch):
        return {
            "score": _np(torch.sigmoid(output[:, 0].float())), "face": batch["face"].cpu().numpy(),
            "box_pred": _np(output[:, 1:5]), "box": _np(batch["bbox"]),
        }

    def metrics(self, c):
        from facemtl.metrics.detection import box_iou_xywh

        known = c["face"] >= 0
        out: dict[str, float] = {}
        if known.any():
            out["accuracy"] = float(((c["score"][known] >= 0.5) == (c["face"][known] == 1)).mean())
        has_box = (c["face"] == 1) & np.isfinite(c["box"]).all(1)
        if has_box.any():
            out["box_iou"] = float(box_iou_xywh(c["box_pred"][has_box], c["box"][has_box]).mean())
        return out


class _DetectionOut(nn.Module):
    """Keep column 0 (face logit) as is; map columns 1:5 to box coordinates (see :class:`Affine`)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[:, :1], x[:, 1:] * COORD_SCALE + 0.5], dim=1)


@dataclass
class ClassTask(Task):
    """A single-label classification over ``out_dim`` classes (expression, pose class)."""

    report_section = "classes"

    def class_names(self) -> tuple[str, ...]:
        """The names of the ``out_dim`` classes, in output order."""
        if self.label_key == "expression":
            return schema.EXPRESSION_NAMES
        return tuple(str(i) for i in range(self.out_dim))

    def export_output(self):
        if self.label_key == "expression":
            return "expression", self.out_dim, list(self.class_names())
        return self.label_key, self.out_dim, []

    def output_names(self):
        return list(self.class_names()) if self.label_key == "expression" else []

    def mask(self, batch):
        return batch[self.label_key] >= 0

    def loss(self, output, batch, criterion=None):
        y = batch[self.label_key].long()
        known = y >= 0
        per = F.cross_entropy(output[:, : self.out_dim].float(), y.clamp(min=0), reduction="none")
        return masked_mean(per, known)

    def collect(self, output, batch):
        y = batch[self.label_key].cpu().numpy()
        m = y >= 0
        return {"pred": _np(output[:, : self.out_dim]).argmax(1)[m], "target": y[m]}

    def metrics(self, c):
        if not len(c["target"]):
            return {}
        return {"accuracy": float((c["pred"] == c["target"]).mean())}


@dataclass
class PoseTask(ClassTask):
    """TCDCN's 5 head-pose classes plus (``yaw=True``) yaw regression in units of 90 degrees."""

    def class_names(self):
        return schema.POSE_CLASS_NAMES

    def export_output(self):
        dim = self.out_dim_total()
        return "pose", dim, list(schema.POSE_CLASS_NAMES) + (["yaw_over_90"] if dim > self.out_dim else [])

    def output_names(self):
        return [*schema.POSE_CLASS_NAMES, "yaw"]

    def loss(self, output, batch, criterion=None):
        cls = super().loss(output, batch)
        if self.out_dim_total() == self.out_dim:
            return cls
        yaw = batch["pose"][:, 0] / 90.0
        known = torch.isfinite(yaw)
        return cls + masked_mean((output[:, self.out_dim].float() - torch.nan_to_num(yaw)) ** 2, known)

    def out_dim_total(self) -> int:
        return self.out_dim + (1 if self.options.get("yaw", True) else 0)

    def build_head(self, in_features):
        from facemtl.tasks.base import linear_head

        return linear_head(in_features, self.out_dim_total(), self.hidden)

    def collect(self, output, batch):
        c = super().collect(output, batch)
        if self.out_dim_total() > self.out_dim:
            yaw = _np(batch["pose"][:, 0])
            m = np.isfinite(yaw)
            c["yaw_pred"], c["yaw"] = _np(output[:, self.out_dim])[m] * 90.0, yaw[m]
        return c

    def metrics(self, c):
        out = super().metrics(c)
        if "yaw" in c and len(c["yaw"]):
            out["yaw_mae_deg"] = float(np.abs(c["yaw_pred"] - c["yaw"]).mean())
        return out


class CentreLossCriterion(nn.Module):
    """Softmax classifier over identities + learnable class centres for the centre loss (Wen et al. 2016)."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.centres = nn.Parameter(torch.randn(num_classes, embedding_dim) * 0.01)


@dataclass
class IdentityTask(Task):
    """Seed 003's face-recognition branch: the head is a bottleneck embedding; the loss is softmax
    cross-entropy over training identities plus ``alpha`` x centre loss on the embedding.
    The classifier and centres live in :meth:`build_criterion` (not exported with the network)."""

    num_classes: int = 0

    report_section = "identity"

    def export_output(self):
        return "identity", self.out_dim, []

    def build_head(self, in_features):
        return nn.Sequential(nn.Linear(in_features, self.out_dim), nn.BatchNorm1d(self.out_dim))

    def build_criterion(self):
        return CentreLossCriterion(self.out_dim, self.num_classes)

    def mask(self, batch):
        y = batch["identity"]
        return (y >= 0) & (y < self.num_classes)

    def loss(self, output, batch, criterion=None):
        assert criterion is not None, "identity task needs its criterion module"
        y = batch["identity"].long()
        known = (y >= 0) & (y < self.num_classes)
        y0 = torch.where(known, y, torch.zeros_like(y))
        emb = output.float()
        ce = F.cross_entropy(criterion.classifier(emb), y0, reduction="none")
        centre = 0.5 * ((emb - criterion.centres[y0]) ** 2).sum(1)
        alpha = float(self.options.get("alpha", 0.01))
        return masked_mean(ce + alpha * centre, known)

    def collect(self, output, batch):
        y = batch["identity"].cpu().numpy()
        m = y >= 0
        return {"embedding": _np(output)[m], "target": y[m]}

    def metrics(self, c):
        from facemtl.metrics.verification import verification_from_embeddings

        if len(np.unique(c.get("target", []))) < 2:
            return {}
        try:
            v = verification_from_embeddings(c["embedding"], c["target"], max_pairs=4000, seed=0)
        except ValueError:  # e.g. every identity seen once: no genuine pair to score
            return {}
        return {"verification_auc": v["auc"], "eer": v["eer"]}


ALIASES = {"gender": "Male", "glasses": "Eyeglasses", "smile": "Smiling"}
