"""The spill file: a streamed ``X``'s selected rows, in order, contiguous in one unnamed temporary file.

A :class:`~solvers.out_of_core.RowChunks` whose rows cost work on every pass (a split scattered
through a memory-mapped cache: each pass gathers its rows out of the file's; a compressed or
otherwise unmappable dataset: each pass decodes it with HDF5) writes the blocks of one pass, as
that pass hands them on, into a spill file. Later passes memory-map the spill's blocks: the same
rows in the same order, contiguous, with nothing to gather or decode.

**When.** During pass :data:`SPILL_PASS`, the third: once ``X`` has been read more often than a
prediction reads it. Every use of a streamed ``X`` by the estimator first checks it for non-finite
rows (one pass, remembered); a ``predict`` then makes one product, a fit tens (centring, the
preconditioner, two or more a step). Writing the spill costs a copy of the rows into new page
cache, more than a gathering pass, so a spill written during a prediction's first or second pass
would cost it more than it saves: on 0.70 GB of scattered float32 rows (``OMP_NUM_THREADS=1``)
a gathering pass took 0.2-0.3 s, a pass over the spill 0.05 s (as one in memory), the spilling
pass 0.3-1.1 s (the high end when the memory was freed a while before, as on the VM measured), so
a prediction spilled during pass 1 or 2 took 1.0 or 1.4 s against 0.5 s unspilled
(``benchmarks/bench_out_of_core.py`` prints the first passes spilled at pass 1, 2 or 3 or never).
From pass 3 a fit pays for the spill within a few passes, and the evaluation splits of
``fairhead fit`` (a check and a prediction) are never spilled. An ``X`` read with HDF5 (a
compressed dataset) is spilled during its first pass (:data:`SPILL_PASS_READ`): decoding it
costs more than writing it (0.35 GB of gzip-compressed float32: 47.9 s for a fit of 14 passes,
3.68 s spilled), so the spill pays from the second pass on, a prediction's product.
``with_budget`` copies count the passes of the ``X`` they copy.

**Bits.** The spilling pass hands on exactly the blocks it would have handed on without the spill
(it writes each block before handing it on), and the spill's blocks are those same rows cut at
the same boundaries, so every product, and so every head, has the same bits with the spill,
without it, and in memory.

**Where.** The folder named by the environment variable ``FAIRHEAD_SPILL_DIR`` (only there: a
folder the user chose); otherwise the folder of the file ``X`` is read from (the disk that holds
the cache has room for a part of it), then :func:`tempfile.gettempdir`. The file is a
:func:`tempfile.TemporaryFile`: it has no name (``O_TMPFILE`` on Linux, unlinked at once
elsewhere), so nothing is left behind even when the process is killed. Its size is reserved up
front (:func:`os.posix_fallocate` where there is one), so a full disk shows at the start and never
as a fault inside a memory map; the folder must keep :data:`KEEP_FREE_BYTES` free besides.

**Failures never fail a fit.** Any ``OSError`` (no such folder, no permission, no space, a write
that fails) drops the spill: the pass goes on, and later passes gather as before (one
``RuntimeWarning`` per process says so and how to fix it).

**Memory.** The spill is disk and page cache, not part of ``max_memory``: a pass maps one block of
it at a time (two with the reader thread) and unmaps each once it is used, as it does the cache's
chunks, so the process's resident memory stays within the budget. The kernel may keep the file's
pages cached, as it keeps the cache file's; that memory is reclaimable.

**Off.** Set :data:`SPILL` to ``False`` (``solvers._spill.SPILL = False``): every pass gathers.
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
import threading
import weakref

import numpy as np

#: spill the selected rows of a gathered or decoded streamed X (the module switch)
SPILL = True
#: the pass (counted from 1) during which the rows are written: see the module docstring
SPILL_PASS = 3
#: the pass that writes the spill of an X read with HDF5 (compressed, not mappable): the first
SPILL_PASS_READ = 1
#: space a spill leaves free in its folder's file system (a spill never fills a disk)
KEEP_FREE_BYTES = 2**30
#: the environment variable that names the spill's folder
SPILL_DIR_ENV = "FAIRHEAD_SPILL_DIR"

MSG_NO_SPILL = ("could not write a {size} spill file in {folders} ({err}); every pass gathers the streamed rows "
                "again (slower, the same results); set {env} to a folder with that much free space")

_warned = threading.Event()  # one warning per process
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map a block with its pages in one call


def spill_folders(source_folder: str | None) -> list[str]:
    """The folders to try, in order: ``$FAIRHEAD_SPILL_DIR`` alone when it is set; otherwise the
    source file's folder (when ``X`` is read from a file), then :func:`tempfile.gettempdir`."""
    chosen = os.environ.get(SPILL_DIR_ENV)
    if chosen:
        return [chosen]
    folders = [source_folder] if source_folder else []
    tmp = tempfile.gettempdir()
    return folders + [tmp] if tmp not in folders else folders


