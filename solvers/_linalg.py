"""Chunked numpy products that never upcast a whole float16/float32 ``X`` at once.

``X @ w`` and ``X.T @ r`` are computed block by block in float64 so a 1.3 GB float32
feature matrix never gets a 2.6 GB float64 twin (peak memory stays ~1x X).
"""

from __future__ import annotations

import numpy as np

_CHUNK_BYTES = 64 * 2**20  # float64 block of at most 64 MiB


def _chunk_rows(X: np.ndarray) -> int:
    return max(1, _CHUNK_BYTES // (8 * max(1, X.shape[1])))


def x_dot(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``X @ w`` accumulated in float64."""
    w = np.asarray(w, dtype=np.float64)
    if X.dtype == np.float64:
        return X @ w
    out = np.empty(X.shape[0] if w.ndim == 1 else (X.shape[0], w.shape[1]), dtype=np.float64)
    step = _chunk_rows(X)
    for s in range(0, X.shape[0], step):
        out[s : s + step] = X[s : s + step].astype(np.float64) @ w
    return out


def xt_dot(X: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``X.T @ r`` accumulated in float64 (``r`` may be (n,) or (n, k))."""
    r = np.asarray(r, dtype=np.float64)
    if X.dtype == np.float64:
        return X.T @ r
    out = np.zeros((X.shape[1],) + r.shape[1:], dtype=np.float64)
    step = _chunk_rows(X)
    for s in range(0, X.shape[0], step):
        out += X[s : s + step].astype(np.float64).T @ r[s : s + step]
    return out


def column_mean_std(X: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted column means and standard deviations in float64."""
    n = X.shape[0]
    wts = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    wts = wts / wts.sum()
    mu = xt_dot(X, wts)
    step = _chunk_rows(X)
    var = np.zeros(X.shape[1])
    for s in range(0, n, step):
        blk = X[s : s + step].astype(np.float64) - mu
        var += (blk * blk).T @ wts[s : s + step]
    return mu, np.sqrt(np.maximum(var, 0.0))
