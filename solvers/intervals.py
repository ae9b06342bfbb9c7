"""Confidence intervals for rates, group rates and the gaps between groups.

Rates use the exact Clopper-Pearson interval: for ``k`` successes in ``n`` trials at level
``1 - a``,

.. math:: \\bigl[B^{-1}(a/2;\\, k,\\, n-k+1),\\; B^{-1}(1-a/2;\\, k+1,\\, n-k)\\bigr]

(``B^{-1}`` the Beta quantile; 0 and 1 at the ends). It is what
``scipy.stats.binomtest(k, n).proportion_ci(method="exact")`` returns; :func:`clopper_pearson`
computes the Beta quantile with ``scipy.special.betaincinv`` (the function ``scipy.stats.beta.ppf``
calls, without its per-call argument machinery: 25x less time per call, the same bits), so that
many intervals come in one vectorised call.

Gaps between groups are derived from the group intervals with a union (Bonferroni) bound.
A gap of ``E`` events (``dp``: the selection rate; ``eopp``: TPR; ``eo``: TPR and FPR;
``ae``: accuracy) over ``G`` groups is

.. math:: \\Delta = \\max_e \\bigl(\\max_g r_{g,e} - \\min_g r_{g,e}\\bigr).

With each of the ``K = E G`` group rates in its own two-sided interval at level ``1 - a/K``,
all ``K`` hold at once with probability at least ``1 - a``, and then

.. math:: \\max\\bigl(0, \\max_e(\\max_g \\ell_{g,e} - \\min_g u_{g,e})\\bigr) \\le \\Delta
          \\le \\max_e (\\max_g u_{g,e} - \\min_g \\ell_{g,e}),

a ``1 - a`` interval for ``\\Delta`` (method ``"clopper-pearson union bound"``). That interval is what the sweep
reports. For certifying (:func:`gap_upper_bound`, used by :func:`solvers.select_head`) only the upper
end matters, and :func:`difference_upper_bound` bounds each difference ``p_g - p_h`` itself, exactly
(Berger-Boos): about half the union bound's margin, since the union bound pays both groups'
half-widths. Rates whose
conditioning event is empty in a group (no ``y=1`` rows for TPR) get the vacuous interval
``[0, 1]``. Statistics without such a form (the ROC AUC, the calibration error) use
:func:`bootstrap_interval`, a thin wrapper over ``scipy.stats.bootstrap``.

Assumptions: the rows are i.i.d. draws from the population the interval speaks about, and the
group of each row is known and fixed (not estimated).

Examples
--------
>>> from solvers import intervals
>>> ci = intervals.rate_interval(7, 20, confidence=0.95)
>>> ci.estimate, round(ci.low, 4), round(ci.high, 4), ci.method
(0.35, 0.1539, 0.5922, 'clopper-pearson')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fairhead_options import check_confidence as check_level

from .constraints import CONSTRAINTS
from .errors import DataError
from .metrics import _cell_totals, confusion_by_group
from .problem import encode_groups

_GAPS = [c for c in CONSTRAINTS.values() if c.gap]
#: gap name -> the group rates it compares (``rate`` key -> (numerator, denominator) of counts);
#: each rate constraint's ``gap`` and ``group_rates``
GAP_EVENTS = {c.gap: c.group_rates for c in _GAPS}
#: other names of each gap: its constraint's name and its metric's stem (``demographic_parity``)
GAP_ALIASES = {alias: c.gap for c in _GAPS
               for alias in (c.name, c.metric.removesuffix("_difference")) if alias != c.gap}
#: the solvers.metrics function that measures each gap (between groups, unit weights)
GAP_METRIC = {c.gap: c.metric for c in _GAPS}
UNION_BOUND = "clopper-pearson union bound"
EXACT = "clopper-pearson"
BOOTSTRAP = "scipy.stats.bootstrap (percentile)"

MSG_GAP = "unknown gap {got!r}; use one of: " + ", ".join(GAP_EVENTS)
MSG_COUNTS = "Clopper-Pearson needs 0 <= k <= n counts; got k={k}, n={n}"


def check_confidence(confidence) -> float:
    """Check a confidence level (:func:`fairhead_options.check_confidence`, the CLI's check too).

    Parameters
    ----------
    confidence : float or str
        The level, strictly between 0 and 1; a string such as ``"0.9"`` reads as its number.

    Returns
    -------
    float
        ``confidence`` as a float.
    """
    if isinstance(confidence, str):
        try:
            confidence = float(confidence)
        except ValueError:
            pass
    return check_level(confidence)


def gap_name(name: str) -> str:
    """Canonical gap name (``dp``, ``eo``, ``eopp``, ``ae``).

    Parameters
    ----------
    name : str
        A gap name or alias (``eo``, ``equalized_odds``, a constraint's name).

    Returns
    -------
    str
        The canonical name.
    """
    key = GAP_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in GAP_EVENTS:
        raise DataError(MSG_GAP.format(got=name))
    return key


def clopper_pearson(k, n, confidence: float = 0.95):
    """Exact two-sided Clopper-Pearson interval(s) ``(low, high)`` for ``k`` of ``n``.

    Scalars give floats, arrays give arrays. ``n = 0`` gives the vacuous ``(0, 1)``.

    Parameters
    ----------
    k : int or array-like of int
        Successes.
    n : int or array-like of int
        Trials, ``0 <= k <= n``.
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    tuple of (float, float) or of (numpy.ndarray, numpy.ndarray)
        ``(low, high)``.
    """
    from scipy.special import betaincinv  # B^{-1}(q; a, b) = betaincinv(a, b, q)

    conf = check_confidence(confidence)
    k_arr, n_arr = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise DataError(MSG_COUNTS.format(k=k, n=n))
    a = 1.0 - conf
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k_arr > 0, betaincinv(k_arr, n_arr - k_arr + 1, a / 2), 0.0)
        high = np.where(k_arr < n_arr, betaincinv(k_arr + 1, n_arr - k_arr, 1 - a / 2), 1.0)
    low = np.where(n_arr > 0, low, 0.0)
    high = np.where(n_arr > 0, high, 1.0)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval at ``confidence`` and how it was computed.

    Parameters
    ----------
    estimate : float
        The point estimate.
    low, high : float
        The interval's ends.
    confidence : float
        Its level.
    method : str
        How it was computed (``"clopper-pearson"``, ...).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def to_dict(self) -> dict:
        """Return the fields as a JSON-able dict.

        Returns
        -------
        dict
            Field name -> value.
        """
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence,
                "method": self.method}


def rate_interval(k, n, confidence: float = 0.95) -> Interval:
    """``k / n`` with its exact Clopper-Pearson interval (NaN estimate when ``n = 0``).

    Parameters
    ----------
    k : int
        Successes.
    n : int
        Trials.
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    Interval
        The estimate ``k / n`` and its exact interval.
    """
    low, high = clopper_pearson(int(k), int(n), confidence)
    return Interval(float(k) / n if n else float("nan"), low, high, float(confidence), EXACT)


def _binary(y):
    return (np.asarray(y).reshape(-1) == 1).astype(np.int64)


@dataclass(frozen=True)
class GroupCounts:
    """Per-group counts behind every rate: ``counts[group][rate] = (k, n)``.

    Parameters
    ----------
    groups : tuple
        The group labels.
    counts : dict
        ``{group: {rate: (k, n)}}`` for ``selection_rate``, ``true_positive_rate``,
        ``false_positive_rate`` and ``accuracy``.
    """

    groups: tuple
    counts: dict

    @classmethod
    def from_predictions(cls, y_true, y_pred, *, sensitive_features) -> "GroupCounts":
        """Count the rates' successes and trials per group.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,)
            The true labels (0/1).
        y_pred : array-like of shape (n_samples,)
            The predictions (0/1).
        sensitive_features : array-like, DataFrame or dict
            The sensitive attributes; several form intersectional groups.

        Returns
        -------
        GroupCounts
            The counts.
        """
        yt, yp = _binary(y_true), _binary(y_pred)
        if yp.shape[0] != yt.shape[0]:
            raise DataError(f"y_pred has {yp.shape[0]} entries but y_true has {yt.shape[0]}; pass one per sample")
        codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
        # every group's counts from one table of (group, y, yhat, yhat = y) cells: exact integers
        t = _cell_totals(confusion_by_group(yt, yp, codes, len(labels)).astype(np.int64))
        counts = {lab: {"selection_rate": (int(t["selected"][g]), int(t["weight"][g])),
                        "true_positive_rate": (int(t["tp"][g]), int(t["pos"][g])),
                        "false_positive_rate": (int(t["fp"][g]), int(t["neg"][g])),
                        "accuracy": (int(t["right"][g]), int(t["weight"][g]))}
                  for g, lab in enumerate(labels)}
        return cls(groups=tuple(labels), counts=counts)

    def scaled(self, factor: float) -> "GroupCounts":
        """The same rates observed on ``factor`` times as many rows (for sample-size planning).

        Parameters
        ----------
        factor : float
            How many times as many rows.

        Returns
        -------
        GroupCounts
            The counts scaled (rounded to integers).
        """
        return GroupCounts(self.groups, {g: {r: (int(round(k * factor)), int(round(n * factor)))
                                             for r, (k, n) in rates.items()} for g, rates in self.counts.items()})

    def n_rows(self) -> int:
        """Count the rows over all groups.

        Returns
        -------
        int
            The number of rows.
        """
        return int(sum(rates["accuracy"][1] for rates in self.counts.values()))

    def to_dict(self) -> dict:
        """Return the counts as a JSON-able dict.

        Returns
        -------
        dict
            ``{group: {rate: {"k": k, "n": n}}}``.
        """
        return {str(g): {r: {"k": k, "n": n} for r, (k, n) in rates.items()} for g, rates in self.counts.items()}


@dataclass(frozen=True)
class GapInterval:
    """A between-groups gap with its union-bound interval and the group intervals behind it.

    Parameters
    ----------
    gap : str
        The gap's name (``dp``, ``eo``, ``eopp``, ``ae``).
    estimate : float
        The observed gap.
    low, high : float
        The interval's ends.
    confidence : float
        Its level.
    method : str
        How it was computed.
    by_group : dict, optional
        ``{group: {rate: {"k", "n", "estimate", "low", "high"}}}`` at the per-rate level ``1 - a/K``.
    n_intervals : int, default=0
        ``K``, the number of group-rate intervals combined.
    """

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
        """``high - low``."""
        return self.high - self.low

    def to_dict(self) -> dict:
        """Return the fields as a JSON-able dict.

        Returns
        -------
        dict
            Field name -> value.
        """
        return {"gap": self.gap, "estimate": self.estimate, "low": self.low, "high": self.high,
                "confidence": self.confidence, "method": self.method, "n_intervals": self.n_intervals,
                "by_group": self.by_group}

    def wide_groups(self, against: float) -> list[tuple[str, str, float]]:
        """``(group, rate, width)`` for group rates whose interval is wider than ``against``.

        Parameters
        ----------
        against : float
            A width, e.g. the gap's bound.

        Returns
        -------
        list of (str, str, float)
            ``(group, rate, width)`` of each wider group-rate interval.
        """
        return [(g, r, v["high"] - v["low"]) for g, rates in self.by_group.items() for r, v in rates.items()
                if v["high"] - v["low"] > against]


def gap_interval_from_counts(counts: GroupCounts, gap: str = "eo", confidence: float = 0.95) -> GapInterval:
    """The gap's point estimate and its ``confidence`` interval from per-group counts (union bound).

    Parameters
    ----------
    counts : GroupCounts
        Per-group counts (:meth:`GroupCounts.from_predictions`).
    gap : str, default="eo"
        ``dp``, ``eo``, ``eopp`` or ``ae`` (or a constraint's or metric's name for it).
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    GapInterval
        The estimate, the interval and the group intervals behind it.
    """
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


# --------------------------------------------------------------------------------------------------
# Upper confidence bounds on the gap itself (not on each group's rate)

#: bound methods for :func:`gap_upper_bound` (and :func:`solvers.select_head`)
BOUND_METHODS = ("exact", "union")
EXACT_DIFFERENCE = "exact unconditional (Berger-Boos) bound on each pairwise difference"
MSG_BOUND = "bound must be one of exact, union; got {got!r}"
#: cells the nuisance interval is cut into at the start (the sup over a cell is bounded at its corner)
N_CELLS = 16
#: branch and bound on the sup over the nuisance: rounds, cells split per round, pieces per split
REFINE_ROUNDS, REFINE_TOP, REFINE_SPLIT = 4, 6, 4
#: the sup's bound may exceed the largest value found by this much (it is then returned as it is)
SUP_SLACK = 1e-3
#: the bisection on the bound stops when its bracket is this narrow (the bound returned is the upper end)
BOUND_RESOLUTION = 1e-4


def _gamma(alpha: float) -> float:
    """Berger-Boos ``gamma``: the level spent on the nuisance parameter's confidence set."""
    return min(1e-3, alpha / 10.0)


def _tail_le(k1: int, n1: int, k2: int, n2: int, p1, p2):
    """``P(X1/n1 - X2/n2 <= k1/n1 - k2/n2)`` for ``X1 ~ Bin(n1, p1)``, ``X2 ~ Bin(n2, p2)`` (vectors of pairs).

    One binomial is summed over (the one with the shorter support), the other enters through its
    exact tail (the regularised incomplete beta function). The sum runs over about 7.5 standard
    deviations either side of the mean; the mass outside is added whole, so the value returned is an
    upper bound on the exact probability (tight to about 1e-13).
    """
    # scipy.special, not scipy.stats (0.5 s more to import): binom.cdf / binom.sf on the support are bdtr / bdtrc
    from scipy.special import bdtr, bdtrc, betainc, gammaln

    p1, p2 = np.atleast_1d(np.asarray(p1, dtype=np.float64)), np.atleast_1d(np.asarray(p2, dtype=np.float64))
    sd1, sd2 = np.sqrt(n1 * p1 * (1 - p1)).max(), np.sqrt(n2 * p2 * (1 - p2)).max()
    sum_over_1 = sd1 <= sd2
    n, p, sd = (n1, p1, sd1) if sum_over_1 else (n2, p2, sd2)
    lo = max(0, int(np.floor(n * p.min() - 7.5 * sd - 3)))
    hi = min(n, int(np.ceil(n * p.max() + 7.5 * sd + 3)))
    x = np.arange(lo, hi + 1, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = gammaln(n + 1.0) - gammaln(x + 1.0) - gammaln(n - x + 1.0)
        logpmf = logc[None, :] + np.where(x[None, :] > 0, x[None, :] * np.log(p[:, None]), 0.0) + \
            np.where(x[None, :] < n, (n - x[None, :]) * np.log1p(-p[:, None]), 0.0)
    pmf = np.exp(logpmf)
    if sum_over_1:
        # X1/n1 - X2/n2 <= k1/n1 - k2/n2  <=>  X2 >= k2 + ceil(n2 (X1 - k1) / n1), in integers
        c = k2 - ((-(n2 * (x - k1))) // n1)
        cc = np.clip(c, 1, n2).astype(np.float64)[None, :]
        with np.errstate(invalid="ignore"):
            tail = betainc(cc, n2 - cc + 1.0, p2[:, None])  # P(X2 >= c)
        tail = np.where(c[None, :] <= 0, 1.0, np.where(c[None, :] > n2, 0.0, tail))
    else:
        # <=>  X1 <= k1 + floor(n1 (X2 - k2) / n2)
        c = k1 + (n1 * (x - k2)) // n2
        cc = np.clip(c, 0, n1 - 1).astype(np.float64)[None, :]
        with np.errstate(invalid="ignore"):
            tail = 1.0 - betainc(cc + 1.0, n1 - cc, p1[:, None])  # P(X1 <= c)
        tail = np.where(c[None, :] < 0, 0.0, np.where(c[None, :] >= n1, 1.0, tail))
    tail = np.where(np.isnan(tail), 1.0, np.clip(tail, 0.0, 1.0))
    outside = (bdtr(lo - 1, n, p) if lo > 0 else 0.0) + (bdtrc(hi, n, p) if hi < n else 0.0)
    return np.minimum(1.0, (pmf * tail).sum(axis=1) + outside)


class _DifferenceTest:
    """Berger-Boos p-value of ``H0: p1 - p2 >= d`` against ``p1 - p2 < d`` for fixed counts.

    The statistic is the observed difference ``T = X1/n1 - X2/n2`` (small is evidence against ``H0``).
    On the boundary ``p1 - p2 = d`` the nuisance is the rate of the larger group, ``nu``; with ``C``
    its two-sided Clopper-Pearson interval at level ``1 - gamma``, the p-value is

    .. math:: p(d) = \\sup_{\\nu \\in C} P_{\\nu, d}(T \\le t_{obs}) + \\gamma,

    valid at every level (Berger and Boos 1994). The sup is bounded from above, never approximated:
    ``C`` is cut into cells, and since ``P(T <= t)`` falls in ``p1`` and rises in ``p2``, its sup over a
    cell is at most its value at the cell's smallest ``p1`` and largest ``p2``. Cells whose bound is
    above the largest value seen at a cell's midpoint are split (branch and bound, :data:`N_CELLS`
    cells at the start, :data:`REFINE_ROUNDS` rounds) until the bound is within
    :data:`SUP_SLACK` of that value, or until the test's decision at ``alpha`` is settled; the p-value is
    the largest cell bound plus ``gamma``: an upper bound on the exact Berger-Boos p-value, which falls in
    ``d`` (so a ``d`` at which it rejects bounds the difference from above).
    """

    def __init__(self, k1, n1, k2, n2, alpha):
        self.k1, self.n1, self.k2, self.n2 = int(k1), int(n1), int(k2), int(n2)
        self.alpha = float(alpha)
        self.gamma = _gamma(self.alpha)
        self.nuisance_is_2 = self.n2 >= self.n1
        k, n = (self.k2, self.n2) if self.nuisance_is_2 else (self.k1, self.n1)
        self.nu_lo, self.nu_hi = clopper_pearson(k, n, 1.0 - self.gamma)
        self._memo: dict[float, float] = {}

    def _rates(self, a, b, d):
        """Corner ``(p1, p2)`` (smallest p1, largest p2) and midpoint rates of nuisance cells ``[a, b]``."""
        if self.nuisance_is_2:  # p2 = nu, p1 = nu + d
            a, b = np.maximum(a, max(0.0, -d)), np.minimum(b, min(1.0, 1.0 - d))
            m = 0.5 * (a + b)
            corner, mid = (a + d, b), (m + d, m)
        else:  # p1 = nu, p2 = nu - d
            a, b = np.maximum(a, max(0.0, d)), np.minimum(b, min(1.0, 1.0 + d))
            m = 0.5 * (a + b)
            corner, mid = (a, b - d), (m, m - d)
        keep = a <= b
        clip = lambda t: (np.clip(t[0][keep], 0, 1), np.clip(t[1][keep], 0, 1))  # noqa: E731
        return a[keep], b[keep], clip(corner), clip(mid)

    def pvalue(self, d: float) -> float:
        d = float(d)
        if d not in self._memo:
            self._memo[d] = self._pvalue(d)
        return self._memo[d]

    def _pvalue(self, d: float) -> float:
        edges = np.linspace(self.nu_lo, self.nu_hi, N_CELLS + 1)
        a, b, corner, mid = self._rates(edges[:-1], edges[1:], d)
        if a.size == 0:
            return self.gamma
        k = (self.k1, self.n1, self.k2, self.n2)
        upper = _tail_le(*k, *corner)
        lower = float(np.max(_tail_le(*k, *mid)))
        for _ in range(REFINE_ROUNDS):
            if upper.max() - lower <= SUP_SLACK:
                break
            # refining cannot change the decision at alpha any more: stop (the value stays a valid bound)
            if upper.max() + self.gamma <= self.alpha or lower + self.gamma > self.alpha:
                break
            top = np.argsort(-upper)[:REFINE_TOP]
            top = top[upper[top] > lower + SUP_SLACK]
            sub = np.linspace(0.0, 1.0, REFINE_SPLIT + 1)
            na = (a[top, None] + (b - a)[top, None] * sub[None, :-1]).ravel()
            nb = (a[top, None] + (b - a)[top, None] * sub[None, 1:]).ravel()
            na_, nb_, c2, m2 = self._rates(na, nb, d)
            if na_.size == 0:
                break
            keep = np.ones(a.size, dtype=bool)
            keep[top] = False
            a, b = np.concatenate([a[keep], na_]), np.concatenate([b[keep], nb_])
            upper = np.concatenate([upper[keep], _tail_le(*k, *c2)])
            lower = max(lower, float(np.max(_tail_le(*k, *m2))))
        return float(upper.max()) + self.gamma

    def rejects(self, d: float) -> bool:
        return self.pvalue(d) <= self.alpha


def difference_upper_bound(k1, n1, k2, n2, alpha: float) -> float:
    """Upper ``1 - alpha`` confidence bound on ``p1 - p2`` from ``k1`` of ``n1`` and ``k2`` of ``n2``.

    Exact and unconditional: the bound is the smallest ``d`` at which the Berger-Boos test of
    ``H0: p1 - p2 >= d`` (see :class:`_DifferenceTest`) rejects at level ``alpha``, so

    .. math:: P(p_1 - p_2 > U) \\le \\alpha

    for every ``(p1, p2)`` and every sample size (no normal approximation). Assumes two independent
    binomial samples: independent rows, the groups fixed and known. The value returned is the upper
    end of a bisection bracket of width :data:`BOUND_RESOLUTION`, so it errs on the safe side. An empty
    group gives the vacuous bound 1.

    Parameters
    ----------
    k1, n1 : int
        Successes and trials of the first rate.
    k2, n2 : int
        Successes and trials of the second rate.
    alpha : float
        The error level.

    Returns
    -------
    float
        The upper bound ``U`` on ``p1 - p2``.
    """
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise DataError(MSG_COUNTS.format(k=(k1, k2), n=(n1, n2)))
    test = _DifferenceTest(k1, n1, k2, n2, alpha)
    est = k1 / n1 - k2 / n2
    from scipy.special import ndtri  # norm.isf(alpha) is -ndtri(alpha), without scipy.stats' import (0.5 s)

    se = np.sqrt(max(k1 * (n1 - k1) / n1 ** 3 + k2 * (n2 - k2) / n2 ** 3, 0.25 / max(n1, n2) ** 2))
    z = -ndtri(alpha)
    lo, hi = min(1.0, est + 0.9 * z * se), min(1.0, est + 1.3 * z * se + 1.0 / min(n1, n2))
    while test.rejects(lo):  # the observed difference itself is (almost) never rejected
        lo, hi = max(-1.0, lo - 4 * se - 1.0 / min(n1, n2)), lo
        if lo <= -1.0:
            break
    while not test.rejects(hi):
        if hi >= 1.0:
            return 1.0
        lo, hi = hi, min(1.0, hi + 4 * se + 1.0 / min(n1, n2))
    # regula falsi (Illinois) on log p(d) - log alpha, kept inside the bracket [lo (not rejected), hi (rejected)]
    f_lo, f_hi = np.log(test.pvalue(lo)) - np.log(alpha), np.log(test.pvalue(hi)) - np.log(alpha)
    side = 0
    while hi - lo > BOUND_RESOLUTION:
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo) if f_lo > f_hi else 0.5 * (lo + hi)
        mid = min(max(mid, lo + 0.25 * BOUND_RESOLUTION), hi - 0.25 * BOUND_RESOLUTION)
        f_mid = np.log(test.pvalue(mid)) - np.log(alpha)
        if f_mid <= 0:  # rejected: the bound is at most mid
            hi, f_hi = mid, f_mid
            f_lo = f_lo / 2 if side == -1 else f_lo
            side = -1
        else:
            lo, f_lo = mid, f_mid
            f_hi = f_hi / 2 if side == 1 else f_hi
            side = 1
    return float(hi)


def _pairs(counts: GroupCounts, gap: str):
    """``(event, group_a, k_a, n_a, group_b, k_b, n_b, estimate)`` for every event and ordered pair."""
    for e in GAP_EVENTS[gap]:
        for ga in counts.groups:
            for gb in counts.groups:
                if ga == gb:
                    continue
                (ka, na), (kb, nb) = counts.counts[ga][e], counts.counts[gb][e]
                est = (ka / na if na else 0.0) - (kb / nb if nb else 0.0)
                yield e, ga, ka, na, gb, kb, nb, est


def gap_upper_bound(counts: GroupCounts, gap: str, alpha: float, *, bound: str = "exact") -> float:
    """Upper confidence bound at level ``1 - alpha`` on the population gap (``P(gap > U) <= alpha``).

    ``bound="exact"`` (default): the maximum over events ``e`` and ordered pairs of groups ``(g, h)``
    of :func:`difference_upper_bound` on ``p_{g,e} - p_{h,e}``, each at the full level ``alpha``. No
    correction over pairs or events is needed for an *upper* bound on a maximum: with ``(e*, g*, h*)``
    the (fixed, unknown) triple attaining the population gap ``Delta = p_{g*,e*} - p_{h*,e*}``,

    .. math:: P\\bigl(\\max_{e,g,h} U_{e,g,h} < \\Delta\\bigr) \\le P(U_{e^*,g^*,h^*} < \\Delta) \\le \\alpha.

    ``bound="union"``: the upper end of :func:`gap_interval_from_counts` (each of the ``E G`` group
    rates in a two-sided Clopper-Pearson interval at level ``1 - alpha/(E G)``), valid but loose: a
    difference of two rates pays both half-widths.

    Both assume independent rows with fixed, known groups, counted on rows that nothing chosen from
    them (heads, their order) has seen.

    Parameters
    ----------
    counts : GroupCounts
        Per-group counts (:meth:`GroupCounts.from_predictions`).
    gap : str
        ``dp``, ``eo``, ``eopp`` or ``ae`` (or a constraint's or metric's name for it).
    alpha : float
        The error level: ``P(gap > U) <= alpha``.
    bound : {"exact", "union"}, default="exact"
        The method (above).

    Returns
    -------
    float
        The upper bound ``U``, in [0, 1] (1 when a group lacks an event's rows).
    """
    gap = gap_name(gap)
    if bound not in BOUND_METHODS:
        raise DataError(MSG_BOUND.format(got=bound))
    if bound == "union":
        return gap_interval_from_counts(counts, gap, 1.0 - alpha).high
    best = 0.0
    # largest observed differences first: a later pair is skipped when it cannot raise the maximum
    for e, ga, ka, na, gb, kb, nb, est in sorted(_pairs(counts, gap), key=lambda t: -t[-1]):
        if na == 0 or nb == 0:
            return 1.0
        if best > 0.0 and _DifferenceTest(ka, na, kb, nb, alpha).rejects(best):
            continue
        best = max(best, difference_upper_bound(ka, na, kb, nb, alpha))
    return float(min(1.0, best))


def gap_interval(y_true, y_pred, *, sensitive_features, gap: str = "eo", confidence: float = 0.95) -> GapInterval:
    """The between-groups ``gap`` of hard predictions, with its union-bound interval.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels (0/1).
    y_pred : array-like of shape (n_samples,)
        The predictions (0/1).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    gap : str, default="eo"
        ``dp``, ``eo``, ``eopp`` or ``ae`` (or a constraint's or metric's name for it).
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    GapInterval
        The estimate, the interval and the group intervals behind it.
    """
    counts = GroupCounts.from_predictions(y_true, y_pred, sensitive_features=sensitive_features)
    return gap_interval_from_counts(counts, gap, confidence)


def group_rate_intervals(y_true, y_pred, *, sensitive_features, confidence: float = 0.95) -> dict:
    """``{group: {rate: Interval}}`` for selection rate, TPR, FPR and accuracy (each at ``confidence``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels (0/1).
    y_pred : array-like of shape (n_samples,)
        The predictions (0/1).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    dict
        ``{group: {rate: Interval}}``.
    """
    counts = GroupCounts.from_predictions(y_true, y_pred, sensitive_features=sensitive_features)
    cells = [(g, r, k, n) for g, rates in counts.counts.items() for r, (k, n) in rates.items()]
    # every (group, rate) interval in one vectorised call: the same values as rate_interval's, one by one
    low, high = clopper_pearson(np.array([c[2] for c in cells]), np.array([c[3] for c in cells]), confidence)
    out: dict = {g: {} for g in counts.counts}
    for (g, r, k, n), lo, hi in zip(cells, low.tolist(), high.tolist()):
        out[g][r] = Interval(float(k) / n if n else float("nan"), lo, hi, float(confidence), EXACT)
    return out


def worst_group_accuracy_interval(counts: GroupCounts, confidence: float = 0.95) -> Interval:
    """``min_g acc_g`` with the union-bound interval ``[min_g l_g, min_g u_g]`` (level ``1 - a/G`` each).

    Parameters
    ----------
    counts : GroupCounts
        Per-group counts (:meth:`GroupCounts.from_predictions`).
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.

    Returns
    -------
    Interval
        The worst group accuracy and its interval.
    """
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

    Parameters
    ----------
    statistic : callable
        ``statistic(*samples) -> float``.
    *samples : array-like
        Arrays of one row per sample, resampled jointly.
    confidence : float in (0, 1), default=0.95
        The level ``1 - alpha``.
    n_resamples : int, default=999
        Bootstrap resamples.
    seed : int, default=0
        Seed of the resampling.

    Returns
    -------
    Interval
        The statistic on the samples and its percentile interval.
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
           "bootstrap_interval", "check_confidence", "gap_name", "GAP_EVENTS", "GAP_METRIC", "BOUND_METHODS",
           "difference_upper_bound"]
