"""Sweeps: warm starts change nothing, the table matches individual fits, files parse, resume works."""

from __future__ import annotations

import dataclasses
import csv
import json
import os

import numpy as np
import pytest

from fairhead import sweep
from fairhead.measure import constraint_value

#: warm and cold solves reach the same optimum up to the solvers' own tolerance: each stops once
#: the projected gradient is below the default tol (1e-4), so their coefficients differ by about
#: tol over the loss's curvature along the difference (0.1-0.5 on these standardised features)
COEF_ATOL = 10 * 1e-4
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
    assert dp_score_sweep.notes == []  # a score gap has no resolution: the grid is not cut


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


@pytest.mark.slow
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


def test_balanced_sweep_reports_the_gap_its_certificates_bound(split_arrays, tmp_path):
    """Under balance, eps bounds the balance-weighted gap; the table reports that same quantity (defect 3)."""
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp", eps_grid=[0.1, 0.05], balance="label-group",
                             progress=False, plots=False, data=(split_arrays, "fp", {}))
    train = split_arrays["train"]
    differs = []
    for rec in (r for r in result.records if r.method == "fairhead"):
        assert rec.metrics["train"]["constraint_value"] == pytest.approx(rec.certificate["achieved_gap"], abs=1e-12)
        z = train.X @ np.asarray(rec.coef) + rec.intercept
        unit = constraint_value("dp", y=train.y, scores=z, sensitive_features=train.groups[:, 0])
        differs.append(abs(unit - rec.certificate["achieved_gap"]) > 1e-3)
    assert any(differs)  # on this data the unit-weight gap is another number: reporting it was the defect
    assert "balance='label-group' weights" in result.summary()
    assert "balance='label-group'" in json.loads(result.files["json"].read_text())["columns"]["constraint_value"]


def _record(method, eps, acc_test, dp_test, *, eps_met=None, alpha=None, gap_fit=0.0):
    cert = {} if eps_met is None else {"constraint": "dp", "eps": eps, "eps_met": eps_met, "tol": 1e-4,
                                       "max_violation": max(0.0, gap_fit - eps)}
    metrics = {split: {"accuracy": acc_test, "demographic_parity_difference": dp_test,
                       "equalized_odds_difference": dp_test,
                       "constraint_value": gap_fit if split == "train" else dp_test}
               for split in ("train", "test")}
    return sweep.HeadRecord(method=method, eps=eps, coef=[], intercept=0.0, certificate=cert, metrics=metrics,
                            wall_time=0.1, alpha=alpha)


def test_summary_names_the_heads_that_missed_their_bound(tmp_path):
    records = [_record("unconstrained", float("nan"), 0.9, 0.3, gap_fit=0.2),
               _record("fairhead", 0.1, 0.85, 0.08, eps_met=True, gap_fit=0.09),
               _record("fairhead", 0.02, 0.8, 0.04, eps_met=False, gap_fit=0.031),
               _record("fairhead", 0.0, 0.78, 0.03, eps_met=False, gap_fit=0.0007)]
    rows = [row for r in records for row in r.rows("dp")]
    result = sweep.SweepResult(out=tmp_path, constraint="dp", fit_split="train", records=records, rows=rows,
                               split_sizes={"train": 100, "test": 100})
    text = result.summary()
    assert ("MISSED: 2 of 3 heads miss their bound on 'train': eps=0.02 (constraint_value 0.031), "
            "eps=0 (constraint_value 0.0007)") in text
    assert [r.eps for r in result.missed()] == [0.02, 0.0]
    met = sweep.SweepResult(out=tmp_path, constraint="dp", fit_split="train", records=records[:2],
                            rows=[row for r in records[:2] for row in r.rows("dp")])
    assert "all 1 heads meet their bound" in met.summary() and "MISSED" not in met.summary()


