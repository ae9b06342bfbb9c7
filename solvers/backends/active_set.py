"""The optimizer of the torch backend: active-set L-BFGS with a bracketing line search.

:func:`minimize` solves

.. math::

    \\min_\\theta f(\\theta) \\quad \\text{s.t.} \\quad A\\theta \\le r, \\quad \\theta_j = 0 \\; (j \\in \\text{fixed}),

for an objective given by its value and its gradient in the scores ``z`` (one ``X^T`` product
turns it into the gradient in ``theta``) on a :class:`~solvers.backends.torch.Design` (in memory,
streamed from disk or data-parallel: the same products, so the same iterates). Directions are
L-BFGS steps (:class:`_CurvaturePairs`) in preconditioned coordinates, projected on the null space
of the working rows; the first row a step would cross joins the working set (the ratio test), and a
working row whose multiplier turns negative leaves it. Every piece is deterministic: the same
inputs give the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_F64 = torch.float64


class _CurvaturePairs:
    """The L-BFGS memory: the last ``memory`` pairs ``(s, y)`` and their ``rho = 1 / (y . s)``.

    :meth:`apply` is the two-loop recursion ``H g`` (Nocedal and Wright, algorithm 7.4) with
    ``H_0 = (s . y) / (y . y) I`` from the newest pair. Its scalars are Python floats and ``rho``
    is kept with its pair: the arithmetic of 0-d float64 tensors, at a fraction of torch's
    per-operation cost on small problems. On the CPU the updates ``q -= a y`` run on numpy views
    of the same memory (the same IEEE products and differences, at a fifth of a torch call's
    cost on vectors this short); the dot products stay torch's, whose BLAS sums in its own order.
    """

    def __init__(self, memory: int):
        self.memory = memory
        self.clear()

    def __bool__(self):
        return bool(self.S)

    def clear(self):
        self.S, self.Y, self.rho = [], [], []
        self._sy = []  # s . y of each pair, as computed to accept it
        self._views = []  # (s, y) as numpy views on the CPU, else the tensors
        self._h0 = None  # (s . y) / (y . y) of the newest pair

    def add(self, s: torch.Tensor, y: torch.Tensor, sy: float) -> None:
        """Keep the pair ``(s, y)``; ``sy``: its ``float(torch.dot(s, y))``, which the caller
        computed to accept it."""
        self.S.append(s)
        self.Y.append(y)
        self.rho.append(1.0 / float(torch.dot(y, s)))
        self._sy.append(sy)
        self._views.append((s.numpy(), y.numpy()) if s.device.type == "cpu" else (s, y))
        self._h0 = None
        if len(self.S) > self.memory:
            del self.S[0], self.Y[0], self.rho[0], self._sy[0], self._views[0]

    def export(self, working) -> "_KeptPairs":
        """``(S, Y, W)`` as a solve hands them on, with each pair's scalars for :meth:`restore`."""
        kept = _KeptPairs((list(self.S), list(self.Y), list(working)))
        kept.scalars = (list(self.rho), list(self._sy), list(self._views))
        return kept

    def restore(self, kept: "_KeptPairs") -> None:
        """The pairs of an earlier solve, taken as they are (the same tensors: the same dots)."""
        m = self.memory
        self.S, self.Y = list(kept[0][-m:]), list(kept[1][-m:])
        self.rho, self._sy, self._views = (list(x[-m:]) for x in kept.scalars)
        self._h0 = None

    def apply(self, g: torch.Tensor) -> torch.Tensor:
        q = g.clone()
        qv = q.numpy() if q.device.type == "cpu" else q  # the same memory as q
        alphas = []
        for s, (_, yv), rho in zip(reversed(self.S), reversed(self._views), reversed(self.rho)):
            a = rho * s.dot(q).item()  # torch.dot, at a sixth less overhead
            alphas.append(a)
            qv -= a * yv
        if self.S:
            if self._h0 is None:  # once per newest pair (a warm start adds up to ``memory`` at once)
                self._h0 = self._sy[-1] / float(torch.dot(self.Y[-1], self.Y[-1]))
            qv *= self._h0
        for a, yt, (sv, _), rho in zip(reversed(alphas), self.Y, self._views, self.rho):
            b = rho * yt.dot(q).item()
            qv += (a - b) * sv
        return q


class _KeptPairs(tuple):
    """``(S, Y, W)``: curvature pairs and their working set as :func:`minimize` hands them on,
    with ``scalars`` (each pair's ``rho``, ``s . y`` and views) for the next solve. Any copy
    (e.g. as numpy) is a plain tuple, whose scalars the next solve computes again."""

    scalars = None


