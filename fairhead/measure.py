"""A constraint's own value for a given head on given data.

The sweep reports, next to the standard fairness metrics, the very quantity that
a constraint bounds, measured on every split:

* rate constraints: ``max_k |gap_k(yhat)|`` (e.g. the largest group's selection-rate gap);
* linear score constraints: ``max_k |m_k(z)|`` (e.g. the largest group mean-score gap);
* ``group-loss`` and ``minimax``: the largest group (or cell) mean logistic loss.

Comparing it on the fit split (where ``<= eps`` is imposed) with the test split
shows how much of the constraint survives on held-out data.
"""

from __future__ import annotations

import numpy as np

from solvers.constraints import GroupLoss, LinearScoreConstraint, MinimaxLoss, RateConstraint, make_constraint
from solvers.problem import encode_groups


def _mean_losses(z: np.ndarray, y: np.ndarray, cells: np.ndarray, n_cells: int) -> np.ndarray:
    signed = np.where(y == 1, z, -z)
    losses = np.logaddexp(0.0, -signed)
    sums = np.bincount(cells, weights=losses, minlength=n_cells)
    counts = np.bincount(cells, minlength=n_cells)
    return sums / np.maximum(counts, 1)


def constraint_value(constraint, *, y, scores, sensitive_features, predictions=None) -> float:
    """The largest bounded quantity of ``constraint`` for decision scores ``scores``.

    Hard predictions are ``predictions`` when given (a randomized or post-processed
    baseline), else ``scores > 0``. Groups that a split lacks (e.g. an empty
    cell on a small split) are skipped rather than failing the whole report.
    """
    constraint = make_constraint(constraint)
    if constraint is None:
        return float("nan")
    y = np.asarray(y).astype(np.float64)
    z = np.asarray(scores, dtype=np.float64)
    groups, labels, _ = encode_groups(sensitive_features, y.shape[0])
    sw = np.ones_like(y)
    if isinstance(constraint, (GroupLoss, MinimaxLoss)):
        cells, cell_labels = constraint.cells_codes(y, groups, labels)
        return float(_mean_losses(z, y, cells, len(cell_labels)).max())
    try:
        if isinstance(constraint, RateConstraint):
            moments = constraint.moments(y, groups, sw, labels)
            yhat = (z > 0) if predictions is None else np.asarray(predictions)
            return float(np.abs(moments.gaps(yhat.astype(np.float64))).max())
        if isinstance(constraint, LinearScoreConstraint):
            return float(np.abs(constraint.values(z, y, groups, sw, labels)).max())
    except ValueError:  # a group absent from an event on this split: no value to report
        return float("nan")
    raise TypeError(f"no measure for constraint {constraint!r}")  # pragma: no cover
