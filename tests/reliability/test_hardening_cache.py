"""Issue 13, the cache store and the extraction: hand-edited caches, changed images on resume, a kill while
the journal is removed, a full disk, out of memory, and the messages around them.

Every case builds its input in a real on-disk format (a cache from the real importer edited with h5py, PNG
files with a CSV manifest, a real journal left by a real interrupted extraction) and asserts a one-line error
that names the problem and the fix, that nothing already on disk was lost, and, where a run resumes, that the
finished file is byte-identical to an uninterrupted run (``SOURCE_DATE_EPOCH`` pinned).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import embedcache
import importlib
from embedcache.store import schema, writer
from embedcache.store.journal import Journal, WriteLock
from fairhead_errors import BackboneError, CacheError, DataError
from support.files import tree_digest, write_csv

extract_module = importlib.import_module("embedcache.extract")  # the module (embedcache.extract is the function)

REPO_ROOT = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"
N_IMAGES, BATCH = 24, 8
RESNET = dict(image_size=32)


@pytest.fixture(autouse=True)
def _pinned_time(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


@pytest.fixture(scope="module")
def resnet():
    return embedcache.build_backbone("resnet18", **RESNET)


@pytest.fixture(scope="module")
def references(resnet, tmp_path_factory):
    """Uninterrupted extractions of generated images (24 and 48 rows), to compare resumed files with."""
    folder = tmp_path_factory.mktemp("references")
    paths = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", EPOCH)
        for n in (N_IMAGES, 48):
            paths[n] = _extract(embedcache.SyntheticSource(n, seed=5, image_size=32), resnet, folder / f"ref{n}.h5")
    return paths


def _one_line(message: str) -> str:
    assert "\n" not in message and "Traceback" not in message, message
    return message


def _extract(source, backbone, out, **kw):
    options = dict(batch_size=BATCH, num_workers=0, progress=False)
    options.update(kw)
    return embedcache.extract(source, backbone, out, **options)


# =========================================================================== items 6 and 14: hand-edited caches
def _replace(f, key, data, **attrs):
    old = dict(f[key].attrs)
    del f[key]
    f[key] = data
    for name, value in {**old, **attrs}.items():
        f[key].attrs[name] = value


def _external_link(f, path):
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["labels"] = f["labels"][()]
    del f["labels"]
    f["labels"] = h5py.ExternalLink(other.name, "/labels")


def _sensitive_as_dataset(f, path):
    codes = f["sensitive/group"][()]
    del f["sensitive"]
    f["sensitive"] = codes


def _edit_code(key, row, value):
    def edit(f, path):
        data = f[key][()]
        data[row] = value
        f[key][...] = data
    return edit


def _del_attr(key, name=None):
    def edit(f, path):
        del (f.attrs if name is None else f[key].attrs)[name or key]
    return edit


def _set_attr(key, value):
    def edit(f, path):
        f.attrs[key] = value
    return edit


HAND_EDITS = [
    pytest.param(_set_attr("complete", "false"), "'complete' is 'false', not the boolean true", id="complete-string-false"),
    pytest.param(_set_attr("complete", "true"), "'complete' is 'true', not the boolean true", id="complete-string-true"),
    pytest.param(_edit_code("sensitive/group", 0, -1), "'sensitive/group' holds code -1 at row 0", id="negative-group-code"),
    pytest.param(_edit_code("sensitive/group", 5, 2), "'sensitive/group' holds code 2 at row 5", id="group-code-too-big"),
    pytest.param(_edit_code("split", 3, 7), "'split' holds code 7 at row 3", id="split-code-out-of-range"),
    pytest.param(_edit_code("split", 0, -1), "'split' holds code -1 at row 0", id="split-code-negative"),
    pytest.param(_edit_code("labels", 2, 2), "'labels' holds code 2 at row 2", id="label-code-2"),
    pytest.param(lambda f, p: _replace(f, "labels", f["labels"][()].astype(np.float64)),
                 "'labels' has dtype float64, expected integer codes", id="float-labels"),
    pytest.param(_del_attr("n-rows"), "root attribute 'n-rows' is missing", id="missing-n-rows"),
    pytest.param(_set_attr("n-rows", "600"), "'n-rows' is '600', not a positive integer", id="n-rows-string"),
    pytest.param(_set_attr("feature-dim", 7), "'features' has shape (600, 6), expected (600, 7)", id="feature-dim-wrong"),
    pytest.param(_del_attr("split", "categories"), "'split''s attribute 'categories' is missing", id="missing-split-categories"),
    pytest.param(lambda f, p: f["split"].attrs.__setitem__("categories", ["train", "valid"]),
                 "'split' holds code 2", id="too-few-split-categories"),
    pytest.param(lambda f, p: f["sensitive/group"].attrs.__setitem__("categories", [0, 1]),
                 "expected a list of strings", id="numeric-categories"),
    pytest.param(lambda f, p: f["sensitive/group"].attrs.__setitem__("categories", ["a", "a"]),
                 "names must be unique", id="duplicate-categories"),
    pytest.param(lambda f, p: f["labels"].attrs.__setitem__("categories", ["only"]),
                 "a label needs 2 to 100 classes", id="one-label-category"),
    pytest.param(lambda f, p: _replace(f, "features", f["features"][()][:, 0]),
                 "'features' has shape (600,), expected (600, 6)", id="1d-features"),
    pytest.param(lambda f, p: _replace(f, "features", f["features"][()].astype(np.float64)),
                 "'features' has dtype float64", id="float64-features"),
    pytest.param(_sensitive_as_dataset, "'sensitive' is a dataset, not a group", id="sensitive-as-dataset"),
    pytest.param(lambda f, p: [f["sensitive"].__delitem__(k) for k in list(f["sensitive"])],
                 "'sensitive' holds no attribute", id="no-sensitive-attribute"),
    pytest.param(_external_link, "'labels' is a external link", id="external-link"),
    pytest.param(lambda f, p: (f.__delitem__("features"), f.__setitem__("features", h5py.SoftLink("/labels"))),
                 "'features' is a soft link", id="soft-link"),
    pytest.param(_set_attr("source", "{not json"), "'source' is not a JSON object", id="bad-source-json"),
    pytest.param(_set_attr("source", "[1, 2]"), "'source' is not a JSON object (a list)", id="source-json-list"),
    pytest.param(_set_attr("library-versions", "nope"), "'library-versions' is not a JSON object",
                 id="bad-versions-json"),
    pytest.param(_del_attr("dataset-fingerprint"), "root attribute 'dataset-fingerprint' is missing",
                 id="missing-fingerprint"),
    pytest.param(_set_attr("backbone-arch", 5), "'backbone-arch' is 5, not a string", id="arch-not-a-string"),
    pytest.param(lambda f, p: _replace(f, "sample_id", np.array(["same"] * 600, dtype=object)),
                 "'sample_id' has 1 duplicate ids (first: 'same')", id="duplicate-sample-ids"),
    pytest.param(lambda f, p: _replace(f, "sample_id", np.arange(600)), "'sample_id' has dtype int64",
                 id="numeric-sample-ids"),
    pytest.param(lambda f, p: _replace(f, "labels", f["labels"][()][:599]), "with 599 rows but n-rows is 600",
                 id="short-labels"),
    pytest.param(lambda f, p: f["features"].attrs.__setitem__("column-names", ["f0", "f1"]),
                 "expected 6 strings, one per feature", id="column-names-too-few"),
]


@pytest.mark.parametrize("edit, needle", HAND_EDITS)
def test_hand_edited_cache_is_refused_on_open_and_by_info_and_fit(bad_inputs, tmp_path, capsys, edit, needle):
    from fairhead import cli

    path = tmp_path / "edited.h5"
    shutil.copyfile(bad_inputs["cache"], path)
    with h5py.File(path, "r+") as f:
        edit(f, path)
    before = tree_digest(tmp_path)
    with pytest.raises(CacheError) as err:
        embedcache.open(path)
    message = _one_line(str(err.value))
    assert needle in message and "rebuild it" in message, message
    for command in (["info", str(path)], ["fit", str(path), "--constraint", "dp-score", "--eps", "0.1"]):
        assert cli.main(command) == 3, command
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and "Traceback" not in stderr and needle in stderr, stderr
    assert tree_digest(tmp_path) == before, "a refused cache was changed"


def test_the_unedited_copy_still_opens(bad_inputs, tmp_path):
    """The baseline of the table above: the same copy without an edit is accepted, counts and all."""
    path = tmp_path / "copy.h5"
    shutil.copyfile(bad_inputs["cache"], path)
    with embedcache.open(path) as cache:
        assert cache.n_rows == 600 and int(cache.count_table().counts.sum()) == 600


@pytest.mark.parametrize("name", ["a/b", ".", "..", ""])
def test_a_sensitive_name_hdf5_cannot_hold_is_refused_before_any_work(bad_inputs, tmp_path, resnet, name):
    manifest = bad_inputs["manifest"]
    with open(manifest) as fh:
        header, *rows = [line.rstrip("\n").split(",") for line in fh]
    header[header.index("background")] = name
    edited = write_csv(tmp_path / "named.csv", header, rows)
    source = embedcache.ManifestSource(edited, root=manifest.parent, label_col="shape", sensitive_cols=[name],
                                       split_col="split", id_col="id") if name else None
    if source is None:  # an empty header cell cannot even name a column; the writer's own check is the guard
        with pytest.raises(CacheError, match="cannot be stored in a cache"):
            writer.check_member_name(name)
        return
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, tmp_path / "x.h5")
    assert "cannot be stored in a cache" in _one_line(str(err.value)) and "rename that column" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.csv"], "the refusal wrote files"


def test_import_refuses_a_column_name_with_a_slash(tmp_path):
    table = write_csv(tmp_path / "t.csv", ["id", "f0", "f1", "label", "a/b"],
                      [[f"r{i}", i, i % 3, i % 2, "xy"[i % 2 ^ (i // 2) % 2]] for i in range(20)])
    with pytest.raises(CacheError) as err:
        embedcache.import_table(table, label="label", sensitive=["a/b"], id_col="id", out=tmp_path / "t.h5")
    assert "'a/b' cannot be stored in a cache" in _one_line(str(err.value))
    assert not (tmp_path / "t.h5").exists() and not (tmp_path / "t.h5.tmp").exists()


# =========================================================================== item 2: images changed before a resume
class _StopAt(embedcache.ManifestSource):
    """The manifest source, failing at one row (an interrupted run that leaves a real journal)."""

    stop_at: int | None = None

    def load_image(self, i, **kw):
        if i == self.stop_at:
            raise DataError(f"image {i} cannot be decoded (test)")
        return super().load_image(i, **kw)


def _png_tree(root: Path, seed: int) -> Path:
    from embedcache.sources.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(root, n=N_IMAGES, seed=seed, image_size=32, image_format="png")


def _manifest(csv, stop_at=None):
    source = _StopAt(csv, label_col="shape", sensitive_cols="background", split_col="split", id_col="id")
    source.stop_at = stop_at
    return source


def _interrupted(csv, resnet, out, stop_at=16):
    with pytest.raises(DataError):
        _extract(_manifest(csv, stop_at), resnet, out)
    assert Journal(out).committed_rows() == stop_at


def test_resume_refuses_images_replaced_after_the_kill(tmp_path, resnet):
    csv = _png_tree(tmp_path / "data", seed=3)
    other = _png_tree(tmp_path / "other", seed=4)  # other pixels
    out = tmp_path / "x.h5"
    _interrupted(csv, resnet, out)
    journal_before = tree_digest(schema.journal_path(out))
    mine, theirs = sorted((csv.parent / "images").iterdir()), sorted((other.parent / "images").iterdir())
    for k in range(3):  # the first three images now show other pixels under the same names
        shutil.copyfile(theirs[k], mine[k])
    with pytest.raises(CacheError) as err:
        _extract(_manifest(csv), resnet, out)
    message = _one_line(str(err.value))
    assert "the images of rows 0-7 changed since they were extracted" in message, message
    assert "its content differs" in message and "pass `overwrite=True`" in message
    assert tree_digest(schema.journal_path(out)) == journal_before, "the refusal changed the journal"
    assert not out.exists()
    # the advice works: --overwrite starts over on the new images, giving what a fresh run gives
    _extract(_manifest(csv), resnet, out, overwrite=True)
    _extract(_manifest(csv), resnet, tmp_path / "fresh.h5")
    assert out.read_bytes() == (tmp_path / "fresh.h5").read_bytes()


@pytest.mark.slow
def test_resume_accepts_images_that_were_only_touched_or_copied(tmp_path, resnet):
    csv = _png_tree(tmp_path / "data", seed=3)
    out, reference = tmp_path / "x.h5", tmp_path / "reference.h5"
    _extract(_manifest(csv), resnet, reference)
    _interrupted(csv, resnet, out)
    for png in (csv.parent / "images").iterdir():  # e.g. the dataset was copied to a faster disk
        os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))
    _extract(_manifest(csv), resnet, out)
    assert out.read_bytes() == reference.read_bytes()


def test_resume_refuses_a_deleted_committed_image_naming_it(tmp_path, resnet):
    csv = _png_tree(tmp_path / "data", seed=3)
    out = tmp_path / "x.h5"
    _interrupted(csv, resnet, out)
    victim = sorted((csv.parent / "images").iterdir())[9]
    victim.unlink()
    with pytest.raises(DataError, match="missing"):  # the up-front check of every image file
        _extract(_manifest(csv), resnet, out)
    assert Journal(out).committed_rows() == 16


def test_the_journal_records_each_committed_batch_and_its_files(tmp_path, resnet):
    csv = _png_tree(tmp_path / "data", seed=3)
    out = tmp_path / "x.h5"
    _interrupted(csv, resnet, out)
    lines = (schema.journal_path(out) / schema.JOURNAL_INPUTS).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["start"], r["stop"]) for r in records] == [(0, 8), (8, 16)]
    source = _manifest(csv)
    first = source.image_paths()[0]
    assert records[0]["files"][0] == [first.stat().st_size, first.stat().st_mtime_ns]
    assert len(records[0]["sha256"]) == 64


# =========================================================================== item 8: kill -9 while the journal goes
class _Counting(embedcache.SyntheticSource):
    loads = 0

    def load_image(self, i, **kw):
        type(self).loads += 1
        return super().load_image(i, **kw)


def _killed_in_finish(out: Path, resnet, kill_at: str) -> None:
    """Run the end of an extraction in a forked child that SIGKILLs itself at ``kill_at``.

    The journal already holds every row, so the child computes nothing (no torch threads after the fork):
    it writes the HDF5 file, renames it into place and removes the journal, dying at the chosen moment.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies by SIGKILL
        try:
            import embedcache.store.journal as journal_module

            def die(*args, **kwargs):
                os.kill(os.getpid(), signal.SIGKILL)

            if kill_at == "before-rename":
                journal_module.remove_leftover_trash = die  # the cache is in place, the journal not yet moved
            else:
                journal_module.shutil.rmtree = die  # the journal was moved aside, half deleted
            _extract(_Counting(N_IMAGES, seed=5, image_size=32), resnet, out)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


