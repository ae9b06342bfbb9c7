"""The backend contract (solvers.backends): one registry, prepare once / solve per bound, the
shared pieces of backends/common.py, the typed warm state and its adaptation for the rate search."""

import dataclasses
import inspect
import re

import numpy as np
import pytest

import solvers.head
import solvers.path_fitter
import solvers.path
from solvers import FairLogisticRegression, fit_path
from solvers.backends import BACKENDS, FitParams, WarmStart, get_backend
from solvers.backends.common import (MSG_PENALTY, MSG_PENALTY_MULTICLASS, center_rows, check_penalty, condition,
                                     constraint_pieces, scaled_rows, unit_rows)
from solvers.constraints import DemographicParityScore
from solvers.errors import DataError
from solvers.problem import build_problem
from solvers.synthetic import make_fair_classification


@pytest.fixture(scope="module")
def data():
    return make_fair_classification(300, 5, seed=11)


def _multiclass(n=300, d=4, K=3, seed=5):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    y = (rng.integers(0, K, n) + a) % K
    X = rng.normal(size=(n, d))
    X[:, :K] += 1.2 * np.eye(K)[y]
    return X, y, a


@pytest.mark.parametrize("name", ["torch", "cvxpy"])
@pytest.mark.parametrize("K", [2, 3])
def test_the_registry_gives_each_backend_and_head_kind_one_class(name, K):
    cls = get_backend(name, K)
    assert BACKENDS[(name, K > 2)].endswith(":" + cls.__name__)
    X, y, a = _multiclass() if K > 2 else make_fair_classification(300, 5, seed=11)
    problem = build_problem(X, y.astype(float), a, None, n_classes=K)
    params = FitParams(tol=1e-8, max_iter=5000)
    model = cls.prepare(problem, DemographicParityScore(), params)
    built = model.prob if name == "cvxpy" else model.design
    loose, tight = model.solve(0.2), model.solve(0.02)
    assert (model.prob if name == "cvxpy" else model.design) is built  # built once, solved per bound
    assert tight.multipliers.shape == (model.linear_form.A.shape[0],) and tight.multipliers.max() > 0
    assert loose.coef.shape == ((K, X.shape[1]) if K > 2 else (X.shape[1],))
    # the contract's head is the estimator's (which calls nothing else)
    est = FairLogisticRegression(constraint="dp-score", eps=0.02, backend=name, tol=1e-8, max_iter=5000)
    est.fit(X, y, sensitive_features=a)
    fresh = cls.prepare(problem, DemographicParityScore(), params).solve(0.02)
    np.testing.assert_array_equal(est.coef_.reshape(np.shape(fresh.coef)), fresh.coef)


def test_an_unknown_backend_is_one_line_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"no backend named 'jax' \(known: cvxpy, torch\)"):
        get_backend("jax")


def test_a_path_prepares_its_backend_once(data, monkeypatch):
    X, y, a = data
    calls = []

    def counting(name, n_classes=2):
        cls = get_backend(name, n_classes)
        calls.append(name)
        return cls

    for module in (solvers.head, solvers.path_fitter):  # a single fit's and a path's
        monkeypatch.setattr(module, "get_backend", counting)
    for backend in ("torch", "cvxpy"):
        calls.clear()
        heads = fit_path(X, y, sensitive_features=a, eps_grid=[0.2, 0.1, 0.05, 0.02], constraint="dp-score",
                         backend=backend, tol=1e-8)
        assert calls == [backend] and len(heads) == 4


def test_iter_path_reaches_no_private_part_of_the_estimator():
    source = inspect.getsource(solvers.path)
    assert not re.search(r"\._(prepare|set_fitted|solver_state|report|warm_init|fit_score)\b", source)


