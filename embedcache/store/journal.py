"""The extraction journal and the one-writer lock.

An extraction appends each batch of features to ``x.h5.partial/`` and only
turns it into ``x.h5`` at the end, because HDF5 itself does not survive a
kill -9. The journal is safe to kill at any instant:

* ``meta.json``       what is being built (identity, batch size, source); written once, atomically
* ``features.bin``    raw row-major features, appended batch by batch
* ``committed.json``  ``{"rows": k}``: the first k rows of features.bin are valid

A batch is committed by (1) appending its bytes and fsyncing features.bin,
then (2) atomically replacing committed.json (write tmp, fsync, rename). A kill
between (1) and (2) leaves bytes past row k; a resume truncates them and redoes
that batch. A kill during (2) leaves the old or the new counter, never half.

The lock (``x.h5.lock``, ``fcntl.flock``) makes a second writer of the same
cache fail at once instead of interleaving batches.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from embedcache.errors import CacheError
from embedcache.store import schema
from embedcache.store.writer import atomic_write_text, fsync_path

LOCKED_MSG = (
    "cache '{path}' is being written by another process{holder} (lock '{lock}'); "
    "wait for it to finish or stop it"
)
UNREADABLE_JOURNAL_MSG = "journal '{path}' cannot be read ({error}); remove the folder or pass --overwrite"


class WriteLock:
    """Exclusive, non-blocking lock on ``<cache>.lock`` (released when the process dies).

    The lock file is removed on release. Because another process may open the
    file just before it is unlinked, :meth:`acquire` checks after locking that
    the path still names the locked file and retries otherwise.
    """

    def __init__(self, cache_path) -> None:
        self.cache_path = Path(cache_path)
        self.path = schema.lock_path(self.cache_path)
        self._fd: int | None = None

    def acquire(self) -> "WriteLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                holder = _read_pid(fd)
                os.close(fd)
                raise CacheError(
                    LOCKED_MSG.format(
                        path=self.cache_path, lock=self.path, holder=f" (pid {holder})" if holder else ""
                    )
                ) from err
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)  # the previous holder unlinked it meanwhile: lock the new file

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WriteLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""


class Journal:
    """Append-only, crash-safe store of the features of an extraction in progress.

    Parameters
    ----------
    cache_path : path
        The cache being built; the journal is ``<cache_path>.partial/``.
    """

    def __init__(self, cache_path) -> None:
        self.cache_path = Path(cache_path)
        self.dir = schema.journal_path(self.cache_path)
        self.meta_path = self.dir / schema.JOURNAL_META
        self.features_path = self.dir / schema.JOURNAL_FEATURES
        self.committed_path = self.dir / schema.JOURNAL_COMMITTED
        self._fh = None
        self._row_bytes = 0
        self.rows = 0

    def exists(self) -> bool:
        return self.dir.is_dir()

    def read_meta(self) -> dict[str, Any] | None:
        """The journal's meta, or None if it never got as far as writing one."""
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise CacheError(UNREADABLE_JOURNAL_MSG.format(path=self.dir, error=err)) from err

    def committed_rows(self) -> int:
        try:
            data = json.loads(self.committed_path.read_text(encoding="utf-8"))
            return int(data[schema.JOURNAL_COMMITTED_ROWS_KEY])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CacheError(UNREADABLE_JOURNAL_MSG.format(path=self.dir, error=err)) from err

    def start(self, meta: dict[str, Any]) -> None:
        """Create a fresh, empty journal (replacing any old one)."""
        self.remove()
        self.dir.mkdir(parents=True)
        atomic_write_text(self.meta_path, schema.dumps_json(meta))
        self.features_path.touch()
        atomic_write_text(self.committed_path, schema.dumps_json({schema.JOURNAL_COMMITTED_ROWS_KEY: 0}))
        fsync_path(self.dir, directory=True)

    def open_for_append(self, *, row_bytes: int, committed: int) -> None:
        """Open features.bin positioned after ``committed`` rows, dropping any uncommitted tail."""
        self._row_bytes = int(row_bytes)
        self._fh = open(self.features_path, "r+b")
        self._fh.truncate(committed * self._row_bytes)
        self._fh.seek(committed * self._row_bytes)
        self.rows = committed

    def append(self, block: np.ndarray) -> int:
        """Durably append a batch of rows, then commit it. Returns the committed row count."""
        data = np.ascontiguousarray(block)
        if data.shape[0] and data.nbytes != data.shape[0] * self._row_bytes:
            raise CacheError(f"internal: journal row size {self._row_bytes} B, batch row {data.nbytes // data.shape[0]} B")
        self._fh.write(data.tobytes())
        self._fh.flush()
        os.fsync(self._fh.fileno())  # data first ...
        self.rows += data.shape[0]
        # ... then the counter: a crash between the two only loses this batch
        atomic_write_text(self.committed_path, schema.dumps_json({schema.JOURNAL_COMMITTED_ROWS_KEY: self.rows}))
        return self.rows

    def valid_rows_on_disk(self, row_bytes: int) -> int:
        """Whole rows present in features.bin (committed or not)."""
        try:
            return self.features_path.stat().st_size // max(1, row_bytes)
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def features(self, *, n_rows: int, feature_dim: int, dtype: str) -> np.ndarray:
        """Read-only memmap of the committed features, shape (n_rows, feature_dim)."""
        if n_rows == 0:
            return np.zeros((0, feature_dim), dtype=dtype)
        return np.memmap(self.features_path, dtype=dtype, mode="r", shape=(n_rows, feature_dim))

    def remove(self) -> None:
        self.close()
        if self.dir.exists():
            shutil.rmtree(self.dir)
