"""Data-parallel fits under ``torchrun``: each rank holds a row shard of ``X``.

A :class:`RowShard` is ``X`` (``n x d``) on every rank while holding only this rank's rows
``[start, stop)``, a contiguous range aligned to the row blocks of
:func:`~solvers.out_of_core.block_rows` (:func:`shard_range` cuts them). Everything else a fit
uses (labels, groups, weights, scores, a constraint's moments: O(n) numbers) is whole on every
rank, and every rank runs the same L-BFGS, the same active set and the same multiplier search.
Only the products with ``X`` are split, the O(n d) work of every pass:

* ``X v``: each rank computes its own rows, and one ``all_reduce`` hands every rank the whole
  vector. It is a sum in which each row comes from one rank and zeros from the others, so it is
  exact.
* ``X^T r`` (and the Gram matrix and the Newton Jacobian): each rank computes its blocks' partial
  sums ``X_k^T r_k``. One ``all_reduce`` of the stacked partials (again one rank per block) hands
  every rank all of them, and each rank adds them in block order, in float64.

Both are the single-process fit's arithmetic
(:class:`solvers.backends.torch.Design` sums the same blocks in the same order), so on the CPU a
distributed head is the single-process head bit for bit, for score and rate constraints alike, on
every rank. Stacked partials larger than :data:`EXACT_SUM_BYTES` (a full Gram matrix or Jacobian
has ``d x d`` numbers per block) are summed on each rank and then across ranks instead: equal up to
float64 rounding (about 1e-16 relative), no longer bitwise.

Per pass, a rank sends about ``8 n`` bytes (``X v``) or ``8 d`` bytes per block (``X^T r``),
against the ``n d / world`` numbers of ``X`` it reads.

This module needs ``torch.distributed`` only once a collective runs (``gloo`` on CPUs, ``nccl``
on GPUs; ``torchrun`` sets it up).
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .out_of_core import DEFAULT_MAX_MEMORY, RowChunks, block_rows

#: the largest stack of per-block partial sums combined exactly (in block order); beyond it, a
#: rank's partial sum is reduced across ranks (float64 rounding, not bitwise)
EXACT_SUM_BYTES = 256 * 2**20

MSG_NO_GROUP = ("a RowShard combines the ranks' rows with torch.distributed, which is not initialised; launch with "
                "`torchrun --nproc-per-node N ...` (or call torch.distributed.init_process_group first)")
MSG_UNALIGNED = ("a RowShard must start at a multiple of {block} rows (the row blocks of {d} features); got start={start}; "
                 "cut the rows with solvers.shard_range(n, d, rank, world)")
MSG_RANGE = "a RowShard's rows [{start}, {stop}) must lie in [0, n_total={n}); cut them with solvers.shard_range"
MSG_TILING = ("the ranks' RowShards do not cover the {n} rows once each, in rank order (got {ranges}); cut them with "
              "solvers.shard_range(n, d, rank, world) on every rank")


def shard_range(n: int, d: int, rank: int, world: int) -> tuple[int, int]:
    """Cut ``n`` rows into one range per rank: whole row blocks, as even as the blocks allow.

    Ranges are in rank order; with fewer row blocks than ranks, some ranks hold none. Cutting at
    block boundaries keeps a data-parallel fit's sums in the order of the in-memory fit.

    Parameters
    ----------
    n : int
        Rows of the whole ``X``.
    d : int
        Its features (the block size :func:`~solvers.out_of_core.block_rows` depends on them).
    rank : int
        This rank, ``0 <= rank < world``.
    world : int
        The number of ranks.

    Returns
    -------
    tuple of (int, int)
        Rows ``[start, stop)`` of rank ``rank``.

    Examples
    --------
    >>> from solvers import shard_range
    >>> [shard_range(5_000_000, 4, rank, 2) for rank in range(2)]
    [(0, 2097152), (2097152, 5000000)]
    """
    B = block_rows(d)
    blocks = -(-int(n) // B)
    lo, hi = rank * blocks // world, (rank + 1) * blocks // world
    return min(lo * B, n), min(hi * B, n)


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise DataError(MSG_NO_GROUP)
    return dist


def _all_reduce(x, op: str = "sum", group=None):
    """``x`` (numpy or torch) reduced over the ranks in place; NCCL gets a copy on this rank's GPU."""
    import torch

    dist = _dist()
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    red = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN}[op]
    if dist.get_backend(group) == "nccl" and t.device.type != "cuda":
        tmp = t.to(f"cuda:{torch.cuda.current_device()}")
        dist.all_reduce(tmp, op=red, group=group)
        t.copy_(tmp.cpu())
    else:
        dist.all_reduce(t, op=red, group=group)
    return x


