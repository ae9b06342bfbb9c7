"""The sweep plots: one legend below the panels, honest axis ranges, units for the constraint's own value, and
readable on an Adult-like spread: no marker cut by the frame, no two labels on top of each other."""

from __future__ import annotations

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
