"""``facemtl.reports.curves``: training curves and task weights of a run as PNGs."""

from __future__ import annotations

import pytest

from facemtl.errors import MissingFileError
from facemtl.reports.curves import curve_figures

from ._fixtures import check_png


def test_curves_of_a_run(run, tmp_path):
    written = curve_figures(run, tmp_path)
    assert {"curves_loss.png", "curves_weights.png", "curves_step_loss.png", "curves_val_landmarks.png"} <= set(written)
    for name in written:
        check_png(tmp_path / name)


def test_not_a_run(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        curve_figures(tmp_path / "nope", tmp_path)
    with pytest.raises(MissingFileError, match="neither metrics.csv nor weights.csv"):
        curve_figures(tmp_path, tmp_path / "out")
