"""The weighted-fit oracles of the rate search (:mod:`solvers.rate_search`), one per head kind.

For multipliers :math:`\\lambda` the Lagrangian :math:`\\mathrm{err}(\\hat y) + \\lambda^\\top
\\gamma(\\hat y)` is a cost-sensitive classification; an oracle fits its convex surrogate and
judges the fit by its hard predictions:

* :class:`LogisticOracle` (binary heads): the weighted logistic fit with labels
  :math:`[\\delta_i < 0]` and weights :math:`|\\delta_i|`, :math:`\\delta = \\delta_0 + (Ma)^\\top
  \\lambda` (:mod:`solvers.reductions`); candidates are judged at their best threshold
  (:mod:`solvers.threshold`);
* :class:`SoftmaxOracle` (K-class heads): the cost-weighted softmax fit with weights
  :math:`Q_{ik} = \\max_j c_{ij} - c_{ik}` (:mod:`solvers.reductions_multiclass`); the head
  predicts the arg max, no threshold.

Both answer the same small interface: ``fit`` (one warm weighted fit and its judged outcome),
``candidate`` (a :class:`~solvers.rate_search.Candidate` of a fit), ``scores`` (one product
with ``X``), ``check`` (a candidate with the exact float64 ``predict()`` arithmetic) and
``head`` (the returned coefficients and intercept).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from ._linalg import x_dot
from .rate_search_types import Candidate, Checked
from .threshold_multiclass import OffsetSearch


@dataclass
class Fit:
    """One weighted fit: the optimizer's result (centred ``theta``, ``z``, ``pairs``...), its scores
    as numpy, and the hard gaps and weighted 0-1 error of its predictions."""

    res: object
    scores: np.ndarray
    gaps: np.ndarray
    error: float


#: the exact products a design remembers (the last few heads' ``X @ w``), while they take at most this many bytes
EXACT_MEMO = 4
EXACT_MEMO_BYTES = 64 << 20


class ExactScores:
    """``X @ w`` in float64 (:func:`~solvers._linalg.x_dot`) for the exact checks, the last
    :data:`EXACT_MEMO` remembered by ``w``'s bits: a path's next bound re-checks the head it
    adopted (Adult ``eo``: 15 checks of 8 distinct heads), and the same ``w`` gives the same
    product. The arrays handed out are read-only."""

    def __init__(self, X):
        self.X = X
        self._size = EXACT_MEMO if EXACT_MEMO * X.shape[0] * 8 <= EXACT_MEMO_BYTES else 0
        self._memo = []  # (w's bytes, X @ w), the latest first
        self._lock = threading.Lock()  # a path's heads may be fitted by threads

    def __call__(self, w: np.ndarray) -> np.ndarray:
        key = np.ascontiguousarray(w, dtype=np.float64).tobytes()
        with self._lock:
            for i, (seen, xw) in enumerate(self._memo):
                if seen == key:
                    self._memo.insert(0, self._memo.pop(i))
                    return xw
        xw = x_dot(self.X, w)
        if self._size:
            xw.flags.writeable = False
            with self._lock:
                self._memo = [(key, xw)] + self._memo[: self._size - 1]
        return xw


_EXACT = weakref.WeakKeyDictionary()  # design -> its ExactScores


def exact_scores(design, X) -> ExactScores:
    """The :class:`ExactScores` of ``X`` shared by ``design``'s heads (a path's), or a new one."""
    try:
        es = _EXACT.get(design)
        if es is None or es.X is not X:
            es = _EXACT[design] = ExactScores(X)
        return es
    except TypeError:  # a design without weak references: nothing is shared
        return ExactScores(X)


def _best_threshold(thr, z, aim, mom):
    """The threshold of scores ``z``: the most accurate within ``aim = max(eps, resolution)``, else
    the smallest gap. Below the resolution a bound is met, if at all, by a (near) constant head:
    the most accurate head within the resolution is worth more to a user than that.

    Gaps that are not linear in the predictions (:class:`~solvers.constraints.RatioMoments`) are
    scanned as the linear rates they are made of (``thr`` built on ``mom.scan_moments``) and
    turned into gaps per threshold."""
    sc = thr.scan(z)
    if hasattr(mom, "scan_moments"):
        from .threshold import ThresholdScan

        sc = ThresholdScan(cuts=sc.cuts, errors=sc.errors, gaps=mom.shortfalls(sc.gaps))
    return sc.best(aim) or sc.smallest_gap()


class LogisticOracle:
    """Binary heads: weighted logistic fits on the torch backend (see the module docstring)."""

    def __init__(self, est, problem, mom, design, *, search_tol, tol):
        from .threshold import shared_search

        self.X, self.y, self.v = problem.X, problem.y, problem.sample_weight
        self.exact = exact_scores(design, problem.X)
        self.V = float(self.v.sum())
        self.d = problem.X.shape[1]
        self.mom, self.design = mom, design
        self.max_iter, self.tol, self.search_tol = int(est.max_iter), tol, search_tol
        self.fit_intercept = est.fit_intercept
        self.lam2 = 0.0 if est.penalty is None else 1.0 / (float(est.C) * self.V)
        self.fixed = () if est.fit_intercept else (self.d,)
        self.base = self.v * (1.0 - 2.0 * self.y) / self.V
        self.Ma = mom.M * mom.a  # (K, n): cost of yhat_i = 1 through gap k
        # every candidate is judged at its best intercept (one sort of its scores; a path's heads
        # share the design's last scans); without an intercept the head's threshold stays at 0
        self.thr = (shared_search(design, getattr(mom, "scan_moments", mom), self.y, self.v) if est.fit_intercept
                    else None)

    @property
    def fit_solver(self) -> str:
        """The weighted fits' method: damped Newton where it pays, else the active-set L-BFGS."""
        from .backends.newton import SOLVER, newton_fit_affordable

        return SOLVER if newton_fit_affordable(self.design) else "active-set-lbfgs"

    @property
    def precond(self):
        """The L-BFGS fits' :class:`~solvers.backends.torch.Preconditioner` (the design's, made on
        first use: Newton fits need none)."""
        return self.design.preconditioner(self.lam2, self.d + 1)

    @property
    def resolution(self) -> float:
        """One prediction's move of a gap: the largest ``|(M a)_ki|``."""
        return float(np.abs(self.Ma).max()) if self.Ma.size else 0.0

    def cold_theta(self):
        """The unconstrained fit's start: no weights, the intercept at the weighted base rate's logit."""
        import torch

        d, y, v = self.d, self.y, self.v
        p = float(np.clip((v * y).sum() / self.V, 1e-6, 1 - 1e-6))
        theta = torch.zeros(d + 1, dtype=torch.float64, device=self.design.device)
        theta[d] = np.log(p / (1 - p)) if self.fit_intercept else 0.0
        return theta

    def evaluate(self, z):
        yhat = (z > 0).astype(np.float64)
        return self.mom.gaps(yhat), float((self.v * (yhat != self.y)).sum() / self.V)

    def objective(self, lam):
        from .backends.torch import WeightedLogistic, _tensor

        delta = self.base + self.Ma.T @ lam
        dev = self.design.device
        return WeightedLogistic(_tensor((delta < 0).astype(np.float64), dev), _tensor(np.abs(delta), dev),
                                self.lam2, self.d)

    def minimize(self, obj, theta, *, tol, max_iter, pairs, z0=None):
        """The weighted fit of ``obj`` from ``theta``: damped Newton where it pays (few features:
        :func:`~solvers.backends.newton.newton_pays`), else the preconditioned L-BFGS with the
        carried curvature ``pairs``. Both stop at the same stationarity ``tol``."""
        from .backends.active_set import minimize
        from .backends.newton import minimize_newton, newton_pays

        if newton_pays(self.design, obj):
            return minimize_newton(self.design, obj, theta, fixed=self.fixed, tol=tol, max_iter=max_iter, z0=z0)
        return minimize(self.design, obj, theta, fixed=self.fixed, tol=tol, max_iter=max_iter, pairs=pairs, z0=z0,
                        precond=self.precond)

    def fit(self, lam, theta, pairs, *, exact=True, z0=None, inexact_iters=None) -> Fit:
        """The weighted fit at ``lam`` from ``theta`` (curvature ``pairs`` and scores ``z0`` carried over)."""
        res = self.minimize(self.objective(lam), theta, tol=self.search_tol,
                            max_iter=self.max_iter if exact else inexact_iters, pairs=pairs, z0=z0)
        zn = res.z.cpu().numpy()
        gaps, err = self.evaluate(zn)
        return Fit(res, zn, gaps, err)

    def polish(self, cand: Candidate, pairs):
        """The weighted fit of ``cand`` to the estimator's tolerance (the optimizer's result)."""
        return self.minimize(self.objective(cand.lam), cand.theta, tol=self.tol, max_iter=self.max_iter, pairs=pairs)

    def scores(self, theta):
        """The scores of centred ``theta``: one product with ``X``."""
        d = self.d
        return self.design.mv(theta[:d]) + theta[d]

    def candidate(self, z, gaps, err, lam, theta, stationarity, converged, aim) -> Candidate:
        """The :class:`Candidate` of a converged fit with scores ``z`` (at their best threshold)."""
        raw = float(np.abs(gaps).max())
        if self.thr is None:  # no intercept to move
            return Candidate(err, raw, lam.copy(), theta, stationarity, converged, raw)
        ch = _best_threshold(self.thr, z, aim, self.mom)
        return Candidate(ch.error, ch.max_gap, lam.copy(), theta, stationarity, converged, raw, ch.cut)

    def check(self, cand: Candidate, aim, *, keep_cut=False) -> Checked:
        """``cand`` with the exact ``predict()`` arithmetic; its threshold chosen again on those scores.

        With ``keep_cut`` the candidate's own threshold is tried first: on the exact scores it gives
        the intercept ``b = theta_d - cut`` (the search's scores are ``X w + theta_d`` to float32
        rounding). Where those predictions have the candidate's error and largest gap to rounding
        (:meth:`_reproduces`), the head is kept so and the second scan (a sort of the scores) is
        skipped; else the threshold is chosen again as without it.
        """
        d = self.d
        th = self.design.from_centered(cand.theta).cpu().numpy()
        xw = self.exact(th[:d])
        raw_g, _ = self.evaluate(xw + th[d])
        if self.thr is None:
            b = float(th[d])
        else:
            if keep_cut and cand.cut is not None:
                b = float(th[d]) - cand.cut
                g2, e2 = self.evaluate(xw + b)
                if self._reproduces(cand, g2, e2):
                    return Checked(cand, th, b, g2, e2, raw_g, kept_cut=True)
            # the threshold chosen again on the exact scores: ``xw + b > 0`` iff ``xw > -b`` in floats
            b = -_best_threshold(self.thr, xw, aim, self.mom).cut
        g2, e2 = self.evaluate(xw + b)
        return Checked(cand, th, b, g2, e2, raw_g)

    def _reproduces(self, cand: Candidate, gaps, error) -> bool:
        """Whether ``(gaps, error)`` are the candidate's to rounding. The scan sums the same terms in
        another order (running sums of n terms whose sizes add up to at most 2 a row: ``|M a|``, and
        ``v (1 - 2y) / V``), so the two differ by at most about ``2 n`` units of 2^-53; the bound
        allows twice that, while one prediction moves the error by ``v_i / V`` (1 / n at equal
        weights: far more below 4e7 rows). Whatever is kept, the head's gaps and error are those
        of its own exact predictions: only which of two equally good intercepts is returned rests on it."""
        tol = 4.0 * len(self.y) * 2.0 ** -53
        return abs(error - cand.error) <= tol and abs(float(np.abs(gaps).max()) - cand.gap) <= tol

    def head(self, chosen: Checked):
        """``(coef, intercept)`` of the returned head."""
        return chosen.theta[: self.d].copy(), chosen.intercept


