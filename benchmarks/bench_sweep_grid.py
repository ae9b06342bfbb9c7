"""What a default rate sweep costs with its grid cut at the resolution, against the grid down to 0, on Adult.

Measured side by side in one run, for each constraint, on the same arrays (Adult as in
``bench_commands.py``: the 30,162 train rows split 80/20 by row order into train and valid, and the
15,060 test rows; sensitive ``sex``, or ``sex`` x ``race_white`` with ``--groups sex race_white``),
each a whole :func:`fairhead.sweep.run_sweep` in this process (no plots, no baselines):

* ``to 0``: the grid the sweep built before, ``n_eps`` bounds from the inactive value down to 0
  (``sweep.default_eps_grid(inactive, n_eps)``, passed as ``eps_grid``);
* ``to resolution``: the default grid now, ``n_eps`` bounds down to the resolution (one prediction's
  weight over its group's), which the sweep reports in one line.

Both apply the monotone front after the path (it solves nothing: a copy of a record per replaced
head), so the difference is the grid alone. For each: heads, distinct heads (by coefficients),
heads missing their bound, heads at bounds below the resolution, the sum of the solves (the heads'
``wall_time``), the whole ``run_sweep`` wall time (medians of ``--repeat`` rounds, the two grids
alternating which runs first); then the ratios ``to resolution / to 0``. Last,
the heads the monotone front replaced (from ``progress.jsonl``, which keeps each head as solved) and
the train and test accuracy each replacement changed. With ``--cold``, a cold single fit at each bound
of the sweep beside the sweep's head (train and test accuracy).

    OMP_NUM_THREADS=1 python benchmarks/bench_sweep_grid.py [--constraints dp eo] [--groups sex] [--n-eps 20] \
        [--repeat 3] [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from real_tables import load_adult  # noqa: E402

from fairhead import pipeline, sweep  # noqa: E402
from fairhead.measure import constraint_value  # noqa: E402
from solvers import FairLogisticRegression  # noqa: E402
from solvers.path import REPLACED_PREFIX, rate_resolution  # noqa: E402


def adult_arrays(groups: list[str]) -> dict[str, pipeline.SplitArrays]:
    train, test = load_adult()
    n_fit = int(0.8 * len(train.y))

    def split(table, rows):
        codes = np.column_stack([table.sensitive[g][rows] for g in groups]).astype(np.int64)
        n = len(table.y[rows])
        return pipeline.SplitArrays(X=table.X[rows].astype(np.float32), y=table.y[rows].astype(np.int64),
                                    groups=codes, attributes=tuple(groups),
                                    categories={g: ("0", "1") for g in groups},
                                    sample_ids=np.array([str(i) for i in range(n)]))

    return {"train": split(train, slice(0, n_fit)), "valid": split(train, slice(n_fit, None)),
            "test": split(test, slice(None))}


def one_sweep(arrays, constraint, out: Path, eps_grid=None, n_eps=20) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sweep.run_sweep(None, out=out, constraint=constraint, eps_grid=eps_grid, n_eps=n_eps, plots=False,
                                 progress=False, data=(arrays, "adult", {}))
    wall = time.perf_counter() - start
    heads = [r for r in result.records if r.method == "fairhead"]
    resolution = heads[0].certificate["resolution"]
    solved = {json.loads(line)["record"]["eps"]: json.loads(line)["record"]
              for line in (out / sweep.PROGRESS_FILE).read_text().splitlines()}
    replaced = []
    for r in heads:
        if REPLACED_PREFIX in r.notes and "front is monotone" in r.notes:
            own = solved[r.eps]["metrics"]
            replaced.append({"eps": r.eps, **{f"{s}_accuracy_change": r.metrics[s]["accuracy"] - own[s]["accuracy"]
                                              for s in ("train", "test")}})
    return {"heads": len(heads), "distinct": len({(tuple(np.ravel(r.coef)), float(np.ravel(r.intercept)[0]))
                                                  for r in heads}),
            "missed": len(result.missed()), "below_resolution": sum(r.eps < resolution for r in heads),
            "solves_s": sum(r.wall_time for r in heads), "wall_s": wall, "resolution": resolution,
            "head_s": [r.wall_time for r in heads], "coef": [r.coef for r in heads],
            "intercept": [r.intercept for r in heads],
            "grid": [r.eps for r in heads], "notes": result.notes, "replaced": replaced}


def cold_fronts(arrays, constraint, after: dict) -> list[dict]:
    """The sweep's heads (``to resolution``) against a cold single fit at each of their bounds: train and
    test accuracy side by side (issue 19's goal: the CLI sweep and single fits within 0.003)."""
    train, test = arrays["train"], arrays["test"]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for eps, coef, b in zip(after["grid"], after["coef"], after["intercept"]):
            cold = FairLogisticRegression(constraint=constraint, eps=eps).fit(
                train.X, train.y, sensitive_features=pipeline.sensitive_arg(train))
            acc = {s: float(np.mean(((a.X @ np.asarray(coef) + b) > 0) == a.y)) for s, a in (("train", train),
                                                                                            ("test", test))}
            rows.append({"eps": eps, "sweep_train": acc["train"], "cold_train": cold.score(train.X, train.y),
                         "sweep_test": acc["test"], "cold_test": cold.score(test.X, test.y),
                         "cold_met": bool(cold.certificate_.eps_met)})
    return rows


def _median(runs: list[dict]) -> dict:
    """The first run's heads (the solves are deterministic: every run has them) with the median times."""
    assert all(r["grid"] == runs[0]["grid"] and r["replaced"] == runs[0]["replaced"] for r in runs)
    return {**runs[0], "head_s": [statistics.median(t) for t in zip(*(r["head_s"] for r in runs))],
            "solves_s": statistics.median(r["solves_s"] for r in runs),
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "rounds": [{"solves_s": r["solves_s"], "wall_s": r["wall_s"]} for r in runs]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constraints", nargs="+", default=["dp", "eo"])
    parser.add_argument("--groups", nargs="+", default=["sex"], help="sensitive columns (sex, race_white, age_over_40)")
    parser.add_argument("--n-eps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3, help="rounds per grid (medians of the times)")
    parser.add_argument("--cold", action="store_true", help="also a cold single fit at each bound of the sweep")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    arrays = adult_arrays(args.groups)
    train = arrays["train"]
    sens = pipeline.sensitive_arg(train)
    free = pipeline.fit_head(FairLogisticRegression(constraint=None), train, split="train")  # as run_sweep does
    report = {"benchmark": "bench_sweep_grid", "groups": args.groups, "n_eps": args.n_eps, "cases": {}}
    for c in args.constraints:
        inactive = constraint_value(c, y=train.y, scores=free.decision_function(train.X), sensitive_features=sens)
        old_grid = sweep.default_eps_grid(inactive, args.n_eps)  # the grid before: down to 0
        rounds = {"to_0": [], "to_resolution": []}
        for k in range(args.repeat):  # alternating order: neither grid always runs first
            order = ["to_0", "to_resolution"] if k % 2 == 0 else ["to_resolution", "to_0"]
            for name in order:
                with tempfile.TemporaryDirectory(prefix="bench_sweep_grid_") as tmp:
                    grid = dict(eps_grid=old_grid) if name == "to_0" else dict(n_eps=args.n_eps)
                    rounds[name].append(one_sweep(arrays, c, Path(tmp), **grid))
        before, after = (_median(rounds["to_0"]), _median(rounds["to_resolution"]))
        assert after["resolution"] == rate_resolution(train.y, sensitive_features=sens, constraint=c)
        report["cases"][c] = {"to_0": before, "to_resolution": after,
                              "solves_ratio": after["solves_s"] / before["solves_s"],
                              "wall_ratio": after["wall_s"] / before["wall_s"]}
        print(f"{c} ({' x '.join(args.groups)}; resolution {after['resolution']:.4g}, inactive {inactive:.4g})")
        for name, r in (("to 0", before), ("to resolution", after)):
            print(f"  {name:>13}: {r['heads']} heads, {r['distinct']} distinct, {r['missed']} missed, "
                  f"{r['below_resolution']} below the resolution; solves {r['solves_s']:.1f} s, "
                  f"run_sweep {r['wall_s']:.1f} s, {len(r['replaced'])} replaced by the monotone front")
            for rep in r["replaced"]:
                print(f"                 eps={rep['eps']:.4g}: train accuracy {rep['train_accuracy_change']:+.4f}, "
                      f"test {rep['test_accuracy_change']:+.4f}")
        print(f"  to resolution / to 0: solves {report['cases'][c]['solves_ratio']:.2f}x, "
              f"run_sweep {report['cases'][c]['wall_ratio']:.2f}x")
        for note in after["notes"]:
            print(f"  {note}")
        if args.cold:
            rows = cold_fronts(arrays, c, after)
            report["cases"][c]["cold"] = rows
            for r in rows:
                print(f"  eps={r['eps']:.4g}: sweep - cold accuracy, train {r['sweep_train'] - r['cold_train']:+.4f}, "
                      f"test {r['sweep_test'] - r['cold_test']:+.4f}{'' if r['cold_met'] else ' (cold fit unmet)'}")
            worst = min(r["sweep_train"] - r["cold_train"] for r in rows)
            print(f"  the sweep's front against cold single fits: at worst {worst:+.4f} train accuracy "
                  f"(goal: >= -0.003), test differences {min(r['sweep_test'] - r['cold_test'] for r in rows):+.4f} "
                  f"to {max(r['sweep_test'] - r['cold_test'] for r in rows):+.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
