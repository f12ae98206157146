"""A new user's first hour (issue 14, items 15-18 and 21): what `make demo` and the first commands do."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from facemtl.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _tiny(cache: Path) -> list[str]:
    """Options of a few-step CPU run on the tests' 40 px SynthFaces."""
    return ["--data", str(cache), "--backbone", "tcdcn", "--input-size", "40", "--epochs", "1", "--max-steps", "2",
            "--batch-size", "32", "--device", "cpu", "--augment", "none"]


# -- item 15: a mistyped --data -------------------------------------------------------------------
@pytest.mark.parametrize("command", [["train"], ["ablate", "--tasks", "landmarks,pose", "--out", "abl"]])
def test_mistyped_data_is_an_error_not_a_render(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [*command, "--data", "data/nosuch.h5"])
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "data/nosuch.h5 (--data) does not exist" in out and "facemtl prepare synthetic --out data/nosuch.h5" in out
    assert "Traceback" not in r.output
    assert not any(tmp_path.rglob("*.h5*")) and not (tmp_path / "runs").exists()  # nothing rendered, nothing written


def test_the_recipes_own_cache_may_be_rendered(tmp_path):
    from facemtl.cli._common import check_data_option

    check_data_option(None, "data/synthfaces.h5")
    check_data_option(Path("data/synthfaces.h5"), "data/synthfaces.h5")  # the default, spelt out: rendered
    check_data_option(Path("./data/../data/synthfaces.h5"), "data/synthfaces.h5")


# -- item 18: the expected duration before a render --------------------------------------------------
def test_render_is_announced_with_its_duration(tmp_path, capsys):
    from facemtl.cli import _common
    from facemtl.engine.config import apply_overrides, load_recipe

    cfg = apply_overrides(load_recipe("quick"), {"data.path": str(tmp_path / "s.h5"), "data.synthetic_images": 4000})
    _common.announce_synthetic_render(cfg, sample=4)
    err = " ".join(capsys.readouterr().err.split())
    # the default recipe's model reads 64 px: that size alone is rendered (not 56, 112, 224)
    assert re.search(r"rendering 4,000 SynthFaces images \(64 px\) into it first, about \d+ (s|min)", err), err
    assert not (tmp_path / "s.h5").exists()
    (tmp_path / "s.h5").touch()
    _common.announce_synthetic_render(cfg, sample=4)
    assert capsys.readouterr().err == ""  # nothing to render, nothing said


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (42, "42 s"), (150, "2 min"), (3 * 3600 + 65, "3 h 01 min")])
def test_format_duration(seconds, text):
    from facemtl.cli._common import format_duration

    assert format_duration(seconds) == text


# -- item 16/17: make demo ------------------------------------------------------------------------
def _demo_commands() -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -o: take the venv as installed, so only the demo's own commands are listed
    r = subprocess.run(["make", "-n", "-o", ".venv/.installed", "demo"], cwd=ROOT, capture_output=True, text=True, check=True)
    return r.stdout.splitlines()


def test_make_demo_commands_parse_and_say_how_to_activate():
    lines = _demo_commands()
    facemtl = [shlex.split(line)[1:] for line in lines if line.startswith(".venv/bin/facemtl ")]
    assert len(facemtl) >= 3
    for argv in facemtl:
        r = runner.invoke(app, [*argv, "--help"])
        assert r.exit_code == 0, (argv, r.output)
    assert any(". .venv/bin/activate" in line for line in lines if line.startswith("echo"))
    train = next(a for a in facemtl if a[0] == "train")
    # repeatable by design: the demo replaces its own run folder, which is what it evaluates
    assert "--force" in train and "--out" in train
    run = train[train.index("--out") + 1]
    assert any(a[0] == "evaluate" and a[1] == run for a in facemtl)


def test_train_twice_into_one_folder_with_the_demos_flags(tmp_path, base):
    """What a second `make demo` does: the same train command, --out DIR --force, succeeds again.
    The result table names the yaw error as evaluate does (yaw_mae_deg)."""
    from reports._fixtures import synth_cache

    argv = ["train", *_tiny(synth_cache(base)), "--tasks", "landmarks,pose", "--out", str(tmp_path / "demo"), "--force"]
    for _ in range(2):
        r = runner.invoke(app, argv)
        assert r.exit_code == 0, r.output
    assert "yaw_mae_deg" in r.output
    r = runner.invoke(app, argv[:-1])  # without --force it refuses, as before
    assert r.exit_code == 1 and "already holds a checkpoint" in r.output


# -- item 21: help and output ---------------------------------------------------------------------
def test_help_has_no_bool_tags_and_documents_the_common_options():
    for cmd in (["train"], ["ablate"], ["evaluate"], ["prepare", "celeba"], ["prepare", "synthetic"], []):
        r = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "<bool>" not in r.output, (cmd, r.output)
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    for opt in ("--epochs", "--batch-size", "--lr", "--seed"):
        line = next(l for l in r.output.splitlines() if re.search(rf"│\s+{opt}\s", l))
        assert re.search(r"<(int|float)>\s+\w+", line), f"{opt} has no help text: {line}"
    assert "--compile" in r.output and "--no-compile" in r.output
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Examples" in top and "facemtl train --recipe tcdcn" in top


