"""Out-of-core fits: time per pass and peak memory against the in-memory fit, side by side.

One run writes an HDF5 file of ``--size-gb`` of float32 features (``--d`` columns, stored in the
cache's ``(64, d)`` chunks) with a ``train`` split of 70% of the rows scattered through it, then
measures each mode in a fresh process (so each has its own peak):

* ``in-memory``: the train rows read into memory (``embedcache``'s ``read_rows``), then the fit;
* ``streamed``: ``solvers.RowChunks`` over the same rows with ``--budget``, nothing loaded; pass
  ``SPILL_PASS`` spills the rows to a contiguous temporary file (``solvers._spill``), later passes
  read that;
* ``no-spill``: the same, with ``solvers._spill.SPILL = False`` (every pass gathers the rows);
  the first ``streamed`` run also times the first six passes over a fresh ``RowChunks`` spilled
  during pass 1, 2 or 3, or never (the choice of ``SPILL_PASS``; a ``predict`` is two passes);
* with ``--gzip``, ``gzip`` and ``gzip-no-spill``: the fit alone, streamed from a gzip-compressed
  copy of the features (decoded by HDF5 on every pass without the spill).

The modes run ``--rounds`` times, in alternating order; the figures are medians over rounds. Each
mode times ``--passes`` products with ``X`` / ``X^T`` (``Design.mv`` / ``rmv``, alternating,
after ``SPILL_PASS`` warm-up passes: the spill is written by then) and fits an unconstrained head
for ``--iters`` L-BFGS iterations on a fresh ``RowChunks`` (so the streamed fit pays for its
spill); the streamed modes also time ``2 x --passes`` products with the reader
thread of ``RowChunks.blocks`` forced on and off, alternating (a fit uses it only while a core is
free). Peak memory is VmHWM (reset just before the work) minus the resident set then, with glibc's
malloc thresholds fixed so freed arrays leave the resident set. Prints the ratios (goals: streamed
pass at most 2x the in-memory one; streamed peak at most the budget + 10%) and writes
``bench_out_of_core.json``.

    .venv/bin/python benchmarks/bench_out_of_core.py [--size-gb 4] [--budget 1GB] [--d 2048] [--gzip]
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
from statistics import median

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


def write_gzip_copy(path: Path, out: Path) -> None:
    """The features of ``path`` in the same chunks, gzip-compressed (a cache no map can read)."""
    import h5py

    with h5py.File(path, "r") as f, h5py.File(out, "w") as g:
        src = f["features"]
        dst = g.create_dataset("features", shape=src.shape, dtype=src.dtype, chunks=src.chunks, compression="gzip")
        step = 64 * max(1, (256 * 2**20) // (4 * src.shape[1] * 64))
        for s in range(0, src.shape[0], step):
            dst[s : s + step] = src[s : s + step]


WORKER = r"""
import json, sys, time, warnings
import h5py, numpy as np, torch
from solvers import FairLogisticRegression, RowChunks
from solvers.backends.torch import Design, fit_threads
from embedcache.store.reader import read_rows
from solvers import _spill

mode, path, budget, passes, iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
features = sys.argv[6]  # the file the streamed modes read (the gzip copy for the gzip modes)
pass_costs = sys.argv[7] == "1"  # also time the first passes of fresh Xs spilled at passes 1, 2, 3 and never
_spill.SPILL = not mode.endswith("no-spill")

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
    X = RowChunks(features, rows, dataset="features", max_memory=budget)
out["x_bytes"] = int(len(rows) * X.shape[1] * 4)
with fit_threads("cpu"):
    design = Design(X, "cpu", center=True)
    v = torch.ones(X.shape[1], dtype=torch.float64) / X.shape[1]
    r = torch.ones(len(rows), dtype=torch.float64) / len(rows)
    for _ in range(_spill.SPILL_PASS):  # warm-up (page cache, buffers; the streamed spill is written)
        design.mv(v)
    times = []
    for k in range(passes):
        t = time.perf_counter()
        design.rmv(r) if k % 2 else design.mv(v)
        times.append(time.perf_counter() - t)
