"""K-class (multinomial) heads: scikit-learn equivalence, both backends, score and rate constraints."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from solvers import FairLogisticRegression
from solvers.errors import DataError

# unconstrained vs scikit-learn: the same strictly convex problem, both solved to ~1e-10 (sklearn's
# lbfgs stops at ~1e-8 in the coefficients even at tol=1e-12)
COEF_ATOL = 1e-6
# torch vs cvxpy: the same optimum (Clarabel's gap 1e-9, torch's KKT tol 1e-10)
OBJ_RTOL = 1e-6
# constraints satisfied to this (both backends, float64)
VIOL_ATOL = 1e-6
TIGHT = dict(tol=1e-10, max_iter=20000)


def make_multiclass(n=600, d=6, K=3, n_groups=2, seed=0, dtype=np.float64):
    """K classes whose shares and separability differ by group (so an unconstrained head violates
    parity and equalized odds per class)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_groups, n)
    logits = rng.normal(size=(n, K)) + 1.2 * np.eye(K)[(a * 2) % K]  # group g leans to class 2g mod K
    y = np.array([rng.choice(K, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    X = rng.normal(size=(n, d))
    X[:, :K] += 1.5 * np.eye(K)[y] * (1.0 - 0.3 * a)[:, None]  # weaker class signal in later groups: TPR gaps
    X[:, K] += 0.8 * a
    return X.astype(dtype), y, a


@pytest.fixture(scope="module")
def mc_problem():
    return make_multiclass()


@pytest.mark.parametrize("backend", ["torch", "cvxpy"])
@pytest.mark.parametrize("C", [0.1, 10.0])
def test_unconstrained_equals_sklearn_multinomial(mc_problem, backend, C):
    X, y, _ = mc_problem
    sk = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(X, y)
    clf = FairLogisticRegression(C=C, backend=backend, **TIGHT).fit(X, y)
    assert clf.coef_.shape == (3, X.shape[1]) and clf.intercept_.shape == (3,)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=COEF_ATOL)
    np.testing.assert_allclose(clf.intercept_, sk.intercept_, atol=COEF_ATOL)
    np.testing.assert_allclose(clf.predict_proba(X), sk.predict_proba(X), atol=COEF_ATOL)
    assert clf.certificate_.status == "optimal"
    # identifiability: the L2 penalty centres W, and the intercepts are fixed to sum to 0
    assert np.abs(clf.coef_.sum(axis=0)).max() < 1e-9 and abs(clf.intercept_.sum()) < 1e-9


def test_sample_weight_and_string_classes_match_sklearn(mc_problem):
    X, y, _ = mc_problem
    w = np.random.default_rng(1).uniform(0.2, 3.0, size=y.shape[0])
    names = np.array(["cat", "dog", "emu"])[y]
    sk = LogisticRegression(tol=1e-12, max_iter=100000).fit(X, names, sample_weight=w)
    clf = FairLogisticRegression(backend="torch", **TIGHT).fit(X, names, sample_weight=w)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=COEF_ATOL)
    assert clf.decision_function(X).shape == (X.shape[0], 3)
    np.testing.assert_array_equal(clf.predict(X), sk.predict(X))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), clf.predict_proba(X), rtol=1e-12)


def test_no_intercept_and_float32(mc_problem):
    X, y, _ = mc_problem
    sk = LogisticRegression(fit_intercept=False, tol=1e-12, max_iter=100000).fit(X, y)
    clf = FairLogisticRegression(fit_intercept=False, backend="torch", **TIGHT).fit(X, y)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=COEF_ATOL)
    assert np.all(clf.intercept_ == 0.0)
    # float32 features: float32 products, the same head to float32 rounding
    h32 = FairLogisticRegression(backend="torch", tol=1e-6).fit(X.astype(np.float32), y)
    h64 = FairLogisticRegression(backend="torch", **TIGHT).fit(X, y)
    np.testing.assert_allclose(h32.coef_, h64.coef_, atol=1e-4)


