"""Newton steps on the multipliers of the rate reduction (:mod:`solvers.reductions`).

For multipliers :math:`\\lambda` the reduction fits the weighted logistic head

.. math::

    \\theta(\\lambda) = \\arg\\min_\\theta \\sum_i |\\delta_i| \\, \\ell(\\tilde y_i, z_i)
    + \\tfrac{\\lambda_2}{2} \\|w\\|^2, \\qquad \\delta = \\delta_0 + (Ma)^\\top \\lambda,
    \\quad z = \\tilde X \\theta,

and its hard rate gaps are :math:`\\gamma(\\lambda) = (Ma)\\, 1[z > 0] + \\mathrm{const}`.
The search wants the multipliers where every binding gap sits at the target
:math:`\\pm\\varepsilon_t`. By the implicit function theorem

.. math::

    \\frac{\\partial \\theta}{\\partial \\lambda} = -H^{-1} B, \\quad
    H = \\tilde X^\\top \\mathrm{diag}(|\\delta| s (1 - s)) \\tilde X + \\lambda_2 I_w, \\quad
    B = \\tilde X^\\top \\mathrm{diag}(c)\\, (Ma)^\\top,

with :math:`s = \\sigma(z)` and :math:`c_i = s_i` where :math:`\\delta_i \\ge 0`, else
:math:`1 - s_i` (the derivative in :math:`\\delta_i` of the weighted loss's slope). The step
function :math:`1[z > 0]` is smoothed by a Gaussian kernel :math:`K_\\tau` of Silverman's bandwidth
on the scores, so :math:`J = \\partial\\gamma / \\partial\\lambda \\approx
-P^\\top H^{-1} B` with :math:`P = \\tilde X^\\top \\mathrm{diag}(K_\\tau(z)) (Ma)^\\top`.

One Newton step solves, on the active rows :math:`A` (violated, or with a non-zero multiplier),
:math:`\\gamma_A + J_{A\\cdot} (\\lambda' - \\lambda) = s_A \\varepsilon_t` with :math:`\\lambda'`
zero off :math:`A`. Rows that are linear combinations of others (the G groups of one event
sum to zero, weighted) are left out, and a row whose multiplier would change side is released
(it does not bind once the others do). The predicted head :math:`\\theta + \\partial\\theta /
\\partial\\lambda \\, (\\lambda' - \\lambda)` warm-starts the next fit, which then needs a few
L-BFGS iterations. Everything here costs about one pass over ``X`` at gemm speed.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from .out_of_core import sum_blocks

#: Newton steps are taken when the Hessian costs at most this many multiply-adds (n p^2) on the
#: CPU (about a second at one thread); on a GPU the budget is 1000x. A subsampled Hessian is no
#: way out: it loses the rare one-hot columns and the step goes wild.
HESSIAN_FLOPS = 2e10
#: independent row subsets kept across searches (by the rows' cosines, exclusive pairs and order)
SUBSETS_KEPT = 256
_SUBSETS: dict = {}
_SUBSETS_LOCK = threading.Lock()


def newton_affordable(design) -> bool:
    """Whether :func:`gap_jacobian` fits the budget ``HESSIAN_FLOPS`` on this design's device."""
    budget = HESSIAN_FLOPS * (1000 if design.device.type == "cuda" else 1)
    return design.n * (design.d + 1) ** 2 <= budget


def kkt_residual(lam: np.ndarray, gaps: np.ndarray, eps_t: float) -> np.ndarray:
    """``gaps - sign(lam) eps_t`` on rows with a multiplier, the violation beyond ``eps_t`` elsewhere."""
    return np.where(lam > 0, gaps - eps_t, np.where(lam < 0, gaps + eps_t,
                    np.sign(gaps) * np.maximum(np.abs(gaps) - eps_t, 0.0)))


def sign_step(lam: np.ndarray, r: np.ndarray, prev_r: np.ndarray, step: np.ndarray):
    """One per-coordinate sign step (Rprop) on the KKT residual ``r``: ``(lam, prev_r, step)`` next.

    On the active rows (``|r| > 1e-12``) a step grows 1.5x while ``r`` keeps its sign and halves when
    it flips; ``lam`` moves by ``sign(r) step`` and stops at 0 rather than cross it (a multiplier
    changes side only through 0, where the row's bound switches).
    """
    active = np.abs(r) > 1e-12
    same = np.sign(r) == np.sign(prev_r)
    flip = (np.sign(r) == -np.sign(prev_r)) & (prev_r != 0)
    step = np.where(same & active, step * 1.5, np.where(flip, step * 0.5, step))
    new = lam + np.where(active, np.sign(r) * step, 0.0)
    lam = np.where((np.sign(new) != np.sign(lam)) & (lam != 0), 0.0, new)
    return lam, np.where(active, r, prev_r), step


