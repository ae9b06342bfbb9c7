"""The deterministic Lagrangian reduction for rate constraints on K-class heads (``dp``, ``eopp``, ``eo``).

The binary reduction (:mod:`solvers.reductions`) carried over to K classes. Each rate gap is
linear in the one-hot predictions, :math:`\\gamma_r(\\hat y) = \\sum_i M_{ri} [\\hat y_i = c_r]`
(row ``r`` is about class :math:`c_r`; :class:`~solvers.constraints.ClassRateMoments`), so for
multipliers :math:`\\lambda` the Lagrangian
:math:`\\mathrm{err}(\\hat y) + \\lambda^\\top \\gamma(\\hat y)` is a **cost-sensitive K-class
problem**: predicting class ``k`` for row ``i`` costs

.. math::

    c_{ik}(\\lambda) = \\frac{v_i}{V} [k \\ne y_i] + \\sum_{r : c_r = k} \\lambda_r M_{ri}.

Its convex surrogate is the cost-weighted softmax loss of :mod:`solvers.multinomial` with
weights :math:`Q_{ik} = \\max_j c_{ij} - c_{ik} \\ge 0` (each class weighted by how much cheaper
it is than the worst one) plus the head's L2 penalty: one **cost-sensitive multinomial fit per
multiplier value**. For two classes these weights are exactly the binary reduction's (label
:math:`[\\delta_i < 0]`, weight :math:`|\\delta_i|`), and at :math:`\\lambda = 0` the fit is the
unconstrained head.

The multipliers are searched along the ray of the first violation
(:math:`\\lambda = t\\, \\gamma(0) / \\lVert \\gamma(0) \\rVert_\\infty`, doubling ``t`` and then
Illinois steps until the largest gap lands just inside ``eps_t = 0.9 aim``), which finds their
scale; then by **Newton steps** that put every binding gap at :math:`\\pm \\varepsilon_t`: on the
active rows (violated, or with a multiplier), of which only linearly independent ones are kept
(the rows of one class and event sum to zero over groups, and ``dp``'s over classes), the
Jacobian :math:`\\partial\\gamma / \\partial\\lambda` is estimated by finite differences, one
warm fit per row. A hard gap is a step function, so the differences are taken of the
**smoothed** gaps :math:`\\sum_i M_{ri}\\, \\mathrm{softmax}(z_i / \\tau)_{c_r}`, with ``tau`` of
Silverman's rule on the margins between the two largest scores (the binary Newton steps smooth
:math:`1[z > 0]` the same way). A row whose multiplier would change sign is released. Where they stall, sign-based per-coordinate steps (Rprop) on the KKT residual
(:func:`solvers.multiplier_newton.kkt_residual`), and last a continuation over tighter and
tighter targets, take over. Every weighted fit is warm-started
from the previous head. Each head is judged at its best per-class logit offsets (the search steers
by its own intercepts; :mod:`solvers.threshold_multiclass`), which its intercepts absorb. Of all
converged heads, the one that meets :math:`|\\gamma_r| \\le
\\varepsilon` on the fit split with the least weighted 0-1 error is returned (checked with
float64 products): **one deterministic head**. If none meets it, the head with the smallest gap
is returned with ``eps_met=False``. As in the binary reduction the search aims at
``aim = max(eps, resolution)``.
"""

from __future__ import annotations

import time

import numpy as np

from . import multinomial as mn
from .backends import Solution
from .certificate import Certificate, passes_lower_bound
from .multiplier_newton import NewtonTargets, kkt_residual, sign_step
from .reductions import SEARCH_TOL, TARGET_FRACTION, WARM_BAND
from .threshold_multiclass import OffsetSearch

#: probes of the ray search (doubling, then Illinois) and of the sign-step stage
RAY_PROBES = 14
MAX_OUTER = 30
#: intermediate targets of the continuation fallback, from the first head's gap down to the aim
CONTINUATION_STEPS = 4
#: Newton steps on the multipliers (each costs one warm fit per independent active row, plus one)
NEWTON_STEPS = 4
#: finite-difference step of a multiplier, as a fraction of the multipliers' scale
FD_STEP = 0.1


def margin_bandwidth(Z: np.ndarray) -> float:
    """Silverman's bandwidth of the margins between the two largest scores of each row."""
    top2 = np.partition(Z, Z.shape[1] - 2, axis=1)[:, -2:]
    m = top2[:, 1] - top2[:, 0]
    spread = min(float(np.std(m)), float(np.subtract(*np.percentile(m, [75, 25]))) / 1.34)
    return max(0.9 * spread * len(m) ** -0.2, 1e-6)


