"""Write a complete cache file in one go, then move it into place atomically.

The HDF5 library is not crash-safe (a killed writer can leave a file that does
not open), so a cache is never written in place: it is built as ``x.h5.tmp``,
marked ``complete``, flushed and fsynced, and only then renamed to ``x.h5``.
A reader therefore sees either the old file, or no file, or the new one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from embedcache.errors import CacheError
from embedcache.store import schema

#: rows copied per write of /features (a whole number of chunks)
WRITE_BLOCK_ROWS = schema.CHUNK_ROWS * 64
#: the split names that come first, in this order, in /split's categories
CANONICAL_SPLITS = ("train", "valid", "test")
LIBRARIES = ("fairhead", "torch", "torchvision", "h5py", "numpy", "pillow")

BAD_DTYPE_MSG = "feature dtype {dtype!r} is not supported; use one of {allowed}"
BAD_EPOCH_MSG = "SOURCE_DATE_EPOCH={value!r} is not an integer number of seconds; unset it or fix it"
WRITE_FAILED_MSG = "could not write cache '{path}' ({error}); check free disk space and permissions"


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
        raise CacheError(BAD_DTYPE_MSG.format(dtype=dtype, allowed=", ".join(schema.FEATURE_DTYPES)))
    return name


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
            raise CacheError(BAD_EPOCH_MSG.format(value=epoch)) from err
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
) -> Path:
    """Write a complete cache at ``path`` (normally a ``.tmp`` path) and fsync it.

    Parameters
    ----------
    path : path
        File to create (replaced if it exists).
    table : CacheTable
        Ids, labels, sensitive attributes and splits.
    features : array-like (N, D)
        Anything sliceable by rows (a numpy array or memmap of the journal).
    identity : mapping
        From :func:`identity_attrs`; also written as root attributes.
    source_description : mapping
        JSON-able provenance of the dataset.
    feature_columns : sequence of str, optional
        Names of the feature columns (imports from tables).

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
    split_codes, split_names = _split_codes(table.splits)
    text = h5py.string_dtype("utf-8")
    try:
        with h5py.File(path, "w", track_order=False) as f:
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
        fsync_path(path)
    except OSError as err:
        raise CacheError(WRITE_FAILED_MSG.format(path=path, error=err)) from err
    return path


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
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    commit_file(tmp, path)
