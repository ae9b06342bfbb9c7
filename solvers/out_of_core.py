"""Out-of-core feature matrices: ``X`` streamed from disk in row chunks under a memory budget.

A :class:`RowChunks` stands for ``X`` wherever the solvers take it
(:meth:`FairLogisticRegression.fit`, ``predict``, :func:`solvers.fit_path`) when the matrix does
not fit in memory. Each pass over ``X`` reads it one chunk of file rows at a time, keeps the
rows asked for (a split scattered through the file: the read plan, with each chunk's
positions, is computed once) and hands them on in **blocks**; nothing holds the whole matrix.

**Reads.** An uncompressed cache (every cache ``fairhead extract`` and ``import`` write) is
memory-mapped: a chunk is a view of the page cache, mapped for its pass and unmapped after, so
the rows are copied only when a split's rows are picked out. Other datasets (compressed,
virtual views over shards, arrays) are read with HDF5 into one reused buffer.

**Budget.** A pass holds at most two chunks of ``R`` file rows as read or mapped (the one the
caller's block comes from, the one the reader thread is in: it assembles one block ahead), two
blocks of ``B`` rows (the caller's, the one being assembled), a block's float64 copy for a float64
product, and 1 MiB for HDF5's own buffers (the chunk cache is off). The chunk is a whole number of
blocks (``B <= R``), so the bound below, written for three chunks and one block, covers it. With
``b`` bytes per stored row and ``d`` features, the chunk is the largest whole number of blocks with

.. math::

    3 R b + B (b + 8 d) + 2^{20} \\le \\text{HEADROOM} \\cdot \\text{max\\_memory},

``HEADROOM = 0.8`` leaving a fifth of the budget for the fit's O(n) vectors (a few hundred bytes
a row: scores, labels, weights, gradients) and allocator slack.

The budget is sized for the feature matrix: the O(n) vectors of a fit come out of the headroom,
and the O(d^2) of a full Gram preconditioner (used only while ``n d^2 <= 1e9``) or of the
multiplier Newton steps comes on top, as it does in memory.

**Blocks and exactness.** Every product with ``X`` (:class:`solvers.backends.torch.Design`, the
certificates, the constraint rows, ``predict``) runs over blocks of :func:`block_rows` rows of
the *selected* matrix and sums the blocks in float64, in memory and streamed alike. A block's
product does not depend on where the block came from, so on the CPU a streamed fit performs the
in-memory fit's arithmetic exactly: the same L-BFGS iterates, bit for bit. float16 rows stay
float16 on disk and in the chunks; each block is computed in float32.

**Spill.** A split scattered through a memory-mapped cache is gathered out of the file's rows on
every pass, and a compressed dataset is decoded on every pass. So the third pass over such an
``X`` (a fit's: a prediction reads ``X`` twice; the first pass of a decoded one) also writes its
blocks, in order, into one unnamed temporary file (:mod:`solvers._spill`), and later passes map
that file's contiguous blocks: no gather, no decompression, the same blocks, so the same bits.
The file goes in ``$FAIRHEAD_SPILL_DIR``, else next to the cache, else in
:func:`tempfile.gettempdir`; it is disk and page cache, not part of ``max_memory`` (a pass maps
one or two of its blocks at a time, as it maps the cache's chunks). It takes as much disk as the
selected rows; any ``OSError`` (no room, no permission) drops it, with one warning, and passes
gather as before. :meth:`RowChunks.close` (or leaving ``with RowChunks(...) as X:``) gives the
space back, as does garbage collection. ``solvers._spill.SPILL = False`` turns it off.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import threading

import numpy as np

from fairhead_options import check_memory_budget, format_memory

from . import _spill
from ._cores import free_cores
from .errors import DataError

#: bytes of one block in float32 (rows per block: :func:`block_rows`). Large enough that an
#: in-memory matrix of up to 32 MiB is one block (its product is the whole-matrix BLAS call) and
#: a larger one costs one BLAS call per 32 MiB (``benchmarks/bench_row_blocks.py``: each call
#: with more than one BLAS thread pays a synchronisation, which a busy machine makes costly).
#: It sets the smallest budget of a streamed pass: about 240 MB for float32 features, whatever d.
#: The environment variable ``FAIRHEAD_BLOCK_BYTES`` (bytes, or ``"4MiB"``) replaces it: smaller
#: blocks for small budgets, or finer shards of a data-parallel fit (every rank must use the same)
BLOCK_BYTES = 32 * 2**20
#: the share of the budget the chunk, the picked rows and a block may take (see the module docstring)
HEADROOM = 0.8
#: chunks the budget allows a pass (it holds two, the caller's and the reader's, and a second block
#: buffer, at most one chunk's size; see the module docstring)
CHUNK_COPIES = 3
#: read the next block in a thread while the current one is used (:meth:`RowChunks.blocks`; mapped
#: files only, and only while a core is free: :func:`solvers._cores.free_cores`)
PREFETCH = True
#: block buffers of a pass: one being filled by the reader, one in the caller's hands
BLOCK_BUFFERS = 2
#: HDF5's own buffers while reading (its chunk cache is turned off)
HDF5_CACHE_BYTES = 2**20
#: budget of a RowChunks built without one
DEFAULT_MAX_MEMORY = "1GB"

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)

MSG_BAD_MEMORY = ("max_memory={value!r} is not a memory size; pass a number of bytes or a size such as "
                  "'2GB', '512MB' or '1.5GiB'")
MSG_SMALL_BUDGET = ("max_memory={value!r} is too small for {d} {dtype} features: a pass needs at least {need}; "
                    "raise max_memory to {need} or more")
MSG_NOT_2D = "an out-of-core X must be a 2-D array-like (n_samples, n_features); got shape {shape}"
MSG_DTYPE = "an out-of-core X must hold float16, float32 or float64 features; got {dtype}; convert the cache"
MSG_NEED_DATASET = "RowChunks({path!r}) needs dataset=NAME, the 2-D dataset of features in that HDF5 file"
MSG_ROWS = ("rows must be sorted, distinct row numbers in [0, {n}); got {problem}; pass e.g. "
            "np.flatnonzero(split == 'train')")
MSG_IN_MEMORY = ("this X is streamed from disk (RowChunks, {shape[0]} x {shape[1]}) and is never loaded whole; "
                 "use solvers.FairLogisticRegression with backend 'torch' or 'auto', or load the rows into memory")


def parse_memory(value) -> int:
    """Bytes from ``value``: a positive integer, or a string ``'2GB'``, ``'512MB'``, ``'1.5GiB'``.

    ``KB``/``MB``/``GB``/``TB`` are powers of 1000 and ``KiB``/``MiB``/``GiB``/``TiB`` powers of 1024
    (dask's ``parse_bytes`` convention); a bare number is bytes.
    """
    if isinstance(value, (bool, np.bool_)):
        raise DataError(MSG_BAD_MEMORY.format(value=value))
    if isinstance(value, (int, np.integer)):
        if value <= 0:
            raise DataError(MSG_BAD_MEMORY.format(value=value))
        return check_memory_budget(int(value), value=value, flag="`max_memory`")
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        raise DataError(MSG_BAD_MEMORY.format(value=value))
    size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not size >= 1:
        raise DataError(MSG_BAD_MEMORY.format(value=value))
    return check_memory_budget(int(size), value=value, flag="`max_memory`")


MSG_BLOCK_ENV = "FAIRHEAD_BLOCK_BYTES={value!r} is not a size of at least 4 KiB; set it to bytes or a size such as '4MiB', or unset it"


def _block_bytes_from_env() -> int:
    text = os.environ.get("FAIRHEAD_BLOCK_BYTES")
    if text is None:
        return BLOCK_BYTES
    try:
        size = parse_memory(text)
    except DataError:
        size = 0
    if size < 4096:
        raise DataError(MSG_BLOCK_ENV.format(value=text))
    return size


def block_rows(d: int) -> int:
    """Rows per block for ``d`` features: the power of two nearest below ``BLOCK_BYTES / (4 d)``,
    at least 16. It depends on ``d`` alone, so every copy of a matrix is cut the same way."""
    rows = _block_bytes_from_env() // (4 * max(int(d), 1))
    return int(max(16, 2 ** int(math.floor(math.log2(max(rows, 1))))))


def _mapped_runs(dset) -> list | None:
    """``[(row_start, row_stop, byte_offset), ...]``: the dataset's rows as runs of adjacent bytes in
    its file, or ``None`` when they cannot be memory-mapped (compressed or filtered, virtual,
    chunks narrower than a row, unallocated chunks, a non-native byte order)."""
    try:
        n, d = dset.shape
        if dset.is_virtual or dset.dtype.byteorder not in ("=", "<", "|") or n == 0:
            return None
        if dset.id.get_create_plist().get_nfilters():
            return None
        row_bytes = d * dset.dtype.itemsize
        if dset.chunks is None:
            offset = dset.id.get_offset()
            return None if offset is None else [(0, n, int(offset))]
        c = dset.chunks[0]
        if dset.chunks[1] != d or dset.id.get_num_chunks() != -(-n // c):
            return None
        info = sorted((dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())),
                      key=lambda k: k.chunk_offset[0])
        runs = []
        for k in info:
            row, offset = int(k.chunk_offset[0]), int(k.byte_offset)
            stop = min(row + c, n)
            if runs and runs[-1][1] == row and runs[-1][2] + (row - runs[-1][0]) * row_bytes == offset:
                runs[-1] = (runs[-1][0], stop, runs[-1][2])
            else:
                runs.append((row, stop, offset))
        return runs
    except (AttributeError, OSError, RuntimeError, ValueError):  # an HDF5 without chunk queries: read it
        return None


def _prefetched(chunks: "RowChunks", produce):
    """The blocks of ``produce(new_buffer)`` (a pass of ``chunks``), made one block ahead by a reader thread.

    ``BLOCK_BUFFERS`` (2) block buffers take turns: the reader fills one while the caller holds
    the other, and gets it back when the caller asks for the next block (the contract of
    :meth:`RowChunks.blocks`: a block is used before the next is asked for). The reader starts a
    block only once the caller has taken the previous one, so a pass holds at most two chunks
    (the caller's block's and the reader's). A caller that stops early (a ``break``) stops the
    reader; an error in the reader is raised in the caller.
    """
    free, ready, stop = queue.Queue(), queue.Queue(maxsize=1), threading.Event()
    taken = threading.Semaphore(0)
    for _ in range(BLOCK_BUFFERS):
        free.put(None)  # allocated at first use: a pass of whole-block views needs none
    pending = []  # the buffer being filled, until its block is handed on

    def new_buffer():
        buf = _wait(free.get, stop)
        buf = np.empty((chunks.block_rows, chunks.shape[1]), dtype=chunks.dtype) if buf is None else buf
        pending.append(buf)
        return buf

    def read():
        try:
            for start, block in produce(new_buffer):
                own = pending.pop() if pending and (block is pending[0] or block.base is pending[0]) else None
                _wait(lambda **kw: ready.put((start, block, own), **kw), stop)
                _acquire(taken, stop)  # the caller has it: the next block is assembled meanwhile
            _wait(lambda **kw: ready.put(None, **kw), stop)
        except _Stopped:
            pass
        except BaseException as err:  # raised in the caller
            with contextlib.suppress(_Stopped):
                _wait(lambda **kw: ready.put(err, **kw), stop)

    thread = threading.Thread(target=read, name="fairhead-block-reader", daemon=True)
    thread.start()
    held = None
    try:
        while (item := ready.get()) is not None:
            if held is not None:
                free.put(held)  # the caller asked for the next block: it is done with this buffer
            if isinstance(item, BaseException):
                raise item
            start, block, held = item
            taken.release()
            yield start, block
    finally:
        stop.set()
        thread.join()


class _Stopped(Exception):
    """The caller stopped iterating: the reader thread ends."""


def _wait(call, stop, poll=0.05):
    """``call(timeout=poll)`` (a queue's get or put) until it succeeds, or ``_Stopped`` once
    ``stop`` is set (a reader never blocks on a caller that has gone)."""
    while not stop.is_set():
        try:
            return call(timeout=poll)
        except (queue.Empty, queue.Full):
            continue
    raise _Stopped


def _acquire(semaphore, stop, poll=0.05):
    """``semaphore.acquire()``, or ``_Stopped`` once ``stop`` is set."""
    while not semaphore.acquire(timeout=poll):
        if stop.is_set():
            raise _Stopped


def array_blocks(X: np.ndarray):
    """``(start, block)`` over the row blocks of an in-memory ``X`` (views, no copy)."""
    step = block_rows(X.shape[1])
    for s in range(0, X.shape[0], step):
        yield s, X[s : s + step]


def row_blocks(X):
    """``(start, block)`` over the row blocks of ``X``, in memory or a :class:`RowChunks`."""
    return X.blocks() if isinstance(X, RowChunks) else array_blocks(X)


def gather_rows(X, out):
    """``out`` (n rows, numpy or torch) once its rows from :func:`row_blocks` are written: as is for
    an array or a RowChunks; a :class:`~solvers.distributed.RowShard` fills in the other ranks' rows."""
    return X.gather_rows(out) if isinstance(X, RowChunks) else out


def sum_blocks(X, parts, out):
    """``out += p`` for each ``(start, p)`` of ``parts`` (one per block of :func:`row_blocks`), in
    block order; a :class:`~solvers.distributed.RowShard` adds the other ranks' blocks in their
    places in that order. Returns ``out`` (numpy or torch, zeros on entry)."""
    if isinstance(X, RowChunks):
        return X.sum_blocks(parts, out)
    for _, p in parts:
        out += p
    return out


class RowChunks:
    """A feature matrix read from disk in row chunks: the out-of-core ``X`` of the solvers.

    Parameters
    ----------
    source : str, path, h5py.Dataset, numpy.memmap or ndarray
        The whole matrix, stored row-major: a path to an HDF5 file (with ``dataset``),
        memory-mapped (uncompressed) or opened for each pass, or any 2-D array-like whose row
        slices ``source[a:b]`` read those rows.
    rows : array-like of int, optional
        Sorted row numbers of the rows to use (a split); all rows when omitted.
    dataset : str, optional
        The dataset's name in the file when ``source`` is a path.
    max_memory : int or str, default="1GB"
        The budget of a pass over the rows (see the module docstring): bytes, or ``"2GB"``,
        ``"512MiB"``.

    Attributes
    ----------
    shape : (int, int)
        ``(len(rows), n_features)``.
    dtype : numpy.dtype
        The stored dtype (float16, float32 or float64).
    chunk_rows : int
        File rows read at once.
    n_chunks : int
        Reads per pass.

    Notes
    -----
    Blocks are views of buffers that the next block may overwrite: use each one before
    asking for the next. Converting a RowChunks to an array is refused (it would load it all).

    When a pass gathers a split's rows out of a file or decodes a compressed dataset, the
    third pass (the first, when read with HDF5) writes the selected rows to a spill file and
    later passes read it (see the module docstring and :mod:`solvers._spill`): disk the size of
    the selected rows, outside ``max_memory``. :meth:`close`, the end of a ``with`` block, or
    garbage collection frees it.

    Examples
    --------
    >>> import numpy as np
    >>> from solvers.out_of_core import RowChunks
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> Xs = RowChunks(X, rows=[0, 2, 5])
    >>> Xs.shape, (Xs @ np.ones(2)).tolist()
    ((3, 2), [1.0, 9.0, 21.0])
    """

    def __init__(self, source, rows=None, *, dataset=None, max_memory=DEFAULT_MAX_MEMORY):
        self._path = self._key = self._array = self._runs = None
        if isinstance(source, (str, os.PathLike)):
            if dataset is None:
                raise DataError(MSG_NEED_DATASET.format(path=os.fspath(source)))
            import h5py

            self._path, self._key = os.fspath(source), dataset
            try:
                f = h5py.File(self._path, "r")
            except FileNotFoundError as err:
                raise DataError(f"RowChunks: no file {self._path!r}; pass the path of an HDF5 file") from err
            except OSError as err:
                raise DataError(f"RowChunks: {self._path!r} is not a readable HDF5 file ({err}); pass a cache") from err
            with f:
                if not isinstance(f.get(dataset), h5py.Dataset):
                    have = ", ".join(k for k in f if isinstance(f[k], h5py.Dataset)) or "none"
                    raise DataError(f"RowChunks: {self._path!r} has no dataset {dataset!r} (datasets at its root: "
                                    f"{have}); pass dataset='features' for a fairhead cache")
                shape, dtype = f[dataset].shape, f[dataset].dtype
                self._runs = _mapped_runs(f[dataset])
        else:
            self._array = source
            shape, dtype = getattr(source, "shape", ()), getattr(source, "dtype", None)
        if len(shape) != 2:
            raise DataError(MSG_NOT_2D.format(shape=tuple(shape)))
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.float32, np.float64):
            raise DataError(MSG_DTYPE.format(dtype=self.dtype))
        self._n_file, d = int(shape[0]), int(shape[1])
        self._rows = None if rows is None else self._check_rows(rows)
        self.shape = (self._n_file if self._rows is None else len(self._rows), d)
        self.ndim = 2
        self.max_memory = max_memory
        self.budget = parse_memory(max_memory)
        self.block_rows = block_rows(d)
        b, B = max(d, 1) * self.dtype.itemsize, self.block_rows
        fixed = B * (b + 8 * max(d, 1)) + HDF5_CACHE_BYTES
        chunk = int((HEADROOM * self.budget - fixed) // (CHUNK_COPIES * b)) // B * B
        if chunk < B:
            need = math.ceil((fixed + CHUNK_COPIES * B * b) / HEADROOM)
            raise DataError(MSG_SMALL_BUDGET.format(value=max_memory, d=d, dtype=self.dtype.name,
                                                    need=format_memory(need)))
        self.chunk_rows = chunk
        self._plan = self._make_plan()
        self._nonfinite = ()  # not checked yet
        self._n_local = self.shape[0]  # the selected rows (a RowShard's shape grows to the whole X)
        self._spill_lock = threading.Lock()  # passes may run in threads: one spill, made once
        self._spill = None  # the spill being written or read (solvers._spill.Spill)
        self._may_spill = self._spill_pays()  # False also once a spill failed or X was closed
        self._passes = 0  # passes started (the spill is written during pass _spill_pass())

    def _check_rows(self, rows) -> np.ndarray:
        r = np.asarray(rows)
        if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
            raise DataError(MSG_ROWS.format(n=self._n_file, problem=f"an array of shape {r.shape} and dtype {r.dtype}"))
        r = r.astype(np.int64)
        if r.size and (r[0] < 0 or r[-1] >= self._n_file or np.any(np.diff(r) <= 0)):
            raise DataError(MSG_ROWS.format(n=self._n_file, problem="rows out of range, unsorted or repeated"))
        return r

    def _make_plan(self) -> list:
        """Reads ``(lo, hi, positions)``: file rows ``[lo, hi)`` of at most ``chunk_rows``, and the
        wanted rows' positions in them (``None``: all of them)."""
        R = self.chunk_rows
        rows = np.arange(self._n_file, dtype=np.int64) if self._rows is None else self._rows
        # a mapped read stays inside one run of the file (one mapping, no copy)
        stops = np.array([stop for _, stop, _ in self._runs] if self._runs else [self._n_file], dtype=np.int64)
        plan, i = [], 0
        while i < len(rows):
            lo = int(rows[i])
            end = min(lo + R, int(stops[np.searchsorted(stops, lo, side="right")]))
            j = int(np.searchsorted(rows, end, side="left"))
            hi = int(rows[j - 1]) + 1
            plan.append((lo, hi, None if hi - lo == j - i else rows[i:j] - lo))
            i = j
        return plan

    def _spill_pays(self) -> bool:
        """Whether a pass does work a spill saves: gathering a split's rows out of a file's, or
        decoding a dataset that cannot be mapped (an in-memory array and views of a map need neither)."""
        if isinstance(self._array, np.ndarray) and not isinstance(self._array, np.memmap):
            return False
        decodes = not self._runs and not isinstance(self._array, np.ndarray)
        return decodes or any(pos is not None for _, _, pos in self._plan)

    def _spill_pass(self) -> int:
        """The pass that writes the spill: ``SPILL_PASS_READ`` when passes read the rows with HDF5
        (decoding a compressed dataset costs more than the write), ``SPILL_PASS`` when they gather
        them out of a map."""
        return _spill.SPILL_PASS if self._runs or isinstance(self._array, np.ndarray) else _spill.SPILL_PASS_READ

    def _source_folder(self) -> str | None:
        """The folder of the file X is read from (a path, an h5py dataset, a memmap), if any."""
        name = self._path or getattr(self._array, "filename", None) or getattr(
            getattr(self._array, "file", None), "filename", None)
        return os.path.dirname(os.path.abspath(name)) if isinstance(name, str) and name else None

    # ------------------------------------------------------------------ derived views
    def with_budget(self, max_memory) -> "RowChunks":
        """The same rows under another budget.

        Parameters
        ----------
        max_memory : int or str
            The new budget of a pass: bytes, or ``"2GB"``, ``"512MiB"``.

        Returns
        -------
        RowChunks
            A new view of the same rows (a finished non-finite check and a finished spill
            carry over; a spill still being written does not).
        """
        src = self._array if self._path is None else self._path
        out = RowChunks(src, self._rows, dataset=self._key, max_memory=max_memory)
        out._nonfinite = self._nonfinite  # the rows are the same: a finished check holds
        self._lend_spill(out)
        return out

    def _lend_spill(self, out: "RowChunks") -> None:
        """Share a finished spill, and the count of passes, with ``out``, a copy of the same rows
        (the blocks do not depend on the budget); a half-written spill stays with the pass writing it."""
        with self._spill_lock:
            out._passes = self._passes  # the same rows: their reads so far count towards the spilling pass
            if self._spill is not None and self._spill.complete:
                out._spill = self._spill.acquire()

    def close(self) -> None:
        """Free the spill file, if any (its disk space). Passes after it gather again, unspilled."""
        with self._spill_lock:
            spill, self._spill, self._may_spill = self._spill, None, False
        if spill is not None:
            spill.release()

    def __enter__(self) -> "RowChunks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def spill_folder(self) -> str | None:
        """The folder of the finished spill file that passes read, or ``None`` when they gather."""
        spill = self._spill
        return spill.folder if spill is not None and spill.complete else None

    @property
    def n_chunks(self) -> int:
        """Reads per pass over the rows."""
        return len(self._plan)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        where = self._path if self._path is not None else type(self._array).__name__
        return (f"RowChunks({where!r}, {self.shape[0]} x {self.shape[1]} {self.dtype.name}, "
                f"{self.n_chunks} chunks of <= {self.chunk_rows} rows, budget {format_memory(self.budget)})")

    def describe(self) -> str:
        """The certificate's note: what one pass reads and under which budget.

        Returns
        -------
        str
            One line: chunks, rows per chunk, shape, dtype, how rows are read, the budget.
        """
        how = "memory-mapped" if self.mapped else "HDF5 reads"
        if self.spill_folder is not None:
            how += ", then the rows spilled to a contiguous file"
        return (f"out-of-core: streamed {self.n_chunks} chunk(s) of at most {self.chunk_rows} rows per pass over "
                f"{self.shape[0]} x {self.shape[1]} {self.dtype.name} ({how}, budget {format_memory(self.budget)})")

    def __array__(self, dtype=None, copy=None):
        raise DataError(MSG_IN_MEMORY.format(shape=self.shape))

    def __matmul__(self, w):
        """``X @ w`` in float64 (:func:`solvers._linalg.x_dot`)."""
        from ._linalg import x_dot

        return x_dot(self, w)

    # ------------------------------------------------------------------ passes
    @contextlib.contextmanager
    def _opened(self):
        if self._path is None:
            yield self._array
            return
        import h5py

        # no chunk cache: a chunk read whole goes straight into the buffer (about 1.7x faster
        # than through HDF5's 1 MiB cache, which rows read once gain nothing from)
        with h5py.File(self._path, "r", rdcc_nbytes=0) as f:
            yield f[self._key]

    def spans(self):
        """Iterate over the reads of one pass, in file order.

        Yields
        ------
        start : int
            The index (among the selected rows) of the first wanted row of this read.
        rows : numpy.ndarray of shape (n_read, n_features)
            The file rows as read (or mapped); a buffer the next read may overwrite.
        positions : numpy.ndarray of int or None
            The positions of the wanted rows among ``rows`` (``None``: all of them).
        """
        d, start = self.shape[1], 0
        if self._runs:
            firsts = np.array([first for first, _, _ in self._runs], dtype=np.int64)
            for lo, hi, pos in self._plan:
                first, _, offset = self._runs[int(np.searchsorted(firsts, lo, side="right")) - 1]
                view = np.memmap(self._path, dtype=self.dtype, mode="r", shape=(hi - lo, d),
                                 offset=offset + (lo - first) * d * self.dtype.itemsize)
                yield start, view, pos
                start += hi - lo if pos is None else len(pos)
                del view  # unmapped once the caller drops it too
            return
        with self._opened() as src:
            direct = hasattr(src, "read_direct")  # h5py: read into one reused buffer
            buf = np.empty((self.chunk_rows, d), dtype=self.dtype) if direct else None
            for lo, hi, pos in self._plan:
                if direct:
                    part = buf[: hi - lo]
                    src.read_direct(part, np.s_[lo:hi], np.s_[0 : hi - lo])
                else:
                    part = np.asarray(src[lo:hi], dtype=self.dtype)
                yield start, part, pos
                start += hi - lo if pos is None else len(pos)

    @property
    def mapped(self) -> bool:
        """Whether passes read a memory map of the file (an uncompressed cache) instead of HDF5 reads."""
        return bool(self._runs)

    def blocks(self):
        """Iterate over blocks of ``block_rows`` selected rows, the blocks the in-memory rows give.

        The last block may be shorter; the blocks are those :func:`array_blocks` cuts from the
        rows in memory. Whole blocks of a read that keeps all its rows are views of the chunk; a
        split's scattered rows are picked straight into a block buffer (one copy of each row:
        picking them into a chunk-sized array first, then into the block, cost a second copy of
        every row, about a quarter of a streamed pass). From a memory-mapped file, while a core
        is free (:func:`solvers._cores.free_cores`, checked once per pass), a reader thread
        assembles the next block while the caller uses the current one (:data:`PREFETCH`):
        numpy's gather and the BLAS product both release the GIL, so reading overlaps the
        arithmetic. The blocks, and so every product's bits, are the same either way.

        Pass :data:`solvers._spill.SPILL_PASS` of an ``X`` whose passes gather (pass
        :data:`~solvers._spill.SPILL_PASS_READ` of one read with HDF5: decoded) also
        writes each block to a spill file before handing it on; once that pass has run to its
        end, later passes hand on views of the spill's blocks (the same rows, the same cuts).

        Yields
        ------
        start : int
            The index of the block's first row among the selected rows.
        block : numpy.ndarray of shape (n_block, n_features)
            The rows, in the stored dtype; a buffer the next block may overwrite.
        """
        spill, writing = self._start_pass()

        def produce(new_buffer):  # this pass's blocks: gathered, gathered and written, or the spill's
            if spill is None:
                return self._assembled_blocks(new_buffer)
            if writing:
                return self._spilling(self._assembled_blocks(new_buffer), spill)
            return spill.blocks(self.block_rows)

        try:
            # mapped reads only (the cache's or the spill's): each is its own map, while HDF5 reads refill
            # one chunk buffer that the caller's block may still be a view of; and the reader needs a core
            if PREFETCH and (self._runs or (spill is not None and not writing)) and free_cores() >= 1:
                yield from _prefetched(self, produce)
                return
            buf = []

            def one_buffer():  # serial: one block buffer, reused (the caller is done with the last block)
                if not buf:
                    buf.append(np.empty((self.block_rows, self.shape[1]), dtype=self.dtype))
                return buf[0]

            yield from produce(one_buffer)
        finally:  # the reader thread, if any, has ended: the spill is written as far as it goes
            if writing:
                self._end_spill(spill)

    def _start_pass(self):
        """This pass's spill and whether the pass writes it: a finished spill to read, a new one to
        write (at pass ``_spill_pass()``, when passes gather or decode), or ``(None, False)``."""
        with self._spill_lock:
            self._passes += 1
            if self._spill is not None:  # finished: read it; being written by another pass: gather
                return (self._spill, False) if self._spill.complete and _spill.SPILL else (None, False)
            if not (_spill.SPILL and self._may_spill and self._passes >= self._spill_pass()):
                return None, False
            folders = _spill.spill_folders(self._source_folder())
            self._spill = _spill.open_spill(self._n_local, self.shape[1], self.dtype, folders)
            self._may_spill = self._spill is not None  # no room anywhere: not tried again
            return self._spill, self._spill is not None

    def _spilling(self, blocks, spill):
        """``blocks``, each written to ``spill`` before it is handed on; a failed write ends the
        writing, never the pass."""
        for start, blk in blocks:
            if spill.error is None:
                try:
                    spill.write(start, blk)
                except (OSError, ValueError) as err:  # ValueError: the file was closed meanwhile
                    spill.error = err
            yield start, blk

    def _end_spill(self, spill) -> None:
        """After the writing pass: keep the spill when every row is in it; otherwise drop it (a pass
        stopped early: a later pass writes it again; a failed write: passes gather from now on)."""
        with self._spill_lock:
            if spill.error is None and spill.finish():
                return
            if spill.error is not None:
                self._may_spill = False
                _spill.warn_no_spill(spill.nbytes, [spill.folder], spill.error)
            if self._spill is spill:  # not closed meanwhile (close released it)
                self._spill = None
                spill.release()

    def _assembled_blocks(self, new_buffer):
        """:meth:`blocks` read in this thread; ``new_buffer()`` gives an empty ``(block_rows, d)``
        buffer for each block that has to be copied together."""
        B = self.block_rows
        buf, fill, start = None, 0, 0
        for _, part, pos in self.spans():
            i, m = 0, len(part) if pos is None else len(pos)
            while i < m:
                if fill == 0 and pos is None and m - i >= B:  # whole blocks: views of the chunk
                    yield start, part[i : i + B]
                    start += B
                    i += B
                    continue
                if fill == 0:
                    buf = new_buffer()
                take = min(B - fill, m - i)
                if pos is None:
                    buf[fill : fill + take] = part[i : i + take]
                else:  # mode="clip": an unbuffered gather (the positions are in range by construction)
                    np.take(part, pos[i : i + take], axis=0, out=buf[fill : fill + take], mode="clip")
                fill += take
                i += take
                if fill == B:
                    yield start, buf
                    start += B
                    fill = 0
        if fill:
            yield start, buf[:fill]

    # ------------------------------------------------------------------ combining a pass
    # every row and every block of this X is here: nothing to combine (a RowShard, one rank's
    # rows of a data-parallel fit, overrides both)
    def gather_rows(self, out):
        """Combine a pass's per-row results: here ``out`` as is (see :func:`gather_rows`).

        Every row is in this X, so there is nothing to combine (a :class:`RowShard` overrides it).

        Parameters
        ----------
        out : numpy.ndarray
            The per-row results of a pass.

        Returns
        -------
        numpy.ndarray
            ``out``.
        """
        return out

    def sum_blocks(self, parts, out):
        """Sum the blocks' partial results in block order into ``out`` (see :func:`sum_blocks`).

        Parameters
        ----------
        parts : iterable of (int, numpy.ndarray)
            ``(start, partial result)`` per block, in block order.
        out : numpy.ndarray
            The accumulator (float64), added to in place.

        Returns
        -------
        numpy.ndarray
            ``out``, the fixed-order float64 sum (the same bits whatever the chunking).
        """
        for _, p in parts:
            out += p
        return out

    def first_nonfinite(self) -> int | None:
        """Find the first row with a NaN or infinite feature (one pass, remembered).

        Returns
        -------
        int or None
            Its position among the selected rows, or ``None`` when every feature is finite.
        """
        if self._nonfinite == ():
            self._nonfinite = None
            for s, blk in self.blocks():
                bad = ~np.isfinite(blk).all(axis=1)
                if bad.any():
                    self._nonfinite = s + int(np.flatnonzero(bad)[0])
                    break
        return self._nonfinite


__all__ = ["RowChunks", "block_rows", "format_memory", "gather_rows", "parse_memory", "row_blocks", "sum_blocks"]
