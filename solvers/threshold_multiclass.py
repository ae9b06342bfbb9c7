"""The per-class offset (intercept) search of a K-class rate head.

A K-class head predicts :math:`\\hat y_i(o) = \\arg\\max_k (z_{ik} + o_k)` for its scores
:math:`Z \\in \\mathbb{R}^{n \\times K}` and per-class logit offsets :math:`o` (adding :math:`o`
to the intercepts; :math:`o_0 = 0`, since adding one constant to every class changes no
prediction). Every K-class rate gap is linear in the one-hot predictions,
:math:`\\gamma_r(\\hat y) = \\sum_i M_{ri} [\\hat y_i = c_r]`
(:class:`~solvers.constraints.ClassRateMoments`), and so is the weighted error
:math:`\\mathrm{err}(\\hat y) = \\frac1V \\sum_i v_i [\\hat y_i \\ne y_i]`. This module chooses

.. math::

    o^\\star \\in \\arg\\min_{o,\\ o_0 = 0} \\mathrm{err}(\\hat y(o))
    \\quad\\text{s.t.}\\quad \\max_r |\\gamma_r(\\hat y(o))| \\le \\varepsilon

(and, where no offset it reaches meets :math:`\\varepsilon`, the smallest largest gap).

The exact problem is combinatorial in the K - 1 free offsets, so the search is by **coordinates**:
one class ``c`` at a time, the others fixed. Along one coordinate, row ``i`` predicts ``c`` iff
:math:`o_c > \\beta_i = \\max_{k \\ne c}(z_{ik} + o_k) - z_{ic}`, and otherwise its best other class
:math:`j_i` (which does not depend on :math:`o_c`): each row's prediction changes at one
breakpoint. Sorting the breakpoints once in increasing order, the rows predicting ``c`` at any
:math:`o_c` are a prefix of that order, and the gaps and the error of every prefix are
cumulative sums (the binary threshold scan of :mod:`solvers.threshold`, one coordinate at a time):

.. math::

    \\gamma_r(p) = \\gamma_r(j) + \\sum_{q \\le p} M_{r\\pi_q}\\bigl([c_r = c] - [c_r = j_{\\pi_q}]\\bigr), \\qquad
    \\mathrm{err}(p) = \\mathrm{err}(j) + \\sum_{q \\le p} \\frac{v_{\\pi_q}}{V}
    \\bigl([c \\ne y_{\\pi_q}] - [j_{\\pi_q} \\ne y_{\\pi_q}]\\bigr),

O(n log n + R n) per coordinate. Only prefixes that end between two distinct breakpoints are
reachable; their offset is the midpoint between the two (below the first or above the last by a
unit at least).

The search starts at :math:`o = 0` (the head as fitted) and sweeps the coordinates
``0, 1, ..., K - 1`` (moving class 0 is moving every other class the opposite way: the offsets
are renormalised to :math:`o_0 = 0` after each move) in turn until K visits in a row improve
nothing. A move is taken only when it strictly improves, judged from the **hard predictions**
:math:`\\arg\\max_k(z_{ik} + o_k)` recomputed in float64 (the rate moments' own ``gaps``): a
head meeting the bound first has the least error, otherwise the least largest gap, then the
least error. Each move strictly improves a function of the predictions, of which there are
finitely many, so the search ends; it is deterministic, and never worse than :math:`o = 0`. It
is a local search: a coordinatewise optimum need not be the global one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .threshold import ThresholdScan

#: rounds over the K coordinates at most (the search ends earlier: once K visits in a row improve nothing)
MAX_ROUNDS = 20
#: ``False``: every head is judged at ``o = 0`` (the K-class reduction as it was; benchmarks compare the two)
OFFSET_STAGE = True


@dataclass(frozen=True)
class OffsetChoice:
    """Per-class offsets ``o`` (``o[0] == 0``) of a head, and the weighted error and gaps of its
    hard predictions ``argmax(Z + o)``; ``moves`` coordinate moves led there from ``o = 0``."""

    offsets: np.ndarray  # (K,)
    error: float
    gaps: np.ndarray  # (R,)
    moves: int = 0

    @property
    def max_gap(self) -> float:
        return float(np.abs(self.gaps).max()) if self.gaps.size else 0.0

    def key(self, bound: float) -> tuple:
        """What the search minimises: meeting ``bound`` first, then the error; else the gap, then the error."""
        return (0, self.error, 0.0) if self.max_gap <= bound else (1, self.max_gap, self.error)


class OffsetSearch:
    """The coordinate search of the module docstring for one problem's K-class rate moments;
    built once, applied to many heads.

    Parameters
    ----------
    moments : ClassRateMoments
        ``gaps_r = M_r @ [yhat = classes_r]``.
    y : (n,) array of class codes ``0 .. K - 1``
    sample_weight : (n,) array
        The fit split's weights ``v``.
    fit_intercept : bool, default True
        ``False``: the head has no intercepts to move, :meth:`choose` judges it at ``o = 0``.
    """

    def __init__(self, moments, y: np.ndarray, sample_weight: np.ndarray, fit_intercept: bool = True):
        self.mom = moments
        self.fit_intercept = bool(fit_intercept)
        self.K = int(moments.n_classes)
        self.y = np.asarray(y).astype(np.int64)
        self._v = np.asarray(sample_weight, dtype=np.float64)
        self._V = float(self._v.sum())
        self._w = self._v / self._V
        self.n = self.y.shape[0]
        # (K, R): whether gap row r is about class k; M as (n, R) rows, gathered in score order by the scans
        self._about = (np.arange(self.K)[:, None] == np.asarray(moments.classes)[None, :]).astype(np.float64)
        self._MT = np.ascontiguousarray(np.asarray(moments.M, dtype=np.float64).T)

    def _check(self, Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.shape != (self.n, self.K) or not np.isfinite(Z).all():
            raise ValueError(f"offset search needs ({self.n}, {self.K}) finite scores; got shape {Z.shape}")
        return Z

    def evaluate(self, Z: np.ndarray, offsets: np.ndarray, moves: int = 0) -> OffsetChoice:
        """The error and gaps of the hard predictions ``argmax(Z + offsets)`` (float64, first class on ties)."""
        return self._evaluate(self._check(Z), offsets, moves)

    def _evaluate(self, Z, offsets, moves=0):
        o = np.asarray(offsets, dtype=np.float64)
        yhat = np.argmax(Z + o, axis=1)
        # the error as the reductions compute it: at o = 0 the same bits as theirs
        return OffsetChoice(o.copy(), float((self._v * (yhat != self.y)).sum() / self._V), self.mom.gaps(yhat), moves)

    def scan(self, Z: np.ndarray, offsets: np.ndarray, c: int) -> ThresholdScan:
        """Every reachable value of ``offsets[c]`` (the others fixed) with its error and gaps.

        ``cuts`` holds the offsets **relative to** ``offsets[c]`` (so :meth:`ThresholdScan.best`
        breaks ties toward the smallest move), in increasing order.
        """
        return self._scan(self._check(Z), np.asarray(offsets, dtype=np.float64), int(c))

    def _scan(self, Z, o, c):
        others = Z + o
        others[:, c] = -np.inf
        j = np.argmax(others, axis=1)  # each row's prediction while it does not predict c
        beta = others[np.arange(self.n), j] - Z[:, c]  # row i predicts c iff o_c > beta_i
        order = np.argsort(beta)  # any order of tied breakpoints: prefixes inside a tie are skipped
        bs = beta[order]
        ends = np.flatnonzero(bs[:-1] < bs[1:]) + 1
        lengths = np.concatenate([[0], ends, [self.n]])
        # the rows' moves from class j_i to c, in that order: error and gaps (no row predicts c at the start)
        js, ys = j[order], self.y[order]
        step_err = self._w[order] * ((ys != c).astype(np.float64) - (ys != js))
        step_gaps = self._MT[order]  # (n, R)
        step_gaps *= self._about[c] - self._about[js]
        np.cumsum(step_gaps, axis=0, out=step_gaps)
        err0 = float(self._w[j != self.y].sum())
        gaps0 = self.mom.gaps(j)
        errors = np.empty(len(lengths))
        gaps = np.empty((len(lengths), gaps0.shape[0]))
        errors[0], gaps[0] = err0, gaps0
        inner = lengths[1:] - 1
        errors[1:] = err0 + np.cumsum(step_err)[inner]
        np.add(gaps0, step_gaps[inner], out=gaps[1:])
        cuts = np.empty(len(lengths))
        cuts[0] = bs[0] - max(1.0, abs(bs[0]))
        cuts[1:-1] = 0.5 * (bs[ends - 1] + bs[ends])
        cuts[-1] = bs[-1] + max(1.0, abs(bs[-1]))
        return ThresholdScan(cuts=cuts - o[c], errors=errors, gaps=gaps)

    def choose(self, Z: np.ndarray, bound: float, max_rounds: int = MAX_ROUNDS) -> OffsetChoice:
        """The coordinate search from ``o = 0`` (module docstring): the offsets of ``Z``'s head
        with the least error meeting ``bound``, else with the smallest largest gap.

        The coordinates are visited in turn ``0, 1, ..., K - 1, 0, ...`` until K in a row (the
        one just moved counting as one) bring no improvement, or ``max_rounds * K`` visits.
        """
        Z = self._check(Z)
        best = self._evaluate(Z, np.zeros(self.K))
        if not (self.fit_intercept and OFFSET_STAGE):
            return best
        idle = 0
        for visit in range(max_rounds * self.K):
            c = visit % self.K
            sc = self._scan(Z, best.offsets, c)
            pick = sc.best(bound) or sc.smallest_gap()
            trial = None
            if pick.cut != 0.0:
                o = best.offsets.copy()
                o[c] += pick.cut
                trial = self._evaluate(Z, o - o[0], best.moves + 1)
            if trial is not None and trial.key(bound) < best.key(bound):
                best, idle = trial, 1
            else:
                idle += 1
            if idle >= self.K:
                break
        return best


def choose_offsets(Z, y, sample_weight, moments, bound, *, search: OffsetSearch | None = None) -> OffsetChoice:
    """The per-class offsets of the head with scores ``Z`` (see the module docstring); ``search``
    reuses an :class:`OffsetSearch` of the same problem."""
    search = search or OffsetSearch(moments, y, sample_weight)
    return search.choose(Z, bound)


__all__ = ["MAX_ROUNDS", "OFFSET_STAGE", "OffsetChoice", "OffsetSearch", "choose_offsets"]