class SoftmaxOracle:
    """K-class heads: cost-weighted softmax fits on the torch backend (see the module docstring)."""

    def __init__(self, est, problem, mom, design, *, search_tol, tol):
        from .backends.torch_softmax import ClassBlocks, block_preconditioner, class_shares

        self.X, self.v = problem.X, problem.sample_weight
        self.y = problem.y.astype(np.int64)
        self.K, self.V = problem.n_classes, float(self.v.sum())
        self.d = problem.X.shape[1]
        self.mom, self.design = mom, design
        self.lay = ClassBlocks(self.d, self.K)
        self.max_iter, self.tol, self.search_tol = int(est.max_iter), tol, search_tol
        self.lam2 = 0.0 if est.penalty is None else 1.0 / (float(est.C) * self.V)
        self.fixed = () if est.fit_intercept else self.lay.intercepts()
        self.precond = block_preconditioner(design, self.lam2, self.K, class_shares(problem))
        self.err_cost = (self.v / self.V)[:, None] * (np.arange(self.K)[None, :] != self.y[:, None])  # (n, K)
        self.offsets = OffsetSearch(mom, problem.y, self.v, fit_intercept=est.fit_intercept)

    #: the weighted fits' method
    fit_solver = "active-set-lbfgs"

    @property
    def resolution(self) -> float:
        return self.mom.resolution

    def evaluate(self, Z):
        yhat = np.argmax(Z, axis=1)
        return self.mom.gaps(yhat), float((self.v * (yhat != self.y)).sum() / self.V)

    def fit(self, lam, theta, pairs) -> Fit:
        from .backends.torch import _tensor, minimize
        from .backends.torch_softmax import WeightedSoftmax

        cost = self.err_cost + self.mom.costs(lam)
        Q = _tensor(cost.max(axis=1, keepdims=True) - cost, self.design.device)
        res = minimize(self.design, WeightedSoftmax(Q, self.lam2, self.lay), theta, fixed=self.fixed,
                       tol=self.search_tol, max_iter=self.max_iter, pairs=pairs, precond=self.precond, layout=self.lay)
        Z = res.z.cpu().numpy()
        gaps, err = self.evaluate(Z)
        return Fit(res, Z, gaps, err)

    def scores(self, theta) -> np.ndarray:
        """The (n, K) scores of centred ``theta``: one product with ``X``."""
        return self.lay.scores(self.design, theta).cpu().numpy()

    def candidate(self, Z, gaps, err, lam, theta, stationarity, converged, aim) -> Candidate:
        """The :class:`Candidate` of a fit, judged at its own intercepts (what the search steers),
        with its best per-class offsets for ``aim`` alongside (:mod:`solvers.threshold_multiclass`)."""
        g = float(np.abs(gaps).max())
        return Candidate(err, g, lam.copy(), theta, stationarity, converged, g, gaps=gaps,
                         offset_choice=self.offsets.choose(Z, aim))

    @staticmethod
    def at_offsets(cand: Candidate) -> Candidate:
        """``cand`` judged at its best offsets (the head choice; its intercepts absorb them)."""
        choice = cand.offset_choice
        return dataclasses.replace(cand, error=choice.error, gap=choice.max_gap, offsets=choice.offsets)

    def check(self, cand: Candidate, aim) -> Checked:
        """``cand`` with the exact ``predict()`` arithmetic (float64 products)."""
        from . import multinomial as mn

        th = self.lay.from_centered(cand.theta, self.design.mu).cpu().numpy()
        if cand.offsets is not None:
            th.reshape(self.K, self.d + 1)[:, self.d] += cand.offsets  # the intercepts absorb them
        W, b = mn.unstack(th, self.K)
        g2, e2 = self.evaluate(mn.scores(self.X, W, b))
        return Checked(cand, th, 0.0, g2, e2, g2)

    def head(self, chosen: Checked):
        from . import multinomial as mn

        return mn.identified(*mn.unstack(chosen.theta, self.K))
