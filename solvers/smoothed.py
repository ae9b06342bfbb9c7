"""The smoothed-rate stage of binary rate heads.

The reduction (:mod:`solvers.reductions`) moves only through cost-weighted logistic fits. Near
its floor (Adult's ``eo``: bounds below about 0.02) the heads it can reach stop getting fairer.
This stage leaves that family: it minimises the head's own logistic loss with the rate gaps
relaxed by a sigmoid of the score,

.. math::

    \\tilde\\gamma_\\tau(\\theta) = M\\bigl(a \\circ \\sigma(z / \\tau) + b_0\\bigr),
    \\qquad z = X w + b,

(:math:`\\sigma(z/\\tau) \\to 1[z > 0]` as :math:`\\tau \\to 0`, so :math:`\\tilde\\gamma_\\tau`
tends to the hard gaps), under :math:`|\\tilde\\gamma_{\\tau,k}| \\le \\varepsilon_t` through an
augmented Lagrangian: with multipliers :math:`\\mu^\\pm \\ge 0` and :math:`\\rho > 0`,

.. math::

    \\min_\\theta \\; \\frac1V \\sum_i v_i \\ell(y_i, z_i) + \\frac{\\lambda_2}{2}\\|w\\|^2
    + \\frac{1}{2\\rho} \\sum_k \\Bigl( [\\mu^+_k + \\rho(\\tilde\\gamma_k - \\varepsilon_t)]_+^2
    + [\\mu^-_k + \\rho(-\\tilde\\gamma_k - \\varepsilon_t)]_+^2 \\Bigr),

then :math:`\\mu^\\pm \\leftarrow [\\mu^\\pm + \\rho(\\pm\\tilde\\gamma - \\varepsilon_t)]_+`. The
temperature follows a continuation schedule (``TEMPERATURES`` times the spread of the starting
scores), each stage warm-started from the last. Its gradient is one ``X^T r`` with
:math:`r_i = \\frac{v_i}{V}(\\sigma(z_i) - y_i) + (Ma)_{\\cdot i}^\\top (\\mu^+_\\rho - \\mu^-_\\rho)\\,
\\sigma'(z_i/\\tau)/\\tau`, so it runs on the same :class:`~solvers.backends.torch.Design` (in
memory, streamed or data-parallel) and the same L-BFGS as the reduction's fits. Every stage's
head is a candidate, judged (as all candidates) at its best threshold with hard predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: the continuation: temperatures in units of the starting scores' spread, loosest first
TEMPERATURES = (0.25, 0.125)
#: multiplier updates per temperature
OUTER = 2
#: the augmented Lagrangian's penalty (loss per squared unit of rate gap)
RHO = 50.0
#: the L-BFGS line search's curvature condition ``|phi'(a)| <= C2 |phi'(0)|``: the usual 0.9 of
#: quasi-Newton methods, not the fits' 0.3. An evaluation here costs about one pass over X (a
#: softplus and two sigmoids of n scores); at 0.3 the Adult ``eo`` path's stages took 2.4 per
#: iteration, at 0.9 1.2 (docs/design/rate-search.md section 7)
LINE_SEARCH_C2 = 0.9


def relaxation_bound(z: np.ndarray, Ma: np.ndarray, tau: float) -> np.ndarray:
    """``sum_i |Ma_ki| |sigma(z_i / tau) - 1[z_i > 0]|`` per row k: how far the relaxed gaps can be
    from the hard ones. Each term shrinks as ``tau`` does (for ``z_i != 0``)."""
    s = 1.0 / (1.0 + np.exp(-np.clip(z / tau, -500, 500)))
    return np.abs(Ma) @ np.abs(s - (z > 0))


class SmoothedRateObjective:
    """The augmented Lagrangian of the module docstring at one temperature (``eval`` for
    :func:`solvers.backends.torch.minimize`)."""

    def __init__(self, y, q, lam2, d, Ma, g0, bound, tau, mult, rho):
        self.y, self.q, self.lam2, self.d = y, q, lam2, d
        self.Ma, self.g0, self.bound, self.tau = Ma, g0, bound, tau
        self.mult, self.rho = mult, rho  # (2, K): mu+ and mu-
        self._mult_sq = None if mult is None else (mult * mult).sum()  # the value's constant term, once
        from .backends.torch import neg_signs

        self._neg_sign = None if y is None else neg_signs(y)  # once per objective, not per evaluation

    def smoothed_gaps(self, z):
        s = torch.sigmoid_(z / self.tau)  # in place on the quotient: the same kernel, one (n,) buffer fewer
        return self.Ma @ s + self.g0, s

    def shifted(self, g):
        h = torch.stack([g - self.bound, -g - self.bound])
        return torch.clamp(self.mult + self.rho * h, min=0.0)

    def eval(self, z, theta):
        from .backends.torch import _softplus_neg

        loss, dl = _softplus_neg(z, self.y, self._neg_sign)
        g, s = self.smoothed_gaps(z)
        sh = self.shifted(g)
        w = theta[: self.d]
        val = torch.dot(self.q, loss) + 0.5 * self.lam2 * torch.dot(w, w)
        val = val + ((sh * sh).sum() - self._mult_sq) / (2.0 * self.rho)
        c = sh[0] - sh[1]  # d val / d g
        # gz = q dl + (Ma^T c) s (1 - s) / tau, in place on this evaluation's own temporaries: the same
        # roundings (products and sums commute in IEEE arithmetic) without five fresh (n,) vectors
        slope = torch.rsub(s, 1.0).mul_(s).div_(self.tau)
        gz = dl.mul_(self.q).add_((self.Ma.t() @ c).mul_(slope))
        gdir = torch.zeros_like(theta)
        gdir[: self.d] = self.lam2 * w
        return float(val), gz, gdir


@dataclass
class SmoothedHead:
    """One stage's head: centred ``theta``, its scores, the temperature and the fit's state."""

    theta: torch.Tensor
    z: torch.Tensor
    tau: float
    stationarity: float
    converged: bool
    n_iter: int


def smoothed_stage(design, y, v, Ma, g0, theta0, *, lam2, bound, fixed, tol, max_iter, precond, mult0=None,
                   temperatures=TEMPERATURES, outer=OUTER, rho=RHO, c2=LINE_SEARCH_C2):
    """Run the continuation from the head ``theta0`` (centred).

    Returns every stage's :class:`SmoothedHead`, in order, and the last multipliers (2, K)
    (``mult0``, e.g. a looser bound's, starts them; else they start at 0). ``c2``: the line
    search's curvature condition (:data:`LINE_SEARCH_C2`).
    """
    from .backends.torch import _tensor, minimize

    dev = design.device
    d = design.d
    yt, qt = _tensor(np.asarray(y, dtype=np.float64), dev), _tensor(np.asarray(v, dtype=np.float64) / float(v.sum()), dev)
    Mat, g0t = _tensor(Ma, dev), _tensor(g0, dev)
    z0 = (design.mv(theta0[:d]) + theta0[d]).cpu().numpy()
    spread = max(float(np.subtract(*np.percentile(z0, [75, 25]))) / 1.35, 1e-6)  # robust std of the scores
    mult = (torch.zeros((2, Ma.shape[0]), dtype=torch.float64, device=dev) if mult0 is None
            else _tensor(np.asarray(mult0, dtype=np.float64), dev))
    theta, pairs, out = theta0, None, []
    for t in temperatures:
        for _ in range(outer):
            obj = SmoothedRateObjective(yt, qt, lam2, d, Mat, g0t, bound, t * spread, mult, rho)
            res = minimize(design, obj, theta, fixed=fixed, tol=tol, max_iter=max_iter, pairs=pairs, precond=precond,
                           c2=c2)
            theta, pairs = res.theta, res.pairs
            out.append(SmoothedHead(res.theta.clone(), res.z, t * spread, res.stationarity, res.converged, res.n_iter))
            mult = obj.shifted(obj.smoothed_gaps(res.z)[0])
    return out, mult.cpu().numpy()


__all__ = ["LINE_SEARCH_C2", "RHO", "OUTER", "TEMPERATURES", "SmoothedHead", "SmoothedRateObjective", "relaxation_bound",
           "smoothed_stage"]
