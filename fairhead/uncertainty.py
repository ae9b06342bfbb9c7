"""Intervals on every number fairhead reports, and the overfitting report.

Columns (added to each row of ``sweep`` and each split of ``fit`` / ``protocols``), at the
run's ``confidence`` (default 0.95):

* ``accuracy_low`` / ``accuracy_high``: exact Clopper-Pearson on the correct predictions;
* ``<gap>_low`` / ``<gap>_high`` for the DP, EO, equal-opportunity and accuracy-equality
  differences: the Clopper-Pearson union bound over groups and events
  (:func:`solvers.intervals.gap_interval_from_counts`);
* ``worst_group_accuracy_low`` / ``_high``: the union bound over groups.

The overfitting section compares a head's gap on the fit split, on the certification split
(the held-out split that is neither fit nor test, with its upper bound) and on test: the seed
paper's point (fairness fitted on one split does not hold on another), measured on the user's
own data. ``sweep`` shows one line per eps; ``protocols`` one per protocol (each with its own
held-out split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from solvers import intervals
from solvers.metrics import multiclass_labels
from solvers.problem import encode_groups

from fairhead.measure import BETWEEN_GROUPS
from fairhead.plots import axis_name, finish, layout, legend_below, pad_limits, place_labels
from fairhead.tables import markdown_table

#: report metric -> gap name in :mod:`solvers.intervals`
GAP_OF_METRIC = {"demographic_parity_difference": "dp", "equalized_odds_difference": "eo",
                 "equal_opportunity_difference": "eopp", "accuracy_equality_difference": "ae"}
INTERVAL_LEGEND = ("`*_low`/`*_high`: {conf:g} intervals; accuracy: exact Clopper-Pearson; gaps and worst-group "
                   "accuracy: Clopper-Pearson per group rate with a union (Bonferroni) bound over groups and events")


def interval_columns(y, y_pred, sensitive_features, confidence: float = 0.95, classes=None) -> dict[str, float]:
    """``{metric_low, metric_high}`` for accuracy, the four gaps and the worst-group accuracy.

    K classes (``classes`` with more than two): a gap is the largest over classes of its one-vs-rest
    value, so its interval is ``[max_k low_k, max_k high_k]`` with each class's interval at level
    ``1 - alpha / K`` (a union bound over classes, on top of the one over groups and events).
    """
    labels = multiclass_labels(y, y_pred, classes)
    if labels is not None:
        return _class_interval_columns(y, y_pred, sensitive_features, confidence, labels)
    counts = intervals.GroupCounts.from_predictions(y, y_pred, sensitive_features=sensitive_features)
    correct = sum(rates["accuracy"][0] for rates in counts.counts.values())
    lo, hi = intervals.clopper_pearson(correct, counts.n_rows(), confidence)
    out = {"accuracy_low": lo, "accuracy_high": hi}
    for metric, gap in GAP_OF_METRIC.items():
        gi = intervals.gap_interval_from_counts(counts, gap, confidence)
        out[f"{metric}_low"], out[f"{metric}_high"] = gi.low, gi.high
    wg = intervals.worst_group_accuracy_interval(counts, confidence)
    out["worst_group_accuracy_low"], out["worst_group_accuracy_high"] = wg.low, wg.high
    return out


def _class_interval_columns(y, y_pred, sensitive_features, confidence, labels) -> dict[str, float]:
    y, y_pred = np.asarray(y).reshape(-1), np.asarray(y_pred).reshape(-1)
    hit = y == y_pred
    lo, hi = intervals.clopper_pearson(int(hit.sum()), int(hit.shape[0]), confidence)
    out = {"accuracy_low": lo, "accuracy_high": hi}
    per_class = 1.0 - (1.0 - confidence) / len(labels)
    by_class = [intervals.GroupCounts.from_predictions((y == k).astype(int), (y_pred == k).astype(int),
                                                       sensitive_features=sensitive_features) for k in labels]
    for metric, gap in GAP_OF_METRIC.items():
        if gap == "ae":  # accuracy is not per class: the K-class hits, per group
            continue
        gis = [intervals.gap_interval_from_counts(c, gap, per_class) for c in by_class]
        out[f"{metric}_low"], out[f"{metric}_high"] = max(g.low for g in gis), max(g.high for g in gis)
    codes, groups, _ = encode_groups(sensitive_features, y.shape[0])
    acc = intervals.GroupCounts(groups=tuple(groups), counts={
        g: {"accuracy": (int(hit[codes == j].sum()), int((codes == j).sum()))} for j, g in enumerate(groups)})
    gi = intervals.gap_interval_from_counts(acc, "ae", confidence)
    out["accuracy_equality_difference_low"], out["accuracy_equality_difference_high"] = gi.low, gi.high
    wg = intervals.worst_group_accuracy_interval(acc, confidence)
    out["worst_group_accuracy_low"], out["worst_group_accuracy_high"] = wg.low, wg.high
    return out


def group_rate_rows(y, y_pred, group_names, confidence: float = 0.95, **labels) -> list[dict]:
    """One row per (group, rate): selection rate, TPR, FPR with exact intervals, plus ``labels``."""
    table = intervals.group_rate_intervals(y, y_pred, sensitive_features=group_names, confidence=confidence)
    return [{**labels, "group": str(g), "rate": rate, "estimate": iv.estimate, "low": iv.low,
             "high": iv.high}
            for g, rates in table.items() for rate, iv in rates.items() if rate != "accuracy"]


def certification_split(splits, fit_split: str) -> str | None:
    """The held-out split for the overfitting report: ``valid`` if present, else the first non-fit, non-test."""
    others = [s for s in splits if s not in (fit_split, "test")]
    return "valid" if "valid" in others else (others[0] if others else None)


def overfitting_metric(constraint: str | None, available=GAP_OF_METRIC) -> str:
    """The between-groups gap the overfitting report follows: the constraint's own family when the
    rows carry it with intervals (a key of ``available``), else the equalized-odds difference."""
    metric = BETWEEN_GROUPS.get(constraint, "equalized_odds_difference")
    return metric if metric in available else "equalized_odds_difference"


def overfitting_row(fit, cert, test, *, metric: str) -> dict[str, float]:
    """One head's ``metric`` on its fit split, on its certification split (estimate, lower bound,
    upper bound) and on test (estimate and interval), read from its rows there (``{}`` or ``None``
    where a split is missing: NaN)."""
    fit, cert, test = fit or {}, cert or {}, test or {}
    nan = float("nan")
    return {"fit_gap": fit.get(metric, nan), "cert_gap": cert.get(metric, nan),
            "cert_low": cert.get(f"{metric}_low", nan), "cert_bound": cert.get(f"{metric}_high", nan),
            "test_gap": test.get(metric, nan), "test_low": test.get(f"{metric}_low", nan),
            "test_high": test.get(f"{metric}_high", nan)}


def overfitting_rows(rows, *, fit_split: str, cert_split: str | None, metric: str) -> list[dict]:
    """Per fairhead eps: the gap on the fit split, on the certification split (with bounds) and on test."""
    by_key = {}
    for r in rows:
        if r["method"] in ("fairhead", "unconstrained"):
            by_key.setdefault((r["method"], r["eps"]), {})[r["split"]] = r
    return [{"method": method, "eps": eps,
             **overfitting_row(splits.get(fit_split), splits.get(cert_split), splits.get("test"), metric=metric)}
            for (method, eps), splits in by_key.items()]


def wide_group_notes(group_rows, rows) -> list[str]:
    """Group rates whose interval is wider than the largest gap measured on that split (any head)."""
    largest = {}
    for r in rows:
        for metric in GAP_OF_METRIC:
            v = r.get(metric)
            if v is not None and np.isfinite(v):
                largest[r["split"]] = max(largest.get(r["split"], 0.0), float(v))
    seen, notes = set(), []
    for g in group_rows:
        width = g["high"] - g["low"]
        key = (g["split"], g["group"], g["rate"])
        if key not in seen and width > largest.get(g["split"], np.inf):
            seen.add(key)
            notes.append(f"WIDE on '{g['split']}': group {g['group']!r} {g['rate']} interval width {width:.3f} is "
                         f"wider than the largest gap on that split ({largest[g['split']]:.3f}); its gaps cannot "
                         "be resolved there")
    return notes


def plot_overfitting(over_rows, out: Path, *, fit_split: str, cert_split: str, metric: str, staged=None,
                     labels=None) -> Path:
    """Fit-split gap against the certified upper bound (and the test gap), one point per head.

    ``labels`` (one per row, e.g. the protocol names; default: each row's eps, or
    ``unconstrained``) are written beside each head's bound, or beside its test gap where it has no
    bound; heads at the same place share one label (``B3, M2``). Axis names are words
    (:func:`fairhead.plots.axis_name`), the legend sits below the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit = np.array([r["fit_gap"] for r in over_rows], dtype=float)
    bound = np.array([r["cert_bound"] if r["cert_bound"] is not None else np.nan for r in over_rows], dtype=float)
    test = np.array([r["test_gap"] if r["test_gap"] is not None else np.nan for r in over_rows], dtype=float)
    if labels is None:
        labels = ["unconstrained" if r.get("method") == "unconstrained" else f"eps={r['eps']:.3g}"
                  if r.get("eps") is not None and np.isfinite(r["eps"]) else str(r.get("method", "")) for r in over_rows]
    name = axis_name(metric)
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    ax.scatter(fit, bound, color="tab:red", label=f"upper bound on '{cert_split}'", zorder=3)
    if np.isfinite(test).any():
        ax.scatter(fit, test, color="tab:blue", marker="s", label="gap on 'test'", zorder=3)
    handles = list(zip(*ax.get_legend_handles_labels()))
    handles.append((matplotlib.lines.Line2D([], [], color="k", linewidth=0.8), "y = x (no overfitting)"))
    bottom = legend_below(fig, handles)
    fig.suptitle(f"Does the gap fitted on '{fit_split}' hold elsewhere?", fontsize=10)
    ax.set_xlabel(f"{name} on '{fit_split}' (where fitted)", fontsize=8)
    ax.set_ylabel(f"{name} elsewhere", fontsize=8)
    ax.grid(alpha=0.3)
    layout(fig, bottom=bottom)
    xs = np.concatenate([fit, fit, [0.0]])
    ys = np.concatenate([bound, test, [0.0]])
    pad_limits(ax, xs, ys, x_span=0.05, same=True)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], color="k", linewidth=0.8, alpha=0.6, zorder=1)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    points = [(x, b if np.isfinite(b) else t) for x, b, t in zip(fit, bound, test)]
    place_labels(ax, points, [str(label) for label in labels])
    return finish(fig, Path(out) / "overfitting.png", staged)


