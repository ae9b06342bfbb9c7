"""The typed values of the rate search (:mod:`solvers.rate_search`): candidates, checked heads,
the warm start that flows between the bounds of a path, the search's own state and its ray."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .backends import WarmStart


@dataclass
class Candidate:
    """A converged weighted fit of the search, judged at its best threshold (intercept).

    ``error`` and ``gap`` (the largest ``|gamma_k|``) are those of the threshold that the
    threshold search (:mod:`solvers.threshold`) chooses for the bound, ``cut`` that threshold on
    the search's scores; ``raw_gap`` is the gap at the fit's own intercept (what the multiplier
    steps steer). Heads without a threshold (K-class, or no intercept) have ``gap == raw_gap``;
    ``gaps`` are the fit's own gaps where the search starts again from it (K-class).
    """

    error: float
    gap: float
    lam: np.ndarray
    theta: object  # torch.Tensor, centred coordinates
    stationarity: float
    converged: bool
    raw_gap: float
    cut: float = 0.0
    gaps: np.ndarray | None = None
    #: K-class heads: the fit's best per-class logit offsets for the aim (a
    #: :class:`~solvers.threshold_multiclass.OffsetChoice`; ``None`` for binary heads), and the
    #: offsets its intercepts absorb once it is judged at them (``None``: its own intercepts)
    offset_choice: object = None
    offsets: np.ndarray | None = None


@dataclass
class Checked:
    """A candidate checked with the exact ``predict()`` arithmetic (float64 ``X @ w``)."""

    cand: Candidate
    theta: np.ndarray  # the weighted fit, decentred ((d + 1,), or K (d + 1) for K classes)
    intercept: float  # the head's intercept after the threshold search (binary)
    gaps: np.ndarray
    error: float
    raw_gaps: np.ndarray  # at the fit's own intercept ``theta[d]``
    #: the intercept is the candidate's own threshold on the exact scores (not chosen again there)
    kept_cut: bool = False

    @property
    def gap(self) -> float:
        return float(np.abs(self.gaps).max())


@dataclass
class RateWarmStart:
    """The previous head's state along a path (or a head given by its coefficients alone).

    ``None`` marks what the previous head did not record. ``theta`` is decentred; ``gaps`` are
    the weighted fit's own gaps (what the multiplier steps steer), ``lam`` its multipliers.
    ``missed_aim``: the looser bound's search ended above its aim; ``stalled_at``: the gap at
    which its Newton steps stalled; ``lam_hist``: the last two ``(eps, lam)`` of the path (the
    extrapolation in eps); ``pairs``: L-BFGS curvature pairs; ``jac``: ``(J, dtheta)`` of the
    Newton steps; ``smooth_mult``, ``smooth_theta``: the last smoothed stage's multipliers and
    head (decentred) on the path so far (the next stage starts there); ``z``: the weighted fit's
    scores as the search had them, where it was the search's last head (the next bound adopts it
    without a product; the estimator drops them before a refit, which may see other rows).
    """

    theta: np.ndarray | None = None
    lam: np.ndarray | None = None
    eps: float | None = None
    gaps: np.ndarray | None = None
    stationarity: float | None = None
    converged: bool | None = None
    smooth_mult: np.ndarray | None = None
    smooth_theta: np.ndarray | None = None
    missed_aim: float | None = None
    stalled_at: float | None = None
    lam_hist: tuple | list = ()
    pairs: object = None
    jac: tuple | None = None
    z: np.ndarray | None = None


#: the fields a rate head shares with every head's :class:`~solvers.backends.WarmStart`
SHARED_FIELDS = ("theta", "eps", "pairs", "z")


def rate_warm_start(warm: WarmStart | None) -> RateWarmStart | None:
    """The rate search's view of a head's :class:`~solvers.backends.WarmStart`: its shared
    fields (``theta``, ``eps``, ``pairs``) over its ``rate`` part (``None``: no warm start)."""
    if warm is None or (warm.theta is None and warm.rate is None):
        return None
    rate = warm.rate if isinstance(warm.rate, RateWarmStart) else RateWarmStart()
    return dataclasses.replace(rate, **{k: getattr(warm, k) for k in SHARED_FIELDS if getattr(warm, k) is not None})


def head_warm_start(warm: RateWarmStart) -> WarmStart:
    """The :class:`~solvers.backends.WarmStart` a rate head hands the next bound: the shared
    fields in place, the rest as its ``rate`` part (the inverse of :func:`rate_warm_start`; the
    estimator sets ``eps``)."""
    return WarmStart(theta=warm.theta, pairs=warm.pairs, z=warm.z,
                     rate=dataclasses.replace(warm, theta=None, pairs=None, z=None))


@dataclass
class SearchState:
    """What the search carries from one weighted fit to the next, and its counters."""

    theta: object  # the current head (centred torch tensor): the next fit's start
    pairs: object = None  # L-BFGS curvature pairs (the weighted objectives along the search are alike)
    scores: object = None  # the current head's scores (binary: a tensor, the next fit's ``z0``; K-class: numpy)
    exact: bool = True  # fits run to convergence (only converged heads are candidates)
    fits: int = 0
    n_iter: int = 0
    newton: int = 0  # Newton steps taken
    adopted: int = 0  # the previous head, a candidate without a refit
    stall: bool = False  # the Newton steps stopped short of their target
    jac: tuple | None = None  # (J, dtheta) of the last Newton step (binary)
    smoothed: int = 0  # heads of the smoothed stage
    smooth_chosen: bool = False
    checks: int = 0  # exact predict() products, outside the design


@dataclass
class Ray:
    """The ray ``lam_s + t u`` from a start's violation and the bracket ``[t_a, t_b]`` of the
    target on it: ``f(gaps) = max(gaps * sgn) - target`` falls along the ray (positive: still
    violated; ``f_b <= 0 < f_a``)."""

    lam_s: np.ndarray
    u: np.ndarray
    sgn: np.ndarray
    target: float
    t_a: float = 0.0
    f_a: float = 0.0
    t_b: float | None = None
    f_b: float | None = None
    side: int = 0  # the side of the last Illinois update (-1: t_b moved, 1: t_a moved)

    def at(self, t):
        return self.lam_s + t * self.u

    def f(self, gaps) -> float:
        return float(np.max(gaps * self.sgn)) - self.target

    def closed(self) -> bool:
        """The bracket is 2% wide."""
        return self.t_b - self.t_a <= 0.02 * self.t_b

    def illinois_point(self) -> float:
        """The secant of the bracket, kept 5% inside it."""
        t_a, f_a, t_b, f_b = self.t_a, self.f_a, self.t_b, self.f_b
        t = t_b - f_b * (t_b - t_a) / (f_b - f_a) if f_b != f_a else 0.5 * (t_a + t_b)
        return min(max(t, t_a + 0.05 * (t_b - t_a)), t_b - 0.05 * (t_b - t_a))

    def update(self, t: float, f: float) -> None:
        """Illinois: the end that stays twice in a row has its value halved."""
        if f <= 0:
            if self.side == -1:
                self.f_a *= 0.5
            self.t_b, self.f_b, self.side = t, f, -1
        else:
            if self.side == 1:
                self.f_b *= 0.5
            self.t_a, self.f_a, self.side = t, f, 1
