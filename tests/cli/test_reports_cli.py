"""``facemtl evaluate / ablate / correlate / plot`` through the CLI: files on success; on bad input a
one-line error, exit code 1 and no report."""

from __future__ import annotations

import json

from reports._fixtures import ALL_TASKS, check_png, synth_cache  # tests/ is on sys.path
from typer.testing import CliRunner

from facemtl.cli.main import app

runner = CliRunner()


def ok(args: list[str]):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def fails(args: list[str], match: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    err = res.output.strip()
    assert err.startswith("error:") and match in " ".join(err.split()), err
    assert "Traceback" not in res.output
    return err


def test_evaluate_and_plot(run, tmp_path):
    ok(["evaluate", str(run), "--out", str(tmp_path / "ev"), "--no-scenes", "--device", "cpu"])
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(doc["tasks"]) == set(ALL_TASKS)
    check_png(tmp_path / "ev" / "landmarks_ced.png")
    res = ok(["plot", str(run), "--out", str(tmp_path / "plots")])
    assert "curves_weights.png" in res.output
    check_png(tmp_path / "plots" / "curves_weights.png")


def test_correlate(run, tmp_path):
    res = ok(["correlate", str(run), "--out", str(tmp_path / "c"), "--batches", "1", "--batch-size", "16", "--device", "cpu"])
    assert "strongest pairs" in res.output
    check_png(tmp_path / "c" / "grad_cosine.png")


def test_ablate_dry_run_lists_configurations(base):
    res = ok(["ablate", "--tasks", "landmarks,pose,smile,glasses", "--main", "landmarks", "--dry-run"])
    assert "8 configurations x 1 seed(s) = 8 runs" in res.output and "landmarks+pose [ew]" in res.output
    res = ok(["ablate", "--tasks", "landmarks,pose", "--sweep", "landmarks=0:1:0.5", "--seeds", "2", "--dry-run",
              "--data", str(synth_cache(base))])
    assert "6 configurations x 2 seed(s) = 12 runs" in res.output and "landmarks+pose [landmarks=0.5]" in res.output


def test_ablate_uses_the_recipes_strategy_unless_told(base):
    data = str(synth_cache(base))
    res = ok(["ablate", "--recipe", "tcdcn", "--tasks", "landmarks,pose", "--main", "landmarks", "--dry-run", "--data", data])
    assert "landmarks+pose [tcdcn]" in res.output and "main=landmarks" in res.output and "[ew]" not in res.output
    res = ok(["ablate", "--recipe", "tcdcn", "--tasks", "landmarks,pose", "--main", "landmarks", "--weighting", "ew,dwu",
              "--dry-run", "--data", data])
    assert "landmarks+pose [ew]" in res.output and "landmarks+pose [dwu]" in res.output and "[tcdcn]" not in res.output


def test_bad_inputs(base, tmp_path):
    out = tmp_path / "report"
    fails(["evaluate", str(tmp_path / "missing-run"), "--out", str(out)], "does not exist")
    fails(["ablate", "--tasks", "landmarks,pose", "--sweep", "x=1:0:0.1", "--out", str(out)], "is empty")
    fails(["ablate", "--tasks", "landmarks,pose", "--sweep", "x=0:1:0.1", "--out", str(out)], "not one of --tasks")
    fails(["ablate", "--tasks", "landmarks,pose", "--sweep", "landmarks=1:0:0.1", "--out", str(out)], "is empty")
    fails(["ablate", "--tasks", "landmarks,pose", "--weighting", "ew,nope", "--out", str(out)], "Unknown weighting strategy 'nope'")
    from reports._fixtures import write_cache_without

    faces = write_cache_without(tmp_path / "faces.h5", ("face",))
    fails(["ablate", "--tasks", "detection,landmarks", "--data", str(faces), "--out", str(out)], "needs 'landmarks' labels")
    fails(["correlate", str(tmp_path / "missing-run"), "--out", str(out)], "does not exist")
    fails(["plot", str(tmp_path / "missing-run"), "--out", str(out)], "does not exist")
    assert not out.exists()
