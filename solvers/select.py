"""Certify or abstain: pick the most accurate head whose gap is certified below a target.

Given heads fitted on one split and a *certification* split never used for fitting,
:func:`select_head` tests, for each head ``h``, the null hypothesis
``H_h: gap(h) > target`` (the population between-groups gap, e.g. the EO difference)
and rejects it -- certifies the head -- when the exact upper confidence bound
:func:`solvers.intervals.gap_upper_bound` at its level is ``<= target``. Inside one head the
bound splits its ``alpha`` over every (group, event) rate by a union (Bonferroni) bound, so
for EO over ``G`` groups each of the ``2G`` Clopper-Pearson intervals has level ``1 - alpha/(2G)``.

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
If none certifies the selection *abstains* and says why: the smallest gap it could certify
and how many certification rows would certify the first head, if its observed rates held.

Assumptions: the certification rows are i.i.d. draws from the deployment distribution,
independent of the fit split; groups are fixed, known attributes; the heads (and the test
order) depend on the fit split only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError
from .intervals import GroupCounts, check_confidence, clopper_pearson, gap_interval_from_counts, gap_name

METHODS = ("fixed-sequence", "bonferroni")
MSG_TARGET = ("target must look like 'eo<=0.05' or 'eo:0.05' (gap dp, eo, eopp or ae, a bound in [0, 1]; "
              "quote the '<=' form in a shell); got {got!r}")
MSG_METHOD = "method must be one of fixed-sequence, bonferroni; got {got!r}"
MSG_NO_HEADS = "select_head needs at least one fitted head; got none"
MSG_ORDER = "order has {got} entries for {n} heads; pass one sort key per head"
#: the largest certification set the row planner considers (beyond it: "more than")
MAX_PLAN_FACTOR = 1e4


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
    selected: int | None = None
    explanation: str = ""
    smallest_certifiable: float = float("nan")
    rows_needed: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def abstained(self) -> bool:
        return self.selected is None

    def certificate(self, *, split: str | None = None, head_file: str | None = None) -> dict:
        """The JSON certificate: method, level, split, per-group counts and every head's bound."""
        doc = {
            "format": "fairhead-certificate", "format_version": "1.0",
            "target": f"{self.gap}<={self.target:g}", "gap": self.gap, "bound": self.target,
            "confidence": self.confidence, "method": self.method,
            "bound_method": "clopper-pearson per group rate, union (Bonferroni) bound over groups and events",
            "assumptions": "certification rows i.i.d. with the deployment data and unused for fitting; "
                           "groups fixed and known",
            "split": split, "n_rows": self.n_rows, "selected": self.selected, "head_file": head_file,
            "abstained": self.abstained, "explanation": self.explanation,
            "smallest_certifiable_gap": self.smallest_certifiable, "rows_needed": self.rows_needed,
            "heads": [b.to_dict() for b in self.bounds],
            "group_counts": self.counts[self.selected] if self.selected is not None else None,
            "notes": self.notes,
        }
        return doc


def _rows_needed(counts: GroupCounts, gap: str, target: float, alpha: float) -> int | None:
    """Rows at which ``counts``' observed rates would certify ``gap <= target`` (None: never)."""
    observed = gap_interval_from_counts(counts, gap, 1.0 - alpha)
    if observed.estimate >= target or counts.n_rows() == 0:
        return None

    def ok(f):
        return gap_interval_from_counts(counts.scaled(f), gap, 1.0 - alpha).high <= target

    lo, hi = 1.0, 2.0
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_PLAN_FACTOR:
            return None
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return int(math.ceil(hi * counts.n_rows()))


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


