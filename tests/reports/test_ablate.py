"""``facemtl.reports.ablation_plan`` / ``ablate``: configuration lists, sweeps, a real tiny ablation,
resuming, Delta-m against a hand computation, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.reports.ablate import ablation_table, run_ablation
from facemtl.reports.ablation_plan import parse_sweep, plan_ablation

from ._fixtures import check_png, tiny_config, write_cache_without

T4 = ["landmarks", "pose", "smile", "glasses"]


def names(plan) -> list[str]:
    return [c.name for c in plan.configurations]


def test_subsets_all_singles_main_plus_one_list():
    assert len(plan_ablation(T4).configurations) == 15
    assert names(plan_ablation(T4, subsets="singles")) == [*T4, "landmarks+pose+smile+glasses [ew]"]
    assert names(plan_ablation(T4, main="landmarks")) == [  # --main alone means main-plus-one
        *T4, "landmarks+pose [ew]", "landmarks+smile [ew]", "landmarks+glasses [ew]", "landmarks+pose+smile+glasses [ew]"]
    assert names(plan_ablation(T4, subsets="smile+landmarks,landmarks")) == ["landmarks", "landmarks+smile [ew]"]
    p = plan_ablation(T4, subsets="singles", weightings=["ew", "uw", "tcdcn"], main="landmarks", seeds=3)
    assert len(p.configurations) == 4 + 3 and len(p.runs()) == 21
    tc = next(c for c in p.configurations if c.weighting == "tcdcn")
    assert tc.options == {"main": "landmarks"}  # strategies with a main option get --main
    assert len({c.run_name(s) for c, s in p.runs()}) == 21  # one folder per run


def test_sweep_values_and_weights():
    sw = parse_sweep("landmarks=0:1:0.1", tuple(T4))
    assert sw.values == tuple(round(0.1 * i, 10) for i in range(11))
    p = plan_ablation(T4, sweep="landmarks=0:1:0.5")
    sweeps = [c for c in p.configurations if c.kind == "sweep"]
    assert [c.sweep_weight for c in sweeps] == [0.0, 0.5, 1.0]
    w = sweeps[1].options["weights"]
    assert w["landmarks"] == 0.5 and w["pose"] == pytest.approx(0.5 / 3) and sum(w.values()) == pytest.approx(1.0)
    assert len(p.configurations) == 5 + 3  # singles (4 + all) for Delta-m, then the sweep


@pytest.mark.parametrize("kwargs, match", [
    ({"sweep": "landmarks=1:0:0.1"}, "empty"),
    ({"sweep": "landmarks=0:1:0"}, "step must be > 0"),
    ({"sweep": "eyes=0:1:0.1"}, "not one of --tasks"),
    ({"sweep": "landmarks=0-1"}, "TASK=START:STOP:STEP"),
    ({"sweep": "landmarks=0:2:1"}, "<= 1"),
    ({"subsets": "main-plus-one"}, "needs --main"),
    ({"subsets": "landmarks+eyes"}, "not in --tasks"),
    ({"main": "eyes"}, "not one of --tasks"),
    ({"seeds": 0}, "at least 1"),
])
def test_bad_plans(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        plan_ablation(T4, **kwargs)


def test_unknown_weighting_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"Unknown weighting strategy 'nope'.*\buw\b"):
        plan_ablation(T4, weightings=["ew", "nope"])


def test_tiny_ablation_writes_table_and_plots(tiny_ablation):
    out = tiny_ablation.out_dir
    df = pd.read_csv(out / "ablation.csv", index_col=0)
    assert list(df.index) == ["landmarks", "smile", "landmarks+smile [ew]"]
    for col in ("landmarks/nme", "landmarks/nme std", "smile/balanced_accuracy", "parameters", "train_s", "delta_m_%"):
        assert col in df.columns
    assert df.loc["landmarks+smile [ew]", "parameters"] > df.loc["landmarks", "parameters"]
    md = (out / "ablation.md").read_text()
    assert "| landmarks+smile [ew] |" in md and "Δm%" in md
    for png in ("plot_landmarks_nme.png", "plot_smile_balanced_accuracy.png", "plot_delta_m.png"):
        check_png(out / png)
    assert all((out / "runs" / r / "result.json").exists() for r in ("landmarks__s0", "smile__s0", "landmarks+smile__ew__s0"))


def test_delta_m_column_by_hand(tiny_ablation):
    df = pd.read_csv(tiny_ablation.out_dir / "ablation.csv", index_col=0)
    row = df.loc["landmarks+smile [ew]"]
    lm = (row["landmarks/nme"] - df.loc["landmarks", "landmarks/nme"]) / df.loc["landmarks", "landmarks/nme"]
    sm = -(row["smile/balanced_accuracy"] - df.loc["smile", "smile/balanced_accuracy"]) / df.loc["smile", "smile/balanced_accuracy"]
    assert row["delta_m_%"] == pytest.approx(100 * (lm + sm) / 2)
    assert df.loc["landmarks", "delta_m_%"] == 0.0


def test_rerun_skips_finished_runs(tiny_ablation, cache, base):
    result_file = tiny_ablation.out_dir / "runs" / "smile__s0" / "result.json"
    before = result_file.stat().st_mtime_ns
    plan = plan_ablation(["landmarks", "smile"], subsets="singles")
    again = run_ablation(plan, tiny_config(cache, base / "unused", steps=2), tiny_ablation.out_dir)
    assert (again.trained, again.skipped) == (0, 3)
    assert result_file.stat().st_mtime_ns == before
    pd.testing.assert_frame_equal(again.table, tiny_ablation.table)
    # a run that stopped after training but before its result: resumed from last.pt, not retrained
    result_file.unlink()
    again = run_ablation(plan, tiny_config(cache, base / "unused", steps=2), tiny_ablation.out_dir)
    assert (again.trained, again.skipped) == (1, 2) and result_file.exists()
    # other settings for a finished run: refuse instead of mixing them into one table
    with pytest.raises(ConfigError, match="other settings"):
        run_ablation(plan, tiny_config(cache, base / "unused", steps=3), tiny_ablation.out_dir)


def test_rerun_with_flip_test_or_another_split_evaluates_again(tiny_ablation, cache, base, tmp_path):
    """A finished run measured otherwise is evaluated again, not retrained; the report says how."""
    import shutil

    out = tmp_path / "abl"
    shutil.copytree(tiny_ablation.out_dir, out)
    plan = plan_ablation(["landmarks", "smile"], subsets="singles")
    ckpt = out / "runs" / "landmarks__s0" / "best.pt"
    before = ckpt.stat().st_mtime_ns
    again = run_ablation(plan, tiny_config(cache, base / "unused", steps=2), out, flip_test=True)
    assert (again.trained, again.skipped) == (0, 3) and ckpt.stat().st_mtime_ns == before
    res = json.loads((out / "runs" / "landmarks__s0" / "result.json").read_text())
    assert res["flip_test"] is True and res["seconds"] == tiny_ablation.results[0]["seconds"]
    assert again.table.loc["landmarks", "landmarks/nme"] != tiny_ablation.table.loc["landmarks", "landmarks/nme"]
    assert "with flip testing" in (out / "ablation.md").read_text()
    same = run_ablation(plan, tiny_config(cache, base / "unused", steps=2), out, flip_test=True)
    pd.testing.assert_frame_equal(same.table, again.table)
    val = run_ablation(plan, tiny_config(cache, base / "unused", steps=2), out, split="val")
    res = json.loads((out / "runs" / "landmarks__s0" / "result.json").read_text())
    assert (res["split"], res["flip_test"]) == ("val", False) and "split **val**" in (out / "ablation.md").read_text()
    assert val.trained == 0


def test_table_means_stds_over_seeds():
    """ablation_table on hand-made results: mean / sample std over seeds and Delta-m% from them."""
    plan = plan_ablation(["landmarks", "smile"], subsets="singles", seeds=2)

    def res(c, seed, nme, bacc):
        m = {}
        if "landmarks" in c.tasks:
            m["landmarks/nme"] = nme
        if "smile" in c.tasks:
            m["smile/balanced_accuracy"] = bacc
        kinds = {t: "landmarks" if t == "landmarks" else "attributes" for t in c.tasks}
        return {"configuration": {"name": c.name}, "kinds": kinds, "metrics": m, "seconds": 10.0 + seed,
                "parameters": {"deployed": 100}}

    single_lm, single_sm, both = plan.configurations
    results = [res(single_lm, 0, 0.10, 0), res(single_lm, 1, 0.12, 0), res(single_sm, 0, 0, 0.80), res(single_sm, 1, 0, 0.90),
               res(both, 0, 0.09, 0.88), res(both, 1, 0.10, 0.92)]
    df = ablation_table(plan, results)
    assert df.loc["landmarks", "landmarks/nme"] == pytest.approx(0.11)
    assert df.loc["landmarks", "landmarks/nme std"] == pytest.approx(np.std([0.10, 0.12], ddof=1))
    assert df.loc["landmarks+smile [ew]", "train_s"] == pytest.approx(10.5)
    # worked example: NME 0.11 -> 0.095 (-13.64 %, better), balanced accuracy 0.85 -> 0.90 (+5.88 %, better)
    expected = 100 * ((0.095 - 0.11) / 0.11 - (0.90 - 0.85) / 0.85) / 2
    assert df.loc["landmarks+smile [ew]", "delta_m_%"] == pytest.approx(expected)
    assert expected == pytest.approx(-9.76, abs=0.01)


def test_tasks_the_cache_cannot_supply(tmp_path):
    cache = write_cache_without(tmp_path / "faces.h5", ("face",))
    plan = plan_ablation(["detection", "expression"], subsets="singles")
    with pytest.raises(ConfigError, match="expression"):
        run_ablation(plan, tiny_config(cache, tmp_path / "unused"), tmp_path / "abl")
    assert not (tmp_path / "abl").exists()


def test_report_json(tiny_ablation):
    doc = json.loads((tiny_ablation.out_dir / "ablation.json").read_text())
    assert doc["configurations"] == ["landmarks", "smile", "landmarks+smile [ew]"]
    assert len(doc["runs"]) == 3 and "plot_delta_m.png" in doc["figures"]
