"""Metric functions used by every report, pure numpy, each checked against scikit-learn,
scipy or hand-computed cases in ``tests/metrics``.

- :mod:`.classification` binary attributes (unknown = -1 ignored) and multi-class metrics
- :mod:`.landmarks`      NME (inter-ocular or box normalised), failure rate, CED and its AUC
- :mod:`.detection`      IoU on x, y, w, h boxes, NMS, ROC AUC / AP, matching, rate and FPPI
- :mod:`.verification`   balanced pairs, ROC, AUC, EER, TAR@FAR from embeddings
- :mod:`.mtl`            Delta-m% (lower is better), Pearson / cosine matrices, strongest pairs
- :mod:`.plots`          PNG figures for the reports (imports matplotlib only when called)
"""

from facemtl.metrics.classification import attribute_table, binary_metrics, multiclass_metrics
from facemtl.metrics.detection import (
    average_precision,
    box_iou_xywh,
    detection_rate_and_fppi,
    match_detections,
    nms,
    pairwise_iou_xywh,
    roc_auc,
)
from facemtl.metrics.landmarks import ced_auc, ced_curve, failure_rate, nme
from facemtl.metrics.mtl import cosine_matrix, delta_m, pearson, pearson_matrix, strongest_pairs
from facemtl.metrics.verification import eer, make_pairs, roc_curve, tar_at_far, verification_from_embeddings

__all__ = [
    "attribute_table",
    "average_precision",
    "binary_metrics",
    "box_iou_xywh",
    "ced_auc",
    "ced_curve",
    "cosine_matrix",
    "delta_m",
    "detection_rate_and_fppi",
    "eer",
    "failure_rate",
    "make_pairs",
    "match_detections",
    "multiclass_metrics",
    "nme",
    "nms",
    "pairwise_iou_xywh",
    "pearson",
    "pearson_matrix",
    "roc_auc",
    "roc_curve",
    "strongest_pairs",
    "tar_at_far",
    "verification_from_embeddings",
]
