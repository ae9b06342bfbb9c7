"""Hardening, round 2 (issue 13), heads, outputs and the CLI: damaged head files, heads that would replace
other files, torn sweep progress, torn result files, operating-system errors and unclear flags.

Every CLI case runs ``fairhead.cli.main`` in-process (no torch import per case) and asserts the exit code,
one ``fairhead: error:`` line naming the problem and the fix, no traceback, and that nothing on disk was
lost. The faults are real where a test can make them real (a file-size limit in a subprocess, a torn line
written to disk); a read-only folder is simulated when the tests run as root, who may write anywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from fairhead.cli import main
from fairhead_errors import DataError
from support.files import tree_digest, write_feature_table

REPO_ROOT = Path(__file__).resolve().parents[2]
#: a sweep small enough to run several times per test: a score constraint, 4 bounds, no plots
SWEEP_KW = dict(constraint="dp-score", n_eps=4, backend="torch", plots=False, progress=False)


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A real imported cache, one head fitted on it, and a copy of the cache with NaN in one test row."""
    import embedcache
    from solvers import FairLogisticRegression, save_head

    root = tmp_path_factory.mktemp("hardening-cli")
    table = write_feature_table(root / "table.csv", n=300, d=5)
    cache = embedcache.import_table(table, label="label", sensitive=["group"], split="split", id_col="id",
                                    out=root / "cache.h5")
    with embedcache.open(cache) as c:
        train = c.load("train")
    head = FairLogisticRegression(constraint="dp-score", eps=0.05, backend="torch")
    head.fit(train.features, train.labels, sensitive_features=train.sensitive["group"])
    head_path = save_head(head, root / "head.json")
    nan_cache = root / "nan-test-row.h5"
    shutil.copyfile(cache, nan_cache)
    with h5py.File(nan_cache, "r+") as f:
        test_rows = np.flatnonzero(f["split"][:] == list(f["split"].attrs["categories"]).index("test"))
        f["features"][int(test_rows[3]), 2] = np.nan
        nan_id = f["sample_id"][int(test_rows[3])]
    return {"root": root, "cache": cache, "head": head_path, "nan-cache": nan_cache,
            "nan-id": nan_id.decode() if isinstance(nan_id, bytes) else str(nan_id),
            "X": train.features}


