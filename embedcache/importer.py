"""Already-computed features (a table) -> the same HDF5 cache format.

Researchers often have embeddings or tabular data already (the Adult census
table, features from another framework). :func:`import_table` reads a CSV,
Parquet, ``.npz`` or a folder of ``.npy`` arrays and writes a cache whose
backbone is recorded as ``"imported"``.

Nothing is taken silently: a feature cell that is not a finite number, a
missing label, sensitive or split value, a duplicate or unnamed column, a
ragged row and a value that the stored dtype cannot hold are all refused with
the row and column that hold them.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from embedcache.errors import CacheError, DataError, one_line
from embedcache.sources.base import (TableSource, duplicate_names, encode_categorical, encode_label, hash_splits,
                                     is_missing, normalize_splits, shown, shown_names)
from embedcache.store import schema
from embedcache.store.journal import WriteLock
from embedcache.store.reader import existing_cache_matches
from embedcache.store.writer import CacheTable, check_feature_dtype, commit_file, identity_attrs, write_cache

IMPORTED_ARCH = "imported"
IMPORTED_WEIGHTS = "table"
#: what ``sensitive_missing`` accepts: refuse missing values, keep them as the group "(missing)", or drop their rows
SENSITIVE_MISSING_CHOICES = ("error", "group", "drop")
#: rows per pandas chunk: the progress bar moves once per chunk
CSV_CHUNK_ROWS = 20_000
#: the import's progress bar appears only once reading has taken this long
PROGRESS_DELAY_S = 2.0

MSG_MISSING_TABLE = "table '{path}' does not exist; pass a CSV, Parquet, .npz or .npy path"
MSG_UNKNOWN_FORMAT = "table '{path}' has an unknown format; use .csv, .parquet, .npz, a .npy file or a folder of .npy files"
MSG_UNREADABLE_TABLE = "table '{path}' cannot be read ({error}); check the file"
MSG_NOT_UTF8 = "table '{path}' is not UTF-8 text (it holds the byte {byte}); save it as UTF-8 CSV"
MSG_NO_HEADER = "table '{path}' has no header line; add a header naming the columns"
MSG_OTHER_SEPARATOR = (
    "table '{path}' has a single column {name!r}: it looks {sep}-separated; save it comma-separated"
)
MSG_NO_PYARROW = "reading Parquet needs pyarrow; install it with `pip install pyarrow`"
MSG_UNKNOWN_COLUMN = "table '{path}' has no column {name!r}{hint}; columns are: {available}"
MSG_DUPLICATE_COLUMN = "table '{path}' has the column {name!r} twice (columns {first} and {second}); rename one"
MSG_UNNAMED_COLUMN = "table '{path}' column {position} has no name but holds values ({value} at row {row}); name it in the header"
MSG_LABEL_AS_FEATURE = "the label column {name!r} cannot also be a feature; remove it from `features`"
MSG_FEATURE_TWICE = "feature column {name!r} is listed twice in `features`; list it once"
MSG_NOT_PLAIN_COLUMN = (
    "column {name!r} holds vectors; the {role} must be a plain column (one value per row)"
)
MSG_NOT_NUMERIC = "feature column {name!r} is not numeric ({value} at row {row}); encode it as numbers or leave it out"
MSG_VECTOR_TEXT = (
    "feature column {name!r} holds text that looks like a vector ({value} at row {row}); store vectors as a "
    "Parquet list<float> column (named in `features`) or one column per dimension"
)
MSG_MISSING_FEATURE = "feature column {name!r} is missing a value ({value} at row {row}); impute or drop that row"
MSG_NON_FINITE = "feature column {name!r} has a non-finite value ({value}) at row {row}; impute or drop that row"
MSG_DTYPE_OVERFLOW = (
    "feature column {name!r} has {value:.6g} at row {row}, beyond the {dtype} range (|x| <= {limit:.3g}); {fix}"
)
MSG_DTYPE_UNDERFLOW = (
    "feature column {name!r} is below the {dtype} precision (largest |x| = {value:.3g}, smallest normal "
    "{tiny:.3g}): it would be stored as zeros or noise; {fix}"
)
RESCALE_FIX = "rescale the features (divide by a constant) before importing"
FLOAT32_FIX = "use `feature_dtype='float32'`"
MSG_NO_FEATURES = "table '{path}' has no numeric feature columns besides label, sensitive, split and id; pass `features`"
MSG_RAGGED = "table '{path}' column {name!r} has {got} rows but {expected} are expected; give every column one value per row"
MSG_RAGGED_LINE = "table '{path}' line {line} has {got} fields but the header has {expected}; fix the quoting or the missing field"
MSG_RAGGED_VECTOR = (
    "table '{path}' column {name!r} has vectors of length {expected} and {got} (row {row}); "
    "every row needs a vector of the same length"
)
MSG_NULL_VECTOR = "table '{path}' column {name!r} has a missing vector or element at row {row}; impute or drop that row"
MSG_STRUCTURED_NPY = "'{path}' is a plain array; a .npy table must be a structured array (named fields) or a folder of .npy files"
MSG_OUT_IS_INPUT = "`out` '{out}' is the input table itself; write the cache to another file (e.g. {suggestion})"
MSG_OUT_IS_DIR = "`out` '{out}' is a folder; pass a file path such as '{suggestion}'"
MSG_OUT_NOT_CACHE = (
    "`out` '{out}' exists and is not an HDF5 cache; fairhead replaces only caches (even with `overwrite=True`): "
    "remove it yourself or choose another `out`"
)
MSG_EMPTY_TABLE = "table '{path}' has a header but no rows; pass a table with at least one row"
MSG_OUT_UNWRITABLE = "cannot write the cache '{out}' ({error}); choose a writable `out`"
MSG_BAD_SENSITIVE_MISSING = "sensitive_missing must be one of {choices}, got {value!r}"
MISSING_SENSITIVE_FIX = (
    "fill or drop those rows, or pass `sensitive_missing='group'` (a group of its own) or `sensitive_missing='drop'` "
    "(leave those rows out)"
)
#: the first bytes of every HDF5 file (the superblock signature at offset 0)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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
    sensitive_missing: str = "error",
    progress: bool = True,
) -> Path:
    """Write a cache from a table of features, label, sensitive attributes and split.

    Parameters
    ----------
    path : path
        ``.csv`` (UTF-8, comma-separated, read with pandas); ``.parquet``
        (needs pyarrow; a ``list<float>`` column is a block of feature
        columns); ``.npz`` (one array per column, 2-D arrays count as blocks of
        feature columns); a structured ``.npy``; or a folder of ``.npy`` files
        (one per column, 2-D allowed).
    label : str
        Binary label column (exactly two distinct values). Never a feature.
    sensitive : str or list of str
        Sensitive attribute column(s); values are encoded to codes with their
        category names.
    features : list of str, optional
        Feature columns, or vector columns (a Parquet list column, a 2-D
        array). Default: every numeric or boolean column not used as label,
        sensitive, split or id.
    split : str, optional
        Split column; without it rows are split 70/15/15 by a hash of the id.
    id_col : str, optional
        Unique id column; default the row number.
    out : path
        The cache to write. Never the input table, a folder, or a file that is
        not a cache (even with ``overwrite``).
    feature_dtype : {"float32", "float16"}
        Stored dtype; values it cannot hold (overflow, or a column entirely
        below its precision) are refused.
    overwrite : bool
        Replace an existing cache made from other data.
    sensitive_missing : {"error", "group", "drop"}, default "error"
        A missing sensitive value (empty, ``NA``, ``NaN``, ``?``, ...): refuse
        it, keep it as the group ``"(missing)"``, or leave its row out.
    progress : bool, default True
        Show a progress bar while a CSV is read, once that takes over
        :data:`PROGRESS_DELAY_S` seconds.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np, pandas as pd
    >>> from embedcache import import_table
    >>> tmp = tempfile.TemporaryDirectory(); folder = pathlib.Path(tmp.name)
    >>> rng = np.random.default_rng(0)
    >>> pd.DataFrame({"age": rng.integers(18, 80, 50), "hours": rng.integers(10, 60, 50),
    ...               "income": rng.choice(["<=50K", ">50K"], 50), "sex": rng.choice(["F", "M"], 50)}
    ...              ).to_csv(folder / "adult.csv", index=False)
    >>> import_table(folder / "adult.csv", label="income", sensitive=["sex"], out=folder / "adult.h5",
    ...              progress=False).name
    'adult.h5'
    >>> tmp.cleanup()
    """
    path, out = Path(path), Path(out)
    feature_dtype = check_feature_dtype(feature_dtype)
    sensitive = _check_import_options(path, out, sensitive=sensitive, sensitive_missing=sensitive_missing)
    columns, blocks, n = _read_table(path, progress=progress)
    if n == 0:
        raise DataError(MSG_EMPTY_TABLE.format(path=path))
    features = _feature_columns(path, columns, blocks, label=label, sensitive=sensitive, split=split, id_col=id_col,
                                features=features)
    rows = _kept_rows(columns, sensitive, n, sensitive_missing=sensitive_missing)
    matrix, names = _feature_matrix(columns, blocks, features, rows)
    table = _table_source(path, columns, rows, label=label, sensitive=sensitive, split=split, id_col=id_col,
                          sensitive_missing=sensitive_missing)
    stored = _cast_checked(matrix, names, rows, feature_dtype)
    identity, description = _provenance(path, table, names, stored, n_read=n, n_kept=len(rows), label=label,
                                        sensitive=sensitive, sensitive_missing=sensitive_missing, split=split,
                                        id_col=id_col, feature_dtype=feature_dtype)
    return _write_table_cache(out, table, stored, identity=identity, description=description, feature_columns=names,
                              overwrite=overwrite)


def _provenance(path: Path, table: TableSource, names: list[str], stored: np.ndarray, *, n_read: int, n_kept: int,
                label, sensitive, sensitive_missing, split, id_col, feature_dtype) -> tuple[dict, dict]:
    """The cache's identity (the table's sha256 stands for the backbone's weights) and the description
    of the source it records."""
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
        n_rows=n_kept,
        compute="none",
    )
    description = {
        "kind": "table",
        "path": str(path.resolve()),
        "sha256": sha,
        "label": label,
        "sensitive": sensitive,
        "sensitive_missing": sensitive_missing,
        "split": split if split is not None else "hash(sample_id) 70/15/15",
        "id": id_col,
        "features": names if len(names) <= 64 else names[:64] + [f"... {len(names)} in all"],
        "rows": n_kept,
        "rows_dropped": int(n_read - n_kept),
    }
    return identity, description


def _check_import_options(path: Path, out: Path, *, sensitive, sensitive_missing: str) -> list[str]:
    """Refuse a bad ``sensitive_missing`` or output before the table is read; the sensitive columns as a list."""
    if sensitive_missing not in SENSITIVE_MISSING_CHOICES:
        raise DataError(MSG_BAD_SENSITIVE_MISSING.format(choices=", ".join(SENSITIVE_MISSING_CHOICES),
                                                         value=sensitive_missing))
    sensitive = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    try:
        _check_output(path, out)
    except OSError as err:  # a name too long, a parent that is a file, no permission to look
        raise CacheError(MSG_OUT_UNWRITABLE.format(out=out, error=one_line(err, with_type=True))) from err
    return sensitive


def _feature_columns(path: Path, columns, blocks, *, label, sensitive, split, id_col, features) -> list[str]:
    """Check that every named column exists (and the label, sensitive, split and id are plain columns);
    return the feature columns: those named, or every numeric column not used otherwise."""
    available = list(columns) + list(blocks)
    used = [label, *sensitive] + [c for c in (split, id_col) if c is not None]
    for name in used + list(features or []):
        if name not in columns and name not in blocks:
            close = difflib.get_close_matches(name, available, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(MSG_UNKNOWN_COLUMN.format(path=path, name=name, hint=hint, available=shown_names(available)))
    for role, name in [("label", label)] + [("sensitive attribute", s) for s in sensitive] + [
        ("split", split), ("id", id_col)
    ]:
        if name is not None and name in blocks:
            raise DataError(MSG_NOT_PLAIN_COLUMN.format(name=name, role=role))
    if features is None:
        features = [c for c in available if c not in used and (c in blocks or _is_numeric(columns[c]))]
        for name in available:  # never leave a column of vectors out silently
            if name not in used and name not in features and _vector_text(columns.get(name)) is not None:
                raise DataError(MSG_VECTOR_COLUMN_LEFT_OUT.format(name=name, value=_vector_text(columns[name])))
        if not features:
            raise DataError(MSG_NO_FEATURES.format(path=path))
    features = list(features)
    if label in features:
        raise DataError(MSG_LABEL_AS_FEATURE.format(name=label))
    twice = duplicate_names(features)
    if twice:
        raise DataError(MSG_FEATURE_TWICE.format(name=twice[0]))
    return features


def _kept_rows(columns, sensitive, n: int, *, sensitive_missing: str) -> np.ndarray:
    """The rows imported, as original row numbers (so that messages name the row of the file): all of
    them, or those with every sensitive value present (``sensitive_missing="drop"``)."""
    keep = np.ones(n, dtype=bool)
    if sensitive_missing == "drop":
        for name in sensitive:
            keep &= ~np.fromiter((is_missing(v) for v in columns[name]), dtype=bool, count=n)
    return np.flatnonzero(keep)


def _table_source(path: Path, columns, rows, *, label, sensitive, split, id_col, sensitive_missing) -> TableSource:
    """The kept rows' ids, label, sensitive attributes and splits, encoded as a cache stores them."""
    def kept(name):
        values = columns[name]
        return values[rows] if isinstance(values, np.ndarray) else [values[r] for r in rows]

    ids = [_id_text(v) for v in kept(id_col)] if id_col is not None else [str(r) for r in rows]
    label_codes, label_categories = encode_label(list(kept(label)), name=label)
    return TableSource(
        ids=ids,
        labels=label_codes,
        label_name=label,
        label_categories=label_categories,
        sensitive={
            name: encode_categorical(list(kept(name)), name=name, kind="sensitive",
                                     missing="group" if sensitive_missing == "group" else "error",
                                     fix=MISSING_SENSITIVE_FIX)
            for name in sensitive
        },
        splits=normalize_splits(list(kept(split)), name=split) if split is not None else hash_splits(ids),
        where=f"table '{path}'",
    )


