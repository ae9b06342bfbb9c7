"""One rank of the data-parallel solver tests (run by ``torchrun --nproc-per-node 2``).

Each rank fits heads on its share of the rows (``solvers.shard_range``) and writes what it got to
``OUT/rank{RANK}.json``; the test compares every rank's heads with one process's.
"""

import json
import sys
import warnings

import numpy as np
import torch.distributed as dist

from solvers import FairLogisticRegression, RowShard, fit_path, shard_range
from solvers.errors import DataError

sys.path.insert(0, sys.argv[2])  # the tests folder, for the shared problem
from support.data_parallel import CASES, MC_CASES, PATH_EPS, mc_problem, problem  # noqa: E402


def main(out):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    X, y, a = problem()
    start, stop = shard_range(len(y), X.shape[1], rank, world)
    Xs = RowShard(X[start:stop], n_total=len(y), start=start)
    got = {"rows": [start, stop], "heads": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (constraint, eps) in CASES.items():
            head = FairLogisticRegression(constraint=constraint, eps=eps, backend="torch").fit(
                Xs, y, sensitive_features=a)
            got["heads"][name] = {"coef": head.coef_.ravel().tolist(), "intercept": float(head.intercept_[0]),
                                  "scores": head.decision_function(Xs).tolist(),
                                  "notes": list(head.certificate_.notes)}
        path = fit_path(Xs, y, sensitive_features=a, eps_grid=PATH_EPS, constraint="dp", backend="torch")
        got["path"] = [h.coef_.ravel().tolist() for h in path]
        Xm, ym, am = mc_problem()
        lo, hi = shard_range(len(ym), Xm.shape[1], rank, world)
        Xms = RowShard(Xm[lo:hi], n_total=len(ym), start=lo)
        for name, (constraint, eps) in MC_CASES.items():
            head = FairLogisticRegression(constraint=constraint, eps=eps, backend="torch").fit(
                Xms, ym, sensitive_features=am)
            got["heads"][name] = {"coef": head.coef_.ravel().tolist(), "intercept": head.intercept_.tolist(),
                                  "scores": head.decision_function(Xms).ravel().tolist()}
    # shards that overlap (each one aligned) are refused on every rank, in one line
    B = Xs.block_rows
    bad = RowShard(X[rank * B : rank * B + 2 * B], n_total=len(y), start=rank * B)
    try:
        FairLogisticRegression(backend="torch").fit(bad, y)
        got["overlap"] = None
    except DataError as err:
        got["overlap"] = str(err)
    dist.destroy_process_group()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(got, f)


if __name__ == "__main__":
    main(sys.argv[1])