def test_the_warm_state_is_typed_and_chains_a_path(data):
    X, y, a = data
    heads = fit_path(X, y, sensitive_features=a, eps_grid=[0.2, 0.1, 0.05], constraint="dp-score", backend="torch")
    warm = heads[-1]._solver_state
    assert isinstance(warm, WarmStart) and warm.eps == 0.05 and warm.rate is None
    assert [entry[1] for entry in warm.prev] == [0.2, 0.1]  # the extrapolation chain
    assert warm.theta.shape == (X.shape[1] + 1,) and warm.z.shape == (X.shape[0],)
    rate = FairLogisticRegression(constraint="dp", eps=0.05, backend="torch").fit(X, y, sensitive_features=a)
    state = rate._solver_state
    assert isinstance(state, WarmStart) and state.rate.lam is not None
    assert state.rate.theta is None and state.rate.pairs is None  # the shared fields are not duplicated


def test_the_rate_adaptation_round_trips_the_search_state():
    from solvers.rate_search_types import RateWarmStart, head_warm_start, rate_warm_start

    pairs = ([np.ones(3)], [np.ones(3)], [])
    searched = RateWarmStart(theta=np.arange(3.0), pairs=pairs, lam=np.array([0.5]), gaps=np.array([0.1]))
    warm = head_warm_start(searched)
    assert warm.theta is searched.theta and warm.pairs is pairs and warm.rate.lam is searched.lam
    assert warm.rate.theta is None and warm.rate.pairs is None
    view = rate_warm_start(dataclasses.replace(warm, eps=0.05))
    assert view.eps == 0.05 and view.pairs is pairs and view.theta is searched.theta and view.gaps is searched.gaps
    assert rate_warm_start(None) is None
    # a score head's state seen by the rate search: its head, bound and pairs only
    score = rate_warm_start(WarmStart(theta=np.zeros(3), working=(1,), eps=0.1))
    assert score.eps == 0.1 and score.lam is None and score.gaps is None


def test_penalty_checks_name_the_fix():
    check_penalty("l1", backend="cvxpy")
    check_penalty(None, backend="torch", n_classes=3)
    with pytest.raises(DataError) as err:
        check_penalty("l1", backend="torch")
    assert str(err.value) == MSG_PENALTY.format(penalty="l1")
    with pytest.raises(DataError) as err:
        check_penalty("elasticnet", backend="cvxpy", n_classes=4)
    assert str(err.value) == MSG_PENALTY_MULTICLASS.format(penalty="elasticnet", k=4)


def test_row_maps_of_one_block_are_the_binary_formulas():
    rng = np.random.default_rng(0)
    A, mu, s = rng.normal(size=(4, 6)), rng.normal(size=5), 1.7
    A[2] = 0.0
    Aw, Ab = A[:, :-1], A[:, -1]
    # exact: the same products and differences element by element
    binary = np.hstack([(Aw - np.outer(Ab, mu)) / s, Ab[:, None]])
    np.testing.assert_array_equal(scaled_rows(A, mu, s, 1, True), binary)
    np.testing.assert_array_equal(center_rows(A, mu), np.hstack([Aw - np.outer(Ab, mu), Ab[:, None]]))
    A_unit, norms, rhs = unit_rows(A, np.full(4, 0.5))
    np.testing.assert_allclose(np.linalg.norm(A_unit, axis=1), [1, 1, 0, 1], rtol=1e-15)
    np.testing.assert_array_equal(rhs(0.1)[[0, 2]], [0.6 / norms[0], 1.0])  # an empty row reads 0 <= 1


def test_conditioning_is_an_exact_reparametrisation(data):
    X, _, _ = data
    mu, s, Xs = condition(X, True)
    w, b = np.arange(1.0, 6.0), 0.3
    ws, bs = s * w, b + mu @ w  # w = w'/s, b = b' - mu.w
    np.testing.assert_allclose(Xs @ ws + bs, X @ w + b, rtol=1e-12, atol=1e-12)
    assert abs(np.mean(Xs.std(axis=0) ** 2) - 1.0) < 1e-12


def test_constraint_pieces_by_family(data):
    from solvers.constraints import GroupLoss

    X, y, a = data
    problem = build_problem(X, y.astype(float), a, None)
    assert constraint_pieces(problem, None) == (None, None)
    form, cells = constraint_pieces(problem, DemographicParityScore())
    assert cells is None and form.A.shape[1] == X.shape[1] + 1
    form, (codes, n) = constraint_pieces(problem, GroupLoss())
    assert form is None and n == 2 and codes.shape == (X.shape[0],)
