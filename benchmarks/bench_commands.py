"""Do the commands cost their solves? ``fairhead fit`` and ``fairhead sweep`` on Adult, whole.

Measured side by side in one run, each command as a fresh process (as a user runs it), the
median of ``--repeats`` alternating rounds:

* ``import torch`` and ``import numpy`` alone: the interpreter's floor that any command pays;
* ``fairhead fit adult.h5 --constraint C``: goal at most 1.3x (``import torch`` + the fit);
* ``fairhead sweep adult.h5 --constraint C`` (20 bounds, plots): goal, its wall time minus the
  imports of torch and numpy at most 2x the sum of its solves (``wall_time`` of every head in
  ``sweep.json``).

The cache is Adult (``benchmarks/real_tables.py``: 30,162 train rows, split 80/20 into train and
valid by row order, and the 15,060 test rows; about 100 standardised columns, sensitive ``sex``)
imported once with ``fairhead import``.

    .venv/bin/python benchmarks/bench_commands.py [--constraint dp] [--repeats 3]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

from real_tables import load_adult  # noqa: E402


def adult_cache(folder: Path) -> Path:
    """Adult as a fairhead cache (train / valid / test), through the CLI's own import."""
    train, test = load_adult()
    X = np.vstack([train.X, test.X]).astype(np.float32)
    y = np.concatenate([train.y, test.y])
    sex = np.concatenate([train.sensitive["sex"], test.sensitive["sex"]])
    n_train = len(train.y)
    split = np.array(["train"] * int(0.8 * n_train) + ["valid"] * (n_train - int(0.8 * n_train))
                     + ["test"] * len(test.y))
    table = folder / "adult.npz"
    np.savez(table, features=X, income=y, sex=np.where(sex == 1, "Male", "Female"), split=split)
    cache = folder / "adult.h5"
    run(["import", str(table), "--label", "income", "--sensitive", "sex", "--split", "split", "--out", str(cache),
         "--no-progress"])
    return cache


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run(args: list[str]) -> float:
    """Wall seconds of ``python -m fairhead ARGS`` in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fairhead", *args], check=True, env=env(), capture_output=True, text=True)
    return time.perf_counter() - start


def python_c(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env())
    return time.perf_counter() - start


def fit_seconds(head_json: Path) -> float:
    return float(json.loads(head_json.read_text())["certificate"]["wall_time"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", default="dp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_commands.json")
    args = parser.parse_args(argv)
    rounds: dict[str, list[float]] = {k: [] for k in ("import_torch", "import_numpy", "fit", "fit_solve", "sweep",
                                                      "sweep_solves")}
    with tempfile.TemporaryDirectory(prefix="bench_commands_") as tmp:
        tmp = Path(tmp)
        cache = adult_cache(tmp)
        for r in range(args.repeats):
            rounds["import_torch"].append(python_c("import torch"))
            rounds["import_numpy"].append(python_c("import numpy"))
            head = tmp / f"head-{r}.json"
            rounds["fit"].append(run(["fit", str(cache), "--constraint", args.constraint, "--eps", "0.05",
                                      "--save", str(head)]))
            rounds["fit_solve"].append(fit_seconds(head))
            out = tmp / f"sweep-{r}"
            rounds["sweep"].append(run(["sweep", str(cache), "--constraint", args.constraint, "--out", str(out)]))
            records = json.loads((out / "sweep.json").read_text())
            # every head the command fitted (the unconstrained one included): no baselines were asked for
            rounds["sweep_solves"].append(sum(float(h["wall_time"]) for h in records["heads"]))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    fit_ratio = med["fit"] / (med["import_torch"] + med["fit_solve"])
    sweep_ratio = (med["sweep"] - med["import_torch"]) / med["sweep_solves"]
    result = {"benchmark": "bench_commands", "constraint": args.constraint, "rounds": rounds, "median": med,
              "fit_over_import_torch_plus_fit": fit_ratio, "sweep_minus_imports_over_solves": sweep_ratio,
              "goals": {"fit_over_import_torch_plus_fit": 1.3, "sweep_minus_imports_over_solves": 2.0}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"import torch {med['import_torch']:.2f} s, import numpy {med['import_numpy']:.2f} s (medians)")
    print(f"fairhead fit --constraint {args.constraint}: {med['fit']:.2f} s, its solve {med['fit_solve']:.2f} s; "
          f"fit / (import torch + solve) = {fit_ratio:.2f} (goal <= 1.3)")
    print(f"fairhead sweep --constraint {args.constraint}: {med['sweep']:.2f} s, its 21 solves "
          f"{med['sweep_solves']:.2f} s; (sweep - import torch) / solves = {sweep_ratio:.2f} (goal <= 2)")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
