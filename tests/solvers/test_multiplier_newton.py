"""Newton steps on the rate multipliers: the Jacobian, the active set, and what they buy."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from solvers import FairLogisticRegression, fit_path
from solvers.backends.torch import Design, WeightedLogistic, _tensor, minimize
from solvers import multiplier_newton
from solvers.multiplier_newton import (NewtonTargets, gap_jacobian, kkt_residual, quartile_spread, step_density,
                                       without_subnormals)
from solvers.synthetic import make_fair_classification


def _reduction(constraint, n=3000, d=8, seed=0):
    """The pieces of the reduction for one problem: ``fit(lam) -> (theta, z)`` and the moments."""
    X, y, a = make_fair_classification(n, d, seed=seed)
    est = FairLogisticRegression(constraint=constraint, backend="torch")
    problem, cons, _ = est._prepare(X, y, a, None)
    v = problem.sample_weight
    V = float(v.sum())
    mom = cons.moments(problem.y, problem.groups, v, problem.group_labels)
    Ma = mom.M * mom.a
    base = v * (1.0 - 2.0 * problem.y) / V
    design = Design(problem.X, "cpu", center=True)
    lam2 = 1.0 / V

    def fit(lam, theta=None):
        delta = base + Ma.T @ lam
        obj = WeightedLogistic(_tensor((delta < 0).astype(np.float64), "cpu"), _tensor(np.abs(delta), "cpu"), lam2, d)
        start = torch.zeros(d + 1, dtype=torch.float64) if theta is None else theta
        res = minimize(design, obj, start, tol=1e-11, max_iter=5000)
        assert res.converged
        return res

    return design, mom, Ma, base, lam2, fit


@pytest.mark.parametrize("constraint", ["dp", "eo"])
def test_the_jacobian_matches_finite_differences(constraint):
    design, mom, Ma, base, lam2, fit = _reduction(constraint)
    K = Ma.shape[0]
    lam = np.zeros(K)
    res = fit(lam)
    J, dtheta = gap_jacobian(design, res.z, base + Ma.T @ lam, Ma, lam2, True)
    assert J.shape == (K, K) and dtheta.shape == (design.d + 1, K)
    h = 1e-3
    for k in range(K):
        step = np.zeros(K)
        step[k] = h
        moved = fit(lam + step, res.theta)
        # the head's derivative is exact (implicit function theorem) ...
        fd_theta = (moved.theta - res.theta).numpy() / h
        np.testing.assert_allclose(dtheta[:, k].numpy(), fd_theta, rtol=0.05, atol=0.02 * np.abs(fd_theta).max())
        # ... and the gaps' is that of the kernel-smoothed step function: compare with the smoothed
        # gaps' finite difference through the head's exact move
        dz = (moved.z - res.z).numpy() / h
        np.testing.assert_allclose(J[:, k], Ma @ (step_density(res.z.numpy()) * dz), rtol=0.05,
                                   atol=0.02 * np.abs(J).max())


def test_the_jacobian_predicts_the_hard_gaps_of_a_small_move():
    design, mom, Ma, base, lam2, fit = _reduction("dp", n=20000)
    K = Ma.shape[0]
    res = fit(np.zeros(K))
    J, _ = gap_jacobian(design, res.z, base, Ma, lam2, True)
    g0 = mom.gaps((res.z.numpy() > 0).astype(float))
    k = int(np.argmax(np.abs(g0)))
    step = np.zeros(K)
    step[k] = -0.05 * g0[k] / J[k, k]  # predicted to close 5% of the largest gap
    g1 = mom.gaps((fit(step, res.theta).z.numpy() > 0).astype(float))
    change = g1 - g0
    assert np.abs(change).max() > 0.02 * np.abs(g0).max()  # the move is visible
    np.testing.assert_allclose(J @ step, change, atol=0.25 * np.abs(change).max())


def test_the_jacobian_blocks_equal_one_product_with_the_concatenation():
    """``gap_jacobian`` writes ``X^T R`` and ``X^T diag(h) X`` as two products into one block, not one
    product of ``X^T`` with ``[R, diag(h) X]``. The two are the same sums of the same terms, but the BLAS
    picks its kernel (and so each column's summation order) by the matrices' shapes and the CPU: on
    some CPUs the bits agree, on others (OpenBLAS's DYNAMIC_ARCH kernels) they differ by rounding. So
    they agree to the dot-product bound, ``n u sum_i |x_i| |r_i|`` per entry, u = eps / 2, for each
    order; twice that for the difference of two orders."""
    rng = np.random.default_rng(4)
    for dtype in (torch.float32, torch.float64):
        X = torch.as_tensor(rng.normal(size=(3001, 67))).to(dtype)
        R = torch.as_tensor(rng.normal(size=(3001, 9))).to(dtype)
        h = torch.as_tensor(rng.uniform(size=3001)).to(dtype)
        right = torch.cat([R, X * h[:, None]], dim=1)
        one = X.t() @ right
        out = torch.empty((67, 9 + 67), dtype=dtype)
        torch.matmul(X.t(), R, out=out[:, :9])
        torch.matmul(X.t(), X * h[:, None], out=out[:, 9:])
        bound = X.shape[0] * torch.finfo(dtype).eps * (X.abs().t().double() @ right.abs().double())
        assert torch.all((out.double() - one.double()).abs() <= bound)


def test_subnormal_entries_become_zero_and_column_sums_keep_their_bits():
    """A quarter of a float32 column is subnormal (a far score's kernel density): those entries become 0,
    the rest and the input stay as they were, and ``X^T R`` keeps its bits (a subnormal term is below
    ``1.2e-38 |X_ij|``, far under one ulp of a column sum of order 1e-3)."""
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.normal(size=(3001, 67)), dtype=torch.float32)
    R64 = rng.uniform(1e-3, 1e-2, size=(3001, 3))
    R64[rng.uniform(size=3001) < 0.25, 1] = 1e-40  # float32-subnormal after the cast
    R = torch.as_tensor(R64).to(torch.float32)
    before = R.clone()
    flushed = without_subnormals(R)
    tiny = torch.finfo(torch.float32).tiny
    assert torch.equal(R, before)  # a new tensor: R (maybe a view of the float64 R) is not written
    sub = (R != 0) & (R.abs() < tiny)
    assert sub.sum() > 500 and (flushed[sub] == 0).all() and torch.equal(flushed[~sub], R[~sub])
    assert torch.equal(X.t() @ flushed, X.t() @ R)


def test_kkt_residual():
    lam = np.array([0.5, -0.5, 0.0, 0.0])
    gaps = np.array([0.03, -0.01, 0.05, 0.01])
    np.testing.assert_allclose(kkt_residual(lam, gaps, 0.02), [0.01, 0.01, 0.03, 0.0])


def test_targets_keep_one_of_two_dependent_rows_the_most_violated():
    # two groups: row 1 is -(1/2) row 0 (the weighted group gaps of one event sum to zero)
    Ma = np.array([[1.0, -1.0, 0.5, -0.5], [-0.5, 0.5, -0.25, 0.25]])
    targets = NewtonTargets(Ma)
    gaps = np.array([0.1, -0.05])
    J = np.array([[-2.0, 1.0], [1.0, -0.5]])
    new = targets(np.zeros(2), gaps, J, 0.02)
    assert new[1] == 0.0 and new[0] > 0  # only the row that binds carries a multiplier
    assert gaps[0] + J[0] @ new == pytest.approx(0.02)


@pytest.mark.parametrize("ties", [False, True])
def test_quartiles_of_ordered_scores_are_numpys_percentile_bit_for_bit(ties):
    """The bandwidth's quartiles read off sorted scores: numpy's linear percentile, every bit
    (lengths 1 to 4,000, scales over 10 decades, with and without tied scores)."""
    rng = np.random.default_rng(1)
    for n in list(range(1, 12)) + list(rng.integers(12, 4000, size=200)):
        z = rng.standard_normal(n) * 10.0 ** rng.uniform(-5, 5)
        if ties:
            z = np.round(z, 1)
        ordered = np.sort(z)[::-1]
        assert quartile_spread(ordered) == np.subtract(*np.percentile(z, [75, 25])), n
        np.testing.assert_array_equal(step_density(z, ordered), step_density(z))


def test_targets_share_their_subsets_by_the_rows_and_order_alone(monkeypatch):
    """A second search of the same moments (the next fit, the next bound) finds the independent
    subsets already made; other rows or other exclusive pairs do not."""
    made = []
    greedy = NewtonTargets._greedy_subset
    monkeypatch.setattr(NewtonTargets, "_greedy_subset", lambda self, order: made.append(order) or greedy(self, order))
    monkeypatch.setattr(multiplier_newton, "_SUBSETS", {})
    Ma = np.array([[1.0, -1.0, 0.5, -0.5], [-0.5, 0.5, -0.25, 0.25], [0.3, 0.1, -0.2, 0.4]])
    assert NewtonTargets(Ma).independent([0, 1, 2]) == [0, 2]
    assert NewtonTargets(Ma.copy()).independent([0, 1, 2]) == [0, 2] and len(made) == 1
    assert NewtonTargets(Ma).independent([1, 0, 2]) == [1, 2] and len(made) == 2  # another order
    assert NewtonTargets(Ma, exclusive=[(0, 2)]).independent([0, 1, 2]) == [0] and len(made) == 3
    other = Ma.copy()
    other[1, 0] += 1.0  # row 1 no longer depends on row 0
    assert NewtonTargets(other).independent([0, 1, 2]) == [0, 1, 2] and len(made) == 4


def test_targets_release_a_row_whose_multiplier_would_change_side():
    Ma = np.eye(2)
    targets = NewtonTargets(Ma)
    # row 1 is violated on the low side, but reaching row 0's target drags it up past its upper
    # bound: holding it at -eps_t would take a multiplier of the wrong sign
    gaps = np.array([0.10, -0.03])
    J = np.array([[-1.0, 0.0], [2.0, -1.0]])
    new = targets(np.zeros(2), gaps, J, 0.02)
    assert new[1] == 0.0  # released
    assert new[0] == pytest.approx(0.08)


def test_a_dp_path_costs_about_two_weighted_fits_per_active_bound():
    X, y, a = make_fair_classification(6000, 16, seed=3)
    grid = np.linspace(0.2, 0.02, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp", backend="torch")
    assert all(h.certificate_.eps_met for h in heads)
    fits = [int(h.certificate_.notes[0].split()[0]) for h in heads]
    newton = [int(h.certificate_.notes[0].split("converged, ")[1].split()[0]) for h in heads]
    active = [f for f, h in zip(fits, heads) if h.certificate_.multipliers and any(h.certificate_.multipliers)]
    assert active and sum(newton) >= len(active)  # the Newton steps did the work
    assert np.mean(active) <= 4, fits


def _path_start(constraint="eo", eps=0.05, seed=1):
    """A head solved at ``eps`` and what the next bound's reduction needs (estimator, problem, state)."""
    from solvers.backends.torch import Design

    X, y, a = make_fair_classification(4000, 8, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (head,) = fit_path(X, y, sensitive_features=a, eps_grid=[eps], constraint=constraint, backend="torch")
    est = FairLogisticRegression(constraint=constraint, backend="torch")
    problem, cons, backend = est._prepare(X, y, a, None)
    return head, est, problem, cons, backend, Design(problem.X, "cpu", center=True)


def _fits(cert):
    return int(cert.notes[0].split()[0])


def test_a_bound_below_one_the_path_already_missed_is_not_searched_again(monkeypatch):
    from solvers.reductions import fit_rate_constraint

    # the reduction's rule (the smoothed stage, which may still find a head there, is tested apart)
    monkeypatch.setattr("solvers.reductions.SMOOTH_STAGE", False)
    head, est, problem, cons, backend, design = _path_start()
    warm = head._solver_state
    # as if the search at 0.05 had ended unmet
    state = dataclasses.replace(warm, rate=dataclasses.replace(warm.rate, missed_aim=0.05))
    sol, cert = fit_rate_constraint(est, problem, cons, eps=0.01, backend=backend, init=state, design=design)
    assert _fits(cert) == 0  # the previous head, re-checked (no fit)
    # ... at the threshold (intercept) this bound chooses: never a larger gap than it had, unless met
    assert cert.eps_met or cert.achieved_gap <= head.certificate_.achieved_gap + 1e-12
    np.testing.assert_array_equal(sol.coef, head.coef_.ravel())
    assert cert.eps_met is (cert.achieved_gap <= 0.01)
    assert any("not searched" in n for n in cert.notes)
    # a looser bound than the missed one is searched as usual
    _, cert = fit_rate_constraint(est, problem, cons, eps=0.06, backend=backend, init=state, design=design)
    assert not any("not searched" in n for n in cert.notes)


def test_below_a_stall_only_newton_steps_are_tried(monkeypatch):
    from solvers.reductions import NEWTON_HALVINGS, NEWTON_STEPS, fit_rate_constraint

    monkeypatch.setattr("solvers.reductions.SMOOTH_STAGE", False)  # the reduction alone (the stage: below)
    head, est, problem, cons, backend, design = _path_start()
    gap = head.certificate_.achieved_gap
    warm = head._solver_state
    state = dataclasses.replace(warm, rate=dataclasses.replace(warm.rate, stalled_at=0.5 * gap))  # stalled well below its gap
    eps = 0.25 * gap
    _, cert = fit_rate_constraint(est, problem, cons, eps=eps, backend=backend, init=state, design=design)
    assert any("Newton steps only" in n for n in cert.notes)
    assert _fits(cert) <= 1 + 2 * NEWTON_STEPS * (NEWTON_HALVINGS + 1)  # no bracketing, no cold search
    # without the stall the same bound gets the whole search, and a head at least as close
    _, full = fit_rate_constraint(est, problem, cons, eps=eps, backend=backend, init=head._solver_state,
                                  design=design)
    assert not any("Newton steps only" in n for n in full.notes)
    assert full.achieved_gap <= cert.achieved_gap + 1e-12 or full.eps_met


def test_below_a_stall_the_smoothed_stage_goes_on_without_a_weighted_fit():
    """Where the smoothed stage follows (label-conditioned rates), a bound below a stall gets no
    Newton step: the previous head is the reduction's, and the stall is handed on."""
    from solvers.reductions import fit_rate_constraint

    head, est, problem, cons, backend, design = _path_start()
    gap = head.certificate_.achieved_gap
    warm = head._solver_state
    state = dataclasses.replace(warm, rate=dataclasses.replace(warm.rate, stalled_at=0.5 * gap))
    sol, cert = fit_rate_constraint(est, problem, cons, eps=0.25 * gap, backend=backend, init=state, design=design)
    assert _fits(cert) == 0
    assert any(n.startswith("no Newton step") for n in cert.notes)
    assert sol.state.rate.stalled_at is not None
    # the next bound starts from the same head (centred and back: equal to rounding)
    np.testing.assert_allclose(sol.state.theta, warm.theta, rtol=1e-12, atol=1e-12)


def test_a_search_that_reaches_its_target_records_no_stall():
    head, *_ = _path_start(eps=0.015)  # (at 0.02 the unconstrained fit's best threshold meets it)
    cert, state = head.certificate_, head._solver_state
    assert cert.eps_met and any(cert.multipliers)  # an active bound, met
    # the chosen head is the most accurate candidate at its best threshold, not necessarily the fit
    # that reached the target, so only its bound is asserted
    assert cert.achieved_gap <= cert.aimed_at
    assert state.rate.stalled_at is None and state.rate.missed_aim is None
