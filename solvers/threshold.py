"""The exact threshold (intercept) search of a binary rate head.

A head predicts :math:`\\hat y_i = [s_i > t]` for its scores :math:`s` and a threshold
:math:`t` (moving the threshold is moving the intercept, :math:`b' = b - t`). Every rate gap
is linear in the predictions, :math:`\\gamma(\\hat y) = M(a \\circ \\hat y + b_0)`
(:class:`~solvers.constraints.RateMoments`), and so is the weighted error,
:math:`\\mathrm{err}(\\hat y) = \\frac1V \\sum_i v_i y_i + \\sum_i \\hat y_i\\, v_i (1 - 2 y_i) / V`.
Both are therefore **step functions of t**: sort the scores once in decreasing order; the
predictions of every threshold are a prefix of that order, and the gaps and the error of every
prefix are cumulative sums,

.. math::

    \\gamma(j) = M b_0 + \\sum_{r \\le j} (M a)_{\\cdot, \\pi_r}, \\qquad
    \\mathrm{err}(j) = \\mathrm{err}(0) + \\sum_{r \\le j} \\frac{v_{\\pi_r}(1 - 2y_{\\pi_r})}{V},

O(n log n) for the sort and O(K n) for the sums. Only prefixes that end between two distinct
scores are reachable by a threshold (tied scores are predicted alike). The threshold of a
prefix is the midpoint between its last score and the next one, so float rounding of the
scores moves no prediction unless two distinct scores are within rounding of each other; the
chosen head is checked afterwards with its exact hard predictions anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading
import weakref
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class ThresholdChoice:
    """One threshold of a head: predict 1 where ``score > cut``; its weighted error and gaps."""

    cut: float
    error: float
    gaps: np.ndarray  # (K,)

    @property
    def max_gap(self) -> float:
        return float(np.abs(self.gaps).max()) if self.gaps.size else 0.0


@dataclass(frozen=True)
class ThresholdScan:
    """Every reachable threshold of one score vector, in decreasing order of ``cuts``."""

    cuts: np.ndarray  # (m,)
    errors: np.ndarray  # (m,)
    gaps: np.ndarray  # (m, K)
    #: the scanned scores in decreasing order (their order statistics, for whoever needs them next)
    ordered: np.ndarray | None = None

    @cached_property
    def max_gaps(self) -> np.ndarray:
        # over the rows of ``gaps.T``: contiguous where the scan built ``gaps`` as a (K, m) array's view
        return np.abs(self.gaps.T).max(axis=0) if self.gaps.shape[1] else np.zeros(len(self.cuts))

    def _pick(self, j: int) -> ThresholdChoice:
        return ThresholdChoice(float(self.cuts[j]), float(self.errors[j]), self.gaps[j].copy())

    def best(self, bound: float) -> ThresholdChoice | None:
        """The most accurate threshold whose largest gap is at most ``bound`` (ties: the one
        nearest ``t = 0``, the head as fitted), or ``None`` when no threshold meets it."""
        ok = np.flatnonzero(self.max_gaps <= bound)
        if not ok.size:
            return None
        err = self.errors[ok]
        ties = ok[err == err.min()]
        return self._pick(int(ties[np.argmin(np.abs(self.cuts[ties]))]))

    def smallest_gap(self) -> ThresholdChoice:
        """The threshold with the smallest largest gap (ties: the more accurate, then nearest 0)."""
        mg = self.max_gaps
        j = np.lexsort((np.abs(self.cuts), self.errors, mg))[0]
        return self._pick(int(j))


def cumsum_rows(a: np.ndarray) -> np.ndarray:
    """The running sums of ``a`` (float64, C-contiguous) along its last axis, in place.

    torch's CPU ``cumsum`` adds each row's entries one after another, in order, like numpy's: the
    same bits, at about a quarter of numpy's time (numpy's accumulate loop does not keep the
    adder busy). ``a`` comes back, summed.
    """
    import torch

    torch.from_numpy(a).cumsum_(dim=-1)
    return a


#: a :class:`ThresholdSearch` keeps its last scans (by their scores) up to this many, ...
MEMO_SCANS = 4
#: ... and while they take at most this many bytes: a path's heads repeat scores (the previous
#: head, adopted or re-checked at the next bound), small tables often, large ones rarely
MEMO_BYTES = 64 << 20


class ThresholdSearch:
    """The threshold scan of one problem's rate moments; built once, applied to many heads.

    It remembers its last scans (:data:`MEMO_SCANS`): the same scores (bit for bit) give the same
    scan, which is handed out again (its arrays read-only) instead of sorting again.

    Parameters
    ----------
    moments : RateMoments
        ``gaps = M @ (a * yhat + b0)``.
    y, sample_weight : (n,) arrays
        The fit split's 0/1 labels and weights ``v``.
    """

    def __init__(self, moments, y: np.ndarray, sample_weight: np.ndarray):
        y_in, w_in = y, sample_weight
        v = np.asarray(sample_weight, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        V = float(v.sum())
        K, self.n = moments.M.shape[0], y.shape[0]
        # (K + 1, n): the gaps' move per yhat_i = 1 (rows 0..K-1) and the error's (row K), a column
        # per sample: a scan gathers columns in score order and sums each row (long contiguous rows)
        self._steps = np.empty((K + 1, self.n))
        np.multiply(moments.M, moments.a, out=self._steps[:K])
        self._steps[K] = v * (1.0 - 2.0 * y) / V
        # all predictions 0: the gaps and the error
        self._start = np.append(moments.M @ moments.b0, float((v * y).sum() / V))
        self._memo = []  # (scores, scan), the latest first
        self._lock = threading.Lock()
        self._memo_size = MEMO_SCANS if MEMO_SCANS * self.n * (K + 6) * 8 <= MEMO_BYTES else 0
        # what it was built from, by identity: the same (unchanged) arrays give the same steps
        self._sources = (moments, moments.M, moments.a, moments.b0, y_in, w_in)

    def built_from(self, moments, y, sample_weight) -> bool:
        """Whether it was built from these very objects (so it scans with their steps)."""
        return all(a is b for a, b in zip(self._sources, (moments, moments.M, moments.a, moments.b0, y,
                                                           sample_weight)))

    def same_problem(self, other: "ThresholdSearch") -> bool:
        """Whether ``other`` scans with the same steps (bit for bit): then it gives the same scans."""
        return (self.n == other.n and np.array_equal(self._start, other._start)
                and self._steps.shape == other._steps.shape and np.array_equal(self._steps, other._steps))

    def scan(self, scores: np.ndarray) -> ThresholdScan:
        """All reachable thresholds of ``scores`` with their errors and gaps (see module docstring)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (self.n,) or not np.isfinite(s).all():
            raise ValueError(f"threshold scan needs {self.n} finite scores; got shape {s.shape}")
        sc = self.remembered(s)
        if sc is not None:
            return sc
        sc = self._scan(s)
        if self._memo_size:
            for a in (sc.cuts, sc.errors, sc.gaps, sc.ordered):
                a.flags.writeable = False  # handed out again: nobody may change it
            with self._lock:
                self._memo = [(s.copy(), sc)] + self._memo[: self._memo_size - 1]
        return sc

    def remembered(self, scores: np.ndarray) -> ThresholdScan | None:
        """The remembered scan of ``scores`` (bit for bit), or ``None``: no sort either way."""
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (self.n,):
            return None
        with self._lock:  # a path's search may be shared by threads
            for i, (seen, sc) in enumerate(self._memo):
                # a probe of three entries first: a different head almost always differs there
                probe = seen[0] == s[0] and seen[-1] == s[-1] and seen[self.n // 2] == s[self.n // 2]
                if probe and np.array_equal(seen, s):
                    self._memo.insert(0, self._memo.pop(i))
                    return sc
        return None

    def _scan(self, s):
        order = np.argsort(-s)  # any order of tied scores: prefixes inside a tie are skipped
        ss = np.take(s, order)  # np.take: several times faster than fancy indexing for a gather
        # prefix lengths j that end between two distinct scores (and j = 0, j = n)
        ends = np.flatnonzero(ss[:-1] > ss[1:]) + 1
        cum = cumsum_rows(np.take(self._steps, order, axis=1))  # (K + 1, n): each row summed in score order
        m = len(ends) + 2
        out = np.empty((len(self._start), m))  # the gaps (rows 0..K-1, handed out as an (m, K) view), the errors
        out[:, 0] = self._start
        mids = ss[:-1] + ss[1:]  # the midpoint between neighbours, 0.5 (a + b) as a whole vector:
        mids *= 0.5  # contiguous, and the same bits as gathered first
        cuts = np.empty(m)
        if m == self.n + 1:  # no tied scores: every prefix is reachable, the gathers are the identity
            np.add(self._start[:, None], cum, out=out[:, 1:])
            cuts[1:-1] = mids
        else:
            inner = np.append(ends - 1, self.n - 1)  # the last index of each reachable prefix
            np.add(self._start[:, None], np.take(cum, inner, axis=1), out=out[:, 1:])
            cuts[1:-1] = np.take(mids, ends - 1)
        # a threshold strictly between the prefix's last score and the next one; none above the top
        # score is needed (``s > ss[0]`` is never true) and one below the last by a unit at least
        cuts[0] = ss[0]
        cuts[-1] = ss[-1] - max(1.0, abs(ss[-1]))
        return ThresholdScan(cuts=cuts, errors=out[-1], gaps=out[:-1].T, ordered=ss)

    def choose(self, scores: np.ndarray, bound: float) -> ThresholdChoice:
        """The most accurate threshold meeting ``bound``, else the one with the smallest gap."""
        sc = self.scan(scores)
        return sc.best(bound) or sc.smallest_gap()


_SHARED = weakref.WeakKeyDictionary()  # owner -> its last ThresholdSearch


def shared_search(owner, moments, y: np.ndarray, sample_weight: np.ndarray) -> ThresholdSearch:
    """A :class:`ThresholdSearch` of ``moments``: ``owner``'s last one where it scans with the same
    steps (its remembered scans with it), else a new one, remembered for ``owner`` while it lives.

    A path's heads share one design (``owner``) and, where the rows do not depend on the bound,
    the same moments: the previous bound's head, adopted or re-checked at the next, is not
    sorted again.
    """
    try:
        old = _SHARED.get(owner)
    except TypeError:  # an owner without weak references: nothing is shared
        return ThresholdSearch(moments, y, sample_weight)
    if old is not None and old.built_from(moments, y, sample_weight):  # the same arrays: no steps to compare
        return old
    new = ThresholdSearch(moments, y, sample_weight)
    if old is not None and old.same_problem(new):
        return old
    _SHARED[owner] = new
    return new


__all__ = ["MEMO_BYTES", "MEMO_SCANS", "ThresholdChoice", "ThresholdScan", "ThresholdSearch", "cumsum_rows",
           "shared_search"]
