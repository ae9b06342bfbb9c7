"""Metrics on hard predictions, with fairlearn's names and signatures.

These are what every table reports; they are kept apart from the training constraints.
Group metrics take ``sensitive_features`` keyword-only (1-D, 2-D, DataFrame or dict; several
attributes form intersectional groups, as in fairlearn's MetricFrame). Differences are
``max - min`` over groups and ratios ``min / max`` (fairlearn's ``between_groups``).

Undefined rates follow fairlearn (which takes them from scikit-learn's confusion matrix with
``normalize="true"``): a rate whose conditioning event is empty in a group (TPR or FNR of a
group without positives, FPR of a group without negatives) counts as **0**, so a group
without positives and a TPR of 0.5 elsewhere give an equal-opportunity difference of 0.5,
as fairlearn reports. :meth:`GroupTable.undefined` and :func:`undefined_rates` name such
groups so that reports can say so.

These between-groups differences are *not* the quantity a rate constraint bounds: a
constraint bounds each group against the overall rate (``|r_g - r| <= eps``, see
:mod:`solvers.constraints`), so its ``eps`` caps ``max - min`` only at ``2 eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .problem import encode_groups

MSG_LENGTH = "{what} has {got} entries but y_true has {n}; pass one value per sample"
MSG_NOT_BINARY = "metrics expect binary labels in {{0, 1}} (or pos_label); got values {vals}"

GROUP_METRICS = ("selection_rate", "true_positive_rate", "false_positive_rate", "false_negative_rate", "accuracy", "count")


def _arr(v, n=None, what="y_pred"):
    a = np.asarray(v).reshape(-1)
    if n is not None and a.shape[0] != n:
        raise DataError(MSG_LENGTH.format(what=what, got=a.shape[0], n=n))
    return a


def _binary(y, pos_label=1):
    y = np.asarray(y).reshape(-1)
    return (y == pos_label).astype(np.float64)


def _w(sample_weight, n):
    return np.ones(n) if sample_weight is None else _arr(sample_weight, n, "sample_weight").astype(np.float64)


def _mean(x, w):
    s = w.sum()
    return float((x * w).sum() / s) if s > 0 else float("nan")


def _rate(x, w):
    """A conditional rate; 0 when its event has no weight (fairlearn's and scikit-learn's convention)."""
    s = w.sum()
    return float((x * w).sum() / s) if s > 0 else 0.0


def accuracy(y_true, y_pred, *, sample_weight=None) -> float:
    """Fraction of correct predictions."""
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    return _mean((yt == yp).astype(np.float64), _w(sample_weight, yt.shape[0]))


def selection_rate(y_true, y_pred, *, pos_label=1, sample_weight=None) -> float:
    """``P(yhat = pos_label)``."""
    yp = _binary(y_pred, pos_label)
    return _mean(yp, _w(sample_weight, yp.shape[0]))


def true_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 1 | y = 1)``; 0 without positives (as fairlearn)."""
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(yp, w * yt)


def false_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 1 | y = 0)``; 0 without negatives (as fairlearn)."""
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(yp, w * (1 - yt))


def false_negative_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 0 | y = 1)``; 0 without positives (as fairlearn, so not ``1 - TPR`` there)."""
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(1.0 - yp, w * yt)


def balanced_accuracy(y_true, y_pred, *, sample_weight=None, pos_label=1) -> float:
    """Mean of TPR and TNR."""
    tpr = true_positive_rate(y_true, y_pred, sample_weight=sample_weight, pos_label=pos_label)
    fpr = false_positive_rate(y_true, y_pred, sample_weight=sample_weight, pos_label=pos_label)
    return 0.5 * (tpr + 1.0 - fpr)


