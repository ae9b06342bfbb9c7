"""Check an open cache file against ``docs/cache-format.md`` before anything reads it.

A cache that was edited by hand (or written by another tool) must either pass
every rule below or be refused with one line naming the first rule it breaks:
a reader that trusts a malformed file either crashes deep inside numpy or,
worse, returns a silently wrong table (a row dropped, a group added).

Rules, in the order they are checked:

* root attributes: ``complete`` a boolean true (a string ``"false"`` is not
  true); ``n-rows`` and ``feature-dim`` integers >= 1; every other required
  attribute a string; ``source`` and ``library-versions`` JSON objects;
* every dataset is stored in this file (no soft or external links, no virtual
  or external storage) and is a dataset, ``/sensitive`` a group of datasets;
  the one exception is ``/features`` of a distributed ``--no-merge`` view: a
  virtual dataset over the ``/features`` of shard caches in the same folder,
  every one of which must exist (HDF5 reads a missing source as fill values,
  which would be silently wrong features);
* ``/features`` 2-D float32/float16 of shape (n-rows, feature-dim), its dtype
  equal to ``feature-dtype``, its optional ``column-names`` one string per column;
* ``/labels`` 1-D integer codes in {0, 1} with 2 category names and a name;
* each ``/sensitive/<name>`` and ``/split``: 1-D integer codes in
  ``[0, len(categories))``, categories unique strings;
* ``/sample_id`` 1-D strings, unique.

Reading the codes and ids costs O(N) small reads (no features are read).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from embedcache.errors import CacheError, one_line
from embedcache.store import schema

REBUILD = "rebuild it with the `fairhead extract` or `fairhead import` command that wrote it"
MSG_MALFORMED = "cache '{path}' is malformed: {problem}; " + REBUILD
MISSING_ATTR_PROBLEM = "{where}attribute {key!r} is missing"
MISSING_MEMBER_PROBLEM = "{key!r} is missing"
LINK_PROBLEM = "{key!r} is a {kind} link, but a cache must hold its data itself"
NOT_KIND_PROBLEM = "{key!r} is a {found}, not a {expected}"
STORAGE_PROBLEM = "{key!r} keeps its data outside the file ({how})"
NOT_INT_ATTR_PROBLEM = "root attribute {key!r} is {value!r}, not a positive integer"
NOT_STR_ATTR_PROBLEM = "{where}attribute {key!r} is {value!r}, not a string"
NOT_JSON_PROBLEM = "root attribute {key!r} is not a JSON object ({error})"
COMPLETE_NOT_BOOL_PROBLEM = "root attribute 'complete' is {value!r}, not the boolean true"
SHAPE_PROBLEM = "{key!r} has shape {shape}, expected {expected}"
ROWS_PROBLEM = "it has {key!r} with {got} rows but n-rows is {n}"
DTYPE_PROBLEM = "{key!r} has dtype {dtype}, expected {expected}"
CATEGORIES_PROBLEM = "{key!r} has categories {found!r}; {rule}"
CODE_RANGE_PROBLEM = "{key!r} holds code {code} at row {row}, outside 0..{top} (its {count} categories)"
DUPLICATE_IDS_PROBLEM = "'sample_id' has {count} duplicate ids (first: {first!r})"
NO_SENSITIVE_PROBLEM = "'sensitive' holds no attribute"
VIEW_SOURCE_PROBLEM = "{key!r} reads {what} from '{source}'"
MSG_SHARD_MISSING = (
    "cache '{path}' is a view over shard files (`merge=False`) and its shard '{shard}' is missing; "
    "restore it, or rerun the same torchrun `fairhead extract` command to rebuild it"
)

#: root attributes every cache has (format name and version are checked by the reader first)
REQUIRED_STR_ATTRS = (
    schema.FEATURE_DTYPE_ATTR,
    schema.BACKBONE_ARCH_ATTR,
    schema.BACKBONE_WEIGHTS_ATTR,
    schema.WEIGHTS_SHA256_ATTR,
    schema.PREPROCESSING_ATTR,
    schema.FEATURE_NODE_ATTR,
    schema.COMPUTE_ATTR,
    schema.DATASET_FINGERPRINT_ATTR,
    schema.LABEL_NAME_ATTR,
    schema.CREATED_ATTR,
)
REQUIRED_INT_ATTRS = (schema.N_ROWS_ATTR, schema.FEATURE_DIM_ATTR)


def check_complete(attrs, path) -> bool:
    """True if ``complete`` is the boolean true; False if it is false or missing; raise if malformed.

    h5py stores a Python bool as an HDF5 enum that reads back as ``numpy.bool_``;
    writers in other languages may store 0/1. A string (``"false"`` is truthy
    in Python) is refused rather than guessed at.
    """
    if schema.COMPLETE_ATTR not in attrs:
        return False
    value = attrs[schema.COMPLETE_ATTR]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise CacheError(_malformed(path, COMPLETE_NOT_BOOL_PROBLEM.format(value=schema.decode_attr(value))))


def check_cache(f: h5py.File, path) -> int:
    """Raise :class:`CacheError` unless ``f`` follows the format; return N (``n-rows``)."""
    attrs = f.attrs
    for key in REQUIRED_INT_ATTRS:
        _int_attr(attrs, key, path)
    for key in REQUIRED_STR_ATTRS:
        _str_attr(attrs, key, path)
    for key in schema.JSON_ATTRS:
        text = _str_attr(attrs, key, path)
        try:
            value = json.loads(text)
        except ValueError as err:
            raise CacheError(_malformed(path, NOT_JSON_PROBLEM.format(key=key, error=one_line(err)))) from err
        if not isinstance(value, dict):
            raise CacheError(_malformed(path, NOT_JSON_PROBLEM.format(key=key, error=f"a {type(value).__name__}")))
    n = _int_attr(attrs, schema.N_ROWS_ATTR, path)
    d = _int_attr(attrs, schema.FEATURE_DIM_ATTR, path)

    features = _dataset(f, schema.FEATURES, path, virtual_ok=True)
    if features.is_virtual:
        _check_view_sources(features, path)
    labels = _dataset(f, schema.LABELS, path)
    split = _dataset(f, schema.SPLIT, path)
    ids = _dataset(f, schema.SAMPLE_ID, path)
    group = _member(f, schema.SENSITIVE_GROUP, path)
    if not isinstance(group, h5py.Group):
        raise CacheError(_malformed(path, NOT_KIND_PROBLEM.format(key=schema.SENSITIVE_GROUP, found=_kind(group), expected="group")))
    sensitive = {f"{schema.SENSITIVE_GROUP}/{name}": _dataset(group, name, path, key=f"{schema.SENSITIVE_GROUP}/{name}")
                 for name in group.keys()}
    if not sensitive:
        raise CacheError(_malformed(path, NO_SENSITIVE_PROBLEM))

    # shapes first: a dataset of the wrong length is the likeliest damage, name it before its attributes
    if features.ndim == 2 and features.shape[1] == d and features.shape[0] != n:
        raise CacheError(_malformed(path, ROWS_PROBLEM.format(key=schema.FEATURES, got=features.shape[0], n=n)))
    if features.ndim != 2 or tuple(features.shape) != (n, d):
        raise CacheError(_malformed(path, SHAPE_PROBLEM.format(key=schema.FEATURES, shape=features.shape, expected=(n, d))))
    for key, dset in [(schema.LABELS, labels), (schema.SPLIT, split), (schema.SAMPLE_ID, ids), *sensitive.items()]:
        _rows(dset, key, n, path)

    if schema.FEATURE_COLUMNS_ATTR in features.attrs:  # MAY: imported tables name their columns
        names = schema.decode_attr(features.attrs[schema.FEATURE_COLUMNS_ATTR])
        if not isinstance(names, list) or len(names) != d or not all(isinstance(c, str) for c in names):
            raise CacheError(_malformed(path, CATEGORIES_PROBLEM.format(
                key=f"{schema.FEATURES}/@{schema.FEATURE_COLUMNS_ATTR}", found=names if not isinstance(names, list)
                else names[:5], rule=f"expected {d} strings, one per feature")))
    declared = _str_attr(attrs, schema.FEATURE_DTYPE_ATTR, path)
    if features.dtype.name not in schema.FEATURE_DTYPES or features.dtype.name != declared:
        expected = f"{declared} (feature-dtype), one of {', '.join(schema.FEATURE_DTYPES)}"
        raise CacheError(_malformed(path, DTYPE_PROBLEM.format(key=schema.FEATURES, dtype=features.dtype, expected=expected)))

    _str_attr(labels.attrs, schema.LABEL_NAME_DSET_ATTR, path, where=schema.LABELS)
    label_names = _categories(labels, schema.LABELS, path)
    if not 2 <= len(label_names) <= schema.MAX_LABEL_CLASSES:
        raise CacheError(_malformed(path, CATEGORIES_PROBLEM.format(
            key=schema.LABELS, found=label_names[:5],
            rule=f"a label needs 2 to {schema.MAX_LABEL_CLASSES} classes")))
    _codes(labels, schema.LABELS, n, len(label_names), path)
    for key, dset in sensitive.items():
        _codes(dset, key, n, len(_categories(dset, key, path)), path)
    _codes(split, schema.SPLIT, n, len(_categories(split, schema.SPLIT, path)), path)

    if h5py.check_string_dtype(ids.dtype) is None:
        raise CacheError(_malformed(path, DTYPE_PROBLEM.format(key=schema.SAMPLE_ID, dtype=ids.dtype, expected="UTF-8 strings")))
    values = ids.asstr()[()].astype(object)
    unique, counts = np.unique(values.astype(str), return_counts=True)
    if len(unique) != n:
        dup = unique[counts > 1]
        raise CacheError(_malformed(path, DUPLICATE_IDS_PROBLEM.format(count=len(dup), first=str(dup[0]))))
    return n


# --- pieces -------------------------------------------------------------------------
def _malformed(path, problem: str) -> str:
    return MSG_MALFORMED.format(path=path, problem=problem)


def _kind(obj) -> str:
    return "group" if isinstance(obj, h5py.Group) else "dataset" if isinstance(obj, h5py.Dataset) else type(obj).__name__


def _member(group: h5py.Group, name: str, path, *, key: str | None = None):
    """``group[name]``, refusing links (an external link would open another file) and absent members."""
    key = key or name
    link = group.get(name, getlink=True)
    if link is None:
        raise CacheError(_malformed(path, MISSING_MEMBER_PROBLEM.format(key=key)))
    if isinstance(link, h5py.ExternalLink):
        raise CacheError(_malformed(path, LINK_PROBLEM.format(key=key, kind="external")))
    if isinstance(link, h5py.SoftLink):
        raise CacheError(_malformed(path, LINK_PROBLEM.format(key=key, kind="soft")))
    return group[name]


def _dataset(group: h5py.Group, name: str, path, *, key: str | None = None, virtual_ok: bool = False) -> h5py.Dataset:
    key = key or name
    obj = _member(group, name, path, key=key)
    if not isinstance(obj, h5py.Dataset):
        raise CacheError(_malformed(path, NOT_KIND_PROBLEM.format(key=key, found=_kind(obj), expected="dataset")))
    if obj.is_virtual and not virtual_ok:
        raise CacheError(_malformed(path, STORAGE_PROBLEM.format(key=key, how="a virtual dataset")))
    if obj.external:
        raise CacheError(_malformed(path, STORAGE_PROBLEM.format(key=key, how="external raw files")))
    return obj


def _check_view_sources(features: h5py.Dataset, path) -> None:
    """Every source of a virtual ``/features`` is the ``/features`` of an existing file beside the cache.

    HDF5 resolves a relative source name against the folder of the virtual
    file, so the view and its shards move together.
    """
    folder = Path(path).parent
    for source in features.virtual_sources():
        dset = source.dset_name.lstrip("/")
        if source.file_name == "." or Path(source.file_name).is_absolute() or dset != schema.FEATURES:
            problem = VIEW_SOURCE_PROBLEM.format(key=schema.FEATURES, what=f"{dset!r}", source=source.file_name)
            raise CacheError(_malformed(path, problem))
        if not (folder / source.file_name).is_file():
            raise CacheError(MSG_SHARD_MISSING.format(path=path, shard=folder / source.file_name))


def _int_attr(attrs, key: str, path) -> int:
    if key not in attrs:
        raise CacheError(_malformed(path, MISSING_ATTR_PROBLEM.format(where="root ", key=key)))
    value = schema.decode_attr(attrs[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CacheError(_malformed(path, NOT_INT_ATTR_PROBLEM.format(key=key, value=value)))
    return value


def _str_attr(attrs, key: str, path, *, where: str | None = None) -> str:
    prefix = "root " if where is None else f"{where!r}'s "
    if key not in attrs:
        raise CacheError(_malformed(path, MISSING_ATTR_PROBLEM.format(where=prefix, key=key)))
    value = schema.decode_attr(attrs[key])
    if not isinstance(value, str):
        raise CacheError(_malformed(path, NOT_STR_ATTR_PROBLEM.format(where=prefix, key=key, value=value)))
    return value


def _categories(dset: h5py.Dataset, key: str, path) -> list[str]:
    if schema.CATEGORIES_ATTR not in dset.attrs:
        raise CacheError(_malformed(path, MISSING_ATTR_PROBLEM.format(where=f"{key!r}'s ", key=schema.CATEGORIES_ATTR)))
    found = schema.decode_attr(dset.attrs[schema.CATEGORIES_ATTR])
    if not isinstance(found, list) or not found or not all(isinstance(c, str) for c in found):
        raise CacheError(_malformed(path, CATEGORIES_PROBLEM.format(key=key, found=found, rule="expected a list of strings")))
    if len(set(found)) != len(found):
        raise CacheError(_malformed(path, CATEGORIES_PROBLEM.format(key=key, found=found, rule="names must be unique")))
    return found


def _rows(dset: h5py.Dataset, key: str, n: int, path) -> None:
    if dset.ndim == 1 and dset.shape[0] != n:
        raise CacheError(_malformed(path, ROWS_PROBLEM.format(key=key, got=dset.shape[0], n=n)))
    if dset.ndim != 1:
        raise CacheError(_malformed(path, SHAPE_PROBLEM.format(key=key, shape=dset.shape, expected=(n,))))


def _codes(dset: h5py.Dataset, key: str, n: int, count: int, path) -> None:
    """1-D integer codes, one per row, each naming one of ``count`` categories."""
    if dset.dtype.kind not in "iu":
        raise CacheError(_malformed(path, DTYPE_PROBLEM.format(key=key, dtype=dset.dtype, expected="integer codes")))
    codes = dset[()]
    bad = np.flatnonzero((codes < 0) | (codes >= count))
    if len(bad):
        row = int(bad[0])
        raise CacheError(_malformed(path, CODE_RANGE_PROBLEM.format(
            key=key, code=int(codes[row]), row=row, top=count - 1, count=count)))
