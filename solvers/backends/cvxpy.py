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
builds once and re-solves a sweep. The conditioning, the penalty weights and the row scaling are
:mod:`solvers.backends.common`'s.
"""

from __future__ import annotations

import time
import warnings

import cvxpy as cp
import numpy as np

from ..errors import InfeasibleConstraintError, SolverError
from . import Solution
from .common import check_penalty, condition, constraint_pieces, penalty_weights, row_norms, scaled_rows

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
    """The problem built once; :meth:`solve` sets ``eps`` and re-solves (the registered binary
    cvxpy backend: :meth:`prepare` is the contract's entry, see :mod:`solvers.backends`).

    Parameters
    ----------
    problem : FairProblem
    constraint : Constraint or None
        A score constraint (rate constraints are handled by :mod:`solvers.reductions`).
    C, penalty, l1_ratio, fit_intercept : as in :class:`~solvers.FairLogisticRegression`.
    linear_form, cells : the constraint's pieces (:func:`~solvers.backends.common.constraint_pieces`).
    tol, max_iter : the defaults of :meth:`solve`.

    Subclasses (the K-class head) override :meth:`_variables`, :meth:`_loss`, :meth:`_rows_lhs`
    and :meth:`_head`; the conditioning, the penalty, the constraint rows, the solve loop and the
    multipliers are shared.
    """

    #: the head's blocks of ``d + 1`` parameters (1: binary)
    n_blocks = 1

    def __init__(self, problem, constraint, *, C, penalty, l1_ratio, fit_intercept, linear_form=None, cells=None,
                 tol=1e-8, max_iter=1000):
        t0 = time.perf_counter()
        check_penalty(penalty, backend="cvxpy", n_classes=problem.n_classes)
        self.problem = problem
        self.constraint = constraint
        self.name = None if constraint is None else constraint.name
        self.linear_form, self.cells = linear_form, cells
        self.tol, self.max_iter = tol, max_iter
        self.design = None
        self.fit_intercept = fit_intercept
        self.mu, self.s, Xs = condition(problem.X, fit_intercept)
        n, d = Xs.shape
        v = problem.sample_weight
        V = float(v.sum())
        self.ws, self.bs = self._variables(d)
        self.eps = cp.Parameter(nonneg=True, name="eps", value=0.0)
        loss, cons = self._loss(Xs, problem.y, v / V)
        a1, a2 = penalty_weights(C, V, penalty, l1_ratio, self.s)
        reg = cp.Constant(0.0)
        if a1:
            reg = a1 * cp.norm1(self.ws)
        if a2:
            reg = a2 * cp.sum_squares(self.ws) if not a1 else reg + a2 * cp.sum_squares(self.ws)
        self.lin_rows = None
        self.fair_con = None
        objective = loss + reg
        if self.name in ("minimax", "group-loss"):
            codes, nc = cells
            Wc = np.zeros((nc, n))
            Wc[codes, np.arange(n)] = v
            Wc /= Wc.sum(axis=1, keepdims=True)
            if self.name == "minimax":
                self.t = cp.Variable(name="t")
                self.fair_con = Wc @ self.ell <= self.t
                objective = self.t + reg
            else:
                self.fair_con = Wc @ self.ell <= self.eps * np.ones(nc)
            cons.append(self.fair_con)
        elif linear_form is not None:
            As = scaled_rows(linear_form.A, self.mu, self.s, self.n_blocks, fit_intercept)
            r, keep = row_norms(As)
            self.lin_rows = (np.flatnonzero(keep), r[keep], As.shape[0])
            if keep.any():
                lhs = self._rows_lhs(As[keep] / r[keep][:, None])
                rhs = cp.multiply(1.0 / r[keep], self.eps) + linear_form.c0[keep] / r[keep]
                self.fair_con = lhs <= rhs
                cons.append(self.fair_con)
        self.prob = cp.Problem(cp.Minimize(objective), cons)
        self.build_time = time.perf_counter() - t0

    @classmethod
    def prepare(cls, problem, constraint, params, *, design=None):
        """The contract's entry (:mod:`solvers.backends`): the constraint's pieces and the problem,
        built once with ``eps`` a DPP parameter (``design`` is the torch backend's; unused)."""
        linear_form, cells = constraint_pieces(problem, constraint)
        return cls(problem, constraint, C=params.C, penalty=params.penalty, l1_ratio=params.l1_ratio,
                   fit_intercept=params.fit_intercept, linear_form=linear_form, cells=cells,
                   tol=params.tol, max_iter=params.max_iter)

    def certificate_ops(self):
        """Products for the certificate: ``None``, plain numpy."""
        return None

    def _variables(self, d):
        return cp.Variable(d, name="w_scaled"), (cp.Variable(name="b_scaled") if self.fit_intercept else None)

    def _loss(self, Xs, y, q):
        """The mean logistic loss and its constraints: per-sample epigraph variables
        ``ell_i >= log(1 + exp(-s_i z_i))`` (one cone per sample), which the loss constraints reuse."""
        z = Xs @ self.ws + (self.bs if self.fit_intercept else 0.0)
        sgn = 2.0 * y - 1.0
        self.ell = cp.Variable(Xs.shape[0], name="loss")
        return q @ self.ell, [self.ell >= cp.logistic(-cp.multiply(sgn, z))]

    def _rows_lhs(self, Ak):
        """``A theta'`` for unit rows on the conditioned parameters (:func:`~.common.scaled_rows`)."""
        return Ak[:, :-1] @ self.ws + Ak[:, -1] * self.bs if self.fit_intercept else Ak @ self.ws

    def _head(self):
        """``(coef, intercept)`` in original units."""
        ws = np.asarray(self.ws.value, dtype=np.float64).reshape(-1)
        w = ws / self.s
        return w, (float(self.bs.value) if self.fit_intercept else 0.0) - float(self.mu @ w)

    def is_dpp(self) -> bool:
        return self.prob.is_dcp(dpp=True)

    def solve(self, eps: float, warm=None, *, tol: float | None = None, max_iter: int | None = None,
              solvers=SOLVER_ORDER) -> Solution:
        """Set ``eps``, solve with the first solver that succeeds, map back to original units.

        ``warm`` (the contract's warm start) is not used: re-solving the built problem is this
        backend's reuse along a path. ``tol`` / ``max_iter`` default to the model's."""
        tol = self.tol if tol is None else tol
        max_iter = self.max_iter if max_iter is None else max_iter
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
        w, b = self._head()
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


__all__ = ["CvxpyModel", "SOLVER_ORDER"]
