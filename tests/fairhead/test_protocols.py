"""The seed paper's protocols: five heads, three evaluation splits, the balanced set really balanced."""

from __future__ import annotations

import numpy as np
import pytest

from fairhead import protocols


def test_group_balanced_set_has_equal_cells(split_arrays):
    balanced = protocols.group_balanced(protocols._concat([split_arrays["train"], split_arrays["valid"]]), seed=0)
    cells, counts = np.unique(np.column_stack([balanced.y, balanced.groups]), axis=0, return_counts=True)
    assert len(cells) == 4 and len(set(counts)) == 1
    again = protocols.group_balanced(protocols._concat([split_arrays["train"], split_arrays["valid"]]), seed=0)
    assert np.array_equal(balanced.sample_ids, again.sample_ids)  # seeded: deterministic


def test_all_five_protocols_in_one_table(split_arrays, tmp_path):
    table = protocols.run_protocols(None, constraint="eo", eps=0.05, data=split_arrays, out=tmp_path)
    assert [(r["protocol"], r["split"]) for r in table.rows] == [
        (p, s) for p in protocols.PROTOCOLS for s in ("train", "fine-tune", "test")]
    rows = {(r["protocol"], r["split"]): r for r in table.rows}
    assert rows[("B1", "train")]["n"] == rows[("B1", "fine-tune")]["n"] == len(split_arrays["train"].y)
    assert rows[("M1", "fine-tune")]["n"] == len(split_arrays["valid"].y)
    # the constrained head meets its bound on its own fine-tune data and beats the unconstrained one there
    for protocol in ("M1", "M2"):
        assert rows[(protocol, "fine-tune")]["own_value"] <= 0.05 + 1e-9
    assert rows[("M1", "fine-tune")]["eo_diff"] < rows[("B2", "fine-tune")]["eo_diff"]
    assert rows[("M2", "fine-tune")]["eo_diff"] < rows[("B3", "fine-tune")]["eo_diff"]
    for g in ("a", "b"):
        assert 0.0 <= rows[("B1", "test")][f"FPR[group={g}]"] <= 1.0  # groups by their readable names
    assert (tmp_path / "protocols.csv").exists() and (tmp_path / "protocols.json").exists()
    assert "M2" in table.to_text()


def test_maxmin_is_the_worst_sensitive_group_not_the_worst_cell(split_arrays):
    """``maxmin_acc`` is the seed's max-min fairness (groups only); ``worst_cell_acc`` the (label, group) version."""
    from solvers import FairLogisticRegression

    train, test = split_arrays["train"], split_arrays["test"]
    table = protocols.run_protocols(None, constraint="eo", eps=0.05, data=split_arrays)
    row = next(r for r in table.rows if (r["protocol"], r["split"]) == ("B1", "test"))
    head = FairLogisticRegression().fit(train.X, train.y)
    correct = head.predict(test.X) == test.y
    g = test.groups[:, 0]
    by_group = [correct[g == k].mean() for k in (0, 1)]
    by_cell = [correct[(g == k) & (test.y == c)].mean() for k in (0, 1) for c in (0, 1)]
    assert row["maxmin_acc"] == pytest.approx(min(by_group), abs=1e-12)
    assert row["worst_cell_acc"] == pytest.approx(min(by_cell), abs=1e-12)
    assert row["worst_cell_acc"] < row["maxmin_acc"]
