"""Extraction under ``torchrun``: each rank extracts one block of rows, rank 0 merges the blocks.

``torchrun --nproc-per-node N [--nnodes M ...] -m fairhead extract ...`` runs
the same command line in N x M processes. torch.distributed is only the
launcher and the meeting point here (gloo on CPU, NCCL on CUDA, each rank on
``cuda:LOCAL_RANK``); no features travel through it:

1. rank 0 takes the cache's write lock, checks what is already on disk and
   writes the shard plan (:mod:`embedcache.store.shards`): world size and each
   rank's contiguous, batch-aligned block of rows. It broadcasts the plan (or
   the reason to stop) to every rank.
2. every rank runs the ordinary single-process extraction
   (:func:`embedcache.extract.extract_local`) over its block into its own
   shard cache, with its own journal and lock: crash-safe, and a killed rank
   resumes its own shard when the same command is rerun.
3. the ranks gather each other's outcome (the one collective that waits for
   the slowest rank), so that one rank's error stops them all with one message.
4. rank 0 merges the shards into the cache (``merge=False``: writes a view
   over them) and deletes them once the cache is in place.

Contiguous blocks aligned to the batch size make every rank run exactly the
batches a single process would, so on CPU the merged cache is bitwise the
single-process one. A rerun with another world size is refused (the blocks of
W ranks cannot be resumed by W' ranks); the message names both fixes.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

from embedcache import errors
from embedcache.backbones import Backbone
from embedcache.errors import CacheError, DataError, FairheadError, one_line
from embedcache.extract import (
    DEFAULT_BATCH_SIZE,
    check_options,
    extract_local,
    resolve_autocast,
    resolve_device,
    run_identity,
)
from embedcache.store import schema
from embedcache.store.journal import Journal, WriteLock
from embedcache.store.reader import existing_cache_matches
from embedcache.store.shards import (
    MSG_SINGLE_JOURNAL,
    ShardPlan,
    check_shards,
    complete_state,
    finish_shards,
    read_plan,
    remove_shards,
    shard_identity,
    world_size_error,
    write_plan,
)
from embedcache.store.writer import CacheTable, prepare_output

logger = logging.getLogger("embedcache")

#: how long a rank waits for the others at the end: a rank that resumed a nearly finished shard
#: waits for ranks that start from scratch, so this is the longest a shard may take
WAIT_FOR_RANKS = timedelta(hours=24)
MSG_BAD_LAUNCH = (
    "torchrun variable {name}={value!r} is not {what}; launch with `torchrun --nproc-per-node N -m fairhead extract ...`"
)
MSG_NO_GPU_FOR_RANK = (
    "local rank {local_rank} has no GPU (this node has {count}); pass --nproc-per-node {count} or fewer, "
    "or `device='cpu'`"
)
MSG_VIEW_WITHOUT_PLAN = (
    "cache '{out}' is a view over shards but their plan '{plan}' is missing; "
    "rerun the torchrun command with `merge=False` to keep the view, or rebuild the cache with `overwrite=True`"
)
MSG_OTHER_RANK = "rank {rank} of {world}: {message}"
#: seconds a rank whose error rank 0 reports waits before exiting, so that rank 0 can print it
REPORT_GRACE_S = 3.0
MSG_JOIN_FAILED = (
    "cannot join the {backend} process group ({error}); launch with `torchrun --nproc-per-node N -m fairhead extract ...`, "
    "or unset WORLD_SIZE to run one process"
)

#: what rank 0 decides a run has to do
EXTRACT, MERGE, CLEAN, DONE = "extract", "merge", "clean", "done"


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a ``torchrun`` launch (its environment variables)."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The launch ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``.

    None for a plain process, and for a world of one (which is one: it runs
    exactly as a single process does).
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return None
    values = {}
    for name, low in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)):
        text = env.get(name, "0" if name == "LOCAL_RANK" else None)
        try:
            values[name] = int(text)
        except (TypeError, ValueError):
            values[name] = None
        if values[name] is None or values[name] < low:
            raise DataError(MSG_BAD_LAUNCH.format(name=name, value=text, what=f"an integer >= {low}"))
    if values["WORLD_SIZE"] == 1:
        return None
    if values["RANK"] >= values["WORLD_SIZE"]:
        raise DataError(MSG_BAD_LAUNCH.format(name="RANK", value=env["RANK"],
                                              what=f"below WORLD_SIZE={values['WORLD_SIZE']}"))
    return Launch(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


class ShardSource:
    """Rows ``[start, stop)`` of a source, as a source of their own (what one rank extracts).

    Images load exactly as the whole source loads them (the same decode
    options), so a shard's features are the whole extraction's. Its
    fingerprint is the whole source's combined with the row range: a shard
    cache can never pass for another block or another dataset.
    """

    def __init__(self, base, start: int, stop: int) -> None:
        self.base, self.start, self.stop = base, int(start), int(stop)
        rows = slice(self.start, self.stop)
        self.ids = base.ids[rows]
        self.labels = base.labels[rows]
        self.label_name = base.label_name
        self.label_categories = base.label_categories
        self.sensitive = {name: (codes[rows], categories) for name, (codes, categories) in base.sensitive.items()}
        self.splits = base.splits[rows]
        self._where = f"{getattr(base, '_where', type(base).__name__)} (rows {self.start}-{self.stop - 1})"
        self._draft = "draft_size" in inspect.signature(base.load_image).parameters

    def __len__(self) -> int:
        return self.stop - self.start

    def load_image(self, i: int, *, draft_size: int | None = None):
        if self._draft:
            return self.base.load_image(self.start + i, draft_size=draft_size)
        return self.base.load_image(self.start + i)

    def image_paths(self):
        paths_of = getattr(self.base, "image_paths", None)
        paths = paths_of() if callable(paths_of) else None
        return list(paths)[self.start : self.stop] if paths else None

    def fingerprint(self) -> str:
        text = f"{self.base.fingerprint()}\x00rows\x00{self.start}\x00{self.stop}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {**self.base.describe(), "shard": {"start": self.start, "stop": self.stop, "of": len(self.base.ids)}}


def rank_device(device: str | torch.device, launch: Launch) -> torch.device:
    """"auto" and "cuda" mean this rank's own GPU, ``cuda:LOCAL_RANK``; anything else is taken as given."""
    if str(device) in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if launch.local_rank >= count:
            raise DataError(MSG_NO_GPU_FOR_RANK.format(local_rank=launch.local_rank, count=count))
        return torch.device("cuda", launch.local_rank)
    return resolve_device(device)


