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
    """K classes whose shares differ by group (so an unconstrained head violates parity per class)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_groups, n)
    logits = rng.normal(size=(n, K)) + 1.2 * np.eye(K)[(a * 2) % K]  # group g leans to class 2g mod K
    y = np.array([rng.choice(K, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    X = rng.normal(size=(n, d))
    X[:, :K] += 1.5 * np.eye(K)[y]
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
