"""The exact threshold (intercept) search of binary rate heads, against brute force."""

import numpy as np
import pytest

from solvers import FairLogisticRegression, metrics
from solvers.constraints import make_constraint
from solvers.synthetic import make_fair_classification
from solvers import threshold
from solvers.threshold import ThresholdSearch, cumsum_rows, shared_search

#: the scan's gaps are cumulative sums of n terms of size <= 1 (float64): n * 2^-52 * 1 bounds their rounding
SUM_TOL = lambda n: n * np.finfo(np.float64).eps  # noqa: E731


def _problem(seed, n=60, constraint="eo", n_groups=3, ties=True):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.float64)
    g = rng.integers(0, n_groups, n)
    v = rng.uniform(0.5, 2.0, n)
    # integer scores: many ties, which a threshold cannot split; else distinct (the scan's other branch)
    s = (rng.integers(-6, 7, n).astype(np.float64) if ties else rng.normal(size=n)) + 0.5 * y
    mom = make_constraint(constraint).moments(y, g, v, tuple(range(n_groups)))
    return y, v, s, mom


def _brute(s, y, v, mom):
    """Every threshold between (and beyond) the distinct scores, evaluated from scratch."""
    u = np.unique(s)
    cuts = np.concatenate([[u[-1]], 0.5 * (u[1:] + u[:-1])[::-1], [u[0] - 1.0]])
    out = []
    for t in cuts:
        yhat = (s > t).astype(np.float64)
        out.append((t, float((v * (yhat != y)).sum() / v.sum()), mom.gaps(yhat)))
    return out


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("constraint", ["dp", "eopp", "eo", "error-rate"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_is_every_threshold_exactly(constraint, seed, ties):
    y, v, s, mom = _problem(seed, constraint=constraint, ties=ties)
    scan = ThresholdSearch(mom, y, v).scan(s)
    brute = _brute(s, y, v, mom)
    assert len(scan.cuts) == len(brute)
    for j, (t, err, gaps) in enumerate(brute):
        if j < len(brute) - 1:
            assert scan.cuts[j] == t
        else:  # every score predicted 1: any cut below the smallest score
            assert scan.cuts[j] < s.min()
        assert scan.errors[j] == pytest.approx(err, abs=SUM_TOL(len(y)))
        np.testing.assert_allclose(scan.gaps[j], gaps, rtol=0, atol=SUM_TOL(len(y)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("bound", [0.0, 0.05, 0.1, 0.2, 1.0])
def test_best_is_the_most_accurate_threshold_meeting_the_bound(seed, bound):
    y, v, s, mom = _problem(seed)
    search = ThresholdSearch(mom, y, v)
    brute = _brute(s, y, v, mom)
    tol = SUM_TOL(len(y))
    # the scan's gaps are within ``tol`` of the brute force ones: a threshold whose gap lies within
    # ``tol`` of the bound may fall on either side, any other must be decided alike
    strict = [err for t, err, g in brute if np.abs(g).max() <= bound - tol]
    loose = [err for t, err, g in brute if np.abs(g).max() <= bound + tol]
    got = search.scan(s).best(bound)
    if got is None:
        assert not strict
        small = search.choose(s, bound)
        assert small.max_gap == pytest.approx(min(np.abs(g).max() for _, _, g in brute), abs=tol)
        return
    assert loose and got.max_gap <= bound
    assert min(loose) - tol <= got.error <= min(strict, default=np.inf) + tol
    # the chosen threshold realises its error and gaps with hard predictions
    yhat = (s > got.cut).astype(np.float64)
    np.testing.assert_allclose(mom.gaps(yhat), got.gaps, rtol=0, atol=tol)


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_scan_sums_in_score_order_bit_for_bit(seed, ties):
    """The scan's errors and gaps are numpy's running sums in ``argsort(-s)`` order, bit for bit
    (the rate search's heads depend on those bits), and its cuts the neighbours' midpoints."""
    y, v, s, mom = _problem(seed, n=500, ties=ties)
    order = np.argsort(-s)
    ss = s[order]
    last = np.r_[np.flatnonzero(ss[:-1] > ss[1:]), len(s) - 1]  # the last index of each reachable prefix
    step_gaps, step_err = mom.M * mom.a, v * (1.0 - 2.0 * y) / v.sum()
    gaps0, err0 = mom.M @ mom.b0, float((v * y).sum() / v.sum())
    scan = ThresholdSearch(mom, y, v).scan(s)
    np.testing.assert_array_equal(scan.gaps[1:], (gaps0[:, None] + np.cumsum(step_gaps[:, order], axis=1)[:, last]).T)
    np.testing.assert_array_equal(scan.errors[1:], err0 + np.cumsum(step_err[order])[last])
    np.testing.assert_array_equal(scan.cuts[1:-1], 0.5 * (ss[last[:-1]] + ss[last[:-1] + 1]))


def test_cumsum_rows_adds_in_order_like_numpy():
    # entries over 16 decades: any other order of the additions rounds differently somewhere
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 5000)) * 10.0 ** rng.integers(-8, 8, size=(3, 5000))
    want = np.cumsum(a, axis=1)
    np.testing.assert_array_equal(cumsum_rows(a.copy()), want)
    np.testing.assert_array_equal(cumsum_rows(a[1].copy()), want[1])


def test_scan_remembers_its_last_scores():
    y, v, s, mom = _problem(0, ties=False)
    search = ThresholdSearch(mom, y, v)
    first = search.scan(s)
    assert search.scan(s.copy()) is first  # the same scores, bit for bit: the same scan
    assert not (first.gaps.flags.writeable or first.errors.flags.writeable or first.cuts.flags.writeable)
    moved = s.copy()
    moved[len(s) // 3] += 1e-12  # one score moved, away from the probed entries: scanned again
    again = search.scan(moved)
    assert again is not first
    np.testing.assert_array_equal(again.errors, ThresholdSearch(mom, y, v).scan(moved).errors)
    s[:] = 0.0  # the caller's array changed after its scan: the memo kept its own copy
    assert search.scan(s) is not first
    for k in range(threshold.MEMO_SCANS):
        search.scan(s + k + 1)
    assert search.scan(moved) is not again  # pushed out by the last MEMO_SCANS scans


def test_remembered_hands_out_a_scan_without_sorting_and_its_ordered_scores():
    y, v, s, mom = _problem(0, ties=True)
    search = ThresholdSearch(mom, y, v)
    assert search.remembered(s) is None  # never scanned: nothing (and no sort)
    first = search.scan(s)
    assert search.remembered(s.copy()) is first
    np.testing.assert_array_equal(first.ordered, np.sort(s)[::-1])
    assert not first.ordered.flags.writeable
    assert search.remembered(s[:-1]) is None and search.remembered(s + 1.0) is None


def test_shared_search_is_the_owners_while_its_steps_are_equal():
    class Owner:
        pass

    owner = Owner()
    y, v, _, mom = _problem(0)
    first = shared_search(owner, mom, y, v)
    y_again, v_again, _, mom_again = _problem(0)  # the same data, other arrays (the next bound of a path)
    assert shared_search(owner, mom_again, y_again, v_again) is first
    y1, v1, _, mom1 = _problem(1)
    other = shared_search(owner, mom1, y1, v1)  # other data: a new search, the owner's from now on
    assert other is not first and shared_search(owner, mom1, y1, v1) is other
    assert shared_search(Owner(), mom1, y1, v1) is not other  # another owner


def test_shared_search_knows_the_arrays_it_was_built_from(monkeypatch):
    class Owner:
        pass

    owner = Owner()
    y, v, _, mom = _problem(0)
    first = shared_search(owner, mom, y, v)
    assert first.built_from(mom, y, v) and not first.built_from(mom, y.copy(), v)
    built = []
    monkeypatch.setattr(threshold.ThresholdSearch, "same_problem", lambda self, other: built.append(other) or False)
    assert shared_search(owner, mom, y, v) is first and not built  # the very arrays: no steps built to compare


def test_scan_refuses_wrong_scores():
    y, v, s, mom = _problem(0)
    with pytest.raises(ValueError, match="finite scores"):
        ThresholdSearch(mom, y, v).scan(np.r_[s[:-1], np.nan])


@pytest.mark.parametrize("constraint,eps", [("eo", 0.01), ("dp", 0.005), ("eopp", 0.005)])
def test_rate_head_meets_eps_with_hard_predictions(embed_problem, constraint, eps):
    (X, y, a), _ = embed_problem
    clf = FairLogisticRegression(constraint=constraint, eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    cert = clf.certificate_
    assert cert.eps_met
    # the certificate's gap is recomputed here from predict() in float64, independently of the solver
    yhat = clf.predict(X).astype(np.float64)
    mom = make_constraint(constraint).moments(y.astype(np.float64), a, np.ones(len(y)), (0, 1))
    assert np.abs(mom.gaps(yhat)).max() == pytest.approx(cert.achieved_gap, abs=SUM_TOL(len(y)))
    assert cert.achieved_gap <= eps
    assert cert.zero_one_error == pytest.approx(np.mean(yhat != y), abs=SUM_TOL(len(y)))


@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_threshold_search_only_moves_the_intercept_and_never_loses(eps, monkeypatch):
    """The fit's own intercept is one of the thresholds: the chosen one is at least as accurate
    whenever the fit's own already met the bound, and the weights are the fit's."""
    monkeypatch.setattr("solvers.reductions.SMOOTH_STAGE", False)  # the reduction and threshold stages only
    X, y, a = make_fair_classification(3000, 8, seed=1)
    clf = FairLogisticRegression(constraint="eo", eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    th = clf._solver_state.theta
    np.testing.assert_array_equal(clf.coef_.ravel(), th[:-1])
    mom = make_constraint("eo").moments(y.astype(np.float64), a, np.ones(len(y)), (0, 1))
    yhat_fit = ((X @ th[:-1] + th[-1]) > 0).astype(np.float64)
    yhat = clf.predict(X).astype(np.float64)
    assert np.abs(mom.gaps(yhat)).max() <= eps and clf.certificate_.eps_met
    if np.abs(mom.gaps(yhat_fit)).max() <= eps:
        assert np.mean(yhat == y) >= np.mean(yhat_fit == y)
    else:  # the threshold alone turned an unmet fit into a head that meets the bound
        assert any("threshold search" in note for note in clf.certificate_.notes)
