"""kill -9 a real extraction subprocess mid-run; the rerun must finish with the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import embedcache
from embedcache.extract import BATCH_DELAY_ENV
from embedcache.store import schema
from support.extraction import EPOCH, committed_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
N_ROWS, BATCH = 96, 8
#: seconds the subprocess sleeps after each committed batch, so a kill lands mid-run
BATCH_DELAY = "0.15"
STARTUP_TIMEOUT = 120.0

EXTRACT_SCRIPT = f"""
import embedcache
source = embedcache.SyntheticSource({N_ROWS}, seed=2, image_size=32)
backbone = embedcache.build_backbone("resnet18", image_size=32)
embedcache.extract(source, backbone, {{out!r}}, batch_size={BATCH}, num_workers=0, progress=False)
"""


def run_extraction(out: Path, *, delay: str | None) -> subprocess.Popen:
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, PYTHONPATH=str(REPO_ROOT))
    if delay is not None:
        env[BATCH_DELAY_ENV] = delay
    return subprocess.Popen(
        [sys.executable, "-c", EXTRACT_SCRIPT.format(out=str(out))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )


def kill_after(out: Path, rows: int) -> int:
    """Start an extraction, SIGKILL it once ``rows`` rows are committed; return the rows it had."""
    proc = run_extraction(out, delay=BATCH_DELAY)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while committed_rows(out) < rows:
            if proc.poll() is not None:
                raise AssertionError(f"extraction ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("extraction made no progress in time")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return committed_rows(out)


def extract_in_process(out: Path) -> None:
    source = embedcache.SyntheticSource(N_ROWS, seed=2, image_size=32)
    backbone = embedcache.build_backbone("resnet18", image_size=32)
    embedcache.extract(source, backbone, out, batch_size=BATCH, num_workers=0, progress=False)


@pytest.mark.slow
@pytest.mark.fault
def test_kill_9_twice_then_resume_gives_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    reference, killed = tmp_path / "reference.h5", tmp_path / "killed.h5"
    extract_in_process(reference)

    first = kill_after(killed, 2 * BATCH)
    assert 2 * BATCH <= first < N_ROWS and first % BATCH == 0 and not killed.exists()
    with pytest.raises(embedcache.CacheError, match=f"incomplete \\({first} of {N_ROWS} rows\\)"):
        embedcache.open(killed)
    second = kill_after(killed, first + 2 * BATCH)  # the second run resumed, then died too
    assert first < second < N_ROWS

    extract_in_process(killed)
    assert killed.read_bytes() == reference.read_bytes()
    assert not schema.journal_path(killed).exists()
    with embedcache.open(killed) as cache:
        assert cache.n_rows == N_ROWS and len(set(cache.load().sample_ids)) == N_ROWS
