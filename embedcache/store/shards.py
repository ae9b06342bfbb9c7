"""The on-disk side of a distributed extraction: the shard plan, the shards, the merge and the view.

Under ``torchrun``, rank r of W writes rows ``[start_r, stop_r)`` of the
source into its own cache ``x.h5.shard-0000r-of-0000W.h5`` (with its own
journal and lock, so it is crash-safe and resumable exactly like a
single-process extraction). Beside them:

* ``x.h5.shards.json``  the plan: world size, the batch size the row ranges
                        are aligned to, each rank's ``[start, stop)``, and the
                        identity of the whole cache. Rank 0 writes it once,
                        atomically, before any rank starts; every rank and
                        every rerun follows it, so the row ranges never move.

At the end rank 0 either merges the shards into ``x.h5`` (written as
``x.h5.tmp``, fsynced, renamed; only then are the shards and the plan
deleted, the plan last), or writes ``x.h5`` as a view: the same table with a
``/features`` that is an HDF5 virtual dataset over the shards' ``/features``
(no copy; the shards and the plan stay, and a later run without
``--no-merge`` merges them).

The plan is also how a rerun with another world size is caught: the row
ranges of W ranks cannot be resumed by W' ranks, so it is refused with the
fix (rerun with the original process count, or delete the shard files).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from embedcache.errors import CacheError, one_line
from embedcache.store import schema
from embedcache.store.journal import WriteLock
from embedcache.store.reader import Cache
from embedcache.store.writer import CacheTable, atomic_write_text, commit_file, write_cache, write_error

PLAN_VERSION = 1
#: what a failed merge asks for once its cause is fixed (the shards are kept)
RERUN_TORCHRUN = "rerun the same torchrun command to merge the shards"
MSG_WORLD_SIZE = (
    "cache '{out}' has an unfinished extraction by {planned} processes (plan '{plan}') but this run has {world}; "
    "rerun with {planned} processes in all (nnodes x nproc-per-node = {planned}), "
    "or delete '{plan}' and the files '{out_name}.shard-*' to start over"
)
MSG_SINGLE_JOURNAL = (
    "cache '{out}' has an unfinished single-process extraction in '{journal}' but this run has {world} processes; "
    "rerun without torchrun to finish it, or remove that folder to start over"
)
MSG_UNREADABLE_PLAN = (
    "shard plan '{plan}' cannot be read ({error}); delete it and the files '{out_name}.shard-*' to start over"
)
MSG_BAD_SHARD = (
    "shard '{shard}' does not hold rows {start}-{stop} of this run ({problem}); "
    "delete it and rerun the same torchrun command to rebuild it"
)


@dataclass(frozen=True)
class ShardPlan:
    """Which rows each rank extracts, fixed once for a distributed extraction and all its reruns.

    Attributes
    ----------
    world_size : int
    batch_size : int
        Every range starts on a multiple of it, so each rank runs exactly the
        batches a single process would run (the bits agree even for a model
        whose output depends on the batch).
    bounds : tuple of (start, stop)
        Rank r extracts rows ``[start, stop)``; empty for surplus ranks.
    identity : dict
        The identity attributes of the whole cache.
    """

    world_size: int
    batch_size: int
    bounds: tuple[tuple[int, int], ...]
    identity: Mapping[str, Any]

    @classmethod
    def make(cls, *, n_rows: int, world_size: int, batch_size: int, identity: Mapping[str, Any]) -> "ShardPlan":
        """Contiguous, batch-aligned blocks: the batches are dealt out as evenly as they go."""
        batches = -(-int(n_rows) // int(batch_size))
        bounds = []
        for rank in range(world_size):
            first, last = rank * batches // world_size, (rank + 1) * batches // world_size
            bounds.append((min(n_rows, first * batch_size), min(n_rows, last * batch_size)))
        return cls(int(world_size), int(batch_size), tuple(bounds), dict(identity))

    def to_json(self) -> str:
        return schema.dumps_json({
            "plan-version": PLAN_VERSION,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "bounds": [list(b) for b in self.bounds],
            "identity": dict(self.identity),
        })

    @classmethod
    def from_json(cls, text: str) -> "ShardPlan":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("plan-version") != PLAN_VERSION:
            raise ValueError(f"unknown plan version {data.get('plan-version') if isinstance(data, dict) else data!r}")
        bounds = tuple((int(a), int(b)) for a, b in data["bounds"])
        world = int(data["world_size"])
        if len(bounds) != world or any(not 0 <= a <= b for a, b in bounds):
            raise ValueError(f"{len(bounds)} row ranges for {world} ranks")
        found = data["identity"]  # JSON sorted the keys: back to the order the cache's attributes take
        identity = {key: found[key] for key in schema.IDENTITY_ATTRS if key in found}
        return cls(world, int(data["batch_size"]), bounds, identity)

    def shards(self, out: Path) -> list[tuple[Path, int, int]]:
        """(shard file, start, stop) of every rank that has rows."""
        return [(schema.shard_path(out, rank, self.world_size), a, b)
                for rank, (a, b) in enumerate(self.bounds) if b > a]


def read_plan(out: Path) -> ShardPlan | None:
    """The plan beside ``out``, or None when there is none."""
    path = schema.shard_plan_path(out)
    try:
        return ShardPlan.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CacheError(MSG_UNREADABLE_PLAN.format(plan=path, error=one_line(err), out_name=out.name)) from err


def write_plan(out: Path, plan: ShardPlan) -> None:
    """Write the plan atomically (a crash leaves the old plan or the new one)."""
    atomic_write_text(schema.shard_plan_path(out), plan.to_json())


def world_size_error(out: Path, plan: ShardPlan, world_size: int) -> CacheError:
    return CacheError(MSG_WORLD_SIZE.format(out=out, planned=plan.world_size, plan=schema.shard_plan_path(out),
                                            world=world_size, out_name=out.name))


def check_no_unfinished_shards(out: Path, identity: Mapping[str, Any], *, world_size: int) -> None:
    """Refuse a run of ``world_size`` processes over the unfinished shards of another world size.

    Shards of a finished cache (a ``--no-merge`` view, or a merge killed
    before it deleted them) do not count: ``out`` is complete and this run has
    nothing to do.
    """
    plan = read_plan(out)
    if plan is None or plan.world_size == world_size or complete_state(out, identity) is not None:
        return
    raise world_size_error(out, plan, world_size)


def complete_state(out: Path, identity: Mapping[str, Any]) -> str | None:
    """"view" or "merged" if ``out`` is a complete cache with this identity, else None."""
    if not out.is_file():
        return None
    try:
        with Cache(out) as cache:
            if schema.identity_mismatch(cache.identity, identity, path=out) is not None:
                return None
            return "view" if cache.is_view else "merged"
    except CacheError:
        return None


def shard_identity(identity: Mapping[str, Any], *, fingerprint: str, n_rows: int) -> dict[str, Any]:
    """A shard's identity: the whole cache's, with the shard's rows and dataset fingerprint."""
    return {**identity, schema.DATASET_FINGERPRINT_ATTR: fingerprint, schema.N_ROWS_ATTR: int(n_rows)}