def plan_run(out: Path, *, world_size: int, identity: Mapping[str, Any], batch_size: int | None,
             overwrite: bool, merge: bool) -> tuple[str, ShardPlan | None]:
    """Rank 0's decision, from what is on disk: (EXTRACT | MERGE | CLEAN | DONE, the plan).

    Refuses (:class:`CacheError`) another world size's unfinished shards and
    a single-process journal (even with ``overwrite``: deleting files other
    nodes may be writing is the user's call), and a cache or plan of another
    backbone or dataset (unless ``overwrite``).
    """
    prepare_output(out)
    plan = read_plan(out)
    ours = plan is not None and dict(plan.identity) == dict(identity)
    state = None if overwrite else complete_state(out, identity)  # --overwrite redoes even a finished cache
    if state == "merged":  # done; a merge killed before it deleted the shards left some
        return (CLEAN if ours else DONE), plan
    if state == "view":
        if not merge:
            return DONE, plan
        if plan is None:
            raise CacheError(MSG_VIEW_WITHOUT_PLAN.format(out=out, plan=schema.shard_plan_path(out)))
        return MERGE, plan
    journal = Journal(out)
    if journal.exists():
        raise CacheError(MSG_SINGLE_JOURNAL.format(out=out, journal=journal.dir, world=world_size))
    if plan is not None and plan.world_size != world_size:
        raise world_size_error(out, plan, world_size)
    if out.exists() and not overwrite:
        existing_cache_matches(out, dict(identity))  # raises the one-line mismatch (it cannot match here)
    if plan is not None and not ours and not overwrite:
        raise CacheError(schema.identity_mismatch(plan.identity, identity, path=schema.shard_plan_path(out),
                                                  what="unfinished distributed extraction"))
    if not ours:
        plan = ShardPlan.make(n_rows=int(identity[schema.N_ROWS_ATTR]), world_size=world_size,
                              batch_size=int(batch_size or DEFAULT_BATCH_SIZE), identity=identity)
        write_plan(out, plan)
    return EXTRACT, plan


