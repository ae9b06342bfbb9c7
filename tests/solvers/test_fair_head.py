"""``FairHead``, the head without scikit-learn: the same heads as ``FairLogisticRegression``, its own
one-line input errors, and a warning class that both heads share."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from solvers import FairHead, FairLogisticRegression, fit_path, iter_path
from solvers.errors import ConvergenceWarning, DataError
from solvers.synthetic import make_fair_classification

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data():
    return make_fair_classification(300, 4, seed=0)


def _same_head(a, b) -> None:
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    assert np.array_equal(a.classes_, b.classes_) and a.n_features_in_ == b.n_features_in_
    assert a.certificate_.status == b.certificate_.status and a.groups_ == b.groups_


@pytest.mark.parametrize("params", [
    dict(), dict(constraint="dp-score", eps=0.05), dict(constraint="eo-score", eps=0.02, backend="cvxpy"),
    dict(constraint="dp", eps=0.05), dict(constraint="eo", eps=0.05, balance="group"),
])
def test_fair_head_fits_the_estimators_head_bit_for_bit(data, params):
    X, y, a = data
    sf = a if params.get("constraint") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        core = FairHead(**params).fit(X, y, sensitive_features=sf)
        full = FairLogisticRegression(**params).fit(X, y, sensitive_features=sf)
    _same_head(core, full)
    assert np.array_equal(core.predict_proba(X), full.predict_proba(X))
    assert np.array_equal(core.predict_log_proba(X), full.predict_log_proba(X))


def test_fair_head_fits_k_classes_and_labels_of_any_type(data):
    X, y, a = data
    y3 = np.where(X[:, 0] > 0.5, "c", np.where(y == 1, "b", "a"))
    core = FairHead(constraint="dp", eps=0.1).fit(X, y3, sensitive_features=a)
    full = FairLogisticRegression(constraint="dp", eps=0.1).fit(X, y3, sensitive_features=a)
    _same_head(core, full)
    assert core.classes_.tolist() == ["a", "b", "c"] and set(core.predict(X)) <= {"a", "b", "c"}


def test_a_path_of_fair_heads_is_the_estimators_path(data):
    X, y, a = data
    grid = [0.2, 0.1, 0.05]
    cores = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp", estimator=FairHead(C=0.5))
    fulls = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp", C=0.5)
    assert [type(h) for h in cores] == [FairHead] * 3 and [type(h) for h in fulls] == [FairLogisticRegression] * 3
    for core, full in zip(cores, fulls):
        _same_head(core, full)
        assert core.C == 0.5 and core.eps == full.eps
    with pytest.raises(DataError, match="estimator is a dict; pass a solvers.FairHead"):
        next(iter_path(X, y, sensitive_features=a, eps_grid=grid, estimator={"C": 1.0}))


@pytest.mark.parametrize("X, y, match", [
    ([["a", "b"], ["c", "d"]], [0, 1], r"X holds <U1 values, not numbers; pass X as a 2-D numeric array"),
    ([[1.0, object()], [2.0, 3.0]], [0, 1], r"X holds values that are not numbers \("),
    (np.ones(4), [0, 1, 0, 1], r"X has shape \(4,\), not 2-D"),
    (np.ones((0, 3)), [], r"X has shape \(0, 3\): at least one row"),
    (np.array([[1.0, 2.0], [np.nan, 1.0]]), [0, 1], r"X has a NaN or infinite feature in row 1; drop or impute"),
    (np.ones((3, 2)), [0, 1], r"X has 3 rows but y has 2; pass one row of X per label"),
    (np.ones((3, 2)), np.ones((3, 2)), r"y has shape \(3, 2\), not one label per row"),
    (np.ones((3, 2)), [0.0, np.nan, 1.0], r"y has a NaN or infinite label in row 1; drop the rows"),
    (np.ones((3, 2)), [0.5, 1.5, 0.5], r"Unknown label type: continuous: y holds continuous values such as "
                                       r"\[0.5, 1.5, 0.5\], not class labels; pass labels"),
    (np.ones((3, 2)), np.array([0, "a", 1], dtype=object), r"y mixes label types \(.*\); pass labels of one type"),
    (np.ones((3, 2)), [1, 1, 1], r"y has 1 class\(es\) \[1\]; pass labels with 2 or more classes"),
])
def test_fair_head_refuses_bad_arrays_in_one_line(X, y, match):
    with pytest.raises(DataError, match=match) as err:
        FairHead().fit(X, y)
    assert "\n" not in str(err.value)


def test_fair_head_scores_only_what_it_was_fitted_on(data):
    X, y, _ = data
    with pytest.raises(DataError, match="this FairHead is not fitted yet; call fit"):
        FairHead().predict(X)
    head = FairHead().fit(X.tolist(), y.tolist())  # lists are converted by numpy
    assert np.array_equal(head.predict(X), FairLogisticRegression().fit(X, y).predict(X))
    with pytest.raises(DataError, match="X has 3 features, but FairHead is expecting 4 features as input; pass"):
        head.predict(X[:, :3])
    with pytest.raises(DataError, match="X has a NaN or infinite feature in row 0; drop or impute the non-finite "
                                        "feature values before predicting"):
        head.predict(np.full((1, 4), np.inf))


def test_fair_head_parameters_follow_scikit_learns_contract():
    head = FairHead(constraint="eo", eps=0.02)
    assert head.get_params()["eps"] == 0.02 and set(head.get_params()) == set(FairLogisticRegression().get_params())
    assert head.set_params(C=2.0) is head and head.C == 2.0
    assert repr(head) == "FairHead(constraint='eo', eps=0.02, C=2.0)"
    with pytest.raises(DataError, match="invalid parameter 'gamma' for FairHead"):
        head.set_params(gamma=1.0)
    with pytest.raises(DataError, match="The 'eps' parameter of FairHead must be a float in the range"):
        FairHead(eps=-1.0).fit(np.eye(2), [0, 1])


def test_a_missed_bound_warns_with_a_class_both_libraries_filter(data):
    from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

    X, y, a = data
    with pytest.warns(ConvergenceWarning, match="no head on the multiplier path meets dp eps=0.0001") as core:
        FairHead(constraint="dp", eps=1e-4).fit(X, y, sensitive_features=a)
    assert not issubclass(core[0].category, SklearnConvergenceWarning)
    with pytest.warns(SklearnConvergenceWarning) as full:
        FairLogisticRegression(constraint="dp", eps=1e-4).fit(X, y, sensitive_features=a)
    assert issubclass(full[0].category, ConvergenceWarning)


def test_fair_head_and_a_path_import_no_scikit_learn():
    code = ("import sys; from solvers import FairHead, iter_path; from solvers.synthetic import "
            "make_fair_classification as m; X, y, a = m(200, 3, seed=1); FairHead(constraint='eo').fit(X, y, "
            "sensitive_features=a); list(iter_path(X, y, sensitive_features=a, eps_grid=[0.1], "
            "estimator=FairHead(constraint='dp-score'))); "
            "print(*[m for m in ('sklearn', 'scipy.stats', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def test_load_head_gives_either_class_with_the_same_head(data, tmp_path):
    from solvers import load_head, save_head

    X, y, a = data
    path = save_head(FairHead(constraint="dp-score", eps=0.05).fit(X, y, sensitive_features=a), tmp_path / "h.json")
    core, full = load_head(path, head_type=FairHead), load_head(path)
    assert type(core) is FairHead and type(full) is FairLogisticRegression
    _same_head(core, full)
    assert np.array_equal(core.decision_function(X), full.decision_function(X)) and core.extra_ == full.extra_
    with pytest.raises(DataError, match="head_type is <class 'dict'>; pass solvers.FairHead"):
        load_head(path, head_type=dict)