@pytest.mark.parametrize("kill_at", ["before-rename", "while-deleting"])
@pytest.mark.fault
def test_kill_9_while_the_journal_is_removed_then_rerun_finishes_without_recomputing(tmp_path, resnet, references,
                                                                                     kill_at):
    reference, out = references[N_IMAGES], tmp_path / "x.h5"
    # a real journal with every row committed: the run stopped just before writing the HDF5 file
    original = extract_module._finish
    extract_module._finish = lambda *a, **k: None
    try:
        _extract(_Counting(N_IMAGES, seed=5, image_size=32), resnet, out)
    finally:
        extract_module._finish = original
    assert Journal(out).committed_rows() == N_IMAGES and not out.exists()
    _killed_in_finish(out, resnet, kill_at)
    assert out.read_bytes() == reference.read_bytes(), "the cache was in place before the kill"
    if kill_at == "before-rename":
        with pytest.raises(CacheError, match="has an unfinished extraction .* rerun it to finish"):
            embedcache.open(out)
    else:
        assert not schema.journal_path(out).exists() and schema.journal_trash_path(out).exists()
        with embedcache.open(out) as cache:  # the journal no longer counts once moved aside
            assert cache.n_rows == N_IMAGES
    _Counting.loads = 0
    _extract(_Counting(N_IMAGES, seed=5, image_size=32), resnet, out)
    assert _Counting.loads == 0, "the rerun recomputed images of a complete cache"
    assert out.read_bytes() == reference.read_bytes()
    assert not schema.journal_path(out).exists() and not schema.journal_trash_path(out).exists()
    assert not schema.tmp_path(out).exists() and not schema.lock_path(out).exists()