def test_binary_only_constraints_and_penalties_refused(mc_problem):
    X, y, a = mc_problem
    for name in ("cov", "group-loss", "minimax", "error-rate"):
        with pytest.raises(DataError, match=f"'{name}' is defined for binary labels only.*3 classes.*pick one of"):
            FairLogisticRegression(constraint=name).fit(X, y, sensitive_features=a)
    with pytest.raises(DataError, match="penalty='l1' is not available .* 3 classes.*pass penalty='l2'"):
        FairLogisticRegression(penalty="l1").fit(X, y)


def test_deterministic(mc_problem):
    X, y, a = mc_problem
    heads = [FairLogisticRegression(constraint="dp-score", eps=0.05, backend="torch").fit(X, y, sensitive_features=a)
             for _ in range(2)]
    np.testing.assert_array_equal(heads[0].coef_, heads[1].coef_)
    np.testing.assert_array_equal(heads[0].intercept_, heads[1].intercept_)


# ----------------------------------------------------------------------------- score constraints per class
SCORE_CASES = [
    # constraint, eps, K, groups
    ("dp-score", 0.1, 3, 2),
    ("dp-score", 0.0, 4, 3),
    ("eopp-score", 0.05, 3, 2),
    ("eo-score", 0.05, 4, 3),
    ("eo-score", 0.0, 3, 2),
]


def _class_gaps(z, y, a, event):
    """max over (class k, group g, event E) of |mean_{g,E} z_k - mean_E z_k|, written out directly."""
    K = z.shape[1]
    gaps = []
    for k in range(K):
        events = {"all": [np.ones_like(y, dtype=bool)], "y=k": [y == k], "both": [y == k, y != k]}[event]
        for e in events:
            for g in np.unique(a):
                gaps.append(abs(z[e & (a == g), k].mean() - z[e, k].mean()))
    return max(gaps)


@pytest.mark.parametrize("constraint,eps,K,G", SCORE_CASES, ids=[f"{c}-{e}-K{k}-G{g}" for c, e, k, g in SCORE_CASES])
def test_score_constraints_torch_agrees_with_cvxpy(constraint, eps, K, G):
    X, y, a = make_multiclass(400, 5, K=K, n_groups=G, seed=K + G)
    heads = {b: FairLogisticRegression(constraint=constraint, eps=eps, backend=b, **TIGHT).fit(X, y, sensitive_features=a)
             for b in ("cvxpy", "torch")}
    c, t = heads["cvxpy"].certificate_, heads["torch"].certificate_
    assert t.status == "optimal" and c.status == "optimal"
    assert abs(c.objective - t.objective) <= OBJ_RTOL * abs(c.objective)
    event = {"dp-score": "all", "eopp-score": "y=k", "eo-score": "both"}[constraint]
    free = FairLogisticRegression(**TIGHT).fit(X, y)
    assert _class_gaps(free.decision_function(X), y, a, event) > eps + 0.05  # the bound is active
    for head in heads.values():
        assert head.certificate_.max_violation <= VIOL_ATOL
        # the bounded quantity, recomputed from the fitted logits (centred: rows sum to 0)
        z = head.decision_function(X)
        np.testing.assert_allclose(z.sum(axis=1), 0.0, atol=1e-8)
        assert _class_gaps(z, y, a, event) <= eps + VIOL_ATOL


@pytest.mark.parametrize("backend", ["torch", "cvxpy"])
def test_score_path_matches_cold_solves(backend):
    from solvers import fit_path

    X, y, a = make_multiclass(400, 5, K=3, seed=5)
    grid = [0.3, 0.1, 0.02, 0.0]
    path = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="eo-score", backend=backend, **TIGHT)
    for eps, head in zip(grid, path):
        cold = FairLogisticRegression(constraint="eo-score", eps=eps, backend="cvxpy", **TIGHT)
        cold.fit(X, y, sensitive_features=a)
        assert abs(head.certificate_.objective - cold.certificate_.objective) <= OBJ_RTOL * cold.certificate_.objective


