"""Does a 20-point eps sweep cost at most 3x one cold solve on the same data?

Measured side by side in one run, for each constraint:

* ``cold``: one solve from scratch, averaged over every bound of the grid (each solved cold once);
* ``path``: the 20 solves of the sweep, each warm-started from the previous head
  (``solvers.iter_path``, as ``fairhead sweep`` does);
* ``sweep``: the whole ``fairhead.sweep.run_sweep`` (solves + evaluation on three splits + files).

Prints ``path / cold`` (goal: at most 3) and writes ``bench_sweep.json``.

    .venv/bin/python benchmarks/bench_sweep.py [--n 20000] [--d 512] [--constraints dp-score dp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fairhead import pipeline, provenance, sweep
from fairhead.measure import constraint_value


def synthetic_split(rng, n, d, direction, nuisance):
    """One split; ``direction`` (the class signal) and ``nuisance`` (the group signal) are shared by
    every split, so a head fitted on train predicts test (accuracy about 0.85, not 0.5)."""
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < np.where(g == 1, 0.65, 0.35)).astype(np.int64)
    X = rng.normal(size=(n, d)) + 1.5 * np.outer(2 * y - 1, direction) + 1.0 * np.outer(2 * g - 1, nuisance)
    return pipeline.SplitArrays(X=X.astype(np.float32), y=y, groups=g[:, None], attributes=("s",),
                                categories={"s": ("0", "1")}, sample_ids=np.arange(n).astype(str))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--n-eps", type=int, default=20)
    parser.add_argument("--constraints", nargs="+", default=["dp-score", "eo-score", "dp", "eo"])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_sweep.json"))
    args = parser.parse_args(argv)

    from solvers import FairLogisticRegression, fit_path

    rng = np.random.default_rng(args.seed)
    direction, nuisance = rng.normal(size=(2, args.d)) / np.sqrt(args.d)
    arrays = {split: synthetic_split(rng, m, args.d, direction, nuisance)
              for split, m in (("train", args.n), ("valid", args.n // 4), ("test", args.n // 4))}
    train = arrays["train"]
    s = train.groups[:, 0]
    results = []
    for name in args.constraints:
        free = FairLogisticRegression(backend=args.backend).fit(train.X, train.y)
        inactive = constraint_value(name, y=train.y, scores=free.decision_function(train.X), sensitive_features=s)
        grid = sweep.default_eps_grid(inactive, args.n_eps)
        cold_times = []
        for eps in grid:
            t0 = time.perf_counter()
            FairLogisticRegression(constraint=name, eps=float(eps), backend=args.backend).fit(
                train.X, train.y, sensitive_features=s)
            cold_times.append(time.perf_counter() - t0)
        cold = statistics.mean(cold_times)

        t0 = time.perf_counter()
        # as `fairhead sweep` runs it: the path starts from the unconstrained head it already has
        heads = fit_path(train.X, train.y, sensitive_features=s, eps_grid=grid, constraint=name, backend=args.backend,
                         init_head=free)
        path = time.perf_counter() - t0
        unmet = sum(not h.certificate_.converged for h in heads)
        test = arrays["test"]
        test_acc = float(np.mean(free.predict(test.X) == test.y))

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            sweep.run_sweep(None, out=tmp, constraint=name, eps_grid=grid, progress=False, backend=args.backend,
                            data=(arrays, "bench", {}))
            whole = time.perf_counter() - t0
        row = {"constraint": name, "n": args.n, "d": args.d, "n_eps": args.n_eps, "cold_s": cold,
               "cold_min_s": min(cold_times), "cold_max_s": max(cold_times),
               "path_s": path, "sweep_s": whole, "heads_not_converged": unmet, "test_accuracy_unconstrained": test_acc, "path_over_cold": path / cold, "sweep_over_cold": whole / cold}
        results.append(row)
        print(f"{name:10s} cold {cold:7.3f}s (mean; {min(cold_times):.3f}-{max(cold_times):.3f})  {args.n_eps}-point path {path:7.3f}s  "
              f"ratio {path / cold:5.2f} (goal <= 3)   whole sweep incl. evaluation {whole:7.3f}s "
              f"({whole / cold:5.2f}x); unconstrained test accuracy {test_acc:.3f}; heads not converged {unmet}",
              flush=True)

    print("\n| constraint | n x d | cold solve (s) | 20-point warm path (s) | path / cold | whole sweep / cold |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| `{r['constraint']}` | {r['n']} x {r['d']} | {r['cold_s']:.3f} | {r['path_s']:.3f} | "
              f"{r['path_over_cold']:.2f} | {r['sweep_over_cold']:.2f} |")
    args.out.write_text(json.dumps({"provenance": provenance.collect(seed=args.seed), "results": results},
                                   indent=1))


if __name__ == "__main__":
    main()