def _journal_with_16_rows(tmp_path, resnet) -> Path:
    out = tmp_path / "x.h5"

    class Failing(embedcache.SyntheticSource):
        def load_image(self, i, **kw):
            if i == 16:
                raise DataError("image 16 cannot be decoded (test)")
            return super().load_image(i, **kw)

    with pytest.raises(DataError):
        _extract(Failing(N_IMAGES, seed=5, image_size=32), resnet, out)
    return out


@pytest.mark.parametrize("damage, needle", [
    pytest.param("features-gone", "features.bin holds 0 rows but 16 are committed", marks=pytest.mark.slow),
    pytest.param("meta-garbage", "cannot be read", marks=pytest.mark.slow),
    ("inputs-torn", "inputs.jsonl does not cover the 16 committed rows"),
    pytest.param("old-journal", "written by an older fairhead", marks=pytest.mark.slow),
])
def test_a_damaged_journal_names_overwrite_and_overwrite_fixes_it(tmp_path, resnet, references, damage, needle):
    out = _journal_with_16_rows(tmp_path, resnet)
    folder = schema.journal_path(out)
    if damage == "features-gone":
        (folder / schema.JOURNAL_FEATURES).unlink()
    elif damage == "meta-garbage":
        (folder / schema.JOURNAL_META).write_text("{torn")
    elif damage == "inputs-torn":
        text = (folder / schema.JOURNAL_INPUTS).read_text()
        (folder / schema.JOURNAL_INPUTS).write_text(text[: len(text) // 2])
    else:
        meta = json.loads((folder / schema.JOURNAL_META).read_text())
        del meta["journal-version"]
        (folder / schema.JOURNAL_META).write_text(json.dumps(meta))
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, out)
    message = _one_line(str(err.value))
    assert needle in message and "`overwrite=True`" in message, message
    _extract(source, resnet, out, overwrite=True)
    assert out.read_bytes() == references[N_IMAGES].read_bytes()


def test_a_torn_inputs_line_past_the_committed_rows_is_dropped_on_resume(tmp_path, resnet, references):
    """A kill between appending a batch's inputs line and its commit leaves a line (maybe half) past row k."""
    out = _journal_with_16_rows(tmp_path, resnet)
    with open(schema.journal_path(out) / schema.JOURNAL_INPUTS, "a") as fh:
        fh.write('{"start":16,"stop":24,"fi')
    _extract(embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32), resnet, out)
    assert out.read_bytes() == references[N_IMAGES].read_bytes()


