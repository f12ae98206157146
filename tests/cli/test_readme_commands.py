"""Every ``facemtl ...`` command of the README (and of ``facemtl --help``'s examples) runs as written.

The commands are read from the README's code blocks and inline code, so a renamed option or
subcommand fails here. Each runs with ``--help`` appended: click parses every option and
subcommand name first (an unknown one is an error) and then prints the help instead of doing the
work. ``ablate`` commands also run with ``--dry-run``, which checks their tasks against the data.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facemtl.cli.main import HELP, app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def commands(text: str) -> list[str]:
    """``facemtl ...`` command lines in code blocks (``$ `` prompts, ``\\`` continuations and
    ``# comments`` handled) and in inline code spans."""
    found: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("facemtl "):
                found.append(re.split(r"\s+#", line)[0].strip())
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found += [c.strip() for c in re.findall(r"`(facemtl [^`]+)`", prose)]
    return list(dict.fromkeys(found))


README = commands((ROOT / "README.md").read_text())
# the top-level help's examples: "  facemtl CMD ...   what it does"
HELP_EXAMPLES = [re.split(r"\s{2,}", line.strip())[0] for line in re.sub(r"\[/?[a-z ]*\]", "", HELP).splitlines()
                 if line.strip().startswith("facemtl ")]


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)[1:]
    return [a for a in argv if a != "..."]  # "..." in prose: "the rest as above"


def test_readme_has_commands():
    assert len(README) >= 15 and any(c.startswith("facemtl prepare celeba") for c in README)
    assert len(HELP_EXAMPLES) >= 4


@pytest.mark.parametrize("command", README + HELP_EXAMPLES)
def test_command_parses(command):
    r = runner.invoke(app, [*_argv(command), "--help"])
    assert r.exit_code == 0, f"`{command}` as written in the README fails:\n{r.output}"
    assert "Usage" in r.output


def test_command_check_catches_a_wrong_option():
    """The check can fail: an unknown option or subcommand is an error even with --help."""
    assert runner.invoke(app, ["train", "--epoch", "3", "--help"]).exit_code != 0
    assert runner.invoke(app, ["prepare", "celebA", "--help"]).exit_code != 0


@pytest.mark.parametrize("command", [c for c in README + HELP_EXAMPLES if c.startswith("facemtl ablate") and "--tasks" in c])
def test_ablate_dry_run(command, tmp_path, monkeypatch, base):
    """The README's ablations plan without error, on a cache at the paths they name."""
    from reports._fixtures import synth_cache

    monkeypatch.chdir(tmp_path)
    argv = _argv(command)
    if "--data" in argv:  # the README's cache, stood in for by the tests' small SynthFaces
        data = tmp_path / argv[argv.index("--data") + 1]
        data.parent.mkdir(parents=True, exist_ok=True)
        data.symlink_to(synth_cache(base))
    r = runner.invoke(app, [*argv, "--dry-run"])
    assert r.exit_code == 0, f"`{command} --dry-run` fails:\n{r.output}"
    assert "configurations" in r.output
    assert not (tmp_path / "data" / "synthfaces.h5").exists()  # a dry run renders nothing


def test_prepare_real_default_out(tmp_path, monkeypatch):
    """`facemtl prepare celeba --root DIR` (no --out) writes $FACEMTL_DATA/celeba.h5, where
    `evaluate --dataset celeba` looks; before, it failed with "--out is required"."""
    from facemtl.data import readers
    from facemtl.errors import DataFormatError

    seen = {}

    def fake_prepare(dataset, out, **kw):
        seen["out"] = Path(out)
        raise DataFormatError("stop here")  # the reader itself is tested in tests/data

    monkeypatch.setattr(readers, "prepare_dataset", fake_prepare)
    monkeypatch.setenv("FACEMTL_DATA", str(tmp_path / "d"))
    r = runner.invoke(app, ["prepare", "celeba", "--root", str(tmp_path)])
    assert seen["out"] == tmp_path / "d" / "celeba.h5", r.output
    assert "--out is required" not in r.output
