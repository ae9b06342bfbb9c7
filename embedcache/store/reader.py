"""Open a cache, check it, and read only the rows asked for.

>>> with embedcache.open("celeba_r50.h5") as cache:            # doctest: +SKIP
...     train = cache.load("train", as_="torch", device="cuda")
...     print(cache.count_table())
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from embedcache.errors import CacheError, DataError, one_line
from embedcache.store import schema
from embedcache.store.journal import Journal, WriteLock
from embedcache.store.validate import check_cache, check_complete

MSG_MISSING = "no cache at '{path}'; build it with `fairhead extract` or `fairhead import`"
MSG_RESUMABLE = (
    "cache '{path}' is incomplete ({rows} of {total} rows); rerun the same `fairhead extract` command to resume"
)
MSG_UNFINISHED_OVERWRITE = (
    "cache '{path}' has an unfinished extraction in '{journal}' ({rows} of {total} rows); rerun it to finish, "
    "or remove that folder to use the existing file"
)
MSG_NOT_STARTED = (
    "cache '{path}' is incomplete (its extraction stopped before committing a batch); "
    "rerun the same `fairhead extract` command"
)
MSG_NOT_STARTED_OVERWRITE = (
    "cache '{path}' has an unfinished extraction in '{journal}' that committed no rows yet; rerun it to finish, "
    "or remove that folder to use the existing file"
)
MSG_BEING_WRITTEN = (
    "cache '{path}' is being written by another process{holder} right now ({progress}); "
    "wait for it to finish, then open it again"
)
MSG_DAMAGED_JOURNAL_READ = (
    "cache '{path}' has a damaged extraction journal '{journal}' ({error}); "
    "rerun the extraction with `overwrite=True` to start over"
)
MSG_NOT_HDF5 = "'{path}' is not an HDF5 file; pass a cache written by `fairhead extract` or `fairhead import`"
MSG_CORRUPT = "cache '{path}' is truncated or corrupt ({error}); rebuild it with the same `fairhead extract` command"
MSG_MARKED_INCOMPLETE = (
    "cache '{path}' is marked incomplete (complete=false); rerun the `fairhead extract` command that writes it"
)
MSG_UNKNOWN_SPLIT = "cache '{path}' has no split {name!r}; available splits: {available}"
MSG_UNKNOWN_ATTRIBUTE = "cache '{path}' has no sensitive attribute {name!r}; available: {available}"
MSG_UNKNOWN_CATEGORY_FIELD = "cache '{path}' has no column {name!r}; available: {available}"
MSG_EXISTING_NOT_CACHE = (
    "output '{path}' exists but is not a readable cache ({error}); use another `out` or pass `overwrite=True`"
)
MSG_BAD_AS = "as_={value!r} is not supported; use 'numpy' or 'torch'"

#: rows read per block when the wanted rows are scattered
READ_BLOCK_ROWS = schema.CHUNK_ROWS * 64


@dataclass
class CacheData:
    """Rows of a cache, as numpy arrays or torch tensors (what :meth:`Cache.load` returns).

    Parameters
    ----------
    features : (n, D) array or tensor, or None
        The feature vectors (None when loaded with ``features=False``).
    labels : (n,) int64 array or tensor
        Label codes; :attr:`Cache.label_categories` names them.
    sensitive : dict
        Attribute name -> (n,) int64 codes; :meth:`Cache.categories` names them.
    sample_ids : (n,) numpy array of str
        The sample ids.
    split : (n,) numpy array of str
        The split of each row.
    rows : (n,) numpy int64 array
        The row numbers in the cache.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> import embedcache
    >>> tmp = tempfile.TemporaryDirectory(); folder = pathlib.Path(tmp.name)
    >>> rng = np.random.default_rng(0)
    >>> pd.DataFrame({"f0": rng.normal(size=40), "f1": rng.normal(size=40), "y": rng.integers(0, 2, 40),
    ...               "sex": rng.choice(["f", "m"], 40), "split": ["train"] * 30 + ["test"] * 10}
    ...              ).to_csv(folder / "table.csv", index=False)
    >>> path = embedcache.import_table(folder / "table.csv", label="y", sensitive="sex", split="split",
    ...                                out=folder / "table.h5", progress=False)
    >>> with embedcache.open(path) as cache:
    ...     train = cache.load("train")
    >>> len(train), train.features.shape, train.features.dtype.name, sorted(train.sensitive)
    (30, (30, 2), 'float32', ['sex'])
    >>> tmp.cleanup()
    """

    features: Any
    labels: Any
    sensitive: dict[str, Any]
    sample_ids: np.ndarray
    split: np.ndarray
    rows: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class CountTable:
    """Counts by split x group x label; a group is one combination of all sensitive attributes.

    From :meth:`Cache.count_table`; its ``str`` is a printable table (below).

    Parameters
    ----------
    splits : list of str
        The split names, in stored order.
    groups : list of str
        The groups, e.g. ``"Male=yes"`` or ``"Male=yes, Young=no"``.
    label_name : str
        The label's name.
    label_categories : list of str
        The label's category names.
    counts : numpy.ndarray, shape (len(splits), len(groups), len(label_categories))
        The number of rows in each cell.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> import embedcache
    >>> tmp = tempfile.TemporaryDirectory(); folder = pathlib.Path(tmp.name)
    >>> rng = np.random.default_rng(0)
    >>> pd.DataFrame({"f0": rng.normal(size=40), "f1": rng.normal(size=40), "y": rng.integers(0, 2, 40),
    ...               "sex": rng.choice(["f", "m"], 40), "split": ["train"] * 30 + ["test"] * 10}
    ...              ).to_csv(folder / "table.csv", index=False)
    >>> path = embedcache.import_table(folder / "table.csv", label="y", sensitive="sex", split="split",
    ...                                out=folder / "table.h5", progress=False)
    >>> with embedcache.open(path) as cache:
    ...     print(cache.count_table())
    split  group  y=0  y=1  total
    -----  -----  ---  ---  -----
    train  sex=f    6    6     12
           sex=m    7   11     18
           all     13   17     30
    test   sex=f    4    3      7
           sex=m    2    1      3
           all      6    4     10
    all    all     19   21     40
    >>> tmp.cleanup()
    """

    splits: list[str]
    groups: list[str]
    label_name: str
    label_categories: list[str]
    counts: np.ndarray

    def rows(self) -> list[dict[str, Any]]:
        """List the cells, zero counts included.

        Returns
        -------
        list of dict
            One ``{"split", "group", "label", "count"}`` per (split, group, label) cell.
        """
        return [
            {"split": s, "group": g, "label": lab, "count": int(self.counts[i, j, k])}
            for i, s in enumerate(self.splits)
            for j, g in enumerate(self.groups)
            for k, lab in enumerate(self.label_categories)
        ]

    def to_dict(self) -> dict[str, Any]:
        """Return the table as a JSON-able dict.

        Returns
        -------
        dict
            The fields, ``counts`` as nested lists.
        """
        return {
            "splits": self.splits,
            "groups": self.groups,
            "label_name": self.label_name,
            "label_categories": self.label_categories,
            "counts": self.counts.tolist(),
        }

    def __str__(self) -> str:
        heads = [f"{self.label_name}={c}" for c in self.label_categories] + ["total"]
        body = []
        for i, split in enumerate(self.splits):
            for j, group in enumerate(self.groups):
                cells = [int(v) for v in self.counts[i, j]]
                body.append([split if j == 0 else "", group, *map(str, cells), str(sum(cells))])
            totals = [int(v) for v in self.counts[i].sum(axis=0)]
            body.append(["", "all", *map(str, totals), str(sum(totals))])
        totals = [int(v) for v in self.counts.sum(axis=(0, 1))]
        body.append(["all", "all", *map(str, totals), str(sum(totals))])
        table = [["split", "group", *heads], *body]
        widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
        lines = []
        for r, row in enumerate(table):
            cells = [row[c].ljust(widths[c]) if c < 2 else row[c].rjust(widths[c]) for c in range(len(row))]
            lines.append("  ".join(cells).rstrip())
            if r == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def open_cache(path) -> "Cache":
    """Open and check a cache file (``embedcache.open``); see :class:`Cache`.

    Parameters
    ----------
    path : str or os.PathLike
        A cache written by :func:`embedcache.extract` or :func:`embedcache.import_table`.

    Returns
    -------
    Cache
        The open cache; use it as a context manager (or call ``close``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> import embedcache
    >>> tmp = tempfile.TemporaryDirectory(); folder = pathlib.Path(tmp.name)
    >>> rng = np.random.default_rng(0)
    >>> pd.DataFrame({"f0": rng.normal(size=40), "f1": rng.normal(size=40), "y": rng.integers(0, 2, 40),
    ...               "sex": rng.choice(["f", "m"], 40), "split": ["train"] * 30 + ["test"] * 10}
    ...              ).to_csv(folder / "table.csv", index=False)
    >>> path = embedcache.import_table(folder / "table.csv", label="y", sensitive="sex", split="split",
    ...                                out=folder / "table.h5", progress=False)
    >>> with embedcache.open(path) as cache:
    ...     print(cache.n_rows, cache.splits, cache.label_name, cache.categories("sex"))
    40 ['train', 'test'] y ['f', 'm']
    >>> tmp.cleanup()
    """
    return Cache(path)


class Cache:
    """A checked, read-only cache. Use as a context manager or call :meth:`close`.

    Opening refuses (with :class:`~embedcache.errors.CacheError`) a missing
    file, a file that is not HDF5 or is truncated, another HDF5 file, a newer
    major format version, an incomplete cache (``complete`` false, or a journal
    of an unfinished extraction beside it) and inconsistent row counts.

    Parameters
    ----------
    path : str or os.PathLike
        The cache file.
    ignore_journal : bool, default False
        Open a cache even with the journal of an unfinished extraction beside it (the
        extractor does, to check whether a finished cache is the one its journal was building).

    Attributes
    ----------
    path : pathlib.Path
        The cache file.
    n_rows : int
        Rows in the cache.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> import embedcache
    >>> tmp = tempfile.TemporaryDirectory(); folder = pathlib.Path(tmp.name)
    >>> rng = np.random.default_rng(0)
    >>> pd.DataFrame({"f0": rng.normal(size=40), "f1": rng.normal(size=40), "y": rng.integers(0, 2, 40),
    ...               "sex": rng.choice(["f", "m"], 40), "split": ["train"] * 30 + ["test"] * 10}
    ...              ).to_csv(folder / "table.csv", index=False)
    >>> path = embedcache.import_table(folder / "table.csv", label="y", sensitive="sex", split="split",
    ...                                out=folder / "table.h5", progress=False)
    >>> with embedcache.open(path) as cache:
    ...     test = cache.load("test")
    ...     names = cache.categories("sex")
    ...     print(cache.feature_dim, cache.feature_dtype, cache.feature_columns, len(test))
    2 float32 ['f0', 'f1'] 10
    >>> [names[code] for code in test.sensitive["sex"][:4]]
    ['f', 'f', 'f', 'm']
    >>> tmp.cleanup()
    """

    def __init__(self, path, *, ignore_journal: bool = False) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._ids: np.ndarray | None = None  # every row's sample id, decoded once (the file is read-only)
        journal = Journal(self.path)
        if not self.path.exists():
            if journal.exists():
                raise CacheError(_unfinished_message(self.path, journal, replacing=False))
            raise CacheError(MSG_MISSING.format(path=self.path))
        if self.path.is_dir():
            raise CacheError(MSG_NOT_HDF5.format(path=self.path))
        if not h5py.is_hdf5(self.path):
            raise CacheError(MSG_NOT_HDF5.format(path=self.path))
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CacheError(MSG_CORRUPT.format(path=self.path, error=one_line(err))) from err
        try:
            self._check(None if ignore_journal else journal)
        except CacheError:
            self.close()
            raise
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as err:  # h5py on a damaged object header
            self.close()
            raise CacheError(MSG_CORRUPT.format(path=self.path, error=one_line(err))) from err
        except BaseException:
            self.close()
            raise

    def _check(self, journal: Journal | None) -> None:
        f = self._file
        found = schema.decode_attr(f.attrs.get(schema.FORMAT_NAME_ATTR))
        if found != schema.FORMAT_NAME:
            raise CacheError(
                schema.MSG_NOT_EMBEDCACHE.format(path=self.path, attr=schema.FORMAT_NAME_ATTR, found=found)
            )
        schema.check_format_version(f.attrs.get(schema.FORMAT_VERSION_ATTR), self.path)
        if journal is not None and journal.exists():
            raise CacheError(_unfinished_message(self.path, journal, replacing=True))
        if not check_complete(f.attrs, self.path):
            raise CacheError(MSG_MARKED_INCOMPLETE.format(path=self.path))
        self.n_rows = check_cache(f, self.path)

    # --- context manager --------------------------------------------------------------
    def close(self) -> None:
        """Close the file (again is a no-op); the cache is unusable afterwards."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._ids = None

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file is None else f"{self.n_rows} rows x {self.feature_dim}"
        return f"<embedcache.Cache '{self.path}' {state}>"

    @property
    def _f(self) -> h5py.File:
        if self._file is None:
            raise CacheError(f"cache '{self.path}' is closed; open it again with embedcache.open(path)")
        return self._file

    # --- metadata -------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        """Width D of the feature vectors."""
        return int(self._f[schema.FEATURES].shape[1])

    def read_features(self, rows: np.ndarray) -> np.ndarray:
        """Read the features of some rows alone (a share of a split, say).

        Parameters
        ----------
        rows : array-like of int
            Sorted row numbers of the cache (:meth:`rows_of` gives a split's).

        Returns
        -------
        numpy.ndarray of shape (len(rows), D)
            The features, in the stored dtype.
        """
        return read_rows(self._f[schema.FEATURES], np.asarray(rows, dtype=np.int64))

    @property
    def feature_dtype(self) -> str:
        """The stored dtype of the features (``"float32"`` or ``"float16"``)."""
        return self._f[schema.FEATURES].dtype.name

    @property
    def splits(self) -> list[str]:
        """Split names present, in stored order (train, valid, test first)."""
        return list(schema.decode_attr(self._f[schema.SPLIT].attrs[schema.CATEGORIES_ATTR]))

    @property
    def label_name(self) -> str:
        """The label's name (e.g. ``"Blond_Hair"``)."""
        return str(schema.decode_attr(self._f[schema.LABELS].attrs[schema.LABEL_NAME_DSET_ATTR]))

    @property
    def label_categories(self) -> list[str]:
        """The label's category names, in code order."""
        return list(schema.decode_attr(self._f[schema.LABELS].attrs[schema.CATEGORIES_ATTR]))

    @property
    def sensitive_names(self) -> list[str]:
        """The sensitive attributes' names."""
        return list(self._f[schema.SENSITIVE_GROUP].keys())

    @property
    def is_view(self) -> bool:
        """True for a view over shard files (distributed ``--no-merge``): ``/features`` is a virtual dataset."""
        return bool(self._f[schema.FEATURES].is_virtual)

    @property
    def sample_ids(self) -> np.ndarray:
        """Every row's sample id (no features are read)."""
        return self._all_sample_ids().copy()

    def _all_sample_ids(self) -> np.ndarray:
        """Every row's sample id as str objects, decoded on the first call only: reading the splits
        of a cache one by one would decode all of them once per split (25-45 ms each on Adult's 45,222)."""
        if self._ids is None:
            self._ids = self._f[schema.SAMPLE_ID].asstr()[()].astype(object)
        return self._ids

    @property
    def features_key(self) -> str:
        """The name of the (n, D) features dataset in the file, for readers that stream it."""
        return schema.FEATURES

    @property
    def feature_columns(self) -> list[str] | None:
        """The feature columns' names of an imported table, or None (a backbone's features)."""
        value = self._f[schema.FEATURES].attrs.get(schema.FEATURE_COLUMNS_ATTR)
        return None if value is None else list(schema.decode_attr(value))

    def categories(self, name: str) -> list[str]:
        """Name the codes of a sensitive attribute, of the label or of the splits.

        Parameters
        ----------
        name : str
            A sensitive attribute, the label's name, or ``"split"``.

        Returns
        -------
        list of str
            The category names; code ``k`` is ``categories(name)[k]``.
        """
        if name in self._f[schema.SENSITIVE_GROUP]:
            return list(schema.decode_attr(self._f[schema.SENSITIVE_GROUP][name].attrs[schema.CATEGORIES_ATTR]))
        if name == self.label_name:
            return self.label_categories
        if name == schema.SPLIT:
            return self.splits
        available = ", ".join([*self.sensitive_names, self.label_name, schema.SPLIT])
        raise DataError(MSG_UNKNOWN_CATEGORY_FIELD.format(path=self.path, name=name, available=available))

    @property
    def provenance(self) -> dict[str, Any]:
        """All root attributes as plain values (JSON attributes decoded)."""
        out = {}
        for key, value in self._f.attrs.items():
            value = schema.decode_attr(value)
            if key in schema.JSON_ATTRS and isinstance(value, str):
                value = json.loads(value)
            out[key] = value
        return dict(sorted(out.items()))

    @property
    def identity(self) -> dict[str, Any]:
        """What identifies the features: dataset fingerprint, backbone, weights, dtype and shape.

        The extractor never resumes or replaces a cache of another identity without ``overwrite``.
        """
        return schema.identity_of(self._f.attrs)

    @property
    def fingerprint(self) -> str:
        """The dataset fingerprint (sha256 of ids, labels, attributes and splits)."""
        return str(schema.decode_attr(self._f.attrs[schema.DATASET_FINGERPRINT_ATTR]))

    # --- data ----------------------------------------------------------------------------
    def _split_codes(self) -> np.ndarray:
        return self._f[schema.SPLIT][()]

    def rows_of(self, splits: str | Sequence[str] | None = None) -> np.ndarray:
        """Find the rows of some splits.

        Parameters
        ----------
        splits : str or sequence of str, optional
            Split name(s); None means every row.

        Returns
        -------
        numpy.ndarray of int64
            Sorted row numbers.
        """
        if splits is None:
            return np.arange(self.n_rows, dtype=np.int64)
        wanted = [splits] if isinstance(splits, str) else list(splits)
        names = self.splits
        for name in wanted:
            if name not in names:
                raise DataError(MSG_UNKNOWN_SPLIT.format(path=self.path, name=name, available=", ".join(names)))
        codes = [names.index(name) for name in wanted]
        return np.flatnonzero(np.isin(self._split_codes(), codes)).astype(np.int64)

    def load(
        self,
        splits: str | Sequence[str] | None = None,
        *,
        sensitive: str | Sequence[str] | None = None,
        as_: str = "numpy",
        device: str = "cpu",
        dtype: Any = None,
        features: bool = True,
    ) -> CacheData:
        """Read the rows of some splits.

        Parameters
        ----------
        splits : str or list of str, optional
            Split name(s); None reads every row.
        sensitive : str or list of str, optional
            Sensitive attributes to return; None returns all.
        as_ : {"numpy", "torch"}
            Array type of features, labels and codes.
        device : str, default "cpu"
            Torch device (``as_="torch"`` only).
        dtype : numpy or torch dtype name, optional
            Convert the features (e.g. ``"float32"`` for a float16 cache).
        features : bool, default True
            False reads everything but the features (``features`` is then None): an
            out-of-core fit streams them from :attr:`features_key` in this file itself.

        Returns
        -------
        CacheData
            Only the requested rows are read from /features: contiguous runs
            are read as slices, scattered rows block by block.
        """
        if as_ not in ("numpy", "torch"):
            raise DataError(MSG_BAD_AS.format(value=as_))
        rows = self.rows_of(splits)
        if sensitive is None:
            names = self.sensitive_names
        else:
            names = [sensitive] if isinstance(sensitive, str) else list(sensitive)
            for name in names:
                if name not in self._f[schema.SENSITIVE_GROUP]:
                    raise DataError(
                        MSG_UNKNOWN_ATTRIBUTE.format(
                            path=self.path, name=name, available=", ".join(self.sensitive_names)
                        )
                    )
        try:
            features = read_rows(self._f[schema.FEATURES], rows) if features else None
            labels = self._f[schema.LABELS][()][rows]
            codes = {name: self._f[schema.SENSITIVE_GROUP][name][()][rows] for name in names}
            sample_ids = self._all_sample_ids()[rows]
        except OSError as err:  # a file cut short past its header fails only here
            raise CacheError(MSG_CORRUPT.format(path=self.path, error=one_line(err))) from err
        split_names = np.asarray(self.splits, dtype=object)[self._split_codes()[rows]]
        if features is not None and dtype is not None and as_ == "numpy":
            features = features.astype(np.dtype(dtype), copy=False)
        if as_ == "torch":
            import torch

            to = {"device": device}
            features = None if features is None else torch.from_numpy(features).to(**to)
            if features is not None and dtype is not None:
                features = features.to(getattr(torch, str(dtype).replace("torch.", "")))
            labels = torch.from_numpy(labels).to(**to)
            codes = {name: torch.from_numpy(c).to(**to) for name, c in codes.items()}
        return CacheData(
            features=features, labels=labels, sensitive=codes, sample_ids=sample_ids, split=split_names, rows=rows
        )

    def count_table(self) -> CountTable:
        """Count the rows by split x group x label (groups: combinations of all sensitive attributes).

        Returns
        -------
        CountTable
            The counts; its ``str`` is a printable table.
        """
        names = self.sensitive_names
        columns = [self._f[schema.SENSITIVE_GROUP][name][()] for name in names]
        stacked = np.stack(columns, axis=1)
        combos, group_index = np.unique(stacked, axis=0, return_inverse=True)
        group_index = group_index.reshape(-1)
        categories = {name: self.categories(name) for name in names}
        groups = [
            ", ".join(f"{name}={categories[name][code]}" for name, code in zip(names, combo)) for combo in combos
        ]
        splits, labels = self._split_codes(), self._f[schema.LABELS][()]
        n_labels = len(self.label_categories)
        counts = np.zeros((len(self.splits), len(groups), n_labels), dtype=np.int64)
        np.add.at(counts, (splits.astype(np.int64), group_index, labels), 1)
        return CountTable(
            splits=self.splits,
            groups=groups,
            label_name=self.label_name,
            label_categories=self.label_categories,
            counts=counts,
        )


def existing_cache_matches(path, identity: dict[str, Any]) -> bool:
    """True if ``path`` is a complete cache with exactly this identity; raise CacheError otherwise.

    Writers call this before touching an existing output, so that a cache of
    another backbone, weights or dataset is never silently replaced or mixed.
    """
    try:
        with Cache(path) as cache:
            found = cache.identity
    except CacheError as err:
        raise CacheError(MSG_EXISTING_NOT_CACHE.format(path=path, error=str(err))) from err
    mismatch = schema.identity_mismatch(found, identity, path=path)
    if mismatch:
        raise CacheError(mismatch)
    return True


def read_rows(dset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Read the given sorted rows of a 2-D dataset without reading the others.

    Contiguous runs are read directly into the output; when the rows are
    scattered (short runs), each block of ``READ_BLOCK_ROWS`` that holds some
    of them is read once and the wanted rows picked out, which keeps the
    number of HDF5 calls low.
    """
    out = np.empty((len(rows), dset.shape[1]), dtype=dset.dtype)
    if len(rows) == 0:
        return out
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = rows[np.r_[0, breaks]]
    lengths = np.diff(np.r_[0, breaks, len(rows)])
    if lengths.mean() >= schema.CHUNK_ROWS or len(starts) <= 16:
        pos = 0
        for start, length in zip(starts.tolist(), lengths.tolist()):
            dset.read_direct(out, np.s_[start : start + length], np.s_[pos : pos + length])
            pos += length
        return out
    blocks = rows // READ_BLOCK_ROWS
    pos = 0
    for block in np.unique(blocks).tolist():
        wanted = rows[blocks == block]
        first, last = int(wanted[0]), int(wanted[-1]) + 1
        chunk = dset[first:last]
        out[pos : pos + len(wanted)] = chunk[wanted - first]
        pos += len(wanted)
    return out


def _unfinished_message(path: Path, journal: Journal, *, replacing: bool) -> str:
    """Say why a journal beside (or instead of) ``path`` makes it unreadable, and what to do.

    A journal whose lock is held belongs to a running extraction: "rerun to
    resume" would be wrong advice then (the rerun would be refused), so the
    message says to wait.
    """
    try:
        meta = journal.read_meta()
        rows = journal.committed_rows()
    except CacheError as err:
        return MSG_DAMAGED_JOURNAL_READ.format(path=path, journal=journal.dir, error=one_line(err.__cause__ or err))
    total = (meta or {}).get("identity", {}).get(schema.N_ROWS_ATTR)
    holder = WriteLock(path).holder()
    if holder is not None:
        progress = f"{rows} of {total} rows done" if total is not None else f"{rows} rows done"
        return MSG_BEING_WRITTEN.format(path=path, holder=f" (pid {holder})" if holder else "", progress=progress)
    if meta is None or total is None:
        template = MSG_NOT_STARTED_OVERWRITE if replacing else MSG_NOT_STARTED
        return template.format(path=path, journal=journal.dir)
    template = MSG_UNFINISHED_OVERWRITE if replacing else MSG_RESUMABLE
    return template.format(path=path, journal=journal.dir, rows=rows, total=total)
