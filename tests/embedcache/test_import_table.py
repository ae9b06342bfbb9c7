"""import_table: CSV, Parquet and numpy arrays become the same cache format."""

from __future__ import annotations

import numpy as np
import pytest

import embedcache
from embedcache import CacheError, DataError, import_table

#: float32 storage of float64 inputs
FLOAT32_RTOL = 1e-6

N = 40


def adult_like(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "age": rng.integers(18, 80, N),
        "hours": rng.normal(40, 8, N).round(2),
        "capital_gain": rng.exponential(1000, N).round(1),
        "sex": np.where(rng.random(N) < 0.4, "Female", "Male"),
        "income": np.where(rng.random(N) < 0.3, ">50K", "<=50K"),
        "split": np.asarray(["train"] * 30 + ["test"] * 10),
        "person": np.asarray([f"p{i:03d}" for i in range(N)]),
    }


def write_csv(path, columns):
    names = list(columns)
    lines = [",".join(names)] + [",".join(str(columns[c][i]) for c in names) for i in range(N)]
    path.write_text("\n".join(lines) + "\n")
    return path


def check_cache(out, columns):
    with embedcache.open(out) as cache:
        data = cache.load()
        assert cache.provenance["backbone-arch"] == "imported"
        assert cache.feature_columns == ["age", "hours", "capital_gain"]
        assert cache.label_categories == ["<=50K", ">50K"] and cache.categories("sex") == ["Female", "Male"]
        assert cache.splits == ["train", "test"]
    expected = np.stack([columns["age"], columns["hours"], columns["capital_gain"]], axis=1)
    np.testing.assert_allclose(data.features, expected, rtol=FLOAT32_RTOL)
    assert data.labels.tolist() == (columns["income"] == ">50K").astype(int).tolist()
    assert data.sensitive["sex"].tolist() == (columns["sex"] == "Male").astype(int).tolist()
    assert data.sample_ids.tolist() == columns["person"].tolist()


def test_csv_round_trip_with_default_features(tmp_path):
    columns = adult_like()
    path = write_csv(tmp_path / "adult.csv", columns)
    out = import_table(path, label="income", sensitive=["sex"], split="split", id_col="person", out=tmp_path / "a.h5")
    check_cache(out, columns)
    # the same import again is a no-op; another table is refused
    before = out.stat().st_mtime_ns
    import_table(path, label="income", sensitive="sex", split="split", id_col="person", out=out)
    assert out.stat().st_mtime_ns == before
    other = write_csv(tmp_path / "other.csv", adult_like(seed=1))
    with pytest.raises(CacheError, match="was built from"):
        import_table(other, label="income", sensitive="sex", split="split", id_col="person", out=out)


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns = adult_like()
    path = tmp_path / "adult.parquet"
    pq.write_table(pa.table({k: list(v.tolist()) for k, v in columns.items()}), path)
    out = import_table(path, label="income", sensitive=["sex"], split="split", id_col="person", out=tmp_path / "p.h5")
    check_cache(out, columns)


def test_npz_with_a_feature_block(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(N, 5)).astype(np.float32)
    y = rng.integers(0, 2, N)
    g = np.arange(N) % 3
    np.savez(tmp_path / "emb.npz", embedding=emb, y=y, group=g)
    out = import_table(tmp_path / "emb.npz", label="y", sensitive="group", out=tmp_path / "e.h5",
                       feature_dtype="float16")
    with embedcache.open(out) as cache:
        data = cache.load()
        assert cache.feature_columns == [f"embedding[{j}]" for j in range(5)]
        assert cache.feature_dtype == "float16" and cache.categories("group") == ["0", "1", "2"]
        assert set(cache.splits) <= {"train", "valid", "test"}  # hashed split without a split column
    np.testing.assert_allclose(data.features, emb, rtol=1e-3)
    assert data.labels.tolist() == y.tolist()


def test_npy_folder(tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    rng = np.random.default_rng(1)
    np.save(folder / "x.npy", rng.normal(size=(N, 3)))
    np.save(folder / "label.npy", np.arange(N) % 2)
    np.save(folder / "sex.npy", (np.arange(N) // 7) % 2)
    out = import_table(folder, label="label", sensitive="sex", out=tmp_path / "n.h5")
    with embedcache.open(out) as cache:
        assert cache.feature_dim == 3 and cache.n_rows == N


@pytest.mark.parametrize(
    "edit, kwargs, match",
    [
        (lambda c: c.update(income=np.asarray(["a", "b", "c", "d"] * 10)), {}, "4 distinct values"),
        (lambda c: c.update(sex=np.asarray(["Male"] * N)), {}, "has only 1 value"),
        (lambda c: None, {"label": "salary"}, "no column 'salary'"),
        (lambda c: None, {"features": ["age", "sex"]}, "feature column 'sex' is not numeric"),
        (lambda c: c.update(hours=np.asarray(["nan"] + ["1"] * (N - 1))), {"features": ["hours"]}, "non-finite"),
        (lambda c: c.update(person=np.asarray(["same"] * N)), {}, "duplicate sample ids"),
    ],
    ids=["multiclass", "one-group", "unknown-col", "text-feature", "nan-feature", "dup-ids"],
)
def test_bad_tables(tmp_path, edit, kwargs, match):
    columns = adult_like()
    edit(columns)
    path = write_csv(tmp_path / "t.csv", columns)
    args = {"label": "income", "sensitive": ["sex"], "split": "split", "id_col": "person", **kwargs}
    with pytest.raises(DataError, match=match) as err:
        import_table(path, out=tmp_path / "t.h5", **args)
    assert "\n" not in str(err.value) and not (tmp_path / "t.h5").exists()


def test_missing_and_unknown_tables(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_table(tmp_path / "nope.csv", label="y", sensitive="g", out=tmp_path / "x.h5")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        import_table(tmp_path / "t.xlsx", label="y", sensitive="g", out=tmp_path / "x.h5")