# =========================================================================== item 12: a full disk
FULL_DISK_ERRORS = [
    pytest.param(OSError(errno.ENOSPC, "No space left on device"), "no space left on device", id="enospc"),
    pytest.param(RuntimeError("Can't decrement id ref count (file write failed: time = Mon, filename = 'x.h5.tmp', "
                              "file descriptor = 4, errno = 28, error message = 'No space left on device', buf = 0x1)"),
                 "no space left on device", id="hdf5-runtime-error-on-close"),
    pytest.param(OSError(errno.EDQUOT, "Disk quota exceeded"), "no space left on device", id="quota"),
    pytest.param(OSError(errno.EFBIG, "File too large"), "outgrew the largest file allowed here", id="file-too-large"),
    pytest.param(OSError(errno.EIO, "Input/output error"), "Input/output error", id="io-error"),
    pytest.param(OSError(errno.EROFS, "Read-only file system"), "choose an output in a folder you can write to",
                 id="read-only-file-system"),
]


@pytest.mark.parametrize("error, needle", FULL_DISK_ERRORS)
def test_a_failed_hdf5_write_removes_the_tmp_file_and_keeps_the_journal(tmp_path, resnet, references, monkeypatch,
                                                                        error, needle):
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    out, reference = tmp_path / "x.h5", references[N_IMAGES]

    def failing_write(path, **kw):
        path.write_bytes(b"\0" * 100_000)  # HDF5 got this far
        raise error

    with monkeypatch.context() as patch, pytest.raises(CacheError) as err:
        patch.setattr(writer, "_write_hdf5", failing_write)
        _extract(source, resnet, out)
    message = _one_line(str(err.value))
    assert needle in message and "rerun to resume" in message, message
    if needle == "no space left on device":
        assert f"device '{writer.device_of(out)}'" in message and " MB there" in message
    assert not schema.tmp_path(out).exists(), "the temporary file was left behind"
    assert Journal(out).committed_rows() == N_IMAGES, "the committed rows were lost"
    _Counting.loads = 0
    _extract(_Counting(N_IMAGES, seed=5, image_size=32), resnet, out)
    assert _Counting.loads == 0 and out.read_bytes() == reference.read_bytes()


