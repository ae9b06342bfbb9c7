"""1 against 2 gloo processes (``torchrun``) on this machine: extraction and fits, side by side.

* **fit**: a float32 feature matrix (``--n`` x ``--d``) and heads for ``none``, ``dp-score`` and
  ``eo``, fitted by one plain process and by ``torchrun --nproc-per-node 2`` (each rank a row shard,
  :class:`solvers.RowShard`). The time is the fit alone (rank 0, after a barrier; start-up and
  data generation excluded); the heads are checked equal.
* **extract**: ``fairhead extract --synthetic --num-images N`` (the default backbone) by one
  process and by ``torchrun --nproc-per-node 2 -m fairhead extract`` (shards, then the merge). The
  time is the whole command, start-up and merge included.

Every process runs at ``OMP_NUM_THREADS=1`` (torchrun's default), so one process uses one core and
two use two. Scaling efficiency is ``t1 / (2 t2)`` (1.0 = perfect). Runs alternate ``--repeats``
times so that load from other processes hits both alike; medians are printed and written to
``--json``.

    .venv/bin/python benchmarks/bench_data_parallel.py [--n 200000] [--d 512] [--images 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {"none": (None, 0.05), "dp-score": ("dp-score", 0.02), "eo": ("eo", 0.03)}

WORKER = r"""
import json, sys, time, warnings
import numpy as np, torch.distributed as dist
from solvers import FairLogisticRegression, RowShard, shard_range
from solvers.synthetic import make_fair_classification

n, d, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
CASES = json.loads(sys.argv[4])
X, y, a = make_fair_classification(n, d, embedding_like=True, dtype=np.float32, seed=0)
world = 1
if "WORLD_SIZE" in __import__("os").environ:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    s, e = shard_range(n, d, rank, world)
    X = RowShard(np.ascontiguousarray(X[s:e]), n_total=n, start=s)
    dist.barrier()
times, heads = {}, {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, (c, eps) in CASES.items():
        if world > 1:
            dist.barrier()
        t = time.perf_counter()
        h = FairLogisticRegression(constraint=c, eps=eps, backend="torch").fit(X, y, sensitive_features=a)
        times[name] = time.perf_counter() - t
        heads[name] = h.coef_.ravel().tolist()
if world == 1 or dist.get_rank() == 0:
    json.dump({"times": times, "heads": heads}, open(out, "w"))
"""


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def fit_once(workdir: Path, n: int, d: int, procs: int) -> dict:
    script = workdir / "worker.py"
    script.write_text(WORKER)
    out = workdir / f"fit{procs}.json"
    args = [str(script), str(n), str(d), str(out), json.dumps(CASES)]
    cmd = [sys.executable, *args] if procs == 1 else _torchrun(*args)
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    return json.loads(out.read_text())


def extract_once(workdir: Path, images: int, procs: int) -> float:
    out = workdir / f"extract{procs}.h5"
    for p in workdir.glob(f"extract{procs}*"):
        if p.is_file():
            p.unlink()
    args = ["extract", "--synthetic", "--num-images", str(images), "--seed", "0", "--out", str(out)]
    cmd = [sys.executable, "-m", "fairhead", *args] if procs == 1 else _torchrun("-m", "fairhead", *args)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=_env())
    return time.perf_counter() - t


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200000, help="rows of the fit's feature matrix (default: 200000)")
    parser.add_argument("--d", type=int, default=512, help="features (default: 512)")
    parser.add_argument("--images", type=int, default=256, help="images to extract (default: 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench_data_parallel.json"))
    args = parser.parse_args(argv)
    fits = {1: [], 2: []}
    extracts = {1: [], 2: []}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(args.repeats):
            for procs in (1, 2):
                fits[procs].append(fit_once(work, args.n, args.d, procs))
                extracts[procs].append(extract_once(work, args.images, procs))
            same &= all(fits[1][-1]["heads"][k] == fits[2][-1]["heads"][k] for k in CASES)
    result = {"n": args.n, "d": args.d, "images": args.images, "repeats": args.repeats, "heads_equal": same,
              "fit": {}, "extract": {}}
    print(f"fit {args.n} x {args.d} float32 (seconds, median of {args.repeats}); heads equal: {same}")
    print(f"{'head':>10} {'1 process':>10} {'2 processes':>12} {'speed-up':>9} {'efficiency':>10}")
    for name in CASES:
        t1 = statistics.median(r["times"][name] for r in fits[1])
        t2 = statistics.median(r["times"][name] for r in fits[2])
        result["fit"][name] = {"t1": t1, "t2": t2, "speedup": t1 / t2, "efficiency": t1 / (2 * t2)}
        print(f"{name:>10} {t1:>10.2f} {t2:>12.2f} {t1 / t2:>9.2f} {t1 / (2 * t2):>10.2f}")
    t1, t2 = statistics.median(extracts[1]), statistics.median(extracts[2])
    result["extract"] = {"t1": t1, "t2": t2, "speedup": t1 / t2, "efficiency": t1 / (2 * t2)}
    print(f"extract {args.images} images (whole command, seconds): 1 process {t1:.1f}, 2 processes {t2:.1f}, "
          f"speed-up {t1 / t2:.2f}, efficiency {t1 / (2 * t2):.2f}")
    args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
