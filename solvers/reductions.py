"""The deterministic Lagrangian reduction for rate constraints (``dp``, ``eopp``, ``eo``,
``error-rate``).

Following Agarwal et al. (2018), write each rate gap as a linear function of the hard
predictions, :math:`\\gamma(\\hat y) = M (a \\circ \\hat y + b_0)` (see
:class:`~solvers.constraints.RateMoments`), and the weighted error as
:math:`\\mathrm{err}(\\hat y) = \\frac1V \\sum_i v_i [\\hat y_i \\ne y_i]`. For multipliers
:math:`\\lambda \\in \\mathbb{R}^K` the Lagrangian
:math:`\\mathrm{err}(\\hat y) + \\lambda^\\top \\gamma(\\hat y)` is, up to a constant, a
cost-sensitive classification with per-sample cost of predicting 1 over 0

.. math::

    \\delta_i(\\lambda) = \\frac{v_i (1 - 2 y_i)}{V} + a_i (M^\\top \\lambda)_i,

i.e. a **weighted logistic regression** with labels :math:`\\tilde y_i = [\\delta_i < 0]` and
weights :math:`|\\delta_i|` (the logistic loss as the convex surrogate; the L2 penalty is the
head's ``||w||^2 / (2 C V)``). At :math:`\\lambda = 0` this is exactly the unconstrained fit.

The multipliers are searched by sign-based per-coordinate steps (Rprop) on the dual
residual :math:`\\gamma_k - \\varepsilon_t\\,\\mathrm{sign}(\\lambda_k)` (soft-thresholded at
:math:`\\lambda_k = 0`), with ``eps_t = 0.9 eps`` aiming just inside the bound. Every weighted
fit is warm-started from the previous head, so each costs a few L-BFGS iterations.

Every converged fit is a candidate judged at its best intercept: the exact threshold search
(:mod:`solvers.threshold`) gives the gaps and error of every threshold from one sort of its
scores. Where the bound binds on a rate conditioned on the label (``eopp``, ``eo``,
``error-rate``), the smoothed-rate stage (:mod:`solvers.smoothed`) adds candidates from the
reduction's head. Of all candidates, the one that meets ``|gamma_k| <= eps`` on the fit split
with the lowest weighted error is returned, checked with the exact ``predict()`` arithmetic:
**one deterministic head**, never a randomized mixture. If none meets the bound, the head with
the smallest gap is returned with ``eps_met=False``. (See ``docs/design/rate-search.md``.)

A 0/1 rate gap moves in steps of one prediction's weight over its group's weight (the
**resolution**, the largest entry of ``|M a|``). Below it a bound can rarely be met exactly, so
the search aims at ``max(eps, resolution)`` and skips the cold fallback there; the certificate
records both (``resolution``, ``aimed_at``) and the passes over ``X`` the head cost.

Along a path the reduction can reach a **floor** (``docs/design/rate-search.md``): the gaps
flatten out where the multipliers that would go further drive one group's cell costs through
zero and the gaps jump. A bound below a gap at which the previous bound's Newton steps stalled
short of their target gets one Newton step only, and a bound below one the path already missed
is not searched again: its head is the previous head, reported unmet (whatever meets it would
have met the looser bound).

The search is :class:`solvers.rate_search.BinaryRateSearch` (stages as methods, the
:class:`~solvers.rate_search_oracles.LogisticOracle` for the weighted fits); this module keeps
its entry point, its constants and :func:`rate_design`.
"""

from __future__ import annotations

import time
import weakref

import numpy as np

from .rate_search_types import Candidate  # noqa: F401  (the search's candidates, re-exported)

#: aim the search at this fraction of eps so that small sample effects stay inside the bound
TARGET_FRACTION = 0.9
MAX_OUTER = 30
#: KKT tolerance of the weighted fits during the multiplier search (scikit-learn's default)
SEARCH_TOL = 1e-4
#: ... and where the rates are not conditioned on the label (``dp``, ``dp-ratio``: the reduction
#: alone reaches every bound, no smoothed stage follows): on Adult's 12-bound ``dp`` path 1e-3 moved
#: no head's train accuracy by more than 0.0005 at about 0.75x the path's time; on ``eo`` it cost
#: 0.0035 of the test front at EO <= 0.02 (docs/design/rate-search.md section 7)
SEARCH_TOL_UNCONDITIONED = 1e-3
#: L-BFGS steps per multiplier value in the cheap first stage of the search
INEXACT_ITERS = 8
#: along a path, accept a converged fit whose largest gap is within this fraction of eps below the target
WARM_BAND = 0.05
#: along a path, the sign-step stage stops after this many probes without a smaller largest gap
WARM_STALL = 8
#: run the smoothed-rate stage (:mod:`solvers.smoothed`) after the reduction where the bound binds
SMOOTH_STAGE = True
#: L-BFGS iterations per temperature and multiplier update (its heads are judged by their hard
#: predictions, at their best threshold: an inexact stage is fine)
SMOOTH_ITERS = 40
#: the smoothed stage's L-BFGS tolerance (same reason): on Adult 3e-3 kept every head's accuracy
#: at 0.5-0.6x the passes of the search tolerance 1e-4 (docs/design/rate-search.md)
SMOOTH_TOL = 3e-3
#: where the smoothed stage follows, an accepted Newton step that keeps more than this fraction of
#: the KKT residual ends the Newton steps (a stall): near the reduction's floor they crawl
NEWTON_SLOW = 0.8
#: Newton steps on the multipliers before the bracketing search takes over
NEWTON_STEPS = 8
#: a Newton step that does not shrink the KKT residual is halved at most this many times
NEWTON_HALVINGS = 3