class _Result:
    __slots__ = ("theta", "z", "working", "lam", "n_iter", "converged", "stationarity", "f", "pairs", "xtr")


def minimize(design, obj, theta, *, A=None, rhs=None, fixed=(), working=(), tol=1e-6, max_iter=1000,
             memory=20, c2=0.3, pairs=None, z0=None, precond=None, layout=None):
    """Active-set L-BFGS for ``min obj`` s.t. ``A theta <= rhs``, coordinates in ``fixed`` held.

    ``A`` rows must have unit norm. Returns a ``_Result`` with multipliers for every row of A.
    ``z0`` (optional) are the scores of ``theta`` when the caller already has them (a
    sequence of objectives on the same head); they save one product. ``precond`` (a
    :class:`~solvers.backends.torch.Preconditioner`) runs the quasi-Newton steps in
    ``phi = T^{-1} theta``: directions are projected on the working set's null space in ``phi``
    (rows ``A_W T``) and mapped back by ``T``; the stopping test, the multipliers and the ratio
    test stay in ``theta``, so the tolerance means the same with or without it. Curvature
    ``pairs`` live in ``phi``.

    ``layout`` maps ``theta`` to scores and back for heads with several score columns (the
    multinomial head: :class:`solvers.backends.torch_softmax.ClassBlocks`); ``None`` is the
    binary head ``theta = [w; b]`` with scores ``z = X w + b``.
    """
    solver = ActiveSetLBFGS(design, obj, A=A, rhs=rhs, fixed=fixed, tol=tol, memory=memory, c2=c2,
                            precond=precond, layout=layout)
    return solver.run(theta, working=working, max_iter=max_iter, pairs=pairs, z0=z0)


