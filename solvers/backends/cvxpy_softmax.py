"""The multinomial (softmax) head on the cvxpy reference backend.

On paper (``Y`` the one-hot labels, ``V = sum_i v_i``, :mod:`solvers.multinomial` for the
parameters and their identifiability):

.. math::

    \\min_{W, b}\\; \\sum_i \\frac{v_i}{V} \\Bigl(\\log \\sum_k e^{z_{ik}} - \\sum_k Y_{ik} z_{ik}\\Bigr)
    + \\frac{\\lVert W \\rVert_F^2}{2 C V}
    \\quad \\text{s.t.}\\quad A \\theta \\le \\varepsilon + c_0,\\;\\; \\textstyle\\sum_k b_k = 0,

with :math:`z_{ik} = x_i^\\top w_k + b_k` and ``theta`` the class-by-class stack of
:math:`[w_k; b_k]`. One exponential cone per (sample, class). :class:`CvxpySoftmaxModel`
subclasses the binary :class:`~solvers.backends.cvxpy.CvxpyModel` and replaces only the
variables, the loss, the rows' left-hand side and the map back to a head: the conditioning (a
mean loss, centred columns divided by one global scale, unit-norm constraint rows), ``eps`` as a
DPP parameter, the solve loop and the multipliers are the binary model's.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .. import multinomial as mn
from .common import MSG_PENALTY_MULTICLASS
from .cvxpy import CvxpyModel


class CvxpySoftmaxModel(CvxpyModel):
    """The K-class problem built once; :meth:`solve` (inherited) sets ``eps`` and re-solves."""

    def __init__(self, problem, constraint, **kw):
        self.n_classes = self.n_blocks = problem.n_classes
        super().__init__(problem, constraint, **kw)

    def _variables(self, d):
        K = self.n_classes
        return cp.Variable((d, K), name="W_scaled"), (cp.Variable(K, name="b_scaled") if self.fit_intercept else None)

    def _loss(self, Xs, y, q):
        n, K = Xs.shape[0], self.n_classes
        Z = Xs @ self.ws
        if self.fit_intercept:
            Z = Z + np.ones((n, 1)) @ cp.reshape(self.bs, (1, K), order="C")
        Y = np.zeros((n, K))
        Y[np.arange(n), y.astype(np.int64)] = 1.0
        loss = q @ (cp.log_sum_exp(Z, axis=1) - cp.sum(cp.multiply(Y, Z), axis=1))
        return loss, ([cp.sum(self.bs) == 0] if self.fit_intercept else [])  # the intercepts' identifiability

    def _rows_lhs(self, Ak):
        Kd = self.n_classes * self.ws.shape[0]
        # vec in column-major order stacks the columns w_0, w_1, ...: class by class, as theta
        lhs = Ak[:, :Kd] @ cp.vec(self.ws, order="F")
        return lhs + Ak[:, Kd:] @ self.bs if self.fit_intercept else lhs

    def _head(self):
        W = np.asarray(self.ws.value, dtype=np.float64) / self.s  # (d, K)
        K = self.n_classes
        bs = np.asarray(self.bs.value, dtype=np.float64).reshape(-1) if self.fit_intercept else np.zeros(K)
        return mn.identified(W.T, bs - self.mu @ W)


__all__ = ["CvxpySoftmaxModel", "MSG_PENALTY_MULTICLASS"]