def _write_table_cache(out: Path, table: TableSource, stored: np.ndarray, *, identity, description, feature_columns,
                       overwrite: bool) -> Path:
    """Write the cache under a lock, through a temporary file; keep an existing cache of the same data
    (unless ``overwrite``)."""
    try:
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
                feature_columns=feature_columns,
            )
            commit_file(tmp, out)
    except OSError as err:  # a read-only folder, a parent that is a file, a name too long
        raise CacheError(MSG_OUT_UNWRITABLE.format(out=out, error=one_line(err, with_type=True))) from err
    return out


def _check_output(path: Path, out: Path) -> None:
    """Refuse an ``out`` that would destroy something that is not a cache: the input, a folder, another file.

    An empty file (left by a crash) may be replaced; a file that does not start
    with the HDF5 signature is never replaced, with or without ``overwrite``.
    """
    suggestion = path.with_suffix(".h5") if path.suffix.lower() != ".h5" else path.with_name(path.stem + "-cache.h5")
    if out.is_dir():
        raise CacheError(MSG_OUT_IS_DIR.format(out=out, suggestion=out / (path.stem + ".h5")))
    if not out.exists():
        return
    if path.exists() and os.path.samefile(path, out):
        raise CacheError(MSG_OUT_IS_INPUT.format(out=out, suggestion=suggestion))
    if out.is_file() and out.stat().st_size > 0:
        with open(out, "rb") as fh:
            if fh.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise CacheError(MSG_OUT_NOT_CACHE.format(out=out))