class ActiveSetLBFGS:
    """One solve of :func:`minimize`: the iterate, its gradient, the working set and the memory.

    Each iteration: stop where the projected gradient is within ``tol`` and every working row's
    multiplier is non-negative; drop a working row whose multiplier is negative (at once where
    the gradient leaves its face faster than the face's optimum is approached, each row at most
    once); else take the L-BFGS direction in the working set's null space, cut at the first row it
    would cross (the ratio test), and search along it (:func:`_line_search`). A row reached joins
    the working set.
    """

    def __init__(self, design, obj, *, A, rhs, fixed, tol, memory, c2, precond, layout):
        self.design, self.obj, self.A, self.rhs = design, obj, A, rhs
        self.fixed, self.tol, self.memory, self.c2 = fixed, tol, memory, c2
        self.Tm, self.layout = precond, layout
        self.d = design.d
        self.m = 0 if A is None else A.shape[0]
        self.mu = design.mu
        self.W = []  # the working rows of A
        self.Q = self.R = self.Qt = None  # the bases of the active rows (basis())
        self.xtr = self.gsum = None  # X^T gz at the current iterate and its intercept part (full_grad)

    # -- products ---------------------------------------------------------------------------
    def scores(self, th):
        if self.layout is not None:
            return self.layout.scores(self.design, th)
        return self.design.mv(th[: self.d]) + th[self.d]

    def full_grad(self, gz, gdir):
        """The gradient in theta from the objective's ``d/dz`` and direct parts (one ``X^T`` product)."""
        d = self.d
        if self.layout is not None:
            g, self.xtr, self.gsum = self.layout.grad(self.design, gz, gdir)
            return g
        self.xtr = self.design.rmv(gz)  # (X - mu)^T gz at the current iterate
        if self.cpu:  # numpy on the same memory: the same sums, in fewer calls
            gdir_n = gdir.numpy()
            gn = gdir_n.copy()
            gn[:d] += self.xtr.numpy()
            gn[d] += float(gz.sum())
            self.gsum = float(gn[d] - gdir_n[d])
            return torch.from_numpy(gn)
        g = gdir.clone()
        g[:d] += self.xtr
        g[d] += gz.sum()
        self.gsum = g[d] - gdir[d]
        return g

    # -- the working set ----------------------------------------------------------------------
    def _independent(self, k) -> bool:
        """Whether row ``k`` of ``A`` is independent of the working rows (and the fixed coordinates)."""
        rows = torch.cat([self.E, self.A[self.W + [k]]]) if (self.W or len(self.fixed)) else self.A[[k]]
        return torch.linalg.matrix_rank(rows, rtol=1e-10).item() == rows.shape[0]

    def _initial_working_set(self, theta, working):
        """The rows active at ``theta`` (independent ones, tightest first), then the requested
        ``working`` rows that are still active (a warm start)."""
        slack = self.rhs - self.A @ theta
        for k in torch.argsort(slack).tolist():
            if slack[k] <= 1e-10 * max(1.0, float(self.rhs.abs().max())) and self._independent(k):
                self.W.append(k)
        for k in working:
            if k not in self.W and float(slack[k]) <= 1e-10:
                rows = torch.cat([self.E, self.A[self.W + [k]]])
                if torch.linalg.matrix_rank(rows, rtol=1e-10).item() == rows.shape[0]:
                    self.W.append(k)

    def basis(self):
        """Orthonormal bases of the active rows in theta (``Q``, ``R``) and in phi (``Qt``)."""
        rows = torch.cat([self.E, self.A[self.W]]) if (self.m and self.W) else self.E
        if rows.shape[0] == 0:
            self.Q = self.R = self.Qt = None
            return
        self.Q, self.R = torch.linalg.qr(rows.t())
        self.Qt = self.Q if self.Tm is None else torch.linalg.qr(self.Tm.tt(rows.t()))[0]

    def working_multipliers(self, g):
        """``lambda_W = -R^{-1} Q^T g`` of the working rows (the fixed coordinates' left out)."""
        return -torch.linalg.solve_triangular(self.R, (self.Q.t() @ g)[:, None], upper=True)[len(self.fixed):, 0]

    # -- coordinates --------------------------------------------------------------------------
    def to_phi(self, g):  # a gradient in theta -> the gradient in phi
        return g if self.Tm is None else self.Tm.tt(g)

    def to_theta(self, v):  # a direction in phi -> the direction in theta
        return v if self.Tm is None else self.Tm.t(v)

    def projt(self, v):  # onto the working set's null space in phi
        return v if self.Qt is None else v - self.Qt @ (self.Qt.t() @ v)

    def proj(self, v):  # onto the working set's null space in theta
        return v if self.Q is None else v - self.Q @ (self.Q.t() @ v)

    def stat_measure(self, pg):
        """inf-norm of the projected gradient in the original (uncentred) coordinates."""
        d, mu = self.d, self.mu
        if self.layout is not None:
            return self.layout.stationarity(pg, mu)
        if mu is None:
            return float(pg.abs().max())
        if self.mu_cpu is not None:  # numpy on the same memory: the same products and sums, in fewer calls
            v = pg.numpy()
            u = np.abs(v)
            u[:d] = np.abs(v[:d] + self.mu_cpu * v[d])
            return float(u.max())
        return float(torch.cat((pg[:d] + mu * pg[d], pg[d:])).abs().max())

    # -- the solve ----------------------------------------------------------------------------
    def _start(self, theta, working, pairs, z0):
        """The start: ``theta`` with its fixed coordinates at 0, the initial working set, the
        objective and gradient there, and the warm curvature pairs (projected on the face)."""
        p = theta.numel()
        dev = self.dev = theta.device
        self.cpu = dev.type == "cpu"
        theta = theta.clone()
        # equality rows that never leave: fixed coordinates (e.g. no intercept)
        self.E = torch.zeros((len(self.fixed), p), dtype=_F64, device=dev)
        for k, j in enumerate(self.fixed):
            self.E[k, j] = 1.0
            theta[j] = 0.0
        if self.m:
            self._initial_working_set(theta, working)
        self.basis()
        self.mu_cpu = self.mu.numpy() if self.mu is not None and self.cpu else None
        z = self.scores(theta) if (z0 is None or len(self.fixed)) else z0
        f, gz, gdir = self.obj.eval(z, theta)
        g = self.full_grad(gz, gdir)
        self.mem = _CurvaturePairs(self.memory)
        if pairs is not None and sorted(pairs[2]) == sorted(self.W):
            self._restore_pairs(pairs)
        return theta, z, f, g

    def _restore_pairs(self, pairs):
        """Curvature pairs from the previous solve along a path: they stay valid on the same face."""
        if self.Qt is None and isinstance(pairs, _KeptPairs) and all(s_.device == self.dev for s_ in pairs[0]):
            self.mem.restore(pairs)  # nothing to project: the loop below would recompute the same scalars
            return
        for s_, y_ in zip(pairs[0], pairs[1]):
            s_ = self.projt(torch.as_tensor(s_, dtype=_F64, device=self.dev))
            y_ = self.projt(torch.as_tensor(y_, dtype=_F64, device=self.dev))
            sy = float(torch.dot(s_, y_))
            if sy > 0:
                self.mem.add(s_, y_, sy)

    def _release(self, g, pg_inf):
        """``(converged, released)`` at a point whose projected gradient is ``pg_inf``: converged
        where it is within tol and no working multiplier is negative; else a working row with a
        negative multiplier leaves (at tol; or at once, each row once, where the gradient leaves
        its face faster than the face's optimum is approached)."""
        tol = self.tol
        lamW = self.working_multipliers(g) if (self.Q is not None and self.W) else None
        kmin = None if lamW is None else int(torch.argmin(lamW))
        if pg_inf <= tol:
            if lamW is None or float(lamW[kmin]) >= -tol:
                return True, False
            self.W.pop(kmin)
            self.basis()
            self.mem.clear()
            return False, True
        if lamW is not None and float(lamW[kmin]) < -pg_inf and self.W[kmin] not in self.released:
            # an inactive bound hit by the first, about-Newton step from w = 0 cost a whole extra
            # solve. The pairs stay: they hold curvature along the face, a subspace of the new one
            self.released.add(self.W.pop(kmin))
            self.basis()
            return False, True
        return False, False

    def _direction(self, g, gt):
        """``(direction in phi, in theta, g . direction)``: L-BFGS on the face, or the projected
        (preconditioned) steepest descent where that is no descent direction."""
        direc_phi = self.projt(-self.mem.apply(gt))
        direc = self.to_theta(direc_phi)
        gd = float(torch.dot(g, direc))
        if not gd < 0:
            self.mem.clear()
            direc_phi = -gt
            direc = self.to_theta(direc_phi)
            gd = float(torch.dot(g, direc))
        return direc_phi, direc, gd

    def _ratio_test(self, theta, direc):
        """``(a_max, block)``: the longest step along ``direc`` before the first row off the working
        set is crossed, and that row (``inf, None`` where none is)."""
        if not self.m:
            return math.inf, None
        A = self.A
        Ad = A @ direc
        slack = torch.clamp(self.rhs - A @ theta, min=0.0)
        cand = Ad > 1e-12 * float(direc.abs().max())
        if self.W:
            cand[self.W] = False
        if not bool(cand.any()):
            return math.inf, None
        ratios = torch.where(cand, slack / torch.where(cand, Ad, torch.ones_like(Ad)), torch.full_like(Ad, math.inf))
        block = int(torch.argmin(ratios))
        return float(ratios[block]), block

    def run(self, theta, *, working, max_iter, pairs, z0):
        theta, z, f, g = self._start(theta, working, pairs, z0)
        mem = self.mem
        it = 0
        converged = False
        stall = 0
        passes = 0
        self.released = set()  # rows dropped before their face's optimum (each at most once: no cycling)
        gt = None  # the gradient in phi, projected: carried to the next iteration while g and the basis stay
        while it < max_iter and passes < 4 * max_iter + 100:
            passes += 1  # also counts working-set changes, which do not move (guards cycling)
            pg_inf = self.stat_measure(self.proj(g))
            converged, released = self._release(g, pg_inf)
            if converged:
                break
            if released:
                gt = None
                continue
            it += 1
            if gt is None:
                gt = self.projt(self.to_phi(g))
            direc_phi, direc, gd = self._direction(g, gt)
            Xd = self.scores(direc)
            a_max, block = self._ratio_test(theta, direc)
            if block is not None and a_max <= 0.0:
                # degenerate: an active row (slack 0) blocks at once; add it without moving
                self.W.append(block)
                self.basis()
                gt = None
                mem.clear()
                continue
            # preconditioned, the first step is about a Newton step already
            a0 = 1.0 if (mem or self.Tm is not None) else min(1.0, 1.0 / max(pg_inf, 1e-300))
            alpha, f_new, gz_new, gdir_new, theta_new, z_new = _line_search(self.obj, z, theta, Xd, direc, f, gd,
                                                                            a_max, a0, self.c2)
            if alpha <= 0.0:
                stall += 1
                mem.clear()
                if stall >= 2:
                    break
                continue
            stall = 0
            theta, z = theta_new, z_new  # theta + alpha direc and z + alpha Xd, as the line search made them
            if it % 50 == 0:  # refresh accumulated scores against drift
                z = self.scores(theta)
                f_new, gz_new, gdir_new = self.obj.eval(z, theta)
            g_new = self.full_grad(gz_new, gdir_new)
            if block is not None and alpha >= a_max:
                self.W.append(block)
                self.basis()
                mem.clear()
                gt = None
            else:
                gt = self._remember(alpha * direc_phi, gt, g_new)
            f, g = f_new, g_new
        return self._result(theta, z, f, g, it, converged)

    def _remember(self, step_phi, gt, g_new):
        """Add the pair ``(step, change of the projected gradient)`` where its curvature is clearly
        positive; returns the new projected gradient in phi (the next iteration's)."""
        gt_new = self.projt(self.to_phi(g_new))  # the next iteration's gt (the same g, the same basis)
        yv = gt_new - gt
        sy = float(torch.dot(step_phi, yv))
        if sy > 1e-12 * float(torch.dot(step_phi, step_phi)) ** 0.5 * float(torch.linalg.vector_norm(yv)):
            self.mem.add(step_phi, yv, sy)
        return gt_new

    def _result(self, theta, z, f, g, it, converged):
        """The solve's :class:`_Result`, with multipliers for every row (zeros off the working set)."""
        W, mu = self.W, self.mu
        lam = torch.zeros(self.m, dtype=_F64, device=self.dev)
        if self.m and W and self.Q is not None:
            lam_all = -torch.linalg.solve_triangular(self.R, (self.Q.t() @ g)[:, None], upper=True)[:, 0]
            lam[W] = lam_all[len(self.fixed):]
        res = _Result()
        res.theta, res.z, res.working, res.lam, res.n_iter = theta, z, list(W), lam, it
        res.converged, res.stationarity, res.f = converged, self.stat_measure(self.proj(g)), f
        res.pairs = self.mem.export(W)
        # X^T gz (uncentred) at the returned theta: g is always the gradient at the current iterate
        if self.layout is not None:
            res.xtr = self.xtr + (torch.outer(mu, self.gsum) if mu is not None else 0.0)
        else:
            res.xtr = self.xtr + (mu * self.gsum if mu is not None else 0.0)
        return res


