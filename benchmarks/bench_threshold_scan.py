"""The binary threshold scan (``solvers.threshold``) against the scan before issue 19's third pass.

``ThresholdSearch.scan`` sums each gap row and the error in score order with torch's in-order CPU
``cumsum`` (numpy's ``cumsum`` before: the same additions in the same order, the same bits) and
forms the midpoints as one vector. This script times it against ``numpy_scan`` (the previous
arithmetic, kept here as the reference) on Adult's size (30162 rows, scores with a few ties, as
a fitted head's are) for K = 2, 4, 8 gap rows (``dp`` 2 groups, ``eo`` 2 groups, ``eo`` 4
groups), alternating, each the least CPU time (``time.process_time``: the machine is shared) of
``--repeats`` rounds of 30 scans, at one torch thread, and checks that both give the same bits. A
search's own memo is off (every scan sorts).

The script runs itself under glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` at 64 / 256
MiB: a path's scans reuse heap the process already holds (no page faults, measured on Adult's
paths), while a loop of scans alone hands each (K + 1) x n block back to the kernel and faults it in
again (about 1000 faults a scan at K = 4), which times the kernel, not the scan.

    OMP_NUM_THREADS=1 python benchmarks/bench_threshold_scan.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from solvers import threshold  # noqa: E402
from solvers.constraints import make_constraint  # noqa: E402

N = 30162  # Adult's fit split


def numpy_scan(search, s):
    """``(cuts, errors, gaps)`` as the scan computed them before (numpy running sums)."""
    K = search._steps.shape[0] - 1
    order = np.argsort(-s)
    ss = np.take(s, order)
    ends = np.flatnonzero(ss[:-1] > ss[1:]) + 1
    lengths = np.concatenate([[0], ends, [len(s)]])
    cum_g = np.take(search._steps[:K], order, axis=1)
    np.cumsum(cum_g, axis=1, out=cum_g)
    cum_e = np.cumsum(np.take(search._steps[K], order))
    inner = lengths[1:] - 1
    gaps = np.empty((K, len(lengths)))
    gaps[:, 0] = search._start[:K]
    np.add(search._start[:K, None], np.take(cum_g, inner, axis=1), out=gaps[:, 1:])
    errors = np.empty(len(lengths))
    errors[0] = search._start[K]
    errors[1:] = search._start[K] + np.take(cum_e, inner)
    cuts = np.empty(len(lengths))
    cuts[0] = ss[0]
    cuts[1:-1] = 0.5 * (ss[ends - 1] + ss[ends])
    cuts[-1] = ss[-1] - max(1.0, abs(ss[-1]))
    return cuts, errors, gaps.T


def case(constraint, n_groups, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N).astype(np.float64)
    g = rng.integers(0, n_groups, N)
    v = np.ones(N)
    mom = make_constraint(constraint).moments(y, g, v, tuple(range(n_groups)))
    s = rng.normal(size=N) + y
    s[rng.integers(0, N, 24)] = s[rng.integers(0, N, 24)]  # a few tied scores (duplicate rows)
    return threshold.ThresholdSearch(mom, y, v), s


def timed(fn, scans=30):
    t = time.process_time()
    for _ in range(scans):
        fn()
    return (time.process_time() - t) / scans


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    threshold.MEMO_SCANS = 0  # time the scans themselves
    print(f"{'case':>16} {'K':>2} {'before ms':>9} {'now ms':>7} {'ratio':>6}  same bits")
    for label, constraint, groups in (("dp, 2 groups", "dp", 2), ("eo, 2 groups", "eo", 2), ("eo, 4 groups", "eo", 4)):
        search, s = case(constraint, groups)
        now = search._scan(s)
        same = all(np.array_equal(a, b) for a, b in zip((now.cuts, now.errors, now.gaps), numpy_scan(search, s)))
        before, after = [], []
        for _ in range(args.repeats):  # alternating: a shared machine drifts
            before.append(timed(lambda: numpy_scan(search, s)))
            after.append(timed(lambda: search._scan(s)))
        b, a = min(before), min(after)
        print(f"{label:>16} {search._steps.shape[0] - 1:>2} {b * 1e3:9.3f} {a * 1e3:7.3f} {a / b:6.2f}  {same}")


if __name__ == "__main__":
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:  # see the module docstring
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 << 20), MALLOC_TRIM_THRESHOLD_=str(256 << 20))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    main()