def test_fronts_compare_measured_test_gaps_not_matched_eps():
    """Best test accuracy at test gap <= t: a head counts by its measured gap, whatever eps it was given."""
    from fairhead import compare

    records = [_record("fairhead", 0.05, 0.80, 0.045, eps_met=True),
               _record("fairhead", 0.02, 0.76, 0.019, eps_met=True),
               _record("expgrad", 0.05, 0.82, 0.06),   # its own eps is 0.05 but its test gap is 0.06
               _record("expgrad", 0.02, 0.79, 0.028),
               _record("penalty", float("nan"), 0.81, 0.09, alpha=2.0)]
    rows = [row for r in records for row in r.rows("dp")]
    front = {(f["method"], f["t"]): f for f in compare.fronts(rows, split="test", n=400)
             if f["gap"] == "DP diff"}
    assert front[("fairhead", 0.02)]["accuracy"] == 0.76
    assert np.isnan(front[("expgrad", 0.02)]["accuracy"])
    assert front[("expgrad", 0.03)]["accuracy"] == 0.79 and front[("fairhead", 0.03)]["accuracy"] == 0.76
    assert front[("fairhead", 0.05)]["accuracy"] == 0.80 and front[("expgrad", 0.05)]["accuracy"] == 0.79
    assert front[("expgrad", 0.1)]["accuracy"] == 0.82 and front[("penalty", 0.1)]["alpha"] == 2.0
    assert front[("fairhead", 0.05)]["se"] == pytest.approx(np.sqrt(0.8 * 0.2 / 400))
    table = compare.front_table(compare.fronts(rows, split="test", n=400))
    assert {"gap <= t", "method", "t=0.02", "t=0.03", "t=0.05", "t=0.1"} <= set(table[0])


@pytest.mark.parametrize("constraint, family", [("error-rate", "AE diff"), ("eopp", "EOpp diff")])
def test_fronts_read_the_gap_the_heads_bound(split_arrays, tmp_path, constraint, family):
    """A sweep of a constraint outside the DP and EO families compares fronts on its own gap (the
    accuracy-equality difference for error-rate), not only on gaps its heads do not aim at."""
    result = sweep.run_sweep(None, out=tmp_path, constraint=constraint, eps_grid=[0.1, 0.03], progress=False,
                             plots=False, data=(split_arrays, "fp", {}))
    front_text = result.summary().split("fronts on 'test'")[1]
    assert family in front_text and "DP diff" not in front_text and "EO diff" not in front_text
    gaps = {f["gap"] for f in result.fronts("test")}
    assert gaps == {"DP diff", "EO diff", family}
    key = {"AE diff": "accuracy_equality_difference", "EOpp diff": "equal_opportunity_difference"}[family]
    for f in result.fronts("test", family_only=True):
        heads = [r for r in result.rows if r["split"] == "test" and r["method"] == f["method"] and r[key] <= f["t"]]
        assert f["accuracy"] == max((r["accuracy"] for r in heads), default=float("nan")) or not heads


def test_report_and_summary_label_both_gaps_and_compare_fronts(split_arrays, tmp_path):
    pytest.importorskip("fairlearn")
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp", eps_grid=[0.1, 0.03], progress=False,
                             compare=["penalty"], data=(split_arrays, "fp", {}))
    text = result.summary()
    assert "constraint_value" in text and "|P(yhat=1)(group) - P(yhat=1)(all)|" in text
    assert "between-groups" in text and "fronts on 'test'" in text
    front_text = text.split("fronts on 'test'")[1]
    assert "DP diff" in front_text and "EO diff" not in front_text  # the summary reads the dp family's gap
    report = result.files["report"].read_text()
    assert "## What the gap columns measure" in report and "## Fronts on test" in report
    assert "| constraint_value (bounded gap) |" in report and "| DP diff (between groups) |" in report
    payload = json.loads(result.files["json"].read_text())
    assert {"constraint_value", "demographic_parity_difference"} <= set(payload["columns"])
    assert {f["method"] for f in payload["fronts"]} == {"unconstrained", "fairhead", "penalty"}
    with open(result.files["table"]) as f:
        penalty = [r for r in csv.DictReader(f) if r["method"] == "penalty"]
    # penalty rows carry their alpha (one head per alpha, on every split)
    from fairhead.compare import PENALTY_ALPHAS

    assert sorted({float(r["alpha"]) for r in penalty}) == sorted(PENALTY_ALPHAS)


