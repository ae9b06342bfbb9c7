"""Rate paths: monotone feasibility, honest timers, the resolution and the cost in the certificate."""

import dataclasses
import time
import warnings

import numpy as np
import pytest

from solvers import FairLogisticRegression, fit_path
from solvers.path import _best_meeting
from solvers.synthetic import make_fair_classification

GRID = np.linspace(0.3, 0.0, 10)


@pytest.fixture(scope="module")
def eo_path():
    X, y, a = make_fair_classification(3000, 8, seed=1)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eps = 0 may stay unmet (it warns)
        heads = fit_path(X, y, sensitive_features=a, eps_grid=GRID, constraint="eo", backend="torch")
    return (X, y, a), heads, time.perf_counter() - t0


def test_feasibility_is_monotone_along_the_path(eo_path):
    _, heads, _ = eo_path
    assert [h.certificate_.eps for h in heads] == pytest.approx(GRID)
    for j, tight in enumerate(heads):
        if tight.certificate_.eps_met:
            for loose in heads[:j]:  # every looser bound on the path
                assert loose.certificate_.eps_met, (loose.certificate_, tight.certificate_)
    for h in heads:
        assert h.certificate_.eps_met == (h.certificate_.achieved_gap <= h.certificate_.eps)


def test_an_unmet_looser_bound_takes_the_head_that_meets_a_tighter_one(eo_path):
    (X, y, a), heads, _ = eo_path
    met = [h for h in heads if h.certificate_.eps_met]
    tight, loose = met[-1], met[0]
    # the looser head as if its own search had failed
    failed = dataclasses.replace(loose.certificate_, eps_met=False, status="eps_not_met", achieved_gap=1.0)
    unmet = FairLogisticRegression(constraint="eo", eps=loose.certificate_.eps)
    unmet.coef_, unmet.intercept_, unmet.certificate_ = loose.coef_ * 0, loose.intercept_, failed
    unmet._solver_state = None
    out = _best_meeting(unmet, heads)
    assert out.certificate_.eps_met and out.certificate_.eps == loose.certificate_.eps
    assert out.certificate_.achieved_gap <= loose.certificate_.eps
    # the least-error head among those meeting the bound (ties: the smaller gap), with a note saying so
    best = min((h for h in heads if h.certificate_.achieved_gap <= loose.certificate_.eps),
               key=lambda h: (h.certificate_.zero_one_error, h.certificate_.achieved_gap))
    np.testing.assert_array_equal(out.coef_, best.coef_)
    assert "monotone" in out.certificate_.notes[-1]
    assert tight.certificate_.achieved_gap <= loose.certificate_.eps


def test_path_wall_times_are_each_heads_own(eo_path):
    _, heads, total = eo_path
    walls = [h.certificate_.wall_time for h in heads]
    assert all(0 <= w <= total for w in walls), walls
    assert sum(walls) <= total


def test_resolution_and_search_aim_are_in_the_certificate(eo_path):
    (X, y, a), heads, _ = eo_path
    # eo: one prediction moves a (label, group) cell's rate by 1 / cell size (minus its share of the overall)
    smallest_cell = min(np.sum((y == lab) & (a == g)) for lab in (0, 1) for g in (0, 1))
    for h in heads:
        c = h.certificate_
        assert 0.5 / smallest_cell <= c.resolution <= 1.0 / smallest_cell
        assert c.aimed_at == pytest.approx(max(c.eps, c.resolution))
    assert heads[-1].certificate_.eps == 0.0 and heads[-1].certificate_.aimed_at == heads[-1].certificate_.resolution
    # aimed at the resolution, eps = 0 ends there (and skips the cold fallback): gap within one step
    assert heads[-1].certificate_.achieved_gap <= heads[-1].certificate_.resolution


def test_passes_over_x_are_counted_beside_their_lower_bound(eo_path):
    (X, y, a), heads, _ = eo_path
    cold = FairLogisticRegression(backend="torch").fit(X, y)
    assert cold.certificate_.passes_lower_bound == 40
    assert cold.certificate_.passes >= 2 * cold.n_iter_  # one X d and one X^T r per iteration at least
    for h in heads:
        c = h.certificate_
        assert c.passes >= 2 and c.passes_lower_bound >= 2
    assert heads[0].certificate_.passes_lower_bound == 40 and heads[1].certificate_.passes_lower_bound == 2
    assert cold.certificate_.to_dict()["passes"] == cold.certificate_.passes


@pytest.mark.parametrize("constraint", ["dp", "dp-score"])
def test_init_head_saves_the_refit_of_the_unconstrained_head(constraint):
    X, y, a = make_fair_classification(2000, 6, seed=2)
    free = FairLogisticRegression(backend="torch").fit(X, y)
    loose = 10.0 if constraint == "dp-score" else 1.0  # inactive
    kw = dict(sensitive_features=a, eps_grid=[loose, 0.05], constraint=constraint, backend="torch")
    warm = fit_path(X, y, init_head=free, **kw)
    cold = fit_path(X, y, **kw)
    np.testing.assert_allclose(warm[0].coef_, free.coef_, atol=1e-5)
    assert warm[0].certificate_.passes < cold[0].certificate_.passes
    assert warm[1].certificate_.converged
    with pytest.raises(ValueError, match="coefficients"):
        fit_path(X[:, :3], y, init_head=free, **kw)


