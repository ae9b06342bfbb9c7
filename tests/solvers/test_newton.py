"""Damped Newton for small unconstrained weighted logistic fits (:mod:`solvers.backends.newton`).

Its optimum is checked against scikit-learn's ``newton-cholesky`` at a tight tolerance in float64,
within the distance strong convexity allows: for an objective whose Hessian is at least ``m I``
near the optimum, ``||theta - theta*|| <= ||grad f(theta)|| / m``, so two heads whose gradients are
``g1`` and ``g2`` lie within ``(||g1|| + ||g2||) / m`` of each other (``m`` halved for the segment
between them). Both gradients are recomputed here in float64 from the returned coefficients.
"""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from solvers import FairLogisticRegression, RowChunks
from solvers.backends import newton
from solvers.backends.torch import Design, WeightedLogistic, _AugLagObjective, fit_context, minimize
from solvers.synthetic import make_fair_classification


def _weighted_problem(n=2000, d=6, seed=0, dtype=np.float64):
    X, y, _ = make_fair_classification(n, d, seed=seed)
    X = (X * np.linspace(0.5, 3.0, d) + np.linspace(-2.0, 50.0, d)).astype(dtype)  # uneven scales, far means
    q = np.random.default_rng(seed).uniform(0.2, 2.0, n)
    return X, y.astype(np.float64), q / q.sum()


def _fit(X, y, q, lam2, *, fit_intercept=True, tol=1e-10, streamed=False):
    design = Design(RowChunks(X) if streamed else X, "cpu", center=fit_intercept)
    d = X.shape[1]
    obj = WeightedLogistic(torch.from_numpy(y), torch.from_numpy(q), lam2, d)
    theta = torch.zeros(d + 1, dtype=torch.float64)
    with fit_context("cpu"):
        res = newton.minimize_newton(design, obj, theta, fixed=() if fit_intercept else (d,), tol=tol, max_iter=100)
    return design, res


def _gradient_and_hessian(X, y, q, lam2, w, b, fit_intercept):
    """The float64 gradient and Hessian of ``sum q loss + lam2/2 |w|^2`` in ``[w; b]`` (``[w]`` without intercept)."""
    X1 = np.hstack([X.astype(np.float64), np.ones((len(y), 1))]) if fit_intercept else X.astype(np.float64)
    z = X.astype(np.float64) @ w + b
    s = 1.0 / (1.0 + np.exp(-z))
    reg = np.r_[np.full(len(w), lam2), [0.0] * fit_intercept]
    theta = np.r_[w, [b] * fit_intercept]
    g = X1.T @ (q * (s - y)) + reg * theta
    H = X1.T @ (X1 * (q * s * (1 - s))[:, None]) + np.diag(reg)
    return g, H


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_newton_optimum_is_the_float64_reference(fit_intercept):
    X, y, q = _weighted_problem()
    lam2 = 1e-3
    design, res = _fit(X, y, q, lam2, fit_intercept=fit_intercept)
    assert res.converged and res.n_iter < 20
    d = X.shape[1]
    th = design.from_centered(res.theta).numpy() if fit_intercept else res.theta.numpy()
    # the same objective, scaled by 1 / lam2: C sum_i sw_i loss_i + |w|^2 / 2 with sw = q, C = 1 / lam2
    ref = LogisticRegression(C=1.0 / lam2, solver="newton-cholesky", tol=1e-12, max_iter=1000,
                             fit_intercept=fit_intercept).fit(X, y, sample_weight=q)
    mine = np.r_[th[:d], [th[d]] * fit_intercept]
    theirs = np.r_[ref.coef_.ravel(), ref.intercept_ * fit_intercept] if fit_intercept else ref.coef_.ravel()
    g_mine, H = _gradient_and_hessian(X, y, q, lam2, th[:d], th[d] if fit_intercept else 0.0, fit_intercept)
    g_ref, _ = _gradient_and_hessian(X, y, q, lam2, ref.coef_.ravel(), float(ref.intercept_[0]) if fit_intercept
                                     else 0.0, fit_intercept)
    assert np.abs(g_mine).max() <= 1e-10 * 1.01  # the stopping test holds on the float64 gradient
    m = 0.5 * np.linalg.eigvalsh(H).min()
    bound = (np.linalg.norm(g_mine) + np.linalg.norm(g_ref)) / m
    assert np.linalg.norm(mine - theirs) <= bound
    assert bound < 1e-6  # the check says something: both heads are that close to the optimum


def test_newton_matches_lbfgs_to_the_tolerance():
    """The same objective and stopping test: at a tight ``tol`` the two minimisers agree to it."""
    X, y, q = _weighted_problem()
    design, res = _fit(X, y, q, 1e-3, tol=1e-9)
    obj = WeightedLogistic(torch.from_numpy(y), torch.from_numpy(q), 1e-3, X.shape[1])
    theta = torch.zeros(X.shape[1] + 1, dtype=torch.float64)
    with fit_context("cpu"):
        ref = minimize(design, obj, theta, tol=1e-9, max_iter=5000, precond=design.preconditioner(1e-3, X.shape[1] + 1))
    assert ref.converged and res.converged and res.n_iter < ref.n_iter
    assert res.stationarity <= 1e-9
    np.testing.assert_allclose(res.theta.numpy(), ref.theta.numpy(), rtol=0, atol=1e-5)
    assert res.f <= ref.f + 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_newton_fit_is_the_in_memory_one_bit_for_bit(monkeypatch, dtype):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", "16KiB")  # many blocks, in memory and streamed alike
    X, y, q = _weighted_problem(n=3000, dtype=dtype)
    mem_design, mem = _fit(X, y, q, 1e-3, tol=1e-8)
    ooc_design, ooc = _fit(X, y, q, 1e-3, tol=1e-8, streamed=True)
    assert mem_design.streamed is False and ooc_design.streamed is True
    assert mem.n_iter == ooc.n_iter and mem.n_iter > 1
    assert torch.equal(mem.theta, ooc.theta) and torch.equal(mem.z, ooc.z)
    assert torch.equal(mem.xtr, ooc.xtr)


