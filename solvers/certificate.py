"""Fit certificates and the backend-independent optimality checks behind them.

Every fit records a :class:`Certificate`. Its numbers are recomputed here in numpy (float64
accumulation) from the returned coefficients and multipliers, whichever backend solved, so
that cvxpy and torch heads are judged by one yardstick:

* ``objective`` -- the regularised logistic objective
  :math:`f(w,b) = \\frac1V\\sum_i v_i \\ell_i + R(w)` (minimax: the largest cell loss plus ``R``)
  of score-constrained and unconstrained heads; ``None`` for rate heads, which minimise another
  quantity:
* ``zero_one_error`` -- rate heads only: the weighted 0-1 error
  :math:`\\frac1V\\sum_i v_i [\\hat y_i \\ne y_i]` on the fit split, the objective of the
  Lagrangian reduction (certificates written before it existed stored it as ``objective``;
  :meth:`Certificate.from_dict` moves it here),
* ``max_violation`` -- :math:`\\max_k (g_k(w,b) - \\varepsilon)_+` over the constraints,
* ``stationarity`` -- the KKT residual
  :math:`\\lVert \\nabla f + \\sum_k \\lambda_k \\nabla g_k \\rVert_\\infty` (plus complementarity
  :math:`\\max_k |\\lambda_k (g_k - \\varepsilon)|` and negative multipliers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ._linalg import x_dot, xt_dot
from .constraints import CONSTRAINTS

#: the fewest quasi-Newton iterations a cold logistic fit takes on real tables (20-40 observed)
MIN_COLD_ITERATIONS = 20


def passes_lower_bound(warm: bool) -> int:
    """See :attr:`Certificate.passes_lower_bound`."""
    return 2 if warm else 2 * MIN_COLD_ITERATIONS


def keeps_bound(constraint, eps, eps_met, max_violation, tol) -> bool | None:
    """Whether a head keeps its bound on the rows it was fitted on: the one verdict every command
    reports, from its certificate's fields (``None`` without a bound: unconstrained, ``minimax``).

    A rate head's is ``eps_met`` (its hard predictions, counted in float64). A score head keeps
    ``eps`` within the solver's tolerance, ``max_violation <= tol``: linear score constraints hold
    exactly (the active set), and the group loss's augmented Lagrangian stops at violations up to
    ``tol`` (the estimator's ``tol`` bounds both the projected gradient and the violation).
    """
    if constraint is None or eps is None or not CONSTRAINTS[constraint].bounded:
        return None
    if eps_met is not None:
        return bool(eps_met)
    return bool(float(max_violation) <= max(float(tol), 1e-9))


@dataclass(frozen=True)
class Certificate:
    """What a fit achieved, JSON-able through :meth:`to_dict` / :meth:`from_dict`.

    Every fitted head carries one as ``certificate_``; the fields below are its attributes too.

    Parameters
    ----------
    backend : str
        ``"cvxpy"``, ``"torch"`` or ``"reduction/<inner backend>"``.
    solver : str
        The numerical method (``"CLARABEL"``, ``"SCS"``, ``"active-set-lbfgs"``, ``"newton-cholesky"``,
        ``"lagrangian-reduction/newton-cholesky"``, ...).
    status : str
        ``"optimal"``, ``"optimal_inaccurate"``, ``"max_iter"``, ``"eps_met"``, ``"eps_not_met"``.
    constraint : str or None
        Constraint name (``None`` for an unconstrained fit).
    eps : float or None
        The bound.
    objective : float or None
        Regularised logistic objective at the returned head (see module docstring); ``None``
        for rate heads (see ``zero_one_error``).
    max_violation : float
        Largest constraint violation ``max(g - eps, 0)`` (rate constraints: on the fit split).
    stationarity : float
        KKT residual (score constraints) or the dual-search residual (rate constraints).
    n_iter : int
        Iterations (inner iterations summed for the reduction).
    wall_time : float
        Seconds spent in the backend.
    tol : float
        Requested tolerance.
    achieved_gap : float or None
        Rate constraints: the bounded gap on the fit split, ``max_g |r_g - r|`` (each group's
        rate against the overall rate, with the fit's sample weights, i.e. after ``balance``).
        Not fairlearn's between-groups difference ``max_g r_g - min_g r_g``, which can be up
        to twice as large.
    eps_met : bool or None
        Rate constraints: whether ``achieved_gap <= eps``.
    zero_one_error : float or None
        Rate constraints: the weighted 0-1 error on the fit split (the reduction's objective).
    multipliers : tuple of float
        Lagrange multipliers of the constraints, in the constraint's row order.
    notes : tuple of str
        Fallbacks and other remarks.
    resolution : float or None
        Rate constraints: the largest change of a rate gap from flipping one prediction (one
        prediction's weight over its group's weight). Bounds below it can rarely be met exactly.
    aimed_at : float or None
        Rate constraints: the bound the multiplier search aimed at, ``max(eps, resolution)``
        (it then targets ``TARGET_FRACTION`` of that).
    passes : int or None
        Products with ``X`` or ``X^T`` the fit made (torch backend and the reduction),
        certificate included: the unit of its cost.
    passes_lower_bound : int or None
        The floor to compare ``passes`` with: a cold fit on a real table takes at least
        ``MIN_COLD_ITERATIONS`` quasi-Newton iterations of one ``X d`` and one ``X^T r`` each
        (easy synthetic data can take fewer); a warm-started head needs 2 (one check).

    Examples
    --------
    >>> from solvers import Certificate, FairLogisticRegression
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> cert = FairLogisticRegression(constraint="dp-score", eps=0.05).fit(X, y, sensitive_features=a).certificate_
    >>> cert.constraint, cert.eps, cert.converged
    ('dp-score', 0.05, True)
    >>> cert.max_violation <= 1e-6
    True
    >>> Certificate.from_dict(cert.to_dict()) == cert
    True
    """

    backend: str
    solver: str
    status: str
    constraint: str | None
    eps: float | None
    objective: float | None
    max_violation: float
    stationarity: float
    n_iter: int
    wall_time: float
    tol: float
    achieved_gap: float | None = None
    eps_met: bool | None = None
    zero_one_error: float | None = None
    multipliers: tuple = ()
    notes: tuple = field(default_factory=tuple)
    resolution: float | None = None
    aimed_at: float | None = None
    passes: int | None = None
    passes_lower_bound: int | None = None

    def to_dict(self) -> dict:
        """Return the certificate as a JSON-able dict (numpy scalars become Python numbers).

        Returns
        -------
        dict
            One key per field; tuples become lists.
        """
        d = dataclasses.asdict(self)
        d["multipliers"] = [float(x) for x in self.multipliers]
        d["notes"] = list(self.notes)
        for k in ("objective", "max_violation", "stationarity", "wall_time", "tol", "eps", "achieved_gap", "resolution",
                  "aimed_at"):
            if d[k] is not None:
                d[k] = float(d[k])
        if d["zero_one_error"] is not None:
            d["zero_one_error"] = float(d["zero_one_error"])
        d["n_iter"] = int(d["n_iter"])
        for k in ("passes", "passes_lower_bound"):
            if d[k] is not None:
                d[k] = int(d[k])
        if d["eps_met"] is not None:
            d["eps_met"] = bool(d["eps_met"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Certificate":
        """Rebuild a certificate from :meth:`to_dict`'s output (or an older head file's).

        Parameters
        ----------
        d : dict
            The saved fields; unknown keys are ignored, missing optional ones default.

        Returns
        -------
        Certificate
        """
        d = dict(d)
        d["multipliers"] = tuple(d.get("multipliers", ()))
        d["notes"] = tuple(d.get("notes", ()))
        if "zero_one_error" not in d and d.get("achieved_gap") is not None:
            # written before the rename: a rate head's "objective" was its 0-1 error
            d["zero_one_error"], d["objective"] = d.get("objective"), None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def converged(self) -> bool:
        """Whether the fit reached its tolerance (score heads) or met ``eps`` (rate heads)."""
        return self.status in ("optimal", "eps_met")

    @property
    def keeps_bound(self) -> bool | None:
        """Whether the head keeps its bound on the rows it was fitted on (:func:`keeps_bound`)."""
        return keeps_bound(self.constraint, self.eps, self.eps_met, self.max_violation, self.tol)


# ---------------------------------------------------------------------------
# the objective in numpy (float64), shared by certificates and tests


def penalty_value(w: np.ndarray, C: float, V: float, penalty: str | None, l1_ratio: float | None) -> float:
    """``R(w)`` on mean form: sklearn's penalty divided by ``C V``."""
    if penalty is None or penalty == "none":
        return 0.0
    if penalty == "l2":
        return float(w @ w) / (2.0 * C * V)
    if penalty == "l1":
        return float(np.abs(w).sum()) / (C * V)
    r = float(l1_ratio)
    return (r * float(np.abs(w).sum()) + 0.5 * (1 - r) * float(w @ w)) / (C * V)


def _l2_coef(C, V, penalty, l1_ratio):
    if penalty == "l2":
        return 1.0 / (C * V)
    if penalty == "elasticnet":
        return (1 - float(l1_ratio)) / (C * V)
    return 0.0


def _l1_coef(C, V, penalty, l1_ratio):
    if penalty == "l1":
        return 1.0 / (C * V)
    if penalty == "elasticnet":
        return float(l1_ratio) / (C * V)
    return 0.0


def sample_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, -(2.0 * y - 1.0) * z)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def scores(X, coef, intercept, ops=None) -> np.ndarray:
    xd = x_dot if ops is None else ops[0]
    return xd(X, coef) + intercept


def group_losses(z, y, sw, codes, n_cells) -> np.ndarray:
    loss = sample_losses(z, y) * sw
    num = np.bincount(codes, weights=loss, minlength=n_cells)
    den = np.bincount(codes, weights=sw, minlength=n_cells)
    return num / den


def smooth_gradient(X, y, sw, z, weights_per_sample, ops=None):
    """Gradient of ``sum_i q_i loss_i`` in (w, b) for per-sample weights q."""
    r = weights_per_sample * (_sigmoid(z) - y)
    xtd = xt_dot if ops is None else ops[1]
    return np.concatenate([xtd(X, r), [r.sum()]])


def _stationarity_with_penalty(grad_smooth, w, C, V, penalty, l1_ratio, fit_intercept=True):
    """Inf-norm of the (sub)gradient residual including the penalty (b held at 0: not counted)."""
    g = grad_smooth.copy()
    if not fit_intercept:
        g[-1] = 0.0
    g[:-1] += _l2_coef(C, V, penalty, l1_ratio) * w
    lam1 = _l1_coef(C, V, penalty, l1_ratio)
    if lam1 > 0:
        gw = g[:-1]
        zero = np.abs(w) <= 1e-7 * max(1.0, float(np.abs(w).max(initial=0.0)))  # interior-point zeros
        res = np.where(
            zero, np.maximum(np.abs(gw) - lam1, 0.0), np.where(w > 0, gw + lam1, gw - lam1)
        )
        g = np.concatenate([res, g[-1:]])
    return float(np.max(np.abs(g)))


def score_certificate_numbers(
    problem, constraint, coef, intercept, multipliers, *, eps, C, penalty, l1_ratio, linear_form=None, cells=None, ops=None, fit_intercept=True,
    products=None,
):
    """Return ``(objective, max_violation, stationarity)`` for a score-constrained head.

    ``multipliers`` follow the constraint's rows: linear form rows, or cells for
    group-loss / minimax. ``None`` constraint means unconstrained. ``ops`` replaces the
    float64 numpy products ``(x_dot, xt_dot)`` (the torch backend passes its device ones).
    ``products`` (optional, unconstrained and linear-form constraints only) are
    ``(X w + b, X^T r)`` at this head with ``r = (v / V)(sigmoid(z) - y)``, as the solver's
    last evaluation left them; everything else is recomputed here.
    """
    X, y, sw = problem.X, problem.y, problem.sample_weight
    V = sw.sum()
    w = np.asarray(coef, dtype=np.float64).reshape(-1)
    b = float(intercept)
    name = None if constraint is None else constraint.name
    if products is not None and name in ("group-loss", "minimax"):
        products = None
    z = scores(X, w, b, ops) if products is None else np.asarray(products[0], dtype=np.float64)
    pen = penalty_value(w, C, V, penalty, l1_ratio)
    lam = np.zeros(0) if multipliers is None else np.asarray(multipliers, dtype=np.float64)
    if name == "minimax":
        codes, nc = cells
        L = group_losses(z, y, sw, codes, nc)
        objective = float(L.max()) + pen
        mu = np.maximum(lam, 0.0) if lam.size else np.eye(nc)[int(np.argmax(L))]
        cell_w = sw / np.bincount(codes, weights=sw, minlength=nc)[codes]
        q = cell_w * mu[codes]
        grad = smooth_gradient(X, y, sw, z, q, ops)
        stat = _stationarity_with_penalty(grad, w, C, V, penalty, l1_ratio, fit_intercept)
        # optimality also needs the weight on non-maximal cells to vanish and sum(mu) = 1
        stat = max(stat, abs(mu.sum() - 1.0), float(np.max(mu * (L.max() - L))))
        return objective, 0.0, stat
    objective = float((sample_losses(z, y) * sw).sum() / V) + pen
    q = sw / V
    viol = 0.0
    comp = 0.0
    extra = np.zeros(X.shape[1] + 1)
    if name == "group-loss":
        codes, nc = cells
        L = group_losses(z, y, sw, codes, nc)
        gap = L - eps
        viol = float(max(0.0, gap.max()))
        if lam.size:
            cell_w = sw / np.bincount(codes, weights=sw, minlength=nc)[codes]
            q = q + cell_w * lam[codes]
            comp = float(np.max(np.abs(lam * gap)))
    elif linear_form is not None:
        theta = np.concatenate([w, [b]])
        gap = linear_form.A @ theta - (eps + linear_form.c0)
        viol = float(max(0.0, gap.max()))
        if lam.size:
            extra = linear_form.A.T @ lam
            comp = float(np.max(np.abs(lam * gap)))
    if products is None:
        grad = smooth_gradient(X, y, sw, z, q, ops) + extra
    else:
        r = q * (_sigmoid(z) - y)
        grad = np.concatenate([np.asarray(products[1], dtype=np.float64), [r.sum()]]) + extra
    stat = _stationarity_with_penalty(grad, w, C, V, penalty, l1_ratio, fit_intercept)
    neg = float(max(0.0, -lam.min())) if lam.size else 0.0
    return objective, viol, max(stat, comp, neg)
