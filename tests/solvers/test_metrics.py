"""Metrics match fairlearn's on the same predictions."""

import numpy as np
import pytest
from fairlearn import metrics as flm
from sklearn.metrics import roc_auc_score

from solvers import metrics

# both compute the same ratios of counts in float64
ATOL = 1e-12


@pytest.fixture(scope="module")
def preds():
    rng = np.random.default_rng(0)
    n = 500
    a = rng.choice(["f", "m", "x"], size=n, p=[0.4, 0.5, 0.1])
    b = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n)
    s = rng.random(n) * 0.6 + 0.4 * y
    yhat = (s > 0.5).astype(int)
    w = rng.uniform(0.5, 2.0, n)
    return y, yhat, s, a, b, w


PAIRS = [
    ("demographic_parity_difference", flm.demographic_parity_difference),
    ("demographic_parity_ratio", flm.demographic_parity_ratio),
    ("equalized_odds_difference", flm.equalized_odds_difference),
    ("equalized_odds_ratio", flm.equalized_odds_ratio),
    ("equal_opportunity_difference", flm.equal_opportunity_difference),
]


@pytest.mark.parametrize("name,ref", PAIRS, ids=[p[0] for p in PAIRS])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("intersectional", [False, True])
def test_group_metrics_match_fairlearn(preds, name, ref, weighted, intersectional):
    y, yhat, _, a, b, w = preds
    sf = np.column_stack([a, b.astype(str)]) if intersectional else a
    sw = w if weighted else None
    ours = getattr(metrics, name)(y, yhat, sensitive_features=sf, sample_weight=sw)
    theirs = ref(y, yhat, sensitive_features=sf, sample_weight=sw)
    assert ours == pytest.approx(theirs, abs=ATOL)


def test_rates_match_fairlearn(preds):
    y, yhat, _, a, _, w = preds
    for name in ("selection_rate", "true_positive_rate", "false_positive_rate", "false_negative_rate"):
        assert getattr(metrics, name)(y, yhat, sample_weight=w) == pytest.approx(
            getattr(flm, name)(y, yhat, sample_weight=w), abs=ATOL)


def test_by_group_matches_metricframe(preds):
    y, yhat, _, a, _, _ = preds
    mf = flm.MetricFrame(metrics={"selection_rate": flm.selection_rate, "true_positive_rate": flm.true_positive_rate,
                                  "false_positive_rate": flm.false_positive_rate},
                         y_true=y, y_pred=yhat, sensitive_features=a)
    table = metrics.by_group(y, yhat, sensitive_features=a)
    for g in ("f", "m", "x"):
        for k in ("selection_rate", "true_positive_rate", "false_positive_rate"):
            assert table.by_group[g][k] == pytest.approx(mf.by_group.loc[g, k], abs=ATOL)
    assert table.difference()["selection_rate"] == pytest.approx(mf.difference()["selection_rate"], abs=ATOL)
    assert list(table.to_frame().index) == ["f", "m", "x"]


def test_accuracy_equality_and_worst_group(preds):
    y, yhat, _, a, _, _ = preds
    mf = flm.MetricFrame(metrics=lambda t, p: np.mean(t == p), y_true=y, y_pred=yhat, sensitive_features=a)
    assert metrics.accuracy_equality_difference(y, yhat, sensitive_features=a) == pytest.approx(mf.difference(), abs=ATOL)
    cells = [np.mean(yhat[(a == g) & (y == c)] == c) for g in ("f", "m", "x") for c in (0, 1)]
    assert metrics.worst_cell_accuracy(y, yhat, sensitive_features=a) == pytest.approx(min(cells), abs=ATOL)


def test_max_min_fairness_is_over_sensitive_groups_only(preds):
    """The seed's MMF is min_g accuracy_g (groups only); the (label, group) cell version is another metric."""
    y, yhat, _, a, _, _ = preds
    mf = flm.MetricFrame(metrics=lambda t, p: np.mean(t == p), y_true=y, y_pred=yhat, sensitive_features=a)
    assert metrics.worst_group_accuracy(y, yhat, sensitive_features=a) == pytest.approx(mf.group_min(), abs=ATOL)
    assert metrics.max_min_fairness is metrics.worst_group_accuracy
    # on this data the worst cell (0.72) is worse than the worst group (0.76): the two names differ
    assert metrics.worst_cell_accuracy(y, yhat, sensitive_features=a) < metrics.worst_group_accuracy(
        y, yhat, sensitive_features=a) - 0.02
    out = metrics.evaluate(y, yhat, sensitive_features=a)
    assert out["worst_group_accuracy"] == pytest.approx(mf.group_min(), abs=ATOL)
    assert out["worst_cell_accuracy"] < out["worst_group_accuracy"]


@pytest.fixture()
def no_positives_in_one_group():
    """Group 'b' has no y=1 (undefined TPR/FNR) and group 'c' no y=0 (undefined FPR)."""
    y = np.array([1, 1, 0, 0, 0, 0, 0, 1, 1, 1])
    yhat = np.array([1, 0, 0, 1, 0, 1, 0, 1, 0, 1])
    a = np.array(["a", "a", "a", "a", "b", "b", "b", "c", "c", "c"])
    return y, yhat, a


@pytest.mark.parametrize("name", ["equal_opportunity_difference", "equal_opportunity_ratio",
                                  "equalized_odds_difference", "equalized_odds_ratio",
                                  "demographic_parity_difference", "true_positive_rate_by_group",
                                  "false_positive_rate_by_group", "false_negative_rate_by_group"])
