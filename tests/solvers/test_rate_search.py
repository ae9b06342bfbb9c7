"""The rate search's pieces (:mod:`solvers.rate_search`): warm start, ray, oracles, and its size."""

from __future__ import annotations

import ast
import pathlib
import warnings

import numpy as np
import pytest

from solvers import FairLogisticRegression, iter_path
from solvers.constraints import make_constraint
from solvers.problem import build_problem
from solvers.backends import WarmStart
from solvers.rate_search_types import Candidate, Ray, RateWarmStart, head_warm_start, rate_warm_start
from solvers.synthetic import make_fair_classification, make_fair_multiclass

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_warm_start_reads_and_writes_the_estimators_warm_state():
    assert rate_warm_start(None) is None and rate_warm_start(WarmStart()) is None
    X, y, a = make_fair_classification(600, 6, base_rates=(0.2, 0.6), group_shift=1.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = list(iter_path(X, y, sensitive_features=a, eps_grid=[0.1, 0.05], constraint="eo", backend="torch"))
    state = heads[-1]._solver_state
    assert isinstance(state, WarmStart) and isinstance(state.rate, RateWarmStart) and state.eps == 0.05
    assert state.rate.theta is None and state.rate.pairs is None  # the shared fields are not duplicated
    warm = rate_warm_start(state)
    assert isinstance(warm, RateWarmStart) and warm.eps == 0.05 and warm.lam is state.rate.lam
    assert warm.theta is state.theta and warm.pairs is state.pairs and warm.missed_aim is state.rate.missed_aim
    assert len(warm.lam_hist) == 1 and warm.lam_hist[0][0] == 0.1  # the looser bound and its multipliers
    back = head_warm_start(warm)
    assert back.theta is state.theta and back.pairs is state.pairs and back.rate.lam is state.rate.lam
    # a head given by its coefficients alone (fit_path's init_head), or a score head: theta (and eps) only
    only = rate_warm_start(WarmStart(theta=np.zeros(7), working=(1,), eps=0.1))
    assert only.lam is None and only.eps == 0.1 and only.lam_hist == () and only.theta.shape == (7,)


def test_ray_brackets_and_illinois_closes_on_the_root():
    # gaps fall linearly along the ray: f(t) = max(g(t) * sgn) - target has its root at t = 5
    g0 = np.array([0.5, -0.2])
    ray = Ray(np.zeros(2), g0 / 0.5, np.sign(g0), target=0.25)
    ray.f_a = ray.f(g0)

    def gaps(t):
        return g0 * (1.0 - 0.1 * t)

    assert ray.f(gaps(5.0)) == 0.0
    ray.t_b, ray.f_b = 8.0, ray.f(gaps(8.0))  # bracketed: f_b <= 0 < f_a
    for _ in range(20):
        if ray.closed():
            break
        t = ray.illinois_point()
        assert ray.t_a < t < ray.t_b  # kept inside the bracket
        ray.update(t, ray.f(gaps(t)))
    assert ray.closed() and ray.t_a <= 5.0 <= ray.t_b
    np.testing.assert_array_equal(ray.at(1.0), g0 / 0.5)


@pytest.mark.parametrize("K", [2, 3])
def test_an_oracles_check_is_the_heads_own_predictions(K):
    """``fit`` / ``candidate`` / ``check`` / ``head`` of both oracles: the checked gaps and error are
    those of the returned coefficients' hard predictions."""
    from solvers.rate_search_oracles import LogisticOracle, SoftmaxOracle
    from solvers.reductions import rate_design

    if K == 2:
        X, y, a = make_fair_classification(400, 5, seed=2)
    else:
        X, y, a = make_fair_multiclass(400, 5, n_classes=K, seed=2)
    est = FairLogisticRegression(constraint="dp", eps=0.05)
    problem = build_problem(X, y, a, n_classes=K)
    cons = make_constraint("dp")
    mom = cons.moments(problem.y, problem.groups, problem.sample_weight, problem.group_labels, n_classes=K)
    design = rate_design(X, "cpu", center=True)
    kind = LogisticOracle if K == 2 else SoftmaxOracle
    oracle = kind(est, problem, mom, design, search_tol=1e-4, tol=1e-6)
    if K == 2:
        theta = oracle.cold_theta()
    else:
        from solvers.backends.torch import _tensor

        theta = oracle.lay.to_centered(_tensor(np.zeros(K * 6), "cpu"), design.mu)
    lam = np.zeros(mom.M.shape[0])
    lam[0] = 0.5
    fit = oracle.fit(lam, theta, None)
    cand = oracle.candidate(fit.scores, fit.gaps, fit.error, lam, fit.res.theta, fit.res.stationarity,
                            fit.res.converged, 0.05)
    assert isinstance(cand, Candidate) and cand.lam is not lam and np.array_equal(cand.lam, lam)
    checked = oracle.check(cand, 0.05)
    coef, intercept = oracle.head(checked)
    scores = X @ np.atleast_2d(coef).T + intercept
    pred = (scores[:, 0] > 0).astype(int) if K == 2 else np.argmax(scores, axis=1)
    assert checked.error == pytest.approx(float((pred != y).mean()), abs=1e-12)
    np.testing.assert_allclose(checked.gaps, mom.gaps(pred), atol=1e-12)
    assert checked.gap == pytest.approx(float(np.abs(mom.gaps(pred)).max()), abs=1e-12)


@pytest.mark.parametrize("constraint", ["dp", "eo"])
def test_a_kept_threshold_is_the_rescanned_heads_predictions(constraint):
    """``check(keep_cut=True)`` keeps the candidate's own threshold only where the exact scores'
    predictions there have its error and gap: then they are those a scan of the exact scores gives,
    at the same error and gaps (only the intercept's last bits differ), and a threshold that does
    not reproduce the candidate is chosen again as without it."""
    import dataclasses

    from solvers.rate_search_oracles import LogisticOracle
    from solvers.reductions import rate_design

    X, y, a = make_fair_classification(600, 5, seed=4)
    est = FairLogisticRegression(constraint=constraint, eps=0.05)
    problem = build_problem(X, y, a, n_classes=2)
    mom = make_constraint(constraint).moments(problem.y, problem.groups, problem.sample_weight,
                                             problem.group_labels)
    oracle = LogisticOracle(est, problem, mom, rate_design(X, "cpu", center=True), search_tol=1e-4, tol=1e-6)
    lam = np.full(mom.M.shape[0], 0.2)
    fit = oracle.fit(lam, oracle.cold_theta(), None)
    cand = oracle.candidate(fit.scores, fit.gaps, fit.error, lam, fit.res.theta, fit.res.stationarity,
                            fit.res.converged, 0.05)
    kept, rescanned = oracle.check(cand, 0.05, keep_cut=True), oracle.check(cand, 0.05)
    assert kept.kept_cut and not rescanned.kept_cut
    assert kept.error == rescanned.error and np.array_equal(kept.gaps, rescanned.gaps)
    assert abs(kept.intercept - rescanned.intercept) < 1e-6
    pred = (X @ kept.theta[:-1] + kept.intercept > 0).astype(int)
    np.testing.assert_array_equal(kept.gaps, mom.gaps(pred.astype(float)))
    # a threshold the exact scores do not reproduce (one prediction's error off) is not kept
    off = dataclasses.replace(cand, error=cand.error + 1.0 / len(y))
    again = oracle.check(off, 0.05, keep_cut=True)
    assert not again.kept_cut and again.intercept == rescanned.intercept


def test_no_function_of_the_search_is_over_80_lines():
    """Issue 19 item 4: a search a maintainer can read (no long functions, no closures that mutate)."""
    for name in ("rate_search.py", "rate_search_oracles.py", "rate_search_types.py", "reductions.py",
                 "reductions_multiclass.py"):
        tree = ast.parse((ROOT / "solvers" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 80, (name, node.name)
                nested = [n for n in ast.walk(node) if n is not node and isinstance(n, ast.FunctionDef)]
                assert not nested, (name, node.name, [n.name for n in nested])
