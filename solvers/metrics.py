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

**K classes** (more than two distinct labels in ``y_true`` and ``y_pred``, or ``classes=`` with
more than two): every parity metric is computed **one-vs-rest, class by class**, as
fairlearn's binary metric on ``y_true == k`` and ``y_pred == k``, and the difference is the
largest over classes (a ratio the smallest):

.. math::

    \\mathrm{DP}_K = \\max_k \\bigl(\\max_g P(\\hat y = k \\mid g) - \\min_g P(\\hat y = k \\mid g)\\bigr),

and likewise for the TPR and FPR of each class (:func:`per_class_differences` gives every class's
value). Accuracy-based metrics need no change; ``balanced_accuracy`` is the mean per-class
recall, ``roc_auc`` the mean one-vs-rest AUC of the class scores (``y_score`` (n, K)) and
``expected_calibration_error`` the top-label one.

Examples
--------
>>> import numpy as np
>>> from solvers import metrics
>>> y_true = np.array([1, 0, 1, 1, 0, 0, 1, 0])
>>> y_pred = np.array([1, 0, 1, 0, 1, 1, 1, 0])
>>> group = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
>>> metrics.demographic_parity_difference(y_true, y_pred, sensitive_features=group)
0.25
>>> table = metrics.by_group(y_true, y_pred, sensitive_features=group)
>>> table.to_frame()[["selection_rate", "count"]]
   selection_rate  count
a            0.50      4
b            0.75      4
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .problem import encode_groups, unique_values

MSG_LENGTH = "{what} has {got} entries but y_true has {n}; pass one value per sample"
MSG_NOT_BINARY = "metrics expect binary labels in {{0, 1}} (or pos_label); got values {vals}"

GROUP_METRICS = ("selection_rate", "true_positive_rate", "false_positive_rate", "false_negative_rate", "accuracy", "count")


def multiclass_labels(y_true, y_pred=None, classes=None):
    """The class labels when the metrics are K-class (K > 2), else ``None`` (binary).

    ``classes`` (e.g. a head's ``classes_``) decides when given: a split that lacks some classes
    is still read as K-class. Otherwise the distinct values of ``y_true`` and ``y_pred`` do.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,), optional
        The predicted labels; their values count too.
    classes : array-like, optional
        All class labels (a head's ``classes_``); decides when given.

    Returns
    -------
    numpy.ndarray or None
        The class labels (``classes`` as given, else sorted) when there are more than two, else ``None``.
    """
    if classes is not None:
        classes = np.asarray(classes)
        return classes if classes.shape[0] > 2 else None
    values = np.unique(np.asarray(y_true).reshape(-1))
    if y_pred is not None:
        values = np.union1d(values, np.unique(np.asarray(y_pred).reshape(-1)))
    return values if values.shape[0] > 2 else None


def _one_vs_rest(values, k):
    return (np.asarray(values).reshape(-1) == k).astype(np.int64)


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
    """Fraction of correct predictions.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).

    Returns
    -------
    float
        The (weighted) share of rows with ``y_pred == y_true``; NaN without rows.
    """
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    return _mean((yt == yp).astype(np.float64), _w(sample_weight, yt.shape[0]))


def selection_rate(y_true, y_pred, *, pos_label=1, sample_weight=None) -> float:
    """``P(yhat = pos_label)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels (unused: the rate depends on the predictions only; fairlearn's signature).
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    pos_label : int or str, default=1
        The positive class.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).

    Returns
    -------
    float
        The (weighted) share of rows predicted ``pos_label``.
    """
    yp = _binary(y_pred, pos_label)
    return _mean(yp, _w(sample_weight, yp.shape[0]))


def true_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 1 | y = 1)``; 0 without positives (as fairlearn).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.

    Returns
    -------
    float
        The rate; 0 when ``y_true`` has no positive rows.
    """
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(yp, w * yt)


def false_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 1 | y = 0)``; 0 without negatives (as fairlearn).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.

    Returns
    -------
    float
        The rate; 0 when ``y_true`` has no negative rows.
    """
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(yp, w * (1 - yt))


