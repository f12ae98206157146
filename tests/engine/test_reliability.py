"""Interrupted, concurrent and failing work (issue 14): a run folder stays consistent after a kill
between its writes, Ctrl-C resumes every buffer, one process per run folder or cache, stale
temporary files go, a full disk ends cleanly, files honour the umask."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from facemtl.engine import run_folder
from facemtl.engine.config import apply_overrides, load_recipe
from facemtl.engine.trainer import train
from facemtl.errors import InUseError, WriteError

ROOT = Path(__file__).resolve().parents[2]


def tiny(cache, out, **over):
    base = {"data.path": str(cache), "out": str(out), "train.device": "cpu", "train.batch_size": 32, "augment.preset": "none",
            "tasks.names": ["landmarks", "smile"], "model.input_size": 56, "model.options": {"width": 8},
            "train.epochs": 1, "train.max_steps_per_epoch": 3, "train.val_batches": 1}
    base.update(over)
    return apply_overrides(load_recipe("quick"), base)


def metrics(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "metrics.csv").drop(columns=["seconds"])


def same_state(a: dict, b: dict) -> bool:
    """Every entry of two state dicts equal: weights and buffers (BatchNorm's num_batches_tracked too)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs in the trainer (BaseException passes every handler)."""


# -- item 2: a kill between the end-of-epoch writes ----------------------------------------------------
@pytest.mark.parametrize("killed_at", ["best.pt", "metrics.csv", "weights.csv"])
def test_kill_between_the_epoch_writes_is_repaired_on_resume(synth_cache, tmp_path, monkeypatch, killed_at):
    ref = train(tiny(synth_cache, tmp_path / "ref"))
    cfg = tiny(synth_cache, tmp_path / "cut")
    copy, write = run_folder.copy_atomic, run_folder.write_text_atomic

    def die_at(real):
        def f(path, *a, **k):
            if Path(path).name == killed_at:
                raise Killed
            return real(path, *a, **k)
        return f

    monkeypatch.setattr(run_folder, "copy_atomic", lambda src, dst: die_at(lambda p: copy(src, p))(dst))
    monkeypatch.setattr(run_folder, "write_text_atomic", die_at(write))
    with pytest.raises(Killed):
        train(cfg)
    assert (tmp_path / "cut" / "last.pt").exists() and not (tmp_path / "cut" / killed_at).exists()
    monkeypatch.undo()

    res = train(cfg, resume=True)
    cut = tmp_path / "cut"
    assert res.best_epoch == ref.best_epoch == 1
    assert metrics(cut).equals(metrics(tmp_path / "ref"))
    assert pd.read_csv(cut / "weights.csv").equals(pd.read_csv(tmp_path / "ref" / "weights.csv"))
    best = torch.load(cut / "best.pt", weights_only=False)
    assert best["epoch"] == res.best_epoch
    assert same_state(best["model"], torch.load(tmp_path / "ref" / "best.pt", weights_only=False)["model"])
    assert pd.DataFrame(res.val_metrics).equals(pd.DataFrame(ref.val_metrics))  # the table printed is the best model's


# -- item 3: Ctrl-C inside a step ------------------------------------------------------------------------
def interrupt_in_forward(monkeypatch, at_call: int, signals: int = 1):
    """Send SIGINT from inside the model's forward pass (after a BatchNorm layer updated its statistics)."""
    import facemtl.models as models

    build = models.build_model

    def build_and_hook(*a, **k):
        model = build(*a, **k)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        calls = [0]

        def hook(module, inputs, output):
            if module.training:
                calls[0] += 1
                if calls[0] == at_call:
                    for _ in range(signals):
                        signal.raise_signal(signal.SIGINT)

        bn.register_forward_hook(hook)
        return model

    monkeypatch.setattr(models, "build_model", build_and_hook)


def test_ctrl_c_inside_a_step_resumes_every_buffer(synth_cache, tmp_path, monkeypatch):
    over = {"train.epochs": 2, "train.max_steps_per_epoch": 4}
    ref = train(tiny(synth_cache, tmp_path / "ref", **over))
    cfg = tiny(synth_cache, tmp_path / "cut", **over)
    interrupt_in_forward(monkeypatch, at_call=6)  # epoch 2, batch 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert (saved["epoch"], saved["batches_done"]) == (1, 2)  # the step under way was finished, then saved
    res = train(cfg, resume=True)
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert same_state(a["model"], b["model"])  # num_batches_tracked and running statistics included
    assert metrics(tmp_path / "cut").equals(metrics(tmp_path / "ref")) and res.best_epoch == ref.best_epoch


def test_second_ctrl_c_inside_a_step_keeps_the_last_checkpoint(synth_cache, tmp_path, monkeypatch):
    over = {"train.epochs": 2, "train.max_steps_per_epoch": 4}
    train(tiny(synth_cache, tmp_path / "ref", **over))
    cfg = tiny(synth_cache, tmp_path / "cut", **over)
    interrupt_in_forward(monkeypatch, at_call=6, signals=2)  # the second one stops at once, mid-step
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert (saved["epoch"], saved["batches_done"]) == (1, 0)  # epoch 1's checkpoint, not half a step
    assert not list((tmp_path / "cut").glob(".*.tmp"))
    train(cfg, resume=True)
    assert same_state(torch.load(tmp_path / "ref" / "last.pt", weights_only=False)["model"],
                      torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"])
    assert metrics(tmp_path / "cut").equals(metrics(tmp_path / "ref"))


# -- item 4: one process per run folder or cache ---------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys
    from facemtl.errors import InUseError
    from facemtl.utils.lock import run_lock
    try:
        with run_lock(sys.argv[1]):
            print("locked", flush=True)
            sys.stdin.readline()  # hold it until told
    except InUseError as e:
        print("refused:", e, flush=True)
        sys.exit(3)
""")


def hold(folder: Path) -> subprocess.Popen:
    """A process that takes ``folder``'s run lock and holds it until a line arrives on its stdin."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)


def test_two_processes_racing_for_a_run_folder(tmp_path):
    run = tmp_path / "run"
    procs = [hold(run) for _ in range(2)]  # started together
    first = [p.stdout.readline() for p in procs]  # the loser answers at once, the winner holds
    assert sorted(line.split()[0] for line in first) == ["locked", "refused:"], first
    winner, loser = (procs[0], procs[1]) if first[0].startswith("locked") else (procs[1], procs[0])
    refused = first[procs.index(loser)]
    assert f"pid {winner.pid} on host" in refused and str(run) in refused and "--out" in refused
    winner.communicate("\n", timeout=60)
    assert loser.wait(timeout=60) == 3 and winner.returncode == 0
    assert not (run / ".lock").exists()  # released and removed


def test_train_refuses_a_run_folder_in_use_and_writes_nothing(synth_cache, tmp_path):
    proc = hold(tmp_path / "run")
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InUseError, match=rf"run folder .*run is in use by pid {proc.pid} on host"):
            train(tiny(synth_cache, tmp_path / "run"))
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # no config.toml
    finally:
        proc.kill()
        proc.wait()
    # the holder died without releasing (SIGKILL): its lock is taken over
    res = train(tiny(synth_cache, tmp_path / "run"))
    assert len(res.history) == 1 and not (tmp_path / "run" / ".lock").exists()


def test_stale_lock_without_flock_is_taken_over(tmp_path, monkeypatch):
    import json
    import socket

    from facemtl.utils import lock

    monkeypatch.setattr(lock, "fcntl", None)  # the O_EXCL fallback (no flock on the filesystem)
    path = tmp_path / ".lock"
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with lock.run_lock(tmp_path):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(InUseError, match=f"pid {os.getpid()}"):  # a live owner is refused
            lock.run_lock(tmp_path).acquire()
    path.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere"}))
    with pytest.raises(InUseError, match="host elsewhere"):  # another host's lock is never taken over
        lock.run_lock(tmp_path).acquire()


def test_a_cache_being_prepared_is_locked(tmp_path):
    from facemtl.data.synthetic import prepare_synthetic
    from facemtl.utils.lock import cache_lock

    out = tmp_path / "s.h5"
    with cache_lock(out), pytest.raises(InUseError, match=rf"cache .*s\.h5 is in use by pid {os.getpid()}"):
        prepare_synthetic(out, num_images=8, identities=2, sizes=(16,), workers=1)
    assert not out.exists()
    prepare_synthetic(out, num_images=8, identities=2, sizes=(16,), workers=1)
    assert out.exists() and not list(tmp_path.glob(".*lock"))


# -- item 5: stale temporary files -------------------------------------------------------------------------
def test_stale_temporary_files_are_removed_on_the_next_run(synth_cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stale = [run / f".last.pt.{dead_pid()}.ab12.tmp", run / ".best.pt.x9y8z7.tmp"]  # a killed run; an older name
    live = run / f".metrics.csv.{os.getppid()}.cd34.tmp"  # pid of a live process: not ours to delete
    other = run / ".notes.txt.1.tmp"
    for p in (*stale, live, other):
        p.write_bytes(b"half")
    train(tiny(synth_cache, run))
    assert not any(p.exists() for p in stale) and live.exists() and other.exists()


# -- item 6: a full disk -------------------------------------------------------------------------------------
def enospc_after(nbytes: int):
    def save(obj, f, *a, **k):
        f.write(b"x" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")
    return save


def test_disk_full_while_saving_a_checkpoint(synth_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", enospc_after(4096))
    with pytest.raises(WriteError, match=r"no space left on the device while writing .*last\.pt \(about [\d.]+ (KiB|MiB) needed, .* free there\)"):
        train(tiny(synth_cache, tmp_path / "run"))
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name != "tb") == ["config.toml"]  # no partial file, no lock


def test_disk_full_is_one_line_from_the_cli(synth_cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from facemtl.cli.main import app

    monkeypatch.setattr(torch, "save", enospc_after(10))
    r = CliRunner().invoke(app, ["train", "--data", str(synth_cache), "--out", str(tmp_path / "run"), "--device", "cpu",
                                 "--tasks", "smile", "--epochs", "1", "--max-steps", "1", "--input-size", "48"])
    assert r.exit_code == 1, r.output
    err = [line for line in r.output.splitlines() if "error:" in line]
    assert len(err) == 1 and "no space left" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_disk_full_during_export_leaves_nothing(tmp_path, monkeypatch, fmt):
    pytest.importorskip("onnxruntime")
    from facemtl.export import exporter
    from tests.export._helpers import recipe_model

    model, tasks, cfg = recipe_model("default")
    if fmt == "onnx":
        def full(module, args, path, **k):
            Path(path).write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(exporter, "export_onnx", full)
    else:
        monkeypatch.setattr(torch.jit, "save", enospc_after(100))
    out = tmp_path / "export"
    with pytest.raises(WriteError, match=r"no space left on the device while writing .*model\.(onnx|torchscript)"):
        exporter.export_model(model, tasks, out / "model", fmt=fmt, cfg=cfg)
    assert list(out.iterdir()) == []


# -- item 11: the umask ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    from facemtl.engine.checkpoint import save_checkpoint
    from facemtl.utils.io import current_umask, write_json_atomic, write_text_atomic

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        write_text_atomic(tmp_path / "config.toml", "a = 1\n")
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        save_checkpoint(tmp_path / "last.pt", {"x": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("config.toml", "r.json", "last.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_exported_files_honour_the_umask(tmp_path):
    from facemtl.export.exporter import export_model
    from tests.export._helpers import recipe_model

    model, tasks, cfg = recipe_model("default")
    old = os.umask(0o002)
    try:
        res = export_model(model, tasks, tmp_path / "m.torchscript", fmt="torchscript", cfg=cfg)
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in [*res.files, res.metadata_path]} == {0o664}


# -- item 12: the training cache from another folder -----------------------------------------------------------
def test_evaluate_finds_the_training_cache_from_another_folder(synth_cache, tmp_path, monkeypatch):
    import shutil

    from facemtl.engine.checkpoint import load_checkpoint, training_cache
    from facemtl.reports.evaluate import evaluate

    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    shutil.copy(synth_cache, proj / "data" / "s.h5")
    monkeypatch.chdir(proj)
    train(tiny("data/s.h5", "runs/x"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ev = evaluate(proj / "runs" / "x", split="val", out=tmp_path / "ev", scenes=False, figures=False, curves=False)
    assert ev.reports
    state = load_checkpoint(proj / "runs" / "x")
    cache = (proj / "data" / "s.h5").resolve()
    assert Path(training_cache(state, proj / "runs" / "x")).resolve() == cache
    # checkpoints from before the record: worked out from the run folder and its --out
    old = {k: v for k, v in state.items() if k not in ("data_path", "cwd")}
    assert Path(training_cache(old, proj / "runs" / "x")).resolve() == cache
    assert training_cache(old, None) == "data/s.h5"  # not found: the path as given, for the error


def test_moved_training_cache_points_to_data(tmp_path, monkeypatch):
    from facemtl.errors import MissingFileError
    from facemtl.reports._data import resolve_dataset

    with pytest.raises(MissingFileError, match=r"cache .*gone\.h5 \(the run's training cache\) does not exist\. Pass --data"):
        resolve_dataset(None, None, str(tmp_path / "gone.h5"))


# -- item 19: option ranges before anything is written -------------------------------------------------------
@pytest.mark.parametrize("over, match", [
    ({"train.epochs": 0}, r"train\.epochs \(--epochs\) must be at least 1, got 0"),
    ({"train.lr": -0.1}, r"train\.lr \(--lr\) must be a positive number"),
    ({"train.lr": float("nan")}, r"train\.lr"),
    ({"train.batch_size": 0}, r"--batch-size"),
    ({"train.patience": -1}, r"--patience"),
    ({"train.seed": -3}, r"--seed"),
    ({"data.num_workers": -1}, r"--workers"),
    ({"train.momentum": 1.5}, r"train\.momentum must be in \[0, 1\)"),
    ({"train.schedule": "linear"}, r"Valid schedule names"),
])
def test_bad_ranges_fail_before_anything_is_written(tmp_path, over, match):
    from facemtl.errors import ConfigError, UnknownNameError

    cfg = tiny(tmp_path / "nosuch.h5", tmp_path / "run", **over)
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        train(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "nosuch.h5").exists()


def test_epochs_0_from_the_cli_leaves_no_folder(tmp_path):
    from typer.testing import CliRunner

    from facemtl.cli.main import app

    r = CliRunner().invoke(app, ["train", "--epochs", "0", "--out", str(tmp_path / "ep0"), "--data", str(tmp_path / "x.h5")])
    assert r.exit_code == 1 and "--epochs" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "ep0").exists()
