"""The deterministic Lagrangian reduction for rate constraints (``dp``, ``eopp``, ``eo``,
``error-rate``).

Following Agarwal et al. (2018), write each rate gap as a linear function of the hard
predictions, :math:`\\gamma(\\hat y) = M (a \\circ \\hat y + b_0)` (see
:class:`~solvers.constraints.RateMoments`), and the weighted error as
:math:`\\mathrm{err}(\\hat y) = \\frac1V \\sum_i v_i [\\hat y_i \\ne y_i]`. For multipliers
:math:`\\lambda \\in \\mathbb{R}^K` the Lagrangian
:math:`\\mathrm{err}(\\hat y) + \\lambda^\\top \\gamma(\\hat y)` is, up to a constant, a
cost-sensitive classification with per-sample cost of predicting 1 over 0

.. math::

    \\delta_i(\\lambda) = \\frac{v_i (1 - 2 y_i)}{V} + a_i (M^\\top \\lambda)_i,

i.e. a **weighted logistic regression** with labels :math:`\\tilde y_i = [\\delta_i < 0]` and
weights :math:`|\\delta_i|` (the logistic loss as the convex surrogate; the L2 penalty is the
head's ``||w||^2 / (2 C V)``). At :math:`\\lambda = 0` this is exactly the unconstrained fit.

The multipliers are searched by sign-based per-coordinate steps (Rprop) on the dual
residual :math:`\\gamma_k - \\varepsilon_t\\,\\mathrm{sign}(\\lambda_k)` (soft-thresholded at
:math:`\\lambda_k = 0`), with ``eps_t = 0.9 eps`` aiming just inside the bound. Every weighted
fit is warm-started from the previous head, so each costs a few L-BFGS iterations. Of all
heads on the path, the one that meets ``|gamma_k| <= eps`` on the fit split with the lowest
weighted error is returned: **one deterministic head**, never a randomized mixture. If none
meets the bound, the head with the smallest gap is returned with ``eps_met=False``.
"""

from __future__ import annotations

import time

import numpy as np

from ._linalg import x_dot
from .certificate import Certificate
from .backends import Solution

#: aim the search at this fraction of eps so that small sample effects stay inside the bound
TARGET_FRACTION = 0.9
MAX_OUTER = 30


def _evaluate(z, y, v, V, mom):
    yhat = (z > 0).astype(np.float64)
    gaps = mom.gaps(yhat)
    err = float((v * (yhat != y)).sum() / V)
    return gaps, err