def roc_auc(y_true, y_score, *, sample_weight=None, pos_label=1) -> float:
    """Area under the ROC curve (ties count one half); NaN with one class."""
    yt = _binary(y_true, pos_label)
    s = _arr(y_score, yt.shape[0], "y_score").astype(np.float64)
    w = _w(sample_weight, yt.shape[0])
    from scipy.stats import rankdata

    if yt.min() == yt.max():
        return float("nan")
    if sample_weight is None:
        r = rankdata(s)
        n1 = yt.sum()
        n0 = yt.shape[0] - n1
        return float((r[yt == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    order = np.argsort(s, kind="mergesort")
    s, yt, w = s[order], yt[order], w[order]
    # weighted Mann-Whitney with ties: sum over unique scores
    uniq, start = np.unique(s, return_index=True)
    pos = np.add.reduceat(w * yt, start)
    neg = np.add.reduceat(w * (1 - yt), start)
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    auc = (pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum())
    return float(auc)


def expected_calibration_error(y_true, y_prob, *, n_bins=10, sample_weight=None, pos_label=1) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on ``P(y=1)``.

    .. math:: \\mathrm{ECE} = \\sum_b \\frac{|B_b|}{n} \\,\\bigl|\\bar y_{B_b} - \\bar p_{B_b}\\bigr|
    """
    yt = _binary(y_true, pos_label)
    p = _arr(y_prob, yt.shape[0], "y_prob").astype(np.float64)
    if p.ndim == 2:  # pragma: no cover - reshape(-1) above flattens; keep API simple
        p = p[:, 1]
    w = _w(sample_weight, yt.shape[0])
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    tot = w.sum()
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        wb = w[m].sum()
        if wb > 0:
            ece += wb / tot * abs(_mean(yt[m], w[m]) - _mean(p[m], w[m]))
    return float(ece)


# ----------------------------------------------------------------------------- by group


@dataclass(frozen=True)
class GroupTable:
    """Per-group metrics, like fairlearn's MetricFrame: ``overall``, ``by_group``, ``difference()``."""

    overall: dict
    by_group: dict  # group label -> {metric: value}
    names: tuple
    #: metric -> groups whose conditioning event is empty there (their rate is reported as 0)
    undefined_by_metric: dict = None

    def undefined(self) -> dict:
        """``{metric: (group, ...)}`` for rates that are undefined in some group (counted as 0)."""
        return {k: v for k, v in (self.undefined_by_metric or {}).items() if v}

    def difference(self) -> dict:
        return {k: _spread(self.by_group, k, "difference") for k in self.names if k != "count"}

    def ratio(self) -> dict:
        return {k: _spread(self.by_group, k, "ratio") for k in self.names if k != "count"}

    def to_frame(self):
        """A pandas DataFrame indexed by group (pandas imported lazily)."""
        import pandas as pd

        return pd.DataFrame.from_dict(self.by_group, orient="index")[list(self.names)]


def _spread(by_group, key, kind):
    vals = np.array([g[key] for g in by_group.values()], dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return float("nan")
    if kind == "difference":
        return float(vals.max() - vals.min())
    mx = vals.max()
    return float(vals.min() / mx) if mx > 0 else float("nan")


def _undefined(yt, w):
    """Which rates of one group have an empty conditioning event."""
    pos, neg = float((w * yt).sum()), float((w * (1 - yt)).sum())
    return {"true_positive_rate": pos <= 0, "false_negative_rate": pos <= 0, "false_positive_rate": neg <= 0}


def _row(yt, yp, w, y_score=None):
    return {
        "selection_rate": selection_rate(yt, yp, sample_weight=w),
        "true_positive_rate": true_positive_rate(yt, yp, sample_weight=w),
        "false_positive_rate": false_positive_rate(yt, yp, sample_weight=w),
        "false_negative_rate": false_negative_rate(yt, yp, sample_weight=w),
        "accuracy": accuracy(yt, yp, sample_weight=w),
        "count": int(yt.shape[0]),
    }


def by_group(y_true, y_pred, *, sensitive_features, y_score=None, sample_weight=None) -> GroupTable:
    """Selection rate, TPR, FPR, FNR, accuracy and count per (intersectional) group."""
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    w = _w(sample_weight, yt.shape[0])
    codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
    table, undefined = {}, {}
    ytb = _binary(yt)
    for g, lab in enumerate(labels):
        m = codes == g
        table[lab] = _row(yt[m], yp[m], w[m])
        for metric, empty in _undefined(ytb[m], w[m]).items():
            undefined.setdefault(metric, [])
            if empty:
                undefined[metric].append(lab)
    return GroupTable(overall=_row(yt, yp, w), by_group=table, names=GROUP_METRICS,
                      undefined_by_metric={k: tuple(v) for k, v in undefined.items()})


def undefined_rates(y_true, *, sensitive_features, sample_weight=None) -> list[str]:
    """Readable notes for rates that are undefined in a group (fairlearn counts them as 0).

    E.g. ``["true_positive_rate of group 'b' (no y=1 rows; counted as 0)"]``; empty when every
    group has both labels.
    """
    yt = _arr(y_true)
    w = _w(sample_weight, yt.shape[0])
    codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
    notes = []
    for g, lab in enumerate(labels):
        m = codes == g
        for metric, empty in _undefined(_binary(yt[m]), w[m]).items():
            if empty and metric != "false_negative_rate":
                event = "y=1" if metric == "true_positive_rate" else "y=0"
                notes.append(f"{metric} of group {lab!r} (no {event} rows; counted as 0, as fairlearn)")
    return notes


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                  sample_weight=None) -> float:
    """``max_g P(yhat=1|g) - min_g P(yhat=1|g)``."""
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("selection_rate",), "difference", method)


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None) -> float:
    """``min_g P(yhat=1|g) / max_g P(yhat=1|g)``."""
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("selection_rate",), "ratio", method)