@pytest.mark.skipif(not writer.ISOLATE_WRITES, reason="HDF5 is written in a child process on Linux only")
@pytest.mark.fault
def test_hdf5_crashing_the_writer_process_is_survived(tmp_path, resnet, monkeypatch):
    """After a failed write HDF5 segfaults when it frees the file; the child absorbs it, the caller lives."""
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    out = tmp_path / "x.h5"

    def crashing_write(path, **kw):
        path.write_bytes(b"\0" * 100_000)
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(writer, "_write_hdf5", crashing_write)
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, out)
    assert "the HDF5 library crashed (SIGSEGV)" in _one_line(str(err.value))
    assert not schema.tmp_path(out).exists() and Journal(out).committed_rows() == N_IMAGES


@pytest.mark.parametrize("failing_batch", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_full_disk_while_journaling_keeps_the_committed_rows(tmp_path, resnet, references, monkeypatch,
                                                               failing_batch):
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    out, reference = tmp_path / "x.h5", references[N_IMAGES]
    original, calls = Journal.append, []

    def append(self, block, **kw):
        calls.append(len(block))
        if len(calls) == failing_batch + 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, block, **kw)

    with monkeypatch.context() as patch, pytest.raises(CacheError) as err:
        patch.setattr(Journal, "append", append)
        _extract(source, resnet, out)
    message = _one_line(str(err.value))
    assert "no space left on device" in message and "rerun to resume" in message
    assert Journal(out).committed_rows() == BATCH * failing_batch
    _extract(source, resnet, out)
    assert out.read_bytes() == reference.read_bytes()


