"""A prepare killed at any point resumes from its last complete block (issue 14, items 1 and 6).

The prepare runs in a subprocess with small blocks (8 rows) and is killed once the partial folder
holds a chosen number of blocks; ``--resume`` must then finish it into the very cache an
uninterrupted prepare writes.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from facemtl.cli.main import app
from facemtl.data import cache as cache_mod
from facemtl.data import synthetic
from facemtl.data.cache import partial_path, shard_rows

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["-n", "48", "--identities", "4", "--sizes", "16", "--scenes", "2"]
# the CLI as a user runs it, with 8-row blocks so that a few seconds hold several blocks
SCRIPT = ("import sys; from facemtl.data import synthetic; synthetic.BLOCK = 8; "
          "from facemtl.cli.main import app; sys.argv[0] = 'facemtl'; app()")
# the library alone (no torch import: a second less per start); same options as ARGS
LIBRARY = ("import logging, sys; logging.basicConfig(level=logging.INFO); from facemtl.data import synthetic; "
           "synthetic.BLOCK = 8; synthetic.prepare_synthetic(sys.argv[1], num_images=48, identities=4, sizes=(16,), "
           "num_scenes=2, workers=1, resume='--resume' in sys.argv)")
runner = CliRunner()


def _start(out: Path, *extra: str, workers: str = "1", cli: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FACEMTL_PROGRESS": "0"}
    if cli:
        cmd = [sys.executable, "-c", SCRIPT, "prepare", "synthetic", "--out", str(out), *ARGS, "--workers", workers, *extra]
    else:
        cmd = [sys.executable, "-c", LIBRARY, str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_after(proc: subprocess.Popen, out: Path, rows: int, sig: int, group: bool = False) -> None:
    deadline = time.monotonic() + 60
    while shard_rows(partial_path(out)) < rows:
        assert proc.poll() is None, f"prepare ended before it was killed: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)


def _reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(synthetic, "BLOCK", 8)
    ref = tmp_path / "ref.h5"
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(ref), *ARGS, "--workers", "1"])
    assert r.exit_code == 0, r.output
    return ref


def _same_cache(a: Path, b: Path) -> None:
    with h5py.File(a) as fa, h5py.File(b) as fb:
        names: list[str] = []
        fa.visit(names.append)
        fb_names: list[str] = []
        fb.visit(fb_names.append)
        assert names == fb_names
        for k in names:
            if isinstance(fa[k], h5py.Dataset):
                np.testing.assert_array_equal(fa[k][()], fb[k][()], err_msg=k)
        for k in ("schema_version", "source", "attribute_names", "provenance"):
            assert fa.attrs[k] == fb.attrs[k]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _reference(tmp_path, monkeypatch)
    out = tmp_path / "s.h5"
    proc = _start(out, cli=False)
    _kill_after(proc, out, 16, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    kept = shard_rows(partial_path(out))
    assert 16 <= kept < 48
    proc = _start(out, "--resume", cli=False)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "starting afresh" not in stderr and f"{kept} of 48 rows already written" in " ".join(stderr.split())
    assert not partial_path(out).exists()
    _same_cache(ref, out)


def test_sigterm_is_an_interrupt_without_tracebacks(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    proc = _start(out, workers="2")
    _kill_after(proc, out, 8, signal.SIGTERM, group=True)  # as a service manager or `timeout` does
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert not out.exists() and shard_rows(partial_path(out)) >= 8


def test_disk_full_while_writing_a_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "BLOCK", 8)
    out = tmp_path / "s.h5"
    real_savez, calls = np.savez, {"n": 0}

    def savez(fh, **arrays):
        calls["n"] += 1
        if calls["n"] == 3:
            fh.write(b"half a block")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(fh, **arrays)

    monkeypatch.setattr(cache_mod.np, "savez", savez)
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), *ARGS, "--workers", "1"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines[0].startswith("error: disk full while writing") and str(partial_path(out)) in " ".join(r.output.split())
    assert "--resume" in r.output
    # the partial folder holds only the complete blocks, no half-written one
    assert not out.exists() and shard_rows(partial_path(out)) == 16
    assert not [p for p in partial_path(out).iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(cache_mod.np, "savez", real_savez)
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), *ARGS, "--workers", "1", "--resume"])
    assert r.exit_code == 0, r.output
    ref = tmp_path / "ref.h5"
    assert runner.invoke(app, ["prepare", "synthetic", "--out", str(ref), *ARGS, "--workers", "1"]).exit_code == 0
    _same_cache(ref, out)


def test_disk_full_while_assembling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s.h5"

    def full(self, f):
        raise OSError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')")

    monkeypatch.setattr(cache_mod.CacheWriter, "_finalise", full)
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), *ARGS, "--workers", "1"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "disk full while writing" in r.output and "--resume" in r.output
    assert not out.exists() and not (partial_path(out) / "assembling.h5").exists()
    assert shard_rows(partial_path(out)) == 48  # every block kept: --resume only assembles


def test_not_enough_space_is_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "s.h5"
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 10_000})())
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(out), *ARGS, "--workers", "1"])
    assert r.exit_code == 1 and "not enough free space" in r.output and "needs about" in r.output
    assert not list(tmp_path.iterdir())