out["pass_s"] = float(np.median(times)) if times else None
if mode != "in-memory" and passes:  # the reader thread forced on and off, alternating (solvers.out_of_core.PREFETCH)
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
peak = status("VmHWM") - base
if mode != "in-memory":  # the fit on a fresh X: it pays for its own spill
    X.close()
    del design
    X = RowChunks(features, rows, dataset="features", max_memory=budget)
    base = reset_peak()
t = time.perf_counter()
head = FairLogisticRegression(backend="torch", max_iter=iters).fit(X, y)
out["fit_s"] = time.perf_counter() - t
out["fit_passes"] = int(head.certificate_.passes)
out["peak_bytes"] = int(max(peak, status("VmHWM") - base))
if mode != "in-memory":
    out["note"] = X.describe()
    X.close()
if pass_costs:  # SPILL_PASS: the first six passes of a fresh X, spilled at pass 1, 2 or 3, or never
    w32 = np.ones(X.shape[1], dtype=np.float32)
    costs = {1: [], 2: [], 3: [], "off": []}
    spills = [1, 2, 3]
    for k in range(len(spills)):  # each order in turn, and an unspilled X after each spilled one, so that
        for when in [w for s in spills[k:] + spills[:k] for w in (s, "off")]:  # every spill finds memory alike
            _spill.SPILL, _spill.SPILL_PASS = when != "off", 1 if when == "off" else when
            with RowChunks(features, rows, dataset="features", max_memory=budget) as Xp:
                times = []
                for _ in range(6):
                    t = time.perf_counter()
                    for _s, blk in Xp.blocks():
                        blk @ w32
                    times.append(time.perf_counter() - t)
            costs[when].append(times)
    costs = {k: np.median(v, axis=0).tolist() for k, v in costs.items()}
    out["pass_costs_s"] = {str(k): v for k, v in costs.items()}
