"""Sweep plots (PNG, matplotlib's Agg backend, no display needed).

1. ``tradeoff.png``: accuracy against each fairness gap, on the fit split (top row)
   and on test (bottom row), one series per method, the Pareto front marked.
2. ``fit_vs_test.png``: each head's gap on test against its gap on the fit split.
   Points above the diagonal are fairness that did not generalise: overfitting to
   the constraint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (row key, axis label): the bounded gap and fairlearn's between-groups differences are different quantities
GAPS = (
    ("constraint_value", "bounded gap max|g - all| (eps)"),
    ("demographic_parity_difference", "DP diff between groups"),
    ("equalized_odds_difference", "EO diff between groups"),
)
COLORS = {"fairhead": "tab:orange", "unconstrained": "black", "expgrad": "tab:green", "gridsearch": "tab:brown",
          "threshold": "tab:red", "penalty": "tab:purple"}
MARKERS = {"fairhead": "o", "unconstrained": "*", "expgrad": "s", "gridsearch": "D",
           "threshold": "^", "penalty": "v"}


#: the smallest accuracy range an axis shows: two heads 0.002 apart (sampling noise on a few thousand test
#: rows) must not fill the whole panel and read as a trade-off
ACC_MIN_SPAN = 0.05
#: the smallest range of a gap axis (gaps start at 0)
GAP_MIN_SPAN = 0.05
#: the unit of each constraint's own bounded value (``constraint_value``)
OWN_VALUE_UNITS = {
    "dp": "selection-rate gap", "eopp": "TPR gap", "eo": "TPR/FPR gap", "error-rate": "error-rate gap",
    "dp-score": "mean-score gap, logits", "eopp-score": "mean-score gap on y=1, logits",
    "eo-score": "mean-score gap per label, logits", "cov": "cov(s, z), logits",
    "group-loss": "worst group log-loss, nats", "minimax": "worst group log-loss, nats",
}


def own_value_label(constraint: str | None) -> str:
    """Axis label of the constraint's own value, with its unit (logits for the score constraints)."""
    unit = OWN_VALUE_UNITS.get(str(constraint))
    return f"constraint's own value ({unit})" if unit else "constraint's own value"


def _span_at_least(low: float, high: float, span: float, *, floor: float | None = None) -> tuple[float, float]:
    """Widen ``[low, high]`` about its centre to at least ``span`` (not below ``floor``)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return low, high
    if high - low < span:
        centre = (low + high) / 2
        low, high = centre - span / 2, centre + span / 2
    if floor is not None and low < floor:
        low, high = floor, max(high, floor + span)
    return low, high


def pareto_front(gap: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower gap, higher accuracy), by gap."""
    ok = np.isfinite(gap) & np.isfinite(acc)
    idx = np.flatnonzero(ok)
    front = []
    for i in idx:
        dominated = np.any((gap[idx] <= gap[i]) & (acc[idx] >= acc[i]) & ((gap[idx] < gap[i]) | (acc[idx] > acc[i])))
        if not dominated:
            front.append(i)
    return np.array(sorted(front, key=lambda i: gap[i]), dtype=int)


def _series(rows, split):
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        if row["split"] == split:
            by_method.setdefault(row["method"], []).append(row)
    return by_method


def finish(fig, path: Path, staged=None) -> Path:
    """Lay out, write and close ``fig``: the PNG is written atomically (a kill mid-write leaves the
    previous plot, never a torn file); with ``staged`` (a :class:`fairhead_io.StagedFiles`) it is
    replaced together with the other outputs."""
    import matplotlib.pyplot as plt

    from fairhead_io import atomic_open

    fig.tight_layout()
    with (staged.open(path, "wb") if staged is not None else atomic_open(path, "wb")) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def _method_base(method: str) -> str:
    return method.split("[")[0]


def _head_key(row) -> tuple:
    """One head's rows on every split share this key (NaN eps or alpha of baselines made comparable)."""
    def num(v):
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)

    return row["method"], num(row.get("eps")), num(row.get("alpha"))


