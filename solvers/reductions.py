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
fit is warm-started from the previous head, so each costs a few L-BFGS iterations.

Every converged fit is a candidate judged at its best intercept: the exact threshold search
(:mod:`solvers.threshold`) gives the gaps and error of every threshold from one sort of its
scores. Where the bound binds on a rate conditioned on the label (``eopp``, ``eo``,
``error-rate``), the smoothed-rate stage (:mod:`solvers.smoothed`) adds candidates from the
reduction's head. Of all candidates, the one that meets ``|gamma_k| <= eps`` on the fit split
with the lowest weighted error is returned, checked with the exact ``predict()`` arithmetic:
**one deterministic head**, never a randomized mixture. If none meets the bound, the head with
the smallest gap is returned with ``eps_met=False``. (See ``docs/design/rate-search.md``.)

A 0/1 rate gap moves in steps of one prediction's weight over its group's weight (the
**resolution**, the largest entry of ``|M a|``). Below it a bound can rarely be met exactly, so
the search aims at ``max(eps, resolution)`` and skips the cold fallback there; the certificate
records both (``resolution``, ``aimed_at``) and the passes over ``X`` the head cost.

Along a path the reduction can reach a **floor**: on Adult's ``eo`` the gaps flatten out at
about 0.02-0.027, where the multipliers that would go further drive one group's cell costs
through zero and the gaps jump to 0.5 (see docs/benchmarks.md). A bound below a gap at which
the previous bound's Newton steps stalled short of their target gets one Newton step only,
and a bound below one the path already missed is not searched again: its head is the previous
head, reported unmet (whatever meets it would have met the looser bound).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._linalg import x_dot
from .certificate import Certificate, passes_lower_bound
from .backends import Solution, WarmStart
from .multiplier_newton import NewtonTargets, gap_jacobian, kkt_residual, newton_affordable, sign_step
from .smoothed import smoothed_stage
from .threshold import ThresholdSearch

#: aim the search at this fraction of eps so that small sample effects stay inside the bound
TARGET_FRACTION = 0.9
MAX_OUTER = 30
#: KKT tolerance of the weighted fits during the multiplier search (scikit-learn's default)
SEARCH_TOL = 1e-4
#: L-BFGS steps per multiplier value in the cheap first stage of the search
INEXACT_ITERS = 8
#: along a path, accept a converged fit whose largest gap is within this fraction of eps below the target
WARM_BAND = 0.05
#: along a path, the sign-step stage stops after this many probes without a smaller largest gap
WARM_STALL = 8
#: run the smoothed-rate stage (:mod:`solvers.smoothed`) after the reduction where the bound binds
SMOOTH_STAGE = True
#: L-BFGS iterations per temperature and multiplier update (its heads are judged by their hard
#: predictions, at their best threshold: an inexact stage is fine)
SMOOTH_ITERS = 40
#: Newton steps on the multipliers before the bracketing search takes over
NEWTON_STEPS = 8
#: a Newton step that does not shrink the KKT residual is halved at most this many times
NEWTON_HALVINGS = 3


@dataclass
class Candidate:
    """A converged weighted fit of the search, judged at its best threshold (intercept).

    ``error`` and ``gap`` (the largest ``|gamma_k|``) are those of the threshold that the
    threshold search (:mod:`solvers.threshold`) chooses for the bound, ``cut`` that threshold on
    the search's scores; ``raw_gap`` is the gap at the fit's own intercept (what the multiplier
    steps steer).
    """

    error: float
    gap: float
    lam: np.ndarray
    theta: object  # torch.Tensor, centred coordinates
    stationarity: float
    converged: bool
    raw_gap: float
    cut: float = 0.0


def _threshold(thr, z, aim):
    """The threshold of scores ``z``: the most accurate within ``aim = max(eps, resolution)``, else
    the smallest gap. Below the resolution a bound is met, if at all, by a (near) constant head:
    the most accurate head within the resolution is worth more to a user than that."""
    sc = thr.scan(z)
    return sc.best(aim) or sc.smallest_gap()