class _Group:
    """The process group for one extraction: joined on entry (or reused), left on exit if we joined it."""

    def __init__(self, launch: Launch, device: torch.device) -> None:
        self.launch, self.device, self.owned = launch, device, False

    def __enter__(self) -> "_Group":
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL's object collectives run on the current device
        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            try:
                dist.init_process_group(backend=backend, timeout=WAIT_FOR_RANKS)
            except (ValueError, RuntimeError) as err:  # WORLD_SIZE set by hand, without torchrun's rendezvous
                raise DataError(MSG_JOIN_FAILED.format(backend=backend, error=one_line(err))) from err
            self.owned = True
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.owned:
            dist.destroy_process_group()
        if getattr(exc, "reported_by_rank_0", False):
            # torchrun stops every rank as soon as one exits with an error: let rank 0 print it first
            time.sleep(REPORT_GRACE_S)

    def broadcast(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        found = [None] * self.launch.world_size
        dist.all_gather_object(found, value)
        return found


def _outcome(err: BaseException | None) -> tuple[str, str] | None:
    """What travels to the other ranks: the error's class name and its one-line message."""
    return None if err is None else (type(err).__name__, str(err))


def raise_if_any_failed(outcomes: list[tuple[str, str] | None], own: BaseException | None, launch: Launch,
                  *, name_rank: bool = True) -> None:
    """Every rank raises when any rank failed; only rank 0 prints the error, naming the rank that failed.

    An error that every rank shares (the same refusal, decided from the same
    files) is raised as it is; one rank's own error gets its rank in front.
    A failed rank raises its own exception (its cause stays for ``--debug``).
    """
    failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
    if not failed:
        return
    first, (name, message) = failed[0]
    shared = len(failed) == len(outcomes) and len({outcome[1] for _, outcome in failed}) == 1
    if name_rank and not shared:
        message = MSG_OTHER_RANK.format(rank=first, world=launch.world_size, message=message)
    if own is not None and (launch.rank != 0 or str(own) == message):
        err = own
    else:
        cls = getattr(errors, name, None)
        err = (cls if isinstance(cls, type) and issubclass(cls, FairheadError) else CacheError)(message)
    err.reported_by_rank_0 = launch.rank != 0  # the CLI prints it on rank 0 only
    if err is own:
        raise err
    raise err from own


def extract_distributed(
    source,
    backbone: Backbone,
    out_path,
    *,
    launch: Launch,
    merge: bool = True,
    batch_size: int | None = None,
    num_workers: int | None = None,
    device: str = "auto",
    feature_dtype: str = "float32",
    autocast: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """:func:`embedcache.extract` as one rank of a ``torchrun`` launch (see the module docstring).

    Every rank must call it with the same arguments. Rank 0 returns once the
    cache is complete; the other ranks once every shard is written. Only
    rank 0 shows a progress bar (its own shard's).
    """
    out = Path(out_path)
    feature_dtype = check_options(source, batch_size=batch_size, num_workers=num_workers, feature_dtype=feature_dtype)
    torch_device = rank_device(device, launch)
    amp_dtype = resolve_autocast(autocast, torch_device)
    identity = run_identity(source, backbone, feature_dtype=feature_dtype, device=torch_device, amp_dtype=amp_dtype)
    with _Group(launch, torch_device) as group:
        lock = WriteLock(out) if launch.rank == 0 else None  # rank 0 holds the cache itself for the whole run
        try:
            decision, own = None, None
            if lock is not None:
                try:
                    lock.acquire()
                    decision = plan_run(out, world_size=launch.world_size, identity=identity,
                                        batch_size=batch_size, overwrite=overwrite, merge=merge)
                except (FairheadError, OSError) as err:
                    own = err
            decision, refused = group.broadcast((decision, _outcome(own)))
            if refused is not None:
                raise_if_any_failed([refused], own, launch, name_rank=False)
            action, plan = decision
            if action == EXTRACT:
                own = None
                start, stop = plan.bounds[launch.rank]
                if stop > start:
                    try:
                        extract_local(ShardSource(source, start, stop), backbone,
                                      schema.shard_path(out, launch.rank, plan.world_size),
                                      batch_size=batch_size or plan.batch_size, num_workers=num_workers,
                                      device=torch_device, feature_dtype=feature_dtype, autocast=autocast,
                                      overwrite=overwrite, progress=progress and launch.rank == 0)
                    except (FairheadError, OSError) as err:
                        own = err
                raise_if_any_failed(group.gather(_outcome(own)), own, launch)
            if launch.rank == 0:
                finish_run(out, plan, action, source=source, identity=identity, merge=merge)
        finally:
            if lock is not None:
                lock.release()
    return out


def finish_run(out: Path, plan: ShardPlan | None, action: str, *, source, identity, merge: bool) -> None:
    """Rank 0, every shard written: build the cache from them, or tidy what a killed merge left."""
    if action == CLEAN:
        remove_shards(out, plan)
        logger.info("cache '%s' was complete; removed the shards its merge left behind", out)
        return
    if action == DONE:
        logger.info("cache '%s' is already complete for this backbone and dataset; nothing to do", out)
        return
    shards = [ShardSource(source, a, b) for a, b in plan.bounds if b > a]
    identities = [shard_identity(identity, fingerprint=s.fingerprint(), n_rows=len(s)) for s in shards]
    check_shards(out, plan, identities, source.ids)
    finish_shards(out, plan, identity=identity, table=CacheTable.from_source(source),
                  source_description=source.describe(), merge=merge)
