"""Score constraints: sklearn equivalence, torch vs cvxpy agreement, edge cases."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from solvers import FairLogisticRegression
from solvers.synthetic import make_fair_classification

# inactive bound vs scikit-learn: both solve the same strictly convex problem to ~1e-10
COEF_ATOL = 1e-5
# torch vs cvxpy: the same optimum; Clarabel's gap tolerance is 1e-9, torch's KKT tol 1e-10
OBJ_RTOL = 1e-6
# constraints satisfied to this (both backends, float64)
VIOL_ATOL = 1e-6
TIGHT = dict(tol=1e-10, max_iter=20000)

SCORE_CASES = [
    # constraint, eps
    ("dp-score", 0.05),
    ("dp-score", 0.0),
    ("eopp-score", 0.02),
    ("eo-score", 0.02),
    ("cov", 0.01),
    ("group-loss", 0.55),
    ("minimax", 0.0),
]


def _sklearn(X, y, C=1.0, sample_weight=None):
    return LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
@pytest.mark.parametrize("C", [0.1, 10.0])
def test_inactive_bound_equals_sklearn(small_problem, backend, C):
    X, y, a = small_problem
    sk = _sklearn(X, y, C)
    clf = FairLogisticRegression(constraint="dp-score", eps=100.0, C=C, backend=backend, **TIGHT)
    clf.fit(X, y, sensitive_features=a)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=COEF_ATOL)
    np.testing.assert_allclose(clf.intercept_, sk.intercept_, atol=COEF_ATOL)
    assert clf.certificate_.status == "optimal"


def test_sample_weight_matches_sklearn(small_problem):
    X, y, a = small_problem
    w = np.random.default_rng(1).uniform(0.2, 3.0, size=y.shape[0])
    sk = _sklearn(X, y, 1.0, sample_weight=w)
    clf = FairLogisticRegression(backend="torch", **TIGHT).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=COEF_ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("constraint,eps", SCORE_CASES, ids=[f"{c}-{e}" for c, e in SCORE_CASES])
def test_torch_agrees_with_cvxpy(constraint, eps, seed):
    X, y, a = make_fair_classification(400, 5, n_groups=2 + seed % 2, seed=seed)
    certs = {}
    for backend in ("cvxpy", "torch"):
        clf = FairLogisticRegression(constraint=constraint, eps=eps, backend=backend, **TIGHT)
        clf.fit(X, y, sensitive_features=a)
        certs[backend] = clf.certificate_
        assert clf.certificate_.max_violation <= VIOL_ATOL
    c, t = certs["cvxpy"], certs["torch"]
    assert abs(c.objective - t.objective) <= OBJ_RTOL * abs(c.objective)
    assert t.status == "optimal", t


def test_constraint_is_active_and_moves_the_head(small_problem):
    X, y, a = small_problem
    free = FairLogisticRegression(backend="torch").fit(X, y)
    fair = FairLogisticRegression(constraint="dp-score", eps=0.0, backend="torch").fit(X, y, sensitive_features=a)
    z = fair.decision_function(X)
    means = [z[a == g].mean() for g in (0, 1)]
    assert abs(means[0] - means[1]) < 1e-5
    assert fair.certificate_.objective > free.certificate_.objective
    assert max(abs(m) for m in fair.certificate_.multipliers) > 0


def test_single_active_among_many():
    # 5 groups, loose bound: only the most extreme group's row should bind
    X, y, a = make_fair_classification(1500, 6, n_groups=5, base_rates=[0.3, 0.4, 0.45, 0.5, 0.9], seed=4)
    cl = FairLogisticRegression(constraint="dp-score", eps=0.6, backend="torch", **TIGHT).fit(X, y, sensitive_features=a)
    cc = FairLogisticRegression(constraint="dp-score", eps=0.6, backend="cvxpy", **TIGHT).fit(X, y, sensitive_features=a)
    active = np.flatnonzero(np.abs(cl.certificate_.multipliers) > 1e-8)
    assert len(active) == 1
    assert abs(cl.certificate_.objective - cc.certificate_.objective) <= OBJ_RTOL * cc.certificate_.objective


def test_separable_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] > 0).astype(int)
    a = rng.integers(0, 2, 300)
    objs = []
    for backend in ("cvxpy", "torch"):
        # weak regularisation on separable data: large coefficients, a hard conditioning case
        clf = FairLogisticRegression(constraint="dp-score", eps=0.1, C=100.0, backend=backend, **TIGHT)
        clf.fit(X, y, sensitive_features=a)
        assert clf.score(X, y) > 0.85
        objs.append(clf.certificate_.objective)
    assert abs(objs[0] - objs[1]) <= OBJ_RTOL * objs[0]


def test_constant_and_duplicated_columns(small_problem):
    X, y, a = small_problem
    X2 = np.hstack([X, np.ones((X.shape[0], 1)), X[:, :2]])
    objs = []
    for backend in ("cvxpy", "torch"):
        clf = FairLogisticRegression(constraint="dp-score", eps=0.02, backend=backend, **TIGHT)
        clf.fit(X2, y, sensitive_features=a)
        objs.append(clf.certificate_.objective)
        # duplicated columns share their weight equally under L2
        np.testing.assert_allclose(clf.coef_[0, 0], clf.coef_[0, -2], atol=1e-6)
    assert abs(objs[0] - objs[1]) <= OBJ_RTOL * objs[0]


def test_float16_input_close_to_float64(small_problem):
    X, y, a = small_problem
    X16 = X.astype(np.float16)
    ref = FairLogisticRegression(constraint="dp-score", eps=0.02, backend="cvxpy", **TIGHT)
    ref.fit(X16.astype(np.float64), y, sensitive_features=a)
    h = FairLogisticRegression(constraint="dp-score", eps=0.02, backend="torch", tol=1e-6).fit(X16, y, sensitive_features=a)
    # float32 accumulation of float16 data: objective to ~1e-6 relative
    assert abs(h.certificate_.objective - ref.certificate_.objective) <= 1e-5 * ref.certificate_.objective
    assert h.certificate_.max_violation <= 1e-5


def test_no_intercept(small_problem):
    X, y, a = small_problem
    objs = []
    for backend in ("cvxpy", "torch"):
        clf = FairLogisticRegression(constraint="eo-score", eps=0.01, backend=backend, fit_intercept=False, **TIGHT)
        clf.fit(X, y, sensitive_features=a)
        assert clf.intercept_[0] == 0.0
        objs.append(clf.certificate_.objective)
    assert abs(objs[0] - objs[1]) <= OBJ_RTOL * objs[0]


def test_l1_penalty_cvxpy_matches_sklearn(small_problem):
    X, y, a = small_problem
    sk = LogisticRegression(C=0.05, l1_ratio=1.0, solver="liblinear", tol=1e-8, max_iter=100000,
                            intercept_scaling=1e4, random_state=0).fit(X, y)
    clf = FairLogisticRegression(penalty="l1", C=0.05, backend="cvxpy", tol=1e-10).fit(X, y)
    np.testing.assert_allclose(clf.coef_, sk.coef_, atol=1e-3)  # liblinear penalises a scaled intercept
    assert clf.certificate_.status == "optimal" and clf.certificate_.stationarity < 1e-6
    assert np.sum(np.abs(clf.coef_) < 1e-7) >= 1  # the l1 penalty zeroes some coefficients


def test_minimax_label_group_cells(small_problem):
    from solvers.constraints import MinimaxLoss

    X, y, a = small_problem
    objs = []
    for backend in ("cvxpy", "torch"):
        clf = FairLogisticRegression(constraint=MinimaxLoss(cells="label-group"), backend=backend, **TIGHT)
        clf.fit(X, y, sensitive_features=a)
        objs.append(clf.certificate_.objective)
        assert len(clf.certificate_.multipliers) == 4
    assert abs(objs[0] - objs[1]) <= OBJ_RTOL * objs[0]


def test_eps_zero_float32_not_over_constrained():
    # two groups: the +/- rows of both groups are dependent; float32 data must not make them independent
    X, y, a = make_fair_classification(2000, 16, embedding_like=True, dtype=np.float32, seed=2)
    ref = FairLogisticRegression(constraint="dp-score", eps=0.0, backend="cvxpy", **TIGHT)
    ref.fit(X.astype(np.float64), y, sensitive_features=a)
    h = FairLogisticRegression(constraint="dp-score", eps=0.0, backend="torch", tol=1e-7).fit(X, y, sensitive_features=a)
    # float32 products: objective to ~1e-6 relative
    assert abs(h.certificate_.objective - ref.certificate_.objective) <= 1e-6 * ref.certificate_.objective