def test_cvxpy_multiclass_model_is_dpp_and_resolves(mc_problem):
    from solvers.backends.cvxpy_softmax import CvxpySoftmaxModel
    from solvers.constraints import DemographicParityScore
    from solvers.problem import build_problem

    X, y, a = mc_problem
    problem = build_problem(X, y.astype(float), a, n_classes=3)
    cons = DemographicParityScore()
    form = cons.linear_form(X, problem.y, problem.groups, problem.sample_weight, problem.group_labels, n_classes=3)
    model = CvxpySoftmaxModel(problem, cons, C=1.0, penalty="l2", l1_ratio=None, fit_intercept=True, linear_form=form)
    assert model.is_dpp()
    model.solve(0.2, tol=1e-10)
    again = model.solve(0.05, tol=1e-10)
    fresh = CvxpySoftmaxModel(problem, cons, C=1.0, penalty="l2", l1_ratio=None, fit_intercept=True,
                              linear_form=form).solve(0.05, tol=1e-10)
    np.testing.assert_allclose(again.coef, fresh.coef, atol=1e-6)


# ----------------------------------------------------------------------------- metrics for K classes
# the same counts in the same order: fairlearn's numbers to rounding
METRIC_ATOL = 1e-12


@pytest.mark.parametrize("weighted", [False, True], ids=["unit", "weighted"])
def test_metrics_equal_fairlearn_class_by_class(weighted):
    fm = pytest.importorskip("fairlearn.metrics")
    from solvers import metrics

    X, y, a = make_multiclass(600, 6, K=4, n_groups=3, seed=2)
    head = FairLogisticRegression(backend="torch").fit(X, y)
    pred = head.predict(X)
    w = np.random.default_rng(3).uniform(0.5, 2.0, y.shape[0]) if weighted else None
    kw = dict(sensitive_features=a, sample_weight=w)
    per_class = metrics.per_class_differences(y, pred, **kw)
    for k in range(4):
        yt, yp = (y == k).astype(int), (pred == k).astype(int)
        want = {"demographic_parity_difference": fm.demographic_parity_difference(yt, yp, **kw),
                "equal_opportunity_difference": fm.equal_opportunity_difference(yt, yp, **kw),
                "equalized_odds_difference": fm.equalized_odds_difference(yt, yp, **kw)}
        for name, value in want.items():
            assert abs(per_class[k][name] - value) <= METRIC_ATOL, (k, name)
    out = metrics.evaluate(y, pred, y_score=head.predict_proba(X), classes=head.classes_, **kw)
    for name in ("demographic_parity_difference", "equal_opportunity_difference", "equalized_odds_difference"):
        assert out[name] == max(per_class[k][name] for k in range(4))
        assert 0 < out[name] < 1
    ratio = min(fm.demographic_parity_ratio((y == k).astype(int), (pred == k).astype(int), **kw) for k in range(4))
    assert abs(out["demographic_parity_ratio"] - ratio) <= METRIC_ATOL
    assert "selection_rate" not in out  # a binary notion


def test_multiclass_summary_metrics_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from solvers import metrics

    X, y, a = make_multiclass(600, 6, K=4, n_groups=3, seed=2)
    head = FairLogisticRegression(backend="torch").fit(X, y)
    pred, proba = head.predict(X), head.predict_proba(X)
    out = metrics.evaluate(y, pred, y_score=proba, sensitive_features=a, classes=head.classes_)
    assert abs(out["balanced_accuracy"] - balanced_accuracy_score(y, pred)) <= METRIC_ATOL
    assert abs(out["roc_auc"] - roc_auc_score(y, proba, multi_class="ovr")) <= 1e-10
    # a split without class 3 is still read as 4-class when classes are given
    keep = y != 3
    sub = metrics.evaluate(y[keep], pred[keep], sensitive_features=a[keep], classes=head.classes_)
    assert "selection_rate" not in sub
    notes = metrics.undefined_rates(y[keep], sensitive_features=a[keep], classes=head.classes_)
    assert any(n.startswith("true_positive_rate of class 3 in group") for n in notes)


