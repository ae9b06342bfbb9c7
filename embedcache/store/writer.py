"""Write a complete cache file in one go, then move it into place atomically.

The HDF5 library is not crash-safe (a killed writer can leave a file that does
not open), so a cache is never written in place: it is built as ``x.h5.tmp``,
marked ``complete``, flushed and fsynced, and only then renamed to ``x.h5``.
A reader therefore sees either the old file, or no file, or the new one.

Nor does HDF5 survive a failed write: on a full disk it raises (an OSError
while writing, a RuntimeError on close) and then crashes the process when the
file's objects are freed (segfault, exit 139). So on Linux the HDF5 file is
written by a forked child process: whatever HDF5 does, this process removes
the temporary file and reports the cause in one line. Before writing, the free
space is checked against an upper bound of the file's size.
"""

from __future__ import annotations

import datetime as _dt
import errno
import faulthandler
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from embedcache.errors import CacheError, one_line
from embedcache.store import schema

#: rows copied per write of /features (a whole number of chunks)
WRITE_BLOCK_ROWS = schema.CHUNK_ROWS * 64
#: the split names that come first, in this order, in /split's categories
CANONICAL_SPLITS = ("train", "valid", "test")
LIBRARIES = ("fairhead", "torch", "torchvision", "h5py", "numpy", "pillow")

MSG_BAD_DTYPE = "feature dtype {dtype!r} is not supported; use one of {allowed}"
MSG_BAD_EPOCH = "SOURCE_DATE_EPOCH={value!r} is not an integer number of seconds; unset it or fix it"
MSG_WRITE_FAILED = "could not write '{path}' ({error}); check free disk space and permissions, then {then}"
MSG_NO_SPACE = "no space left on device '{device}' (writing '{path}'); free {mb} MB there and {then}"
MSG_TOO_LARGE = (
    "'{path}' outgrew the largest file allowed here (the file-size limit `ulimit -f`, or the file system's "
    "maximum); raise the limit or write to another file system, then {then}"
)
MSG_NOT_WRITABLE = "cannot write '{path}' ({error}); choose an output in a folder you can write to, then {then}"
MSG_HDF5_CRASHED = "the HDF5 library crashed ({signal}) while writing '{path}'; the file was removed; {then}"
MSG_BAD_NAME = (
    "sensitive attribute name {name!r} cannot be stored in a cache ({why}); rename that column "
    "(a name without '/', not '.' or '..')"
)
MSG_NOT_A_CACHE_TO_REPLACE = (
    "output '{path}' exists and is not an HDF5 cache; it is not replaced even with `overwrite=True`: "
    "remove it yourself or use another `out`"
)
MSG_OUTPUT_IS_FOLDER = "output '{path}' is a folder; give a file path such as '{path}/features.h5'"
#: what a failed write tells the user to do next (extractions pass "rerun to resume")
RERUN = "rerun the same command"
MB = 1024 * 1024
#: HDF5 metadata (object headers, chunk index, heaps) is far below this for caches of any size
HDF5_OVERHEAD_BYTES = MB


@dataclass(frozen=True)
class CacheTable:
    """Everything of a cache but the features: one entry per row.

    Attributes
    ----------
    sample_ids : numpy.ndarray of str
    labels : numpy.ndarray of int64 (0/1)
    label_name : str
    label_categories : tuple of str
    sensitive : dict name -> (int64 codes, tuple of category names)
    splits : numpy.ndarray of str
    """

    sample_ids: np.ndarray
    labels: np.ndarray
    label_name: str
    label_categories: tuple[str, ...]
    sensitive: Mapping[str, tuple[np.ndarray, tuple[str, ...]]]
    splits: np.ndarray

    @classmethod
    def from_source(cls, source) -> "CacheTable":
        return cls(
            sample_ids=np.asarray(source.ids, dtype=object),
            labels=np.asarray(source.labels, dtype=np.int64),
            label_name=str(source.label_name),
            label_categories=tuple(source.label_categories),
            sensitive={k: (np.asarray(c, dtype=np.int64), tuple(n)) for k, (c, n) in source.sensitive.items()},
            splits=np.asarray(source.splits, dtype=object),
        )

    def __len__(self) -> int:
        return len(self.sample_ids)


