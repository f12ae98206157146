"""``predict``'s image loading: size limit, tiny images, 16-bit input (issue 14, item 10)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.export import backends
from facemtl.export.predict import ImageError, read_image

runner = CliRunner()


def _png(path: Path, w: int, h: int) -> Path:
    Image.new("RGB", (w, h), (90, 120, 150)).save(path)
    return path


def test_too_large_is_named_before_decoding(tmp_path: Path) -> None:
    path = _png(tmp_path / "big.png", 300, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw PIL DecompressionBombWarning either
        with pytest.raises(ImageError, match=r"too large \(60,000 pixels, 300x200; limit 50,000\)") as e:
            read_image(path, max_pixels=50_000)
        assert "--max-pixels 60000" in str(e.value) and e.value.reason.startswith("too large")
        assert read_image(path, max_pixels=60_000).shape == (200, 300, 3)
        assert read_image(path, max_pixels=None).shape == (200, 300, 3)


def test_beyond_pils_bomb_limit_is_too_large_not_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL refuses more than twice MAX_IMAGE_PIXELS as a "decompression bomb": shrink PIL's limit
    # instead of writing a 20000x20000 file
    path = _png(tmp_path / "big.png", 300, 200)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        read_image(path, max_pixels=50_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, max_pixels=None).shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def test_tiny_and_sixteen_bit(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="too small") as e:
        read_image(_png(tmp_path / "dot.png", 1, 1))
    assert e.value.reason == "too small: 1x1 pixels"
    ramp = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = read_image(tmp_path / "g16.png")
    assert abs(rgb.mean() - 127.5) < 1 and rgb.max() == 255


def test_cli_summary_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "load_backend", lambda model, threads=None: object())  # never reached
    dot, big = _png(tmp_path / "dot.png", 1, 1), _png(tmp_path / "big.png", 300, 200)
    r = runner.invoke(app, ["predict", str(tmp_path / "m.onnx"), str(dot), str(big), "--aligned", "--max-pixels", "50000"])
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "could not be decoded" not in text
    assert "2 image(s) could not be used: " in text and "dot.png (too small: 1x1 pixels)" in text
    assert "big.png (too large: 60,000 pixels; limit 50,000)" in text