def false_negative_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """``P(yhat = 0 | y = 1)``; 0 without positives (as fairlearn, so not ``1 - TPR`` there).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.

    Returns
    -------
    float
        The rate; 0 when ``y_true`` has no positive rows.
    """
    yt, yp = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    w = _w(sample_weight, yt.shape[0])
    return _rate(1.0 - yp, w * yt)


def balanced_accuracy(y_true, y_pred, *, sample_weight=None, pos_label=1, classes=None) -> float:
    """Mean of TPR and TNR (K classes: the mean recall of the classes present in ``y_true``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The mean recall.
    """
    labels = multiclass_labels(y_true, y_pred, classes)
    if labels is not None:
        present = [k for k in labels if np.any(np.asarray(y_true).reshape(-1) == k)]
        return float(np.mean([true_positive_rate(_one_vs_rest(y_true, k), _one_vs_rest(y_pred, k),
                                                 sample_weight=sample_weight) for k in present]))
    tpr = true_positive_rate(y_true, y_pred, sample_weight=sample_weight, pos_label=pos_label)
    fpr = false_positive_rate(y_true, y_pred, sample_weight=sample_weight, pos_label=pos_label)
    return 0.5 * (tpr + 1.0 - fpr)


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """The ranks 1..n of ``s``, ties sharing their mean rank (``scipy.stats.rankdata``'s ``"average"``,
    the same arithmetic, without importing scipy.stats: 0.5 s)."""
    # any order within a tie gives the same ranks (each tie shares its mean): the unstable sort, 5x faster;
    # NaNs are each their own tie, ranked by position, so they keep the stable order
    order = np.argsort(s, kind="mergesort" if np.isnan(s).any() else None)
    ordered = s[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.empty(s.shape[0], dtype=np.intp)
    dense[order] = np.cumsum(first)  # 1-based index of each value's tie block
    ends = np.r_[np.flatnonzero(first), s.shape[0]]  # where each block starts, then n
    return 0.5 * (ends[dense] + ends[dense - 1] + 1)


def roc_auc(y_true, y_score, *, sample_weight=None, pos_label=1, classes=None) -> float:
    """Area under the ROC curve (ties count one half); NaN with one class.

    K classes (``y_score`` of shape (n, K), columns in ``classes`` order): the mean one-vs-rest
    AUC over the classes present in ``y_true`` with at least one other class (scikit-learn's
    ``multi_class="ovr"``, ``average="macro"``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes)
        Scores of the positive class (any monotone score), or per class in ``classes`` order.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The AUC in [0, 1]; NaN when ``y_true`` has one class.
    """
    if np.ndim(y_score) == 2:
        labels = np.asarray(classes) if classes is not None else np.unique(np.asarray(y_true))
        score = np.asarray(y_score, dtype=np.float64)
        aucs = [roc_auc(_one_vs_rest(y_true, k), score[:, j], sample_weight=sample_weight) for j, k in enumerate(labels)]
        aucs = [a for a in aucs if np.isfinite(a)]
        return float(np.mean(aucs)) if aucs else float("nan")
    yt = _binary(y_true, pos_label)
    s = _arr(y_score, yt.shape[0], "y_score").astype(np.float64)
    w = _w(sample_weight, yt.shape[0])
    if yt.min() == yt.max():
        return float("nan")
    if sample_weight is None:
        r = _average_ranks(s)
        n1 = yt.sum()
        n0 = yt.shape[0] - n1
        return float((r[yt == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    order = np.argsort(s, kind="mergesort")  # stable: each tie's weights are summed in row order
    s, yt, w = s[order], yt[order], w[order]
    # weighted Mann-Whitney with ties: sum over unique scores
    uniq, start = np.unique(s, return_index=True)
    pos = np.add.reduceat(w * yt, start)
    neg = np.add.reduceat(w * (1 - yt), start)
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    auc = (pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum())
    return float(auc)


def expected_calibration_error(y_true, y_prob, *, n_bins=10, sample_weight=None, pos_label=1, classes=None) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins on ``P(y=1)``.

    .. math:: \\mathrm{ECE} = \\sum_b \\frac{|B_b|}{n} \\,\\bigl|\\bar y_{B_b} - \\bar p_{B_b}\\bigr|

    K classes (``y_prob`` of shape (n, K), columns in ``classes`` order): the top-label ECE, the
    confidence ``max_k p_k`` against whether the most probable class is the label.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_prob : array-like of shape (n_samples,) or (n_samples, n_classes)
        Probability of the positive class, or of each class in ``classes`` order.
    n_bins : int, default=10
        Equal-width probability bins.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    pos_label : int or str, default=1
        The positive class.
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The ECE in [0, 1].
    """
    if np.ndim(y_prob) == 2:
        prob = np.asarray(y_prob, dtype=np.float64)
        labels = np.asarray(classes) if classes is not None else np.unique(np.asarray(y_true))
        hit = (labels[np.argmax(prob, axis=1)] == np.asarray(y_true).reshape(-1)).astype(np.int64)
        return expected_calibration_error(hit, prob.max(axis=1), n_bins=n_bins, sample_weight=sample_weight)
    yt = _binary(y_true, pos_label)
    p = _arr(y_prob, yt.shape[0], "y_prob").astype(np.float64)
    if p.ndim == 2:  # pragma: no cover - reshape(-1) above flattens; keep API simple
        p = p[:, 1]
    w = _w(sample_weight, yt.shape[0])
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    tot = w.sum()
    # each bin's weight and weighted sums of labels and probabilities in one pass (bincount), not a mask per bin
    wb = np.bincount(bins, weights=w, minlength=n_bins)
    yb = np.bincount(bins, weights=yt * w, minlength=n_bins)
    pb = np.bincount(bins, weights=p * w, minlength=n_bins)
    full = wb > 0
    return float(np.sum(wb[full] / tot * np.abs(yb[full] / wb[full] - pb[full] / wb[full])))


# ----------------------------------------------------------------------------- by group


@dataclass(frozen=True)
class GroupTable:
    """Per-group metrics, like fairlearn's MetricFrame: ``overall``, ``by_group``, ``difference()``.

    What :func:`by_group` returns.

    Parameters
    ----------
    overall : dict
        Metric name -> value over all rows.
    by_group : dict
        Group label -> ``{metric name: value}``.
    names : tuple of str
        The metric names, in column order.
    undefined_by_metric : dict, optional
        Metric name -> the groups whose conditioning event is empty there (rate reported as 0).
    """

    overall: dict
    by_group: dict  # group label -> {metric: value}
    names: tuple
    #: metric -> groups whose conditioning event is empty there (their rate is reported as 0)
    undefined_by_metric: dict = None

    def undefined(self) -> dict:
        """List the rates that are undefined in some group (counted as 0).

        Returns
        -------
        dict
            ``{metric: (group, ...)}``, only metrics with at least one such group.
        """
        return {k: v for k, v in (self.undefined_by_metric or {}).items() if v}

    def difference(self) -> dict:
        """Compute ``max - min`` over the groups, per metric (NaN groups left out).

        Returns
        -------
        dict
            Metric name -> difference (``count`` left out).
        """
        return {k: _spread(self.by_group, k, "difference") for k in self.names if k != "count"}

    def ratio(self) -> dict:
        """Compute ``min / max`` over the groups, per metric (NaN when the largest is 0).

        Returns
        -------
        dict
            Metric name -> ratio (``count`` left out).
        """
        return {k: _spread(self.by_group, k, "ratio") for k in self.names if k != "count"}

    def to_frame(self):
        """Return the table as a pandas DataFrame (pandas imported lazily).

        Returns
        -------
        pandas.DataFrame
            One row per group, one column per metric.
        """
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


def confusion_by_group(y_true, y_pred, codes, n_groups: int, sample_weight=None) -> np.ndarray:
    """Sum the weights of every (group, y = 1, yhat = 1, yhat = y) cell.

    One ``bincount`` over the rows: every group rate is a ratio of sums of these cells (unit
    weights: row counts, exact integers in float64). ``y = 1`` and ``yhat = 1`` compare with the
    positive label 1 (as :func:`true_positive_rate`); ``yhat = y`` compares the raw values (as
    :func:`accuracy`). E.g. group ``g``'s TPR is ``C[g, 1, 1].sum() / C[g, 1].sum()``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    codes : array-like of int of shape (n_samples,)
        Each row's group, in ``0 .. n_groups - 1`` (:func:`solvers.problem.encode_groups`).
    n_groups : int
        The number of groups.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each, and the sums are row counts).

    Returns
    -------
    numpy.ndarray of shape (n_groups, 2, 2, 2)
        ``C[g, t, p, c]``: the weight of group ``g``'s rows with ``(y = 1) = t``, ``(yhat = 1) = p``
        and ``(yhat = y) = c``, in float64.
    """
    yt, yp = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    cell = ((np.asarray(codes, dtype=np.intp) * 2 + (yt == 1)) * 2 + (yp == 1)) * 2 + (yt == yp)
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    sums = np.bincount(cell, weights=weights, minlength=8 * n_groups)
    return sums.astype(np.float64).reshape(n_groups, 2, 2, 2)


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """``num / den`` per group, ``empty`` where ``den`` has no (positive) weight."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), empty)


def _cell_totals(cells: np.ndarray) -> dict:
    """The per-group sums behind every rate, from :func:`confusion_by_group`'s cells: ``weight`` (all
    rows), ``pos`` / ``neg`` (y = 1 / y = 0), ``selected`` (yhat = 1), ``right`` (yhat = y), ``tp``
    (y = 1, yhat = 1), ``fp`` (y = 0, yhat = 1) and ``fn`` (y = 1, yhat = 0); arrays of shape (n_groups,)."""
    return {"weight": cells.sum(axis=(1, 2, 3)), "pos": cells[:, 1].sum(axis=(1, 2)),
            "neg": cells[:, 0].sum(axis=(1, 2)), "selected": cells[:, :, 1].sum(axis=(1, 2)),
            "right": cells[..., 1].sum(axis=(1, 2)), "tp": cells[:, 1, 1].sum(axis=1),
            "fp": cells[:, 0, 1].sum(axis=1), "fn": cells[:, 1, 0].sum(axis=1)}


def _rows(cells: np.ndarray, rows: np.ndarray) -> dict:
    """Each :data:`GROUP_METRICS` column per group (arrays) from :func:`confusion_by_group`'s cells:
    the same ratios as :func:`selection_rate`, :func:`true_positive_rate` ... (NaN or 0 on an empty
    event, as they give)."""
    t = _cell_totals(cells)
    return {
        "selection_rate": _ratio(t["selected"], t["weight"], np.nan),
        "true_positive_rate": _ratio(t["tp"], t["pos"], 0.0),
        "false_positive_rate": _ratio(t["fp"], t["neg"], 0.0),
        "false_negative_rate": _ratio(t["fn"], t["pos"], 0.0),
        "accuracy": _ratio(t["right"], t["weight"], np.nan),
        "count": rows,
        # which rates have an empty conditioning event (reported as 0, listed by GroupTable.undefined)
        "_no_pos": t["pos"] <= 0, "_no_neg": t["neg"] <= 0,
    }


def by_group(y_true, y_pred, *, sensitive_features, y_score=None, sample_weight=None) -> GroupTable:
    r"""Selection rate, TPR, FPR, FNR, accuracy and count per (intersectional) group.

    For group :math:`g` with rows :math:`G` (weights :math:`v_i`, default 1),

    .. math::

        \mathrm{SR}_g = \frac{\sum_{i \in G} v_i \hat y_i}{\sum_{i \in G} v_i},\quad
        \mathrm{TPR}_g = \frac{\sum_{i \in G, y_i = 1} v_i \hat y_i}{\sum_{i \in G, y_i = 1} v_i},\quad
        \mathrm{FPR}_g = \frac{\sum_{i \in G, y_i = 0} v_i \hat y_i}{\sum_{i \in G, y_i = 0} v_i},

    :math:`\mathrm{FNR}_g = 1 - \mathrm{TPR}_g` and accuracy the weighted share of
    :math:`\hat y_i = y_i`; a rate whose event is empty in a group is reported as 0 and listed
    by :meth:`GroupTable.undefined`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    y_score : array-like of shape (n_samples,), optional
        Accepted for the signature of :func:`evaluate`; the table does not use it.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).


    Returns
    -------
    GroupTable
        fairlearn's MetricFrame shape: ``overall``, ``by_group``, ``difference()``, ``ratio()``
        and ``to_frame()`` (a pandas DataFrame, one row per group). Exact intervals on the
        same rates per group: :func:`solvers.intervals.group_rate_intervals`.

    Examples
    --------
    >>> from solvers.metrics import by_group
    >>> t = by_group([0, 1, 1, 0], [0, 1, 0, 0], sensitive_features=["a", "a", "b", "b"])
    >>> t.by_group["a"]["selection_rate"], t.difference()["selection_rate"]
    (0.5, 0.5)
    """
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    w = None if sample_weight is None else _w(sample_weight, yt.shape[0])
    codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
    # every group's rates from one table of cell weights (not five masked sums per group)
    cells = confusion_by_group(yt, yp, codes, len(labels), w)
    per_group = _rows(cells, np.bincount(codes, minlength=len(labels)))
    overall = _rows(cells.sum(axis=0, keepdims=True), np.array([yt.shape[0]]))

    def row(cols: dict, g: int) -> dict:
        return {k: (int(cols[k][g]) if k == "count" else float(cols[k][g])) for k in GROUP_METRICS}

    table = {lab: row(per_group, g) for g, lab in enumerate(labels)}
    no_pos = tuple(lab for g, lab in enumerate(labels) if per_group["_no_pos"][g])
    no_neg = tuple(lab for g, lab in enumerate(labels) if per_group["_no_neg"][g])
    return GroupTable(overall=row(overall, 0), by_group=table, names=GROUP_METRICS,
                      undefined_by_metric={"true_positive_rate": no_pos, "false_negative_rate": no_pos,
                                           "false_positive_rate": no_neg})


def undefined_rates(y_true, *, sensitive_features, sample_weight=None, classes=None) -> list[str]:
    """Readable notes for rates that are undefined in a group (fairlearn counts them as 0).

    E.g. ``["true_positive_rate of group 'b' (no y=1 rows; counted as 0)"]``; empty when every
    group has both labels. K classes (``classes`` with more than two): per class, one-vs-rest.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels; more than two give per-class notes.

    Returns
    -------
    list of str
        One readable note per undefined rate; empty when there are none.
    """
    labels = multiclass_labels(y_true, None, classes)
    if labels is not None:
        yt = _arr(y_true)
        w = _w(sample_weight, yt.shape[0])
        codes, groups, _ = encode_groups(sensitive_features, yt.shape[0])
        notes = []
        for k in labels:
            k = k.item() if isinstance(k, np.generic) else k
            for g, lab in enumerate(groups):
                m = codes == g
                empty = _undefined(_one_vs_rest(yt[m], k), w[m])
                for metric, event in (("true_positive_rate", f"y={k}"), ("false_positive_rate", f"y!={k}")):
                    if empty[metric]:
                        notes.append(f"{metric} of class {k!r} in group {lab!r} (no {event} rows; counted as 0, "
                                     "as fairlearn)")
        return notes
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


def _per_class(fn, y_true, y_pred, classes, reduce, **kw) -> float | None:
    """``reduce`` over classes of ``fn`` on one-vs-rest labels; ``None`` for binary labels."""
    labels = multiclass_labels(y_true, y_pred, classes)
    if labels is None:
        return None
    vals = np.array([fn(_one_vs_rest(y_true, k), _one_vs_rest(y_pred, k), **kw) for k in labels], dtype=np.float64)
    vals = vals[~np.isnan(vals)]
    return float(reduce(vals)) if vals.size else float("nan")


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                  sample_weight=None, classes=None) -> float:
    """``max_g P(yhat=1|g) - min_g P(yhat=1|g)`` (K classes: the largest over classes, one-vs-rest).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The difference, in [0, 1].
    """
    multi = _per_class(demographic_parity_difference, y_true, y_pred, classes, np.max,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight)
    if multi is not None:
        return multi
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("selection_rate",), "difference", method)


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                             classes=None) -> float:
    """``min_g P(yhat=1|g) / max_g P(yhat=1|g)`` (K classes: the smallest over classes).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The ratio, in [0, 1] (NaN when no group selects anyone).
    """
    multi = _per_class(demographic_parity_ratio, y_true, y_pred, classes, np.min,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight)
    if multi is not None:
        return multi
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("selection_rate",), "ratio", method)


