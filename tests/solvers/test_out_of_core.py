"""Out-of-core fits: X streamed from an HDF5 cache in row chunks under a memory budget.

The streamed products run over the same row blocks as the in-memory ones and sum them in the
same order, so on the CPU the heads are not just close: they are the same bits. The tests assert
the issue's 1e-8 (relative) and that the certificate says how the fit was streamed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest

import embedcache
from solvers import FairLogisticRegression, RowChunks, fit_path
from solvers._linalg import x_dot, xt_dot
from solvers import out_of_core
from solvers.errors import DataError
from solvers.out_of_core import block_rows, parse_memory
from solvers.synthetic import make_fair_classification

#: the issue's agreement bound for streamed vs in-memory coefficients (they are in fact bitwise equal)
RTOL_SAME = 1e-8
#: a budget that cuts the 9000-row, 128-feature test cache into 5 reads (blocks of 2048 rows)
SMALL_BUDGET = "10MB"
#: test-sized blocks (production blocks are 16 MiB: every matrix here would be one block), so the
#: test matrices are cut into many blocks, in memory and streamed alike
TEST_BLOCK_BYTES = 2**20


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    monkeypatch.setattr(out_of_core, "BLOCK_BYTES", TEST_BLOCK_BYTES)


def _write_cache(path, X, y, a, split, *, dtype="float32"):
    """A real cache, written by the real importer from an .npz table."""
    table = path.with_suffix(".npz")
    np.savez(table, features=X, label=y, group=np.where(a == 1, "b", "a"), split=split,
             id=np.array([f"r{i}" for i in range(len(y))]))
    return embedcache.import_table(table, label="label", sensitive=["group"], split="split", id_col="id",
                                   out=path, feature_dtype=dtype, progress=False)


@pytest.fixture(scope="module")
def scattered_cache(tmp_path_factory):
    """9000 x 128 float32 rows; the train split is 60% of them, scattered through the file."""
    X, y, a = make_fair_classification(9000, 128, embedding_like=True, dtype=np.float32, seed=11)
    return _scattered_train(tmp_path_factory.mktemp("ooc") / "c.h5", X, y, a)


def _scattered_train(path, X, y, a):
    """A cache of ``X`` whose train split is 60% of the rows, scattered through the file:
    ``(path, train rows, features, labels, groups)``."""
    split = np.random.default_rng(0).choice(["train", "valid", "test"], size=len(y), p=[0.6, 0.2, 0.2])
    path = _write_cache(path, X, y, a, split)
    with embedcache.open(path) as cache:
        data = cache.load("train")
    return path, data.rows, data.features, data.labels, data.sensitive["group"]


def _streamed(path, rows, budget=SMALL_BUDGET):
    return RowChunks(path, rows, dataset="features", max_memory=budget)


def _same(a, b):
    np.testing.assert_allclose(a, b, rtol=RTOL_SAME, atol=RTOL_SAME * float(np.abs(b).max()))


# --------------------------------------------------------------------------- the source
def test_chunks_select_the_split_rows_of_each_file_chunk(scattered_cache):
    path, rows, X, *_ = scattered_cache
    Xs = _streamed(path, rows)
    assert Xs.shape == X.shape and Xs.n_chunks > 1
    got = np.concatenate([blk.copy() for _, blk in Xs.blocks()])
    np.testing.assert_array_equal(got, X)
    starts = [s for s, _ in Xs.blocks()]
    assert starts == list(range(0, len(rows), block_rows(X.shape[1])))


def test_products_are_bitwise_the_in_memory_ones(scattered_cache):
    path, rows, X, *_ = scattered_cache
    Xs = _streamed(path, rows)
    rng = np.random.default_rng(1)
    w, r = rng.normal(size=X.shape[1]), rng.normal(size=(len(rows), 3))
    np.testing.assert_array_equal(x_dot(Xs, w), x_dot(X, w))
    np.testing.assert_array_equal(xt_dot(Xs, r), xt_dot(X, r))
    np.testing.assert_array_equal(Xs @ w, x_dot(X, w))


def test_caches_are_memory_mapped_and_compressed_files_read_with_hdf5_alike(scattered_cache, tmp_path):
    path, rows, X, y, a = scattered_cache
    with h5py.File(path, "r") as f:
        full = f["features"][()]
    with h5py.File(tmp_path / "gz.h5", "w") as f:
        f.create_dataset("X", data=full, chunks=(64, full.shape[1]), compression="gzip")
    mapped, read = _streamed(path, rows), RowChunks(tmp_path / "gz.h5", rows, dataset="X", max_memory=SMALL_BUDGET)
    assert mapped.mapped and not read.mapped
    assert "memory-mapped" in mapped.describe() and "HDF5 reads" in read.describe()
    kw = dict(constraint="dp-score", eps=0.02, backend="torch")
    heads = [FairLogisticRegression(**kw).fit(Xs, y, sensitive_features=a) for Xs in (X, mapped, read)]
    for head in heads[1:]:
        np.testing.assert_array_equal(head.coef_, heads[0].coef_)


def test_converting_a_streamed_x_to_an_array_is_refused(scattered_cache):
    path, rows, *_ = scattered_cache
    with pytest.raises(DataError, match="streamed from disk"):
        np.asarray(_streamed(path, rows))


# --------------------------------------------------------------------------- heads agree
CASES = [
    pytest.param(None, 0.05, id="unconstrained"),
    pytest.param("dp-score", 0.02, id="dp-score"),
    pytest.param("eo-score", 0.02, id="eo-score"),
    pytest.param("dp", 0.05, id="dp"),
    pytest.param("eo", 0.05, id="eo"),
]


@pytest.mark.parametrize("constraint, eps", CASES)
def test_streamed_head_equals_the_in_memory_head(scattered_cache, constraint, eps):
    path, rows, X, y, a = scattered_cache
    kw = dict(constraint=constraint, eps=eps, backend="torch")
    sf = a if constraint else None
    mem = FairLogisticRegression(**kw).fit(X, y, sensitive_features=sf)
    ooc = FairLogisticRegression(**kw).fit(_streamed(path, rows), y, sensitive_features=sf)
    _same(ooc.coef_, mem.coef_)
    _same(ooc.intercept_, mem.intercept_)
    c_mem, c_ooc = mem.certificate_, ooc.certificate_
    assert (c_ooc.status, c_ooc.n_iter, c_ooc.passes) == (c_mem.status, c_mem.n_iter, c_mem.passes)
    assert c_ooc.max_violation == pytest.approx(c_mem.max_violation, abs=1e-12)
    note = c_ooc.notes[-1]
    assert note.startswith("out-of-core: streamed ") and "budget 10 MB" in note and "same iterates" in note
    assert not any(n.startswith("out-of-core") for n in c_mem.notes)
    np.testing.assert_array_equal(ooc.decision_function(_streamed(path, rows)), mem.decision_function(X))


def test_the_estimator_budget_replaces_the_source_budget_and_streams_arrays(scattered_cache):
    path, rows, X, y, a = scattered_cache
    mem = FairLogisticRegression(constraint="dp-score", eps=0.02, backend="torch").fit(X, y, sensitive_features=a)
    head = FairLogisticRegression(constraint="dp-score", eps=0.02, backend="torch", max_memory=12_000_000)
    head.fit(_streamed(path, rows, budget="1GB"), y, sensitive_features=a)
    assert "budget 12 MB" in head.certificate_.notes[-1]
    _same(head.coef_, mem.coef_)
    arr = FairLogisticRegression(constraint="dp-score", eps=0.02, backend="torch", max_memory="10MB")
    arr.fit(X, y, sensitive_features=a)  # an array (e.g. a np.memmap) streamed in chunks
    assert arr.certificate_.notes[-1].startswith("out-of-core")
    _same(arr.coef_, mem.coef_)


def test_a_streamed_path_equals_the_in_memory_path(scattered_cache):
    path, rows, X, y, a = scattered_cache
    grid = [0.06, 0.03]
    mem = fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="eo-score", backend="torch")
    ooc = fit_path(_streamed(path, rows), y, sensitive_features=a, eps_grid=grid, constraint="eo-score",
                   backend="torch")
    for h_mem, h_ooc in zip(mem, ooc):
        _same(h_ooc.coef_, h_mem.coef_)
        assert h_ooc.certificate_.notes[-1].startswith("out-of-core")


def test_float16_cache_streams_as_float16_and_equals_the_in_memory_half_fit(tmp_path):
    X, y, a = make_fair_classification(3000, 16, embedding_like=True, dtype=np.float32, seed=5)
    split = np.where(np.arange(len(y)) % 3 == 0, "test", "train")
    path = _write_cache(tmp_path / "half.h5", X, y, a, split, dtype="float16")
    with embedcache.open(path) as cache:
        data = cache.load("train")
    assert data.features.dtype == np.float16
    Xs = RowChunks(path, data.rows, dataset="features", max_memory="8MB")
    assert Xs.dtype == np.float16 and all(blk.dtype == np.float16 for _, blk in Xs.blocks())
    kw = dict(constraint="eo", eps=0.05, backend="torch")
    mem = FairLogisticRegression(**kw).fit(data.features, data.labels, sensitive_features=data.sensitive["group"])
    ooc = FairLogisticRegression(**kw).fit(Xs, data.labels, sensitive_features=data.sensitive["group"])
    _same(ooc.coef_, mem.coef_)
    assert "float16" in ooc.certificate_.notes[-1]


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", ["2XB", "", "-1GB", "GB", "1e3GB", "0", 0, -5, 1.5, True])
def test_bad_budgets_give_one_line_errors(bad):
    with pytest.raises(DataError) as info:
        if isinstance(bad, str):
            parse_memory(bad)
        else:
            FairLogisticRegression(max_memory=bad).fit(np.zeros((20, 2)), np.arange(20) % 2)
    msg = str(info.value)
    assert "\n" not in msg and "max_memory" in msg


def test_budget_strings_follow_decimal_and_binary_units():
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(" 1.5 gib ") == int(1.5 * 2**30)
    assert parse_memory(4096) == 4096


def test_a_budget_below_one_block_names_the_smallest_one(scattered_cache):
    path, rows, *_ = scattered_cache
    with pytest.raises(DataError, match=r"max_memory='100kB' is too small .* raise max_memory to [\d.]+ MB or more"):
        _streamed(path, rows, budget="100kB")


def test_out_of_core_refuses_cvxpy_and_l1_in_one_line(scattered_cache):
    path, rows, X, y, a = scattered_cache
    for kw in (dict(backend="cvxpy"), dict(penalty="l1")):
        with pytest.raises(DataError, match="torch backend only") as info:
            FairLogisticRegression(**kw).fit(_streamed(path, rows), y)
        assert "\n" not in str(info.value)


def test_non_finite_rows_and_wrong_lengths_are_refused(tmp_path):
    X = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    X[417, 3] = np.nan
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["X"] = X
    Xs = RowChunks(tmp_path / "x.h5", dataset="X", max_memory="16MB")
    y = np.arange(600) % 2
    with pytest.raises(DataError, match="NaN or infinite feature in row 417"):
        FairLogisticRegression().fit(Xs, y)
    with pytest.raises(DataError, match="X has 600 rows but y has 599"):
        FairLogisticRegression().fit(Xs, y[:-1])


# --------------------------------------------------------------------------- memory
MEASURE = textwrap.dedent("""
    import json, sys, warnings
    import h5py
    import numpy as np
    from solvers import FairLogisticRegression, RowChunks, out_of_core

    out_of_core.BLOCK_BYTES = %d  # the test's blocks (see TEST_BLOCK_BYTES)
    out_of_core.PREFETCH = %s  # the reader thread on or off, whatever the machine's load
    out_of_core.free_cores = lambda: 1

    path, budget, split = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with h5py.File(path, "r") as f:
        y = f["y"][()]
    # "scattered": 70%% of the rows, gathered on the first pass and spilled (solvers._spill), then read
    # from the spill; "all": every row, views of the map
    rows = None if split == "all" else np.flatnonzero(np.random.default_rng(0).random(len(y)) < 0.7)
    y = y if rows is None else y[rows]

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    def peak_of(X):  # peak resident memory of one fit above the resident set just before it
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak resident set) to the current resident set
        before = rss("VmRSS")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter: a ConvergenceWarning
            head = FairLogisticRegression(backend="torch", max_iter=15).fit(X, y)
        return rss("VmHWM") - before, head

    peak_of(RowChunks(path, rows, dataset="X", max_memory=budget))  # warm-up: imports, torch's and HDF5's allocations
    with h5py.File(path, "r") as f:
        X = f["X"][()] if rows is None else f["X"][()][rows]
    in_memory, mem = peak_of(X)  # X itself is resident before the fit: this is the fit's own working set
    x_bytes = X.nbytes
    del X
    streamed, ooc = peak_of(RowChunks(path, rows, dataset="X", max_memory=budget))
    print(json.dumps({"streamed": streamed, "in_memory": in_memory, "x_bytes": x_bytes,
                      "same": bool(np.array_equal(ooc.coef_, mem.coef_)),
                      "passes": ooc.certificate_.passes, "note": ooc.certificate_.notes[-1]}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("split", ["all", "scattered"])
@pytest.mark.parametrize("reader", [False, True])
def test_streamed_fit_stays_under_a_budget_of_a_tenth_of_x(tmp_path, reader, split):
    """Peak resident memory (VmHWM, reset before each fit, minus the resident set then) in a fresh
    process, X 120 MB and the budget 12 MB. The in-memory fit of the same rows, with X already
    resident, measures the fit's own working set (O(n) vectors, the d x d preconditioner) that the
    budget does not cover; the streamed fit may add at most the budget to it. glibc's malloc
    thresholds are fixed, so freed arrays leave the resident set (with its adaptive threshold the
    same fit's peak moves by +-8 MB with the heap's history). A scattered split is spilled to a
    file and read from its maps, one or two blocks at a time: they count, the file does not."""
    n, d = 120000, 250
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    with h5py.File(tmp_path / "big.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(64, d))
        f["y"] = y
    budget = X.nbytes // 10
    script = tmp_path / "measure.py"
    script.write_text(MEASURE % (TEST_BLOCK_BYTES, reader))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "big.h5"), str(budget), split],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = out["streamed"] - out["in_memory"]
    assert extra <= budget, f"streaming took {extra / 1e6:.1f} MB over the fit's own, budget {budget / 1e6:.1f} MB"
    assert out["streamed"] < out["x_bytes"] / 2, out  # X was never materialised
    assert out["same"] and out["passes"] >= 10 and "budget 12 MB" in out["note"]
    assert ("spilled to a contiguous file" in out["note"]) == (split == "scattered")


def test_the_module_examples_run():
    import doctest

    import solvers.out_of_core

    result = doctest.testmod(solvers.out_of_core)
    assert result.attempted >= 2 and result.failed == 0


# --------------------------------------------------------------------------- K-class heads
@pytest.mark.slow
@pytest.mark.parametrize("constraint,eps", [(None, 0.05), ("dp-score", 0.05), ("dp", 0.05)],
                         ids=["unconstrained", "dp-score", "dp"])
def test_k_class_heads_streamed_are_the_in_memory_ones(tmp_path, constraint, eps):
    """2-D products (X @ W, W of shape (d, K)) run over the same row blocks streamed and in memory."""
    from solvers.synthetic import make_fair_multiclass

    X, y, a = make_fair_multiclass(9000, 128, n_classes=4, embedding_like=True, dtype=np.float32, seed=5)
    path = _write_cache(tmp_path / "k.h5", X, y, a, np.full(len(y), "train"))
    with embedcache.open(path) as cache:
        data = cache.load("train")
    Xs = _streamed(path, data.rows)
    assert Xs.n_chunks > 1 and len(list(Xs.blocks())) > 1
    kw = dict(constraint=constraint, eps=eps, backend="torch")
    mem = FairLogisticRegression(**kw).fit(data.features, data.labels, sensitive_features=data.sensitive["group"])
    streamed = FairLogisticRegression(**kw).fit(Xs, data.labels, sensitive_features=data.sensitive["group"])
    assert mem.coef_.shape == (4, 128)
    np.testing.assert_array_equal(streamed.coef_, mem.coef_)
    np.testing.assert_array_equal(streamed.decision_function(Xs), mem.decision_function(data.features))


@pytest.fixture(scope="module")
def narrow_cache(tmp_path_factory):
    """5000 x 3 float32 rows, 60% of them train, scattered: three features leave the reduction's
    weighted fits a floor above eo 0.01, so the smoothed-rate stage runs (and wins)."""
    X, y, a = make_fair_classification(5000, 3, dtype=np.float32, seed=3)
    return _scattered_train(tmp_path_factory.mktemp("ooc_narrow") / "c.h5", X, y, a)


def test_streamed_head_equals_the_in_memory_head_through_the_smoothed_stage(narrow_cache):
    """The threshold and smoothed-rate stages see the same scores streamed or in memory: same bits."""
    path, rows, X, y, a = narrow_cache
    kw = dict(constraint="eo", eps=0.01, backend="torch")
    mem = FairLogisticRegression(**kw).fit(X, y, sensitive_features=a)
    ooc = FairLogisticRegression(**kw).fit(_streamed(path, rows), y, sensitive_features=a)
    assert any("smoothed-rate stage" in n and "one of them chosen" in n for n in mem.certificate_.notes)
    _same(ooc.coef_, mem.coef_)
    _same(ooc.intercept_, mem.intercept_)
    assert ooc.certificate_.passes == mem.certificate_.passes


def _force_reader(monkeypatch, on: bool):
    monkeypatch.setattr(out_of_core, "PREFETCH", on)
    monkeypatch.setattr(out_of_core, "free_cores", lambda: 1)


@pytest.mark.parametrize("budget", [SMALL_BUDGET, "1GB"])
@pytest.mark.parametrize("stored", ["mapped", "gzip"])
def test_the_reader_thread_hands_on_the_serial_blocks(scattered_cache, monkeypatch, tmp_path, budget, stored):
    """Issue 23 item 5: the next block read in a thread while the caller multiplies the current
    one; the same blocks in the same order, so the same products, bit for bit (a compressed
    file, read with HDF5 into one reused chunk buffer, is read in the caller's thread)."""
    path, rows, X, *_ = scattered_cache
    key = "features"
    if stored == "gzip":
        with h5py.File(path, "r") as f:
            full = f["features"][()]
        path, key = tmp_path / "gz.h5", "X"
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=full, chunks=(64, full.shape[1]), compression="gzip")
    for contiguous in (False, True):  # a scattered split (gathered into buffers) and all rows (views)
        sel = rows if not contiguous else None
        passes = {}
        for on in (False, True):
            _force_reader(monkeypatch, on)
            Xs = RowChunks(path, sel, dataset=key, max_memory=budget)
            passes[on] = [(s, blk.copy()) for s, blk in Xs.blocks()]
            w = np.random.default_rng(2).normal(size=X.shape[1])
            passes[on, "xw"] = x_dot(Xs, w)
        assert [s for s, _ in passes[True]] == [s for s, _ in passes[False]]
        for (_, a), (_, b) in zip(passes[True], passes[False]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(passes[True, "xw"], passes[False, "xw"])


def test_a_caller_that_stops_early_stops_the_reader(scattered_cache, monkeypatch):
    import threading

    path, rows, *_ = scattered_cache
    _force_reader(monkeypatch, True)
    Xs = _streamed(path, rows)
    for _, blk in Xs.blocks():
        assert len(blk) > 0
        break
    deadline = time.monotonic() + 5
    while any(t.name == "fairhead-block-reader" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "fairhead-block-reader" for t in threading.enumerate())
    assert Xs.first_nonfinite() is None  # and the next pass runs


def test_an_error_in_the_reader_reaches_the_caller(scattered_cache, monkeypatch):
    path, rows, *_ = scattered_cache
    _force_reader(monkeypatch, True)
    Xs = _streamed(path, rows)

    def broken_spans():
        yield from []
        raise OSError("disk went away")

    monkeypatch.setattr(Xs, "spans", broken_spans)
    with pytest.raises(OSError, match="disk went away"):
        list(Xs.blocks())


def test_free_cores_reads_the_runnable_tasks(tmp_path, monkeypatch):
    from solvers import _cores

    monkeypatch.setattr(_cores, "usable_cores", lambda: 4)
    for running, free in ((1, 3), (3, 1), (9, 0)):
        (tmp_path / "loadavg").write_text(f"0.50 0.40 0.30 {running}/200 12345\n")
        monkeypatch.setattr(_cores, "LOADAVG", str(tmp_path / "loadavg"))
        assert _cores.free_cores() == free
    monkeypatch.setattr(_cores, "LOADAVG", str(tmp_path / "missing"))
    assert _cores.free_cores() == 3
