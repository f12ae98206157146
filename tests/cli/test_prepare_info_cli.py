"""`facemtl --help/--version`, `prepare synthetic` and `info` as a user runs them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from facemtl import __version__
from facemtl.cli.main import app

runner = CliRunner()
COMMANDS = ["prepare", "info", "train", "evaluate", "ablate", "correlate", "export", "predict", "plot"]


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    for cmd in COMMANDS:
        r = runner.invoke(app, [cmd, "--help"])
        assert r.exit_code == 0, (cmd, r.output)
        assert "Usage" in r.output


def test_prepare_then_info(tmp_path):
    out = tmp_path / "s.h5"
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "-n", "40", "--identities", "5", "--sizes", "32,56",
                            "--scenes", "2", "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["info", str(out), "--json"])
    info = json.loads(r.output)
    assert info["num_samples"] == 40 and info["sizes"] == [32, 56] and info["scenes"] == 2
    assert sum(info["splits"].values()) == 40 and "landmarks" in info["tasks"]
    assert info["provenance"]["generator"] == "SynthFaces"
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "samples" in r.output


@pytest.mark.parametrize("args, message", [
    (["--sizes", "0,abc"], "--sizes"),
    (["--sizes", "4"], "between 8 and 1024"),
    (["-n", "0"], "--num-images"),
    (["--identities", "1"], "--identities"),
    (["--face-scale", "1.2"], "--face-scale"),
    (["--face-scale", "1.4,1.0"], "--face-scale must be two numbers LO, HI"),
    (["--face-scale", "0.1,1.0"], "0.3 <= LO <= HI <= 2.0"),
])
def test_prepare_bad_options(tmp_path, args, message):
    out = tmp_path / "s.h5"
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "-n", "8", *args])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_prepare_refuses_existing_and_unwritable(tmp_path):
    out = tmp_path / "s.h5"
    out.write_bytes(b"keep me")
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "-n", "8"])
    assert r.exit_code == 1 and "--force" in r.output and out.read_bytes() == b"keep me"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(blocker / "s.h5"), "-n", "8"])
    assert r.exit_code == 1 and "writable" in r.output


def test_info_on_bad_files(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"definitely not hdf5")
    for path, msg in ((junk, "not a readable HDF5"), (tmp_path / "none.h5", "does not exist")):
        r = runner.invoke(app, ["info", str(path)])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output


def test_damaged_cache_is_refused_by_info_and_train(tmp_path):
    import h5py

    from tests.conftest import write_toy_cache

    path = write_toy_cache(tmp_path / "c.h5", n=20)
    with h5py.File(path, "a") as f:
        for k in list(f["images"]):
            del f[f"images/{k}"]
    (tmp_path / "dir.h5").mkdir()
    for target, msg in ((path, "/images holds no image dataset"), (tmp_path / "dir.h5", "is a directory")):
        r = runner.invoke(app, ["info", str(target)])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output
        r = runner.invoke(app, ["train", "--data", str(target), "--out", str(tmp_path / "run"), "--epochs", "1"])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output, r.output


def test_prepare_face_scale_frames_the_faces(tmp_path):
    """--face-scale sets how large the head is in its crop: the eyes lie further apart in a tight crop."""
    import h5py
    import numpy as np

    iod = {}
    for name, scale in (("loose", "0.6,0.7"), ("tight", "1.3,1.4")):
        out = tmp_path / f"{name}.h5"
        r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), "-n", "40", "--identities", "5", "--sizes", "32",
                                "--scenes", "0", "--workers", "1", "--face-scale", scale])
        assert r.exit_code == 0, r.output
        info = json.loads(runner.invoke(app, ["info", str(out), "--json"]).output)
        assert info["provenance"]["config"]["face_scale"] == [float(x) for x in scale.split(",")]
        with h5py.File(out) as f:
            lm = f["labels/landmarks"][:]
        lm = lm[np.isfinite(lm).all((1, 2))]
        iod[name] = np.median(np.linalg.norm(lm[:, 0] - lm[:, 1], axis=1))
    # twice the head height, about twice the inter-ocular distance (in crop-side units)
    assert 1.6 < iod["tight"] / iod["loose"] < 2.6, iod