def test_a_streamed_small_table_gives_the_in_memory_heads(monkeypatch):
    """The estimator: unconstrained and rate heads of a 7-feature table, streamed or not (Newton fits)."""
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", "16KiB")
    X, y, a = make_fair_classification(2500, 7, dtype=np.float32, seed=5)
    for constraint in (None, "dp", "eo"):
        kw = dict(constraint=constraint, eps=0.03, backend="torch")
        mem = FairLogisticRegression(**kw).fit(X, y, sensitive_features=a)
        ooc = FairLogisticRegression(**kw).fit(RowChunks(X), y, sensitive_features=a)
        np.testing.assert_array_equal(ooc.coef_, mem.coef_)
        np.testing.assert_array_equal(ooc.intercept_, mem.intercept_)
        assert ooc.certificate_.n_iter == mem.certificate_.n_iter


def test_the_dispatch_takes_newton_only_where_it_pays():
    small = Design(np.zeros((3694, 7)), "cpu")
    obj = WeightedLogistic(torch.zeros(3694), torch.ones(3694) / 3694, 1e-3, 7)
    assert newton.newton_pays(small, obj)
    assert not newton.newton_pays(small, obj, A=torch.zeros((2, 8)))  # constraint rows: the active set
    assert not newton.newton_pays(small, obj, layout=object())  # several score columns
    aug = _AugLagObjective(torch.zeros(3694), torch.ones(3694), 1e-3, 7, torch.zeros(3694, dtype=torch.long),
                           torch.ones(3694), 2, 0.5, False)
    assert not newton.newton_pays(small, aug)  # no curvature
    # the cost rule: (n + d + 1) (d + 1)^2 multiply-adds within NEWTON_FLOPS
    for n, d, pays in ((3694, 12, True), (3694, 16, False), (20000, 6, True), (20000, 8, False),
                       (30162, 104, False), (20000, 512, False), (100, 120, False)):
        design = Design(np.zeros((n, d), dtype=np.float32), "cpu")
        assert newton.newton_pays(design, WeightedLogistic(torch.zeros(n), torch.ones(n) / n, 1e-3, d)) is pays


def test_wide_tables_keep_lbfgs(monkeypatch):
    """Past the budget the estimator's fits never reach Newton (their bits stay L-BFGS's)."""
    calls = []
    real = newton.minimize_newton

    def spy(*args, **kw):
        calls.append(args[0].d)
        return real(*args, **kw)

    monkeypatch.setattr(newton, "minimize_newton", spy)
    monkeypatch.setattr("solvers.backends.torch.minimize_newton", spy)
    X, y, a = make_fair_classification(1500, 40, seed=2)
    for constraint in (None, "dp"):
        FairLogisticRegression(constraint=constraint, eps=0.05, backend="torch").fit(X, y, sensitive_features=a)
    assert calls == []
    Xs = X[:, :6]
    for constraint in (None, "dp"):
        FairLogisticRegression(constraint=constraint, eps=0.05, backend="torch").fit(Xs, y, sensitive_features=a)
    assert calls and set(calls) == {6}


def test_a_constant_column_without_penalty_still_converges():
    """No L2 term and a constant column (zero after centring): the ridge keeps the system definite."""
    X, y, q = _weighted_problem(n=800, d=4)
    X = np.hstack([X, np.full((800, 1), 3.0)])
    design, res = _fit(X, y, q, 0.0, tol=1e-8)
    assert res.converged and np.isfinite(res.theta.numpy()).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_device_branch_gives_the_numpy_branch_hessian(monkeypatch, dtype):
    """The accelerator's code (torch tensors throughout) run on CPU tensors: the same Hessian as the
    numpy branch to float rounding, and the same fit (no GPU is needed to check its arithmetic)."""
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", "16KiB")
    X, y, q = _weighted_problem(n=3000, dtype=dtype)
    h = torch.from_numpy(np.random.default_rng(1).uniform(0.0, 0.25, 3000) * q)
    numpy_design, numpy_fit = _fit(X, y, q, 1e-3, tol=1e-6)
    H_numpy = newton.centred_hessian(numpy_design, h, 1e-3)
    monkeypatch.setattr(newton, "_in_numpy", lambda design: False)
    torch_design, torch_fit = _fit(X, y, q, 1e-3, tol=1e-6)
    H_torch = newton.centred_hessian(torch_design, h, 1e-3)
    assert isinstance(newton.augmented_blocks(torch_design)[0][1], torch.Tensor)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(H_torch, H_numpy, rtol=rtol, atol=rtol * np.abs(H_numpy).max())
    assert torch_fit.converged and numpy_fit.converged
    np.testing.assert_allclose(torch_fit.theta.numpy(), numpy_fit.theta.numpy(), rtol=0, atol=1e-6)


def test_a_tolerance_below_float32_noise_stops_after_a_few_stalled_iterations():
    """float32 products bound how small the gradient gets; past that floor the fit stops unconverged
    once ``STALL_ITERS`` iterations in a row find no smaller stationarity, long before ``max_iter``."""
    X, y, q = _weighted_problem(n=3000, dtype=np.float32)
    design, res = _fit(X, y, q, 1e-3, tol=1e-12)
    assert not res.converged and res.n_iter <= 40  # of max_iter=100
    assert res.stationarity < 1e-5