def test_undefined_rates_are_reported_loudly(split_arrays, tmp_path):
    """A split where a group has no positives: its TPR counts as 0 (fairlearn), and the outputs say so."""
    import dataclasses

    test = split_arrays["test"]
    keep = ~((test.groups[:, 0] == 1) & (test.y == 1))
    arrays = dict(split_arrays, test=dataclasses.replace(
        test, X=test.X[keep], y=test.y[keep], groups=test.groups[keep], sample_ids=test.sample_ids[keep]))
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp-score", eps_grid=[0.1], progress=False,
                             plots=False, data=(arrays, "fp", {}))
    assert result.undefined_rates == {"test": ["true_positive_rate of group 'group=b' (no y=1 rows; counted as 0, "
                                               "as fairlearn)"]}
    assert "UNDEFINED on 'test': true_positive_rate of group 'group=b'" in result.summary()
    assert "Undefined on test" in result.files["report"].read_text()
    assert json.loads(result.files["json"].read_text())["undefined_rates"] == result.undefined_rates


def test_baseline_rows_carry_intervals_at_the_sweeps_confidence(split_arrays, tmp_path):
    """Baselines are evaluated at ``--confidence`` like the heads, not at a fixed 0.95."""
    widths = {}
    for level in (0.8, 0.99):
        result = sweep.run_sweep(None, out=tmp_path / str(level), constraint="dp", eps_grid=[0.1], progress=False,
                                 plots=False, compare=["penalty"], confidence=level,
                                 data=(split_arrays, "test-fingerprint", {}))
        row = next(r for r in result.rows if r["method"] == "penalty" and r["split"] == "test")
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
        widths[level] = row["accuracy_high"] - row["accuracy_low"]
    assert widths[0.8] < widths[0.99]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names an fd through /proc (Linux)")
def test_progress_is_synced_once_per_sweep_not_once_per_head(split_arrays, tmp_path, monkeypatch):
    """The progress file gets one fsync (the final atomic swap), whatever the number of heads; every
    head is still in it, and a rerun recomputes none of them."""
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    _run(split_arrays, tmp_path, "dp-score", backend="torch", plots=False)
    progress = tmp_path / sweep.PROGRESS_FILE
    lines = progress.read_text().splitlines()
    assert len(lines) == N_EPS and all(json.loads(line)["record"]["method"] == "fairhead" for line in lines)
    # the swap's temporary twin is the one file synced for it; the progress file itself never is
    twins = [name for name in synced if name.startswith(".") and sweep.PROGRESS_FILE in name]
    assert len(twins) == 1 and sweep.PROGRESS_FILE not in synced, synced
    synced.clear()
    _run(split_arrays, tmp_path, "dp-score", backend="torch", plots=False)
    assert progress.read_text().splitlines() == lines, "a rerun recomputes no head"
    assert not [name for name in synced if sweep.PROGRESS_FILE in name], "nothing new to seal"


@pytest.mark.parametrize("violation, tol, verdict", [(5e-5, 1e-4, True), (2e-4, 1e-4, False), (0.0, 1e-4, True)])
def test_fit_sweep_and_protocols_give_one_verdict_on_a_score_head(violation, tol, verdict):
    """A group-loss head within the solver's tolerance of eps (its augmented Lagrangian stops at
    violations up to tol) is reported met by every command, and one beyond it missed by every command."""
    from solvers.certificate import Certificate

    from fairhead import protocols

    cert = Certificate(backend="torch", solver="augmented-lagrangian-lbfgs", status="optimal", constraint="group-loss",
                       eps=0.39, objective=0.32, max_violation=violation, stationarity=1e-5, n_iter=40, wall_time=0.1,
                       tol=tol)
    record = sweep.HeadRecord(method="fairhead", eps=0.39, coef=[], intercept=0.0, certificate=cert.to_dict(),
                              metrics={"train": {}}, wall_time=0.1)
    head = type("Head", (), {"certificate_": cert})()
    assert cert.keeps_bound is verdict and protocols.eps_met(head) is verdict
    assert record.missed_bound is (not verdict) and record.rows("group-loss")[0]["eps_met"] is verdict
    unbounded = dataclasses.replace(cert, constraint="minimax")
    assert unbounded.keeps_bound is None
