"""The cvxpy reference backend.

The problem, on paper (``s_i = 2y_i - 1``, ``V = sum_i v_i``):

.. math::

    \\min_{w, b}\\; \\sum_i \\frac{v_i}{V} \\log(1 + e^{-s_i (x_i^\\top w + b)}) + R(w)
    \\quad \\text{s.t.}\\quad A [w; b] \\le \\varepsilon + c_0
    \\;\\;(\\text{or } L_g(w, b) \\le \\varepsilon,\\ \\text{or the minimax epigraph}),

with :math:`R(w) = \\lVert w\\rVert^2/(2CV)` (``l1``: :math:`\\lVert w\\rVert_1/(CV)`;
``elasticnet`` mixes them as scikit-learn does).

Conditioning: the loss is a *mean* (Clarabel failed on the sum form of the Adult problem),
columns are centred and divided by one global scale ``s`` (``x' = (x - mu)/s``), and
constraint rows are normalised to unit norm. All three maps are exact: ``w = w'/s``,
``b = b' - mu^T w``, multipliers ``lambda_k = mu_k / ||row_k||``.

``eps`` is a ``cp.Parameter(nonneg=True)`` and the problem is DPP, so :class:`CvxpyModel`
builds once and re-solves a sweep.
"""

from __future__ import annotations

import time
import warnings

import cvxpy as cp
import numpy as np

from ..errors import InfeasibleConstraintError, SolverError
from . import Solution

SOLVER_ORDER = ("CLARABEL", "SCS", "ECOS")

MSG_ALL_FAILED = (
    "every cvxpy solver failed on this problem ({details}); try backend='torch', "
    "a larger C, or standardised features"
)
MSG_INFEASIBLE_GROUP_LOSS = (
    "group-loss bound eps={eps:g} is infeasible (smallest reachable largest group loss about {best:.4g}); raise eps"
)
MSG_INFEASIBLE = "constraint {name!r} with eps={eps:g} is infeasible ({status}); raise eps"


def _solver_options(name: str, tol: float, max_iter: int) -> dict:
    tight = min(tol, 1e-8)
    if name == "CLARABEL":
        return dict(tol_gap_abs=tight, tol_gap_rel=tight, tol_feas=tight, max_iter=max(max_iter, 200))
    if name == "SCS":
        return dict(eps_abs=max(tight, 1e-9), eps_rel=max(tight, 1e-9), max_iters=max(max_iter, 100_000))
    if name == "ECOS":
        return dict(abstol=tight, reltol=tight, feastol=tight, max_iters=max(max_iter, 200))
    return {}