def check_shards(out: Path, plan: ShardPlan, shard_identities: Sequence[Mapping[str, Any]], sample_ids) -> None:
    """Each shard must be the complete cache of its rows, from this run (identity and ids)."""
    for (path, start, stop), identity in zip(plan.shards(out), shard_identities):
        try:
            with Cache(path) as cache:
                problem = schema.identity_mismatch(cache.identity, identity, path=path, what="shard")
                if problem is None:
                    if cache.sample_ids.tolist() != [str(i) for i in sample_ids[start:stop]]:
                        problem = "its sample ids differ"
        except CacheError as err:
            problem = str(err)
        if problem is not None:
            raise CacheError(MSG_BAD_SHARD.format(shard=path, start=start, stop=stop - 1, problem=problem))


class _ShardRows:
    """The shards' ``/features`` as one (N, D) array sliceable by rows.

    Each slice opens the shards it needs and closes them again, so no HDF5
    file is open when the writer forks its child (which does the reading).
    """

    def __init__(self, shards: Sequence[tuple[Path, int, int]], *, n_rows: int, feature_dim: int, dtype) -> None:
        self.shards = list(shards)
        self.shape = (int(n_rows), int(feature_dim))
        self.dtype = np.dtype(dtype)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        for path, a, b in self.shards:
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                with h5py.File(path, "r") as f:
                    f[schema.FEATURES].read_direct(out, np.s_[lo - a : hi - a], np.s_[lo - start : hi - start])
        return out


def _view_layout(shards: Sequence[tuple[Path, int, int]], *, n_rows: int, feature_dim: int, dtype) -> h5py.VirtualLayout:
    """A virtual ``/features`` over the shards, by file name (relative: the view and its shards move together)."""
    layout = h5py.VirtualLayout(shape=(n_rows, feature_dim), dtype=np.dtype(dtype))
    for path, a, b in shards:
        layout[a:b] = h5py.VirtualSource(path.name, schema.FEATURES, shape=(b - a, feature_dim), dtype=np.dtype(dtype))
    return layout


def finish_shards(out: Path, plan: ShardPlan, *, identity: Mapping[str, Any], table: CacheTable,
                  source_description: Mapping[str, Any], merge: bool) -> Path:
    """Write ``out`` from the checked shards: merged (a copy) or a view over them; atomic either way.

    ``identity``, ``table`` and ``source_description`` are the whole run's,
    exactly what a single process writes, so on CPU a merged cache is that
    process's file byte for byte. After a merge the shards and then the plan
    are deleted; a kill in between leaves a complete ``out`` and some shards,
    which the next run deletes.
    """
    n, d = int(identity[schema.N_ROWS_ATTR]), int(identity[schema.FEATURE_DIM_ATTR])
    dtype = identity[schema.FEATURE_DTYPE_ATTR]
    shards = plan.shards(out)
    features = (_ShardRows if merge else _view_layout)(shards, n_rows=n, feature_dim=d, dtype=dtype)
    tmp = schema.tmp_path(out)
    write_cache(tmp, table=table, features=features, identity=identity, source_description=source_description,
                then=RERUN_TORCHRUN)
    try:
        commit_file(tmp, out)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(err, out, needed=0, then=RERUN_TORCHRUN) from err
    if merge:
        remove_shards(out, plan)
    return out


def remove_shards(out: Path, plan: ShardPlan) -> None:
    """Delete the shard files, then the plan (so a kill part way leaves the plan that names the rest).

    The lock file a killed rank left beside its shard goes too, unless someone holds it.
    """
    for path, _, _ in plan.shards(out):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if WriteLock(path).holder() is None:
            with contextlib.suppress(FileNotFoundError):
                schema.lock_path(path).unlink()
    with contextlib.suppress(FileNotFoundError):
        schema.shard_plan_path(out).unlink()
