"""`torchrun -m fairhead fit|sweep` with 2 gloo processes: each rank holds half the rows of the
features, and the saved head and the sweep's heads are one process's, bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fairhead.cli import main
from solvers import load_head

#: 4 KiB blocks: 128 rows of the 6 test features, so the 1200 train rows are 10 blocks, 5 per rank
BLOCK_BYTES = "4096"
LAUNCH_TIMEOUT = 240


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAIRHEAD_BLOCK_BYTES=BLOCK_BYTES, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "fairhead", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", BLOCK_BYTES)


@pytest.mark.slow
def test_fit_saves_the_single_process_head_and_prints_once(cache_path, tmp_path, small_blocks, capsys):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    args = ["fit", str(cache_path), "--constraint", "eo", "--eps", "0.03", "--backend", "torch"]
    assert main([*args, "--save", str(one)]) == 0
    proc = torchrun(*args, "--save", str(two))
    assert proc.stdout.count("saved head to") == 1  # rank 0 prints, rank 1 does not
    h1, h2 = load_head(one), load_head(two)
    np.testing.assert_array_equal(h2.coef_, h1.coef_)
    np.testing.assert_array_equal(h2.intercept_, h1.intercept_)
    assert any(n.startswith("data-parallel: 2 ranks") for n in h2.certificate_.notes)


@pytest.mark.slow
def test_a_streamed_sweep_writes_the_single_process_heads_once(cache_path, tmp_path, small_blocks, capsys):
    args = ["sweep", str(cache_path), "--constraint", "dp", "--eps-grid", "0.1", "0.03", "--no-plots",
            "--backend", "torch"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    torchrun(*args, "--out", str(tmp_path / "two"), "--max-memory", "4MB")  # shards streamed from the cache
    heads = {}
    for name in ("one", "two"):
        doc = json.loads((tmp_path / name / "sweep.json").read_text())
        heads[name] = [(h["eps"], h["coef"], h["intercept"]) for h in doc["heads"]]
    assert len(heads["one"]) == 3 and heads["two"] == heads["one"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.parametrize("argv", [["protocols", "{cache}", "--out", "{tmp}/p"], ["info", "{cache}"],
                                  ["sweep", "{cache}", "--compare", "threshold", "--out", "{tmp}/s"]])
def test_commands_that_need_one_process_are_refused_under_torchrun(cache_path, tmp_path, monkeypatch, capsys, argv):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    code = main([a.format(cache=cache_path, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 3 and err.count("\n") == 0, err
    assert "torchrun" in err and ("without torchrun" in err or "drop --compare under torchrun" in err)
    assert not (tmp_path / "p").exists() and not (tmp_path / "s").exists()
