"""The extraction journal and the one-writer lock.

An extraction appends each batch of features to ``x.h5.partial/`` and only
turns it into ``x.h5`` at the end, because HDF5 itself does not survive a
kill -9. The journal is safe to kill at any instant:

* ``meta.json``       what is being built (identity, first batch size, source); written once, atomically
* ``features.bin``    raw row-major features, appended batch by batch
* ``inputs.jsonl``    one line per batch: the size and mtime of each image file it read and a sha256
                      over their contents, so that a resume can refuse images that changed meanwhile
* ``committed.json``  ``{"rows": k, "batch_size": b}``: the first k rows of features.bin (and the
                      input lines that cover them) are valid; b is the batch size in use

A batch is committed by (1) appending its bytes and fsyncing features.bin,
(2) appending and fsyncing its inputs line, then (3) atomically replacing
committed.json (write tmp, fsync, rename). A kill before (3) leaves bytes and
lines past row k; a resume truncates them and redoes that batch. A kill during
(3) leaves the old or the new counter, never half. Rows are rows: a resume may
continue at row k with another batch size.

The journal is removed in two steps: it is first renamed to
``x.h5.partial-removing/`` (one atomic step after which it no longer counts
as an unfinished extraction), then deleted. A kill between the two leaves
only that folder, which the next writer deletes.

The lock (``x.h5.lock``, a :class:`filelock.FileLock`) makes a second writer of
the same cache fail at once instead of interleaving batches; it works on every
platform and is released by the OS when its holder dies. Its file is removed on
release (a kill -9 leaves it, harmless: nobody holds it).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from embedcache.errors import CacheError
from embedcache.store import schema
from embedcache.store.writer import atomic_write_text, fsync_path

MSG_LOCKED = (
    "cache '{path}' is being written by another process{holder} (lock '{lock}'); "
    "wait for it to finish or stop it"
)
MSG_LOCK_FAILED = "cannot create the write lock '{lock}' ({error}); write the cache into a folder you can write to"
MSG_UNREADABLE_JOURNAL = "journal '{path}' cannot be read ({error}); remove the folder or pass `overwrite=True`"
#: seconds a writer waits for the lock: long enough to outlast a reader's probe, short enough to fail fast
LOCK_WAIT_S = 2.0
JOURNAL_VERSION = 2


def _accepts(name: str) -> bool:
    return name in inspect.signature(filelock.FileLock.__init__).parameters


class WriteLock:
    """Exclusive lock on ``<cache>.lock`` (a :class:`filelock.FileLock`, released when the process dies).

    The holder writes its pid into the lock file where the platform allows it,
    so that the refusal can name the other process.
    """

    def __init__(self, cache_path, *, wait_s: float = LOCK_WAIT_S) -> None:
        self.cache_path = Path(cache_path)
        self.path = schema.lock_path(self.cache_path)
        options = {"on_acquired": _record_pid} if _accepts("on_acquired") else {}
        self._lock = filelock.FileLock(str(self.path), timeout=wait_s, thread_local=False, **options)

    def acquire(self) -> "WriteLock":
        try:
            self._lock.acquire()
        except filelock.Timeout as err:
            holder = _read_pid(self.path)
            raise CacheError(
                MSG_LOCKED.format(path=self.cache_path, lock=self.path, holder=f" (pid {holder})" if holder else "")
            ) from err
        except OSError as err:
            raise CacheError(MSG_LOCK_FAILED.format(lock=self.path, error=err.strerror or err)) from err
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            _unlink_held(self.path)
        self._lock.release()

    def holder(self) -> str | None:
        """None when no process holds the lock, else the holder's pid as text ("" when unknown).

        Probes by trying the lock without waiting (and releasing it at once).
        """
        if not self.path.exists():
            return None
        probe = filelock.FileLock(str(self.path), timeout=0, thread_local=False)
        try:
            probe.acquire()
        except filelock.Timeout:
            return _read_pid(self.path)
        except OSError:  # a folder we cannot write to: nobody can be writing there either
            return None
        _unlink_held(self.path)
        probe.release()
        return None

    def __enter__(self) -> "WriteLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _unlink_held(path: Path) -> None:
    """Remove the lock file while still holding it.

    A process waiting on the old file that locks it after this sees it
    unlinked (no links left) and retries on a new file, so no two holders can
    coexist, and no lock file outlives its writer's normal exit.
    """
    with contextlib.suppress(OSError):
        os.unlink(path)


def _record_pid(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())


def _read_pid(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


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
        self.inputs_path = self.dir / schema.JOURNAL_INPUTS
        self.committed_path = self.dir / schema.JOURNAL_COMMITTED
        self._fh = None
        self._inputs_fh = None
        self._row_bytes = 0
        self.rows = 0
        self.batch_size = 0

    def exists(self) -> bool:
        return self.dir.is_dir()

    def read_meta(self) -> dict[str, Any] | None:
        """The journal's meta, or None if it never got as far as writing one."""
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise CacheError(MSG_UNREADABLE_JOURNAL.format(path=self.dir, error=err)) from err
        if not isinstance(meta, dict):
            raise CacheError(MSG_UNREADABLE_JOURNAL.format(path=self.dir, error="meta.json is not a JSON object"))
        return meta

    def _committed(self) -> dict[str, Any]:
        try:
            data = json.loads(self.committed_path.read_text(encoding="utf-8"))
            rows = data[schema.JOURNAL_COMMITTED_ROWS_KEY]
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
                raise ValueError(f"row count {rows!r}")
            return data
        except FileNotFoundError:
            return {schema.JOURNAL_COMMITTED_ROWS_KEY: 0}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CacheError(MSG_UNREADABLE_JOURNAL.format(path=self.dir, error=err)) from err

    def committed_rows(self) -> int:
        return int(self._committed()[schema.JOURNAL_COMMITTED_ROWS_KEY])

    def committed_batch_size(self) -> int | None:
        """The batch size of the last committed batch (None for a journal that never recorded it)."""
        value = self._committed().get(schema.JOURNAL_BATCH_SIZE_KEY)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def start(self, meta: dict[str, Any]) -> None:
        """Create a fresh, empty journal (replacing any old one)."""
        self.remove()
        self.dir.mkdir(parents=True)
        self.features_path.touch()
        self.inputs_path.touch()
        atomic_write_text(self.committed_path, schema.dumps_json({schema.JOURNAL_COMMITTED_ROWS_KEY: 0}))
        fsync_path(self.dir, directory=True)
        # the meta is the journal's commit marker, written last: a kill before it leaves a folder without
        # meta, which the next run removes and starts over (read_meta -> None), never a half-made journal
        atomic_write_text(self.meta_path, schema.dumps_json(meta))
        fsync_path(self.dir, directory=True)

    def input_records(self, committed: int) -> tuple[list[dict[str, Any]], int] | None:
        """The inputs lines that cover rows ``[0, committed)``, and the byte length they take.

        Lines past the committed rows (a batch killed before its commit, or a
        line torn by the kill) are not returned. None when the lines do not
        tile ``[0, committed)`` (a journal damaged or from an older fairhead).
        """
        try:
            data = self.inputs_path.read_bytes()
        except FileNotFoundError:
            return ([], 0) if committed == 0 else None
        records, offset, covered = [], 0, 0
        while covered < committed:
            end = data.find(b"\n", offset)
            if end < 0:
                return None
            try:
                record = json.loads(data[offset:end])
                start, stop = int(record["start"]), int(record["stop"])
            except (ValueError, KeyError, TypeError):
                return None
            if start != covered or not start < stop <= committed:
                return None
            records.append(record)
            covered, offset = stop, end + 1
        return records, offset

    def open_for_append(self, *, row_bytes: int, committed: int, inputs_bytes: int = 0) -> None:
        """Open features.bin (and inputs.jsonl) after ``committed`` rows, dropping any uncommitted tail."""
        self._row_bytes = int(row_bytes)
        self._fh = open(self.features_path, "r+b")
        self._fh.truncate(committed * self._row_bytes)
        self._fh.seek(committed * self._row_bytes)
        if not self.inputs_path.exists():
            self.inputs_path.touch()
        self._inputs_fh = open(self.inputs_path, "r+b")
        self._inputs_fh.truncate(inputs_bytes)
        self._inputs_fh.seek(inputs_bytes)
        self.rows = committed

    def append(self, block: np.ndarray, *, inputs: dict[str, Any] | None = None, batch_size: int = 0) -> int:
        """Durably append a batch of rows and what they read, then commit it. Returns the committed row count.

        Raises the OSError of a failed write (a full disk, say) unchanged: the
        caller knows how much space the run still needs.
        """
        data = np.ascontiguousarray(block)
        if data.shape[0] and data.nbytes != data.shape[0] * self._row_bytes:
            raise CacheError(f"internal: journal row size {self._row_bytes} B, batch row {data.nbytes // data.shape[0]} B")
        self._fh.write(data.tobytes())
        self._fh.flush()
        os.fsync(self._fh.fileno())  # data first ...
        record = {"start": self.rows, "stop": self.rows + data.shape[0], **(inputs or {})}
        self._inputs_fh.write((schema.dumps_json(record) + "\n").encode("utf-8"))
        self._inputs_fh.flush()
        os.fsync(self._inputs_fh.fileno())
        # ... then the counter: a crash before it only loses this batch
        committed = {schema.JOURNAL_COMMITTED_ROWS_KEY: self.rows + data.shape[0]}
        if batch_size:
            committed[schema.JOURNAL_BATCH_SIZE_KEY] = int(batch_size)
        atomic_write_text(self.committed_path, schema.dumps_json(committed))
        self.rows += data.shape[0]
        return self.rows

    def valid_rows_on_disk(self, row_bytes: int) -> int:
        """Whole rows present in features.bin (committed or not)."""
        try:
            return self.features_path.stat().st_size // max(1, row_bytes)
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        for name in ("_fh", "_inputs_fh"):
            fh = getattr(self, name)
            if fh is not None:
                fh.close()
                setattr(self, name, None)

    def features(self, *, n_rows: int, feature_dim: int, dtype: str) -> np.ndarray:
        """Read-only memmap of the committed features, shape (n_rows, feature_dim)."""
        if n_rows == 0:
            return np.zeros((0, feature_dim), dtype=dtype)
        return np.memmap(self.features_path, dtype=dtype, mode="r", shape=(n_rows, feature_dim))

    def remove(self) -> None:
        """Delete the journal crash-safely: rename it out of the way (atomic), then delete that folder."""
        self.close()
        trash = schema.journal_trash_path(self.cache_path)
        remove_leftover_trash(self.cache_path)
        if self.dir.exists():
            os.replace(self.dir, trash)
            fsync_path(self.dir.parent, directory=True)
            shutil.rmtree(trash)


def remove_leftover_trash(cache_path) -> None:
    """Finish the clean-up of a journal whose deletion was interrupted (kill -9 while removing it)."""
    trash = schema.journal_trash_path(Path(cache_path))
    if trash.exists():
        shutil.rmtree(trash)
