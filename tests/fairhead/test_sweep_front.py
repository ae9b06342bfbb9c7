"""Rate sweeps: the CLI sweep's heads are fit_path's (the monotone front included, across a resume),
and the default grid stops at the resolution instead of repeating one head below it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from fairhead import pipeline, sweep
from solvers import FairLogisticRegression, fit_path
from solvers.path import REPLACED_PREFIX, rate_resolution, replacement_note

#: on this data the eo path replaces heads both ways (see test_the_sweep_exercises_the_repair)
N_EPS = 8
#: the sweep's own parameters (run_sweep's defaults), for the same solves outside it
BASE = dict(C=1.0, backend="auto", balance=None, device="cpu", min_group_size=10)
#: certificate fields that are the head's, not the clock's
SAME = ("eps", "eps_met", "status", "achieved_gap", "zero_one_error", "notes", "resolution", "aimed_at", "n_iter",
        "passes", "multipliers")


def _run(split_arrays, out, constraint, **kw):
    return sweep.run_sweep(None, out=out, constraint=constraint, n_eps=N_EPS, progress=False, plots=False,
                           data=(split_arrays, "test-fingerprint", {}), **kw)


def _heads(result):
    return [r for r in result.records if r.method == "fairhead"]


@pytest.fixture(scope="module")
def eo_sweep(split_arrays, tmp_path_factory):
    out = tmp_path_factory.mktemp("eo-sweep")
    return out, _run(split_arrays, out, "eo")


@pytest.fixture(scope="module")
def eo_fit_path(split_arrays, eo_sweep):
    """fit_path on the sweep's fit split and grid, from the unconstrained head the sweep starts at."""
    train = split_arrays["train"]
    free = pipeline.fit_head(FairLogisticRegression(constraint=None, **BASE), train, split="train")
    grid = [r.eps for r in _heads(eo_sweep[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unmet bound warns; the sweep records it instead
        return fit_path(train.X, train.y, sensitive_features=pipeline.sensitive_arg(train), eps_grid=grid,
                        constraint="eo", init_head=free, **BASE)


def test_the_sweep_exercises_the_repair(eo_sweep, eo_fit_path):
    """On this data fit_path replaces heads (so the equality below is not trivial): each replaced
    head says so in its certificate, and the sweep's record in its notes."""
    replaced = [j for j, h in enumerate(eo_fit_path) if replacement_note(h.certificate_)]
    assert replaced
    for j, rec in enumerate(_heads(eo_sweep[1])):
        if j in replaced:
            assert rec.notes.endswith(replacement_note(eo_fit_path[j].certificate_))
        else:
            assert REPLACED_PREFIX not in rec.notes


def test_rate_sweep_heads_are_fit_paths_heads(eo_sweep, eo_fit_path, split_arrays):
    heads = _heads(eo_sweep[1])
    assert len(heads) == len(eo_fit_path) == N_EPS
    for rec, head in zip(heads, eo_fit_path):
        # the same arithmetic on the same rows from the same start: equal, not merely close
        np.testing.assert_array_equal(np.asarray(rec.coef), head.coef_.ravel())
        assert rec.intercept == float(head.intercept_[0])
        cert = head.certificate_.to_dict()
        assert {k: rec.certificate[k] for k in SAME} == {k: cert[k] for k in SAME}
        # the table's numbers are the head's: its gap on the fit split is the certificate's
        assert rec.metrics["train"]["constraint_value"] == pytest.approx(cert["achieved_gap"], abs=1e-12)
    errors = [r.certificate["zero_one_error"] for r in heads]
    assert all(later >= earlier for earlier, later in zip(errors, errors[1:]))  # loose to tight: the front is monotone


def test_a_resumed_rate_sweep_makes_the_same_replacements(eo_sweep, split_arrays, tmp_path):
    out, first = eo_sweep
    lines = (out / sweep.PROGRESS_FILE).read_text().splitlines()
    assert len(lines) == N_EPS
    # the progress file keeps each head as it was solved, before the front was made monotone
    assert [json.loads(line)["record"]["eps"] for line in lines] == [r.eps for r in _heads(first)]
    (tmp_path / sweep.PROGRESS_FILE).write_text("\n".join(lines[:3]) + "\n")  # killed during the 4th head
    second = _run(split_arrays, tmp_path, "eo")
    for a, b in zip(_heads(first), _heads(second)):
        assert a.coef == b.coef and a.intercept == b.intercept and a.notes == b.notes
        assert {k: a.certificate[k] for k in SAME} == {k: b.certificate[k] for k in SAME}
    assert [r.wall_time for r in _heads(second)][:3] == [r.wall_time for r in _heads(first)][:3]  # not re-solved


@pytest.mark.parametrize("constraint", ["dp", "eo"])
def test_default_rate_grid_stops_at_the_resolution(split_arrays, tmp_path, constraint, eo_sweep):
    result = eo_sweep[1] if constraint == "eo" else _run(split_arrays, tmp_path, constraint)
    train = split_arrays["train"]
    resolution = rate_resolution(train.y, sensitive_features=pipeline.sensitive_arg(train), constraint=constraint)
    heads = _heads(result)
    eps = [r.eps for r in heads]
    assert len(eps) == N_EPS and eps == sorted(set(eps), reverse=True)  # distinct bounds, loose to tight
    assert eps[-1] == pytest.approx(resolution, rel=1e-12) and eps[-1] > 0
    # the number the heads' own certificates carry (one prediction's weight over its group's)
    assert all(r.certificate["resolution"] == resolution for r in heads)
    assert all(r.certificate["eps_met"] for r in heads)  # every bound down to the resolution is reached
    # said once, in the summary (the CLI prints it), report.md and sweep.json
    line = sweep.MSG_GRID_CUT.format(n=N_EPS, top=eps[0], floor=resolution, name=constraint, split="train")
    summary = result.summary()
    assert summary.count("the resolution of") == 1 and line in summary.splitlines()
    assert result.files["report"].read_text().count(line) == 1
    assert json.loads(result.files["json"].read_text())["notes"] == [line]


def test_balance_changes_the_resolution_the_grid_stops_at(split_arrays, tmp_path):
    result = _run(split_arrays, tmp_path, "dp", balance="label-group")
    train = split_arrays["train"]
    sens = pipeline.sensitive_arg(train)
    balanced = rate_resolution(train.y, sensitive_features=sens, constraint="dp", balance="label-group")
    assert balanced != rate_resolution(train.y, sensitive_features=sens, constraint="dp")
    assert _heads(result)[-1].eps == pytest.approx(balanced, rel=1e-12)
    assert _heads(result)[-1].certificate["resolution"] == balanced


def test_a_user_grid_is_not_cut(split_arrays, tmp_path):
    result = sweep.run_sweep(None, out=tmp_path, constraint="dp", eps_grid=[0.1, 0.0], progress=False, plots=False,
                             data=(split_arrays, "fp", {}))
    assert [r.eps for r in _heads(result)] == [0.1, 0.0] and result.notes == []
    assert "the resolution of" not in result.summary()


def test_an_unconstrained_head_within_the_resolution_is_the_one_bound(tmp_path):
    """Features carry no signal and 90% of labels are positive: the unconstrained head predicts 1
    for every row and its dp gap is 0, within the resolution; every tighter bound is below the
    resolution, so the grid is the one bound at the resolution (its head: the unconstrained one)."""
    rng = np.random.default_rng(0)

    def split(n):
        g = rng.integers(0, 2, n)
        return pipeline.SplitArrays(X=rng.normal(size=(n, 3)), y=(rng.random(n) < 0.9).astype(np.int64),
                                    groups=g[:, None], attributes=("group",), categories={"group": ("a", "b")},
                                    sample_ids=np.array([f"r{i}" for i in range(n)]))

    arrays = {"train": split(400), "test": split(200)}
    result = _run(arrays, tmp_path, "dp")
    free = next(r for r in result.records if r.method == "unconstrained")
    inactive = free.metrics["train"]["constraint_value"]
    # 0 up to the rounding of rates summed over the rows (float64)
    assert inactive == pytest.approx(0.0, abs=len(arrays["train"].y) * np.finfo(np.float64).eps)
    resolution = rate_resolution(arrays["train"].y, sensitive_features=pipeline.sensitive_arg(arrays["train"]),
                                 constraint="dp")
    heads = _heads(result)
    assert [r.eps for r in heads] == [resolution] and heads[0].certificate["eps_met"]
    np.testing.assert_array_equal(heads[0].coef, free.coef)  # the bound is inactive: the unconstrained head
    assert result.notes == [sweep.MSG_GRID_WITHIN.format(top=inactive, floor=resolution, name="dp", split="train")]
