"""A working row whose multiplier turns clearly negative leaves at once (:func:`solvers.backends.torch.minimize`).

The preconditioned first step from ``w = 0`` is about a Newton step: it can cross a row that the
optimum leaves slack, and the row enters the working set. Its multiplier is negative from the next
iterate on; dropping it only at the face's optimum cost a whole extra solve (an inactive
``dp-score`` bound at 20,000 x 512: 82 iterations against the unconstrained fit's 31). The row is
dropped as soon as ``|lambda|`` exceeds the projected gradient, once per row per solve.
"""

import numpy as np
import torch

from solvers.backends.torch import Design, WeightedLogistic, _tensor, minimize
from solvers.synthetic import make_fair_classification

TOL = 1e-7
LAM2 = 1e-3


def _setup():
    X, y, _ = make_fair_classification(1500, 12, embedding_like=True, seed=4)
    d = X.shape[1]
    design = Design(X, "cpu", center=True)
    obj = WeightedLogistic(_tensor(y, "cpu"), _tensor(np.full(len(y), 1.0 / len(y)), "cpu"), LAM2, d)
    return design, obj, design.preconditioner(LAM2, d + 1), d


def _first_direction(design, obj, precond, d):
    """The solve's first step from theta = 0: ``-T T^T g`` (no curvature pairs yet)."""
    theta = torch.zeros(d + 1, dtype=torch.float64)
    _, gz, gdir = obj.eval(design.mv(theta[:d]) + theta[d], theta)
    g = gdir.clone()
    g[:d] += design.rmv(gz)
    g[d] += gz.sum()
    return precond.t(-precond.tt(g))


def test_a_row_crossed_by_the_first_step_but_slack_at_the_optimum_costs_no_second_solve():
    design, obj, precond, d = _setup()
    free = minimize(design, obj, torch.zeros(d + 1, dtype=torch.float64), tol=TOL, precond=precond)
    step = _first_direction(design, obj, precond, d)
    # a row orthogonal to the optimum (a . theta* = 0) that the first full step crosses halfway
    a = step - (torch.dot(step, free.theta) / torch.dot(free.theta, free.theta)) * free.theta
    a /= torch.linalg.vector_norm(a)
    rhs = 0.5 * torch.dot(a, step)
    assert float(rhs) > 0.0
    res = minimize(design, obj, torch.zeros(d + 1, dtype=torch.float64), A=a[None, :], rhs=rhs[None],
                   tol=TOL, precond=precond)
    assert res.converged and res.working == [] and float(res.lam[0]) == 0.0
    assert float(a @ res.theta) < float(rhs)  # slack at the returned head
    # both heads stationary to TOL (inf-norm, p = d + 1 coordinates) for the same objective of
    # curvature >= LAM2: each within sqrt(p) TOL / LAM2 of the optimum (in 2-norm)
    gap = float(torch.linalg.vector_norm(res.theta - free.theta))
    assert gap <= 2 * (d + 1) ** 0.5 * TOL / LAM2
    # the row was dropped early: about the free solve's iterations (main before the change: 16
    # against 10, a second solve from cleared memory)
    assert res.n_iter <= free.n_iter + 3


def test_an_active_row_stays_and_carries_a_positive_multiplier():
    design, obj, precond, d = _setup()
    free = minimize(design, obj, torch.zeros(d + 1, dtype=torch.float64), tol=TOL, precond=precond)
    a = free.theta.clone()
    a[d] = 0.0
    a /= torch.linalg.vector_norm(a)
    rhs = 0.5 * torch.dot(a, free.theta)  # the optimum violates it: the row binds
    res = minimize(design, obj, torch.zeros(d + 1, dtype=torch.float64), A=a[None, :], rhs=rhs[None],
                   tol=TOL, precond=precond)
    assert res.converged and res.working == [0] and float(res.lam[0]) > 0.0
    assert abs(float(a @ res.theta - rhs)) <= 1e-12
