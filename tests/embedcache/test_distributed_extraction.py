"""`torchrun -m fairhead extract` with 2 gloo processes on CPU: the same cache as one process, bit for bit.

Each launch is a real `python -m torch.distributed.run --standalone --nproc-per-node 2` subprocess
(free rendezvous port) running the real CLI. The reference is the same extraction in this process.
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
from embedcache import CacheError, DataError
from embedcache.distributed import (
    DONE, EXTRACT, MERGE, Launch, ShardSource, finish_run, launch_from_env, plan_run, raise_if_any_failed,
)
from embedcache.extract import BATCH_DELAY_ENV, resolve_device, run_identity
from embedcache.store import schema
from embedcache.store.journal import Journal
from embedcache.store.shards import ShardPlan, read_plan, write_plan
from fairhead import cli, pipeline

REPO_ROOT = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"
N_ROWS, BATCH, SEED, IMAGE_SIZE = 24, 4, 1, 32
#: seconds each rank sleeps after a committed batch in the kill test, so the kill lands mid-shard
BATCH_DELAY = "0.4"
LAUNCH_TIMEOUT = 180.0
#: `--num-images`, not `--n`: torchrun's own parser would read `--n` as an abbreviation of its options
EXTRACT_ARGS = [
    "extract", "--synthetic", "--num-images", str(N_ROWS), "--seed", str(SEED),
    "--backbone", "resnet18", "--weights", "none", "--image-size", str(IMAGE_SIZE),
    "--batch-size", str(BATCH), "--no-progress",
]


def torchrun(out: Path, *extra: str, delay: str | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SOURCE_DATE_EPOCH=EPOCH, PYTHONPATH=str(REPO_ROOT))
    if delay is not None:
        env[BATCH_DELAY_ENV] = delay
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "fairhead", *EXTRACT_ARGS, "--out", str(out), *extra]
    return subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(out: Path, *extra: str) -> None:
    proc = torchrun(out, *extra)
    stdout, stderr = proc.communicate(timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count(f"cache                    {out}") == 1  # rank 0 alone reports the cache


@pytest.fixture(scope="module")
def source():
    """The source the CLI builds from EXTRACT_ARGS (the generator's CLI defaults included)."""
    return pipeline.source_from_args(cli.build_parser().parse_args([*EXTRACT_ARGS, "--out", "unused.h5"]))


@pytest.fixture(scope="module")
def backbone():
    return embedcache.build_backbone("resnet18", weights="none", image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, source, backbone) -> Path:
    """The single-process cache of the same command line."""
    out = tmp_path_factory.mktemp("single") / "single.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        return embedcache.extract(source, backbone, out, batch_size=BATCH, num_workers=0, progress=False)


def contents(path: Path) -> dict:
    with embedcache.open(path) as cache:
        data = cache.load()
        return {"features": data.features, "labels": data.labels, "sensitive": data.sensitive,
                "ids": data.sample_ids.tolist(), "split": data.split.tolist(), "identity": cache.identity,
                "categories": {name: cache.categories(name) for name in cache.sensitive_names}}


def assert_same_contents(a: Path, b: Path) -> None:
    x, y = contents(a), contents(b)
    np.testing.assert_array_equal(x.pop("features"), y.pop("features"))  # bitwise: same batches on CPU
    np.testing.assert_array_equal(x.pop("labels"), y.pop("labels"))
    for name in y["sensitive"]:
        np.testing.assert_array_equal(x["sensitive"][name], y["sensitive"][name])
    x.pop("sensitive"), y.pop("sensitive")
    assert x == y


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.mark.slow
def test_two_processes_write_the_single_process_bytes(tmp_path, reference):
    out = tmp_path / "dist.h5"
    run_to_end(out)
    assert out.read_bytes() == reference.read_bytes()  # features, table and provenance, byte for byte
    assert_same_contents(out, reference)
    assert leftovers(out) == []  # shards, plan, journals and locks are gone


def committed_rows(journal_dir: Path) -> int:
    try:
        return json.loads((journal_dir / schema.JOURNAL_COMMITTED).read_text())[schema.JOURNAL_COMMITTED_ROWS_KEY]
    except (FileNotFoundError, ValueError):
        return 0


def kill_rank_1_part_way(out: Path) -> int:
    """Launch 2 ranks, SIGKILL rank 1 once it has committed a batch of its shard; return its committed rows."""
    shard = schema.shard_path(out, 1, 2)
    proc = torchrun(out, delay=BATCH_DELAY)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    try:
        while committed_rows(schema.journal_path(shard)) < BATCH:
            assert proc.poll() is None, f"ended before the kill: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "rank 1 committed nothing in time"
            time.sleep(0.02)
        pid = int(schema.lock_path(shard).read_text().strip())  # the shard's writer: rank 1's process
        os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=LAUNCH_TIMEOUT)  # torchrun stops rank 0 and fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and not out.exists()
    return committed_rows(schema.journal_path(shard))


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_rank_resumes_its_shard(tmp_path, reference, source, backbone):
    """Kill rank 1 part way; the same command (here with --no-merge) resumes it, and the view equals one process."""
    out = tmp_path / "killed.h5"
    done = kill_rank_1_part_way(out)
    assert BATCH <= done < N_ROWS // 2 and done % BATCH == 0
    with pytest.raises(CacheError, match="no cache at"):
        embedcache.open(out)

    run_to_end(out, "--no-merge")  # rank 1 resumes at row `done` of its shard; rank 0's shard is already done
    with embedcache.open(out) as cache:
        assert cache.is_view  # /features is a virtual dataset over the two shards
    assert_same_contents(out, reference)
    shards = [schema.shard_path(out, 0, 2).name, schema.shard_path(out, 1, 2).name]
    assert set(leftovers(out)) - {schema.lock_path(schema.shard_path(out, 1, 2)).name} == {  # kill -9 left its lock
        *shards, schema.shard_plan_path(out).name}
    # the view is complete: a single process has nothing to do (no world-size refusal)
    before = out.stat().st_mtime_ns
    embedcache.extract(source, backbone, out, batch_size=BATCH, progress=False)
    assert out.stat().st_mtime_ns == before
    # a view whose shard is gone is refused, never read as zeros
    schema.shard_path(out, 1, 2).rename(tmp_path / "aside.h5")
    with pytest.raises(CacheError, match="is a view over shard files .* its shard .*shard-00001-of-00002.h5' is missing"):
        embedcache.open(out)
    (tmp_path / "aside.h5").rename(schema.shard_path(out, 1, 2))
    # rank 0's part of a later run without --no-merge: merge the view's shards into the single-process bytes
    identity = run_identity(source, backbone, feature_dtype="float32", device=resolve_device("cpu"), amp_dtype=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        action, plan = plan_run(out, world_size=2, identity=identity, batch_size=None, overwrite=False, merge=True)
        assert action == MERGE
        finish_run(out, plan, action, source=source, identity=identity, merge=True)
    assert out.read_bytes() == reference.read_bytes()
    assert leftovers(out) == []  # shards, plan, and the lock file kill -9 left beside shard 1


def test_another_world_size_is_refused(tmp_path, source, backbone, capsys):
    """Unfinished shards of 2 processes: 1 process (plain or torchrun) and 3 processes are refused, with the fix."""
    out = tmp_path / "planned.h5"
    identity = run_identity(source, backbone, feature_dtype="float32", device=resolve_device("cpu"), amp_dtype=None)
    action, plan = plan_run(out, world_size=2, identity=identity, batch_size=BATCH, overwrite=False, merge=True)
    assert action == EXTRACT and plan.bounds == ((0, 12), (12, 24)) and read_plan(out) == plan

    single = "unfinished extraction by 2 processes .* but this run has 1; rerun with 2 processes in all"
    with pytest.raises(CacheError, match=single):
        embedcache.extract(source, backbone, out, batch_size=BATCH, progress=False, overwrite=True)
    with pytest.raises(CacheError, match="but this run has 3; .*or delete '.*planned.h5.shards.json' and the files"):
        plan_run(out, world_size=3, identity=identity, batch_size=BATCH, overwrite=True, merge=True)

    code = cli.main([*EXTRACT_ARGS, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("fairhead: error:")] == [err.splitlines()[-1]]
    assert "this run has 1" in err
    assert read_plan(out) == plan and sorted(os.listdir(tmp_path)) == ["planned.h5.shards.json"]  # nothing touched


def test_rank_0_decides_from_what_is_on_disk(tmp_path, reference, source, backbone):
    """A finished cache is left alone; a single-process journal and another dataset's plan are refused."""
    identity = run_identity(source, backbone, feature_dtype="float32", device=resolve_device("cpu"), amp_dtype=None)
    decide = dict(world_size=2, identity=identity, batch_size=BATCH, merge=True)
    done = tmp_path / "done.h5"
    done.write_bytes(reference.read_bytes())
    assert plan_run(done, overwrite=False, **decide) == (DONE, None)

    journaled = tmp_path / "journaled.h5"
    Journal(journaled).start({"identity": identity})
    with pytest.raises(CacheError, match="unfinished single-process extraction in .* rerun without torchrun"):
        plan_run(journaled, overwrite=True, **decide)

    other = tmp_path / "other.h5"
    write_plan(other, ShardPlan.make(n_rows=N_ROWS, world_size=2, batch_size=BATCH,
                                     identity={**identity, schema.DATASET_FINGERPRINT_ATTR: "0" * 64}))
    with pytest.raises(CacheError, match="unfinished distributed extraction .* was built from dataset fingerprint"):
        plan_run(other, overwrite=False, **decide)
    action, plan = plan_run(other, overwrite=True, **decide)  # --overwrite: a new plan for this run
    assert action == EXTRACT and read_plan(other) == plan and plan.identity == identity


def test_plan_is_contiguous_and_batch_aligned():
    plan = ShardPlan.make(n_rows=100, world_size=3, batch_size=8, identity={})
    assert plan.bounds == ((0, 32), (32, 64), (64, 100))
    assert ShardPlan.make(n_rows=5, world_size=4, batch_size=4, identity={}).bounds == ((0, 0), (0, 4), (4, 4), (4, 5))
    assert ShardPlan.from_json(plan.to_json()) == plan


def test_shard_source_is_the_rows_of_its_source(source):
    shard = ShardSource(source, 8, 16)
    assert len(shard) == 8 and shard.ids.tolist() == source.ids[8:16].tolist()
    assert np.array_equal(np.asarray(shard.load_image(3)), np.asarray(source.load_image(11)))
    assert shard.fingerprint() not in (source.fingerprint(), ShardSource(source, 8, 17).fingerprint())


@pytest.mark.parametrize(
    "env, expected",
    [({}, None), ({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}, None),
     ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, (3, 4, 1))],
    ids=["plain", "world-of-one", "torchrun"],
)
def test_launch_is_read_from_the_torchrun_environment(env, expected):
    launch = launch_from_env(env)
    assert (None if launch is None else (launch.rank, launch.world_size, launch.local_rank)) == expected


def test_one_rank_error_is_printed_once_by_rank_0_naming_the_rank():
    outcomes = [None, ("DataError", "image 7 cannot be decoded; replace it")]
    with pytest.raises(DataError, match=r"^rank 1 of 2: image 7 cannot be decoded; replace it$") as on_rank_0:
        raise_if_any_failed(outcomes, None, Launch(rank=0, world_size=2, local_rank=0))
    assert not on_rank_0.value.reported_by_rank_0  # rank 0 prints it
    own = DataError("image 7 cannot be decoded; replace it")
    with pytest.raises(DataError) as on_rank_1:
        raise_if_any_failed(outcomes, own, Launch(rank=1, world_size=2, local_rank=1))
    assert on_rank_1.value is own and own.reported_by_rank_0  # the failing rank keeps its error, and stays quiet
    shared = [("CacheError", "refused"), ("CacheError", "refused")]
    with pytest.raises(CacheError, match="^refused$"):  # the same refusal on every rank: no rank named
        raise_if_any_failed(shared, None, Launch(rank=0, world_size=2, local_rank=0))
