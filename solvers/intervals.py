"""Confidence intervals for rates, group rates and the gaps between groups.

Rates use the exact Clopper-Pearson interval: for ``k`` successes in ``n`` trials at level
``1 - a``,

.. math:: \\bigl[B^{-1}(a/2;\\, k,\\, n-k+1),\\; B^{-1}(1-a/2;\\, k+1,\\, n-k)\\bigr]

(``B^{-1}`` the Beta quantile; 0 and 1 at the ends). It is what
``scipy.stats.binomtest(k, n).proportion_ci(method="exact")`` returns; :func:`clopper_pearson`
computes it with ``scipy.stats.beta`` so that many intervals come in one vectorised call.

Gaps between groups are derived from the group intervals with a union (Bonferroni) bound.
A gap of ``E`` events (``dp``: the selection rate; ``eopp``: TPR; ``eo``: TPR and FPR;
``ae``: accuracy) over ``G`` groups is

.. math:: \\Delta = \\max_e \\bigl(\\max_g r_{g,e} - \\min_g r_{g,e}\\bigr).

With each of the ``K = E G`` group rates in its own two-sided interval at level ``1 - a/K``,
all ``K`` hold at once with probability at least ``1 - a``, and then

.. math:: \\max\\bigl(0, \\max_e(\\max_g \\ell_{g,e} - \\min_g u_{g,e})\\bigr) \\le \\Delta
          \\le \\max_e (\\max_g u_{g,e} - \\min_g \\ell_{g,e}),

a ``1 - a`` interval for ``\\Delta`` (method ``"clopper-pearson union bound"``). Rates whose
conditioning event is empty in a group (no ``y=1`` rows for TPR) get the vacuous interval
``[0, 1]``. Statistics without such a form (the ROC AUC, the calibration error) use
:func:`bootstrap_interval`, a thin wrapper over ``scipy.stats.bootstrap``.

Assumptions: the rows are i.i.d. draws from the population the interval speaks about, and the
group of each row is known and fixed (not estimated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .problem import encode_groups

#: gap name -> the group rates it compares (``rate`` key -> (numerator, denominator) of counts)
GAP_EVENTS = {
    "dp": ("selection_rate",),
    "eopp": ("true_positive_rate",),
    "eo": ("true_positive_rate", "false_positive_rate"),
    "ae": ("accuracy",),
}
GAP_ALIASES = {"demographic_parity": "dp", "equalized_odds": "eo", "equal_opportunity": "eopp",
               "error-rate": "ae", "accuracy_equality": "ae"}
#: the solvers.metrics function that measures each gap (between groups, unit weights)
GAP_METRIC = {"dp": "demographic_parity_difference", "eo": "equalized_odds_difference",
              "eopp": "equal_opportunity_difference", "ae": "accuracy_equality_difference"}
UNION_BOUND = "clopper-pearson union bound"
EXACT = "clopper-pearson"
BOOTSTRAP = "scipy.stats.bootstrap (percentile)"

MSG_LEVEL = "confidence must be a number in (0, 1), e.g. 0.95; got {got!r}"
MSG_GAP = "unknown gap {got!r}; use one of: dp, eo, eopp, ae"
MSG_COUNTS = "Clopper-Pearson needs 0 <= k <= n counts; got k={k}, n={n}"


def check_confidence(confidence) -> float:
    try:
        c = float(confidence)
    except (TypeError, ValueError):
        raise DataError(MSG_LEVEL.format(got=confidence)) from None
    if not 0.0 < c < 1.0:
        raise DataError(MSG_LEVEL.format(got=confidence))
    return c


def gap_name(name: str) -> str:
    """Canonical gap name (``dp``, ``eo``, ``eopp``, ``ae``)."""
    key = GAP_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in GAP_EVENTS:
        raise DataError(MSG_GAP.format(got=name))
    return key


def clopper_pearson(k, n, confidence: float = 0.95):
    """Exact two-sided Clopper-Pearson interval(s) ``(low, high)`` for ``k`` of ``n``.

    Scalars give floats, arrays give arrays. ``n = 0`` gives the vacuous ``(0, 1)``.
    """
    from scipy.stats import beta

    conf = check_confidence(confidence)
    k_arr, n_arr = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise DataError(MSG_COUNTS.format(k=k, n=n))
    a = 1.0 - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k_arr > 0, beta.ppf(a / 2, k_arr, n_arr - k_arr + 1), 0.0)
        high = np.where(k_arr < n_arr, beta.ppf(1 - a / 2, k_arr + 1, n_arr - k_arr), 1.0)
    low = np.where(n_arr > 0, low, 0.0)
    high = np.where(n_arr > 0, high, 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval at ``confidence`` and how it was computed."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence,
                "method": self.method}


def rate_interval(k, n, confidence: float = 0.95) -> Interval:
    """``k / n`` with its exact Clopper-Pearson interval (NaN estimate when ``n = 0``)."""
    low, high = clopper_pearson(int(k), int(n), confidence)
    return Interval(float(k) / n if n else float("nan"), low, high, float(confidence), EXACT)


def _binary(y):
    return (np.asarray(y).reshape(-1) == 1).astype(np.int64)


@dataclass(frozen=True)
class GroupCounts:
    """Per-group counts behind every rate: ``counts[group][rate] = (k, n)``."""

    groups: tuple
    counts: dict

    @classmethod
    def from_predictions(cls, y_true, y_pred, *, sensitive_features) -> "GroupCounts":
        yt, yp = _binary(y_true), _binary(y_pred)
        if yp.shape[0] != yt.shape[0]:
            raise DataError(f"y_pred has {yp.shape[0]} entries but y_true has {yt.shape[0]}; pass one per sample")
        codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
        counts = {}
        for g, lab in enumerate(labels):
            m = codes == g
            t, p = yt[m], yp[m]
            counts[lab] = {
                "selection_rate": (int(p.sum()), int(m.sum())),
                "true_positive_rate": (int((p * t).sum()), int(t.sum())),
                "false_positive_rate": (int((p * (1 - t)).sum()), int((1 - t).sum())),
                "accuracy": (int((p == t).sum()), int(m.sum())),
            }
        return cls(groups=tuple(labels), counts=counts)

    def scaled(self, factor: float) -> "GroupCounts":
        """The same rates observed on ``factor`` times as many rows (for sample-size planning)."""
        return GroupCounts(self.groups, {g: {r: (int(round(k * factor)), int(round(n * factor)))
                                             for r, (k, n) in rates.items()} for g, rates in self.counts.items()})

    def n_rows(self) -> int:
        return int(sum(rates["accuracy"][1] for rates in self.counts.values()))

    def to_dict(self) -> dict:
        return {str(g): {r: {"k": k, "n": n} for r, (k, n) in rates.items()} for g, rates in self.counts.items()}


@dataclass(frozen=True)
class GapInterval:
    """A between-groups gap with its union-bound interval and the group intervals behind it."""

    gap: str
    estimate: float
    low: float
    high: float
    confidence: float
    method: str
    #: group -> rate -> {"k", "n", "estimate", "low", "high"} at the per-rate level ``1 - a/K``
    by_group: dict = field(default_factory=dict)
    n_intervals: int = 0

    @property
    def width(self) -> float:
        return self.high - self.low

    def to_dict(self) -> dict:
        return {"gap": self.gap, "estimate": self.estimate, "low": self.low, "high": self.high,
                "confidence": self.confidence, "method": self.method, "n_intervals": self.n_intervals,
                "by_group": self.by_group}

    def wide_groups(self, against: float) -> list[tuple[str, str, float]]:
        """``(group, rate, width)`` for group rates whose interval is wider than ``against``."""
        return [(g, r, v["high"] - v["low"]) for g, rates in self.by_group.items() for r, v in rates.items()
                if v["high"] - v["low"] > against]


def gap_interval_from_counts(counts: GroupCounts, gap: str = "eo", confidence: float = 0.95) -> GapInterval:
    """The gap's point estimate and its ``confidence`` interval from per-group counts (union bound)."""
    gap = gap_name(gap)
    conf = check_confidence(confidence)
    events = GAP_EVENTS[gap]
    n_int = len(events) * len(counts.groups)
    per_level = 1.0 - (1.0 - conf) / n_int
    k = np.array([[counts.counts[g][e][0] for g in counts.groups] for e in events], dtype=np.float64)
    n = np.array([[counts.counts[g][e][1] for g in counts.groups] for e in events], dtype=np.float64)
    lo, hi = clopper_pearson(k, n, per_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(n > 0, k / np.maximum(n, 1), 0.0)  # an empty event counts as 0, as fairlearn
    upper = float(np.max(hi.max(axis=1) - lo.min(axis=1)))
    lower = float(max(0.0, np.max(lo.max(axis=1) - hi.min(axis=1))))
    estimate = float(np.max(est.max(axis=1) - est.min(axis=1)))
    by_group = {str(g): {e: {"k": int(k[i, j]), "n": int(n[i, j]), "estimate": float(est[i, j]),
                             "low": float(lo[i, j]), "high": float(hi[i, j])} for i, e in enumerate(events)}
                for j, g in enumerate(counts.groups)}
    return GapInterval(gap, estimate, lower, upper, conf, UNION_BOUND, by_group, n_int)


def gap_upper_bound(counts: GroupCounts, gap: str, alpha: float) -> float:
    """Upper confidence bound at level ``1 - alpha`` on the gap (see :func:`gap_interval_from_counts`)."""
    return gap_interval_from_counts(counts, gap, 1.0 - alpha).high


def gap_interval(y_true, y_pred, *, sensitive_features, gap: str = "eo", confidence: float = 0.95) -> GapInterval:
    """The between-groups ``gap`` of hard predictions, with its union-bound interval."""
    counts = GroupCounts.from_predictions(y_true, y_pred, sensitive_features=sensitive_features)
    return gap_interval_from_counts(counts, gap, confidence)


def group_rate_intervals(y_true, y_pred, *, sensitive_features, confidence: float = 0.95) -> dict:
    """``{group: {rate: Interval}}`` for selection rate, TPR, FPR and accuracy (each at ``confidence``)."""
    counts = GroupCounts.from_predictions(y_true, y_pred, sensitive_features=sensitive_features)
    return {g: {r: rate_interval(k, n, confidence) for r, (k, n) in rates.items()}
            for g, rates in counts.counts.items()}


def worst_group_accuracy_interval(counts: GroupCounts, confidence: float = 0.95) -> Interval:
    """``min_g acc_g`` with the union-bound interval ``[min_g l_g, min_g u_g]`` (level ``1 - a/G`` each)."""
    conf = check_confidence(confidence)
    per_level = 1.0 - (1.0 - conf) / len(counts.groups)
    k = np.array([counts.counts[g]["accuracy"][0] for g in counts.groups], dtype=np.float64)
    n = np.array([counts.counts[g]["accuracy"][1] for g in counts.groups], dtype=np.float64)
    lo, hi = clopper_pearson(k, n, per_level)
    est = np.where(n > 0, k / np.maximum(n, 1), np.inf)
    return Interval(float(est.min()), float(lo.min()), float(hi.min()), conf, UNION_BOUND)


def bootstrap_interval(statistic, *samples, confidence: float = 0.95, n_resamples: int = 999,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic(*samples)`` (rows resampled jointly).

    For statistics without an exact interval (ROC AUC, calibration error). A thin wrapper
    over ``scipy.stats.bootstrap(..., paired=True, vectorized=False, method="percentile")``;
    deterministic in ``seed``.
    """
    from scipy.stats import bootstrap

    conf = check_confidence(confidence)
    samples = tuple(np.asarray(s) for s in samples)
    estimate = float(statistic(*samples))
    res = bootstrap(samples, statistic, paired=True, vectorized=False, confidence_level=conf,
                    n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(estimate, low, high, conf, BOOTSTRAP)


__all__ = ["clopper_pearson", "rate_interval", "Interval", "GroupCounts", "GapInterval", "gap_interval",
           "gap_interval_from_counts", "gap_upper_bound", "group_rate_intervals", "worst_group_accuracy_interval",
           "bootstrap_interval", "check_confidence", "gap_name", "GAP_EVENTS", "GAP_METRIC"]
