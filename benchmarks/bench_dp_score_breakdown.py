"""Where a ``dp-score`` fit's time goes beyond an unconstrained fit's (issue 23 item 4), at one BLAS thread.

On Adult (``benchmarks/real_tables.py``, sensitive ``sex``) and the 20,000 x 512 embedding-like table, in one
process, alternating ``--repeats`` rounds after a warm-up (medians):

* the fit times of ``FairLogisticRegression(tol=T)`` and ``(constraint="dp-score", eps=EPS, tol=T)``;
* each fit's iterations (``n_iter_``) and passes over ``X`` (``certificate_.passes``);
* the constraint rows' construction alone (``LinearScoreConstraint.linear_form(...,
  from_cells=True)``, as the torch backend builds them: the cells' float64 sums, combined), the one piece of set-up an unconstrained fit does not do, next to the
  product it replaced (``m_k @ X`` with a float64 copy of each block, ``xt_dot(X, M.T)``);
* a ``dp-score`` fit whose bound ends inactive (``--inactive``, default eps 10): it should cost
  about what the unconstrained fit costs.

The excess ``dp - unconstrained`` splits into the rows' construction plus the extra iterations (each
about two passes, ``passes / n_iter``) plus the rest (active-set work, validation).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_dp_score_breakdown.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench_defaults import tables  # noqa: E402
from solvers import FairLogisticRegression  # noqa: E402
from solvers._linalg import xt_dot  # noqa: E402
from solvers.constraints import DemographicParityScore  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def breakdown(X, y, a, eps, tol, repeats, inactive):
    """Median milliseconds of each piece, and the fits' iterations and passes."""
    labels, groups = np.unique(np.asarray(a), return_inverse=True)
    weights = np.ones(len(y))
    M, _ = DemographicParityScore().functionals(y, groups, weights, labels)
    pieces = {
        "unconstrained fit": lambda: FairLogisticRegression(tol=tol).fit(X, y),
        "dp-score fit": lambda: FairLogisticRegression(constraint="dp-score", eps=eps, tol=tol)
        .fit(X, y, sensitive_features=a),
        "inactive dp fit": lambda: FairLogisticRegression(constraint="dp-score", eps=inactive, tol=tol)
        .fit(X, y, sensitive_features=a),
        "rows (linear_form)": lambda: DemographicParityScore().linear_form(X, y, groups, weights, labels,
                                                                           from_cells=True),
        "rows, M @ X float64": lambda: xt_dot(X, M.T),
    }
    for fn in pieces.values():
        fn()  # warm-up
    times, outs = {k: [] for k in pieces}, {}
    for _ in range(repeats):
        for key, fn in pieces.items():
            seconds, outs[key] = timed(fn)
            times[key].append(seconds)
    counts = {k: (m.n_iter_, m.certificate_.passes) for k, m in outs.items() if k.endswith("fit")}
    return {k: 1000 * statistics.median(v) for k, v in times.items()}, counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.02)
    parser.add_argument("--inactive", type=float, default=10.0, help="a bound that ends inactive")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--tables", nargs="+", default=["adult", "20000x512"])
    args = parser.parse_args(argv)
    with threadpool_limits(1, user_api="blas"):
        for name, X, y, a in tables(args.tables):
            ms, counts = breakdown(X, y, a, args.eps, args.tol, args.repeats, args.inactive)
            print(f"{name} {X.shape[0]} x {X.shape[1]} (1 BLAS thread)")
            for key, value in ms.items():
                it = f"  {counts[key][0]} it, {counts[key][1]} passes" if key in counts else ""
                print(f"  {key:20s} {value:8.1f} ms{it}")
            excess = ms["dp-score fit"] - ms["unconstrained fit"]
            print(f"  dp excess {excess:.1f} ms: rows {ms['rows (linear_form)']:.1f} ms "
                  f"({ms['rows (linear_form)'] / excess:.0%}), the rest iterations and active-set work")
            print(f"  rows from cell sums / M @ X in float64: {ms['rows (linear_form)'] / ms['rows, M @ X float64']:.2f}x; "
                  f"inactive / unconstrained fit: {ms['inactive dp fit'] / ms['unconstrained fit']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
