"""`fairhead fit/sweep --max-memory`: the features streamed from the cache give the in-memory heads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fairhead import sweep
from fairhead.cli import main
from solvers import load_head, out_of_core

#: streamed and in-memory heads run the same arithmetic block by block (bitwise equal on the CPU)
RTOL_SAME = 1e-8


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    """256 KiB blocks (production: 16 MiB), so the tiny test caches stream under budgets of a few MB."""
    monkeypatch.setattr(out_of_core, "BLOCK_BYTES", 2**18)


def test_fit_with_max_memory_saves_the_in_memory_head_and_says_it_streamed(cache_path, tmp_path, capsys):
    heads = {}
    for name, extra in (("mem", []), ("ooc", ["--max-memory", "4MB"])):
        path = tmp_path / f"{name}.json"
        code = main(["fit", str(cache_path), "--constraint", "eo", "--eps", "0.05", "--backend", "torch",
                     "--eval-split", "test", "--save", str(path), *extra])
        assert code == 0, capsys.readouterr().err
        heads[name] = load_head(path)
    out = capsys.readouterr().out
    assert "test" in out and "eo_diff" in out
    np.testing.assert_allclose(heads["ooc"].coef_, heads["mem"].coef_, rtol=RTOL_SAME)
    notes = heads["ooc"].certificate_.notes
    assert any(n.startswith("out-of-core: streamed") and "budget 4 MB" in n for n in notes)


def test_sweep_with_max_memory_gives_the_in_memory_heads(cache_path, tmp_path):
    runs = {}
    for name, budget in (("mem", None), ("ooc", "4MB")):
        result = sweep.run_sweep(cache_path, out=tmp_path / name, constraint="dp-score", eps_grid=[0.1, 0.03],
                                 plots=False, progress=False, backend="torch", max_memory=budget)
        runs[name] = [r for r in result.records if r.method == "fairhead"]
    for mem, ooc in zip(runs["mem"], runs["ooc"]):
        np.testing.assert_allclose(ooc.coef, mem.coef, rtol=RTOL_SAME)
        assert mem.metrics["test"]["accuracy"] == ooc.metrics["test"]["accuracy"]
        assert any(n.startswith("out-of-core") for n in ooc.certificate["notes"])
    saved = json.loads((tmp_path / "ooc" / "sweep.json").read_text())
    assert saved["provenance"]


@pytest.mark.parametrize("size", ["2XB", "-1GB", "lots"])
def test_a_bad_memory_size_is_a_usage_error_in_one_line(cache_path, size, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(cache_path), f"--max-memory={size}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--max-memory" in lines[0] and "2GB" in lines[0] and size in lines[0]


def test_max_memory_with_in_memory_baselines_is_refused(cache_path, tmp_path, capsys):
    code = main(["sweep", str(cache_path), "--constraint", "dp", "--compare", "threshold", "--max-memory", "1GB",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.count("\n") == 0
    assert "drop --compare or --max-memory" in err