def rate_design(X, device, *, center):
    """The :class:`~solvers.backends.torch.Design` of a rate head's weighted fits.

    float64 features are multiplied in float32 on the CPU (a copy: half the memory traffic of
    a pass, about 1e-7 relative error in the scores): a rate head is judged by its hard
    predictions, and the chosen head's are checked with float64 products of ``X``.
    """
    from .backends.torch import Design

    if isinstance(X, np.ndarray) and X.dtype == np.float64 and str(device) == "cpu":  # not a streamed source
        X = X.astype(np.float32)
    return Design(X, device, center=center)


_MOMENTS = weakref.WeakKeyDictionary()  # design -> (problem, key, moments) of its last rate head


def path_moments(design, problem, constraint, eps):
    """The constraint's :class:`~solvers.constraints.RateMoments` on ``problem``, shared by the
    heads of one path (one ``design``, one ``problem``) where they do not depend on the bound.

    The rate constraints' own ``moments`` depend on their class, ``event`` and ``utility`` alone;
    a constraint whose rows depend on ``eps``, or that defines its own ``moments``, gets them
    computed for each head. A path's heads read the same moments (the same arrays), so the
    threshold search built on them is shared too (:func:`solvers.threshold.shared_search`).
    """
    from .constraints import RateConstraint

    if getattr(constraint, "rows_depend_on_eps", False):
        return constraint.moments(problem.y, problem.groups, problem.sample_weight, problem.group_labels, eps=eps)
    args = (problem.y, problem.groups, problem.sample_weight, problem.group_labels)
    if type(constraint).moments is not RateConstraint.moments:
        return constraint.moments(*args)
    key = (type(constraint), constraint.event, constraint.utility)
    try:
        last = _MOMENTS.get(design)
    except TypeError:  # a design without weak references: nothing is shared
        return constraint.moments(*args)
    if last is not None and last[0] is problem and last[1] == key:
        return last[2]
    mom = constraint.moments(*args)
    _MOMENTS[design] = (problem, key, mom)
    return mom


def fit_rate_constraint(est, problem, constraint, *, eps, backend, init=None, design=None):
    """Run the reduction; return ``(Solution, Certificate)`` (see module docstring).

    See :func:`_fit_rate_constraint`; torch runs at one CPU thread, without autograd, meanwhile
    (:func:`solvers.backends.torch.fit_context`).
    """
    from .backends.torch import fit_context

    if problem.n_classes > 2:  # the same reduction with cost-sensitive multinomial fits
        from .reductions_multiclass import fit_rate_multiclass

        sol, cert = fit_rate_multiclass(est, problem, constraint, eps=eps, backend=backend, init=init, design=design)
    else:
        with fit_context(est.device):
            sol, cert = _fit_rate_constraint(est, problem, constraint, eps=eps, backend=backend, init=init,
                                             design=design)
    return sol, cert


def _fit_rate_constraint(est, problem, constraint, *, eps, backend, init=None, design=None):
    """The reduction itself: a :class:`~solvers.rate_search.BinaryRateSearch`.

    ``init`` (a previous head's :class:`~solvers.backends.WarmStart`, read by
    :func:`~solvers.rate_search_types.rate_warm_start`) warm-starts the head and the multipliers. Along a path (``init`` holds the previous bound and
    its rate gaps) the search starts at the multipliers extrapolated in ``eps`` from the last
    heads, with converged fits only, and stops as soon as a converged fit lands in the band
    ``[TARGET_FRACTION - WARM_BAND, TARGET_FRACTION] * eps`` (a cold search stops when its
    bracket is 2% wide).
    """
    from .backends.torch import MSG_PENALTY
    from .errors import DataError
    from .rate_search import BinaryRateSearch
    from .rate_search_types import rate_warm_start

    if est.penalty not in ("l2", None):
        raise DataError(MSG_PENALTY.format(penalty=est.penalty))
    t_start = time.perf_counter()  # the head's wall clock
    if design is None:
        design = rate_design(problem.X, est.device, center=est.fit_intercept)
    mom = path_moments(design, problem, constraint, eps)
    search = BinaryRateSearch(est, problem, constraint, mom, design, eps=eps, warm=rate_warm_start(init),
                              t_start=t_start)
    return search.solve()