def fit_rate_constraint(est, problem, constraint, *, eps, backend, init=None):
    """Run the reduction; return ``(Solution, Certificate)`` (see module docstring)."""
    import torch

    from .backends.torch import MSG_PENALTY, Design, WeightedLogistic, _tensor, minimize
    from .errors import DataError

    if est.penalty not in ("l2", None):
        raise DataError(MSG_PENALTY.format(penalty=est.penalty))
    t0 = time.perf_counter()
    X, y, v = problem.X, problem.y, problem.sample_weight
    V = float(v.sum())
    n, d = X.shape
    mom = constraint.moments(y, problem.groups, v, problem.group_labels)
    K = mom.M.shape[0]
    design = Design(X, est.device, center=est.fit_intercept)
    dev = design.device
    lam2 = 0.0 if est.penalty is None else 1.0 / (float(est.C) * V)
    fixed = () if est.fit_intercept else (d,)
    tol = max(float(est.tol), 1e-6)  # rate heads need predictions, not 1e-9 stationarity
    base = v * (1.0 - 2.0 * y) / V
    Ma = mom.M * mom.a  # (K, n): cost of yhat_i = 1 through gap k
    p = float(np.clip((v * y).sum() / V, 1e-6, 1 - 1e-6))
    theta = torch.zeros(d + 1, dtype=torch.float64, device=dev)
    theta[d] = np.log(p / (1 - p)) if est.fit_intercept else 0.0
    lam = np.zeros(K)
    if init and "theta" in init and len(init["theta"]) == d + 1:
        theta = design.to_centered(_tensor(init["theta"], dev))
        if "lam" in init and len(init["lam"]) == K:
            lam = np.asarray(init["lam"], dtype=np.float64).copy()
    eps_t = TARGET_FRACTION * eps
    history = []
    state = {"theta": theta, "it": 0}

    def run(lam_k):
        delta = base + Ma.T @ lam_k
        ylab = _tensor((delta < 0).astype(np.float64), dev)
        q = _tensor(np.abs(delta), dev)
        obj = WeightedLogistic(ylab, q, lam2, d)
        res = minimize(design, obj, state["theta"], fixed=fixed, tol=tol, max_iter=int(est.max_iter))
        state["it"] += res.n_iter
        state["theta"] = res.theta
        gaps, err = _evaluate(res.z.cpu().numpy(), y, v, V, mom)
        history.append((err, float(np.abs(gaps).max()), lam_k.copy(), res.theta.clone(), res.stationarity,
                        res.converged))
        return gaps

    gaps0 = run(lam)
    if float(np.abs(gaps0).max()) > eps:
        # phase 1: a ray lam0 + t u along the violation, bracketed and then solved by Illinois
        u = gaps0 / float(np.abs(gaps0).max())
        sgn = np.sign(gaps0)

        def h(g):  # largest gap in the direction of the original violation
            return float(np.max(g * sgn)) - eps_t

        t_a, f_a = 0.0, h(gaps0)
        t_b = f_b = None
        t = 0.25
        for _ in range(12):
            f = h(run(lam + t * u))
            if f <= 0:
                t_b, f_b = t, f
                break
            t_a, f_a = t, f
            t *= 2.0
        side = 0
        for _ in range(10 if t_b is not None else 0):
            if t_b - t_a <= 0.02 * t_b:
                break
            t = t_b - f_b * (t_b - t_a) / (f_b - f_a) if f_b != f_a else 0.5 * (t_a + t_b)
            t = min(max(t, t_a + 0.05 * (t_b - t_a)), t_b - 0.05 * (t_b - t_a))
            f = h(run(lam + t * u))
            if f <= 0:
                t_b, f_b = t, f
                if side == -1:
                    f_a *= 0.5
                side = -1
            else:
                t_a, f_a = t, f
                if side == 1:
                    f_b *= 0.5
                side = 1
        # phase 2 (several rows pulling different ways): per-coordinate sign steps (Rprop)
        if not any(e[1] <= eps for e in history):
            best = min(history, key=lambda e: e[1])
            lam = best[2].copy()
            state["theta"] = best[3]
            step = np.full(K, 0.1 * max(t_b or t_a or 0.25, 0.05))
            prev_r = np.zeros(K)
            for _ in range(MAX_OUTER):
                gaps = run(lam)
                if float(np.abs(gaps).max()) <= eps:
                    break
                r = np.where(lam > 0, gaps - eps_t, np.where(lam < 0, gaps + eps_t,
                             np.sign(gaps) * np.maximum(np.abs(gaps) - eps_t, 0.0)))
                active = np.abs(r) > 1e-12
                if not active.any() or step.max() < 1e-6:
                    break
                same = np.sign(r) == np.sign(prev_r)
                flip = (np.sign(r) == -np.sign(prev_r)) & (prev_r != 0)
                step = np.where(same & active, step * 1.5, np.where(flip, step * 0.5, step))
                new_lam = lam + np.where(active, np.sign(r) * step, 0.0)
                cross = (np.sign(new_lam) != np.sign(lam)) & (lam != 0)
                lam = np.where(cross, 0.0, new_lam)
                prev_r = np.where(active, r, prev_r)
    total_it = state["it"]
    # choose: feasible with least error, checked with the exact predict() arithmetic
    feas = sorted((h for h in history if h[1] <= eps), key=lambda h: h[0])
    chosen = None
    for h in feas[:5]:
        th = design.from_centered(h[3]).cpu().numpy()
        zz = x_dot(X, th[:d]) + th[d]
        g2, e2 = _evaluate(zz, y, v, V, mom)
        if float(np.abs(g2).max()) <= eps:
            chosen = (h, th, g2, e2)
            break
    if chosen is None:
        h = min(history, key=lambda h: (h[1], h[0]))
        th = design.from_centered(h[3]).cpu().numpy()
        zz = x_dot(X, th[:d]) + th[d]
        g2, e2 = _evaluate(zz, y, v, V, mom)
        chosen = (h, th, g2, e2)
    h, th, g2, e2 = chosen
    gap = float(np.abs(g2).max())
    met = gap <= eps
    wall = time.perf_counter() - t0
    notes = [f"{len(history)} weighted fits on the multiplier path"]
    if not h[5]:
        notes.append("the chosen weighted fit stopped at max_iter (its predictions were still checked)")
    sol = Solution(coef=th[:d].copy(), intercept=float(th[d]), multipliers=h[2], status="eps_met" if met else "eps_not_met",
                   solver="lagrangian-reduction/active-set-lbfgs", n_iter=total_it, wall_time=wall, notes=notes,
                   state={"theta": th, "lam": h[2]})
    cert = Certificate(
        backend="torch", solver=sol.solver, status=sol.status, constraint=constraint.name, eps=float(eps),
        objective=e2, max_violation=max(0.0, gap - eps), stationarity=float(h[4]), n_iter=total_it,
        wall_time=wall, tol=float(est.tol), achieved_gap=gap, eps_met=bool(met),
        multipliers=tuple(float(x) for x in h[2]), notes=tuple(notes),
    )
    return sol, cert
