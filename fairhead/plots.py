"""Sweep plots (PNG, matplotlib's Agg backend, no display needed).

1. ``tradeoff.png``: accuracy against each fairness gap, on the fit split and on test,
   one series per method, the Pareto front marked. When some heads are worse than the
   unconstrained head on both axes (the seed's penalties on real data), they would squash
   the others into a corner: a zoomed row per split then shows only the heads the
   unconstrained head does not beat (:func:`heads_that_matter`).
2. ``fit_vs_test.png``: each head's gap on test against its gap on the fit split.
   Points above the diagonal are fairness that did not generalise: overfitting to
   the constraint.

Every plot is readable on real data: axis limits come from the points plotted, padded so that
no marker is cut by the frame (:func:`pad_limits`); one legend per figure, below the panels,
never over the data; points labelled (eps, the unconstrained head, protocol names) where a
label fits without covering another (:func:`place_labels`), points at the same place sharing
one label.

Each plot is drawn once (what a sweep waits for): a figure is made at the PNG's :data:`DPI` on its
own Agg canvas (:func:`new_figure`, no pyplot), laid out once with no layout engine left on it
(:func:`layout`: ``savefig`` then renders it in one draw), and each label's text is measured once
whatever the number of places tried. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from solvers.constraints import CONSTRAINTS

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
OWN_VALUE_UNITS = {name: c.label for name, c in CONSTRAINTS.items()}


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


#: the PNGs' resolution (dots per inch): figures are laid out, labelled and saved at it, so every text is measured
#: once and the label boxes checked are the boxes saved
DPI = 110
#: pixels between the outermost marker centre and the frame: the largest marker's radius plus a margin
MARKER_PAD_PX = 14
#: label offsets tried in turn (points from the marker), the first free one is used
LABEL_OFFSETS = ((6, 5), (6, -12), (-6, 5), (-6, -12), (0, 11), (0, -16), (10, -3), (-10, -3), (-8, -22), (-8, 16))
#: a zoomed row is drawn when the heads that matter span less than this share of the full range
ZOOM_SHARE = 0.5
#: readable axis names of the report's metric keys (never snake_case on an axis)
AXIS_NAMES = {
    "eo_diff": "EO difference between groups", "dp_diff": "DP difference between groups",
    "eopp_diff": "equal-opportunity difference between groups", "acc_eq_diff": "accuracy difference between groups",
    "equalized_odds_difference": "EO difference between groups",
    "demographic_parity_difference": "DP difference between groups",
    "equal_opportunity_difference": "equal-opportunity difference between groups",
    "accuracy_equality_difference": "accuracy difference between groups",
}


def axis_name(metric: str) -> str:
    """The words for ``metric`` on an axis (``eo_diff`` -> ``EO difference between groups``)."""
    return AXIS_NAMES.get(metric, metric.replace("_", " "))


def pad_limits(ax, xs, ys, *, pad_px: float = MARKER_PAD_PX, x_span: float = 0.0, y_span: float = 0.0,
               same: bool = False, x_from: float | None = None) -> None:
    """Set ``ax``'s limits so every point of ``xs, ys`` lies at least ``pad_px`` pixels inside the
    frame (the figure must be laid out already: the pixel size of the axes is read). Each range is
    first widened about its centre to ``x_span`` / ``y_span``; ``same`` gives both axes one range
    (a diagonal stays the diagonal); ``x_from`` is kept in the x range (0 on a gap axis)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return
    low = float(xs[ok].min()) if x_from is None else min(float(xs[ok].min()), x_from)
    x0, x1 = _span_at_least(low, float(xs[ok].max()), max(x_span, 1e-6), floor=x_from)
    y0, y1 = _span_at_least(float(ys[ok].min()), float(ys[ok].max()), max(y_span, 1e-6))
    if same:
        x0 = y0 = min(x0, y0)
        x1 = y1 = max(x1, y1)
    width, height = ax.bbox.width, ax.bbox.height

    def padded(low, high, pixels):
        pixels = max(pixels, 4 * pad_px)
        step = (high - low) / (pixels - 2 * pad_px)  # data units per pixel once padded
        return low - pad_px * step, high + pad_px * step

    if same:
        x0, x1 = padded(x0, x1, min(width, height))
        y0, y1 = x0, x1
    else:
        (x0, x1), (y0, y1) = padded(x0, x1, width), padded(y0, y1, height)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _pixel_groups(ax, points, texts, *, within_px: float = 3.0):
    """``(point, "text, text")`` with the texts of points drawn at the same place merged."""
    merged: list[tuple[tuple[float, float], list[str], np.ndarray]] = []
    for (x, y), text in zip(points, texts):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        at = ax.transData.transform((x, y))
        for _, names, where in merged:
            if np.hypot(*(where - at)) <= within_px:
                if text not in names:
                    names.append(text)
                break
        else:
            merged.append(((x, y), [text], at))
    return [(point, ", ".join(names)) for point, names, _ in merged]


