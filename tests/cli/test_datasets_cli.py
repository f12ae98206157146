"""``facemtl evaluate`` and ``facemtl ablate`` on runs over several caches, through the CLI."""

from __future__ import annotations

import json

import pandas as pd
from reports._fixtures import multi_run, two_caches  # tests/ is on sys.path
from typer.testing import CliRunner

from facemtl.cli.main import app

runner = CliRunner()
TINY = ["--backbone", "tcdcn", "--set", "model.input_size=40", "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
        "--device", "cpu", "--set", "train.channels_last=false"]


def invoke(args: list[str], code: int = 0) -> str:
    res = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    return " ".join(res.output.split())


def test_evaluate_prints_a_column_per_dataset(base, tmp_path):
    out = invoke(["evaluate", str(multi_run(base)), "--out", str(tmp_path / "ev"), "--device", "cpu", "--no-figures"])
    assert "on 2 datasets, split test" in out and "┃ task ┃ metric ┃ lm ┃ at ┃" in out
    assert "not on lm: smile" in out and "not on at: landmarks" in out
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(doc["datasets"]) == ["lm", "at"] and (tmp_path / "ev" / "lm" / "landmarks.csv").exists()
    err = invoke(["evaluate", str(multi_run(base)), "--dataset", "nope", "--out", str(tmp_path / "x")], code=1)
    assert err.startswith("error: Unknown dataset 'nope'") and " at," in err and " lm," in err
    assert not (tmp_path / "x").exists()
    invoke(["evaluate", str(multi_run(base)), "--out", str(tmp_path / "flip"), "--device", "cpu", "--no-figures", "--flip-test"])
    assert json.loads((tmp_path / "flip" / "metrics.json").read_text())["flip_test"] is True


def test_ablate_over_two_caches_with_two_mixes(base, tmp_path):
    lm, at = two_caches(base)
    out = invoke(["ablate", "--tasks", "landmarks,smile", "--subsets", "landmarks+smile", "--data", f"{lm},{at}",
                  "--mix", "proportional", "--mix", "lm=1,at=3", *TINY, "--out", str(tmp_path / "abl")])
    assert "2 runs trained" in out
    runs = sorted(p.name for p in (tmp_path / "abl" / "runs").iterdir())
    assert runs == ["landmarks+smile__ew__mix_lm=1_at=3__s0", "landmarks+smile__ew__mix_proportional__s0"]
    df = pd.read_csv(tmp_path / "abl" / "ablation.csv", index_col=0)
    assert list(df.index) == ["landmarks+smile [ew, mix proportional]", "landmarks+smile [ew, mix lm=1,at=3]"]
    assert list(df["mix"]) == ["proportional", "lm=1,at=3"]  # a NAME=W,NAME=W mix is one value, not split on commas
    assert {"landmarks@lm/nme", "smile@at/balanced_accuracy"} <= set(df.columns)
    assert not any(c.startswith(("landmarks@at", "smile@lm")) for c in df.columns)  # no labels there
    res = json.loads((tmp_path / "abl" / "runs" / runs[0] / "result.json").read_text())
    assert res["configuration"]["mix"] == "lm=1,at=3" and res["config"]["data"]["mix"] == "lm=1,at=3"
    assert res["datasets"] == ["lm", "at"] and (tmp_path / "abl" / "runs" / runs[0] / "eval" / "lm" / "metrics.json").exists()
    out = invoke(["ablate", "--tasks", "landmarks,smile", "--subsets", "landmarks+smile", "--data", f"{lm},{at}",
                  "--mix", "proportional", "--mix", "lm=1,at=3", *TINY, "--out", str(tmp_path / "abl"), "--flip-test"])
    assert "evaluated again" in out and "0 runs trained" in out
    assert json.loads((tmp_path / "abl" / "runs" / runs[0] / "eval" / "lm" / "metrics.json").read_text())["flip_test"] is True


def test_ablate_mix_options(base, tmp_path):
    lm, at = two_caches(base)
    out = invoke(["ablate", "--tasks", "landmarks,smile", "--subsets", "singles", "--data", f"{lm},{at}", "--mix", "uniform", "--dry-run"])
    assert "landmarks+smile [ew]" in out and "mix" not in out  # a single mix: the runs' data.mix, not an axis
    err = invoke(["ablate", "--tasks", "landmarks", "--data", str(lm), "--mix", "uniform", "--mix", "proportional",
                  "--out", str(tmp_path / "abl")], code=1)
    assert "several caches are mixed" in err and "--data A.h5,B.h5" in err
    err = invoke(["ablate", "--tasks", "landmarks", "--data", f"{lm},{tmp_path / 'gone.h5'}", "--out", str(tmp_path / "abl")], code=1)
    assert "gone.h5" in err and "do not exist" in err
    assert not (tmp_path / "abl").exists()


def test_correlate_dataset_name_of_a_multi_cache_run(base, tmp_path):
    invoke(["correlate", str(multi_run(base)), "--dataset", "at", "--split", "test", "--batches", "1", "--device", "cpu",
            "--out", str(tmp_path / "c")])
    doc = json.loads((tmp_path / "c" / "correlate.json").read_text())
    assert doc["data"] == str(two_caches(base)[1].absolute())
