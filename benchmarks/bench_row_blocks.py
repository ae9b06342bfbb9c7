"""In-memory products over row blocks against one whole-matrix BLAS call, side by side.

Every CPU product with ``X`` (``solvers.backends.torch.Design.mv`` / ``rmv``) runs over row blocks
of ``solvers.out_of_core.BLOCK_BYTES`` so that a streamed (out-of-core) fit does the in-memory
fit's arithmetic bit for bit. This measures what the blocks cost a fit held in memory: per shape,
the median time of ``mv`` + ``rmv`` through ``Design`` against ``X @ v`` and ``r @ X`` in one
numpy call each (the products before blocks), alternating, at 1 and 2 BLAS threads. Goal: a ratio
of about 1 (at most 1.1).

    .venv/bin/python benchmarks/bench_row_blocks.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from solvers.backends.torch import Design, fit_threads
from solvers.out_of_core import block_rows

#: (name, rows, features, dtype): Adult's one-hot table, a 512-feature embedding, a 400 MB one
SHAPES = [("adult-float64", 32561, 104, np.float64), ("adult-float32", 32561, 104, np.float32),
          ("20000x512-float32", 20000, 512, np.float32), ("100000x1024-float32", 100000, 1024, np.float32)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'shape':>22} {'blocks':>6} {'threads':>7} {'blocked ms':>10} {'whole ms':>9} {'ratio':>6}")
    for name, n, d, dtype in SHAPES:
        X = rng.standard_normal((n, d)).astype(dtype)
        design = Design(X, center=False)
        v = torch.from_numpy(rng.standard_normal(d))
        r = torch.from_numpy(rng.standard_normal(n))
        cdt = np.float64 if dtype == np.float64 else np.float32

        def blocked():
            design.mv(v), design.rmv(r)

        def whole():  # the products as one call each, with the same float64 outputs
            (X @ v.numpy().astype(cdt)).astype(np.float64), (r.numpy().astype(cdt) @ X).astype(np.float64)

        for threads in (1, 2):
            with threadpool_limits(threads), fit_threads("cpu"):
                times = {"blocked": [], "whole": []}
                for _ in range(3):
                    blocked(), whole()
                for _ in range(args.repeats):
                    for label, f in (("blocked", blocked), ("whole", whole)):
                        t = time.perf_counter()
                        f()
                        times[label].append(time.perf_counter() - t)
            b, w = (float(np.median(times[k])) * 1e3 for k in ("blocked", "whole"))
            print(f"{name:>22} {-(-n // block_rows(d)):>6} {threads:>7} {b:>10.2f} {w:>9.2f} {b / w:>6.2f}")


if __name__ == "__main__":
    main()
