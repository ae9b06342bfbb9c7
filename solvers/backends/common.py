"""What every backend shares: the constraint's pieces, the penalty check, the regularisation
weight, the conditioning of ``X`` and the scaling of constraint rows (numpy only).

Parameters are ``theta``, ``K`` class blocks ``[w_k; b_k]`` of ``d + 1`` each (``K = 1``: the
binary head ``[w; b]``), and a linear score constraint is ``A theta <= eps + c0`` (see
:meth:`solvers.constraints.Constraint.linear_form`).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

MSG_PENALTY = "penalty={penalty!r} is solved by backend='cvxpy' only; use backend='cvxpy' (or 'auto') or penalty='l2'"
MSG_PENALTY_MULTICLASS = (
    "penalty={penalty!r} is not available for a head with {k} classes (the multinomial head has the L2 "
    "penalty); pass penalty='l2' or None"
)

#: a constraint row whose norm is at most this fraction of the largest (or of 1) is empty: all zeros
#: up to rounding (e.g. the intercept column of a row that only bounds ``w``)
ROW_ZERO = 1e-12


def check_penalty(penalty, *, backend: str, n_classes: int = 2) -> None:
    """Refuse a penalty the backend does not solve: the K-class head has L2 only (both backends),
    the torch backend L2 only; ``None`` (or ``"none"``) is always fine."""
    if penalty in ("l2", None, "none"):
        return
    if n_classes > 2:
        raise DataError(MSG_PENALTY_MULTICLASS.format(penalty=penalty, k=n_classes))
    if backend != "cvxpy":
        raise DataError(MSG_PENALTY.format(penalty=penalty))


def l2_weight(C: float, V: float, penalty) -> float:
    """:math:`\\lambda_2 = 1 / (C V)`, the L2 weight of the mean-loss objective
    :math:`\\frac1V \\sum_i v_i \\ell_i + \\frac{\\lambda_2}{2} \\lVert w \\rVert^2` (0 without a penalty)."""
    return 0.0 if penalty in (None, "none") else 1.0 / (C * V)


def penalty_weights(C: float, V: float, penalty, l1_ratio, s: float = 1.0) -> tuple[float, float]:
    """``(a1, a2)`` with :math:`R = a_1 \\lVert w' \\rVert_1 + a_2 \\lVert w' \\rVert^2` for coefficients
    ``w' = s w`` of the conditioned features (:func:`condition`):

    ``l2``: :math:`a_2 = 1/(2 C V s^2)`; ``l1``: :math:`a_1 = 1/(C V s)`; ``elasticnet`` with ratio
    ``r``: :math:`r/(C V s)` and :math:`(1 - r)/(2 C V s^2)`, as scikit-learn mixes them.
    """
    if penalty in (None, "none"):
        return 0.0, 0.0
    if penalty == "l2":
        return 0.0, 1.0 / (2.0 * C * V * s * s)
    if penalty == "l1":
        return 1.0 / (C * V * s), 0.0
    r = float(l1_ratio)
    return r / (C * V * s), (1 - r) / (2.0 * C * V * s * s)


def condition(X, fit_intercept: bool):
    """``(mu, s, Xs)``: columns centred (with an intercept) and divided by one global scale,
    ``x' = (x - mu) / s`` with ``s`` the root mean column variance (or the largest magnitude when
    that is 0). Exact as a reparametrisation: ``w = w' / s``, ``b = b' - mu^T w``."""
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    mu = X.mean(axis=0) if fit_intercept else np.zeros(d)
    Xc = X - mu
    sd = Xc.std(axis=0)
    s = float(np.sqrt(np.mean(sd**2))) if d else 1.0
    if not np.isfinite(s) or s <= 1e-12:
        s = float(np.max(np.abs(Xc))) if Xc.size and np.max(np.abs(Xc)) > 0 else 1.0
    return mu, s, Xc / s


def row_norms(A: np.ndarray):
    """``(norms, keep)``: the rows' Euclidean norms and which rows are not empty (:data:`ROW_ZERO`)."""
    norms = np.linalg.norm(A, axis=1)
    return norms, norms > ROW_ZERO * max(1.0, norms.max(initial=0.0))


def scaled_rows(A: np.ndarray, mu: np.ndarray, s: float, n_blocks: int, fit_intercept: bool) -> np.ndarray:
    """The rows of ``A`` on the conditioned parameters (:func:`condition`): per class block
    ``a_w' = (a_w - a_b mu) / s``, laid out as ``[a_w'_0, ..., a_w'_{K-1}, a_b_0, ..., a_b_{K-1}]``
    (the intercept columns dropped without an intercept)."""
    m, d = A.shape[0], mu.shape[0]
    A3 = A.reshape(m, n_blocks, d + 1)
    Ab = A3[:, :, d]
    Aws = ((A3[:, :, :d] - Ab[:, :, None] * mu) / s).reshape(m, n_blocks * d)
    return np.hstack([Aws, Ab]) if fit_intercept else Aws


def center_rows(A: np.ndarray, mu: np.ndarray, n_blocks: int = 1) -> np.ndarray:
    """Constraint rows in centred coordinates (``b_k -> b_k + mu . w_k``): per class block
    ``a_w - a_b mu``, the layout kept (a copy)."""
    m, d = A.shape[0], mu.shape[0]
    A3 = A.reshape(m, n_blocks, d + 1).copy()
    A3[:, :, :d] -= A3[:, :, d:] * mu
    return A3.reshape(m, -1)


def unit_rows(A: np.ndarray, c0: np.ndarray):
    """Rows scaled to unit norm, empty ones zeroed: ``(A_unit, norms, rhs)`` with
    ``rhs(eps) = (eps + c0) / norm`` (1 on the empty rows, which then read ``0 <= 1``).
    A multiplier of a unit row divided by the row's norm is the original row's."""
    norms, keep = row_norms(A)
    safe = np.where(keep, norms, 1.0)
    A_unit = np.where(keep[:, None], A / safe[:, None], 0.0)

    def rhs(eps):
        return np.where(keep, (eps + c0) / safe, 1.0)

    return A_unit, norms, rhs


def constraint_pieces(problem, constraint, *, from_cells=False):
    """``(linear_form, cells)`` of a score constraint (numpy, float64; ``(None, None)`` without one):
    the linear form of a linear score constraint (binary rows from the cells' sums with
    ``from_cells``: see ``linear_form``), or the cell codes and their count of a loss one."""
    if constraint is None:
        return None, None
    if hasattr(constraint, "linear_form"):
        # float64 sums on purpose: rows that are linearly dependent in exact arithmetic (the
        # group means of two groups) must stay dependent to ~1e-16, or at eps = 0 float32 noise
        # would turn them into an extra independent equality and over-constrain the head
        multi = {"n_classes": problem.n_classes} if problem.n_classes > 2 else {"from_cells": from_cells}
        linear_form = constraint.linear_form(problem.X, problem.y, problem.groups, problem.sample_weight,
                                             problem.group_labels, **multi)
        return linear_form, None
    if hasattr(constraint, "cells_codes"):
        codes, labels = constraint.cells_codes(problem.y, problem.groups, problem.group_labels)
        return None, (codes, len(labels))
    return None, None


__all__ = ["MSG_PENALTY", "MSG_PENALTY_MULTICLASS", "ROW_ZERO", "center_rows", "check_penalty", "condition",
           "constraint_pieces", "l2_weight", "penalty_weights", "row_norms", "scaled_rows", "unit_rows"]