def _candidate(thr, z, gaps, err, lam, theta, stationarity, converged, aim):
    """The :class:`Candidate` of a converged fit with scores ``z`` (at their best threshold)."""
    raw = float(np.abs(gaps).max())
    if thr is None:  # no intercept to move
        return Candidate(err, raw, lam.copy(), theta, stationarity, converged, raw)
    ch = _threshold(thr, z, aim)
    return Candidate(ch.error, ch.max_gap, lam.copy(), theta, stationarity, converged, raw, ch.cut)


@dataclass
class Checked:
    """A candidate checked with the exact ``predict()`` arithmetic (float64 ``X @ w``)."""

    cand: Candidate
    theta: np.ndarray  # the weighted fit, decentred (d + 1,)
    intercept: float  # the head's intercept after the threshold search
    gaps: np.ndarray
    error: float
    raw_gaps: np.ndarray  # at the fit's own intercept ``theta[d]``

    @property
    def gap(self) -> float:
        return float(np.abs(self.gaps).max())


def _smoothed_candidates(design, problem, mom, thr, red, *, aim, bound, lam2, fixed, tol, max_iter, precond, mult0):
    """The smoothed-rate stage (:func:`solvers.smoothed.smoothed_stage`) from the checked reduction
    head ``red`` (at its threshold): ``(candidates, last multipliers, L-BFGS iterations)``."""
    from .backends.torch import _tensor

    d = design.d
    y, v = problem.y, problem.sample_weight
    V = float(v.sum())
    start = design.to_centered(_tensor(np.r_[red.theta[:d], red.intercept], design.device))
    heads, mult = smoothed_stage(design, y, v, mom.M * mom.a, mom.M @ mom.b0, start, lam2=lam2, bound=bound,
                                 fixed=fixed, tol=tol, max_iter=max_iter, precond=precond, mult0=mult0)
    cands = []
    for sh in heads:
        zn = sh.z.cpu().numpy()
        gaps, err = _evaluate(zn, y, v, V, mom)
        cands.append(_candidate(thr, zn, gaps, err, red.cand.lam, sh.theta, sh.stationarity, sh.converged, aim))
    return cands, mult, sum(sh.n_iter for sh in heads)


def _evaluate(z, y, v, V, mom):
    yhat = (z > 0).astype(np.float64)
    gaps = mom.gaps(yhat)
    err = float((v * (yhat != y)).sum() / V)
    return gaps, err


def rate_design(X, device, *, center):
    """The :class:`~solvers.backends.torch.Design` of a rate head's weighted fits.

    float64 features are multiplied in float32 on the CPU (a copy: half the memory traffic of
    a pass, about 1e-7 relative error in the scores): a rate head is judged by its hard
    predictions, and the chosen head's are checked with float64 products of ``X``.
    """
    from .backends.torch import Design

    if isinstance(X, np.ndarray) and X.dtype == np.float64 and str(device) == "cpu":  # not a streamed source
        X = X.astype(np.float32)
    return Design(X, device, center=center)


def fit_rate_constraint(est, problem, constraint, *, eps, backend, init=None, design=None):
    """Run the reduction; return ``(Solution, Certificate)`` (see module docstring).

    See :func:`_fit_rate_constraint`; torch runs at one CPU thread meanwhile
    (:func:`solvers.backends.torch.fit_threads`).
    """
    from .backends.torch import fit_threads

    init = _warm_view(init)
    if problem.n_classes > 2:  # the same reduction with cost-sensitive multinomial fits
        from .reductions_multiclass import fit_rate_multiclass

        sol, cert = fit_rate_multiclass(est, problem, constraint, eps=eps, backend=backend, init=init, design=design)
    else:
        with fit_threads(est.device):
            sol, cert = _fit_rate_constraint(est, problem, constraint, eps=eps, backend=backend, init=init,
                                             design=design)
    sol.state = _warm_view(sol.state, back=True)
    return sol, cert


