"""The multinomial (softmax) head on the cvxpy reference backend.

On paper (``Y`` the one-hot labels, ``V = sum_i v_i``, :mod:`solvers.multinomial` for the
parameters and their identifiability):

.. math::

    \\min_{W, b}\\; \\sum_i \\frac{v_i}{V} \\Bigl(\\log \\sum_k e^{z_{ik}} - \\sum_k Y_{ik} z_{ik}\\Bigr)
    + \\frac{\\lVert W \\rVert_F^2}{2 C V}
    \\quad \\text{s.t.}\\quad A \\theta \\le \\varepsilon + c_0,\\;\\; \\textstyle\\sum_k b_k = 0,

with :math:`z_{ik} = x_i^\\top w_k + b_k` and ``theta`` the class-by-class stack of
:math:`[w_k; b_k]`. One exponential cone per (sample, class). The conditioning is the binary
model's (:class:`~solvers.backends.cvxpy.CvxpyModel`: a mean loss, centred columns divided by
one global scale, unit-norm constraint rows), and so are ``eps`` as a DPP parameter and the
solve loop, which this model inherits.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .. import multinomial as mn
from ..errors import DataError
from . import Solution
from .cvxpy import CvxpyModel

MSG_PENALTY_MULTICLASS = (
    "penalty={penalty!r} is not available for a head with {k} classes (the multinomial head has the L2 "
    "penalty); pass penalty='l2' or None"
)


class CvxpySoftmaxModel(CvxpyModel):
    """The K-class problem built once; :meth:`solve` (inherited) sets ``eps`` and re-solves."""

    def __init__(self, problem, constraint, *, C, penalty, l1_ratio, fit_intercept, linear_form=None, cells=None):
        K = problem.n_classes
        if penalty not in ("l2", None, "none"):
            raise DataError(MSG_PENALTY_MULTICLASS.format(penalty=penalty, k=K))
        self.problem = problem
        self.constraint = constraint
        self.name = None if constraint is None else constraint.name
        self.n_classes = K
        X = np.asarray(problem.X, dtype=np.float64)
        n, d = X.shape
        y, v = problem.y.astype(np.int64), problem.sample_weight
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
        self.ws = cp.Variable((d, K), name="W_scaled")
        self.bs = cp.Variable(K, name="b_scaled") if fit_intercept else None
        self.eps = cp.Parameter(nonneg=True, name="eps", value=0.0)
        Z = Xs @ self.ws
        if fit_intercept:
            Z = Z + np.ones((n, 1)) @ cp.reshape(self.bs, (1, K), order="C")
        Y = np.zeros((n, K))
        Y[np.arange(n), y] = 1.0
        loss = (v / V) @ (cp.log_sum_exp(Z, axis=1) - cp.sum(cp.multiply(Y, Z), axis=1))
        reg = cp.Constant(0.0) if penalty in (None, "none") else (1.0 / (2.0 * C * V * s * s)) * cp.sum_squares(self.ws)
        cons = [cp.sum(self.bs) == 0] if fit_intercept else []  # the intercepts' identifiability
        self.lin_rows = None
        self.cells = cells
        self.fair_con = None
        if linear_form is not None:
            A = linear_form.A
            m = A.shape[0]
            A3 = A.reshape(m, K, d + 1)
            Ab = A3[:, :, d]
            Aws = (A3[:, :, :d] - Ab[:, :, None] * mu) / s
            As = np.hstack([Aws.reshape(m, K * d), Ab]) if fit_intercept else Aws.reshape(m, K * d)
            r = np.linalg.norm(As, axis=1)
            keep = r > 1e-12 * max(1.0, r.max(initial=0.0))
            self.lin_rows = (np.flatnonzero(keep), r[keep], m)
            if keep.any():
                Ak = As[keep] / r[keep][:, None]
                # vec in column-major order stacks the columns w_0, w_1, ...: class by class, as theta
                lhs = Ak[:, : K * d] @ cp.vec(self.ws, order="F")
                if fit_intercept:
                    lhs = lhs + Ak[:, K * d :] @ self.bs
                rhs = cp.multiply(1.0 / r[keep], self.eps) + linear_form.c0[keep] / r[keep]
                self.fair_con = lhs <= rhs
                cons.append(self.fair_con)
        self.prob = cp.Problem(cp.Minimize(loss + reg), cons)

    def _solution(self, solver, status, notes, wall) -> Solution:
        W = np.asarray(self.ws.value, dtype=np.float64) / self.s  # (d, K)
        bs = np.asarray(self.bs.value, dtype=np.float64).reshape(-1) if self.fit_intercept else np.zeros(self.n_classes)
        coef, intercept = mn.identified(W.T, bs - self.mu @ W)
        lam = np.zeros(0)
        if self.fair_con is not None and self.fair_con.dual_value is not None:
            idx, r, m = self.lin_rows
            lam = np.zeros(m)
            lam[idx] = np.asarray(self.fair_con.dual_value, dtype=np.float64).reshape(-1) / r
        elif self.lin_rows is not None:
            lam = np.zeros(self.lin_rows[2])
        stats = self.prob.solver_stats
        n_iter = int(stats.num_iters) if stats is not None and stats.num_iters is not None else 0
        return Solution(coef=coef, intercept=intercept, multipliers=lam, status=status, solver=solver,
                        n_iter=n_iter, wall_time=wall, notes=list(notes))


def fit_cvxpy_softmax(problem, constraint, *, eps, C, penalty, l1_ratio, fit_intercept, tol, max_iter,
                      linear_form=None, cells=None) -> Solution:
    """Build and solve once (see :class:`CvxpySoftmaxModel`)."""
    model = CvxpySoftmaxModel(problem, constraint, C=C, penalty=penalty, l1_ratio=l1_ratio,
                              fit_intercept=fit_intercept, linear_form=linear_form, cells=cells)
    return model.solve(eps, tol=tol, max_iter=max_iter)


__all__ = ["CvxpySoftmaxModel", "fit_cvxpy_softmax", "MSG_PENALTY_MULTICLASS"]
