"""Linear score rows from the cells' sums (``linear_form(..., from_cells=True)``, the torch backend's).

On float32 features with equal weights the rows ``m_k @ X`` are rebuilt as ``B @ S`` from the cells' float64 sums ``S[c] = sum_{i in c} v_i x_i``
(:func:`solvers._linalg.cell_sums`): the same rows as the float64 product ``M @ X`` to float64 rounding,
and rows that are dependent in exact arithmetic (the groups of one event) stay dependent to float64
rounding of ``B`` whatever rounding ``S`` carries.
"""

import numpy as np
import pytest

from solvers._linalg import cell_sums, xt_dot
from solvers.constraints import make_constraint
from solvers.out_of_core import RowChunks

U64 = np.finfo(np.float64).eps


def _data(n=5000, d=9, groups=3, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) + 3.0).astype(dtype)  # an offset: the rows are differences of means
    return X, rng.integers(0, 2, n), rng.integers(0, groups, n)


@pytest.mark.parametrize("weighted", [False, True])
def test_cell_sums_are_the_weighted_products_of_the_cells(weighted):
    X, y, g = _data()
    codes = np.where(y == 1, g, -1)  # rows with y = 0 in no cell
    v = np.random.default_rng(1).uniform(0.5, 2.0, len(y)) if weighted else np.full(len(y), 0.7)
    U = np.stack([v * (codes == c) for c in range(3)], axis=1)
    got = cell_sums(X, codes, v, 3)
    # float64 sums of n float32 terms, in two orders: |error| <= n u sum |v x| each
    scale = len(y) * U64 * (np.abs(X).T.astype(np.float64) @ np.abs(U)).T
    assert np.all(np.abs(got - xt_dot(X, U).T) <= 2 * scale)


@pytest.mark.parametrize("name", ["dp-score", "eopp-score", "eo-score", "cov"])
def test_rows_from_cells_are_the_float64_rows(name):
    X, y, g = _data()  # float32, equal weights: where the cells' sums are used
    v = np.ones(len(y))
    con = make_constraint(name)
    ref = con.linear_form(X, y, g, v, [0, 1, 2]).A
    got = con.linear_form(X, y, g, v, [0, 1, 2], from_cells=True).A
    # each entry a combination of cell means of |x| <= max |x|: float64 rounding of a few sums of n terms
    assert np.abs(got - ref).max() <= 8 * len(y) * U64 * np.abs(X).max()


def test_rows_from_cells_of_one_event_stay_exactly_dependent():
    X, y, g = _data(groups=2)
    v = np.ones(len(y))
    A = make_constraint("dp-score").linear_form(X, y, g, v, [0, 1], from_cells=True).A
    V = np.bincount(g, weights=v)
    # V_0 m_0 + V_1 m_1 = 0 exactly: only B's rounding (relative u) times the cell sums remains
    resid = np.abs(V[0] * A[0] + V[1] * A[1]).max()
    assert resid <= 4 * U64 * np.abs(X.astype(np.float64)).sum(axis=0).max()


def test_cell_sums_of_a_row_chunked_x_are_the_in_memory_bits():
    X, y, g = _data(n=3000)
    v = np.ones(len(y))
    streamed = RowChunks(X, max_memory="256MB")  # read in passes, summed by the same row blocks
    np.testing.assert_array_equal(cell_sums(streamed, g, v, 3), cell_sums(X, g, v, 3))
