"""Out-of-core fits: time per pass and peak memory against the in-memory fit, side by side.

One run writes an HDF5 file of ``--size-gb`` of float32 features (``--d`` columns, stored in the
cache's ``(64, d)`` chunks) with a ``train`` split of 70% of the rows scattered through it, then
measures each mode in a fresh process (so each has its own peak):

* ``in-memory``: the train rows read into memory (``embedcache``'s ``read_rows``), then the fit;
* ``streamed``: ``solvers.RowChunks`` over the same rows with ``--budget``, nothing loaded.

Each mode times ``--passes`` products with ``X`` / ``X^T`` (``Design.mv`` / ``rmv``, alternating,
after one warm-up pass) and fits an unconstrained head for ``--iters`` L-BFGS iterations; the
streamed mode also times ``2 x --passes`` products with the reader thread of ``RowChunks.blocks``
forced on and off, alternating (a fit uses it only while a core is free). Peak
memory is VmHWM (reset just before the work) minus the resident set then, with glibc's malloc
thresholds fixed so freed arrays leave the resident set. Prints the ratios (goals: streamed pass
at most 1.5x the in-memory one; streamed peak at most the budget + 10%) and writes
``bench_out_of_core.json``.

    .venv/bin/python benchmarks/bench_out_of_core.py [--size-gb 4] [--budget 1GB] [--d 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fairhead import provenance

TRAIN_SHARE = 0.7
CHUNK_ROWS = 64  # embedcache's /features chunks


def write_file(path: Path, n: int, d: int, seed: int) -> None:
    """``X`` (n, d) float32 in (64, d) chunks, labels with signal in the first columns, a split code per row."""
    import h5py

    rng = np.random.default_rng(seed)
    w = rng.normal(size=d) / np.sqrt(d)
    with h5py.File(path, "w") as f:
        X = f.create_dataset("features", shape=(n, d), dtype=np.float32, chunks=(CHUNK_ROWS, d))
        y = np.empty(n, dtype=np.int64)
        step = max(1, (256 * 2**20) // (4 * d))
        for s in range(0, n, step):
            blk = rng.standard_normal(size=(min(step, n - s), d), dtype=np.float32)
            X[s : s + len(blk)] = blk
            y[s : s + len(blk)] = (blk @ w + 0.5 * rng.standard_normal(len(blk)) > 0)
        f["labels"] = y
        f["split"] = (rng.random(n) >= TRAIN_SHARE).astype(np.int8)  # 0 = train


WORKER = r"""
import json, sys, time, warnings
import h5py, numpy as np, torch
from solvers import FairLogisticRegression, RowChunks
from solvers.backends.torch import Design, fit_threads
from embedcache.store.reader import read_rows

mode, path, budget, passes, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")

with h5py.File(path, "r") as f:
    y = f["labels"][()]
    rows = np.flatnonzero(f["split"][()] == 0)
y = y[rows]
warnings.simplefilter("ignore")
FairLogisticRegression(backend="torch", max_iter=2).fit(np.random.default_rng(0).normal(size=(200, 3)), y[:200])
out = {"mode": mode, "rows": int(len(rows))}
base = reset_peak()
t0 = time.perf_counter()
if mode == "in-memory":
    with h5py.File(path, "r") as f:
        X = read_rows(f["features"], rows)
    out["load_s"] = time.perf_counter() - t0
else:
    X = RowChunks(path, rows, dataset="features", max_memory=budget)
    out["note"] = X.describe()
out["x_bytes"] = int(len(rows) * X.shape[1] * 4)
with fit_threads("cpu"):
    design = Design(X, "cpu", center=True)
    v = torch.ones(X.shape[1], dtype=torch.float64) / X.shape[1]
    r = torch.ones(len(rows), dtype=torch.float64) / len(rows)
    design.mv(v)  # warm-up (page cache, buffers)
    times = []
    for k in range(passes):
        t = time.perf_counter()
        design.rmv(r) if k % 2 else design.mv(v)
        times.append(time.perf_counter() - t)
