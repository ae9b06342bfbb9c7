"""Warm L-BFGS pairs handed from one solve to the next (:func:`solvers.backends.torch.minimize`).

A solve hands its curvature pairs on with each pair's ``rho`` and ``s . y``; the next solve without
projections takes them as they are instead of measuring them again. The shortcut must change no
bit: the same pairs as plain numpy copies (what a fitted estimator keeps) go through the old loop.
"""

import numpy as np
import torch

from solvers.backends.torch import Design, WeightedLogistic, _KeptPairs, _numpy_pairs, _tensor, minimize
from solvers.synthetic import make_fair_classification


def _objective(y, weights, d):
    return WeightedLogistic(_tensor(y, "cpu"), _tensor(weights, "cpu"), 1e-3, d)


def test_kept_pairs_make_the_iterates_of_recomputed_ones():
    X, y, _ = make_fair_classification(800, 6, seed=2)
    d = X.shape[1]
    design = Design(X, "cpu", center=True)
    precond = design.preconditioner(1e-3, d + 1)
    first = minimize(design, _objective(y, np.full(len(y), 1.0 / len(y)), d), torch.zeros(d + 1),
                     tol=1e-8, precond=precond)
    assert isinstance(first.pairs, _KeptPairs) and first.pairs.scalars is not None and first.pairs[0]
    # a second objective warm-started from the first head: reweighted rows, as a multiplier step makes
    reweighted = _objective(y, np.linspace(0.5, 1.5, len(y)) / len(y), d)
    kept = minimize(design, reweighted, first.theta, tol=1e-8, pairs=first.pairs, precond=precond)
    recomputed = minimize(design, reweighted, first.theta, tol=1e-8, pairs=_numpy_pairs(first.pairs), precond=precond)
    assert kept.n_iter == recomputed.n_iter > 0
    assert torch.equal(kept.theta, recomputed.theta)
    assert torch.equal(kept.z, recomputed.z)
