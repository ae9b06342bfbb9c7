"""Do the commands cost their solves? ``fairhead fit`` and ``fairhead sweep`` on Adult, whole.

Measured side by side in one run, each command as a fresh process (as a user runs it), the
median of ``--repeats`` alternating rounds:

* ``import torch`` and ``import numpy`` alone: the interpreter's floor that any command pays
  (since the commands fit ``solvers.FairHead``, none imports scikit-learn, whose ``sklearn.base``
  imports scipy.stats and pandas itself: about 1 s);
* ``fairhead fit adult.h5 --constraint C``: goal at most 1.3x (``import torch`` + the fit);
* ``fairhead sweep adult.h5 --constraint C`` (20 bounds, plots): goal, its wall time minus the
  imports of torch and numpy at most 2x the sum of its solves (``wall_time`` of every head in
  ``sweep.json``); the same sweep with ``--no-plots`` gives the plots' share (matplotlib's import
  included).

With ``--baseline DIR`` (another checkout of fairhead, e.g. ``git worktree add /tmp/fairhead-main
main``) every round runs both trees' commands back to back on the same cache: before and after,
side by side. Wall seconds are what a user waits; the commands' CPU seconds (user + system, from
``getrusage``) are printed next to them, as they move less than wall time on a shared machine.

The cache is Adult (``benchmarks/real_tables.py``: 30,162 train rows, split 80/20 into train and
valid by row order, and the 15,060 test rows; about 100 standardised columns, sensitive ``sex``)
imported once with ``fairhead import``.

    .venv/bin/python benchmarks/bench_commands.py [--constraint dp] [--repeats 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def env(root: Path = None) -> dict:
    """The environment that runs ``root``'s fairhead (this checkout by default)."""
    root = ROOT if root is None else Path(root)
    return {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _timed(cmd: list[str], root: Path = None) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``cmd`` in a fresh process (cpu: its user + system time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # run in the tree's folder: ``python -m`` and ``-c`` put the working folder first on sys.path
    subprocess.run(cmd, check=True, env=env(root), cwd=ROOT if root is None else root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(args: list[str], root: Path = None) -> float:
    """Wall seconds of ``python -m fairhead ARGS`` in a fresh process."""
    return _timed([sys.executable, "-m", "fairhead", *args], root)[0]


def python_c(code: str) -> float:
    return _timed([sys.executable, "-c", code])[0]


def fit_seconds(head_json: Path) -> float:
    return float(json.loads(head_json.read_text())["certificate"]["wall_time"])


def solve_seconds(sweep_out: Path) -> float:
    """The sum of the solves of a sweep: every head the command fitted (the unconstrained one
    included; no baselines are asked for)."""
    records = json.loads((sweep_out / "sweep.json").read_text())
    return sum(float(h["wall_time"]) for h in records["heads"])


def one_round(tree: Path, cache: Path, tmp: Path, tag: str, constraint: str) -> dict[str, float]:
    """The fit, the sweep and the sweep without plots of ``tree``'s fairhead, once."""
    out: dict[str, float] = {}
    head = tmp / f"head-{tag}.json"
    out["fit"], out["fit_cpu"] = _timed([sys.executable, "-m", "fairhead", "fit", str(cache), "--constraint",
                                         constraint, "--eps", "0.05", "--save", str(head)], tree)
    out["fit_solve"] = fit_seconds(head)
    for key, extra in (("sweep", []), ("sweep_no_plots", ["--no-plots"])):
        folder = tmp / f"{key}-{tag}"
        out[key], out[f"{key}_cpu"] = _timed([sys.executable, "-m", "fairhead", "sweep", str(cache), "--constraint",
                                              constraint, "--out", str(folder), *extra], tree)
        out[f"{key}_solves"] = solve_seconds(folder)
    return out


def ratios(med: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """The goals' ratios of one tree's medians (``floor``: the import medians)."""
    return {"fit_over_import_torch_plus_fit": med["fit"] / (floor["import_torch"] + med["fit_solve"]),
            "sweep_minus_imports_over_solves": (med["sweep"] - floor["import_torch"]) / med["sweep_solves"],
            # what is left once the import a sweep cannot skip (torch) and the plots are taken out
            "sweep_no_plots_minus_torch_over_solves":
                (med["sweep_no_plots"] - floor["import_torch"]) / med["sweep_no_plots_solves"],
            "plots_seconds": med["sweep"] - med["sweep_no_plots"],
            "plots_cpu_seconds": med["sweep_cpu"] - med["sweep_no_plots_cpu"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", default="dp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another fairhead checkout (e.g. main) to run in the same rounds: before / after")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bench_commands.json")
    args = parser.parse_args(argv)
    trees = {"after": ROOT} if args.baseline is None else {"before": args.baseline.resolve(), "after": ROOT}
    if args.baseline is not None and not (args.baseline / "fairhead" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a fairhead checkout (no fairhead/cli.py); "
                     "pass the folder of one, e.g. `git worktree add /tmp/fairhead-main main`")
    floor_rounds: dict[str, list[float]] = {"import_torch": [], "import_numpy": []}
    rounds: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench_commands_") as tmp:
        tmp = Path(tmp)
        cache = adult_cache(tmp)
        for r in range(args.repeats):
            floor_rounds["import_torch"].append(python_c("import torch"))
            floor_rounds["import_numpy"].append(python_c("import numpy"))
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]  # neither tree always runs first
            for name in order:
                for key, value in one_round(trees[name], cache, tmp, f"{name}-{r}", args.constraint).items():
                    rounds[name].setdefault(key, []).append(value)
    floor = {k: statistics.median(v) for k, v in floor_rounds.items()}
    med = {name: {k: statistics.median(v) for k, v in rs.items()} for name, rs in rounds.items()}
    result = {"benchmark": "bench_commands", "constraint": args.constraint, "repeats": args.repeats,
              "trees": {name: str(tree) for name, tree in trees.items()}, "imports": floor_rounds,
              "rounds": rounds, "median": {"imports": floor, **med},
              "ratios": {name: ratios(m, floor) for name, m in med.items()},
              "goals": {"fit_over_import_torch_plus_fit": 1.3, "sweep_minus_imports_over_solves": 2.0}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"medians of {args.repeats} rounds; import torch {floor['import_torch']:.2f} s, import numpy "
          f"{floor['import_numpy']:.2f} s")
    names = list(trees)
    lines = [
        ("fit: wall s (cpu s)", lambda m, q: f"{m['fit']:.2f} ({m['fit_cpu']:.2f})"),
        ("fit: its solve s", lambda m, q: f"{m['fit_solve']:.2f}"),
        ("fit / (import torch + solve), goal 1.3", lambda m, q: f"{q['fit_over_import_torch_plus_fit']:.2f}"),
        ("sweep: wall s (cpu s)", lambda m, q: f"{m['sweep']:.2f} ({m['sweep_cpu']:.2f})"),
        ("sweep: its 21 solves s", lambda m, q: f"{m['sweep_solves']:.2f}"),
        ("(sweep - import torch) / solves, goal 2", lambda m, q: f"{q['sweep_minus_imports_over_solves']:.2f}"),
        ("sweep --no-plots: wall s (cpu s)",
         lambda m, q: f"{m['sweep_no_plots']:.2f} ({m['sweep_no_plots_cpu']:.2f})"),
        ("(sweep --no-plots - import torch) / solves",
         lambda m, q: f"{q['sweep_no_plots_minus_torch_over_solves']:.2f}"),
        ("plots: wall s (cpu s)", lambda m, q: f"{q['plots_seconds']:.2f} ({q['plots_cpu_seconds']:.2f})"),
    ]
    print(f"{'constraint ' + repr(args.constraint):52}" + "".join(f"{n:>16}" for n in names))
    for title, cell in lines:
        print(f"{title:52}" + "".join(f"{cell(med[n], result['ratios'][n]):>16}" for n in names))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
