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
    with pytest.raises(DataError, match="`confidence` must be"):
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
    assert code == cli.EXIT_ABSTAINED and "abstained" in out and "smallest certifiable gap" in out


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
    assert "--confidence must be a number strictly between 0 and 1" in capsys.readouterr().err


# --- checks select_head and `fairhead select` make before certifying anything ----------------------------------

class _Fixed:
    """A stand-in head whose predictions are given (to test what select_head accepts)."""

    def __init__(self, pred, classes=(0, 1)):
        self.pred, self.classes_ = np.asarray(pred), np.asarray(classes)

    def predict(self, X):
        return self.pred


def test_select_head_refuses_one_group_kclass_and_non_binary():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    X = np.zeros((50, 1))
    with pytest.raises(DataError, match="hold 1 group"):
        select_head([_Fixed(p)], X, y, np.zeros(50), target="dp<=0.1")
    with pytest.raises(DataError, match="has 3 classes"):
        select_head([_Fixed(p, classes=(0, 1, 2))], X, y, rng.integers(0, 2, 50), target="dp<=0.1")
    with pytest.raises(DataError, match="predictions of head .* must hold 0/1"):
        select_head([_Fixed(p * 2)], X, y, rng.integers(0, 2, 50), target="dp<=0.1")
    with pytest.raises(DataError, match="y must hold 0/1"):
        select_head([_Fixed(p)], X, y + 1, rng.integers(0, 2, 50), target="dp<=0.1")
    with pytest.raises(DataError, match="bound must be one of"):
        select_head([_Fixed(p)], X, y, rng.integers(0, 2, 50), target="dp<=0.1", bound="wald")


def test_exact_bound_certifies_where_the_union_bound_abstains(path_heads):
    X, y, a = _draw(3000, 107)
    preds = [h.predict(X) for h in path_heads]
    exact = select_head(path_heads, X, y, a, target="eo<=0.1", confidence=0.9, predictions=preds)
    union = select_head(path_heads, X, y, a, target="eo<=0.1", confidence=0.9, predictions=preds, bound="union")
    for e, u in zip(exact.bounds, union.bounds):
        assert e.gap == u.gap and e.bound < u.bound  # same heads, same counts: a tighter bound on each
    assert exact.certificate()["bound_name"] == "exact" and union.certificate()["bound_name"] == "union"
    assert sum(b.certified for b in exact.bounds) >= sum(b.certified for b in union.bounds)


def test_abstention_plans_with_the_same_bound(path_heads):
    X, y, a = _draw(500, 108)
    sel = select_head(path_heads, X, y, a, target="eo<=0.06", confidence=0.9)
    assert sel.abstained and [p["rows"] for p in sel.plan][0] == 500
    certifiable = [p["smallest_certifiable"] for p in sel.plan]
    assert certifiable[0] == pytest.approx(sel.smallest_certifiable, abs=1e-12)
    assert all(b <= a_ for a_, b in zip(certifiable, certifiable[1:]))  # more rows, smaller certifiable gap
    if sel.rows_needed is not None:  # the planner's row count certifies the first head's observed rates
        from solvers.intervals import GroupCounts, gap_upper_bound

        first = sel.bounds[0].index
        counts = GroupCounts.from_predictions(y, path_heads[first].predict(X), sensitive_features=a)
        assert gap_upper_bound(counts.scaled(sel.rows_needed / 500), "eo", 0.1) <= 0.06


def test_aimed_eps_from_the_margin():
    from solvers.intervals import GroupCounts
    from solvers.select import aimed_eps, certification_margin

    counts = GroupCounts(("a", "b"), {"a": {"selection_rate": (300, 1000), "accuracy": (800, 1000)},
                                      "b": {"selection_rate": (150, 500), "accuracy": (400, 500)}})
    m1500 = certification_margin(counts, "dp", confidence=0.9)
    m6000 = certification_margin(counts, "dp", confidence=0.9, n_rows=6000)
    assert 0 < m6000 < m1500  # four times the rows: about half the margin
    assert m6000 == pytest.approx(m1500 / 2, rel=0.15)
    assert aimed_eps(0.05, 0.02) == [0.04, 0.03, 0.02]
    assert aimed_eps(0.01, 0.02) == [0.0]


