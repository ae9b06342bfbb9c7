"""Fixtures for the app package: small fair-learning problems and real caches written by the real importer."""

from __future__ import annotations

import numpy as np
import pytest

from fairhead import pipeline


def make_split(rng: np.random.Generator, n: int, d: int = 6) -> pipeline.SplitArrays:
    """Two groups with different base rates (0.3 vs 0.7) and a feature shift per group, so an
    unconstrained head has a clear demographic-parity gap."""
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < np.where(g == 1, 0.7, 0.3)).astype(np.int64)
    X = rng.normal(size=(n, d)) + 0.9 * y[:, None] * np.linspace(0.2, 1.0, d) + 0.6 * g[:, None] * np.linspace(1.0, 0.0, d)
    return pipeline.SplitArrays(X=X, y=y, groups=g[:, None], attributes=("group",),
                                categories={"group": ("a", "b")}, sample_ids=np.array([f"r{i}" for i in range(n)]))


@pytest.fixture(scope="session")
def split_arrays():
    rng = np.random.default_rng(7)
    return {"train": make_split(rng, 1200), "valid": make_split(rng, 400), "test": make_split(rng, 400)}


@pytest.fixture(scope="session")
def table_csv(tmp_path_factory, split_arrays):
    """The same splits as a CSV table of features (the `fairhead import` input format)."""
    import csv

    path = tmp_path_factory.mktemp("table") / "features.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        d = split_arrays["train"].X.shape[1]
        writer.writerow(["id", *[f"f{j}" for j in range(d)], "label", "group", "split"])
        for split, arrays in split_arrays.items():
            for i in range(len(arrays.y)):
                writer.writerow([f"{split}-{i}", *[f"{v:.17g}" for v in arrays.X[i]], int(arrays.y[i]),
                                 "ab"[arrays.groups[i, 0]], split])
    return path


@pytest.fixture(scope="session")
def cache_path(tmp_path_factory, table_csv):
    """A real cache written by the real importer."""
    import embedcache

    out = tmp_path_factory.mktemp("cache") / "features.h5"
    embedcache.import_table(table_csv, label="label", sensitive=["group"], split="split", id_col="id", out=out)
    return out
