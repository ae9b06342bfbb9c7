"""Clopper-Pearson intervals equal scipy's, and gap intervals cover the gaps they bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from solvers import intervals, metrics
from solvers.errors import DataError


@pytest.mark.parametrize("k,n", [(0, 1), (0, 10), (3, 10), (10, 10), (17, 250), (999, 1000)])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.999])
def test_clopper_pearson_equals_scipy(k, n, confidence):
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    low, high = intervals.clopper_pearson(k, n, confidence)
    assert low == pytest.approx(ref.low, abs=1e-10)
    assert high == pytest.approx(ref.high, abs=1e-10)


def test_clopper_pearson_vectorised_and_empty():
    k, n = np.array([0, 5, 9]), np.array([0, 10, 9])
    low, high = intervals.clopper_pearson(k, n, 0.9)
    assert low[0] == 0.0 and high[0] == 1.0  # no trials: vacuous
    ref = binomtest(5, 10).proportion_ci(0.9, method="exact")
    assert (low[1], high[1]) == pytest.approx((ref.low, ref.high), abs=1e-10)
    assert high[2] == 1.0
    with pytest.raises(DataError, match="confidence"):
        intervals.clopper_pearson(1, 2, 1.5)
    with pytest.raises(DataError, match="0 <= k <= n"):
        intervals.clopper_pearson(3, 2)


def test_gap_interval_is_the_union_bound_of_group_intervals():
    rng = np.random.default_rng(0)
    y, yhat, g = rng.integers(0, 2, 600), rng.integers(0, 2, 600), rng.integers(0, 3, 600)
    gi = intervals.gap_interval(y, yhat, sensitive_features=g, gap="eo", confidence=0.9)
    assert gi.estimate == pytest.approx(metrics.equalized_odds_difference(y, yhat, sensitive_features=g), abs=1e-12)
    assert gi.n_intervals == 6 and gi.method == intervals.UNION_BOUND
    # each group rate's interval is the exact interval at level 1 - 0.1 / 6
    tpr = gi.by_group["1"]["true_positive_rate"]
    ref = binomtest(tpr["k"], tpr["n"]).proportion_ci(1 - 0.1 / 6, method="exact")
    assert (tpr["low"], tpr["high"]) == pytest.approx((ref.low, ref.high), abs=1e-10)
    highs = {e: max(gi.by_group[str(j)][e]["high"] for j in range(3)) - min(gi.by_group[str(j)][e]["low"]
                                                                                for j in range(3))
             for e in ("true_positive_rate", "false_positive_rate")}
    assert gi.high == pytest.approx(max(highs.values()))
    assert 0.0 <= gi.low <= gi.estimate <= gi.high


def test_gap_interval_covers_the_population_gap():
    """Over 200 draws the 90% interval misses the true EO gap at most as often as binomial noise allows."""
    rng = np.random.default_rng(1)
    tpr, fpr = np.array([0.7, 0.6]), np.array([0.2, 0.25])
    true_gap = max(abs(tpr[0] - tpr[1]), abs(fpr[0] - fpr[1]))
    misses = 0
    for _ in range(200):
        g = rng.integers(0, 2, 400)
        y = rng.integers(0, 2, 400)
        yhat = (rng.random(400) < np.where(y == 1, tpr[g], fpr[g])).astype(int)
        gi = intervals.gap_interval(y, yhat, sensitive_features=g, gap="eo", confidence=0.9)
        misses += not (gi.low <= true_gap <= gi.high)
    assert misses <= binom.ppf(0.999, 200, 0.1)


def test_rate_and_worst_group_intervals():
    r = intervals.rate_interval(30, 100, 0.95)
    assert r.estimate == 0.3 and r.method == intervals.EXACT and r.low < 0.3 < r.high
    counts = intervals.GroupCounts.from_predictions([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1],
                                                    sensitive_features=["a", "a", "a", "b", "b", "b"])
    assert counts.counts["a"]["accuracy"] == (2, 3) and counts.counts["b"]["true_positive_rate"] == (1, 1)
    wg = intervals.worst_group_accuracy_interval(counts, 0.9)
    assert wg.estimate == pytest.approx(2 / 3) and wg.low <= wg.estimate <= wg.high


def test_bootstrap_interval_is_scipy_and_deterministic():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(size=300)
    a = intervals.bootstrap_interval(metrics.roc_auc, y, s, n_resamples=200, seed=3)
    b = intervals.bootstrap_interval(metrics.roc_auc, y, s, n_resamples=200, seed=3)
    assert a == b and a.method == intervals.BOOTSTRAP and a.low <= a.estimate <= a.high


def test_bad_gap_name():
    with pytest.raises(DataError, match="unknown gap"):
        intervals.gap_name("xyz")