def check_feature_dtype(dtype: str) -> str:
    """Normalise a feature dtype name ("float32"/"float16") or raise."""
    name = np.dtype(dtype).name if str(dtype) in ("float32", "float16", "f4", "f2") else str(dtype)
    if name not in schema.FEATURE_DTYPES:
        raise CacheError(MSG_BAD_DTYPE.format(dtype=dtype, allowed=", ".join(schema.FEATURE_DTYPES)))
    return name


def check_member_name(name: str) -> str:
    """Raise :class:`CacheError` unless ``name`` can be an HDF5 member name of ``/sensitive``.

    HDF5 reads ``/`` as a path separator (``a/b`` would become a group ``a``
    holding ``b``, a cache no reader accepts) and ``.`` as the group itself.
    """
    name = str(name)
    why = None
    if name in ("", ".", ".."):
        why = "an empty name" if name == "" else f"{name!r} names a folder in HDF5"
    elif "/" in name:
        why = "'/' separates groups in HDF5"
    elif "\x00" in name:
        why = "it holds a NUL character"
    if why:
        raise CacheError(MSG_BAD_NAME.format(name=name, why=why))
    return name


def check_replaceable(out) -> None:
    """Refuse an output that --overwrite must never replace: a folder, or a file that is not HDF5."""
    out = Path(out)
    if out.is_dir():
        raise CacheError(MSG_OUTPUT_IS_FOLDER.format(path=out))
    if out.exists() and out.stat().st_size > 0 and not h5py.is_hdf5(out):
        raise CacheError(MSG_NOT_A_CACHE_TO_REPLACE.format(path=out))


def prepare_output(out: Path) -> None:
    """:func:`check_replaceable`, then create the output's folder (one line naming it if that fails)."""
    check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(MSG_NOT_WRITABLE.format(path=out, error=err.strerror or err, then="rerun")) from err


def estimate_cache_bytes(table: "CacheTable", *, feature_dim: int, feature_dtype: str) -> int:
    """An upper bound of the size of the cache file of ``table`` (checked against real files in the tests).

    Features take whole chunks of ``CHUNK_ROWS`` rows; each id takes its UTF-8
    bytes plus a 16-byte heap header, rounded up to 8, and a 16-byte reference.
    """
    n = len(table)
    chunk_rows = max(1, min(schema.CHUNK_ROWS, n))
    features = math.ceil(n / chunk_rows) * chunk_rows * int(feature_dim) * np.dtype(feature_dtype).itemsize
    codes = 8 * n * (1 + len(table.sensitive)) + n
    ids = sum(16 + 8 * math.ceil(len(str(i).encode("utf-8")) / 8) + 16 for i in table.sample_ids)
    return int(1.02 * (features + codes + ids)) + HDF5_OVERHEAD_BYTES


