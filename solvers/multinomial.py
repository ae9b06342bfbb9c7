"""The multinomial (softmax) head for K > 2 classes, in numpy: parameters, objective, certificate.

A head for classes ``0 .. K-1`` has one row ``(w_k, b_k)`` per class, stacked class by class
into the flat vector every backend works on,

.. math::

    \\theta = [w_0; b_0; w_1; b_1; \\dots; w_{K-1}; b_{K-1}] \\in \\mathbb{R}^{K (d + 1)},
    \\qquad z_{ik} = x_i^\\top w_k + b_k,

and minimises scikit-learn's multinomial objective on mean form

.. math::

    f(W, b) = \\frac{1}{V} \\sum_i v_i \\Bigl(\\log \\sum_k e^{z_{ik}} - z_{i y_i}\\Bigr)
    + \\frac{\\lVert W \\rVert_F^2}{2 C V}, \\qquad V = \\sum_i v_i,

whose argmin is that of ``LogisticRegression(C=C)`` on K classes.

**Identifiability.** The softmax is unchanged when every ``(w_k, b_k)`` moves by the same
``(u, c)``. The L2 penalty makes ``W`` unique (its minimiser has :math:`\\sum_k w_k = 0`: a
common ``u`` only adds to the penalty); the unpenalised intercepts are unique up to a common
``c``, fixed by :math:`\\sum_k b_k = 0` (scikit-learn's iterates keep the same). The fitted
logits are then the *centred* log-probabilities :math:`z_{ik} = \\log p_{ik} - \\frac1K
\\sum_j \\log p_{ij}`, and the score constraints (:mod:`solvers.constraints`) bound them.

The rate reduction fits a **cost-weighted** version: with per-row, per-class weights
``Q (n, K) >= 0`` the loss is :math:`\\sum_{ik} Q_{ik} (-\\log p_{ik})` (a soft-label
cross-entropy); the plain head has ``Q_ik = v_i [y_i = k] / V``.

This module imports neither torch nor cvxpy.
"""

from __future__ import annotations

import numpy as np

from ._linalg import x_dot, xt_dot


def stack(coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``(K, d), (K,) -> theta (K (d + 1),)``, class by class."""
    coef = np.asarray(coef, dtype=np.float64)
    return np.hstack([coef, np.asarray(intercept, dtype=np.float64).reshape(-1, 1)]).reshape(-1)


def unstack(theta: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``theta -> (coef (K, d), intercept (K,))``."""
    T = np.asarray(theta, dtype=np.float64).reshape(n_classes, -1)
    return T[:, :-1].copy(), T[:, -1].copy()


def identified(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The representative with :math:`\\sum_k w_k = 0` and :math:`\\sum_k b_k = 0` (same softmax,
    the same centred logits, a penalty never larger)."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    return coef - coef.mean(axis=0), intercept - intercept.mean()


def base_intercept(y: np.ndarray, sample_weight: np.ndarray, n_classes: int) -> np.ndarray:
    """The intercepts of the best constant head: centred log class shares (clipped away from 0)."""
    share = np.bincount(y.astype(np.int64), weights=sample_weight, minlength=n_classes) / sample_weight.sum()
    logp = np.log(np.clip(share, 1e-6, 1.0))
    return logp - logp.mean()


def softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


def log_softmax(Z: np.ndarray) -> np.ndarray:
    Zs = Z - Z.max(axis=1, keepdims=True)
    return Zs - np.log(np.exp(Zs).sum(axis=1, keepdims=True))


def one_hot_weights(y: np.ndarray, sample_weight: np.ndarray, n_classes: int) -> np.ndarray:
    """``Q_ik = v_i [y_i = k] / V``: the plain head's weights."""
    Q = np.zeros((y.shape[0], n_classes))
    Q[np.arange(y.shape[0]), y.astype(np.int64)] = sample_weight / sample_weight.sum()
    return Q


def scores(X, coef, intercept, ops=None) -> np.ndarray:
    """``Z = X W^T + b`` (n, K), accumulated in float64."""
    xd = x_dot if ops is None else ops[0]
    return xd(X, np.asarray(coef, dtype=np.float64).T) + np.asarray(intercept, dtype=np.float64)


def certificate_numbers(problem, coef, intercept, multipliers, *, eps, C, penalty, linear_form=None, ops=None,
                        fit_intercept=True):
    """``(objective, max_violation, stationarity)`` of a multinomial head (see
    :func:`solvers.certificate.score_certificate_numbers`, whose binary twin this is).

    The stationarity is the inf-norm of :math:`\\nabla f + A^\\top \\lambda` over ``theta``
    (intercepts held at 0 without ``fit_intercept``), with complementarity and negative
    multipliers folded in.
    """
    X, y, sw = problem.X, problem.y, problem.sample_weight
    K = problem.n_classes
    V = float(sw.sum())
    W = np.asarray(coef, dtype=np.float64).reshape(K, -1)
    b = np.asarray(intercept, dtype=np.float64).reshape(K)
    Z = scores(X, W, b, ops)
    Q = one_hot_weights(y, sw, K)
    lam2 = 0.0 if penalty in (None, "none") else 1.0 / (C * V)
    logp = log_softmax(Z)
    objective = float(-(Q * logp).sum() + 0.5 * lam2 * (W * W).sum())
    R = Q.sum(axis=1, keepdims=True) * np.exp(logp) - Q
    xtd = xt_dot if ops is None else ops[1]
    G = np.hstack([xtd(X, R).T + lam2 * W, R.sum(axis=0)[:, None]])
    grad = G.reshape(-1)
    lam = np.zeros(0) if multipliers is None else np.asarray(multipliers, dtype=np.float64)
    viol = comp = neg = 0.0
    if linear_form is not None:
        theta = stack(W, b)
        gap = linear_form.A @ theta - (eps + linear_form.c0)
        viol = float(max(0.0, gap.max()))
        if lam.size:
            grad = grad + linear_form.A.T @ lam
            comp = float(np.max(np.abs(lam * gap)))
            neg = float(max(0.0, -lam.min()))
    if not fit_intercept:
        grad = grad.reshape(K, -1).copy()
        grad[:, -1] = 0.0
    stat = float(np.abs(grad).max())
    return objective, viol, max(stat, comp, neg)


__all__ = ["stack", "unstack", "identified", "base_intercept", "softmax", "log_softmax", "one_hot_weights",
           "scores", "certificate_numbers"]
