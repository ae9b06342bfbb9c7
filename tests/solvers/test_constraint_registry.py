"""The constraint class is the single source of what fairhead says about a constraint, and the
false-positive-rate parity constraint ``fpr`` (one subclass and its registry line) proves it."""

from __future__ import annotations

import numpy as np
import pytest

from solvers import FairLogisticRegression, metrics
from solvers.constraints import CONSTRAINTS, MULTICLASS_NAMES, FalsePositiveRateParity, make_constraint
from solvers.synthetic import make_fair_classification

FAMILIES = {"score": "score", "loss": "score", "rate": "rate"}  # family -> the kind the backends solve


@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_every_constraint_states_what_the_tables_read(name):
    c = CONSTRAINTS[name]
    assert c.name == name and FAMILIES[c.family] == c.kind
    assert c.label and c.metric.endswith("_difference")
    assert c.paper in (None, "DI", "EOpp", "EO", "AE", "MMF")
    if c.gap is not None:
        assert c.kind == "rate" and set(c.group_rates) <= set(metrics.GROUP_METRICS)
    if c.rate_form is not None:
        assert CONSTRAINTS[c.rate_form].kind == "rate" and CONSTRAINTS[c.rate_form].metric == c.metric


def test_the_metric_of_every_constraint_is_one_that_evaluate_reports():
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    keys = metrics.evaluate(y, y[::-1], sensitive_features=np.array([0, 0, 0, 0, 1, 1, 1, 1]))
    assert {c.metric for c in CONSTRAINTS.values()} <= set(keys)


def test_fairlearn_counterparts_name_real_fairlearn_objects():
    reductions = pytest.importorskip("fairlearn.reductions")
    from fairlearn.postprocessing import _threshold_optimizer

    for c in CONSTRAINTS.values():
        assert c.fairlearn_moment is None or hasattr(reductions, c.fairlearn_moment), c.name
        assert c.fairlearn_threshold is None or c.fairlearn_threshold in _threshold_optimizer.ALL_CONSTRAINTS, c.name


def test_fairhead_tables_are_read_from_the_registry():
    from fairhead import cli, compare, measure, plots, report
    from solvers import intervals

    names = set(CONSTRAINTS)
    assert set(cli.RATE_CONSTRAINTS + cli.SCORE_CONSTRAINTS) == names and "fpr" in cli.RATE_CONSTRAINTS
    assert set(measure.BETWEEN_GROUPS) == set(compare.FAMILY) == set(compare.SEED_PENALTY) == names
    assert set(plots.OWN_VALUE_UNITS) == names
    assert compare.FAMILY["fpr"] == ("FalsePositiveRateParity", "false_positive_rate_parity")
    assert plots.own_value_label("fpr") == "constraint's own value (FPR gap)"
    assert report.RATE_OF_SCORE == {"dp-score": "dp", "eopp-score": "eopp", "eo-score": "eo", "cov": "dp"}
    assert cli.UNBOUNDED_CONSTRAINTS == ("none", "minimax")
    # the interval gaps keep their names and order; fpr has none of its own (its metric is eo's)
    assert list(intervals.GAP_EVENTS) == ["dp", "eopp", "eo", "ae"]
    assert intervals.gap_name("error-rate") == intervals.gap_name("accuracy_equality") == "ae"


def test_fpr_is_registered_for_binary_and_k_classes():
    c = make_constraint("fpr")
    assert isinstance(c, FalsePositiveRateParity) and c.kind == "rate" and "fpr" in MULTICLASS_NAMES
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    g = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    m = c.moments(y.astype(float), g, np.ones(8), ("a", "b"))
    assert m.names == ("y=0,g=a", "y=0,g=b")
    # predicting 1 on group a's negatives only: FPR(a) = 1, FPR = 1/2, FPR(b) = 0
    yhat = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    np.testing.assert_array_equal(m.gaps(yhat), [0.5, -0.5])


def _fpr_gap(y, yhat, a):
    """max over groups of |P(yhat=1 | y=0, g) - P(yhat=1 | y=0)| on hard predictions."""
    neg = y == 0
    overall = yhat[neg].mean()
    return max(abs(yhat[neg & (a == g)].mean() - overall) for g in np.unique(a))


def test_fpr_head_meets_its_bound_on_the_fit_split_with_hard_predictions():
    X, y, a = make_fair_classification(3000, 16, group_shift=1.5, dtype=np.float32, seed=3)
    free = FairLogisticRegression(backend="torch").fit(X, y)
    eps = 0.01
    clf = FairLogisticRegression(constraint="fpr", eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    assert _fpr_gap(y, free.predict(X), a) > 2 * eps  # the bound binds
    assert clf.certificate_.eps_met
    gap = _fpr_gap(y, clf.predict(X), a)
    # ratios of integer counts below 2^53, computed in float64: a few ulps of a number <= 1
    assert gap <= eps + 8 * np.finfo(np.float64).eps
    assert clf.certificate_.achieved_gap == pytest.approx(gap, abs=8 * np.finfo(np.float64).eps)
    twin = FairLogisticRegression(constraint="fpr", eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    np.testing.assert_array_equal(clf.coef_, twin.coef_)


def test_fpr_with_three_classes_bounds_each_class_one_vs_rest_fpr():
    rng = np.random.default_rng(0)
    n = 1500
    a = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[:, 0] += a
    y = np.argmax(X[:, :3] + rng.normal(size=(n, 3)), axis=1)
    eps = 0.03
    clf = FairLogisticRegression(constraint="fpr", eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    yhat = clf.predict(X)
    gap = max(abs((yhat[(y != k) & (a == g)] == k).mean() - (yhat[y != k] == k).mean())
              for k in range(3) for g in range(2))
    assert clf.certificate_.eps_met and gap <= eps + 8 * np.finfo(np.float64).eps
    assert clf.certificate_.achieved_gap == pytest.approx(gap, abs=8 * np.finfo(np.float64).eps)