def marker_boxes(ax) -> list:
    """Pixel boxes of every marker drawn in ``ax`` (lines with markers and scatters)."""
    from matplotlib.collections import PathCollection
    from matplotlib.transforms import Bbox

    centres = []
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " ") or not line.get_visible():
            continue
        xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
        radius = line.get_markersize() / 2 * ax.figure.dpi / 72
        centres += [(p, radius) for p in ax.transData.transform(xy[np.isfinite(xy).all(axis=1)])]
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            xy = np.asarray(coll.get_offsets(), dtype=float)
            sizes = coll.get_sizes() if len(coll.get_sizes()) else [36.0]
            for k, p in enumerate(ax.transData.transform(xy[np.isfinite(xy).all(axis=1)])):
                centres.append((p, np.sqrt(sizes[k % len(sizes)]) / 2 * ax.figure.dpi / 72))
    return [Bbox.from_extents(x - r, y - r, x + r, y + r) for (x, y), r in centres]


def _overlaps_any(box, obstacles: np.ndarray) -> bool:
    """:meth:`Bbox.overlaps` of ``box`` against every row ``(x0, y0, x1, y1)`` of ``obstacles`` at once
    (touching edges overlap, as there)."""
    if not len(obstacles):
        return False
    free = ((obstacles[:, 2] < box.x0) | (obstacles[:, 0] > box.x1)
            | (obstacles[:, 3] < box.y0) | (obstacles[:, 1] > box.y1))
    return not bool(free.all())


def _fits(box, frame, obstacles: np.ndarray) -> bool:
    inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
    return inside and not _overlaps_any(box, obstacles)


