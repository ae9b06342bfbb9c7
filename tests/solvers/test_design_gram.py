"""The centred Gram of the torch backend's Design, against its definition computed block by block.

``Design.gram`` centres each row block into one reused scratch buffer and multiplies it with itself in
numpy (``B^T B``: BLAS's syrk) on the CPU; the buffer must not change a bit: the reference centres each
block into a fresh array and makes the same products in the same order, so the two agree exactly.
"""

import numpy as np
import pytest
import torch

from solvers.backends import torch as torch_backend
from solvers.backends.torch import Design
from solvers.out_of_core import array_blocks


def reference_gram(X: np.ndarray, mu: torch.Tensor, full: bool) -> torch.Tensor:
    """sum over blocks of (X_b - mu)^T (X_b - mu), or its diagonal: each block in X's dtype, the sum in float64, / n."""
    mu = mu.numpy().astype(X.dtype)
    G = np.zeros((X.shape[1],) * (2 if full else 1))
    for _, blk in array_blocks(X):
        Xc = blk - mu
        G += (Xc.T @ Xc).astype(np.float64) if full else (Xc * Xc).sum(axis=0).astype(np.float64)
    return torch.from_numpy(G / X.shape[0])


def test_the_cpu_gram_is_symmetric_to_the_bit_and_near_the_general_product():
    """syrk fills one triangle and mirrors it: the preconditioner's Gram is exactly symmetric, and it is
    the general product's to float32 rounding of the block sums."""
    X = np.random.default_rng(1).standard_normal((3000, 40)).astype(np.float32) + 1.0
    design = Design(X, "cpu", center=True)
    G = design.gram().numpy()
    assert np.array_equal(G, G.T)
    mu = design.mu.numpy()
    Xc = X.astype(np.float64) - mu
    # float32 arithmetic: centring rounds each entry by u (|x| + |mu|), the block's sum of n products
    # by n u per term (the standard dot-product bound, with u = eps / 2); 2 n eps covers both
    A = np.abs(X.astype(np.float64)) + np.abs(mu)
    bound = 2 * len(X) * np.finfo(np.float32).eps * (A.T @ A) / len(X)
    assert np.all(np.abs(G - Xc.T @ Xc / len(X)) <= bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("full", [True, False])
def test_centred_gram_matches_its_definition_bit_for_bit(monkeypatch, dtype, full):
    monkeypatch.setenv("FAIRHEAD_BLOCK_BYTES", "64KiB")  # 3 blocks of 512 rows: the scratch is reused
    if not full:
        monkeypatch.setattr(torch_backend, "GRAM_FULL_FLOPS", 0)  # the diagonal only
    X = np.random.default_rng(0).standard_normal((1300, 32)).astype(dtype) + 3.0
    assert len(list(array_blocks(X))) == 3
    design = Design(X, "cpu", center=True)
    G = design.gram()
    assert G.shape == ((32, 32) if full else (32,))
    assert torch.equal(G, reference_gram(X, design.mu, full))
