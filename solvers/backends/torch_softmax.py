"""The multinomial (softmax) head on the torch backend: same active-set L-BFGS, K score columns.

The binary solver (:func:`solvers.backends.torch.minimize`) runs unchanged on the flat
parameter vector ``theta = [w_0; b_0; ...; w_{K-1}; b_{K-1}]`` of :mod:`solvers.multinomial`;
:class:`ClassBlocks` tells it how ``theta`` becomes the score matrix ``Z = X W^T + b`` (one
product ``X V`` with ``V`` of shape (d, K) per evaluation (:meth:`Design.mv` with a 2-D operand): one pass over ``X`` for all
classes) and how a score gradient becomes a ``theta`` gradient (one ``X^T R``). Linear score
constraints keep their meaning: rows of ``A`` act on ``theta``.

The objective is the cost-weighted softmax loss of :mod:`solvers.multinomial`,

.. math::

    \\sum_{i, k} Q_{ik} \\bigl(\\log \\textstyle\\sum_j e^{z_{ij}} - z_{ik}\\bigr)
    + \\tfrac{\\lambda_2}{2} \\lVert W \\rVert_F^2,

with ``Q_ik = v_i [y_i = k] / V`` for the head itself and per-class costs in the rate
reduction. Its score gradient is :math:`S_i p_{ik} - Q_{ik}` (:math:`S_i = \\sum_k Q_{ik}`),
which sums to zero over the classes, so iterates keep :math:`\\sum_k b_k` where it started (0).

Preconditioning: each class block gets the binary :class:`~solvers.backends.torch.Preconditioner`
with the Gram matrix scaled to the softmax curvature at the start,
:math:`\\bar c = \\frac1K \\sum_k p_k (1 - p_k)` (``p`` the class shares) instead of 1/4.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import multinomial as mn
from . import Solution, WarmStart
from .torch import Preconditioner, TorchModel, _numpy_pairs, _tensor, minimize

_F64 = torch.float64


class ClassBlocks:
    """``theta`` of K class blocks ``[w_k; b_k]`` (each ``d + 1`` long) as seen by :func:`minimize`."""

    def __init__(self, d: int, n_classes: int):
        self.d, self.K = d, n_classes
        self.q = d + 1

    def scores(self, design, theta):
        T = theta.view(self.K, self.q)
        return design.mv(T[:, : self.d].t()) + T[:, self.d]

    def grad(self, design, GZ, gdir):
        g = gdir.clone()
        G = g.view(self.K, self.q)
        xtr = design.rmv(GZ)  # (X - mu)^T GZ, (d, K)
        gsum = GZ.sum(0)
        G[:, : self.d] += xtr.t()
        G[:, self.d] += gsum
        return g, xtr, gsum

    def stationarity(self, pg, mu):
        """inf-norm of a projected gradient in uncentred coordinates (``g_w + mu g_b`` per class)."""
        P = pg.view(self.K, self.q)
        gw = P[:, : self.d] if mu is None else P[:, : self.d] + P[:, self.d :] * mu
        return max(float(gw.abs().max()), float(P[:, self.d].abs().max()))

    def to_centered(self, theta, mu):
        """``b_k -> b_k + mu . w_k`` (the design's implicit centring), a copy."""
        th = theta.clone()
        if mu is not None:
            T = th.view(self.K, self.q)
            T[:, self.d] += T[:, : self.d] @ mu
        return th

    def from_centered(self, theta, mu):
        th = theta.clone()
        if mu is not None:
            T = th.view(self.K, self.q)
            T[:, self.d] -= T[:, : self.d] @ mu
        return th

    def center_rows(self, A: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """Constraint rows in centred coordinates: per class block ``a_w - a_b mu``."""
        A3 = A.reshape(A.shape[0], self.K, self.q).copy()
        A3[:, :, : self.d] -= A3[:, :, self.d :] * mu
        return A3.reshape(A.shape[0], -1)

    def intercepts(self) -> tuple:
        """The coordinates of the intercepts (held at 0 without ``fit_intercept``)."""
        return tuple(k * self.q + self.d for k in range(self.K))


class BlockPreconditioner:
    """One binary :class:`Preconditioner` (``d + 1`` coordinates) applied to every class block."""

    def __init__(self, base: Preconditioner, n_classes: int):
        self.base, self.K, self.q = base, n_classes, base.p

    def _apply(self, f, v):
        vv = v.reshape(self.K, self.q, -1).permute(1, 0, 2).reshape(self.q, -1)
        return f(vv).reshape(self.q, self.K, -1).permute(1, 0, 2).reshape(v.shape)

    def t(self, v):
        return self._apply(self.base.t, v)

    def tt(self, v):
        return self._apply(self.base.tt, v)


def block_preconditioner(design, lam2: float, n_classes: int, shares: np.ndarray) -> BlockPreconditioner:
    """The preconditioner of a K-class head (cached on the design per ``lam2``, K and curvature)."""
    c = float(np.mean(shares * (1.0 - shares)))
    key = ("softmax", float(lam2), int(n_classes), round(c, 12))
    if key not in design._preconditioners:
        # the binary preconditioner assumes curvature 1/4: scale the Gram matrix to c instead
        base = Preconditioner(design.gram() * (4.0 * c), lam2, design.d, design.d + 1)
        design._preconditioners[key] = BlockPreconditioner(base, n_classes)
    return design._preconditioners[key]


class WeightedSoftmax:
    """``sum_ik Q_ik (-log p_ik) + lam2/2 ||W||^2`` on scores ``Z`` (n, K); see the module docstring."""

    def __init__(self, Q: torch.Tensor, lam2: float, layout: ClassBlocks):
        self.Q, self.lam2, self.lay = Q, lam2, layout
        self.S = Q.sum(1)

    def eval(self, Z, theta):
        lse = torch.logsumexp(Z, 1)
        val = torch.dot(self.S, lse) - (self.Q * Z).sum()
        GZ = self.S[:, None] * torch.exp(Z - lse[:, None]) - self.Q
        W = theta.view(self.lay.K, self.lay.q)[:, : self.lay.d]
        val = val + 0.5 * self.lam2 * (W * W).sum()
        gdir = torch.zeros_like(theta)
        gdir.view(self.lay.K, self.lay.q)[:, : self.lay.d] = self.lam2 * W
        return float(val), GZ, gdir


def class_shares(problem) -> np.ndarray:
    v = problem.sample_weight
    return np.bincount(problem.y.astype(np.int64), weights=v, minlength=problem.n_classes) / v.sum()


def start_theta(problem, fit_intercept, warm, linear_form, eps) -> np.ndarray:
    """A feasible start: the warm start if given (its ``W`` shrunk toward 0 until it meets the
    rows, which are homogeneous in ``W`` and free of ``b``), else the best constant head."""
    d, K = problem.d, problem.n_classes
    base = np.zeros((K, d + 1))
    if fit_intercept:
        base[:, d] = mn.base_intercept(problem.y, problem.sample_weight, K)
    base = base.reshape(-1)
    if warm is None or warm.theta is None or len(warm.theta) != base.shape[0]:
        return base
    th = np.asarray(warm.theta, dtype=np.float64).copy()
    if not fit_intercept:
        th.reshape(K, d + 1)[:, d] = 0.0
    if linear_form is not None:
        Ath = linear_form.A @ th
        room = eps + linear_form.c0
        over = Ath > room
        if np.any(over):
            t = np.min(np.where(Ath > 0, np.maximum(room, 0.0) / np.where(Ath > 0, Ath, 1.0), 1.0))
            T = th.reshape(K, d + 1)
            T[:, :d] *= max(0.0, min(1.0, t)) * (1 - 1e-12)
            if np.any(linear_form.A @ th > room + 1e-12):
                return base
    return th


class TorchSoftmaxModel(TorchModel):
    """The registered K-class torch backend: the binary :class:`~solvers.backends.torch.TorchModel`
    (its design, penalty check, unit rows in centred coordinates per class block, multipliers)
    with the softmax objective on :class:`ClassBlocks`, unconstrained or under linear score rows."""

    def _setup(self, V):
        K = self.problem.n_classes
        self.n_classes = K
        self._lay = ClassBlocks(self.design.d, K)
        self._Q = _tensor(mn.one_hot_weights(self.problem.y, self.problem.sample_weight, K), self.design.device)

    @property
    def n_blocks(self):
        return self.problem.n_classes

    def _solve(self, eps, warm):
        p, design, lay, K = self.params, self.design, self._lay, self.n_classes
        t0 = time.perf_counter()
        dev, mu = design.device, design.mu
        obj = WeightedSoftmax(self._Q, self.lam2, lay)
        fixed = () if p.fit_intercept else lay.intercepts()
        rhs = None if self._A is None else _tensor(self._rhs(eps), dev)
        theta0 = start_theta(self.problem, p.fit_intercept, warm, self.linear_form, eps)
        theta = lay.to_centered(_tensor(theta0, dev), mu)
        precond = block_preconditioner(design, self.lam2, K, class_shares(self.problem))
        res = minimize(design, obj, theta, A=self._A, rhs=rhs, fixed=fixed,
                       working=tuple(warm.working) if warm is not None else (), tol=p.tol, max_iter=p.max_iter,
                       pairs=warm.pairs if warm is not None else None, precond=precond, layout=lay)
        th = lay.from_centered(res.theta, mu).cpu().numpy()
        coef, intercept = mn.identified(*mn.unstack(th, K))
        status = "optimal" if res.converged else "max_iter"
        return Solution(coef=coef, intercept=intercept, multipliers=self._multipliers(res), status=status,
                        solver=self.solver, n_iter=res.n_iter, wall_time=time.perf_counter() - t0, notes=[],
                        state=WarmStart(theta=mn.stack(coef, intercept), working=tuple(res.working),
                                        pairs=_numpy_pairs(res.pairs)))


__all__ = ["ClassBlocks", "BlockPreconditioner", "TorchSoftmaxModel", "WeightedSoftmax", "block_preconditioner"]