def _line_search(obj, z, theta, Xd, direc, f0, d0, a_max, a0, c2, max_eval=30):
    """Bracketing secant search on the convex 1-D function phi(a) = obj(theta + a d).

    Accepts ``a`` with ``phi(a) <= phi(0)`` and ``|phi'(a)| <= c2 |phi'(0)|``, or ``a_max``
    when phi still decreases there (the step reaches a constraint). Returns ``(a, phi(a), gz,
    gdir, theta + a d, z + a Xd)``: the objective's pieces at the accepted point, and the point
    and its scores (the caller's next iterate; ``None`` with ``a = 0``).
    """

    cpu = theta.device.type == "cpu"

    def phi(a):
        # on the CPU the (d + 1)-vector step in numpy: the same products and sums, in fewer calls
        th = torch.from_numpy(theta.numpy() + a * direc.numpy()) if cpu else theta + a * direc
        za = z + a * Xd
        val, gz, gdir = obj.eval(za, th)
        # scores of several columns (multinomial) are flattened: a view, the binary bits unchanged
        der = (float(torch.dot(gz if gz.ndim == 1 else gz.reshape(-1), Xd if Xd.ndim == 1 else Xd.reshape(-1)))
               + float(torch.dot(gdir, direc)))
        return val, der, gz, gdir, th, za

    lo, dlo = 0.0, d0
    hi, dhi = None, None
    a = min(a0, a_max)
    best = (0.0, f0, None, None, None, None)
    for _ in range(max_eval):
        val, der, gz, gdir, th, za = phi(a)
        ok_val = val <= f0 + 1e-15 * abs(f0)
        if ok_val and abs(der) <= c2 * abs(d0):
            return a, val, gz, gdir, th, za
        if der < 0 and ok_val:
            best = (a, val, gz, gdir, th, za)
            if a >= a_max:
                return best
            lo, dlo = a, der
            if hi is None:
                a = min(4.0 * a, a_max)
                continue
        else:
            hi, dhi = a, der
        # secant on phi' inside [lo, hi], safeguarded
        width = hi - lo
        a_new = lo - dlo * width / (dhi - dlo) if dhi > dlo else 0.5 * (lo + hi)
        # where the value rose, at most half the bracket: the secant alone shrinks it by only a
        # few percent a step when phi' saturates (a step 60x too long on nearly separable 2,048-d
        # embeddings: 30 evaluations never left [0.2, 1] and the fit stopped at w = 0)
        a = min(max(a_new, lo + 0.05 * width), hi - 0.05 * width if ok_val else lo + 0.5 * width)
        if width <= 1e-16 * max(1.0, hi):
            break
    return best


__all__ = ["ActiveSetLBFGS", "minimize"]