def plot_sweep(rows, out: Path, *, fit_split: str, title: str = "", constraint: str | None = None,
               staged=None) -> dict[str, Path]:
    """Write the sweep's plots; every panel has a legend, accuracy axes span at least
    :data:`ACC_MIN_SPAN`, gap axes start at 0, and the constraint's own value carries its unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    gaps = [(key, own_value_label(constraint) if key == "constraint_value" else label) for key, label in GAPS]
    splits = [fit_split] + (["test"] if any(r["split"] == "test" for r in rows) and fit_split != "test" else [])
    files = {}

    fig, axes = plt.subplots(len(splits), len(GAPS), figsize=(4.2 * len(GAPS), 3.6 * len(splits)), squeeze=False)
    for r, split in enumerate(splits):
        series = _series(rows, split)
        all_rows = [row for group in series.values() for row in group]
        for c, (key, label) in enumerate(gaps):
            ax = axes[r, c]
            for method, group in series.items():
                gap = np.array([g.get(key, np.nan) for g in group], dtype=float)
                acc = np.array([g["accuracy"] for g in group], dtype=float)
                marker = MARKERS.get(_method_base(method), "x")
                # only fairhead's heads form a path (ordered by eps); baselines are separate points
                ax.plot(gap, acc, marker=marker, linestyle="-" if method == "fairhead" else "none",
                        color=COLORS.get(_method_base(method)),
                        markersize=9 if marker == "*" else 5, alpha=0.8, label=method)
                if all(f"{key}_low" in g for g in group):  # the rows' confidence intervals as error bars
                    xerr = np.abs(np.array([[g[key] - g[f"{key}_low"], g[f"{key}_high"] - g[key]] for g in group]).T)
                    yerr = np.abs(np.array([[g["accuracy"] - g["accuracy_low"], g["accuracy_high"] - g["accuracy"]]
                                            for g in group]).T)
                    ax.errorbar(gap, acc, xerr=xerr, yerr=yerr, fmt="none", ecolor=COLORS.get(_method_base(method)),
                                elinewidth=0.6, alpha=0.4)
                missed = np.array([g.get("eps_met") is False for g in group])
                if missed.any():  # heads that miss their own bound on the fit split
                    ax.scatter(gap[missed], acc[missed], marker="x", s=60, color="red",
                               label="misses its bound" if (r, c) == (0, 0) else None)
            gap = np.array([g.get(key, np.nan) for g in all_rows], dtype=float)
            acc = np.array([g["accuracy"] for g in all_rows], dtype=float)
            front = pareto_front(gap, acc)
            if front.size:
                ax.step(gap[front], acc[front], where="post", color="k", linewidth=1, alpha=0.6)
                ax.scatter(gap[front], acc[front], s=70, facecolors="none", edgecolors="k", label="Pareto front")
            ax.set_xlabel(f"{label} ({split})", fontsize=8)
            ax.set_ylabel(f"accuracy ({split})")
            if np.isfinite(acc).any():
                ax.set_ylim(*_span_at_least(np.nanmin(acc), np.nanmax(acc), ACC_MIN_SPAN, floor=None))
            if np.isfinite(gap).any():
                ax.set_xlim(*_span_at_least(0.0, np.nanmax(gap) * 1.05, GAP_MIN_SPAN, floor=0.0))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"Accuracy vs fairness gap {title}".strip())
    files["tradeoff_plot"] = finish(fig, out / "tradeoff.png", staged)

    if len(splits) == 2:
        fit_rows = {_head_key(r): r for r in rows if r["split"] == fit_split}
        pairs = [(fit_rows[_head_key(r)], r) for r in rows if r["split"] == "test" and _head_key(r) in fit_rows]
        fig, axes = plt.subplots(1, len(gaps), figsize=(4.2 * len(gaps), 3.8), squeeze=False)
        for c, (key, label) in enumerate(gaps):
            ax = axes[0, c]
            methods = sorted({p[0]["method"] for p in pairs})
            for method in methods:
                sel = [p for p in pairs if p[0]["method"] == method]
                x = np.array([p[0].get(key, np.nan) for p in sel], dtype=float)
                y = np.array([p[1].get(key, np.nan) for p in sel], dtype=float)
                if method == "fairhead":
                    eps = np.array([p[0]["eps"] for p in sel], dtype=float)
                    sc = ax.scatter(x, y, c=eps, cmap="viridis", s=28, label=method, zorder=3)
                    fig.colorbar(sc, ax=ax, label="eps")
                else:
                    ax.scatter(x, y, marker=MARKERS.get(_method_base(method), "x"), s=30, alpha=0.8, label=method,
                               color=COLORS.get(_method_base(method)))
            lim = np.nanmax([[p[0].get(key, np.nan), p[1].get(key, np.nan)] for p in pairs] + [[1e-3, 1e-3]])
            lim = max(float(lim) * 1.05, GAP_MIN_SPAN)
            ax.plot([0, lim], [0, lim], "k--", linewidth=1, label="test = fit")
            ax.set_xlim(0, lim)  # the same range on both axes, so the diagonal is the diagonal
            ax.set_ylim(0, lim)
            ax.set_xlabel(f"{label} on {fit_split}", fontsize=8)
            ax.set_ylabel(f"{label} on test", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best")
        fig.suptitle(f"Does the fairness on the fit split hold on test? {title}".strip())
        files["fit_vs_test_plot"] = finish(fig, out / "fit_vs_test.png", staged)
    return files
