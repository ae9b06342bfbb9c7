"""The fast torch backend (CPU or CUDA), same optimum as the cvxpy reference.

Linear score constraints (``dp-score``, ``eopp-score``, ``eo-score``, ``cov``) and the
unconstrained fit use a primal **active-set method**:

.. math::

    \\min_\\theta f(\\theta) \\ \\text{s.t.}\\ A\\theta \\le r, \\qquad
    \\theta = [w; b],\\ f = \\textstyle\\sum_i \\omega_i \\log(1+e^{-s_i z_i}) + \\tfrac{\\lambda_2}{2}\\lVert w\\rVert^2.

solved by :func:`~solvers.backends.active_set.minimize` (:mod:`solvers.backends.active_set`).
The working set ``W`` holds linearly independent active rows; each subproblem (rows of ``W``
as equalities) is solved by L-BFGS on projected gradients :math:`P g`, with
:math:`P = I - Q Q^\\top` and ``Q`` an orthonormal basis of the rows of ``W`` (``m`` is small,
so projecting costs O(m d)). A step that reaches an inactive row stops there (ratio test) and
adds it; at a subproblem optimum the multipliers :math:`\\lambda_W = -R^{-1} Q^\\top g` are
checked for sign and the most negative row is dropped. A row whose multiplier is already below
minus the projected gradient's size is dropped before that optimum (once per row and solve): the
gradient leaves the face faster than the face's own optimum is approached. The iterate stays
feasible throughout.

The quasi-Newton steps run in preconditioned coordinates (:class:`Preconditioner`: the centred
Gram matrix as the initial Hessian), so correlated or badly scaled columns cost no extra
iterations. CPU fits run torch at one thread (:func:`fit_threads`). An unconstrained fit small
enough that its exact Hessian costs about an iteration's call overhead runs damped Newton instead
(:mod:`solvers.backends.newton`: :func:`~solvers.backends.newton.newton_pays`).

Cost per iteration: one ``X d`` and one ``X^T r`` product. The line search is exact up to a
curvature tolerance and costs O(n) per trial because scores move along ``z + alpha X d``.
``X`` stays on the device in its stored dtype; products accumulate in float32 (float16 /
float32 inputs) or float64 (float64 inputs), and every scalar reduction is float64.

``group-loss`` and ``minimax`` use an **augmented Lagrangian** (minimax through an epigraph
variable ``t``) with the same L-BFGS inner solver.

:class:`TorchModel` is the registered backend (the contract of :mod:`solvers.backends`).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
import torch

from ..errors import InfeasibleConstraintError
from ..out_of_core import RowChunks, array_blocks, gather_rows, sum_blocks
from . import Solution, WarmStart
from .active_set import _CurvaturePairs, _KeptPairs, _line_search, _Result, minimize  # noqa: F401  (the optimizer)
from .common import MSG_PENALTY, center_rows, check_penalty, constraint_pieces, l2_weight, unit_rows
from .newton import SOLVER as NEWTON_SOLVER
from .newton import minimize_newton, newton_pays
MSG_INFEASIBLE_GROUP_LOSS = (
    "group-loss bound eps={eps:g} is infeasible (smallest reachable largest group loss about {best:.4g}); raise eps"
)

_F64 = torch.float64


@contextlib.contextmanager
def fit_threads(device):
    """Torch at one thread for the duration of a CPU fit (restored afterwards).

    The fit's products run in numpy's BLAS; torch only does O(n) vector work, for which its
    OpenMP pool costs more than it saves and, on small machines, spins against the BLAS
    threads (one loss evaluation on Adult went from 0.5 to 2.2 ms). Iterates are identical.
    """
    if torch.device(device).type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def fit_context(device):
    """The torch context of a fit: :func:`fit_threads`, and no autograd bookkeeping.

    Nothing in a fit takes a gradient through autograd (the objectives return their gradients
    by hand), so every torch call runs under ``torch.inference_mode()``: on a small table the
    fit is a few thousand torch calls of a few microseconds each, and the autograd dispatch was
    a tenth of them. The kernels are the same: iterates are identical.
    """
    with torch.inference_mode(), fit_threads(device):
        yield


def _scratch_like(t: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor of ``t``'s shape, dtype and device. On the CPU it is numpy's memory:
    numpy asks the kernel for huge pages on large arrays (``madvise``), torch's allocator does not, and
    first touching a 32 MiB block in 4 KiB pages costs about as much as the arithmetic done in it
    (the same operations in the same order either way: the same bits)."""
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}.get(t.dtype)
    if t.device.type != "cpu" or np_dtype is None:
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    return torch.from_numpy(np.empty(tuple(t.shape), dtype=np_dtype))


