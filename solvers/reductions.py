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
#: KKT tolerance of the weighted fits during the multiplier search (scikit-learn's default)
SEARCH_TOL = 1e-4
#: L-BFGS steps per multiplier value in the cheap first stage of the search
INEXACT_ITERS = 8


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
    tol = max(float(est.tol), 1e-6)  # the chosen head is polished to this
    # the search only needs each head's predictions: sklearn's default tolerance is enough
    search_tol = max(tol, SEARCH_TOL)
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
    state = {"theta": theta, "it": 0, "pairs": None, "exact": True, "fits": 0}

    def run(lam_k):
        delta = base + Ma.T @ lam_k
        ylab = _tensor((delta < 0).astype(np.float64), dev)
        q = _tensor(np.abs(delta), dev)
        obj = WeightedLogistic(ylab, q, lam2, d)
        # curvature pairs carry over: the weighted objectives along the path are alike
        exact = state["exact"]
        res = minimize(design, obj, state["theta"], fixed=fixed, tol=search_tol,
                       max_iter=int(est.max_iter) if exact else INEXACT_ITERS, pairs=state["pairs"])
        state["it"] += res.n_iter
        state["fits"] += 1
        state["theta"] = res.theta
        state["pairs"] = res.pairs
        gaps, err = _evaluate(res.z.cpu().numpy(), y, v, V, mom)
        if exact:  # only converged heads are candidates
            history.append((err, float(np.abs(gaps).max()), lam_k.copy(), res.theta.clone(), res.stationarity,
                            res.converged))
        return gaps

    def search(lam_s, gaps_s, t0, log):
        """Ray + Illinois (then Rprop) from ``lam_s``; ``log`` collects (lam, max gap, err proxy)."""
        u = gaps_s / float(np.abs(gaps_s).max())
        sgn = np.sign(gaps_s)

        def h(g):  # largest gap in the direction of the original violation
            return float(np.max(g * sgn)) - eps_t

        def probe(lam_k):
            g = run(lam_k)
            log.append((lam_k.copy(), float(np.abs(g).max())))
            return g

        t_a, f_a = 0.0, h(gaps_s)
        t_b = f_b = None
        t = t0
        for _ in range(12):
            f = h(probe(lam_s + t * u))
            if f <= 0:
                t_b, f_b = t, f
                break
            t_prev, f_prev = t_a, f_a
            t_a, f_a = t, f
            # secant extrapolation to the target (10% beyond, to bracket it), at most 4x
            if f_prev > f_a:
                t = t_a + 1.1 * (t_a - t_prev) * f_a / (f_prev - f_a)
                t = min(max(t, 1.25 * t_a), 4.0 * t_a)
            else:
                t = 2.0 * t_a
        side = 0
        for _ in range(10 if t_b is not None else 0):
            if t_b - t_a <= 0.02 * t_b:
                break
            t = t_b - f_b * (t_b - t_a) / (f_b - f_a) if f_b != f_a else 0.5 * (t_a + t_b)
            t = min(max(t, t_a + 0.05 * (t_b - t_a)), t_b - 0.05 * (t_b - t_a))
            f = h(probe(lam_s + t * u))
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
        if t_b is not None and any(e[1] <= eps for e in log):
            return lam_s + t_b * u
        # several rows pulling different ways: per-coordinate sign steps (Rprop)
        lam_k = min(log, key=lambda e: e[1])[0].copy() if log else lam_s.copy()
        step = np.full(K, 0.1 * max(t_b or t_a or t0, 0.05 * t0))
        prev_r = np.zeros(K)
        for _ in range(MAX_OUTER):
            gaps = probe(lam_k)
            if float(np.abs(gaps).max()) <= eps:
                break
            r = np.where(lam_k > 0, gaps - eps_t, np.where(lam_k < 0, gaps + eps_t,
                         np.sign(gaps) * np.maximum(np.abs(gaps) - eps_t, 0.0)))
            active = np.abs(r) > 1e-12
            if not active.any() or step.max() < 1e-6:
                break
            same = np.sign(r) == np.sign(prev_r)
            flip = (np.sign(r) == -np.sign(prev_r)) & (prev_r != 0)
            step = np.where(same & active, step * 1.5, np.where(flip, step * 0.5, step))
            new_lam = lam_k + np.where(active, np.sign(r) * step, 0.0)
            cross = (np.sign(new_lam) != np.sign(lam_k)) & (lam_k != 0)
            lam_k = np.where(cross, 0.0, new_lam)
            prev_r = np.where(active, r, prev_r)
        return lam_k

    gaps0 = run(lam)
    if float(np.abs(gaps0).max()) > eps:
        # stage 1: steer the multipliers with a few warm L-BFGS steps per value (cheap, inexact)
        state["exact"] = False
        theta_start, pairs_start = state["theta"], state["pairs"]
        lam_1 = search(lam, gaps0, 0.25, [])
        # stage 2: converged fits from there; refine with a short search if the bound is missed
        state["exact"] = True
        gaps1 = run(lam_1)
        if float(np.abs(gaps1).max()) > eps:
            scale = max(float(np.abs(lam_1 - lam).max()), 0.25)
            search(lam_1, gaps1, 0.05 * scale, [(e[2], e[1]) for e in history])
        if not any(e[1] <= eps for e in history):
            # the cheap stage misled us: rerun the whole search with converged fits
            state["theta"], state["pairs"] = theta_start, pairs_start
            search(lam, gaps0, 0.25, [(e[2], e[1]) for e in history])
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
    if float(np.abs(g2).max()) <= eps and h[4] > tol:
        # polish the chosen weighted fit to the estimator's tolerance; keep it if still feasible
        lam_c = h[2]
        delta = base + Ma.T @ lam_c
        obj = WeightedLogistic(_tensor((delta < 0).astype(np.float64), dev), _tensor(np.abs(delta), dev), lam2, d)
        res = minimize(design, obj, h[3], fixed=fixed, tol=tol, max_iter=int(est.max_iter), pairs=state["pairs"])
        state["it"] += res.n_iter
        th_p = design.from_centered(res.theta).cpu().numpy()
        g_p, e_p = _evaluate(x_dot(X, th_p[:d]) + th_p[d], y, v, V, mom)
        if float(np.abs(g_p).max()) <= eps:
            h = (e_p, float(np.abs(g_p).max()), lam_c, res.theta, res.stationarity, res.converged)
            th, g2, e2 = th_p, g_p, e_p
    total_it = state["it"]
    gap = float(np.abs(g2).max())
    met = gap <= eps
    wall = time.perf_counter() - t0
    notes = [f"{state['fits']} weighted fits on the multiplier path ({len(history)} converged)"]
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
