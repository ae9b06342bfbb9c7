"""Numerical backends. Each takes a :class:`~solvers.problem.FairProblem` and plain
parameters and returns a :class:`Solution`; none of them is imported by ``import solvers``.

* :mod:`solvers.backends.cvxpy` -- the reference (exponential-cone program, Clarabel first).
* :mod:`solvers.backends.torch` -- the fast one (active-set L-BFGS / augmented Lagrangian).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Solution:
    """What a backend returns: coefficients in original feature units plus solver facts."""

    coef: np.ndarray  # (d,); a K-class head (K, d)
    intercept: float  # a K-class head: (K,)
    multipliers: np.ndarray  # per constraint row / cell; empty when unconstrained
    status: str  # "optimal" | "optimal_inaccurate" | "max_iter"
    solver: str
    n_iter: int
    wall_time: float = 0.0
    notes: list = field(default_factory=list)
    state: dict = field(default_factory=dict)  # warm-start state for the same backend
    #: ``(z, X^T r)`` at the returned head from the solver's last evaluation (numpy, float64), where
    #: ``z = X w + b`` and ``r`` the mean-loss residual; the certificate reuses them instead of
    #: two more passes over ``X`` (torch backend, mean-loss objectives only)
    products: tuple | None = None
