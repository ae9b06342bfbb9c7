"""Certify or abstain: pick the most accurate head whose gap is certified below a target.

Given heads fitted on one split and a *certification* split never used for fitting,
:func:`select_head` tests, for each head ``h``, the null hypothesis
``H_h: gap(h) > target`` (the population between-groups gap, e.g. the EO difference)
and rejects it -- certifies the head -- when an upper confidence bound on the gap at its level is
``<= target``. Two bounds (:func:`solvers.intervals.gap_upper_bound`):

* ``bound="exact"`` (default): a bound on the gap itself. For every event (``eo``: TPR and FPR) and
  every ordered pair of groups ``(g, h)``, an exact unconditional upper bound on ``p_g - p_h`` (the
  Berger-Boos test of the difference of two binomial proportions, inverted; valid for every sample
  size); the gap's bound is their maximum, each at the *full* level ``alpha``: an upper bound on a
  maximum fails only if the bound of the (fixed, unknown) pair and event attaining it fails, so no
  correction over pairs, groups or events is needed.
* ``bound="union"``: the earlier bound, each of the ``E G`` group rates in a two-sided
  Clopper-Pearson interval at level ``1 - alpha/(E G)`` (Bonferroni over groups and events) and the
  gap bounded by the largest upper end minus the smallest lower end. Valid, but a difference of two
  rates pays both half-widths: about twice the exact bound's margin.

Error control over the whole path (the probability that *any* certified head has a true gap
above the target is at most ``alpha = 1 - confidence``):

* ``method="fixed-sequence"`` (default): heads are tested one by one at the full level ``alpha``
  in an order fixed before the certification data are seen, and testing stops at the first head
  that does not certify. No union bound over heads is needed. The order goes from the head most
  likely to certify (the smallest gap on the fit split, i.e. the tightest eps) to the least
  (the loosest, most accurate): along a fairness path the tight heads are the safe hypotheses,
  so the sequence certifies them first and walks toward accuracy until the bound breaks.
* ``method="bonferroni"``: every one of the ``m`` heads is tested at ``alpha / m``.

Among the certified heads the most accurate on the certification split is returned; picking
among certified heads cannot break the guarantee, which holds for all of them at once.
If none certifies the selection *abstains* and says why: the smallest gap it could certify,
how many certification rows would certify the first head if its observed rates held, and a
table of the smallest certifiable gap at 1, 2, 4 and 8 times the rows (:attr:`Selection.plan`).

To certify an accurate head rather than the first that squeaks through, fit heads *below* the
target: :func:`certification_margin` gives the bound's margin (bound minus observed gap) for a
head's rates at the certification split's size, and :func:`aimed_eps` the eps values to add to
the path (computed from the fit split only, so the certification rows stay untouched).

Assumptions (both bounds): the certification rows are independent draws from the deployment
distribution, independent of the fit split; groups are fixed, known attributes; the heads (and
the test order, and any eps aimed from the margin) depend on the fit split only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .intervals import (BOUND_METHODS, EXACT_DIFFERENCE, GroupCounts, check_confidence, clopper_pearson,
                        gap_interval_from_counts, gap_name, gap_upper_bound)

METHODS = ("fixed-sequence", "bonferroni")
BOUNDS = BOUND_METHODS
MSG_TARGET = ("target must look like 'eo<=0.05' or 'eo:0.05' (gap dp, eo, eopp or ae, a bound in [0, 1]; "
              "quote the '<=' form in a shell); got {got!r}")
MSG_METHOD = "method must be one of fixed-sequence, bonferroni; got {got!r}"
MSG_BOUND = "bound must be one of exact, union; got {got!r}"
MSG_NO_HEADS = "select_head needs at least one fitted head; got none"
MSG_ORDER = "order has {got} entries for {n} heads; pass one sort key per head"
MSG_ONE_GROUP = ("the certification rows hold {n} group(s) ({groups}) of the sensitive attribute; a between-groups "
                 "gap needs at least 2: certify on a split with rows of every group")
MSG_MULTICLASS = ("head {label} has {k} classes; select_head certifies the between-groups gaps of binary (0/1) "
                  "heads only")
MSG_NOT_BINARY = ("{what} must hold 0/1 values (binary labels and hard predictions); got {values}: "
                  "encode the positive class as 1")
MSG_PRED_LEN = "predictions has {got} entries for {n} heads; pass one array per head"
#: the largest certification set the row planner considers (beyond it: "more than")
MAX_PLAN_FACTOR = 1e4
#: row multiples of the planning table printed on abstention
PLAN_FACTORS = (1, 2, 4, 8)
BOUND_DESCRIPTION = {
    "exact": EXACT_DIFFERENCE + " (each at the full level: an upper bound on a maximum needs no correction)",
    "union": "clopper-pearson per group rate, union (Bonferroni) bound over groups and events",
}


def parse_target(target) -> tuple[str, float]:
    """``"eo<=0.05"`` or ``"eo:0.05"`` -> ``("eo", 0.05)``; a ``(gap, value)`` pair passes through checked.

    The ``:`` form needs no quoting in a shell (an unquoted ``<`` is a redirection there)."""
    if isinstance(target, (tuple, list)) and len(target) == 2:
        name, value = target
    else:
        m = re.fullmatch(r"\s*([A-Za-z_-]+)\s*(?:<=|:)\s*([0-9.eE+-]+)\s*", str(target))
        if not m:
            raise DataError(MSG_TARGET.format(got=target))
        name, value = m.group(1), m.group(2)
    try:
        value = float(value)
        name = gap_name(name)
    except (ValueError, DataError):
        raise DataError(MSG_TARGET.format(got=target)) from None
    if not 0.0 <= value <= 1.0:
        raise DataError(MSG_TARGET.format(got=target))
    return name, value


@dataclass
class HeadBound:
    """One head's certification evidence."""

    index: int
    label: str
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    gap: float
    bound: float  # upper confidence bound at this head's test level
    level: float  # the alpha this head was tested at (nan: not tested, the sequence had stopped)
    certified: bool
    tested: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Selection:
    """The outcome of :func:`select_head`."""

    gap: str
    target: float
    confidence: float
    method: str
    bounds: list[HeadBound]
    counts: list[dict]  # per head: per group counts
    n_rows: int
    bound: str = "exact"
    selected: int | None = None
    explanation: str = ""
    smallest_certifiable: float = float("nan")
    rows_needed: int | None = None
    #: on abstention: ``{"rows", "group_rows", "smallest_certifiable"}`` at 1, 2, 4, 8 times the rows
    plan: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: set by callers that know the fit split: ``{"margin", "eps", ...}`` to aim below the target
    aim: dict | None = None

    @property
    def abstained(self) -> bool:
        return self.selected is None

    def certificate(self, *, split: str | None = None, head_file: str | None = None) -> dict:
        """The JSON certificate: method, level, split, per-group counts and every head's bound."""
        doc = {
            "format": "fairhead-certificate", "format_version": "1.1",
            "target": f"{self.gap}<={self.target:g}", "gap": self.gap, "bound": self.target,
            "confidence": self.confidence, "method": self.method, "bound_name": self.bound,
            "bound_method": BOUND_DESCRIPTION[self.bound],
            "assumptions": "certification rows independent, drawn like the deployment data and unused for "
                           "fitting and for ordering the heads; groups fixed and known",
            "split": split, "n_rows": self.n_rows, "selected": self.selected, "head_file": head_file,
            "abstained": self.abstained, "explanation": self.explanation,
            "smallest_certifiable_gap": self.smallest_certifiable, "rows_needed": self.rows_needed,
            "plan": self.plan,
            "heads": [b.to_dict() for b in self.bounds],
            "group_counts": self.counts[self.selected] if self.selected is not None else None,
            "notes": self.notes,
        }
        return doc