def run_main(capsys, *args) -> tuple[int, str]:
    """``fairhead ARGS`` in-process: (exit code, stderr); argparse usage errors return 2."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, expected_code: int, *needles: str) -> str:
    assert "Traceback" not in err, err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fairhead: error: ") or (expected_code == 2 and "error:" in lines[0]), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    return lines[0]


@contextlib.contextmanager
def read_only(folder: Path, monkeypatch):
    """Make ``folder`` read-only. chmod is real for ordinary users; root ignores it, so creating a file
    there is refused through ``os.open`` too (what tempfile, and so every fairhead write, calls)."""
    folder.chmod(0o555)
    real_open = os.open
    target = str(folder.resolve())

    def refusing_open(path, flags, *args, **kwargs):
        if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and str(Path(path).resolve()).startswith(target + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    real_mkdir = os.mkdir

    def refusing_mkdir(path, *args, **kwargs):
        if str(Path(path).resolve()).startswith(target + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    try:
        yield folder
    finally:
        monkeypatch.setattr(os, "open", real_open)
        monkeypatch.setattr(os, "mkdir", real_mkdir)
        folder.chmod(0o755)


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


# --------------------------------------------------------------------------- item 7: load_head validates
def _edit_json(key_path, value):
    def edit(doc):
        target = doc
        for k in key_path[:-1]:
            target = target[k]
        target[key_path[-1]] = value
        return doc
    return edit


DAMAGED_HEADS = [
    pytest.param(_edit_json(["coef"], [["NaN", 1, 2, 3, 4]]), "coef", id="nan-coefficient-as-string"),
    pytest.param(lambda d: {**d, "coef": [[float("nan")] * 5]}, "NaN", id="nan-coefficients"),
    pytest.param(lambda d: {**d, "intercept": [float("inf")]}, "intercept", id="infinite-intercept"),
    pytest.param(lambda d: {**d, "coef": [d["coef"][0][:3]]}, "n_features_in is 5", id="fewer-coefficients"),
    pytest.param(lambda d: {**d, "n_features_in": 7}, "n_features_in is 7", id="other-dimension"),
    pytest.param(lambda d: {**d, "constraint": "eo"}, "disagrees", id="other-top-level-constraint"),
    pytest.param(_edit_json(["params", "constraint"], "eo"), "disagrees", id="other-constraint-in-params"),
    pytest.param(_edit_json(["certificate", "constraint"], "dp"), "certificate", id="other-certificate-constraint"),
    pytest.param(_edit_json(["params", "constraint"], "fairest"), "parameters are invalid",
                 id="unknown-constraint"),
    pytest.param(lambda d: {**d, "eps": 0.5}, "eps", id="other-eps"),
    pytest.param(_edit_json(["params", "C"], -1.0), "parameters are invalid", id="negative-C"),
    pytest.param(lambda d: {**d, "classes": [0, 1, 2]}, "classes", id="three-classes"),
    pytest.param(lambda d: {k: v for k, v in d.items() if k != "certificate"}, "missing field",
                 id="missing-certificate"),
    pytest.param(lambda d: {**d, "format_version": "x"}, "format_version", id="bad-version"),
]


@pytest.mark.parametrize("edit, needle", DAMAGED_HEADS)
def test_load_head_refuses_a_damaged_or_edited_head_in_one_line(inputs, tmp_path, edit, needle):
    from solvers import load_head

    doc = edit(json.loads(inputs["head"].read_text()))
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))  # Python writes NaN / Infinity, as a hand edit or another tool may
    with pytest.raises(DataError) as err:
        load_head(path)
    message = str(err.value)
    assert "\n" not in message and needle in message and "edited.json" in message, message
    assert "refit" in message or "pass" in message, message


@pytest.mark.parametrize("content, needle", [
    (b"", "cannot be read"), (b'{"format": "fairhead-head", "coef": [[1,', "cannot be read"),
    (b"[1, 2, 3]", "cannot be read"), (b"\xff\xfe not utf-8", "cannot be read"),
], ids=["empty", "truncated", "json-array", "binary"])
def test_load_head_refuses_unreadable_files(tmp_path, content, needle):
    from solvers import load_head

    path = tmp_path / "head.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=needle):
        load_head(path)
    with pytest.raises(DataError, match="does not exist"):
        load_head(tmp_path / "missing.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        load_head(tmp_path / "dir.json")  # a folder named like a head

def test_load_head_npz_with_nan_coefficients_is_refused(inputs, tmp_path):
    from solvers import load_head, save_head

    head = load_head(inputs["head"])
    path = save_head(head, tmp_path / "head.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["coef"] = np.full_like(arrays["coef"], np.nan)
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="NaN"):
        load_head(path)


def test_predict_checks_the_feature_dimension_and_values(inputs):
    from solvers import load_head

    head = load_head(inputs["head"])
    X = inputs["X"]
    assert head.predict(X).shape == (len(X),)
    with pytest.raises(DataError, match="4 features.*expecting 5.*backbone"):
        head.predict(X[:, :4])
    with pytest.raises(DataError, match="NaN.*before predicting"):
        head.predict(np.where(np.arange(X.shape[1]) == 0, np.nan, X))
    head.coef_ = head.coef_[:, :4]  # a head edited in memory: 4 coefficients for 5 features
    with pytest.raises(DataError, match="4 coefficients but n_features_in_=5"):
        head.decision_function(X)


# --------------------------------------------------------------------------- item 9: heads never replace other files
def test_fit_refuses_to_save_over_a_file_that_is_not_a_head(inputs, tmp_path, capsys):
    cache_json = tmp_path / "cache.json"  # a cache under a .json name, as in the probe
    shutil.copyfile(inputs["cache"], cache_json)
    before = tree_digest(tmp_path)
    code, err = run_main(capsys, "fit", cache_json, "--save", cache_json)
    assert_one_line_error(code, err, 3, "is not a fairhead head", "pass another path")
    assert tree_digest(tmp_path) == before
    table = tmp_path / "table.json"
    table.write_text('{"rows": [1, 2, 3]}')
    before = tree_digest(tmp_path)
    code, err = run_main(capsys, "fit", inputs["cache"], "--save", table)
    assert_one_line_error(code, err, 3, "table.json", "is not a fairhead head")
    assert tree_digest(tmp_path) == before


def test_save_head_replaces_its_own_head_and_refuses_folders(inputs, tmp_path):
    from solvers import load_head, save_head

    head = load_head(inputs["head"])
    path = save_head(head, tmp_path / "head.json")
    head.intercept_ = head.intercept_ + 1.0
    save_head(head, path)  # a head replaces a head
    assert load_head(path).intercept_[0] == pytest.approx(head.intercept_[0])
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(DataError, match="is a folder"):
        save_head(head, tmp_path / "dir.json")
    with pytest.raises(DataError, match="does not exist"):
        save_head(head, tmp_path / "missing" / "head.json")
    assert no_temporary_files(tmp_path)


@pytest.mark.fault
def test_a_head_write_that_hits_the_file_size_limit_keeps_the_old_head(inputs, tmp_path):
    """A real fault: RLIMIT_FSIZE makes the write fail with EFBIG part-way (as a full disk would)."""
    path = tmp_path / "head.json"
    shutil.copyfile(inputs["head"], path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import resource, signal, sys
        from solvers import load_head, save_head
        head = load_head({str(path)!r})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        try:
            save_head(head, {str(path)!r}, extra={{"note": "x" * 4096}})
        except OSError as err:
            print("errno", err.errno)
            sys.exit(0)
        sys.exit("the write did not fail")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"errno {errno.EFBIG}" in proc.stdout
    assert path.read_bytes() == before, "the failed write truncated the good head"
    assert no_temporary_files(tmp_path)


def test_head_files_are_strict_json(inputs, tmp_path):
    from solvers import load_head, save_head

    head = load_head(inputs["head"])
    path = save_head(head, tmp_path / "head.json", extra={"score": float("nan")})

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    doc = json.loads(path.read_text(), parse_constant=refuse)
    assert doc["extra"]["score"] is None
    head.eps = float("inf")  # set behind the validator's back
    with pytest.raises(DataError, match="non-finite eps"):
        save_head(head, tmp_path / "inf.json")
    assert not (tmp_path / "inf.json").exists()


# --------------------------------------------------------------------------- item 10: torn progress lines
def _progress_lines(out: Path) -> list[str]:
    return (out / "progress.jsonl").read_text().splitlines()


def test_a_torn_progress_line_is_dropped_and_later_resumes_read_everything(inputs, tmp_path):
    from fairhead import sweep

    out = tmp_path / "sweep"
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    lines = _progress_lines(out)
    assert len(lines) == 4
    # a kill (or a full disk) in the middle of the third entry
    (out / "progress.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    resumed = _progress_lines(out)
    # the two intact heads were read back, not recomputed (a recomputed head would be appended again)
    assert resumed[:2] == lines[:2] and len(resumed) == 4
    assert all(json.loads(line) for line in resumed), "every line parses: the torn tail is gone"
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    assert _progress_lines(out) == resumed, "a third run recomputes nothing"


def test_a_progress_file_torn_inside_its_first_entry_is_still_ours(inputs, tmp_path):
    from fairhead import sweep

    out = tmp_path / "sweep"
    out.mkdir()
    (out / "progress.jsonl").write_text('{"conf')  # killed 6 bytes into the first entry
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    assert len(_progress_lines(out)) == 4 and all(json.loads(line) for line in _progress_lines(out))


def test_entries_appended_after_a_torn_line_by_older_versions_are_recovered(inputs, tmp_path):
    from fairhead import sweep

    out = tmp_path / "sweep"
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    lines = _progress_lines(out)
    # an older fairhead appended the next entry straight after a torn one, on the same line
    torn = lines[1][:40]
    (out / "progress.jsonl").write_text(lines[0] + "\n" + torn + lines[2] + "\n" + lines[3] + "\n")
    sweep.run_sweep(inputs["cache"], out=out, **SWEEP_KW)
    resumed = _progress_lines(out)
    assert resumed[:3] == [lines[0], lines[2], lines[3]], "the intact entries are kept, the torn one dropped"
    assert len(resumed) == 4, "only the torn head is recomputed"
    assert all(json.loads(line) for line in resumed)


# --------------------------------------------------------------------------- item 11: outputs are replaced whole
def _failing_fsync(monkeypatch, name_prefix: str):
    """Make the fsync of the temporary twin of one output fail as a full disk does."""
    import fairhead_io

    real_fsync = os.fsync

    def full_disk(fd):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(name_prefix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(fairhead_io.os, "fsync", full_disk)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
@pytest.mark.slow
def test_a_failed_output_write_keeps_every_previous_output_intact(inputs, tmp_path, monkeypatch):
    """A sweep's outputs are replaced together: whichever write fails (a full disk), the previous
    sweep.csv, sweep.json, plots and report.md all stay byte-identical, and no temporary file is left."""
    from fairhead import protocols, sweep

    out = tmp_path / "sweep"
    sweep.run_sweep(inputs["cache"], out=out, **{**SWEEP_KW, "plots": True})
    outputs = ("sweep.csv", "sweep.json", "tradeoff.png", "fit_vs_test.png", "report.md")
    before = {name: (out / name).read_bytes() for name in outputs}
    for failing in (".sweep.json", ".fit_vs_test.png", ".report.md"):
        with monkeypatch.context() as patch:
            _failing_fsync(patch, failing)
            with pytest.raises(OSError):
                sweep.run_sweep(inputs["cache"], out=out, **{**SWEEP_KW, "plots": True, "n_eps": 3})
        assert {name: (out / name).read_bytes() for name in outputs} == before, failing
        assert no_temporary_files(out)
    # the same holds for the protocols' table and JSON
    table = protocols.run_protocols(inputs["cache"], constraint="dp-score", out=tmp_path / "p", backend="torch")
    before = tree_digest(tmp_path / "p")
    with monkeypatch.context() as patch:
        _failing_fsync(patch, ".protocols.json")
        with pytest.raises(OSError):
            table.write(tmp_path / "p")
    assert tree_digest(tmp_path / "p") == before and no_temporary_files(tmp_path / "p")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
def test_a_full_disk_during_a_sweep_is_one_line_naming_the_file_and_the_rerun_resumes(inputs, tmp_path, capsys,
                                                                                      monkeypatch):
    args = ["sweep", inputs["cache"], "--constraint", "dp-score", "--n-eps", "3", "--backend", "torch", "--no-plots",
            "--out", tmp_path / "s"]
    with monkeypatch.context() as patch:
        _failing_fsync(patch, ".sweep.json")
        code, err = run_main(capsys, *args)
    assert code == 3 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("fairhead: error: ")]  # tqdm shares stderr
    assert len(errors) == 1, err
    assert "no space left on device" in errors[0] and "sweep.json" in errors[0] and "free space" in errors[0]
    assert not (tmp_path / "s" / "sweep.json").exists() and no_temporary_files(tmp_path)
    finished = _progress_lines(tmp_path / "s")
    assert len(finished) == 3, "the heads solved before the full disk are kept"
    code, err = run_main(capsys, *args)
    assert code == 0, err
    assert _progress_lines(tmp_path / "s") == finished, "the rerun reads them back instead of solving again"
    json.loads((tmp_path / "s" / "sweep.json").read_text())


def test_atomic_write_keeps_permissions_and_cleans_up_after_ctrl_c(tmp_path):
    from fairhead_io import atomic_open, atomic_write_text

    path = atomic_write_text(tmp_path / "a.txt", "one")
    path.chmod(0o640)
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and (path.stat().st_mode & 0o777) == 0o640
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path, "w") as fh:
            fh.write("three")
            raise KeyboardInterrupt
    assert path.read_text() == "two" and no_temporary_files(tmp_path)
    long_name = "n" * 250 + ".md"  # valid on its own; the temporary name must still fit
    assert atomic_write_text(tmp_path / long_name, "ok").read_text() == "ok"


# --------------------------------------------------------------------------- item 13: OS errors are one line
def test_fit_beside_a_cache_in_a_read_only_folder_fails_before_fitting(inputs, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    cache = Path(shutil.copy(inputs["cache"], folder / "cache.h5"))
    with read_only(folder, monkeypatch):
        monkeypatch.setattr("solvers.FairLogisticRegression.fit", lambda *a, **k: pytest.fail("fitted anyway"))
        code, err = run_main(capsys, "fit", cache)
    assert_one_line_error(code, err, 3, "cannot write into folder", "permission denied", "pass --save PATH")
    assert sorted(p.name for p in folder.iterdir()) == ["cache.h5"]


def test_sweep_and_demo_into_a_read_only_out_fail_in_one_line(inputs, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder, monkeypatch):
        code, err = run_main(capsys, "sweep", inputs["cache"], "--out", folder, "--no-plots")
        assert_one_line_error(code, err, 3, "cannot write into folder", "pass --out in a writable folder")
        code, err = run_main(capsys, "demo", "--out", folder / "demo", "--no-progress")
        assert_one_line_error(code, err, 3, "--out", "demo")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", [
    ["sweep", "{cache}", "--no-plots"], ["protocols", "{cache}"], ["generate", "--n", "10"], ["demo"],
], ids=["sweep", "protocols", "generate", "demo"])
def test_out_that_is_an_existing_file_fails_before_any_work(inputs, tmp_path, capsys, monkeypatch, command):
    target = tmp_path / "results.csv"
    target.write_text("precious,data\n1,2\n")
    monkeypatch.setattr("solvers.FairLogisticRegression.fit", lambda *a, **k: pytest.fail("computed anyway"))
    monkeypatch.setattr("embedcache.sources.write_synthetic_dataset", lambda *a, **k: pytest.fail("generated"))
    args = [a.format(cache=inputs["cache"]) for a in command] + ["--out", target]
    code, err = run_main(capsys, *args)
    assert_one_line_error(code, err, 3, "results.csv", "is a file, not a folder", "pass a folder path")
    assert target.read_text() == "precious,data\n1,2\n"


@pytest.mark.parametrize("command, name", [
    (["sweep", "{cache}", "--no-plots"], "report.md"),
    (["sweep", "{cache}", "--no-plots"], "sweep.json"),
    (["sweep", "{cache}", "--no-plots"], "tradeoff.png"),
    (["sweep", "{cache}", "--no-plots"], "progress.jsonl"),
    (["protocols", "{cache}"], "protocols.csv"),
    (["generate", "--n", "10"], "manifest.csv"),
    (["demo"], "report.md"),
    (["demo"], "sweep-dp/sweep.csv"),
], ids=["sweep-report", "sweep-json", "sweep-png", "sweep-progress", "protocols-table", "generate-manifest",
        "demo-report", "demo-sweep-table"])
def test_out_holding_a_users_file_of_the_same_name_is_refused(inputs, tmp_path, capsys, monkeypatch, command, name):
    """`--out .` in a project with its own report.md (or manifest.csv, ...) must not replace it."""
    out = tmp_path / "project"
    (out / name).parent.mkdir(parents=True)
    (out / name).write_bytes(b"my own notes, not fairhead's\n")
    monkeypatch.setattr("solvers.FairLogisticRegression.fit", lambda *a, **k: pytest.fail("computed anyway"))
    monkeypatch.setattr("embedcache.sources.write_synthetic_dataset", lambda *a, **k: pytest.fail("generated"))
    before = tree_digest(out)
    code, err = run_main(capsys, *[a.format(cache=inputs["cache"]) for a in command], "--out", out)
    assert_one_line_error(code, err, 3, Path(name).name, "fairhead did not write", "pass a new or empty folder")
    assert tree_digest(out) == before


def test_save_into_a_missing_folder_or_with_a_too_long_name(inputs, tmp_path, capsys):
    code, err = run_main(capsys, "fit", inputs["cache"], "--save", tmp_path / "missing" / "head.json")
    assert_one_line_error(code, err, 3, "does not exist", "create it")
    code, err = run_main(capsys, "fit", inputs["cache"], "--save", tmp_path / ("h" * 300 + ".json"))
    line = assert_one_line_error(code, err, 3, "too long", "shorter")
    assert len(line) < 300, "the message shortens the path"
    assert list(tmp_path.iterdir()) == []


def test_nan_in_test_rows_only_fails_before_the_fit_naming_the_row(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("solvers.FairLogisticRegression.fit", lambda *a, **k: pytest.fail("fitted anyway"))
    code, err = run_main(capsys, "fit", inputs["nan-cache"], "--save", tmp_path / "head.json")
    assert_one_line_error(code, err, 3, "split 'test'", "1 row(s) with NaN", inputs["nan-id"], "impute")
    code, err = run_main(capsys, "sweep", inputs["nan-cache"], "--out", tmp_path / "sweep")
    assert_one_line_error(code, err, 3, "split 'test'", inputs["nan-id"])
    assert not (tmp_path / "head.json").exists()


def test_solver_device_that_torch_cannot_use(inputs, capsys):
    code, err = run_main(capsys, "fit", inputs["cache"], "--solver-device", "tpu", "--backend", "torch")
    assert_one_line_error(code, err, 3, "'tpu' is not a torch device", "pass cpu")
    import torch

    if not torch.cuda.is_available():
        code, err = run_main(capsys, "fit", inputs["cache"], "--solver-device", "cuda:0")
        assert_one_line_error(code, err, 3, "no CUDA device", "--solver-device cpu")


@pytest.mark.parametrize("error, needles", [
    (OSError(errno.ENOSPC, "No space left on device", "out/sweep.json"), ["no space left", "sweep.json", "free space"]),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x.json"), ["permission denied", "x.json", "permissions"]),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/x"), ["read-only", "writable disk"]),
    (OSError(errno.EFBIG, "File too large", "big.json"), ["file too large", "ulimit"]),
    (OSError(errno.EIO, "Input/output error", "x"), ["input/output error", "check the path"]),
], ids=["full-disk", "permission", "read-only-fs", "file-size-limit", "other"])
def test_any_os_error_in_a_command_is_one_line_with_exit_3(inputs, capsys, monkeypatch, error, needles):
    """The safety net in main(): whatever write fails, the user sees the path and the fix, not 'a bug'."""
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr("fairhead.pipeline.describe_cache", failing)
    code, err = run_main(capsys, "info", inputs["cache"])
    assert_one_line_error(code, err, 3, *needles)
    code, err = run_main(capsys, "--debug", "info", inputs["cache"])
    assert code == 3 and "Traceback" in err


# --------------------------------------------------------------------------- unclear messages and numeric flags
@pytest.mark.parametrize("args, code, needles", [
    (["fit", "{cache}", "--eps", "inf"], 3, ["'eps'", "Got inf"]),
    (["fit", "{cache}", "--C", "inf"], 3, ["'C'", "Got inf"]),
    (["fit", "{cache}", "--eps", "nan"], 3, ["'eps'", "Got nan"]),
    (["sweep", "{cache}", "--n-eps", "-3", "--out", "{tmp}/s"], 2, ["--n-eps", "an integer >= 2", "-3"]),
    (["sweep", "{cache}", "--n-eps", "1", "--out", "{tmp}/s"], 2, ["--n-eps", ">= 2"]),
    (["sweep", "{cache}", "--constraint", "minimax", "--eps-grid", "0.1", "--out", "{tmp}/s"], 3,
     ["minimax", "drop --eps-grid"]),
    (["sweep", "{cache}", "--constraint", "minimax", "--n-eps", "5", "--out", "{tmp}/s"], 3,
     ["minimax", "drop --n-eps"]),
    (["sweep", "{cache}", "--eps-grid", "0.1", "--n-eps", "5", "--out", "{tmp}/s"], 3, ["pass one of them"]),
    (["sweep", "{cache}", "--eps-grid", "0.1", "inf", "--out", "{tmp}/s"], 3, ["got [0.1, inf]", "--eps-grid"]),
    (["sweep", "{cache}", "--constraint", "none", "--out", "{tmp}/s"], 3, ["--constraint dp"]),
    (["fit", "{cache}", "--constraint", "minimax", "--eps", "0.1"], 3, ["minimax has no bound", "drop --eps"]),
    (["protocols", "{cache}", "--constraint", "minimax", "--eps", "0.1"], 3, ["drop --eps"]),
    (["fit", "{cache}", "--constraint", "none", "--eps", "0.1"], 3, ["none has no bound", "drop --eps"]),
    (["demo", "--n-eps", "0", "--out", "{tmp}/d"], 2, ["--n-eps"]),
    (["demo", "--n", "30", "--out", "{tmp}/d"], 3, ["--n 30 is too small", "smallest (label, background) cell",
                                                    "pass --n 2600 or more"]),
    (["demo", "--seed", "-1", "--out", "{tmp}/d"], 2, ["--seed", ">= 0"]),
    (["protocols", "{cache}", "--seed", "-2"], 2, ["--seed", ">= 0"]),
    (["extract", "--synthetic", "--image-size", "0", "--out", "{tmp}/x.h5"], 2, ["--image-size", ">= 1"]),
], ids=["eps-inf", "C-inf", "eps-nan", "n-eps-negative", "n-eps-one", "minimax-grid", "minimax-n-eps",
        "grid-and-n-eps", "grid-inf", "sweep-without-constraint", "fit-minimax-eps", "protocols-minimax-eps",
        "fit-none-eps", "demo-n-eps", "demo-too-small", "demo-seed", "protocols-seed",
        "image-size-zero"])
def test_bad_numeric_flags_are_refused_before_any_work(inputs, tmp_path, capsys, args, code, needles):
    args = [a.format(cache=inputs["cache"], tmp=tmp_path) for a in args]
    got, err = run_main(capsys, *args)
    line = assert_one_line_error(got, err, code, *needles) if code == 3 else err.strip().splitlines()[-1]
    if code == 2:
        assert got == 2 and all(n in line for n in needles), err
    assert "np.float64" not in err
    assert list(tmp_path.iterdir()) == [], "a refused command wrote something"


def test_numpy_values_read_as_plain_numbers_in_messages(inputs):
    from fairhead import sweep
    from solvers import FairLogisticRegression

    with pytest.raises(DataError) as err:
        sweep.check_grid(np.array([0.1, -1.0]))
    assert "[0.1, -1]" in str(err.value) and "np." not in str(err.value)
    with pytest.raises(DataError) as err:
        FairLogisticRegression(eps=np.float64(-1.0)).fit(inputs["X"], np.arange(len(inputs["X"])) % 2)
    assert "Got -1.0 instead" in str(err.value) and "np." not in str(err.value)


def test_the_python_api_refuses_a_one_point_sweep_and_minimax_grids(inputs, tmp_path):
    from fairhead import sweep

    for bad in (1, -3, 2.5, True):
        with pytest.raises(DataError, match="--n-eps must be an integer >= 2"):
            sweep.run_sweep(inputs["cache"], out=tmp_path / "s", constraint="dp", n_eps=bad)
    with pytest.raises(DataError, match="minimax"):
        sweep.run_sweep(inputs["cache"], out=tmp_path / "s", constraint="minimax", eps_grid=[0.1])
    assert not (tmp_path / "s").exists()
