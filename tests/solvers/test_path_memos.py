"""What a path's heads share (same bits, less work): the rate moments and the exact products."""

import numpy as np
import pytest

from solvers import FairLogisticRegression, fit_path
from solvers import rate_search_oracles as oracles
from solvers import reductions
from solvers._linalg import x_dot
from solvers.constraints import make_constraint
from solvers.path_fitter import PathFitter
from solvers.synthetic import make_fair_classification


def test_exact_scores_remember_the_last_heads_by_their_bits(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    es = oracles.ExactScores(X)
    w = rng.normal(size=5)
    first = es(w)
    np.testing.assert_array_equal(first, x_dot(X, w))
    assert not first.flags.writeable  # handed out again: nobody may change it
    assert es(w.copy()) is first  # the same bits: the same product, not computed again
    w2 = w.copy()
    w2[2] = np.nextafter(w2[2], np.inf)  # one ulp away: another head
    assert es(w2) is not first
    np.testing.assert_array_equal(es(w2), x_dot(X, w2))
    for k in range(oracles.EXACT_MEMO):
        es(w + k + 1)
    assert es(w) is not first  # pushed out by the last EXACT_MEMO heads
    monkeypatch.setattr(oracles, "EXACT_MEMO_BYTES", 0)
    small = oracles.ExactScores(X)  # no room: every product computed, none kept
    assert small(w) is not small(w)


def test_exact_scores_are_the_designs_for_its_features():
    class Design:
        pass

    design = Design()
    X, X2 = np.ones((10, 2)), np.ones((10, 2))
    es = oracles.exact_scores(design, X)
    assert oracles.exact_scores(design, X) is es
    assert oracles.exact_scores(design, X2) is not es  # other features: a new memo
    assert oracles.exact_scores(Design(), X2) is not oracles.exact_scores(design, X2)


@pytest.mark.parametrize("constraint", ["dp", "eo", "error-rate"])
def test_a_paths_heads_share_one_moments_and_the_same_heads(constraint, monkeypatch):
    X, y, a = make_fair_classification(1200, 6, seed=3)
    grid = [0.1, 0.05, 0.02]
    want = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint=constraint, backend="torch")
    fitter = PathFitter(FairLogisticRegression(constraint=constraint, backend="torch"), X, y, sensitive_features=a)
    seen = []
    real = reductions.path_moments

    def spy(design, problem, constraint, eps):
        mom = real(design, problem, constraint, eps)
        seen.append(mom)
        return mom

    monkeypatch.setattr(reductions, "path_moments", spy)
    heads = [fitter.fit(e) for e in grid]
    assert len(seen) == 3 and all(m is seen[0] for m in seen)
    for h, w in zip(heads, want):  # sharing changes no bit
        np.testing.assert_array_equal(h.coef_, w.coef_)
        np.testing.assert_array_equal(h.intercept_, w.intercept_)


def test_moments_are_not_shared_across_problems_or_constraints():
    class Design:
        pass

    X, y, a = make_fair_classification(400, 3, seed=1)
    design = Design()
    p1 = PathFitter(FairLogisticRegression(constraint="dp"), X, y, sensitive_features=a).problem
    p2 = PathFitter(FairLogisticRegression(constraint="dp"), X, y, sensitive_features=a).problem
    dp, eo = make_constraint("dp"), make_constraint("eo")
    m = reductions.path_moments(design, p1, dp, 0.1)
    assert reductions.path_moments(design, p1, make_constraint("dp"), 0.05) is m
    assert reductions.path_moments(design, p1, eo, 0.1) is not m
    m2 = reductions.path_moments(design, p2, dp, 0.1)
    assert m2 is not m
    np.testing.assert_array_equal(m2.M, m.M)
