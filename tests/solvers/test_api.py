"""Estimator API: groups, balance, errors, persistence, paths, cvxpy re-solves, import boundary."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from solvers import FairLogisticRegression, fit_path, load_head, save_head
from solvers.certificate import Certificate
from solvers.errors import DataError, InfeasibleConstraintError
from solvers.problem import build_problem, encode_groups

REPO = Path(__file__).resolve().parents[2]
OBJ_RTOL = 1e-6  # re-solve vs fresh solve: same solver, same tolerance


def test_intersectional_codes_from_dict_2d_and_frame():
    pd = pytest.importorskip("pandas")
    a = np.array(["f", "m", "f", "m"])
    b = np.array([0, 0, 1, 1])
    c1, l1, _ = encode_groups({"sex": a, "age": b}, 4)
    c2, l2, _ = encode_groups(np.column_stack([a, b.astype(str)]), 4)
    c3, l3, _ = encode_groups(pd.DataFrame({"sex": a, "age": b}), 4)
    assert l1 == (("f", 0), ("f", 1), ("m", 0), ("m", 1)) == l3
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(c1, c3)


@pytest.mark.parametrize("balance", ["group", "label-group"])
def test_balance_gives_equal_totals(small_problem, balance):
    X, y, a = small_problem
    p = build_problem(X, y, a, None, balance=balance)
    cells = a if balance == "group" else a * 2 + y
    totals = np.bincount(cells, weights=p.sample_weight)
    np.testing.assert_allclose(totals, totals[0])
    assert p.sample_weight.mean() == pytest.approx(1.0)


def test_balance_changes_the_fit(small_problem):
    X, y, a = small_problem
    c0 = FairLogisticRegression(backend="torch").fit(X, y, sensitive_features=a)
    c1 = FairLogisticRegression(backend="torch", balance="label-group").fit(X, y, sensitive_features=a)
    assert not np.allclose(c0.coef_, c1.coef_)


ERROR_CASES = [
    dict(kw={}, fit=dict(sensitive_features=np.zeros(600)), match="only 1 group"),
    dict(kw=dict(min_group_size=400), fit={}, match="fewer than `min_group_size=400`"),
    dict(kw=dict(C=-1.0), fit={}, match="The 'C' parameter of FairLogisticRegression must be a float"),
    dict(kw=dict(constraint="nope"), fit={}, match="'constraint' parameter"),
    dict(kw=dict(balance="group"), fit=dict(sensitive_features=None), match="needs sensitive_features"),
    dict(kw=dict(penalty="l1", backend="torch"), fit={}, match="backend='cvxpy' only"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c["match"][:25] for c in ERROR_CASES])
def test_clear_data_errors(small_problem, case):
    X, y, a = small_problem
    fit = dict(sensitive_features=a)
    fit.update(case["fit"])
    with pytest.raises(DataError, match=case["match"]):
        FairLogisticRegression(**{"constraint": "dp-score", **case["kw"]}).fit(X, y, **fit)


def test_one_class_labels(small_problem):
    X, _, a = small_problem
    with pytest.raises(ValueError, match="1 class.*pass labels with 2 or more classes"):
        FairLogisticRegression().fit(X, np.zeros(X.shape[0]))


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_group_loss_infeasible_raises(small_problem, backend):
    X, y, a = small_problem
    with pytest.raises(InfeasibleConstraintError, match="infeasible .*smallest reachable"):
        FairLogisticRegression(constraint="group-loss", eps=0.05, backend=backend).fit(X, y, sensitive_features=a)


def test_string_classes_and_pipeline(small_problem):
    X, y, a = small_problem
    labels = np.where(y == 1, "yes", "no")
    pipe = make_pipeline(StandardScaler(), FairLogisticRegression(backend="torch"))
    pipe.fit(X, labels)
    assert set(pipe.predict(X)) <= {"yes", "no"}
    clf = clone(FairLogisticRegression(constraint="dp", eps=0.1))
    assert clf.get_params()["constraint"] == "dp"


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_load_round_trip(tmp_path, small_problem, suffix):
    X, y, a = small_problem
    clf = FairLogisticRegression(constraint="eo-score", eps=0.03, backend="torch").fit(X, y, sensitive_features=a)
    path = save_head(clf, tmp_path / f"head{suffix}", cache_fingerprint="sha256:abc", extra={"split": "train"})
    back = load_head(path)
    np.testing.assert_array_equal(back.decision_function(X), clf.decision_function(X))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert back.certificate_ == clf.certificate_
    assert back.cache_fingerprint_ == "sha256:abc" and back.extra_ == {"split": "train"}
    assert back.get_params() == clf.get_params()


def test_save_rejects_other_suffix(tmp_path, small_problem):
    X, y, a = small_problem
    clf = FairLogisticRegression(backend="torch").fit(X, y)
    with pytest.raises(DataError, match="must end in .json or .npz"):
        save_head(clf, tmp_path / "head.pkl")


def test_certificate_round_trip():
    c = Certificate(backend="torch", solver="s", status="optimal", constraint="dp", eps=0.1, objective=0.3,
                    max_violation=0.0, stationarity=1e-9, n_iter=3, wall_time=0.1, tol=1e-6, achieved_gap=0.05,
                    eps_met=True, multipliers=(0.5,), notes=("n",))
    assert Certificate.from_dict(c.to_dict()) == c


def test_rate_certificate_names_its_0_1_error_apart_from_the_logistic_objective(tmp_path, embed_problem):
    """A rate head's 0-1 error is ``zero_one_error``; ``objective`` is only ever the logistic objective."""
    import json

    (X, y, a), _ = embed_problem
    rate = FairLogisticRegression(constraint="dp", eps=0.1, backend="torch").fit(X, y, sensitive_features=a)
    score = FairLogisticRegression(constraint="dp-score", eps=0.1, backend="torch").fit(X, y, sensitive_features=a)
    assert rate.certificate_.objective is None
    assert rate.certificate_.zero_one_error == pytest.approx(np.mean(rate.predict(X) != y), abs=1e-12)
    assert score.certificate_.zero_one_error is None
    z = score.decision_function(X)
    loss = np.mean(np.logaddexp(0.0, -(2 * y - 1) * z)) + score.coef_.ravel() @ score.coef_.ravel() / (2 * len(y))
    assert score.certificate_.objective == pytest.approx(loss, rel=1e-6)  # float32 X: products to ~1e-8
    # a head file written before the rename (rate "objective" = 0-1 error) still reads, with the right names
    path = save_head(rate, tmp_path / "rate.json")
    doc = json.loads(path.read_text())
    cert = doc["certificate"]
    cert["objective"] = cert.pop("zero_one_error")
    path.write_text(json.dumps(doc))
    old = load_head(path)
    assert old.certificate_.objective is None
    assert old.certificate_.zero_one_error == pytest.approx(rate.certificate_.zero_one_error)
    assert old.certificate_ == rate.certificate_


