"""Ablations on several caches: ``--mix`` as an axis (names, run folders), columns per task and
dataset, and Delta-m% per (task, dataset) against the same mix's single-task runs."""

from __future__ import annotations

import pytest

from facemtl.errors import ConfigError, UnknownNameError
from facemtl.reports.ablate import ablation_table, headline_metrics
from facemtl.reports.ablation_plan import plan_ablation

SOURCES = ("data/lm.h5", "data/at.h5")


def test_mix_is_one_more_axis_of_every_configuration():
    plan = plan_ablation(["landmarks", "smile"], subsets="singles", mixes=["proportional", "lm=1,at=3"], sources=SOURCES)
    assert [c.name for c in plan.configurations] == [
        "landmarks [mix proportional]", "landmarks [mix lm=1,at=3]", "smile [mix proportional]", "smile [mix lm=1,at=3]",
        "landmarks+smile [ew, mix proportional]", "landmarks+smile [ew, mix lm=1,at=3]"]
    assert [c.run_name(0) for c in plan.configurations[-2:]] == [
        "landmarks+smile__ew__mix_proportional__s0", "landmarks+smile__ew__mix_lm=1_at=3__s0"]
    # one mix is not an axis: names as without --mix (the CLI sets it as data.mix of every run)
    one = plan_ablation(["landmarks", "smile"], subsets="singles", mixes=["uniform"], sources=SOURCES)
    assert [c.name for c in one.configurations] == ["landmarks", "smile", "landmarks+smile [ew]"]
    assert all(c.mix is None for c in one.configurations)


@pytest.mark.parametrize("mixes, sources, error, match", [
    (["proportional", "uniform"], ("data/lm.h5",), ConfigError, r"several caches are mixed.*one cache \(data/lm.h5\).*--data A.h5,B.h5"),
    (["uniform"], (), ConfigError, "several caches are mixed"),
    (["uniform", "uniform"], SOURCES, ConfigError, "names a mix twice"),
    (["lm=1,celeba=2"], SOURCES, UnknownNameError, r"Unknown source 'celeba'.*\bat\b"),
    (["temperature:x"], SOURCES, ConfigError, "temperature"),
])
def test_bad_mixes(mixes, sources, error, match):
    with pytest.raises(error, match=match):
        plan_ablation(["landmarks", "smile"], mixes=mixes, sources=sources)


def test_columns_per_task_and_dataset_and_delta_m_by_hand():
    plan = plan_ablation(["landmarks", "smile"], subsets="singles", mixes=["proportional", "uniform"], sources=SOURCES)
    values = {  # configuration -> its metrics; the single-task baselines differ between the mixes
        "landmarks [mix proportional]": {"landmarks@lm/nme": 0.10, "landmarks@at/nme": 0.20},
        "landmarks [mix uniform]": {"landmarks@lm/nme": 0.12, "landmarks@at/nme": 0.25},
        "smile [mix proportional]": {"smile@at/balanced_accuracy": 0.80},
        "smile [mix uniform]": {"smile@at/balanced_accuracy": 0.70},
        "landmarks+smile [ew, mix proportional]": {"landmarks@lm/nme": 0.09, "landmarks@at/nme": 0.22, "smile@at/balanced_accuracy": 0.84},
        "landmarks+smile [ew, mix uniform]": {"landmarks@lm/nme": 0.12, "landmarks@at/nme": 0.25, "smile@at/balanced_accuracy": 0.77},
    }
    results = [{"configuration": {"name": c.name}, "kinds": {"landmarks": "landmarks", "smile": "attributes"}, "metrics": values[c.name],
                "datasets": ["lm", "at"], "seconds": 1.0, "parameters": {"deployed": 10}} for c in plan.configurations]
    df = ablation_table(plan, results)
    heads = [c for c in df.columns if "/" in c and not c.endswith(" std")]
    assert heads[:2] == ["landmarks@lm/nme", "landmarks@lm/failure_rate"]
    assert "landmarks@at/nme" in heads and "smile@at/balanced_accuracy" in heads and not any(c.startswith("smile@lm") for c in heads)
    assert list(df["mix"]) == ["proportional", "uniform"] * 3
    row = df.loc["landmarks+smile [ew, mix proportional]"]
    expected = 100 * ((0.09 - 0.10) / 0.10 + (0.22 - 0.20) / 0.20 - (0.84 - 0.80) / 0.80) / 3
    assert row["delta_m_%"] == pytest.approx(expected)
    assert row["delta_m_over"] == "landmarks@lm,landmarks@at,smile@at"
    # against the uniform mix's own single-task runs (equal to them here): 0, not a comparison with the other mix
    uniform = df.loc["landmarks+smile [ew, mix uniform]"]
    assert uniform["delta_m_%"] == pytest.approx(100 * (0 + 0 - (0.77 - 0.70) / 0.70) / 3)
    assert headline_metrics(results[-1]) == {"landmarks@lm/nme": 0.12, "landmarks@at/nme": 0.25, "smile@at/balanced_accuracy": 0.77}
