"""Certify or abstain: solvers.select_head and `fairhead select` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binom

from fairhead import certify, cli
from solvers import FairLogisticRegression, fit_path, select_head
from solvers.errors import DataError
from solvers.select import parse_target
from solvers.synthetic import make_fair_classification

EPS_GRID = [0.3, 0.1, 0.05, 0.02, 0.01]


def _draw(n, seed):
    """Fresh rows from one fixed population (same law of features, labels and groups; the unconstrained
    head's EO gap there is about 0.11, the tight heads' about 0.01)."""
    return make_fair_classification(n, 6, base_rates=(0.2, 0.6), group_shift=1.0, seed=seed)


@pytest.fixture(scope="module")
def path_heads():
    X, y, a = _draw(1500, 100)
    heads = fit_path(X, y, sensitive_features=a, eps_grid=EPS_GRID, constraint="eo", C=1.0)
    free = FairLogisticRegression(C=1.0).fit(X, y, sensitive_features=a)
    return heads + [free]


def test_parse_target():
    assert parse_target("eo<=0.05") == ("eo", 0.05)
    assert parse_target(" dp <= 0.1 ") == ("dp", 0.1)
    for bad in ("eo<0.05", "xx<=0.1", "eo<=2", "eo"):
        with pytest.raises(DataError, match="target must look like"):
            parse_target(bad)


def test_certified_head_bound_is_the_union_bound_and_below_target(path_heads):
    X, y, a = _draw(4000, 101)
    sel = select_head(path_heads, X, y, a, target="eo<=0.15", confidence=0.9)
    assert not sel.abstained
    best = next(b for b in sel.bounds if b.index == sel.selected)
    assert best.certified and best.bound <= 0.15
    # most accurate among the certified, and the sequence tests tight heads first
    assert best.accuracy == max(b.accuracy for b in sel.bounds if b.certified)
    assert sel.bounds[0].label.endswith("eps=0.01")
    doc = sel.certificate(split="cert")
    assert doc["method"] == "fixed-sequence" and doc["confidence"] == 0.9 and doc["split"] == "cert"
    assert set(doc["group_counts"]) == {"0", "1"}
    json.dumps(doc)


@pytest.mark.parametrize("method", ["fixed-sequence", "bonferroni"])
def test_selection_is_monotone_in_the_target(path_heads, method):
    X, y, a = _draw(3000, 102)
    preds = [h.predict(X) for h in path_heads]
    accs = []
    for t in np.linspace(0.02, 0.5, 12):
        sel = select_head(path_heads, X, y, a, target=("eo", t), method=method, predictions=preds)
        accs.append(-np.inf if sel.abstained else sel.bounds[[b.index for b in sel.bounds].index(sel.selected)].accuracy)
    assert all(b >= a_ for a_, b in zip(accs, accs[1:])), accs
    assert accs[-1] > -np.inf  # a loose enough target certifies something


def test_abstains_on_a_tiny_certification_split(path_heads):
    X, y, a = _draw(60, 103)
    sel = select_head(path_heads, X, y, a, target="eo<=0.1")
    assert sel.abstained and sel.selected is None
    assert "abstained" in sel.explanation and "smallest certifiable gap" in sel.explanation
    assert sel.smallest_certifiable > 0.1
    assert sel.notes and "wider than the target" in sel.notes[0]


def test_abstention_names_the_rows_needed(path_heads):
    X, y, a = _draw(800, 104)
    sel = select_head(path_heads, X, y, a, target="eo<=0.12", confidence=0.9)
    if sel.abstained and sel.rows_needed is not None:
        more = _draw(sel.rows_needed * 2, 105)
        assert select_head(path_heads, *more, target="eo<=0.12", confidence=0.9).smallest_certifiable < \
            sel.smallest_certifiable
        assert f"about {sel.rows_needed} certification rows" in sel.explanation


def test_small_coverage_run_stays_within_binomial_tolerance(path_heads):
    """30 fresh certification splits: the selected head's EO gap on a large fresh test split exceeds the
    target at most as often as a 1 - confidence rate allows (binomial upper tail 0.999)."""
    target, confidence = 0.1, 0.9
    X_t, y_t, a_t = _draw(40000, 999)  # the deployment population, as closely as rows allow
    from solvers import metrics

    test_gap = [metrics.equalized_odds_difference(y_t, h.predict(X_t), sensitive_features=a_t) for h in path_heads]
    violations = abstentions = 0
    for r in range(30):
        X, y, a = _draw(4000, 2000 + r)
        sel = select_head(path_heads, X, y, a, target=("eo", target), confidence=confidence)
        if sel.abstained:
            abstentions += 1
        else:
            violations += test_gap[sel.selected] > target
    assert violations <= binom.ppf(0.999, 30, 1 - confidence)
    assert abstentions < 30  # it does certify some of the time


def test_bad_options_are_clear_errors(path_heads):
    X, y, a = _draw(100, 106)
    with pytest.raises(DataError, match="method must be"):
        select_head(path_heads, X, y, a, target="eo<=0.1", method="holm")
    with pytest.raises(DataError, match="confidence must be"):
        select_head(path_heads, X, y, a, target="eo<=0.1", confidence=95)
    with pytest.raises(DataError, match="at least one"):
        select_head([], X, y, a, target="eo<=0.1")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, cache_path):
    out = tmp_path_factory.mktemp("sweep")
    assert cli.main(["sweep", str(cache_path), "--constraint", "eo", "--eps-grid", "0.2", "0.1", "0.05",
                     "--out", str(out), "--no-plots"]) == 0
    return out


def test_sweep_saves_its_heads(sweep_dir):
    names = sorted(p.name for p in (sweep_dir / certify.HEADS_DIR).glob("*.json"))
    assert names == ["eps-000.json", "eps-001.json", "eps-002.json", "unconstrained.json"]
    heads = certify.load_sweep_heads(sweep_dir)
    assert heads[0][1].extra_["fit_split"] == "train" and heads[0][1].eps == 0.2


def test_cli_select_end_to_end(sweep_dir, capsys):
    code = cli.main(["select", str(sweep_dir), "--target", "eo<=0.5", "--confidence", "0.9", "--split", "valid"])
    out = capsys.readouterr().out
    assert code == 0 and "selected" in out
    doc = json.loads((sweep_dir / certify.SELECTION_FILE).read_text())
    assert doc["split"] == "valid" and doc["confidence"] == 0.9 and doc["method"] == "fixed-sequence"
    assert doc["n_rows"] == 400 and sum(v["accuracy"]["n"] for v in doc["group_counts"].values()) == 400
    cert = sweep_dir / certify.HEADS_DIR / (doc["head_file"].rsplit("/", 1)[1].replace(".json", certify.CERT_SUFFIX))
    assert json.loads(cert.read_text()) == doc

    code = cli.main(["select", str(sweep_dir), "--target", "eo<=0.001", "--split", "valid"])
    out = capsys.readouterr().out
    assert code == 0 and "abstained" in out and "smallest certifiable gap" in out


def test_cli_select_refuses_the_fit_split(sweep_dir, capsys):
    assert cli.main(["select", str(sweep_dir), "--target", "eo<=0.1", "--split", "train"]) == 3
    assert "fitted on" in capsys.readouterr().err


def test_cli_select_without_heads(tmp_path, capsys):
    assert cli.main(["select", str(tmp_path), "--target", "eo<=0.1"]) == 3
    assert "no heads" in capsys.readouterr().err


def test_sweep_outputs_carry_intervals_and_the_overfitting_report(sweep_dir):
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    assert doc["confidence"] == 0.95
    for row in doc["rows"]:
        for key in ("accuracy", "equalized_odds_difference", "demographic_parity_difference", "worst_group_accuracy"):
            if row.get(f"{key}_low") is not None and row.get(key) is not None:
                assert row[f"{key}_low"] - 1e-12 <= row[key] <= row[f"{key}_high"] + 1e-12, (key, row)
    over = doc["overfitting"]
    assert over["cert_split"] == "valid" and over["metric"] == "equalized_odds_difference"
    assert len(over["rows"]) == 4 and all(r["cert_bound"] >= r["cert_gap"] for r in over["rows"])
    report = (sweep_dir / "report.md").read_text()
    assert "## Overfitting" in report and "Clopper-Pearson" in report
    rates = (sweep_dir / "group_rates.csv").read_text().splitlines()
    assert rates[0].split(",") == ["head", "split", "group", "rate", "estimate", "low", "high"]
    assert len(rates) - 1 == 4 * 3 * 2 * 3  # heads x splits x groups x rates


def test_fit_prints_intervals_at_the_chosen_level(cache_path, tmp_path, capsys):
    code = cli.main(["fit", str(cache_path), "--constraint", "dp", "--eps", "0.1", "--confidence", "0.9",
                     "--save", str(tmp_path / "head.json")])
    out = capsys.readouterr().out
    assert code == 0 and "acc_ci" in out and "eo_diff_ci" in out
    assert cli.main(["fit", str(cache_path), "--confidence", "95", "--save", str(tmp_path / "h2.json")]) == 3
    assert "confidence must be a number in (0, 1)" in capsys.readouterr().err