@pytest.mark.parametrize("backend", ["cvxpy", "torch"])
def test_fit_path_matches_fresh_fits(small_problem, backend):
    X, y, a = small_problem
    grid = [0.2, 0.1, 0.05, 0.0]
    heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp-score", backend=backend, tol=1e-10)
    assert [h.eps for h in heads] == grid
    for h, e in zip(heads, grid):
        fresh = FairLogisticRegression(constraint="dp-score", eps=e, backend=backend, tol=1e-10)
        fresh.fit(X, y, sensitive_features=a)
        assert h.certificate_.objective == pytest.approx(fresh.certificate_.objective, rel=OBJ_RTOL)


def test_fit_path_rate(embed_problem):
    (X, y, a), _ = embed_problem
    heads = fit_path(X, y, sensitive_features=a, eps_grid=[0.1, 0.05, 0.02], constraint="dp", backend="torch")
    assert all(h.certificate_.eps_met for h in heads)


def test_cvxpy_model_is_dpp_and_resolve_matches(small_problem):
    from solvers.backends.cvxpy import CvxpyModel
    from solvers.constraints import DemographicParityScore, GroupLoss

    X, y, a = small_problem
    p = build_problem(X, y.astype(float), a, None)
    c = DemographicParityScore()
    lf = c.linear_form(p.X, p.y, p.groups, p.sample_weight, p.group_labels)
    model = CvxpyModel(p, c, C=1.0, penalty="l2", l1_ratio=None, fit_intercept=True, linear_form=lf)
    assert model.is_dpp()
    model.solve(0.2)
    again = model.solve(0.01)
    fresh = CvxpyModel(p, c, C=1.0, penalty="l2", l1_ratio=None, fit_intercept=True, linear_form=lf).solve(0.01)
    np.testing.assert_allclose(again.coef, fresh.coef, atol=1e-6)
    gl = CvxpyModel(p, GroupLoss(), C=1.0, penalty="l2", l1_ratio=None, fit_intercept=True, cells=(a, 2))
    assert gl.is_dpp()


