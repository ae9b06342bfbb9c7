"""What does the sweep's progress file cost: one fsync per head (before) or one atomic swap per sweep (now)?

Measured side by side in one run, alternating, on the same synthetic data and grid:

* ``per_head``: every finished head appended and fsynced (the write policy before issue 23 item 1);
* ``sealed``: heads appended without an fsync, the file swapped in atomically once after the path
  (``fairhead.sweep._seal_progress``: one fsync of a temporary copy, ``os.replace``).

Prints the fsyncs of the progress file per sweep and the median wall time of the whole ``run_sweep``
(solves, evaluation, heads, table; no plots) under each policy, and their ratio.

    .venv/bin/python benchmarks/bench_sweep_fsync.py [--n 3000] [--d 32] [--n-eps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fairhead import pipeline, sweep
from fairhead_io import naming_the_file


def _append_fsynced(path: Path, key: str, record) -> None:
    """The per-head policy: one line, flushed and fsynced."""
    with naming_the_file(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"config_key": key, "record": record.__dict__}, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


def synthetic(rng, n, d):
    direction, nuisance = rng.normal(size=(2, d)) / np.sqrt(d)

    def split(m):
        g = rng.integers(0, 2, m)
        y = (rng.random(m) < np.where(g == 1, 0.65, 0.35)).astype(np.int64)
        X = rng.normal(size=(m, d)) + 1.5 * np.outer(2 * y - 1, direction) + np.outer(2 * g - 1, nuisance)
        return pipeline.SplitArrays(X=X, y=y, groups=g[:, None], attributes=("s",), categories={"s": ("0", "1")},
                                    sample_ids=np.arange(m).astype(str))

    return {"train": split(n), "valid": split(n // 4), "test": split(n // 4)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--n-eps", type=int, default=20)
    parser.add_argument("--constraint", default="dp-score")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    arrays = synthetic(np.random.default_rng(0), args.n, args.d)
    policies = {"per_head": (_append_fsynced, lambda path: None),
                "sealed": (sweep._append_progress, sweep._seal_progress)}
    real_fsync, synced = os.fsync, []

    def counting_fsync(fd):
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else ""
        synced.append(sweep.PROGRESS_FILE in name)
        return real_fsync(fd)

    os.fsync = counting_fsync
    times = {p: [] for p in policies}
    fsyncs = {}
    try:
        for _ in range(args.repeats):
            for policy, (append, seal) in policies.items():
                sweep._append_progress, sweep._seal_progress = append, seal
                synced.clear()
                with tempfile.TemporaryDirectory() as out:
                    t0 = time.perf_counter()
                    sweep.run_sweep(None, out=out, constraint=args.constraint, n_eps=args.n_eps, plots=False,
                                    progress=False, backend="torch", data=(arrays, "bench", {}))
                    times[policy].append(time.perf_counter() - t0)
                fsyncs[policy] = sum(synced)
    finally:
        os.fsync = real_fsync
        sweep._append_progress, sweep._seal_progress = policies["sealed"]
    for policy in policies:
        print(f"{policy:9s} progress-file fsyncs {fsyncs[policy]:3d}   sweep {statistics.median(times[policy]):.3f} s")
    ratio = statistics.median(times["sealed"]) / statistics.median(times["per_head"])
    print(f"sealed / per_head wall time: {ratio:.2f}")


if __name__ == "__main__":
    main()