def device_of(path) -> str:
    """The mount point that holds ``path`` (what "no space left on device" is about)."""
    folder = os.path.abspath(Path(path).parent)
    while not os.path.ismount(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def free_bytes(path) -> int:
    try:
        return shutil.disk_usage(Path(path).parent).free
    except OSError:
        return 0


def no_space_error(path, needed: int, *, then: str = RERUN) -> CacheError:
    """The one-line error for a disk too full to hold ``needed`` more bytes at ``path``."""
    mb = max(1, math.ceil((needed - free_bytes(path)) / MB))
    return CacheError(MSG_NO_SPACE.format(device=device_of(path), path=path, mb=mb, then=then))


def check_free_space(path, needed: int, *, then: str = RERUN) -> None:
    """Refuse to start a write of ``needed`` bytes at ``path`` that cannot fit."""
    if free_bytes(path) < needed:
        raise no_space_error(path, needed, then=then)


def write_error(err: BaseException, path, *, needed: int, then: str = RERUN) -> CacheError:
    """Turn an OS or HDF5 error of a write into one line that names the cause and the fix.

    HDF5 reports a failed write as an OSError or (on close) a RuntimeError whose
    text carries ``errno = N``; both are mapped by their errno.
    """
    code = getattr(err, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(err))
        code = int(found.group(1)) if found else None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return no_space_error(path, needed, then=then)
    if code == errno.EFBIG:
        return CacheError(MSG_TOO_LARGE.format(path=path, then=then))
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CacheError(MSG_NOT_WRITABLE.format(path=path, error=os.strerror(code), then=then))
    text = os.strerror(code) if code else one_line(err)
    return CacheError(MSG_WRITE_FAILED.format(path=path, error=text, then=then))


def library_versions(libraries=None) -> dict[str, str]:
    """Versions of ``libraries`` (default: those that decide a cache's content) and Python."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES if libraries is None else libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def creation_time() -> str:
    """Now in ISO-8601 UTC, or ``SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is not None:
        try:
            seconds = int(epoch)
        except ValueError as err:
            raise CacheError(MSG_BAD_EPOCH.format(value=epoch)) from err
        moment = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    else:
        moment = _dt.datetime.now(tz=_dt.timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def identity_attrs(
    *,
    backbone: Mapping[str, Any],
    dataset_fingerprint: str,
    feature_dtype: str,
    feature_dim: int,
    n_rows: int,
    compute: str,
) -> dict[str, Any]:
    """The root attributes that identify a cache's content (see ``schema.IDENTITY_ATTRS``).

    ``backbone`` is a :class:`~embedcache.backbones.BackboneSpec` as a dict.
    """
    return {
        schema.DATASET_FINGERPRINT_ATTR: str(dataset_fingerprint),
        schema.BACKBONE_ARCH_ATTR: str(backbone["arch"]),
        schema.BACKBONE_WEIGHTS_ATTR: str(backbone["weights"]),
        schema.WEIGHTS_SHA256_ATTR: str(backbone["weights_sha256"]),
        schema.FEATURE_NODE_ATTR: str(backbone["feature_node"]),
        schema.PREPROCESSING_ATTR: str(backbone["preprocessing"]),
        schema.COMPUTE_ATTR: str(compute),
        schema.FEATURE_DTYPE_ATTR: check_feature_dtype(feature_dtype),
        schema.FEATURE_DIM_ATTR: int(feature_dim),
        schema.N_ROWS_ATTR: int(n_rows),
    }


def _split_codes(splits: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    names = [str(s) for s in splits]
    present = set(names)
    categories = [s for s in CANONICAL_SPLITS if s in present] + sorted(present - set(CANONICAL_SPLITS))
    lookup = {name: k for k, name in enumerate(categories)}
    codes = np.fromiter((lookup[s] for s in names), dtype=schema.SPLIT_DTYPE, count=len(names))
    return codes, categories


def _string_array(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=object)


def write_cache(
    path,
    *,
    table: CacheTable,
    features,
    identity: Mapping[str, Any],
    source_description: Mapping[str, Any],
    feature_columns: Sequence[str] | None = None,
    then: str = RERUN,
) -> Path:
    """Write a complete cache at ``path`` (normally a ``.tmp`` path) and fsync it.

    Parameters
    ----------
    path : path
        File to create (replaced if it exists).
    table : CacheTable
        Ids, labels, sensitive attributes and splits.
    features : array-like (N, D) or h5py.VirtualLayout
        Anything sliceable by rows (a numpy array or memmap of the journal),
        or a virtual layout over other caches' ``/features`` (stored as an
        HDF5 virtual dataset: no rows are copied).
    identity : mapping
        From :func:`identity_attrs`; also written as root attributes.
    source_description : mapping
        JSON-able provenance of the dataset.
    feature_columns : sequence of str, optional
        Names of the feature columns (imports from tables).
    then : str
        What a failure message tells the user to do after fixing the cause.

    Raises
    ------
    CacheError
        A sensitive attribute name HDF5 cannot hold, too little free space
        (checked before writing, and on a failed write), a file-size limit, a
        folder that cannot be written, or HDF5 crashing. ``path`` is removed.

    Notes
    -----
    Object timestamps are off and the creation time honours
    ``SOURCE_DATE_EPOCH``, so equal inputs give byte-identical files.
    """
    path = Path(path)
    n, d = int(identity[schema.N_ROWS_ATTR]), int(identity[schema.FEATURE_DIM_ATTR])
    dtype = np.dtype(identity[schema.FEATURE_DTYPE_ATTR])
    if len(table) != n or tuple(features.shape) != (n, d):
        raise CacheError(
            f"internal: cache '{path}' expects {n}x{d} features for {len(table)} rows, got {tuple(features.shape)}"
        )
    for name in table.sensitive:
        check_member_name(name)
    needed = estimate_cache_bytes(table, feature_dim=d, feature_dtype=dtype.name)
    try:
        path.unlink()  # a stale file of a killed run: a new inode, so a straggler cannot write into ours
    except FileNotFoundError:
        pass
    except OSError as err:
        raise write_error(err, path, needed=needed, then=then) from err
    check_free_space(path, needed, then=then)

    def job(on_error) -> None:
        _write_hdf5(path, table=table, features=features, identity=identity, n=n, d=d, dtype=dtype,
                    source_description=source_description, feature_columns=feature_columns, on_error=on_error)

    try:
        _run_isolated(job)
    except (OSError, RuntimeError) as err:
        _remove_quietly(path)
        raise write_error(err, path, needed=needed, then=then) from err
    except _ChildCrashed as err:
        _remove_quietly(path)
        if err.signum == getattr(signal, "SIGXFSZ", None):
            raise CacheError(MSG_TOO_LARGE.format(path=path, then=then)) from err
        if free_bytes(path) < needed:
            raise no_space_error(path, needed, then=then) from err
        raise CacheError(MSG_HDF5_CRASHED.format(signal=err.name, path=path, then=then)) from err
    except BaseException:
        _remove_quietly(path)
        raise
    return path


def _write_hdf5(path: Path, *, table: CacheTable, features, identity, n: int, d: int, dtype,
                source_description, feature_columns, on_error=None) -> None:
    """Write the file. ``on_error`` hears of a failure before HDF5 closes the file (which can then crash)."""
    split_codes, split_names = _split_codes(table.splits)
    text = h5py.string_dtype("utf-8")
    report = on_error if on_error is not None else (lambda err: None)
    f = h5py.File(path, "w", track_order=False)
    try:
        _fill(f, table=table, features=features, identity=identity, n=n, d=d, dtype=dtype,
              source_description=source_description, feature_columns=feature_columns,
              split_codes=split_codes, split_names=split_names, text=text)
    except BaseException as err:
        report(err)
        raise
    finally:
        try:
            f.close()  # flushes the last metadata: a full disk can fail here too
        except BaseException as err:
            report(err)
            raise
    fsync_path(path)


def _fill(f: h5py.File, *, table: CacheTable, features, identity, n: int, d: int, dtype, source_description,
          feature_columns, split_codes, split_names, text) -> None:
    attrs = f.attrs
    attrs[schema.FORMAT_NAME_ATTR] = schema.FORMAT_NAME
    attrs[schema.FORMAT_VERSION_ATTR] = schema.FORMAT_VERSION
    attrs[schema.COMPLETE_ATTR] = False  # flipped last, after every dataset is written
    for key, value in identity.items():
        attrs[key] = value
    attrs[schema.LABEL_NAME_ATTR] = table.label_name
    attrs[schema.SOURCE_ATTR] = schema.dumps_json(dict(source_description))
    attrs[schema.LIBRARY_VERSIONS_ATTR] = schema.dumps_json(library_versions())
    attrs[schema.CREATED_ATTR] = creation_time()

    if isinstance(features, h5py.VirtualLayout):  # a view over shard files (distributed --no-merge): no copy
        dset = f.create_virtual_dataset(schema.FEATURES, features)
    else:
        dset = f.create_dataset(
            schema.FEATURES,
            shape=(n, d),
            maxshape=(None, d),
            dtype=dtype,
            chunks=(min(schema.CHUNK_ROWS, n), d),
            track_times=False,
        )
        for start in range(0, n, WRITE_BLOCK_ROWS):
            stop = min(n, start + WRITE_BLOCK_ROWS)
            dset[start:stop] = np.asarray(features[start:stop], dtype=dtype)
    if feature_columns is not None:
        dset.attrs.create(schema.FEATURE_COLUMNS_ATTR, _string_array(feature_columns), dtype=text)

    labels = f.create_dataset(
        schema.LABELS, data=np.asarray(table.labels, dtype=schema.LABEL_DTYPE), track_times=False
    )
    labels.attrs[schema.LABEL_NAME_DSET_ATTR] = table.label_name
    labels.attrs.create(schema.CATEGORIES_ATTR, _string_array(table.label_categories), dtype=text)

    group = f.create_group(schema.SENSITIVE_GROUP)
    for name in sorted(table.sensitive):
        codes, categories = table.sensitive[name]
        ds = group.create_dataset(
            name, data=np.asarray(codes, dtype=schema.CODE_DTYPE), track_times=False
        )
        ds.attrs.create(schema.CATEGORIES_ATTR, _string_array(categories), dtype=text)

    f.create_dataset(
        schema.SAMPLE_ID, data=_string_array(table.sample_ids), dtype=text, track_times=False
    )
    split = f.create_dataset(schema.SPLIT, data=split_codes, track_times=False)
    split.attrs.create(schema.CATEGORIES_ATTR, _string_array(split_names), dtype=text)

    attrs[schema.COMPLETE_ATTR] = True
    f.flush()




def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class _ChildCrashed(Exception):
    """The writer child died from a signal (HDF5 segfaults after a failed write)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        try:
            self.name = signal.Signals(signum).name
        except ValueError:
            self.name = f"signal {signum}"
        super().__init__(self.name)


#: write HDF5 in a child process where fork is safe and cheap (Linux); in-process elsewhere
ISOLATE_WRITES = sys.platform.startswith("linux") and hasattr(os, "fork")


def _run_isolated(job) -> None:
    """Run ``job()`` in a forked child; re-raise its OSError/RuntimeError/CacheError here.

    The child shares the parent's memory copy-on-write (features and table are
    not copied) and ends with ``os._exit``, so no HDF5 clean-up of a failed
    file ever runs in this process.
    """
    if not ISOLATE_WRITES:
        job(None)
        return
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns on fork() in a threaded process; the child only runs h5py and numpy, then _exits
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child (its outcome is asserted through the parent)
        code, sent = 0, []

        def send(err: BaseException) -> None:
            """Tell the parent what failed, at once: HDF5 may crash this process right after."""
            if sent:
                return
            sent.append(err)
            report = {"type": type(err).__name__, "errno": getattr(err, "errno", None),
                      "message": one_line(err, limit=2000), "cache": isinstance(err, CacheError)}
            try:
                os.write(write_end, json.dumps(report).encode("utf-8"))
            except OSError:
                pass

        try:
            os.close(read_end)
            faulthandler.disable()  # a crash here is reported by the parent in one line, not as a dump
            job(send)
        except BaseException as err:  # noqa: BLE001 - every failure travels back as data
            send(err)
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        chunks = []
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
    except BaseException:  # Ctrl-C while the child writes: stop it before the caller removes its file
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        raise
    finally:
        os.close(read_end)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return
    try:
        report = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:  # died before it could say why
        if os.WIFSIGNALED(status):
            raise _ChildCrashed(os.WTERMSIG(status)) from None
        report = {"type": "RuntimeError", "errno": None, "message": f"writer exited with status {os.WEXITSTATUS(status)}"}
    if report.get("cache"):
        raise CacheError(report["message"])
    if report.get("errno") is not None or report.get("type") == "OSError":
        raise OSError(report.get("errno"), report["message"])
    raise RuntimeError(report["message"])


def fsync_path(path, *, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp_path, final_path) -> Path:
    """Atomically move a finished file into place and make the rename durable."""
    final_path = Path(final_path)
    os.replace(tmp_path, final_path)
    fsync_path(final_path.parent if str(final_path.parent) else Path("."), directory=True)
    return final_path


def atomic_write_text(path, text: str) -> None:
    """Replace ``path`` with ``text`` so a crash leaves the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + schema.TMP_SUFFIX)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:  # a full disk or a Ctrl-C: no temporary file is left behind
        _remove_quietly(tmp)
        raise
    commit_file(tmp, path)
