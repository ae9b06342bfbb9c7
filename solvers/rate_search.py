"""The rate-head search: one object for binary and K-class heads (issue 19).

A rate head meets ``|gamma_k| <= eps`` with hard predictions on the fit split. The search
(see :mod:`solvers.reductions` for the binary reduction and :mod:`solvers.reductions_multiclass`
for K classes, ``docs/design/rate-search.md`` for why each stage is there) moves multipliers
:math:`\\lambda`; at each value an **oracle** (:mod:`solvers.rate_search_oracles`: weighted
logistic or weighted softmax) fits the cost-sensitive surrogate, and every converged fit is a
:class:`~solvers.rate_search_types.Candidate`. The stages are methods:

* :meth:`BinaryRateSearch.newton` / :meth:`ClassRateSearch.newton`: Newton steps putting every
  binding gap at ``+-eps_t`` (an implicit-function Jacobian for binary heads, secants of the
  smoothed gaps for K classes);
* :meth:`BinaryRateSearch.search` / :meth:`ClassRateSearch.ray`: the ray of the start's
  violation, bracketed and closed by Illinois steps (:class:`~solvers.rate_search_types.Ray`);
* :meth:`RateSearch.sign_steps`: per-coordinate sign steps (Rprop) on the KKT residual;
* binary heads only: the threshold search on every candidate (in the oracle), the smoothed-rate
  stage (:meth:`BinaryRateSearch.smoothed_stage`) and the polish of a fit that stopped early.

One :meth:`RateSearch.choose_head` (the least 0-1 error among the candidates within the level,
checked with the exact ``predict()`` arithmetic) and one :meth:`RateSearch.finish` (the
:class:`~solvers.backends.Solution` and its :class:`~solvers.certificate.Certificate`) serve both.
The warm start of a path is a :class:`~solvers.rate_search_types.RateWarmStart`.
"""

from __future__ import annotations

import time

import numpy as np

from . import reductions as red
from . import reductions_multiclass as mc
from .backends import Solution, WarmStart
from .certificate import Certificate, passes_lower_bound
from .multiplier_newton import NewtonTargets, gap_jacobian, kkt_residual, newton_affordable, sign_step
from .rate_search_oracles import LogisticOracle, SoftmaxOracle
from .rate_search_types import Candidate, Checked, Ray, RateWarmStart, SearchState, head_warm_start

#: the method's name; the weighted fits' own (the oracle's ``fit_solver``) follows a slash
SOLVER = "lagrangian-reduction"


def _max_abs(a) -> float:
    return float(np.abs(a).max())


