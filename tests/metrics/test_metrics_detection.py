"""IoU, NMS (against torchvision), ROC AUC / AP (against sklearn), matching, rate and FPPI."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from facemtl.metrics.detection import (
    average_precision,
    box_iou_xywh,
    detection_rate_and_fppi,
    match_detections,
    nms,
    pairwise_iou_xywh,
    roc_auc,
)


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(5, 30, (n, 2))
    return np.concatenate([xy, wh], 1)


def _xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def test_iou_hand_computed():
    # a = [0,10)x[0,10), b = [5,15)x[0,10): inter 5*10 = 50, union 100 + 100 - 50 = 150
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 10.0, 10.0]])
    assert box_iou_xywh(a, b)[0] == pytest.approx(1 / 3)
    # disjoint and touching boxes: 0; identical: 1
    assert box_iou_xywh(a, a + [20, 0, 0, 0])[0] == 0.0
    assert box_iou_xywh(a, a + [10, 0, 0, 0])[0] == 0.0
    assert box_iou_xywh(a, a)[0] == 1.0
    # zero-area boxes: union 0 -> IoU 0 (not NaN)
    z = np.zeros((1, 4))
    assert box_iou_xywh(z, z)[0] == 0.0


def test_iou_against_torchvision():
    ops = pytest.importorskip("torchvision.ops")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 40), _random_boxes(rng, 30)
    want = ops.box_iou(torch.from_numpy(_xyxy(a)), torch.from_numpy(_xyxy(b))).numpy()
    np.testing.assert_allclose(pairwise_iou_xywh(a, b), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(box_iou_xywh(a[:30], b), np.diag(want[:30]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed,thr", [(0, 0.3), (1, 0.5), (2, 0.7)])
def test_nms_matches_torchvision(seed, thr):
    ops = pytest.importorskip("torchvision.ops")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 200)
    scores = rng.permutation(200) / 200.0  # distinct scores: torchvision's tie order is unspecified
    want = ops.nms(torch.from_numpy(_xyxy(boxes)), torch.from_numpy(scores), thr).numpy()
    np.testing.assert_array_equal(nms(boxes, scores, thr), want)


def test_nms_hand_computed_and_empty():
    # box 1 overlaps box 0 with IoU 1/3; box 2 is far away
    boxes = np.array([[0.0, 0, 10, 10], [5.0, 0, 10, 10], [50.0, 50, 10, 10]])
    scores = np.array([0.9, 0.8, 0.7])
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [0, 2])  # 1/3 > 0.3: suppressed
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1, 2])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold, as torchvision):
    # inter 10*10 = 100, union 100 + 200 - 100 = 200 -> IoU 0.5
    pair = np.array([[0.0, 0, 10, 10], [0.0, 0, 10, 20]])
    np.testing.assert_array_equal(nms(pair, np.array([0.9, 0.8]), 0.5), [0, 1])
    np.testing.assert_array_equal(nms(pair, np.array([0.9, 0.8]), 0.49), [0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_and_ap_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.5 * labels, 1)  # rounding makes many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_roc_auc_ap_hand_computed():
    # labels 0 1 1 0, scores .1 .5 .5 .7: positive-negative pairs (4): (.5>.1) x2 = 2,
    # (.5<.7) x2 = 0 -> AUC 2/4 = 0.5. AP: at .7 P=0/1 R=0; at .5 P=2/3 R=1 -> AP = 1 * 2/3
    s, y = np.array([0.1, 0.5, 0.5, 0.7]), np.array([0, 1, 1, 0])
    assert roc_auc(s, y) == pytest.approx(0.5)
    assert average_precision(s, y) == pytest.approx(2 / 3)
    # all scores tied: AUC 0.5 exactly
    assert roc_auc(np.ones(6), np.array([0, 1, 0, 1, 1, 0])) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="positive"):
        average_precision(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="at least one"):
        roc_auc(np.array([]), np.array([]))


def test_match_detections_greedy_by_score():
    gt = np.array([[0.0, 0, 10, 10], [100.0, 100, 10, 10]])
    pred = np.array(
        [
            [1.0, 0, 10, 10],  # IoU 90/110 with gt 0, lower score
            [0.0, 0, 10, 10],  # exact match with gt 0, highest score -> takes it
            [100.0, 100, 10, 10],  # matches gt 1
            [200.0, 200, 10, 10],  # nothing
        ]
    )
    scores = np.array([0.5, 0.9, 0.8, 0.7])
    m = match_detections(pred, scores, gt, iou=0.5)
    np.testing.assert_array_equal(m["tp"], [False, True, True, False])
    np.testing.assert_array_equal(m["fp"], [True, False, False, True])
    np.testing.assert_array_equal(m["gt_index"], [-1, 0, 1, -1])
    assert m["n_gt"] == 2
    # no ground truth: all false positives; no predictions: empty flags
    assert match_detections(pred, scores, np.zeros((0, 4)))["fp"].all()
    assert match_detections(np.zeros((0, 4)), np.zeros(0), gt)["tp"].shape == (0,)


def test_detection_rate_and_fppi():
    gts = [np.array([[0.0, 0, 10, 10]]), np.array([[0.0, 0, 10, 10], [50.0, 50, 10, 10]]), np.zeros((0, 4))]
    preds = [
        (np.array([[0.0, 0, 10, 10], [30.0, 30, 5, 5]]), np.array([0.9, 0.6])),  # 1 TP, 1 FP
        {"boxes": np.array([[50.0, 50, 10, 10], [0.0, 0, 10, 10]]), "scores": np.array([0.8, 0.3])},  # 0.3 dropped
        (np.array([[5.0, 5, 5, 5]]), np.array([0.95])),  # FP in an image without faces
    ]
    r = detection_rate_and_fppi(preds, gts, iou=0.5, score_threshold=0.5)
    # 2 of 3 faces found; 2 false positives over 3 images
    assert r["detection_rate"] == pytest.approx(2 / 3)
    assert r["fppi"] == pytest.approx(2 / 3)
    assert (r["n_gt"], r["n_tp"], r["n_fp"], r["n_images"]) == (3, 2, 2, 3)
    # a lower threshold keeps the 0.3 box: all faces found
    assert detection_rate_and_fppi(preds, gts, score_threshold=0.2)["detection_rate"] == 1.0
    with pytest.raises(ValueError, match="at least one image"):
        detection_rate_and_fppi([], [])
    with pytest.raises(ValueError, match="prediction entries"):
        detection_rate_and_fppi(preds[:2], gts)