def place_labels(ax, points, texts, *, fontsize: float = 7, taken=None, avoid_markers: bool = True) -> list:
    """Write each text beside its point where it stays inside the axes and covers no label already
    placed (``taken``: their pixel boxes, shared across panels; extended here) nor, with
    ``avoid_markers``, any marker; points drawn at the same place share one label (``"B3, M2"``).
    A label with no free place is left out, never printed over another. The figure must be laid
    out and the limits set first.

    Each label's text is measured once: its box at an offset ``(dx, dy)`` (points) is the box at
    offset 0 translated by ``(dx, dy) * dpi / 72`` (left-aligned for ``dx >= 0``, right-aligned, one
    width further left, otherwise), so the :data:`LABEL_OFFSETS` are tried with no renderer call; the
    offset chosen is then checked once more on the label as drawn."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [] if taken is None else taken
    obstacles = np.array([b.extents for b in [*taken, *(marker_boxes(ax) if avoid_markers else [])]],
                         dtype=float).reshape(-1, 4)
    px_per_pt = ax.figure.dpi / 72
    placed = []
    for point, text in _pixel_groups(ax, points, texts):
        label = ax.annotate(text, point, xytext=(0, 0), textcoords="offset points", fontsize=fontsize,
                            ha="left", va="center", annotation_clip=True)
        base = label.get_window_extent(renderer)
        for dx, dy in LABEL_OFFSETS:
            box = base.translated(dx * px_per_pt - (base.width if dx < 0 else 0.0), dy * px_per_pt)
            if not _fits(box, frame, obstacles):
                continue
            label.set_horizontalalignment("left" if dx >= 0 else "right")
            label.xyann = (dx, dy)
            box = label.get_window_extent(renderer)  # the label as drawn (the same box up to rounding)
            if _fits(box, frame, obstacles):
                taken.append(box)
                obstacles = np.vstack([obstacles, box.extents])
                placed.append(label)
                break
        else:
            label.remove()
    return placed


def legend_below(fig, handles_labels, *, title: str | None = None, fontsize: float = 7) -> float:
    """One legend for the figure, centred below the panels (never over the data); returns the
    share of the figure's height it takes, the ``bottom`` of :func:`layout`."""
    seen = {}
    for handle, label in handles_labels:
        if label and not label.startswith("_") and label not in seen:
            seen[label] = handle
    if not seen:
        return 0.0
    ncol = min(len(seen), 6)
    legend = fig.legend(list(seen.values()), list(seen), loc="lower center", bbox_to_anchor=(0.5, 0.005),
                        ncol=ncol, fontsize=fontsize, frameon=False, title=title)
    height = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.bbox.height
    return float(height) + 0.015


def layout(fig, *, bottom: float = 0.0, top: float = 0.93) -> None:
    """``tight_layout`` inside ``[bottom, top]`` of the figure (room for the legend and the title), at
    the PNG's :data:`DPI`; :func:`finish` then keeps this layout, so labels placed after it stay where
    they were checked. The figure is left with no layout engine: saving it then draws it once, where
    a figure that keeps one (as :meth:`Figure.tight_layout` leaves it) is drawn twice."""
    from matplotlib.layout_engine import TightLayoutEngine

    if fig.dpi != DPI:  # text measured now is the text saved
        fig.set_dpi(DPI)
    TightLayoutEngine(rect=(0, bottom, 1, top)).execute(fig)
    fig._fairhead_laid_out = True


def new_figure(nrows: int, ncols: int, *, figsize: tuple[float, float], **subplot_kw):
    """A figure at :data:`DPI` on its own Agg canvas and its ``(nrows, ncols)`` axes: no pyplot, so
    no global backend switch and no figure left open if drawing fails."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)


def heads_that_matter(gap: np.ndarray, acc: np.ndarray, methods: list[str]) -> np.ndarray:
    """The points the unconstrained head does not beat on both axes (lower gap and higher accuracy),
    plus every fairhead head and the unconstrained head itself: the zoom of a trade-off panel.
    Without an unconstrained head every point matters."""
    keep = np.array([_method_base(m) in ("fairhead", "unconstrained") for m in methods], dtype=bool)
    free = [i for i, m in enumerate(methods) if m == "unconstrained" and np.isfinite(gap[i]) and np.isfinite(acc[i])]
    if not free:
        return np.isfinite(gap) & np.isfinite(acc)
    g0, a0 = gap[free[0]], acc[free[0]]
    beaten = (gap >= g0) & (acc <= a0) & ((gap > g0) | (acc < a0))
    return (keep | ~beaten) & np.isfinite(gap) & np.isfinite(acc)


def _needs_zoom(gap, acc, matter) -> bool:
    ok = np.isfinite(gap) & np.isfinite(acc)
    if matter.sum() < 2 or matter.sum() == ok.sum():
        return False
    share = [(v[matter].max() - v[matter].min()) / max(v[ok].max() - v[ok].min(), 1e-12) for v in (gap, acc)]
    return min(share) < ZOOM_SHARE


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
    from fairhead_io import atomic_open

    if not getattr(fig, "_fairhead_laid_out", False):  # layout() ran already: labels were placed after it
        layout(fig, top=1.0)
    try:
        with (staged.open(path, "wb") if staged is not None else atomic_open(path, "wb")) as fh:
            # zlib level 1: 30% less time per plot than the default 6 (the sweep writes four), files about as small
            fig.savefig(fh, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    finally:
        if fig.canvas.manager is not None:  # a pyplot figure: pyplot holds it until closed, a failed write too
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path


def _method_base(method: str) -> str:
    return method.split("[")[0]


def _head_key(row) -> tuple:
    """One head's rows on every split share this key (NaN eps or alpha of baselines made comparable)."""
    def num(v):
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)

    return row["method"], num(row.get("eps")), num(row.get("alpha"))


