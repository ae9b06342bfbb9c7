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


def test_clopper_pearson_is_scipys_beta_quantile_bit_for_bit():
    """The quantile comes from ``scipy.special.betaincinv``: the same numbers ``scipy.stats.beta.ppf``
    gives (it calls the same function), on counts of every size a split has."""
    from scipy.stats import beta

    rng = np.random.default_rng(0)
    n = rng.integers(1, 200_000, 500)
    k = rng.integers(1, n)
    for confidence in (0.9, 0.95, 1 - 0.05 / 12):
        a = 1 - confidence
        low, high = intervals.clopper_pearson(k, n, confidence)
        np.testing.assert_array_equal(low, beta.ppf(a / 2, k, n - k + 1))
        np.testing.assert_array_equal(high, beta.ppf(1 - a / 2, k + 1, n - k))


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


# --- the exact bound on a difference of two rates, and on the gap -------------------------------------------

#: exact coverage sums (n1+1)(n2+1) products of float64 pmfs: rounding is far below this
COVERAGE_ROUNDING = 1e-12


@pytest.mark.parametrize("p1,p2", [(0.5, 0.5), (0.6, 0.9), (0.9, 0.5)], ids=["equal", "negative", "positive"])
def test_difference_bound_covers_exactly_at_small_n(p1, p2):
    """Every outcome of Bin(8, p1) x Bin(12, p2) enumerated: P(p1 - p2 <= U) >= 1 - alpha, not by simulation."""
    n1, n2, alpha = 8, 12, 0.1
    pmf = np.outer(binom.pmf(np.arange(n1 + 1), n1, p1), binom.pmf(np.arange(n2 + 1), n2, p2))
    upper = np.array([[intervals.difference_upper_bound(k1, n1, k2, n2, alpha) for k2 in range(n2 + 1)]
                      for k1 in range(n1 + 1)])
    coverage = pmf[upper >= p1 - p2].sum()
    assert coverage >= 1 - alpha - COVERAGE_ROUNDING, coverage
    assert np.all(upper >= np.arange(n1 + 1)[:, None] / n1 - np.arange(n2 + 1)[None, :] / n2)  # above the estimate


def test_gap_bound_monte_carlo_coverage_eo_three_groups():
    """The max over events and pairs at the full level: over 120 draws the 90% bound is below the true EO
    gap at most as often as Bin(120, 0.1) allows (upper tail 0.999)."""
    rng = np.random.default_rng(3)
    tpr, fpr = np.array([0.7, 0.6, 0.75]), np.array([0.2, 0.3, 0.25])
    true_gap = max(np.ptp(tpr), np.ptp(fpr))
    misses = 0
    for _ in range(120):
        g = rng.integers(0, 3, 90)
        y = rng.integers(0, 2, 90)
        yhat = (rng.random(90) < np.where(y == 1, tpr[g], fpr[g])).astype(int)
        counts = intervals.GroupCounts.from_predictions(y, yhat, sensitive_features=g)
        misses += intervals.gap_upper_bound(counts, "eo", 0.1) < true_gap
    assert misses <= binom.ppf(0.999, 120, 0.1)


def test_exact_bound_is_about_half_the_union_margin():
    """The issue's sizes: groups of 660 and 440 at rate 0.5, confidence 0.9 (dp, two groups)."""
    counts = intervals.GroupCounts(("a", "b"),
                                   {"a": {"selection_rate": (330, 660)}, "b": {"selection_rate": (220, 440)}})
    exact = intervals.gap_upper_bound(counts, "dp", 0.1)
    union = intervals.gap_upper_bound(counts, "dp", 0.1, bound="union")
    from scipy.stats import norm

    wald = norm.isf(0.1) * np.sqrt(0.25 / 660 + 0.25 / 440)  # the normal approximation's margin
    lo, hi = intervals.clopper_pearson(np.array([330, 220]), np.array([660, 440]), 1 - 0.1 / 2)
    assert union == pytest.approx(hi.max() - lo.min(), abs=1e-12)  # the smaller group's whole width here
    assert wald <= exact <= 0.5 * union, (wald, exact, union)
    # one pair, so the bound is the pair's (either order), to the bisection's resolution
    assert exact == max(intervals.difference_upper_bound(330, 660, 220, 440, 0.1),
                        intervals.difference_upper_bound(220, 440, 330, 660, 0.1))


def test_difference_bound_edges():
    assert intervals.difference_upper_bound(3, 10, 0, 0, 0.1) == 1.0  # an empty group: vacuous
    assert intervals.difference_upper_bound(10, 10, 0, 10, 0.1) == 1.0  # observed 1: nothing above it
    u = intervals.difference_upper_bound(0, 10, 10, 10, 0.1)
    assert -1.0 < u < 0.0
    with pytest.raises(DataError, match="bound must be one of"):
        intervals.gap_upper_bound(intervals.GroupCounts(("a",), {"a": {"selection_rate": (1, 2)}}), "dp", 0.1,
                                  bound="wald")