#: the keys of the searches' state dict that are the backends' :class:`~solvers.backends.WarmStart` fields
_SHARED_KEYS = ("theta", "eps", "pairs")


def _warm_view(warm, back=False):
    """The one adaptation of the reductions to :class:`~solvers.backends.WarmStart`: the state
    dict the searches read (``theta``, ``eps``, ``pairs`` from the WarmStart's fields, the rest
    from its ``rate``), or with ``back`` the WarmStart of a search's returned state dict."""
    if back:
        return WarmStart(theta=warm["theta"], pairs=warm.get("pairs"),
                         rate={k: val for k, val in warm.items() if k not in _SHARED_KEYS})
    if warm is None:
        return None
    view = dict(warm.rate or {})
    view.update((k, getattr(warm, k)) for k in _SHARED_KEYS if getattr(warm, k) is not None)
    return view


def _fit_rate_constraint(est, problem, constraint, *, eps, backend, init=None, design=None):
    """The reduction itself.

    ``init`` (a previous head's ``state``) warm-starts the head and the multipliers. Along a
    path (``init`` holds the previous bound and its rate gaps) the search starts at the
    multipliers extrapolated in ``eps`` from the last heads, with converged fits only, and
    stops as soon as a converged fit lands in the band ``[TARGET_FRACTION - WARM_BAND,
    TARGET_FRACTION] * eps`` (a cold search stops when its bracket is 2% wide).
    """
    import torch

    from .backends.torch import MSG_PENALTY, Design, WeightedLogistic, _numpy_pairs, _tensor, minimize
    from .errors import DataError

    if est.penalty not in ("l2", None):
        raise DataError(MSG_PENALTY.format(penalty=est.penalty))
    t_start = time.perf_counter()  # the head's wall clock (t_init etc. are ray positions)
    X, y, v = problem.X, problem.y, problem.sample_weight
    V = float(v.sum())
    n, d = X.shape
    mom = constraint.moments(y, problem.groups, v, problem.group_labels)
    K = mom.M.shape[0]
    if design is None:
        design = rate_design(X, est.device, center=est.fit_intercept)
    dev = design.device
    lam2 = 0.0 if est.penalty is None else 1.0 / (float(est.C) * V)
    fixed = () if est.fit_intercept else (d,)
    precond = design.preconditioner(lam2, d + 1)
    passes0 = design.passes
    checks = [0]  # exact predict() products, outside the design
    tol = max(float(est.tol), 1e-6)  # a chosen head that stopped at max_iter is polished to this
    # the search only needs each head's predictions: sklearn's default tolerance is enough
    search_tol = max(tol, SEARCH_TOL)
    base = v * (1.0 - 2.0 * y) / V
    Ma = mom.M * mom.a  # (K, n): cost of yhat_i = 1 through gap k
    p = float(np.clip((v * y).sum() / V, 1e-6, 1 - 1e-6))
    theta = torch.zeros(d + 1, dtype=torch.float64, device=dev)
    theta[d] = np.log(p / (1 - p)) if est.fit_intercept else 0.0
    theta_cold = theta.clone()
    lam = np.zeros(K)
    if init and "theta" in init and len(init["theta"]) == d + 1:
        theta = design.to_centered(_tensor(init["theta"], dev))
        if "lam" in init and len(init["lam"]) == K:
            lam = np.asarray(init["lam"], dtype=np.float64).copy()
    # a 0/1 rate gap moves in steps of one prediction's weight over its group's weight: below
    # that step the search cannot land, so it aims at the larger of eps and that resolution
    resolution = float(np.abs(Ma).max()) if Ma.size else 0.0
    aim = max(float(eps), resolution)
    # every candidate is judged at its best intercept (one sort of its scores); without an
    # intercept the head's threshold stays at 0
    thr = ThresholdSearch(mom, y, v) if est.fit_intercept else None
    # with the smoothed-rate stage after it, the reduction's fallback searches (a cold search where
    # the warm one missed, all fits converged where the cheap stage missed) are skipped: near the
    # reduction's floor they cost 20-130 fits each (42 s of one Adult eo head) and the smoothed
    # stage, started from the reduction's best head, reaches the bounds they miss
    # Only rates conditioned on the label (eopp, eo, error-rate) get it: there the weighted fits
    # floor (Adult eo: 0.02-0.027); on dp the reduction reaches every bound and the stage won no
    # accuracy on Adult's 12-bound path at 4x its time (docs/design/rate-search.md)
    smoothing = (thr is not None and SMOOTH_STAGE
                 and (getattr(constraint, "event", "all") != "all" or getattr(constraint, "utility", "") == "error"))
    eps_t = TARGET_FRACTION * aim
    # along a path: the previous head's gaps (they do not depend on eps) and its multipliers
    prev = None
    if (init and init.get("eps") is not None and "gaps" in init and len(init["gaps"]) == K
            and "lam" in init and len(init["lam"]) == K and len(init.get("theta", ())) == d + 1):
        prev = (float(init["eps"]), lam.copy(), np.asarray(init["gaps"], dtype=np.float64))
    # along a path: the previous (looser) bound's search missed its own aim, so no head the search
    # reaches meets this one either (whatever meets it meets the looser aim): the previous head
    # is re-checked and returned, unmet, instead of failing the same search again
    floor = prev is not None and init.get("missed_aim") is not None and float(init["missed_aim"]) >= aim
    # ... and when its Newton steps stalled (a fresh step failed, or they ran out) above its own
    # target at a gap this bound lies below, the reduction is near a floor: one Newton step gets
    # a try, the bracketing searches (20-130 fits each, on Adult's eo paths always in vain) do not
    stalled = prev is not None and init.get("stalled_at") is not None and float(init["stalled_at"]) > aim
    lam_hist = list(init.get("lam_hist", ())) if prev else []
    history = []
    state = {"theta": theta, "it": 0, "pairs": None, "exact": True, "fits": 0, "newton": 0}
    targets = NewtonTargets(Ma)
    if prev and init.get("pairs") is not None:
        state["pairs"] = init["pairs"]
    if prev and init.get("jac") is not None and np.shape(init["jac"][0]) == (K, K):
        state["jac"] = (init["jac"][0], _tensor(init["jac"][1], dev))

    def run(lam_k):
        delta = base + Ma.T @ lam_k
        ylab = _tensor((delta < 0).astype(np.float64), dev)
        q = _tensor(np.abs(delta), dev)
        obj = WeightedLogistic(ylab, q, lam2, d)
        # curvature pairs carry over: the weighted objectives along the path are alike
        exact = state["exact"]
        # the head's scores carry over from the last fit (they do not depend on lam); refreshed
        # every few fits against drift
        z0 = state.get("z") if state["fits"] % 8 else None
        res = minimize(design, obj, state["theta"], fixed=fixed, tol=search_tol,
                       max_iter=int(est.max_iter) if exact else INEXACT_ITERS, pairs=state["pairs"], z0=z0,
                       precond=precond)
        state["it"] += res.n_iter
        state["fits"] += 1
        state["theta"] = res.theta
        state["z"] = res.z
        state["pairs"] = res.pairs
        zn = res.z.cpu().numpy()
        gaps, err = _evaluate(zn, y, v, V, mom)
        if exact:  # only converged heads are candidates
            history.append(_candidate(thr, zn, gaps, err, lam_k, res.theta.clone(), res.stationarity,
                                      res.converged, aim))
        return gaps

    def adopt(lam_k):
        """The previous head of a path as it is, a candidate and the search's start: its scores
        cost one product with X (a refit to this bound's tolerance cost 2-20)."""
        if "stationarity" not in init:
            return run(lam_k)
        th = state["theta"]
        state["z"] = design.mv(th[:d]) + th[d]
        zn = state["z"].cpu().numpy()
        gaps, err = _evaluate(zn, y, v, V, mom)
        history.append(_candidate(thr, zn, gaps, err, lam_k, th.clone(), float(init["stationarity"]),
                                  bool(init["converged"]), aim))
        state["adopted"] = 1
        return gaps

    def reached(thresholded=False):
        """Whether a converged head so far meets the aim (the merit of the steps, the KKT
        residual, may prefer a head that misses it to one that meets it).

        The steps go by the fit's own intercept: a head that meets the bound only through the
        threshold search does not end them (stopping there cost accuracy: dp eps=0.005 on the
        3000 x 32 embedding problem ended at error 0.294 instead of 0.251). The fallback searches
        (cold, or all fits converged) are spent only when no head meets it at any threshold.
        """
        return any((e.gap if thresholded else e.raw_gap) <= aim for e in history)

    def newton(lam_k, gaps_k, halvings=NEWTON_HALVINGS):
        """Newton steps from the converged fit at ``lam_k`` (:mod:`solvers.multiplier_newton`).

        True once a converged head meets the bound with every binding gap within ``WARM_BAND``
        of the target (or meets it with no multiplier at all), or when the steps run out or stop
        helping and some head on the way met it; otherwise False when a step, halved
        ``halvings`` times, no longer shrinks the KKT residual (the state is left at the last
        accepted head, a good warm start for the bracketing search).
        """
        steps = NEWTON_STEPS if newton_affordable(design) else 0
        while steps > 0:
            r = kkt_residual(lam_k, gaps_k, eps_t)
            met = float(np.abs(gaps_k).max()) <= aim
            # below the resolution any head that reaches it will do: the gaps cannot be steered finer
            if met and (float(np.abs(r).max()) <= WARM_BAND * aim or not lam_k.any() or eps < resolution):
                state["stall"] = False
                return True

            theta_k, z_k, pairs_k = state["theta"], state["z"], state["pairs"]
            # along a path the last head's Jacobian serves until a full step with it fails
            fresh = state.get("jac") is None
            if fresh:
                state["jac"] = gap_jacobian(design, z_k, base + Ma.T @ lam_k, Ma, lam2, est.fit_intercept)
            J, dtheta = state["jac"]
            goal = targets(lam_k, gaps_k, J, eps_t)
            merit = float(np.linalg.norm(r))
            step = 1.0
            for _ in range(halvings + 1 if fresh else 1):
                lam_n = lam_k + step * (goal - lam_k)
                # the predicted head warm-starts the fit: a few L-BFGS iterations correct it
                state["theta"] = theta_k + dtheta @ torch.as_tensor(lam_n - lam_k, dtype=torch.float64, device=dev)
                state.pop("z", None)
                gaps_n = run(lam_n)
                if float(np.linalg.norm(kkt_residual(lam_n, gaps_n, eps_t))) < merit:
                    break
                step *= 0.5
            else:
                state["theta"], state["z"], state["pairs"] = theta_k, z_k, pairs_k
                state.pop("jac")
                if fresh:
                    # the linear model fails here; a head that meets the bound is kept as it is
                    # (near a floor of the reduction the bracketing search spends 20-40 fits to
                    # move it a little closer to the target)
                    state["stall"] = True
                    return reached()
                continue  # a stale Jacobian: retry with a fresh one
            state["newton"] += 1
            steps -= 1
            lam_k, gaps_k = lam_n, gaps_n
        state["stall"] = newton_affordable(design)  # out of steps short of the target
        return reached()

    def search(lam_s, gaps_s, t_init, log, band=None):
        """Ray + Illinois (then Rprop) from ``lam_s``; ``log`` collects (lam, max gap, err proxy).

        With ``band``, a probe that meets eps within ``band`` of the target ends the search.
        """
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
        t = t_init
        for _ in range(12):
            f = h(probe(lam_s + t * u))
            if band is not None and -band <= f <= 0 and log[-1][1] <= aim:
                return lam_s + t * u
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
            if band is not None and -band <= f <= 0 and log[-1][1] <= aim:
                return lam_s + t * u
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
        if t_b is not None and any(e[1] <= aim for e in log):
            return lam_s + t_b * u
        if smoothing and state["exact"]:
            # converged sign steps near the floor cost 20-30 fits of ~200 passes each (Adult eo,
            # 4 groups); the smoothed stage goes on from the best head so far instead
            return min(log, key=lambda e: e[1])[0].copy() if log else lam_s.copy()
        # several rows pulling different ways: per-coordinate sign steps (Rprop)
        lam_k = min(log, key=lambda e: e[1])[0].copy() if log else lam_s.copy()
        step = np.full(K, 0.1 * max(t_b or t_a or t_init, 0.05 * t_init))
        prev_r = np.zeros(K)
        best, since = min((e[1] for e in log), default=np.inf), 0
        for _ in range(MAX_OUTER):
            gaps = probe(lam_k)
            if float(np.abs(gaps).max()) <= aim:
                break
            # along a path: give up early when the largest gap stops shrinking (the head then
            # gets the cold search, see below)
            since = 0 if log[-1][1] < best else since + 1
            best = min(best, log[-1][1])
            if band is not None and since >= WARM_STALL:
                break
            r = kkt_residual(lam_k, gaps, eps_t)
            if not (np.abs(r) > 1e-12).any() or step.max() < 1e-6:
                break
            lam_k, prev_r, step = sign_step(lam_k, r, prev_r, step)
        return lam_k

    if floor:
        adopt(prev[1])
        gaps0 = None
    elif prev and float(np.abs(prev[2]).max()) > aim:
        # warm along a path: the previous head (already solved) misses the new bound. Search
        # with converged fits from its multipliers, first probing where the multipliers of the
        # last heads extrapolate to (tightening the bound moves them a little).
        eps_p, lam_p, gaps0 = prev
        u = gaps0 / float(np.abs(gaps0).max())
        mg = float(np.abs(gaps0).max())
        t_ray = max(float(np.abs(lam_p).max()), 1e-3) * (mg - eps_t) / mg
        if lam_hist:
            eps_q, lam_q = lam_hist[-1]
            if eps_q != eps_p:
                pred = lam_p + (lam_p - np.asarray(lam_q)) * (eps - eps_p) / (eps_p - eps_q)
                t_pred = float(np.dot(pred - lam_p, u) / np.dot(u, u))
                if t_pred > 0:
                    t_ray = t_pred
        # the previous head is a candidate too: a head never ends with a larger gap than the
        # previous (looser) one, even where the search wanders off (no refit: one product)
        # Newton from there first; where its steps stop helping, the bracketing search from
        # the previous head as it was (Newton's last head sits where the linear model failed)
        gaps_p = adopt(lam_p)
        at_p = (state["theta"], state["z"], state["pairs"])
        # near a floor one full step (with a fresh Jacobian) shows whether the linear model sees a
        # way down; halving it only finds the floor again, at 20-50 passes a fit there
        if (not newton(lam_p, gaps_p, halvings=0 if stalled else NEWTON_HALVINGS) and not stalled
                and not (smoothing and reached(thresholded=True))):
            # (a head that meets the aim at its best threshold goes to the smoothed stage as it is)
            state["theta"], state["z"], state["pairs"] = at_p
            search(lam_p, gaps0, t_ray, [], band=WARM_BAND * aim)
        if not reached(thresholded=True) and eps >= resolution and not stalled and not smoothing:
            # the warm search missed: the cold search (from lam = 0 and the cold start; the warm
            # candidates stay in the running), so a path head never does worse than a cold solve
            # (a cold search from far-away warm multipliers can be much slower)
            state["theta"], state["pairs"] = theta_cold, None
            state.pop("z", None)
            lam = np.zeros(K)
            gaps0 = run(lam)
        else:
            gaps0 = None
    else:
        gaps0 = run(lam)
    if gaps0 is not None and float(np.abs(gaps0).max()) > aim and not newton(lam, gaps0):
        # stage 1: steer the multipliers with a few warm L-BFGS steps per value (cheap, inexact)
        state["exact"] = False
        theta_start, pairs_start = state["theta"], state["pairs"]
        lam_1 = search(lam, gaps0, 0.25, [])
        # stage 2: converged fits from there; refine with a short search if the bound is missed
        state["exact"] = True
        gaps1 = run(lam_1)
        if float(np.abs(gaps1).max()) > aim:
            scale = max(float(np.abs(lam_1 - lam).max()), 0.25)
            search(lam_1, gaps1, 0.05 * scale, [(e.lam, e.raw_gap) for e in history])
        if not reached(thresholded=True) and eps >= resolution and not smoothing:
            # the cheap stage misled us: rerun the whole search with converged fits
            state["theta"], state["pairs"] = theta_start, pairs_start
            state.pop("z", None)
            search(lam, gaps0, 0.25, [(e.lam, e.raw_gap) for e in history])
    # choose: feasible with least error, checked with the exact predict() arithmetic
    # (below the resolution: the heads that reach it, if none meets eps itself)
    # (below the resolution: the most accurate head that reaches it)
    level = aim
    feas = sorted((h for h in history if h.gap <= level), key=lambda h: h.error)

    def check(h):
        checks[0] += 1
        th = design.from_centered(h.theta).cpu().numpy()
        xw = x_dot(X, th[:d])
        raw_g, _ = _evaluate(xw + th[d], y, v, V, mom)
        # the threshold chosen again on the exact scores: ``xw + b > 0`` iff ``xw > -b`` in floats
        b = float(th[d]) if thr is None else -_threshold(thr, xw, aim).cut
        g2, e2 = _evaluate(xw + b, y, v, V, mom)
        return Checked(h, th, b, g2, e2, raw_g)

    def polish(h):
        """The weighted fit of ``h`` to the estimator's tolerance, checked."""
        delta = base + Ma.T @ h.lam
        obj = WeightedLogistic(_tensor((delta < 0).astype(np.float64), dev), _tensor(np.abs(delta), dev), lam2, d)
        res = minimize(design, obj, h.theta, fixed=fixed, tol=tol, max_iter=int(est.max_iter), pairs=state["pairs"],
                       precond=precond)
        state["it"] += res.n_iter
        c = check(Candidate(0.0, 0.0, h.lam, res.theta, res.stationarity, res.converged, 0.0))
        c.cand = Candidate(c.error, c.gap, h.lam, res.theta, res.stationarity, res.converged,
                           float(np.abs(c.raw_gaps).max()))
        return c

    chosen = None
    for h in feas[:5]:
        # a rate head is judged by its hard predictions, checked exactly below: a search fit that
        # converged at the search tolerance is kept as it is (polishing it to ``tol`` cost a third
        # to a half of a warm path's passes over X and moved no 0-1 error). Only a fit that
        # stopped at max_iter is polished first; it is kept if still feasible, else the
        # unpolished fit if that is feasible (the exact predict() arithmetic decides)
        if h.stationarity > tol and not h.converged:
            cand = polish(h)
            if cand.gap <= level:
                chosen = cand
                break
        cand = check(h)
        if cand.gap <= level:
            chosen = cand
            break
    if chosen is None:
        chosen = check(min(history, key=lambda h: (h.gap, h.error)))
    red = chosen  # the reduction's head: the warm state of the next bound
    smooth_mult = None
    # the smoothed-rate stage, from the reduction's head, where the bound binds
    if smoothing and (np.any(red.cand.lam != 0) or red.gap > level):
        cands, smooth_mult, n_it = _smoothed_candidates(
            design, problem, mom, thr, red, aim=aim, bound=eps_t, lam2=lam2, fixed=fixed, tol=search_tol,
            max_iter=min(int(est.max_iter), SMOOTH_ITERS), precond=precond,
            mult0=init.get("smooth_mult") if prev else None)
        state["it"] += n_it
        state["smoothed"] = len(cands)
        pick = next((c for c in map(check, sorted((c for c in cands if c.gap <= level), key=lambda c: c.error)[:3])
                     if c.gap <= level), None)
        if pick is None and red.gap > level:
            pick = check(min(cands, key=lambda c: (c.gap, c.error)))
        if pick is not None and ((pick.gap <= level and (red.gap > level or pick.error < red.error))
                                 or (red.gap > level and pick.gap < red.gap)):
            chosen = pick
            state["smooth_chosen"] = True
    h, th, g2, e2 = chosen.cand, chosen.theta, chosen.gaps, chosen.error
    best_gap = min(e.raw_gap for e in history)
    total_it = state["it"]
    gap = float(np.abs(g2).max())
    met = gap <= eps
    wall = time.perf_counter() - t_start
    notes = [f"{state['fits']} weighted fits on the multiplier path ({len(history) - state.get('adopted', 0)} converged, "
             f"{state['newton']} Newton steps)"]
    if stalled and not floor:
        notes.append(f"Newton steps only: the looser bound eps={prev[0]:g} stalled at gap "
                     f"{float(init['stalled_at']):.4g}, above this bound")
    if floor:
        notes.append(f"not searched: the looser bound eps={prev[0]:g} already ended unmet (aimed at "
                     f"{float(init['missed_aim']):.4g}), so no head of the reduction's search meets this one")
    if chosen.intercept != float(th[d]):
        notes.append(f"intercept re-chosen by the exact threshold search: {float(th[d]):.6g} -> {chosen.intercept:.6g} "
                     f"(gap {float(np.abs(chosen.raw_gaps).max()):.4g} -> {gap:.4g})")
    if state.get("smoothed"):
        notes.append(f"smoothed-rate stage: {state['smoothed']} heads from the reduction's (0-1 error "
                     f"{red.error:.4g}, gap {red.gap:.4g}); "
                     + ("one of them chosen" if state.get("smooth_chosen") else "the reduction's head kept"))
    if not h.converged:
        notes.append("the chosen fit stopped at max_iter (its predictions were still checked)")
    sol = Solution(coef=th[:d].copy(), intercept=chosen.intercept, multipliers=h.lam, status="eps_met" if met else "eps_not_met",
                   solver="lagrangian-reduction/active-set-lbfgs", n_iter=total_it, wall_time=wall, notes=notes,
                   # the warm state is the weighted fit and its own gaps (what the multiplier steps steer)
                   # (the reduction's head, also when the smoothed stage's is chosen)
                   state={"theta": red.theta, "lam": red.cand.lam, "gaps": np.asarray(red.raw_gaps, dtype=np.float64),
                          "stationarity": float(red.cand.stationarity), "converged": bool(red.cand.converged),
                          "smooth_mult": smooth_mult,
                          "missed_aim": aim if gap > aim else None,
                          # Newton stopped short of its target (not in the band): the gap it stalled at
                          "stalled_at": best_gap if state.get("stall") and best_gap > eps_t else None,
                          "lam_hist": (lam_hist + [(prev[0], prev[1])])[-2:] if prev else [],
                          "pairs": (_numpy_pairs(state["pairs"]) if state["pairs"] is not None and state["pairs"] is not (init or {}).get("pairs")
                                    else state["pairs"]),  # unchanged when no fit ran
                          "jac": (state["jac"][0], state["jac"][1].cpu().numpy()) if state.get("jac") else None})
    cert = Certificate(
        backend="torch", solver=sol.solver, status=sol.status, constraint=constraint.name, eps=float(eps),
        objective=None, zero_one_error=e2,  # a rate head minimises the 0-1 error, not the logistic loss
        max_violation=max(0.0, gap - eps), stationarity=float(h.stationarity), n_iter=total_it,
        wall_time=wall, tol=float(est.tol), achieved_gap=gap, eps_met=bool(met),
        multipliers=tuple(float(x) for x in h.lam), notes=tuple(notes),
        resolution=resolution, aimed_at=aim, passes=design.passes - passes0 + checks[0],
        passes_lower_bound=passes_lower_bound(bool(init and "theta" in init)),
    )
    return sol, cert
