"""`predict` merges a box nested inside a larger one (issue 14, item 21): NMS alone keeps both."""

from __future__ import annotations

import numpy as np
import pytest

from facemtl.errors import ConfigError
from facemtl.export.faces import FinderConfig, nms, suppress_nested


def test_nested_box_is_merged_where_nms_keeps_it():
    head = [100, 100, 100, 120]  # a head box
    face = [125, 135, 50, 55]  # the face inside it: IoU 0.23, under NMS's 0.3
    other = [300, 100, 60, 60]  # another face elsewhere
    boxes, scores = np.array([head, face, other], float), np.array([0.95, 0.99, 0.97])
    assert len(nms(boxes, scores, 0.3)) == 3
    assert suppress_nested(boxes, scores, 0.7).tolist() == [1, 2]  # the better of the pair, then the other face
    scores = np.array([0.99, 0.95, 0.97])  # the outer box scores higher: it is kept, the inner one merged
    assert suppress_nested(boxes, scores, 0.7).tolist() == [0, 2]


def test_partly_overlapping_boxes_are_both_kept():
    boxes = np.array([[0, 0, 100, 100], [60, 0, 100, 100]], float)  # 40 % of each in the other
    assert suppress_nested(boxes, np.array([0.9, 0.8]), 0.7).tolist() == [0, 1]
    assert suppress_nested(np.zeros((0, 4)), np.zeros(0), 0.7).tolist() == []


def test_nested_option_is_checked():
    with pytest.raises(ConfigError, match="nested"):
        FinderConfig(nested=0.0)
