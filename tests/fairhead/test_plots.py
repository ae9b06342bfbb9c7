"""The sweep plots: a legend on every panel, honest axis ranges, and units for the constraint's own value."""

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


def test_every_panel_has_a_legend_and_honest_ranges(tmp_path, figures):
    plots.plot_sweep(_rows(), tmp_path, fit_split="train", constraint="dp-score")
    tradeoff, fit_vs_test = figures
    panels = [ax for fig in figures for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 6 + 3
    for ax in panels:
        assert ax.get_legend() is not None, ax.get_xlabel()
    for ax in tradeoff.axes:
        low, high = ax.get_ylim()
        assert high - low >= plots.ACC_MIN_SPAN - 1e-12  # 0.002 apart does not fill the panel
        assert ax.get_xlim()[0] == 0.0
    for ax in [a for a in fit_vs_test.axes if a.get_label() != "<colorbar>"]:
        assert ax.get_xlim() == ax.get_ylim() and ax.get_xlim()[0] == 0.0


@pytest.mark.parametrize("constraint, unit", [("dp-score", "logits"), ("cov", "logits"), ("dp", "selection-rate"),
                                              ("group-loss", "nats")])
def test_the_constraints_own_value_has_its_unit(tmp_path, figures, constraint, unit):
    plots.plot_sweep(_rows(), tmp_path, fit_split="train", constraint=constraint)
    labels = [ax.get_xlabel() for ax in figures[0].axes]
    assert any("own value" in label and unit in label for label in labels), labels
    assert np.all([("own value" not in label) or unit in label for label in labels])