def test_fit_path_front_is_monotone_and_never_below_a_cold_fit():
    """A tighter bound is never more accurate on the fit split than a looser one along fit_path,
    and each head is at least as accurate as the cold single fit at its bound, unless that cold
    fit is more accurate by at most the resolution of a rate (one prediction in the smallest cell)."""
    X, y, a = make_fair_classification(3000, 8, seed=1)
    grid = [0.1, 0.05, 0.03, 0.02, 0.01]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="eo", backend="torch")
        cold = [FairLogisticRegression(constraint="eo", eps=e, backend="torch").fit(X, y, sensitive_features=a)
                for e in grid]
    errs = [h.certificate_.zero_one_error for h in heads]
    met = [h.certificate_.eps_met for h in heads]
    assert all(met)
    assert all(errs[j] >= errs[j - 1] for j in range(1, len(errs)))  # looser first: error never falls
    for h, c in zip(heads, cold):
        assert h.certificate_.achieved_gap <= h.certificate_.eps
        # the path's front against cold fits: within the resolution of a 0-1 rate on the fit split
        assert h.certificate_.zero_one_error <= c.certificate_.zero_one_error + h.certificate_.resolution


@pytest.mark.parametrize("constraint", ["dp", "eo"])
def test_k_class_fit_path_is_monotone(constraint):
    """K classes: along fit_path a looser bound is met whenever a tighter one is, and is never less
    accurate on the fit split (a tighter bound's head meets every looser one)."""
    from solvers.synthetic import make_fair_multiclass

    X, y, a = make_fair_multiclass(1500, 6, n_classes=3, seed=4)
    grid = [0.2, 0.15, 0.1, 0.08, 0.05]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint=constraint, backend="torch")
    certs = [h.certificate_ for h in heads]
    for j, c in enumerate(certs):
        assert c.eps_met == (c.achieved_gap <= c.eps)
        if c.eps_met:
            assert all(loose.eps_met for loose in certs[:j])
            assert all(loose.zero_one_error <= c.zero_one_error for loose in certs[:j])


def _cert(eps, error, gap, met=None):
    from solvers.certificate import Certificate

    return Certificate(backend="torch", solver="reduction", status="eps_met", constraint="eo", eps=eps, objective=None,
                       max_violation=0.0, stationarity=0.0, n_iter=1, wall_time=0.0, tol=1e-4, achieved_gap=gap,
                       eps_met=gap <= eps if met is None else met, zero_one_error=error)


def test_monotone_front_takes_the_most_accurate_head_that_meets_each_bound():
    from solvers.path import REPLACED_PREFIX, monotone_front, replaced_certificate, replacement_note

    certs = [_cert(0.2, 0.21, 0.15),   # less accurate than the 0.1 head, which meets 0.2 too
             _cert(0.1, 0.20, 0.08),
             _cert(0.05, 0.25, 0.04),
             _cert(0.03, 0.24, 0.03),  # more accurate than the 0.05 head: 0.05 takes it
             _cert(0.01, 0.22, 0.06)]  # unmet: kept (iter_path gives unmet bounds their head)
    assert monotone_front(certs) == [1, 1, 3, 3, 4]
    # any path head that meets a bound counts, an unmet one too (its gap meets a looser bound)
    assert monotone_front(certs[:4] + [_cert(0.01, 0.22, 0.02)]) == [1, 1, 4, 4, 4]
    # ties in error: the smaller gap, then the earlier head; a head gives way only to a more accurate one
    assert monotone_front([_cert(0.2, 0.3, 0.1), _cert(0.1, 0.2, 0.09), _cert(0.09, 0.2, 0.05)]) == [2, 1, 2]
    assert monotone_front([_cert(0.2, 0.3, 0.1), _cert(0.1, 0.2, 0.05), _cert(0.09, 0.2, 0.05)]) == [1, 1, 2]
    # score heads (no 0-1 error) keep their own
    score = [dataclasses.replace(c, zero_one_error=None) for c in certs]
    assert monotone_front(score) == list(range(5))
    out = replaced_certificate(certs[0], certs[1])
    assert (out.eps, out.achieved_gap, out.zero_one_error, out.eps_met) == (0.2, 0.08, 0.20, True)
    assert replacement_note(out).startswith(REPLACED_PREFIX) and "eps=0.1 meets it at 0.2" in replacement_note(out)
    assert replacement_note(certs[0]) == ""


@pytest.mark.parametrize("constraint", ["dp", "eo", "error-rate"])
@pytest.mark.parametrize("balance", [None, "label-group"])
def test_rate_resolution_is_the_certificates(constraint, balance):
    """Computed from labels, groups and weights alone, it is the number the search's certificate carries."""
    from solvers.path import rate_resolution

    X, y, a = make_fair_classification(800, 4, seed=3)
    head = FairLogisticRegression(constraint=constraint, eps=0.05, balance=balance, backend="torch")
    head.fit(X, y, sensitive_features=a)
    assert rate_resolution(y, sensitive_features=a, constraint=constraint, balance=balance) == \
        head.certificate_.resolution
    assert rate_resolution(y, sensitive_features=a, constraint="dp-score") is None


def test_k_class_rate_resolution_is_the_certificates():
    from solvers.path import rate_resolution
    from solvers.synthetic import make_fair_multiclass

    X, y, a = make_fair_multiclass(600, 4, n_classes=3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = FairLogisticRegression(constraint="dp", eps=0.1, backend="torch").fit(X, y, sensitive_features=a)
    assert rate_resolution(y, sensitive_features=a, constraint="dp") == head.certificate_.resolution
