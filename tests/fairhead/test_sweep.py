"""Sweeps: warm starts change nothing, the table matches individual fits, files parse, resume works."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fairhead import sweep
from fairhead.measure import constraint_value

#: warm and cold solves reach the same optimum up to the solvers' own tolerance
COEF_ATOL = 1e-4
N_EPS = 5


def _run(split_arrays, out, constraint, **kw):
    return sweep.run_sweep(None, out=out, constraint=constraint, n_eps=N_EPS, progress=False,
                           data=(split_arrays, "test-fingerprint", {}), **kw)


@pytest.fixture(scope="module")
def dp_score_sweep(split_arrays, tmp_path_factory):
    return _run(split_arrays, tmp_path_factory.mktemp("sweep"), "dp-score", backend="torch")


def test_default_grid_spans_inactive_to_zero(dp_score_sweep):
    eps = [r.eps for r in dp_score_sweep.records if r.method == "fairhead"]
    free = next(r for r in dp_score_sweep.records if r.method == "unconstrained")
    assert len(eps) == N_EPS and eps[-1] == 0.0
    assert eps == sorted(eps, reverse=True)
    assert eps[0] == pytest.approx(free.metrics["train"]["constraint_value"])


def test_sweep_rows_match_individual_cold_fits(dp_score_sweep, split_arrays):
    """Every warm-started head of the path equals a cold fit at the same eps."""
    from solvers import FairLogisticRegression

    train = split_arrays["train"]
    for rec in (r for r in dp_score_sweep.records if r.method == "fairhead"):
        cold = FairLogisticRegression(constraint="dp-score", eps=rec.eps, backend="torch")
        cold.fit(train.X, train.y, sensitive_features=train.groups[:, 0])
        np.testing.assert_allclose(rec.coef, cold.coef_.ravel(), atol=COEF_ATOL)
        assert rec.intercept == pytest.approx(float(cold.intercept_[0]), abs=COEF_ATOL)
        # and the table's numbers are that head's numbers
        z = train.X @ cold.coef_.ravel() + cold.intercept_[0]
        value = constraint_value("dp-score", y=train.y, scores=z, sensitive_features=train.groups[:, 0])
        assert rec.metrics["train"]["constraint_value"] == pytest.approx(value, abs=1e-4)
        assert rec.metrics["train"]["constraint_value"] <= rec.eps + 1e-5
        assert rec.metrics["test"]["accuracy"] == pytest.approx(
            float((cold.predict(split_arrays["test"].X) == split_arrays["test"].y).mean()), abs=1e-9)


def test_tighter_bounds_cost_accuracy_and_close_the_gap(dp_score_sweep):
    rows = {(r["method"], r["eps"]): r for r in dp_score_sweep.rows if r["split"] == "train"}
    heads = sorted((k for k in rows if k[0] == "fairhead"), key=lambda k: -k[1])
    gaps = [rows[k]["constraint_value"] for k in heads]
    assert gaps[-1] < 1e-5 < gaps[0]
    assert rows[heads[-1]]["demographic_parity_difference"] < rows[heads[0]]["demographic_parity_difference"]


def test_report_files_exist_and_parse(dp_score_sweep):
    files = dp_score_sweep.files
    with open(files["table"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(dp_score_sweep.rows) == (N_EPS + 1) * 3
    # strict JSON: NaN / Infinity would break non-Python readers
    payload = json.loads(files["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert payload["provenance"]["cache_fingerprint"] == "test-fingerprint"
    assert "versions" in payload["provenance"] and payload["provenance"]["seed"] == 0
    assert all("certificate" in h for h in payload["heads"])
    from PIL import Image

    for key in ("tradeoff_plot", "fit_vs_test_plot"):
        with Image.open(files[key]) as im:
            assert im.format == "PNG" and im.size[0] > 300
    report = files["report"].read_text()
    assert "tradeoff.png" in report and "fit_vs_test.png" in report and "| method |" in report


@pytest.mark.parametrize("constraint", ["dp", "eo"])
def test_rate_sweep_meets_each_bound_on_the_fit_split(split_arrays, tmp_path, constraint):
    result = sweep.run_sweep(None, out=tmp_path, constraint=constraint, eps_grid=[0.2, 0.1, 0.05],
                             progress=False, plots=False, data=(split_arrays, "fp", {}))
    for rec in (r for r in result.records if r.method == "fairhead"):
        if rec.certificate["eps_met"]:
            assert rec.metrics["train"]["constraint_value"] <= rec.eps + 1e-9
    assert all(r.certificate["eps_met"] for r in result.records if r.method == "fairhead")


def test_interrupted_sweep_resumes_and_keeps_finished_rows(split_arrays, tmp_path):
    first = _run(split_arrays, tmp_path, "dp-score", backend="torch", plots=False)
    progress = tmp_path / sweep.PROGRESS_FILE
    lines = progress.read_text().splitlines()
    assert len(lines) == N_EPS
    # simulate a kill during the 4th head: three finished lines and a torn fourth
    progress.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    second = _run(split_arrays, tmp_path, "dp-score", backend="torch", plots=False)
    kept = [r for r in second.records if r.method == "fairhead"][:3]
    assert [r.wall_time for r in kept] == [r.wall_time for r in first.records if r.method == "fairhead"][:3]
    for a, b in zip(first.records, second.records):
        np.testing.assert_allclose(a.coef, b.coef, atol=COEF_ATOL)


def test_group_loss_grid_stops_at_the_tightest_feasible_bound(split_arrays, tmp_path):
    result = sweep.run_sweep(None, out=tmp_path, constraint="group-loss", n_eps=3, progress=False, plots=False,
                             backend="cvxpy", data=(split_arrays, "fp", {}))
    heads = [r for r in result.records if r.method == "fairhead"]
    assert heads[-1].eps > 0 and all(h.certificate["status"].startswith("optimal") for h in heads)


def test_bad_grid_is_a_clear_error(split_arrays, tmp_path):
    from fairhead_errors import DataError

    with pytest.raises(DataError, match="eps grid"):
        _run(split_arrays, tmp_path, "dp", eps_grid=[0.1, -1])


def test_baselines_share_the_table(split_arrays, tmp_path):
    pytest.importorskip("fairlearn")
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp", eps_grid=[0.1, 0.05, 0.02], progress=False,
                             compare=["expgrad", "threshold", "penalty"], data=(split_arrays, "fp", {}))
    methods = {r["method"] for r in result.rows}
    assert {"fairhead", "unconstrained", "expgrad", "threshold", "penalty"} <= methods
    threshold = next(r for r in result.rows if r["method"] == "threshold")
    assert "attribute at test time" in threshold["notes"]
    assert all(r["fit_time_s"] > 0 for r in result.rows)


def test_two_attributes_sweep_over_intersectional_groups(split_arrays, tmp_path):
    """Two sensitive attributes combine into four intersectional groups throughout the sweep."""
    import dataclasses

    rng = np.random.default_rng(3)
    arrays = {}
    for split, a in split_arrays.items():
        second = rng.integers(0, 2, len(a.y))
        arrays[split] = dataclasses.replace(a, groups=np.column_stack([a.groups[:, 0], second]),
                                            attributes=("group", "site"),
                                            categories={"group": ("a", "b"), "site": ("x", "y")})
    assert len(set(arrays["train"].group_names)) == 4
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp-score", eps_grid=[0.5, 0.1, 0.0], progress=False,
                             plots=False, backend="cvxpy", data=(arrays, "fp", {}))
    for rec in (r for r in result.records if r.method == "fairhead"):
        train = arrays["train"]
        z = train.X @ np.asarray(rec.coef) + rec.intercept
        per_group = [z[train.group_names == g].mean() - z.mean() for g in np.unique(train.group_names)]
        assert max(abs(v) for v in per_group) <= rec.eps + 1e-6
        assert rec.metrics["train"]["constraint_value"] == pytest.approx(max(abs(v) for v in per_group), abs=1e-9)