def equalized_odds_difference(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                              agg="worst_case", classes=None) -> float:
    """Larger (``agg="mean"``: mean) of the TPR and FPR differences between groups (K classes:
    the largest over classes of each class's one-vs-rest value).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    agg : {"worst_case", "mean"}, default="worst_case"
        Combine the TPR and FPR values by the worse of the two or by their mean (fairlearn's ``agg``).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The difference, in [0, 1].
    """
    multi = _per_class(equalized_odds_difference, y_true, y_pred, classes, np.max,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight, agg=agg)
    if multi is not None:
        return multi
    vals = [
        _between(y_true, y_pred, sensitive_features, sample_weight, (k,), "difference", method)
        for k in ("true_positive_rate", "false_positive_rate")
    ]
    return float(max(vals) if agg == "worst_case" else np.mean(vals))


def equalized_odds_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                         agg="worst_case", classes=None) -> float:
    """Smaller (``agg="mean"``: mean) of the TPR and FPR ratios between groups (K classes: the
    smallest over classes).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    agg : {"worst_case", "mean"}, default="worst_case"
        Combine the TPR and FPR values by the worse of the two or by their mean (fairlearn's ``agg``).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The ratio, in [0, 1].
    """
    multi = _per_class(equalized_odds_ratio, y_true, y_pred, classes, np.min,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight, agg=agg)
    if multi is not None:
        return multi
    vals = [
        _between(y_true, y_pred, sensitive_features, sample_weight, (k,), "ratio", method)
        for k in ("true_positive_rate", "false_positive_rate")
    ]
    return float(min(vals) if agg == "worst_case" else np.mean(vals))


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                 sample_weight=None, classes=None) -> float:
    """``max_g TPR_g - min_g TPR_g`` (K classes: the largest over classes, one-vs-rest).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The difference, in [0, 1].
    """
    multi = _per_class(equal_opportunity_difference, y_true, y_pred, classes, np.max,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight)
    if multi is not None:
        return multi
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("true_positive_rate",), "difference", method)


