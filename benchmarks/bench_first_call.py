"""Is the first fit in a process about as fast as the second? ``fit_path`` twice in a fresh process.

The first call pays torch's import and the backend's first-use costs; with ``backend="auto"``
sending every size to torch there is no cvxpy warm-up on a path that then runs on torch (it made the
first call 6.8 s against 0.87 s). Prints both times and their ratio (goal: the first at most about
the second plus ``import torch``).

    .venv/bin/python benchmarks/bench_first_call.py [--n 20000] [--d 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=512)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    import_torch = time.perf_counter() - start

    import numpy as np

    from solvers import fit_path
    from solvers.synthetic import make_fair_classification

    X, y, a = make_fair_classification(args.n, args.d, embedding_like=True, dtype=np.float32, seed=0)
    grid = [0.1, 0.05, 0.02]
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp-score")
        times.append(time.perf_counter() - start)
    print(f"import torch (fresh process) {import_torch:.2f} s")
    print(f"fit_path dp-score x{len(grid)} on {args.n} x {args.d}: first {times[0]:.2f} s, second {times[1]:.2f} s, "
          f"first / second {times[0] / times[1]:.2f}; first - import torch = {times[0] - import_torch:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
