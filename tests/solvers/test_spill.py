"""The spill file of a streamed X (issue 23 item 5): later passes read the rows contiguously.

A pass over a split scattered through a memory-mapped file gathers its rows, and a pass over a
compressed dataset decodes it; pass ``SPILL_PASS`` writes its blocks to an unnamed temporary file
and later passes map that file. The blocks are the same rows cut at the same boundaries, so every
product is compared bit for bit (``assert_array_equal``, no tolerance): with the spill, without it,
and in memory. Failures to spill fall back to gathering with the same bits.
"""

from __future__ import annotations

import errno
import gc
import os
import tempfile
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from sklearn.exceptions import ConvergenceWarning

from solvers import FairLogisticRegression, RowChunks
from solvers import _spill, out_of_core
from solvers._linalg import x_dot, xt_dot
from solvers.synthetic import make_fair_classification

#: 16 KiB blocks: 128 rows of 32 float32 features, so the test matrices are cut into many blocks
TEST_BLOCK_BYTES = 2**14
#: a budget that gives chunks of a few blocks (HDF5_CACHE_BYTES, 1 MiB, is most of it)
BUDGET = "1.6MB"
N, D = 3000, 32
#: passes compared: the spilling one (SPILL_PASS), those before it (gathering) and two after (reading)
PASSES = _spill.SPILL_PASS + 2


@pytest.fixture(autouse=True)
def _test_setup(monkeypatch):
    monkeypatch.setattr(out_of_core, "BLOCK_BYTES", TEST_BLOCK_BYTES)
    monkeypatch.setattr(_spill, "SPILL", True)
    monkeypatch.setattr(_spill, "KEEP_FREE_BYTES", 0)
    monkeypatch.setattr(_spill, "_warned", threading.Event())  # each test sees its own first warning
    monkeypatch.delenv(_spill.SPILL_DIR_ENV, raising=False)