def test_cli_select_refuses_another_cache(sweep_dir, tmp_path, capsys, split_arrays, table_csv):
    """A cache whose rows differ (here: the splits renamed, so 'valid' is the heads' fit rows) is refused
    before anything is certified, and the sweep's selection.json is left as it was."""
    import embedcache

    text = table_csv.read_text().replace(",train\n", ",tmp\n").replace(",valid\n", ",train\n") \
        .replace(",tmp\n", ",valid\n")
    other_csv = tmp_path / "swapped.csv"
    other_csv.write_text(text)
    other = tmp_path / "swapped.h5"
    embedcache.import_table(other_csv, label="label", sensitive=["group"], split="split", id_col="id", out=other)
    before = (sweep_dir / certify.SELECTION_FILE).read_bytes() if (sweep_dir / certify.SELECTION_FILE).exists() \
        else None
    code = cli.main(["select", str(sweep_dir), "--target", "eo<=0.5", "--split", "valid", "--cache", str(other)])
    err = capsys.readouterr().err
    assert code == 3 and "is not the cache the heads" in err and len(err.strip().splitlines()) == 1
    after = (sweep_dir / certify.SELECTION_FILE).read_bytes() if (sweep_dir / certify.SELECTION_FILE).exists() \
        else None
    assert after == before


def test_cli_select_one_group_and_union_bound(tmp_path, capsys, table_csv):
    """A certification split with one group is refused in one line; --bound union is recorded."""
    import embedcache

    lines = table_csv.read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if not (ln.endswith(",b,valid"))]
    one = tmp_path / "one.csv"
    one.write_text("\n".join(keep) + "\n")
    cache = tmp_path / "one.h5"
    embedcache.import_table(one, label="label", sensitive=["group"], split="split", id_col="id", out=cache)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(cache), "--constraint", "dp", "--eps-grid", "0.1", "--out", str(out),
                     "--no-plots"]) == 0
    capsys.readouterr()
    assert cli.main(["select", str(out), "--target", "dp<=0.2", "--split", "valid"]) == 3
    err = capsys.readouterr().err
    assert "hold 1 group" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / certify.SELECTION_FILE).exists()
    assert cli.main(["select", str(out), "--target", "dp<=0.01", "--split", "test", "--bound", "union"]) == 5
    printed = capsys.readouterr().out
    doc = json.loads((out / certify.SELECTION_FILE).read_text())
    assert doc["bound_name"] == "union" and doc["abstained"]
    assert "smallest certifiable dp gap of the first head by certification rows" in printed
    assert "aim below the target" in printed and doc["aim_below"]["margin"] > 0


def test_cli_select_uses_the_sweeps_positive_class(cache_path, split_arrays, tmp_path, capsys):
    """A sweep run with --pos-label 0 is certified on y = (label == 0), not on the default class."""
    out = tmp_path / "sweep0"
    assert cli.main(["sweep", str(cache_path), "--constraint", "eo", "--eps-grid", "0.2", "--pos-label", "0",
                     "--out", str(out), "--no-plots"]) == 0
    assert cli.main(["select", str(out), "--target", "eo<=0.5", "--split", "valid"]) == 0
    capsys.readouterr()
    doc = json.loads((out / certify.SELECTION_FILE).read_text())
    assert doc["pos_label"] == "0"
    positives = sum(v["true_positive_rate"]["n"] for v in doc["group_counts"].values())
    assert positives == int((split_arrays["valid"].y == 0).sum())


def test_select_exits_5_when_it_abstains_and_names_heads_by_their_bound(sweep_dir, cache_path, capsys):
    """Scripts can tell an abstention from a certified head by the exit status; the table names heads
    by their eps, not by their file."""
    from fairhead.cli import EXIT_ABSTAINED, main

    code = main(["select", str(sweep_dir), "--target", "dp:0.0", "--split", "valid", "--cache", str(cache_path)])
    out = capsys.readouterr().out
    assert code == EXIT_ABSTAINED == 5
    assert "eps=" in out and "eps-0" not in out