# ----------------------------------------------------------------------------- rate constraints per class
def _bounded_rate_gap(pred, y, a, constraint):
    """max over (class k, group g, event E) of |P(yhat=k | g, E) - P(yhat=k | E)|, written out directly."""
    gaps = []
    for k in np.unique(y):
        events = {"dp": [np.ones_like(y, dtype=bool)], "eopp": [y == k], "eo": [y == k, y != k]}[constraint]
        for e in events:
            for g in np.unique(a):
                gaps.append(abs((pred[e & (a == g)] == k).mean() - (pred[e] == k).mean()))
    return max(gaps)


RATE_CASES = [
    # constraint, eps, K, groups
    ("dp", 0.05, 3, 2),
    ("dp", 0.03, 4, 3),
    ("eo", 0.05, 3, 2),
    ("eo", 0.08, 3, 3),
    ("eopp", 0.05, 4, 2),
]


@pytest.mark.parametrize("constraint,eps,K,G", RATE_CASES, ids=[f"{c}-{e}-K{k}-G{g}" for c, e, k, g in RATE_CASES])
def test_rate_bound_met_on_the_fit_split(constraint, eps, K, G):
    X, y, a = make_multiclass(1500, 8, K=K, n_groups=G, seed=10 + K + G)
    free = FairLogisticRegression().fit(X, y)
    assert _bounded_rate_gap(free.predict(X), y, a, constraint) > eps + 0.02  # the bound is active
    head = FairLogisticRegression(constraint=constraint, eps=eps).fit(X, y, sensitive_features=a)
    cert = head.certificate_
    assert cert.eps_met and cert.status == "eps_met" and cert.max_violation == 0.0
    pred = head.predict(X)
    gap = _bounded_rate_gap(pred, y, a, constraint)
    assert gap <= eps and abs(gap - cert.achieved_gap) <= 1e-12
    assert abs(cert.zero_one_error - (pred != y).mean()) <= 1e-12
    assert head.coef_.shape == (K, 8) and len(cert.multipliers) == len(np.unique(a)) * K * (2 if constraint == "eo" else 1)
    # one deterministic head: the same inputs give the same bits
    again = FairLogisticRegression(constraint=constraint, eps=eps).fit(X, y, sensitive_features=a)
    np.testing.assert_array_equal(again.coef_, head.coef_)


def test_rate_path_is_monotone_and_reports_unmet():
    from solvers import fit_path

    X, y, a = make_multiclass(1500, 8, K=3, n_groups=2, seed=11)
    grid = [0.1, 0.05, 0.02, 0.0]
    with pytest.warns(Warning, match="no head on the multiplier path meets dp eps=0"):
        path = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp")
    gaps = [h.certificate_.achieved_gap for h in path]
    assert all(h.certificate_.eps_met for h in path[:3])
    assert path[3].certificate_.eps_met is False  # eps = 0 is below the resolution here
    assert gaps[2] <= 0.02 and all(g1 >= g2 - 1e-12 or g2 <= e for g1, g2, e in zip(gaps, gaps[1:], grid[1:]))


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_and_exports_give_the_same_scores(mc_problem, tmp_path, suffix):
    import torch

    from solvers import load_head, save_head
    from solvers.export import to_sklearn, to_torch_linear

    X, y, a = mc_problem
    head = FairLogisticRegression(constraint="dp", eps=0.1).fit(X, np.array(["cat", "dog", "emu"])[y],
                                                                   sensitive_features=a)
    loaded = load_head(save_head(head, tmp_path / f"head{suffix}"))
    np.testing.assert_array_equal(loaded.decision_function(X), head.decision_function(X))
    assert list(loaded.classes_) == ["cat", "dog", "emu"] and loaded.certificate_ == head.certificate_
    sk = to_sklearn(loaded)
    np.testing.assert_allclose(sk.predict_proba(X), head.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(sk.predict(X), head.predict(X))
    linear = to_torch_linear(loaded)
    np.testing.assert_allclose(linear(torch.from_numpy(X)).numpy(), head.decision_function(X), rtol=0, atol=1e-12)
