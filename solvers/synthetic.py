"""Synthetic fair-classification data with group-dependent base rates (tests, benchmarks).

Like fairlearn's ``test/unit/reductions/moments/data_generator.py``, each group gets its own
positive rate, so an unconstrained head violates parity. ``embedding_like=True`` makes the
features look like cached CNN embeddings: non-negative (ReLU of a low-rank mix plus noise),
correlated, with a large common mean, which is harder for first-order solvers than
isotropic Gaussians.
"""

from __future__ import annotations

import numpy as np


def make_fair_classification(
    n: int = 2000,
    d: int = 10,
    *,
    n_groups: int = 2,
    base_rates=None,
    group_shift: float = 0.5,
    embedding_like: bool = False,
    rank: int = 16,
    noise: float = 1.0,
    dtype=np.float64,
    seed: int = 0,
):
    """Return ``X (n, d), y (n,) in {0,1}, a (n,) group codes``.

    Parameters
    ----------
    n, d : int
        Samples and features.
    n_groups : int
        Number of groups (codes ``0 .. n_groups-1``, unequal sizes).
    base_rates : sequence of float, optional
        Positive rate of each group (default spread from 0.25 to 0.6).
    group_shift : float
        How strongly the features encode the group (proxy strength).
    embedding_like : bool
        Non-negative low-rank "embedding" features instead of Gaussians.
    seed : int
    """
    rng = np.random.default_rng(seed)
    probs = np.linspace(1.0, 2.0, n_groups)
    a = rng.choice(n_groups, size=n, p=probs / probs.sum())
    if base_rates is None:
        base_rates = np.linspace(0.25, 0.6, n_groups)
    base_rates = np.asarray(base_rates, dtype=np.float64)
    y = (rng.random(n) < base_rates[a]).astype(np.int64)
    if embedding_like:
        k = min(rank, d)
        Z = rng.normal(size=(n, k))
        Z[:, 0] += 1.5 * (2 * y - 1)
        Z[:, 1] += group_shift * 2 * (a - (n_groups - 1) / 2)
        M = rng.normal(size=(k, d)) / np.sqrt(k)
        X = np.maximum(Z @ M + 0.5 + noise * 0.5 * rng.normal(size=(n, d)), 0.0)
    else:
        X = rng.normal(size=(n, d)) * noise
        X[:, 0] += 1.0 * (2 * y - 1)
        if d > 1:
            X[:, 1] += group_shift * (a - (n_groups - 1) / 2) * 2
        if d > 2:
            X[:, 2] += 0.5 * (2 * y - 1) + 0.3 * a
    return X.astype(dtype), y, a


def make_fair_multiclass(
    n: int = 2000,
    d: int = 10,
    *,
    n_classes: int = 4,
    n_groups: int = 2,
    group_lean: float = 1.0,
    embedding_like: bool = False,
    rank: int = 16,
    noise: float = 1.0,
    dtype=np.float64,
    seed: int = 0,
):
    """Return ``X (n, d), y (n,) in 0..K-1, a (n,) group codes`` with group-dependent class shares.

    Group ``g`` leans (``group_lean``, in log-odds) toward class ``g mod K``, so an unconstrained
    head violates per-class parity; features carry the class (one direction per class) and,
    more weakly, the group. ``embedding_like`` as in :func:`make_fair_classification`.
    """
    rng = np.random.default_rng(seed)
    probs = np.linspace(1.0, 2.0, n_groups)
    a = rng.choice(n_groups, size=n, p=probs / probs.sum())
    logits = rng.normal(size=(n, n_classes)) + group_lean * np.eye(n_classes)[a % n_classes]
    # Gumbel-max: a draw from softmax(logits) per row, vectorised
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)
    onehot = np.eye(n_classes)[y]
    if embedding_like:
        k = min(rank, d)
        Z = rng.normal(size=(n, k))
        Z[:, : min(n_classes, k)] += 1.5 * onehot[:, : min(n_classes, k)]
        Z[:, min(n_classes, k - 1)] += 0.5 * 2 * (a - (n_groups - 1) / 2)
        M = rng.normal(size=(k, d)) / np.sqrt(k)
        X = np.maximum(Z @ M + 0.5 + noise * 0.5 * rng.normal(size=(n, d)), 0.0)
    else:
        X = rng.normal(size=(n, d)) * noise
        m = min(n_classes, d)
        X[:, :m] += 1.5 * onehot[:, :m]
        if d > n_classes:
            X[:, n_classes] += 0.8 * a
    return X.astype(dtype), y, a
