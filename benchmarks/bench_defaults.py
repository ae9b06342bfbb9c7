"""Fits at defaults against scikit-learn at its defaults: time, and how close each gets to the optimum.

On Adult (``benchmarks/real_tables.py``, 30,162 x ~100) and a 20,000 x 512 embedding-like table,
side by side in one process, alternating ``--repeats`` rounds (medians):

* ``sklearn``: ``LogisticRegression()`` (lbfgs, ``tol=1e-4``, ``max_iter=100``);
* ``fairhead tol=T``: ``FairLogisticRegression(tol=T)`` (the torch backend, unconstrained) for
  each ``T`` in ``--tols`` (the default is 1e-6);
* with ``--dp-score EPS``, ``fairhead dp-score tol=T``: the same with ``constraint="dp-score"``
  (sensitive: Adult's ``sex``; the synthetic table's group), timed only: its objective is another.

For each: median seconds, the ratio to scikit-learn, the objective's excess over the best
objective any of them reached (scikit-learn's objective on mean form: mean log-loss plus
``||w||^2 / (2 C n)``), and the fraction of rows whose prediction differs from the best fit's.
This is the evidence behind the default tolerance (see ``FairLogisticRegression``'s ``tol``).

``--threads 1 2`` runs every fit at each BLAS thread count (``threadpoolctl``'s
``threadpool_limits``), alternating within each round, each fit's ratio taken to scikit-learn's at
the same count: the evidence behind the thread rule (``solvers/_cores.py``). ``--tables`` picks
tables (``adult``, ``20000x512``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_defaults.py [--repeats 5]
    .venv/bin/python benchmarks/bench_defaults.py --tables 20000x512 --tols 1e-4 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from real_tables import load_adult  # noqa: E402
from solvers import FairLogisticRegression  # noqa: E402
from solvers.synthetic import make_fair_classification  # noqa: E402


def objective(coef, intercept, X, y, C=1.0) -> float:
    """scikit-learn's objective divided by n: mean log-loss + ||w||^2 / (2 C n)."""
    z = X.astype(np.float64) @ np.ravel(coef) + float(np.ravel(intercept)[0])
    loss = np.mean(np.logaddexp(0.0, -(2 * y - 1) * z))
    return float(loss + np.dot(np.ravel(coef), np.ravel(coef)) / (2 * C * len(y)))


def tables(names=("adult", "20000x512")):
    if "adult" in names:
        train, _ = load_adult()
        yield "adult", train.X, train.y, train.sensitive["sex"]
    if "20000x512" in names:
        X, y, a = make_fair_classification(20_000, 512, embedding_like=True, dtype=np.float32, seed=0)
        yield "20000x512", X, y, a


def at_threads(fit, threads):
    """``fit`` with the BLAS at ``threads`` threads (``None``: as the process is configured)."""
    if threads is None:
        return fit

    def limited():
        with threadpool_limits(threads, user_api="blas"):  # torch: fairhead's own rule (fit_threads)
            return fit()

    return limited


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4])
    parser.add_argument("--threads", type=int, nargs="+", default=[None],
                        help="BLAS/OpenMP thread counts to run every fit at (default: as configured)")
    parser.add_argument("--tables", nargs="+", default=["adult", "20000x512"])
    parser.add_argument("--dp-score", type=float, default=None, metavar="EPS",
                        help="also time dp-score fits at this bound (at each --tols)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_defaults.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    result = {"benchmark": "bench_defaults", "tables": {}}
    for name, X, y, a in tables(args.tables):
        fits = {}
        for k in args.threads:
            at = "" if k is None else f" @{k}t"
            fits[f"sklearn{at}"] = at_threads(lambda: LogisticRegression().fit(X, y), k)
            for tol in args.tols:
                fits[f"fairhead tol={tol:g}{at}"] = at_threads(lambda t=tol: FairLogisticRegression(tol=t).fit(X, y), k)
                if args.dp_score is not None:
                    fits[f"fairhead dp-score tol={tol:g}{at}"] = at_threads(
                        lambda t=tol: FairLogisticRegression(constraint="dp-score", eps=args.dp_score, tol=t)
                        .fit(X, y, sensitive_features=a), k)
        for fit in fits.values():
            fit()  # warm-up
        times = {k: [] for k in fits}
        models = {}
        for _ in range(args.repeats):
            for key, fit in fits.items():
                start = time.perf_counter()
                models[key] = fit()
                times[key].append(time.perf_counter() - start)
        objs = {k: objective(m.coef_, m.intercept_, X, y) for k, m in models.items() if "dp-score" not in k}
        best_key = min(objs, key=objs.get)
        best_pred = models[best_key].predict(X)
        rows = {}
        for key in fits:
            med = statistics.median(times[key])
            sk = statistics.median(times["sklearn" + key[key.index(" @"):] if " @" in key else "sklearn"])
            rows[key] = {"seconds": med, "over_sklearn": med / sk}
            if key in objs:  # a constrained head solves another problem: timed only
                rows[key].update(objective_excess=objs[key] - objs[best_key],
                                 predictions_differing=float(np.mean(models[key].predict(X) != best_pred)))
        result["tables"][name] = {"shape": list(X.shape), "fits": rows}
        print(f"{name} {X.shape[0]} x {X.shape[1]}")
        for key, row in rows.items():
            quality = (f"  objective +{row['objective_excess']:.2e}  predictions differing "
                       f"{row['predictions_differing']:.5f}" if "objective_excess" in row else "")
            print(f"  {key:33s} {1000 * row['seconds']:8.1f} ms  {row['over_sklearn']:5.2f}x sklearn{quality}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
