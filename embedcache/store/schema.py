"""Every key name of the embedcache HDF5 format, its version, and the checks on it.

The names are spelled here and nowhere else: the writer, the reader, the journal
and the importer all use these constants. ``docs/cache-format.md`` is the
human-readable spec of the same layout.

Layout (format 1.0)::

    /                     root attributes: format name and version, ``complete``,
                          provenance (backbone, weights, dataset fingerprint, ...)
    /features             (N, D) float32 or float16, chunked by rows
    /labels               (N,) int64 codes 0/1; attrs ``name``, ``categories``
    /sensitive/<name>     (N,) int64 codes; attr ``categories``
    /sample_id            (N,) UTF-8 strings, unique
    /split                (N,) int8 codes; attr ``categories`` (e.g. train/valid/test)
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from embedcache.errors import CacheError

# --- format identity -------------------------------------------------------
FORMAT_NAME_ATTR = "fairhead-format"
FORMAT_NAME = "embedcache"
FORMAT_VERSION_ATTR = "format-version"
#: the cache format version this fairhead writes (``format-version``); readers refuse a newer major
#: version (see docs/cache-format.md)
FORMAT_VERSION = "1.0"
#: the major versions this code reads; a reader refuses any other major
READABLE_MAJOR_VERSIONS = (1,)
COMPLETE_ATTR = "complete"

# --- provenance (root attributes) -------------------------------------------
N_ROWS_ATTR = "n-rows"
FEATURE_DIM_ATTR = "feature-dim"
FEATURE_DTYPE_ATTR = "feature-dtype"
BACKBONE_ARCH_ATTR = "backbone-arch"
BACKBONE_WEIGHTS_ATTR = "backbone-weights"
WEIGHTS_SHA256_ATTR = "backbone-weights-sha256"
PREPROCESSING_ATTR = "backbone-preprocessing"
FEATURE_NODE_ATTR = "backbone-feature-node"
COMPUTE_ATTR = "compute"
DATASET_FINGERPRINT_ATTR = "dataset-fingerprint"
SOURCE_ATTR = "source"  # JSON object: the source's describe()
LIBRARY_VERSIONS_ATTR = "library-versions"  # JSON object: package -> version
CREATED_ATTR = "created"  # ISO-8601 UTC; pinned by SOURCE_DATE_EPOCH
LABEL_NAME_ATTR = "label-name"

#: root attributes stored as JSON text (decoded to objects by the reader)
JSON_ATTRS = (SOURCE_ATTR, LIBRARY_VERSIONS_ATTR)

#: attributes that identify what a cache holds. Two runs whose identities differ
#: must never write into the same file (the order is the order errors report).
IDENTITY_ATTRS = (
    DATASET_FINGERPRINT_ATTR,
    BACKBONE_ARCH_ATTR,
    BACKBONE_WEIGHTS_ATTR,
    WEIGHTS_SHA256_ATTR,
    FEATURE_NODE_ATTR,
    PREPROCESSING_ATTR,
    COMPUTE_ATTR,
    FEATURE_DTYPE_ATTR,
    FEATURE_DIM_ATTR,
    N_ROWS_ATTR,
)

# --- datasets ---------------------------------------------------------------
FEATURES = "features"
FEATURE_COLUMNS_ATTR = "column-names"  # MAY: names of the feature columns (imports)
LABELS = "labels"
LABEL_NAME_DSET_ATTR = "name"
CATEGORIES_ATTR = "categories"
SENSITIVE_GROUP = "sensitive"
SAMPLE_ID = "sample_id"
SPLIT = "split"
#: a label has 2 to this many classes (codes 0 .. K-1); more values are a continuous column
MAX_LABEL_CLASSES = 100

#: rows per chunk of /features; (64, 1280) float32 is 320 KiB, inside h5py's
#: advised 10 KiB - 1 MiB band for the usual feature widths
CHUNK_ROWS = 64
FEATURE_DTYPES = ("float32", "float16")
LABEL_DTYPE = "int64"
CODE_DTYPE = "int64"
SPLIT_DTYPE = "int8"

# --- the extraction journal (a sibling folder of the cache while it is written)
JOURNAL_SUFFIX = ".partial"
JOURNAL_META = "meta.json"
JOURNAL_FEATURES = "features.bin"
JOURNAL_COMMITTED = "committed.json"
JOURNAL_COMMITTED_ROWS_KEY = "rows"
JOURNAL_BATCH_SIZE_KEY = "batch_size"
JOURNAL_INPUTS = "inputs.jsonl"
JOURNAL_TRASH_SUFFIX = ".partial-removing"
TMP_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"

# --- distributed extraction (sibling files of the cache while ranks write their shards)
#: ``x.h5`` -> ``x.h5.shard-00001-of-00004.h5``: a complete cache of one rank's rows
SHARD_NAME = "{name}.shard-{rank:05d}-of-{world:05d}.h5"
#: ``x.h5`` -> ``x.h5.shards.json``: the world size and row ranges every rank follows
SHARD_PLAN_SUFFIX = ".shards.json"

# --- messages -----------------------------------------------------------------
MSG_NEWER_VERSION = (
    "cache '{path}' has format version {found}, newer than this fairhead reads "
    "(major {readable}); upgrade fairhead"
)
MSG_BAD_VERSION = "cache '{path}' has an unreadable format version {found!r}; rebuild it with `fairhead extract`"
MSG_NOT_EMBEDCACHE = (
    "'{path}' is an HDF5 file but not an embedcache cache (attribute {attr!r} is {found!r}); "
    "pass a file written by `fairhead extract` or `fairhead import`"
)
MSG_MISMATCH = (
    "{what} '{path}' was built from {field} {found} but this run uses {expected}; "
    "use another `out` or pass `overwrite=True`"
)
IDENTITY_LABELS = {
    DATASET_FINGERPRINT_ATTR: "dataset fingerprint",
    BACKBONE_ARCH_ATTR: "backbone",
    BACKBONE_WEIGHTS_ATTR: "weights",
    WEIGHTS_SHA256_ATTR: "weights sha256",
    FEATURE_NODE_ATTR: "feature node",
    PREPROCESSING_ATTR: "preprocessing",
    COMPUTE_ATTR: "compute",
    FEATURE_DTYPE_ATTR: "feature dtype",
    FEATURE_DIM_ATTR: "feature dim",
    N_ROWS_ATTR: "row count",
}


def journal_path(cache_path) -> Any:
    """The journal folder of ``cache_path`` (``x.h5`` -> ``x.h5.partial``)."""
    return cache_path.with_name(cache_path.name + JOURNAL_SUFFIX)


def journal_trash_path(cache_path) -> Any:
    """Where a journal is moved, atomically, before it is deleted (``x.h5`` -> ``x.h5.partial-removing``)."""
    return cache_path.with_name(cache_path.name + JOURNAL_TRASH_SUFFIX)


def tmp_path(cache_path) -> Any:
    """Where the finished HDF5 is built before its atomic rename."""
    return cache_path.with_name(cache_path.name + TMP_SUFFIX)


def lock_path(cache_path) -> Any:
    """The lock file that makes one writer per cache exclusive."""
    return cache_path.with_name(cache_path.name + LOCK_SUFFIX)


def shard_path(cache_path, rank: int, world_size: int) -> Any:
    """The shard file rank ``rank`` of ``world_size`` writes for ``cache_path``."""
    return cache_path.with_name(SHARD_NAME.format(name=cache_path.name, rank=int(rank), world=int(world_size)))


def shard_plan_path(cache_path) -> Any:
    """The shard plan of a distributed extraction into ``cache_path``."""
    return cache_path.with_name(cache_path.name + SHARD_PLAN_SUFFIX)


def check_format_version(found: Any, path) -> None:
    """Raise :class:`CacheError` unless ``found`` is a version this code reads."""
    text = decode_attr(found)
    try:
        major = int(str(text).split(".", 1)[0])
    except ValueError as err:
        raise CacheError(MSG_BAD_VERSION.format(path=path, found=text)) from err
    if major not in READABLE_MAJOR_VERSIONS:
        if major > max(READABLE_MAJOR_VERSIONS):
            readable = "/".join(str(m) for m in READABLE_MAJOR_VERSIONS)
            raise CacheError(MSG_NEWER_VERSION.format(path=path, found=text, readable=readable))
        raise CacheError(MSG_BAD_VERSION.format(path=path, found=text))


def decode_attr(value: Any) -> Any:
    """h5py returns str or bytes or numpy scalars; give back plain Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    if hasattr(value, "tolist"):
        return [decode_attr(v) for v in value.tolist()]
    return value