def test_warm_start_reuses_solution(small_problem):
    X, y, a = small_problem
    clf = FairLogisticRegression(constraint="dp-score", eps=0.05, backend="torch", warm_start=True, tol=1e-10)
    clf.fit(X, y, sensitive_features=a)
    n_cold = clf.n_iter_
    clf.fit(X, y, sensitive_features=a)
    assert clf.n_iter_ < n_cold


def test_import_boundary():
    code = (
        "import sys, solvers; solvers.FairLogisticRegression; "
        "bad = [m for m in ('torchvision', 'embedcache', 'cvxpy', 'torch') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_docstring_examples_run():
    import doctest

    import solvers.estimator
    import solvers.head
    import solvers.path_fitter

    for module in (solvers.estimator, solvers.head, solvers.path_fitter):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("constraint", ["dp-score", "group-loss", "dp"])
def test_fitted_state_pickles_without_torch_tensors(small_problem, constraint):
    import pickle

    X, y, a = small_problem
    clf = FairLogisticRegression(constraint=constraint, eps=0.6 if constraint == "group-loss" else 0.05,
                                 backend="torch").fit(X, y, sensitive_features=a)

    def walk(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):  # the warm state, the certificate
            return walk(vars(v))
        if isinstance(v, dict):
            return all(walk(x) for x in v.values())
        if isinstance(v, (list, tuple)):
            return all(walk(x) for x in v)
        return type(v).__module__.split(".")[0] != "torch"

    assert walk(vars(clf))
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))


def test_warm_start_sweep_extrapolates(small_problem):
    X, y, a = small_problem
    head = FairLogisticRegression(constraint="dp-score", eps=0.3, backend="torch", warm_start=True, tol=1e-9)
    iters = []
    for eps in (0.3, 0.25, 0.2, 0.15):
        head.set_params(eps=eps).fit(X, y, sensitive_features=a)
        iters.append(head.n_iter_)
        fresh = FairLogisticRegression(constraint="dp-score", eps=eps, backend="torch", tol=1e-9)
        fresh.fit(X, y, sensitive_features=a)
        assert head.certificate_.objective == pytest.approx(fresh.certificate_.objective, rel=OBJ_RTOL)
    assert len(head._solver_state.prev) == 2


def test_a_score_path_start_carries_its_exact_scores(small_problem):
    """The warm start's scores come extrapolated, not from a product with X: they must be X w + b."""
    from solvers.backends.torch import Design, _start_theta
    from solvers.backends.common import constraint_pieces

    X, y, a = small_problem
    grid = [0.3, 0.2, 0.12, 0.06]
    heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp-score", backend="torch")
    est = FairLogisticRegression(constraint="dp-score", backend="torch")
    problem, constraint, _ = est._prepare(X, y, a, None)
    design = Design(problem.X, "cpu", center=True)
    linear_form, _ = constraint_pieces(problem, constraint)
    init = heads[-1]._solver_state
    assert init.prev and init.z is not None  # a path state: extrapolation with scores
    th, z = _start_theta(problem, True, init, linear_form, 0.03, problem.d, design, dict(init.row_scores))
    assert z is not None
    np.testing.assert_allclose(z, problem.X @ th[:-1] + th[-1], rtol=1e-9, atol=1e-9)