def _group_rows(counts: GroupCounts) -> dict:
    return {str(g): int(r["accuracy"][1]) for g, r in counts.counts.items()}


def _rows_needed(counts: GroupCounts, gap: str, target: float, alpha: float, bound: str) -> int | None:
    """Rows at which ``counts``' observed rates would certify ``gap <= target`` (None: never).

    The counts are scaled by a factor ``f`` (every cell by the same ``f``, rounded) and ``f`` is found
    by bisection with the same bound :func:`select_head` uses, to 0.5% of the rows.
    """
    observed = gap_interval_from_counts(counts, gap, 1.0 - alpha)
    if observed.estimate >= target or counts.n_rows() == 0:
        return None

    def ok(f):
        return gap_upper_bound(counts.scaled(f), gap, alpha, bound=bound) <= target

    lo, hi = 1.0, 2.0
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_PLAN_FACTOR:
            return None
    while hi - lo > 0.005 * lo:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return int(math.ceil(hi * counts.n_rows()))


def certifiable_table(counts: GroupCounts, gap: str, alpha: float, *, bound: str = "exact",
                      factors=PLAN_FACTORS) -> list[dict]:
    """The smallest certifiable gap for ``counts``' observed rates on ``f`` times the rows, per factor."""
    rows = []
    for f in factors:
        c = counts.scaled(f)
        rows.append({"rows": c.n_rows(), "group_rows": _group_rows(c),
                     "smallest_certifiable": gap_upper_bound(c, gap, alpha, bound=bound)})
    return rows


