"""The per-class offset search of K-class rate heads (:mod:`solvers.threshold_multiclass`), against brute force."""

import numpy as np
import pytest

from solvers import FairLogisticRegression
from solvers.constraints import ClassRateMoments, _class_parity_matrix, make_constraint
from solvers.threshold_multiclass import OffsetSearch, choose_offsets

#: the scan's gaps and errors are cumulative sums of n terms of size <= 1 (float64): n * 2^-52 bounds their rounding
SUM_TOL = lambda n: n * np.finfo(np.float64).eps  # noqa: E731


def _problem(seed, n=40, K=3, n_groups=2, constraint="dp", weights=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    g = rng.integers(0, n_groups, n)
    v = rng.uniform(0.5, 2.0, n) if weights else np.ones(n)
    # integer scores leaning to the label and, for class g, to the group: ties, and an active bound
    Z = rng.integers(-3, 4, (n, K)).astype(np.float64)
    Z[np.arange(n), y] += 1.0
    Z[np.arange(n), g % K] += 1.0
    if K == 2:  # the per-class rows of a 2-class head (``moments`` gives the binary form there)
        cons = make_constraint(constraint)
        M, classes, names = _class_parity_matrix(cons.event, y.astype(np.float64), g, v, tuple(range(n_groups)), K)
        return Z, y, g, v, ClassRateMoments(M=M, classes=classes, n_classes=K, names=tuple(names))
    mom = make_constraint(constraint).moments(y.astype(np.float64), g, v, tuple(range(n_groups)), n_classes=K)
    return Z, y, g, v, mom


def _rates(pred, y, g, K, constraint):
    """The bounded gaps straight from their definition (unit weights): per class and event,
    ``|P(yhat = k | event, g) - P(yhat = k | event)|``."""
    out = []
    for k in range(K):
        events = {"dp": [np.ones(len(y), bool)], "eopp": [y == k], "eo": [y == k, y != k]}[constraint]
        for ev in events:
            for grp in np.unique(g):
                out.append(abs((pred[ev & (g == grp)] == k).mean() - (pred[ev] == k).mean()))
    return max(out)


def _brute_coordinate(Z, o, c, y, v, mom):
    """Every reachable ``o_c`` from the breakpoints found row by row, evaluated from scratch."""
    beta = []
    for i in range(len(y)):
        best_other = max(Z[i, k] + o[k] for k in range(Z.shape[1]) if k != c)
        beta.append(best_other - Z[i, c])
    u = np.unique(beta)
    ts = [u[0] - max(1.0, abs(u[0]))] + [0.5 * (a + b) for a, b in zip(u[:-1], u[1:])] + [u[-1] + max(1.0, abs(u[-1]))]
    out = []
    for t in ts:
        oc = o.copy()
        oc[c] = t
        pred = np.argmax(Z + oc, axis=1)
        out.append((t, float((v * (pred != y)).sum() / v.sum()), mom.gaps(pred)))
    return out


@pytest.mark.parametrize("constraint", ["dp", "eopp", "eo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_along_one_coordinate_is_every_offset_exactly(constraint, seed):
    Z, y, g, v, mom = _problem(seed, constraint=constraint)
    search = OffsetSearch(mom, y, v)
    o = np.array([0.0, 1.0, -2.0])  # integers: the breakpoints' midpoints are exact in float64
    for c in range(3):
        scan = search.scan(Z, o, c)
        brute = _brute_coordinate(Z, o, c, y, v, mom)
        assert len(scan.cuts) == len(brute)
        for j, (t, err, gaps) in enumerate(brute):
            assert scan.cuts[j] + o[c] == t
            assert scan.errors[j] == pytest.approx(err, abs=SUM_TOL(len(y)))
            np.testing.assert_allclose(scan.gaps[j], gaps, rtol=0, atol=SUM_TOL(len(y)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bound", [0.0, 0.05, 0.1, 0.2, 1.0])
def test_two_classes_one_coordinate_is_the_exact_optimum(seed, bound):
    """With K = 2 the only free offset is one coordinate: the search is exact. Brute force over
    every offset between distinct score differences."""
    Z, y, g, v, mom = _problem(seed, K=2, n_groups=3)
    got = choose_offsets(Z, y, v, mom, bound)
    d = Z[:, 0] - Z[:, 1]  # class 1 is predicted iff o_1 > d_i
    u = np.unique(d)
    ts = np.r_[u[0] - 1.0, 0.5 * (u[1:] + u[:-1]), u[-1] + 1.0]
    keys = []
    for t in ts:
        pred = np.argmax(Z + np.array([0.0, t]), axis=1)
        err, gap = float((v * (pred != y)).sum() / v.sum()), float(np.abs(mom.gaps(pred)).max())
        keys.append((0, err) if gap <= bound else (1, gap, err))
    best = min(keys)
    tol = SUM_TOL(len(y))
    if best[0] == 0:  # some offset meets the bound: the least error among them
        assert got.max_gap <= bound and got.error <= best[1] + tol
    else:
        assert got.max_gap > bound and got.max_gap <= best[1] + tol


@pytest.mark.parametrize("constraint", ["dp", "eo"])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bound", [0.02, 0.1, 0.3])
def test_never_worse_than_zero_and_honest_hard_predictions(constraint, seed, bound):
    Z, y, g, v, mom = _problem(seed, n=60, K=4, n_groups=3, constraint=constraint, weights=False)
    search = OffsetSearch(mom, y, v)
    got = search.choose(Z, bound)
    start = search.evaluate(Z, np.zeros(4))
    assert got.offsets[0] == 0.0
    assert got.key(bound) <= start.key(bound)
    if start.max_gap <= bound:
        assert got.max_gap <= bound and got.error <= start.error
    # the result is what its hard predictions give (float64), with the gaps from their definition
    pred = np.argmax(Z + got.offsets, axis=1)
    assert got.error == pytest.approx((pred != y).mean(), abs=SUM_TOL(60))
    assert _rates(pred, y, g, 4, constraint) == pytest.approx(got.max_gap, abs=SUM_TOL(60))
    if got.max_gap <= bound:
        assert _rates(pred, y, g, 4, constraint) <= bound + SUM_TOL(60)
    # a coordinatewise optimum: no single class's offset improves it further
    for c in range(4):
        sc = search.scan(Z, got.offsets, c)
        pick = sc.best(bound) or sc.smallest_gap()
        o = got.offsets.copy()
        o[c] += pick.cut
        assert not search.evaluate(Z, o - o[0]).key(bound) < got.key(bound)
    # deterministic: the same inputs give the same bits
    np.testing.assert_array_equal(search.choose(Z, bound).offsets, got.offsets)


def test_search_meets_bounds_offsets_zero_misses():
    """On scores leaning to the group, the offsets meet a dp bound the head as fitted misses."""
    met = 0
    for seed in range(8):
        Z, y, g, v, mom = _problem(seed, n=200, K=3, n_groups=2)
        search = OffsetSearch(mom, y, v)
        start = search.evaluate(Z, np.zeros(3))
        bound = 0.5 * start.max_gap
        got = search.choose(Z, bound)
        assert got.max_gap < start.max_gap
        met += got.max_gap <= bound
    assert met >= 4


def test_without_intercept_or_stage_nothing_moves(monkeypatch):
    Z, y, g, v, mom = _problem(0)
    search = OffsetSearch(mom, y, v)
    at_zero = search.evaluate(Z, np.zeros(3))
    assert search.choose(Z, 0.0).moves > 0
    no_intercept = OffsetSearch(mom, y, v, fit_intercept=False).choose(Z, 0.0)
    monkeypatch.setattr("solvers.threshold_multiclass.OFFSET_STAGE", False)
    for got in (no_intercept, search.choose(Z, 0.0)):
        np.testing.assert_array_equal(got.offsets, np.zeros(3))
        assert got.moves == 0 and got.key(0.0) == at_zero.key(0.0)


def test_scan_refuses_wrong_scores():
    Z, y, g, v, mom = _problem(0)
    search = OffsetSearch(mom, y, v)
    with pytest.raises(ValueError, match="finite scores"):
        search.choose(np.r_[Z[:-1], [[np.nan, 0.0, 0.0]]], 0.1)
    with pytest.raises(ValueError, match="finite scores"):
        search.choose(Z[:, :2], 0.1)


def _mc(n=1500, d=8, K=3, n_groups=2, seed=11):
    from solvers.synthetic import make_fair_multiclass

    return make_fair_multiclass(n, d, n_classes=K, n_groups=n_groups, seed=seed)


@pytest.mark.parametrize("constraint,eps", [("dp", 0.03), ("eo", 0.05)])
def test_reduction_head_absorbs_the_offsets(constraint, eps):
    """The K-class reduction's head carries its offsets in its intercepts: its certificate is what
    ``predict`` gives, and it meets the bound."""
    X, y, a = _mc()
    head = FairLogisticRegression(constraint=constraint, eps=eps).fit(X, y, sensitive_features=a)
    cert = head.certificate_
    pred = head.predict(X)
    assert cert.eps_met
    assert abs(cert.zero_one_error - float((pred != y).mean())) <= SUM_TOL(len(y))
    assert abs(_rates(pred, y, a, 3, constraint) - cert.achieved_gap) <= SUM_TOL(len(y))
    again = FairLogisticRegression(constraint=constraint, eps=eps).fit(X, y, sensitive_features=a)
    np.testing.assert_array_equal(again.intercept_, head.intercept_)


def test_offsets_never_cost_accuracy_at_the_unconstrained_head():
    """A bound the fitted head meets: the search only moves to more accurate offsets."""
    X, y, a = _mc()
    free = FairLogisticRegression().fit(X, y)
    Z = free.decision_function(X)
    mom = make_constraint("dp").moments(y.astype(np.float64), a, np.ones(len(y)), (0, 1), n_classes=3)
    search = OffsetSearch(mom, y, np.ones(len(y)))
    start = search.evaluate(Z, np.zeros(3))
    got = search.choose(Z, 1.0)
    assert got.error <= start.error
    assert got.offsets[0] == 0.0
