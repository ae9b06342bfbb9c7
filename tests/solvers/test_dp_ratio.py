"""``dp-ratio`` (issue 24 item 1, the four-fifths rule): one-sided rows whose coefficients depend on eps."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from solvers import FairLogisticRegression, fit_path
from solvers.constraints import DemographicParityRatio, RatioMoments, make_constraint
from solvers.errors import DataError
from solvers.synthetic import make_fair_classification, make_fair_multiclass


def _shortfall(pred, a):
    """1 - min_g P(yhat=1 | g) / max_h P(yhat=1 | h), with unit weights, from hard predictions."""
    sel = np.array([pred[a == g].mean() for g in np.unique(a)])
    return 1.0 - sel.min() / sel.max()


def test_gaps_are_the_ratio_shortfalls_and_rows_hold_exactly_when_they_meet_eps():
    groups = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    c = make_constraint("dp-ratio")
    assert isinstance(c, DemographicParityRatio) and c.kind == "rate" and not c.multiclass
    yhat = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=float)  # rates 0.75, 0.5, 0
    m = c.moments(np.zeros(8), groups, np.ones(8), ("a", "b", "c"), eps=0.2)
    assert isinstance(m, RatioMoments) and len(m.pairs) == 6 and m.names[0] == "g=a vs b"
    by_pair = dict(zip(m.pairs, m.gaps(yhat)))
    assert by_pair[(1, 0)] == pytest.approx(1 - 0.5 / 0.75) and by_pair[(0, 1)] == 0.0  # a is above b: no shortfall
    assert by_pair[(2, 0)] == 1.0 and by_pair[(0, 2)] == 0.0  # c selects nobody: against it, nothing falls short
    # the rows the reduction prices, (1 - eps) sel_h - sel_g, are <= 0 exactly where the gap is <= eps
    rng = np.random.default_rng(0)
    for eps in (0.0, 0.1, 0.2, 0.5):
        m = c.moments(np.zeros(8), groups, np.ones(8), ("a", "b", "c"), eps=eps)
        for _ in range(50):
            yh = (rng.random(8) < 0.5).astype(float)
            rows = m.M @ yh
            assert ((rows <= 1e-12) == (m.gaps(yh) <= eps + 1e-12)).all()
    # a threshold scan's rates give the same gaps as the predictions (the threshold stage's transform)
    np.testing.assert_array_equal(m.shortfalls(np.stack([m.rates @ yhat])), m.gaps(yhat)[None, :])


@pytest.mark.parametrize("n_groups", [2, 3])
def test_heads_meet_the_ratio_on_the_fit_split_with_hard_predictions(n_groups):
    X, y, a = make_fair_classification(2000, 8, n_groups=n_groups, seed=1)
    free = FairLogisticRegression().fit(X, y)
    assert _shortfall(free.predict(X), a) > 0.5  # the bound is active at every eps below
    errors = []
    for eps in (0.3, 0.2, 0.1):
        head = FairLogisticRegression(constraint="dp-ratio", eps=eps).fit(X, y, sensitive_features=a)
        cert, pred = head.certificate_, head.predict(X)
        assert cert.eps_met and cert.status == "eps_met" and cert.max_violation == 0.0
        # the certificate's gap is the head's own ratio shortfall, from predict()
        assert abs(cert.achieved_gap - _shortfall(pred, a)) <= 1e-12 and cert.achieved_gap <= eps
        assert abs(cert.zero_one_error - (pred != y).mean()) <= 1e-12
        assert len(cert.multipliers) == n_groups * (n_groups - 1) and min(cert.multipliers) >= 0.0
        errors.append(cert.zero_one_error)
    assert errors[0] < errors[-1] < 0.5  # tighter costs accuracy, and the heads are not constant


def test_a_path_meets_every_bound_and_agrees_with_cold_fits():
    X, y, a = make_fair_classification(2000, 8, n_groups=2, seed=1)
    grid = [0.3, 0.2, 0.1, 0.05]
    heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp-ratio")
    for eps, head in zip(grid, heads):
        cert = head.certificate_
        assert cert.eps_met and abs(cert.achieved_gap - _shortfall(head.predict(X), a)) <= 1e-12
        cold = FairLogisticRegression(constraint="dp-ratio", eps=eps).fit(X, y, sensitive_features=a)
        # the path's monotone front keeps a head at least as accurate as its own search's; the cold
        # search reaches the same trade-off within 2 points on this problem
        assert cert.zero_one_error <= cold.certificate_.zero_one_error + 0.02


def test_k_classes_are_refused_with_the_fix():
    X, y, a = make_fair_multiclass(300, 5, n_classes=3, seed=0)
    with pytest.raises(DataError, match=r"dp-ratio.*binary") as err:
        FairLogisticRegression(constraint="dp-ratio", eps=0.2).fit(X, y, sensitive_features=a)
    assert "dp" in str(err.value).split("dp-ratio", 1)[1]  # names the constraints that take K classes


def test_the_reported_value_and_its_description_are_the_ratio():
    from fairhead.measure import constraint_value, describe_bounded_gap

    X, y, a = make_fair_classification(1000, 6, n_groups=2, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = FairLogisticRegression(constraint="dp-ratio", eps=0.2).fit(X, y, sensitive_features=a)
    z = X @ head.coef_.ravel() + head.intercept_[0]
    value = constraint_value("dp-ratio", y=y, scores=z, sensitive_features=a)
    assert value == pytest.approx(_shortfall(head.predict(X), a), abs=1e-12)
    assert value == pytest.approx(head.certificate_.achieved_gap, abs=1e-12)
    assert describe_bounded_gap("dp-ratio").startswith("1 - min over groups of P(yhat=1)(group)")
