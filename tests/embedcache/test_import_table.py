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
        (lambda c: c.update(income=np.asarray(["0.5", "1.5", "2.5", "3"] * 10)), {}, "looks continuous"),
        (lambda c: c.update(sex=np.asarray(["Male"] * N)), {}, "has only 1 value"),
        (lambda c: None, {"label": "salary"}, "no column 'salary'"),
        (lambda c: None, {"features": ["age", "sex"]}, "feature column 'sex' is not numeric"),
        (lambda c: c.update(hours=np.asarray(["nan"] + ["1"] * (N - 1))), {"features": ["hours"]}, "non-finite"),
        (lambda c: c.update(person=np.asarray(["same"] * N)), {}, "duplicate sample ids"),
    ],
    ids=["continuous-label", "one-group", "unknown-col", "text-feature", "nan-feature", "dup-ids"],
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


# --------------------------------------------------------------------------- Parquet vector columns, progress
def _embedding_parquet(path, emb, *, vectors=None, list_type=None):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    n = len(emb)
    vectors = list(emb) if vectors is None else vectors
    table = pa.table({
        "emb": pa.array(vectors, type=list_type or pa.list_(pa.float32())),
        "y": np.arange(n) % 2,
        "site": np.asarray(["ab"[(i // 2) % 2] for i in range(n)]),
    })
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("list_kind", ["list", "large_list", "fixed_size_list"])
def test_parquet_list_column_is_a_feature_block(tmp_path, list_kind):
    pa = pytest.importorskip("pyarrow")
    emb = np.random.default_rng(0).normal(size=(N, 7)).astype(np.float32)
    list_type = {"list": pa.list_(pa.float32()), "large_list": pa.large_list(pa.float32()),
                 "fixed_size_list": pa.list_(pa.float32(), 7)}[list_kind]
    path = _embedding_parquet(tmp_path / "emb.parquet", emb, list_type=list_type)
    out = import_table(path, label="y", sensitive="site", features=["emb"], out=tmp_path / "e.h5", progress=False)
    with embedcache.open(out) as cache:
        data = cache.load()
        assert cache.feature_columns == [f"emb[{j}]" for j in range(7)]
    order = np.argsort(data.sample_ids.astype(int))
    np.testing.assert_array_equal(data.features[order], emb)  # float32 in, float32 out: exact
    # the default features find the vector column too
    again = import_table(path, label="y", sensitive="site", out=tmp_path / "d.h5", progress=False)
    with embedcache.open(again) as cache:
        assert cache.feature_dim == 7


@pytest.mark.parametrize(
    "edit, match",
    [(lambda v: v.__setitem__(5, v[5][:6]), r"vectors of length 7 and 6 \(row 5\)"),
     (lambda v: v.__setitem__(3, None), "missing vector or element at row 3"),
     (lambda v: v.__setitem__(8, [*v[8][:6], None]), "missing vector or element at row 8")],
    ids=["ragged", "null-vector", "null-element"],
)
def test_bad_parquet_vectors_are_refused(tmp_path, edit, match):
    emb = np.random.default_rng(0).normal(size=(N, 7)).astype(np.float32)
    vectors = [list(map(float, row)) for row in emb]
    edit(vectors)
    path = _embedding_parquet(tmp_path / "emb.parquet", emb, vectors=vectors)
    with pytest.raises(DataError, match=match) as err:
        import_table(path, label="y", sensitive="site", features=["emb"], out=tmp_path / "e.h5", progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "e.h5").exists()


def test_cli_features_col_imports_a_parquet_embedding(tmp_path, capsys):
    from fairhead.cli import main

    emb = np.random.default_rng(1).normal(size=(N, 4)).astype(np.float32)
    path = _embedding_parquet(tmp_path / "emb.parquet", emb)
    code = main(["import", str(path), "--label", "y", "--sensitive", "site", "--features-col", "emb",
                 "--no-progress", "--out", str(tmp_path / "e.h5")])
    assert code == 0, capsys.readouterr().err
    with embedcache.open(tmp_path / "e.h5") as cache:
        assert cache.feature_columns == [f"emb[{j}]" for j in range(4)]


def test_csv_import_shows_a_progress_bar_once_it_is_slow(tmp_path, monkeypatch, capsys):
    from embedcache import importer

    columns = adult_like()
    path = write_csv(tmp_path / "adult.csv", columns)
    monkeypatch.setattr(importer, "PROGRESS_DELAY_S", 0.0)  # "slow" from the start
    monkeypatch.setattr(importer, "CSV_CHUNK_ROWS", 10)
    import_table(path, label="income", sensitive=["sex"], split="split", id_col="person", out=tmp_path / "a.h5")
    assert "import adult.csv" in capsys.readouterr().err
    check_cache(tmp_path / "a.h5", columns)  # chunked reading gives the same cache
    import_table(path, label="income", sensitive=["sex"], split="split", id_col="person", out=tmp_path / "b.h5",
                 progress=False)
    assert "import adult.csv" not in capsys.readouterr().err


def test_cli_sensitive_missing_maps_na_explicitly(tmp_path, capsys):
    from fairhead.cli import main

    columns = adult_like()
    columns["sex"] = columns["sex"].astype(object)
    columns["sex"][[3, 11]] = "NA"
    path = write_csv(tmp_path / "adult.csv", columns)
    common = ["import", str(path), "--label", "income", "--sensitive", "sex", "--split", "split", "--id-col", "person",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "refused.h5")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'NA' at row 3 (2 rows in all)" in err and "--sensitive-missing" in err
    assert main([*common, "--sensitive-missing", "group", "--out", str(tmp_path / "g.h5")]) == 0
    with embedcache.open(tmp_path / "g.h5") as cache:
        assert cache.categories("sex") == ["(missing)", "Female", "Male"]
        assert int((cache.load().sensitive["sex"] == 0).sum()) == 2
