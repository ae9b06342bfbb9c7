"""One conformance suite for every command that writes (issue 20): the output policy, held the same way by all.

The command table comes from the CLI's own parser, so a command added without an entry in ``COMMANDS``
fails ``test_every_command_has_an_entry``. For each command, its output is pointed at its own input, at a
cache, at a head and at a folder holding a user's file; then a write is interrupted by an injected full
disk (``ENOSPC`` from ``fsync``, after the temporary file is written and before the rename) and by
Ctrl-C at the same moment; SIGKILL at that moment runs in a subprocess (``slow``). Each must:

- exit with one line ``fairhead: error: ...`` (exit 3; 130 for Ctrl-C), no traceback;
- lose nothing: every file in the work folder (inputs and an earlier output) byte-identical;
- leave no temporary file (after SIGKILL: the next run of the command removes the dead writer's).

Commands run in this process through ``fairhead.cli.main`` (fast); the inputs are built once per module.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from support.files import tree_digest, write_feature_table

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the inputs, built once
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A feature table and its cache, a head, a sweep folder; images, a weights file, an image cache and its head."""
    import torch
    import torchvision

    import embedcache
    from embedcache import ManifestSource, write_synthetic_dataset
    from fairhead import pipeline
    from fairhead.sweep import run_sweep

    root = tmp_path_factory.mktemp("conformance-inputs")
    p = {}
    p["table.csv"] = write_feature_table(root / "table.csv", n=300, d=4)
    p["cache.h5"] = embedcache.import_table(p["table.csv"], label="label", sensitive=["group"], split="split",
                                            id_col="id", out=root / "cache.h5", progress=False)
    pipeline.fit_on_cache(p["cache.h5"], constraint=None, save=root / "head.json")
    p["head.json"] = root / "head.json"
    run_sweep(p["cache.h5"], constraint="dp-score", eps_grid=[0.2, 0.1], out=root / "sweep", plots=False,
              progress=False)
    p["sweep"] = root / "sweep"
    p["manifest.csv"] = write_synthetic_dataset(root / "images", n=24, seed=2, image_size=32, image_format="png")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "weights.pt")
    p["weights.pt"] = root / "weights.pt"
    source = ManifestSource(p["manifest.csv"], label_col="shape", sensitive_cols=("background",), split_col="split",
                            id_col="id")
    embedcache.extract(source, embedcache.build_backbone("resnet18", weights_file=p["weights.pt"], image_size=32),
                       root / "images.h5", batch_size=8, num_workers=0, progress=False)
    p["images.h5"] = root / "images.h5"
    pipeline.fit_on_cache(p["images.h5"], constraint=None, save=root / "images-head.json", min_group_size=1)
    p["images-head.json"] = root / "images-head.json"
    return p


@pytest.fixture()
def work(inputs, tmp_path):
    """A private copy of the inputs (the images stay shared: no command may write there)."""
    folder = tmp_path / "work"
    folder.mkdir()
    w = {"dir": folder, "images": inputs["manifest.csv"].parent}
    for name, path in inputs.items():
        if name == "manifest.csv":
            w[name] = path
        elif path.is_dir():
            w[name] = Path(shutil.copytree(path, folder / name))
        else:
            w[name] = Path(shutil.copy2(path, folder / name))
    return w


# --------------------------------------------------------------------------- the command table
@dataclass
class Entry:
    """How to run one command with its output at ``target`` (None: a command that writes nothing)."""

    argv: Callable[[dict, Path], list] | None
    output: str = "file"  # "file" or "folder"
    own_input: str | None = None  # the work key of an input the command reads
    own_kind: tuple = ()  # cases whose target is this command's own kind of output (replacing it is right)
    user_file: str = "report.md"  # a folder output: a name it writes, which a user may have there too
    fresh: str = "out"  # a fresh target's name
    write_cases: bool = True  # cheap enough to run the whole write (full disk, Ctrl-C)
    why_not: str = ""


def _extract(w, t):
    return ["extract", "--manifest", w["manifest.csv"], "--target", "shape", "--sensitive", "background",
            "--split-col", "split", "--id-col", "id", "--backbone", "resnet18", "--weights-file", w["weights.pt"],
            "--image-size", "32", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress",
            "--out", t]