def _eps_text(row) -> str:
    if row["method"] == "unconstrained":
        return "unconstrained"
    return f"eps={row['eps']:.3g}"


def _draw_tradeoff(ax, series, key, *, only=None):
    """The methods' points (``only``: the (method, index) pairs to draw), their intervals, the heads
    that miss their bound and the Pareto front; returns the plotted ``(gap, acc, method, row)``."""
    drawn = []
    for method, group in series.items():
        pick = [i for i in range(len(group)) if only is None or (method, i) in only]
        if not pick:
            continue
        rows = [group[i] for i in pick]
        gap = np.array([g.get(key, np.nan) for g in rows], dtype=float)
        acc = np.array([g["accuracy"] for g in rows], dtype=float)
        base = _method_base(method)
        marker = MARKERS.get(base, "x")
        star = marker == "*"
        # only fairhead's heads form a path (ordered by eps); baselines are separate points; the
        # unconstrained star is drawn last and larger, so no head hides it
        ax.plot(gap, acc, marker=marker, linestyle="-" if method == "fairhead" else "none", color=COLORS.get(base),
                markersize=12 if star else 5, alpha=1.0 if star else 0.8, label=method, zorder=6 if star else 3,
                markeredgecolor="white" if star else None)
        if all(f"{key}_low" in g for g in rows):  # the rows' confidence intervals as error bars
            xerr = np.abs(np.array([[g[key] - g[f"{key}_low"], g[f"{key}_high"] - g[key]] for g in rows]).T)
            yerr = np.abs(np.array([[g["accuracy"] - g["accuracy_low"], g["accuracy_high"] - g["accuracy"]]
                                    for g in rows]).T)
            ax.errorbar(gap, acc, xerr=xerr, yerr=yerr, fmt="none", ecolor=COLORS.get(base), elinewidth=0.6, alpha=0.3)
        missed = np.array([g.get("eps_met") is False for g in rows])
        if missed.any():  # heads that miss their own bound on the fit split
            ax.scatter(gap[missed], acc[missed], marker="x", s=60, color="red", label="misses its bound", zorder=5)
        drawn += [(gp, ac, method, row) for gp, ac, row in zip(gap, acc, rows)]
    gap = np.array([d[0] for d in drawn], dtype=float)
    acc = np.array([d[1] for d in drawn], dtype=float)
    front = pareto_front(gap, acc)
    if front.size:
        ax.step(gap[front], acc[front], where="post", color="k", linewidth=1, alpha=0.6)
        ax.scatter(gap[front], acc[front], s=70, facecolors="none", edgecolors="k", label="Pareto front", zorder=4)
    ax.grid(alpha=0.3)
    return drawn


def _label_heads(ax, drawn, taken) -> None:
    """eps beside fairhead's heads and a name beside the unconstrained one (where labels fit)."""
    ordered = sorted((d for d in drawn if d[2] in ("fairhead", "unconstrained")),
                     key=lambda d: d[2] != "unconstrained")
    place_labels(ax, [(d[0], d[1]) for d in ordered], [_eps_text(d[3]) for d in ordered], taken=taken, fontsize=6.5)


