"""Damped Newton (IRLS) for unconstrained weighted logistic fits with few features.

For the objective of :class:`~solvers.backends.torch.WeightedLogistic` in the centred
coordinates ``theta = [w; b']`` of a :class:`~solvers.backends.torch.Design` (scores
``z = (X - mu) w + b'``)

.. math::

    f(\\theta) = \\sum_i \\omega_i \\ell_i(z_i) + \\tfrac{\\lambda_2}{2} \\lVert w \\rVert^2, \\qquad
    \\nabla f = \\tilde X^\\top \\ell' + [\\lambda_2 w; 0], \\qquad
    \\nabla^2 f = \\tilde X^\\top \\mathrm{diag}(h)\\, \\tilde X + \\lambda_2 I_w,

with :math:`\\tilde X = [X - \\mu, 1]` and :math:`h_i = \\omega_i \\sigma(z_i) \\sigma(-z_i)` the
per-row curvature (:meth:`~solvers.backends.torch.WeightedLogistic.curvature`). Each iteration
solves :math:`\\nabla^2 f\\, \\Delta = -\\nabla f` on the free coordinates (``fixed`` ones, e.g. the
intercept of a head without one, stay at 0) by a float64 Cholesky factorisation and backtracks
(Armijo, halving) from the full step: scikit-learn's ``newton-cholesky`` solver, for ``n >> d``.

Why: on a small table an L-BFGS iteration is a few torch calls of microseconds each and its
products with ``X`` cost next to nothing, so a fit's time is its iteration count times that
overhead. The Hessian costs ``n (d + 1)^2`` multiply-adds, one gemm over the centred blocks
(made once per design, :func:`augmented_blocks`); with it a cold fit on the 3,694 x 7 table takes 4-5
iterations instead of 8-9, and a warm one 0-2. Where ``n d^2`` is large the Hessian costs more than
the L-BFGS iterations it saves: :func:`newton_pays` keeps those fits on L-BFGS (their bits unchanged).

The stopping test is :func:`~solvers.backends.active_set.minimize`'s: the inf-norm of the gradient in
the original (uncentred) coordinates at most ``tol``, so a tolerance means the same on both.
The Hessian runs over :meth:`~solvers.backends.torch.Design.device_blocks` summed with
:func:`~solvers.out_of_core.sum_blocks`: in-memory, streamed and data-parallel designs take the
same steps, bit for bit.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch

from ..out_of_core import sum_blocks
from .active_set import _KeptPairs, _Result

_F64 = torch.float64

#: Newton fits are taken while a Newton iteration's arithmetic, the Hessian's ``n (d + 1)^2`` and
#: the Cholesky factorisation's at most ``(d + 1)^3`` multiply-adds, stays within this budget
#: (about 0.1 ms of BLAS at one thread: the scale of an iteration's call overhead). Measured end to
#: end at one thread (docs/benchmarks.md, "Small tables, Newton weighted fits"): inside it every
#: tried shape was faster with Newton (3,694 x 4-12, 10,000 x 8, 20,000 x 4-6, 50,000 x 3,
#: 1,000 x 24), and the first shapes past it were not everywhere (3,694 x 16, 20,000 x 8). Adult
#: (d = 104) and wider embeddings are far outside it and keep L-BFGS, bit for bit.
NEWTON_FLOPS = 1e6
#: Armijo's sufficient-decrease fraction and the most step halvings before a fit stops
ARMIJO = 1e-4
MAX_HALVINGS = 30
#: a fit stops, unconverged, after this many iterations without a new smallest stationarity: ``tol``
#: is below the noise of the gradient's products (float32 ``X``), where Newton's quadratic
#: convergence stopped long before and the steps only move within rounding
STALL_ITERS = 5
#: the most bytes of centred row blocks kept per in-memory design (:func:`augmented_blocks`)
KEPT_BYTES = 64 << 20
_KEPT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


#: the method's name in a :class:`~solvers.backends.Solution` and a certificate
SOLVER = "newton-cholesky"


def newton_fit_affordable(design) -> bool:
    """Whether a Newton iteration on ``design`` costs at most ``NEWTON_FLOPS``: ``(n + d + 1) (d + 1)^2``."""
    p = design.d + 1
    return (design.n + p) * p * p <= NEWTON_FLOPS


def newton_pays(design, obj, *, A=None, layout=None) -> bool:
    """Whether :func:`minimize_newton` should fit ``obj`` on ``design`` instead of L-BFGS: an
    unconstrained binary objective that gives its curvature, on a design where it is affordable."""
    return A is None and layout is None and hasattr(obj, "curvature") and newton_fit_affordable(design)


def _in_numpy(design) -> bool:
    """Whether the Hessian's blocks are worked in numpy (on the CPU, as the design's products);
    elsewhere they stay torch tensors on the device."""
    return design.device.type == "cpu"


def augmented_blocks(design):
    """``(start, B^T)`` per row block of ``X``: ``B = [X_blk - mu, 1]`` in ``cdt``, transposed
    (contiguous, ``(d + 1, rows)``); numpy on the CPU, torch elsewhere.

    The blocks are centred before any product (as :meth:`Design.gram`): a feature of mean 1e6 and
    unit spread keeps its Hessian, which centring a raw float32 product afterwards would lose. For
    an in-memory ``X`` of at most ``KEPT_BYTES`` they are made once per design and kept (a fit takes
    a Hessian per iteration; on a small table the centring copy was half of one); a streamed or
    sharded ``X`` makes them in each pass, elementwise the same numbers: the same bits.
    """
    kept = _KEPT.get(design)
    if kept is not None:
        return kept
    d, cpu = design.d, _in_numpy(design)
    np_cdt = np.float64 if design.cdt == _F64 else np.float32
    mu = design.mu
    if mu is not None:
        mu = mu.numpy().astype(np_cdt)[:, None] if cpu else mu.to(design.cdt)

    def augment(Xb):
        if cpu:
            Bt = np.empty((d + 1, Xb.shape[0]), dtype=np_cdt)
            if mu is None:
                Bt[:d] = Xb.numpy().T
            else:
                np.subtract(Xb.numpy().T, mu, out=Bt[:d])
            Bt[d] = 1.0
            return Bt
        Xc = Xb if mu is None else Xb - mu
        return torch.cat((Xc.t(), torch.ones((1, Xb.shape[0]), dtype=design.cdt, device=design.device))).contiguous()

    blocks = ((s, augment(Xb)) for s, Xb in design.device_blocks())
    itemsize = 8 if design.cdt == _F64 else 4
    if design.streamed or design.n * (d + 1) * itemsize > KEPT_BYTES:
        return blocks
    kept = _KEPT[design] = list(blocks)
    return kept


def centred_hessian(design, h: torch.Tensor, lam2: float) -> np.ndarray:
    """``[X - mu, 1]^T diag(h) [X - mu, 1] + lam2 I_w`` (float64, (d + 1) x (d + 1)), as numpy.

    One product per row block, ``B^T (h B)`` over :func:`augmented_blocks` in ``cdt`` (numpy's
    BLAS on the CPU, as the design's own products; torch elsewhere), the blocks summed in float64
    in order with :func:`~solvers.out_of_core.sum_blocks`. Curvatures below ``cdt``'s smallest
    normal are 0 (a subnormal takes the CPU's slow path, and it rounds away in the sums)."""
    d, dev, cdt = design.d, design.device, design.cdt
    cpu = _in_numpy(design)
    tiny = torch.finfo(cdt).tiny
    if cpu:
        h_all = h.numpy().astype(np.float64 if cdt == _F64 else np.float32)
        if cdt != _F64:
            h_all = np.where(h_all < tiny, h_all.dtype.type(0.0), h_all)
    else:
        h_all = h.to(cdt)
        h_all = torch.where(h_all < tiny, 0.0, h_all)

    scratch = []  # h B^T of the largest block, reused (CPU)

    def part(start, Bt):
        hb = h_all[start : start + Bt.shape[1]]
        if not cpu:
            return (Bt @ (Bt * hb).t()).to(_F64)
        if not scratch:
            scratch.append(np.empty(Bt.size, dtype=Bt.dtype))
        hB = np.multiply(Bt, hb, out=scratch[0][: Bt.size].reshape(Bt.shape))
        return (Bt @ hB.T).astype(np.float64, copy=False)

    acc = np.zeros((d + 1, d + 1)) if cpu else torch.zeros((d + 1, d + 1), dtype=_F64, device=dev)
    H = sum_blocks(design.source, ((s, part(s, Bt)) for s, Bt in augmented_blocks(design)), acc)
    H = H if cpu else H.cpu().numpy()
    H[np.arange(d), np.arange(d)] += lam2
    return H


def newton_direction(H: np.ndarray, g: np.ndarray, free: np.ndarray) -> np.ndarray:
    """``-H^{-1} g`` on the ``free`` coordinates (0 elsewhere), by Cholesky in float64 (LAPACK's
    ``potrf`` / ``potrs``: a (d + 1)-system is microseconds of arithmetic in tens of call overhead).

    A ridge of ``1e-12`` of the mean diagonal keeps ``H`` definite where a column is constant
    (no penalty); where the factorisation still fails it grows 100x a try, and the last resort is
    the gradient's own direction."""
    # scipy.linalg on first use only: its import (0.1-0.2 s) is paid by the small fits that run Newton,
    # not by every command that imports the torch backend
    from scipy.linalg.lapack import dpotrf as _potrf, dpotrs as _potrs

    every = len(free) == len(g)
    Hf, gf = (H, g) if every else (H[np.ix_(free, free)], g[free])
    scale = max(abs(float(Hf.trace())) / max(len(free), 1), 1e-300)
    diag = np.arange(len(free))
    step = None
    for ridge in (1e-12, 1e-10, 1e-8, 1e-6, 1e-4):
        Hr = Hf.copy()
        Hr[diag, diag] += ridge * scale
        L, info = _potrf(Hr, lower=1)
        if info == 0:
            step = -_potrs(L, gf, lower=1)[0]
            break
    if every and step is not None:
        return step
    out = np.zeros(len(g))
    out[free] = -gf if step is None else step
    return out


def minimize_newton(design, obj, theta, *, fixed=(), tol=1e-6, max_iter=1000, z0=None):
    """``min obj`` over ``theta`` (centred ``[w; b']``, ``fixed`` coordinates held at 0) by damped Newton.

    ``obj`` is a :class:`~solvers.backends.torch.WeightedLogistic` (``eval`` and ``curvature``);
    ``z0``: the scores of ``theta`` where the caller has them. Returns
    :func:`~solvers.backends.active_set.minimize`'s result: no multipliers, no working set, and no
    curvature pairs (the next fit builds its Hessian afresh).
    """
    d, dev = design.d, theta.device
    p = d + 1
    theta = theta.clone()
    for j in fixed:
        theta[j] = 0.0
    held = np.zeros(p, dtype=bool)
    held[list(fixed)] = True
    free = np.flatnonzero(~held)
    mu = None if design.mu is None else design.mu.cpu().numpy()

    def scores(th):
        return design.mv(th[:d]) + th[d]

    def gradient(gz, gdir):
        """``(g, X^T gz)`` as numpy: the active-set ``minimize``'s gradient, the same sums."""
        xtr = design.rmv(gz).cpu().numpy()
        g = gdir.cpu().numpy().copy()
        g[:d] += xtr
        g[d] += float(gz.sum())
        return g, xtr

    def stationarity(g):
        """inf-norm of the free gradient in the original (uncentred) coordinates."""
        v = np.where(held, 0.0, g)
        u = np.abs(v)
        if mu is not None:
            u[:d] = np.abs(v[:d] + mu * v[d])
        return float(u.max())

    z = scores(theta) if (z0 is None or len(fixed)) else z0
    f, gz, gdir = obj.eval(z, theta)
    g, xtr = gradient(gz, gdir)
    it, converged = 0, False
    best, since = math.inf, 0  # the smallest stationarity so far, and iterations since it
    while True:
        stat = stationarity(g)
        if stat <= tol:
            converged = True
            break
        best, since = (stat, 0) if stat < best else (best, since + 1)
        if it >= max_iter or since >= STALL_ITERS:
            break
        it += 1
        H = centred_hessian(design, obj.curvature(z), obj.lam2)
        direc_np = newton_direction(H, g, free)
        direc = torch.from_numpy(direc_np).to(dev)
        Xd = scores(direc)
        gd = float(g @ direc_np)
        if not gd < 0:
            break
        a, accepted = 1.0, None
        for _ in range(MAX_HALVINGS):
            # the full step without its product by 1.0 (exact: the same sums), a vector op of n saved
            th, za = (theta + direc, z + Xd) if a == 1.0 else (theta + a * direc, z + a * Xd)
            fa, gza, gdira = obj.eval(za, th)
            if fa <= f + ARMIJO * a * gd + 1e-15 * abs(f):
                accepted = (th, za, fa, gza, gdira)
                break
            a *= 0.5
        if accepted is None:
            break
        theta, z, f, gz, gdir = accepted
        if it % 50 == 0:  # refresh accumulated scores against drift (as minimize)
            z = scores(theta)
            f, gz, gdir = obj.eval(z, theta)
        g, xtr = gradient(gz, gdir)
    res = _Result()
    res.theta, res.z, res.working, res.n_iter = theta, z, [], it
    res.lam = torch.zeros(0, dtype=_F64, device=dev)
    res.converged, res.stationarity, res.f = converged, stationarity(g), f
    res.pairs = _KeptPairs(([], [], []))
    # X^T gz (uncentred) at the returned theta, as minimize hands it on
    res.xtr = torch.from_numpy(xtr + (mu * float(gz.sum()) if mu is not None else 0.0)).to(dev)
    return res


__all__ = ["NEWTON_FLOPS", "SOLVER", "augmented_blocks", "centred_hessian", "minimize_newton",
           "newton_direction", "newton_fit_affordable", "newton_pays"]
