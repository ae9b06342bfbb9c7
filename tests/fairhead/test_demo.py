"""The README's main job, end to end on a tiny configuration: generate -> extract -> sweeps -> protocols -> report."""

from __future__ import annotations

import csv
import json

import pytest

from fairhead import demo


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, capsys):
    pytest.importorskip("fairlearn")
    # a milder imbalance than the default so that 700 images leave every (label, group) cell of the
    # validation split enough rows for M1's equalized-odds constraint
    from fairhead.full_compare import NetworkOptions

    # --full-network (off by default) with a one-epoch, 32 px network on 200 of the train rows
    tiny_network = dict(options=NetworkOptions(epochs=1, image_size=32, batch_size=16, threads=1), max_train=200,
                        max_eval=0, n_eps=2, plots=False)
    files = demo.run_demo(tmp_path, n=700, n_eps=3, compare_with=["threshold", "penalty"], progress=False,
                          correlation=0.7, minority_fraction=0.4, full_network=True, full_network_options=tiny_network)
    printed = capsys.readouterr().out
    assert "sweep 'dp'" in printed and "protocols" in printed and "demo finished" in printed
    assert "== what this shows ==" in printed and "demographic-parity gap of" in printed
    report = files["report"].read_text()
    assert "## What this shows" in report
    for name in ("dp", "dp-score"):
        folder = tmp_path / f"sweep-{name}"
        rows = read_csv(folder / "sweep.csv")
        assert {"unconstrained", "fairhead"} <= {r["method"] for r in rows}
        assert json.loads((folder / "sweep.json").read_text())["constraint"] == name
        assert (folder / "tradeoff.png").stat().st_size > 10_000
        assert f"sweep-{name}/tradeoff.png" in report
    assert {"penalty", "threshold"} <= {r["method"] for r in read_csv(tmp_path / "sweep-dp" / "sweep.csv")}
    protocols = read_csv(tmp_path / "protocols" / "protocols.csv")
    assert sorted({r["protocol"] for r in protocols}) == ["B1", "B2", "B3", "M1", "M2"]
    # the generated data carries a real fairness problem: the unconstrained head has a clear DP gap on test
    unconstrained = next(r for r in read_csv(tmp_path / "sweep-dp" / "sweep.csv")
                         if r["method"] == "unconstrained" and r["split"] == "test")
    assert float(unconstrained["demographic_parity_difference"]) > 0.2
    # the whole network beside the heads, in the demo's report and its own folder
    full = read_csv(tmp_path / "full-network" / "full_network.csv")
    assert {r["method"] for r in full if r["family"] == "full-network"} == {"penalty", "lagrangian"}
    assert "Full network vs last layer" in report and "full lagrangian eps=0.05" in report
    assert "full-network/report.md" in report and "full network vs last layer" in printed


def test_the_demo_runs_the_full_network_only_when_asked():
    from fairhead.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo"]).full_network is False
    assert parser.parse_args(["demo", "--full-network"]).full_network is True