def _gap_axes(constraint):
    """``(row key, axis label)`` of each gap column, the constraint's own value with its unit."""
    return [(key, own_value_label(constraint) if key == "constraint_value" else label) for key, label in GAPS]


def _plotted_splits(rows, fit_split: str) -> list[str]:
    return [fit_split] + (["test"] if any(r["split"] == "test" for r in rows) and fit_split != "test" else [])


def sweep_figures(rows, fit_split: str) -> tuple[str, ...]:
    """The names of the figures :func:`plot_sweep` draws for ``rows`` (``plot_<name>`` draws each)."""
    return ("tradeoff", "fit_vs_test") if len(_plotted_splits(rows, fit_split)) == 2 else ("tradeoff",)


def plot_sweep(rows, out: Path, *, fit_split: str, title: str = "", constraint: str | None = None,
               staged=None) -> dict[str, Path]:
    """Write the sweep's plots (:func:`plot_tradeoff`, and :func:`plot_fit_vs_test` where there is a
    test split); return their paths by output name."""
    kw = dict(fit_split=fit_split, title=title, constraint=constraint, staged=staged)
    files = {"tradeoff_plot": plot_tradeoff(rows, out, **kw)}
    if "fit_vs_test" in sweep_figures(rows, fit_split):
        files["fit_vs_test_plot"] = plot_fit_vs_test(rows, out, **kw)
    return files


def plot_tradeoff(rows, out: Path, *, fit_split: str, title: str = "", constraint: str | None = None,
                  staged=None) -> Path:
    """``tradeoff.png``: limits from the points plotted (padded so no marker is cut, accuracy
    spanning at least :data:`ACC_MIN_SPAN`, gaps :data:`GAP_MIN_SPAN`), a zoomed row where some heads
    are worse than the unconstrained one on both axes, one legend below the panels, labelled points,
    and the constraint's own value with its unit."""
    out = Path(out)
    gaps = _gap_axes(constraint)
    splits = _plotted_splits(rows, fit_split)

    panels = []  # (split, zoomed?)
    for split in splits:
        panels.append((split, False))
        series = _series(rows, split)
        flat = [(m, i, g) for m, group in series.items() for i, g in enumerate(group)]
        for key, _ in GAPS:
            gap = np.array([g.get(key, np.nan) for _, _, g in flat], dtype=float)
            acc = np.array([g["accuracy"] for _, _, g in flat], dtype=float)
            if _needs_zoom(gap, acc, heads_that_matter(gap, acc, [m for m, _, _ in flat])):
                panels.append((split, True))
                break
    fig, axes = new_figure(len(panels), len(GAPS), figsize=(4.4 * len(GAPS), 3.7 * len(panels)))
    placed = []  # per panel: (ax, drawn points, gap key)
    for r, (split, zoomed) in enumerate(panels):
        series = _series(rows, split)
        flat = [(m, i, g) for m, group in series.items() for i, g in enumerate(group)]
        for c, (key, label) in enumerate(gaps):
            ax = axes[r, c]
            only = None
            if zoomed:
                gap = np.array([g.get(key, np.nan) for _, _, g in flat], dtype=float)
                acc = np.array([g["accuracy"] for _, _, g in flat], dtype=float)
                matter = heads_that_matter(gap, acc, [m for m, _, _ in flat])
                only = {(m, i) for (m, i, _), keep in zip(flat, matter) if keep}
                ax.set_title("zoom: the heads the unconstrained one does not beat on both axes", fontsize=7)
            drawn = _draw_tradeoff(ax, series, key, only=only)
            ax.set_xlabel(f"{label} ({split})", fontsize=8)
            ax.set_ylabel(f"accuracy ({split})")
            placed.append((ax, drawn, key))
    handles = [hl for ax in axes.flat for hl in zip(*ax.get_legend_handles_labels())]
    bottom = legend_below(fig, handles)
    fig.suptitle(f"Accuracy vs fairness gap {title}".strip())
    layout(fig, bottom=bottom, top=0.95 if len(panels) > 2 else 0.93)
    taken = []
    for ax, drawn, key in placed:
        gap = np.array([d[0] for d in drawn], dtype=float)
        acc = np.array([d[1] for d in drawn], dtype=float)
        pad_limits(ax, gap, acc, x_span=GAP_MIN_SPAN, y_span=ACC_MIN_SPAN, x_from=0.0)
    for ax, drawn, key in placed:
        _label_heads(ax, drawn, taken)
    return finish(fig, out / "tradeoff.png", staged)


