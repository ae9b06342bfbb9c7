"""Data-parallel fits: 2 gloo processes (``torchrun``), each holding half the rows of X, give the
single-process heads bit for bit, for score and rate constraints and along a path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from solvers import FairLogisticRegression, RowShard, fit_path, shard_range
from solvers.errors import DataError
from support import TESTS_DIR
from support.data_parallel import BLOCK_BYTES, CASES, MC_CASES, PATH_EPS, mc_problem, problem

LAUNCH_TIMEOUT = 240


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    env = dict(os.environ, FAIRHEAD_BLOCK_BYTES=BLOCK_BYTES, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(TESTS_DIR / "support" / "data_parallel_worker.py"), str(out), str(TESTS_DIR)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def single():
    """The heads of one process, with the ranks' blocks."""
    os.environ["FAIRHEAD_BLOCK_BYTES"] = BLOCK_BYTES
    try:
        X, y, a = problem()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heads = {name: FairLogisticRegression(constraint=c, eps=eps, backend="torch").fit(X, y, sensitive_features=a)
                     for name, (c, eps) in CASES.items()}
            path = [h.coef_.ravel() for h in fit_path(X, y, sensitive_features=a, eps_grid=PATH_EPS, constraint="dp",
                                                      backend="torch")]
        return X, heads, path
    finally:
        del os.environ["FAIRHEAD_BLOCK_BYTES"]


@pytest.mark.slow
def test_each_rank_holds_its_share_of_the_rows(ranks):
    assert ranks[0]["rows"][0] == 0 and ranks[0]["rows"][1] == ranks[1]["rows"][0] and ranks[1]["rows"][1] == 3000
    assert 1000 < ranks[0]["rows"][1] < 2000  # both halves hold rows


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.slow
def test_every_rank_gets_the_single_process_head_bit_for_bit(ranks, single, name):
    X, heads, _ = single
    for got in ranks:
        h = got["heads"][name]
        np.testing.assert_array_equal(h["coef"], heads[name].coef_.ravel())
        assert h["intercept"] == float(heads[name].intercept_[0])
        np.testing.assert_array_equal(h["scores"], heads[name].decision_function(X))
        assert any(n.startswith("data-parallel: 2 ranks") for n in h["notes"])


@pytest.mark.slow
def test_a_path_is_the_single_process_path(ranks, single):
    for got in ranks:
        for mine, theirs in zip(got["path"], single[2]):
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.slow
def test_overlapping_shards_are_refused_on_every_rank(ranks):
    for got in ranks:
        assert got["overlap"] is not None and "do not cover the 3000 rows once each" in got["overlap"]
        assert "solvers.shard_range" in got["overlap"] and "\n" not in got["overlap"]


def test_shards_are_whole_blocks_in_rank_order(monkeypatch):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", BLOCK_BYTES)  # 64 rows of 16 features
    cuts = [shard_range(3000, 16, r, 3) for r in range(3)]
    assert cuts[0][0] == 0 and cuts[-1][1] == 3000
    assert all(a[1] == b[0] and a[1] % 64 == 0 for a, b in zip(cuts, cuts[1:]))
    assert [shard_range(10, 16, r, 2) for r in range(2)] == [(0, 0), (0, 10)]  # fewer blocks than ranks: one holds none


def test_unaligned_or_outside_shards_and_a_missing_group_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", BLOCK_BYTES)
    X, y, _ = problem()
    with pytest.raises(DataError, match=r"must start at a multiple of 64 rows .* got start=10; cut the rows"):
        RowShard(X[10:100], n_total=3000, start=10)
    with pytest.raises(DataError, match=r"rows \[2944, 3034\) must lie in \[0, n_total=3000\)"):
        RowShard(X[:90], n_total=3000, start=2944)
    with pytest.raises(DataError, match="torch.distributed, which is not initialised; launch with `torchrun"):
        FairLogisticRegression(backend="torch").fit(RowShard(X[:1024], n_total=3000, start=0), y)


@pytest.mark.parametrize("bad", ["lots", "100", "-4MiB"])
def test_a_bad_block_size_in_the_environment_is_named(monkeypatch, bad):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", bad)
    with pytest.raises(DataError, match=f"FAIRHEAD_BLOCK_BYTES={bad!r} is not a size of at least 4 KiB"):
        shard_range(3000, 16, 0, 2)


@pytest.mark.parametrize("name", list(MC_CASES))
@pytest.mark.slow
def test_k_class_heads_on_every_rank_are_the_single_process_ones(ranks, name):
    """2-D products (X @ W, X^T R with K columns) combined across ranks in block order: the same bits."""
    constraint, eps = MC_CASES[name]
    os.environ["FAIRHEAD_BLOCK_BYTES"] = BLOCK_BYTES
    try:
        X, y, a = mc_problem()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            head = FairLogisticRegression(constraint=constraint, eps=eps, backend="torch").fit(X, y, sensitive_features=a)
    finally:
        del os.environ["FAIRHEAD_BLOCK_BYTES"]
    assert head.coef_.shape == (3, 16)
    for rank in ranks:
        got = rank["heads"][name]
        np.testing.assert_array_equal(np.asarray(got["coef"]), head.coef_.ravel())
        np.testing.assert_array_equal(np.asarray(got["intercept"]), head.intercept_)
        np.testing.assert_array_equal(np.asarray(got["scores"]), head.decision_function(X).ravel())