def quartile_spread(ordered: np.ndarray) -> float:
    """``np.subtract(*np.percentile(z, [75, 25]))`` from ``z`` in decreasing order, bit for bit.

    numpy's default (linear) quantile at ``q`` reads the order statistics ``a = z_(i)`` and
    ``b = z_(i + 1)`` at ``i = floor((n - 1) q)`` and interpolates with ``t = (n - 1) q - i`` as
    ``a + (b - a) t`` where ``t < 0.5``, else ``b - (b - a)(1 - t)``: the same float64 operations
    here, on the order statistics a scan has already sorted (``percentile`` partitions again).
    """
    n = len(ordered)

    def quantile(q):
        v = (n - 1) * q
        i = int(np.floor(v))
        a, b = float(ordered[n - 1 - i]), float(ordered[n - 1 - min(i + 1, n - 1)])
        t = v - i
        diff = b - a
        return b - diff * (1 - t) if t >= 0.5 else a + diff * t

    return quantile(0.75) - quantile(0.25)


def step_density(z: np.ndarray, ordered: np.ndarray | None = None) -> np.ndarray:
    """``K_tau(z)``: the Gaussian kernel at Silverman's bandwidth, the smoothed derivative of ``1[z > 0]``.

    ``ordered``: ``z`` in decreasing order where a threshold scan has sorted it (its quartiles
    are then read off, :func:`quartile_spread`, instead of partitioning ``z`` again)."""
    iqr = np.subtract(*np.percentile(z, [75, 25])) if ordered is None else quartile_spread(ordered)
    spread = min(float(np.std(z)), float(iqr) / 1.34)
    tau = max(0.9 * spread * len(z) ** -0.2, 1e-6)
    u = z / tau
    return np.exp(-0.5 * u * u) / (np.sqrt(2.0 * np.pi) * tau)


def without_subnormals(t: torch.Tensor) -> torch.Tensor:
    """``t`` with its subnormal entries (``0 < |t| < finfo.tiny``) set to 0, as a new tensor.

    The kernel density of a head's far scores underflows float32's normal range (Adult ``eo``: a
    quarter of ``kern * Ma``'s entries): each product with a subnormal operand takes the CPU's slow
    path, and a Jacobian took 13-40 ms instead of 8-11. A subnormal term is below ``1.2e-38 |X_ij|``;
    added to a column sum of normal magnitude it rounds away, so the sums keep their bits unless a
    whole column is subnormal (then it is 0 instead of a few ulps of float32's smallest normal).
    """
    return torch.where(t.abs() < torch.finfo(t.dtype).tiny, 0.0, t)


def gap_jacobian(design, z: torch.Tensor, delta: np.ndarray, Ma: np.ndarray, lam2: float,
                 fit_intercept: bool, ordered: np.ndarray | None = None):
    """``(J, dtheta)``: ``d gaps / d lam`` (K, K) and ``d theta / d lam`` (d + 1, K) in centred
    coordinates (the intercept's row is zero without ``fit_intercept``).

    ``z`` are the scores of the converged weighted fit at the multipliers behind ``delta``;
    ``ordered``, where a threshold scan has sorted them, the same in decreasing order.
    """
    n, d = design.n, design.d
    K = Ma.shape[0]
    dev, cdt = design.device, design.cdt
    zn = z.detach().cpu().numpy()
    s = 1.0 / (1.0 + np.exp(-np.clip(zn, -500, 500)))
    c = np.where(delta >= 0, s, 1.0 - s)
    h = np.abs(delta) * s * (1.0 - s)
    kern = step_density(zn, ordered)
    p = d + 1 if fit_intercept else d
    f64 = torch.float64
    R = torch.as_tensor(np.hstack([c[:, None] * Ma.T, kern[:, None] * Ma.T, h[:, None]]), dtype=f64, device=dev)
    ht = R[:, -1]
    # products with the raw X, centred afterwards (no copy of X): X^T [R, h] and X^T diag(h) X
    def part(start, Xc):  # [X^T R, X^T diag(h) X] over one block of rows
        Rc = without_subnormals(R[start : start + Xc.shape[0]].to(cdt))
        hc = without_subnormals(ht[start : start + Xc.shape[0]].to(cdt))
        # two products into one block: the sums of one product of X^T with [R, diag(h) X] (to rounding: the
        # BLAS picks each product's kernel by shape), without copying the (rows, d) block into a concatenation
        out = torch.empty((d, 2 * K + 1 + d), dtype=cdt, device=dev)
        torch.matmul(Xc.t(), Rc, out=out[:, : 2 * K + 1])
        torch.matmul(Xc.t(), Xc * hc[:, None], out=out[:, 2 * K + 1 :])
        return out.to(f64)

    # in memory, streamed from disk or one rank's rows (summed over the ranks in block order)
    parts = ((start, part(start, Xc)) for start, Xc in design.device_blocks())
    acc = sum_blocks(design.source, parts, torch.zeros((d, 2 * K + 1 + d), dtype=f64, device=dev))
    XR, XhX = acc[:, : 2 * K + 1], acc[:, 2 * K + 1 :]
    Rsum = R.sum(0)
    xh_s, h_s = XR[:, -1], float(Rsum[-1])
    H = torch.zeros((d + 1, d + 1), dtype=f64, device=dev)
    BP = torch.zeros((d + 1, 2 * K), dtype=f64, device=dev)
    H[:d, :d] = XhX
    H[:d, d] = H[d, :d] = xh_s
    H[d, d] = h_s
    BP[:d], BP[d] = XR[:, :-1], Rsum[:-1]
    if design.mu is not None:  # [X - mu, 1] = [X, 1] C with C = [[I, 0], [-mu^T, 1]]
        C = torch.eye(d + 1, dtype=f64, device=dev)
        C[d, :d] = -design.mu.to(f64)
        H, BP = C.t() @ H @ C, C.t() @ BP
    H, BP = H[:p, :p], BP[:p]
    H[:d, :d] += lam2 * torch.eye(d, dtype=f64, device=dev)
    H += 1e-12 * float(torch.diagonal(H).abs().mean()) * torch.eye(p, dtype=f64, device=dev)
    HiB = torch.linalg.solve(H, BP[:, :K])
    J = -(BP[:, K:].t() @ HiB).cpu().numpy()
    dtheta = torch.zeros((d + 1, K), dtype=torch.float64, device=dev)
    dtheta[:p] = -HiB
    return J, dtheta