def _write(folder, dtype=np.float32, seed=0):
    """``(path, X, y, a, scattered rows)``: X stored twice, plain (``"X"``, mapped) and gzip (``"Z"``)."""
    X, y, a = make_fair_classification(N, D, embedding_like=True, dtype=np.float32, seed=seed)
    X = X.astype(dtype)
    path = os.path.join(folder, "x.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(64, D))
        f.create_dataset("Z", data=X, chunks=(64, D), compression="gzip")
    rows = np.flatnonzero(np.random.default_rng(seed).random(N) < 0.6)
    return path, X, y, a, rows


@pytest.fixture
def stored(tmp_path):
    return _write(str(tmp_path))


def _passes(Xs, w, r):
    """``X w`` and ``X^T r`` over ``PASSES`` passes (each product is one pass)."""
    return [x_dot(Xs, w) if k % 2 == 0 else xt_dot(Xs, r) for k in range(PASSES)]


def _assert_same_passes(got, want):
    for g, m in zip(got, want):
        np.testing.assert_array_equal(g, m)


def _to_spilling_pass(Xs):
    """Run the passes before the spilling one (``SPILL_PASS - 1``: they gather)."""
    for _ in range(_spill.SPILL_PASS - 1):
        x_dot(Xs, np.ones(Xs.shape[1]))


def _spilled(Xs):
    """Run passes up to and including the spilling one; returns ``Xs``."""
    _to_spilling_pass(Xs)
    x_dot(Xs, np.ones(Xs.shape[1]))
    return Xs


def _spill_fds(folder):
    """Open file descriptors of this process on unnamed files in ``folder`` (the spill files)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.dirname(target) == os.path.realpath(folder) and target.endswith("(deleted)"):
            out.append(target)
    return out


# --------------------------------------------------------------------------- the same bits
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=["float16", "float32", "float64"])
@pytest.mark.parametrize("key, scattered, spills", [
    pytest.param("X", True, True, id="mapped-scattered"),
    pytest.param("X", False, False, id="mapped-all-rows"),  # views of the map: nothing to save
    pytest.param("Z", True, True, id="gzip-scattered"),
    pytest.param("Z", False, True, id="gzip-all-rows"),
])
@pytest.mark.parametrize("reader", [False, True], ids=["serial", "reader-thread"])
def test_products_with_and_without_the_spill_are_the_in_memory_bits(tmp_path, monkeypatch, dtype, key, scattered,
                                                                     spills, reader):
    monkeypatch.setattr(out_of_core, "PREFETCH", reader)
    monkeypatch.setattr(out_of_core, "free_cores", lambda: 1)
    path, X, _, _, rows = _write(str(tmp_path), dtype)
    sel = rows if scattered else None
    Xm = X[rows] if scattered else X
    rng = np.random.default_rng(1)
    w, r = rng.normal(size=D), rng.normal(size=(len(Xm), 2))
    want = _passes(Xm, w, r)
    monkeypatch.setattr(_spill, "SPILL", False)
    off = RowChunks(path, sel, dataset=key, max_memory=BUDGET)
    _assert_same_passes(_passes(off, w, r), want)
    assert off.spill_folder is None
    monkeypatch.setattr(_spill, "SPILL", True)
    with RowChunks(path, sel, dataset=key, max_memory=BUDGET) as on:
        assert on.n_chunks > 1 and on.shape[0] > 4 * on.block_rows
        _assert_same_passes(_passes(on, w, r), want)
        assert on.spill_folder == (str(tmp_path) if spills else None)
        blocks = [(s, b.copy()) for s, b in on.blocks()]  # from the spill: the in-memory cuts
    assert [s for s, _ in blocks] == list(range(0, len(Xm), on.block_rows))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), Xm)


@pytest.mark.parametrize("key", ["X", "Z"], ids=["mapped", "gzip"])
@pytest.mark.parametrize("constraint, eps", [(None, 0.05), ("dp-score", 0.02)], ids=["unconstrained", "dp-score"])
def test_heads_with_and_without_the_spill_are_the_in_memory_head(stored, monkeypatch, key, constraint, eps):
    path, X, y, a, rows = stored
    kw = dict(constraint=constraint, eps=eps, backend="torch")
    mem = FairLogisticRegression(**kw).fit(X[rows], y[rows], sensitive_features=a[rows])
    heads = {}
    for on in (True, False):
        monkeypatch.setattr(_spill, "SPILL", on)
        with RowChunks(path, rows, dataset=key, max_memory=BUDGET) as Xs:
            heads[on] = FairLogisticRegression(**kw).fit(Xs, y[rows], sensitive_features=a[rows])
            assert (Xs.spill_folder is not None) == on
            assert ("spilled to a contiguous file" in heads[on].certificate_.notes[-1]) == on
            np.testing.assert_array_equal(heads[on].decision_function(Xs), mem.decision_function(X[rows]))
    for head in heads.values():
        np.testing.assert_array_equal(head.coef_, mem.coef_)
        np.testing.assert_array_equal(head.intercept_, mem.intercept_)
        assert head.certificate_.passes == mem.certificate_.passes


@pytest.mark.parametrize("spill_pass", [1, 3])
def test_the_spill_is_written_during_its_pass_and_only_where_passes_gather_or_decode(stored, tmp_path,
                                                                                          monkeypatch, spill_pass):
    path, X, y, _, rows = stored
    monkeypatch.setattr(_spill, "SPILL_PASS", spill_pass)
    Xs = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
    for _ in range(spill_pass - 1):
        x_dot(Xs, np.ones(D))
    assert Xs.spill_folder is None
    x_dot(Xs, np.ones(D))
    assert Xs.spill_folder == str(tmp_path)
    np.testing.assert_array_equal(x_dot(Xs, np.ones(D)), x_dot(X[rows], np.ones(D)))
    Xs.close()
    head = FairLogisticRegression(backend="torch", max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=3: only a head to predict with
        head.fit(X[rows], y[rows])
    Xs = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
    head.predict(Xs)  # a check and a product: spilled only where SPILL_PASS <= 2
    assert (Xs.spill_folder is not None) == (spill_pass <= 2)
    decoded = RowChunks(path, rows, dataset="Z", max_memory=BUDGET)  # gzip: spilled on its first pass
    x_dot(decoded, np.ones(D))
    assert _spill.SPILL_PASS_READ == 1 and decoded.spill_folder == str(tmp_path)
    assert RowChunks(X, rows, max_memory=BUDGET)._spill_pays() is False  # in memory already
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert RowChunks(mm, rows, max_memory=BUDGET)._spill_pays() and not RowChunks(mm, max_memory=BUDGET)._spill_pays()
    Xs.close()


# --------------------------------------------------------------------------- where it goes
def test_the_spill_goes_to_the_env_folder_then_the_cache_folder_then_tmp(stored, tmp_path, monkeypatch):
    path, X, _, _, rows = stored
    chosen, tmp = tmp_path / "chosen", tmp_path / "tmp"
    chosen.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))

    def spilled_to(source):
        with RowChunks(source, rows, dataset="X" if isinstance(source, str) else None, max_memory=BUDGET) as Xs:
            return _spilled(Xs).spill_folder

    monkeypatch.setenv(_spill.SPILL_DIR_ENV, str(chosen))
    assert spilled_to(path) == str(chosen)
    monkeypatch.delenv(_spill.SPILL_DIR_ENV)
    assert spilled_to(path) == str(tmp_path)  # next to the cache
    with h5py.File(path, "r") as f:  # an open h5py dataset: its file's folder
        assert spilled_to(f["Z"]) == str(tmp_path)
    real = tempfile.TemporaryFile

    def cache_folder_read_only(*args, dir=None, **kw):
        if dir == str(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied", dir)
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "TemporaryFile", cache_folder_read_only)
    assert spilled_to(path) == str(tmp)  # the cache's folder cannot be written: the temp folder


# --------------------------------------------------------------------------- failures fall back
def _fails_to_spill(path, rows, want, w, r):
    """A RowChunks whose spill failed: the in-memory bits, no spill, one warning naming the fix."""
    with pytest.warns(RuntimeWarning, match=f"could not write a .* spill file .*set {_spill.SPILL_DIR_ENV}"):
        Xs = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
        _assert_same_passes(_passes(Xs, w, r), want)
    assert Xs.spill_folder is None and not Xs._may_spill
    return Xs


def _fallocate_fails(fd, offset, size):
    raise OSError(errno.ENOSPC, "No space left on device")


FAILURES = [
    pytest.param(lambda mp, tmp: mp.setenv(_spill.SPILL_DIR_ENV, str(tmp / "missing")), id="env-folder-missing"),
    pytest.param(lambda mp, tmp: mp.setattr(os, "posix_fallocate", _fallocate_fails), id="fallocate-enospc"),
    pytest.param(lambda mp, tmp: mp.setattr(_spill, "KEEP_FREE_BYTES", 2**62), id="too-little-free-space"),
]


@pytest.mark.parametrize("fail", FAILURES)
def test_a_spill_that_cannot_be_made_leaves_the_gathered_bits(stored, tmp_path, monkeypatch, fail):
    path, X, _, _, rows = stored
    rng = np.random.default_rng(3)
    w, r = rng.normal(size=D), rng.normal(size=len(rows))
    want = _passes(X[rows], w, r)
    fail(monkeypatch, tmp_path)
    _fails_to_spill(path, rows, want, w, r)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second X says nothing
        again = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
        _assert_same_passes(_passes(again, w, r), want)


def test_a_write_that_fails_mid_pass_leaves_that_pass_and_the_next_the_same(stored, monkeypatch):
    path, X, _, _, rows = stored
    rng = np.random.default_rng(4)
    w, r = rng.normal(size=D), rng.normal(size=len(rows))
    want = _passes(X[rows], w, r)
    real, calls = _spill.Spill.write, []

    def full_after_two_blocks(self, start, block):
        calls.append(start)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, start, block)

    monkeypatch.setattr(_spill.Spill, "write", full_after_two_blocks)
    Xs = _fails_to_spill(path, rows, want, w, r)
    assert len(calls) == 3  # the failed write ended the writing, and no pass tried again
    assert not _spill_fds(os.path.dirname(path))


def test_a_file_system_without_fallocate_still_spills(stored, monkeypatch, tmp_path):
    path, X, _, _, rows = stored

    def unsupported(fd, offset, size):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    with RowChunks(path, rows, dataset="X", max_memory=BUDGET) as Xs:
        w = np.ones(D)
        _assert_same_passes([x_dot(Xs, w) for _ in range(PASSES)], [x_dot(X[rows], w)] * PASSES)
        assert Xs.spill_folder == str(tmp_path)


# --------------------------------------------------------------------------- its life
def test_close_with_and_garbage_collection_release_the_file_and_leave_no_name(stored, tmp_path):
    path, X, _, _, rows = stored
    before = sorted(os.listdir(tmp_path))
    Xs = _spilled(RowChunks(path, rows, dataset="X", max_memory=BUDGET))
    assert len(_spill_fds(tmp_path)) == 1 and sorted(os.listdir(tmp_path)) == before  # open, unnamed
    Xs.close()
    assert not _spill_fds(tmp_path)
    np.testing.assert_array_equal(x_dot(Xs, np.ones(D)), x_dot(X[rows], np.ones(D)))  # gathers again
    Xs.close()  # twice is fine
    with RowChunks(path, rows, dataset="X", max_memory=BUDGET) as Xs:
        _spilled(Xs)
        assert len(_spill_fds(tmp_path)) == 1
    assert not _spill_fds(tmp_path)
    Xs = _spilled(RowChunks(path, rows, dataset="X", max_memory=BUDGET))
    assert len(_spill_fds(tmp_path)) == 1
    del Xs
    gc.collect()
    assert not _spill_fds(tmp_path) and sorted(os.listdir(tmp_path)) == before


def test_a_pass_stopped_early_drops_its_half_written_spill_and_a_later_pass_writes_it(stored, tmp_path):
    path, X, _, _, rows = stored
    Xs = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
    _to_spilling_pass(Xs)
    for _ in Xs.blocks():  # the spilling pass stops after one block
        break
    assert Xs.spill_folder is None and not _spill_fds(tmp_path)
    x_dot(Xs, np.ones(D))  # the next pass writes it
    assert Xs.spill_folder == str(tmp_path)
    np.testing.assert_array_equal(x_dot(Xs, np.ones(D)), x_dot(X[rows], np.ones(D)))
    Xs.close()


def test_copies_under_another_budget_share_a_finished_spill_and_never_a_half_written_one(stored, tmp_path):
    path, X, _, _, rows = stored
    w = np.random.default_rng(5).normal(size=D)
    want = x_dot(X[rows], w)
    Xs = RowChunks(path, rows, dataset="X", max_memory=BUDGET)
    _to_spilling_pass(Xs)
    writing = Xs.blocks()
    next(writing)  # the spilling pass has written its first block
    early = Xs.with_budget("2MB")
    assert early._spill is None and Xs._spill is not None and not Xs._spill.complete
    assert early._passes == _spill.SPILL_PASS  # the copy's next pass spills: the rows were read as often
    for _ in writing:
        pass
    assert Xs.spill_folder == str(tmp_path) and early.spill_folder is None
    late = Xs.with_budget("2MB")
    assert late.spill_folder == str(tmp_path) and late._spill is Xs._spill  # read from its first pass on
    Xs.close()
    assert len(_spill_fds(tmp_path)) == 1  # the copy still holds it
    np.testing.assert_array_equal(x_dot(late, w), want)
    late.close()
    assert not _spill_fds(tmp_path)
    np.testing.assert_array_equal(x_dot(early, w), want)
    early.close()


@pytest.mark.fault
def test_a_file_size_limit_below_the_spill_falls_back_in_a_real_process(stored, tmp_path):
    """A real ``EFBIG``: ``RLIMIT_FSIZE`` below the spill's size makes ``posix_fallocate`` fail (Python
    ignores ``SIGXFSZ``); the products keep their bits and one warning is printed."""
    import subprocess
    import sys

    path, X, _, _, rows = stored
    np.save(tmp_path / "rows.npy", rows)
    np.save(tmp_path / "want.npy", x_dot(X[rows], np.ones(D)))
    script = f"""
import resource, warnings, numpy as np
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
from solvers import RowChunks, out_of_core
from solvers._linalg import x_dot
out_of_core.BLOCK_BYTES = {TEST_BLOCK_BYTES}
Xs = RowChunks({path!r}, np.load({str(tmp_path / 'rows.npy')!r}), dataset="X", max_memory={BUDGET!r})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = [x_dot(Xs, np.ones({D})) for _ in range({PASSES})]
want = np.load({str(tmp_path / 'want.npy')!r})
print(all(np.array_equal(g, want) for g in got), Xs.spill_folder, len(caught), caught[0].message if caught else "")
"""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root, FAIRHEAD_SPILL_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    same, folder, n_warnings, message = proc.stdout.strip().split(" ", 3)
    assert (same, folder, n_warnings) == ("True", "None", "1"), proc.stdout
    assert "File too large" in message and _spill.SPILL_DIR_ENV in message
