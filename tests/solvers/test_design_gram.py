"""The centred Gram of the torch backend's Design, against its definition computed block by block.

``Design.gram`` centres each row block into one reused scratch buffer (numpy memory on the CPU, for
huge pages); the buffer's memory must not change a bit: the reference centres each block into a fresh
torch tensor and makes the same products in the same order, so the two agree exactly.
"""

import numpy as np
import pytest
import torch

from solvers.backends import torch as torch_backend
from solvers.backends.torch import Design
from solvers.out_of_core import array_blocks


def reference_gram(X: np.ndarray, mu: torch.Tensor, full: bool) -> torch.Tensor:
    """sum over blocks of (X_b - mu)^T (X_b - mu), or its diagonal: each block in X's dtype, the sum in float64, / n."""
    Xt = torch.from_numpy(X)
    mu = mu.to(Xt.dtype)
    G = torch.zeros((X.shape[1],) * (2 if full else 1), dtype=torch.float64)
    for _, blk in array_blocks(X):
        Xc = torch.from_numpy(blk) - mu
        G += (Xc.t() @ Xc).to(torch.float64) if full else (Xc * Xc).sum(0).to(torch.float64)
    return G / X.shape[0]


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