def plot_fit_vs_test(rows, out: Path, *, fit_split: str, title: str = "", constraint: str | None = None,
                     staged=None) -> Path:
    """``fit_vs_test.png``: each head's gap on test against its gap on ``fit_split``, one panel per gap
    column, both axes on one range (the diagonal is test = fit)."""
    from matplotlib.lines import Line2D

    out = Path(out)
    gaps = _gap_axes(constraint)
    fit_rows = {_head_key(r): r for r in rows if r["split"] == fit_split}
    pairs = [(fit_rows[_head_key(r)], r) for r in rows if r["split"] == "test" and _head_key(r) in fit_rows]
    fig, axes = new_figure(1, len(gaps), figsize=(4.4 * len(gaps), 4.2))
    placed = []
    for c, (key, label) in enumerate(gaps):
        ax = axes[0, c]
        methods = sorted({p[0]["method"] for p in pairs}, key=lambda m: m == "unconstrained")  # the star last
        for method in methods:
            sel = [p for p in pairs if p[0]["method"] == method]
            x = np.array([p[0].get(key, np.nan) for p in sel], dtype=float)
            y = np.array([p[1].get(key, np.nan) for p in sel], dtype=float)
            base = _method_base(method)
            if method == "fairhead":
                eps = np.array([p[0]["eps"] for p in sel], dtype=float)
                sc = ax.scatter(x, y, c=eps, cmap="viridis", s=28, label=method, zorder=3)
                fig.colorbar(sc, ax=ax, label="eps")
            elif method == "unconstrained":
                ax.scatter(x, y, marker="*", s=170, color=COLORS["unconstrained"], edgecolors="white",
                           linewidths=0.8, label=method, zorder=6)
            else:
                ax.scatter(x, y, marker=MARKERS.get(base, "x"), s=30, alpha=0.8, label=method,
                           color=COLORS.get(base), zorder=4)
        xs = [p[0].get(key, np.nan) for p in pairs]
        ys = [p[1].get(key, np.nan) for p in pairs]
        ax.set_xlabel(f"{label} on {fit_split}", fontsize=8)
        ax.set_ylabel(f"{label} on test", fontsize=8)
        ax.grid(alpha=0.3)
        placed.append((ax, xs, ys, pairs, key))
    handles = [hl for ax in axes.flat for hl in zip(*ax.get_legend_handles_labels())]
    handles.append((Line2D([], [], color="k", linestyle="--", linewidth=1), "test = fit"))
    bottom = legend_below(fig, handles)
    fig.suptitle(f"Does the fairness on the fit split hold on test? {title}".strip())
    layout(fig, bottom=bottom)
    taken = []
    for ax, xs, ys, pairs_, key in placed:
        # one range: the diagonal is the diagonal
        pad_limits(ax, xs, ys, x_span=GAP_MIN_SPAN, same=True, x_from=0.0)
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], "k--", linewidth=1, zorder=1)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
    for ax, xs, ys, pairs_, key in placed:
        labelled = sorted([p for p in pairs_ if p[0]["method"] in ("fairhead", "unconstrained")],
                          key=lambda p: p[0]["method"] != "unconstrained")
        place_labels(ax, [(p[0].get(key, np.nan), p[1].get(key, np.nan)) for p in labelled],
                     [_eps_text(p[0]) for p in labelled], taken=taken, fontsize=6.5)
    return finish(fig, out / "fit_vs_test.png", staged)