def certification_margin(counts: GroupCounts, gap: str, *, confidence: float = 0.95, n_rows: int | None = None,
                         bound: str = "exact") -> float:
    """How far below the bound a head's observed gap must be to certify: ``bound - estimate``.

    ``counts`` are a head's group counts on the *fit* split (or any rows not used for certifying);
    ``n_rows`` is the planned size of the certification split (default: the rows of ``counts``), and
    the counts are scaled to it. The margin uses the same bound as :func:`select_head` at level
    ``1 - confidence`` (the fixed-sequence level).
    """
    gap = gap_name(gap)
    alpha = 1.0 - check_confidence(confidence)
    c = counts if n_rows is None else counts.scaled(n_rows / max(counts.n_rows(), 1))
    est = gap_interval_from_counts(c, gap, 1.0 - alpha).estimate
    return float(gap_upper_bound(c, gap, alpha, bound=bound) - est)


def aimed_eps(target: float, margin: float, *, fractions=(0.5, 1.0, 1.5)) -> list[float]:
    """eps values below ``target`` to add to a path: ``target - f * margin`` for each fraction (>= 0).

    A head fitted at ``target - margin`` whose gap holds on fresh rows certifies ``target``; the
    fractions around 1 hedge the fit-to-certification drift of the gap.
    """
    return sorted({round(max(0.0, float(target) - f * float(margin)), 6) for f in fractions}, reverse=True)


def _label(head, i):
    eps = getattr(head, "eps", None)
    cons = getattr(head, "constraint", None)
    name = getattr(cons, "name", cons) or "none"
    return f"#{i} {name} eps={eps:g}" if isinstance(eps, (int, float)) and cons else f"#{i} {name}"


def _default_order(heads):
    """Tightest first: by ``eps`` ascending, unconstrained heads last, ties by position."""
    keys = []
    for head in heads:
        eps = getattr(head, "eps", None)
        constrained = getattr(head, "constraint", None) not in (None, "none")
        keys.append(float(eps) if constrained and eps is not None and np.isfinite(eps) else math.inf)
    return keys


