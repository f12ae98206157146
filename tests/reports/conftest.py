"""Session-wide tiny cache and short runs for the report tests (see ``_fixtures``)."""

from __future__ import annotations

import pytest

from ._fixtures import ALL_TASKS, shared_base, synth_cache, trained_run


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="session")
def cache(base):
    return synth_cache(base)


@pytest.fixture(scope="session")
def run(base):
    """A model with every task kind, trained for 3 steps."""
    return trained_run(base, ALL_TASKS)


@pytest.fixture(scope="session")
def evaluated(run, base):
    """The evaluation report of :func:`run` (scenes included), written once."""
    from facemtl.reports.evaluate import evaluate

    return evaluate(run, out=base / "eval", device="cpu")


@pytest.fixture(scope="session")
def tiny_ablation(base, cache):
    """landmarks and smile alone and together (3 runs of 2 steps), with the report."""
    from facemtl.reports.ablate import run_ablation
    from facemtl.reports.ablation_plan import plan_ablation

    from ._fixtures import tiny_config

    plan = plan_ablation(["landmarks", "smile"], subsets="singles")
    return run_ablation(plan, tiny_config(cache, base / "unused", steps=2), base / "ablation")
