"""The deterministic Lagrangian reduction for rate constraints on K-class heads (``dp``, ``eopp``, ``eo``).

The binary reduction (:mod:`solvers.reductions`) carried over to K classes. Each rate gap is
linear in the one-hot predictions, :math:`\\gamma_r(\\hat y) = \\sum_i M_{ri} [\\hat y_i = c_r]`
(row ``r`` is about class :math:`c_r`; :class:`~solvers.constraints.ClassRateMoments`), so for
multipliers :math:`\\lambda` the Lagrangian
:math:`\\mathrm{err}(\\hat y) + \\lambda^\\top \\gamma(\\hat y)` is a **cost-sensitive K-class
problem**: predicting class ``k`` for row ``i`` costs

.. math::

    c_{ik}(\\lambda) = \\frac{v_i}{V} [k \\ne y_i] + \\sum_{r : c_r = k} \\lambda_r M_{ri}.

Its convex surrogate is the cost-weighted softmax loss of :mod:`solvers.multinomial` with
weights :math:`Q_{ik} = \\max_j c_{ij} - c_{ik} \\ge 0` (each class weighted by how much cheaper
it is than the worst one) plus the head's L2 penalty: one **cost-sensitive multinomial fit per
multiplier value**. For two classes these weights are exactly the binary reduction's (label
:math:`[\\delta_i < 0]`, weight :math:`|\\delta_i|`), and at :math:`\\lambda = 0` the fit is the
unconstrained head.

The multipliers are searched along the ray of the first violation
(:math:`\\lambda = t\\, \\gamma(0) / \\lVert \\gamma(0) \\rVert_\\infty`, doubling ``t`` and then
Illinois steps until the largest gap lands just inside ``eps_t = 0.9 aim``), which finds their
scale; then by **Newton steps** that put every binding gap at :math:`\\pm \\varepsilon_t`: on the
active rows (violated, or with a multiplier), of which only linearly independent ones are kept
(the rows of one class and event sum to zero over groups, and ``dp``'s over classes), the
Jacobian :math:`\\partial\\gamma / \\partial\\lambda` is estimated by finite differences, one
warm fit per row. A hard gap is a step function, so the differences are taken of the
**smoothed** gaps :math:`\\sum_i M_{ri}\\, \\mathrm{softmax}(z_i / \\tau)_{c_r}`, with ``tau`` of
Silverman's rule on the margins between the two largest scores (the binary Newton steps smooth
:math:`1[z > 0]` the same way). A row whose multiplier would change sign is released. Where
they stall, sign-based per-coordinate steps (Rprop) on the KKT residual
(:func:`solvers.multiplier_newton.kkt_residual`), and last a continuation over tighter and
tighter targets, take over. Every weighted fit is warm-started from the previous head. Of
all converged heads, the one that meets :math:`|\\gamma_r| \\le \\varepsilon` on the fit split
with the least weighted 0-1 error is returned (checked with float64 products): **one
deterministic head**. If none meets it, the head with the smallest gap
is returned with ``eps_met=False``. As in the binary reduction the search aims at
``aim = max(eps, resolution)``. The search is :class:`solvers.rate_search.ClassRateSearch`, with
the :class:`~solvers.rate_search_oracles.SoftmaxOracle`.
"""

from __future__ import annotations

import time

import numpy as np

from .reductions import SEARCH_TOL, TARGET_FRACTION, WARM_BAND  # noqa: F401  (shared with the binary search)

#: probes of the ray search (doubling, then Illinois) and of the sign-step stage
RAY_PROBES = 14
MAX_OUTER = 30
#: intermediate targets of the continuation fallback, from the first head's gap down to the aim
CONTINUATION_STEPS = 4
#: Newton steps on the multipliers (each costs one warm fit per independent active row, plus one)
NEWTON_STEPS = 4
#: finite-difference step of a multiplier, as a fraction of the multipliers' scale
FD_STEP = 0.1


def margin_bandwidth(Z: np.ndarray) -> float:
    """Silverman's bandwidth of the margins between the two largest scores of each row."""
    top2 = np.partition(Z, Z.shape[1] - 2, axis=1)[:, -2:]
    m = top2[:, 1] - top2[:, 0]
    spread = min(float(np.std(m)), float(np.subtract(*np.percentile(m, [75, 25]))) / 1.34)
    return max(0.9 * spread * len(m) ** -0.2, 1e-6)


def fit_rate_multiclass(est, problem, constraint, *, eps, backend, init=None, design=None):
    """Run the reduction for a K-class head; return ``(Solution, Certificate)`` (see module docstring)."""
    from .backends.torch import fit_context

    with fit_context(est.device):
        return _fit(est, problem, constraint, eps=eps, init=init, design=design)


def _fit(est, problem, constraint, *, eps, init=None, design=None):
    """The reduction itself: a :class:`~solvers.rate_search.ClassRateSearch` (``init`` read as a
    :class:`~solvers.rate_search_types.RateWarmStart`)."""
    from .backends.torch import MSG_PENALTY
    from .errors import DataError
    from .rate_search import ClassRateSearch
    from .rate_search_types import rate_warm_start
    from .reductions import rate_design

    if est.penalty not in ("l2", None):
        raise DataError(MSG_PENALTY.format(penalty=est.penalty))
    t_start = time.perf_counter()
    v = problem.sample_weight
    mom = constraint.moments(problem.y, problem.groups, v, problem.group_labels, n_classes=problem.n_classes)
    if design is None:
        design = rate_design(problem.X, est.device, center=est.fit_intercept)
    search = ClassRateSearch(est, problem, constraint, mom, design, eps=eps, warm=rate_warm_start(init),
                             t_start=t_start)
    return search.solve()


__all__ = ["fit_rate_multiclass"]
