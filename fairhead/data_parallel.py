"""``torchrun -m fairhead fit|sweep``: data-parallel heads, each rank holding a row shard of the features.

Every rank reads the labels, groups and ids of a split (O(n)) and only its own block-aligned
share of the feature rows (:func:`solvers.shard_range`), into memory or, with ``--max-memory``,
streamed from the cache. The products with the features are combined with ``all_reduce``
(:mod:`solvers.distributed`): every rank runs the same solver and ends with the single-process
head. Rank 0 alone prints, writes the head and the sweep's files, and shows progress bars.

The process group is ``gloo`` for a CPU solver and ``nccl`` for a CUDA one (``--solver-device``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from fairhead_errors import DataError, one_line
from solvers import RowShard, shard_range

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

#: commands that run data-parallel under torchrun (extract shards the images; these the rows)
COMMANDS = ("fit", "sweep")
WAIT_FOR_RANKS = timedelta(hours=2)
MSG_NOT_PARALLEL = ("`fairhead {command}` runs in one process; under torchrun only extract, fit and sweep are "
                    "distributed: run `fairhead {command} ...` without torchrun")
MSG_JOIN_FAILED = ("cannot join the {backend} process group ({error}); launch with "
                   "`torchrun --nproc-per-node N -m fairhead {command} ...`, or unset WORLD_SIZE to run one process")
MSG_COMPARE = ("--compare {names} needs the features in memory in one process; drop --compare under torchrun, "
               "or run the baselines in a plain `fairhead sweep`")


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel fit or sweep."""

    rank: int
    world_size: int

    @property
    def writes(self) -> bool:
        """Whether this rank prints and writes files (rank 0)."""
        return self.rank == 0

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (a resumed sweep's finished heads, read by rank 0 alone)."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, n: int, d: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of ``n`` that this rank holds."""
        return shard_range(n, d, self.rank, self.world_size)


def writes(parallel: DataParallel | None) -> bool:
    """Whether this process prints and writes (a plain process, or rank 0)."""
    return parallel is None or parallel.writes


def check_command(command: str) -> None:
    """Refuse, in one line, a command that does not run data-parallel when torchrun launched it."""
    from embedcache.distributed import launch_from_env

    launch = launch_from_env()
    if command not in COMMANDS and launch is not None:
        raise _said_once(DataError(MSG_NOT_PARALLEL.format(command=command)), launch)


def check_in_memory_baselines(compare) -> None:
    """Refuse ``--compare`` baselines (fairlearn, penalties: X in memory, one process) under torchrun."""
    from embedcache.distributed import launch_from_env

    launch = launch_from_env()
    if compare and launch is not None:
        raise _said_once(DataError(MSG_COMPARE.format(names=" ".join(compare))), launch)


def _said_once(err, launch):
    """A refusal every rank meets alike is printed by rank 0 only (not once per rank)."""
    if launch.rank != 0:
        err.reported_by_rank_0 = True
    return err


MSG_PEER_LOST = ("rank {rank} lost contact with another rank of this torchrun launch ({what}): a rank was killed "
                 "or failed; see torchrun's report for which, then rerun the same command (a sweep keeps its "
                 "finished heads)")
_PEER_LOST_SIGNS = ("connection closed by peer", "connection reset by peer", "gloo", "nccl", "broken pipe",
                    "timed out", "socket")


def peer_failure(err: BaseException) -> str | None:
    """The one line for an error that means another rank died mid-collective (None for anything else)."""
    from embedcache.distributed import launch_from_env

    try:
        launch = launch_from_env()
    except DataError:
        return None
    if launch is None:
        return None
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    module = type(err).__module__ or ""
    if module.startswith("torch.distributed") or any(sign in text.lower() for sign in _PEER_LOST_SIGNS):
        return MSG_PEER_LOST.format(rank=launch.rank, what=one_line(text))
    return None


@contextlib.contextmanager
def launched(command: str, solver_device: str = "cpu"):
    """The :class:`DataParallel` of a torchrun launch (the process group joined for its duration),
    or None in a plain process."""
    from embedcache.distributed import launch_from_env

    launch = launch_from_env()
    if launch is None:
        yield None
        return
    check_command(command)
    import torch
    import torch.distributed as dist

    owned = False
    if not dist.is_initialized():
        cuda = str(solver_device).startswith("cuda")
        backend = "nccl" if cuda else "gloo"
        if cuda:
            torch.cuda.set_device(launch.local_rank)
        try:
            dist.init_process_group(backend=backend, timeout=WAIT_FOR_RANKS)
        except (ValueError, RuntimeError) as err:
            raise DataError(MSG_JOIN_FAILED.format(backend=backend, error=one_line(err),
                                                   command=command)) from err
        owned = True
    try:
        yield DataParallel(rank=launch.rank, world_size=launch.world_size)
    finally:
        if owned:
            dist.destroy_process_group()


def shard_features(cache, rows: np.ndarray, parallel: DataParallel, *, max_memory=None):
    """This rank's share of the features of ``rows`` (sorted row numbers of the cache) as a
    :class:`solvers.RowShard`: read into memory, or streamed under ``max_memory``."""
    n, d = len(rows), int(cache.feature_dim)
    start, stop = parallel.shard(n, d)
    mine = rows[start:stop]
    if max_memory is not None:
        return RowShard(cache.path, mine, n_total=n, start=start, dataset=cache.features_key, max_memory=max_memory)
    return RowShard(cache.read_features(mine), n_total=n, start=start)