COMMANDS: dict[str, Entry] = {
    "extract": Entry(_extract, own_input="weights.pt", fresh="new.h5", own_kind=("cache",)),
    "generate": Entry(lambda w, t: ["generate", "--out", t, "--n", "8"], output="folder", user_file="manifest.csv"),
    "import": Entry(lambda w, t: ["import", w["table.csv"], "--label", "label", "--sensitive", "group", "--split",
                                  "split", "--id-col", "id", "--no-progress", "--out", t],
                    own_input="table.csv", fresh="new.h5", own_kind=("cache",)),
    "info": Entry(None, why_not="writes nothing"),
    "fit": Entry(lambda w, t: ["fit", w["cache.h5"], "--constraint", "none", "--save", t],
                 own_input="cache.h5", fresh="new-head.json", own_kind=("head",)),
    "sweep": Entry(lambda w, t: ["sweep", w["cache.h5"], "--constraint", "dp-score", "--eps-grid", "0.2", "0.1",
                                 "--no-plots", "--out", t], output="folder", own_input="cache.h5"),
    "select": Entry(None, why_not="writes selection.json and a certificate inside SWEEP_DIR, never a path the user "
                                  "names; its refusals are `select`'s owner's tests (tests/fairhead/test_select.py)"),
    "protocols": Entry(lambda w, t: ["protocols", w["cache.h5"], "--constraint", "dp-score", "--eps", "0.1",
                                     "--out", t], output="folder", own_input="cache.h5", user_file="protocols.csv"),
    "finetune-full": Entry(lambda w, t: ["finetune-full", w["images.h5"], "--constraint", "dp", "--out", t,
                                         "--no-progress"], output="folder", own_input="images.h5",
                           user_file="report.md", write_cases=False,
                           why_not="trains two networks (minutes): its write cases are in test_full_network.py"),
    "demo": Entry(lambda w, t: ["demo", "--out", t, "--no-progress"], output="folder", write_cases=False,
                  why_not="runs the whole pipeline (minutes); its folder refusals run here"),
    "presets": Entry(None, why_not="writes nothing"),
    "predict": Entry(lambda w, t: ["predict", "--head", w["images-head.json"], "--manifest", w["manifest.csv"],
                                   "--image-col", "path", "--id-col", "id", "--split-col", "split",
                                   "--weights-file", w["weights.pt"], "--batch-size", "8", "--device", "cpu",
                                   "--no-progress", "--out", t],
                     own_input="images-head.json", fresh="preds.csv"),
}
EXPORT_FORMATS = {"sklearn": "h.joblib", "linear": "h.pt", "program": "m.pt2", "onnx": "m.onnx"}
for _fmt, _name in EXPORT_FORMATS.items():
    COMMANDS[f"export --to {_fmt}"] = Entry(
        (lambda fmt: lambda w, t: ["export", "--head", w["images-head.json"], "--to", fmt,
                                   "--weights-file", w["weights.pt"], "--out", t])(_fmt),
        own_input="images-head.json", fresh=_name, write_cases=_fmt in ("sklearn", "linear", "program"),
        why_not="" if _fmt != "onnx" else "the ONNX exporter takes about 10 s; its full disk runs in the slow test")


def _parser_commands() -> set[str]:
    import argparse

    from fairhead.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_every_command_has_an_entry():
    """A new command must say here how its output is checked (or that it writes nothing)."""
    named = {name.split()[0] for name in COMMANDS}
    assert _parser_commands() == named, "add the new command to COMMANDS in tests/reliability/test_conformance.py"


# --------------------------------------------------------------------------- running a command
def run(capsys, argv) -> tuple[int, str]:
    from fairhead.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


PROGRESS_BAR = re.compile(r"\d+%\|")


def assert_one_line_error(code, err, *, exit_code=3):
    """One ``fairhead: error:`` line, on a line of its own (any progress bar's frames aside)."""
    lines = [line for line in err.strip().splitlines() if not PROGRESS_BAR.search(line)]
    assert code == exit_code, err
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("fairhead: "), err


WRITING = [name for name, e in COMMANDS.items() if e.argv is not None]


def _target(entry: Entry, case: str, w: dict) -> Path:
    if case == "own-input":
        return w[entry.own_input]
    if case == "cache":
        return w["cache.h5"]
    if case == "head":
        return w["head.json"]
    folder = w["dir"] / "mine"  # a folder holding the user's own file
    folder.mkdir()
    (folder / (entry.user_file if entry.output == "folder" else "notes.txt")).write_text("the user's own words\n")
    return folder


CASES = ("own-input", "cache", "head", "directory")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", WRITING)
def test_a_target_that_is_not_this_commands_output_is_refused_before_any_work(name, case, work, capsys):
    entry = COMMANDS[name]
    if case == "own-input" and entry.own_input is None:
        pytest.skip(f"{name} reads no input file")
    if case in entry.own_kind:
        pytest.skip(f"a {case} is {name}'s own kind of output")
    target = _target(entry, case, work)
    before = tree_digest(work["dir"])
    code, err = run(capsys, entry.argv(work, target))
    assert_one_line_error(code, err)
    assert tree_digest(work["dir"]) == before, "a refused command changed a file"
    assert not temporaries(work["dir"])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders: the permission case needs a normal user")
@pytest.mark.parametrize("name", WRITING)
def test_a_read_only_target_folder_is_refused_before_any_work(name, work, capsys):
    entry = COMMANDS[name]
    folder = work["dir"] / "read-only"
    folder.mkdir()
    target = folder / entry.fresh
    before = tree_digest(work["dir"])
    folder.chmod(0o555)
    try:
        code, err = run(capsys, entry.argv(work, target))
    finally:
        folder.chmod(0o755)
    assert_one_line_error(code, err)
    assert tree_digest(work["dir"]) == before and not temporaries(work["dir"])