out["coef"] = head.coef_.ravel().tolist()
print(json.dumps(out))
"""


def run_mode(mode, path, features, args, pass_costs=False) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    passes = 0 if mode.startswith("gzip") else args.passes  # a gzip pass without the spill takes seconds
    proc = subprocess.run([sys.executable, "-c", WORKER, mode, str(path), args.budget, str(passes),
                           str(args.iters), str(features), str(int(pass_costs))], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise SystemExit(f"{mode} worker failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_rounds(modes, path, gz, args) -> dict:
    """``{mode: [result per round]}``, the modes in alternating order round by round."""
    runs = {mode: [] for mode in modes}
    for k in range(args.rounds):
        for mode in (modes if k % 2 == 0 else modes[::-1]):
            costs = k == 0 and mode == "streamed"  # once: a minute of passes
            runs[mode].append(run_mode(mode, path, gz if mode.startswith("gzip") else path, args, costs))
    return runs


def med(runs, mode, key) -> float:
    return median(r[key] for r in runs[mode])


def report(runs, n, budget, args) -> dict:
    """Print the side-by-side figures (medians over rounds); returns the ratios."""
    mem, ooc = runs["in-memory"][0], runs["streamed"][0]
    coefs = {mode: [r.pop("coef") for r in rs] for mode, rs in runs.items()}
    same = all(c == coefs["in-memory"][0] for cs in coefs.values() for c in cs)
    per_pass = {mode: med(runs, mode, "fit_s") / med(runs, mode, "fit_passes") for mode in runs}
    print(f"train split: {mem['rows']} of {n} rows, {mem['x_bytes'] / 1e9:.2f} GB; budget {budget / 1e9:.2f} GB; "
          f"medians of {args.rounds} round(s), modes alternating")
    print(f"  {ooc['note']}")
    out = {"heads_equal": same}
    def m(mode, key):
        return med(runs, mode, key)

    for mode in ("streamed", "no-spill"):
        ratio = m(mode, "pass_s") / m("in-memory", "pass_s")
        fit_ratio = per_pass[mode] / per_pass["in-memory"]
        out[mode] = {"pass_ratio": ratio, "fit_pass_ratio": fit_ratio}
        print(f"{mode:>9}: product {m(mode, 'pass_s'):.3f}s vs in-memory {m('in-memory', 'pass_s'):.3f}s = "
              f"{ratio:.2f}x (goal <= 2); fit {m(mode, 'fit_s'):.2f}s / {m(mode, 'fit_passes'):.0f} passes vs "
              f"{m('in-memory', 'fit_s'):.2f}s / {m('in-memory', 'fit_passes'):.0f} = {fit_ratio:.2f}x per pass; "
              f"reader thread on/off {m(mode, 'reader_pass_s'):.3f}s / {m(mode, 'serial_pass_s'):.3f}s; "
              f"peak {m(mode, 'peak_bytes') / budget:.2f} x budget")
    print("per round, product streamed / no-spill / in-memory: " + "; ".join(
        f"{s['pass_s']:.3f} / {g['pass_s']:.3f} / {i['pass_s']:.3f}"
        for s, g, i in zip(runs["streamed"], runs["no-spill"], runs["in-memory"])))
    costs = runs["streamed"][0]["pass_costs_s"]
    print("first 6 passes of a fresh X (float32 gemv; medians of 3 orders), spilled at pass 1, 2, 3 or never "
          "(a predict is 2 passes: a check and a product):")
    for when, times in costs.items():
        print(f"  {when:>3}: " + " ".join(f"{t:.3f}" for t in times) + f" s; 2 passes {sum(times[:2]):.3f} s, "
              f"6 passes {sum(times):.3f} s")
    out["pass_costs_s"] = costs
    print(f"in-memory: read the split {m('in-memory', 'load_s'):.2f}s, peak "
          f"{m('in-memory', 'peak_bytes') / 1e9:.2f} GB "
          f"(X resident); heads bitwise equal in every mode: {same}")
    if "gzip" in runs:
        gz, nogz = m("gzip", "fit_s"), m("gzip-no-spill", "fit_s")
        out["gzip"] = {"fit_s": gz, "no_spill_fit_s": nogz}
        print(f"gzip-compressed cache, fit: spill {gz:.2f}s, no spill {nogz:.2f}s ({nogz / gz:.1f}x); in memory "
              f"{m('in-memory', 'fit_s'):.2f}s (+ {m('in-memory', 'load_s'):.2f}s to read the split)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="size of the feature matrix (default: 4, the issue's)")
    parser.add_argument("--budget", default="1GB", help="max_memory of the streamed fit (default: 1GB)")
    parser.add_argument("--d", type=int, default=2048, help="features per row (default: 2048)")
    parser.add_argument("--passes", type=int, default=6, help="timed products per mode (default: 6)")
    parser.add_argument("--iters", type=int, default=10, help="L-BFGS iterations of the timed fit (default: 10)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every mode, alternating (default: 2)")
    parser.add_argument("--gzip", action="store_true", help="also fit from a gzip-compressed copy, spill on and off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("bench_out_of_core.json"))
    args = parser.parse_args(argv)
    from solvers.out_of_core import parse_memory

    budget = parse_memory(args.budget)
    n = int(args.size_gb * 1e9 // (4 * args.d))
    modes = ["in-memory", "streamed", "no-spill"] + (["gzip", "gzip-no-spill"] if args.gzip else [])
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path, gz = Path(tmp) / "features.h5", Path(tmp) / "features_gzip.h5"
        t = time.perf_counter()
        write_file(path, n, args.d, args.seed)
        if args.gzip:
            write_gzip_copy(path, gz)
        print(f"wrote {n} x {args.d} float32 ({n * args.d * 4 / 1e9:.2f} GB{', and a gzip copy' if args.gzip else ''})"
              f" in {time.perf_counter() - t:.0f}s")
        runs = run_rounds(modes, path, gz, args)
    ratios = report(runs, n, budget, args)
    args.out.write_text(json.dumps({
        "provenance": provenance.collect(seed=args.seed),
        "config": {"n": n, "d": args.d, "size_gb": args.size_gb, "budget": args.budget, "passes": args.passes,
                   "iters": args.iters, "rounds": args.rounds, "gzip": args.gzip, "train_share": TRAIN_SHARE},
        "runs": runs, **ratios}, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