class RateSearch:
    """What binary and K-class searches share: the candidates, the sign steps, the choice of the
    head and its certificate. Subclasses set the oracle, the start and the stages (``solve``)."""

    #: polish a chosen fit that stopped at ``max_iter`` before checking it
    polishes = False

    def __init__(self, est, constraint, oracle, *, eps, theta, t_start):
        self.est, self.constraint, self.oracle = est, constraint, oracle
        self.design = oracle.design
        self.eps = eps
        self.resolution = oracle.resolution
        self.aim = max(float(eps), self.resolution)
        self.eps_t = red.TARGET_FRACTION * self.aim
        self.tol = oracle.tol
        self.t_start = t_start
        self.passes0 = self.design.passes
        self.history: list[Candidate] = []
        self.state = SearchState(theta=theta)

    # -- candidates ------------------------------------------------------------------------
    def run(self, lam) -> np.ndarray:
        """One warm weighted fit at ``lam`` from the state's head; its own gaps."""
        raise NotImplementedError

    def probe(self, lam, log=None) -> np.ndarray:
        """:meth:`run`, with ``(lam, largest gap)`` appended to ``log``."""
        g = self.run(lam)
        if log is not None:
            log.append((lam.copy(), _max_abs(g)))
        return g

    def _advance(self, fit):
        """The state moves to ``fit``'s head (the next fit's start) and counts it."""
        st = self.state
        st.n_iter += fit.res.n_iter
        st.fits += 1
        st.theta, st.pairs = fit.res.theta, fit.res.pairs

    def _record(self, fit, lam):
        """``fit`` at ``lam`` is a candidate."""
        res = fit.res
        self.history.append(self.oracle.candidate(fit.scores, fit.gaps, fit.error, lam, res.theta.clone(),
                                                  res.stationarity, res.converged, self.aim))

    def met(self, bound) -> bool:
        return any(h.gap <= bound for h in self.history)

    # -- stages ----------------------------------------------------------------------------
    def sign_steps(self, lam, step, *, bound, target, probes, log=None, band=None) -> np.ndarray:
        """Per-coordinate sign steps (Rprop) on the KKT residual from ``lam``, until a fit meets
        ``bound``; with ``band`` (along a path) also when the largest gap stops shrinking for
        ``WARM_STALL`` probes. Returns the last multipliers."""
        prev_r = np.zeros(len(lam))
        best, since = min((e[1] for e in log or ()), default=np.inf), 0
        for _ in range(probes):
            gaps = self.probe(lam, log)
            if _max_abs(gaps) <= bound:
                break
            if band is not None:
                since = 0 if log[-1][1] < best else since + 1
                best = min(best, log[-1][1])
                if since >= red.WARM_STALL:
                    break
            r = kkt_residual(lam, gaps, target)
            if not (np.abs(r) > 1e-12).any() or step.max() < 1e-6:
                break
            lam, prev_r, step = sign_step(lam, r, prev_r, step)
        return lam

    # -- the head --------------------------------------------------------------------------
    def check(self, cand: Candidate) -> Checked:
        """``cand`` with the exact ``predict()`` arithmetic (one float64 product with ``X``)."""
        self.state.checks += 1
        return self.oracle.check(cand, self.aim)

    def polish(self, cand: Candidate) -> Checked:
        """The weighted fit of ``cand`` to the estimator's tolerance, checked."""
        res = self.oracle.polish(cand, self.state.pairs)
        self.state.n_iter += res.n_iter
        c = self.check(Candidate(0.0, 0.0, cand.lam, res.theta, res.stationarity, res.converged, 0.0, cut=None))
        c.cand = Candidate(c.error, c.gap, cand.lam, res.theta, res.stationarity, res.converged,
                           _max_abs(c.raw_gaps))
        return c

    def choose_head(self, level) -> Checked:
        """The least-error candidate within ``level``, checked exactly (of the five best); else the
        candidate with the smallest gap.

        A search fit that converged at the search tolerance is kept as it is: a rate head is
        judged by its hard predictions. With ``polishes``, a fit that stopped at ``max_iter`` is
        polished first and kept if still within the level, else the unpolished fit if that is.
        """
        feas = sorted((h for h in self.history if h.gap <= level), key=lambda h: h.error)
        for h in feas[:5]:
            if self.polishes and h.stationarity > self.tol and not h.converged:
                cand = self.polish(h)
                if cand.gap <= level:
                    return cand
            cand = self.check(h)
            if cand.gap <= level:
                return cand
        return self.check(min(self.history, key=lambda h: (h.gap, h.error)))

    def finish(self, chosen: Checked, notes, warm_state: WarmStart, head, warm_started: bool):
        """``(Solution, Certificate)`` of the chosen head (``head``: its coefficients and intercept;
        ``warm_started``: the head started from a given one, for the passes' lower bound)."""
        h, gap = chosen.cand, chosen.gap
        met = gap <= self.eps
        wall = time.perf_counter() - self.t_start
        st, eps = self.state, float(self.eps)
        solver = f"{SOLVER}/{self.oracle.fit_solver}"
        sol = Solution(coef=head[0], intercept=head[1], multipliers=h.lam, status="eps_met" if met else "eps_not_met",
                       solver=solver, n_iter=st.n_iter, wall_time=wall, notes=notes, state=warm_state)
        cert = Certificate(
            backend="torch", solver=solver, status=sol.status, constraint=self.constraint.name, eps=eps,
            objective=None, zero_one_error=chosen.error,  # a rate head minimises the 0-1 error, not the logistic loss
            max_violation=max(0.0, gap - eps), stationarity=float(h.stationarity), n_iter=st.n_iter,
            wall_time=wall, tol=float(self.est.tol), achieved_gap=gap, eps_met=bool(met),
            multipliers=tuple(float(x) for x in h.lam), notes=tuple(notes),
            resolution=self.resolution, aimed_at=self.aim, passes=self.design.passes - self.passes0 + st.checks,
            passes_lower_bound=passes_lower_bound(warm_started),
        )
        return sol, cert