def identity_of(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The identity subset of root attributes (or of a journal's meta), as plain values."""
    return {key: decode_attr(attrs[key]) if key in attrs else None for key in IDENTITY_ATTRS}


def _describe(identity: Mapping[str, Any], key: str) -> str:
    value = identity.get(key)
    if key == BACKBONE_ARCH_ATTR:  # the pair reads best: resnet18/none
        return f"{value}/{identity.get(BACKBONE_WEIGHTS_ATTR)}"
    if key in (DATASET_FINGERPRINT_ATTR, WEIGHTS_SHA256_ATTR) and isinstance(value, str):
        return value[:12]
    return str(value)


def identity_mismatch(found: Mapping[str, Any], expected: Mapping[str, Any], *, path, what: str = "cache") -> str | None:
    """Return a one-line message naming the first identity field that differs, or None."""
    for key in IDENTITY_ATTRS:
        if found.get(key) != expected.get(key):
            field = IDENTITY_LABELS[key]
            if key == BACKBONE_WEIGHTS_ATTR:
                field, key = IDENTITY_LABELS[BACKBONE_ARCH_ATTR], BACKBONE_ARCH_ATTR
            return MSG_MISMATCH.format(
                what=what,
                path=path,
                field=field,
                found=_describe(found, key),
                expected=_describe(expected, key),
            )
    return None


def dumps_json(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