def test_task_typo_suggests_the_name(tmp_path, base):
    from reports._fixtures import synth_cache

    r = runner.invoke(app, ["train", *_tiny(synth_cache(base)), "--tasks", "landmark,pose", "--out", str(tmp_path / "r")])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "Did you mean 'landmarks'?" in out
    assert out.count("attr:") <= 4  # the attribute names are summarised, not listed one by one


def test_unknown_name_message():
    from facemtl.errors import UnknownNameError

    many = [f"attr:{a}" for a in ("Smiling", "Male", "Bald", "Bangs", "Young") * 10] + ["landmarks", "pose"]
    msg = str(UnknownNameError("task", "pse", many))
    assert "Did you mean 'pose'?" in msg and len(msg) < 200
    short = str(UnknownNameError("weighting strategy", "zz", ["ew", "uw"]))
    assert short == "Unknown weighting strategy 'zz'. Valid weighting strategy names: ew, uw."


def test_ablate_interrupt_says_rerun_ablate(tmp_path, base, monkeypatch):
    from reports._fixtures import synth_cache

    from facemtl.engine import trainer

    real, calls = trainer.task_losses, []

    def interrupt_first_step(*a, **kw):  # Ctrl-C during the first of two steps: the loop stops after it
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(trainer, "task_losses", interrupt_first_step)
    tiny = _tiny(synth_cache(base))
    del tiny[tiny.index("--input-size"):tiny.index("--input-size") + 2]  # ablate: the backbone's own size
    r = runner.invoke(app, ["ablate", "--tasks", "landmarks,pose", "--subsets", "landmarks", *tiny, "--out", str(tmp_path / "abl")])
    out = " ".join(r.output.split())
    assert r.exit_code == 130, r.output
    assert "rerun the same facemtl ablate command" in out and "interrupted at epoch 1" in out
    assert "facemtl train --resume" not in out


def test_train_interrupt_says_how_to_resume(tmp_path, base, monkeypatch):
    """The trainer states what it saved (TrainingInterrupted.checkpoint); the train command says how to continue."""
    from reports._fixtures import synth_cache

    from facemtl.engine import trainer

    real, calls = trainer.task_losses, []

    def interrupt_first_step(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    monkeypatch.setattr(trainer, "task_losses", interrupt_first_step)
    r = runner.invoke(app, ["train", *_tiny(synth_cache(base)), "--out", str(tmp_path / "run")])
    out = " ".join(r.output.split())
    assert r.exit_code == 130, r.output
    assert "interrupted at epoch 1, batch 1" in out
    assert f"facemtltrain--resume--out{tmp_path / 'run'}" in "".join(r.output.split())  # rich folds long paths


def _narrow_console(monkeypatch, terminal: bool) -> io.StringIO:
    from facemtl.cli import _common, ablate, train

    buf = io.StringIO()
    con = Console(file=buf, width=80, force_terminal=terminal, color_system=None)
    for mod in (_common, train, ablate):
        monkeypatch.setattr(mod, "err_console", con, raising=False)
        monkeypatch.setattr(mod, "console", con, raising=False)
    return buf


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_not_truncated_in_80_columns_or_a_log(monkeypatch, tmp_path, terminal):
    from facemtl.cli.train import RichCallbacks

    buf = _narrow_console(monkeypatch, terminal)
    cb = RichCallbacks()
    cb.on_train_start(epochs=2, steps_per_epoch=10, start_epoch=0, tasks=[], run_dir=tmp_path / "runs" / "a-long-run-folder-name")
    losses = {t: 0.5 for t in ("detection", "landmarks", "attributes", "expression", "pose")}
    cb.on_step(epoch=0, step=10, losses=losses, weights={t: 1.0 for t in losses})
    cb.on_epoch_end(epoch=0, row={"train_loss": 1.25, "val_loss": 1.5, "seconds": 3.0})
    cb.close()
    text = buf.getvalue()
    assert "…" not in text and "train 1.250  val 1.500" in text
    if not terminal:  # a log file gets one plain line per epoch
        assert "epoch 1/2: train 1.250  val 1.500" in text


def test_ablation_table_is_not_truncated_in_80_columns(monkeypatch):
    import pandas as pd

    from facemtl.cli import ablate

    buf = _narrow_console(monkeypatch, True)
    monkeypatch.setattr(ablate, "console", Console(file=buf, width=80, color_system=None))
    names = ["landmarks", "landmarks+pose+gender+glasses+smile [ew]", "landmarks+pose+gender+glasses+smile [dwu]"]
    df = pd.DataFrame({"landmarks/nme": [0.14, 0.18, 0.34], "pose/accuracy": [float("nan"), 0.9, 0.83],
                       "gender/balanced_accuracy": [float("nan"), 0.82, 0.72]}, index=pd.Index(names, name="configuration"))
    monkeypatch.setattr("facemtl.reports.ablate.markdown_table",
                        lambda d: d.assign(**{"Δm%": ["-", "+1.00", "+2.00"], "train s": ["1", "2", "3"]}).astype(str))
    ablate._print_table(df)
    text = buf.getvalue()
    assert "…" not in text and "[dwu]" in text and "[ew]" in text