def _id_text(value) -> str:
    """An id cell as text: 7.0 read from a float column is the id "7"."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return "" if is_missing(value) else str(value).strip()


def _cast_checked(matrix: np.ndarray, names: list[str], rows: np.ndarray, dtype: str) -> np.ndarray:
    """``matrix`` as ``dtype``, refusing values that dtype turns into inf (overflow) or into zeros (underflow).

    The float16 advice is right for the data: float32 is suggested only when the
    values fit in float32 (|x| <= 3.4e38); otherwise rescaling is.
    """
    with np.errstate(over="ignore", under="ignore"):  # both are reported below as DataErrors
        stored = matrix.astype(dtype)
    info = np.finfo(dtype)
    overflow = ~np.isfinite(stored)
    if overflow.any():
        row, col = map(int, np.argwhere(overflow)[0])
        fits_float32 = np.abs(matrix).max() <= np.finfo(np.float32).max
        fix = FLOAT32_FIX if dtype == "float16" and fits_float32 else RESCALE_FIX
        raise DataError(MSG_DTYPE_OVERFLOW.format(name=names[col], value=matrix[row, col], row=int(rows[row]),
                                                  dtype=dtype, limit=float(info.max), fix=fix))
    if matrix.size:
        largest = np.abs(matrix).max(axis=0)
        tiny = (largest > 0) & (largest < info.smallest_normal)
        if tiny.any():
            col = int(np.flatnonzero(tiny)[0])
            fix = FLOAT32_FIX if dtype == "float16" and largest[col] >= np.finfo(np.float32).smallest_normal else RESCALE_FIX
            raise DataError(MSG_DTYPE_UNDERFLOW.format(name=names[col], value=float(largest[col]), dtype=dtype,
                                                       tiny=float(info.smallest_normal), fix=fix))
    return stored


# --- reading -------------------------------------------------------------------------


def _read_table(path: Path, *, progress: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Return (1-D columns by name, 2-D feature blocks by name, row count)."""
    if not path.exists():
        raise DataError(MSG_MISSING_TABLE.format(path=path))
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(path.glob("*.npy"))}
            if not arrays:
                raise DataError(MSG_UNKNOWN_FORMAT.format(path=path))
            return _split_arrays(path, arrays)
        if suffix == ".csv":
            return _read_csv(path, progress=progress)
        if suffix in (".parquet", ".pq"):
            return _read_parquet(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _split_arrays(path, {k: npz[k] for k in npz.files})
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.dtype.names is None:
                raise DataError(MSG_STRUCTURED_NPY.format(path=path))
            return _split_arrays(path, {name: array[name] for name in array.dtype.names})
    except UnicodeDecodeError as err:
        raise DataError(MSG_NOT_UTF8.format(path=path, byte=hex(err.object[err.start]))) from err
    except DataError:
        raise
    except (OSError, ValueError, EOFError, csv.Error) as err:  # pandas' ParserError, pyarrow's ArrowInvalid: ValueErrors
        raise DataError(MSG_UNREADABLE_TABLE.format(path=path, error=one_line(err, with_type=True))) from err
    raise DataError(MSG_UNKNOWN_FORMAT.format(path=path))


def _split_arrays(path: Path, arrays: dict[str, np.ndarray]):
    columns, blocks = {}, {}
    n = None
    for name, array in arrays.items():
        if array.ndim not in (1, 2):
            raise DataError(MSG_RAGGED.format(path=path, name=name, got=array.shape, expected="1-D or 2-D"))
        n = len(array) if n is None else n
        if len(array) != n:
            raise DataError(MSG_RAGGED.format(path=path, name=name, got=len(array), expected=n))
        (blocks if array.ndim == 2 else columns)[name] = array
    return columns, blocks, int(n or 0)


def _csv_header(path: Path) -> list[str]:
    """The header's column names (stripped), refusing none, duplicates and another separator."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh), None)
    if not header or not any(h.strip() for h in header):
        raise DataError(MSG_NO_HEADER.format(path=path))
    header = [h.strip() for h in header]
    if len(header) == 1:
        for sep, word in ((";", "semicolon"), ("\t", "tab")):
            if sep in header[0]:
                raise DataError(MSG_OTHER_SEPARATOR.format(path=path, name=shown(header[0])[1:-1], sep=word))
    duplicate = duplicate_names(header)
    if duplicate:
        name, first, second = duplicate
        raise DataError(MSG_DUPLICATE_COLUMN.format(path=path, name=name, first=first, second=second))
    return header


def _check_field_counts(path: Path, width: int) -> None:
    """Refuse a line whose field count differs from the header's (pandas pads short lines silently).

    Without quotes a line's field count is its comma count plus one
    (``bytes.count``, at C speed, streaming); once a line holds a quote the
    csv module parses the file instead. Blank lines are skipped, as pandas
    skips them.
    """
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if b'"' in line:
                break
            if line.strip() and line.count(b",") != width - 1:
                raise DataError(MSG_RAGGED_LINE.format(path=path, line=number, got=line.count(b",") + 1, expected=width))
        else:
            return
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, strict=True)  # a broken quote is an error, not a merged field
        for row in reader:
            if row and any(field.strip() for field in row) and len(row) != width:
                raise DataError(MSG_RAGGED_LINE.format(path=path, line=reader.line_num, got=len(row), expected=width))


def _read_csv(path: Path, *, progress: bool = False):
    """Read a CSV with pandas' C parser; cells stay as written (no "NA" -> NaN guessing).

    ``keep_default_na=False`` keeps "NA", "NaN" and empty cells as text, so that
    a missing sensitive value is seen (and refused or mapped explicitly) rather
    than turned into a group or a NaN feature by the parser.
    """
    import pandas as pd

    header = _csv_header(path)
    _check_field_counts(path, len(header))
    parse_names = [name or f"(unnamed {k})" for k, name in enumerate(header, start=1)]  # pandas wants unique names
    chunks = []
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, delay=PROGRESS_DELAY_S,
                                       disable=not progress, desc=f"import {path.name}", leave=False) as bar:
        reader = pd.read_csv(fh, encoding="utf-8-sig", header=0, names=parse_names, index_col=False,
                             keep_default_na=False, skip_blank_lines=True, chunksize=CSV_CHUNK_ROWS,
                             low_memory=False)  # one dtype per chunk: mixed columns are refused below, not warned
        for chunk in reader:
            chunks.append(chunk)
            bar.update(fh.tell() - bar.n)
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=parse_names)
    columns = {}
    for position, (name, parse_name) in enumerate(zip(header, parse_names), start=1):
        series = frame[parse_name]
        if series.dtype.kind in "iufb":
            values = series.to_numpy()
        else:
            values = series.to_numpy(dtype=object)
        if not name:  # an unnamed column (a trailing comma): fine while empty, refused once it holds data
            filled = [k for k, v in enumerate(values) if not is_missing(v)]
            if filled:
                raise DataError(MSG_UNNAMED_COLUMN.format(path=path, position=position, value=shown(values[filled[0]]),
                                                          row=filled[0]))
            continue
        columns[name] = values
    return columns, {}, len(frame)


def _read_parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(MSG_NO_PYARROW) from err
    import pyarrow as pa

    duplicate = duplicate_names(pq.read_schema(path).names)  # before read_table, which fails on them
    if duplicate:
        name, first, second = duplicate
        raise DataError(MSG_DUPLICATE_COLUMN.format(path=path, name=name, first=first, second=second))
    table = pq.read_table(path)
    columns, blocks = {}, {}
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        kind = column.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
            blocks[name] = _list_block(path, name, column)
        elif pa.types.is_integer(kind) and column.null_count == 0:
            columns[name] = column.to_numpy()  # int64 as is: a large integer id stays exact
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
            columns[name] = values.astype(bool) if pa.types.is_boolean(kind) and column.null_count == 0 else values
        else:
            columns[name] = np.asarray(column.to_pylist(), dtype=object)
    return columns, blocks, table.num_rows


def _list_block(path: Path, name: str, column) -> np.ndarray:
    """A Parquet list column of numbers -> an (N, D) float64 block, refusing nulls and ragged vectors."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks()
    n = len(array)
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(MSG_NULL_VECTOR.format(path=path, name=name, row=row))
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False) if n else np.zeros(0, dtype=np.int64)
    if n and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise DataError(MSG_RAGGED_VECTOR.format(path=path, name=name, expected=int(lengths[0]),
                                                 got=int(lengths[row]), row=row))
    width = int(lengths[0]) if n else 0
    values = array.flatten()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise DataError(MSG_NOT_NUMERIC.format(name=name, value=f"elements of type {values.type}", row=0))
    if values.null_count:
        element = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(MSG_NULL_VECTOR.format(path=path, name=name, row=element // max(width, 1)))
    return values.cast(pa.float64()).to_numpy(zero_copy_only=False).reshape(n, width)


def _numbers(values) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64, and a mask of the cells that are not numbers (text that does not parse).

    Numbers, booleans and numeric text (" 2.5 ", "1e-3", "inf") parse; a missing
    cell (empty, "NA", None) becomes NaN and is *not* flagged here: callers
    tell "missing" and "not a number" apart.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iufb":
        return values.astype(np.float64), np.zeros(len(values), dtype=bool)
    import pandas as pd

    parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    failed = np.isnan(parsed)
    if failed.any():
        for k in np.flatnonzero(failed):
            # a missing cell or the number NaN (text "nan" included) is not "text that does not parse"
            failed[k] = not is_missing(values[k])
    return parsed, failed


MSG_NO_FEATURE_VALUES = ("feature column(s) {names} hold no values (empty vectors): a cache needs at least one "
                         "feature; pass `features` with columns that hold numbers")
MSG_VECTOR_COLUMN_LEFT_OUT = ("column {name!r} holds vectors written as text ({value}); a CSV cell is one number, so it "
                   "would be left out: write one column per dimension, store it as a Parquet list<float> column or "
                   "an .npz 2-D array, or pass `features` with the columns you want")
_VECTOR_TEXT = re.compile(r"^\s*[\[(]\s*[-+0-9.eEinfa]+(\s*[,; ]\s*[-+0-9.eEinfa]+)*\s*[\])]\s*$")


def _vector_text(values) -> str | None:
    """The first cell of a text column that reads as a vector (``"[1.0, 2.0]"``), else None."""
    if values is None or (isinstance(values, np.ndarray) and values.dtype.kind in "iufb"):
        return None
    for value in list(values)[:20]:
        if isinstance(value, str) and value.strip():
            return repr(value) if _VECTOR_TEXT.match(value) else None
    return None


def _is_numeric(values) -> bool:
    """A column is numeric when most of its non-missing cells are numbers.

    A mostly-numeric column with a stray text cell therefore counts as a
    feature column and is refused, naming the cell, instead of being dropped.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iufb":
        return True
    parsed, failed = _numbers(values)
    numbers = int((~np.isnan(parsed)).sum())
    return numbers > 0 and numbers >= int(failed.sum())


def _feature_matrix(columns, blocks, names: list[str], rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The (len(rows), D) float64 matrix of the feature columns, refusing any cell that is not a finite number."""
    parts, out_names = [], []
    for name in names:
        if name in blocks:
            block = np.asarray(blocks[name])
            if block.dtype.kind not in "iufb":
                raise DataError(MSG_NOT_NUMERIC.format(name=name, value=f"dtype {block.dtype}", row=0))
            block = block[rows].astype(np.float64)
            _check_finite(block, [f"{name}[{j}]" for j in range(block.shape[1])], rows)
            parts.append(block)
            out_names += [f"{name}[{j}]" for j in range(block.shape[1])]
            continue
        values = columns[name]
        values = values[rows] if isinstance(values, np.ndarray) else [values[r] for r in rows]
        column, failed = _numbers(values)
        if failed.any():
            k = int(np.flatnonzero(failed)[0])
            text = str(values[k]).strip()
            template = MSG_VECTOR_TEXT if text[:1] in "[(" and ("," in text or " " in text) else MSG_NOT_NUMERIC
            raise DataError(template.format(name=name, value=shown(values[k]), row=int(rows[k])))
        for k in np.flatnonzero(np.isnan(column)):  # only NaN cells can be missing ones
            if _is_missing_cell(values[k]):
                raise DataError(MSG_MISSING_FEATURE.format(name=name, value=shown(values[k]), row=int(rows[k])))
            break  # the first NaN is a number NaN: reported as non-finite below
        _check_finite(column[:, None], [name], rows)
        parts.append(column[:, None])
        out_names.append(name)
    matrix = np.concatenate(parts, axis=1) if parts else np.zeros((len(rows), 0))
    if matrix.shape[1] == 0:  # e.g. a vector column whose vectors are all empty: no feature to store
        raise DataError(MSG_NO_FEATURE_VALUES.format(names=", ".join(repr(n) for n in names)))
    return matrix, out_names


def _is_missing_cell(value) -> bool:
    """An empty cell or a missing-value marker ("NA", "?", None), as opposed to a number NaN (float or "nan")."""
    if value is None:
        return True
    return isinstance(value, str) and is_missing(value) and value.strip().lower() not in ("nan", "-nan", "+nan")


def _check_finite(block: np.ndarray, names: list[str], rows: np.ndarray) -> None:
    bad = ~np.isfinite(block)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(MSG_NON_FINITE.format(name=names[col], value=block[row, col], row=int(rows[row])))


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