def _evaluate(Z, y, v, V, mom):
    yhat = np.argmax(Z, axis=1)
    return mom.gaps(yhat), float((v * (yhat != y)).sum() / V)


def fit_rate_multiclass(est, problem, constraint, *, eps, backend, init=None, design=None):
    """Run the reduction for a K-class head; return ``(Solution, Certificate)`` (see module docstring)."""
    from .backends.torch import fit_threads

    with fit_threads(est.device):
        return _fit(est, problem, constraint, eps=eps, init=init, design=design)


def _fit(est, problem, constraint, *, eps, init=None, design=None):
    from .backends.torch import MSG_PENALTY, _numpy_pairs, _tensor, minimize
    from .backends.torch_softmax import ClassBlocks, WeightedSoftmax, block_preconditioner, class_shares
    from .errors import DataError
    from .reductions import rate_design

    if est.penalty not in ("l2", None):
        raise DataError(MSG_PENALTY.format(penalty=est.penalty))
    t_start = time.perf_counter()
    X, v = problem.X, problem.sample_weight
    y = problem.y.astype(np.int64)
    K, V = problem.n_classes, float(v.sum())
    n, d = X.shape
    mom = constraint.moments(problem.y, problem.groups, v, problem.group_labels, n_classes=K)
    R = mom.M.shape[0]
    if design is None:
        design = rate_design(X, est.device, center=est.fit_intercept)
    dev, mu = design.device, design.mu
    lay = ClassBlocks(d, K)
    lam2 = 0.0 if est.penalty is None else 1.0 / (float(est.C) * V)
    fixed = () if est.fit_intercept else lay.intercepts()
    precond = block_preconditioner(design, lam2, K, class_shares(problem))
    passes0 = design.passes
    tol = max(float(est.tol), 1e-6)
    search_tol = max(tol, SEARCH_TOL)
    err_cost = (v / V)[:, None] * (np.arange(K)[None, :] != y[:, None])  # (n, K)
    resolution = mom.resolution
    aim = max(float(eps), resolution)
    eps_t = TARGET_FRACTION * aim
    theta0 = np.zeros((K, d + 1))
    if est.fit_intercept:
        theta0[:, d] = mn.base_intercept(problem.y, v, K)
    theta0 = theta0.reshape(-1)
    lam0 = np.zeros(R)
    warm = bool(init and len(init.get("theta", ())) == theta0.shape[0])
    if warm:
        theta0 = np.asarray(init["theta"], dtype=np.float64)
        if len(init.get("lam", ())) == R:
            lam0 = np.asarray(init["lam"], dtype=np.float64).copy()
    state = {"theta": lay.to_centered(_tensor(theta0, dev), mu), "pairs": init.get("pairs") if warm else None,
             "it": 0, "fits": 0}
    offsets = OffsetSearch(mom, y, v, fit_intercept=est.fit_intercept)
    history = []  # (err, max gap, lam, theta (centred), stationarity, converged, OffsetChoice)
    gaps_of = {}  # id(history entry) -> its gaps

    def run(lam_k):
        cost = err_cost + mom.costs(lam_k)
        Q = _tensor(cost.max(axis=1, keepdims=True) - cost, dev)
        obj = WeightedSoftmax(Q, lam2, lay)
        res = minimize(design, obj, state["theta"], fixed=fixed, tol=search_tol, max_iter=int(est.max_iter),
                       pairs=state["pairs"], precond=precond, layout=lay)
        state["it"] += res.n_iter
        state["fits"] += 1
        state["theta"], state["pairs"] = res.theta, res.pairs
        state["Z"] = res.z.cpu().numpy()
        gaps, err = _evaluate(state["Z"], y, v, V, mom)
        # the search steers by the fit's own intercepts; the head is chosen at its best per-class offsets
        history.append((err, float(np.abs(gaps).max()), lam_k.copy(), res.theta.clone(), res.stationarity,
                        res.converged, offsets.choose(state["Z"], aim)))
        gaps_of[id(history[-1])] = gaps
        return gaps

    def met(bound):
        return any(h[1] <= bound for h in history)

    # rows as linear functionals of the one-hot predictions, centred over classes (every row of
    # predictions sums to 1): their dependence tells which rows can bind together
    cent = np.eye(K)[mom.classes] - 1.0 / K  # (R, K)
    targets = NewtonTargets((mom.M[:, :, None] * cent[:, None, :]).reshape(R, -1))

    def smoothed(Z, tau):
        P = mn.softmax(Z / tau)
        return np.einsum("rn,nr->r", mom.M, P[:, mom.classes])

    def start(bound):
        """The head to search from: the least error among those that meet ``bound``, else the
        smallest gap; it becomes the state's head."""
        ok = [e for e in history if e[1] <= bound]
        best = min(ok, key=lambda e: e[0]) if ok else min(history, key=lambda e: e[1])
        if best is not history[-1]:  # its scores: one product (a probe's (n, K) scores are not kept)
            state["Z"] = lay.scores(design, best[3]).cpu().numpy()
        state["theta"] = best[3]
        return best[2], gaps_of[id(best)]

    def newton(lam_k, gaps_k, scale, bound):
        """Newton steps aiming every binding gap at ``0.9 bound``; True once a head meets
        ``bound`` with every binding gap within ``WARM_BAND`` of the target."""
        target = TARGET_FRACTION * bound
        for _ in range(NEWTON_STEPS):
            r = kkt_residual(lam_k, gaps_k, target)
            if float(np.abs(gaps_k).max()) <= bound and float(np.abs(r).max()) <= WARM_BAND * bound:
                return True
            active = (lam_k != 0) | (np.abs(gaps_k) > target)
            side = np.where(lam_k != 0, np.sign(lam_k), np.sign(gaps_k))
            idx = targets._independent([k for k in np.argsort(-np.abs(gaps_k), kind="stable") if active[k]])
            if not idx:
                break
            theta_k, pairs_k, Z_k = state["theta"], state["pairs"], state["Z"]
            tau = margin_bandwidth(Z_k)
            s_k = smoothed(Z_k, tau)
            J = np.zeros((R, R))
            for j in idx:  # secants of the smoothed gaps, one warm fit per row
                h = FD_STEP * max(abs(float(lam_k[j])), scale) * (side[j] if side[j] != 0 else 1.0)
                lam_p = lam_k.copy()
                lam_p[j] += h
                state["theta"], state["pairs"] = theta_k, pairs_k
                run(lam_p)
                J[:, j] = (smoothed(state["Z"], tau) - s_k) / h
            lam_n = targets(lam_k, gaps_k, J, target)
            merit = float(np.linalg.norm(r))
            for step in (1.0, 0.5):
                trial = lam_k + step * (lam_n - lam_k)
                state["theta"], state["pairs"] = theta_k, pairs_k
                gaps_n = run(trial)
                if float(np.linalg.norm(kkt_residual(trial, gaps_n, target))) < merit:
                    break
            else:
                break
            lam_k, gaps_k = trial, gaps_n
        return met(bound)

    def ray(lam_s, gaps_s, t, bound):
        """Double ``t`` along the start's violation, then Illinois steps, until the largest gap
        lands in ``[0.9 bound - WARM_BAND bound, 0.9 bound]``; stops where the gaps grow again."""
        target = TARGET_FRACTION * bound
        # only the violated rows get multipliers (the others would over-constrain the head)
        u = np.where(np.abs(gaps_s) > target, gaps_s, 0.0) / float(np.abs(gaps_s).max())
        sgn = np.sign(gaps_s)

        def h(g):  # the largest gap in the direction of the start's violation: falls along the ray
            return float(np.max(g * sgn)) - target

        t_a, f_a, t_b, f_b = 0.0, h(gaps_s), None, None
        side, probes = 0, 0
        while probes < RAY_PROBES:
            if t_b is not None:
                if t_b - t_a <= 0.02 * t_b:
                    break
                t = t_b - f_b * (t_b - t_a) / (f_b - f_a) if f_b != f_a else 0.5 * (t_a + t_b)
                t = min(max(t, t_a + 0.05 * (t_b - t_a)), t_b - 0.05 * (t_b - t_a))
            g = run(lam_s + t * u)
            f = h(g)
            probes += 1
            if -WARM_BAND * bound <= f <= 0 and float(np.abs(g).max()) <= bound:
                return
            if f <= 0:
                if t_b is not None and side == -1:
                    f_a *= 0.5
                t_b, f_b, side = t, f, -1
            elif t_b is None:
                if f > f_a:  # the gaps grow again: this direction overshoots other rows; Newton's turn
                    return
                t_a, f_a = t, f
                t *= 2.0
            else:
                if side == 1:
                    f_b *= 0.5
                t_a, f_a, side = t, f, 1

    def rprop(lam_k, scale, bound, probes):
        """Per-coordinate sign steps on the KKT residual."""
        target = TARGET_FRACTION * bound
        step = np.full(R, 0.1 * scale)
        prev_r = np.zeros(R)
        for _ in range(probes):
            gaps = run(lam_k)
            if float(np.abs(gaps).max()) <= bound:
                return
            r = kkt_residual(lam_k, gaps, target)
            if not (np.abs(r) > 1e-12).any() or step.max() < 1e-6:
                return
            lam_k, prev_r, step = sign_step(lam_k, r, prev_r, step)

    def attempt(bound, t_ray, probes=MAX_OUTER):
        """Meet ``bound`` from the best head so far: the ray (which finds the multipliers' scale),
        Newton steps, then sign steps."""
        lam_s, gaps_s = start(bound)
        if float(np.abs(gaps_s).max()) > bound:
            ray(lam_s, gaps_s, t_ray, bound)
            lam_s, gaps_s = start(bound)
        scale = max(float(np.abs(lam_s).max()), t_ray)
        if not newton(lam_s, gaps_s, scale, bound):
            lam_s, _ = start(bound)
            rprop(lam_s, max(float(np.abs(lam_s).max()), t_ray), bound, probes)

    gaps0 = run(lam0)
    g0 = float(np.abs(gaps0).max())
    if g0 > aim:
        t0 = 0.25 * max(float(np.abs(lam0).max()), 0.25) if warm else 0.25
        attempt(aim, t0)
        if not met(aim):
            # continuation: meet looser bounds first, geometrically from the start's gap down to the
            # aim, each from the last (a sweep's warm path meets bounds one search from afar misses)
            for bound in aim * (g0 / aim) ** (np.arange(CONTINUATION_STEPS - 1, -1, -1) / CONTINUATION_STEPS):
                attempt(float(bound), 0.25 * t0, probes=MAX_OUTER // 3)
    # choose: feasible with least error at the best offsets, checked with exact float64 products
    history = [(h[6].error, h[6].max_gap) + h[2:] for h in history]
    level = eps if any(h[1] <= eps for h in history) else aim
    feas = sorted((h for h in history if h[1] <= level), key=lambda h: h[0])
    checks = [0]

    def check(h):
        checks[0] += 1
        th = lay.from_centered(h[3], mu).cpu().numpy()
        th.reshape(K, d + 1)[:, d] += h[6].offsets  # the intercepts absorb the offsets
        W, b = mn.unstack(th, K)
        g2, e2 = _evaluate(mn.scores(X, W, b), y, v, V, mom)
        return h, th, g2, e2

    chosen = None
    for h in feas[:5]:
        cand = check(h)
        if float(np.abs(cand[2]).max()) <= level:
            chosen = cand
            break
    if chosen is None:
        chosen = check(min(history, key=lambda h: (h[1], h[0])))
    h, th, g2, e2 = chosen
    coef, intercept = mn.identified(*mn.unstack(th, K))
    gap = float(np.abs(g2).max())
    wall = time.perf_counter() - t_start
    notes = [f"{state['fits']} weighted multinomial fits on the multiplier path"]
    if not h[5]:
        notes.append("the chosen weighted fit stopped at max_iter (its predictions were still checked)")
    sol = Solution(coef=coef, intercept=intercept, multipliers=h[2], status="eps_met" if gap <= eps else "eps_not_met",
                   solver="lagrangian-reduction/active-set-lbfgs", n_iter=state["it"], wall_time=wall, notes=notes,
                   # the warm state: the weighted fit as it was (without the offsets)
                   state={"theta": mn.stack(*mn.identified(*mn.unstack(lay.from_centered(h[3], mu).cpu().numpy(), K))),
                          "lam": h[2], "gaps": np.asarray(g2, dtype=np.float64),
                          "pairs": _numpy_pairs(state["pairs"]) if state["pairs"] is not None else None})
    cert = Certificate(
        backend="torch", solver=sol.solver, status=sol.status, constraint=constraint.name, eps=float(eps),
        objective=None, zero_one_error=e2, max_violation=max(0.0, gap - eps), stationarity=float(h[4]),
        n_iter=state["it"], wall_time=wall, tol=float(est.tol), achieved_gap=gap, eps_met=bool(gap <= eps),
        multipliers=tuple(float(x) for x in h[2]), notes=tuple(notes), resolution=resolution, aimed_at=aim,
        passes=design.passes - passes0 + checks[0], passes_lower_bound=passes_lower_bound(warm),
    )
    return sol, cert


__all__ = ["fit_rate_multiclass"]