def test_a_warm_refit_on_other_rows_ignores_the_old_scores(small_problem):
    X, y, a = small_problem
    half = len(y) // 2
    warm = FairLogisticRegression(constraint="dp-score", eps=0.1, backend="torch", warm_start=True, tol=1e-9)
    warm.fit(X[:half], y[:half], sensitive_features=a[:half])
    warm.fit(X[half:], y[half:], sensitive_features=a[half:])
    cold = FairLogisticRegression(constraint="dp-score", eps=0.1, backend="torch", tol=1e-9)
    cold.fit(X[half:], y[half:], sensitive_features=a[half:])
    np.testing.assert_allclose(warm.coef_, cold.coef_, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("missing", [None, float("nan"), "pandas-NA"])
def test_a_missing_sensitive_value_in_an_object_column_is_refused(small_problem, missing):
    X, y, a = small_problem
    if missing == "pandas-NA":
        missing = pytest.importorskip("pandas").NA
    groups = np.where(a == a[0], "f", "m").astype(object)
    groups[7] = missing
    with pytest.raises(DataError, match="missing"):
        FairLogisticRegression(constraint="dp-score").fit(X, y, sensitive_features=groups)


@pytest.mark.parametrize("values", [
    np.array([1, 0, 1, 1, 0]), np.array([3, 3, 1], dtype=np.uint8), np.array([0], dtype=np.int32),
    np.array([-1, 2, -1]), np.array([7, 900, 7]), np.array([2.0, 0.5, 2.0]), np.array(["m", "f", "m"]),
    np.array([True, False, True]), np.zeros(0, dtype=np.int64),
], ids=["0/1", "uint8", "one", "negative", "wide range", "float", "str", "bool", "empty"])
def test_unique_values_are_numpys(values):
    from solvers.problem import unique_values

    uniq, codes = unique_values(values, return_inverse=True)
    want, want_codes = np.unique(values, return_inverse=True)
    assert uniq.dtype == want.dtype and codes.dtype == want_codes.dtype
    np.testing.assert_array_equal(uniq, want)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(unique_values(values), want)


def test_plain_arrays_skip_validate_data_with_the_same_outcome(small_problem):
    pd = pytest.importorskip("pandas")
    X, y, a = small_problem
    # a list goes through validate_data, an ndarray around it: one head, one fitted state
    through = FairLogisticRegression(constraint="dp", eps=0.05).fit(X.tolist(), y.tolist(), sensitive_features=a)
    est = FairLogisticRegression(constraint="dp", eps=0.05)
    est.fit(pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])]), y, sensitive_features=a)
    assert hasattr(est, "feature_names_in_")
    est.fit(X, y, sensitive_features=a)  # the plain path: the frame's names are forgotten, as validate_data does
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(est.coef_, through.coef_)
    np.testing.assert_array_equal(est.intercept_, through.intercept_)
    np.testing.assert_array_equal(est.classes_, through.classes_)


@pytest.mark.parametrize("where, value, match", [
    ("X", np.nan, "Input X contains NaN"), ("X", np.inf, "Input X contains infinity"),
    ("y", np.nan, "Input y contains NaN"),
])
def test_plain_arrays_with_a_non_finite_value_get_sklearns_message(small_problem, where, value, match):
    X, y, a = small_problem
    X, y = X.copy(), y.astype(np.float64)
    if where == "X":
        X[3, 1] = value
    else:
        y[3] = value
    with pytest.raises(DataError, match=match):
        FairLogisticRegression().fit(X, y)