class BinaryRateSearch(RateSearch):
    """The binary reduction (:mod:`solvers.reductions`): Newton steps, the bracketing search, sign
    steps and the smoothed-rate stage, every candidate judged at its best threshold."""

    polishes = True

    def __init__(self, est, problem, constraint, mom, design, *, eps, warm: RateWarmStart | None, t_start):
        from .backends.torch import _tensor

        tol = max(float(est.tol), 1e-6)  # a chosen head that stopped at max_iter is polished to this
        # the search only needs each head's predictions: sklearn's default tolerance is enough, and
        # a looser one where the rates are not conditioned on the label
        conditioned = getattr(constraint, "event", "all") != "all" or getattr(constraint, "utility", "") == "error"
        search_tol = red.SEARCH_TOL if conditioned else red.SEARCH_TOL_UNCONDITIONED
        oracle = LogisticOracle(est, problem, mom, design, search_tol=max(tol, search_tol), tol=tol)
        d, K = oracle.d, mom.M.shape[0]
        theta = oracle.cold_theta()
        self.theta_cold = theta.clone()
        self.lam0 = np.zeros(K)
        if warm is not None and warm.theta is not None and len(warm.theta) == d + 1:
            theta = design.to_centered(_tensor(warm.theta, design.device))
            if warm.lam is not None and len(warm.lam) == K:
                self.lam0 = np.asarray(warm.lam, dtype=np.float64).copy()
        super().__init__(est, constraint, oracle, eps=eps, theta=theta, t_start=t_start)
        self.warm, self.K, self.d = warm, K, d
        self.targets = NewtonTargets(oracle.Ma, exclusive=getattr(mom, "exclusive", ()))
        self.smooth_last = None  # the smoothed stage's last head (decentred), where it ran
        self._path_start(warm)
        # rates conditioned on the label (eopp, eo, error-rate): the weighted fits floor there; on
        # dp the reduction reaches every bound (docs/design/rate-search.md)
        self.smoothing = (oracle.thr is not None and red.SMOOTH_STAGE
                          and (getattr(constraint, "event", "all") != "all"
                               or getattr(constraint, "utility", "") == "error"))

    def _path_start(self, warm):
        """Along a path (the warm start has the previous bound, its gaps and multipliers): the
        previous point, the floor and stall rules, and the carried pairs and Jacobian."""
        d, K = self.d, self.K
        self.on_path = bool(warm is not None and warm.eps is not None and warm.gaps is not None
                            and len(warm.gaps) == K and warm.lam is not None and len(warm.lam) == K
                            and warm.theta is not None and len(warm.theta) == d + 1)
        self.floor = self.stalled = False
        self.lam_hist = []
        self.prev_eps = self.prev_lam = self.prev_gaps = None  # the previous bound, its multipliers and gaps
        if not self.on_path:
            return
        from .backends.torch import _tensor

        self.prev_eps, self.prev_lam = float(warm.eps), self.lam0.copy()
        self.prev_gaps = np.asarray(warm.gaps, dtype=np.float64)
        # the looser bound's search missed its own aim: no head the search reaches meets this one
        # (whatever meets it meets the looser aim); the previous head is re-checked, unmet
        self.floor = warm.missed_aim is not None and float(warm.missed_aim) >= self.aim
        # its Newton steps stalled above their target at a gap this bound lies below: near a floor
        # one Newton step gets a try, the bracketing searches do not
        self.stalled = warm.stalled_at is not None and float(warm.stalled_at) > self.aim
        self.lam_hist = list(warm.lam_hist)
        if warm.pairs is not None:
            self.state.pairs = warm.pairs
        if warm.jac is not None and np.shape(warm.jac[0]) == (K, K):
            self.state.jac = (warm.jac[0], _tensor(warm.jac[1], self.design.device))

    # -- candidates ------------------------------------------------------------------------
    def run(self, lam):
        st = self.state
        # the head's scores carry over from the last fit (they do not depend on lam); refreshed
        # every few fits against drift
        z0 = st.scores if st.fits % 8 else None
        fit = self.oracle.fit(lam, st.theta, st.pairs, exact=st.exact, z0=z0, inexact_iters=red.INEXACT_ITERS)
        self._advance(fit)
        st.scores = fit.res.z
        if st.exact:  # only converged heads are candidates
            self._record(fit, lam)
        return fit.gaps

    def adopt(self, lam):
        """The previous head of a path as it is (no refit: its scores are one product with X), a
        candidate and the search's start."""
        if self.warm.stationarity is None:
            return self.run(lam)
        from .backends.torch import _tensor

        st, o = self.state, self.oracle
        z = self.warm.z
        if z is not None and len(z) == self.design.n:  # the scores the last bound's search had
            st.scores = _tensor(z, self.design.device)
        else:
            st.scores = o.scores(st.theta)
        zn = st.scores.cpu().numpy()
        gaps, err = o.evaluate(zn)
        self.history.append(o.candidate(zn, gaps, err, lam, st.theta.clone(), float(self.warm.stationarity),
                                        bool(self.warm.converged), self.aim))
        st.adopted = 1
        return gaps

    def reached(self, thresholded=False) -> bool:
        """Whether a converged head so far meets the aim, at its own intercept (what steers the
        steps: a head that meets the bound only through its threshold does not end them) or,
        ``thresholded``, at its best threshold (what ends the fallback searches)."""
        return any((e.gap if thresholded else e.raw_gap) <= self.aim for e in self.history)

    def check(self, cand: Candidate) -> Checked:
        """``cand`` with the exact ``predict()`` arithmetic, at the candidate's own threshold where
        that reproduces it (one sort of the scores fewer a head:
        :meth:`~solvers.rate_search_oracles.LogisticOracle.check`)."""
        self.state.checks += 1
        return self.oracle.check(cand, self.aim, keep_cut=True)

    def _met_below_resolution(self) -> bool:
        """Below the resolution a head at its best threshold within it ends the search: the fits'
        own gaps cannot be steered onto a bound finer than one prediction's step."""
        return self.eps < self.resolution and self.reached(thresholded=True)

    # -- Newton steps ----------------------------------------------------------------------
    def newton(self, lam, gaps, halvings=None) -> bool:
        """Newton steps from the converged fit at ``lam`` (:mod:`solvers.multiplier_newton`).

        True once a converged head meets the bound with every binding gap within ``WARM_BAND``
        of the target (or meets it with no multiplier at all, or below the resolution), or when
        the steps run out or stop helping and some head on the way met it. A step that fails with
        a fresh Jacobian (halved ``halvings`` times) marks a stall and leaves the state at the
        last accepted head; where the smoothed stage follows, so does an accepted step that keeps
        more than ``NEWTON_SLOW`` of the KKT residual while the bound is still missed, and a carried
        Jacobian's failed step once the bound is met at the fit's own intercept.
        """
        halvings = red.NEWTON_HALVINGS if halvings is None else halvings
        st, aim = self.state, self.aim
        steps = red.NEWTON_STEPS if newton_affordable(self.design) else 0
        while steps > 0:
            r = kkt_residual(lam, gaps, self.eps_t)
            if _max_abs(gaps) <= aim and (_max_abs(r) <= red.WARM_BAND * aim or not lam.any()
                                          or self.eps < self.resolution):
                st.stall = False
                return True
            outcome, lam_n, gaps_n = self._newton_step(lam, gaps, r, halvings)
            if outcome == "failed":
                st.stall = True
                return self.reached()
            if outcome == "stale":
                if self.smoothing and _max_abs(gaps) <= aim:
                    # the bound is met at the fit's own intercept and the smoothed stage follows:
                    # a fresh Jacobian (a product of X with its (n, d) weights) and its halvings
                    # only chased the band around the target (Adult eo at 0.027: 21 ms and four
                    # fits, no head chosen); the stall it would have marked is marked here
                    st.stall = True
                    return self.reached()
                continue  # retry with a fresh Jacobian
            st.newton += 1
            steps -= 1
            r_n = kkt_residual(lam_n, gaps_n, self.eps_t)
            slow = (self.smoothing and _max_abs(gaps_n) > aim
                    and np.linalg.norm(r_n) > red.NEWTON_SLOW * np.linalg.norm(r))
            lam, gaps = lam_n, gaps_n
            if slow:  # the linear model is off near the reduction's floor: the smoothed stage's turn
                st.stall = True
                return self.reached()
        st.stall = newton_affordable(self.design)  # out of steps short of the target
        return self.reached()

    def _newton_step(self, lam, gaps, r, halvings):
        """One step towards the Newton target, halved while it does not shrink the KKT residual:
        ``("accepted", lam, gaps)``, or ``("stale", ...)`` / ``("failed", ...)`` (the state back
        at the start) when it never did with a carried / a fresh Jacobian."""
        import torch

        st, o = self.state, self.oracle
        theta_k, z_k, pairs_k = st.theta, st.scores, st.pairs
        fresh = st.jac is None
        if fresh:
            # the fit's scores were scanned when it became a candidate: their order is known
            scan = o.thr.remembered(z_k.cpu().numpy()) if o.thr is not None else None
            st.jac = gap_jacobian(self.design, z_k, o.base + o.Ma.T @ lam, o.Ma, o.lam2, self.est.fit_intercept,
                                  ordered=None if scan is None else scan.ordered)
        J, dtheta = st.jac
        goal = self.targets(lam, gaps, J, self.eps_t)
        merit = float(np.linalg.norm(r))
        step = 1.0
        for _ in range(halvings + 1 if fresh else 1):
            lam_n = lam + step * (goal - lam)
            # the predicted head warm-starts the fit: a few L-BFGS iterations correct it
            st.theta = theta_k + dtheta @ torch.as_tensor(lam_n - lam, dtype=torch.float64, device=self.design.device)
            st.scores = None
            gaps_n = self.run(lam_n)
            if float(np.linalg.norm(kkt_residual(lam_n, gaps_n, self.eps_t))) < merit:
                return "accepted", lam_n, gaps_n
            step *= 0.5
        st.theta, st.scores, st.pairs = theta_k, z_k, pairs_k
        st.jac = None
        return ("failed" if fresh else "stale"), None, None

    # -- the bracketing search -------------------------------------------------------------
    def search(self, lam_s, gaps_s, t_init, log, band=None):
        """The ray of ``gaps_s`` from ``lam_s`` (secant extrapolation, then Illinois), then sign
        steps from the best probe; ``log`` collects ``(lam, largest gap)``. With ``band``, a probe
        that meets the aim within ``band`` of the target ends the search. Returns multipliers."""
        ray = Ray(lam_s, gaps_s / _max_abs(gaps_s), np.sign(gaps_s), self.eps_t)
        ray.f_a = ray.f(gaps_s)
        hit = self._extrapolate(ray, t_init, log, band)
        if hit is None and ray.t_b is not None:
            hit = self._illinois(ray, log, band)
        if hit is not None:
            return hit
        if ray.t_b is not None and any(e[1] <= self.aim for e in log):
            return ray.at(ray.t_b)
        best = min(log, key=lambda e: e[1])[0].copy() if log else lam_s.copy()
        if self.smoothing and self.state.exact:
            # converged sign steps near the floor: the smoothed stage goes on from the best head
            return best
        # several rows pulling different ways: per-coordinate sign steps
        scale = max(ray.t_b or ray.t_a or t_init, 0.05 * t_init)
        return self.sign_steps(best, np.full(self.K, 0.1 * scale), bound=self.aim, target=self.eps_t,
                               probes=red.MAX_OUTER, log=log, band=band)

    def _in_band(self, f, log, band) -> bool:
        return band is not None and -band <= f <= 0 and log[-1][1] <= self.aim

    def _extrapolate(self, ray: Ray, t, log, band):
        """Probe along the ray until the target is bracketed (``ray.t_b`` set); a probe in the band
        is returned."""
        for _ in range(12):
            f = ray.f(self.probe(ray.at(t), log))
            if self._in_band(f, log, band):
                return ray.at(t)
            if f <= 0:
                ray.t_b, ray.f_b = t, f
                return None
            t_prev, f_prev = ray.t_a, ray.f_a
            ray.t_a, ray.f_a = t, f
            # secant extrapolation to the target (10% beyond, to bracket it), at most 4x
            if f_prev > ray.f_a:
                t = ray.t_a + 1.1 * (ray.t_a - t_prev) * ray.f_a / (f_prev - ray.f_a)
                t = min(max(t, 1.25 * ray.t_a), 4.0 * ray.t_a)
            else:
                t = 2.0 * ray.t_a
        return None

    def _illinois(self, ray: Ray, log, band):
        """Close the bracket (2% wide) with Illinois steps; a probe in the band is returned."""
        for _ in range(10):
            if ray.closed():
                break
            t = ray.illinois_point()
            f = ray.f(self.probe(ray.at(t), log))
            if self._in_band(f, log, band):
                return ray.at(t)
            ray.update(t, f)
        return None

    # -- the stages in order ---------------------------------------------------------------
    def solve(self):
        """``(Solution, Certificate)``: search, choose, smoothed stage, certificate."""
        if self.floor:
            self.adopt(self.prev_lam)
        elif self.on_path and _max_abs(self.prev_gaps) > self.aim:
            lam, gaps0 = self._warm_path()
            if gaps0 is not None:
                self._cold_stages(lam, gaps0)
        else:
            self._cold_stages(self.lam0, self.run(self.lam0))
        reduction = self.choose_head(self.aim)
        chosen, smooth_mult = self.smoothed_stage(reduction)
        head = self.oracle.head(chosen)
        warm_state = self._warm_state(chosen, reduction, smooth_mult)
        warm_started = self.warm is not None and self.warm.theta is not None
        return self.finish(chosen, self._notes(chosen, reduction), warm_state, head, warm_started)

    def _warm_path(self):
        """Along a path, the previous head misses the new bound: Newton from its multipliers, the
        bracketing search where they stop helping, and last the cold start. Returns the cold
        start's ``(lam, gaps)`` where the warm searches missed, else ``(None, None)``."""
        lam_p, gaps0, aim = self.prev_lam, self.prev_gaps, self.aim
        u = gaps0 / _max_abs(gaps0)
        mg = _max_abs(gaps0)
        t_ray = max(_max_abs(lam_p), 1e-3) * (mg - self.eps_t) / mg
        if self.lam_hist:  # where the multipliers of the last heads extrapolate to in eps
            eps_q, lam_q = self.lam_hist[-1]
            if eps_q != self.prev_eps:
                pred = lam_p + (lam_p - np.asarray(lam_q)) * (self.eps - self.prev_eps) / (self.prev_eps - eps_q)
                t_pred = float(np.dot(pred - lam_p, u) / np.dot(u, u))
                if t_pred > 0:
                    t_ray = t_pred
        # the previous head is a candidate too: a head never ends with a larger gap than the
        # previous (looser) one
        gaps_p = self.adopt(lam_p)
        st = self.state
        if self.stalled and self.smoothing:
            # below a stall the smoothed stage goes on from the previous head: the one fresh Newton
            # step (a Jacobian and a fit) failed at every such bound on Adult and chose no head
            st.stall = True
            return None, None
        at_p = (st.theta, st.scores, st.pairs)
        if (not self.newton(lam_p, gaps_p, halvings=0 if self.stalled else red.NEWTON_HALVINGS)
                and not self.stalled and not self.smoothing and not self._met_below_resolution()):
            # the bracketing search from the previous head as it was (Newton's last head sits
            # where the linear model failed)
            st.theta, st.scores, st.pairs = at_p
            self.search(lam_p, gaps0, t_ray, [], band=red.WARM_BAND * aim)
        if (not self.reached(thresholded=True) and self.eps >= self.resolution and not self.stalled
                and not self.smoothing):
            # the cold search (the warm candidates stay in the running): a path head never does
            # worse than a cold solve
            st.theta, st.pairs, st.scores = self.theta_cold, None, None
            lam = np.zeros(self.K)
            return lam, self.run(lam)
        return None, None

    def _cold_stages(self, lam, gaps0):
        """From the fit at ``lam``: Newton steps; where they miss, a cheap search with inexact fits,
        converged fits from where it ended, and (no smoothed stage after) a converged search."""
        if not (_max_abs(gaps0) > self.aim and not self.newton(lam, gaps0)) or self._met_below_resolution():
            return
        st = self.state
        st.exact = False  # stage 1: a few warm L-BFGS steps per multiplier value
        theta_start, pairs_start = st.theta, st.pairs
        lam_1 = self.search(lam, gaps0, 0.25, [])
        st.exact = True  # stage 2: converged fits from there
        gaps1 = self.run(lam_1)
        if _max_abs(gaps1) > self.aim:
            scale = max(_max_abs(lam_1 - lam), 0.25)
            self.search(lam_1, gaps1, 0.05 * scale, [(e.lam, e.raw_gap) for e in self.history])
        if not self.reached(thresholded=True) and self.eps >= self.resolution and not self.smoothing:
            # the cheap stage misled us: the whole search with converged fits
            st.theta, st.pairs, st.scores = theta_start, pairs_start, None
            self.search(lam, gaps0, 0.25, [(e.lam, e.raw_gap) for e in self.history])

    # -- the smoothed-rate stage -----------------------------------------------------------
    def smoothed_stage(self, reduction: Checked):
        """The smoothed-rate stage where the reduction's head misses the aim at its own intercept
        (the reduction is at its floor; where it is not, the stage won at most 0.0003 train accuracy
        on Adult): ``(chosen, its last multipliers)``, multipliers ``None`` where it did not run. It
        starts from the reduction's head, or along a path from the last stage's head. A stage head
        replaces the reduction's if it meets the aim more accurately, or misses it by less where the
        reduction's misses it."""
        level = self.aim
        if not (self.smoothing and (reduction.gap > level or _max_abs(reduction.raw_gaps) > level)):
            return reduction, None
        if reduction.kept_cut and not (self.on_path and self.warm.smooth_theta is not None):
            # the stage starts from the head's intercept: the one the exact scores' own scan chooses
            # (a kept threshold gives the same predictions at other last bits, and the stage's heads
            # follow those bits)
            self.state.checks += 1
            reduction = self.oracle.check(reduction.cand, self.aim)
        cands, mult = self._smoothed_candidates(reduction)
        feasible = sorted((c for c in cands if c.gap <= level), key=lambda c: c.error)[:3]
        pick = next((c for c in map(self.check, feasible) if c.gap <= level), None)
        if pick is None and reduction.gap > level:
            pick = self.check(min(cands, key=lambda c: (c.gap, c.error)))
        if pick is not None and ((pick.gap <= level and (reduction.gap > level or pick.error < reduction.error))
                                 or (reduction.gap > level and pick.gap < reduction.gap)):
            self.state.smooth_chosen = True
            return pick, mult
        return reduction, mult

    def _smoothed_candidates(self, reduction: Checked):
        from .backends.torch import _tensor
        from .smoothed import smoothed_stage

        o, d, st = self.oracle, self.d, self.state
        # along a path the stage goes on from the last stage's head and multipliers (a looser bound's
        # smoothed head is nearer this bound's than a reduction head at its floor is)
        prev = self.warm.smooth_theta if self.on_path else None
        start = np.r_[reduction.theta[:d], reduction.intercept] if prev is None else prev
        start = self.design.to_centered(_tensor(start, self.design.device))
        heads, mult = smoothed_stage(self.design, o.y, o.v, o.Ma, o.mom.M @ o.mom.b0, start, lam2=o.lam2,
                                     bound=self.eps_t, fixed=o.fixed, tol=max(o.search_tol, red.SMOOTH_TOL),
                                     max_iter=min(o.max_iter, red.SMOOTH_ITERS), precond=o.precond,
                                     mult0=self.warm.smooth_mult if self.on_path else None)
        self.smooth_last = self.design.from_centered(heads[-1].theta).cpu().numpy()
        cands = []
        for sh in heads:
            zn = sh.z.cpu().numpy()
            gaps, err = o.evaluate(zn)
            cands.append(o.candidate(zn, gaps, err, reduction.cand.lam, sh.theta, sh.stationarity, sh.converged,
                                     self.aim))
        st.n_iter += sum(sh.n_iter for sh in heads)
        st.smoothed = len(cands)
        return cands, mult

    # -- what the head reports -------------------------------------------------------------
    def _warm_state(self, chosen: Checked, reduction: Checked, smooth_mult) -> WarmStart:
        """The next bound's warm start (as the estimator's dict): the *reduction's* weighted fit and
        its own gaps (what the multiplier steps steer), also when the smoothed stage's head is chosen."""
        import torch

        from .backends.torch import _numpy_pairs

        st = self.state
        best_gap = min(e.raw_gap for e in self.history)
        ran = smooth_mult is not None
        pairs = st.pairs
        if pairs is not None and pairs is not (self.warm.pairs if self.warm is not None else None):
            pairs = _numpy_pairs(pairs)  # unchanged when no fit ran
        # the head's scores where it is the search's last head (the next bound adopts it without a
        # product). Not where the smoothed stage follows: those scores' last bits steer the next
        # bound's fits there (Adult eo, 2 groups: heads 0.0021 of train accuracy apart at 0.01)
        last = (not self.smoothing and st.scores is not None
                and torch.equal(reduction.cand.theta, st.theta))
        warm = RateWarmStart(
            theta=reduction.theta, lam=reduction.cand.lam, gaps=np.asarray(reduction.raw_gaps, dtype=np.float64),
            stationarity=float(reduction.cand.stationarity), converged=bool(reduction.cand.converged),
            # the last smoothed stage on the path: this bound's, else handed on from the looser one
            smooth_mult=smooth_mult if ran else (self.warm.smooth_mult if self.on_path else None),
            smooth_theta=self.smooth_last if ran else (self.warm.smooth_theta if self.on_path else None),
            missed_aim=self.aim if chosen.gap > self.aim else None,
            # Newton stopped short of its target (not in the band): the gap it stalled at
            stalled_at=best_gap if st.stall and best_gap > self.eps_t else None,
            lam_hist=(self.lam_hist + [(self.prev_eps, self.prev_lam)])[-2:] if self.on_path else [],
            pairs=pairs, jac=(st.jac[0], st.jac[1].cpu().numpy()) if st.jac else None,
            z=st.scores.cpu().numpy() if last else None)
        return head_warm_start(warm)

    def _notes(self, chosen: Checked, reduction: Checked) -> list:
        st, th = self.state, chosen.theta
        notes = [f"{st.fits} weighted fits on the multiplier path ({len(self.history) - st.adopted} converged, "
                 f"{st.newton} Newton steps)"]
        if self.stalled and not self.floor:
            notes.append(("no Newton step (the smoothed stage's turn)" if self.smoothing else "Newton steps only")
                         + f": the looser bound eps={self.prev_eps:g} stalled at gap "
                         f"{float(self.warm.stalled_at):.4g}, above this bound")
        if self.floor:
            notes.append(f"not searched: the looser bound eps={self.prev_eps:g} already ended unmet (aimed at "
                         f"{float(self.warm.missed_aim):.4g}), so no head of the reduction's search meets this one")
        if chosen.intercept != float(th[self.d]):
            notes.append(f"intercept re-chosen by the exact threshold search: {float(th[self.d]):.6g} -> "
                         f"{chosen.intercept:.6g} (gap {_max_abs(chosen.raw_gaps):.4g} -> {chosen.gap:.4g})")
        if st.smoothed:
            notes.append(f"smoothed-rate stage: {st.smoothed} heads from the reduction's (0-1 error "
                         f"{reduction.error:.4g}, gap {reduction.gap:.4g}); "
                         + ("one of them chosen" if st.smooth_chosen else "the reduction's head kept"))
        if not chosen.cand.converged:
            notes.append("the chosen fit stopped at max_iter (its predictions were still checked)")
        return notes