class Design:
    """``X`` on the device in its stored dtype, with float64-returning products.

    ``X`` is an in-memory array or an out-of-core :class:`~solvers.out_of_core.RowChunks`
    (streamed from disk in each product, never held whole). On the CPU every product runs
    over the same row blocks (:func:`~solvers.out_of_core.block_rows`) in both cases, each
    in numpy's BLAS at ``cdt`` precision, and sums the blocks' ``X^T r`` in float64 in order:
    a streamed fit makes the in-memory fit's iterates, bit for bit. On another device an
    in-memory ``X`` is multiplied whole (one kernel), a streamed one block by block.
    """

    _CHUNK = 8192  # rows per device block of an in-memory X on an accelerator

    def __init__(self, X, device="cpu", center=True):
        self.source = X if isinstance(X, RowChunks) else None
        self.X = None
        if self.source is None:
            with warnings.catch_warnings():
                # read-only arrays (memmaps, caches) are shared without a copy; X is never written
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                Xt = torch.from_numpy(np.ascontiguousarray(X))
            self.X = Xt.to(device) if str(device) != "cpu" else Xt
            self.device = self.X.device
            dtype = self.X.dtype
        else:
            self.device = torch.device(device)
            dtype = {np.float16: torch.float16, np.float32: torch.float32}.get(X.dtype.type, _F64)
        # on the CPU the products go through numpy's BLAS, block by block: single-threaded float32
        # gemv there is ~1.7x faster than torch.mv on our machines (same float32 accumulation)
        self._np = Xt.numpy() if self.source is None and self.device.type == "cpu" else None
        # an in-memory X already at product precision: its row blocks (views) listed once, not
        # re-cut per product (a small table's product is a few microseconds of BLAS)
        self._np_blocks = (list(array_blocks(self._np)) if self._np is not None
                           and self._np.dtype == (np.float64 if dtype == _F64 else np.float32) else None)
        self.n, self.d = X.shape
        self.half = dtype in (torch.float16, torch.bfloat16)
        self.cdt = _F64 if dtype == _F64 else torch.float32
        self._np_cdt = np.float64 if dtype == _F64 else np.float32
        # implicit centring (z = (X - mu) w + b'), a free preconditioner: no copy of X
        # (one float32 pass; any mu is exact as a reparametrisation, it only has to be used consistently)
        self._passes = [0]  # shared with numpy_ops' copy, so certificate products count too
        self.mu = None
        if center and self.n:
            ones = torch.full((self.n,), 1.0 / self.n, dtype=_F64, device=self.device)
            self.mu = self.rmv(ones)
        self._gram = None
        self._preconditioners = {}

    @property
    def passes(self) -> int:
        """Products with X (or X^T) so far: the unit of a fit's cost (the Gram counts as none)."""
        return self._passes[0]

    @property
    def streamed(self) -> bool:
        """Whether X is read from disk in each product (out of core)."""
        return self.source is not None

    def _blocks(self):
        """``(start, block)`` numpy row blocks of X at ``cdt`` precision (CPU, or streamed)."""
        if self._np_blocks is not None:
            return self._np_blocks
        return self._cast_blocks()

    def _cast_blocks(self):
        blocks = self.source.blocks() if self.source is not None else array_blocks(self._np)
        for s, blk in blocks:
            yield s, (blk if blk.dtype == self._np_cdt else blk.astype(self._np_cdt))

    def device_blocks(self):
        """``(start, block)`` row blocks of X as ``cdt`` tensors on the device (valid until the next)."""
        if self._np is None and self.source is None:  # in memory on an accelerator
            for s in range(0, self.n, self._CHUNK):
                yield s, self.X[s : s + self._CHUNK].to(self.cdt)
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for s, blk in self._blocks():
                yield s, torch.from_numpy(blk).to(self.device)

    def gram(self) -> torch.Tensor:
        """The centred Gram matrix ``(X - mu)^T (X - mu) / n`` (float64), or its diagonal (1-D).

        The full matrix (blocks, products in ``cdt``) when it costs at most
        ``GRAM_FULL_FLOPS`` multiply-adds (``n d^2``; about 10 passes over X at gemm speed);
        beyond that only its diagonal (one pass), which still fixes the scale of every column.
        """
        if self._gram is not None:
            return self._gram
        full = self.n * self.d * self.d <= GRAM_FULL_FLOPS
        if self.device.type == "cpu":
            self._gram = torch.from_numpy(self._numpy_gram(full))
            return self._gram
        mu = None if self.mu is None else self.mu.to(self.cdt)
        G = torch.zeros((self.d, self.d) if full else (self.d,), dtype=_F64, device=self.device)

        scratch = []  # one block-sized buffer for X - mu and its squares

        def part(Xc):
            if mu is None and full:
                return (Xc.t() @ Xc).to(_F64)
            if not scratch:
                scratch.append(_scratch_like(Xc))
            buf = scratch[0][: len(Xc)]
            if mu is not None:
                Xc = torch.sub(Xc, mu, out=buf)
            if full:
                return (Xc.t() @ Xc).to(_F64)
            return torch.mul(Xc, Xc, out=buf).sum(0).to(_F64)

        G = sum_blocks(self.source, ((s, part(Xc)) for s, Xc in self.device_blocks()), G)
        G /= max(self.n, 1)
        self._gram = G  # (d,) when only the diagonal: no dense d x d copy (33 MB at d = 2048)
        return self._gram

    def _numpy_gram(self, full: bool) -> np.ndarray:
        """:meth:`gram` on the CPU, in numpy over the products' row blocks: ``B^T B`` of a block with
        itself is BLAS's ``syrk`` there (half of a general product's multiply-adds; torch's ``t() @``
        makes the general one: 2.1x the time on Adult, 2.0x at 20,000 x 512)."""
        mu = None if self.mu is None else self.mu.numpy().astype(self._np_cdt)
        G = np.zeros((self.d, self.d) if full else (self.d,), dtype=np.float64)
        # one block-sized buffer for X - mu and its squares: a fresh 32 MiB array per block costs
        # its page faults, five times the arithmetic (the same operations, the same bits)
        scratch = []

        def buffer(blk):
            if not scratch:
                scratch.append(np.empty(blk.shape, dtype=blk.dtype))
            return scratch[0][: len(blk)]

        def part(blk):
            if mu is not None:
                blk = np.subtract(blk, mu, out=buffer(blk))
            if full:
                return (blk.T @ blk).astype(np.float64)  # the same array on both sides: syrk
            return np.multiply(blk, blk, out=buffer(blk)).sum(axis=0).astype(np.float64)

        G = sum_blocks(self.source, ((s, part(blk)) for s, blk in self._blocks()), G)
        G /= max(self.n, 1)
        return G  # (d,) when only the diagonal: no dense d x d copy (33 MB at d = 2048)

    def preconditioner(self, lam2: float, p: int) -> "Preconditioner":
        """The :class:`Preconditioner` for the L2 coefficient ``lam2`` and ``p`` coordinates (cached)."""
        key = (float(lam2), int(p))
        if key not in self._preconditioners:
            self._preconditioners[key] = Preconditioner(self.gram(), lam2, self.d, p)
        return self._preconditioners[key]

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``(X - mu) v`` in float64; ``v`` of shape (d,), or (d, K) for K score columns (a
        multinomial head: one pass over X for all K)."""
        self._passes[0] += 1
        tail = tuple(v.shape[1:])
        if self.device.type == "cpu":  # the same blocks as in memory: the same bits
            # casts and the centring in numpy: the same IEEE operations as torch's, in fewer calls
            vn = v.numpy().astype(self._np_cdt, copy=False)
            out = np.empty((self.n,) + tail, dtype=self._np_cdt)
            for s, blk in self._blocks():
                np.matmul(blk, vn, out=out[s : s + len(blk)])
            out = gather_rows(self.source, out).astype(np.float64, copy=False)
            if self.mu is not None:
                out -= float(torch.dot(self.mu, v.to(_F64))) if v.ndim == 1 else (self.mu @ v.to(_F64)).numpy()
            return torch.from_numpy(out)
        vc = v.to(self.cdt)
        if self.source is None and not self.half:
            out = (torch.mv(self.X, vc) if v.ndim == 1 else self.X @ vc).to(_F64)
        else:
            out = torch.empty((self.n,) + tail, dtype=_F64, device=self.device)
            for s, Xc in self.device_blocks():
                out[s : s + len(Xc)] = torch.mv(Xc, vc) if v.ndim == 1 else Xc @ vc
            out = gather_rows(self.source, out)
        if self.mu is not None:
            out -= torch.dot(self.mu, v.to(_F64)) if v.ndim == 1 else self.mu @ v.to(_F64)
        return out

    def rmv(self, r: torch.Tensor) -> torch.Tensor:
        """``(X - mu)^T r`` in float64 (blocks summed in float64, in order); ``r`` of shape (n,),
        or (n, K) giving (d, K)."""
        self._passes[0] += 1
        tail = tuple(r.shape[1:])
        if self.device.type == "cpu":
            rn = r.numpy().astype(self._np_cdt, copy=False)
            parts = ((s, rn[s : s + len(blk)] @ blk if r.ndim == 1 else blk.T @ rn[s : s + len(blk)])
                     for s, blk in self._blocks())
            acc = np.zeros((self.d,) + tail, dtype=np.float64)
            if self.source is None:  # in memory: the blocks in order (sum_blocks' own loop, without its dispatch)
                for _, part in parts:
                    acc += part
            else:
                acc = sum_blocks(self.source, parts, acc)
            if self.mu is not None:  # in numpy, as in mv; the sum of r stays torch's (its own order)
                r64 = r.to(_F64)
                acc -= (self.mu.numpy() * float(r64.sum()) if r.ndim == 1
                        else torch.outer(self.mu, r64.sum(0)).numpy())
            return torch.from_numpy(acc)
        rc = r.to(self.cdt)
        if self.source is None and not self.half:
            out = (torch.mv(self.X.t(), rc) if r.ndim == 1 else self.X.t() @ rc).to(_F64)
        else:
            parts = ((s, (torch.mv(Xc.t(), rc[s : s + len(Xc)]) if r.ndim == 1 else Xc.t() @ rc[s : s + len(Xc)])
                      .to(_F64)) for s, Xc in self.device_blocks())
            out = sum_blocks(self.source, parts, torch.zeros((self.d,) + tail, dtype=_F64, device=self.device))
        if self.mu is not None:
            out -= self.mu * r.to(_F64).sum() if r.ndim == 1 else torch.outer(self.mu, r.to(_F64).sum(0))
        return out

    def to_centered(self, theta: torch.Tensor) -> torch.Tensor:
        """``[w; b] -> [w; b + mu.w]`` (identity without centring)."""
        th = theta.clone()
        if self.mu is not None:
            th[self.d] += torch.dot(self.mu, th[: self.d])
        return th

    def from_centered(self, theta: torch.Tensor) -> torch.Tensor:
        th = theta.clone()
        if self.mu is not None:
            th[self.d] -= torch.dot(self.mu, th[: self.d])
        return th


#: the preconditioner uses the full Gram matrix up to this many multiply-adds (n d^2), its
#: diagonal above (where the full one would cost more passes over X than it saves)
GRAM_FULL_FLOPS = 1e9


class Preconditioner:
    """A linear change of variables ``theta = T phi`` that makes the logistic Hessian about ``I``.

    .. math::

        H_0 = \\tfrac14 G + (\\lambda_2 + \\epsilon) I = L L^\\top, \\qquad
        T = \\mathrm{blockdiag}(L^{-\\top},\\ 2,\\ I),

    with ``G`` the centred Gram matrix ``(X - mu)^T (X - mu) / n`` (:meth:`Design.gram`; its
    diagonal only when the full one would cost more than it saves): the
    Hessian of the mean logistic loss is ``(X - mu)^T D (X - mu) / n`` with ``D <= 1/4``, and 1/4
    is its value at the start (``z`` near the base rate's log-odds). L-BFGS in ``phi`` is L-BFGS
    with ``T T^T = H_0^{-1}`` as its initial inverse Hessian: correlated one-hot columns and
    features at any scale (1e6 included) cost no extra iterations. Coordinate ``d`` is the
    intercept (in centred coordinates its Hessian is about 1/4); later ones (minimax's ``t``)
    are left alone. ``epsilon`` (1e-6 of the mean diagonal) keeps ``H_0`` definite when columns
    are collinear. A 1-D ``gram`` (the diagonal) gives a diagonal ``L``, kept as a vector.
    """

    def __init__(self, gram: torch.Tensor, lam2: float, d: int, p: int):
        H = 0.25 * gram
        diag = H if H.ndim == 1 else torch.diagonal(H)
        ridge = float(lam2) + 1e-6 * max(float(diag.mean()) if d else 1.0, 1e-300)
        if H.ndim == 1:
            self.L = torch.sqrt(H + ridge)
        else:
            self.L = torch.linalg.cholesky(H + ridge * torch.eye(d, dtype=_F64, device=gram.device))
        self.d, self.p = d, p
        self.scale = torch.ones(p - d, dtype=_F64, device=gram.device)
        self.scale[0] = 2.0
        self._Lt = self.L.t()
        # on the CPU a vector's tail is scaled in numpy (the same products, a fifth of a torch call's cost)
        self._scale_cpu = self.scale.numpy() if gram.device.type == "cpu" else None

    def _join(self, head: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``[head; v[d:] * scale]`` for a vector ``v``."""
        if self._scale_cpu is None:
            return torch.cat((head, v[self.d:] * self.scale))
        out = np.empty(self.p)
        out[: self.d] = head.numpy()
        np.multiply(v.numpy()[self.d:], self._scale_cpu, out=out[self.d:])
        return torch.from_numpy(out)

    def t(self, v: torch.Tensor) -> torch.Tensor:
        """``T v`` for ``v`` of shape (p,) or (p, k)."""
        if v.ndim == 1:  # the same arithmetic as a (p, 1) column, in fewer torch calls
            head = (v[: self.d] / self.L if self.L.ndim == 1 else
                    torch.linalg.solve_triangular(self._Lt, v[: self.d, None], upper=True)[:, 0])
            return self._join(head, v)
        out = torch.empty_like(v)
        out[: self.d] = (v[: self.d] / self.L[:, None] if self.L.ndim == 1 else
                         torch.linalg.solve_triangular(self.L.t(), v[: self.d], upper=True))
        out[self.d:] = v[self.d:] * self.scale[:, None]
        return out

    def tt(self, v: torch.Tensor) -> torch.Tensor:
        """``T^T v`` for ``v`` of shape (p,) or (p, k)."""
        if v.ndim == 1:
            head = (v[: self.d] / self.L if self.L.ndim == 1 else
                    torch.linalg.solve_triangular(self.L, v[: self.d, None], upper=False)[:, 0])
            return self._join(head, v)
        out = torch.empty_like(v)
        out[: self.d] = (v[: self.d] / self.L[:, None] if self.L.ndim == 1 else
                         torch.linalg.solve_triangular(self.L, v[: self.d], upper=False))
        out[self.d:] = v[self.d:] * self.scale[:, None]
        return out


def numpy_ops(design: Design):
    """``(x_dot, xt_dot)`` numpy-in/numpy-out products on the device (for certificates)."""
    plain = Design.__new__(Design)
    plain.__dict__.update(design.__dict__)
    plain.mu = None

    def xd(X, w):
        return plain.mv(torch.as_tensor(np.asarray(w, dtype=np.float64), device=plain.device)).cpu().numpy()

    def xtd(X, r):
        r = np.asarray(r, dtype=np.float64)
        if r.ndim == 2:  # a few columns (constraint rows): one gemv each beats a skinny gemm here
            return np.column_stack([xtd(X, np.ascontiguousarray(r[:, j])) for j in range(r.shape[1])])
        return plain.rmv(torch.as_tensor(r, device=plain.device)).cpu().numpy()

    return xd, xtd


def _softplus_neg(z, y, neg_sign=None):
    """log(1 + exp(-s z)) with s = 2y - 1, and its z-derivative sigmoid(z) - y. ``neg_sign``:
    ``-s`` when the caller keeps it (:func:`neg_signs`; ``(-s) z`` is ``-(s z)`` to the bit)."""
    loss = torch.nn.functional.softplus(-((2.0 * y - 1.0) * z) if neg_sign is None else neg_sign * z)
    return loss, torch.sigmoid(z) - y


def neg_signs(y):
    """``-(2y - 1)``, the labels' negated signs, made once per objective instead of per evaluation."""
    return -(2.0 * y - 1.0)


class WeightedLogistic:
    """``sum_i q0_i loss_i + sum_i q1_i loss(1 - y_i) + lam2/2 ||w||^2``.

    ``q1`` (optional) puts weight on the opposite label, which the rate reduction uses.
    """

    def __init__(self, y, q0, lam2, d, q1=None):
        self.y, self.q0, self.q1, self.lam2, self.d = y, q0, q1, lam2, d
        self._neg_sign = neg_signs(y)
        self._tails = {}  # zeros for the gradient's coordinates past w, by the length of theta
        if q1 is not None:
            self._y1 = 1.0 - y
            self._neg_sign1 = neg_signs(self._y1)

    def eval(self, z, theta):
        loss, dl = _softplus_neg(z, self.y, self._neg_sign)
        # the scalars as Python floats: the float64 arithmetic of 0-d tensors, without their calls
        val = float(torch.dot(self.q0, loss))
        gz = self.q0 * dl
        if self.q1 is not None:
            loss1, dl1 = _softplus_neg(z, self._y1, self._neg_sign1)
            val = val + float(torch.dot(self.q1, loss1))
            gz = gz + self.q1 * dl1
        w = theta[: self.d]
        val = val + 0.5 * self.lam2 * float(torch.dot(w, w))
        if theta.device.type == "cpu":  # [lam2 w; 0] in numpy: the same products, in fewer calls
            gdir = np.zeros(theta.numel())
            np.multiply(w.numpy(), self.lam2, out=gdir[: self.d])
            return float(val), gz, torch.from_numpy(gdir)
        tail = self._tails.get(theta.numel())
        if tail is None:
            tail = self._tails[theta.numel()] = theta.new_zeros(theta.numel() - self.d)
        return float(val), gz, torch.cat((self.lam2 * w, tail))

    def curvature(self, z):
        """The per-row second derivative in ``z``: ``(q0 + q1) sigmoid(z) sigmoid(-z)`` (both labels'
        losses curve alike), for Newton fits (:mod:`solvers.backends.newton`)."""
        q = self.q0 if self.q1 is None else self.q0 + self.q1
        return q * torch.sigmoid(z) * torch.sigmoid(-z)


class _AugLagObjective:
    """Augmented Lagrangian of group-loss (``minimax=False``) or minimax (epigraph ``t``)."""

    def __init__(self, y, q, lam2, d, codes, cell_w, n_cells, bound, minimax):
        self.y, self.q, self.lam2, self.d = y, q, lam2, d
        self.codes, self.cell_w, self.nc = codes, cell_w, n_cells
        self.bound, self.minimax = bound, minimax
        self.mult = torch.zeros(n_cells, dtype=_F64, device=y.device)
        self.rho = 10.0
        self._neg_sign = neg_signs(y)

    def cell_losses(self, z):
        loss, dl = _softplus_neg(z, self.y, self._neg_sign)
        L = torch.zeros(self.nc, dtype=_F64, device=z.device).index_add_(0, self.codes, self.cell_w * loss)
        return L, loss, dl

    def eval(self, z, theta):
        L, loss, dl = self.cell_losses(z)
        w = theta[: self.d]
        if self.minimax:
            t = theta[self.d + 1]
            h = L - t
            val = t
        else:
            h = L - self.bound
            val = torch.dot(self.q, loss)
        shifted = torch.clamp(self.mult + self.rho * h, min=0.0)
        val = val + 0.5 * self.lam2 * torch.dot(w, w) + (torch.dot(shifted, shifted) - torch.dot(self.mult, self.mult)) / (2 * self.rho)
        coef = shifted[self.codes] * self.cell_w
        gz = coef * dl if self.minimax else (self.q + coef) * dl
        gdir = torch.zeros_like(theta)
        gdir[: self.d] = self.lam2 * w
        if self.minimax:
            gdir[self.d + 1] = 1.0 - shifted.sum()
        return float(val), gz, gdir


def _tensor(x, device):
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


class TorchModel:
    """The registered binary torch backend (see :mod:`solvers.backends` for the contract).

    :meth:`prepare` puts ``X`` on the device once (a :class:`Design`, which keeps its centring,
    Gram matrix and preconditioners across a path), takes the constraint's pieces and scales its
    rows to unit norm in centred coordinates; :meth:`solve` runs the active-set L-BFGS (linear
    rows, or none) or the augmented Lagrangian (``group-loss``, ``minimax``) at one bound, started
    from a :class:`~solvers.backends.WarmStart` (``theta``, ``working``, ``pairs``, ``z``,
    ``row_scores``, ``prev`` and ``eps`` for the extrapolation, ``multipliers`` and ``rho`` of the
    augmented Lagrangian).

    The K-class head (:class:`~solvers.backends.torch_softmax.TorchSoftmaxModel`) subclasses it
    and replaces :meth:`_setup` and :meth:`_solve`.
    """

    #: the head's blocks of ``d + 1`` parameters (1: binary)
    n_blocks = 1
    solver = "active-set-lbfgs"

    def __init__(self, problem, constraint, params, *, design=None):
        check_penalty(params.penalty, backend="torch", n_classes=problem.n_classes)
        self.problem, self.constraint, self.params = problem, constraint, params
        self.name = None if constraint is None else constraint.name
        self.design = design or Design(problem.X, params.device, center=params.fit_intercept)
        # on float32 X the rows from the cells' float64 sums: a third of the float64 product's time
        self.linear_form, self.cells = constraint_pieces(problem, constraint, from_cells=True)
        t0 = time.perf_counter()
        V = float(problem.sample_weight.sum())
        self.lam2 = l2_weight(params.C, V, params.penalty)
        self._A = self._rhs = self._norms = None
        if self.linear_form is not None:  # unit rows in centred coordinates (per class block: a_w - a_b mu)
            mu = self.design.mu
            A_np = self.linear_form.A if mu is None else center_rows(self.linear_form.A, mu.cpu().numpy(),
                                                                     self.n_blocks)
            A_unit, self._norms, self._rhs = unit_rows(A_np, self.linear_form.c0)
            self._A = _tensor(A_unit, self.design.device)
        self._setup(V)
        self.build_time = time.perf_counter() - t0

    @classmethod
    def prepare(cls, problem, constraint, params, *, design=None):
        """The contract's entry: the model of ``problem`` under ``constraint`` (``design``: an
        existing :class:`Design` of ``problem.X`` to reuse, e.g. a path's)."""
        return cls(problem, constraint, params, design=design)

    def certificate_ops(self):
        """``(x_dot, xt_dot)`` on the device, for the certificate (:func:`numpy_ops`)."""
        return numpy_ops(self.design)

    def solve(self, eps, warm=None) -> Solution:
        """The head at bound ``eps`` from ``warm`` (a :class:`~solvers.backends.WarmStart` or
        ``None``); torch runs at one CPU thread, without autograd, meanwhile (:func:`fit_context`)."""
        with fit_context(self.params.device):
            return self._solve(eps, warm)

    def _multipliers(self, res):
        if self._A is None:
            return np.zeros(0)
        return res.lam.cpu().numpy() / np.where(self._norms > 0, self._norms, 1.0)

    def _setup(self, V):
        v = self.problem.sample_weight
        self._y = _tensor(self.problem.y, self.design.device)
        self._q = _tensor(v / V, self.design.device)

    def _solve(self, eps, warm):
        p, design = self.params, self.design
        t0 = time.perf_counter()
        dev, d = design.device, design.d
        fixed = () if p.fit_intercept else (d,)
        row_scores = dict(warm.row_scores) if warm is not None else {}
        theta0, z0 = _start_theta(self.problem, p.fit_intercept, warm, self.linear_form, eps, d, design, row_scores)
        if self.name in ("group-loss", "minimax"):
            sol = _fit_auglag(design, self.problem, self._y, self._q, self.lam2, d, self.cells, eps,
                              self.name == "minimax", fixed, theta0, p.tol, p.max_iter, warm, C=p.C,
                              fit_intercept=p.fit_intercept)
            sol.wall_time = time.perf_counter() - t0
            return sol
        obj = WeightedLogistic(self._y, self._q, self.lam2, d)
        rhs = None if self._A is None else _tensor(self._rhs(eps), dev)
        theta = design.to_centered(_tensor(theta0, dev))
        z0 = None if z0 is None else _tensor(z0, dev)
        newton = newton_pays(design, obj, A=self._A)  # unconstrained, few features
        if newton:
            res = minimize_newton(design, obj, theta, fixed=fixed, tol=p.tol, max_iter=p.max_iter, z0=z0)
        else:
            res = minimize(design, obj, theta, A=self._A, rhs=rhs, fixed=fixed,
                           working=tuple(warm.working) if warm is not None else (), tol=p.tol, max_iter=p.max_iter,
                           pairs=warm.pairs if warm is not None else None,
                           precond=design.preconditioner(self.lam2, d + 1), z0=z0)
        th = design.from_centered(res.theta).cpu().numpy()
        status = "optimal" if res.converged else "max_iter"
        return Solution(coef=th[:d].copy(), intercept=float(th[d]), multipliers=self._multipliers(res), status=status,
                        solver=NEWTON_SOLVER if newton else self.solver, n_iter=res.n_iter,
                        wall_time=time.perf_counter() - t0, notes=[], state=WarmStart(theta=th, working=tuple(res.working), pairs=_numpy_pairs(res.pairs),
                                                  z=res.z.cpu().numpy(), row_scores=row_scores),
                        products=(res.z.cpu().numpy(), res.xtr.cpu().numpy()))


def _numpy_pairs(pairs):
    """L-BFGS pairs as numpy (fitted estimators keep numpy only, so they pickle without torch)."""
    S, Y, W = pairs
    return ([x.cpu().numpy() for x in S], [x.cpu().numpy() for x in Y], list(W))


def _start_theta(problem, fit_intercept, warm, linear_form, eps, d, design=None, row_scores=None):
    """A feasible start and its scores ``z = X w + b`` when they come without a pass over X (else None).

    The warm start, extrapolated along a path and moved onto the new bound, or shrunk toward
    ``w = 0`` until it satisfies the rows. Along a path the scores are extrapolated with the
    heads (``z`` is linear in theta) and moved with the rows' own scores ``X a_k + a_k0``
    (``row_scores``, one product per row, computed once per path): the start's product with X
    is one of the 4-6 passes a warm point costs.
    """
    y, v = problem.y, problem.sample_weight
    p = float(np.clip((v * y).sum() / v.sum(), 1e-6, 1 - 1e-6))
    base = np.zeros(d + 1)
    if fit_intercept:
        base[d] = math.log(p / (1 - p))
    if warm is None or warm.theta is None:
        return base, None
    th = np.asarray(warm.theta, dtype=np.float64)[: d + 1].copy()
    z = warm.z
    if warm.prev and warm.eps is not None:
        # along a path: extrapolate the last heads in eps (Lagrange, degree <= 2); with an
        # unchanged active set the solution path is smooth in eps
        pts = [(np.asarray(t[0], dtype=np.float64)[: d + 1], float(t[1]), t[2] if len(t) > 2 else None)
               for t in warm.prev]
        pts.append((th, float(warm.eps), z))
        es = [e for _, e, _ in pts]
        if len(set(es)) == len(es):
            ext = np.zeros(d + 1)
            zs = [zi for _, _, zi in pts]
            z_ext = np.zeros_like(z) if z is not None and all(zi is not None and len(zi) == len(z) for zi in zs) else None
            for i, (ti, ei, zi) in enumerate(pts):
                li = 1.0
                for j, ej in enumerate(es):
                    if j != i:
                        li *= (float(eps) - ej) / (ei - ej)
                ext += li * ti
                if z_ext is not None:
                    z_ext += li * zi
            th, z = ext, z_ext
    if not fit_intercept:
        th[d] = 0.0
        z = None
    if linear_form is not None:
        # move the previous active rows, and rows the start violates, onto the new bound with the
        # least change of theta (a small least-squares problem: few rows)
        m_rows = linear_form.A.shape[0]
        Wp = [k for k in warm.working if k < m_rows]
        viol = np.flatnonzero(linear_form.A @ th > eps + linear_form.c0)
        for k in viol:
            if k not in Wp and np.linalg.matrix_rank(linear_form.A[Wp + [int(k)]], tol=None) == len(Wp) + 1:
                Wp.append(int(k))
        if Wp:
            AW = linear_form.A[Wp]
            resid = AW @ th - (eps + linear_form.c0[Wp])
            corr, *_ = np.linalg.lstsq(AW @ AW.T, resid, rcond=None)
            th2 = th - AW.T @ corr
            if fit_intercept or abs(th2[d]) < 1e-300:
                scale = 1e-9 * max(1.0, float(np.abs(linear_form.A).max() * np.abs(th2).sum()))
                if np.all(linear_form.A @ th2 <= eps + linear_form.c0 + scale):
                    if z is not None and design is not None and row_scores is not None:
                        z = z - sum(c * _row_scores(design, linear_form.A, k, row_scores)
                                    for c, k in zip(corr, Wp))
                    else:
                        z = None
                    return th2, z
    if linear_form is not None:
        Aw = linear_form.A[:, :d] @ th[:d]
        rest = linear_form.A[:, d] * th[d]
        room = eps + linear_form.c0 - rest
        over = Aw > room
        if np.any(over):
            # homogeneous rows (A[:, d] = 0, c0 = 0): scaling w by t keeps feasibility
            t = np.min(np.where(Aw > 0, np.maximum(room, 0.0) / np.where(Aw > 0, Aw, 1.0), 1.0))
            th[:d] *= max(0.0, min(1.0, t)) * (1 - 1e-12)
            z = None
            if np.any(linear_form.A @ th > eps + linear_form.c0 + 1e-12):
                return base, None
    return th, z


def _row_scores(design, A, k, cache):
    """``X a_k + a_k0`` for row ``k`` of ``A`` (original coordinates), one product, cached along a path."""
    if k not in cache:
        a = torch.as_tensor(A[k, : design.d], dtype=_F64, device=design.device)
        Xa = design.mv(a) + (0.0 if design.mu is None else torch.dot(design.mu, a))
        cache[k] = Xa.cpu().numpy() + float(A[k, design.d])
    return cache[k]


def _fit_auglag(design, problem, y, q, lam2, d, cells, eps, minimax, fixed, theta0, tol, max_iter, warm, *, C,
                fit_intercept):
    """Augmented Lagrangian outer loop (multiplier update, rho increase) around :func:`minimize`."""
    codes_np, nc = cells
    dev = design.device
    v = problem.sample_weight
    Vc = np.bincount(codes_np, weights=v, minlength=nc)
    codes = torch.as_tensor(codes_np, device=dev)
    cell_w = _tensor(v / Vc[codes_np], dev)
    obj = _AugLagObjective(y, q, lam2, d, codes, cell_w, nc, eps, minimax)
    if warm is not None and warm.multipliers is not None and len(warm.multipliers) == nc:
        obj.mult = _tensor(warm.multipliers, dev)
        obj.rho = float(obj.rho if warm.rho is None else warm.rho)
    theta = design.to_centered(_tensor(theta0, dev))
    if minimax:
        z = design.mv(theta[:d]) + theta[d]
        L, _, _ = obj.cell_losses(z)
        t0 = (float(warm.theta[d + 1]) if warm is not None and warm.theta is not None and len(warm.theta) == d + 2
              else float(L.max()))
        theta = torch.cat([theta, torch.tensor([t0], dtype=_F64, device=dev)])
    total_it = 0
    converged = False
    prev_viol = math.inf
    inner_tol = max(tol, 1e-3)
    for outer in range(60):
        res = minimize(design, obj, theta, fixed=fixed, tol=inner_tol, max_iter=max_iter)
        total_it += res.n_iter
        theta = res.theta
        L, _, _ = obj.cell_losses(res.z)
        h = L - (theta[d + 1] if minimax else eps)
        new_mult = torch.clamp(obj.mult + obj.rho * h, min=0.0)
        viol = float(torch.clamp(h, min=0.0).max())
        comp = float((new_mult * h).abs().max())
        if minimax:
            comp = max(comp, abs(float(new_mult.sum()) - 1.0))
        obj.mult = new_mult
        if viol <= tol and comp <= tol and res.converged and inner_tol <= tol:
            converged = True
            break
        if viol > 0.25 * prev_viol and viol > tol:
            obj.rho = min(obj.rho * 10.0, 1e10)
        prev_viol = viol
        inner_tol = max(tol, min(inner_tol, max(viol, comp)) * 0.1)
        if total_it >= max_iter * 5:
            break
    th = design.from_centered(theta).cpu().numpy()
    status = "optimal" if converged else "max_iter"
    if not converged and not minimax and viol > max(10 * tol, 1e-6):
        # decide infeasibility: the minimax head tells the smallest reachable largest loss
        mm = _AugLagObjective(y, q, lam2, d, codes, cell_w, nc, eps, True)
        best = _fit_minimax_value(design, mm, d, fixed, tol, max_iter)
        if best > eps + max(tol, 1e-6):
            raise InfeasibleConstraintError(MSG_INFEASIBLE_GROUP_LOSS.format(eps=eps, best=best))
    return Solution(coef=th[:d].copy(), intercept=float(th[d]), multipliers=obj.mult.cpu().numpy(),
                    status=status, solver="augmented-lagrangian-lbfgs", n_iter=total_it,
                    notes=[], state=WarmStart(theta=th, multipliers=obj.mult.cpu().numpy(), rho=obj.rho))


def _fit_minimax_value(design, obj, d, fixed, tol, max_iter):
    theta = torch.zeros(d + 2, dtype=_F64, device=design.device)
    z = design.mv(theta[:d]) + theta[d]
    L, _, _ = obj.cell_losses(z)
    theta[d + 1] = L.max()
    for _ in range(30):
        res = minimize(design, obj, theta, fixed=fixed, tol=max(tol, 1e-6), max_iter=max_iter)
        theta = res.theta
        L, _, _ = obj.cell_losses(res.z)
        h = L - theta[d + 1]
        obj.mult = torch.clamp(obj.mult + obj.rho * h, min=0.0)
        if float(torch.clamp(h, min=0).max()) < 1e-6:
            break
        obj.rho = min(obj.rho * 10, 1e10)
    return float(L.max())
