"""Already-computed features (a table) -> the same HDF5 cache format.

Researchers often have embeddings or tabular data already (the Adult census
table, features from another framework). :func:`import_table` reads a CSV,
Parquet, ``.npz`` or a folder of ``.npy`` arrays and writes a cache whose
backbone is recorded as ``"imported"``.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedcache.errors import DataError
from embedcache.sources.base import (
    TableSource,
    encode_binary_label,
    encode_categorical,
    hash_splits,
    normalize_splits,
)
from embedcache.store import schema
from embedcache.store.journal import WriteLock
from embedcache.store.reader import existing_cache_matches
from embedcache.store.writer import CacheTable, check_feature_dtype, commit_file, identity_attrs, write_cache

IMPORTED_ARCH = "imported"
IMPORTED_WEIGHTS = "table"
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz", ".npy")

MISSING_TABLE_MSG = "table '{path}' does not exist; pass a CSV, Parquet, .npz or .npy path"
UNKNOWN_FORMAT_MSG = "table '{path}' has an unknown format; use .csv, .parquet, .npz, a .npy file or a folder of .npy files"
UNREADABLE_TABLE_MSG = "table '{path}' cannot be read ({error}); check the file"
NO_PYARROW_MSG = "reading Parquet needs pyarrow; install it with `pip install pyarrow`"
UNKNOWN_COLUMN_MSG = "table '{path}' has no column {name!r}{hint}; columns are: {available}"
NOT_NUMERIC_MSG = "feature column {name!r} is not numeric ({value!r} at row {row}); encode it as numbers or leave it out"
NON_FINITE_MSG = "feature column {name!r} has a non-finite value ({value}) at row {row}; impute or drop that row"
NO_FEATURES_MSG = "table '{path}' has no numeric feature columns besides label, sensitive, split and id; pass --features"
FLOAT16_OVERFLOW_MSG = "features exceed the float16 range (max |x| = {value:.3g}); use feature_dtype float32"
RAGGED_MSG = "table '{path}' column {name!r} has {got} rows but {expected} are expected; give every column one value per row"
STRUCTURED_NPY_MSG = "'{path}' is a plain array; a .npy table must be a structured array (named fields) or a folder of .npy files"


def import_table(
    path,
    *,
    label: str,
    sensitive: str | Sequence[str],
    features: Sequence[str] | None = None,
    split: str | None = None,
    id_col: str | None = None,
    out,
    feature_dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write a cache from a table of features, label, sensitive attributes and split.

    Parameters
    ----------
    path : path
        ``.csv``; ``.parquet`` (needs pyarrow); ``.npz`` (one array per column,
        2-D arrays count as blocks of feature columns); a structured ``.npy``;
        or a folder of ``.npy`` files (one per column, 2-D allowed).
    label : str
        Binary label column (exactly two distinct values).
    sensitive : str or list of str
        Sensitive attribute column(s); values are encoded to codes with their
        category names.
    features : list of str, optional
        Feature columns (or 2-D array names). Default: every numeric column not
        used as label, sensitive, split or id.
    split : str, optional
        Split column; without it rows are split 70/15/15 by a hash of the id.
    id_col : str, optional
        Unique id column; default the row number.
    out : path
        The cache to write.
    feature_dtype : {"float32", "float16"}
    overwrite : bool
        Replace an existing cache made from other data.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import_table("adult.csv", label="income", sensitive=["sex"], out="adult.h5")  # doctest: +SKIP
    """
    path, out = Path(path), Path(out)
    feature_dtype = check_feature_dtype(feature_dtype)
    sensitive = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    columns, blocks, n = _read_table(path)
    available = list(columns) + list(blocks)
    used = [label, *sensitive] + [c for c in (split, id_col) if c is not None]
    for name in used + list(features or []):
        if name not in columns and name not in blocks:
            close = difflib.get_close_matches(name, available, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(UNKNOWN_COLUMN_MSG.format(path=path, name=name, hint=hint, available=", ".join(available)))
    if features is None:
        features = [c for c in available if c not in used and (c in blocks or _is_numeric(columns[c]))]
        if not features:
            raise DataError(NO_FEATURES_MSG.format(path=path))
    matrix, names = _feature_matrix(columns, blocks, list(features), n)

    ids = [str(v) for v in columns[id_col]] if id_col is not None else [str(i) for i in range(n)]
    label_codes, label_categories = encode_binary_label(list(columns[label]), name=label)
    table = TableSource(
        ids=ids,
        labels=label_codes,
        label_name=label,
        label_categories=label_categories,
        sensitive={name: encode_categorical(list(columns[name]), name=name, kind="sensitive") for name in sensitive},
        splits=normalize_splits(columns[split]) if split is not None else hash_splits(ids),
        where=f"table '{path}'",
    )
    with np.errstate(over="ignore"):  # an overflow is reported below as a DataError, not a RuntimeWarning
        stored = matrix.astype(feature_dtype)
    if feature_dtype == "float16" and not np.isfinite(stored).all():
        raise DataError(FLOAT16_OVERFLOW_MSG.format(value=float(np.abs(matrix).max())))

    sha = _table_sha256(path)
    identity = identity_attrs(
        backbone={
            "arch": IMPORTED_ARCH,
            "weights": IMPORTED_WEIGHTS,
            "weights_sha256": sha,
            "feature_node": "columns",
            "preprocessing": f"{len(names)} feature columns",
        },
        dataset_fingerprint=table.fingerprint(),
        feature_dtype=feature_dtype,
        feature_dim=stored.shape[1],
        n_rows=n,
        compute="none",
    )
    description = {
        "kind": "table",
        "path": str(path.resolve()),
        "sha256": sha,
        "label": label,
        "sensitive": sensitive,
        "split": split if split is not None else "hash(sample_id) 70/15/15",
        "id": id_col,
        "features": names if len(names) <= 64 else names[:64] + [f"... {len(names)} in all"],
        "rows": n,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with WriteLock(out):
        if out.exists() and not overwrite and existing_cache_matches(out, identity):
            return out
        tmp = schema.tmp_path(out)
        write_cache(
            tmp,
            table=CacheTable.from_source(table),
            features=stored,
            identity=identity,
            source_description=description,
            feature_columns=names,
        )
        commit_file(tmp, out)
    return out


# --- reading -------------------------------------------------------------------------


def _read_table(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Return (1-D columns by name, 2-D feature blocks by name, row count)."""
    if not path.exists():
        raise DataError(MISSING_TABLE_MSG.format(path=path))
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(path.glob("*.npy"))}
            if not arrays:
                raise DataError(UNKNOWN_FORMAT_MSG.format(path=path))
            return _split_arrays(path, arrays)
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".parquet", ".pq"):
            return _read_parquet(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _split_arrays(path, {k: npz[k] for k in npz.files})
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.names is None:
                raise DataError(STRUCTURED_NPY_MSG.format(path=path))
            return _split_arrays(path, {name: array[name] for name in array.dtype.names})
    except (OSError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(UNREADABLE_TABLE_MSG.format(path=path, error=" ".join(str(err).split())[:200])) from err
    raise DataError(UNKNOWN_FORMAT_MSG.format(path=path))


def _split_arrays(path: Path, arrays: dict[str, np.ndarray]):
    columns, blocks = {}, {}
    n = None
    for name, array in arrays.items():
        if array.ndim not in (1, 2):
            raise DataError(RAGGED_MSG.format(path=path, name=name, got=array.shape, expected="1-D or 2-D"))
        n = len(array) if n is None else n
        if len(array) != n:
            raise DataError(RAGGED_MSG.format(path=path, name=name, got=len(array), expected=n))
        (blocks if array.ndim == 2 else columns)[name] = array
    return columns, blocks, int(n or 0)


def _read_csv(path: Path):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        rows = [row for row in reader if row]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(RAGGED_MSG.format(path=path, name=f"(line {number})", got=len(row), expected=len(header)))
    columns = {name: [row[k].strip() for row in rows] for k, name in enumerate(header)}
    return columns, {}, len(rows)


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(NO_PYARROW_MSG) from err
    import pyarrow as pa

    table = pq.read_table(path)
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            columns[name] = column.to_pylist()
    return columns, {}, table.num_rows


def _is_numeric(values) -> bool:
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        return True
    try:
        np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        return False
    return not isinstance(values, np.ndarray) or values.dtype.kind not in "bU"


def _feature_matrix(columns, blocks, names: list[str], n: int) -> tuple[np.ndarray, list[str]]:
    parts, out_names = [], []
    for name in names:
        if name in blocks:
            block = np.asarray(blocks[name])
            if block.dtype.kind not in "iuf":
                raise DataError(NOT_NUMERIC_MSG.format(name=name, value=str(block.dtype), row=0))
            parts.append(block.astype(np.float64))
            out_names += [f"{name}[{j}]" for j in range(block.shape[1])]
            continue
        values = columns[name]
        if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
            column = values.astype(np.float64)
        else:
            column = np.empty(n, dtype=np.float64)
            for row, value in enumerate(values):
                try:
                    column[row] = float(value)
                except (TypeError, ValueError) as err:
                    raise DataError(NOT_NUMERIC_MSG.format(name=name, value=value, row=row)) from err
        parts.append(column[:, None])
        out_names.append(name)
    matrix = np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))
    bad = ~np.isfinite(matrix)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(NON_FINITE_MSG.format(name=out_names[col], value=matrix[row, col], row=row))
    return matrix, out_names


def _table_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode() + b"\x00")
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


__all__ = ["import_table"]

