"""The fairness terms of whole-network training, evaluated on a minibatch.

The network is a backbone ``phi_psi`` with a linear head, ``theta = (psi, w, b)``; each image gets the
score (logit) ``z_i = w . phi_psi(x_i) + b`` and the probability ``p_i = sigmoid(z_i)`` of the positive
class. ``L_B(theta)`` is the mean logistic loss (binary cross-entropy with logits) on the batch ``B``.

**Penalty** (the seed code's form, :func:`fairhead.compare.seed_penalty`):

.. math::

    \\min_\\theta \\; L_B(\\theta) + \\alpha \\, P_B(\\theta)

with ``P`` the constraint's seed form (``EO``: the summed between-group differences of the joint
false-positive and false-negative rates of ``p``; ``EOpp``, ``DI``, ``AE``; ``MMF``: the largest group
loss replaces ``L``, no ``alpha``), computed on the groups present in the batch
(:func:`batch_penalty`).

**Lagrangian** (the same constraint and ``eps`` as the fair head): with the constraint's gaps
``c_k(theta)`` relaxed to be differentiable,

.. math::

    \\min_\\theta \\max_{\\mu \\ge 0} \\; L(\\theta)
    + \\sum_k \\mu_k^{+} \\bigl(c_k(\\theta) - \\varepsilon\\bigr)
    + \\mu_k^{-} \\bigl(-c_k(\\theta) - \\varepsilon\\bigr),

solved by alternating one descent step on ``theta`` (the optimizer's, on the batch) with one projected
ascent step ``mu <- max(0, mu + eta_mu (c_B - eps))`` (:class:`ConstraintRelaxation`). The gaps are the
constraint's own rows (:mod:`solvers.constraints`, computed once on all ``n`` training rows, as the
head's reduction computes them), applied to a differentiable stand-in ``u`` of what they bound:

* rate constraints (``dp``, ``eopp``, ``eo``, ``error-rate``): the **probability relaxation**, the
  hard prediction ``1[z > 0]`` replaced by ``p = sigmoid(z)``: ``c = M (a * p + b0)``
  (``RateMoments``; ``error-rate``: ``a = 1 - 2y``, ``b0 = y``);
* linear score constraints (``dp-score``, ``eopp-score``, ``eo-score``, ``cov``): exact, ``c = M z``
  (they bound functions of the score already);
* ``group-loss``: ``c_g`` = the mean logistic loss of group ``g``, bounded one-sided (``c_g <= eps``).

On a batch, ``c`` is estimated without bias from the batch's columns of ``M``:
``c_B = (n / |B|) M[:, B] u_B``; every group counts in every step, even one absent from the batch.
"""

from __future__ import annotations

import numpy as np

from fairhead_errors import DataError
from solvers.constraints import GroupLoss, LinearScoreConstraint, MinimaxLoss, RateConstraint, make_constraint

from fairhead.compare import seed_penalty

#: the objectives of whole-network training (module docstring; ``unconstrained``: the loss alone)
METHODS = ("unconstrained", "penalty", "lagrangian")
#: what ``fairhead finetune-full`` trains by default: the two fairness objectives
DEFAULT_METHODS = ("penalty", "lagrangian")
#: the descent steps on ``theta``: AdamW (decoupled weight decay) or SGD with momentum
OPTIMIZERS = ("adamw", "sgd")

MSG_MINIMAX_LAGRANGIAN = ("constraint 'minimax' has no bound eps, so it has no Lagrangian; use --methods penalty "
                          "(the seed's MMF form) or another --constraint")


def batch_penalty(form: str, z: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """The seed penalty of ``form`` on one batch, over the groups present in it (0 with fewer than two)."""
    import torch

    present, codes = torch.unique(groups, return_inverse=True)
    if form != "MMF" and len(present) < 2:
        return z.sum() * 0.0  # no between-group difference on this batch (keeps the graph)
    return seed_penalty(form, z, y, codes, len(present))


class ConstraintRelaxation:
    """The Lagrangian's differentiable gaps of one constraint on ``n`` training rows.

    Parameters
    ----------
    constraint : str
        A fairhead constraint name (not ``minimax``).
    y : ndarray (n,)
        0/1 labels of the training rows.
    groups : ndarray (n,)
        Group codes ``0 .. len(labels) - 1`` of the training rows.
    labels : tuple
        The group names, as :func:`solvers.problem.encode_groups` returns them.
    eps : float
        The bound.
    """

    def __init__(self, constraint, *, y: np.ndarray, groups: np.ndarray, labels, eps: float, device="cpu") -> None:
        import torch

        cons = make_constraint(constraint)
        if isinstance(cons, MinimaxLoss):
            raise DataError(MSG_MINIMAX_LAGRANGIAN)
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        sw = np.ones(n)
        self.eps = float(eps)
        self.n = n
        a = b0 = None
        if isinstance(cons, RateConstraint):
            moments = cons.moments(y, groups, sw, tuple(labels))
            M, names, self.stand_in = moments.M, list(moments.names), "probability"
            a, b0 = moments.a, moments.b0
        elif isinstance(cons, LinearScoreConstraint):
            M, names = cons.functionals(y, groups, sw, tuple(labels))
            self.stand_in = "score"
        elif isinstance(cons, GroupLoss):
            M = np.stack([(groups == g) / max(int(np.sum(groups == g)), 1) for g in range(len(labels))])
            names, self.stand_in = [f"loss,g={g}" for g in labels], "loss"
        else:  # pragma: no cover - every constraint is one of the above
            raise TypeError(f"no relaxation for {cons!r}")
        self.two_sided = not isinstance(cons, GroupLoss)
        self.names = tuple([f"+({s})" for s in names] + ([f"-({s})" for s in names] if self.two_sided else []))
        as_tensor = (lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float32, device=device))
        self.M = as_tensor(M)  # (K, n)
        self.a = as_tensor(a) if a is not None else None
        self.b0 = as_tensor(b0) if b0 is not None else None
        self.name = cons.name

    @property
    def n_multipliers(self) -> int:
        return len(self.names)

    def gaps(self, z: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The unbiased batch estimate of ``c`` (K,) for scores ``z`` of the training rows ``rows``."""
        import torch

        if self.stand_in == "probability":
            p = torch.sigmoid(z)
            u = self.a[rows] * p + self.b0[rows]
        elif self.stand_in == "score":
            u = z
        else:
            u = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")
        return (self.n / len(rows)) * (self.M[:, rows] @ u)

    def violations(self, gaps: torch.Tensor) -> torch.Tensor:
        """``(c - eps, -c - eps)`` (two-sided) or ``c - eps``: the terms the multipliers price."""
        import torch

        if self.two_sided:
            return torch.cat([gaps - self.eps, -gaps - self.eps])
        return gaps - self.eps

    def full_gaps(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``c`` on all ``n`` training rows at once (``z`` for every row, in order)."""
        import torch

        return self.gaps(z, y, torch.arange(self.n, device=z.device))
