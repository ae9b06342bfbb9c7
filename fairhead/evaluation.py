"""Evaluating heads on the splits, and the records and rows the commands write.

What several commands share: ``fit``, ``sweep``, ``protocols``, ``predict``, the baselines of
``--compare`` and ``finetune-full`` measure a head on every split of a cache with the same metrics
(:func:`evaluate_head` for a fitted :class:`solvers.FairLogisticRegression`,
:func:`evaluate_predictor` for any scores), and tabulate them the same way (:data:`METRIC_COLUMNS`,
:func:`metric_rows`, :class:`HeadRecord` rows). The arrays are :class:`fairhead.pipeline.SplitArrays`
(read by duck typing: ``X``, ``y``, ``group_names``, ``classes``, ``n_classes``), so this module sits
below the pipeline and every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from solvers import metrics
from solvers.certificate import keeps_bound
from solvers._linalg import x_dot
from solvers.head import labels_from_scores, probabilities_from_scores
from solvers.multinomial import softmax

from fairhead import uncertainty
from fairhead.measure import constraint_value

def sensitive_arg(arrays) -> np.ndarray:
    """The ``sensitive_features`` argument: :attr:`fairhead.pipeline.SplitArrays.group_names`."""
    return arrays.group_names


# --------------------------------------------------------------------------- records of a sweep
#: per-split metric columns written for each head (metric key in solvers.metrics.evaluate -> column)
SWEEP_METRICS = (
    "accuracy", "balanced_accuracy", "roc_auc",
    "demographic_parity_difference", "demographic_parity_ratio",
    "equalized_odds_difference", "equalized_odds_ratio",
    "equal_opportunity_difference", "accuracy_equality_difference",
    "worst_group_accuracy", "worst_cell_accuracy", "expected_calibration_error",
)


#: what the gap columns of the table measure (``sweep.json`` ``columns``; the report's legend)
GAP_COLUMNS = {
    "constraint_value": "the quantity eps bounds on the fit split: {bounded}",
    "demographic_parity_difference": "fairlearn's between-groups difference max_g P(yhat=1|g) - min_g P(yhat=1|g), "
                                     "unit weights",
    "equalized_odds_difference": "fairlearn's between-groups difference, the larger of the TPR and FPR "
                                 "max_g - min_g, unit weights",
    "equal_opportunity_difference": "fairlearn's between-groups TPR difference max_g - min_g, unit weights",
    "accuracy_equality_difference": "between-groups accuracy difference max_g - min_g, unit weights",
    "worst_group_accuracy": "max-min fairness: the smallest accuracy over sensitive groups",
    "worst_cell_accuracy": "the smallest accuracy over (label, group) cells",
}


@dataclass
class HeadRecord:
    """One fitted head of a sweep: its parameters, certificate and per-split metrics."""

    method: str
    eps: float
    coef: list  # one list per class for a K-class head
    intercept: float | list
    certificate: dict
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    wall_time: float
    notes: str = ""
    alpha: float | None = None  # the penalty weight of a penalty baseline

    @property
    def keeps_bound(self) -> bool | None:
        """Whether this head keeps its own bound on the fit split: its certificate's verdict
        (:attr:`solvers.certificate.Certificate.keeps_bound`); None without a bound or a certificate (a baseline)."""
        cert = self.certificate or {}
        return keeps_bound(cert.get("constraint"), cert.get("eps"), cert.get("eps_met"), cert.get("max_violation"),
                           cert.get("tol"))

    @property
    def missed_bound(self) -> bool:
        """Whether this head misses its own bound on the fit split (per its certificate)."""
        return self.keeps_bound is False

    def rows(self, constraint_name: str) -> list[dict[str, Any]]:
        return [
            {"method": self.method, "constraint": constraint_name, "eps": self.eps,
             "alpha": float("nan") if self.alpha is None else float(self.alpha), "split": split,
             **values, "fit_time_s": self.wall_time,
             "eps_met": self.keeps_bound, "status": self.certificate.get("status"),
             "notes": self.notes}
            for split, values in self.metrics.items()
        ]


def evaluate_predictor(scores_fn, predict_fn, arrays_by_split, constraint, *,
                       balance=None, confidence=0.95) -> dict[str, dict[str, float]]:
    """Metrics of one predictor on every split, plus the constraint's bounded gap.

    ``scores_fn(arrays)`` gives decision scores; ``predict_fn(arrays)`` the hard predictions,
    or ``None`` for a linear head, whose predictions are ``scores > 0`` (one product per split);
    scores of shape (n, K) are a K-class head's (predictions: the largest score; metrics per
    class, one-vs-rest).
    ``constraint_value`` is measured under the sweep's ``balance`` weights, as the heads bound it.
    ``*_low`` / ``*_high`` are ``confidence`` intervals (:func:`fairhead.uncertainty.interval_columns`).
    """
    out = {}
    for split, arrays in arrays_by_split.items():
        sens = sensitive_arg(arrays)
        z = np.asarray(scores_fn(arrays), dtype=np.float64)
        if z.ndim == 2:  # a K-class head
            yhat = np.argmax(z, axis=1) if predict_fn is None else predict_fn(arrays)
            score = softmax(z)
        else:
            yhat = (z > 0).astype(np.int64) if predict_fn is None else predict_fn(arrays)
            # deferred: scipy (0.2 s) is loaded by a fit anyway, and `info` / `extract` import this module
            from scipy.special import expit

            score = expit(z)  # sigmoid without exp's overflow warning for a large negative logit
        m = metrics.evaluate(arrays.y, yhat, sensitive_features=sens, y_score=score, classes=arrays.classes)
        values = {k: float(m.get(k, float("nan"))) for k in SWEEP_METRICS}
        values.update(uncertainty.interval_columns(arrays.y, yhat, sens, confidence, classes=arrays.classes))
        values["constraint_value"] = constraint_value(constraint, y=arrays.y, scores=z, sensitive_features=sens,
                                                      predictions=yhat, balance=balance)
        out[split] = values
    return out


def head_scores(head, arrays) -> np.ndarray:
    """``head.decision_function(arrays.X)``, the same bits, from the split's float64 copy
    (:attr:`fairhead.pipeline.SplitArrays.scoring_X`) and without checking the features again
    (a cache's rows were checked when read): a sweep scores every split once per head."""
    coef = np.asarray(head.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] > 1:  # K classes: one score per class
        return x_dot(arrays.scoring_X, coef.T) + head.intercept_
    return x_dot(arrays.scoring_X, coef.ravel()) + head.intercept_[0]


def head_coef(head) -> list:
    """A head's coefficients for a record: one flat list (binary), one list per class (K classes)."""
    coef = np.asarray(head.coef_, dtype=np.float64)
    return coef.ravel().tolist() if coef.shape[0] == 1 else coef.tolist()


def head_intercept(head):
    """A head's intercept for a record: a float (binary) or one per class (K classes)."""
    b = np.asarray(head.intercept_, dtype=np.float64).ravel()
    return float(b[0]) if b.shape[0] == 1 else b.tolist()


# --------------------------------------------------------------------------- one head, per split
def evaluate_head(head, arrays, *, bounded: bool = False) -> dict[str, float]:
    """All scalar metrics of :func:`solvers.metrics.evaluate` for ``head`` on ``arrays``.

    ``bounded=True`` adds ``constraint_value``: the head's bounded gap on these rows, under
    its ``balance`` weights (:func:`fairhead.measure.constraint_value`).
    """
    return evaluate_head_scores(head, arrays, head.decision_function(arrays.X), bounded=bounded)


def evaluate_head_scores(head, arrays, scores: np.ndarray, *, bounded: bool = False) -> dict[str, float]:
    """:func:`evaluate_head` from the head's ``scores`` on ``arrays`` (``head.decision_function(arrays.X)``):
    its probabilities and labels follow from them, so the rows are multiplied once."""

    proba = probabilities_from_scores(scores)
    out = metrics.evaluate(
        arrays.y, labels_from_scores(scores, head.classes_), sensitive_features=sensitive_arg(arrays),
        y_score=proba if arrays.n_classes > 2 else proba[:, 1], classes=arrays.classes,
    )
    if bounded and head.constraint not in (None, "none"):
        out["constraint_value"] = constraint_value(head.constraint, y=arrays.y, scores=scores,
                                                   sensitive_features=sensitive_arg(arrays), balance=head.balance)
    return out


#: the columns of every per-split table, in order (metric key, header)
METRIC_COLUMNS = (
    ("accuracy", "acc"),
    ("balanced_accuracy", "bal_acc"),
    ("roc_auc", "auc"),
    ("demographic_parity_difference", "dp_diff"),
    ("equalized_odds_difference", "eo_diff"),
    ("equal_opportunity_difference", "eopp_diff"),
    ("accuracy_equality_difference", "acc_eq_diff"),
    ("worst_group_accuracy", "worst_group_accuracy"),
    ("worst_cell_accuracy", "worst_cell_acc"),
)


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_low"), m.get(f"{key}_high")
    return "" if lo is None else f"[{lo:.3f}, {hi:.3f}]"


def metric_rows(per_split: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per split; ``acc_ci`` / ``eo_diff_ci`` are the intervals when the metrics carry them."""
    bounded = any("constraint_value" in m for m in per_split.values())
    with_ci = any("accuracy_low" in m for m in per_split.values())
    return [{"split": split, **({"constraint_value": m.get("constraint_value", float("nan"))} if bounded else {}),
             **{h: m.get(k, float("nan")) for k, h in METRIC_COLUMNS},
             **({"acc_ci": _ci(m, "accuracy"), "eo_diff_ci": _ci(m, "equalized_odds_difference")} if with_ci else {})}
            for split, m in per_split.items()]
