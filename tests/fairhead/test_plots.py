"""The sweep plots: one legend below the panels, honest axis ranges, units for the constraint's own value, and
readable on an Adult-like spread: no marker cut by the frame, no two labels on top of each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairhead import plots


def _rows():
    """Two methods whose accuracies differ by 0.002 (noise on a small test split) over a few gaps."""
    rows = []
    for split in ("train", "test"):
        for k, eps in enumerate((0.3, 0.2, 0.1)):
            rows.append({"method": "fairhead", "eps": eps, "split": split, "accuracy": 0.801 + 0.001 * k,
                         "constraint_value": 0.02 * (k + 1), "demographic_parity_difference": 0.01 * (k + 1),
                         "equalized_odds_difference": 0.015 * (k + 1)})
        rows.append({"method": "penalty", "eps": float("nan"), "split": split, "accuracy": 0.803,
                     "constraint_value": 0.03, "demographic_parity_difference": 0.02,
                     "equalized_odds_difference": 0.02})
    return rows


@pytest.fixture
def figures(monkeypatch):
    """Every figure plot_sweep saves, kept open for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: saved.append(self))
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    yield saved
    for fig in saved:
        matplotlib.pyplot.close(fig)


def test_every_figure_has_a_legend_below_its_panels_and_honest_ranges(tmp_path, figures):
    plots.plot_sweep(_rows(), tmp_path, fit_split="train", constraint="dp-score")
    tradeoff, fit_vs_test = figures
    panels = [ax for fig in figures for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6 + 3
    for fig in figures:
        (legend,) = fig.legends  # one per figure, outside every panel
        fig.canvas.draw()
        box = legend.get_window_extent()
        assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    for ax in tradeoff.axes:
        low, high = ax.get_ylim()
        assert high - low >= plots.ACC_MIN_SPAN - 1e-12  # 0.002 apart does not fill the panel
        assert ax.get_xlim()[0] <= 0.0 < ax.get_xlim()[1]
    for ax in [a for a in fit_vs_test.axes if a.get_label() != "<colorbar>"]:
        assert ax.get_xlim() == ax.get_ylim() and ax.get_xlim()[0] <= 0.0


@pytest.mark.parametrize("constraint, unit", [("dp-score", "logits"), ("cov", "logits"), ("dp", "selection-rate"),
                                              ("group-loss", "nats")])
def test_the_constraints_own_value_has_its_unit(tmp_path, figures, constraint, unit):
    plots.plot_sweep(_rows(), tmp_path, fit_split="train", constraint=constraint)
    labels = [ax.get_xlabel() for ax in figures[0].axes]
    assert any("own value" in label and unit in label for label in labels), labels
    assert np.all([("own value" not in label) or unit in label for label in labels])


# --------------------------------------------------------------------------- readable on real data
def _adult_like_rows():
    """The spread of a sweep on Adult: 20 fairhead heads from the unconstrained one (gap 0.19, accuracy
    0.852, the loosest head at the same place) down to gap 0; ExponentiatedGradient close to the path;
    the seed's penalties far below and to the right (accuracy 0.76, gap 0.5), squashing the rest."""
    rows = []
    for split, shift in (("train", 0.0), ("test", 0.004)):
        for k, eps in enumerate(np.linspace(0.19, 0.0, 20)):
            gap = max(eps - shift, 0.0) + (0.01 if split == "test" else 0.0)
            acc = 0.852 - 0.06 * (1 - eps / 0.19) ** 2 - shift
            rows.append({"method": "fairhead", "eps": float(eps), "split": split, "accuracy": acc,
                         "constraint_value": gap, "demographic_parity_difference": gap * 1.05,
                         "equalized_odds_difference": gap * 0.8, "eps_met": k != 19})
        rows.append({"method": "unconstrained", "eps": float("nan"), "split": split, "accuracy": 0.852 - shift,
                     "constraint_value": 0.19 + (0.01 if split == "test" else 0.0),
                     "demographic_parity_difference": 0.2, "equalized_odds_difference": 0.152})
        for j, eps in enumerate((0.15, 0.1, 0.05, 0.02, 0.0)):
            rows.append({"method": "expgrad", "eps": eps, "split": split, "accuracy": 0.845 - 0.012 * j - shift,
                         "constraint_value": eps + 0.006, "demographic_parity_difference": eps + 0.01,
                         "equalized_odds_difference": eps + 0.02})
        for j, alpha in enumerate((0.5, 1, 2, 4, 8, 16)):
            rows.append({"method": "penalty", "eps": float("nan"), "alpha": alpha, "split": split,
                         "accuracy": 0.76 + 0.002 * j, "constraint_value": 0.5 - 0.01 * j,
                         "demographic_parity_difference": 0.5 - 0.01 * j, "equalized_odds_difference": 0.45})
        rows.append({"method": "threshold", "eps": float("nan"), "split": split, "accuracy": 0.83,
                     "constraint_value": 0.01, "demographic_parity_difference": 0.012,
                     "equalized_odds_difference": 0.3})
    return rows


def _assert_readable(fig):
    fig.canvas.draw()
    frames = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    n_markers = 0
    for ax in frames:
        box = ax.get_window_extent()
        for marker in plots.marker_boxes(ax):
            n_markers += 1
            # the whole marker inside the frame (a half-pixel for antialiasing)
            assert box.x0 - 0.5 <= marker.x0 and marker.x1 <= box.x1 + 0.5, (ax.get_xlabel(), marker)
            assert box.y0 - 0.5 <= marker.y0 and marker.y1 <= box.y1 + 0.5, (ax.get_ylabel(), marker)
    assert n_markers > 0
    labels = [t for ax in frames for t in ax.texts if t.get_visible()]
    boxes = [t.get_window_extent() for t in labels]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    for legend in fig.legends:
        assert not any(legend.get_window_extent().overlaps(ax.get_window_extent()) for ax in frames)
    return [t.get_text() for t in labels]


def test_sweep_plots_are_readable_on_an_adult_like_spread(tmp_path, figures):
    plots.plot_sweep(_adult_like_rows(), tmp_path, fit_split="train", title="constraint 'dp'", constraint="dp")
    tradeoff, fit_vs_test = figures
    texts = _assert_readable(tradeoff)
    assert any("unconstrained" in t for t in texts) and sum(t.startswith("eps=") for t in texts) >= 6
    # the penalties squash the rest: a zoomed row per split shows the heads that matter, penalties left out
    zoomed = [ax for ax in tradeoff.axes if ax.get_title().startswith("zoom")]
    assert len(zoomed) == 2 * len(plots.GAPS)
    for ax in zoomed:
        low, high = ax.get_ylim()
        assert low > 0.77 and high - low < 0.12  # accuracy 0.79 .. 0.85 fills the panel, 0.76 is not in it
    texts = _assert_readable(fit_vs_test)
    assert any("unconstrained" in t for t in texts)  # the star is labelled (with the head at its place)
    star = [c for ax in fit_vs_test.axes for c in ax.collections if c.get_label() == "unconstrained"]
    assert star and all(c.get_zorder() > max(o.get_zorder() for o in c.axes.collections if o is not c) for c in star)


def test_the_overfitting_plot_has_a_title_words_and_one_label_per_place(tmp_path, figures):
    from fairhead import uncertainty

    over = [{"fit_gap": 0.2, "cert_bound": 0.35, "test_gap": 0.21},
            {"fit_gap": 0.02, "cert_bound": None, "test_gap": 0.12},  # B3 and M2 at one place
            {"fit_gap": 0.02, "cert_bound": None, "test_gap": 0.12},
            {"fit_gap": 0.05, "cert_bound": 0.3, "test_gap": 0.2},
            {"fit_gap": 0.01, "cert_bound": 0.28, "test_gap": 0.15}]
    uncertainty.plot_overfitting(over, tmp_path, fit_split="fine-tune", cert_split="held-out", metric="eo_diff",
                                 labels=["B1", "B3", "M2", "B2", "M1"])
    (fig,) = figures
    texts = _assert_readable(fig)
    assert "B3, M2" in texts and {"B1", "B2", "M1"} <= set(texts)
    ax = fig.axes[0]
    assert fig._suptitle is not None and fig._suptitle.get_text()
    assert "EO difference between groups" in ax.get_xlabel() and "_" not in ax.get_xlabel() + ax.get_ylabel()


def test_sweep_overfitting_points_are_labelled_by_eps(tmp_path, figures):
    from fairhead import uncertainty

    over = [{"method": "unconstrained", "eps": float("nan"), "fit_gap": 0.19, "cert_bound": 0.3, "test_gap": 0.2},
            *({"method": "fairhead", "eps": e, "fit_gap": e, "cert_bound": e + 0.1, "test_gap": e + 0.04}
              for e in (0.15, 0.1, 0.05, 0.0))]
    uncertainty.plot_overfitting(over, tmp_path, fit_split="train", cert_split="valid",
                                 metric="demographic_parity_difference")
    texts = _assert_readable(figures[0])
    assert {"unconstrained", "eps=0.15", "eps=0.1", "eps=0.05", "eps=0"} <= set(texts)


# --------------------------------------------------------------------------- drawn once, measured once
def _reference_place_labels(ax, points, texts, *, fontsize=7, taken=None, avoid_markers=True):
    """The label placement measured the slow way: one annotation per offset tried, its box from the
    renderer (what :func:`plots.place_labels` must reproduce without a renderer call per try)."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    taken = [] if taken is None else taken
    markers = plots.marker_boxes(ax) if avoid_markers else []
    placed = []
    for point, text in plots._pixel_groups(ax, points, texts):
        for dx, dy in plots.LABEL_OFFSETS:
            label = ax.annotate(text, point, xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                ha="left" if dx >= 0 else "right", va="center", annotation_clip=True)
            box = label.get_window_extent(renderer)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in [*taken, *markers]):
                taken.append(box)
                placed.append(label)
                break
            label.remove()
    return placed


def _labels(figures):
    return [[(t.get_text(), tuple(t.xyann), t.get_horizontalalignment()) for t in ax.texts]
            for fig in figures for ax in fig.axes]


def test_labels_measured_once_land_where_measuring_every_try_puts_them(tmp_path, figures, monkeypatch):
    from fairhead import uncertainty

    over = [{"method": "fairhead", "eps": e, "fit_gap": e, "cert_bound": e + 0.1, "test_gap": e + 0.04}
            for e in np.linspace(0.19, 0.0, 20)]

    rows = [row for row in _adult_like_rows() if row["split"] == "train"]  # one figure: the test stays fast

    def draw():
        plots.plot_sweep(rows, tmp_path, fit_split="train", title="constraint 'dp'", constraint="dp")
        uncertainty.plot_overfitting(over, tmp_path, fit_split="train", cert_split="valid", metric="dp_diff")

    draw()
    fast = _labels(figures)
    figures.clear()
    monkeypatch.setattr(plots, "place_labels", _reference_place_labels)
    draw()
    assert _labels(figures) == fast
    assert sum(len(texts) for texts in fast) > 60  # most heads got a label: the comparison is not vacuous


def test_a_laid_out_figure_is_saved_at_the_plot_dpi_with_one_draw(tmp_path):
    fig, axes = plots.new_figure(1, 2, figsize=(6.0, 3.0))
    axes[0, 0].plot([0.0, 0.1], [0.8, 0.85], "o", label="heads")
    plots.layout(fig, bottom=plots.legend_below(fig, list(zip(*axes[0, 0].get_legend_handles_labels()))))
    assert fig.get_layout_engine() is None  # an engine left on the figure makes savefig draw it twice
    draws = []
    fig.canvas.mpl_connect("draw_event", draws.append)
    png = plots.finish(fig, tmp_path / "p.png").read_bytes()
    assert len(draws) == 1
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (round(6.0 * plots.DPI), round(3.0 * plots.DPI))


def test_matplotlib_is_imported_only_when_a_plot_is_drawn():
    """The modules that draw (and the CLI that imports them) leave matplotlib out until a plot is written:
    ``fairhead fit`` and ``sweep --no-plots`` never pay its import."""
    code = ("import sys, fairhead.plots, fairhead.uncertainty, fairhead.sweep, fairhead.report, fairhead.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'matplotlib']; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