# --------------------------------------------------------------------------- faults during the write
def _fail_at_fsync(monkeypatch, exc):
    """Every fsync raises ``exc``: the temporary file is written, the rename has not happened."""
    def fsync(fd):
        raise exc

    monkeypatch.setattr(os, "fsync", fsync)


#: write cases that run a backbone (seconds each): in the slow set, the rest stay in the default run
HEAVY_WRITES = ("extract", "predict", "export --to program")


def _write_cases():
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_WRITES else n
            for n in WRITING if COMMANDS[n].write_cases]


@pytest.mark.parametrize("name", _write_cases())
def test_a_full_disk_during_the_write_gives_one_line_and_keeps_the_earlier_output(name, work, capsys, monkeypatch):
    entry = COMMANDS[name]
    target = work["dir"] / entry.fresh
    argv = entry.argv(work, target)
    code, err = run(capsys, argv)
    assert code == 0, err
    if entry.output == "file":  # make the rerun rewrite: an earlier, different output of this kind
        earlier = target.read_bytes()
    before = tree_digest(work["dir"])
    _fail_at_fsync(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code, err = run(capsys, argv)
    monkeypatch.undo()
    if code == 0:  # a command with nothing left to write (a finished cache) need not write again
        assert name in ("extract", "import"), f"{name} wrote through a full disk without an error"
    else:
        assert_one_line_error(code, err)
        assert "no space left" in err.lower(), err
    assert tree_digest(work["dir"]) == before, "the full disk lost or changed a file"
    if entry.output == "file":
        assert target.read_bytes() == earlier
    assert not temporaries(work["dir"])


@pytest.mark.parametrize("name", _write_cases())
def test_a_full_disk_on_the_first_write_leaves_no_partial_output(name, work, capsys, monkeypatch):
    entry = COMMANDS[name]
    target = work["dir"] / entry.fresh
    before = tree_digest(work["dir"])
    _fail_at_fsync(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code, err = run(capsys, entry.argv(work, target))
    monkeypatch.undo()
    assert_one_line_error(code, err)
    assert "no space left" in err.lower(), err
    assert not temporaries(work["dir"])
    after = tree_digest(work["dir"])
    assert {k: v for k, v in after.items() if k in before} == before, "an input changed"
    if entry.output == "file" and name not in ("extract",):  # extract keeps its journal to resume
        assert not target.exists(), "a half-written output is under the final name"


@pytest.mark.parametrize("name", _write_cases())
def test_ctrl_c_during_the_write_keeps_the_earlier_output(name, work, capsys, monkeypatch):
    entry = COMMANDS[name]
    target = work["dir"] / entry.fresh
    argv = entry.argv(work, target)
    code, err = run(capsys, argv)
    assert code == 0, err
    before = tree_digest(work["dir"])
    _fail_at_fsync(monkeypatch, KeyboardInterrupt())
    code, err = run(capsys, argv)
    monkeypatch.undo()
    if code != 0 or name not in ("extract", "import"):
        assert code == 130 and "Traceback" not in err, err
    assert tree_digest(work["dir"]) == before
    assert not temporaries(work["dir"])


# --------------------------------------------------------------------------- SIGKILL (a subprocess)
KILL_AT_FSYNC = """
import os, signal, sys
sys.path.insert(0, {root!r})
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
from fairhead.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fit", "predict", "export --to linear", "export --to program", "export --to onnx"])
def test_sigkill_during_the_write_keeps_the_earlier_output_and_the_rerun_cleans_up(name, work, capsys):
    from fairhead.export import onnx_available

    if name.endswith("onnx") and not onnx_available():
        pytest.skip("the onnx extra is not installed")
    entry = COMMANDS[name]
    target = work["dir"] / entry.fresh
    argv = [str(a) for a in entry.argv(work, target)]
    code, err = run(capsys, argv)
    assert code == 0, err
    earlier, before = target.read_bytes(), tree_digest(work["dir"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILL_AT_FSYNC.format(root=str(ROOT)), *argv], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert target.read_bytes() == earlier  # the old output, whole
    left = temporaries(work["dir"])
    assert left, "the kill should have hit a written temporary file"
    assert {k: v for k, v in tree_digest(work["dir"]).items() if not any(k == str(p.relative_to(work["dir"]))
                                                                       for p in left)} == before
    code, err = run(capsys, argv)  # the rerun removes the dead writer's temporary file
    assert code == 0, err
    assert not temporaries(work["dir"])


@pytest.mark.slow
def test_a_full_disk_during_the_onnx_export_gives_one_line(work, capsys, monkeypatch):
    from fairhead.export import onnx_available

    if not onnx_available():
        pytest.skip("the onnx extra is not installed")
    entry = COMMANDS["export --to onnx"]
    target = work["dir"] / entry.fresh
    _fail_at_fsync(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code, err = run(capsys, entry.argv(work, target))
    monkeypatch.undo()
    assert_one_line_error(code, err)
    assert "no space left" in err.lower() and not target.exists() and not temporaries(work["dir"])