def test_too_little_free_space_is_refused_before_any_work(tmp_path, resnet, monkeypatch):
    free = 10 * writer.MB
    monkeypatch.setattr(writer.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - free, free))
    source = _Counting(3000, seed=5, image_size=32)  # ~6 MB of journal plus ~6 MB of cache
    _Counting.loads = 0
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, tmp_path / "x.h5")
    message = _one_line(str(err.value))
    table = writer.CacheTable.from_source(source)
    needed = 3000 * resnet.feature_dim * 4 + writer.estimate_cache_bytes(table, feature_dim=resnet.feature_dim,
                                                                          feature_dtype="float32")
    mb = int(message.split("; free ")[1].split(" MB")[0])
    assert (mb - 1) * writer.MB < needed - free <= mb * writer.MB, (mb, needed - free)
    assert "no space left on device" in message and "rerun to resume" in message, message
    assert _Counting.loads == 0 and not schema.journal_path(tmp_path / "x.h5").exists()


def test_the_size_estimate_bounds_real_caches(bad_inputs, tmp_path):
    """The free-space check is only as good as its upper bound on the file size."""
    for name in ("cache", "train-only", "one-group-train"):
        with embedcache.open(bad_inputs[name]) as cache:
            data = cache.load()
            table = writer.CacheTable(sample_ids=data.sample_ids, labels=data.labels, label_name=cache.label_name,
                                      label_categories=tuple(cache.label_categories),
                                      sensitive={k: (v, tuple(cache.categories(k))) for k, v in data.sensitive.items()},
                                      splits=data.split)
            estimate = writer.estimate_cache_bytes(table, feature_dim=cache.feature_dim, feature_dtype=cache.feature_dtype)
        size = bad_inputs[name].stat().st_size
        assert size <= estimate <= size + 2 * writer.MB, (name, size, estimate)


FSIZE_DRIVER = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from fairhead import cli
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.mark.fault
def test_a_file_size_limit_exits_3_with_one_line_and_the_rerun_resumes(tmp_path, resnet):
    """A real limit in a real process: RLIMIT_FSIZE makes HDF5's writes fail (EFBIG) past the journal's size."""
    from fairhead import cli

    out, reference = tmp_path / "x.h5", tmp_path / "reference.h5"
    args = ["extract", "--synthetic", "--n", "64", "--seed", "5", "--backbone", "resnet18", "--weights", "none",
            "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress", "--out"]
    assert cli.main([*args, str(reference)]) == 0
    limit = 64 * resnet.feature_dim * 4 + 4096  # the journal fits, the finished HDF5 file does not
    assert reference.stat().st_size > limit
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), SOURCE_DATE_EPOCH=EPOCH, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", FSIZE_DRIVER, str(limit), *args, str(out)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "outgrew the largest file allowed here" in lines[0] and "rerun to resume" in lines[0], lines[0]
    assert not schema.tmp_path(out).exists() and Journal(out).committed_rows() == 64
    assert cli.main([*args, str(out)]) == 0
    assert out.read_bytes() == reference.read_bytes()