out["pass_s"] = float(np.median(times))
if mode == "streamed":  # the reader thread forced on and off, alternating (solvers.out_of_core.PREFETCH)
    from solvers import out_of_core
    gate = out_of_core.free_cores
    out["free_cores_now"] = gate()
    out_of_core.free_cores = lambda: 1
    reader = {True: [], False: []}
    with fit_threads("cpu"):
        for k in range(2 * passes):
            out_of_core.PREFETCH = on = k % 2 == 0
            t = time.perf_counter()
            design.rmv(r) if k % 4 >= 2 else design.mv(v)
            reader[on].append(time.perf_counter() - t)
    out_of_core.PREFETCH, out_of_core.free_cores = True, gate
    out["reader_pass_s"], out["serial_pass_s"] = float(np.median(reader[True])), float(np.median(reader[False]))
t = time.perf_counter()
head = FairLogisticRegression(backend="torch", max_iter=iters).fit(X, y)
out["fit_s"] = time.perf_counter() - t
out["fit_passes"] = int(head.certificate_.passes)
out["peak_bytes"] = int(status("VmHWM") - base)
out["coef"] = head.coef_.ravel().tolist()
print(json.dumps(out))
"""


def run_mode(mode, path, args) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, str(path), args.budget, str(args.passes),
                           str(args.iters)], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{mode} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="size of the feature matrix (default: 4, the issue's)")
    parser.add_argument("--budget", default="1GB", help="max_memory of the streamed fit (default: 1GB)")
    parser.add_argument("--d", type=int, default=2048, help="features per row (default: 2048)")
    parser.add_argument("--passes", type=int, default=6, help="timed products per mode (default: 6)")
    parser.add_argument("--iters", type=int, default=10, help="L-BFGS iterations of the timed fit (default: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("bench_out_of_core.json"))
    args = parser.parse_args(argv)
    from solvers.out_of_core import parse_memory

    budget = parse_memory(args.budget)
    n = int(args.size_gb * 1e9 // (4 * args.d))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "features.h5"
        t = time.perf_counter()
        write_file(path, n, args.d, args.seed)
        print(f"wrote {n} x {args.d} float32 ({n * args.d * 4 / 1e9:.2f} GB) in {time.perf_counter() - t:.0f}s")
        results = {mode: run_mode(mode, path, args) for mode in ("in-memory", "streamed")}
    mem, ooc = results["in-memory"], results["streamed"]
    same = mem.pop("coef") == ooc.pop("coef")
    ratio = ooc["pass_s"] / mem["pass_s"]
    fit_ratio = (ooc["fit_s"] / ooc["fit_passes"]) / (mem["fit_s"] / mem["fit_passes"])
    print(f"train split: {mem['rows']} of {n} rows, {mem['x_bytes'] / 1e9:.2f} GB; budget {budget / 1e9:.2f} GB")
    print(f"  {ooc['note']}")
    print(f"time per pass  in-memory {mem['pass_s']:.3f}s  streamed {ooc['pass_s']:.3f}s  ratio {ratio:.2f}  "
          f"(goal <= 1.5)")
    print(f"streamed pass with the reader thread {ooc['reader_pass_s']:.3f}s, without {ooc['serial_pass_s']:.3f}s: "
          f"{ooc['reader_pass_s'] / ooc['serial_pass_s']:.2f}x (forced on and off, alternating; free cores when "
          f"measured: {ooc['free_cores_now']}; fits use it only while a core is free)")
    print(f"fit ({args.iters} iterations) in-memory {mem['fit_s']:.1f}s / {mem['fit_passes']} passes  streamed "
          f"{ooc['fit_s']:.1f}s / {ooc['fit_passes']} passes  ratio per pass {fit_ratio:.2f}; heads equal: {same}")
    print(f"peak memory    in-memory {mem['peak_bytes'] / 1e9:.2f} GB (X {mem['x_bytes'] / 1e9:.2f} GB resident)  "
          f"streamed {ooc['peak_bytes'] / 1e9:.3f} GB = {ooc['peak_bytes'] / budget:.2f} x budget (goal <= 1.10)")
    args.out.write_text(json.dumps({
        "provenance": provenance.collect(seed=args.seed),
        "config": {"n": n, "d": args.d, "size_gb": args.size_gb, "budget": args.budget, "passes": args.passes,
                   "iters": args.iters, "train_share": TRAIN_SHARE},
        "results": results, "pass_ratio": ratio, "fit_pass_ratio": fit_ratio,
        "peak_over_budget": ooc["peak_bytes"] / budget, "heads_equal": same}, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
