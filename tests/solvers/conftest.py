"""Shared synthetic problems for the solvers tests (group-dependent base rates)."""

import numpy as np
import pytest

from solvers.synthetic import make_fair_classification


@pytest.fixture(scope="session")
def small_problem():
    """600 x 6 float64 problem, two groups with base rates 0.25 / 0.6."""
    return make_fair_classification(600, 6, seed=0)


@pytest.fixture(scope="session")
def embed_problem():
    """3000 x 32 embedding-like float32 problem (harder conditioning), train/test halves."""
    X, y, a = make_fair_classification(6000, 32, embedding_like=True, dtype=np.float32, seed=3)
    return (X[:3000], y[:3000], a[:3000]), (X[3000:], y[3000:], a[3000:])