def plot_group_rates(group_rows, out: Path, *, split: str, staged=None) -> Path:
    """Selection rate, TPR and FPR per group with their intervals, one row of points per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [g for g in group_rows if g["split"] == split]
    rates = ("selection_rate", "true_positive_rate", "false_positive_rate")
    heads = list(dict.fromkeys(g["head"] for g in rows))
    groups = list(dict.fromkeys(g["group"] for g in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.35 * len(heads) + 2), squeeze=False, sharey=True)
    for c, rate in enumerate(rates):
        ax = axes[0, c]
        for j, grp in enumerate(groups):
            pts = [g for g in rows if g["rate"] == rate and g["group"] == grp]
            y = np.array([heads.index(g["head"]) for g in pts]) + (j - (len(groups) - 1) / 2) * 0.18
            est = np.array([g["estimate"] for g in pts], dtype=float)
            err = np.array([[g["estimate"] - g["low"], g["high"] - g["estimate"]] for g in pts], dtype=float).T
            ax.errorbar(est, y, xerr=np.abs(err), fmt="o", markersize=3, capsize=2, label=f"group {grp}")
        ax.set_title(f"{rate} ({split})", fontsize=9)
        ax.set_yticks(range(len(heads)))
        ax.set_yticklabels(heads, fontsize=7)
        ax.grid(alpha=0.3)

    layout(fig, bottom=legend_below(fig, list(zip(*axes[0, 0].get_legend_handles_labels()))), top=0.98)
    return finish(fig, Path(out) / "group_rates.png", staged)


SELECT_HINT = "`fairhead select` certifies a head on that split."


def overfitting_section(over_rows, *, fit_split: str, cert_split: str | None, metric: str,
                        confidence: float, id_columns=(("method", "method"), ("eps", "eps")),
                        hint: str = SELECT_HINT) -> list[str]:
    """The Markdown lines of the overfitting section: one table line per row of :func:`overfitting_row`
    values, named by ``id_columns`` (``(key, header)``), and what the bounds are; ``hint`` ends the text."""
    if not over_rows:
        return []
    cols = [*id_columns, ("fit_gap", f"{metric} on {fit_split}"),
            ("cert_gap", f"on {cert_split}"), ("cert_bound", f"upper bound ({confidence:g}) on {cert_split}"),
            ("test_gap", "on test"), ("test_low", "test low"), ("test_high", "test high")]
    return ["## Overfitting: the gap on the fit split, on a held-out split (with its bound) and on test", "",
            f"Bounds: Clopper-Pearson per group rate, union bound over groups and events, level {confidence:g}. "
            f"A fit-split gap far below the bound on `{cert_split}` is fairness that may not hold on new data"
            + (f"; {hint}" if hint else "."), "",
            markdown_table(over_rows, cols), ""]
