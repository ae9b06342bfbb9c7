"""Chunked numpy products that never upcast a whole float16/float32 ``X`` at once.

``X @ w`` and ``X.T @ r`` are computed block by block in float64 so a 1.3 GB float32
feature matrix never gets a 2.6 GB float64 twin (peak memory stays ~1x X). The blocks are
:func:`solvers.out_of_core.block_rows` rows, in memory and for an out-of-core
:class:`~solvers.out_of_core.RowChunks` alike, and ``X.T @ r`` sums them in the same order:
both give the same bits.
"""

from __future__ import annotations

import numpy as np

from .out_of_core import gather_rows, row_blocks, sum_blocks


def x_dot(X, w: np.ndarray) -> np.ndarray:
    """``X @ w`` accumulated in float64 (``X`` in memory or a RowChunks)."""
    w = np.asarray(w, dtype=np.float64)
    if isinstance(X, np.ndarray) and X.dtype == np.float64:
        return X @ w  # rows are independent: the same bits as block by block
    out = np.empty(X.shape[0] if w.ndim == 1 else (X.shape[0], w.shape[1]), dtype=np.float64)
    for s, blk in row_blocks(X):
        out[s : s + len(blk)] = blk.astype(np.float64) @ w
    return gather_rows(X, out)


def xt_dot(X, r: np.ndarray) -> np.ndarray:
    """``X.T @ r`` accumulated in float64 (``r`` may be (n,) or (n, k)), summed block by block."""
    r = np.asarray(r, dtype=np.float64)
    out = np.zeros((X.shape[1],) + r.shape[1:], dtype=np.float64)
    parts = ((s, blk.astype(np.float64, copy=False).T @ r[s : s + len(blk)]) for s, blk in row_blocks(X))
    return sum_blocks(X, parts, out)


def cell_sums(X, codes: np.ndarray, weights: np.ndarray, n_cells: int) -> np.ndarray:
    """``S[c] = sum_{i: codes_i = c} v_i x_i`` of shape (n_cells, d), accumulated in float64, block by block.

    Rows with ``codes_i = -1`` are in no cell. On float16/float32 features with every weight equal
    (``v_i = v``, the unweighted fit) each cell's rows are summed by numpy's float64 reduction of
    the stored rows, ``S[c] = v sum x_i``, with no float64 copy of ``X``: about a third of
    :func:`xt_dot`'s time (one pass at memory speed instead of a float64 copy and a product).
    Otherwise :func:`xt_dot` with the cells' weight columns (on float64 features a plain product
    beats the reduction). Both sum the blocks in order, in float64.
    """
    codes = np.asarray(codes)
    weights = np.asarray(weights, dtype=np.float64)
    if X.dtype != np.float64 and weights.size and np.all(weights == weights[0]):
        def part(s, blk):
            # the block's rows in cells, summed in place when that is all of them; each cell but the
            # largest from a copy of its rows; the largest is the rest (half the copying, two groups)
            where = codes[s : s + len(blk)]
            inside = where >= 0
            total = blk.sum(axis=0, dtype=np.float64) if inside.all() else blk[inside].sum(axis=0, dtype=np.float64)
            sizes = np.bincount(where[inside], minlength=n_cells)
            largest = int(np.argmax(sizes))
            out = np.zeros((n_cells, blk.shape[1]))
            for c in range(n_cells):
                if c != largest and sizes[c]:
                    out[c] = blk[where == c].sum(axis=0, dtype=np.float64)
            out[largest] = total - out.sum(axis=0)
            return out

        out = sum_blocks(X, ((s, part(s, blk)) for s, blk in row_blocks(X)), np.zeros((n_cells, X.shape[1])))
        return out * weights[0]
    U = np.zeros((X.shape[0], n_cells))
    inside = codes >= 0
    U[np.flatnonzero(inside), codes[inside]] = weights[inside]
    return xt_dot(X, U).T