def equal_opportunity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", sample_weight=None,
                            classes=None) -> float:
    """``min_g TPR_g / max_g TPR_g`` (K classes: the smallest over classes).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    float
        The ratio, in [0, 1].
    """
    multi = _per_class(equal_opportunity_ratio, y_true, y_pred, classes, np.min,
                       sensitive_features=sensitive_features, method=method, sample_weight=sample_weight)
    if multi is not None:
        return multi
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("true_positive_rate",), "ratio", method)


def accuracy_equality_difference(y_true, y_pred, *, sensitive_features, method="between_groups",
                                 sample_weight=None) -> float:
    """``max_g acc_g - min_g acc_g`` (equals the error-rate difference).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    method : {"between_groups", "to_overall"}, default="between_groups"
        Compare the groups with each other (fairlearn's default), or each group with the overall value.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).

    Returns
    -------
    float
        The difference, in [0, 1].
    """
    return _between(y_true, y_pred, sensitive_features, sample_weight, ("accuracy",), "difference", method)


error_rate_difference = accuracy_equality_difference


def worst_group_accuracy(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Smallest accuracy over the sensitive groups: the seed paper's max-min fairness (MMF).

    .. math:: \\mathrm{MMF} = \\min_g P(\\hat y = y \\mid g)

    See :func:`worst_cell_accuracy` for the smallest over (label, group) cells.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).

    Returns
    -------
    float
        The smallest group accuracy.
    """
    t = by_group(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight)
    return float(min(row["accuracy"] for row in t.by_group.values()))


max_min_fairness = worst_group_accuracy


def worst_cell_accuracy(y_true, y_pred, *, sensitive_features, sample_weight=None) -> float:
    """Smallest accuracy over the (label, group) cells (worst-group accuracy in the
    group-robustness sense, e.g. Waterbirds' four cells); at most :func:`worst_group_accuracy`.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).

    Returns
    -------
    float
        The smallest cell accuracy.
    """
    yt = _arr(y_true)
    yp = _arr(y_pred, yt.shape[0])
    w = _w(sample_weight, yt.shape[0])
    codes, labels, _ = encode_groups(sensitive_features, yt.shape[0])
    # every (group, label) cell's row count, weight and correct weight in one pass each (bincount)
    classes, label_codes = unique_values(yt, return_inverse=True)
    cell = codes * len(classes) + label_codes.reshape(-1)
    size = len(labels) * len(classes)
    rows = np.bincount(cell, minlength=size)
    weight = np.bincount(cell, weights=w, minlength=size)
    right = np.bincount(cell, weights=w * (yt == yp), minlength=size)
    seen = rows > 0  # a cell with rows but no weight is accuracy's NaN, as before
    with np.errstate(invalid="ignore", divide="ignore"):
        accs = np.where(weight[seen] > 0, right[seen] / np.where(weight[seen] > 0, weight[seen], 1.0), np.nan)
    return float(min(accs.tolist()))


def _between(y_true, y_pred, sensitive_features, sample_weight, keys, kind, method):
    if method not in ("between_groups", "to_overall"):
        raise DataError(f"method must be 'between_groups' or 'to_overall'; got {method!r}")
    t = by_group(y_true, y_pred, sensitive_features=sensitive_features, sample_weight=sample_weight)
    (key,) = keys
    return _between_in_table(t, key, kind, method)


def _between_in_table(t: GroupTable, key: str, kind: str, method: str) -> float:
    """The between-groups (or to-overall) difference or ratio of ``key`` in a :func:`by_group` table."""
    if method == "between_groups":
        return _spread(t.by_group, key, kind)
    vals = np.array([g[key] for g in t.by_group.values()])
    ov = t.overall[key]
    if kind == "difference":
        return float(np.nanmax(np.abs(vals - ov)))
    ratios = [min(v, ov) / max(v, ov) if max(v, ov) > 0 else np.nan for v in vals]
    return float(np.nanmin(ratios))


def per_class_differences(y_true, y_pred, *, sensitive_features, sample_weight=None, classes=None) -> dict:
    """Each class's one-vs-rest between-groups differences (fairlearn's binary metrics on
    ``y_true == k`` and ``y_pred == k``): ``{class: {"demographic_parity_difference": ...,
    "equal_opportunity_difference": ..., "equalized_odds_difference": ...}}``. The K-class
    metrics of this module are the largest of these over the classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    dict
        Class label -> ``{metric name: value}``.
    """
    labels = multiclass_labels(y_true, y_pred, classes)
    if labels is None:
        labels = np.asarray(classes) if classes is not None else np.union1d(np.unique(y_true), np.unique(y_pred))
    kw = dict(sensitive_features=sensitive_features, sample_weight=sample_weight)
    out = {}
    for k in labels:
        yt, yp = _one_vs_rest(y_true, k), _one_vs_rest(y_pred, k)
        out[k.item() if isinstance(k, np.generic) else k] = {
            "demographic_parity_difference": demographic_parity_difference(yt, yp, **kw),
            "equal_opportunity_difference": equal_opportunity_difference(yt, yp, **kw),
            "equalized_odds_difference": equalized_odds_difference(yt, yp, **kw),
        }
    return out


def evaluate(y_true, y_pred, *, sensitive_features, y_score=None, sample_weight=None, classes=None) -> dict:
    """All scalar metrics in one dict (the row of every fairhead table).

    ``y_score`` (probability of class 1 or a decision score) adds ``roc_auc`` and, when it
    lies in [0, 1], ``expected_calibration_error``. K classes (see the module docstring; pass
    ``classes`` so that a split missing a class is still read as K-class): the parity metrics
    are the largest over classes, one-vs-rest, ``y_score`` is the (n, K) probabilities in
    ``classes`` order, and ``selection_rate`` (a binary notion) is left out.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        The true labels.
    y_pred : array-like of shape (n_samples,)
        The predicted labels (hard predictions).
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes), DataFrame or dict
        The sensitive attributes; several form intersectional groups.
    y_score : array-like of shape (n_samples,) or (n_samples, n_classes), optional
        Probability of class 1 or a decision score (K classes: the probabilities); adds ``roc_auc`` and, for
        values in [0, 1], ``expected_calibration_error``.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (default: 1 each).
    classes : array-like, optional
        All class labels (e.g. a head's ``classes_``); more than two make the metric K-class (one-vs-rest,
        class by class) even on a split that lacks some class.

    Returns
    -------
    dict
        Metric name -> value: accuracy, balanced accuracy, selection rate (binary), the parity differences and
        ratios, worst-group and worst-cell accuracy, and with ``y_score`` the ROC AUC and calibration error.
    """
    if classes is None:  # the labels' values, found once for every metric below (each would look again)
        classes = np.union1d(np.unique(np.asarray(y_true).reshape(-1)), np.unique(np.asarray(y_pred).reshape(-1)))
    labels = multiclass_labels(y_true, y_pred, classes)
    binary = {"classes": classes}  # two values or fewer: read as binary, as without ``classes``
    kw = dict(sensitive_features=sensitive_features, sample_weight=sample_weight)
    kc = dict(kw, classes=labels) if labels is not None else kw
    out = {
        "accuracy": accuracy(y_true, y_pred, sample_weight=sample_weight),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, sample_weight=sample_weight,
                                               **({"classes": labels} if labels is not None else binary)),
    }
    if labels is None:
        out["selection_rate"] = selection_rate(y_true, y_pred, sample_weight=sample_weight)
        out.update(_binary_group_metrics(by_group(y_true, y_pred, **kw)))
        out["worst_cell_accuracy"] = worst_cell_accuracy(y_true, y_pred, **kw)
    else:
        out.update({
            "demographic_parity_difference": demographic_parity_difference(y_true, y_pred, **kc),
            "demographic_parity_ratio": demographic_parity_ratio(y_true, y_pred, **kc),
            "equalized_odds_difference": equalized_odds_difference(y_true, y_pred, **kc),
            "equalized_odds_ratio": equalized_odds_ratio(y_true, y_pred, **kc),
            "equal_opportunity_difference": equal_opportunity_difference(y_true, y_pred, **kc),
            "accuracy_equality_difference": accuracy_equality_difference(y_true, y_pred, **kw),
            "worst_group_accuracy": worst_group_accuracy(y_true, y_pred, **kw),
            "worst_cell_accuracy": worst_cell_accuracy(y_true, y_pred, **kw),
        })
    if y_score is not None and labels is not None:
        prob = np.asarray(y_score, dtype=np.float64)
        out["roc_auc"] = roc_auc(y_true, prob, sample_weight=sample_weight, classes=labels)
        if prob.min() >= 0 and prob.max() <= 1:
            out["expected_calibration_error"] = expected_calibration_error(y_true, prob, sample_weight=sample_weight,
                                                                           classes=labels)
    elif y_score is not None:
        s = _arr(y_score, _arr(y_true).shape[0], "y_score")
        out["roc_auc"] = roc_auc(y_true, s, sample_weight=sample_weight, **binary)
        if s.min() >= 0 and s.max() <= 1:
            out["expected_calibration_error"] = expected_calibration_error(y_true, s, sample_weight=sample_weight,
                                                                           **binary)
    return out


def _binary_group_metrics(t: GroupTable) -> dict:
    """The binary parity metrics of :func:`evaluate`, all read from one :func:`by_group` table
    (the values of the metric functions above, which each build their own table)."""

    def spread(key: str, kind: str) -> float:
        return _between_in_table(t, key, kind, "between_groups")

    return {
        "demographic_parity_difference": spread("selection_rate", "difference"),
        "demographic_parity_ratio": spread("selection_rate", "ratio"),
        "equalized_odds_difference": float(max([spread("true_positive_rate", "difference"),
                                                spread("false_positive_rate", "difference")])),
        "equalized_odds_ratio": float(min([spread("true_positive_rate", "ratio"),
                                           spread("false_positive_rate", "ratio")])),
        "equal_opportunity_difference": spread("true_positive_rate", "difference"),
        "accuracy_equality_difference": spread("accuracy", "difference"),
        "worst_group_accuracy": float(min(row["accuracy"] for row in t.by_group.values())),
    }