class NewtonTargets:
    """The next multipliers of a Newton step (see the module docstring); built once per problem."""

    def __init__(self, Ma: np.ndarray, exclusive=()):
        G = Ma @ Ma.T
        norm = np.sqrt(np.maximum(np.diag(G), 1e-300))
        self._cos = G / np.outer(norm, norm)  # row dependence, from the moments alone
        self.K = Ma.shape[0]
        #: rows that never bind together (one-sided rows of opposite sides, such as a ratio's
        #: ``sel_g >= r sel_h`` and ``sel_h >= r sel_g``): of each pair, the first in order is kept
        self._partner = {}
        for j, k in exclusive:
            self._partner.setdefault(int(j), set()).add(int(k))
            self._partner.setdefault(int(k), set()).add(int(j))
        # the subset depends on the cosines, the pairs and the order alone: kept by their bits, it is
        # shared by every search of the same moments (an eigvalsh per row and order was a tenth of a
        # Newton step on small tables, and each fit, each bound of a path, builds its own targets)
        self._key = (self._cos.tobytes(), self.K, tuple(sorted((j, tuple(sorted(ks)))
                                                               for j, ks in self._partner.items())))

    def independent(self, order) -> list[int]:
        """A greedy subset of the rows in ``order`` (earlier first) that stays linearly independent; sorted."""
        key = (self._key, tuple(int(k) for k in order))
        subset = _SUBSETS.get(key)
        if subset is None:
            subset = self._greedy_subset(key[1])
            with _SUBSETS_LOCK:  # searches may run in threads
                if len(_SUBSETS) >= SUBSETS_KEPT:
                    _SUBSETS.pop(next(iter(_SUBSETS)))  # the oldest
                _SUBSETS[key] = subset
        return list(subset)

    def _greedy_subset(self, order) -> tuple[int, ...]:
        keep = []
        for k in order:
            if self._partner.get(int(k), set()).intersection(keep):
                continue
            trial = keep + [int(k)]
            if np.linalg.eigvalsh(self._cos[np.ix_(trial, trial)]).min() > 1e-8:
                keep = trial
        return tuple(sorted(keep))

    def __call__(self, lam: np.ndarray, gaps: np.ndarray, J: np.ndarray, eps_t: float) -> np.ndarray:
        active = (lam != 0) | (np.abs(gaps) > eps_t)
        side = np.where(lam != 0, np.sign(lam), np.sign(gaps))
        # most violated first: of dependent rows, the one that binds is kept
        idx = self.independent([k for k in np.argsort(-np.abs(gaps), kind="stable") if active[k]])
        new = np.zeros(self.K)
        while idx:
            sub = np.ix_(idx, idx)
            x = np.linalg.lstsq(J[sub], side[idx] * eps_t - gaps[idx] + J[idx] @ lam, rcond=1e-10)[0]
            wrong = side[idx] * x
            if (wrong >= 0).all():
                new[idx] = x
                break
            idx.pop(int(np.argmin(wrong)))  # would change side: not binding once the others are
        return new


__all__ = ["NewtonTargets", "gap_jacobian", "kkt_residual", "newton_affordable", "quartile_spread", "sign_step",
           "step_density", "without_subnormals"]
