"""The HDF5 format: round trips, partial reads, count tables and every refusal of the reader."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import embedcache
from embedcache import CacheError, DataError
from embedcache.store import schema
from embedcache.store.reader import read_rows
from embedcache.store.writer import CacheTable, identity_attrs, write_cache

#: float16 storage rounds to 11 significant bits
FLOAT16_RTOL = 1e-3


def make_table(n: int = 10) -> CacheTable:
    return CacheTable(
        sample_ids=np.asarray([f"s{i}" for i in range(n)], dtype=object),
        labels=np.asarray([i % 2 for i in range(n)], dtype=np.int64),
        label_name="y",
        label_categories=("neg", "pos"),
        sensitive={
            "sex": (np.asarray([i % 3 == 0 for i in range(n)], dtype=np.int64), ("female", "male")),
            "age": (np.asarray([i // 5 for i in range(n)], dtype=np.int64), ("young", "old")),
        },
        splits=np.asarray(["train", "test"] * (n // 2), dtype=object),
    )


def write_small(path, n: int = 10, d: int = 4, dtype: str = "float32", **identity_overrides):
    features = np.arange(n * d, dtype=np.float64).reshape(n, d) / 7.0
    identity = identity_attrs(
        backbone={"arch": "toy", "weights": "none", "weights_sha256": "", "feature_node": "x", "preprocessing": "p"},
        dataset_fingerprint="f" * 64,
        feature_dtype=dtype,
        feature_dim=d,
        n_rows=n,
        compute="cpu",
    )
    identity.update(identity_overrides)
    write_cache(path, table=make_table(n), features=features, identity=identity, source_description={"kind": "toy"})
    return features


def test_round_trip_with_h5py_alone(tmp_path):
    path = tmp_path / "c.h5"
    features = write_small(path)
    with h5py.File(path, "r") as f:  # the spec in docs/cache-format.md, read with h5py only
        assert f.attrs["fairhead-format"] == "embedcache" and f.attrs["format-version"] == "1.0"
        assert bool(f.attrs["complete"]) and f.attrs["n-rows"] == 10
        assert f["features"].chunks == (10, 4) and f["features"].dtype == np.float32
        assert list(f["labels"].attrs["categories"]) == ["neg", "pos"]
        assert list(f["sensitive/sex"].attrs["categories"]) == ["female", "male"]
        assert f["sample_id"].asstr()[3] == "s3"
        assert list(f["split"].attrs["categories"]) == ["train", "test"]
    with embedcache.open(path) as cache:
        data = cache.load()
        np.testing.assert_array_equal(data.features, features.astype(np.float32))
        assert cache.splits == ["train", "test"] and cache.label_name == "y"
        assert cache.sensitive_names == ["age", "sex"] and cache.categories("age") == ["young", "old"]
        assert cache.provenance["source"] == {"kind": "toy"} and cache.fingerprint == "f" * 64
        assert data.sample_ids.tolist() == [f"s{i}" for i in range(10)]
        assert data.split.tolist() == ["train", "test"] * 5


def test_load_one_split_as_torch(tmp_path):
    path = tmp_path / "c.h5"
    features = write_small(path, dtype="float16")
    with embedcache.open(path) as cache:
        test = cache.load("test", sensitive="sex", as_="torch", dtype="float32")
    assert isinstance(test.features, torch.Tensor) and test.features.dtype == torch.float32
    np.testing.assert_allclose(test.features.numpy(), features[1::2], rtol=FLOAT16_RTOL)
    assert test.labels.tolist() == [1] * 5 and list(test.sensitive) == ["sex"]
    assert test.rows.tolist() == [1, 3, 5, 7, 9]


class RecordingDataset:
    """Wraps an h5py dataset and records which rows were read."""

    def __init__(self, dset):
        self.dset, self.read = dset, set()
        self.shape, self.dtype = dset.shape, dset.dtype

    def read_direct(self, out, source_sel, dest_sel):
        self.read.update(range(source_sel.start, source_sel.stop))
        self.dset.read_direct(out, source_sel, dest_sel)

    def __getitem__(self, sel):
        self.read.update(range(sel.start, sel.stop))
        return self.dset[sel]


@pytest.mark.parametrize("pattern", ["contiguous", "scattered", "empty"])
def test_read_rows_reads_only_what_is_asked(tmp_path, pattern):
    path = tmp_path / "big.h5"
    n = 20000
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(n * 3, dtype=np.float32).reshape(n, 3), chunks=(64, 3))
    rows = {
        "contiguous": np.arange(5000, 9000),
        "scattered": np.sort(np.random.default_rng(0).choice(np.arange(0, 8000), 300, replace=False)),
        "empty": np.arange(0),
    }[pattern]
    with h5py.File(path, "r") as f:
        spy = RecordingDataset(f["x"])
        got = read_rows(spy, rows)
        np.testing.assert_array_equal(got, f["x"][()][rows])
    assert not any(r >= 8000 and r not in set(rows.tolist()) and pattern == "contiguous" for r in spy.read)
    if len(rows):
        assert min(spy.read) >= rows[0] and max(spy.read) <= rows[-1]


def test_count_table(tmp_path):
    path = tmp_path / "c.h5"
    write_small(path)
    with embedcache.open(path) as cache:
        table = cache.count_table()
        data = cache.load()
    assert table.groups == ["age=young, sex=female", "age=young, sex=male", "age=old, sex=female", "age=old, sex=male"]
    assert table.counts.sum() == 10 and table.counts.shape == (2, 4, 2)
    i, j = table.splits.index("train"), table.groups.index("age=young, sex=male")
    expected = np.sum(
        (data.split == "train") & (data.sensitive["age"] == 0) & (data.sensitive["sex"] == 1) & (data.labels == 0)
    )
    assert table.counts[i, j, 0] == expected
    text = str(table)
    assert "y=neg" in text and "age=old, sex=male" in text and text.splitlines()[-1].split()[-1] == "10"
    assert len(table.rows()) == 16 and table.to_dict()["label_name"] == "y"


def test_files_are_byte_identical_with_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    write_small(tmp_path / "a.h5")
    write_small(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    with embedcache.open(tmp_path / "a.h5") as cache:
        assert cache.provenance["created"] == "2023-11-14T22:13:20Z"


def test_missing_split_names_the_available_ones(tmp_path):
    write_small(tmp_path / "c.h5")
    with embedcache.open(tmp_path / "c.h5") as cache:
        with pytest.raises(DataError, match="no split 'valid'; available splits: train, test"):
            cache.load("valid")
        with pytest.raises(DataError, match="no sensitive attribute 'race'"):
            cache.load(sensitive=["race"])


def edit_attrs(path, **attrs):
    with h5py.File(path, "r+") as f:
        for key, value in attrs.items():
            f.attrs[key.replace("_", "-")] = value


@pytest.mark.parametrize(
    "damage, match",
    [
        ("text-file", "is not an HDF5 file"),
        ("truncated", "truncated or corrupt"),
        ("incomplete", "marked incomplete"),
        ("newer", r"format version 2.0, newer than this fairhead reads \(major 1\); upgrade fairhead"),
        ("other-hdf5", "not an embedcache cache"),
        ("missing", "no cache at"),
        ("journal-only", r"is incomplete \(16 of 64 rows\); rerun the same `fairhead extract`"),
        ("journal-beside", "has an unfinished extraction"),
        ("short-dataset", "with 9 rows but n-rows is 10"),
    ],
)
def test_reader_refusals(tmp_path, damage, match):
    path = tmp_path / "c.h5"
    if damage != "missing":
        write_small(path)
    if damage == "text-file":
        path.write_text("split,label\n")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "incomplete":
        edit_attrs(path, complete=False)
    elif damage == "newer":
        edit_attrs(path, format_version="2.0")
    elif damage == "other-hdf5":
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2]
    elif damage in ("journal-only", "journal-beside"):
        from embedcache.store.journal import Journal

        journal = Journal(path)
        journal.start({"identity": {schema.N_ROWS_ATTR: 64}, "batch_size": 16})
        journal.open_for_append(row_bytes=16, committed=0)
        journal.append(np.zeros((16, 4), dtype=np.float32))
        journal.close()
        if damage == "journal-only":
            path.unlink()
    elif damage == "short-dataset":
        with h5py.File(path, "r+") as f:
            del f["labels"]
            f["labels"] = np.zeros(9, dtype=np.int64)
    with pytest.raises(CacheError, match=match) as err:
        embedcache.open(path)
    assert "\n" not in str(err.value)


def test_truncated_data_fails_cleanly_on_load(tmp_path):
    """A cut that keeps the header readable must fail on load, not return garbage."""
    path = tmp_path / "c.h5"
    write_small(path, n=4000, d=64)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(CacheError, match="truncated or corrupt"):
        with embedcache.open(path) as cache:
            cache.load()


def test_identity_mismatch_message_names_backbones():
    found = {schema.BACKBONE_ARCH_ATTR: "resnet18", schema.BACKBONE_WEIGHTS_ATTR: "none"}
    expected = {schema.BACKBONE_ARCH_ATTR: "efficientnet_lite0", schema.BACKBONE_WEIGHTS_ATTR: "imagenet"}
    message = schema.identity_mismatch(found, expected, path="x.h5")
    assert message == (
        "cache 'x.h5' was built from backbone resnet18/none but this run uses efficientnet_lite0/imagenet; "
        "use another `out` or pass `overwrite=True`"
    )
