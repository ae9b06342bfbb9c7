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
        assert rows[(protocol, "fine-tune")]["constraint_value"] <= 0.05 + 1e-9
    assert rows[("M1", "fine-tune")]["eo_diff"] < rows[("B2", "fine-tune")]["eo_diff"]
    assert rows[("M2", "fine-tune")]["eo_diff"] < rows[("B3", "fine-tune")]["eo_diff"]
    for g in ("a", "b"):
        assert 0.0 <= rows[("B1", "test")][f"FPR[group={g}]"] <= 1.0  # groups by their readable names
    assert (tmp_path / "protocols.csv").exists() and (tmp_path / "protocols.json").exists()
    assert "M2" in table.to_text()


def test_maxmin_is_the_worst_sensitive_group_not_the_worst_cell(split_arrays):
    """``worst_group_accuracy`` is the seed's max-min fairness (groups only); ``worst_cell_acc`` the (label, group) version."""
    from solvers import FairLogisticRegression

    train, test = split_arrays["train"], split_arrays["test"]
    table = protocols.run_protocols(None, constraint="eo", eps=0.05, data=split_arrays)
    row = next(r for r in table.rows if (r["protocol"], r["split"]) == ("B1", "test"))
    head = FairLogisticRegression().fit(train.X, train.y)
    correct = head.predict(test.X) == test.y
    g = test.groups[:, 0]
    by_group = [correct[g == k].mean() for k in (0, 1)]
    by_cell = [correct[(g == k) & (test.y == c)].mean() for k in (0, 1) for c in (0, 1)]
    assert row["worst_group_accuracy"] == pytest.approx(min(by_group), abs=1e-12)
    assert row["worst_cell_acc"] == pytest.approx(min(by_cell), abs=1e-12)
    assert row["worst_cell_acc"] < row["worst_group_accuracy"]


def test_overfitting_section_and_plot_repeat_the_tables_numbers(split_arrays, tmp_path):
    """Per protocol: the gap on its fine-tune data, on its held-out split (with the bound) and on test,
    the same numbers as the table's rows; B1's held-out split (valid) is measured afresh."""
    import csv
    import json

    from solvers import FairLogisticRegression

    table = protocols.run_protocols(None, constraint="eo", eps=0.05, data=split_arrays, out=tmp_path)
    png = (tmp_path / "overfitting.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Matplotlib" in png[:4096]
    doc = json.loads((tmp_path / "protocols.json").read_text())
    over = doc["overfitting"]
    assert (over["metric"], over["fit_split"], over["cert_split"]) == ("eo_diff", "fine-tune", "held-out")
    assert [(r["protocol"], r["held_out"]) for r in over["rows"]] == [
        ("B1", "valid"), ("B2", "train"), ("B3", protocols.NO_HELD_OUT), ("M1", "train"),
        ("M2", protocols.NO_HELD_OUT)]
    over_rows = {r["protocol"]: r for r in over["rows"]}
    with open(tmp_path / "protocols.csv", newline="") as f:
        cells = {(r["protocol"], r["split"]): r for r in csv.DictReader(f)}
    for p in ("B2", "M1"):  # held out: the train split, a row of the table
        fit, held, test = cells[(p, "fine-tune")], cells[(p, "train")], cells[(p, "test")]
        assert over_rows[p]["fit_gap"] == float(fit["eo_diff"])
        assert over_rows[p]["cert_gap"] == float(held["eo_diff"])
        assert over_rows[p]["cert_low"] == float(held["eo_diff_low"])
        assert over_rows[p]["cert_bound"] == float(held["eo_diff_high"])
        assert over_rows[p]["test_gap"] == float(test["eo_diff"])
        assert (over_rows[p]["test_low"], over_rows[p]["test_high"]) == (float(test["eo_diff_low"]),
                                                                           float(test["eo_diff_high"]))
    for p in ("B3", "M2"):  # fit on train and valid: no held-out split besides test
        assert over_rows[p]["cert_bound"] is None
        assert over_rows[p]["fit_gap"] == float(cells[(p, "fine-tune")]["eo_diff"])
    for r in over["rows"]:
        assert r["test_low"] - 1e-12 <= r["test_gap"] <= r["test_high"] + 1e-12
        if r["cert_bound"] is not None:
            assert r["cert_low"] - 1e-12 <= r["cert_gap"] <= r["cert_bound"] + 1e-12
    # B1 (the unconstrained head fit on train) on valid: the between-groups EO difference, measured here
    valid = split_arrays["valid"]
    yhat = FairLogisticRegression().fit(split_arrays["train"].X, split_arrays["train"].y).predict(valid.X)
    g = valid.groups[:, 0]
    rates = [[yhat[(g == k) & (valid.y == c)].mean() for k in (0, 1)] for c in (0, 1)]
    assert over_rows["B1"]["cert_gap"] == pytest.approx(max(abs(a - b) for a, b in rates), abs=1e-12)
    # the printed section shows the same numbers, one line per protocol
    text = table.to_text()
    assert "## Overfitting" in text and "upper bound (0.95) on held-out" in text
    m1 = over_rows["M1"]
    line = "| M1 | train | " + " | ".join(f"{m1[k]:.4f}" for k in (
        "fit_gap", "cert_gap", "cert_bound", "test_gap", "test_low", "test_high")) + " |"
    assert line in text.splitlines()
    assert f"| B3 | {protocols.NO_HELD_OUT} | {over_rows['B3']['fit_gap']:.4f} |  |  |" in text


def test_a_users_overfitting_png_is_not_replaced(split_arrays, tmp_path, monkeypatch):
    from fairhead_errors import DataError

    (tmp_path / "overfitting.png").write_bytes(b"my own figure")
    monkeypatch.setattr("solvers.FairLogisticRegression.fit", lambda *a, **k: pytest.fail("computed anyway"))
    with pytest.raises(DataError, match="overfitting.png"):
        protocols.run_protocols(None, constraint="eo", eps=0.05, data=split_arrays, out=tmp_path)
    assert (tmp_path / "overfitting.png").read_bytes() == b"my own figure"
