"""Numerical backends behind one contract; none of them is imported by ``import solvers``.

A backend is a class registered in :data:`BACKENDS` under its name and head kind (binary or
K-class). Two calls make a head:

.. code-block:: python

    model = get_backend("torch", problem.n_classes).prepare(problem, constraint, params)
    sol = model.solve(eps, warm)          # -> Solution; sol.state is the next call's warm

``prepare`` does everything that does not depend on the bound (the constraint's linear form or
cells, the conditioning, the design on the device, the cvxpy problem with ``eps`` as a DPP
parameter), so a path prepares once and solves once per bound. A :class:`Model` has:

* ``solve(eps, warm=None) -> Solution``: the head at bound ``eps``, started from ``warm`` (a
  :class:`WarmStart`, usually the previous head's ``Solution.state``; backends that cannot use it
  ignore it);
* ``linear_form``, ``cells``: the constraint's pieces the certificate checks;
* ``design``: the torch :class:`~solvers.backends.torch.Design` whose passes the certificate
  counts (``None`` for cvxpy), and ``certificate_ops()``: the products the certificate may use
  (``None``: plain numpy);
* ``build_time``: seconds ``prepare`` spent on backend-specific building (a head that prepares
  its own model reports it in its wall time).

The registered ones:

* :class:`solvers.backends.cvxpy.CvxpyModel` -- the reference (exponential-cone program, Clarabel first);
* :class:`solvers.backends.cvxpy_softmax.CvxpySoftmaxModel` -- its K-class (multinomial) head;
* :class:`solvers.backends.torch.TorchModel` -- the fast one (active-set L-BFGS / augmented Lagrangian);
* :class:`solvers.backends.torch_softmax.TorchSoftmaxModel` -- its K-class head.

Pieces they share (row scaling, the penalty check, the regularisation weight, the conditioning)
live in :mod:`solvers.backends.common`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class WarmStart:
    """What one head hands to the next fit of the same problem (a path's next bound, or a refit
    with ``warm_start=True``). Every field is optional: a backend uses what it understands.

    All arrays are numpy (float64), so a fitted estimator pickles without torch.
    """

    #: the head in the backend's flat layout: ``[w; b]`` (binary), ``[w_0; b_0; ...]`` (K
    #: classes, :mod:`solvers.multinomial`), ``[w; b; t]`` (minimax's epigraph variable)
    theta: np.ndarray | None = None
    #: the bound the head was fitted at (set by the estimator; ``None`` outside a sweep)
    eps: float | None = None
    #: active-set working set: indices of the constraint rows held as equalities, in order
    working: tuple = ()
    #: L-BFGS curvature pairs ``(S, Y, W)`` (numpy), in the preconditioned coordinates
    pairs: tuple | None = None
    #: the head's scores ``X w + b`` (a path's shortcut; dropped before a refit on other rows)
    z: np.ndarray | None = None
    #: ``{k: X a_k + a_k0}``, the constraint rows' own scores, computed once per path
    row_scores: dict = field(default_factory=dict)
    #: augmented-Lagrangian multipliers per cell (``group-loss``, ``minimax``) and their penalty ``rho``
    multipliers: np.ndarray | None = None
    rho: float | None = None
    #: up to two earlier heads of a path with the same working set, ``(theta, eps[, z])``: the next
    #: bound starts from their extrapolation (:func:`solvers.backends.torch._start_theta`)
    prev: tuple = ()
    #: the rate search's own state (a :class:`~solvers.rate_search_types.RateWarmStart`: multipliers,
    #: gaps, Jacobian, ...), opaque to the score backends; ``None`` for a score head
    rate: object | None = None


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
    #: warm-start state for the next fit on the same backend (``None``: nothing to reuse)
    state: WarmStart | None = None
    #: ``(z, X^T r)`` at the returned head from the solver's last evaluation (numpy, float64), where
    #: ``z = X w + b`` and ``r`` the mean-loss residual; the certificate reuses them instead of
    #: two more passes over ``X`` (torch backend, mean-loss objectives only)
    products: tuple | None = None


@dataclass(frozen=True)
class FitParams:
    """The estimator's parameters a backend needs (see :class:`~solvers.FairLogisticRegression`)."""

    C: float = 1.0
    penalty: str | None = "l2"
    l1_ratio: float | None = None
    fit_intercept: bool = True
    tol: float = 1e-4
    max_iter: int = 2000
    device: str = "cpu"


class Model(Protocol):
    """A problem prepared by a backend; see the module docstring."""

    linear_form: object
    cells: tuple | None
    design: object
    build_time: float

    def solve(self, eps: float, warm: WarmStart | None = None) -> Solution: ...

    def certificate_ops(self): ...


class Backend(Protocol):
    """A registered backend class: ``prepare`` builds its :class:`Model`."""

    def prepare(self, problem, constraint, params: FitParams, *, design=None) -> Model: ...


#: ``(name, K-class head?) -> "module:class"`` of the backend, imported at first use (so that
#: ``import solvers`` loads neither torch nor cvxpy)
BACKENDS = {
    ("cvxpy", False): "solvers.backends.cvxpy:CvxpyModel",
    ("cvxpy", True): "solvers.backends.cvxpy_softmax:CvxpySoftmaxModel",
    ("torch", False): "solvers.backends.torch:TorchModel",
    ("torch", True): "solvers.backends.torch_softmax:TorchSoftmaxModel",
}


def get_backend(name: str, n_classes: int = 2) -> Backend:
    """The backend class registered for ``name`` and a head of ``n_classes`` classes."""
    key = (name, n_classes > 2)
    if key not in BACKENDS:
        known = sorted({k[0] for k in BACKENDS})
        raise ValueError(f"no backend named {name!r} (known: {', '.join(known)}); pass one of them")
    module, attr = BACKENDS[key].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "FitParams", "Model", "Solution", "WarmStart", "get_backend"]
