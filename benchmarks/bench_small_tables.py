"""Are small tables instant? Every fit at defaults against scikit-learn's, on a 3,694 x 7 table.

The table: the first 3,694 rows of Adult's train split (``benchmarks/real_tables.py``), its 6
numeric columns and the ``sex`` indicator (7 columns, standardised), label ``income > 50K``,
sensitive ``sex``. Measured side by side in one process after one warm-up fit of each (imports
and first-call costs excluded), alternating: ``--repeats`` rounds of one fit of each, so a burst of
load on a shared machine lands on all of them; the median wall time of

* ``sklearn.linear_model.LogisticRegression()`` (its defaults);
* ``FairLogisticRegression()`` at its defaults (``backend="auto"``), unconstrained and with
  ``dp-score``, ``dp`` and ``eo`` (eps 0.05), and the same with ``backend="cvxpy"`` for scale.

Goal: every fairhead fit at defaults within 2x scikit-learn's unconstrained fit.

    .venv/bin/python benchmarks/bench_small_tables.py [--repeats 15]
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

from real_tables import NUMERIC, load_adult  # noqa: E402
from solvers import FairLogisticRegression  # noqa: E402

N_ROWS = 3694


def small_table():
    train, _ = load_adult()
    cols = [train.feature_names.index(c) for c in NUMERIC] + [train.feature_names.index("sex=Male")]
    X = train.X[:N_ROWS, cols]
    return X, train.y[:N_ROWS], train.sensitive["sex"][:N_ROWS]


def alternating_medians(fits: dict, repeats: dict) -> dict:
    """Median seconds of each fit over rounds of one fit of each (a fit stops after its ``repeats``)."""
    for fit in fits.values():
        fit()  # warm-up: imports, first-call costs
    times = {k: [] for k in fits}
    for r in range(max(repeats.values())):
        for key, fit in fits.items():
            if r < repeats[key]:
                start = time.perf_counter()
                fit()
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_small_tables.json")
    args = parser.parse_args(argv)
    X, y, a = small_table()
    warnings.simplefilter("ignore", ConvergenceWarning)
    fits = {"sklearn": lambda: LogisticRegression().fit(X, y)}
    repeats = {"sklearn": args.repeats}
    for backend in ("auto", "cvxpy"):
        for constraint in (None, "dp-score", "dp", "eo"):
            key = f"{constraint or 'none'}/{backend}"
            fits[key] = lambda c=constraint, b=backend: FairLogisticRegression(constraint=c, eps=0.05, backend=b).fit(
                X, y, sensitive_features=a)
            repeats[key] = args.repeats if backend == "auto" else max(3, args.repeats // 5)
    medians = alternating_medians(fits, repeats)
    sk = medians.pop("sklearn")
    rows = {key: {"seconds": seconds, "over_sklearn": seconds / sk} for key, seconds in medians.items()}
    result = {"benchmark": "bench_small_tables", "shape": list(X.shape), "sklearn_seconds": sk, "fits": rows,
              "goal": "every backend='auto' fit within 2x scikit-learn"}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"table {X.shape[0]} x {X.shape[1]} (Adult numeric + sex); scikit-learn LogisticRegression(): "
          f"{1000 * sk:.1f} ms")
    for name, row in rows.items():
        print(f"  {name:16s} {1000 * row['seconds']:8.1f} ms  {row['over_sklearn']:6.2f}x scikit-learn")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
