"""A constraint added to ``solvers.constraints.CONSTRAINTS`` reaches the CLI with no edit there: ``fpr``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support.cli import main_cli, read_rows


def test_fit_accepts_fpr_and_saves_a_head_that_meets_it(cache_path, tmp_path, capsys):
    head_path = tmp_path / "head.json"
    code, out, err = main_cli(capsys, "fit", cache_path, "--constraint", "fpr", "--eps", "0.05",
                              "--fit-split", "train", "--save", head_path)
    assert code == 0, err
    assert "'fpr'" in out and "among y=0 rows" in out
    assert json.loads(head_path.read_text())["params"]["constraint"] == "fpr"


def test_sweep_accepts_fpr_and_reports_its_own_value(cache_path, tmp_path, capsys):
    code, out, err = main_cli(capsys, "sweep", cache_path, "--constraint", "fpr", "--eps-grid", "0.1", "0.05",
                              "--no-plots", "--out", tmp_path / "sweep")
    assert code == 0, err
    rows = read_rows(tmp_path / "sweep" / "sweep.csv")
    heads = [r for r in rows if r["method"] == "fairhead" and r["split"] == "train"]
    assert len(heads) == 2
    assert all(float(r["constraint_value"]) <= float(r["eps"]) + 8 * np.finfo(np.float64).eps for r in heads)


def test_help_lists_fpr_among_the_rate_constraints(capsys):
    with pytest.raises(SystemExit) as exit_:
        main_cli(capsys, "fit", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    text = "".join(out.split())  # argparse wraps lines, also at hyphens
    assert "rate:dp,eopp,eo,error-rate,fpr,dp-ratio;score:" in text
    assert "for" + "eopp-score/eo-score/eopp/eo/fpr,(group,label)cells" in text


def test_compare_picks_fairlearns_fpr_form_and_skips_the_seed_penalty_that_has_none(cache_path, tmp_path, capsys):
    pytest.importorskip("fairlearn")
    code, out, err = main_cli(capsys, "sweep", cache_path, "--constraint", "fpr", "--eps-grid", "0.05", "--no-plots",
                              "--compare", "threshold", "penalty", "--out", tmp_path / "sweep")
    assert code == 0, err
    assert "skipped penalty: the seed paper has no penalty form of 'fpr'" in out
    methods = {r["method"] for r in read_rows(tmp_path / "sweep" / "sweep.csv")}
    assert "threshold" in methods and "penalty" not in methods
