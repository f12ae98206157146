"""Optional parity with LibMTL on the same Gram matrices (skipped without a LibMTL checkout).

Point ``FACEMTL_LIBMTL`` at a LibMTL checkout (``git clone`` of median-research-group/LibMTL);
its Nash-MTL also needs ``cvxpy`` with the ECOS solver importable.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import numpy as np
import pytest
import torch

from facemtl.weighting import build_weighting
from facemtl.weighting.base import StepContext


def _libmtl_nash():
    path = os.environ.get("FACEMTL_LIBMTL")
    if not path or not os.path.isdir(os.path.join(path, "LibMTL")):
        pytest.skip("set FACEMTL_LIBMTL to a LibMTL checkout to compare against it")
    cp = pytest.importorskip("cvxpy")
    if "ECOS" not in cp.installed_solvers():
        pytest.skip("LibMTL's Nash-MTL solves with ECOS, which is not installed")
    # LibMTL.weighting's __init__ imports every method and their optional solvers (qpsolvers, ...):
    # register the two packages without running their __init__ and import only the module needed
    for pkg, sub in (("LibMTL", "LibMTL"), ("LibMTL.weighting", "LibMTL/weighting")):
        if pkg not in sys.modules:
            mod = types.ModuleType(pkg)
            mod.__path__ = [os.path.join(path, sub)]
            sys.modules[pkg] = mod
    Nash_MTL = importlib.import_module("LibMTL.weighting.Nash_MTL").Nash_MTL
    return Nash_MTL


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])
def test_nash_matches_libmtl(seed, scale):
    Nash_MTL = _libmtl_nash()
    T = 4
    g = np.random.default_rng(seed).normal(size=(T, 64)) + 0.5  # mostly agreeing gradients
    M = (g @ g.T) * scale**2
    ref = Nash_MTL()
    ref.task_num = T
    ref.init_param()
    ref._init_optim_problem()
    ref.optim_niter = 20
    n = np.linalg.norm(M)
    ref.normalization_factor = np.array([n])
    want = ref.solve_optimization(M / n)
    s = build_weighting("nash", [f"t{i}" for i in range(T)])
    got = s.solve(s.tasks, torch.zeros(T, 1), torch.as_tensor(M), torch.ones(T), StepContext([], [], [], "rep"))
    # LibMTL stops its convex-concave iterations at a residual of 1e-3; facemtl solves to 1e-10
    np.testing.assert_allclose(got.coeffs.double().numpy(), want, rtol=2e-3)