def open_spill(n_rows: int, n_features: int, dtype, folders: list[str]) -> "Spill | None":
    """An empty :class:`Spill` for ``n_rows x n_features`` of ``dtype`` in the first of ``folders``
    where it can be made, or ``None`` (after one warning per process) when none can."""
    dtype = np.dtype(dtype)
    size = n_rows * n_features * dtype.itemsize
    last = None
    for folder in folders:
        try:
            return Spill(_reserved_file(folder, size), folder, (n_rows, n_features), dtype)
        except OSError as err:
            last = err
    warn_no_spill(size, folders, last)
    return None


def _reserved_file(folder: str, size: int):
    """An unnamed temporary file in ``folder`` with ``size`` bytes reserved on its disk."""
    file = tempfile.TemporaryFile(dir=folder, buffering=0)
    try:
        st = os.fstatvfs(file.fileno())
        if st.f_bavail * st.f_frsize < size + KEEP_FREE_BYTES:
            raise OSError(errno.ENOSPC, f"{_size(st.f_bavail * st.f_frsize)} free, "
                                        f"{_size(KEEP_FREE_BYTES)} kept free")
        _allocate(file.fileno(), size)
        return file
    except BaseException:
        file.close()
        raise


def _allocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for ``fd`` (``posix_fallocate``; a plain length where a system or
    file system has none: its writes then report a full disk as an ``OSError``, never a map)."""
    if size == 0:
        return
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, size)
            return
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    os.ftruncate(fd, size)


def _size(nbytes: int) -> str:
    from fairhead_options import format_memory

    return format_memory(nbytes)


def warn_no_spill(nbytes: int, folders: list[str], err: BaseException) -> None:
    """Say once per process that the spill was dropped, why, and how to have one."""
    _warn(MSG_NO_SPILL.format(size=_size(nbytes), folders=" or ".join(folders), err=err, env=SPILL_DIR_ENV))


def _warn(message: str) -> None:
    if not _warned.is_set():
        _warned.set()
        from ._warnings import warn_at_caller

        warn_at_caller(message, RuntimeWarning)


class Spill:
    """The selected rows of one streamed ``X``, written block by block, then read block by block.

    Written once, in row order (:meth:`write`, then :meth:`finish`), and only then read
    (:meth:`blocks`). Copies of ``X`` under another budget share a finished spill: each holder
    takes it with :meth:`acquire` and gives it back with :meth:`release`; the file is closed when
    the last one lets go, or when the spill is garbage-collected.
    """

    def __init__(self, file, folder: str, shape: tuple[int, int], dtype: np.dtype):
        self.file, self.folder, self.shape, self.dtype = file, folder, shape, np.dtype(dtype)
        self.row_bytes = shape[1] * self.dtype.itemsize
        self.rows_written = 0
        self.error = None  # the OSError that stopped the writing, if one did
        self.complete = False
        self._holders = 1
        self._lock = threading.Lock()
        # closes the file when the spill is garbage-collected, or at the last release (once)
        self._close = weakref.finalize(self, file.close)

    @property
    def nbytes(self) -> int:
        """The spill's size: ``n_rows * n_features * itemsize``."""
        return self.shape[0] * self.row_bytes

    def write(self, start: int, block: np.ndarray) -> None:
        """Write ``block``, the selected rows from ``start`` on (the next rows: blocks come in order).
        Raises ``OSError`` when the write fails (the caller drops the spill)."""
        if start != self.rows_written or self.complete:
            raise OSError(errno.EINVAL, f"spill block at row {start}, expected row {self.rows_written}")
        view = memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B")
        offset = start * self.row_bytes
        while len(view):  # pwrite may write less than asked
            done = os.pwrite(self.file.fileno(), view, offset)
            view, offset = view[done:], offset + done
        self.rows_written = start + len(block)

    def finish(self) -> bool:
        """Mark the spill readable once every row is written; whether it is."""
        self.complete = self.rows_written == self.shape[0]
        return self.complete

    def blocks(self, block_rows: int):
        """``(start, block)`` over the rows in blocks of ``block_rows``: read-only views of a map of
        each block, unmapped once the caller drops the view."""
        n = self.shape[0]
        for start in range(0, n, block_rows):
            yield start, self._mapped(start, min(block_rows, n - start))

    def _mapped(self, start: int, rows: int) -> np.ndarray:
        offset = start * self.row_bytes
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY  # maps start on a page boundary
        length, fd = offset - aligned + rows * self.row_bytes, self.file.fileno()
        if _POPULATE:  # fault the block in with the map (in the reader thread, while the caller computes)
            m = mmap.mmap(fd, length, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=aligned)
        else:
            m = mmap.mmap(fd, length, access=mmap.ACCESS_READ, offset=aligned)
        return np.frombuffer(m, dtype=self.dtype, count=rows * self.shape[1],
                             offset=offset - aligned).reshape(rows, self.shape[1])

    def acquire(self) -> "Spill":
        """One more holder (a copy of ``X`` that reads this finished spill); returns the spill."""
        with self._lock:
            self._holders += 1
        return self

    def release(self) -> None:
        """One holder fewer; the last closes the file (its space returns to the disk)."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self._close()
