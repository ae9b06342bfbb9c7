"""A constraint's own value for a given head on given data.

The sweep reports, next to the standard fairness metrics, the very quantity that
a constraint bounds, measured on every split:

* rate constraints: ``max_k |gap_k(yhat)|`` (e.g. the largest group's selection-rate gap);
* linear score constraints: ``max_k |m_k(z)|`` (e.g. the largest group mean-score gap);
* ``group-loss`` and ``minimax``: the largest group (or cell) mean logistic loss.

Comparing it on the fit split (where ``<= eps`` is imposed) with the test split
shows how much of the constraint survives on held-out data.

This *bounded gap* is not the between-groups difference the tables report next to it
(fairlearn's ``max_g r_g - min_g r_g``, :data:`BETWEEN_GROUPS`): a rate constraint bounds
each group against the overall rate, ``|r_g - r| <= eps``, so the between-groups difference
of a head that meets ``eps`` can reach ``2 eps`` (and, with two groups of shares ``p_a,
p_b``, ``|r_a - r| = p_b |r_a - r_b|``). Every table shows both, labelled.

With ``balance="group"`` or ``"label-group"`` the head is fitted with reweighted samples,
and ``eps`` bounds the gap **under those weights** (the same weights enter the loss and the
constraint; see :func:`solvers.problem.balance_weights`): with ``"group"`` the overall rate
``r`` is the plain mean of the group rates, with ``"label-group"`` each group's rate is the
mean of its per-label rates. Pass the same ``balance`` here to measure that quantity; on
another split the weights are that split's own balance weights. The between-groups
differences stay unweighted population metrics.
"""

from __future__ import annotations

import numpy as np

from fairhead_errors import DataError
from solvers.constraints import (CONSTRAINTS, MSG_BINARY_ONLY, MULTICLASS_NAMES, GroupLoss, LinearScoreConstraint,
                                 MinimaxLoss, RateConstraint, make_constraint)
from solvers.problem import balance_weights, encode_groups

#: the between-groups difference (fairlearn's, a key of :func:`solvers.metrics.evaluate`) that reports
#: the family of each constraint, shown next to the constraint's bounded gap (each class's ``metric``)
BETWEEN_GROUPS = {name: c.metric for name, c in CONSTRAINTS.items()}


def describe_bounded_gap(constraint, balance=None, n_classes: int = 2) -> str:
    """One line saying what ``eps`` bounds for ``constraint`` (for legends and summaries); with
    ``n_classes`` K > 2, per class k, one-vs-rest."""
    constraint = make_constraint(constraint)
    if constraint is None:
        return "no constraint"
    if n_classes > 2:
        return _describe_class_gap(constraint, balance, n_classes)
    within = {"all": "", "y=1": " among y=1 rows", "y=0": " among y=0 rows", "label": " within each label (y=1 and y=0)"}
    if getattr(constraint, "bounded_value", None):  # a rate constraint that says what it bounds itself
        what = f"{constraint.bounded_value} ('{constraint.name}')"
    elif isinstance(constraint, RateConstraint):
        rate = "error rate" if constraint.utility == "error" else "P(yhat=1)"
        what = (f"max over groups of |{rate}(group) - {rate}(all)|{within[constraint.event]} ('{constraint.name}'; "
                "a head that meets eps can show up to 2 eps as a between-groups difference)")
    elif isinstance(constraint, (GroupLoss, MinimaxLoss)):
        what = f"the largest group mean logistic loss ('{constraint.name}')"
    elif isinstance(constraint, LinearScoreConstraint) and constraint.name != "cov":
        what = (f"max over groups of |mean score(group) - mean score(all)|{within[constraint.event]} "
                f"('{constraint.name}', a gap of scores w.x+b, not of rates)")
    else:
        what = f"max over groups of |cov(group indicator, score)| ('{constraint.name}', a score covariance)"
    weights = "unit weights" if balance is None else f"balance={balance!r} weights"
    return f"{what}; measured with {weights}"


def _describe_class_gap(constraint, balance, K: int) -> str:
    within = {"all": "", "y=1": " among y=k rows", "y=0": " among y!=k rows",
              "label": " within y=k and within y!=k"}[constraint.event]
    if isinstance(constraint, RateConstraint):
        what = (f"max over classes k and groups of |P(yhat=k)(group) - P(yhat=k)(all)|{within} ('{constraint.name}', "
                f"{K} classes, one-vs-rest)")
    else:
        what = (f"max over classes k and groups of |mean z_k(group) - mean z_k(all)|{within} ('{constraint.name}', "
                f"{K} classes; z_k the centred class-k logit, not a rate)")
    weights = "unit weights" if balance is None else f"balance={balance!r} weights"
    return f"{what}; measured with {weights}"


def _mean_losses(z: np.ndarray, y: np.ndarray, cells: np.ndarray, n_cells: int, sw: np.ndarray) -> np.ndarray:
    signed = np.where(y == 1, z, -z)
    losses = np.logaddexp(0.0, -signed)
    sums = np.bincount(cells, weights=losses * sw, minlength=n_cells)
    totals = np.bincount(cells, weights=sw, minlength=n_cells)
    return sums / np.where(totals > 0, totals, 1.0)


def constraint_value(constraint, *, y, scores, sensitive_features, predictions=None, balance=None) -> float:
    """The largest bounded quantity of ``constraint`` for decision scores ``scores``.

    Hard predictions are ``predictions`` when given (a randomized or post-processed
    baseline), else ``scores > 0``; scores of shape (n, K) are a K-class head's (labels ``y`` the
    class codes, predictions the largest score, the rows per class of
    :mod:`solvers.constraints`). ``balance`` (``None``, ``"group"``, ``"label-group"``)
    measures it under the head's balance weights, as the fit bounds it. Groups that a split
    lacks (e.g. an empty cell on a small split) are skipped rather than failing the whole report.
    """
    constraint = make_constraint(constraint)
    if constraint is None:
        return float("nan")
    y = np.asarray(y).astype(np.float64)
    z = np.asarray(scores, dtype=np.float64)
    K = z.shape[1] if z.ndim == 2 else 2
    multi = {"n_classes": K} if K > 2 else {}
    if K > 2 and not constraint.multiclass:
        raise DataError(MSG_BINARY_ONLY.format(name=constraint.name, k=K, names=", ".join(MULTICLASS_NAMES)))
    groups, labels, _ = encode_groups(sensitive_features, y.shape[0])
    sw = balance_weights(np.ones_like(y), y, groups, balance, K)
    if isinstance(constraint, (GroupLoss, MinimaxLoss)):
        cells, cell_labels = constraint.cells_codes(y, groups, labels)
        return float(_mean_losses(z, y, cells, len(cell_labels), sw).max())
    try:
        if isinstance(constraint, RateConstraint):
            moments = constraint.moments(y, groups, sw, labels, **multi)
            if predictions is not None:
                yhat = np.asarray(predictions)
            else:
                yhat = np.argmax(z, axis=1) if K > 2 else (z > 0)
            return float(np.abs(moments.gaps(yhat.astype(np.float64))).max())
        if isinstance(constraint, LinearScoreConstraint):
            return float(np.abs(constraint.values(z, y, groups, sw, labels)).max())
    except ValueError:  # a group absent from an event on this split: no value to report
        return float("nan")
    raise TypeError(f"no measure for constraint {constraint!r}")  # pragma: no cover