class ClassRateSearch(RateSearch):
    """The K-class reduction (:mod:`solvers.reductions_multiclass`): the ray and Illinois steps,
    Newton steps on secants of the smoothed gaps, sign steps, and a continuation over looser
    bounds where they miss."""

    def __init__(self, est, problem, constraint, mom, design, *, eps, warm: RateWarmStart | None, t_start):
        from . import multinomial as mn
        from .backends.torch import _tensor

        tol = max(float(est.tol), 1e-6)
        oracle = SoftmaxOracle(est, problem, mom, design, search_tol=max(tol, red.SEARCH_TOL), tol=tol)
        K, d, R = oracle.K, oracle.d, mom.M.shape[0]
        theta0 = np.zeros((K, d + 1))
        if est.fit_intercept:
            theta0[:, d] = mn.base_intercept(problem.y, problem.sample_weight, K)
        theta0 = theta0.reshape(-1)
        self.lam0 = np.zeros(R)
        self.warm_started = bool(warm is not None and warm.theta is not None and len(warm.theta) == theta0.shape[0])
        if self.warm_started:
            theta0 = np.asarray(warm.theta, dtype=np.float64)
            if warm.lam is not None and len(warm.lam) == R:
                self.lam0 = np.asarray(warm.lam, dtype=np.float64).copy()
        theta = oracle.lay.to_centered(_tensor(theta0, design.device), design.mu)
        super().__init__(est, constraint, oracle, eps=eps, theta=theta, t_start=t_start)
        self.state.pairs = warm.pairs if self.warm_started else None
        self.R = R
        # rows as linear functionals of the one-hot predictions, centred over classes (every row of
        # predictions sums to 1): their dependence tells which rows can bind together
        cent = np.eye(K)[mom.classes] - 1.0 / K  # (R, K)
        self.targets = NewtonTargets((mom.M[:, :, None] * cent[:, None, :]).reshape(R, -1))

    def run(self, lam):
        fit = self.oracle.fit(lam, self.state.theta, self.state.pairs)
        self._advance(fit)
        self.state.scores = fit.scores
        self._record(fit, lam)
        return fit.gaps

    def smoothed_gaps(self, Z, tau):
        from . import multinomial as mn

        mom = self.oracle.mom
        P = mn.softmax(Z / tau)
        return np.einsum("rn,nr->r", mom.M, P[:, mom.classes])

    def start(self, bound):
        """The head to search from: the least error among those that meet ``bound``, else the
        smallest gap; it becomes the state's head. Returns its ``(lam, gaps)``."""
        ok = [e for e in self.history if e.gap <= bound]
        best = min(ok, key=lambda e: e.error) if ok else min(self.history, key=lambda e: e.gap)
        if best is not self.history[-1]:  # its scores: one product (a probe's (n, K) scores are not kept)
            self.state.scores = self.oracle.scores(best.theta)
        self.state.theta = best.theta
        return best.lam, best.gaps

    def newton(self, lam, gaps, scale, bound) -> bool:
        """Newton steps aiming every binding gap at ``0.9 bound``; True once a head meets
        ``bound`` with every binding gap within ``WARM_BAND`` of the target."""
        target = red.TARGET_FRACTION * bound
        for _ in range(mc.NEWTON_STEPS):
            r = kkt_residual(lam, gaps, target)
            if _max_abs(gaps) <= bound and _max_abs(r) <= red.WARM_BAND * bound:
                return True
            active = (lam != 0) | (np.abs(gaps) > target)
            side = np.where(lam != 0, np.sign(lam), np.sign(gaps))
            idx = self.targets.independent([k for k in np.argsort(-np.abs(gaps), kind="stable") if active[k]])
            if not idx:
                break
            step = self._newton_step(lam, gaps, r, side, idx, scale, target)
            if step is None:
                break
            lam, gaps = step
        return self.met(bound)

    def _newton_step(self, lam, gaps, r, side, idx, scale, target):
        """Secants of the smoothed gaps (one warm fit per independent active row), then the step
        (or half of it) that shrinks the KKT residual: ``(lam, gaps)``, or ``None``."""
        st = self.state
        theta_k, pairs_k, Z_k = st.theta, st.pairs, st.scores
        tau = mc.margin_bandwidth(Z_k)
        s_k = self.smoothed_gaps(Z_k, tau)
        J = np.zeros((self.R, self.R))
        for j in idx:
            h = mc.FD_STEP * max(abs(float(lam[j])), scale) * (side[j] if side[j] != 0 else 1.0)
            lam_p = lam.copy()
            lam_p[j] += h
            st.theta, st.pairs = theta_k, pairs_k
            self.run(lam_p)
            J[:, j] = (self.smoothed_gaps(st.scores, tau) - s_k) / h
        lam_n = self.targets(lam, gaps, J, target)
        merit = float(np.linalg.norm(r))
        for step in (1.0, 0.5):
            trial = lam + step * (lam_n - lam)
            st.theta, st.pairs = theta_k, pairs_k
            gaps_n = self.run(trial)
            if float(np.linalg.norm(kkt_residual(trial, gaps_n, target))) < merit:
                return trial, gaps_n
        return None

    def ray(self, lam_s, gaps_s, t, bound):
        """Double ``t`` along the start's violation, then Illinois steps, until the largest gap
        lands in ``[0.9 bound - WARM_BAND bound, 0.9 bound]``; stops where the gaps grow again."""
        target = red.TARGET_FRACTION * bound
        # only the violated rows get multipliers (the others would over-constrain the head)
        ray = Ray(lam_s, np.where(np.abs(gaps_s) > target, gaps_s, 0.0) / _max_abs(gaps_s), np.sign(gaps_s), target)
        ray.f_a = ray.f(gaps_s)
        for _ in range(mc.RAY_PROBES):
            if ray.t_b is not None:
                if ray.closed():
                    break
                t = ray.illinois_point()
            g = self.run(ray.at(t))
            f = ray.f(g)
            if -red.WARM_BAND * bound <= f <= 0 and _max_abs(g) <= bound:
                return
            if f <= 0 or ray.t_b is not None:
                ray.update(t, f)
            elif f > ray.f_a:  # the gaps grow again: this direction overshoots other rows; Newton's turn
                return
            else:
                ray.t_a, ray.f_a = t, f
                t *= 2.0

    def attempt(self, bound, t_ray, probes=None):
        """Meet ``bound`` from the best head so far: the ray (which finds the multipliers' scale),
        Newton steps, then sign steps."""
        lam_s, gaps_s = self.start(bound)
        if _max_abs(gaps_s) > bound:
            self.ray(lam_s, gaps_s, t_ray, bound)
            lam_s, gaps_s = self.start(bound)
        scale = max(_max_abs(lam_s), t_ray)
        if not self.newton(lam_s, gaps_s, scale, bound):
            lam_s, _ = self.start(bound)
            step = np.full(self.R, 0.1 * max(_max_abs(lam_s), t_ray))
            self.sign_steps(lam_s, step, bound=bound, target=red.TARGET_FRACTION * bound,
                            probes=mc.MAX_OUTER if probes is None else probes)

    def _choose_at_offsets(self, aim) -> Checked:
        """The head: the search steers by the fits' own intercepts; where a fit meets ``eps`` at
        its best per-class offsets (:mod:`solvers.threshold_multiclass`), the least-error such head
        at its offsets (never less accurate than at its own intercepts). Below that, the search's
        own fits (offsets that only reach the resolution tend to a near-constant head)."""
        judged = [self.oracle.at_offsets(h) for h in self.history]
        if any(h.gap <= self.eps for h in judged):
            self.history = judged
            return self.choose_head(self.eps)
        # no fit meets eps at its own intercepts either (offsets never widen a gap that meets the bound)
        return self.choose_head(aim)

    def solve(self):
        """``(Solution, Certificate)``: search, choose, certificate."""
        from .backends.torch import _numpy_pairs
        from . import multinomial as mn

        aim = self.aim
        gaps0 = self.run(self.lam0)
        g0 = _max_abs(gaps0)
        if g0 > aim:
            t0 = 0.25 * max(_max_abs(self.lam0), 0.25) if self.warm_started else 0.25
            self.attempt(aim, t0)
            if not self.met(aim):
                # continuation: meet looser bounds first, geometrically from the start's gap down to
                # the aim, each from the last
                steps = mc.CONTINUATION_STEPS
                for bound in aim * (g0 / aim) ** (np.arange(steps - 1, -1, -1) / steps):
                    self.attempt(float(bound), 0.25 * t0, probes=mc.MAX_OUTER // 3)
        chosen = self._choose_at_offsets(aim)
        coef, intercept = self.oracle.head(chosen)
        st = self.state
        notes = [f"{st.fits} weighted multinomial fits on the multiplier path"]
        if not chosen.cand.converged:
            notes.append("the chosen weighted fit stopped at max_iter (its predictions were still checked)")
        # the next bound starts from the weighted fit as it was (its offsets would have to be undone)
        own = self.oracle.lay.from_centered(chosen.cand.theta, self.design.mu).cpu().numpy()
        fit = mn.identified(*mn.unstack(own, self.oracle.K))
        warm = RateWarmStart(theta=mn.stack(*fit), lam=chosen.cand.lam,
                             gaps=np.asarray(chosen.gaps, dtype=np.float64),
                             pairs=_numpy_pairs(st.pairs) if st.pairs is not None else None)
        warm_state = head_warm_start(warm)
        return self.finish(chosen, notes, warm_state, (coef, intercept), self.warm_started)


__all__ = ["BinaryRateSearch", "ClassRateSearch", "RateSearch"]