def test_undefined_rates_match_fairlearn(no_positives_in_one_group, name):
    """An undefined rate counts as 0, as in fairlearn: TPR 0.5 vs an empty group gives a gap of 0.5, not 0."""
    y, yhat, a = no_positives_in_one_group
    if name.endswith("_by_group"):
        rate = name[: -len("_by_group")]
        mf = flm.MetricFrame(metrics=getattr(flm, rate), y_true=y, y_pred=yhat, sensitive_features=a)
        table = metrics.by_group(y, yhat, sensitive_features=a)
        for g in ("a", "b", "c"):
            assert table.by_group[g][rate] == pytest.approx(mf.by_group[g], abs=ATOL)
        return
    ours = getattr(metrics, name)(y, yhat, sensitive_features=a)
    theirs = getattr(flm, name)(y, yhat, sensitive_features=a)
    assert ours == pytest.approx(theirs, abs=ATOL)


def test_undefined_rates_are_named(no_positives_in_one_group):
    y, yhat, a = no_positives_in_one_group
    # TPRs: a 1/2, c 2/3, b undefined -> 0 (dropping b would give 1/6)
    assert metrics.equal_opportunity_difference(y, yhat, sensitive_features=a) == pytest.approx(2 / 3, abs=ATOL)
    table = metrics.by_group(y, yhat, sensitive_features=a)
    assert table.undefined() == {"true_positive_rate": ("b",), "false_negative_rate": ("b",),
                                 "false_positive_rate": ("c",)}
    notes = metrics.undefined_rates(y, sensitive_features=a)
    assert len(notes) == 2 and "'b'" in notes[0] and "y=1" in notes[0] and "'c'" in notes[1]
    assert metrics.undefined_rates(np.array([0, 1, 0, 1]), sensitive_features=np.array([0, 0, 1, 1])) == []


def test_auc_ece_and_evaluate(preds):
    y, yhat, s, a, _, w = preds
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=ATOL)
    assert metrics.roc_auc(y, s, sample_weight=w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-10)
    perfect = metrics.expected_calibration_error(np.array([0, 1, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0]))
    assert perfect == 0.0
    out = metrics.evaluate(y, yhat, sensitive_features=a, y_score=s)
    assert set(out) >= {"accuracy", "balanced_accuracy", "roc_auc", "demographic_parity_difference",
                        "equalized_odds_difference", "worst_group_accuracy", "expected_calibration_error"}
    assert all(isinstance(v, float) for v in out.values())
    from solvers import intervals

    gap = intervals.gap_interval(y, yhat, sensitive_features=a, gap="dp")
    assert gap.low <= out["demographic_parity_difference"] <= gap.high
    assert gap.estimate == pytest.approx(out["demographic_parity_difference"], abs=ATOL)


def test_evaluate_reads_every_binary_parity_metric_from_one_table_with_the_functions_values():
    """``evaluate`` builds one by-group table for the binary metrics (a sweep calls it per head and
    split); each value must equal its own function's, NaN and undefined rates included."""
    rng = np.random.default_rng(0)
    functions = {name: getattr(metrics, name) for name in (
        "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
        "equalized_odds_ratio", "equal_opportunity_difference", "accuracy_equality_difference",
        "worst_group_accuracy", "worst_cell_accuracy")}
    for trial in range(60):
        n, G = int(rng.integers(5, 120)), int(rng.integers(2, 5))
        y, p, a = rng.integers(0, 2, n), rng.integers(0, 2, n), rng.integers(0, G, n)
        if trial % 3 == 0:
            y[a == 0] = 1  # group 0 has no negatives: its FPR is undefined
        w = rng.random(n) if trial % 2 else None
        got = metrics.evaluate(y, p, sensitive_features=a, sample_weight=w)
        for name, fn in functions.items():
            want = fn(y, p, sensitive_features=a, sample_weight=w)
            assert got[name] == want or (np.isnan(got[name]) and np.isnan(want)), (trial, name)


@pytest.mark.parametrize("weighted", [False, True])
def test_by_group_table_equals_each_rate_on_its_group_rows(preds, weighted):
    """by_group reads every group's rates from one bincount of (group, y, yhat, hit) cells: the
    values are the scalar functions' on each group's rows (bit for bit with unit weights, where
    every sum is an integer; to rounding of a float64 sum in another order with weights), and
    the counts behind the intervals are the rows' own."""
    from solvers.intervals import GroupCounts

    y, yhat, _, a, _, w = preds
    sw = w if weighted else None
    table = metrics.by_group(y, yhat, sensitive_features=a, sample_weight=sw)
    for g in np.unique(a):
        m = a == g
        gw = None if sw is None else sw[m]
        want = {"selection_rate": metrics.selection_rate(y[m], yhat[m], sample_weight=gw),
                "true_positive_rate": metrics.true_positive_rate(y[m], yhat[m], sample_weight=gw),
                "false_positive_rate": metrics.false_positive_rate(y[m], yhat[m], sample_weight=gw),
                "false_negative_rate": metrics.false_negative_rate(y[m], yhat[m], sample_weight=gw),
                "accuracy": metrics.accuracy(y[m], yhat[m], sample_weight=gw), "count": int(m.sum())}
        got = table.by_group[g]
        if weighted:
            assert got == pytest.approx(want, rel=1e-13, abs=0)
        else:
            assert got == want
    counts = GroupCounts.from_predictions(y, yhat, sensitive_features=a).counts
    for g in np.unique(a):
        t, p = y[a == g], yhat[a == g]
        assert counts[g] == {"selection_rate": (p.sum(), t.size), "true_positive_rate": ((p * t).sum(), t.sum()),
                             "false_positive_rate": ((p * (1 - t)).sum(), (1 - t).sum()),
                             "accuracy": ((p == t).sum(), t.size)}