class RowShard(RowChunks):
    """This rank's rows of ``X`` in a data-parallel fit: ``X`` is ``n_total x d`` on every rank.

    Pass it wherever the solvers take ``X`` (:meth:`FairLogisticRegression.fit`, ``predict``,
    :func:`solvers.fit_path`) with ``y``, ``sensitive_features`` and ``sample_weight`` of all
    ``n_total`` rows, the same on every rank; every rank gets the same head (see the module
    docstring). The torch backend with the L2 penalty, as for any :class:`RowChunks`.

    Parameters
    ----------
    source : ndarray, h5py.Dataset, str or path
        This rank's rows, in memory (used without a copy) or on disk as for :class:`RowChunks`.
    rows : array-like of int, optional
        Sorted row numbers of ``source`` to use; all of them when omitted.
    n_total : int
        Rows of the whole ``X``.
    start : int
        Where this rank's rows start in the whole ``X`` (a multiple of
        :func:`~solvers.out_of_core.block_rows`; :func:`shard_range` gives it).
    dataset, max_memory
        As for :class:`RowChunks` (the budget of one pass over this rank's rows).
    group : torch.distributed.ProcessGroup, optional
        The ranks that share ``X`` (default: the whole world).

    Examples
    --------
    Rank 1 of 2 holds the rows :func:`shard_range` gives it (here a zero array of 5,000,000 x 4
    that takes no memory); the shard has the shape of the whole ``X``:

    >>> import numpy as np
    >>> from solvers import RowShard, shard_range
    >>> n, d = 5_000_000, 4
    >>> start, stop = shard_range(n, d, rank=1, world=2)
    >>> X_rank1 = np.broadcast_to(np.float32(0.0), (n, d))[start:stop]
    >>> shard = RowShard(X_rank1, n_total=n, start=start)
    >>> shard.shape, shard.local_rows
    ((5000000, 4), 2902848)

    A fit then runs under ``torchrun --nproc-per-node 2``, on every rank::

        start, stop = solvers.shard_range(len(y), X_file.shape[1], rank, world)
        X = solvers.RowShard(X_file[start:stop], n_total=len(y), start=start)
        head = solvers.FairLogisticRegression(constraint="eo", eps=0.05).fit(X, y, sensitive_features=a)
    """

    def __init__(self, source, rows=None, *, n_total: int, start: int, dataset=None,
                 max_memory=DEFAULT_MAX_MEMORY, group=None):
        super().__init__(source, rows, dataset=dataset, max_memory=max_memory)
        local, d = self.shape
        n_total, start = int(n_total), int(start)
        if start < 0 or start + local > n_total:
            raise DataError(MSG_RANGE.format(start=start, stop=start + local, n=n_total))
        if start % self.block_rows:
            raise DataError(MSG_UNALIGNED.format(block=self.block_rows, d=d, start=start))
        self.start, self.stop, self.n_total, self.group = start, start + local, n_total, group
        self.shape = (n_total, d)
        self._tiled = False

    # ------------------------------------------------------------------ derived views
    def with_budget(self, max_memory) -> "RowShard":
        """The same rows under another budget.

        Parameters
        ----------
        max_memory : int or str
            The new budget of a pass over this rank's rows: bytes, or ``"2GB"``, ``"512MiB"``.

        Returns
        -------
        RowShard
            A new view of the same rows.
        """
        src = self._array if self._path is None else self._path
        out = RowShard(src, self._rows, n_total=self.n_total, start=self.start, dataset=self._key,
                       max_memory=max_memory, group=self.group)
        out._nonfinite, out._tiled = self._nonfinite, self._tiled
        self._lend_spill(out)
        return out

    @property
    def local_rows(self) -> int:
        """Rows held by this rank."""
        return self.stop - self.start

    @property
    def world_size(self) -> int:
        """The number of ranks that share ``X`` (needs an initialised process group)."""
        return _dist().get_world_size(self.group)

    def describe(self) -> str:
        """The certificate's note (the same on every rank).

        Returns
        -------
        str
            One line: ranks, the shard layout, how products are combined.
        """
        return (f"data-parallel: {self.world_size} ranks, each with a block-aligned row shard of "
                f"{self.shape[0]} x {self.shape[1]} {self.dtype.name}; products combined with all_reduce "
                f"and summed in block order")

    def __repr__(self) -> str:
        return (f"RowShard(rows [{self.start}, {self.stop}) of {self.n_total} x {self.shape[1]} {self.dtype.name}, "
                f"budget {self.max_memory})")

    # ------------------------------------------------------------------ passes
    def blocks(self):
        """Iterate over this rank's row blocks.

        Yields
        ------
        start : int
            The index of the block's first row in the whole ``X``.
        block : numpy.ndarray of shape (n_block, n_features)
            The rows; a buffer the next block may overwrite.
        """
        for s, blk in super().blocks():
            yield self.start + s, blk

    def _check_tiling(self) -> None:
        """The ranks' ranges cover ``[0, n_total)`` once each, in rank order (checked once)."""
        if self._tiled:
            return
        import torch

        dist = _dist()
        world = dist.get_world_size(self.group)
        mine = torch.tensor([self.start, self.stop], dtype=torch.int64)
        ranges = torch.zeros((world, 2), dtype=torch.int64)
        ranges[dist.get_rank(self.group)] = mine
        _all_reduce(ranges, group=self.group)
        flat = ranges.flatten().tolist()
        if flat[0] != 0 or flat[-1] != self.n_total or any(flat[i] != flat[i + 1] for i in range(1, len(flat) - 1, 2)):
            raise DataError(MSG_TILING.format(n=self.n_total, ranges=[tuple(r) for r in ranges.tolist()]))
        self._tiled = True

    def gather_rows(self, out):
        """Fill in the other ranks' rows of a pass's per-row results (all ranks call it).

        Parameters
        ----------
        out : numpy.ndarray or torch.Tensor of length n_total
            The per-row results, this rank's rows written.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            ``out``, every rank's rows filled in (the same on every rank).
        """
        self._check_tiling()
        out[: self.start] = 0
        out[self.stop :] = 0
        return _all_reduce(out, group=self.group)

    def sum_blocks(self, parts, out):
        """Add every rank's block partials into ``out`` in block order (see the module docstring).

        Parameters
        ----------
        parts : iterable of (int, numpy.ndarray or torch.Tensor)
            ``(start, partial result)`` per block of this rank, ``start`` in the whole ``X``.
        out : numpy.ndarray or torch.Tensor
            The accumulator (float64), added to in place.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            ``out``, the same sum on every rank, in the in-memory fit's block order.
        """
        self._check_tiling()
        import torch

        B = self.block_rows
        n_blocks = -(-self.n_total // B)
        size = n_blocks * out.numel() * 8 if isinstance(out, torch.Tensor) else n_blocks * out.size * 8
        if size > EXACT_SUM_BYTES:  # this rank's sum, then the ranks' sums: float64 rounding
            for _, p in parts:
                out += p
            return _all_reduce(out, group=self.group)
        if isinstance(out, torch.Tensor):
            stack = torch.zeros((n_blocks,) + tuple(out.shape), dtype=out.dtype, device=out.device)
        else:
            stack = np.zeros((n_blocks,) + out.shape, dtype=out.dtype)
        for s, p in parts:
            stack[s // B] = p
        _all_reduce(stack, group=self.group)
        for k in range(n_blocks):
            out += stack[k]
        return out

    def first_nonfinite(self) -> int | None:
        """Find the first row of the whole ``X`` with a NaN or infinite feature (all ranks call it).

        Returns
        -------
        int or None
            Its row in the whole ``X``, or ``None`` when every feature is finite.
        """
        if self._nonfinite == ():
            import torch

            self._check_tiling()
            own = RowChunks.first_nonfinite(self)
            found = torch.tensor([self.n_total if own is None else own], dtype=torch.int64)
            _all_reduce(found, op="min", group=self.group)
            self._nonfinite = None if int(found) >= self.n_total else int(found)
        return self._nonfinite


__all__ = ["EXACT_SUM_BYTES", "RowShard", "shard_range"]