class CvxpyModel:
    """The problem built once; :meth:`solve` sets ``eps`` and re-solves.

    Parameters
    ----------
    problem : FairProblem
    constraint : Constraint or None
        A score constraint (rate constraints are handled by :mod:`solvers.reductions`).
    C, penalty, l1_ratio, fit_intercept : as in :class:`~solvers.FairLogisticRegression`.
    """

    def __init__(self, problem, constraint, *, C, penalty, l1_ratio, fit_intercept, linear_form=None, cells=None):
        self.problem = problem
        self.constraint = constraint
        self.name = None if constraint is None else constraint.name
        X = np.asarray(problem.X, dtype=np.float64)
        n, d = X.shape
        y, v = problem.y, problem.sample_weight
        V = float(v.sum())
        self.fit_intercept = fit_intercept
        mu = X.mean(axis=0) if fit_intercept else np.zeros(d)
        Xc = X - mu
        sd = Xc.std(axis=0)
        s = float(np.sqrt(np.mean(sd**2))) if d else 1.0
        if not np.isfinite(s) or s <= 1e-12:
            s = float(np.max(np.abs(Xc))) if Xc.size and np.max(np.abs(Xc)) > 0 else 1.0
        self.mu, self.s = mu, s
        Xs = Xc / s
        self.ws = cp.Variable(d, name="w_scaled")
        self.bs = cp.Variable(name="b_scaled") if fit_intercept else None
        self.eps = cp.Parameter(nonneg=True, name="eps", value=0.0)
        z = Xs @ self.ws + (self.bs if fit_intercept else 0.0)
        sgn = 2.0 * y - 1.0
        # per-sample loss epigraph: ell_i >= log(1 + exp(-s_i z_i)); one cone per sample
        self.ell = cp.Variable(n, name="loss")
        cons = [self.ell >= cp.logistic(-cp.multiply(sgn, z))]
        loss = (v / V) @ self.ell
        reg = self._penalty(C, V, penalty, l1_ratio)
        self.lin_rows = None
        self.cells = cells
        objective = loss + reg
        if self.name == "minimax":
            codes, nc = cells
            Wc = np.zeros((nc, n))
            Wc[codes, np.arange(n)] = v
            Wc /= Wc.sum(axis=1, keepdims=True)
            self.t = cp.Variable(name="t")
            self.fair_con = Wc @ self.ell <= self.t
            cons.append(self.fair_con)
            objective = self.t + reg
        elif self.name == "group-loss":
            codes, nc = cells
            Wc = np.zeros((nc, n))
            Wc[codes, np.arange(n)] = v
            Wc /= Wc.sum(axis=1, keepdims=True)
            self.fair_con = Wc @ self.ell <= self.eps * np.ones(nc)
            cons.append(self.fair_con)
        elif linear_form is not None:
            A = linear_form.A
            Aw, Ab = A[:, :-1], A[:, -1]
            Aws = (Aw - np.outer(Ab, mu)) / s
            As = np.hstack([Aws, Ab[:, None]]) if fit_intercept else Aws
            r = np.linalg.norm(As, axis=1)
            keep = r > 1e-12 * max(1.0, r.max(initial=0.0))
            self.lin_rows = (np.flatnonzero(keep), r[keep], A.shape[0])
            if keep.any():
                Ak = As[keep] / r[keep][:, None]
                lhs = Ak[:, :-1] @ self.ws + Ak[:, -1] * self.bs if fit_intercept else Ak @ self.ws
                rhs = cp.multiply(1.0 / r[keep], self.eps) + linear_form.c0[keep] / r[keep]
                self.fair_con = lhs <= rhs
                cons.append(self.fair_con)
            else:
                self.fair_con = None
        else:
            self.fair_con = None
        self.prob = cp.Problem(cp.Minimize(objective), cons)

    def _penalty(self, C, V, penalty, l1_ratio):
        s = self.s
        if penalty is None or penalty == "none":
            return cp.Constant(0.0)
        if penalty == "l2":
            return (1.0 / (2.0 * C * V * s * s)) * cp.sum_squares(self.ws)
        if penalty == "l1":
            return (1.0 / (C * V * s)) * cp.norm1(self.ws)
        r = float(l1_ratio)
        return (r / (C * V * s)) * cp.norm1(self.ws) + ((1 - r) / (2.0 * C * V * s * s)) * cp.sum_squares(self.ws)

    def is_dpp(self) -> bool:
        return self.prob.is_dcp(dpp=True)

    def solve(self, eps: float, *, tol: float = 1e-8, max_iter: int = 1000, solvers=SOLVER_ORDER) -> Solution:
        """Set ``eps``, solve with the first solver that succeeds, map back to original units."""
        self.eps.value = float(max(eps, 0.0))
        installed = set(cp.installed_solvers())
        notes, details = [], []
        t0 = time.perf_counter()
        for name in solvers:
            if name not in installed:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.prob.solve(solver=name, **_solver_options(name, tol, max_iter))
            except cp.error.SolverError as err:
                details.append(f"{name}: {str(err).splitlines()[0][:80]}")
                notes.append(f"{name} failed ({type(err).__name__}); fell back")
                continue
            status = self.prob.status
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                raise self._infeasible_error(status, tol, max_iter)
            if status == cp.OPTIMAL:
                return self._solution(name, "optimal", notes, time.perf_counter() - t0)
            details.append(f"{name}: {status}")
            if status == cp.OPTIMAL_INACCURATE:
                notes.append(f"{name} returned optimal_inaccurate; tried the next solver")
                best = self._solution(name, "optimal_inaccurate", list(notes), time.perf_counter() - t0)
                # keep looking for an accurate answer; remember this one
                self._inaccurate = best
                continue
            notes.append(f"{name} returned {status}; fell back")
        if getattr(self, "_inaccurate", None) is not None:
            sol = self._inaccurate
            self._inaccurate = None
            sol.notes = notes
            return sol
        raise SolverError(MSG_ALL_FAILED.format(details="; ".join(details) or "no solver installed"))

    def _infeasible_error(self, status, tol, max_iter):
        eps = float(self.eps.value)
        if self.name == "group-loss":
            from ..constraints import MinimaxLoss

            mm = CvxpyModel(
                self.problem, MinimaxLoss(), C=np.inf, penalty=None, l1_ratio=None,
                fit_intercept=self.fit_intercept, cells=self.cells,
            )
            try:
                sol = mm.solve(0.0, tol=tol, max_iter=max_iter)
                best = float(mm.t.value)
            except SolverError:  # pragma: no cover - diagnostics only
                best = float("nan")
            return InfeasibleConstraintError(MSG_INFEASIBLE_GROUP_LOSS.format(eps=eps, best=best))
        return InfeasibleConstraintError(MSG_INFEASIBLE.format(name=self.name, eps=eps, status=status))

    def _solution(self, solver, status, notes, wall) -> Solution:
        ws = np.asarray(self.ws.value, dtype=np.float64).reshape(-1)
        w = ws / self.s
        b = (float(self.bs.value) if self.fit_intercept else 0.0) - float(self.mu @ w)
        lam = np.zeros(0)
        if self.fair_con is not None and self.fair_con.dual_value is not None:
            dual = np.asarray(self.fair_con.dual_value, dtype=np.float64).reshape(-1)
            if self.lin_rows is not None:
                idx, r, m = self.lin_rows
                lam = np.zeros(m)
                lam[idx] = dual / r
            else:
                lam = dual
        elif self.lin_rows is not None:
            lam = np.zeros(self.lin_rows[2])
        stats = self.prob.solver_stats
        n_iter = int(stats.num_iters) if stats is not None and stats.num_iters is not None else 0
        return Solution(coef=w, intercept=b, multipliers=lam, status=status, solver=solver,
                        n_iter=n_iter, wall_time=wall, notes=list(notes))


def fit_cvxpy(problem, constraint, *, eps, C, penalty, l1_ratio, fit_intercept, tol, max_iter,
              linear_form=None, cells=None) -> Solution:
    """Build and solve once (see :class:`CvxpyModel`)."""
    model = CvxpyModel(problem, constraint, C=C, penalty=penalty, l1_ratio=l1_ratio,
                       fit_intercept=fit_intercept, linear_form=linear_form, cells=cells)
    return model.solve(eps, tol=tol, max_iter=max_iter)