def _check_binary(values, what: str) -> np.ndarray:
    arr = np.asarray(values).reshape(-1)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    uniq = np.unique(arr)
    try:
        ok = np.all(np.isin(uniq.astype(np.float64), (0.0, 1.0)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in uniq[:5])
        raise DataError(MSG_NOT_BINARY.format(what=what, values=shown + (", ..." if uniq.size > 5 else "")))
    return arr.astype(np.int64)


def select_head(heads, X, y, sensitive_features, *, target, confidence: float = 0.95,
                method: str = "fixed-sequence", bound: str = "exact", order=None, predictions=None,
                labels=None, plan: bool = True, bound_untested: bool = True) -> Selection:
    """The most accurate head whose gap is certified ``<= target`` on ``(X, y)``, or an abstention.

    Parameters
    ----------
    heads : sequence of fitted binary classifiers (``predict(X)`` giving 0/1), fitted on another split.
    X, y, sensitive_features : the certification split (never the fit split); ``y`` 0/1, at least
        two groups.
    target : ``"eo<=0.05"`` or ``("eo", 0.05)``; the gap is the between-groups difference
        (``dp``: selection rate, ``eo``: the larger of the TPR and FPR differences, ``eopp``: TPR,
        ``ae``: accuracy), as :mod:`solvers.metrics` measures it.
    confidence : ``1 - alpha``; the chance that any certified head's true gap exceeds ``target``
        is at most ``alpha``.
    method : ``"fixed-sequence"`` (default) or ``"bonferroni"`` (see the module docstring).
    bound : ``"exact"`` (default, a bound on each pairwise difference) or ``"union"`` (per-group
        intervals, Bonferroni over groups and events); see the module docstring.
    order : one sort key per head, fixed without the certification data (e.g. the gap on the
        fit split); ascending keys are tested first. Default: ``eps`` ascending, unconstrained last.
    predictions : optional precomputed ``predict(X)`` per head (skips the predictions).
    labels : optional name per head for the explanation (default: index, constraint and eps).
    plan : on abstention, compute the rows needed and the planning table (a few bounds each).
    bound_untested : also bound the heads the fixed sequence did not reach (for the report; NaN if False).

    Returns
    -------
    Selection : ``selected`` (an index into ``heads``, or None when abstaining), every head's
        bound, the per-group counts and a one-line ``explanation``.

    Examples
    --------
    Fit a path of rate heads on one half, certify on the other:

    >>> from solvers import fit_path, select_head
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(4000, 4, seed=0)
    >>> heads = fit_path(X[:2000], y[:2000], sensitive_features=a[:2000], eps_grid=[0.2, 0.1, 0.02], constraint="dp")
    >>> choice = select_head(heads, X[2000:], y[2000:], a[2000:], target="dp<=0.1", confidence=0.9)
    >>> choice.abstained, heads[choice.selected].eps
    (False, 0.02)
    >>> choice.explanation  # doctest: +ELLIPSIS
    'selected #2 dp eps=0.02: accuracy ... certified <= ... <= 0.1 at confidence 0.9 ...'
    """
    gap, value = parse_target(target)
    conf = check_confidence(confidence)
    heads, keys, yt, preds = _checked_inputs(heads, X, y, method=method, bound=bound, order=order,
                                             predictions=predictions, labels=labels)
    counts = [GroupCounts.from_predictions(yt, p, sensitive_features=sensitive_features) for p in preds]
    if len(counts[0].groups) < 2:
        raise DataError(MSG_ONE_GROUP.format(n=len(counts[0].groups),
                                             groups=", ".join(repr(str(g)) for g in counts[0].groups) or "none"))
    sequence = sorted(range(len(heads)), key=lambda i: (keys[i], i))
    level = (1.0 - conf) if method == "fixed-sequence" else (1.0 - conf) / len(heads)
    bounds = _bound_in_sequence(heads, counts, sequence, gap=gap, value=value, conf=conf, level=level,
                                method=method, bound=bound, labels=labels, bound_untested=bound_untested)
    ordered = [bounds[i] for i in sequence]
    sel = Selection(gap=gap, target=value, confidence=conf, method=method, bounds=ordered,
                    counts=[c.to_dict() for c in counts], n_rows=counts[0].n_rows(), bound=bound)
    certified = [b for b in ordered if b.certified]
    if method == "fixed-sequence":  # the plan is for the first head of the sequence: the one tested first
        planned = sequence[0]
    else:
        planned = min(sequence, key=lambda i: (bounds[i].bound, i))
    sel.smallest_certifiable = bounds[planned].bound
    if certified:
        best = max(certified, key=lambda b: (b.accuracy, -sequence.index(b.index)))
        sel.selected = best.index
        sel.explanation = (f"selected {best.label}: accuracy {best.accuracy:.4f} [{best.accuracy_low:.4f}, "
                           f"{best.accuracy_high:.4f}], {gap} gap {best.gap:.4f} certified <= {best.bound:.4f} "
                           f"<= {value:g} at confidence {conf:g} ({method}, {bound} bound, {len(certified)} of "
                           f"{len(heads)} heads certified, {sel.n_rows} rows)")
    else:
        _explain_abstention(sel, counts[planned], bounds[planned], level=level, plan=plan)
    for b in ordered[:1] if sel.abstained else [bounds[sel.selected]]:
        gi = gap_interval_from_counts(counts[b.index], gap, 1.0 - level)
        sel.notes += [f"group {g!r}: {r} interval width {w:.3f} is wider than the target {value:g}"
                      for g, r, w in gi.wide_groups(value)]
    return sel


def _checked_inputs(heads, X, y, *, method, bound, order, predictions, labels):
    """``(heads, sort keys, y as 0/1, each head's 0/1 predictions)``, or a one-line DataError."""
    if method not in METHODS:
        raise DataError(MSG_METHOD.format(got=method))
    if bound not in BOUNDS:
        raise DataError(MSG_BOUND.format(got=bound))
    heads = list(heads)
    if not heads:
        raise DataError(MSG_NO_HEADS)
    keys = _default_order(heads) if order is None else [float(k) for k in order]
    if len(keys) != len(heads):
        raise DataError(MSG_ORDER.format(got=len(keys), n=len(heads)))
    for i, h in enumerate(heads):
        classes = getattr(h, "classes_", None)
        if classes is not None and len(classes) > 2:
            raise DataError(MSG_MULTICLASS.format(label=labels[i] if labels else _label(h, i), k=len(classes)))
    yt = _check_binary(y, "y")
    preds = predictions if predictions is not None else [h.predict(X) for h in heads]
    if len(preds) != len(heads):
        raise DataError(MSG_PRED_LEN.format(got=len(preds), n=len(heads)))
    preds = [_check_binary(p, f"the predictions of head {labels[i] if labels else _label(heads[i], i)}")
             for i, p in enumerate(preds)]
    return heads, keys, yt, preds


def _bound_in_sequence(heads, counts, sequence, *, gap, value, conf, level, method, bound, labels,
                       bound_untested) -> dict:
    """Each head's :class:`HeadBound`, tested in ``sequence`` order at ``level``; the fixed sequence
    stops testing at its first uncertified head (the heads after it are bounded for the report only)."""
    bounds: dict[int, HeadBound] = {}
    stopped = False
    for i in sequence:
        acc_k, acc_n = sum(c["accuracy"][0] for c in counts[i].counts.values()), counts[i].n_rows()
        acc_lo, acc_hi = clopper_pearson(acc_k, acc_n, conf)
        estimate = gap_interval_from_counts(counts[i], gap, 1.0 - level).estimate
        tested = not stopped
        upper = gap_upper_bound(counts[i], gap, level, bound=bound) if tested or bound_untested else float("nan")
        certified = tested and upper <= value
        if method == "fixed-sequence" and tested and not certified:
            stopped = True
        bounds[i] = HeadBound(index=i, label=labels[i] if labels else _label(heads[i], i),
                              accuracy=acc_k / acc_n if acc_n else float("nan"),
                              accuracy_low=acc_lo, accuracy_high=acc_hi, gap=estimate, bound=upper,
                              level=level if tested else float("nan"), certified=certified, tested=tested)
    return bounds


def _explain_abstention(sel: Selection, counts, planned: HeadBound, *, level: float, plan: bool) -> None:
    """The abstention's explanation (and, with ``plan``, the rows that would certify ``planned``)."""
    gap, value, conf, bound = sel.gap, sel.target, sel.confidence, sel.bound
    if plan:
        sel.rows_needed = _rows_needed(counts, gap, value, level, bound)
        sel.plan = certifiable_table(counts, gap, level, bound=bound)
    if not plan:
        rows = "row planning skipped"
    elif sel.rows_needed is not None:
        rows = f"about {sel.rows_needed} certification rows would certify {planned.label} if its observed rates held"
    else:
        rows = (f"no number of rows would certify {planned.label}: its observed gap {planned.gap:.4f} is not below "
                f"the target")
    sel.explanation = (f"abstained: no head's {gap} gap is certified <= {value:g} at confidence {conf:g} "
                       f"({bound} bound) on {sel.n_rows} rows; the smallest certifiable gap is "
                       f"{sel.smallest_certifiable:.4f}; {rows}")

__all__ = ["select_head", "parse_target", "Selection", "HeadBound", "METHODS", "BOUNDS", "certification_margin",
           "aimed_eps", "certifiable_table"]
