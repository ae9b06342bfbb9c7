"""Faults: kill -9 at random moments of real extraction and sweep processes; the reruns lose nothing.

Extraction: one long-lived subprocess imports torch and builds the backbone once, then ``os.fork``s a fresh
child per run (a real process, killed with a real SIGKILL), so 20+ kills cost a few seconds instead of a
torch import each. The moments are drawn with a fixed seed over the whole run, start-up and the final HDF5
write included. After each kill the same extraction reruns to completion and the file must be byte-identical
to an uninterrupted run (``SOURCE_DATE_EPOCH`` pinned). tests/embedcache/test_extraction_kill.py covers
two kills in a row of one run; a concurrent second writer is refused in
tests/embedcache/test_extraction.py::test_concurrent_writer_is_refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import embedcache
from embedcache.extract import BATCH_DELAY_ENV
from embedcache.store import schema
from support.extraction import EPOCH, committed_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
N_ROWS, BATCH = 64, 8
#: seconds each killable run sleeps after a committed batch, so the kills spread over many batches
KILL_BATCH_DELAY = 0.03
N_KILLS = 24
MIN_KILLS_LANDED = 20
KILL_SEED = 20251121
STARTUP_TIMEOUT_S = 180

ZYGOTE = f"""
import os, sys, traceback
import embedcache
source = embedcache.SyntheticSource({N_ROWS}, seed=2, image_size=32)
backbone = embedcache.build_backbone("resnet18", image_size=32)
print("ready", flush=True)
for line in sys.stdin:
    mode, out = line.split(maxsplit=1)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if mode == "kill":
                os.environ["{BATCH_DELAY_ENV}"] = "{KILL_BATCH_DELAY}"
            embedcache.extract(source, backbone, out.strip(), batch_size={BATCH}, num_workers=0, progress=False)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("status", status, flush=True)
"""


class Zygote:
    """A subprocess that forks one extraction child per request."""

    def __init__(self):
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        assert self.proc.stdout.readline().strip() == "ready"

    def start(self, mode: str, out: Path) -> int:
        self.proc.stdin.write(f"{mode} {out}\n")
        self.proc.stdin.flush()
        word, pid = self.proc.stdout.readline().split()
        assert word == "pid"
        return int(pid)

    def wait(self) -> int:
        word, status = self.proc.stdout.readline().split()
        assert word == "status"
        return int(status)

    def run(self, out: Path) -> None:
        self.start("run", out)
        assert self.wait() == 0, f"extraction into {out} failed"

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.mark.slow
@pytest.mark.fault
def test_kill_9_at_random_moments_then_rerun_gives_identical_bytes(zygote, tmp_path):
    reference, again = tmp_path / "reference.h5", tmp_path / "again.h5"
    t0 = time.monotonic()
    zygote.start("kill", reference)  # uninterrupted, but as slow as a killable run: times the whole run
    assert zygote.wait() == 0
    duration = time.monotonic() - t0
    zygote.run(again)
    assert again.read_bytes() == reference.read_bytes(), "two uninterrupted runs differ"

    rng = np.random.default_rng(KILL_SEED)
    moments = rng.uniform(0.0, duration, N_KILLS)
    landed, rows_lost, phases = 0, 0, []
    for k, moment in enumerate(moments):
        out = tmp_path / f"killed-{k}.h5"
        pid = zygote.start("kill", out)
        deadline = time.monotonic() + moment
        seen = 0
        while time.monotonic() < deadline:
            seen = max(seen, committed_rows(out))
            time.sleep(0.002)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = zygote.wait()
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            landed += 1
            after = committed_rows(out)
            rows_lost += max(0, seen - after) if schema.journal_path(out).exists() else 0
            phases.append("done" if not schema.journal_path(out).exists() else f"{after}/{N_ROWS}")
            if schema.journal_path(out).exists() or not out.exists():
                # a killed run never passes for a finished cache
                with pytest.raises(embedcache.CacheError):
                    embedcache.open(out)
        else:
            assert status == 0, f"run {k} failed on its own (status {status})"
        zygote.run(out)  # the same command again
        assert out.read_bytes() == reference.read_bytes(), f"kill {k} at {moment:.3f}s: the rerun differs"
        assert not schema.journal_path(out).exists()
    print(f"kill -9: {landed} kills landed at {phases}; rows lost {rows_lost}")
    assert landed >= MIN_KILLS_LANDED, f"only {landed} of {N_KILLS} kills hit a running extraction"
    assert rows_lost == 0
    # the kills must spread over the run: before any commit, mid-run, and after the last batch
    assert len(set(phases)) >= 5, phases


# --------------------------------------------------------------------------- sweep
SWEEP_ARGS = ["--constraint", "dp-score", "--backend", "torch", "--n-eps", "8", "--no-plots"]
#: a resumed path warm-starts from another point; both reach the optimum to the solver's tolerance
SWEEP_COEF_ATOL = 1e-4
SWEEP_METRIC_ATOL = 1e-3


def _sweep_cmd(cache, out):
    return [sys.executable, "-m", "fairhead.cli", "sweep", str(cache), *SWEEP_ARGS, "--out", str(out)]


def _rows_without_times(out: Path) -> list[dict]:
    import csv

    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in r.items() if "time" not in k} for r in rows]


@pytest.mark.slow
@pytest.mark.fault
def test_sweep_killed_part_way_keeps_finished_rows_and_resumes(bad_inputs, tmp_path):
    cache = bad_inputs["cache"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_sweep_cmd(cache, full), check=True, capture_output=True, timeout=300)
    progress = killed / "progress.jsonl"
    proc = subprocess.Popen(_sweep_cmd(cache, killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while not (progress.exists() and len(progress.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the sweep wrote no rows in time"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    kept = [json.loads(line) for line in progress.read_text().splitlines() if line.strip().endswith("}")]
    assert 2 <= len(kept) < 8, "the kill must land part-way"

    subprocess.run(_sweep_cmd(cache, killed), check=True, capture_output=True, timeout=300)
    resumed = [json.loads(line) for line in progress.read_text().splitlines()]
    assert resumed[: len(kept)] == kept, "finished rows were recomputed or lost"
    a, b = _rows_without_times(full), _rows_without_times(killed)
    assert len(a) == len(b) == 27
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            try:
                assert float(ra[key]) == pytest.approx(float(rb[key]), abs=SWEEP_METRIC_ATOL, nan_ok=True), key
            except ValueError:
                assert ra[key] == rb[key], key


@pytest.mark.parametrize("constraint", ["dp", "dp-score"])
def test_resumed_sweep_equals_an_uninterrupted_one(bad_inputs, tmp_path, constraint):
    """An interruption after k heads (the progress file keeps k lines): the rerun rebuilds the warm-start
    chain, so every later head, and the whole table, equals the uninterrupted run's exactly."""
    from fairhead.sweep import PROGRESS_FILE, run_sweep

    cache = bad_inputs["cache"]
    kw = dict(constraint=constraint, backend="torch", n_eps=8, plots=False, progress=False)
    run_sweep(cache, out=tmp_path / "full", **kw)
    cut = tmp_path / "cut"
    run_sweep(cache, out=cut, **kw)
    lines = (cut / PROGRESS_FILE).read_text().splitlines(keepends=True)
    assert len(lines) == 8
    (cut / PROGRESS_FILE).write_text("".join(lines[:3]))  # as a kill after the third head leaves it
    run_sweep(cache, out=cut, **kw)
    assert (cut / PROGRESS_FILE).read_text().splitlines(keepends=True)[:3] == lines[:3]
    assert _rows_without_times(cut) == _rows_without_times(tmp_path / "full")