TMPFS_DRIVER = """
import json, os, subprocess, sys
mnt, out_dir = sys.argv[1], sys.argv[2]
results = {}
import embedcache, importlib
extract_module = importlib.import_module("embedcache.extract")
from embedcache.store import schema, writer
from embedcache.store.journal import Journal
source = embedcache.SyntheticSource(64, seed=5, image_size=32)
backbone = embedcache.build_backbone("resnet18", image_size=32)

def attempt(name, size_kb, check_space=True):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", mnt], check=True)
    try:
        saved = writer.check_free_space, extract_module.check_free_space
        if not check_space:  # let the writes themselves hit the full disk
            writer.check_free_space = extract_module.check_free_space = lambda *a, **k: None
        try:
            embedcache.extract(source, backbone, os.path.join(mnt, "x.h5"), batch_size=8, num_workers=0,
                               progress=False)
            error = None
        except embedcache.CacheError as err:
            error = str(err)
        finally:
            writer.check_free_space, extract_module.check_free_space = saved
        out = os.path.join(mnt, "x.h5")
        results[name] = {"error": error, "files": sorted(os.listdir(mnt)),
                         "committed": Journal(out).committed_rows() if os.path.isdir(out + ".partial") else None}
        if os.path.isdir(out + ".partial"):
            subprocess.run(["cp", "-a", out + ".partial", os.path.join(out_dir, name + ".h5.partial")], check=True)
    finally:
        subprocess.run(["umount", mnt], check=True)

attempt("preflight", 200)
attempt("journal-full", 100, check_space=False)
attempt("hdf5-full", 200, check_space=False)
print(json.dumps(results))
"""


def _can_mount_tmpfs() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user namespaces to mount a small tmpfs")
@pytest.mark.fault
def test_a_real_full_disk_gives_one_line_no_crash_and_a_resumable_journal(tmp_path, resnet):
    """A small tmpfs (in a private mount namespace) fills up for real: before the run, mid-journal, mid-HDF5."""
    mnt, kept = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir(), kept.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), SOURCE_DATE_EPOCH=EPOCH, OMP_NUM_THREADS="1")
    proc = subprocess.run(["unshare", "-Urm", sys.executable, "-c", TMPFS_DRIVER, str(mnt), str(kept)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, f"the process crashed ({proc.returncode}): {proc.stderr[-3000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, result in results.items():
        message = _one_line(result["error"] or "")
        assert f"no space left on device '{mnt}'" in message and "MB there and rerun to resume" in message, (name, message)
        assert "x.h5.tmp" not in result["files"] and "x.h5" not in result["files"], (name, result)
    assert results["preflight"]["committed"] in (None, 0)
    assert 0 < results["journal-full"]["committed"] < 64
    assert results["hdf5-full"]["committed"] == 64
    # moved to a disk with room, each journal resumes into the same bytes as an uninterrupted run
    source = embedcache.SyntheticSource(64, seed=5, image_size=32)
    _extract(source, resnet, tmp_path / "reference.h5")
    for name in ("journal-full", "hdf5-full"):
        shutil.move(kept / f"{name}.h5.partial", tmp_path / f"{name}.h5.partial")
        _extract(source, resnet, tmp_path / f"{name}.h5")
        assert (tmp_path / f"{name}.h5").read_bytes() == (tmp_path / "reference.h5").read_bytes(), name


# =========================================================================== item 15: out of memory
def _oom_after(backbone, monkeypatch, *, calls_ok: int, max_batch: int, error):
    original, calls = backbone.forward_features, []

    def forward(images):
        calls.append(len(images))
        if len(calls) > calls_ok and len(images) > max_batch:
            raise error
        return original(images)

    monkeypatch.setattr(backbone, "forward_features", forward)
    return calls


@pytest.mark.parametrize("error", [
    pytest.param(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), id="cuda",
                 marks=pytest.mark.slow),
    pytest.param(RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                              "you tried to allocate 9437184000 bytes."), id="cpu-allocator", marks=pytest.mark.slow),
    pytest.param(MemoryError(), id="python"),
])
def test_out_of_memory_names_half_the_batch_size_and_a_smaller_resume_gives_the_same_file(
        tmp_path, resnet, references, monkeypatch, error):
    source = embedcache.SyntheticSource(48, seed=5, image_size=32)
    backbone, reference, out = resnet, references[48], tmp_path / "x.h5"
    _oom_after(backbone, monkeypatch, calls_ok=2, max_batch=4, error=error)
    with pytest.raises(BackboneError) as err:
        _extract(source, backbone, out)
    message = _one_line(str(err.value))
    assert message.startswith("out of memory at batch size 8 on cpu (16 of 48 rows are committed and kept)"), message
    assert message.endswith("rerun with `batch_size=4` to resume"), message
    _extract(source, backbone, out, batch_size=4)  # still "out of memory" above 4 images
    assert out.read_bytes() == reference.read_bytes(), "rows are rows: the batch size must not change the file"