def select_head(heads, X, y, sensitive_features, *, target, confidence: float = 0.95,
                method: str = "fixed-sequence", order=None, predictions=None, labels=None) -> Selection:
    """The most accurate head whose gap is certified ``<= target`` on ``(X, y)``, or an abstention.

    Parameters
    ----------
    heads : sequence of fitted classifiers (``predict(X)`` giving 0/1), fitted on another split.
    X, y, sensitive_features : the certification split (never the fit split).
    target : ``"eo<=0.05"`` or ``("eo", 0.05)``; the gap is the between-groups difference
        (``dp``: selection rate, ``eo``: the larger of the TPR and FPR differences, ``eopp``: TPR,
        ``ae``: accuracy), as :mod:`solvers.metrics` measures it.
    confidence : ``1 - alpha``; the chance that any certified head's true gap exceeds ``target``
        is at most ``alpha``.
    method : ``"fixed-sequence"`` (default) or ``"bonferroni"`` (see the module docstring).
    order : one sort key per head, fixed without the certification data (e.g. the gap on the
        fit split); ascending keys are tested first. Default: ``eps`` ascending, unconstrained last.
    predictions : optional precomputed ``predict(X)`` per head (skips the predictions).
    labels : optional name per head for the explanation (default: index, constraint and eps).

    Returns
    -------
    Selection : ``selected`` (an index into ``heads``, or None when abstaining), every head's
        bound, the per-group counts and a one-line ``explanation``.
    """
    gap, value = parse_target(target)
    conf = check_confidence(confidence)
    if method not in METHODS:
        raise DataError(MSG_METHOD.format(got=method))
    heads = list(heads)
    if not heads:
        raise DataError(MSG_NO_HEADS)
    keys = _default_order(heads) if order is None else [float(k) for k in order]
    if len(keys) != len(heads):
        raise DataError(MSG_ORDER.format(got=len(keys), n=len(heads)))
    alpha = 1.0 - conf
    yt = np.asarray(y).reshape(-1)
    preds = predictions if predictions is not None else [h.predict(X) for h in heads]
    counts = [GroupCounts.from_predictions(yt, p, sensitive_features=sensitive_features) for p in preds]
    sequence = sorted(range(len(heads)), key=lambda i: (keys[i], i))
    level = alpha if method == "fixed-sequence" else alpha / len(heads)

    bounds: dict[int, HeadBound] = {}
    stopped = False
    for i in sequence:
        acc_k, acc_n = sum(c["accuracy"][0] for c in counts[i].counts.values()), counts[i].n_rows()
        acc_lo, acc_hi = clopper_pearson(acc_k, acc_n, conf)
        gi = gap_interval_from_counts(counts[i], gap, 1.0 - level)
        tested = not stopped
        certified = tested and gi.high <= value
        if method == "fixed-sequence" and tested and not certified:
            stopped = True
        bounds[i] = HeadBound(index=i, label=labels[i] if labels else _label(heads[i], i),
                              accuracy=acc_k / acc_n if acc_n else float("nan"),
                              accuracy_low=acc_lo, accuracy_high=acc_hi, gap=gi.estimate, bound=gi.high,
                              level=level if tested else float("nan"), certified=certified, tested=tested)
    ordered = [bounds[i] for i in sequence]
    sel = Selection(gap=gap, target=value, confidence=conf, method=method, bounds=ordered,
                    counts=[c.to_dict() for c in counts], n_rows=counts[0].n_rows())
    certified = [b for b in ordered if b.certified]
    first = sequence[0]
    if method == "fixed-sequence":
        sel.smallest_certifiable = bounds[first].bound
        planned = first
    else:
        planned = min(sequence, key=lambda i: (bounds[i].bound, i))
        sel.smallest_certifiable = bounds[planned].bound
    if certified:
        best = max(certified, key=lambda b: (b.accuracy, -sequence.index(b.index)))
        sel.selected = best.index
        sel.explanation = (f"selected {best.label}: accuracy {best.accuracy:.4f} [{best.accuracy_low:.4f}, "
                           f"{best.accuracy_high:.4f}], {gap} gap {best.gap:.4f} certified <= {best.bound:.4f} "
                           f"<= {value:g} at confidence {conf:g} ({method}, {len(certified)} of {len(heads)} "
                           f"heads certified, {sel.n_rows} rows)")
    else:
        sel.rows_needed = _rows_needed(counts[planned], gap, value, level)
        rows = (f"about {sel.rows_needed} certification rows would certify {bounds[planned].label} if its "
                f"observed rates held" if sel.rows_needed is not None else
                f"no number of rows would certify {bounds[planned].label}: its observed gap "
                f"{bounds[planned].gap:.4f} is not below the target")
        sel.explanation = (f"abstained: no head's {gap} gap is certified <= {value:g} at confidence {conf:g} "
                           f"on {sel.n_rows} rows; the smallest certifiable gap is {sel.smallest_certifiable:.4f}; "
                           f"{rows}")
    for b in ordered[:1] if sel.abstained else [bounds[sel.selected]]:
        gi = gap_interval_from_counts(counts[b.index], gap, 1.0 - level)
        sel.notes += [f"group {g!r}: {r} interval width {w:.3f} is wider than the target {value:g}"
                      for g, r, w in gi.wide_groups(value)]
    return sel


__all__ = ["select_head", "parse_target", "Selection", "HeadBound", "METHODS"]
