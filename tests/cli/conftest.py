"""Fixtures shared by the CLI tests: one small trained run with every task kind per module."""

from __future__ import annotations

import pytest
from reports._fixtures import ALL_TASKS, shared_base, trained_run  # tests/ is on sys.path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return shared_base(tmp_path_factory)


@pytest.fixture(scope="module")
def run(base):
    return trained_run(base, ALL_TASKS)