@pytest.mark.slow
def test_a_resume_without_a_batch_size_keeps_the_one_it_last_used(tmp_path, resnet, monkeypatch):
    source, backbone = embedcache.SyntheticSource(48, seed=5, image_size=32), resnet
    out = tmp_path / "x.h5"
    calls = _oom_after(backbone, monkeypatch, calls_ok=2, max_batch=4, error=MemoryError())
    with pytest.raises(BackboneError):
        _extract(source, backbone, out)

    class StopAt32(embedcache.SyntheticSource):
        def load_image(self, i, **kw):
            if i == 32:
                raise DataError("stop (test)")
            return super().load_image(i, **kw)

    with pytest.raises(DataError):
        _extract(StopAt32(48, seed=5, image_size=32), backbone, out, batch_size=4)
    calls.clear()
    embedcache.extract(source, backbone, out, num_workers=0, progress=False)  # no batch size given
    assert set(calls) == {4}, calls


def test_out_of_memory_at_batch_size_1_says_to_free_memory(tmp_path, resnet, monkeypatch):
    source, backbone = embedcache.SyntheticSource(8, seed=5, image_size=32), resnet
    _oom_after(backbone, monkeypatch, calls_ok=0, max_batch=0, error=MemoryError())
    with pytest.raises(BackboneError) as err:
        _extract(source, backbone, tmp_path / "x.h5", batch_size=1)
    message = _one_line(str(err.value))
    assert "out of memory at batch size 1 on cpu (0 of 8 rows" in message and "free memory" in message


# =========================================================================== unclear messages, the lock
def test_a_cache_being_written_says_so_instead_of_rerun(tmp_path, resnet):
    out = _journal_with_16_rows(tmp_path, resnet)
    with WriteLock(out):  # another writer holds the lock (this process, through another open file)
        with pytest.raises(CacheError) as err:
            embedcache.open(out)
        message = _one_line(str(err.value))
        assert f"is being written by another process (pid {os.getpid()}) right now (16 of 24 rows done)" in message
        assert "wait for it to finish" in message and "rerun" not in message
    with pytest.raises(CacheError, match=r"is incomplete \(16 of 24 rows\); rerun the same"):
        embedcache.open(out)
    assert not schema.lock_path(out).exists(), "the reader's probe left a lock file"


def test_a_journal_that_never_committed_does_not_print_unknown_counts(tmp_path):
    out = tmp_path / "x.h5"
    schema.journal_path(out).mkdir()  # killed right after creating the folder
    with pytest.raises(CacheError) as err:
        embedcache.open(out)
    message = _one_line(str(err.value))
    assert "?" not in message and "stopped before committing a batch" in message, message


def test_overwrite_never_replaces_a_file_that_is_not_a_cache(tmp_path, resnet):
    precious = tmp_path / "meta.csv"
    precious.write_text("id,label\n1,0\n")
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    for overwrite in (False, True):
        with pytest.raises(CacheError) as err:
            _extract(source, resnet, precious, overwrite=overwrite)
        assert "is not an HDF5 cache" in _one_line(str(err.value)) and "`overwrite=True`" in str(err.value)
    assert precious.read_text() == "id,label\n1,0\n"
    with pytest.raises(CacheError, match="is a folder; give a file path"):
        _extract(source, resnet, tmp_path)


def test_an_output_folder_that_cannot_be_made_or_locked_gives_one_line(tmp_path, resnet, monkeypatch):
    source = embedcache.SyntheticSource(N_IMAGES, seed=5, image_size=32)
    (tmp_path / "file.txt").write_text("not a folder\n")
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, tmp_path / "file.txt" / "x.h5")
    assert "choose an output in a folder you can write to" in _one_line(str(err.value))

    def refused(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(embedcache.store.journal.filelock.FileLock, "acquire", refused)  # root ignores chmod
    with pytest.raises(CacheError) as err:
        _extract(source, resnet, tmp_path / "x.h5")
    assert "cannot create the write lock" in _one_line(str(err.value)) and "Permission denied" in str(err.value)


@pytest.mark.slow
def test_import_embedcache_needs_no_fcntl():
    """Windows has no fcntl: the lock is filelock's, so the package imports without it."""
    code = "import sys; sys.modules['fcntl'] = None; import embedcache; print(embedcache.WriteLock.__name__ " \
           "if hasattr(embedcache, 'WriteLock') else 'ok')"
    sources = [p.read_text() for p in (REPO_ROOT / "embedcache").rglob("*.py")]
    assert not any("import fcntl" in text for text in sources)
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