def equalized_odds_difference(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                              agg="worst_case") -> float:
    """Larger (``agg="mean"``: mean) of the TPR and FPR differences between groups."""
    vals = [
        _between(y_true, y_pred, sensitive_features, sample_weight, (k,), "difference", method)
        for k in ("true_positive_rate", "false_positive_rate")
    ]
    return float(max(vals) if agg == "worst_case" else np.mean(vals))


def equalized_odds_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                         agg="worst_case") -> float:
    """Smaller (``agg="mean"``: mean) of the TPR and FPR ratios between groups."""
    vals = [
        _between(y_true, y_pred, sensitive_features, sample_weight, (k,), "ratio", method)
        for k in ("true_positive_rate", "false_positive_rate")
    ]
    return float(min(vals) if agg == "worst_case" else np.mean(vals))


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                 sample_weight=None) -> float:
    """``max_g TPR_g - min_g TPR_g``."""
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("true_positive_rate",), "difference", method)


def equal_opportunity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None) -> float:
    """``min_g TPR_g / max_g TPR_g``."""
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("true_positive_rate",), "ratio", method)


def accuracy_equality_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                 sample_weight=None) -> float:
    """``max_g acc_g - min_g acc_g`` (equals the error-rate difference)."""
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("accuracy",), "difference", method)


error_rate_difference = accuracy_equality_difference


def worst_group_accuracy(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Smallest accuracy over the sensitive groups: the seed paper's max-min fairness (MMF).

    .. math:: \\mathrm{MMF} = \\min_g P(\\hat y = y \\mid g)

    See :func:`worst_cell_accuracy` for the smallest over (label, group) cells.
    """
    t = by_group(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight)
    return float(min(row["accuracy"] for row in t.by_group.values()))


max_min_fairness = worst_group_accuracy


def worst_cell_accuracy(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Smallest accuracy over the (label, group) cells (worst-group accuracy in the
    group-robustness sense, e.g. Waterbirds' four cells); at most :func:`worst_group_accuracy`."""
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    w = _w(sample_weight, yt.shape[0])
    codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
    accs = []
    for g in range(len(labels)):
        for c in np.unique(yt):
            m = (codes == g) & (yt == c)
            if m.any():
                accs.append(accuracy(yt[m], yp[m], sample_weight=w[m]))
    return float(min(accs))


def _between(y_true, y_pred, sensitive_features, sample_weight, keys, kind, method):
    if method not in ("between_groups", "to_overall"):
        raise DataError(f"method must be 'between_groups' or 'to_overall'; got {method!r}")
    t = by_group(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight)
    (key,) = keys
    if method == "between_groups":
        return _spread(t.by_group, key, kind)
    vals = np.array([g[key] for g in t.by_group.values()])
    ov = t.overall[key]
    if kind == "difference":
        return float(np.nanmax(np.abs(vals - ov)))
    ratios = [min(v, ov) / max(v, ov) if max(v, ov) > 0 else np.nan for v in vals]
    return float(np.nanmin(ratios))


def evaluate(y_true, y_pred, *, sensitive_features, y_score=None, sample_weight=None) -> dict:
    """All scalar metrics in one dict (the row of every fairhead table).

    ``y_score`` (probability of class 1 or a decision score) adds ``roc_auc`` and, when it
    lies in [0, 1], ``expected_calibration_error``.
    """
    kw = dict(sensitive_features=sensitive_features, sample_weight=sample_weight)
    out = {
        "accuracy": accuracy(y_true, y_pred, sample_weight=sample_weight),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, sample_weight=sample_weight),
        "selection_rate": selection_rate(y_true, y_pred, sample_weight=sample_weight),
        "demographic_parity_difference": demographic_parity_difference(y_true, y_pred, **kw),
        "demographic_parity_ratio": demographic_parity_ratio(y_true, y_pred, **kw),
        "equalized_odds_difference": equalized_odds_difference(y_true, y_pred, **kw),
        "equalized_odds_ratio": equalized_odds_ratio(y_true, y_pred, **kw),
        "equal_opportunity_difference": equal_opportunity_difference(y_true, y_pred, **kw),
        "accuracy_equality_difference": accuracy_equality_difference(y_true, y_pred, **kw),
        "worst_group_accuracy": worst_group_accuracy(y_true, y_pred, **kw),
        "worst_cell_accuracy": worst_cell_accuracy(y_true, y_pred, **kw),
    }
    if y_score is not None:
        s = _arr(y_score, _arr(y_true).shape[0], "y_score")
        out["roc_auc"] = roc_auc(y_true, s, sample_weight=sample_weight)
        if s.min() >= 0 and s.max() <= 1:
            out["expected_calibration_error"] = expected_calibration_error(y_true, s, sample_weight=sample_weight)
    return out

